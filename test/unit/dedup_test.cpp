// Dedup: one test per rule with the exact output, then the property test over
// random table histories (SPEC §4's invariant).
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/error.hpp"
#include "support/history_gen.hpp"
#include "support/model_index.hpp"

using namespace bitdex;
using bitdex::test::HistoryGen;
using bitdex::test::ModelIndex;

namespace {

// Parses a batch and numbers it as consecutive outbox positions from 1.
Batch batch(const std::string& json) {
  Batch b = parse_batch(json);
  for (size_t i = 0; i < b.size(); i++) b[i].pos = SourcePos{Stream::Outbox, i + 1, 0};
  return b;
}

std::string deduped(const std::string& json) {
  return batch_to_json(dedup(batch(json)));
}

// Applies both forms from the same start and checks they agree.
void expect_same_meaning(const std::string& json, const ModelIndex& start = {}) {
  ModelIndex a = start, b = start;
  a.apply(batch(json));
  b.apply(dedup(batch(json)));
  EXPECT_TRUE(a == b) << a.diff(b);
}

}  // namespace

TEST(Dedup, ScalarChainKeepsFirstRemoveAndLastSet) {
  const char* in =
      R"([{"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":2}]},
          {"entity_id":1,"ops":[{"op":"remove","field":"a","value":2},{"op":"set","field":"a","value":3}]},
          {"entity_id":1,"ops":[{"op":"remove","field":"a","value":3},{"op":"set","field":"a","value":4}]}])";
  EXPECT_EQ(
      deduped(in),
      R"([{"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":4}],"creates_slot":false}])");
}

TEST(Dedup, ScalarBackToStartLeavesOneIdempotentSet) {
  // a: 1 -> 2 -> 1. The 2 is cancelled; for 1 the last op (set) is kept,
  // because a delete of the slot earlier on may have cleared the bit already.
  const char* in = R"([{"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":2}]},
                       {"entity_id":1,"ops":[{"op":"remove","field":"a","value":2},{"op":"set","field":"a","value":1}]}])";
  EXPECT_EQ(deduped(in), R"([{"entity_id":1,"ops":[{"op":"set","field":"a","value":1}],"creates_slot":false}])");
  ModelIndex cleared;  // the slot was deleted earlier: the bit for a=1 is already clear
  expect_same_meaning(in, cleared);
}

TEST(Dedup, AddThenRemoveCancels) {
  EXPECT_EQ(deduped(R"([{"entity_id":1,"ops":[{"op":"add","field":"tags","value":5}]},
                        {"entity_id":1,"ops":[{"op":"remove","field":"tags","value":5}]}])"),
            "[]");
}

TEST(Dedup, RemoveThenAddKeepsTheAdd) {
  // The bit may already be clear (an earlier delete cleared it while the join
  // row survived), so only the add is safe to keep.
  EXPECT_EQ(deduped(R"([{"entity_id":1,"ops":[{"op":"remove","field":"tags","value":5}]},
                        {"entity_id":1,"ops":[{"op":"add","field":"tags","value":5}]}])"),
            R"([{"entity_id":1,"ops":[{"op":"add","field":"tags","value":5}],"creates_slot":false}])");
}

TEST(Dedup, InsertThenUpdateMergesIntoCreatesSlot) {
  EXPECT_EQ(
      deduped(
          R"([{"entity_id":1,"ops":[{"op":"alive"},{"op":"set","field":"a","value":1},{"op":"set","field":"b","value":"x"}]},
                        {"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":2}]}])"),
      R"([{"entity_id":1,"ops":[{"op":"set","field":"b","value":"x"},{"op":"set","field":"a","value":2}],"creates_slot":true}])");
}

TEST(Dedup, DeleteAbsorbsWhatCameBefore) {
  EXPECT_EQ(deduped(R"([{"entity_id":1,"ops":[{"op":"alive"},{"op":"set","field":"a","value":1}]},
                        {"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":2}]},
                        {"entity_id":1,"ops":[{"op":"delete"}]}])"),
            R"([{"entity_id":1,"ops":[{"op":"delete"}],"creates_slot":false}])");
}

