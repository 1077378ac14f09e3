// The key that authenticates capture messages (capture_format.hpp), as the
// trigger, the worker and the output plugin use it (capture_key.cpp); the
// key itself lives in shared memory (shared_state.hpp).
#pragma once

#include "bitdex_sync/core/siphash.hpp"

namespace bitdex::pg {

// This process's SipHash keyed with the capture key, built at first use;
// nullptr without shared memory or memory.
const bitdex::SipHash128* capture_mac() noexcept;

}  // namespace bitdex::pg
