// Little-endian encoders and validating decoders for segment headers and
// records. Decoders never read past `avail` and never trust a length.
#include "bitdex_sync/core/wal_format.hpp"

#include <cstdio>
#include <cstring>

#include "bitdex_sync/core/crc32c.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::wal {
namespace {

void put_u8(std::string& out, uint8_t v) {
  out += static_cast<char>(v);
}
void put_u32(std::string& out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; i++) b[i] = static_cast<char>(v >> (8 * i));
  out.append(b, 4);
}
void put_u64(std::string& out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; i++) b[i] = static_cast<char>(v >> (8 * i));
  out.append(b, 8);
}
void set_u32(std::string& out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; i++) out[at + i] = static_cast<char>(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

void put_mark(std::string& out, const SourcePos& m) {
  put_u8(out, static_cast<uint8_t>(m.stream));
  put_u8(out, 0);
  put_u8(out, 0);
  put_u8(out, 0);
  put_u32(out, m.minor);
  put_u64(out, m.major);
}
SourcePos get_mark(const uint8_t* p) {
  SourcePos m;
  m.stream = static_cast<Stream>(p[0]);
  m.minor = get_u32(p + 4);
  m.major = get_u64(p + 8);
  return m;
}

// Writes the 32-byte record header with placeholders for length and CRC.
size_t begin_record(std::string& out, RecordType type, uint8_t flags, const SourcePos& pos, int64_t entity_id) {
  size_t start = out.size();
  put_u32(out, 0);
  put_u32(out, 0);
  put_u8(out, static_cast<uint8_t>(type));
  put_u8(out, flags);
  put_u8(out, static_cast<uint8_t>(pos.stream));
  put_u8(out, 0);
  put_u32(out, pos.minor);
  put_u64(out, pos.major);
  put_u64(out, static_cast<uint64_t>(entity_id));
  return start;
}

void end_record(std::string& out, size_t start) {
  size_t len = out.size() - start;
  if (len > kMaxRecordSize)
    throw Error(ErrorKind::InvalidInput,
                "ops WAL record of " + std::to_string(len) + " bytes exceeds the 256 MiB record limit");
  set_u32(out, start, static_cast<uint32_t>(len));
  uint32_t crc = crc32c(out.data() + start + 8, len - 8);
  set_u32(out, start + 4, crc);
}

}  // namespace

std::string segment_file_name(uint64_t generation) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx.seg", static_cast<unsigned long long>(generation));
  return buf;
}

