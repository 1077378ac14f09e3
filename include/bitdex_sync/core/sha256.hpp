// SHA-256 (FIPS 180-4): the stable digest behind generated object names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bitdex {

inline constexpr size_t kSha256Size = 32;

// Incremental SHA-256; copyable, so a keyed state can be reused.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  // The digest; the object is spent afterwards.
  void final(uint8_t out[kSha256Size]);

 private:
  uint32_t h_[8];
  unsigned char buf_[64];
  size_t used_ = 0;
  uint64_t total_ = 0;
};

// Lowercase hex digest of `data`.
std::string sha256_hex(std::string_view data);

}  // namespace bitdex
