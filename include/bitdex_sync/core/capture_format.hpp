// The payload of one captured row change, as the capture trigger emits it
// (logical decoding message with prefix "bitdex_sync") and as the worker and
// the output plugin read it:
//   u8 format (2) | 16-byte tag | i64 entity id, little-endian | ops payload (ops_codec)
// or, for a TRUNCATE (a clear record, ops_codec's clear payload):
//   u8 format (3) | 16-byte tag | clear payload
// The tag is SipHash-2-4-128 under the server's capture key (siphash.hpp)
// over (u32 database OID | u32 top-level transaction id, both
// little-endian | format | everything after the tag).
// pg_logical_emit_message() is open to every role; the tag is what tells the
// worker a message came from the capture trigger, in the transaction it is
// decoded in (a message copied from one transaction into another, by a role
// that could read it, does not authenticate there).
// Ops are BitDex V2's as the trigger built them (alive stays an op here;
// dedup turns it into creates_slot).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/siphash.hpp"

namespace bitdex::capture {

inline constexpr char kMessagePrefix[] = "bitdex_sync";
inline constexpr uint8_t kFormat = 2;
inline constexpr uint8_t kFormatClear = 3;
inline constexpr size_t kTagSize = 16;
inline constexpr size_t kHeaderSize = 1 + kTagSize + 8;
inline constexpr size_t kClearHeaderSize = 1 + kTagSize;
inline constexpr size_t kKeySize = kSipKeySize;  // bytes of the capture key
// The largest record the capture trigger writes: a change that would make a
// bigger one is refused in the writing statement (the ops WAL holds records
// of up to 256 MiB; dedup merges records of one entity, and the worker cuts
// what grows past 64 MiB).
inline constexpr size_t kMaxRecord = 64u << 20;

// Writes the header with a zero tag; seal() fills it once the ops follow.
template <class Out>
inline void write_header(Out& out, int64_t entity_id) {
  char b[kHeaderSize] = {0};
  b[0] = static_cast<char>(kFormat);
  for (int i = 0; i < 8; i++) b[1 + kTagSize + i] = static_cast<char>(static_cast<uint64_t>(entity_id) >> (8 * i));
  out.append(b, kHeaderSize);
}

// Fills the tag of a whole record (header + ops) in place, for the
// transaction `xid` of database `database`.
void seal(uint8_t* record, size_t len, const SipHash128& key, uint32_t database, uint32_t xid);
// A clear message with a zero tag (seal() fills it).
std::string clear_message(const Clear& c);

// True when `record` is a message of a known format at least a header long
// and carries the tag `key` gives it for `database` and top-level
// transaction `xid`.
bool authentic(const uint8_t* record, size_t len, const SipHash128& key, uint32_t database, uint32_t xid);

// Decodes one payload (its tag is not checked here): an entity record, or a
// clear record for format 3; throws Error(Corrupt).
EntityRecord decode(const uint8_t* data, size_t len);

// The record as JSON {"entity_id":..,"ops":[..]} (the outbox row's shape).
std::string to_json(const uint8_t* data, size_t len);

}  // namespace bitdex::capture
