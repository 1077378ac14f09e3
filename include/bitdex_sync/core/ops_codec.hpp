// The compact binary form of ops used as the ops WAL record payload
// (documented byte by byte in docs/wal-format.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::codec {

// Appends the payload for `ops`: varint count, then each op.
void encode_ops(std::string& out, const std::vector<Op>& ops);

// Decodes a whole payload; throws Error(Corrupt) when it is malformed or has
// trailing bytes.
std::vector<Op> decode_ops(const uint8_t* data, size_t len);

// LEB128 unsigned varint.
void put_varint(std::string& out, uint64_t v);

}  // namespace bitdex::codec
