// Appends batches to the ops WAL durably (write + fdatasync per batch).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/core/wal_format.hpp"

namespace bitdex::wal {

struct WriterOptions {
  std::string dir;
  uint64_t segment_size = 64ull << 20;  // rotate once a segment reaches this size
  // Identity written into a WAL this open creates (an existing WAL keeps its own).
  uint32_t database = 0;
  uint64_t instance = 0;
  // False: refuse (Error(NotReady)) to start a new WAL where none is: the
  // caller knows one existed and must not lose sight of it.
  bool create = true;
};

// What open() found and did.
struct OpenReport {
  bool created = false;  // a new WAL was started
  uint64_t segments = 0;
  uint64_t truncated_bytes = 0;  // torn tail cut from the last segment
  std::string truncated_reason;  // why the first bad byte was bad
};

struct AppendResult {
  uint64_t batch_seq = 0;
  Cursor end;          // position after the batch (durable)
  uint64_t bytes = 0;  // bytes written for the batch
};

class WalWriter {
 public:
  // Opens (or creates) the WAL in opts.dir, takes the directory's writer lock
  // (a second writer fails at once), validates the last segment, and
  // truncates a torn tail. Refuses (Error(Corrupt)) when a bad record is
  // followed by a later complete batch: that is damage, not a torn write.
  static std::unique_ptr<WalWriter> open(const WriterOptions& opts, OpenReport* report = nullptr);

  // Appends `records` as one batch, then fdatasync. `covered` lists, per
  // stream, the highest source position the batch accounts for (it may be
  // above every record's position when dedup dropped the last ops). Every
  // record's position must be above its stream's durable mark and at most
  // its covered position. On an I/O error nothing of the batch is durable
  // and the writer must be reopened.
  AppendResult append(const Batch& records, const std::vector<SourcePos>& covered);

  // Highest durable source position per stream.
  const std::vector<SourcePos>& marks() const { return marks_; }
  SourcePos mark(Stream s) const { return find_mark(marks_, s); }
  uint64_t wal_id() const { return wal_id_; }
  uint32_t database() const { return database_; }
  uint64_t instance() const { return instance_; }
  uint64_t generation() const { return generation_; }
  uint64_t next_batch_seq() const { return next_seq_; }
  Cursor end() const { return Cursor{wal_id_, generation_, end_}; }
  const std::string& dir() const { return opts_.dir; }

 private:
  explicit WalWriter(WriterOptions opts) : opts_(std::move(opts)) {}
  void create_segment(uint64_t generation);
  void recover_last_segment(uint64_t generation, OpenReport* report);

  WriterOptions opts_;
  fileio::Fd lock_;  // flock'ed writer.lock: one writer per directory
  fileio::Fd fd_;
  std::string path_;
  uint64_t wal_id_ = 0;
  uint32_t database_ = 0;
  uint64_t instance_ = 0;
  uint64_t generation_ = 0;
  uint64_t end_ = 0;  // durable end of the current segment
  uint64_t header_len_ = 0;
  uint32_t version_ = kFormatVersion;  // of the current segment
  uint64_t next_seq_ = 1;
  std::vector<SourcePos> marks_;
  bool broken_ = false;
  std::string buf_;  // reused encode buffer
};

}  // namespace bitdex::wal
