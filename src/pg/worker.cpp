// The capture worker: decodes its database's logical slot in-process with a
// long-lived decoding context, collects the capture messages in commit order
// with their source position (commit LSN, index in transaction), and writes
// them to the ops WAL in deduplicated batches: append + fdatasync first, THEN
// confirm the slot.
//
// How it decodes: the context runs in fast-forward mode, so PostgreSQL keeps
// the slot's bookkeeping (snapshot builder, restart position, the oldest
// transaction still running) but queues no changes and replays nothing —
// its reorder buffer would queue every row change of the database and
// replay each committed transaction inside a transaction of its own (a
// start and an abort per decoded transaction, most of the worker's time
// under a write load). The worker reads the records it needs itself: the
// capture messages (held per transaction in TxnMessages, spilling past
// logical_decoding_work_mem), commits (read the transaction's messages and
// its subtransactions' in WAL order), aborts and running-transactions
// records (drop them).
//
// Why replaying is safe: the slot's confirmed position reaches disk lazily,
// so after a crash the slot may hand out transactions the WAL already holds.
// The WAL records, per stream, the highest position it covers; the batcher
// skips anything at or below it. Nothing is confirmed before it is durable,
// so nothing is lost either.
//
// The outbox (bitdex_sync.ops, capture: outbox) is read through SPI in id
// order without ever passing an id a running transaction may still commit:
// a snapshot S and the highest id H visible in it are noted, and rows up to
// H are read only once every transaction S saw in progress has ended. That
// is enough because the capture trigger runs AFTER the row change, so a
// transaction holds its xid before it draws an id: whoever drew an id <= H
// (drawn before S) had an xid below S's xmax, so it was visible-committed,
// aborted, or in S's in-progress list. Rows are deleted only after the batch
// holding them is durable; the WAL's outbox mark (the last id written)
// makes a crash between the two harmless.
//
// Errors: everything that fails (WAL I/O, a full disk, decoding) raises a
// PostgreSQL ERROR; the top level records it in shared memory (status()),
// sleeps an exponential backoff and exits, and the postmaster restarts the
// worker, which resumes from the slot and the WAL's marks.
//
// C++ state lives in one heap object (g_worker) so no frame PostgreSQL may
// longjmp out of owns a C++ object; C++ calls that may throw run inside
// run_cpp() and their failure is raised as an ERROR afterwards.
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "bitdex_sync/core/batcher.hpp"
#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/core/txn_messages.hpp"
#include "bitdex_sync/core/wal_writer.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/worker.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/walwriter.h"
#include "replication/decode.h"
#include "replication/message.h"
#include "replication/reorderbuffer.h"
#include "replication/snapbuild.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "storage/standbydefs.h"
#include "tcop/tcopprot.h"
#include "utils/inval.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace bitdex::pg {
namespace {

struct Quarantined {
  const char* source;  // "slot" or "outbox"
  std::string position, payload, reason;
  int64 entity_id;
  bool has_entity;
};

struct Worker {
  WorkerShared* shared = nullptr;
  std::string slot_name;
  std::string wal_dir;
  std::unique_ptr<wal::WalWriter> writer;
  std::unique_ptr<pipeline::Batcher> batcher;
  LogicalDecodingContext* ctx = nullptr;            // while the slot is acquired
  std::unique_ptr<pipeline::TxnMessages> messages;  // of transactions in progress, while ctx
  TimestampTz batch_opened = 0;                     // 0: the batch is empty
  std::vector<TimestampTz> commit_times;            // of the transactions in the open batch
  XLogRecPtr confirmed = InvalidXLogRecPtr;
  // Outbox: every row with id <= outbox_done is durable in the WAL (or was
  // an aborted id). While outbox_pending, rows up to outbox_horizon wait for
  // the transactions in outbox_snapshot's in-progress list to end.
  int64 outbox_done = 0;
  bool outbox_leftovers_deleted = false;  // once per writer open: see outbox_delete_through
  bool outbox_cut = false;                // the pass ended at a quarantined row: another follows
  bool outbox_pending = false;
  int64 outbox_horizon = 0;
  std::string outbox_snapshot;
  // Poison: records that failed to decode, waiting to be written to
  // bitdex_sync.quarantine; a source whose policy is `stop` stops at its
  // first one until the settings are reloaded.
  std::vector<Quarantined> quarantine;
  bool slot_stop_requested = false;  // set while decoding; acted on after
  bool slot_stopped = false, outbox_stopped = false;
  bool automatic = false;                   // started by the launcher: exits when the extension is gone
  bool extension_gone = true;               // as of the last look (run() looks first)
  bool caches_for_decoding = false;         // see use_caches_for_decoding
  bool wal_unflushed = false;               // decoding reached a record not flushed whole yet
  int64 run_id = 0;                         // this run's row in bitdex_sync.runs
  RepOriginId origin = InvalidRepOriginId;  // marks the worker's own writes
  bool origin_dropped = false;              // by this process, since the extension went
  char error[512] = {0};
};

// Rows read from the outbox per query; the batcher closes batches by its own limits.
constexpr int kOutboxChunk = 10000;

void in_transaction(void (*fn)());
void take_record(LogicalDecodingContext* ctx);
[[noreturn]] void messages_failed();
void write_quarantine();
void publish_stops();

Worker* g_worker = nullptr;

// Reads a WAL page for decoding. A record may cross the flush pointer the
// worker decodes up to: then the page is "not available" (-1), XLogReadRecord
// returns no record and no error, and the cycle ends there; the next one
// reads the record again from its start once the rest is flushed (the commit
// that flushes it wakes the worker). Waiting here instead would poll for
// every such record, hundreds of times a second under load.
int read_wal_page(XLogReaderState* state, XLogRecPtr page, int want, XLogRecPtr record, char* buf) {
  if (page + want > GetFlushRecPtr(nullptr)) {
    g_worker->wal_unflushed = true;
    return -1;
  }
  return read_local_xlog_page(state, page, want, record, buf);
}

// Creating the slot must find its start point in WAL that may not be
// flushed yet: it waits, like read_local_xlog_page, but also leaves if the
// postmaster died (which would never flush it) or SIGTERM came.
int read_wal_page_waiting(XLogReaderState* state, XLogRecPtr page, int want, XLogRecPtr record, char* buf) {
  while (page + want > GetFlushRecPtr(nullptr)) {
    if (!PostmasterIsAlive() || ShutdownRequestPending) proc_exit(1);
    CHECK_FOR_INTERRUPTS();
    pg_usleep(1000L);
  }
  return read_local_xlog_page(state, page, want, record, buf);
}

// XL_ROUTINE is C only.
XLogReaderRoutine g_wal_routine = {read_wal_page, wal_segment_open, wal_segment_close};
XLogReaderRoutine g_wal_routine_waiting = {read_wal_page_waiting, wal_segment_open, wal_segment_close};

void set_state(WorkerState s) {
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->state = s;
  SpinLockRelease(&w->mutex);
}

// Copies the batcher's totals and the latency of the batch just written.
void publish_batch(TimestampTz now) {
  WorkerShared* w = g_worker->shared;
  const pipeline::BatchTotals& t = g_worker->batcher->totals();
  SpinLockAcquire(&w->mutex);
  w->ops_captured = t.ops_in;
  w->ops_written = t.ops_out;
  w->records_written = t.records;
  w->records_skipped = t.skipped;
  w->batches = t.batches;
  w->wal_bytes = t.wal_bytes;
  w->last_batch_at = now;
  for (TimestampTz commit : g_worker->commit_times) {
    double ms = std::max<double>(0, static_cast<double>(now - commit) / 1000.0);
    int b = 0;
    while (b < kLatencyBuckets - 1 && ms > kLatencyBoundsMs[b]) b++;
    w->latency_buckets[b]++;
    w->latency_sum_ms += ms;
    w->latency_count++;
  }
  SpinLockRelease(&w->mutex);
}

// The batch limits the settings ask for.
pipeline::BatchLimits batch_limits() {
  pipeline::BatchLimits limits;
  limits.max_ops = static_cast<size_t>(g_batch_max_ops);
  limits.max_bytes = static_cast<size_t>(g_batch_max_memory_kb) * 1024;
  return limits;
}

// Opens the ops WAL (truncating a torn tail) and the batcher over it.
void open_writer() {
  if (g_worker->writer) return;
  bool ok = run_cpp(
      [] {
        g_worker->writer = wal::WalWriter::open({g_worker->wal_dir, uint64_t(g_wal_segment_size_kb) * 1024});
        g_worker->batcher = std::make_unique<pipeline::Batcher>(*g_worker->writer, batch_limits());
        g_worker->outbox_done = static_cast<int64>(g_worker->writer->mark(Stream::Outbox).major);
        g_worker->outbox_pending = false;
        g_worker->outbox_leftovers_deleted = false;
        return true;
      },
      g_worker->error, sizeof g_worker->error);
  if (!ok)
    ereport(ERROR, (errcode(ERRCODE_IO_ERROR), errmsg("bitdex_sync: cannot open the ops WAL in \"%s\": %s",
                                                      g_worker->wal_dir.c_str(), g_worker->error)));
}

void close_writer() {
  run_cpp(
      [] {
        g_worker->batcher.reset();
        g_worker->writer.reset();
        return true;
      },
      g_worker->error, sizeof g_worker->error);
}

// Writes the open batch durably (dedup, append, fdatasync).
void flush_batch() {
  if (!g_worker->batcher || g_worker->batcher->empty()) return;
  pgstat_report_wait_start(PG_WAIT_EXTENSION);
  bool ok = run_cpp(
      [] {
        g_worker->batcher->flush();
        return true;
      },
      g_worker->error, sizeof g_worker->error);
  pgstat_report_wait_end();
  if (!ok) {
    // The writer refuses further appends after an I/O error: start over.
    close_writer();
    ereport(ERROR, (errcode(ERRCODE_IO_ERROR),
                    errmsg("bitdex_sync: cannot write to the ops WAL in \"%s\": %s", g_worker->wal_dir.c_str(),
                           g_worker->error),
                    errdetail("Nothing was confirmed to the slot; the batch is decoded again after the restart.")));
  }
  publish_batch(GetCurrentTimestamp());
  g_worker->commit_times.clear();
  g_worker->batch_opened = 0;
  // The crash window a test wants to hit: the batch is durable, nothing after
  // it (slot confirm, quarantine, outbox delete) is.
  if (g_fault_injection && unlink(kFaultFile) == 0) {
    ereport(LOG, (errmsg("bitdex_sync: fault injection: killing the worker after a durable batch")));
    raise(SIGKILL);
  }
}

// The catalog caches serve either decoding (historic snapshots) or the
// worker's own transactions; entries cached for one must not serve the other
// (logicalfuncs.c invalidates after decoding for the same reason). Switching
// is what costs: every cached relation is rebuilt. So the caches are
// invalidated only when the use changes, not every cycle.
void use_caches_for_decoding(bool decoding) {
  if (g_worker->caches_for_decoding == decoding) return;
  InvalidateSystemCaches();
  g_worker->caches_for_decoding = decoding;
}

bool extension_installed() {
  use_caches_for_decoding(false);
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  bool installed = OidIsValid(get_extension_oid("bitdex_sync", true));
  CommitTransactionCommand();
  return installed;
}

// Creates the slot (persistent, this library as its plugin) if missing.
void create_slot_if_missing() {
  if (SearchNamedReplicationSlot(g_worker->slot_name.c_str(), true)) return;
  CheckLogicalDecodingRequirements();
  ReplicationSlotCreate(g_worker->slot_name.c_str(), true, RS_EPHEMERAL, false);
  LogicalDecodingContext* c = CreateInitDecodingContext("bitdex_sync", NIL, false, InvalidXLogRecPtr,
                                                        &g_wal_routine_waiting, nullptr, nullptr, nullptr);
  DecodingContextFindStartpoint(c);
  FreeDecodingContext(c);
  ReplicationSlotPersist();
  ReplicationSlotRelease();
  ereport(LOG, (errmsg("bitdex_sync: created logical replication slot \"%s\"", g_worker->slot_name.c_str())));
}

// Acquires the slot and keeps one decoding context for the worker's life,
// reading on from where the previous cycle stopped.
void start_decoding() {
  if (g_worker->ctx) return;
  ReplicationSlotAcquire(g_worker->slot_name.c_str(), true);
  // Spill files go with the slot: dropping it removes its directory.
  char spill_dir[MAXPGPATH];
  snprintf(spill_dir, sizeof spill_dir, "pg_replslot/%s", g_worker->slot_name.c_str());
  if (!run_cpp(
          [&] {
            g_worker->messages =
                std::make_unique<pipeline::TxnMessages>(spill_dir, size_t(logical_decoding_work_mem) * 1024);
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    ereport(ERROR, (errcode(ERRCODE_IO_ERROR), errmsg("bitdex_sync: %s", g_worker->error)));
  // Fast-forward: see the top of this file.
  g_worker->ctx = CreateDecodingContext(InvalidXLogRecPtr, NIL, true, &g_wal_routine, nullptr, nullptr, nullptr);
  // The whole of every transaction committed after confirmed_flush must be
  // seen, so reading starts at restart_lsn.
  XLogBeginRead(g_worker->ctx->reader, MyReplicationSlot->data.restart_lsn);
  g_worker->confirmed = MyReplicationSlot->data.confirmed_flush;
}

void stop_decoding(bool drop_slot) {
  if (g_worker->ctx) {
    FreeDecodingContext(g_worker->ctx);
    g_worker->ctx = nullptr;
    ReplicationSlotRelease();
    run_cpp(
        [] {
          g_worker->messages.reset();
          return true;
        },
        g_worker->error, sizeof g_worker->error);
  }
  if (drop_slot && SearchNamedReplicationSlot(g_worker->slot_name.c_str(), true)) {
    ReplicationSlotDrop(g_worker->slot_name.c_str(), true);
    ereport(LOG, (errmsg("bitdex_sync: extension dropped, dropped slot \"%s\"", g_worker->slot_name.c_str())));
  }
}

// The worker's replication origin: "bitdex_sync_<database oid>".
void origin_name(char (&name)[NAMEDATALEN]) {
  snprintf(name, sizeof name, "bitdex_sync_%u", MyDatabaseId);
}

// The extension is gone: its replication origin goes too (CREATE EXTENSION
// makes a new one), once per process. The session lets go of it first: a
// drop refuses an origin in use.
void drop_origin() {
  if (g_worker->origin_dropped) return;
  if (g_worker->origin != InvalidRepOriginId) {
    replorigin_session_reset();
    replorigin_session_origin = InvalidRepOriginId;
    g_worker->origin = InvalidRepOriginId;
  }
  char name[NAMEDATALEN];
  origin_name(name);
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  const bool existed = replorigin_by_name(name, true) != InvalidRepOriginId;
  if (existed) replorigin_drop_by_name(name, true, false);
  CommitTransactionCommand();
  g_worker->origin_dropped = true;
  if (existed) ereport(LOG, (errmsg("bitdex_sync: extension dropped, dropped replication origin \"%s\"", name)));
}

// Decodes everything flushed so far; batches are written as they fill or
// age, and the rest at the end. Then confirms the slot up to where decoding
// stopped: every transaction committed before it is durable in the ops WAL.
void decode_available() {
  LogicalDecodingContext* ctx = g_worker->ctx;
  XLogRecPtr end_of_wal = GetFlushRecPtr(nullptr);
  // Woken by a commit not flushed yet (synchronous_commit = off): nothing to do.
  if (ctx->reader->EndRecPtr >= end_of_wal) return;
  use_caches_for_decoding(true);
  g_worker->wal_unflushed = false;
  while (ctx->reader->EndRecPtr < end_of_wal) {
    char* errm = nullptr;
    XLogRecord* record = XLogReadRecord(ctx->reader, &errm);
    if (errm) elog(ERROR, "bitdex_sync: could not read WAL for decoding: %s", errm);
    if (!record && g_worker->wal_unflushed) break;  // the rest of it is not flushed yet
    if (record) {
      LogicalDecodingProcessRecord(ctx, ctx->reader);
      take_record(ctx);
    }
    if (g_worker->batch_opened &&
        TimestampDifferenceExceeds(g_worker->batch_opened, GetCurrentTimestamp(), g_batch_max_delay_ms))
      flush_batch();
    if (g_worker->slot_stop_requested) break;
    CHECK_FOR_INTERRUPTS();
  }
  flush_batch();
  if (!g_worker->quarantine.empty()) in_transaction(write_quarantine);
  if (g_worker->slot_stop_requested) {
    // Everything before the poison record is durable; the slot is not
    // confirmed past it. Decoding starts again from the slot after a reload.
    g_worker->slot_stop_requested = false;
    g_worker->slot_stopped = true;
    stop_decoding(false);
    publish_stops();
    return;
  }
  XLogRecPtr done = ctx->reader->EndRecPtr;
  if (done > g_worker->confirmed) {
    LogicalConfirmReceivedLocation(done);
    g_worker->confirmed = done;
  }
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->durable_lsn = done;
  w->failures = 0;
  SpinLockRelease(&w->mutex);
}

// A record that could not be decoded (g_worker->error says why): with
// policy `skip` it is queued for the quarantine table and counted; with
// `stop` its source stops in front of it. Returns true when it stops.
bool note_poison(const char* source, const char* where, int policy, Quarantined q) {
  const bool stop = policy == kPoisonStop;
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  if (!stop) w->poison++;
  w->last_error_at = GetCurrentTimestamp();
  snprintf(w->last_error, sizeof w->last_error, "%s a bad capture record (%s %s): %s",
           stop ? "stopped at" : "quarantined", source, where, g_worker->error);
  SpinLockRelease(&w->mutex);
  ereport(WARNING,
          (errcode(ERRCODE_DATA_CORRUPTED),
           errmsg("bitdex_sync: %s a bad capture record (%s %s): %s", stop ? "stopped at" : "quarantined", source,
                  where, g_worker->error),
           stop ? errhint("Set bitdex_sync.on_poison_%s = skip and reload to quarantine it and go on.", source) : 0));
  if (!stop) {
    q.source = source;
    q.position = where;
    q.reason = g_worker->error;
    g_worker->quarantine.push_back(std::move(q));
  }
  return stop;
}

void publish_stops() {
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->slot_stopped = g_worker->slot_stopped;
  w->outbox_stopped = g_worker->outbox_stopped;
  SpinLockRelease(&w->mutex);
}

// Writes the queued poison records (in the caller's transaction, SPI
// connected). Idempotent: a record decoded again after a crash is there once.
void write_quarantine() {
  for (const Quarantined& q : g_worker->quarantine) {
    Oid types[5] = {TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID};
    Datum v[5] = {CStringGetTextDatum(q.source), CStringGetTextDatum(q.position.c_str()), Int64GetDatum(q.entity_id),
                  CStringGetTextDatum(q.payload.c_str()), CStringGetTextDatum(q.reason.c_str())};
    char nulls[5] = {' ', ' ', q.has_entity ? ' ' : 'n', ' ', ' '};
    if (SPI_execute_with_args("INSERT INTO bitdex_sync.quarantine (source, position, entity_id, payload, reason) "
                              "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, position) DO NOTHING",
                              5, types, v, nulls, false, 0) != SPI_OK_INSERT)
      elog(ERROR, "bitdex_sync: could not write to bitdex_sync.quarantine");
  }
  g_worker->quarantine.clear();
}

// Runs fn in a transaction of its own with SPI connected.
// Runs fn in a transaction of its own, with SPI and a snapshot. The tables
// fn uses belong to the extension: it is locked against DROP EXTENSION for
// the transaction (a drop committing between two statements would make them
// vanish mid-pass); when it is gone, fn is skipped and extension_gone set.
void in_transaction(void (*fn)()) {
  use_caches_for_decoding(false);
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  const Oid ext = get_extension_oid("bitdex_sync", true);
  if (OidIsValid(ext)) LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
  // A drop that committed while we waited for the lock: look again.
  const bool present = OidIsValid(ext) && get_extension_oid("bitdex_sync", true) == ext;
  g_worker->extension_gone = !present;
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  PushActiveSnapshot(GetTransactionSnapshot());
  if (present) fn();
  SPI_finish();
  PopActiveSnapshot();
  CommitTransactionCommand();
}

// Tags every transaction of this process with the replication origin
// "bitdex_sync_<database oid>" (created once), so the worker's decoding
// skips its own writes.
void set_up_origin() {
  char name[NAMEDATALEN];
  origin_name(name);
  RepOriginId id = replorigin_by_name(name, true);
  if (id == InvalidRepOriginId) id = replorigin_create(name);
  g_worker->origin = id;
  g_worker->origin_dropped = false;
}

// bitdex_sync.runs: this run's row, after marking rows of runs that ended
// without saying so (a crash, kill -9) as failed.
void record_run_start() {
  if (SPI_execute("UPDATE bitdex_sync.runs SET status = 'failed', ended_at = now(), "
                  "error = 'the worker ended without recording it (crash, kill -9 or server crash)' "
                  "WHERE status = 'running'",
                  false, 0) != SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not update bitdex_sync.runs");
  Datum pid = Int32GetDatum(MyProcPid);
  Oid type = INT4OID;
  if (SPI_execute_with_args("INSERT INTO bitdex_sync.runs (pid) VALUES ($1) RETURNING id", 1, &type, &pid, nullptr,
                            false, 1) != SPI_OK_INSERT_RETURNING)
    elog(ERROR, "bitdex_sync: could not insert into bitdex_sync.runs");
  bool isnull;
  g_worker->run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

const char* g_run_status = nullptr;
const char* g_run_error = nullptr;

void record_run_end() {
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  const int64 batches = static_cast<int64>(w->batches), ops = static_cast<int64>(w->ops_written);
  SpinLockRelease(&w->mutex);
  Oid types[5] = {INT8OID, TEXTOID, INT8OID, INT8OID, TEXTOID};
  Datum v[5] = {Int64GetDatum(g_worker->run_id), CStringGetTextDatum(g_run_status), Int64GetDatum(batches),
                Int64GetDatum(ops), CStringGetTextDatum(g_run_error ? g_run_error : "")};
  char nulls[5] = {' ', ' ', ' ', ' ', g_run_error ? ' ' : 'n'};
  SPI_execute_with_args(
      "UPDATE bitdex_sync.runs SET status = $2, ended_at = now(), batches = $3, "
      "ops_written = $4, error = $5 WHERE id = $1",
      5, types, v, nulls, false, 0);
}

int64 spi_int8(int row, int col, bool* isnull) {
  return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull));
}

// Deletes the outbox rows up to id (written, quarantined or never committed).
void outbox_delete_through(int64 id) {
  Datum arg = Int64GetDatum(id);
  Oid type = INT8OID;
  if (SPI_execute_with_args("DELETE FROM bitdex_sync.ops WHERE id <= $1", 1, &type, &arg, nullptr, false, 0) !=
      SPI_OK_DELETE)
    elog(ERROR, "bitdex_sync: could not delete written rows from the outbox");
}

// Notes a snapshot and the highest id visible in it (the next horizon).
void outbox_take_horizon() {
  if (SPI_execute("SELECT pg_catalog.pg_current_snapshot()::text, max(id) FROM bitdex_sync.ops", true, 1) !=
      SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not read the outbox");
  bool max_null;
  int64 max_id = spi_int8(0, 2, &max_null);
  if (max_null || max_id <= g_worker->outbox_done) return;
  char* snap = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
  g_worker->outbox_snapshot = snap;
  g_worker->outbox_horizon = max_id;
  g_worker->outbox_pending = true;
}

// True once no transaction in progress in the noted snapshot still runs.
bool outbox_horizon_settled() {
  Datum arg = CStringGetTextDatum(g_worker->outbox_snapshot.c_str());
  Oid type = TEXTOID;
  if (SPI_execute_with_args("SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_snapshot_xip($1::pg_catalog.pg_snapshot) x "
                            "WHERE pg_catalog.pg_xact_status(x) = 'in progress')",
                            1, &type, &arg, nullptr, true, 1) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not check the outbox's writers");
  bool isnull;
  return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

// Adds every row up to the horizon to the batch, in id order, writes it,
// then deletes the rows (committed with the caller's transaction).
void outbox_consume() {
  // A row is visible once its transaction committed, but a commit made with
  // synchronous_commit = off may not be flushed yet: a crash would undo it
  // after its ops were written. Flushing the WAL up to where it is now
  // covers every commit the pass's snapshot sees, before any batch is.
  XLogFlush(GetXLogInsertRecPtr());
  int64 after = g_worker->outbox_done;
  const int64 horizon = g_worker->outbox_horizon;
  bool horizon_reached = true;
  uint64 ops = 0;
  // One cursor over the whole range, fetched in chunks: the rows are read
  // once (a query per chunk with LIMIT re-read the rest of the range each
  // time when the planner chose a bitmap scan and a sort).
  Datum args[2] = {Int64GetDatum(after), Int64GetDatum(horizon)};
  Oid types[2] = {INT8OID, INT8OID};
  Portal cursor = SPI_cursor_open_with_args(
      nullptr, "SELECT id, entity_id, ops::text FROM bitdex_sync.ops WHERE id > $1 AND id <= $2 ORDER BY id", 2, types,
      args, nullptr, true, CURSOR_OPT_NO_SCROLL | CURSOR_OPT_FAST_PLAN);
  for (;;) {
    SPI_cursor_fetch(cursor, true, kOutboxChunk);
    const uint64 rows = SPI_processed;
    for (uint64 i = 0; i < rows; i++) {
      bool isnull;
      const int64 id = spi_int8(static_cast<int>(i), 1, &isnull);
      const int64 entity = spi_int8(static_cast<int>(i), 2, &isnull);
      const char* text = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
      after = id;
      size_t nops = 0;
      bool ok = run_cpp(
          [&] {
            EntityRecord r;
            r.entity_id = entity;
            r.ops = parse_ops(json::parse(text), "outbox id " + std::to_string(id));
            r.pos = SourcePos{Stream::Outbox, static_cast<uint64_t>(id), 0};
            nops = r.ops.size();
            g_worker->batcher->add(std::move(r));
            return true;
          },
          g_worker->error, sizeof g_worker->error);
      if (!ok) {
        char where[32];
        snprintf(where, sizeof where, "id " INT64_FORMAT, id);
        horizon_reached = false;
        if (note_poison("outbox", where, g_on_poison_outbox, {nullptr, {}, text, {}, entity, true})) {
          // Stop in front of it: what came before is written and deleted.
          g_worker->outbox_stopped = true;
          after = id - 1;
        } else {
          // Quarantined: the pass ends with it, so that no batch passes a
          // poison row before its quarantine row commits (a crash in between
          // would delete the row as written at the restart). The next pass
          // goes on after it.
          g_worker->outbox_cut = true;
        }
        break;
      }
      ops += nops;
      if (!g_worker->batch_opened) g_worker->batch_opened = GetCurrentTimestamp();
      if (g_worker->batcher->full()) flush_batch();
    }
    if (g_worker->outbox_stopped || g_worker->outbox_cut) break;
    SPI_freetuptable(SPI_tuptable);
    if (rows < static_cast<uint64>(kOutboxChunk)) break;
    if (ShutdownRequestPending) {
      horizon_reached = false;
      break;
    }
    CHECK_FOR_INTERRUPTS();
  }
  SPI_cursor_close(cursor);
  flush_batch();
  // The delete need not wait for its commit record to be flushed: if a crash
  // loses it, the rows come back and are deleted as written (they lie at or
  // below the WAL's outbox mark). Quarantine rows must not be lost.
  if (g_worker->quarantine.empty() && SPI_execute("SET LOCAL synchronous_commit = off", false, 0) != SPI_OK_UTILITY)
    elog(ERROR, "bitdex_sync: could not set synchronous_commit");
  write_quarantine();
  // Up to the horizon every id is written, quarantined or was never
  // committed; when ended early, up to the last row taken.
  const int64 done = horizon_reached ? horizon : after;
  outbox_delete_through(done);
  g_worker->outbox_done = done;
  g_worker->outbox_pending = !horizon_reached;
  publish_stops();
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->outbox_ops += ops;
  SpinLockRelease(&w->mutex);
}

// One pass over the outbox (in a transaction of its own): note a horizon,
// or consume up to the one noted once its writers have ended.
void outbox_pass() {
  // Rows at or below the WAL's outbox mark are already written: only a
  // crash between a batch's fdatasync and its delete leaves any, so look
  // once after opening the WAL, not every pass.
  if (!g_worker->outbox_leftovers_deleted) {
    outbox_delete_through(g_worker->outbox_done);
    g_worker->outbox_leftovers_deleted = true;
  }
  if (!g_worker->outbox_pending) outbox_take_horizon();
  if (g_worker->outbox_pending && outbox_horizon_settled()) {
    pgstat_report_activity(STATE_RUNNING, "reading the outbox into the ops WAL");
    outbox_consume();
  }
}

// Returns true while rows wait for their writers.
bool read_outbox() {
  if (g_worker->outbox_stopped) return false;
  do {
    g_worker->outbox_cut = false;
    in_transaction(outbox_pass);
  } while (g_worker->outbox_cut && !g_worker->extension_gone && !ShutdownRequestPending);
  if (g_worker->extension_gone) return false;
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->outbox_done = g_worker->outbox_done;
  SpinLockRelease(&w->mutex);
  return g_worker->outbox_pending;
}

// True when a commit wrote outbox rows since the last look (and forgets it).
bool take_outbox_signal() {
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  bool rows = w->outbox_rows;
  w->outbox_rows = false;
  SpinLockRelease(&w->mutex);
  return rows;
}

// True while a commit made with synchronous_commit = off lies beyond what
// was decoded: then its backend did not wake us (see at_transaction_end),
// and the worker looks again after wal_writer_delay. The flag is set in the
// same critical section that reads the position, so a commit either sees it
// or wakes the worker.
bool poll_async_commits() {
  const XLogRecPtr decoded = g_worker->ctx ? g_worker->ctx->reader->EndRecPtr : InvalidXLogRecPtr;
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->async_polling = g_worker->ctx && w->async_commit_end > decoded;
  const bool polling = w->async_polling;
  SpinLockRelease(&w->mutex);
  return polling;
}

// The cycle: decode what is flushed, read the outbox when a commit wrote to
// it (or rows wait for their writers, or every naptime for rows written
// without the trigger), sleep until a commit wakes us. Whether the extension
// exists is looked up every naptime (and by each outbox pass), not every
// cycle: a busy database wakes the worker thousands of times a second.
// Returns true when the worker declines (automatic mode, no extension),
// false after SIGTERM.
bool run() {
  bool outbox_waiting = false;
  TimestampTz looked = 0;  // last full look: extension, outbox
  while (!ShutdownRequestPending) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
      if (g_worker->batcher) g_worker->batcher->set_limits(batch_limits());
      if (g_worker->messages && !run_cpp(
                                    [] {
                                      g_worker->messages->set_max_bytes(size_t(logical_decoding_work_mem) * 1024);
                                      return true;
                                    },
                                    g_worker->error, sizeof g_worker->error))
        messages_failed();
      // A stopped source tries again (it stops again if still `stop`).
      g_worker->slot_stopped = g_worker->outbox_stopped = false;
      publish_stops();
      looked = 0;
    }
    const TimestampTz now = GetCurrentTimestamp();
    const bool look = g_worker->extension_gone || TimestampDifferenceExceeds(looked, now, g_naptime_ms);
    if (look) {
      looked = now;
      g_worker->extension_gone = !extension_installed();
    }
    if (g_worker->extension_gone) {
      if (g_worker->ctx || SearchNamedReplicationSlot(g_worker->slot_name.c_str(), true)) {
        stop_decoding(true);
        close_writer();
      }
      drop_origin();
      g_worker->run_id = 0;
      // Started by the launcher: a database without the extension needs no
      // worker (CREATE EXTENSION asks for one again).
      if (g_worker->automatic) return true;
      set_state(WorkerState::WaitingForExtension);
      pgstat_report_activity(STATE_IDLE, "waiting for CREATE EXTENSION bitdex_sync");
    } else {
      if (g_worker->origin == InvalidRepOriginId) {
        in_transaction(set_up_origin);
        replorigin_session_setup(g_worker->origin);
        replorigin_session_origin = g_worker->origin;
      }
      if (!g_worker->run_id) in_transaction(record_run_start);
      if (!g_worker->writer) {
        pgstat_report_activity(STATE_RUNNING, "creating the logical replication slot");
        create_slot_if_missing();
        open_writer();
        set_state(WorkerState::Running);
      }
      if (!g_worker->slot_stopped) {
        start_decoding();
        pgstat_report_activity(STATE_RUNNING, "decoding into the ops WAL");
        decode_available();
      }
      if (take_outbox_signal() || outbox_waiting || look) outbox_waiting = read_outbox();
      pgstat_report_activity(STATE_IDLE, "waiting for commits");
    }
    // Rows waiting for their writers: look again soon (their commit does
    // not wake us). Asynchronous commits waiting for their WAL flush: look
    // again after wal_writer_delay, the pace PostgreSQL itself makes them
    // durable at (each cycle that finds them ends in an fdatasync).
    long nap = g_naptime_ms;
    if (poll_async_commits()) nap = std::min<long>(nap, std::max(1, WalWriterDelay));
    if (outbox_waiting) nap = std::min<long>(nap, std::max(1, g_batch_max_delay_ms));
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, nap, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
  // SIGTERM: every batch so far is durable and confirmed.
  if (g_worker->run_id) {
    g_run_status = "success";
    in_transaction(record_run_end);
  }
  return false;
}

void at_worker_exit(int, Datum) {
  if (!g_worker) return;
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  if (w->pid == MyProcPid) {  // not declined (then the slot may be another's already)
    w->pid = 0;
    w->latch = nullptr;
    w->async_polling = false;
    if (w->state != WorkerState::Backoff) w->state = WorkerState::Stopped;
  }
  SpinLockRelease(&w->mutex);
  // The launcher that started this worker hears of its end from the
  // postmaster; a launcher started since (its predecessor ended) watches it
  // and hears of it here.
  if (automatic_mode()) wake_launcher();
}

// After an error: record it, wait out the backoff (1 s doubling to 60 s
// over consecutive failures), and let the caller exit for a clean restart.
void after_error() {
  MemoryContextSwitchTo(TopMemoryContext);
  ErrorData* e = CopyErrorData();
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  int failures = ++w->failures;
  w->errors_total++;
  w->last_error_at = GetCurrentTimestamp();
  strlcpy(w->last_error, e->message ? e->message : "unknown error", sizeof w->last_error);
  w->state = WorkerState::Backoff;
  SpinLockRelease(&w->mutex);
  long backoff_ms = 1000L << std::min(failures - 1, 6);
  backoff_ms = std::min(backoff_ms, 60000L);
  EmitErrorReport();
  FlushErrorState();
  if (g_worker->run_id) {
    AbortOutOfAnyTransaction();
    g_run_status = "failed";
    g_run_error = e->message ? e->message : "unknown error";
    PG_TRY();
    { in_transaction(record_run_end); }
    PG_CATCH();
    {
      EmitErrorReport();
      FlushErrorState();
      AbortOutOfAnyTransaction();
    }
    PG_END_TRY();
  }
  ereport(LOG, (errmsg("bitdex_sync: worker for database \"%s\" restarts in %ld ms (failure %d in a row)", w->dbname,
                       backoff_ms + 1000, failures)));
  (void)WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, backoff_ms, PG_WAIT_EXTENSION);
}

bool is_worker_origin(RepOriginId origin) {
  return origin != InvalidRepOriginId && origin == g_worker->origin;
}

// Raises the error run_cpp recorded.
[[noreturn]] void messages_failed() {
  ereport(ERROR, (errcode(ERRCODE_IO_ERROR), errmsg("bitdex_sync: decoding: %s", g_worker->error)));
}

// A transactional capture message of this database: held until its
// transaction ends. Like PostgreSQL's own decoding, only once the snapshot
// builder can decode whole transactions (any transaction committing after
// the slot's start began after that).
void hold_message(LogicalDecodingContext* ctx, XLogReaderState* r) {
  if ((XLogRecGetInfo(r) & ~XLR_INFO_MASK) != XLOG_LOGICAL_MESSAGE) return;
  const auto* m = reinterpret_cast<const xl_logical_message*>(XLogRecGetData(r));
  if (!m->transactional || m->dbId != MyDatabaseId || is_worker_origin(XLogRecGetOrigin(r))) return;
  if (m->prefix_size != sizeof capture::kMessagePrefix ||
      memcmp(m->message, capture::kMessagePrefix, sizeof capture::kMessagePrefix) != 0)
    return;
  if (SnapBuildCurrentState(ctx->snapshot_builder) < SNAPBUILD_FULL_SNAPSHOT) return;
  const TransactionId xid = XLogRecGetXid(r);
  const XLogRecPtr lsn = r->ReadRecPtr;
  const auto* data = reinterpret_cast<const uint8_t*>(m->message + m->prefix_size);
  const size_t size = m->message_size;
  if (!run_cpp(
          [&] {
            g_worker->messages->add(xid, lsn, data, size);
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    messages_failed();
}

// One capture message of a committed transaction, in commit order: decoded
// into the open batch, or quarantined.
void take_message(XLogRecPtr commit_lsn, TimestampTz commit_time, uint32_t index, const uint8_t* data, size_t size) {
  if (g_worker->slot_stop_requested) return;  // stopped in front of a poison record
  bool added = false;
  bool ok = run_cpp(
      [&] {
        EntityRecord r = capture::decode(data, size);
        r.pos = SourcePos{Stream::Slot, commit_lsn, index};
        added = g_worker->batcher->add(std::move(r));
        return true;
      },
      g_worker->error, sizeof g_worker->error);
  if (!ok) {
    // A payload the trigger could not have written.
    char where[64];
    snprintf(where, sizeof where, "%X/%X:%u", BDX_LSN_ARGS(commit_lsn), index);
    static const char hex[] = "0123456789abcdef";
    std::string payload = "\\x";
    for (size_t i = 0; i < size; i++) {
      payload.push_back(hex[data[i] >> 4]);
      payload.push_back(hex[data[i] & 15]);
    }
    if (note_poison("slot", where, g_on_poison_slot, {nullptr, {}, std::move(payload), {}, 0, false}))
      g_worker->slot_stop_requested = true;
    return;
  }
  if (!added) return;
  if (!g_worker->batch_opened) g_worker->batch_opened = GetCurrentTimestamp();
  if (g_worker->commit_times.empty() || g_worker->commit_times.back() != commit_time)
    g_worker->commit_times.push_back(commit_time);
  if (g_worker->batcher->full()) flush_batch();
}

static_assert(sizeof(TransactionId) == sizeof(uint32_t));

// A commit: its messages and those of its committed subtransactions, in WAL
// order, numbered from 0 — unless PostgreSQL's decoding would skip it
// (committed before the slot's confirmed start) or it is the worker's own.
void commit_record(LogicalDecodingContext* ctx, XLogReaderState* r, uint8 info) {
  xl_xact_parsed_commit parsed;
  ParseCommitRecord(XLogRecGetInfo(r), reinterpret_cast<xl_xact_commit*>(XLogRecGetData(r)), &parsed);
  const TransactionId xid = info == XLOG_XACT_COMMIT_PREPARED ? parsed.twophase_xid : XLogRecGetXid(r);
  const XLogRecPtr commit_lsn = r->ReadRecPtr;
  const bool skip = SnapBuildXactNeedsSkip(ctx->snapshot_builder, commit_lsn) || is_worker_origin(XLogRecGetOrigin(r));
  if (!run_cpp(
          [&] {
            if (skip)
              g_worker->messages->forget(xid, parsed.subxacts, size_t(parsed.nsubxacts));
            else
              g_worker->messages->open(xid, parsed.subxacts, size_t(parsed.nsubxacts));
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    messages_failed();
  if (skip) return;
  for (uint32_t index = 0;; index++) {
    uint64_t lsn;
    const uint8_t* data;
    size_t size;
    bool more = false;
    if (!run_cpp(
            [&] {
              more = g_worker->messages->next(&lsn, &data, &size);
              return true;
            },
            g_worker->error, sizeof g_worker->error))
      messages_failed();
    if (!more) break;
    take_message(commit_lsn, parsed.xact_time, index, data, size);
  }
  run_cpp(
      [] {
        g_worker->messages->close();
        return true;
      },
      g_worker->error, sizeof g_worker->error);
}

// An abort (of a transaction, a subtransaction or a prepared transaction):
// its messages and those of the subtransactions it lists are dropped.
void abort_record(XLogReaderState* r, uint8 info) {
  xl_xact_parsed_abort parsed;
  ParseAbortRecord(XLogRecGetInfo(r), reinterpret_cast<xl_xact_abort*>(XLogRecGetData(r)), &parsed);
  const TransactionId xid = info == XLOG_XACT_ABORT_PREPARED ? parsed.twophase_xid : XLogRecGetXid(r);
  run_cpp(
      [&] {
        g_worker->messages->forget(xid, parsed.subxacts, size_t(parsed.nsubxacts));
        return true;
      },
      g_worker->error, sizeof g_worker->error);
}

// What the worker reads of a record PostgreSQL's decoding has just processed
// (fast-forward: it kept only the slot's bookkeeping).
void take_record(LogicalDecodingContext* ctx) {
  XLogReaderState* r = ctx->reader;
  switch (XLogRecGetRmid(r)) {
    case RM_LOGICALMSG_ID: hold_message(ctx, r); break;
    case RM_XACT_ID: {
      const uint8 info = XLogRecGetInfo(r) & XLOG_XACT_OPMASK;
      if (info == XLOG_XACT_COMMIT || info == XLOG_XACT_COMMIT_PREPARED) commit_record(ctx, r, info);
      if (info == XLOG_XACT_ABORT || info == XLOG_XACT_ABORT_PREPARED) abort_record(r, info);
      break;
    }
    case RM_STANDBY_ID:
      // Transactions older than the oldest still running ended in a crash
      // without an abort record (PostgreSQL's ReorderBufferAbortOld).
      if ((XLogRecGetInfo(r) & ~XLR_INFO_MASK) == XLOG_RUNNING_XACTS) {
        const TransactionId oldest = reinterpret_cast<const xl_running_xacts*>(XLogRecGetData(r))->oldestRunningXid;
        run_cpp(
            [&] {
              g_worker->messages->forget_older_than(oldest);
              return true;
            },
            g_worker->error, sizeof g_worker->error);
      }
      break;
    default: break;
  }
}

}  // namespace

}  // namespace bitdex::pg

// Started by the launcher (automatic mode) with the database's OID as its
// argument, or by the postmaster for a database named in bitdex_sync.databases
// (its name in bgw_extra).
void bitdex_sync_worker_main(Datum arg) {
  using namespace bitdex::pg;
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
  BackgroundWorkerUnblockSignals();
  // Batches allocate and free blocks of many megabytes: keep them in the
  // heap and keep freed memory (up to the batch bound, plus slack) instead of
  // mapping fresh zeroed pages for every batch.
  mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
  const bool automatic = MyBgworkerEntry->bgw_extra[0] == '\0';
  if (automatic)
    BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
  else
    BackgroundWorkerInitializeConnection(MyBgworkerEntry->bgw_extra, nullptr, 0);
  char dbname[NAMEDATALEN];
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  strlcpy(dbname, get_database_name(MyDatabaseId), sizeof dbname);
  CommitTransactionCommand();
  bool duplicate;
  WorkerShared* w = claim_worker(MyDatabaseId, dbname, &duplicate);
  if (!w && duplicate) {
    // Exit code 0: not restarted. Not declined either: the launcher watches
    // the worker that runs.
    ereport(LOG, (errmsg("bitdex_sync: a worker already runs for database \"%s\"", dbname)));
    proc_exit(0);
  }
  if (!w) {
    ereport(WARNING, (errmsg("bitdex_sync: no worker slot left for database \"%s\"", dbname),
                      errdetail("At most %d databases can have a worker.", kMaxWorkers)));
    decline_worker(nullptr, MyDatabaseId);
    proc_exit(0);
  }

  g_worker = new Worker();
  g_worker->shared = w;
  g_worker->automatic = automatic;
  g_worker->slot_name = "bitdex_sync_" + std::to_string(MyDatabaseId);
  std::string root = g_wal_directory;
  g_worker->wal_dir = root + "/" + dbname;
  before_shmem_exit(at_worker_exit, 0);
  CurrentResourceOwner = ResourceOwnerCreate(nullptr, "bitdex_sync worker");

  volatile bool declined = false;  // set in PG_TRY, read after it
  PG_TRY();
  { declined = run(); }
  PG_CATCH();
  {
    after_error();
    proc_exit(1);
  }
  PG_END_TRY();
  if (declined) {
    // No extension in an automatic-mode database. Exit code 0: not restarted.
    ereport(LOG, (errmsg("bitdex_sync: no extension in database \"%s\", its worker exits", dbname)));
    decline_worker(w, MyDatabaseId);
    proc_exit(0);
  }
  // Exit code 1 even after a clean stop: pg_terminate_backend() of the
  // worker restarts it (a bgworker exiting with 0 is never restarted).
  proc_exit(1);
}
