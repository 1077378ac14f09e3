// The capture worker: its life (start, the cycle, SIGHUP, SIGTERM, errors and
// backoff, run history) and its batches. It takes capture records from its
// database's slot (decode_slot.cpp) and outbox (outbox_reader.cpp) and
// writes them to the ops WAL in deduplicated batches: append + fdatasync
// first, THEN confirm the slot or delete the outbox rows.
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
#include <stdexcept>
#include <string>
#include <vector>

#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/worker.hpp"
#include "bitdex_sync/pg/worker_state.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/walwriter.h"
#include "catalog/namespace.h"
#include "utils/lsyscache.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace bitdex::pg::bgw {

Worker* g_worker = nullptr;

namespace {

// Publishes where the open ops WAL is durable up to (read_wal() serves
// nothing after it). Under w->mutex.
void set_durable_end(WorkerShared* w) {
  const wal::Cursor end = g_worker->writer->end();
  w->durable_wal_id = end.wal_id;
  w->durable_generation = end.generation;
  w->durable_offset = end.offset;
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
  w->appends++;
  set_durable_end(w);
  for (TimestampTz commit : g_worker->commit_times) {
    double ms = std::max<double>(0, static_cast<double>(now - commit) / 1000.0);
    int b = 0;
    while (b < kLatencyBuckets - 1 && ms > kLatencyBoundsMs[b]) b++;
    w->latency_buckets[b]++;
    w->latency_sum_ms += ms;
    w->latency_count++;
  }
  SpinLockRelease(&w->mutex);
  ConditionVariableBroadcast(&w->appended);
}

// The batch limits the settings ask for.
pipeline::BatchLimits batch_limits() {
  pipeline::BatchLimits limits;
  limits.max_ops = static_cast<size_t>(g_batch_max_ops);
  limits.max_bytes = static_cast<size_t>(g_batch_max_memory_kb) * 1024;
  return limits;
}

}  // namespace

void set_state(WorkerState s) {
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->state = s;
  SpinLockRelease(&w->mutex);
}

namespace {

// Whether bitdex_sync.instance has the timeline column (0.2.0), looked up
// in the catalog by OID, not by SQL a role could shadow.
bool instance_has_timeline() {
  const Oid ns = get_namespace_oid("bitdex_sync", true);
  const Oid rel = OidIsValid(ns) ? get_relname_relid("instance", ns) : InvalidOid;
  return OidIsValid(rel) && get_attnum(rel, "timeline") != InvalidAttrNumber;
}

// bitdex_sync.instance into g_worker (in_transaction).
void read_instance() {
  // An installation not updated to 0.2.0 has no timeline column.
  const bool has_timeline = instance_has_timeline();
  if (SPI_execute(has_timeline ? "SELECT id, coalesce(wal_id, 0), outbox_acked, coalesce(timeline, 0)::bigint "
                                 "FROM bitdex_sync.instance"
                               : "SELECT id, coalesce(wal_id, 0), outbox_acked, 0::bigint FROM bitdex_sync.instance",
                  true, 0) != SPI_OK_SELECT ||
      SPI_processed != 1)
    ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("bitdex_sync.instance does not hold one row"),
                    errhint("Drop and create the extension again.")));
  bool isnull;
  auto col = [&](int c) {
    return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, c, &isnull));
  };
  g_worker->instance_id = static_cast<uint64>(col(1));
  g_worker->recorded_wal_id = static_cast<uint64>(col(2));
  g_worker->outbox_acked = col(3);
  g_worker->recorded_timeline = static_cast<uint32>(col(4));
}

