// CRC-32C (Castagnoli), the checksum of every ops WAL record and header.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitdex {

// Extends `crc` (0 to start) over `len` bytes; SSE4.2 when the CPU has it.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t len);

inline uint32_t crc32c(const void* data, size_t len) {
  return crc32c_extend(0, data, len);
}

}  // namespace bitdex
