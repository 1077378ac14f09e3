// Binary op codec: round trips against the JSON form, and rejects every
// truncation and malformed byte.
#include <gtest/gtest.h>

#include <random>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/ops_codec.hpp"

using namespace bitdex;

namespace {

OpValue random_value(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: return OpValue::null();
    case 1: return OpValue::boolean(rng() % 2);
    case 2: return OpValue::int64(static_cast<int64_t>(rng()) >> (rng() % 64));
    case 3: return OpValue::string(std::string(rng() % 40, static_cast<char>('a' + rng() % 26)));
    case 4: return OpValue{OpValue::Kind::Json, 0, "1.25e3"};
    default: return OpValue{OpValue::Kind::Json, 0, "{\"k\":[1,\"x\"]}"};
  }
}

Op random_field_op(std::mt19937_64& rng) {
  std::string f = "f" + std::to_string(rng() % 5);
  switch (rng() % 3) {
    case 0: return Op::set(f, random_value(rng));
    case 1: return Op::remove(f, random_value(rng));
    default: return Op::add(f, random_value(rng));
  }
}

std::vector<Op> random_ops(std::mt19937_64& rng) {
  std::vector<Op> ops;
  size_t n = rng() % 8;
  for (size_t i = 0; i < n; i++) {
    switch (rng() % 6) {
      case 0: ops.push_back(Op::del()); break;
      case 1: ops.push_back(Op::alive()); break;
      case 2: {
        std::vector<Op> nested;
        for (size_t k = rng() % 4; k > 0; k--) nested.push_back(random_field_op(rng));
        Op q = Op::query_op_set("postId eq " + std::to_string(rng() % 100), std::move(nested));
        if (rng() % 4 == 0) q.has_query = false, q.query.clear();
        ops.push_back(std::move(q));
        break;
      }
      default: ops.push_back(random_field_op(rng));
    }
  }
  return ops;
}

}  // namespace

TEST(Codec, RoundTripMatchesJsonForm) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 20000; i++) {
    std::vector<Op> ops = random_ops(rng);
    std::string bin;
    codec::encode_ops(bin, ops);
    std::vector<Op> back = codec::decode_ops(reinterpret_cast<const uint8_t*>(bin.data()), bin.size());
    ASSERT_EQ(back, ops);
    // The JSON form survives binary, and JSON -> model -> JSON is stable.
    std::string j1, j2;
    write_ops_json(j1, ops);
    write_ops_json(j2, back);
    ASSERT_EQ(j1, j2);
    EntityRecord r = parse_record(json::parse("{\"entity_id\":1,\"ops\":" + j1 + "}"), "test");
    ASSERT_EQ(r.ops, ops);
  }
}

TEST(Codec, EveryTruncationIsRejected) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; i++) {
    std::vector<Op> ops = random_ops(rng);
    std::string bin;
    codec::encode_ops(bin, ops);
    for (size_t len = 0; len < bin.size(); len++)
      EXPECT_THROW(codec::decode_ops(reinterpret_cast<const uint8_t*>(bin.data()), len), Error) << len;
    bin += '\0';
    EXPECT_THROW(codec::decode_ops(reinterpret_cast<const uint8_t*>(bin.data()), bin.size()), Error);
  }
}

TEST(Codec, CompactForCommonOps) {
  std::string bin;
  codec::encode_ops(bin, {Op::remove("nsfwLevel", OpValue::int64(4)), Op::set("nsfwLevel", OpValue::int64(8))});
  // count + 2 x (kind + len + 9 bytes of name + value kind + 1-byte varint)
  EXPECT_EQ(bin.size(), 1u + 2 * (1 + 1 + 9 + 1 + 1));
}

TEST(Codec, RejectsHostileInput) {
  const uint8_t huge_count[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  EXPECT_THROW(codec::decode_ops(huge_count, sizeof huge_count), Error);
  const uint8_t bad_kind[] = {1, 9};
  EXPECT_THROW(codec::decode_ops(bad_kind, sizeof bad_kind), Error);
  const uint8_t nested_delete[] = {1, 6, 0, 1, 4};
  EXPECT_THROW(codec::decode_ops(nested_delete, sizeof nested_delete), Error);
  const uint8_t long_varint[] = {1, 1, 1, 'a', 3, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  EXPECT_THROW(codec::decode_ops(long_varint, sizeof long_varint), Error);
}

// The example in docs/wal-format.md, byte for byte.
TEST(Codec, DocumentedExample) {
  std::string bin;
  codec::encode_ops(bin, {Op::remove("nsfwLevel", OpValue::int64(4)), Op::set("nsfwLevel", OpValue::int64(8))});
  const std::string expected =
      "\x02"
      "\x02\x09nsfwLevel\x03\x08"
      "\x01\x09nsfwLevel\x03\x10";
  EXPECT_EQ(bin, expected);
  EXPECT_EQ(bin.size(), 27u);
}
