#include "bitdex_sync/core/capture_format.hpp"

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::capture {

EntityRecord decode(const uint8_t* data, size_t len) {
  if (len < kHeaderSize) throw Error(ErrorKind::Corrupt, "capture message shorter than its header");
  if (data[0] != kFormat)
    throw Error(ErrorKind::Corrupt, "capture message of unknown format " + std::to_string(data[0]));
  uint64_t id = 0;
  for (int i = 7; i >= 0; i--) id = (id << 8) | data[1 + i];
  EntityRecord r;
  r.entity_id = static_cast<int64_t>(id);
  r.ops = codec::decode_ops(data + kHeaderSize, len - kHeaderSize);
  return r;
}

std::string to_json(const uint8_t* data, size_t len) {
  EntityRecord r = decode(data, len);
  std::string out = "{\"entity_id\":" + std::to_string(r.entity_id) + ",\"ops\":";
  write_ops_json(out, r.ops);
  out += "}";
  return out;
}

}  // namespace bitdex::capture
