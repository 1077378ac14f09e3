// Keeps an index snapshot up to date from an ops WAL, as a registered
// consumer: whole batches only, each exactly once, across restarts and
// crashes of either side. The batches come from the WAL directory on this
// host or, over libpq, from bitdex_sync.read_wal() on the primary.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/index/index.hpp"

namespace bitdex::index {

// Where a follower's batches come from.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Positions the source after `after` (the snapshot's cursor), or where
  // the consumer starts when there is no snapshot. Returns true when a new
  // index may begin after batch 1 (the consumer was registered at the end).
  virtual bool start(const std::optional<wal::Cursor>& after) = 0;
  // The next whole batch; false when none is complete (a remote source
  // waits a while first).
  virtual bool next(wal::WalBatch* out) = 0;
  // The consumer's durable position: every batch before it is in the saved snapshot.
  virtual void acknowledge(const wal::Cursor& c) = 0;
  // What is wrong with the bytes at the WAL's tail, if anything (local).
  virtual std::string tail_note() const { return {}; }
  // Bytes of the WAL after `c`, when known (progress lines).
  virtual std::optional<uint64_t> bytes_after(const wal::Cursor& /*c*/) const { return std::nullopt; }
  // Where the batches come from, for messages.
  virtual std::string where() const = 0;
};

// The WAL directory on this host; the consumer's cursor is a file in it.
std::unique_ptr<BatchSource> local_source(std::string wal_dir, std::string consumer);

struct RemoteOptions {
  std::string conninfo;  // libpq connection string: host, sslmode, user, ...
  std::string consumer;
  int wait_ms = 1000;                           // long poll of each read; 0: return at once (apply)
  int max_bytes = 8 << 20;                      // per read
  std::function<bool()> stopping;               // true: give up reconnecting (a signal)
  std::function<void(const std::string&)> log;  // reconnects and their reasons
};
// bitdex_sync.read_wal() over libpq, reconnecting with backoff after a
// server restart or a network error. Errors the server means (a lagging
// consumer, another WAL's cursor, no permission) are thrown.
std::unique_ptr<BatchSource> remote_source(RemoteOptions options);

class Follower {
 public:
  // Loads `snapshot` if it exists (else starts empty), locks it against a
  // second follower and starts `source` at its cursor. Throws
  // Error(InvalidInput) when the source refuses (a lagging consumer, a WAL
  // that no longer starts at its first batch for an empty index).
  Follower(std::unique_ptr<BatchSource> source, std::string snapshot);

  // Applies the next complete batch; false when none is complete yet.
  bool step();
  // Writes the snapshot (with the cursor) durably, then acknowledges the
  // cursor to the source, in that order: a crash between the two only keeps
  // a segment longer.
  void checkpoint();
  // Batches applied since the last checkpoint.
  uint64_t unsaved() const { return unsaved_; }

  Index& index() { return index_; }
  const wal::Cursor& cursor() const { return cursor_; }
  BatchSource& source() { return *source_; }
  const std::string& tail_note() const { return tail_note_; }

 private:
  std::unique_ptr<BatchSource> source_;
  std::string snapshot_;
  fileio::Fd lock_;
  Index index_;
  wal::Cursor cursor_;
  uint64_t unsaved_ = 0;
  bool starts_mid_wal_ = false;  // a new index at a consumer's later cursor
  std::string tail_note_;
};

}  // namespace bitdex::index
