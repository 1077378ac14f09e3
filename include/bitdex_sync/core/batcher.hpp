// The worker's batch: captured records collected in source order, closed by
// op count or memory, deduplicated and appended to the ops WAL durably.
// Exactly once: a record at or below its stream's durable mark (already in
// the WAL, e.g. replayed by the slot after a crash) is skipped. Pure C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/wal_writer.hpp"

namespace bitdex::pipeline {

struct BatchLimits {
  size_t max_ops = 100000;         // ops in one batch
  size_t max_bytes = 64ull << 20;  // estimated memory of the records held
};

struct BatchTotals {
  uint64_t records = 0;  // records appended (after dedup)
  uint64_t ops_in = 0;   // ops captured and not skipped
  uint64_t ops_out = 0;  // ops appended (after dedup)
  uint64_t skipped = 0;  // records at or below the durable mark
  uint64_t batches = 0;
  uint64_t wal_bytes = 0;
};

class Batcher {
 public:
  Batcher(wal::WalWriter& writer, BatchLimits limits) : writer_(writer), limits_(limits) {}

  // Takes a record whose pos is set; positions of one stream must rise.
  // Returns false (and drops it) when the WAL already holds that position.
  bool add(EntityRecord r);
  // Raises what the open batch covers on pos.stream to pos, with no record
  // (the slot's decoding position, an outbox horizon past aborted ids). The
  // next flush writes a batch even without records when that raises the
  // stream's durable mark: what a source acknowledges, the WAL covers.
  void cover(const SourcePos& pos);
  // New limits (a settings reload); they apply to the open batch too.
  void set_limits(BatchLimits limits) { limits_ = limits; }
  // The batch reached a limit: flush before adding more.
  bool full() const { return ops_ >= limits_.max_ops || bytes_ >= limits_.max_bytes; }
  bool empty() const { return records_.empty(); }
  // flush() would write a batch: records, or a mark to raise.
  bool pending() const;
  size_t ops() const { return ops_; }
  size_t bytes() const { return bytes_; }

  // Dedups and appends the records as one batch, then fdatasync. Nothing
  // happens when there are no records and no mark to raise. Throws what WalWriter::append throws; the batch is
  // then lost from memory (not from its source, which was not confirmed)
  // and the writer must be reopened.
  void flush();

  const BatchTotals& totals() const { return totals_; }

 private:
  wal::WalWriter& writer_;
  BatchLimits limits_;
  Batch records_;
  std::vector<SourcePos> covered_;  // per stream: the last position added
  size_t ops_ = 0, bytes_ = 0;
  BatchTotals totals_;
};

// Memory a record holds, roughly: what the memory bound counts (at least
// its encoded size in the WAL).
size_t record_bytes(const EntityRecord& r);

// A record (after dedup) holding more than this is written as several
// records of the same entity, in order: capture refuses a single change
// above capture::kMaxRecord (64 MiB), so each stays below the WAL's 256 MiB
// record bound.
inline constexpr size_t kSplitBytes = 64u << 20;

}  // namespace bitdex::pipeline
