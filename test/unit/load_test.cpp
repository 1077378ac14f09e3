// The load's placement of chunks (core/load.hpp), without a server: unit
// cases, then a model-based property test. A simulated database runs
// concurrent transactions over image(id, a, b) (direct source: alive, a, b,
// delete) and tag(imageId, tagId) (join source tagIds, ON DELETE CASCADE),
// with row locks held until a transaction is visible and a commit that
// writes its record (it is decoded, it precedes watermarks) before it leaves
// the proc array (snapshots see it). A load reads both tables in chunks at
// random moments while the worker decodes commits into batches, dedups them
// and applies them to the model index. After everything has ended, the
// index must equal what the final tables give. Switched off, each of the two
// checks (a cut for records S does not see; no snapshot that misses a
// decoded commit) must make some history fail.
#include <gtest/gtest.h>

#include <climits>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/load.hpp"
#include "support/model_index.hpp"

using namespace bitdex;
using load::Chunk;
using load::RecentCommits;
using load::Snapshot;

TEST(LoadSnapshot, VisibilityFollowsPostgresRules) {
  Snapshot s{100, 110, {103, 107}, {104}, false};
  EXPECT_TRUE(s.surely_visible(99, true));
  EXPECT_TRUE(s.surely_visible(105, true));
  EXPECT_FALSE(s.surely_visible(103, true));
  EXPECT_FALSE(s.surely_visible(110, true));   // at or above xmax: had not completed
  EXPECT_FALSE(s.surely_visible(104, false));  // a listed subtransaction
  EXPECT_TRUE(s.surely_visible(105, false));
  s.suboverflowed = true;
  EXPECT_FALSE(s.surely_visible(105, false));  // could be a subtransaction of 103
  EXPECT_TRUE(s.surely_visible(99, false));
  // Around the wrap of 32-bit transaction ids.
  Snapshot w{0xFFFFFFF0u, 5, {0xFFFFFFFEu, 2}, {}, false};
  EXPECT_TRUE(w.surely_visible(0xFFFFFFF5u, true));
  EXPECT_FALSE(w.surely_visible(0xFFFFFFFEu, true));
  EXPECT_TRUE(w.surely_visible(1, true));
  EXPECT_FALSE(w.surely_visible(2, true));
  EXPECT_FALSE(w.surely_visible(6, true));
  EXPECT_TRUE(w.surely_visible(0xFFFFFFE0u, true));
}

TEST(LoadRecentCommits, AUnseenDecodedCommitRefusesTheSnapshot) {
  RecentCommits rc;
  rc.add(50);
  rc.add(60);
  EXPECT_FALSE(rc.any_unseen(Snapshot{70, 70, {}, {}, false}));
  EXPECT_TRUE(rc.any_unseen(Snapshot{55, 70, {60}, {}, false}));  // 60 committed, still in the proc array
  EXPECT_TRUE(rc.any_unseen(Snapshot{55, 58, {}, {}, false}));    // 60 above xmax
  rc.forget_older_than(61);
  EXPECT_EQ(rc.size(), 0u);
}

namespace {

EntityRecord set_rec(int64_t id, const char* f, int v) {
  EntityRecord r;
  r.entity_id = id;
  r.ops = {Op::set(f, OpValue::int64(v))};
  return r;
}

}  // namespace

TEST(LoadChunk, UnseenRecordsCutBeforeTheirKey) {
  Snapshot s{100, 110, {105}, {}, false};
  Chunk c(s, 10, 20);
  for (int64_t k = 11; k <= 20; k++) c.add(k, set_rec(k, "a", 1));
  c.observe(set_rec(15, "a", 2), 90, true);   // seen by S: no cut
  c.observe(set_rec(99, "a", 2), 105, true);  // unseen, not in the chunk
  EXPECT_FALSE(c.cut());
  c.observe(set_rec(17, "a", 2), 105, true);  // unseen, in the chunk
  c.observe(set_rec(14, "a", 2), 111, true);  // unseen (above xmax), earlier key
  EXPECT_TRUE(c.cut());
  int64_t end = 0;
  Batch b = c.take(&end);
  EXPECT_EQ(end, 13);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b.back().entity_id, 13);
  // An unseen clear record: nothing goes in.
  Chunk d(s, 10, 20);
  d.add(11, set_rec(11, "a", 1));
  d.observe(EntityRecord::clearing(Clear{false, false, "t", {"a"}}), 105, true);
  EXPECT_TRUE(d.take(&end).empty());
  EXPECT_EQ(end, 10);
}

