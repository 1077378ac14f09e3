// HMAC-SHA-256 against RFC 4231, and the capture message's tag: only the key
// and database that sealed a record accept it, and any changed byte fails.
#include <gtest/gtest.h>

#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/core/sha256.hpp"

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

std::string hmac_hex(const std::string& key, const std::string& data) {
  uint8_t out[kSha256Size];
  HmacSha256(key).mac({data}, out);
  return hex(out, sizeof out);
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

TEST(Hmac, Rfc4231Vectors) {
  EXPECT_EQ(hmac_hex(std::string(20, '\x0b'), "Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(hmac_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(hmac_hex(std::string(20, '\xaa'), std::string(50, '\xdd')),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
  // A key longer than a block is hashed first.
  EXPECT_EQ(hmac_hex(std::string(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  // Parts are hashed as their concatenation.
  uint8_t a[kSha256Size], b[kSha256Size];
  HmacSha256 k("Jefe");
  k.mac({"what do ya ", "want for", " nothing?"}, a);
  k.mac({"what do ya want for nothing?"}, b);
  EXPECT_EQ(hex(a, sizeof a), hex(b, sizeof b));
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
  HmacSha256 key(std::string(32, '\x11')), other(std::string(32, '\x12'));
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
