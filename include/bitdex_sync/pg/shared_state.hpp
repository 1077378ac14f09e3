// Shared memory (shared_state.cpp): each worker's public state (progress,
// errors, latches, the condition variable readers of the ops WAL wait on),
// the launcher's queues and refusals, the capture key; worker slots.
#pragma once

#include "bitdex_sync/core/siphash.hpp"
#include "bitdex_sync/pg/compat.hpp"
#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
}

namespace bitdex::pg {

constexpr int kLatencyBuckets = 12;
// Upper bounds (ms) of the commit -> durable latency histogram buckets; the
// last bucket is +Inf.
extern const double kLatencyBoundsMs[kLatencyBuckets - 1];

enum class WorkerState : int { Stopped = 0, Starting, WaitingForExtension, Running, Backoff };
const char* worker_state_name(WorkerState s);

// One worker's public state. Written by the worker under `mutex`, read by
// status() and wait_for_sync().
struct WorkerShared {
  slock_t mutex;
  // Broadcast after every batch made durable (appends counts them): readers
  // of bitdex_sync.read_wal() waiting for a batch sleep on it. Both outlive
  // the slot's reuse by another database (claim_worker clears from dbname on).
  ConditionVariable appended;
  uint64 appends;
  char dbname[NAMEDATALEN];
  Oid dboid;
  int pid;
  Latch* latch;  // the worker's process latch while it runs
  WorkerState state;
  uint64 durable_lsn;                 // every commit before it is durable in the ops WAL (or held nothing)
  int64 outbox_done;                  // every outbox row with id <= this is durable in the ops WAL (and deleted)
  uint64 outbox_ops;                  // ops read from the outbox
  bool slot_stopped, outbox_stopped;  // stopped in front of a poison record (policy stop)
  bool outbox_rows;                   // a commit wrote outbox rows since the worker last looked
  bool look_now;                      // CREATE/DROP EXTENSION committed: look at the catalog now
  // The installation of the extension (bitdex_sync.instance.id) whose ops
  // WAL the worker has open: 0 while none. apply_config and wait_for_sync
  // wait for the database's current one.
  uint64 instance;
  // Commits made with synchronous_commit = off are decodable only once
  // PostgreSQL flushes them: they raise async_commit_end instead of waking
  // the worker, which looks every wal_writer_delay while it is ahead of
  // what it decoded (async_polling) and sleeps on its latch otherwise.
  uint64 async_commit_end;
  bool async_polling;
  uint64 ops_captured, ops_written, records_written, records_skipped, batches, wal_bytes, poison;
  // Messages with our prefix and no valid tag (forged with
  // pg_logical_emit_message): dropped, counted, warned of now and then.
  uint64 rejected_messages;
  // Loads: rows and chunks written, chunks cut by a concurrent commit.
  uint64 load_rows, load_chunks, load_cuts;
  TimestampTz started_at, last_batch_at;
  int failures;  // consecutive failed runs (backoff exponent)
  uint64 errors_total;
  TimestampTz last_error_at;
  char last_error[512];
  // The end of what is durable in the ops WAL (fdatasync done): read_wal()
  // serves no byte after it. 0: not known yet (no byte is served).
  uint64 durable_wal_id, durable_generation, durable_offset;
  uint64 latency_buckets[kLatencyBuckets];
  double latency_sum_ms;
  uint64 latency_count;
};

// A worker slot is free while dboid is InvalidOid. dboid and pid change only
// under `lock` (exclusive) and the slot's mutex; either suffices to read.
// In shared memory the header is followed by max_databases worker slots,
// then the launcher's two queues of max_databases entries each.
// A database that has no worker because a limit refused it one (most
// recent first wins the place of the oldest when all are taken).
struct Refusal {
  enum Reason : int { None = 0, MaxDatabases = 1, MaxWorkerProcesses = 2 };
  Oid db;
  char dbname[NAMEDATALEN];
  Reason reason;
  TimestampTz at;
};
constexpr int kRefusals = 64;

struct SharedState {
  LWLock* lock;
  Refusal refusals[kRefusals];  // under lock
  int max_databases;            // bitdex_sync.max_databases at server start
  // The key that authenticates capture messages (capture_format.hpp), read
  // by the postmaster from <data directory>/bitdex_sync.key (made at the
  // first start); shared memory is not readable from SQL.
  uint8 capture_key[32];
  // The launcher (automatic mode): its latch, and what backends and workers
  // tell it: databases whose CREATE EXTENSION committed (requests) and
  // workers that ended because their database needs none (declined).
  Latch* launcher_latch;
  int nrequests, ndeclined;
  bool slot_freed;  // a worker gave its slot back: databases max_databases refused may get it

  struct Slots {
    WorkerShared *first, *last;
    WorkerShared* begin() const { return first; }
    WorkerShared* end() const { return last; }
  };
  Slots workers() { return {slot0(), slot0() + max_databases}; }
  Oid* requests() { return reinterpret_cast<Oid*>(slot0() + max_databases); }
  Oid* declined() { return requests() + max_databases; }
  static size_t size(int max_databases) {
    return MAXALIGN(sizeof(SharedState)) + size_t(max_databases) * (sizeof(WorkerShared) + 2 * sizeof(Oid));
  }

 private:
  WorkerShared* slot0() {
    return reinterpret_cast<WorkerShared*>(reinterpret_cast<char*>(this) + MAXALIGN(sizeof *this));
  }
};

SharedState* shared_state();  // nullptr before shared memory is attached
// The capture key's file, relative to the data directory.
constexpr const char* kCaptureKeyFile = "bitdex_sync.key";
void install_shared_memory_hooks();
// The worker claiming a database, or nullptr.
WorkerShared* worker_for_database(Oid dboid);
// The pid of the live worker of a database, 0 when none runs.
int live_worker_pid(Oid dboid);
// Sets the launcher's latch (when it runs): a worker ended.
void wake_launcher();
// Called by a starting worker: the slot for its database (kept from its
// previous run, else a free one, reset), marked with its pid. nullptr when
// another live worker holds the database (*duplicate) or no slot is free.
WorkerShared* claim_worker(Oid dboid, const char* dbname, bool* duplicate);
// Records that database `db` was refused a worker for `reason` (status()
// shows it; wait_for_sync fails at once); claiming a worker or declining
// one (no extension there) takes the record away.
void note_refusal(Oid db, const char* dbname, Refusal::Reason reason);
void forget_refusal(Oid db);
// The reason database `db` was refused a worker, or Refusal::None.
Refusal::Reason refusal_of(Oid db);
// Whether database `db` has a replication slot of bitdex_sync.
bool database_holds_slot(Oid db);
// A worker leaving because its database needs none (no extension) or gets
// none (no slot left): frees its slot and, in automatic mode, tells the
// launcher not to start it again.
void decline_worker(WorkerShared* w, Oid dboid);
void register_workers();
}  // namespace bitdex::pg