// ---- the simulated database ------------------------------------------------

namespace {

struct Image {
  int a = 0, b = 0;
};
using TagKey = std::pair<int64_t, int64_t>;

// One row version: the writing transaction and the row after it (nullopt:
// deleted).
template <class Row>
struct Version {
  uint32_t xid;
  std::optional<Row> row;
};

enum class Lock { None, KeyShare, Update, Delete };

struct Txn {
  uint32_t xid = 0;
  Batch records;  // captured, in order
  bool committed = false;
  std::set<int64_t> image_locks, image_key_share, image_deleted;
  std::set<TagKey> tag_locks;
  std::map<int64_t, std::optional<Image>> images;  // own changes
  std::map<TagKey, bool> tags;
};

struct Options {
  bool cut = true;     // Chunk::observe
  bool recent = true;  // RecentCommits
};

struct Outcome {
  bool equal = false;
  std::string diff, trace;
  size_t chunks = 0, cuts = 0, refused_snapshots = 0, commits = 0;
};

class Sim {
 public:
  Sim(uint64_t seed, Options o) : rng_(seed), opt_(o) {}

  Outcome run() {
    // Rows that exist before capture starts (never captured).
    for (int64_t k = 1; k <= kImages; k++)
      if (pick(0, 2) > 0) {
        images_[k].push_back({0, Image{pick(1, 3), pick(1, 3)}});
        for (int64_t t = 1; t <= 3; t++)
          if (pick(0, 1)) tags_[{k, t}].push_back({0, true});
      }
    next_xid_ = 3;
    latest_completed_ = 2;
    load_at_ = static_cast<size_t>(pick(0, 60));
    const int steps = pick(150, 400);
    for (int i = 0; i < steps; i++) step(false);
    // The end: every transaction ends, the load finishes, everything is decoded.
    for (int guard = 0; guard < 100000 && !(txns_.empty() && decoded_ == wal_.size() && source_ == 2); guard++)
      step(true);
    flush();
    Outcome& out = outcome_;
    test::ModelIndex expected;
    for (const auto& [k, versions] : images_)
      if (const auto& row = versions.back().row) {
        EntityRecord r;
        r.entity_id = k;
        r.creates_slot = true;
        r.ops = {Op::set("a", OpValue::int64(row->a)), Op::set("b", OpValue::int64(row->b))};
        expected.apply(r);
      }
    for (const auto& [key, versions] : tags_)
      if (versions.back().row.value_or(false)) {
        EntityRecord r;
        r.entity_id = key.first;
        r.ops = {Op::add("tagIds", OpValue::int64(key.second))};
        expected.apply(r);
      }
    out.equal = expected == index_;
    if (!out.equal)
      out.diff = expected.diff(index_);
    else
      out.trace.clear();
    return std::move(out);
  }

 private:
  static constexpr int64_t kImages = 10;

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  void note(const std::string& what) { outcome_.trace += what + "\n"; }

  // The latest version of a row (what a writer that locked it sees).
  std::optional<Image> image_now(int64_t k, const Txn& t) const {
    auto own = t.images.find(k);
    if (own != t.images.end()) return own->second;
    auto it = images_.find(k);
    return it == images_.end() ? std::nullopt : it->second.back().row;
  }
  bool tag_now(const TagKey& key, const Txn& t) const {
    auto own = t.tags.find(key);
    if (own != t.tags.end()) return own->second;
    auto it = tags_.find(key);
    return it != tags_.end() && it->second.back().row.value_or(false);
  }
  bool image_locked_by_other(int64_t k, const Txn& t, bool key_share_too) const {
    for (const Txn& o : txns_) {
      if (o.xid == t.xid) continue;
      if (o.image_locks.count(k) || (key_share_too && o.image_key_share.count(k))) return true;
    }
    return false;
  }
  bool tag_locked_by_other(const TagKey& key, const Txn& t) const {
    for (const Txn& o : txns_)
      if (o.xid != t.xid && o.tag_locks.count(key)) return true;
    return false;
  }
  bool delete_locked(int64_t k, const Txn& t) const {
    for (const Txn& o : txns_)
      if (o.xid != t.xid && o.image_deleted.count(k)) return true;
    return false;
  }

