// The worker's batcher: limits, exactly-once skipping across a restart, and
// the covered mark when dedup drops a batch's last ops.
#include <gtest/gtest.h>

#include "bitdex_sync/core/batcher.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "support/model_index.hpp"
#include "support/temp_dir.hpp"

using namespace bitdex;
using bitdex::test::TempDir;

namespace {

EntityRecord rec(int64_t id, uint64_t lsn, uint32_t index, std::vector<Op> ops) {
  EntityRecord r;
  r.entity_id = id;
  r.ops = std::move(ops);
  r.pos = SourcePos{Stream::Slot, lsn, index};
  return r;
}

std::vector<wal::WalBatch> read_all(const std::string& dir) {
  std::vector<wal::WalBatch> out;
  wal::WalReader rd(dir, wal::Cursor{});
  wal::WalBatch b;
  while (rd.next(&b) == wal::ReadStatus::Batch) out.push_back(b);
  return out;
}

TEST(Batcher, ClosesAtTheOpLimitAndSkipsWhatIsDurable) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/wal";
  {
    auto w = wal::WalWriter::open({dir});
    pipeline::Batcher b(*w, {3, 1 << 20});
    EXPECT_TRUE(b.add(rec(1, 100, 0, {Op::set("a", OpValue::int64(1))})));
    EXPECT_FALSE(b.full());
    EXPECT_TRUE(b.add(rec(2, 100, 1, {Op::set("a", OpValue::int64(2)), Op::set("b", OpValue::int64(2))})));
    EXPECT_TRUE(b.full());
    b.flush();
    EXPECT_TRUE(b.empty());
    EXPECT_EQ(b.totals().batches, 1u);
    EXPECT_EQ(w->mark(Stream::Slot), (SourcePos{Stream::Slot, 100, 1}));
  }
  // A restart replays the transaction from the slot: what is durable is
  // skipped, what follows is kept.
  auto w = wal::WalWriter::open({dir});
  pipeline::Batcher b(*w, {100, 1 << 20});
  EXPECT_FALSE(b.add(rec(1, 100, 0, {Op::set("a", OpValue::int64(1))})));
  EXPECT_FALSE(b.add(rec(2, 100, 1, {Op::set("a", OpValue::int64(2))})));
  EXPECT_TRUE(b.add(rec(3, 100, 2, {Op::set("a", OpValue::int64(3))})));
  EXPECT_TRUE(b.add(rec(4, 250, 0, {Op::set("a", OpValue::int64(4))})));
  EXPECT_EQ(b.totals().skipped, 2u);
  b.flush();
  auto batches = read_all(dir);
  ASSERT_EQ(batches.size(), 2u);
  ASSERT_EQ(batches[1].records.size(), 2u);
  EXPECT_EQ(batches[1].records[0].entity_id, 3);
  EXPECT_EQ(batches[1].records[1].entity_id, 4);
}

TEST(Batcher, CoveredMarkReachesTheLastPositionEvenWhenDedupDropsIt) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/wal";
  auto w = wal::WalWriter::open({dir});
  pipeline::Batcher b(*w, {100, 1 << 20});
  // The second record repeats the first's set: dedup merges them.
  b.add(rec(7, 500, 0, {Op::set("a", OpValue::int64(1))}));
  b.add(rec(7, 500, 1, {Op::set("a", OpValue::int64(1))}));
  b.flush();
  EXPECT_EQ(w->mark(Stream::Slot), (SourcePos{Stream::Slot, 500, 1}));
  EXPECT_FALSE(b.add(rec(7, 500, 1, {Op::set("a", OpValue::int64(1))})));
}

