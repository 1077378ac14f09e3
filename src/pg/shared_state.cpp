// Settings, shared memory, worker registration and slots, and what happens
// at commit (waking the worker, asking the launcher for one).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/worker.hpp"

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

char* g_databases = nullptr;
char* g_wal_directory = nullptr;
int g_wal_max_size_mb = 0;
int g_wal_max_age_s = 0;
int g_wal_segment_size_kb = 64 * 1024;
int g_on_poison_slot = kPoisonSkip;
int g_on_poison_outbox = kPoisonSkip;
int g_batch_max_ops = 100000;
int g_batch_max_delay_ms = 10;
int g_batch_max_memory_kb = 64 * 1024;
int g_naptime_ms = 1000;
int g_load_chunk_rows = 20000;
int g_max_databases = 16;
bool g_fault_injection = false;

const double kLatencyBoundsMs[kLatencyBuckets - 1] = {1, 2, 5, 10, 20, 50, 100, 250, 1000, 5000, 30000};

namespace {

SharedState* g_shared = nullptr;
shmem_request_hook_type g_prev_request = nullptr;
shmem_startup_hook_type g_prev_startup = nullptr;
bool g_captured = false;          // this transaction captured something
bool g_captured_outbox = false;   // ... into the outbox
bool g_start_worker = false;      // this transaction asked for its database's worker
bool g_extension_change = false;  // this transaction creates or drops the extension
bool g_commit_prepared = false;   // this transaction runs COMMIT PREPARED
ProcessUtility_hook_type g_prev_utility = nullptr;

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

const struct config_enum_entry kPoisonPolicies[] = {
    {"skip", kPoisonSkip, false}, {"stop", kPoisonStop, false}, {nullptr, 0, false}};

void define_settings() {
  DefineCustomStringVariable(
      "bitdex_sync.databases", "Databases whose captured ops a worker writes to the ops WAL.",
      "Empty (the default): a launcher starts a worker in every database where the extension is created. "
      "Otherwise a comma-separated list: one worker per named database, started with the server.",
      &g_databases, "", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomStringVariable("bitdex_sync.wal_directory", "Root directory of the ops WALs.",
                             "Relative paths are under the data directory; each database writes to "
                             "<wal_directory>/<database name>.",
                             &g_wal_directory, "bitdex_sync", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "bitdex_sync.wal_segment_size", "Size at which an ops WAL segment is closed and a new one begun.", nullptr,
      &g_wal_segment_size_kb, 64 * 1024, 64, 1024 * 1024, PGC_POSTMASTER, GUC_UNIT_KB, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "bitdex_sync.wal_max_size", "Size the ops WAL directory is kept within, lagging consumers or not.",
      "Segments every consumer has passed are removed anyway; past this size the oldest go even when a consumer "
      "still needs them, and that consumer is marked lagging (it must be rebuilt). 0: no bound.",
      &g_wal_max_size_mb, 0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MB, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "bitdex_sync.wal_max_age", "Age after which an ops WAL segment is removed, lagging consumers or not.",
      "A segment last written longer ago is removed even when a consumer still needs it, and that consumer is "
      "marked lagging. The newest segment always stays. 0: no bound.",
      &g_wal_max_age_s, 0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.batch_max_ops", "Ops after which a batch is written.", nullptr, &g_batch_max_ops,
                          100000, 1, INT_MAX, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.batch_max_delay", "Longest time a batch stays open while decoding.", nullptr,
                          &g_batch_max_delay_ms, 10, 0, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
                          nullptr);
  DefineCustomIntVariable("bitdex_sync.batch_max_memory", "Memory of captured records after which a batch is written.",
                          "A transaction larger than this is written in several batches, in order.",
                          &g_batch_max_memory_kb, 64 * 1024, 64, MAX_KILOBYTES, PGC_SIGHUP, GUC_UNIT_KB, nullptr,
                          nullptr, nullptr);
  DefineCustomEnumVariable("bitdex_sync.on_poison_slot",
                           "What a capture message that cannot be decoded does: skip (quarantine it) or stop.",
                           "stop: decoding halts in front of it (nothing after it is written) until a reload.",
                           &g_on_poison_slot, kPoisonSkip, kPoisonPolicies, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomEnumVariable("bitdex_sync.on_poison_outbox",
                           "What an outbox row that cannot be decoded does: skip (quarantine it) or stop.",
                           "stop: the outbox is not read past it until a reload.", &g_on_poison_outbox, kPoisonSkip,
                           kPoisonPolicies, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.naptime", "How long an idle worker sleeps when no commit wakes it.",
                          "Idle wake-ups confirm the slot (so it does not pin WAL) and notice a created or "
                          "dropped extension.",
                          &g_naptime_ms, 1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.load_chunk_rows", "Rows a load reads per chunk (one snapshot each).",
                          "A chunk's ops are written as one batch; a larger chunk costs fewer transactions and more "
                          "memory, and is more often cut by a concurrent commit.",
                          &g_load_chunk_rows, 20000, 1, 10000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.max_databases", "How many databases can have a worker at the same time.",
                          "Each takes a slot of shared memory (about 1 kB) and a background worker process.",
                          &g_max_databases, 16, 1, 1024, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "bitdex_sync.allow_capture_loss", "Lets DDL drop or disable capture triggers, recording the gap.",
      "Off: a command that would leave a capture trigger apply_config created dropped or not firing always is "
      "refused. On (superusers only): it goes through and bitdex_sync.capture_gaps records the gap.",
      &g_allow_capture_loss, false, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("bitdex_sync.fault_injection", "For tests: crash points the test suite can arm.",
                           "When on, a worker that finds the file bitdex_sync.kill_after_batch in the data directory "
                           "removes it and kills itself right after its next batch is durable.",
                           &g_fault_injection, false, PGC_SIGHUP, GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr,
                           nullptr);
}

SharedState* shared_state() {
  return g_shared;
}

const bitdex::SipHash128* capture_mac() noexcept {
  static bitdex::SipHash128* mac = nullptr;
  if (!mac && g_shared) {
    try {
      static_assert(sizeof g_shared->capture_key >= bitdex::kSipKeySize);
      mac = new bitdex::SipHash128(g_shared->capture_key);  // its first 16 bytes
    } catch (...) {
      return nullptr;
    }
  }
  return mac;
}

void install_shared_memory_hooks() {
  g_prev_request = shmem_request_hook;
  shmem_request_hook = request_shared_memory;
  g_prev_startup = shmem_startup_hook;
  shmem_startup_hook = attach_shared_memory;
}

bool automatic_mode() {
  return database_names().empty();
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

void start_worker_at_commit() {
  g_start_worker = true;
}

void extension_change_at_commit() {
  g_extension_change = true;
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
  std::vector<std::string> names = database_names();
  if (names.empty()) {
    snprintf(bgw.bgw_function_name, BGW_MAXLEN, "bitdex_sync_launcher_main");
    snprintf(bgw.bgw_name, BGW_MAXLEN, "bitdex_sync launcher");
    snprintf(bgw.bgw_type, BGW_MAXLEN, "bitdex_sync launcher");
    RegisterBackgroundWorker(&bgw);
    return;
  }
  if (names.size() > size_t(g_max_databases))
    ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                    errmsg("bitdex_sync.databases names %zu databases, more than bitdex_sync.max_databases (%d)",
                           names.size(), g_max_databases),
                    errhint("Raise bitdex_sync.max_databases.")));
  for (size_t i = 0; i < names.size(); i++) {
    if (names[i].size() >= NAMEDATALEN || names[i].size() >= BGW_EXTRALEN)
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("database name \"%s\" in bitdex_sync.databases is too long", names[i].c_str())));
    snprintf(bgw.bgw_function_name, BGW_MAXLEN, "bitdex_sync_worker_main");
    snprintf(bgw.bgw_name, BGW_MAXLEN, "bitdex_sync worker for %s", names[i].c_str());
    snprintf(bgw.bgw_type, BGW_MAXLEN, "bitdex_sync worker");
    strlcpy(bgw.bgw_extra, names[i].c_str(), BGW_EXTRALEN);
    RegisterBackgroundWorker(&bgw);
  }
}

bool worker_not_ready(uint64 instance) {
  WorkerShared* w = worker_for_database(MyDatabaseId);
  if (!w) return automatic_mode();
  SpinLockAcquire(&w->mutex);
  const bool current = w->instance == instance;
  SpinLockRelease(&w->mutex);
  if (!current) return true;
  char name[NAMEDATALEN];
  snprintf(name, sizeof name, "bitdex_sync_%u", MyDatabaseId);
  LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
  ReplicationSlot* slot = SearchNamedReplicationSlot(name, false);
  bool ready = slot && slot->data.persistency == RS_PERSISTENT;
  LWLockRelease(ReplicationSlotControlLock);
  return !ready;
}

void note_captured(bool outbox) {
  g_captured = true;
  g_captured_outbox = g_captured_outbox || outbox;
}

// COMMIT PREPARED commits a transaction that may have captured ops in
// another session (whose PREPARE did not wake the worker): its commit wakes
// the worker as if it had captured them itself, into the outbox too. And
// commands that change a captured table's rows without firing capture are
// refused first (capture_guard.cpp).
void utility_hook(PlannedStmt* pstmt, const char* query, bool read_only_tree, ProcessUtilityContext context,
                  ParamListInfo params, QueryEnvironment* env, DestReceiver* dest, QueryCompletion* qc) {
  Node* utility = pstmt->utilityStmt;
  if (IsA(utility, TransactionStmt) && castNode(TransactionStmt, utility)->kind == TRANS_STMT_COMMIT_PREPARED)
    g_commit_prepared = true;
  guard_utility(utility);
  if (g_prev_utility)
    g_prev_utility(pstmt, query, read_only_tree, context, params, env, dest, qc);
  else
    standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc);
}

