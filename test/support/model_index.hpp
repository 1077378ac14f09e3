// The reference model of the index: SPEC §4's meaning with std::map/std::set.
// Slow and obviously right; dedup and the roaring index are checked against it.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::test {

class ModelIndex {
 public:
  void apply(const EntityRecord& r);
  void apply(const Batch& b) {
    for (const auto& r : b) apply(r);
  }

  bool operator==(const ModelIndex& o) const { return alive_ == o.alive_ && bitmaps_ == o.bitmaps_; }
  // A readable account of how two states differ (for failure messages).
  std::string diff(const ModelIndex& o) const;
  std::string dump() const;

  bool alive(int64_t slot) const { return alive_.count(slot) > 0; }
  bool has(int64_t slot, const std::string& field, const OpValue& v) const;
  size_t skipped_queries() const { return skipped_; }

  using Key = std::pair<std::string, OpValue>;
  const std::set<int64_t>& alive_slots() const { return alive_; }
  const std::map<Key, std::set<int64_t>>& bitmaps() const { return bitmaps_; }

 private:
  void field_op(int64_t slot, const Op& op);
  void query_op_set(const Op& op);
  void delete_slot(int64_t slot);
  void clear(const Clear& c);

  std::set<int64_t> alive_;
  std::map<Key, std::set<int64_t>> bitmaps_;  // never holds an empty set
  size_t skipped_ = 0;
};

}  // namespace bitdex::test