TEST(Dedup, DeleteThenReinsertEndsAliveWithNewValues) {
  const char* in = R"([{"entity_id":1,"ops":[{"op":"delete"}]},
                       {"entity_id":1,"ops":[{"op":"alive"},{"op":"set","field":"a","value":9}]}])";
  EXPECT_EQ(deduped(in), R"([{"entity_id":1,"ops":[{"op":"delete"}],"creates_slot":false},)"
                         R"({"entity_id":1,"ops":[{"op":"set","field":"a","value":9}],"creates_slot":true}])");
  ModelIndex start;
  start.apply(parse_batch(R"([{"entity_id":1,"ops":[{"op":"set","field":"a","value":3}],"creates_slot":true}])"));
  expect_same_meaning(in, start);
  // No output record holds both a delete and creates_slot.
  for (const auto& r : dedup(batch(in)))
    EXPECT_FALSE(r.creates_slot && !r.ops.empty() && r.ops[0].kind == OpKind::Delete);
}

TEST(Dedup, RemoveAfterDeleteIsDropped) {
  EXPECT_EQ(
      deduped(
          R"([{"entity_id":1,"ops":[{"op":"delete"}]},{"entity_id":1,"ops":[{"op":"remove","field":"tags","value":5}]}])"),
      R"([{"entity_id":1,"ops":[{"op":"delete"}],"creates_slot":false}])");
}

TEST(Dedup, KeepsArrivalOrderOfEntities) {
  EXPECT_EQ(
      deduped(R"([{"entity_id":3,"ops":[{"op":"set","field":"a","value":1}]},
                        {"entity_id":1,"ops":[{"op":"set","field":"a","value":1}]},
                        {"entity_id":3,"ops":[{"op":"set","field":"b","value":1}]},
                        {"entity_id":2,"ops":[{"op":"set","field":"a","value":1}]}])"),
      R"([{"entity_id":3,"ops":[{"op":"set","field":"a","value":1},{"op":"set","field":"b","value":1}],"creates_slot":false},)"
      R"({"entity_id":1,"ops":[{"op":"set","field":"a","value":1}],"creates_slot":false},)"
      R"({"entity_id":2,"ops":[{"op":"set","field":"a","value":1}],"creates_slot":false}])");
}

TEST(Dedup, MergedRecordCarriesHighestPosition) {
  Batch out = dedup(batch(R"([{"entity_id":1,"ops":[{"op":"set","field":"a","value":1}]},
                              {"entity_id":2,"ops":[{"op":"set","field":"a","value":1}]},
                              {"entity_id":1,"ops":[{"op":"set","field":"b","value":1}]}])"));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].pos.major, 3u);
  EXPECT_EQ(out[1].pos.major, 2u);
}

TEST(Dedup, QueryOpSetsOfOneQueryMerge) {
  EXPECT_EQ(
      deduped(
          R"([{"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"remove","field":"p","value":1},{"op":"set","field":"p","value":2}]}]},
                        {"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"remove","field":"p","value":2},{"op":"set","field":"p","value":3}]}]}])"),
      R"([{"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"remove","field":"p","value":1},)"
      R"({"op":"remove","field":"p","value":2},{"op":"set","field":"p","value":3}]}],"creates_slot":false}])");
}

TEST(Dedup, QueryOpSetsWhoseWritesChangeTheMatchDoNotMerge) {
  const char* in =
      R"([{"entity_id":5,"ops":[{"op":"queryOpSet","query":"g eq 1","ops":[{"op":"remove","field":"g","value":1},{"op":"set","field":"g","value":2}]}]},
                       {"entity_id":5,"ops":[{"op":"queryOpSet","query":"g eq 1","ops":[{"op":"set","field":"h","value":1}]}]}])";
  EXPECT_EQ(dedup(batch(in)).size(), 2u);
  ModelIndex start;
  start.apply(parse_batch(R"([{"entity_id":1,"ops":[{"op":"set","field":"g","value":1}],"creates_slot":true}])"));
  expect_same_meaning(in, start);
}

