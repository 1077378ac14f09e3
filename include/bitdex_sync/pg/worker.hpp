// The capture workers (one per database: every database where the extension
// is created, started by the launcher; or the databases named in
// bitdex_sync.databases) and the state they share with backends: progress,
// errors, latches, and the launcher's requests.
#pragma once

#include "bitdex_sync/core/siphash.hpp"
#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "replication/logical.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
}

// LSN_FORMAT_ARGS for C++ (PostgreSQL's uses a C-only type check): the two
// halves of an LSN for "%X/%X".
#define BDX_LSN_ARGS(lsn) static_cast<uint32>((lsn) >> 32), static_cast<uint32>(lsn)

namespace bitdex::pg {

// Settings (GUCs under bitdex_sync.*, defined by define_settings()).
extern char* g_databases;          // empty: automatic (the launcher); else comma-separated names
extern char* g_wal_directory;      // ops WAL root; relative to the data directory
extern int g_wal_segment_size_kb;  // rotate a segment once it reaches this size
extern int g_batch_max_ops;
extern int g_batch_max_delay_ms;
extern int g_batch_max_memory_kb;
extern int g_naptime_ms;
extern int g_load_chunk_rows;  // rows per load chunk
extern int g_max_databases;    // worker slots in shared memory (databases with a worker at once)
extern int g_wal_max_size_mb;  // retention: bound of the ops WAL directory (0: none)
extern int g_wal_max_age_s;    // retention: oldest segment kept for a lagging consumer (0: none)
constexpr int kPoisonSkip = 0, kPoisonStop = 1;
extern int g_on_poison_slot;  // kPoisonSkip or kPoisonStop
extern int g_on_poison_outbox;
// Tests only: the worker kills itself (SIGKILL) right after a batch is
// durable, once per file kFaultFile in the data directory (it removes it).
extern bool g_fault_injection;
constexpr const char* kFaultFile = "bitdex_sync.kill_after_batch";
void define_settings();

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
  // The ops WAL directory after the worker's last retention pass.
  uint64 wal_dir_bytes, wal_segments, segments_removed;
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
// This process's SipHash keyed with the capture key (capture_format.hpp), built
// at first use; nullptr without shared memory or memory.
const bitdex::SipHash128* capture_mac() noexcept;
// The capture key's file, relative to the data directory.
constexpr const char* kCaptureKeyFile = "bitdex_sync.key";
void install_shared_memory_hooks();
// True when bitdex_sync.databases is empty: the launcher starts a worker in
// each database where the extension is created.
bool automatic_mode();
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
// True when the worker of this database has not created its slot yet, or
// does not write the ops WAL of this installation of the extension
// (`instance`) yet (automatic mode: also while no worker has started):
// messages captured now would precede the slot, or go to an earlier
// installation's slot and WAL.
bool worker_not_ready(uint64 instance);
// Asks the launcher to start this database's worker once the current
// transaction commits (automatic mode; bitdex_sync.start_worker()).
void start_worker_at_commit();
// The extension is being created or dropped: at commit, the database's
// worker looks at the catalog at once instead of at its next naptime.
void extension_change_at_commit();

// Commit hook: a transaction that emitted capture messages wakes its
// database's worker once it has committed.
void note_captured(bool outbox);
void at_transaction_end(XactEvent event, void* arg);
// ... and so does COMMIT PREPARED (a ProcessUtility hook notes it; the same
// hook runs the capture guard's checks of TRUNCATE and partitions).
void install_utility_hook();

}  // namespace bitdex::pg

extern "C" {
PGDLLEXPORT void bitdex_sync_worker_main(Datum arg);
PGDLLEXPORT void bitdex_sync_launcher_main(Datum arg);
}