void install_utility_hook() {
  g_prev_utility = ProcessUtility_hook;
  ProcessUtility_hook = utility_hook;
}

void at_transaction_end(XactEvent event, void*) {
  // PREPARE TRANSACTION: nothing is committed yet (COMMIT PREPARED wakes the
  // worker); the ops this transaction captured are done with here.
  if (event == XACT_EVENT_PREPARE) g_captured = g_captured_outbox = false;
  if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_ABORT &&
      event != XACT_EVENT_PARALLEL_ABORT)
    return;
  const bool commit = event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT;
  bool wake = (g_captured || g_commit_prepared) && commit;
  bool start = g_start_worker && commit;
  const bool changed = g_extension_change && commit;
  bool outbox = g_captured_outbox || g_commit_prepared;
  g_captured = g_captured_outbox = g_start_worker = g_commit_prepared = g_extension_change = false;
  if (changed) {
    if (WorkerShared* w = worker_for_database(MyDatabaseId)) {
      SpinLockAcquire(&w->mutex);
      w->look_now = true;
      Latch* latch = w->latch;
      SpinLockRelease(&w->mutex);
      if (latch) SetLatch(latch);
    }
  }
  if (start && g_shared) {
    // The launcher starts the worker, which finds the extension committed.
    LWLockAcquire(g_shared->lock, LW_EXCLUSIVE);
    Latch* launcher = g_shared->launcher_latch;
    bool queued = false;
    Oid* requests = g_shared->requests();
    for (int i = 0; i < g_shared->nrequests; i++) queued = queued || requests[i] == MyDatabaseId;
    if (!queued && g_shared->nrequests < g_shared->max_databases) requests[g_shared->nrequests++] = MyDatabaseId;
    LWLockRelease(g_shared->lock);
    if (launcher) SetLatch(launcher);
  }
  if (!wake) return;
  if (WorkerShared* w = worker_for_database(MyDatabaseId)) {
    // An asynchronous commit cannot be decoded before its WAL is flushed:
    // waking the worker for it now (thousands of times a second under
    // load) would find nothing to do. Outbox rows can be read at once.
    const XLogRecPtr end = XactLastCommitEnd;
    const bool flushed = outbox || end <= GetFlushRecPtr(nullptr);
    SpinLockAcquire(&w->mutex);
    Latch* latch = w->latch;
    if (outbox) w->outbox_rows = true;
    if (!flushed && end > w->async_commit_end) w->async_commit_end = end;
    if (!flushed && w->async_polling) latch = nullptr;  // it looks again soon anyway
    SpinLockRelease(&w->mutex);
    if (latch) SetLatch(latch);
  }
}

}  // namespace bitdex::pg
