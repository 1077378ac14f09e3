// Clear records (SPEC §9): their JSON and WAL forms, what the index does with
// them (against the model), dedup treating them as barriers, and the writer
// never putting one into a segment of an older format version.
#include <gtest/gtest.h>

#include "bitdex_sync/core/crc32c.hpp"
#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/core/wal_writer.hpp"
#include "bitdex_sync/index/index.hpp"
#include "support/model_index.hpp"
#include "support/temp_dir.hpp"

using namespace bitdex;

namespace {

EntityRecord rec(int64_t id, std::vector<Op> ops, uint64_t pos) {
  EntityRecord r;
  r.entity_id = id;
  r.ops = std::move(ops);
  r.pos = SourcePos{Stream::Slot, pos, 0};
  return r;
}

EntityRecord clear_rec(Clear c, uint64_t pos) {
  return EntityRecord::clearing(std::move(c), SourcePos{Stream::Slot, pos, 0});
}

// Two images with fields a and tags; image 3 has only tags (a join row
// whose image row is gone); a fan-out field p on image 1.
Batch populated() {
  return {rec(1, {Op::alive(), Op::set("a", OpValue::int64(1)), Op::add("tags", OpValue::int64(7))}, 1),
          rec(2, {Op::alive(), Op::set("a", OpValue::int64(2)), Op::add("tags", OpValue::int64(7))}, 2),
          rec(3, {Op::add("tags", OpValue::int64(8))}, 3), rec(4, {Op::alive()}, 4),
          rec(1, {Op::set("p", OpValue::string("x"))}, 5)};
}

void expect_same(const index::Index& ix, const test::ModelIndex& m) {
  std::set<int64_t> alive;
  for (uint32_t s : ix.alive()) alive.insert(s);
  EXPECT_EQ(alive, m.alive_slots());
  size_t bitmaps = 0;
  for (const auto& [name, field] : ix.fields())
    for (const index::ValueMap::Entry& e : field.values) {
      bitmaps++;
      auto it = m.bitmaps().find({name, e.value});
      ASSERT_NE(it, m.bitmaps().end()) << name;
      std::set<int64_t> slots;
      for (uint32_t s : e.bitmap) slots.insert(s);
      EXPECT_EQ(slots, it->second) << name;
    }
  EXPECT_EQ(bitmaps, m.bitmaps().size());
}

}  // namespace

TEST(Clear, JsonRoundTripsAndRejectsBadShapes) {
  Batch b = {clear_rec(Clear{true, true, "Image", {"a", "b"}}, 1), rec(5, {Op::set("a", OpValue::int64(1))}, 2)};
  Batch back = parse_batch(batch_to_json(b));
  ASSERT_EQ(back.size(), 2u);
  ASSERT_TRUE(back[0].is_clear());
  EXPECT_EQ(*back[0].clear, *b[0].clear);
  EXPECT_EQ(batch_to_json(back), batch_to_json(b));
  for (const char* bad : {R"([{"clear": []}])", R"([{"clear": {"fields": "a"}}])", R"([{"clear": {"fields": [""]}}])",
                          R"([{"clear": {"fields": []}}])", R"([{"clear": {"fields": ["a"], "alive_slots": true}}])",
                          R"([{"clear": {"fields": ["a"], "delete_slots": 1}}])"})
    EXPECT_THROW(parse_batch(bad), Error) << bad;
}

TEST(Clear, WalRoundTripsAndRejectsDamage) {
  const EntityRecord r = clear_rec(Clear{true, false, "TagsOnImage.tagIds", {"tagIds", "autoTagIds"}}, 77);
  std::string bytes;
  wal::append_entity_record(bytes, r);
  wal::RecordView v;
  std::string why;
  ASSERT_EQ(wal::decode_record(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &v, &why), wal::Parse::Ok);
  EXPECT_EQ(v.type, wal::RecordType::Clear);
  EXPECT_EQ(wal::decode_entity(v), r);
  // Damage inside the payload, with the CRC made to match: still refused.
  auto reseal = [](std::string& b) {
    const uint32_t crc = crc32c(b.data() + 8, b.size() - 8);
    for (int i = 0; i < 4; i++) b[4 + i] = static_cast<char>(crc >> (8 * i));
  };
  for (size_t at = wal::kRecordHeaderSize; at < bytes.size(); at++) {
    for (uint8_t flip : {0x01, 0x80, 0xFF}) {
      std::string bad = bytes;
      bad[at] = static_cast<char>(bad[at] ^ flip);
      reseal(bad);
      wal::RecordView bv;
      ASSERT_EQ(wal::decode_record(reinterpret_cast<const uint8_t*>(bad.data()), bad.size(), &bv, &why),
                wal::Parse::Ok);
      try {
        EntityRecord out = wal::decode_entity(bv);
        // A flip that still parses must give a well-formed clear record.
        ASSERT_TRUE(out.is_clear());
        EXPECT_FALSE(out.clear->alive_slots && !out.clear->delete_slots);
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Corrupt);
      }
    }
  }
}

