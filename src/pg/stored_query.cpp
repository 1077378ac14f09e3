// Runs a fan-out query that apply_config analysed and stored, from inside the
// capture trigger: rewritten and planned once per backend (a generic plan,
// the parameters bound at each run), executed with the current user's
// rights — the writer's — in the writing transaction's active snapshot.
// This is what a cached SPI plan did, minus parsing the SQL text again: SPI
// takes text only, and text resolves names anew in every backend.
#include "bitdex_sync/pg/compat.hpp"
#include "bitdex_sync/pg/capture.hpp"

extern "C" {
#include "executor/executor.h"
#include "nodes/params.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "tcop/dest.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
}

namespace bitdex::pg {
namespace {

// Stored queries executing in this backend right now (a fan-out query may,
// through a function, write to a captured table and run another one): a plan
// in use is never freed.
int g_running = 0;

struct RowDest {
  DestReceiver pub;  // first: PostgreSQL sees a DestReceiver*
  bool (*row)(TupleTableSlot*, void*);
  void* arg;
  MemoryContext caller;  // what row() allocates outlives the executor's memory
  bool done;
};

bool receive(TupleTableSlot* slot, DestReceiver* self) {
  auto* d = reinterpret_cast<RowDest*>(self);
  if (d->done) return true;
  MemoryContext old = MemoryContextSwitchTo(d->caller);
  if (!d->row(slot, d->arg)) d->done = true;
  MemoryContextSwitchTo(old);
  return true;
}
void startup(DestReceiver*, int, TupleDesc) {}
void shutdown(DestReceiver*) {}
void destroy(DestReceiver*) {}

// Locks what the plan reads, as a cached plan's user must (the executor
// assumes the locks are held); false when taking them delivered an
// invalidation of the plan.
bool lock_plan(StoredQuery* q) {
  ListCell* lc;
  foreach (lc, q->plan->rtable) {
    RangeTblEntry* rte = lfirst_node(RangeTblEntry, lc);
    if (rte->rtekind == RTE_RELATION) LockRelationOid(rte->relid, rte->rellockmode);
    if (!q->plan) return false;
  }
  return true;
}

void plan(StoredQuery* q) {
  if (q->cxt && g_running == 0) MemoryContextReset(q->cxt);
  if (!q->cxt || g_running > 0)  // an outer run may still use the old plan's memory: keep it
    q->cxt = AllocSetContextCreate(CacheMemoryContext, "bitdex_sync fan-out plan", ALLOCSET_SMALL_SIZES);
  MemoryContext old = MemoryContextSwitchTo(q->cxt);
  Query* copy = static_cast<Query*>(copyObjectImpl(q->query));
  AcquireRewriteLocks(copy, true, false);
  List* rewritten = QueryRewrite(copy);
  if (list_length(rewritten) != 1)
    elog(ERROR, "bitdex_sync: a fan-out query rewrote to %d queries", list_length(rewritten));
  PlannedStmt* stmt = pg_plan_query(linitial_node(Query, rewritten), "bitdex_sync fan-out query", 0, nullptr);
  MemoryContextSwitchTo(old);
  q->plan = stmt;
  q->relations = stmt->relationOids;
}

}  // namespace

void run_stored_query(StoredQuery* q, int nparams, Oid* types, Datum* values, bool* nulls,
                      bool (*row)(TupleTableSlot*, void*), void* arg) {
  while (!q->plan || !lock_plan(q)) plan(q);
  ParamListInfo params = makeParamList(nparams);
  for (int i = 0; i < nparams; i++) {
    params->params[i].value = values[i];
    params->params[i].isnull = nulls[i];
    params->params[i].pflags = PARAM_FLAG_CONST;
    params->params[i].ptype = types[i];
  }
  RowDest dest;
  memset(&dest, 0, sizeof dest);
  dest.pub.receiveSlot = receive;
  dest.pub.rStartup = startup;
  dest.pub.rShutdown = shutdown;
  dest.pub.rDestroy = destroy;
  dest.pub.mydest = DestNone;
  dest.row = row;
  dest.arg = arg;
  dest.caller = CurrentMemoryContext;
  QueryDesc* qd = CreateQueryDesc(q->plan, "bitdex_sync fan-out query", GetActiveSnapshot(), InvalidSnapshot, &dest.pub,
                                  params, nullptr, 0);
  g_running++;
  PG_TRY();
  {
    ExecutorStart(qd, 0);
    compat::executor_run_all(qd);
    ExecutorFinish(qd);
    ExecutorEnd(qd);
  }
  PG_FINALLY();
  { g_running--; }
  PG_END_TRY();
  FreeQueryDesc(qd);
}

void invalidate_stored_query(StoredQuery* q, Oid relid) {
  if (q->plan && (relid == InvalidOid || list_member_oid(q->relations, relid))) q->plan = nullptr;
}

}  // namespace bitdex::pg
