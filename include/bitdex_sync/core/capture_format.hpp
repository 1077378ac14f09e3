// The payload of one captured row change, as the capture trigger emits it
// (logical decoding message with prefix "bitdex_sync") and as the worker and
// the output plugin read it:
//   u8 format (1) | i64 entity id, little-endian | ops payload (ops_codec)
// Ops are BitDex V2's as the trigger built them (alive stays an op here;
// dedup turns it into creates_slot).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::capture {

inline constexpr char kMessagePrefix[] = "bitdex_sync";
inline constexpr uint8_t kFormat = 1;
inline constexpr size_t kHeaderSize = 9;

template <class Out>
inline void write_header(Out& out, int64_t entity_id) {
  char b[kHeaderSize];
  b[0] = static_cast<char>(kFormat);
  for (int i = 0; i < 8; i++) b[1 + i] = static_cast<char>(static_cast<uint64_t>(entity_id) >> (8 * i));
  out.append(b, kHeaderSize);
}

// Decodes one payload; throws Error(Corrupt).
EntityRecord decode(const uint8_t* data, size_t len);

// The record as JSON {"entity_id":..,"ops":[..]} (the outbox row's shape).
std::string to_json(const uint8_t* data, size_t len);

}  // namespace bitdex::capture
