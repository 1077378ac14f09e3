// Dedup: merge each entity's ops within a batch without changing the index
// state the batch produces.
//
// Why each rule holds (SPEC §4 meaning; bitmaps of different (field, value)
// pairs are independent, so only ops on the same pair interact):
//
// * Per (field, value) pair of one slot, set/add/remove are idempotent writes
//   of one bit, so only the LAST op on the pair decides the bit. Keeping the
//   last op alone is always exact.
// * A remove whose pair was first written by a set/add in this batch is
//   dropped: triggers emit set/add only for a value the row did not have
//   (IS DISTINCT FROM, join-table keys), so the bit was clear before the batch
//   and ends clear. This is what turns a→b→c into [remove a, set c] (the FIRST
//   old value's remove, the LAST new value's set) and cancels add→remove.
//   A remove→add pair keeps its add: after a delete of the entity a join row
//   may survive whose bit the delete already cleared, so "the bit was set
//   before" is not safe to assume; the add is harmless when it was.
// * delete clears every bit of the slot and its alive flag, so it absorbs
//   everything before it. Ops after it start from a known-clear slot: a later
//   remove is dropped, a set kept. A delete that is followed by more ops is
//   emitted as a record of its own, so no record holds both a delete and
//   creates_slot (consumers that apply creates_slot first would otherwise end
//   with a dead slot — BitDex's delete-then-reinsert bug).
// * alive becomes creates_slot when it happened after the entity's last delete.
// * queryOpSet reads the alive bitmap and the fields of its query, and writes
//   the fields of its nested ops, on OTHER slots. Reordering entity ops across
//   it is only safe when they commute, so the batch is cut into segments:
//   within a segment every entity op commutes with every queryOpSet (no
//   alive/delete, no field the queryOpSet reads or writes); an op that does
//   not commute closes the segment. Two queryOpSets of the same query merge
//   when nothing between them (and neither's writes) can change which slots
//   the query matches, and the later one commutes with those in between; the
//   merged nested ops keep the last op per pair (exact for every slot).
#include "bitdex_sync/core/dedup.hpp"

#include <unordered_map>
#include <unordered_set>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/query.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex {
namespace {

using FieldSet = std::unordered_set<std::string>;

bool intersects(const FieldSet& a, const FieldSet& b) {
  const FieldSet& small = a.size() <= b.size() ? a : b;
  const FieldSet& large = a.size() <= b.size() ? b : a;
  for (const auto& f : small)
    if (large.count(f)) return true;
  return false;
}

// The net effect on one (field, value) pair of one slot.
struct PairOp {
  OpKind first;  // kind of the first op on the pair in this segment
  Op last;       // the last op on the pair
};

struct Entity {
  int64_t id = 0;
  bool deleted = false;  // a delete happened in this segment
  bool alive = false;    // an alive happened after the last delete
  SourcePos delete_pos;
  SourcePos last_pos;
  std::vector<PairOp> pairs;  // in order of first touch since the last delete
};

struct QueryItem {
  int64_t entity_id = 0;
  Op op;  // the queryOpSet, nested ops accumulated
  SourcePos pos;
  bool opaque = false;  // query did not parse: treat as reading everything
  FieldSet reads;       // fields in the query (alive is read whenever has_query)
  FieldSet writes;      // fields of the nested ops
};

// Items of a segment in order of first arrival.
struct Item {
  bool is_query;
  uint32_t index;
};

// Collapses ops on one slot to the last op per (field, value); exact.
std::vector<Op> last_per_pair(std::vector<Op> ops) {
  std::vector<Op> out;
  out.reserve(ops.size());
  for (Op& op : ops) {
    bool found = false;
    for (Op& o : out) {
      if (o.field == op.field && o.value == op.value) {
        o = std::move(op);
        found = true;
        break;
      }
    }
    if (!found) out.push_back(std::move(op));
  }
  return out;
}

class Deduper {
 public:
  explicit Deduper(size_t hint) {
    out_.reserve(hint);
    index_.reserve(hint);
  }

  void record(EntityRecord& r) {
    for (Op& op : r.ops) event(r.entity_id, op, r.pos);
    if (r.creates_slot) {
      Op alive = Op::alive();
      event(r.entity_id, alive, r.pos);
    }
  }

  Batch finish() {
    flush();
    return std::move(out_);
  }

 private:
  void event(int64_t id, Op& op, const SourcePos& pos) {
    if (op.kind == OpKind::QueryOpSet) {
      query_event(id, op, pos);
      return;
    }
    if (!queries_.empty() && conflicts_with_queries(op)) flush();
    if (e_writes_valid_) {
      if (op.is_field_op())
        e_writes_.insert(op.field);
      else
        e_alive_ = true;
    }
    Entity& e = entity(id);
    e.last_pos = pos;
    switch (op.kind) {
      case OpKind::Delete:
        e.deleted = true;
        e.alive = false;
        e.delete_pos = pos;
        e.pairs.clear();
        return;
      case OpKind::Alive: e.alive = true; return;
      default: break;
    }
    for (PairOp& p : e.pairs) {
      if (p.last.field == op.field && p.last.value == op.value) {
        p.last = std::move(op);
        return;
      }
    }
    e.pairs.push_back(PairOp{op.kind, std::move(op)});
  }

  bool conflicts_with_queries(const Op& op) const {
    if (op.kind == OpKind::Delete || op.kind == OpKind::Alive) return q_reads_alive_;
    return q_opaque_ || q_reads_.count(op.field) || q_writes_.count(op.field);
  }

