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

namespace {

size_t op_bytes(const Op& op) {
  size_t n = sizeof(Op) + op.field.capacity() + op.value.text.capacity() + op.query.capacity();
  for (const Op& nested : op.ops) n += sizeof(Op) + nested.field.capacity() + nested.value.text.capacity();
  return n;
}

// A queryOpSet whose nested ops hold more than `limit` becomes several of the
// same query, each with a run of them: applied in a row they do what the
// one did (nothing between them changes which slots the query matches).
void split_query_op(Op op, size_t limit, std::vector<Op>& out) {
  Op part = op;
  part.ops.clear();
  size_t bytes = sizeof(Op) + op.query.capacity();
  for (Op& nested : op.ops) {
    const size_t n = sizeof(Op) + nested.field.capacity() + nested.value.text.capacity();
    if (!part.ops.empty() && bytes + n > limit) {
      out.push_back(part);
      part.ops.clear();
      bytes = sizeof(Op) + op.query.capacity();
    }
    part.ops.push_back(std::move(nested));
    bytes += n;
  }
  out.push_back(std::move(part));
}

// Records whose ops hold more than `limit` are cut into several records of
// the same entity and position, in order, creates_slot on the last (a
// record's meaning is its ops in order, then alive): one WAL record stays
// far below its 256 MiB bound even when dedup merged many large values.
Batch split_large(Batch in, size_t limit) {
  bool any = false;
  for (const EntityRecord& r : in) any = any || record_bytes(r) > limit;
  if (!any) return in;
  Batch out;
  out.reserve(in.size());
  for (EntityRecord& r : in) {
    if (record_bytes(r) <= limit) {
      out.push_back(std::move(r));
      continue;
    }
    std::vector<Op> ops;
    for (Op& op : r.ops) {
      if (op.kind == OpKind::QueryOpSet && op_bytes(op) > limit)
        split_query_op(std::move(op), limit, ops);
      else
        ops.push_back(std::move(op));
    }
    EntityRecord part;
    part.entity_id = r.entity_id;
    part.pos = r.pos;
    size_t bytes = sizeof(EntityRecord);
    for (Op& op : ops) {
      const size_t n = op_bytes(op);
      if (!part.ops.empty() && bytes + n > limit) {
        out.push_back(part);
        part.ops.clear();
        bytes = sizeof(EntityRecord);
      }
      part.ops.push_back(std::move(op));
      bytes += n;
    }
    part.creates_slot = r.creates_slot;
    out.push_back(std::move(part));
  }
  return out;
}

}  // namespace

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
  Batch out = split_large(dedup(std::move(records_), &stats), kSplitBytes);
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
