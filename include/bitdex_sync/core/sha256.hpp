// SHA-256 (FIPS 180-4): the stable digest behind generated object names.
#pragma once

#include <string>
#include <string_view>

namespace bitdex {

// Lowercase hex digest of `data`.
std::string sha256_hex(std::string_view data);

}  // namespace bitdex