TEST(Batcher, CoverRaisesTheMarkWithoutRecordsAndOnlyWhenItRises) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/wal";
  auto w = wal::WalWriter::open({dir});
  pipeline::Batcher b(*w, {100, 1 << 20});
  b.add(rec(1, 100, 0, {Op::set("a", OpValue::int64(1))}));
  b.cover(SourcePos{Stream::Slot, 900, UINT32_MAX});  // decoded past other transactions
  b.cover(SourcePos{Stream::Slot, 400, 0});           // never lowers
  b.flush();
  EXPECT_EQ(w->mark(Stream::Slot), (SourcePos{Stream::Slot, 900, UINT32_MAX}));
  // No records: a batch only for the mark, once.
  b.cover(SourcePos{Stream::Outbox, 42, 0});
  b.flush();
  EXPECT_EQ(w->mark(Stream::Outbox).major, 42u);
  b.cover(SourcePos{Stream::Outbox, 42, 0});
  b.flush();
  b.flush();
  auto batches = read_all(dir);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_TRUE(batches[1].records.empty());
  EXPECT_EQ(b.totals().batches, 2u);
  // Replays at or below a covered position are skipped.
  EXPECT_FALSE(b.add(rec(5, 899, 3, {Op::set("a", OpValue::int64(1))})));
  EXPECT_TRUE(b.add(rec(5, 901, 0, {Op::set("a", OpValue::int64(1))})));
}

TEST(Batcher, ClosesAtTheMemoryBound) {
  TempDir tmp;
  auto w = wal::WalWriter::open({tmp.path() + "/wal"});
  pipeline::Batcher b(*w, {1000000, 4096});
  uint32_t i = 0;
  while (!b.full()) b.add(rec(1, 10, i++, {Op::set("field", OpValue::string(std::string(100, 'x')))}));
  EXPECT_GE(b.bytes(), 4096u);
  EXPECT_LT(i, 40u);  // a few hundred bytes per record, not a few bytes
}

TEST(Batcher, NewLimitsApplyToTheOpenBatch) {
  TempDir tmp;
  auto w = wal::WalWriter::open({tmp.path() + "/wal"});
  pipeline::Batcher b(*w, {100, 1 << 20});
  b.add(rec(1, 10, 0, {Op::set("a", OpValue::int64(1))}));
  b.add(rec(2, 10, 1, {Op::set("a", OpValue::int64(2))}));
  EXPECT_FALSE(b.full());
  b.set_limits({2, 1 << 20});  // a reload lowered batch_max_ops
  EXPECT_TRUE(b.full());
}

}  // namespace

// What dedup merges for one entity may outgrow a WAL record (capture writes
// records of up to 64 MiB): the batcher cuts it into records of the same
// entity, in order, and applying them means the same.
TEST(Batcher, CutsRecordsThatOutgrowTheBound) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/wal";
  auto w = wal::WalWriter::open({dir});
  pipeline::Batcher b(*w, {100, 1u << 30});
  std::vector<EntityRecord> in;
  for (int i = 0; i < 5; i++) {
    EntityRecord r = rec(9, 100, static_cast<uint32_t>(i),
                         {Op::add("blob", OpValue::string(std::string(20u << 20, static_cast<char>('a' + i))))});
    if (i == 0) r.ops.insert(r.ops.begin(), Op::alive());
    in.push_back(r);
    b.add(std::move(r));
  }
  b.flush();
  auto batches = read_all(dir);
  ASSERT_EQ(batches.size(), 1u);
  const Batch& out = batches[0].records;
  ASSERT_GE(out.size(), 2u) << "a 100 MiB record was not cut";
  size_t ops = 0;
  for (size_t i = 0; i < out.size(); i++) {
    EXPECT_EQ(out[i].entity_id, 9);
    EXPECT_EQ(out[i].creates_slot, i + 1 == out.size()) << "creates_slot belongs to the last part";
    EXPECT_LE(pipeline::record_bytes(out[i]), pipeline::kSplitBytes + (21u << 20));
    ops += out[i].ops.size();
  }
  EXPECT_EQ(ops, 5u);
  test::ModelIndex a, c;
  a.apply(in);
  c.apply(out);
  EXPECT_TRUE(a == c) << a.diff(c);
}
