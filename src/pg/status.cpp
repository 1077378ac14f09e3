// What the workers report: bitdex_sync.worker_state() (one row per
// configured database; status() and metrics() are SQL over it) and
// bitdex_sync.wait_for_sync(timeout).
#include <initializer_list>

#include "bitdex_sync/pg/compat.hpp"
#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/settings.hpp"
#include "bitdex_sync/pg/shared_state.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "storage/fd.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "replication/message.h"
#include "utils/array.h"
#include "utils/pg_lsn.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(bitdex_sync_worker_state);
Datum bitdex_sync_worker_state(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_wait_for_sync);
Datum bitdex_sync_wait_for_sync(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_start_worker);
Datum bitdex_sync_start_worker(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_wake_worker);
Datum bitdex_sync_wake_worker(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_wal_directory);
Datum bitdex_sync_wal_directory(PG_FUNCTION_ARGS);
}

namespace {

constexpr int kColumns = 28;  // worker_state()'s OUT columns

const char* refusal_text(bitdex::pg::Refusal::Reason r) {
  return r == bitdex::pg::Refusal::MaxDatabases
             ? "no worker: bitdex_sync.max_databases databases have one already; raise bitdex_sync.max_databases "
               "(takes a restart)"
             : "no worker: every background worker slot is in use; raise max_worker_processes (takes a restart): "
               "bitdex_sync needs one for its launcher and one per database with the extension";
}

}  // namespace

// One row per worker slot in use (a database with a worker), from a copy
// taken under its spinlock. No C++ objects here: every call may ereport.
Datum bitdex_sync_worker_state(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  InitMaterializedSRF(fcinfo, 0);
  SharedState* st = shared_state();
  if (!st) PG_RETURN_VOID();
  for (WorkerShared& w : st->workers()) {
    WorkerShared copy;
    SpinLockAcquire(&w.mutex);
    memcpy(&copy, &w, sizeof copy);
    SpinLockRelease(&w.mutex);
    if (!OidIsValid(copy.dboid)) continue;
    Datum v[kColumns];
    bool null[kColumns];
    memset(null, 0, sizeof null);
    int c = 0;
    v[c++] = CStringGetTextDatum(copy.dbname);
    v[c] = Int32GetDatum(copy.pid);
    null[c++] = copy.pid == 0;
    v[c++] = CStringGetTextDatum(worker_state_name(copy.state));
    v[c] = LSNGetDatum(copy.durable_lsn);
    null[c++] = copy.durable_lsn == 0;
    for (uint64 n : {copy.ops_captured, copy.ops_written, copy.records_written, copy.records_skipped, copy.batches,
                     copy.wal_bytes, copy.poison, copy.errors_total})
      v[c++] = Int64GetDatum(static_cast<int64>(n));
    v[c] = TimestampTzGetDatum(copy.started_at);
    null[c++] = copy.started_at == 0;
    v[c] = TimestampTzGetDatum(copy.last_batch_at);
    null[c++] = copy.last_batch_at == 0;
    v[c] = CStringGetTextDatum(copy.last_error);
    null[c++] = copy.last_error[0] == '\0';
    v[c] = TimestampTzGetDatum(copy.last_error_at);
    null[c++] = copy.last_error_at == 0;
    v[c++] = Int32GetDatum(copy.failures);
    Datum buckets[kLatencyBuckets];
    for (int b = 0; b < kLatencyBuckets; b++) buckets[b] = Int64GetDatum(static_cast<int64>(copy.latency_buckets[b]));
    v[c++] = PointerGetDatum(construct_array(buckets, kLatencyBuckets, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    v[c++] = Float8GetDatum(copy.latency_sum_ms);
    v[c++] = Int64GetDatum(static_cast<int64>(copy.latency_count));
    v[c++] = Int64GetDatum(copy.outbox_done);
    v[c++] = Int64GetDatum(static_cast<int64>(copy.outbox_ops));
    v[c++] = BoolGetDatum(copy.slot_stopped);
    v[c++] = BoolGetDatum(copy.outbox_stopped);
    v[c++] = Int64GetDatum(static_cast<int64>(copy.rejected_messages));
    for (uint64 n : {copy.load_rows, copy.load_chunks, copy.load_cuts}) v[c++] = Int64GetDatum(static_cast<int64>(n));
    if (c != kColumns || rsinfo->setDesc->natts != kColumns)
      elog(ERROR, "bitdex_sync.worker_state: built %d columns, the function returns %d", c, rsinfo->setDesc->natts);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, null);
  }
  // Databases a limit refused a worker (and that still exist): state "no
  // worker", the setting to raise as the last error.
  Refusal refusals[kRefusals];
  LWLockAcquire(st->lock, LW_SHARED);
  memcpy(refusals, st->refusals, sizeof refusals);
  LWLockRelease(st->lock);
  for (const Refusal& r : refusals) {
    if (!OidIsValid(r.db) || !SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(r.db))) continue;
    Datum v[kColumns];
    bool null[kColumns];
    for (int i = 0; i < kColumns; i++) null[i] = true;
    v[0] = CStringGetTextDatum(r.dbname);
    null[0] = false;
    v[2] = CStringGetTextDatum("no worker");
    null[2] = false;
    v[14] = CStringGetTextDatum(refusal_text(r.reason));  // last_error
    null[14] = false;
    v[15] = TimestampTzGetDatum(r.at);  // last_error_at
    null[15] = false;
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, null);
  }
  PG_RETURN_VOID();
}

