// Reads the ops WAL a whole batch at a time, following segment rotation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/core/wal_format.hpp"

namespace bitdex::wal {

struct WalBatch {
  uint64_t seq = 0;
  std::vector<SourcePos> marks;  // per stream: covered up to here
  Batch records;
  Cursor begin, end;  // where the batch starts, and the next one
  uint64_t bytes = 0;
  std::string raw;  // raw mode (WalReader::set_raw): the batch's bytes, records left undecoded
};

enum class ReadStatus {
  Batch,  // *out holds the next batch
  Wait,   // nothing complete yet: the tail is incomplete or still being written
};

class WalReader {
 public:
  // start.generation == 0 starts at the oldest segment. A non-zero
  // start.wal_id must match the WAL's id.
  WalReader(std::string dir, const Cursor& start);

  // The next whole batch, or Wait. Throws Error(Corrupt) for damage that can
  // no longer be a write in progress (in a sealed segment, or a gap in batch
  // sequence), and never skips a record silently.
  ReadStatus next(WalBatch* out);

  // Raw mode: batches come as their bytes (WalBatch::raw), checked (CRCs,
  // counts, sequence) but not decoded, for a reader that forwards them.
  void set_raw(bool raw) { raw_ = raw; }

  // Position after the last batch returned.
  Cursor cursor() const { return Cursor{wal_id_, gen_, off_}; }
  // When next() returned Wait with bytes at the tail: what is wrong with them.
  const std::string& tail_note() const { return tail_note_; }

 private:
  bool open_segment();
  bool sealed() const;
  size_t read_more(size_t want);
  void drop_buffer();
  [[noreturn]] void corrupt(uint64_t offset, const std::string& why) const;

  std::string dir_;
  uint64_t wal_id_ = 0;
  uint64_t gen_ = 0;
  uint64_t off_ = 0;
  uint64_t expected_seq_ = 0;  // 0: not known yet
  fileio::Fd fd_;
  std::string path_;
  std::string buf_;  // bytes of the current segment; buf_[start_] is at off_
  size_t start_ = 0;
  std::string tail_note_;
  bool raw_ = false;
};

// Decodes one whole batch given as exactly its bytes (raw mode's, as
// bitdex_sync.read_wal() returns them); a non-zero expected_seq must be its
// number. Throws Error(Corrupt) unless the bytes are one intact batch.
WalBatch decode_batch_bytes(const std::string& bytes, uint64_t expected_seq);

// A reader at registered consumer `name`'s cursor. Throws Error(InvalidInput)
// when the consumer is unknown or lagging (retention removed what it needed).
WalReader open_consumer(const std::string& dir, const std::string& name);

}  // namespace bitdex::wal
