#include "bitdex_sync/core/capture_format.hpp"

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::capture {
namespace {

void tag(const uint8_t* record, size_t len, const SipHash128& key, uint32_t database, uint32_t xid,
         uint8_t out[kSipTagSize]) {
  char ids[8];
  for (int i = 0; i < 4; i++) {
    ids[i] = static_cast<char>(database >> (8 * i));
    ids[4 + i] = static_cast<char>(xid >> (8 * i));
  }
  key.mac({std::string_view(ids, 8), std::string_view(reinterpret_cast<const char*>(record), 1),
           std::string_view(reinterpret_cast<const char*>(record) + 1 + kTagSize, len - 1 - kTagSize)},
          out);
}

size_t header_size(uint8_t format) {
  return format == kFormat ? kHeaderSize : format == kFormatClear ? kClearHeaderSize : 0;
}

}  // namespace

std::string clear_message(const Clear& c) {
  std::string out(kClearHeaderSize, '\0');
  out[0] = static_cast<char>(kFormatClear);
  codec::encode_clear(out, c);
  return out;
}

void seal(uint8_t* record, size_t len, const SipHash128& key, uint32_t database, uint32_t xid) {
  if (len < 1 || header_size(record[0]) == 0 || len < header_size(record[0]))
    throw Error(ErrorKind::Internal, "capture record shorter than its header");
  uint8_t mac[kSipTagSize];
  tag(record, len, key, database, xid, mac);
  for (size_t i = 0; i < kTagSize; i++) record[1 + i] = mac[i];
}

bool authentic(const uint8_t* record, size_t len, const SipHash128& key, uint32_t database, uint32_t xid) {
  if (len < 1 || header_size(record[0]) == 0 || len < header_size(record[0])) return false;
  uint8_t mac[kSipTagSize];
  tag(record, len, key, database, xid, mac);
  uint8_t diff = 0;  // every byte compared: no early exit to time
  for (size_t i = 0; i < kTagSize; i++) diff |= static_cast<uint8_t>(mac[i] ^ record[1 + i]);
  return diff == 0;
}

EntityRecord decode(const uint8_t* data, size_t len) {
  if (len >= kClearHeaderSize && data[0] == kFormatClear)
    return EntityRecord::clearing(codec::decode_clear(data + kClearHeaderSize, len - kClearHeaderSize));
  if (len < kHeaderSize) throw Error(ErrorKind::Corrupt, "capture message shorter than its header");
  if (data[0] != kFormat)
    throw Error(ErrorKind::Corrupt, "capture message of unknown format " + std::to_string(data[0]));
  uint64_t id = 0;
  for (int i = 7; i >= 0; i--) id = (id << 8) | data[1 + kTagSize + i];
  EntityRecord r;
  r.entity_id = static_cast<int64_t>(id);
  r.ops = codec::decode_ops(data + kHeaderSize, len - kHeaderSize);
  return r;
}

std::string to_json(const uint8_t* data, size_t len) {
  EntityRecord r = decode(data, len);
  if (r.clear) {
    std::string out = "{\"clear\":";
    write_clear_json(out, *r.clear);
    return out + "}";
  }
  std::string out = "{\"entity_id\":" + std::to_string(r.entity_id) + ",\"ops\":";
  write_ops_json(out, r.ops);
  out += "}";
  return out;
}

}  // namespace bitdex::capture