// Returns once every transaction committed before the call is durable in
// the ops WAL. A non-transactional logical message marks "now" in the WAL:
// the worker has passed it once its decoded position is beyond the message.
Datum bitdex_sync_wait_for_sync(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  Interval* timeout = PG_GETARG_INTERVAL_P(0);
  WorkerShared* w = worker_for_database(MyDatabaseId);
  // The outbox: every row visible now (ids of rows committed later by
  // transactions running now are written after them, never before).
  // Read as the extension's owner: EXECUTE on this function is all a caller needs.
  int64 target_id = 0;
  const uint64 instance = extension_instance();
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  UserContext was = enter_owner();
  // In the transaction that created the extension no worker can have
  // started for it (the launcher starts it at that commit): waiting would
  // only time out.
  bool isnull = true;
  if (SPI_execute("SELECT xmin FROM bitdex_sync.instance", true, 1) == SPI_OK_SELECT && SPI_processed == 1) {
    const Datum xmin = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    if (!isnull && TransactionIdIsCurrentTransactionId(DatumGetTransactionId(xmin)))
      ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                      errmsg("bitdex_sync.wait_for_sync cannot wait in the transaction that created the extension"),
                      errhint("Commit CREATE EXTENSION first: the database's worker starts at that commit.")));
  }
  if (!w && refusal_of(MyDatabaseId) != Refusal::None)
    ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                    errmsg("no bitdex_sync worker runs for database \"%s\"", get_database_name(MyDatabaseId)),
                    errdetail("%s.", refusal_text(refusal_of(MyDatabaseId)))));
  if (!w && !automatic_mode())
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("no bitdex_sync worker runs for database \"%s\"", get_database_name(MyDatabaseId)),
                    errhint("Add the database to bitdex_sync.databases and restart the server, or empty the "
                            "setting so that every database with the extension gets a worker.")));
  if (SPI_execute("SELECT max(id) FROM bitdex_sync.ops", true, 1) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not read the outbox");
  leave_owner(was);
  bool no_rows;
  Datum max_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &no_rows);
  if (!no_rows) target_id = DatumGetInt64(max_id);
  SPI_finish();
  XLogRecPtr target = bitdex::pg::compat::log_message("bitdex_sync_sync", "", 0, false);
  XLogFlush(target);
  TimestampTz start = GetCurrentTimestamp();
  int64 limit_ms = static_cast<int64>(timeout->time / 1000) +
                   (static_cast<int64>(timeout->day) + static_cast<int64>(timeout->month) * 30) * 86400000LL;
  for (;;) {
    // Automatic mode: the worker may still be starting (CREATE EXTENSION
    // just committed).
    if (!w) w = worker_for_database(MyDatabaseId);
    XLogRecPtr durable = 0;
    int64 outbox_done = 0;
    Latch* latch = nullptr;
    bool current = false;  // the worker writes this installation's ops WAL
    if (w) {
      SpinLockAcquire(&w->mutex);
      current = w->instance == instance;
      durable = w->durable_lsn;
      outbox_done = w->outbox_done;
      latch = w->latch;
      // Rows written without the trigger (which tells the worker) are read
      // now rather than at the next naptime.
      if (outbox_done < target_id) w->outbox_rows = true;
      SpinLockRelease(&w->mutex);
    }
    if (w && current && durable >= target && outbox_done >= target_id) PG_RETURN_BOOL(true);
    if (latch) SetLatch(latch);
    long elapsed_ms = static_cast<long>((GetCurrentTimestamp() - start) / 1000);
    if (elapsed_ms >= limit_ms && !w)
      ereport(ERROR, (errcode(ERRCODE_QUERY_CANCELED),
                      errmsg("bitdex_sync.wait_for_sync timed out after %ld ms: no worker has started for database "
                             "\"%s\"",
                             elapsed_ms, get_database_name(MyDatabaseId)),
                      errhint("The launcher starts one when CREATE EXTENSION commits; after CREATE DATABASE from a "
                              "template with the extension, run SELECT bitdex_sync.start_worker(). See "
                              "bitdex_sync.status() and the server log.")));
    if (elapsed_ms >= limit_ms)
      ereport(ERROR,
              (errcode(ERRCODE_QUERY_CANCELED), errmsg("bitdex_sync.wait_for_sync timed out after %ld ms", elapsed_ms),
               errdetail("The worker has made durable the slot up to %X/%X and the outbox up to id " INT64_FORMAT
                         "; the call waited for %X/%X and id " INT64_FORMAT ".",
                         BDX_LSN_ARGS(durable), outbox_done, BDX_LSN_ARGS(target), target_id),
               errhint("See bitdex_sync.status() for the worker's state and last error.")));
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 5, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
  }
}