TEST(Dedup, EntityOpsThatCommuteMoveAcrossQueryOpSet) {
  EXPECT_EQ(
      deduped(R"([{"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":2}]},
                        {"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"set","field":"p","value":2}]}]},
                        {"entity_id":1,"ops":[{"op":"remove","field":"a","value":2},{"op":"set","field":"a","value":3}]}])"),
      R"([{"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":3}],"creates_slot":false},)"
      R"({"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"set","field":"p","value":2}]}],"creates_slot":false}])");
}

TEST(Dedup, QueryOpSetIsABarrierForOpsItReads) {
  // Entity 1 joins post 5 after the queryOpSet ran: it must not get p=2.
  const char* in = R"([{"entity_id":1,"ops":[{"op":"alive"},{"op":"set","field":"postId","value":4}]},
                       {"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"set","field":"p","value":2}]}]},
                       {"entity_id":1,"ops":[{"op":"remove","field":"postId","value":4},{"op":"set","field":"postId","value":5}]}])";
  Batch out = dedup(batch(in));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1].ops[0].kind, OpKind::QueryOpSet);
  expect_same_meaning(in);
}

TEST(Dedup, NullQueryIsKeptAndNeverMerged) {
  EXPECT_EQ(dedup(batch(R"([{"entity_id":5,"ops":[{"op":"queryOpSet","query":null,"ops":[]}]},
                            {"entity_id":5,"ops":[{"op":"queryOpSet","query":null,"ops":[]}]}])"))
                .size(),
            2u);
}

TEST(Dedup, UnparseableQueryIsAFullBarrier) {
  const char* in = R"([{"entity_id":1,"ops":[{"op":"set","field":"a","value":1}]},
                       {"entity_id":5,"ops":[{"op":"queryOpSet","query":"a gt 1","ops":[{"op":"set","field":"p","value":2}]}]},
                       {"entity_id":1,"ops":[{"op":"set","field":"b","value":1}]}])";
  EXPECT_EQ(dedup(batch(in)).size(), 3u);
}

TEST(Dedup, StatsCountInAndOut) {
  DedupStats st;
  dedup(
      batch(
          R"([{"entity_id":1,"ops":[{"op":"add","field":"t","value":1}]},{"entity_id":1,"ops":[{"op":"remove","field":"t","value":1}]}])"),
      &st);
  EXPECT_EQ(st.records_in, 2u);
  EXPECT_EQ(st.ops_in, 2u);
  EXPECT_EQ(st.records_out, 0u);
  EXPECT_EQ(st.ops_out, 0u);
}

