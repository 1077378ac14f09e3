// The roaring index against the reference model (every op, random
// histories), filters, the snapshot file, and following an ops WAL across
// restarts.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/core/wal_writer.hpp"
#include "bitdex_sync/index/follower.hpp"
#include "bitdex_sync/index/index.hpp"
#include "bitdex_sync/index/verify.hpp"
#include "support/temp_dir.hpp"
#include "support/history_gen.hpp"
#include "support/model_index.hpp"

using namespace bitdex;
using bitdex::index::Follower;
using bitdex::index::Index;
using bitdex::test::HistoryGen;
using bitdex::test::ModelIndex;

namespace {

using test::TempDir;

// Empty string when the index and the model hold the same state.
std::string compare(const Index& ix, const ModelIndex& m) {
  std::string out;
  Roaring alive;
  for (int64_t s : m.alive_slots()) alive.add(static_cast<uint32_t>(s));
  if (!(alive == ix.alive()))
    out += "alive differs: model " + std::to_string(alive.cardinality()) + ", index " +
           std::to_string(ix.alive().cardinality()) + "\n";
  size_t values = 0;
  for (const auto& [key, slots] : m.bitmaps()) {
    values++;
    Roaring want;
    for (int64_t s : slots) want.add(static_cast<uint32_t>(s));
    auto f = ix.fields().find(key.first);
    const Roaring* have = nullptr;
    if (f != ix.fields().end()) have = f->second.values.find(key.second);
    std::string value;
    key.second.write_json(value);
    if (!have || !(*have == want)) out += "field " + key.first + " value " + value + " differs\n";
  }
  if (values != ix.value_count()) out += "index has values the model does not\n";
  return out;
}

EntityRecord rec(int64_t id, std::vector<Op> ops, bool creates = false) {
  EntityRecord r;
  r.entity_id = id;
  r.ops = std::move(ops);
  r.creates_slot = creates;
  return r;
}

// Both apply the same records; they must agree after each.
void both(Index& ix, ModelIndex& m, const EntityRecord& r) {
  ix.apply(r);
  m.apply(r);
  ASSERT_EQ(compare(ix, m), "") << "after a record of entity " << r.entity_id;
}

}  // namespace

TEST(Index, EveryOpAgreesWithTheModel) {
  Index ix;
  ModelIndex m;
  const OpValue one = OpValue::int64(1), two = OpValue::int64(2);
  both(ix, m, rec(1, {Op::alive(), Op::set("a", one), Op::add("tags", two)}));
  both(ix, m, rec(2, {Op::set("a", one)}, true));  // creates_slot: alive after its ops
  both(ix, m, rec(1, {Op::remove("a", one), Op::set("a", two)}));
  both(ix, m, rec(3, {Op::remove("a", one)}));  // remove of something absent: nothing
  both(ix, m, rec(2, {Op::add("tags", two), Op::add("tags", OpValue::string("x"))}));
  both(ix, m, rec(9, {Op::query_op_set("a eq 1", {Op::set("poi", OpValue::boolean(true))})}));
  both(ix, m,
       rec(9, {Op::query_op_set("tags in [2, 7] AND a eq 2", {Op::remove("a", two), Op::set("a", OpValue::null())})}));
  both(ix, m, rec(1, {Op::del()}));          // out of every bitmap and of alive
  both(ix, m, rec(4, {Op::set("a", one)}));  // values without alive: not matched by queries
  both(ix, m, rec(9, {Op::query_op_set("a eq 1", {Op::set("hit", OpValue::boolean(true))})}));
  EXPECT_FALSE(ix.has(4, "hit", OpValue::boolean(true)));
  EXPECT_TRUE(ix.has(2, "hit", OpValue::boolean(true)));
  EXPECT_EQ(ix.values_of(2, "tags"), (std::vector<OpValue>{OpValue::int64(2), OpValue::string("x")}));
}

TEST(Index, QueriesThatCannotBeAppliedAreCountedAndReported) {
  Index ix;
  Op null_query = Op::query_op_set("", {Op::set("a", OpValue::int64(1))});
  null_query.has_query = false;
  EntityRecord r = rec(5, {null_query, Op::query_op_set("a (eq 1", {Op::set("b", OpValue::int64(1))})});
  r.pos = SourcePos{Stream::Slot, 0x1234, 3};
  ix.apply(r, "batch 7");
  EXPECT_EQ(ix.counters().null_queries, 1u);
  EXPECT_EQ(ix.counters().bad_queries, 1u);
  ASSERT_EQ(ix.problems().size(), 1u);
  EXPECT_EQ(ix.problems()[0].where, "batch 7, commit LSN 4660 op 3, entity 5");
  EXPECT_NE(ix.problems()[0].what.find("invalid query"), std::string::npos);
}

