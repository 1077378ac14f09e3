// Fuzzes what the worker does with a logical message that carries the
// capture prefix: checking its tag and decoding it never crash, random bytes
// never authenticate, and a sealed record authenticates and decodes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const uint8_t raw[bitdex::kSipKeySize] = {0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  static const bitdex::SipHash128 key(raw);
  if (bitdex::capture::authentic(data, size, key, 1, 7)) std::abort();  // a 2^-128 event
  try {
    (void)bitdex::capture::decode(data, size);
  } catch (const bitdex::Error&) {
  }
  if (size < bitdex::capture::kHeaderSize) return 0;
  std::string sealed(reinterpret_cast<const char*>(data), size);
  sealed[0] = static_cast<char>(bitdex::capture::kFormat);
  auto* p = reinterpret_cast<uint8_t*>(sealed.data());
  bitdex::capture::seal(p, sealed.size(), key, 1, 7);
  if (!bitdex::capture::authentic(p, sealed.size(), key, 1, 7)) std::abort();
  if (bitdex::capture::authentic(p, sealed.size(), key, 2, 7)) std::abort();
  if (bitdex::capture::authentic(p, sealed.size(), key, 1, 8)) std::abort();
  try {
    (void)bitdex::capture::to_json(p, sealed.size());
  } catch (const bitdex::Error&) {
  }
  return 0;
}
