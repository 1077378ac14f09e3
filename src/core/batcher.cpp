// Collecting, deduplicating and appending the worker's batches.
#include "bitdex_sync/core/batcher.hpp"

#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::pipeline {

size_t record_bytes(const EntityRecord& r) {
  size_t n = sizeof(EntityRecord);
  for (const Op& op : r.ops) {
    n += sizeof(Op) + op.field.capacity() + op.value.text.capacity() + op.query.capacity();
    for (const Op& nested : op.ops) n += sizeof(Op) + nested.field.capacity() + nested.value.text.capacity();
  }
  return n;
}

bool Batcher::add(EntityRecord r) {
  // No real position is (0, 0): a stream without a mark skips nothing.
  if (r.pos <= writer_.mark(r.pos.stream)) {
    totals_.skipped++;
    return false;
  }
  cover(r.pos);
  ops_ += r.ops.size();
  bytes_ += record_bytes(r);
  records_.push_back(std::move(r));
  return true;
}

void Batcher::cover(const SourcePos& pos) {
  for (SourcePos& c : covered_)
    if (c.stream == pos.stream) {
      if (c < pos) c = pos;
      return;
    }
  covered_.push_back(pos);
}

bool Batcher::pending() const {
  if (!records_.empty()) return true;
  for (const SourcePos& c : covered_)
    if (writer_.mark(c.stream) < c) return true;
  return false;
}

void Batcher::flush() {
  if (!pending()) {
    covered_.clear();
    return;
  }
  DedupStats stats;
  Batch out = dedup(std::move(records_), &stats);
  records_.clear();
  wal::AppendResult res = writer_.append(out, covered_);
  totals_.records += out.size();
  totals_.ops_in += stats.ops_in;
  totals_.ops_out += stats.ops_out;
  totals_.batches++;
  totals_.wal_bytes += res.bytes;
  covered_.clear();
  ops_ = bytes_ = 0;
}

}  // namespace bitdex::pipeline
