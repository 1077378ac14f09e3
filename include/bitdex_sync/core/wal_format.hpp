// The ops WAL on-disk layout (docs/wal-format.md), as pure functions over
// byte buffers: the writer, the reader, the CLI and the fuzzer share them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::wal {

inline constexpr char kSegmentMagic[8] = {'B', 'D', 'X', 'O', 'P', 'W', 'A', 'L'};
// Written: 3 (clear records). Versions 1 and 2 are still read; a clear
// record is only ever written into a version-3 segment.
inline constexpr uint32_t kFormatVersion = 3;
inline constexpr uint32_t kFirstClearVersion = 3;
inline constexpr size_t kSegmentHeaderFixed = 64;  // before the stream marks (version 1: 48)
inline constexpr size_t kSegmentHeaderFixedV1 = 48;
inline constexpr size_t kMarkSize = 16;
inline constexpr size_t kRecordHeaderSize = 32;
inline constexpr uint32_t kMaxRecordSize = 256u << 20;
inline constexpr uint32_t kMaxMarks = 255;

enum class RecordType : uint8_t { Entity = 1, BatchEnd = 2, Clear = 3 };
inline constexpr uint8_t kFlagCreatesSlot = 0x01;

struct SegmentHeader {
  uint32_t version = kFormatVersion;  // as read (written: always kFormatVersion)
  uint64_t wal_id = 0;                // random, identical in every segment of one WAL
  uint32_t database = 0;              // OID of the database it captures (0: written by a tool; version 1)
  uint64_t instance = 0;              // the extension instance writing it (0: a tool; version 1)
  uint64_t generation = 0;            // segment sequence number, from 1
  uint64_t next_batch_seq = 1;        // sequence number of the first batch in it
  std::vector<SourcePos> marks;       // per stream: highest position durable before it
};

struct BatchEnd {
  uint64_t batch_seq = 0;
  uint32_t record_count = 0;     // records in the batch (entity and clear)
  std::vector<SourcePos> marks;  // per stream: highest position covered so far
};

// A record as it lies in a buffer; payload points into that buffer.
struct RecordView {
  RecordType type = RecordType::Entity;
  uint8_t flags = 0;
  SourcePos pos;
  int64_t entity_id = 0;  // BatchEnd: the batch sequence number
  const uint8_t* payload = nullptr;
  uint32_t payload_len = 0;
  uint32_t total_len = 0;
};

enum class Parse { Ok, Incomplete, Corrupt };

std::string segment_file_name(uint64_t generation);
// Generation from a file name made by segment_file_name; 0 when it is not one.
uint64_t parse_segment_file_name(const std::string& name);

void encode_segment_header(std::string& out, const SegmentHeader& h);
// On Ok sets *h and *header_len; on Corrupt sets *why.
Parse decode_segment_header(const uint8_t* p, size_t avail, SegmentHeader* h, size_t* header_len, std::string* why);

// An entity record, or a clear record when r.clear is set.
void append_entity_record(std::string& out, const EntityRecord& r);
void append_batch_end(std::string& out, const BatchEnd& b);

// Incomplete: fewer bytes than the record claims (or than a header).
// Corrupt: impossible length, CRC mismatch, unknown type (reason in *why).
Parse decode_record(const uint8_t* p, size_t avail, RecordView* out, std::string* why);

// Decodes a BatchEnd payload; throws Error(Corrupt).
BatchEnd decode_batch_end(const RecordView& v);
// Decodes an entity or clear record; throws Error(Corrupt).
EntityRecord decode_entity(const RecordView& v);
// True for the record types a batch holds before its batch end.
inline bool is_batch_member(RecordType t) {
  return t == RecordType::Entity || t == RecordType::Clear;
}

// One whole batch cut from the front of a buffer, the records not decoded
// yet: the WAL reader and the remote follower (whose bytes come from
// bitdex_sync.read_wal()) both cut batches with it.
struct BatchCut {
  Parse status = Parse::Incomplete;
  size_t len = 0;                   // Ok: bytes of the batch, its records and its batch end
  BatchEnd end;                     // Ok
  std::vector<RecordView> records;  // Ok: the batch's entity and clear records
  size_t bad_at = 0;                // Corrupt: offset of the bad record
  bool certain = false;             // Corrupt: a bad batch end, damage whatever follows (not a write in progress)
  size_t need = 0;                  // Incomplete: bytes still missing from the last record, when its length is known
  std::string why;                  // Corrupt
};
BatchCut cut_batch(const uint8_t* p, size_t avail);
// The records of a cut batch, decoded; `first_offset` is where the batch
// starts in its segment (for error messages). Throws Error(Corrupt).
void decode_cut(const BatchCut& cut, uint64_t first_offset, Batch* out);

// True when a valid batch-end record of a batch numbered above
// `expected_seq` starts anywhere in [from, len): proof that bad bytes before it
// are damage, not a torn or in-progress write (which is always the last batch).
bool later_batch_exists(const uint8_t* data, size_t len, size_t from, uint64_t expected_seq);

// Merges `p` into `marks` (keeps the highest position per stream).
void raise_mark(std::vector<SourcePos>& marks, const SourcePos& p);
// The mark of `stream`, or a zero position.
SourcePos find_mark(const std::vector<SourcePos>& marks, Stream stream);

}  // namespace bitdex::wal
