// Where a load's chunk enters the ops WAL (SPEC §9, docs/load.md). Pure C++:
// the worker drives it with PostgreSQL's snapshots and commits, the property
// test with a simulated database.
//
// A chunk is read under an MVCC snapshot S; L is the server's WAL insert
// position taken after S. Every transaction S sees wrote its commit record
// before L, so the chunk goes into the ops WAL right after the last commit
// decoded below L, before anything at or after L. Two things can still be
// wrong there, and both are about transactions S does not see:
//
//  1. one whose commit record lies before L anyway (it had written it but
//     not yet left the proc array when S was taken): its ops precede the
//     chunk, which holds the row as it was before them. Ops are deltas (an
//     UPDATE carries only the fields it changed), so the chunk would undo
//     them. Such a record, for a key the chunk holds, cuts the chunk: only
//     the keys before it go in; the rest is read again with a later
//     snapshot (Chunk::observe, Chunk::take).
//  2. one whose commit the worker had decoded even before S was taken (it
//     is in the ops WAL already): the chunk cannot go before it. A snapshot
//     that misses a decoded commit is not used; the worker takes another
//     (RecentCommits::any_unseen).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex::load {

// Transaction ids compare modulo 2^32, as PostgreSQL's do.
inline bool xid_before(uint32_t a, uint32_t b) {
  return static_cast<int32_t>(a - b) < 0;
}

// An MVCC snapshot as PostgreSQL takes it: transactions below xmin have
// ended, those at or above xmax had not completed, those in xip were in
// progress (top-level ids; subxip holds subtransaction ids unless it
// overflowed).
struct Snapshot {
  uint32_t xmin = 0, xmax = 0;
  std::vector<uint32_t> xip, subxip;
  bool suboverflowed = false;

  // True when committed transaction `xid` is certainly visible in the
  // snapshot. `top_level`: xid is a top-level transaction's (a commit
  // record's); otherwise it may be a subtransaction's (an outbox row's
  // xmin), and an overflowed snapshot cannot tell: not certain.
  bool surely_visible(uint32_t xid, bool top_level) const;
};

// The commits the worker decoded whose transactions may still be in the
// proc array (not yet visible to every new snapshot).
class RecentCommits {
 public:
  void add(uint32_t xid) { xids_.insert(xid); }
  // Every transaction before `oldest_running` has left the proc array.
  void forget_older_than(uint32_t oldest_running);
  // True when one of them is not visible in `s`: a chunk read under `s`
  // could not go after it.
  bool any_unseen(const Snapshot& s) const;
  size_t size() const { return xids_.size(); }

 private:
  std::unordered_set<uint32_t> xids_;
};

// A chunk of one source, read and waiting for its place: the records its
// rows give, grouped by the source key they came from (keys rising), and
// what it covers, keys (from, to].
class Chunk {
 public:
  Chunk(Snapshot snap, int64_t from, int64_t to) : snap_(std::move(snap)), from_(from), to_(to), cut_(to) {}

  // A record of the row(s) with source key `key` (not below the last one's).
  void add(int64_t key, EntityRecord r);
  // Where the chunk ends, once its rows are read (before any observe()).
  void set_to(int64_t to) { to_ = cut_ = to; }
  // A record about to enter the ops WAL before the chunk, committed by
  // transaction `xid`: when S does not see it and it touches an entity of
  // the chunk, the chunk ends before that entity's key. A clear record S
  // does not see ends it before its first key.
  void observe(const EntityRecord& r, uint32_t xid, bool top_level);

  // The records of the keys that go in now, in order, and through which key
  // they cover the source (from <= end <= to; end == from: none, read again).
  Batch take(int64_t* end);

  int64_t from() const { return from_; }
  int64_t to() const { return to_; }
  bool cut() const { return cut_ < to_; }
  size_t records() const { return records_.size(); }
  const Snapshot& snapshot() const { return snap_; }
  // Tests only: ignore what observe() sees (the load without its conflict
  // handling, which the property test shows to be wrong).
  void set_checking(bool on) { checking_ = on; }

 private:
  Snapshot snap_;
  int64_t from_, to_;
  int64_t cut_;  // keys above it do not go in now
  std::vector<std::pair<int64_t, EntityRecord>> records_;
  std::unordered_map<int64_t, int64_t> first_key_;  // entity -> first key whose records touch it
  bool checking_ = true;
};

}  // namespace bitdex::load
