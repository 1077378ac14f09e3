// The capture key's SipHash, per process: built once from the key the
// postmaster read into shared memory (shared_state.cpp).
#include "bitdex_sync/pg/capture_key.hpp"

#include "bitdex_sync/pg/shared_state.hpp"

namespace bitdex::pg {

const bitdex::SipHash128* capture_mac() noexcept {
  static bitdex::SipHash128* mac = nullptr;
  if (!mac && shared_state()) {
    try {
      static_assert(sizeof shared_state()->capture_key >= bitdex::kSipKeySize);
      mac = new bitdex::SipHash128(shared_state()->capture_key);  // its first 16 bytes
    } catch (...) {
      return nullptr;
    }
  }
  return mac;
}

}  // namespace bitdex::pg