TEST(Index, SlotsOutsideRoaringRangeAreRefused) {
  Index ix;
  EXPECT_THROW(ix.apply(rec(-1, {Op::alive()})), Error);
  EXPECT_THROW(ix.apply(rec(int64_t(1) << 32, {Op::set("a", OpValue::int64(1))})), Error);
  // A queryOpSet record's entity is not a slot: any id is fine.
  EXPECT_NO_THROW(ix.apply(rec(int64_t(1) << 40, {Op::query_op_set("a eq 1", {})})));
}

// Random histories from the dedup property test's generator: the index and
// the model must agree after every change.
TEST(Index, RandomHistoriesAgreeWithTheModel) {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("BITDEX_PROP_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::mt19937_64 seeds(seed);
  size_t changes = 0;
  for (int h = 0; h < 300; h++) {
    HistoryGen gen(seeds());
    gen.with_truncates(h % 3 == 0);
    Index ix;
    ModelIndex m;
    for (int i = 0; i < 200; i++) {
      Batch b = gen.next_change();
      ix.apply(b);
      m.apply(b);
      changes++;
      std::string d = compare(ix, m);
      if (!d.empty()) FAIL() << d << "rerun with BITDEX_PROP_SEED=" << seed << " (history " << h << ")";
    }
  }
  EXPECT_EQ(changes, 60000u);
}

TEST(Index, FiltersMatchABruteForceEvaluation) {
  Index ix;
  for (int s = 0; s < 200; s++) {
    std::vector<Op> ops{Op::set("a", OpValue::int64(s % 5)), Op::set("b", OpValue::string(s % 3 ? "x" : "y"))};
    if (s % 7 == 0) ops.push_back(Op::add("t", OpValue::int64(s % 4)));
    ix.apply(rec(s, ops, s % 10 != 9));  // every tenth slot is not alive
  }
  auto brute = [&](auto pred) {
    uint64_t n = 0;
    for (uint32_t s = 0; s < 200; s++)
      if (ix.alive().contains(s) && pred(s)) n++;
    return n;
  };
  auto a = [](uint32_t s) { return int(s % 5); };
  auto b_is_x = [](uint32_t s) { return s % 3 != 0; };
  EXPECT_EQ(ix.evaluate("").cardinality(), brute([](uint32_t) { return true; }));
  EXPECT_EQ(ix.evaluate("*").cardinality(), 180u);
  EXPECT_EQ(ix.evaluate("a eq 3").cardinality(), brute([&](uint32_t s) { return a(s) == 3; }));
  EXPECT_EQ(ix.evaluate("a in [1, 3]").cardinality(), brute([&](uint32_t s) { return a(s) == 1 || a(s) == 3; }));
  EXPECT_EQ(ix.evaluate("a eq 3 AND b eq x").cardinality(), brute([&](uint32_t s) { return a(s) == 3 && b_is_x(s); }));
  EXPECT_EQ(ix.evaluate("a eq 3 OR b eq 'y'").cardinality(),
            brute([&](uint32_t s) { return a(s) == 3 || !b_is_x(s); }));
  EXPECT_EQ(ix.evaluate("NOT a eq 3").cardinality(), brute([&](uint32_t s) { return a(s) != 3; }));
  // NOT binds tighter than AND, AND tighter than OR; parentheses override.
  EXPECT_EQ(ix.evaluate("NOT a eq 3 AND b eq x OR a eq 0").cardinality(),
            brute([&](uint32_t s) { return (a(s) != 3 && b_is_x(s)) || a(s) == 0; }));
  EXPECT_EQ(ix.evaluate("NOT (a eq 3 AND (b eq x OR a eq 0))").cardinality(),
            brute([&](uint32_t s) { return !(a(s) == 3 && (b_is_x(s) || a(s) == 0)); }));
  EXPECT_EQ(ix.evaluate("t in [0] OR t eq 2").cardinality(),
            brute([&](uint32_t s) { return s % 7 == 0 && (s % 4 == 0 || s % 4 == 2); }));
  EXPECT_EQ(ix.evaluate("nope eq 1").cardinality(), 0u);
  for (const char* bad : {"a eq", "(a eq 1", "a eq 1)", "a eq 1 AND", "NOT", "a gt 1", "a eq 1 b eq 2"})
    EXPECT_THROW(ix.evaluate(bad), Error) << bad;
}

TEST(Index, SnapshotRoundTripsAndRejectsDamage) {
  TempDir d;
  Index ix;
  HistoryGen gen(42);
  for (int i = 0; i < 2000; i++) ix.apply(gen.next_change());
  ix.apply(rec(77, {Op::set("j", OpValue::from_json(json::parse("1.50"))), Op::set("s", OpValue::string(""))}, true));
  const std::string path = d.path() + "/ix.bdx";
  ix.save(path, wal::Cursor{123, 4, 5678});
  wal::Cursor c;
  Index back = Index::load(path, &c);
  EXPECT_TRUE(back == ix);
  EXPECT_EQ(c, (wal::Cursor{123, 4, 5678}));
  EXPECT_EQ(back.counters().records, ix.counters().records);

  const std::string bytes = fileio::read_file(path);
  std::mt19937 rng(7);
  for (int i = 0; i < 200; i++) {
    std::string bad = bytes;
    size_t at = std::uniform_int_distribution<size_t>(0, bad.size() - 1)(rng);
    bad[at] = static_cast<char>(bad[at] ^ (1 << (i % 8)));
    fileio::write_file_atomic(d.path(), "bad.bdx", bad);
    EXPECT_THROW(Index::load(d.path() + "/bad.bdx", nullptr), Error) << "flip at " << at;
  }
  for (size_t len : {size_t(0), size_t(7), size_t(12), bytes.size() / 2, bytes.size() - 1}) {
    fileio::write_file_atomic(d.path(), "short.bdx", bytes.substr(0, len));
    EXPECT_THROW(Index::load(d.path() + "/short.bdx", nullptr), Error) << len;
  }
}

// A follower that stops anywhere (after a checkpoint or not) and starts
// again ends with every batch applied exactly once.
TEST(Follower, RestartsResumeExactlyWhereTheSnapshotStopped) {
  TempDir d;
  const std::string wal_dir = d.path() + "/wal", snap = d.path() + "/ix.bdx";
  HistoryGen gen(99);
  ModelIndex model;
  std::vector<Batch> batches;
  {
    auto w = wal::WalWriter::open({wal_dir, 4096});  // small segments: many rotations
    uint64_t pos = 0;
    for (int i = 0; i < 400; i++) {
      Batch b;
      for (int k = 0; k < 5; k++)
        for (EntityRecord& r : gen.next_change()) {
          r.pos = SourcePos{Stream::Outbox, ++pos, 0};
          b.push_back(std::move(r));
        }
      if (b.empty()) continue;
      model.apply(b);
      w->append(b, {b.back().pos});
    }
  }
  std::mt19937 rng(5);
  int rounds = 0;
  for (bool done = false; !done; rounds++) {
    Follower f(bitdex::index::local_source(wal_dir, "index"), snap);
    int steps = std::uniform_int_distribution<int>(1, 60)(rng);
    for (int i = 0; i < steps; i++) {
      if (!f.step()) {
        done = true;
        break;
      }
      if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) f.checkpoint();
    }
    if (done) {
      f.checkpoint();
      EXPECT_EQ(compare(f.index(), model), "");
    } else if (rng() % 2) {
      f.checkpoint();
    }  // else: a crash, everything since the last checkpoint is lost and redone
  }
  EXPECT_GT(rounds, 5);
  // The consumer's cursor followed the snapshot, so retention can drop
  // what the index has applied, and the index still loads and agrees.
  wal::remove_consumed_segments(wal_dir);
  Follower again(bitdex::index::local_source(wal_dir, "index"), snap);
  EXPECT_FALSE(again.step());
  EXPECT_EQ(compare(again.index(), model), "");
  EXPECT_THROW(Follower(bitdex::index::local_source(wal_dir, "index"), snap), Error);  // one follower per snapshot
}

