#include "support/model_index.hpp"

#include <sstream>
#include <vector>

#include "bitdex_sync/core/query.hpp"

namespace bitdex::test {

bool ModelIndex::has(int64_t slot, const std::string& field, const OpValue& v) const {
  auto it = bitmaps_.find(Key{field, v});
  return it != bitmaps_.end() && it->second.count(slot) > 0;
}

void ModelIndex::field_op(int64_t slot, const Op& op) {
  Key k{op.field, op.value};
  if (op.kind == OpKind::Remove) {
    auto it = bitmaps_.find(k);
    if (it != bitmaps_.end()) {
      it->second.erase(slot);
      if (it->second.empty()) bitmaps_.erase(it);
    }
  } else {
    bitmaps_[k].insert(slot);
  }
}

void ModelIndex::query_op_set(const Op& op) {
  if (!op.has_query) {
    skipped_++;
    return;
  }
  Query q = parse_query(op.query);
  std::vector<int64_t> matching;
  for (int64_t slot : alive_) {
    bool all = true;
    for (const QueryClause& c : q.clauses) {
      bool any = false;
      for (const OpValue& v : c.values) any = any || has(slot, c.field, v);
      all = all && any;
    }
    if (all) matching.push_back(slot);
  }
  for (int64_t slot : matching)
    for (const Op& n : op.ops) field_op(slot, n);
}

void ModelIndex::delete_slot(int64_t slot) {
  alive_.erase(slot);
  for (auto it = bitmaps_.begin(); it != bitmaps_.end();) {
    it->second.erase(slot);
    it = it->second.empty() ? bitmaps_.erase(it) : std::next(it);
  }
}

// Written from the definition, slot by slot: the clear record's meaning.
void ModelIndex::clear(const Clear& c) {
  std::set<std::string> fields(c.fields.begin(), c.fields.end());
  if (!c.delete_slots) {
    for (auto it = bitmaps_.begin(); it != bitmaps_.end();)
      it = fields.count(it->first.first) ? bitmaps_.erase(it) : std::next(it);
    return;
  }
  std::set<int64_t> gone;
  if (c.alive_slots) gone = alive_;
  for (const auto& [k, slots] : bitmaps_)
    if (fields.count(k.first)) gone.insert(slots.begin(), slots.end());
  for (int64_t slot : gone) delete_slot(slot);
}

void ModelIndex::apply(const EntityRecord& r) {
  if (r.clear) {
    clear(*r.clear);
    return;
  }
  for (const Op& op : r.ops) {
    switch (op.kind) {
      case OpKind::Set:
      case OpKind::Add:
      case OpKind::Remove: field_op(r.entity_id, op); break;
      case OpKind::Delete: delete_slot(r.entity_id); break;
      case OpKind::Alive: alive_.insert(r.entity_id); break;
      case OpKind::QueryOpSet: query_op_set(op); break;
    }
  }
  // creates_slot marks the slot alive once the record's ops are applied.
  if (r.creates_slot) alive_.insert(r.entity_id);
}

std::string ModelIndex::dump() const {
  std::ostringstream s;
  s << "alive={";
  for (int64_t a : alive_) s << a << ' ';
  s << "}";
  for (const auto& [k, slots] : bitmaps_) {
    std::string v;
    k.second.write_json(v);
    s << " " << k.first << "=" << v << ":{";
    for (int64_t x : slots) s << x << ' ';
    s << "}";
  }
  return s.str();
}

std::string ModelIndex::diff(const ModelIndex& o) const {
  return "expected: " + dump() + "\n     got: " + o.dump();
}

}  // namespace bitdex::test
