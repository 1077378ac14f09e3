// What happens at the end of a transaction and around utility commands: a
// commit that captured ops wakes its database's worker; CREATE EXTENSION
// asks the launcher for one; COMMIT PREPARED counts as a capture; the
// capture guard's checks run before utility commands.
#include "bitdex_sync/pg/txn_hooks.hpp"

#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/settings.hpp"
#include "bitdex_sync/pg/shared_state.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "tcop/utility.h"
}

namespace bitdex::pg {
namespace {

bool g_captured = false;          // this transaction captured something
bool g_captured_outbox = false;   // ... into the outbox
bool g_start_worker = false;      // this transaction asked for its database's worker
bool g_extension_change = false;  // this transaction creates or drops the extension
bool g_commit_prepared = false;   // this transaction runs COMMIT PREPARED
ProcessUtility_hook_type g_prev_utility = nullptr;

}  // namespace

void start_worker_at_commit() {
  g_start_worker = true;
}

void extension_change_at_commit() {
  g_extension_change = true;
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
  if (SharedState* g_shared = shared_state(); start && g_shared) {
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