  void query_event(int64_t id, Op& op, const SourcePos& pos) {
    QueryItem q;
    q.entity_id = id;
    q.pos = pos;
    if (op.has_query) {
      try {
        for (auto& c : parse_query(op.query).clauses) q.reads.insert(std::move(c.field));
      } catch (const Error&) {
        q.opaque = true;  // the index reports it; here it just may not move
      }
    }
    for (const Op& n : op.ops) q.writes.insert(n.field);
    q.op = std::move(op);

    if (!entities_.empty() && query_conflicts_with_entities(q)) flush();
    if (q.op.has_query && try_merge(q)) return;

    q_opaque_ |= q.opaque;
    q_reads_alive_ |= q.op.has_query;
    q_reads_.insert(q.reads.begin(), q.reads.end());
    q_writes_.insert(q.writes.begin(), q.writes.end());
    items_.push_back(Item{true, static_cast<uint32_t>(queries_.size())});
    queries_.push_back(std::move(q));
  }

  bool query_conflicts_with_entities(const QueryItem& q) {
    if (!q.op.has_query) return false;  // a null query is skipped by the index: no effect
    if (q.opaque) return true;
    if (!e_writes_valid_) {
      for (const Entity& e : entities_) {
        if (e.deleted || e.alive) e_alive_ = true;
        for (const PairOp& p : e.pairs) e_writes_.insert(p.last.field);
      }
      e_writes_valid_ = true;
    }
    return e_alive_ || intersects(e_writes_, q.reads) || intersects(e_writes_, q.writes);
  }

  // Merges `q` into the latest queryOpSet of the same query when exact.
  bool try_merge(QueryItem& q) {
    if (q.opaque) return false;
    for (size_t i = queries_.size(); i-- > 0;) {
      QueryItem& prev = queries_[i];
      if (!prev.op.has_query || prev.op.query != q.op.query) continue;
      if (intersects(prev.writes, q.reads)) return false;
      for (size_t k = i + 1; k < queries_.size(); k++) {
        const QueryItem& mid = queries_[k];
        if (mid.opaque || intersects(mid.writes, q.reads) || intersects(q.writes, mid.reads) ||
            intersects(q.writes, mid.writes))
          return false;
      }
      for (Op& n : q.op.ops) prev.op.ops.push_back(std::move(n));
      prev.writes.insert(q.writes.begin(), q.writes.end());
      prev.pos = q.pos;
      q_writes_.insert(q.writes.begin(), q.writes.end());
      return true;
    }
    return false;
  }

  Entity& entity(int64_t id) {
    auto [it, inserted] = index_.try_emplace(id, static_cast<uint32_t>(entities_.size()));
    if (inserted) {
      items_.push_back(Item{false, it->second});
      entities_.emplace_back();
      entities_.back().id = id;
    }
    return entities_[it->second];
  }

  void emit_entity(Entity& e) {
    if (e.deleted) {
      EntityRecord d;
      d.entity_id = e.id;
      d.ops.push_back(Op::del());
      d.pos = e.delete_pos;
      out_.push_back(std::move(d));
    }
    EntityRecord r;
    r.entity_id = e.id;
    r.creates_slot = e.alive;
    r.pos = e.last_pos;
    for (PairOp& p : e.pairs) {
      if (p.last.kind != OpKind::Remove) {
        r.ops.push_back(std::move(p.last));
      } else if (!e.deleted && p.first == OpKind::Remove) {
        r.ops.push_back(std::move(p.last));
      }
      // else: the bit was clear before the pair's first op; it ends clear.
    }
    if (!r.ops.empty() || r.creates_slot) out_.push_back(std::move(r));
  }

  void emit_query(QueryItem& q) {
    q.op.ops = last_per_pair(std::move(q.op.ops));
    EntityRecord r;
    r.entity_id = q.entity_id;
    r.pos = q.pos;
    r.ops.push_back(std::move(q.op));
    out_.push_back(std::move(r));
  }

  void flush() {
    for (const Item& it : items_) {
      if (it.is_query)
        emit_query(queries_[it.index]);
      else
        emit_entity(entities_[it.index]);
    }
    items_.clear();
    entities_.clear();
    index_.clear();
    queries_.clear();
    q_reads_.clear();
    q_writes_.clear();
    q_opaque_ = q_reads_alive_ = false;
    e_writes_.clear();
    e_writes_valid_ = e_alive_ = false;
  }

  Batch out_;
  std::vector<Item> items_;
  std::vector<Entity> entities_;
  std::unordered_map<int64_t, uint32_t> index_;
  std::vector<QueryItem> queries_;
  // Union of what the segment's queryOpSets read and write.
  FieldSet q_reads_, q_writes_;
  bool q_opaque_ = false, q_reads_alive_ = false;
  // Union of what the segment's entity ops write; built when the first
  // queryOpSet arrives, so batches without one never pay for it.
  FieldSet e_writes_;
  bool e_writes_valid_ = false, e_alive_ = false;
};

}  // namespace

Batch dedup(Batch batch, DedupStats* stats) {
  Deduper d(batch.size());
  size_t ops_in = 0;
  for (EntityRecord& r : batch) {
    ops_in += r.ops.size();
    d.record(r);
  }
  Batch out = d.finish();
  if (stats) {
    stats->records_in = batch.size();
    stats->ops_in = ops_in;
    stats->records_out = out.size();
    stats->ops_out = count_ops(out);
  }
  return out;
}

}  // namespace bitdex
