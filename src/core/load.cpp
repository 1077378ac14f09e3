// A load chunk's place in the ops WAL: visibility, conflicts, the cut.
#include "bitdex_sync/core/load.hpp"

#include <algorithm>

#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::load {

bool Snapshot::surely_visible(uint32_t xid, bool top_level) const {
  if (xid_before(xid, xmin)) return true;
  if (!xid_before(xid, xmax)) return false;
  if (std::find(xip.begin(), xip.end(), xid) != xip.end()) return false;
  if (top_level) return true;
  // A subtransaction's id: in progress when listed, unknown when the list
  // overflowed.
  return !suboverflowed && std::find(subxip.begin(), subxip.end(), xid) == subxip.end();
}

void RecentCommits::forget_older_than(uint32_t oldest_running) {
  for (auto it = xids_.begin(); it != xids_.end();)
    it = xid_before(*it, oldest_running) ? xids_.erase(it) : std::next(it);
}

bool RecentCommits::any_unseen(const Snapshot& s) const {
  for (uint32_t xid : xids_)
    if (!s.surely_visible(xid, true)) return true;
  return false;
}

void Chunk::add(int64_t key, EntityRecord r) {
  if (!r.is_clear()) first_key_.emplace(r.entity_id, key);
  records_.emplace_back(key, std::move(r));
}

void Chunk::observe(const EntityRecord& r, uint32_t xid, bool top_level) {
  if (!checking_ || snap_.surely_visible(xid, top_level)) return;
  if (r.is_clear()) {
    cut_ = from_;
    return;
  }
  auto it = first_key_.find(r.entity_id);
  if (it == first_key_.end()) return;
  const int64_t before = it->second == INT64_MIN ? INT64_MIN : it->second - 1;
  if (before < cut_) cut_ = before;
}

Batch Chunk::take(int64_t* end) {
  Batch out;
  *end = std::max(cut_, from_);
  for (auto& [key, r] : records_) {
    if (key > *end) break;
    out.push_back(std::move(r));
  }
  records_.clear();
  first_key_.clear();
  return out;
}

}  // namespace bitdex::load
