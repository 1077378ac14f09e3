// SipHash-2-4-128 against the reference vectors, and the capture message's
// tag: only the key, database and transaction that sealed a record accept
// it, and any changed byte fails.
#include <gtest/gtest.h>

#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/core/sha256.hpp"
#include "bitdex_sync/core/siphash.hpp"

using namespace bitdex;

namespace {

std::string hex(const uint8_t* p, size_t n) {
  static const char d[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; i++) {
    out += d[p[i] >> 4];
    out += d[p[i] & 15];
  }
  return out;
}

// The reference vectors: key 00 01 .. 0f, message 00 01 .. (n-1).
std::string sip_hex(size_t n) {
  uint8_t key[16], msg[64], out[16];
  for (int i = 0; i < 16; i++) key[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < n; i++) msg[i] = static_cast<uint8_t>(i);
  SipHash128(key).mac({std::string_view(reinterpret_cast<const char*>(msg), n)}, out);
  return hex(out, sizeof out);
}

SipHash128 key_of(char c) {
  uint8_t k[16];
  for (uint8_t& b : k) b = static_cast<uint8_t>(c);
  return SipHash128(k);
}

struct StringOut {
  std::string s;
  void append(const char* p, size_t n) { s.append(p, n); }
};

std::string record(int64_t entity, const std::vector<Op>& ops) {
  StringOut out;
  capture::write_header(out, entity);
  std::string body;
  codec::encode_ops(body, ops);
  out.s += body;
  return out.s;
}

}  // namespace

TEST(SipHash, ReferenceVectors) {
  EXPECT_EQ(sip_hex(0), "a3817f04ba25a8e66df67214c7550293");
  EXPECT_EQ(sip_hex(1), "da87c1d86b99af44347659119b22fc45");
  EXPECT_EQ(sip_hex(7), "a1f1ebbed8dbc153c0b84aa61ff08239");
  EXPECT_EQ(sip_hex(8), "3b62a9ba6258f5610f83e264f31497b4");
  EXPECT_EQ(sip_hex(15), "5493e99933b0a8117e08ec0f97cfc3d9");
  EXPECT_EQ(sip_hex(63), "5150d1772f50834a503e069a973fbd7c");
  // Parts are hashed as their concatenation, wherever they split words.
  uint8_t key[16], a[16], b[16];
  for (int i = 0; i < 16; i++) key[i] = static_cast<uint8_t>(i);
  SipHash128 k(key);
  const std::string msg = "what do ya want for nothing? and a little more";
  k.mac({msg}, a);
  for (size_t cut1 = 0; cut1 <= msg.size(); cut1 += 3)
    for (size_t cut2 = cut1; cut2 <= msg.size(); cut2 += 5) {
      k.mac({std::string_view(msg).substr(0, cut1), std::string_view(msg).substr(cut1, cut2 - cut1),
             std::string_view(msg).substr(cut2)},
            b);
      ASSERT_EQ(hex(a, sizeof a), hex(b, sizeof b)) << cut1 << " " << cut2;
    }
}

TEST(Sha256, IncrementalEqualsWhole) {
  std::string data(1000, 'x');
  for (size_t split : {0ul, 1ul, 55ul, 56ul, 63ul, 64ul, 65ul, 999ul}) {
    Sha256 s;
    s.update(data.data(), split);
    s.update(data.data() + split, data.size() - split);
    uint8_t d[kSha256Size];
    s.final(d);
    EXPECT_EQ(hex(d, sizeof d), sha256_hex(data)) << split;
  }
}

TEST(CaptureFormat, OnlyTheSealingKeyDatabaseAndTransactionAuthenticate) {
  SipHash128 key = key_of('\x11'), other = key_of('\x12');
  std::string r = record(42, {Op::set("lvl", OpValue::int64(7)), Op::alive()});
  auto* p = reinterpret_cast<uint8_t*>(r.data());
  EXPECT_FALSE(capture::authentic(p, r.size(), key, 5, 900)) << "an unsealed record";
  capture::seal(p, r.size(), key, 5, 900);
  EXPECT_TRUE(capture::authentic(p, r.size(), key, 5, 900));
  EXPECT_FALSE(capture::authentic(p, r.size(), other, 5, 900)) << "another key";
  EXPECT_FALSE(capture::authentic(p, r.size(), key, 6, 900)) << "another database";
  EXPECT_FALSE(capture::authentic(p, r.size(), key, 5, 901)) << "replayed in another transaction";
  EXPECT_FALSE(capture::authentic(p, r.size() - 1, key, 5, 900)) << "truncated";
  for (size_t i = 0; i < r.size(); i++)
    for (uint8_t bit : {1, 128}) {
      std::string flipped = r;
      flipped[i] = static_cast<char>(flipped[i] ^ bit);
      EXPECT_FALSE(capture::authentic(reinterpret_cast<const uint8_t*>(flipped.data()), flipped.size(), key, 5, 900))
          << "byte " << i;
    }
  EntityRecord d = capture::decode(p, r.size());
  EXPECT_EQ(d.entity_id, 42);
  ASSERT_EQ(d.ops.size(), 2u);
  EXPECT_EQ(capture::to_json(p, r.size()),
            R"({"entity_id":42,"ops":[{"op":"set","field":"lvl","value":7},{"op":"alive"}]})");
  // A format-1 message (no tag) is neither authentic nor decoded.
  std::string v1 = "\x01" + std::string(8, '\0') + "\x00";
  EXPECT_FALSE(capture::authentic(reinterpret_cast<const uint8_t*>(v1.data()), v1.size(), key, 5, 900));
  EXPECT_THROW(capture::decode(reinterpret_cast<const uint8_t*>(v1.data()), v1.size()), Error);
  EXPECT_FALSE(capture::authentic(reinterpret_cast<const uint8_t*>("\x00"), 1, key, 5, 900));
}

// A TRUNCATE's clear message: sealed and checked like an entity message;
// turning it into an entity message (or back) breaks the tag, since the
// format byte is covered.
TEST(CaptureFormat, ClearMessagesAuthenticateAndDecode) {
  const SipHash128 key = key_of('k');
  const Clear c{true, true, "Image", {"nsfwLevel", "postId"}};
  std::string msg = capture::clear_message(c);
  auto* p = reinterpret_cast<uint8_t*>(msg.data());
  capture::seal(p, msg.size(), key, 5, 700);
  EXPECT_TRUE(capture::authentic(p, msg.size(), key, 5, 700));
  EXPECT_FALSE(capture::authentic(p, msg.size(), key, 5, 701));
  EntityRecord r = capture::decode(p, msg.size());
  ASSERT_TRUE(r.is_clear());
  EXPECT_EQ(*r.clear, c);
  EXPECT_EQ(capture::to_json(p, msg.size()),
            R"({"clear":{"source":"Image","fields":["nsfwLevel","postId"],"delete_slots":true,"alive_slots":true}})");
  for (size_t i = 0; i < msg.size(); i++) {
    std::string bad = msg;
    bad[i] = static_cast<char>(bad[i] ^ 0x04);
    EXPECT_FALSE(capture::authentic(reinterpret_cast<const uint8_t*>(bad.data()), bad.size(), key, 5, 700)) << i;
  }
  EXPECT_FALSE(capture::authentic(p, capture::kClearHeaderSize - 1, key, 5, 700));  // shorter than a header
}
