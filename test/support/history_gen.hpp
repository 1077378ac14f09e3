// Random histories of a small model schema, turned into the ops the capture
// triggers emit (BitDex V2 shapes plus join-table UPDATEs):
//   image(id, a int NULL, b text, postId int NULL)  direct source, sets_alive, on_delete
//   tag(imageId, tagId)                              join source -> field tagIds (no FK:
//                                                    rows may outlive their image)
//   post(id, publishedAt int NULL, availability)     fan-out "postId eq {id}" (and
//                                                    sometimes a multi-clause / in query)
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <set>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::test {

class HistoryGen {
 public:
  explicit HistoryGen(uint64_t seed) : rng_(seed) {}

  // One row change (one statement on one row) as the records its triggers
  // emit, in order; empty when the change captured nothing.
  Batch next_change();

  std::mt19937_64& rng() { return rng_; }
  // Also emit TRUNCATEs (clear records), now and then.
  void with_truncates(bool on = true) { truncates_ = on; }

 private:
  struct Image {
    OpValue a, b, post;
  };
  struct Post {
    OpValue published, availability;
  };

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  OpValue value_a();
  OpValue value_b();
  OpValue value_post();
  OpValue value_published();
  OpValue value_availability();
  EntityRecord rec(int64_t id, std::vector<Op> ops);

  Batch insert_image();
  Batch update_image();
  Batch delete_image();
  Batch insert_tag();
  Batch delete_tag();
  Batch update_tag();
  Batch upsert_post();
  Batch truncate();

  std::mt19937_64 rng_;
  std::map<int64_t, Image> images_;
  std::set<std::pair<int64_t, int64_t>> tags_;
  std::map<int64_t, Post> posts_;
  bool cascade_ = false;
  bool decided_cascade_ = false;
  bool truncates_ = false;
};

}  // namespace bitdex::test
