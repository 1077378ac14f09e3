// The compact binary form of ops used as the ops WAL record payload
// (documented byte by byte in docs/wal-format.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::codec {

// Byte writers shared by encode_ops and the capture trigger, which writes the
// same format straight into a PostgreSQL StringInfo. `Out` needs
// append(const char*, size_t).
inline uint64_t zigzag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}

template <class Out>
inline void write_byte(Out& out, uint8_t b) {
  char c = static_cast<char>(b);
  out.append(&c, 1);
}

template <class Out>
inline void write_varint(Out& out, uint64_t v) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

template <class Out>
inline void write_bytes(Out& out, const char* data, size_t len) {
  write_varint(out, len);
  out.append(data, len);
}

// One set/remove/add op header: kind and field; the value follows.
template <class Out>
inline void write_field_op(Out& out, OpKind kind, const char* field, size_t field_len) {
  write_byte(out, static_cast<uint8_t>(kind));
  write_bytes(out, field, field_len);
}

template <class Out>
inline void write_int_value(Out& out, int64_t v) {
  write_byte(out, static_cast<uint8_t>(OpValue::Kind::Int));
  write_varint(out, zigzag(v));
}

template <class Out>
inline void write_text_value(Out& out, OpValue::Kind kind, const char* data, size_t len) {
  write_byte(out, static_cast<uint8_t>(kind));
  write_bytes(out, data, len);
}

// Appends the payload for `ops`: varint count, then each op.
void encode_ops(std::string& out, const std::vector<Op>& ops);

// Decodes a whole payload; throws Error(Corrupt) when it is malformed or has
// trailing bytes.
std::vector<Op> decode_ops(const uint8_t* data, size_t len);

// A clear record's payload: u8 flags (kClearDeleteSlots, kClearAliveSlots),
// string source, varint count, string field × count. Decoding throws
// Error(Corrupt) for unknown flags, alive_slots without delete_slots, an
// empty field name, a clear of nothing, or trailing bytes.
inline constexpr uint8_t kClearDeleteSlots = 0x01;
inline constexpr uint8_t kClearAliveSlots = 0x02;
void encode_clear(std::string& out, const Clear& c);
Clear decode_clear(const uint8_t* data, size_t len);

// LEB128 unsigned varint.
void put_varint(std::string& out, uint64_t v);

}  // namespace bitdex::codec