// The timeline this server writes on, into bitdex_sync.instance (when the
// installation has the column): a later start on another timeline with the
// slot gone is a promoted standby.
void record_timeline() {
  Datum tli = Int64GetDatum(static_cast<int64>(GetWALInsertionTimeLine()));
  Oid type = INT8OID;
  if (!instance_has_timeline()) return;
  if (SPI_execute_with_args("UPDATE bitdex_sync.instance SET timeline = $1", 1, &type, &tli, nullptr, false, 0) !=
      SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not record the timeline");
  g_worker->recorded_timeline = GetWALInsertionTimeLine();
}

// A promoted standby: the slot did not come with it, so the ops WAL cannot go
// on where it stopped. bitdex_sync.start_new_wal() gives it up and registers
// a full load of every source into the new one.
void start_new_wal_after_failover() {
  if (SPI_execute("SELECT bitdex_sync.start_new_wal()", false, 0) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not start a new ops WAL");
  read_instance();
}

// The WAL id of the ops WAL just started, into bitdex_sync.instance (in_transaction).
void record_wal_id() {
  Datum id = Int64GetDatum(static_cast<int64>(g_worker->writer->wal_id()));
  Oid type = INT8OID;
  if (SPI_execute_with_args("UPDATE bitdex_sync.instance SET wal_id = $1", 1, &type, &id, nullptr, false, 0) !=
      SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not record the ops WAL's id");
  g_worker->recorded_wal_id = g_worker->writer->wal_id();
}

// Refuses to go on with an ops WAL that lost what a source acknowledged.
[[noreturn]] void wal_behind(const char* source, const char* wal_pos, const char* acked_pos) {
  const std::string dir = g_worker->wal_dir;
  close_writer();
  ereport(ERROR,
          (errcode(ERRCODE_DATA_CORRUPTED),
           errmsg("bitdex_sync: the ops WAL in \"%s\" ends before what the %s acknowledged", dir.c_str(), source),
           errdetail("The ops WAL covers the %s up to %s; the %s was acknowledged up to %s. Acknowledged batches "
                     "are missing: the directory was truncated, damaged or restored from an older copy.",
                     source, wal_pos, source, acked_pos),
           errhint("Nothing is written until this is resolved. Restore the directory, or start a new ops WAL "
                   "with SELECT bitdex_sync.start_new_wal(); and rebuild every consumer from a full load.")));
}

}  // namespace

// Before the slot is created: a database whose ops WAL was written on an
// earlier timeline and whose slot is missing runs on a promoted standby (the
// slot did not come with it), and the WAL cannot go on where it stopped.
// bitdex_sync.start_new_wal() gives it up and registers a full load of every
// source into the new one; decided from durable state only, so a crash in
// between decides the same again.
void check_promoted() {
  if (SearchNamedReplicationSlot(g_worker->slot_name.c_str(), true)) return;
  in_transaction(read_instance);
  if (g_worker->extension_gone) return;
  const TimeLineID timeline = GetWALInsertionTimeLine();
  if (g_worker->recorded_wal_id == 0 || g_worker->recorded_timeline == 0 || g_worker->recorded_timeline == timeline)
    return;
  ereport(LOG,
          (errmsg("bitdex_sync: this server was promoted (timeline %u; ops WAL %016llx was written on timeline %u) "
                  "and the replication slot did not come with it: starting a new ops WAL",
                  timeline, static_cast<unsigned long long>(g_worker->recorded_wal_id), g_worker->recorded_timeline),
           errdetail("Changes committed on the old primary after its last copy here are not in any ops WAL of "
                     "this server; the new ops WAL begins with a full load of every source."),
           errhint("Every consumer must be rebuilt from the new ops WAL (docs/operations.md, failover).")));
  in_transaction(start_new_wal_after_failover);
}

// Opens this installation's ops WAL (truncating a torn tail) and the batcher
// over it. Which WAL is this installation's is recorded in
// bitdex_sync.instance: with none recorded yet, a WAL found in the directory
// belongs to an earlier installation (DROP and CREATE EXTENSION, a database
// dropped and made again under its OID) and is moved aside, and a new one
// starts at what the sources acknowledged so far; with one recorded, the
// directory must hold it and it must cover what the slot and the outbox
// acknowledged, or the worker refuses to go on (never starting afresh over a
// lost WAL, never appending to another's).
void open_writer() {
  if (g_worker->writer) return;
  in_transaction(read_instance);
  if (g_worker->extension_gone) return;
  const TimeLineID timeline = GetWALInsertionTimeLine();
  const bool fresh = g_worker->recorded_wal_id == 0;
  const XLogRecPtr confirmed = slot_confirmed();
  std::string retired;
  bool missing = false;
  bool ok = run_cpp(
      [&] {
        if (auto h = wal::newest_header(g_worker->wal_dir)) {
          if (fresh) retired = wal::retire_dir(g_worker->wal_dir, h->wal_id);
        } else {
          missing = !fresh;
          if (missing) return true;
        }
        wal::WriterOptions o;
        o.dir = g_worker->wal_dir;
        o.segment_size = uint64_t(g_wal_segment_size_kb) * 1024;
        o.database = MyDatabaseId;
        o.instance = g_worker->instance_id;
        o.create = fresh;
        g_worker->writer = wal::WalWriter::open(o);
        g_worker->batcher = std::make_unique<pipeline::Batcher>(*g_worker->writer, batch_limits());
        if (fresh) {
          // A new WAL starts where the sources stand: nothing before is
          // decoded or read again, so nothing before it is missing.
          if (confirmed > 0) g_worker->batcher->cover(SourcePos{Stream::Slot, confirmed - 1, UINT32_MAX});
          if (g_worker->outbox_acked > 0)
            g_worker->batcher->cover(SourcePos{Stream::Outbox, static_cast<uint64_t>(g_worker->outbox_acked), 0});
          g_worker->batcher->flush();
        }
        g_worker->outbox_done = static_cast<int64>(g_worker->writer->mark(Stream::Outbox).major);
        g_worker->outbox_pending = false;
        g_worker->outbox_leftovers_deleted = false;
        return true;
      },
      g_worker->error, sizeof g_worker->error);
  if (!ok)
    ereport(ERROR, (errcode(ERRCODE_IO_ERROR), errmsg("bitdex_sync: cannot open the ops WAL in \"%s\": %s",
                                                      g_worker->wal_dir.c_str(), g_worker->error)));
  if (missing)
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FILE),
                    errmsg("bitdex_sync: the ops WAL of this database (WAL id %016llx) is missing from \"%s\"",
                           static_cast<unsigned long long>(g_worker->recorded_wal_id), g_worker->wal_dir.c_str()),
                    errdetail("It held batches the slot and the outbox acknowledged; a new WAL would not have them."),
                    errhint("Restore the directory, or start a new ops WAL with SELECT bitdex_sync.start_new_wal(); "
                            "and rebuild every consumer from a full load.")));
  if (!retired.empty())
    ereport(LOG, (errmsg("bitdex_sync: moved the ops WAL of an earlier installation of the extension in database "
                         "\"%s\" to \"%s\"",
                         g_worker->shared->dbname, retired.c_str())));
  if (fresh || g_worker->recorded_timeline != timeline) in_transaction(record_timeline);
  if (fresh) {
    in_transaction(record_wal_id);
    ereport(LOG, (errmsg("bitdex_sync: started ops WAL %016llx in \"%s\"",
                         static_cast<unsigned long long>(g_worker->writer->wal_id()), g_worker->wal_dir.c_str())));
  } else if (g_worker->writer->wal_id() != g_worker->recorded_wal_id) {
    const unsigned long long found = g_worker->writer->wal_id();
    close_writer();
    ereport(ERROR,
            (errcode(ERRCODE_DATA_CORRUPTED),
             errmsg("bitdex_sync: \"%s\" holds ops WAL %016llx, but this database writes ops WAL %016llx",
                    g_worker->wal_dir.c_str(), found, static_cast<unsigned long long>(g_worker->recorded_wal_id)),
             errhint("Put the right directory back, or start a new ops WAL with SELECT "
                     "bitdex_sync.start_new_wal(); and rebuild every consumer from a full load.")));
  } else {
    const SourcePos outbox = g_worker->writer->mark(Stream::Outbox), slot = g_worker->writer->mark(Stream::Slot);
    char wal_pos[64], acked_pos[64];
    if (static_cast<int64>(outbox.major) < g_worker->outbox_acked) {
      snprintf(wal_pos, sizeof wal_pos, "id %llu", static_cast<unsigned long long>(outbox.major));
      snprintf(acked_pos, sizeof acked_pos, "id " INT64_FORMAT " (rows deleted)", g_worker->outbox_acked);
      wal_behind("outbox", wal_pos, acked_pos);
    }
    if (confirmed > slot.major + 1) {
      snprintf(wal_pos, sizeof wal_pos, "%X/%X", BDX_LSN_ARGS(slot.major + 1));
      snprintf(acked_pos, sizeof acked_pos, "%X/%X (confirmed_flush of slot %s)", BDX_LSN_ARGS(confirmed),
               g_worker->slot_name.c_str());
      wal_behind("slot", wal_pos, acked_pos);
    }
  }
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->instance = g_worker->instance_id;
  set_durable_end(w);  // the torn tail is cut: all of it is durable
  SpinLockRelease(&w->mutex);
}