  EntityRecord rec(int64_t id, std::vector<Op> ops) {
    EntityRecord r;
    r.entity_id = id;
    r.ops = std::move(ops);
    return r;
  }

  // One statement of transaction t, as its capture trigger records it.
  void act(Txn& t) {
    const int64_t k = pick(1, kImages);
    const std::optional<Image> now = image_now(k, t);
    switch (pick(0, 5)) {
      case 0:  // INSERT image
        if (now || image_locked_by_other(k, t, true)) return;
        {
          Image im{pick(1, 3), pick(1, 3)};
          t.image_locks.insert(k);
          t.images[k] = im;
          t.records.push_back(
              rec(k, {Op::alive(), Op::set("a", OpValue::int64(im.a)), Op::set("b", OpValue::int64(im.b))}));
        }
        return;
      case 1:
      case 2: {  // UPDATE of some fields
        if (!now || image_locked_by_other(k, t, false)) return;
        Image im = *now;
        std::vector<Op> ops;
        if (pick(0, 1)) {
          int v = pick(1, 3);
          if (v != im.a) {
            ops.push_back(Op::remove("a", OpValue::int64(im.a)));
            ops.push_back(Op::set("a", OpValue::int64(v)));
            im.a = v;
          }
        }
        if (pick(0, 1)) {
          int v = pick(1, 3);
          if (v != im.b) {
            ops.push_back(Op::remove("b", OpValue::int64(im.b)));
            ops.push_back(Op::set("b", OpValue::int64(v)));
            im.b = v;
          }
        }
        t.image_locks.insert(k);
        t.images[k] = im;
        if (!ops.empty()) t.records.push_back(rec(k, std::move(ops)));
        return;
      }
      case 3: {  // DELETE image, its tags cascading
        if (!now || image_locked_by_other(k, t, true)) return;
        for (int64_t tag = 1; tag <= 3; tag++)
          if (tag_locked_by_other({k, tag}, t)) return;
        t.image_locks.insert(k);
        t.image_deleted.insert(k);
        t.images[k] = std::nullopt;
        t.records.push_back(rec(k, {Op::del()}));
        for (int64_t tag = 1; tag <= 3; tag++)
          if (tag_now({k, tag}, t)) {
            t.tag_locks.insert({k, tag});
            t.tags[{k, tag}] = false;
            t.records.push_back(rec(k, {Op::remove("tagIds", OpValue::int64(tag))}));
          }
        return;
      }
      case 4: {  // INSERT tag (FK: the image exists; KEY SHARE lock on it)
        const TagKey key{k, pick(1, 3)};
        if (!now || delete_locked(k, t) || tag_now(key, t) || tag_locked_by_other(key, t)) return;
        t.image_key_share.insert(k);
        t.tag_locks.insert(key);
        t.tags[key] = true;
        t.records.push_back(rec(k, {Op::add("tagIds", OpValue::int64(key.second))}));
        return;
      }
      default: {  // DELETE tag
        const TagKey key{k, pick(1, 3)};
        if (!tag_now(key, t) || tag_locked_by_other(key, t)) return;
        t.tag_locks.insert(key);
        t.tags[key] = false;
        t.records.push_back(rec(k, {Op::remove("tagIds", OpValue::int64(key.second))}));
        return;
      }
    }
  }

  // The proc array's view: what a snapshot taken now holds.
  Snapshot snapshot() const {
    Snapshot s;
    s.xmax = latest_completed_ + 1;
    s.xmin = s.xmax;
    for (const Txn& t : txns_) {
      if (load::xid_before(t.xid, s.xmin)) s.xmin = t.xid;
      if (load::xid_before(t.xid, s.xmax)) s.xip.push_back(t.xid);
    }
    return s;
  }

  template <class Row>
  static std::optional<Row> as_of(const std::vector<Version<Row>>& versions, const Snapshot& s) {
    std::optional<Row> out;
    for (const auto& v : versions)
      if (v.xid == 0 || s.surely_visible(v.xid, true)) out = v.row;
    return out;
  }