TEST(Clear, IndexAgreesWithTheModel) {
  const std::vector<Clear> clears = {
      Clear{false, false, "TagsOnImage.tags", {"tags"}},  // a join table truncated
      Clear{true, true, "Image", {"a"}},                  // a direct table truncated: its slots go
      Clear{true, false, "Image", {"a"}},                 // ... without its alive-only slots
      Clear{false, false, "Post", {"p", "missing"}},      // a fan-out parent; a field never written
      Clear{true, true, "Empty", {}},                     // every alive slot
  };
  for (const Clear& c : clears) {
    index::Index ix;
    test::ModelIndex m;
    Batch b = populated();
    b.push_back(clear_rec(c, 10));
    b.push_back(rec(2, {Op::set("a", OpValue::int64(9))}, 11));  // what comes after applies
    ix.apply(b);
    m.apply(b);
    SCOPED_TRACE(batch_to_json({b[5]}));
    expect_same(ix, m);
  }
  // Spot checks of the meaning itself.
  index::Index ix;
  Batch b = populated();
  b.push_back(clear_rec(Clear{true, true, "Image", {"a"}}, 10));
  ix.apply(b);
  EXPECT_TRUE(ix.alive().isEmpty());
  EXPECT_TRUE(ix.has(3, "tags", OpValue::int64(8)));   // slot 3 had no value of a and was not alive
  EXPECT_FALSE(ix.has(1, "p", OpValue::string("x")));  // a deleted slot loses every field
  EXPECT_EQ(ix.counters().clears, 1u);
}

TEST(Clear, DedupMovesNothingAcrossIt) {
  // Without the barrier, dedup would merge the two records of slot 1 into
  // [set a 1, set a 2] after the clear, or drop the clear's effect.
  Batch b = {rec(1, {Op::set("a", OpValue::int64(1))}, 1), clear_rec(Clear{false, false, "Image", {"a"}}, 2),
             rec(1, {Op::set("a", OpValue::int64(2))}, 3), rec(1, {Op::remove("a", OpValue::int64(2))}, 4)};
  DedupStats st;
  Batch out = dedup(b, &st);
  ASSERT_EQ(out.size(), 2u) << batch_to_json(out);
  EXPECT_FALSE(out[0].is_clear());
  EXPECT_TRUE(out[1].is_clear());
  test::ModelIndex seq, dd;
  seq.apply(b);
  dd.apply(out);
  EXPECT_TRUE(seq == dd) << seq.diff(dd);
}

// A WAL whose newest segment is of format version 2 (written before clear
// records existed) gets a new segment before the first clear record, so a
// reader of version 2 never meets one.
TEST(Clear, WriterStartsAVersion3SegmentBeforeTheFirstClear) {
  test::TempDir dir;
  {
    wal::WriterOptions o;
    o.dir = dir.path();
    auto w = wal::WalWriter::open(o);
    Batch b = {rec(1, {Op::set("a", OpValue::int64(1))}, 1)};
    w->append(b, {b.back().pos});
  }
  // Turn segment 1's header into version 2, as an earlier build wrote it.
  const std::string path = dir.path() + "/" + wal::segment_file_name(1);
  std::string data = fileio::read_file(path);
  data[8] = 2;
  wal::SegmentHeader h;
  size_t hlen = 0;
  std::string why;
  // The header CRC covers [0, H-4): recompute it over the real header length.
  const uint32_t len = static_cast<uint8_t>(data[12]) | static_cast<uint8_t>(data[13]) << 8;
  const uint32_t hcrc = crc32c(data.data(), len - 4);
  for (int i = 0; i < 4; i++) data[len - 4 + i] = static_cast<char>(hcrc >> (8 * i));
  ASSERT_EQ(wal::decode_segment_header(reinterpret_cast<const uint8_t*>(data.data()), data.size(), &h, &hlen, &why),
            wal::Parse::Ok)
      << why;
  ASSERT_EQ(h.version, 2u);
  fileio::write_file_atomic(dir.path(), wal::segment_file_name(1), data);

  wal::WriterOptions o;
  o.dir = dir.path();
  auto w = wal::WalWriter::open(o);
  Batch plain = {rec(2, {Op::set("a", OpValue::int64(2))}, 2)};
  w->append(plain, {plain.back().pos});
  EXPECT_EQ(w->generation(), 1u);  // entity records still go into the version-2 segment
  Batch c = {clear_rec(Clear{false, false, "Image", {"a"}}, 3)};
  w->append(c, {c.back().pos});
  EXPECT_EQ(w->generation(), 2u);
  wal::WalReader rd(dir.path(), wal::Cursor{});
  wal::WalBatch got;
  std::vector<EntityRecord> all;
  while (rd.next(&got) == wal::ReadStatus::Batch)
    for (EntityRecord& r : got.records) all.push_back(r);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_TRUE(all[2].is_clear());
  index::Index ix;
  for (const EntityRecord& r : all) ix.apply(r);
  EXPECT_TRUE(ix.fields().empty());
}