void close_writer() {
  load_stop();
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->instance = 0;
  SpinLockRelease(&w->mutex);
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
  if (!g_worker->batcher || !g_worker->batcher->pending()) return;
  const bool records = !g_worker->batcher->empty();
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
  // it (slot confirm, quarantine, outbox delete) is. Batches that only raise
  // a mark (idle cycles) do not count.
  if (g_fault_injection && records && unlink(kFaultFile) == 0) {
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

// True when the installation of the extension the worker serves is there:
// the first one it sees is adopted; one made since (DROP and CREATE
// EXTENSION within a naptime) is another installation, so the worker's is
// gone (the worker then lets go of its slot and WAL and adopts the new one).
bool installation_current(Oid ext) {
  if (!OidIsValid(ext)) return false;
  if (!OidIsValid(g_worker->extension_oid)) g_worker->extension_oid = ext;
  return ext == g_worker->extension_oid;
}

bool extension_installed() {
  use_caches_for_decoding(false);
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  bool installed = installation_current(get_extension_oid("bitdex_sync", true));
  CommitTransactionCommand();
  return installed;
}

// A record that could not be decoded (g_worker->error says why): with
// policy `skip` it is queued for the quarantine table and counted; with
// `stop` its source stops in front of it. Returns true when it stops.
bool note_poison(const char* source, const char* where, int policy, const PoisonRecord& r) {
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
  // Queued by C++ that may run out of memory: inside the wall, reported as
  // the worker's error when it does.
  if (!stop && !run_cpp(
                   [&] {
                     Quarantined q{source, where, {}, g_worker->error, r.entity_id, r.has_entity};
                     if (r.text) {
                       q.payload = r.text;
                     } else {  // bytea's hex form
                       static const char hex[] = "0123456789abcdef";
                       q.payload.reserve(2 + 2 * r.size);
                       q.payload = "\\x";
                       for (size_t i = 0; i < r.size; i++) {
                         q.payload.push_back(hex[r.bytes[i] >> 4]);
                         q.payload.push_back(hex[r.bytes[i] & 15]);
                       }
                     }
                     g_worker->quarantine.push_back(std::move(q));
                     return true;
                   },
                   g_worker->error, sizeof g_worker->error))
    ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
                    errmsg("bitdex_sync: cannot queue a bad capture record for the quarantine: %s", g_worker->error)));
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

// Runs fn in a transaction of its own, with SPI and a snapshot. The tables
// fn uses belong to the extension: it is locked against DROP EXTENSION for
// the transaction (a drop committing between two statements would make them
// vanish mid-pass); when it is gone, fn is skipped and extension_gone set.
Oid g_lock_first = InvalidOid;
bool g_lock_first_inheritors = false;

void in_transaction(void (*fn)()) {
  use_caches_for_decoding(false);
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  const Oid ext = get_extension_oid("bitdex_sync", true);
  if (OidIsValid(ext)) LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
  // A drop that committed while we waited for the lock: look again.
  const bool present = installation_current(ext) && get_extension_oid("bitdex_sync", true) == ext;
  g_worker->extension_gone = !present;
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  if (present && OidIsValid(g_lock_first)) {
    if (g_lock_first_inheritors)
      (void)find_all_inheritors(g_lock_first, AccessShareLock, nullptr);
    else
      LockRelationOid(g_lock_first, AccessShareLock);
  }
  PushActiveSnapshot(GetTransactionSnapshot());
  if (present) fn();
  SPI_finish();
  PopActiveSnapshot();
  CommitTransactionCommand();
}

namespace {

// Every naptime: capture triggers dropped or disabled where the guard did
// not run (or was overridden) are recorded as gaps, once; and which ops WAL
// this installation writes is read again.
void check_catalog() {
  record_capture_gaps("worker", true);
  read_instance();
  // An installation updated to 0.2.0 under a running worker: the WAL it has
  // open was written on this timeline (a worker never runs on a standby).
  if (g_worker->writer && g_worker->recorded_timeline == 0 && g_worker->recorded_wal_id != 0) record_timeline();
}

// True when CREATE or DROP EXTENSION committed since the last look.
bool take_look_now() {
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  const bool look = w->look_now;
  w->look_now = false;
  SpinLockRelease(&w->mutex);
  return look;
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

// The cycle: decode what is flushed, read the outbox when a commit wrote to
// it (or rows wait for their writers, or every naptime for rows written
// without the trigger), sleep until a commit wakes us. Whether the extension
// exists is looked up every naptime (and by each outbox pass), not every
// cycle: a busy database wakes the worker thousands of times a second.
// Returns true when the worker declines (automatic mode, no extension),
// false after SIGTERM.
bool run() {
  bool outbox_waiting = false;
  bool loading = false;    // a load is active: the cycle comes round again at once
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
    // The test suite's way to reach the last catch: a C++ exception
    // straight out of the loop.
    if (g_fault_injection && unlink(kThrowFile) == 0) throw std::runtime_error("fault injection: a C++ exception");
    const TimestampTz now = GetCurrentTimestamp();
    const bool look =
        take_look_now() || g_worker->extension_gone || TimestampDifferenceExceeds(looked, now, g_naptime_ms);
    if (look) {
      looked = now;
      g_worker->extension_gone = !extension_installed();
    }
    if (g_worker->extension_gone) {
      // What committed before the drop is still written: decoding goes on
      // to the end of the flushed WAL before the slot goes.
      if (g_worker->ctx && g_worker->writer) decode_available();
      if (g_worker->ctx || SearchNamedReplicationSlot(g_worker->slot_name.c_str(), true)) stop_decoding(true);
      close_writer();
      drop_origin();
      g_worker->run_id = 0;
      g_worker->extension_oid = InvalidOid;
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
        check_promoted();
        create_slot_if_missing();
        open_writer();
        if (g_worker->writer) set_state(WorkerState::Running);
      }
      if (g_worker->writer && !g_worker->slot_stopped) {
        start_decoding();
        pgstat_report_activity(STATE_RUNNING, "decoding into the ops WAL");
        decode_available();
      }
      if (g_worker->writer && (take_outbox_signal() || outbox_waiting || look)) outbox_waiting = read_outbox();
      loading = load_step(look) && !g_worker->extension_gone;
      if (look && !g_worker->extension_gone) {
        in_transaction(check_catalog);
        if (g_worker->writer && !g_worker->extension_gone) in_transaction(retain_segments);
        // bitdex_sync.start_new_wal() recorded that this WAL is done with:
        // the next cycle moves it aside and starts another.
        if (g_worker->writer && g_worker->recorded_wal_id != g_worker->writer->wal_id()) {
          ereport(LOG, (errmsg("bitdex_sync: ops WAL %016llx is no longer this database's; starting a new one",
                               static_cast<unsigned long long>(g_worker->writer->wal_id()))));
          stop_decoding(false);
          close_writer();
        }
      }
      pgstat_report_activity(STATE_IDLE, "waiting for commits");
    }
    // Rows waiting for their writers: look again soon (their commit does
    // not wake us). Asynchronous commits waiting for their WAL flush: look
    // again after wal_writer_delay, the pace PostgreSQL itself makes them
    // durable at (each cycle that finds them ends in an fdatasync).
    long nap = g_naptime_ms;
    if (poll_async_commits()) nap = std::min<long>(nap, std::max(1, WalWriterDelay));
    if (outbox_waiting) nap = std::min<long>(nap, std::max(1, g_batch_max_delay_ms));
    if (loading) nap = 1;
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

// run() with a last catch: a C++ exception that no inner wall caught (a
// bug, or bad_alloc where C++ is not expected to allocate) ends this run of
// the worker, which is started again (by the postmaster, or in automatic
// mode by the launcher), instead of std::terminate, which would make the
// postmaster reinitialize every backend. 1: declined, 0: stopped, -1: an
// exception (its message in g_worker->error), -2: a PostgreSQL error.
// An exception that left through an inner PG_TRY (a pg_guard, a stored
// query) left PostgreSQL's error stack pointing into that finished frame:
// both pointers are put back before anything is raised. A PostgreSQL error
// carried as PgError is raised again as itself (-2, in *pg_error).
int run_last_catch(ErrorData** pg_error) noexcept {
  sigjmp_buf* const stack = PG_exception_stack;
  ErrorContextCallback* const context = error_context_stack;
  const MemoryContext cxt = CurrentMemoryContext;
  int r = -1;
  try {
    return run() ? 1 : 0;
  } catch (const PgError& e) {
    *pg_error = e.data();
    r = -2;
  } catch (const std::exception& e) {
    strlcpy(g_worker->error, e.what(), sizeof g_worker->error);
  } catch (...) {
    strlcpy(g_worker->error, "unknown C++ exception", sizeof g_worker->error);
  }
  PG_exception_stack = stack;
  error_context_stack = context;
  MemoryContextSwitchTo(cxt);
  return r;
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

// No extension in an automatic-mode database: frees the slot (when taken),
// tells the launcher, and exits with 0 (not restarted).
[[noreturn]] void leave_without_extension(WorkerShared* w, const char* dbname) {
  ereport(LOG, (errmsg("bitdex_sync: no extension in database \"%s\", its worker exits", dbname)));
  forget_refusal(MyDatabaseId);  // it needs no worker
  decline_worker(w, MyDatabaseId);
  proc_exit(0);
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
  // With PostgreSQL's hint, which often names the setting to raise
  // ("Increase max_replication_slots and try again.").
  snprintf(w->last_error, sizeof w->last_error, "%s%s%s", e->message ? e->message : "unknown error",
           e->hint ? " HINT: " : "", e->hint ? e->hint : "");
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

}  // namespace

}  // namespace bitdex::pg::bgw

// Started by the launcher (automatic mode) with the database's OID as its
// argument, or by the postmaster for a database named in bitdex_sync.databases
// (its name in bgw_extra).
void bitdex_sync_worker_main(Datum arg) {
  using namespace bitdex::pg;
  using namespace bitdex::pg::bgw;
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
  const bool installed = OidIsValid(get_extension_oid("bitdex_sync", true));
  CommitTransactionCommand();
  // The launcher's probe at server start leaves before taking a worker slot,
  // which a database with the extension may need.
  if (!installed) {
    PG_TRY();
    { drop_leftover_slot_and_origin(); }
    PG_CATCH();
    {
      EmitErrorReport();
      FlushErrorState();
      AbortOutOfAnyTransaction();
    }
    PG_END_TRY();
  }
  if (automatic && !installed) leave_without_extension(nullptr, dbname);
  bool duplicate;
  WorkerShared* w = claim_worker(MyDatabaseId, dbname, &duplicate);
  if (!w && duplicate) {
    // Exit code 0: not restarted. Not declined either: the launcher watches
    // the worker that runs.
    ereport(LOG, (errmsg("bitdex_sync: a worker already runs for database \"%s\"", dbname)));
    proc_exit(0);
  }
  if (!w) {
    const bool holds_slot = database_holds_slot(MyDatabaseId);
    note_refusal(MyDatabaseId, dbname, Refusal::MaxDatabases);
    ereport(WARNING,
            (errmsg("bitdex_sync: no worker slot left for database \"%s\"", dbname),
             holds_slot ? errdetail("bitdex_sync.max_databases (%d) databases have a worker already; replication "
                                    "slot \"bitdex_sync_%u\" of this database is kept, and retains server WAL.",
                                    shared_state()->max_databases, MyDatabaseId)
                        : errdetail("bitdex_sync.max_databases (%d) databases have a worker already.",
                                    shared_state()->max_databases),
             errhint("Raise bitdex_sync.max_databases (takes a server restart); status() shows the database as "
                     "\"no worker\".")));
    decline_worker(nullptr, MyDatabaseId);
    proc_exit(0);
  }

  static char setup_error[256];
  if (!run_cpp(
          [&] {
            g_worker = new Worker();
            g_worker->shared = w;
            g_worker->automatic = automatic;
            g_worker->slot_name = "bitdex_sync_" + std::to_string(MyDatabaseId);
            // Keyed by OID, not name: ALTER DATABASE RENAME does not move it,
            // and a new database under a dropped one's name gets a directory
            // of its own.
            g_worker->wal_dir = std::string(g_wal_directory) + "/" + std::to_string(MyDatabaseId);
            return true;
          },
          setup_error, sizeof setup_error))
    ereport(FATAL, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: cannot start the worker: %s", setup_error)));
  before_shmem_exit(at_worker_exit, 0);
  CurrentResourceOwner = ResourceOwnerCreate(nullptr, "bitdex_sync worker");

  volatile bool declined = false;  // set in PG_TRY, read after it
  PG_TRY();
  {
    ErrorData* pg_error = nullptr;
    const int r = run_last_catch(&pg_error);
    if (r == -2) ReThrowError(pg_error);
    if (r < 0)
      ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                      errmsg("bitdex_sync: the worker stopped on an unexpected C++ exception: %s", g_worker->error),
                      errdetail("Nothing after the last durable batch was confirmed; the restarted worker goes on "
                                "from there.")));
    declined = r > 0;
  }
  PG_CATCH();
  {
    after_error();
    proc_exit(1);
  }
  PG_END_TRY();
  if (declined) leave_without_extension(w, dbname);
  // Exit code 1 even after a clean stop: pg_terminate_backend() of the
  // worker restarts it (a bgworker exiting with 0 is never restarted).
  proc_exit(1);
}
