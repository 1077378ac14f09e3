// Shared memory: the workers' public state, the launcher's queues, the
// capture key; worker slots, refusals and worker registration.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/settings.hpp"
#include "bitdex_sync/pg/shared_state.hpp"
#include "bitdex_sync/pg/wall.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "postmaster/bgworker.h"
#include "replication/slot.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
}

namespace bitdex::pg {

const double kLatencyBoundsMs[kLatencyBuckets - 1] = {1, 2, 5, 10, 20, 50, 100, 250, 1000, 5000, 30000};

namespace {

SharedState* g_shared = nullptr;
shmem_request_hook_type g_prev_request = nullptr;
shmem_startup_hook_type g_prev_startup = nullptr;

void request_shared_memory() {
  if (g_prev_request) g_prev_request();
  RequestAddinShmemSpace(MAXALIGN(SharedState::size(g_max_databases)));
  RequestNamedLWLockTranche("bitdex_sync", 1);
}

// Reads the capture key from its file in the data directory, making it (32
// random bytes, mode 0600, written durably) at the first start. Runs in the
// postmaster when it sets up shared memory, also after a crash restart: the
// key outlives restarts, so messages written before one still authenticate.
void load_capture_key(uint8 (&key)[32]) {
  int fd = OpenTransientFile(kCaptureKeyFile, O_RDONLY | PG_BINARY);
  if (fd < 0 && errno == ENOENT) {
    if (!pg_strong_random(key, sizeof key))
      ereport(FATAL, (errmsg("bitdex_sync: could not generate a random capture key")));
    char tmp[MAXPGPATH];
    snprintf(tmp, sizeof tmp, "%s.tmp", kCaptureKeyFile);
    int out = OpenTransientFilePerm(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY, S_IRUSR | S_IWUSR);
    if (out < 0 || write(out, key, sizeof key) != sizeof key || pg_fsync(out) != 0)
      ereport(FATAL, (errcode_for_file_access(), errmsg("bitdex_sync: could not write \"%s\": %m", tmp)));
    CloseTransientFile(out);
    durable_rename(tmp, kCaptureKeyFile, FATAL);
    ereport(LOG, (errmsg("bitdex_sync: created the capture key \"%s\"", kCaptureKeyFile)));
    return;
  }
  if (fd < 0)
    ereport(FATAL, (errcode_for_file_access(), errmsg("bitdex_sync: could not open \"%s\": %m", kCaptureKeyFile)));
  char extra;
  if (read(fd, key, sizeof key) != sizeof key || read(fd, &extra, 1) != 0)
    ereport(FATAL, (errcode(ERRCODE_DATA_CORRUPTED),
                    errmsg("bitdex_sync: \"%s\" is not a capture key of %zu bytes", kCaptureKeyFile, sizeof key),
                    errhint("Restore the file from a backup of this data directory. Removing it makes a new key; "
                            "capture messages written under the old one and not yet decoded are then rejected.")));
  CloseTransientFile(fd);
}

void attach_shared_memory() {
  if (g_prev_startup) g_prev_startup();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found = false;
  const size_t size = SharedState::size(g_max_databases);
  g_shared = static_cast<SharedState*>(ShmemInitStruct("bitdex_sync", size, &found));
  if (!found) {
    memset(g_shared, 0, size);
    g_shared->max_databases = g_max_databases;
    for (WorkerShared& w : g_shared->workers()) {
      SpinLockInit(&w.mutex);
      ConditionVariableInit(&w.appended);
    }
    g_shared->lock = &GetNamedLWLockTranche("bitdex_sync")->lock;
    load_capture_key(g_shared->capture_key);
  }
  LWLockRelease(AddinShmemInitLock);
}

// The database names of bitdex_sync.databases, trimmed, without empties.
std::vector<std::string> database_names() {
  std::vector<std::string> out;
  std::string cur;
  for (const char* p = g_databases ? g_databases : "";; p++) {
    if (*p == ',' || *p == '\0') {
      size_t b = cur.find_first_not_of(" \t"), e = cur.find_last_not_of(" \t");
      if (b != std::string::npos) out.push_back(cur.substr(b, e - b + 1));
      cur.clear();
      if (*p == '\0') break;
    } else {
      cur.push_back(*p);
    }
  }
  return out;
}

}  // namespace

const char* worker_state_name(WorkerState s) {
  switch (s) {
    case WorkerState::Stopped: return "stopped";
    case WorkerState::Starting: return "starting";
    case WorkerState::WaitingForExtension: return "waiting for extension";
    case WorkerState::Running: return "running";
    case WorkerState::Backoff: return "error backoff";
  }
  return "unknown";
}

SharedState* shared_state() {
  return g_shared;
}

void install_shared_memory_hooks() {
  g_prev_request = shmem_request_hook;
  shmem_request_hook = request_shared_memory;
  g_prev_startup = shmem_startup_hook;
  shmem_startup_hook = attach_shared_memory;
}

WorkerShared* worker_for_database(Oid dboid) {
  if (!g_shared || !OidIsValid(dboid)) return nullptr;
  for (WorkerShared& w : g_shared->workers()) {
    SpinLockAcquire(&w.mutex);
    bool match = w.dboid == dboid;
    SpinLockRelease(&w.mutex);
    if (match) return &w;
  }
  return nullptr;
}

int live_worker_pid(Oid dboid) {
  WorkerShared* w = worker_for_database(dboid);
  if (!w) return 0;
  SpinLockAcquire(&w->mutex);
  const int pid = w->dboid == dboid ? w->pid : 0;
  SpinLockRelease(&w->mutex);
  return pid;
}

void wake_launcher() {
  LWLockAcquire(g_shared->lock, LW_SHARED);
  Latch* launcher = g_shared->launcher_latch;
  LWLockRelease(g_shared->lock);
  if (launcher) SetLatch(launcher);
}

namespace {

void forget_refusal_locked(Oid db) {
  for (Refusal& r : g_shared->refusals)
    if (r.db == db) r = Refusal{};
}

// The databases other than `db` that hold a replication slot of bitdex_sync
// and have no worker slot: the worker slots they will need.
int slots_waiting_for_workers(Oid db) {
  int n = 0;
  LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
  for (int i = 0; i < max_replication_slots; i++) {
    ReplicationSlot* s = &ReplicationSlotCtl->replication_slots[i];
    if (!s->in_use || s->data.database == db || strncmp(NameStr(s->data.name), "bitdex_sync_", 12) != 0) continue;
    bool has_worker = false;
    for (WorkerShared& w : g_shared->workers()) has_worker = has_worker || w.dboid == s->data.database;
    if (!has_worker) n++;
  }
  LWLockRelease(ReplicationSlotControlLock);
  return n;
}

}  // namespace

bool database_holds_slot(Oid db) {
  char name[NAMEDATALEN];
  snprintf(name, sizeof name, "bitdex_sync_%u", db);
  bool found = false;
  LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
  for (int i = 0; i < max_replication_slots && !found; i++) {
    ReplicationSlot* s = &ReplicationSlotCtl->replication_slots[i];
    found = s->in_use && strcmp(NameStr(s->data.name), name) == 0;
  }
  LWLockRelease(ReplicationSlotControlLock);
  return found;
}

void note_refusal(Oid db, const char* dbname, Refusal::Reason reason) {
  LWLockAcquire(g_shared->lock, LW_EXCLUSIVE);
  Refusal* place = nullptr;
  for (Refusal& r : g_shared->refusals)
    if (r.db == db) place = &r;
  for (Refusal& r : g_shared->refusals)
    if (!place && !OidIsValid(r.db)) place = &r;
  if (!place) {  // all taken: the oldest goes
    place = &g_shared->refusals[0];
    for (Refusal& r : g_shared->refusals)
      if (r.at < place->at) place = &r;
  }
  place->db = db;
  strlcpy(place->dbname, dbname, sizeof place->dbname);
  place->reason = reason;
  place->at = GetCurrentTimestamp();
  LWLockRelease(g_shared->lock);
}

void forget_refusal(Oid db) {
  LWLockAcquire(g_shared->lock, LW_EXCLUSIVE);
  forget_refusal_locked(db);
  LWLockRelease(g_shared->lock);
}

Refusal::Reason refusal_of(Oid db) {
  if (!g_shared) return Refusal::None;
  Refusal::Reason out = Refusal::None;
  LWLockAcquire(g_shared->lock, LW_SHARED);
  for (const Refusal& r : g_shared->refusals)
    if (r.db == db) out = r.reason;
  LWLockRelease(g_shared->lock);
  return out;
}

// A free worker slot goes to a database only if enough stay free for the
// databases that hold a bitdex_sync replication slot and have no worker yet
// (they come first: a database refused a worker never holds an inactive
// slot, unless more databases hold slots than bitdex_sync.max_databases).
WorkerShared* claim_worker(Oid dboid, const char* dbname, bool* duplicate) {
  *duplicate = false;
  const bool holds_slot = database_holds_slot(dboid);
  LWLockAcquire(g_shared->lock, LW_EXCLUSIVE);
  WorkerShared *mine = nullptr, *free = nullptr;
  int nfree = 0;
  for (WorkerShared& w : g_shared->workers()) {
    if (w.dboid == dboid) mine = &w;
    if (!OidIsValid(w.dboid)) {
      nfree++;
      if (!free) free = &w;
    }
  }
  if (!mine && free && !holds_slot && nfree <= slots_waiting_for_workers(dboid)) free = nullptr;
  WorkerShared* w = mine ? mine : free;
  if (mine && mine->pid != 0 && mine->pid != MyProcPid) {
    *duplicate = true;
    w = nullptr;
  }
  if (w) {
    SpinLockAcquire(&w->mutex);
    if (!mine) {
      // A fresh slot: nothing of its previous database's counters (the
      // mutex, the condition variable and its count stay: readers may wait).
      const size_t from = offsetof(WorkerShared, dbname);
      memset(reinterpret_cast<char*>(w) + from, 0, sizeof *w - from);
    }
    w->dboid = dboid;
    strlcpy(w->dbname, dbname, sizeof w->dbname);
    w->pid = MyProcPid;
    w->latch = MyLatch;
    w->state = WorkerState::Starting;
    w->started_at = GetCurrentTimestamp();
    SpinLockRelease(&w->mutex);
    forget_refusal_locked(dboid);
  }
  LWLockRelease(g_shared->lock);
  return w;
}

void decline_worker(WorkerShared* w, Oid dboid) {
  LWLockAcquire(g_shared->lock, LW_EXCLUSIVE);
  if (w) {
    SpinLockAcquire(&w->mutex);
    if (w->pid == MyProcPid) {
      g_shared->slot_freed = true;
      w->dboid = InvalidOid;
      w->dbname[0] = '\0';
      w->pid = 0;
      w->latch = nullptr;
      w->state = WorkerState::Stopped;
    }
    SpinLockRelease(&w->mutex);
  }
  Latch* launcher = g_shared->launcher_latch;
  if (launcher && g_shared->ndeclined < g_shared->max_databases) g_shared->declined()[g_shared->ndeclined++] = dboid;
  LWLockRelease(g_shared->lock);
  if (launcher) SetLatch(launcher);
}

// Called from _PG_init in the postmaster. Automatic mode: the launcher, which
// starts the per-database workers itself. Otherwise one static worker per
// named database, restarted a second after it exits with an error.
void register_workers() {
  BackgroundWorker bgw;
  memset(&bgw, 0, sizeof bgw);
  bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
  bgw.bgw_restart_time = 1;
  snprintf(bgw.bgw_library_name, BGW_MAXLEN, "bitdex_sync");
  // In static storage, filled inside the wall: the ereport(ERROR)s below
  // longjmp past this frame.
  static std::vector<std::string>* names = nullptr;
  static char error[256];
  if (!run_cpp(
          [] {
            if (!names) names = new std::vector<std::string>();
            *names = database_names();
            return true;
          },
          error, sizeof error))
    ereport(ERROR,
            (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: cannot read bitdex_sync.databases: %s", error)));
  if (names->empty()) {
    snprintf(bgw.bgw_function_name, BGW_MAXLEN, "bitdex_sync_launcher_main");
    snprintf(bgw.bgw_name, BGW_MAXLEN, "bitdex_sync launcher");
    snprintf(bgw.bgw_type, BGW_MAXLEN, "bitdex_sync launcher");
    RegisterBackgroundWorker(&bgw);
    return;
  }
  if (names->size() > size_t(g_max_databases))
    ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                    errmsg("bitdex_sync.databases names %zu databases, more than bitdex_sync.max_databases (%d)",
                           names->size(), g_max_databases),
                    errhint("Raise bitdex_sync.max_databases.")));
  for (size_t i = 0; i < names->size(); i++) {
    const std::string& name = (*names)[i];
    if (name.size() >= NAMEDATALEN || name.size() >= BGW_EXTRALEN)
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("database name \"%s\" in bitdex_sync.databases is too long", name.c_str())));
    snprintf(bgw.bgw_function_name, BGW_MAXLEN, "bitdex_sync_worker_main");
    snprintf(bgw.bgw_name, BGW_MAXLEN, "bitdex_sync worker for %s", name.c_str());
    snprintf(bgw.bgw_type, BGW_MAXLEN, "bitdex_sync worker");
    strlcpy(bgw.bgw_extra, name.c_str(), BGW_EXTRALEN);
    RegisterBackgroundWorker(&bgw);
  }
}

}  // namespace bitdex::pg
