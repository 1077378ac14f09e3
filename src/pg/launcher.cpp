// The launcher (automatic mode, bitdex_sync.databases empty): one background
// worker, connected to no database, that starts a capture worker in every
// database where the extension is created.
//
// At its start (server start, and after a crash restart, which ends every
// worker) it starts a worker in each database that accepts connections and
// is not a template; a worker finding no extension there declines and exits.
// Afterwards it starts one when CREATE EXTENSION (or start_worker()) commits,
// and starts a worker again a second after it ended for any other reason
// (error, pg_terminate_backend) while its database still exists. A worker
// that declined (extension dropped) is not started again. A launcher started
// again after it ended finds its predecessor's workers still running: it
// watches them (their end sets its latch) and starts none beside them.
#include <algorithm>

#include "bitdex_sync/pg/shared_state.hpp"
#include "bitdex_sync/pg/worker.hpp"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

namespace bitdex::pg {
namespace {

constexpr long kRestartDelayMs = 1000;  // after a worker ended with an error
constexpr long kNoSlotDelayMs = 10000;  // after max_worker_processes was full
constexpr long kIdleWaitMs = 10000;     // nothing pending

// A database the launcher keeps a worker in (or is about to). POD: the
// launcher's state lives in a palloc'd array, nothing here has a destructor.
struct Tracked {
  Oid db;
  BackgroundWorkerHandle* handle;  // nullptr while not started
  TimestampTz start_at;            // when to (re)start it
  bool requested;                  // CREATE EXTENSION committed since the last start
  bool declined;                   // the worker said its database needs none
  bool watched;                    // a worker this launcher did not start runs there
};

Tracked* g_tracked = nullptr;
int g_ntracked = 0, g_capacity = 0;

Tracked* find(Oid db) {
  for (int i = 0; i < g_ntracked; i++)
    if (g_tracked[i].db == db) return &g_tracked[i];
  return nullptr;
}

Tracked* track(Oid db, TimestampTz start_at) {
  if (Tracked* t = find(db)) return t;
  if (g_ntracked == g_capacity) {
    g_capacity = g_capacity ? g_capacity * 2 : 16;
    g_tracked = static_cast<Tracked*>(g_tracked ? repalloc(g_tracked, sizeof(Tracked) * g_capacity)
                                                : MemoryContextAlloc(TopMemoryContext, sizeof(Tracked) * g_capacity));
  }
  g_tracked[g_ntracked] = Tracked{db, nullptr, start_at, false, false, false};
  return &g_tracked[g_ntracked++];
}

void untrack(Tracked* t) {
  *t = g_tracked[--g_ntracked];
}

// Every database a worker may run in: connections allowed, not a template
// (a connected worker would make CREATE DATABASE from it fail).
void track_all_databases(TimestampTz now) {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  PushActiveSnapshot(GetTransactionSnapshot());
  Relation rel = table_open(DatabaseRelationId, AccessShareLock);
  TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
  for (HeapTuple tup; (tup = heap_getnext(scan, ForwardScanDirection)) != nullptr;) {
    Form_pg_database d = reinterpret_cast<Form_pg_database>(GETSTRUCT(tup));
    if (d->datallowconn && !d->datistemplate) track(d->oid, now);
  }
  table_endscan(scan);
  table_close(rel, AccessShareLock);
  PopActiveSnapshot();
  CommitTransactionCommand();
}

// The database's name when a worker may run in it now, else false.
bool database_usable(Oid db, char* name) {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  bool usable = false;
  if (HeapTuple tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(db))) {
    Form_pg_database d = reinterpret_cast<Form_pg_database>(GETSTRUCT(tup));
    usable = d->datallowconn && !d->datistemplate;
    strlcpy(name, NameStr(d->datname), NAMEDATALEN);
    ReleaseSysCache(tup);
  }
  CommitTransactionCommand();
  return usable;
}

// A dynamic worker for db, never restarted by the postmaster (the launcher
// decides), reporting its start and end to the launcher.
bool start_worker(Oid db, const char* name, BackgroundWorkerHandle** handle) {
  BackgroundWorker bgw;
  memset(&bgw, 0, sizeof bgw);
  bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
  bgw.bgw_restart_time = BGW_NEVER_RESTART;
  snprintf(bgw.bgw_library_name, BGW_MAXLEN, "bitdex_sync");
  snprintf(bgw.bgw_function_name, BGW_MAXLEN, "bitdex_sync_worker_main");
  snprintf(bgw.bgw_name, BGW_MAXLEN, "bitdex_sync worker for %s", name);
  snprintf(bgw.bgw_type, BGW_MAXLEN, "bitdex_sync worker");
  bgw.bgw_main_arg = ObjectIdGetDatum(db);  // bgw_extra stays empty: started by OID
  bgw.bgw_notify_pid = MyProcPid;
  return RegisterDynamicBackgroundWorker(&bgw, handle);
}

// Takes what backends and workers left in shared memory.
void take_messages(TimestampTz now) {
  SharedState* st = shared_state();
  Oid* requests = static_cast<Oid*>(palloc(sizeof(Oid) * st->max_databases));
  Oid* declined = static_cast<Oid*>(palloc(sizeof(Oid) * st->max_databases));
  Oid refused[kRefusals];
  int nrefused = 0;
  LWLockAcquire(st->lock, LW_EXCLUSIVE);
  const int nrequests = st->nrequests, ndeclined = st->ndeclined;
  memcpy(requests, st->requests(), sizeof(Oid) * nrequests);
  memcpy(declined, st->declined(), sizeof(Oid) * ndeclined);
  st->nrequests = st->ndeclined = 0;
  // A worker slot came free (DROP EXTENSION in its database): the databases
  // bitdex_sync.max_databases refused try again.
  if (st->slot_freed)
    for (const Refusal& r : st->refusals)
      if (r.reason == Refusal::MaxDatabases) refused[nrefused++] = r.db;
  st->slot_freed = false;
  LWLockRelease(st->lock);
  for (int i = 0; i < nrefused; i++) {
    Tracked* t = track(refused[i], now);
    t->requested = true;
    if (!t->handle) t->start_at = now;
  }
  for (int i = 0; i < nrequests; i++) {
    Tracked* t = track(requests[i], now);
    t->requested = true;
    if (!t->handle) t->start_at = now;
  }
  for (int i = 0; i < ndeclined; i++)
    if (Tracked* t = find(declined[i])) t->declined = true;
  pfree(requests);
  pfree(declined);
}

// Notices ended workers and starts the ones due; returns how long to sleep.
long tend(TimestampTz now) {
  long sleep_ms = kIdleWaitMs;
  for (int i = 0; i < g_ntracked;) {
    Tracked* t = &g_tracked[i];
    if (t->handle || t->watched) {
      if (t->handle) {
        pid_t pid;
        if (GetBackgroundWorkerPid(t->handle, &pid) != BGWH_STOPPED) {
          i++;
          continue;
        }
        pfree(t->handle);
        t->handle = nullptr;
      } else {
        // Its end sets our latch (at_worker_exit).
        if (live_worker_pid(t->db) != 0) {
          i++;
          continue;
        }
        t->watched = false;
      }
      // Declined with no CREATE EXTENSION since: done. Otherwise it ended
      // with an error or was terminated, or declined just before a CREATE
      // EXTENSION committed: start it again.
      if (t->declined && !t->requested) {
        untrack(t);
        continue;
      }
      t->start_at = t->requested ? now : TimestampTzPlusMilliseconds(now, kRestartDelayMs);
      t->declined = false;
    }
    if (now >= t->start_at) {
      char name[NAMEDATALEN];
      if (!database_usable(t->db, name)) {
        untrack(t);
        continue;
      }
      // A worker started by the previous launcher (this one was restarted
      // after it ended): watch it instead of starting a second one.
      if (live_worker_pid(t->db) != 0) {
        t->watched = true;
        i++;
        continue;
      }
      if (start_worker(t->db, name, &t->handle)) {
        t->requested = false;
      } else {
        t->handle = nullptr;
        t->start_at = TimestampTzPlusMilliseconds(now, kNoSlotDelayMs);
        note_refusal(t->db, name, Refusal::MaxWorkerProcesses);
        ereport(WARNING, (errmsg("bitdex_sync: cannot start a worker for database \"%s\"", name),
                          errdetail("All background worker slots are in use."),
                          errhint("Raise max_worker_processes: bitdex_sync needs one for its launcher and one per "
                                  "database with the extension.")));
      }
    }
    if (!t->handle && !t->watched) {
      long until = static_cast<long>((t->start_at - now) / 1000);
      sleep_ms = std::min(sleep_ms, std::max(until, 1L));
    }
    i++;
  }
  return sleep_ms;
}

void at_launcher_exit(int, Datum) {
  SharedState* st = shared_state();
  LWLockAcquire(st->lock, LW_EXCLUSIVE);
  if (st->launcher_latch == MyLatch) st->launcher_latch = nullptr;
  LWLockRelease(st->lock);
}

}  // namespace
}  // namespace bitdex::pg

// No C++ objects live in these frames: a PostgreSQL error ends the process
// (restarted after a second by the postmaster) without unwinding anything.
void bitdex_sync_launcher_main(Datum) {
  using namespace bitdex::pg;
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
  SharedState* st = shared_state();
  LWLockAcquire(st->lock, LW_EXCLUSIVE);
  st->launcher_latch = MyLatch;
  LWLockRelease(st->lock);
  before_shmem_exit(at_launcher_exit, 0);
  pgstat_report_activity(STATE_RUNNING, "starting workers in the databases");
  track_all_databases(GetCurrentTimestamp());
  while (!ShutdownRequestPending) {
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    TimestampTz now = GetCurrentTimestamp();
    take_messages(now);
    long sleep_ms = tend(now);
    pgstat_report_activity(STATE_IDLE, "waiting for CREATE EXTENSION bitdex_sync or a worker to end");
    // Woken by a request, a declining worker, or the postmaster reporting a
    // worker's start or end (bgw_notify_pid).
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
  // Exit code 1: after pg_terminate_backend() the postmaster starts it again
  // (it never restarts a background worker that exits with 0).
  proc_exit(1);
}
