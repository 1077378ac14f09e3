// Open addressing with linear probing and backward-shift deletion (no
// tombstones, so probes stay short however values come and go).
#include "bitdex_sync/index/value_map.hpp"

namespace bitdex::index {

uint64_t ValueMap::hash_of(const OpValue& v) {
  // An integer is its own key, mixed so that consecutive ids do not fill
  // consecutive slots (MurmurHash3's 64-bit finalizer: every step is
  // invertible, so distinct integers keep distinct hashes).
  uint64_t h = v.kind == OpValue::Kind::Int ? static_cast<uint64_t>(v.integer) : v.hash();
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

size_t ValueMap::probe(const OpValue& v, uint64_t hash) const {
  const size_t mask = table_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = table_[i];
    if (s.entry == kFree) return i;
    // An integer's hash identifies it, so its entry need not be read here.
    if (s.hash == hash && s.kind == v.kind && (v.kind == OpValue::Kind::Int || entries_[s.entry].value == v)) return i;
  }
}

size_t ValueMap::slot_of_entry(uint32_t entry) const {
  const size_t mask = table_.size() - 1;
  for (size_t i = entries_[entry].hash & mask;; i = (i + 1) & mask)
    if (table_[i].entry == entry) return i;
}

Roaring* ValueMap::find(const OpValue& v) {
  return const_cast<Roaring*>(static_cast<const ValueMap*>(this)->find(v));
}

const Roaring* ValueMap::find(const OpValue& v) const {
  if (entries_.empty()) return nullptr;
  const Slot& s = table_[probe(v, hash_of(v))];
  return s.entry == kFree ? nullptr : &entries_[s.entry].bitmap;
}

Roaring& ValueMap::operator[](const OpValue& v) {
  if ((entries_.size() + 1) * 2 > table_.size()) grow();
  const uint64_t hash = hash_of(v);
  Slot& s = table_[probe(v, hash)];
  if (s.entry == kFree) {
    s = {hash, static_cast<uint32_t>(entries_.size()), v.kind};
    entries_.push_back({Roaring(), hash, v});
  }
  return entries_[s.entry].bitmap;
}

void ValueMap::erase(const OpValue& v) {
  if (entries_.empty()) return;
  const Slot& s = table_[probe(v, hash_of(v))];
  if (s.entry != kFree) erase_at(s.entry);
}

void ValueMap::erase_at(size_t position) {
  const size_t mask = table_.size() - 1;
  // Free the entry's slot, pulling back later slots of the same probe run
  // whose home is not between the hole and themselves.
  size_t hole = slot_of_entry(static_cast<uint32_t>(position));
  for (size_t j = (hole + 1) & mask; table_[j].entry != kFree; j = (j + 1) & mask) {
    size_t home = table_[j].hash & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      table_[hole] = table_[j];
      hole = j;
    }
  }
  table_[hole].entry = kFree;
  // Keep the entries dense: the last one takes the freed position.
  const uint32_t last = static_cast<uint32_t>(entries_.size() - 1);
  if (position != last) {
    table_[slot_of_entry(last)].entry = static_cast<uint32_t>(position);
    entries_[position] = std::move(entries_[last]);
  }
  entries_.pop_back();
}

void ValueMap::reserve(size_t n) {
  entries_.reserve(n);
  size_t size = table_.empty() ? 16 : table_.size();
  while (size < n * 2) size *= 2;
  if (size > table_.size()) rehash(size);
}

void ValueMap::rehash(size_t table_size) {
  std::vector<Slot> bigger(table_size);
  const size_t mask = bigger.size() - 1;
  for (uint32_t e = 0; e < entries_.size(); e++) {
    size_t i = entries_[e].hash & mask;
    while (bigger[i].entry != kFree) i = (i + 1) & mask;
    bigger[i] = {entries_[e].hash, e, entries_[e].value.kind};
  }
  table_.swap(bigger);
}

}  // namespace bitdex::index
