// Keeps an index snapshot up to date from an ops WAL directory, as a
// registered consumer: whole batches only, each exactly once, across
// restarts and crashes.
#pragma once

#include <memory>
#include <string>

#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/index/index.hpp"

namespace bitdex::index {

class Follower {
 public:
  // Loads `snapshot` if it exists (else starts empty at the start of the
  // WAL), locks it against a second follower, and registers `consumer` in
  // the WAL directory so retention keeps what the index still needs. Throws
  // Error(InvalidInput) when the consumer is lagging or the WAL no longer
  // starts at its first batch while the index is empty (rebuild from a dump).
  Follower(std::string wal_dir, std::string snapshot, std::string consumer);

  // Applies the next complete batch; false when none is complete yet.
  bool step();
  // Writes the snapshot (with the cursor) durably, then moves the
  // consumer's cursor there, in that order: a crash between the two only
  // keeps a segment longer.
  void checkpoint();
  // Batches applied since the last checkpoint.
  uint64_t unsaved() const { return unsaved_; }

  Index& index() { return index_; }
  const wal::Cursor& cursor() const { return cursor_; }
  // What is wrong with the bytes at the WAL's tail, if anything (see WalReader).
  const std::string& tail_note() const { return reader_->tail_note(); }

 private:
  std::string wal_dir_, snapshot_, consumer_;
  fileio::Fd lock_;
  Index index_;
  wal::Cursor cursor_;
  std::unique_ptr<wal::WalReader> reader_;
  uint64_t unsaved_ = 0;
  bool starts_mid_wal_ = false;  // a new index at a consumer's later cursor
};

}  // namespace bitdex::index