// Asks the launcher to start this database's worker when the transaction
// commits (the extension script calls it; run it by hand after CREATE
// DATABASE from a template that has the extension). False when
// bitdex_sync.databases names the databases: their workers start with the
// server.
Datum bitdex_sync_start_worker(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  extension_change_at_commit();
  // An ops WAL already in this database's directory belongs to an earlier
  // installation (this one has none yet): the worker moves it aside.
  if (creating_extension) {
    char* dir = TextDatumGetCString(DirectFunctionCall1(bitdex_sync_wal_directory, (Datum)0));
    bool segments = false;
    if (DIR* d = AllocateDir(dir)) {
      struct dirent* de;
      while (!segments && (de = ReadDirExtended(d, dir, LOG)) != nullptr) {
        const size_t n = strlen(de->d_name);
        segments = n > 4 && strcmp(de->d_name + n - 4, ".seg") == 0;
      }
      FreeDir(d);
    }
    // A WARNING: an extension script shows nothing less to the client.
    if (segments)
      ereport(WARNING, (errmsg("an ops WAL of an earlier installation of bitdex_sync is in \"%s\"", dir),
                        errdetail("The worker moves it to \"%s.retired-<its WAL id>\" and starts a new ops WAL; "
                                  "consumers of the old one must be rebuilt.",
                                  dir)));
  }
  if (!automatic_mode()) PG_RETURN_BOOL(false);
  start_worker_at_commit();
  PG_RETURN_BOOL(true);
}

// bitdex_sync.wake_worker(): at commit, the database's worker looks at the
// catalog and at bitdex_sync.loads at once (load() and start_new_wal() call it).
Datum bitdex_sync_wake_worker(PG_FUNCTION_ARGS) {
  bitdex::pg::extension_change_at_commit();
  PG_RETURN_VOID();
}

// bitdex_sync.wal_directory() -> text: where this database's ops WAL lives,
// <bitdex_sync.wal_directory>/<database OID>, as an absolute path.
Datum bitdex_sync_wal_directory(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  const char* root = g_wal_directory ? g_wal_directory : "bitdex_sync";
  char* path =
      root[0] == '/' ? psprintf("%s/%u", root, MyDatabaseId) : psprintf("%s/%s/%u", DataDir, root, MyDatabaseId);
  PG_RETURN_TEXT_P(cstring_to_text(path));
}