uint64_t parse_segment_file_name(const std::string& name) {
  if (name.size() != 20 || name.compare(16, 4, ".seg") != 0) return 0;
  uint64_t g = 0;
  for (int i = 0; i < 16; i++) {
    char c = name[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return 0;
    g = (g << 4) | static_cast<uint64_t>(d);
  }
  return g;
}

void encode_segment_header(std::string& out, const SegmentHeader& h) {
  size_t start = out.size();
  out.append(kSegmentMagic, 8);
  put_u32(out, kFormatVersion);
  put_u32(out, static_cast<uint32_t>(kSegmentHeaderFixed + kMarkSize * h.marks.size() + 4));
  put_u64(out, h.wal_id);
  put_u64(out, h.generation);
  put_u64(out, h.next_batch_seq);
  put_u32(out, static_cast<uint32_t>(h.marks.size()));
  put_u32(out, h.database);
  put_u64(out, h.instance);
  put_u64(out, 0);  // reserved
  for (const SourcePos& m : h.marks) put_mark(out, m);
  put_u32(out, crc32c(out.data() + start, out.size() - start));
}

Parse decode_segment_header(const uint8_t* p, size_t avail, SegmentHeader* h, size_t* header_len, std::string* why) {
  if (avail < kSegmentHeaderFixedV1) return Parse::Incomplete;
  if (std::memcmp(p, kSegmentMagic, 8) != 0) {
    *why = "bad magic: not an ops WAL segment";
    return Parse::Corrupt;
  }
  uint32_t version = get_u32(p + 8);
  if (version < 1 || version > kFormatVersion) {
    *why = "unsupported format version " + std::to_string(version);
    return Parse::Corrupt;
  }
  const size_t fixed = version == 1 ? kSegmentHeaderFixedV1 : kSegmentHeaderFixed;
  uint32_t len = get_u32(p + 12);
  uint32_t nmarks = get_u32(p + 40);
  if (nmarks > kMaxMarks || len != fixed + kMarkSize * nmarks + 4) {
    *why = "inconsistent header length";
    return Parse::Corrupt;
  }
  if (avail < len) return Parse::Incomplete;
  if (get_u32(p + len - 4) != crc32c(p, len - 4)) {
    *why = "header CRC mismatch";
    return Parse::Corrupt;
  }
  h->version = version;
  h->wal_id = get_u64(p + 16);
  h->generation = get_u64(p + 24);
  h->next_batch_seq = get_u64(p + 32);
  h->database = version == 1 ? 0 : get_u32(p + 44);
  h->instance = version == 1 ? 0 : get_u64(p + 48);
  h->marks.clear();
  for (uint32_t i = 0; i < nmarks; i++) h->marks.push_back(get_mark(p + fixed + kMarkSize * i));
  *header_len = len;
  return Parse::Ok;
}

void append_entity_record(std::string& out, const EntityRecord& r) {
  if (r.clear) {
    size_t start = begin_record(out, RecordType::Clear, 0, r.pos, 0);
    codec::encode_clear(out, *r.clear);
    end_record(out, start);
    return;
  }
  size_t start = begin_record(out, RecordType::Entity, r.creates_slot ? kFlagCreatesSlot : 0, r.pos, r.entity_id);
  codec::encode_ops(out, r.ops);
  end_record(out, start);
}

void append_batch_end(std::string& out, const BatchEnd& b) {
  size_t start = begin_record(out, RecordType::BatchEnd, 0, SourcePos{}, static_cast<int64_t>(b.batch_seq));
  put_u32(out, b.record_count);
  put_u32(out, static_cast<uint32_t>(b.marks.size()));
  for (const SourcePos& m : b.marks) put_mark(out, m);
  end_record(out, start);
}

Parse decode_record(const uint8_t* p, size_t avail, RecordView* out, std::string* why) {
  if (avail < 8) return Parse::Incomplete;
  uint32_t len = get_u32(p);
  if (len < kRecordHeaderSize || len > kMaxRecordSize) {
    *why = "impossible record length " + std::to_string(len);
    return Parse::Corrupt;
  }
  if (avail < len) return Parse::Incomplete;
  if (get_u32(p + 4) != crc32c(p + 8, len - 8)) {
    *why = "record CRC mismatch";
    return Parse::Corrupt;
  }
  uint8_t type = p[8];
  if (type < static_cast<uint8_t>(RecordType::Entity) || type > static_cast<uint8_t>(RecordType::Clear)) {
    *why = "unknown record type " + std::to_string(type);
    return Parse::Corrupt;
  }
  out->type = static_cast<RecordType>(type);
  out->flags = p[9];
  out->pos.stream = static_cast<Stream>(p[10]);
  out->pos.minor = get_u32(p + 12);
  out->pos.major = get_u64(p + 16);
  out->entity_id = static_cast<int64_t>(get_u64(p + 24));
  out->payload = p + kRecordHeaderSize;
  out->payload_len = len - static_cast<uint32_t>(kRecordHeaderSize);
  out->total_len = len;
  return Parse::Ok;
}

BatchEnd decode_batch_end(const RecordView& v) {
  if (v.payload_len < 8) throw Error(ErrorKind::Corrupt, "batch-end record too short");
  BatchEnd b;
  b.batch_seq = static_cast<uint64_t>(v.entity_id);
  b.record_count = get_u32(v.payload);
  uint32_t n = get_u32(v.payload + 4);
  if (n > kMaxMarks || v.payload_len != 8 + kMarkSize * n)
    throw Error(ErrorKind::Corrupt, "batch-end record has an inconsistent length");
  for (uint32_t i = 0; i < n; i++) b.marks.push_back(get_mark(v.payload + 8 + kMarkSize * i));
  return b;
}

EntityRecord decode_entity(const RecordView& v) {
  if (v.type == RecordType::Clear) return EntityRecord::clearing(codec::decode_clear(v.payload, v.payload_len), v.pos);
  EntityRecord r;
  r.entity_id = v.entity_id;
  r.creates_slot = (v.flags & kFlagCreatesSlot) != 0;
  r.pos = v.pos;
  r.ops = codec::decode_ops(v.payload, v.payload_len);
  return r;
}

BatchCut cut_batch(const uint8_t* p, size_t avail) {
  BatchCut cut;
  size_t at = 0;
  for (;;) {
    RecordView v;
    cut.status = decode_record(p + at, avail - at, &v, &cut.why);
    if (cut.status == Parse::Incomplete) {
      if (avail - at >= 8) cut.need = get_u32(p + at) - (avail - at);
      return cut;
    }
    if (cut.status == Parse::Corrupt) {
      cut.bad_at = at;
      return cut;
    }
    if (is_batch_member(v.type)) {
      cut.records.push_back(v);
      at += v.total_len;
      continue;
    }
    cut.bad_at = at;
    cut.certain = true;
    try {
      cut.end = decode_batch_end(v);
    } catch (const Error& e) {
      cut.status = Parse::Corrupt;
      cut.why = e.what();
      return cut;
    }
    if (cut.end.record_count != cut.records.size()) {
      cut.status = Parse::Corrupt;
      cut.why = "batch-end record count does not match the batch";
      return cut;
    }
    cut.len = at + v.total_len;
    return cut;
  }
}

void decode_cut(const BatchCut& cut, uint64_t first_offset, Batch* out) {
  out->clear();
  out->reserve(cut.records.size());
  uint64_t at = first_offset;
  for (const RecordView& rv : cut.records) {
    try {
      out->push_back(decode_entity(rv));
    } catch (const Error& e) {
      throw Error(ErrorKind::Corrupt, "record at offset " + std::to_string(at) + ": " + e.what());
    }
    at += rv.total_len;
  }
}

bool later_batch_exists(const uint8_t* data, size_t len, size_t from, uint64_t expected_seq) {
  std::string why;
  for (size_t at = from; at + kRecordHeaderSize <= len; at++) {
    RecordView v;
    if (decode_record(data + at, len - at, &v, &why) != Parse::Ok) continue;
    if (v.type == RecordType::BatchEnd && static_cast<uint64_t>(v.entity_id) > expected_seq) return true;
  }
  return false;
}

void raise_mark(std::vector<SourcePos>& marks, const SourcePos& p) {
  for (SourcePos& m : marks) {
    if (m.stream == p.stream) {
      if (m < p) m = p;
      return;
    }
  }
  marks.push_back(p);
}

SourcePos find_mark(const std::vector<SourcePos>& marks, Stream stream) {
  for (const SourcePos& m : marks)
    if (m.stream == stream) return m;
  return SourcePos{stream, 0, 0};
}

}  // namespace bitdex::wal