  // A chunk of the current source at snapshot s: up to n slots after the cursor.
  void read_chunk(const Snapshot& s) {
    const int n = pick(1, 4);
    std::map<int64_t, Batch> by_key;
    if (source_ == 0) {
      for (const auto& [k, versions] : images_)
        if (k > cursor_)
          if (auto row = as_of(versions, s)) {
            EntityRecord r;
            r.entity_id = k;
            r.ops = {Op::alive(), Op::set("a", OpValue::int64(row->a)), Op::set("b", OpValue::int64(row->b))};
            by_key[k].push_back(std::move(r));
          }
    } else {
      for (const auto& [key, versions] : tags_)
        if (key.first > cursor_ && as_of(versions, s).value_or(false))
          by_key[key.first].push_back(rec(key.first, {Op::add("tagIds", OpValue::int64(key.second))}));
    }
    int64_t to = INT64_MAX;
    if (static_cast<int>(by_key.size()) > n) {
      auto last = std::next(by_key.begin(), n - 1);
      to = last->first;
      by_key.erase(std::next(last), by_key.end());
    }
    {
      std::string xip;
      for (uint32_t x : s.xip) xip += std::to_string(x) + " ";
      note("chunk of source " + std::to_string(source_) + " (" + std::to_string(cursor_) + ", " + std::to_string(to) +
           "] at S{xmin " + std::to_string(s.xmin) + " xmax " + std::to_string(s.xmax) + " xip " + xip +
           "}, L = commit #" + std::to_string(wal_.size()));
    }
    chunk_.emplace(s, cursor_, to);
    chunk_->set_checking(opt_.cut);
    chunk_at_ = wal_.size();
    for (auto& [k, recs] : by_key)
      for (EntityRecord& r : recs) {
        r.pos = SourcePos{Stream::Load, static_cast<uint64_t>(source_ + 1), static_cast<uint32_t>(outcome_.chunks)};
        chunk_->add(k, std::move(r));
      }
    outcome_.chunks++;
  }

  void load_step() {
    if (source_ >= 2 || steps_ < load_at_) return;
    if (!chunk_) {
      Snapshot s = snapshot();
      if (opt_.recent && recent_.any_unseen(s)) {
        outcome_.refused_snapshots++;
        return;
      }
      read_chunk(s);
      return;
    }
    if (decoded_ < chunk_at_) return;  // the watermark is not reached yet
    int64_t end = 0;
    outcome_.cuts += chunk_->cut();
    const bool done = !chunk_->cut() && chunk_->to() == INT64_MAX;
    Batch taken = chunk_->take(&end);
    note("chunk in, through key " + std::to_string(end) + ": " + batch_to_json(taken));
    for (EntityRecord& r : taken) batch_.push_back(std::move(r));
    chunk_.reset();
    cursor_ = end;
    if (done) {
      source_++;
      cursor_ = INT64_MIN;
    }
  }

  void decode_one() {
    if (decoded_ == wal_.size() || (chunk_ && decoded_ >= chunk_at_)) return;
    const auto& [xid, records] = wal_[decoded_++];
    note("decode commit #" + std::to_string(decoded_ - 1) + " xid " + std::to_string(xid) + ": " +
         batch_to_json(records));
    for (const EntityRecord& r : records) {
      if (chunk_) chunk_->observe(r, xid, true);
      batch_.push_back(r);
    }
    recent_.add(xid);
    outcome_.commits++;
  }

  void flush() {
    index_.apply(dedup(std::move(batch_)));
    batch_.clear();
  }

  void end_txn(size_t i, bool commit) {
    Txn& t = txns_[i];
    if (commit) {
      for (const auto& [k, row] : t.images) images_[k].push_back({t.xid, row});
      for (const auto& [key, present] : t.tags) tags_[key].push_back({t.xid, present});
    }
    if (load::xid_before(latest_completed_, t.xid)) latest_completed_ = t.xid;
    txns_.erase(txns_.begin() + static_cast<long>(i));
  }

