// SipHash-2-4-128, from the algorithm's description: two compression rounds
// per 8-byte word, four finalization rounds per 8-byte half of the tag.
#include "bitdex_sync/core/siphash.hpp"

#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex {
namespace {

inline uint64_t rotl(uint64_t x, int b) {
  return (x << b) | (x >> (64 - b));
}

inline uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

struct State {
  uint64_t v0, v1, v2, v3;

  void round() {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  }
  void compress(uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  uint64_t finish(uint64_t mark) {
    v2 ^= mark;
    for (int i = 0; i < 4; i++) round();
    return v0 ^ v1 ^ v2 ^ v3;
  }
};

}  // namespace

SipHash128::SipHash128(const uint8_t key[kSipKeySize]) : k0_(le64(key)), k1_(le64(key + 8)) {}

void SipHash128::mac(std::initializer_list<std::string_view> parts, uint8_t out[kSipTagSize]) const {
  State s{k0_ ^ 0x736f6d6570736575ull, k1_ ^ 0x646f72616e646f6dull ^ 0xee, k0_ ^ 0x6c7967656e657261ull,
          k1_ ^ 0x7465646279746573ull};
  uint8_t word[8];
  size_t have = 0, total = 0;
  for (std::string_view part : parts) {
    const auto* p = reinterpret_cast<const uint8_t*>(part.data());
    size_t n = part.size();
    total += n;
    while (n > 0) {
      if (have == 0 && n >= 8) {  // whole words straight from the input
        s.compress(le64(p));
        p += 8;
        n -= 8;
        continue;
      }
      word[have++] = *p++;
      n--;
      if (have == 8) {
        s.compress(le64(word));
        have = 0;
      }
    }
  }
  uint64_t last = static_cast<uint64_t>(total & 0xff) << 56;
  for (size_t i = 0; i < have; i++) last |= static_cast<uint64_t>(word[i]) << (8 * i);
  s.compress(last);
  const uint64_t lo = s.finish(0xee);
  s.v1 ^= 0xdd;
  const uint64_t hi = s.finish(0);
  for (int i = 0; i < 8; i++) {
    out[i] = static_cast<uint8_t>(lo >> (8 * i));
    out[8 + i] = static_cast<uint8_t>(hi >> (8 * i));
  }
}

}  // namespace bitdex
