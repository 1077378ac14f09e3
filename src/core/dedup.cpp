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
//   and ends clear. Not after a load's set/add (stream Load): a load writes
//   every value of a row, whether or not the index has it already. This is what turns a→b→c into [remove a, set c] (the
//   FIRST old value's remove, the LAST new value's set) and cancels add→remove. A remove→add pair keeps its add: after
//   a delete of the entity a join row may survive whose bit the delete already cleared, so "the bit was set before" is
//   not safe to assume; the add is harmless when it was.
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
// * A clear record touches every slot: nothing moves across it. It closes
//   the segment before it and passes through unchanged.
#include "bitdex_sync/core/dedup.hpp"

#include <algorithm>
#include <functional>
#include <memory>
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

size_t pair_hash(const Op& op) {
  return std::hash<std::string>()(op.field) * 1000003u ^ op.value.hash();
}

// Finds the entry of ops[...] with the same (field, value) as an op: a
// linear scan while there are few, a hash index once there are many (one
// slot may take 10^5 values in a batch; a scan per op would be quadratic).
// get(i) gives the op of entry i.
class PairIndex {
 public:
  static constexpr size_t kScanLimit = 16;

  // `probes` counts the comparisons.
  template <class Get>
  int64_t find(const Op& op, size_t n, Get get, size_t& probes) {
    if (n < kScanLimit) {
      for (size_t i = 0; i < n; i++, probes++)
        if (get(i).field == op.field && get(i).value == op.value) return static_cast<int64_t>(i);
      return -1;
    }
    for (; indexed_ < n; indexed_++) by_hash_.emplace(pair_hash(get(indexed_)), static_cast<uint32_t>(indexed_));
    auto [from, to] = by_hash_.equal_range(pair_hash(op));
    for (auto it = from; it != to; ++it, probes++)
      if (get(it->second).field == op.field && get(it->second).value == op.value) return it->second;
    return -1;
  }
  void clear() {
    by_hash_.clear();
    indexed_ = 0;
  }

 private:
  std::unordered_multimap<size_t, uint32_t> by_hash_;
  size_t indexed_ = 0;  // entries [0, indexed_) are in by_hash_
};

struct Entity {
  int64_t id = 0;
  bool deleted = false;  // a delete happened in this segment
  bool alive = false;    // an alive happened after the last delete
  SourcePos delete_pos;
  SourcePos last_pos;
  std::vector<PairOp> pairs;  // in order of first touch since the last delete
  std::unique_ptr<PairIndex> index = std::make_unique<PairIndex>();
  // The entity's only record so far, kept whole (Deduper::take_whole): its
  // field ops, each on a pair of its own. Turned into pairs when another op
  // touches the entity; emitted as it is otherwise.
  bool whole = false;
  std::vector<Op> whole_ops;
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
std::vector<Op> last_per_pair(std::vector<Op> ops, size_t& probes) {
  std::vector<Op> out;
  out.reserve(ops.size());
  PairIndex index;
  for (Op& op : ops) {
    int64_t at = index.find(
        op, out.size(), [&](size_t i) -> const Op& { return out[i]; }, probes);
    if (at >= 0)
      out[static_cast<size_t>(at)] = std::move(op);
    else
      out.push_back(std::move(op));
  }
  return out;
}

// How many queryOpSets back a repeated query may merge: each merge checks
// those in between, so without a bound an adversarial batch would cost the
// square of its size. Not merging is always exact.
constexpr size_t kMaxMergeDistance = 64;

class Deduper {
 public:
  explicit Deduper(size_t hint) {
    out_.reserve(hint);
    index_.reserve(hint);
  }

  void record(EntityRecord& r) {
    if (take_whole(r)) return;
    if (!r.ops.empty() && r.ops.front().kind != OpKind::QueryOpSet) {
      // Room for the record's ops, growing geometrically (an entity may
      // take 10^5 records in a batch: growing by each one's size would be
      // quadratic).
      std::vector<PairOp>& pairs = entity(r.entity_id).pairs;
      if (pairs.capacity() < pairs.size() + r.ops.size())
        pairs.reserve(std::max(2 * pairs.capacity(), pairs.size() + r.ops.size()));
    }
    for (Op& op : r.ops) event(r.entity_id, op, r.pos);
    if (r.creates_slot) {
      Op alive = Op::alive();
      event(r.entity_id, alive, r.pos);
    }
  }

  // A clear record: everything before it is emitted first.
  void barrier(EntityRecord& r) {
    flush();
    out_.push_back(std::move(r));
  }

  Batch finish() {
    flush();
    return std::move(out_);
  }
  size_t probes() const { return probes_; }

 private:
  // The first record of an entity in a segment without queryOpSets, made of
  // alive and field ops on distinct pairs (a load's row, most INSERTs): as
  // long as nothing else touches the entity, the rules above leave it as it
  // is (each pair's first op is its last; alive becomes creates_slot), so it
  // is kept whole instead of op by op.
  bool take_whole(EntityRecord& r) {
    if (!queries_.empty() || r.ops.size() > PairIndex::kScanLimit || index_.count(r.entity_id)) return false;
    bool alive = r.creates_slot;
    size_t fields = 0;
    for (size_t i = 0; i < r.ops.size(); i++) {
      const Op& op = r.ops[i];
      if (op.kind == OpKind::Alive) {
        alive = true;
        continue;
      }
      if (!op.is_field_op()) return false;
      fields++;
      for (size_t j = 0; j < i; j++)
        if (r.ops[j].is_field_op() && r.ops[j].field == op.field && r.ops[j].value == op.value) return false;
    }
    Entity& e = entity(r.entity_id);
    e.alive = alive;
    e.last_pos = r.pos;
    e.whole = true;
    e.whole_ops = std::move(r.ops);
    if (fields < e.whole_ops.size())
      e.whole_ops.erase(
          std::remove_if(e.whole_ops.begin(), e.whole_ops.end(), [](const Op& op) { return op.kind == OpKind::Alive; }),
          e.whole_ops.end());
    return true;
  }