  void step(bool finishing) {
    steps_++;
    switch (pick(0, 9)) {
      case 0:
        if (!finishing && txns_.size() < 4) {
          txns_.emplace_back();
          txns_.back().xid = next_xid_++;
        }
        break;
      case 1:
      case 2:
        if (!txns_.empty()) {
          Txn& t = txns_[static_cast<size_t>(pick(0, static_cast<int>(txns_.size()) - 1))];
          if (!t.committed && !finishing) act(t);
        }
        break;
      case 3:  // commit record written (or abort)
        if (!txns_.empty()) {
          const size_t i = static_cast<size_t>(pick(0, static_cast<int>(txns_.size()) - 1));
          Txn& t = txns_[i];
          if (t.committed) break;
          if (pick(0, 7) == 0) {
            end_txn(i, false);
          } else {
            t.committed = true;
            note("commit record #" + std::to_string(wal_.size()) + " of xid " + std::to_string(t.xid));
            // Versions become the latest at once (the locks still hold them).
            wal_.push_back({t.xid, t.records});
          }
        }
        break;
      case 4:  // left the proc array: visible to new snapshots, locks released
        for (size_t i = 0; i < txns_.size(); i++)
          if (txns_[i].committed && pick(0, 1)) {
            note("xid " + std::to_string(txns_[i].xid) + " visible");
            end_txn(i, true);
            break;
          }
        break;
      case 5:
      case 6: decode_one(); break;
      case 7: load_step(); break;
      case 8:
        if (pick(0, 2) == 0) flush();
        break;
      default: {
        uint32_t oldest = next_xid_;
        for (const Txn& t : txns_)
          if (load::xid_before(t.xid, oldest)) oldest = t.xid;
        recent_.forget_older_than(oldest);
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  Options opt_;
  std::map<int64_t, std::vector<Version<Image>>> images_;
  std::map<TagKey, std::vector<Version<bool>>> tags_;
  std::vector<Txn> txns_;
  uint32_t next_xid_ = 3, latest_completed_ = 2;
  std::vector<std::pair<uint32_t, Batch>> wal_;  // commit records in WAL order
  size_t decoded_ = 0;
  Batch batch_;
  test::ModelIndex index_;
  RecentCommits recent_;
  std::optional<Chunk> chunk_;
  size_t chunk_at_ = 0;  // the watermark: commits before it precede the chunk
  int source_ = 0;       // 0: image, 1: tag, 2: done
  int64_t cursor_ = INT64_MIN;
  size_t steps_ = 0, load_at_ = 0;
  Outcome outcome_;
};

}  // namespace

// BITDEX_PROP_HISTORIES and BITDEX_PROP_SEED override the defaults.
TEST(LoadProperty, IndexEqualsTheTablesAfterALoadUnderConcurrentWrites) {
  const char* env_n = std::getenv("BITDEX_PROP_HISTORIES");
  const char* env_seed = std::getenv("BITDEX_PROP_SEED");
  const uint64_t histories = env_n ? std::strtoull(env_n, nullptr, 10) : 20000;
  const uint64_t seed = env_seed ? std::strtoull(env_seed, nullptr, 10) : 20261204;
  size_t chunks = 0, cuts = 0, refused = 0, commits = 0;
  size_t wrong_without_cut = 0, wrong_without_recent = 0;
  for (uint64_t h = 0; h < histories; h++) {
    const uint64_t hseed = seed * 1000003 + h;
    Outcome o = Sim(hseed, {}).run();
    if (!o.equal)
      FAIL() << "the load left the index unlike the tables; rerun with BITDEX_PROP_SEED=" << seed << " (history " << h
             << ", seed " << hseed << ")\n"
             << o.diff << "\n"
             << (std::getenv("BITDEX_LOAD_TRACE") ? o.trace : "(BITDEX_LOAD_TRACE=1 prints the history)");
    chunks += o.chunks;
    cuts += o.cuts;
    refused += o.refused_snapshots;
    commits += o.commits;
    wrong_without_cut += !Sim(hseed, {false, true}).run().equal;
    wrong_without_recent += !Sim(hseed, {true, false}).run().equal;
  }
  std::printf(
      "[ property ] %llu histories: %zu commits, %zu chunks, %zu cut, %zu snapshots refused; without the cut %zu "
      "histories end wrong, without the decoded-commit check %zu (seed %llu)\n",
      static_cast<unsigned long long>(histories), commits, chunks, cuts, refused, wrong_without_cut,
      wrong_without_recent, static_cast<unsigned long long>(seed));
  // The histories exercise both traps: each check is needed.
  EXPECT_GT(cuts, 0u);
  EXPECT_GT(refused, 0u);
  EXPECT_GT(wrong_without_cut, 0u);
  EXPECT_GT(wrong_without_recent, 0u);
}