TEST(Follower, RefusesAWalThatLostItsBeginning) {
  TempDir d;
  const std::string wal_dir = d.path() + "/wal";
  {
    auto w = wal::WalWriter::open({wal_dir, 4096});
    for (uint64_t i = 1; i <= 200; i++) {
      EntityRecord r = rec(int64_t(i), {Op::alive()});
      r.pos = SourcePos{Stream::Outbox, i, 0};
      w->append({r}, {r.pos});
    }
  }
  // Another consumer read everything; retention drops the old segments.
  wal::register_consumer(wal_dir, "other", wal::Cursor{});
  auto last = wal::list_segments(wal_dir).back();
  wal::save_cursor(wal_dir, "other", wal::Cursor{0, last, 0});
  wal::remove_consumed_segments(wal_dir);
  ASSERT_GT(wal::list_segments(wal_dir).front(), 1u);
  Follower f(bitdex::index::local_source(wal_dir, "index"), d.path() + "/ix.bdx");
  EXPECT_THROW(f.step(), Error);
}

// verify reads COPY's text format: fields split on tabs, escapes undone.
TEST(Verify, SplitsCopyLines) {
  std::vector<std::string> f;
  std::vector<bool> null;
  ASSERT_TRUE(bitdex::index::split_copy_line("7\t\"a\\\\\\\"b\"\t\\N\t\\t\\n\\101\\x41z\t", f, null));
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(f[0], "7");
  EXPECT_EQ(f[1], "\"a\\\"b\"");  // COPY doubles the JSON escape's backslash
  EXPECT_TRUE(null[2]);
  EXPECT_FALSE(null[1]);
  EXPECT_EQ(f[3], "\t\nAAz");
  EXPECT_EQ(f[4], "");
  EXPECT_FALSE(null[4]);
  EXPECT_FALSE(bitdex::index::split_copy_line("1\t\\", f, null));  // a lone trailing backslash
  EXPECT_FALSE(bitdex::index::split_copy_line("\\xg", f, null));   // \x without a hex digit
}