  // A whole record becomes pairs: each op the first and last of its pair.
  void split_whole(Entity& e) {
    e.whole = false;
    const bool load = e.last_pos.stream == Stream::Load;
    e.pairs.reserve(e.whole_ops.size());
    for (Op& op : e.whole_ops) e.pairs.push_back(PairOp{load ? OpKind::Remove : op.kind, std::move(op)});
    e.whole_ops.clear();
  }

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
        e.index->clear();
        return;
      case OpKind::Alive: e.alive = true; return;
      default: break;
    }
    int64_t at = e.index->find(
        op, e.pairs.size(), [&](size_t i) -> const Op& { return e.pairs[i].last; }, probes_);
    if (at >= 0) {
      e.pairs[static_cast<size_t>(at)].last = std::move(op);
      return;
    }
    // A load's set/add does not prove the bit was clear before the batch (a
    // load writes every value, the index may hold it already): it counts as
    // a first remove would, so a later remove is kept.
    e.pairs.push_back(PairOp{pos.stream == Stream::Load ? OpKind::Remove : op.kind, std::move(op)});
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
        for (const Op& op : e.whole_ops) e_writes_.insert(op.field);
      }
      e_writes_valid_ = true;
    }
    return e_alive_ || intersects(e_writes_, q.reads) || intersects(e_writes_, q.writes);
  }

  // Merges `q` into the latest queryOpSet of the same query when exact.
  bool try_merge(QueryItem& q) {
    if (q.opaque) return false;
    auto last = last_of_query_.find(q.op.query);
    if (last == last_of_query_.end()) {
      last_of_query_.emplace(q.op.query, queries_.size());
      return false;
    }
    const size_t latest = last->second;
    last->second = queries_.size();  // unless merged (below), q is the latest from now on
    if (queries_.size() - latest > kMaxMergeDistance) return false;
    QueryItem& prev = queries_[latest];
    if (intersects(prev.writes, q.reads)) return false;
    for (size_t k = latest + 1; k < queries_.size(); k++, probes_++) {
      const QueryItem& mid = queries_[k];
      if (mid.opaque || intersects(mid.writes, q.reads) || intersects(q.writes, mid.reads) ||
          intersects(q.writes, mid.writes))
        return false;
    }
    for (Op& n : q.op.ops) prev.op.ops.push_back(std::move(n));
    prev.writes.insert(q.writes.begin(), q.writes.end());
    prev.pos = q.pos;
    q_writes_.insert(q.writes.begin(), q.writes.end());
    last->second = latest;
    return true;
  }

  Entity& entity(int64_t id) {
    auto [it, inserted] = index_.try_emplace(id, static_cast<uint32_t>(entities_.size()));
    if (inserted) {
      items_.push_back(Item{false, it->second});
      entities_.emplace_back();
      entities_.back().id = id;
    }
    Entity& e = entities_[it->second];
    if (e.whole) split_whole(e);
    return e;
  }

  void emit_entity(Entity& e) {
    if (e.whole) {
      EntityRecord r;
      r.entity_id = e.id;
      r.creates_slot = e.alive;
      r.pos = e.last_pos;
      r.ops = std::move(e.whole_ops);
      if (!r.ops.empty() || r.creates_slot) out_.push_back(std::move(r));
      return;
    }
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
    r.ops.reserve(e.pairs.size());
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
    q.op.ops = last_per_pair(std::move(q.op.ops), probes_);
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
    last_of_query_.clear();
    q_reads_.clear();
    q_writes_.clear();
    q_opaque_ = q_reads_alive_ = false;
    e_writes_.clear();
    e_writes_valid_ = e_alive_ = false;
  }

  Batch out_;
  size_t probes_ = 0;
  std::vector<Item> items_;
  std::vector<Entity> entities_;
  std::unordered_map<int64_t, uint32_t> index_;
  std::vector<QueryItem> queries_;
  std::unordered_map<std::string, size_t> last_of_query_;  // query text -> its latest queryOpSet in queries_
  // Union of what the segment's queryOpSets read and write.
  FieldSet q_reads_, q_writes_;
  bool q_opaque_ = false, q_reads_alive_ = false;
  // Union of what the segment's entity ops write; built when the first
  // queryOpSet arrives, so batches without one never pay for it.
  FieldSet e_writes_;
  bool e_writes_valid_ = false, e_alive_ = false;
};

}  // namespace

Batch dedup(Batch batch, DedupStats* stats, CancelCheck cancelled) {
  Deduper d(batch.size());
  size_t ops_in = 0, n = 0;
  for (EntityRecord& r : batch) {
    if (cancelled && ++n % 1024 == 0 && cancelled()) throw Error(ErrorKind::Cancelled, "dedup was cancelled");
    ops_in += r.ops.size();
    if (r.is_clear())
      d.barrier(r);
    else
      d.record(r);
  }
  Batch out = d.finish();
  if (stats) {
    stats->records_in = batch.size();
    stats->ops_in = ops_in;
    stats->records_out = out.size();
    stats->ops_out = count_ops(out);
    stats->probes = d.probes();
  }
  return out;
}

}  // namespace bitdex