// The invariant of SPEC §4 over random histories. BITDEX_PROP_HISTORIES and
// BITDEX_PROP_SEED override the defaults (100,000 histories, fixed seed).
TEST(DedupProperty, SameStateAsApplyingEveryOpInOrder) {
  const char* env_n = std::getenv("BITDEX_PROP_HISTORIES");
  const char* env_seed = std::getenv("BITDEX_PROP_SEED");
  const uint64_t histories = env_n ? std::strtoull(env_n, nullptr, 10) : 100000;
  const uint64_t seed = env_seed ? std::strtoull(env_seed, nullptr, 10) : 20261122;
  size_t ops_in = 0, ops_out = 0, batches = 0, records_in = 0, records_out = 0;
  for (uint64_t h = 0; h < histories; h++) {
    const uint64_t hseed = seed * 1000003 + h;
    HistoryGen gen(hseed);
    gen.with_truncates(h % 4 == 0);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen.rng()); };
    ModelIndex state;
    for (int i = pick(0, 12); i > 0; i--) state.apply(gen.next_change());  // history before the checked part
    Batch stream;
    for (int i = pick(1, 40); i > 0; i--)
      for (EntityRecord& r : gen.next_change()) stream.push_back(std::move(r));
    for (size_t i = 0; i < stream.size(); i++) stream[i].pos = SourcePos{Stream::Slot, 1000 + i, 0};
    for (size_t at = 0; at < stream.size();) {
      size_t len = static_cast<size_t>(pick(1, static_cast<int>(stream.size() - at)));
      Batch b(stream.begin() + at, stream.begin() + at + len);
      at += len;
      ModelIndex seq = state, dd = state;
      seq.apply(b);
      DedupStats st;
      Batch out = dedup(b, &st);
      dd.apply(out);
      if (!(seq == dd)) {
        FAIL() << "dedup changed the meaning; rerun with BITDEX_PROP_SEED=" << seed << " (history " << h << ", seed "
               << hseed << ")\nstate before: " << state.dump() << "\nbatch:  " << batch_to_json(b)
               << "\ndedup:  " << batch_to_json(out) << "\n"
               << seq.diff(dd);
      }
      for (const EntityRecord& r : out) {
        ASSERT_TRUE(r.pos.major >= b.front().pos.major && r.pos.major <= b.back().pos.major);
        bool has_delete = false;
        for (const Op& op : r.ops) has_delete |= op.kind == OpKind::Delete;
        ASSERT_FALSE(has_delete && r.creates_slot) << batch_to_json(out);
      }
      ops_in += st.ops_in;
      ops_out += st.ops_out;
      records_in += st.records_in;
      records_out += st.records_out;
      batches++;
      state = std::move(seq);
    }
  }
  std::printf("[ property ] %llu histories, %zu batches: %zu -> %zu records, %zu -> %zu ops (seed %llu)\n",
              static_cast<unsigned long long>(histories), batches, records_in, records_out, ops_in, ops_out,
              static_cast<unsigned long long>(seed));
  // Dedup must actually merge something on these histories, or the test above proves nothing.
  EXPECT_LT(ops_out, ops_in * 9 / 10);
}

// Linear work: 100k values of one slot (the pairs a linear scan would compare
// each op with grow with the batch), and queryOpSets of one query with other
// queries between them (each merge checks those in between), stay within a
// few probes per op; a quadratic dedup needed ~5·10^9 for the first.
TEST(Dedup, WorkIsLinearInTheBatch) {
  Batch many;
  for (int i = 0; i < 100000; i++) {
    EntityRecord r;
    r.entity_id = 7;
    r.ops = {Op::add("tagIds", OpValue::int64(i))};
    r.pos = SourcePos{Stream::Outbox, static_cast<uint64_t>(i + 1), 0};
    many.push_back(std::move(r));
  }
  DedupStats st;
  Batch out = dedup(many, &st);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].ops.size(), 100000u);
  EXPECT_LT(st.probes, 4 * st.ops_in) << st.probes;

  Batch queries;
  for (int i = 0; i < 20000; i++) {
    EntityRecord r;
    r.entity_id = i;
    Op q;
    q.kind = OpKind::QueryOpSet;
    q.has_query = true;
    q.query = i % 2 ? "postId eq " + std::to_string(i) : "postId eq 1";
    q.ops = {Op::set(i % 2 ? "b" : "a", OpValue::int64(i))};
    r.ops = {std::move(q)};
    r.pos = SourcePos{Stream::Outbox, static_cast<uint64_t>(i + 1), 0};
    queries.push_back(std::move(r));
  }
  DedupStats qs;
  ModelIndex a, b;
  a.apply(queries);
  b.apply(dedup(queries, &qs));
  EXPECT_TRUE(a == b) << a.diff(b);
  EXPECT_LT(qs.probes, 100 * qs.ops_in) << qs.probes;
}

// A cancel stops dedup (the SQL function then raises the query's cancel).
TEST(Dedup, StopsWhenCancelled) {
  Batch b;
  for (int i = 0; i < 5000; i++) {
    EntityRecord r;
    r.entity_id = i;
    r.ops = {Op::alive()};
    b.push_back(std::move(r));
  }
  try {
    dedup(b, nullptr, [] { return true; });
    FAIL() << "dedup went on";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Cancelled);
  }
  EXPECT_NO_THROW(dedup(b, nullptr, [] { return false; }));
}
