// One index field's dictionary: value -> roaring bitmap of slots.
//
// Entries live in one dense array; an open-addressing table (linear probing,
// at most half full) maps a value's hash to its entry. A lookup touches one
// table cache line and one entry, where a node-based hash map chases a bucket
// and a node per probe: applying ops is mostly these lookups.
#pragma once

#include <roaring/roaring.hh>

#include <cstdint>
#include <vector>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::index {

class ValueMap {
 public:
  struct Entry {
    Roaring bitmap;  // first: an integer lookup touches only this line
    uint64_t hash;
    OpValue value;
  };

  Roaring* find(const OpValue& v);
  const Roaring* find(const OpValue& v) const;
  // The value's bitmap, created empty on first use.
  Roaring& operator[](const OpValue& v);
  // Removes the value if present. The last entry moves into its place, so
  // positions and references from before are no longer valid.
  void erase(const OpValue& v);
  void erase_at(size_t position);
  // Room for n values without growing (loading a snapshot).
  void reserve(size_t n);

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  Entry& at(size_t position) { return entries_[position]; }
  const Entry& at(size_t position) const { return entries_[position]; }
  // Iteration in entry order: the order values were added, give or take the
  // moves made by erase.
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }

 private:
  static constexpr uint32_t kFree = UINT32_MAX;
  struct Slot {
    uint64_t hash = 0;  // the entry's hash
    uint32_t entry = kFree;
    OpValue::Kind kind = OpValue::Kind::Null;
  };

  // A bijection on integers: for Int values equal hashes mean equal values.
  static uint64_t hash_of(const OpValue& v);
  // Table position of the value, or of the free slot that ends its probe.
  size_t probe(const OpValue& v, uint64_t hash) const;
  size_t slot_of_entry(uint32_t entry) const;
  void grow() { rehash(table_.empty() ? 16 : table_.size() * 2); }
  void rehash(size_t table_size);

  std::vector<Slot> table_;  // size: a power of two, or 0
  std::vector<Entry> entries_;
};

}  // namespace bitdex::index
