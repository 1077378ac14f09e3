// The worker's loads (SPEC §9, docs/load.md): the rows of a source, read in
// chunks of slot keys in index order while capture goes on, each chunk's
// records written to the ops WAL at the place where the index converges to
// the table (core/load.hpp says why that place is right).
//
// One chunk at a time:
//   1. read: a transaction, one MVCC snapshot S; L = the server's WAL insert
//      position after S; H = the highest outbox id S sees. A snapshot that
//      misses a commit the worker decoded already is not used (retry). The
//      rows after the cursor are read in slot order (as the table's owner,
//      as VACUUM runs a table's code) and turned into the records an INSERT
//      of each would capture, by the capture trigger's own code.
//   2. wait: decoding goes on up to L (and no further), the outbox reader up
//      to H; every record taken meanwhile is shown to the chunk, which is
//      cut before the first key a commit S does not see touched.
//   3. write: the chunk's keys (from, to] and number n are recorded in
//      bitdex_sync.loads (committed, flushed), then its records go into the
//      batch at load position (load id, n) and the batch is made durable. At
//      a restart the ops WAL's load mark says whether chunk n is there: the
//      load goes on after `to`, or reads (from, ...] again.
#include <memory>
#include <string>
#include <vector>

#include "bitdex_sync/core/load.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/worker_state.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

namespace bitdex::pg::bgw {
namespace {

// ---- SPI helpers -------------------------------------------------------------

int64 spi_int8(int row, int col, bool* isnull) {
  return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull));
}

Datum int8_or_null(bool has, int64 v, char* null) {
  *null = has ? ' ' : 'n';
  return Int64GetDatum(v);
}

// ---- the active load -----------------------------------------------------------

LoadRun& run() {
  return *g_worker->load;
}

// Marks the active load failed with `why` (in a transaction of its own) and
// lets it go.
void fail_load(const char* why);

// The next load to run, in id order (apply_config, load() and
// start_new_wal() register a config's loads with direct sources first, then
// joins, then fan-outs: a fan-out's query finds the slots loaded before it).
// A load found running resumes where the ops WAL's load mark says.
void pick_next() {
  LoadRun& r = run();
  r.id = 0;
  if (SPI_execute("SELECT l.id, l.source, l.state, l.chunk, l.chunk_from, l.chunk_to, l.chunks, l.rows, "
                  "l.chunk_rows, s.table_oid, s.trigger_oid, s.trigger_name = l.digest, c.relkind, "
                  "l.chunk_from IS NULL, l.chunk_to IS NULL, s.name IS NULL "
                  "FROM bitdex_sync.loads l LEFT JOIN (bitdex_sync.sources s JOIN bitdex_sync.instance i "
                  "ON i.id = s.instance) ON s.name = l.source LEFT JOIN pg_catalog.pg_class c ON c.oid = s.table_oid "
                  "WHERE l.state IN ('pending', 'running') ORDER BY l.id LIMIT 1",
                  true, 1) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not read bitdex_sync.loads");
  if (SPI_processed == 0) return;
  bool isnull;
  TupleDesc desc = SPI_tuptable->tupdesc;
  HeapTuple row = SPI_tuptable->vals[0];
  auto flag = [&](int col) { return DatumGetBool(SPI_getbinval(row, desc, col, &isnull)) && !isnull; };
  r.id = spi_int8(0, 1, &isnull);
  r.source = SPI_getvalue(row, desc, 2);
  const bool running = strcmp(SPI_getvalue(row, desc, 3), "running") == 0;
  const int32 chunk = DatumGetInt32(SPI_getbinval(row, desc, 4, &isnull));
  const int64 chunk_from = spi_int8(0, 5, &isnull);
  const int64 chunk_to = spi_int8(0, 6, &isnull);
  const int32 chunks = DatumGetInt32(SPI_getbinval(row, desc, 7, &isnull));
  r.rows = spi_int8(0, 8, &isnull);
  const int64 chunk_rows = spi_int8(0, 9, &isnull);
  r.table = DatumGetObjectId(SPI_getbinval(row, desc, 10, &isnull));
  r.trigger = DatumGetObjectId(SPI_getbinval(row, desc, 11, &isnull));
  const bool same_definition = flag(12);
  char* relkind = SPI_getvalue(row, desc, 13);
  const bool from_start = flag(14), to_end = flag(15), gone = flag(16);
  r.partitioned = relkind && relkind[0] == RELKIND_PARTITIONED_TABLE;
  r.pending.reset();
  if (gone) return fail_load("the source is no longer in the config");
  if (!same_definition) return fail_load("the source's definition changed since the load was registered");
  r.chunk = 0;
  r.has_cursor = false;
  r.cursor = 0;
  if (running && chunk > 0) {
    // Chunk `chunk` was recorded before its ops were written: the ops WAL
    // says whether they were.
    const SourcePos mark = g_worker->writer->mark(Stream::Load);
    const bool written = mark.major == static_cast<uint64>(r.id) && mark.minor >= static_cast<uint32>(chunk);
    if (mark.major > static_cast<uint64>(r.id) ||
        (mark.major == static_cast<uint64>(r.id) && mark.minor > static_cast<uint32>(chunk)))
      return fail_load("the ops WAL holds load chunks this load never recorded (restored or replaced?)");
    if (written) {
      r.chunk = chunk;
      r.has_cursor = !to_end;
      r.cursor = chunk_to;
      if (chunks < chunk) r.rows += chunk_rows;  // the progress update after it was lost
      if (to_end) {
        // The last chunk was durable: only its bookkeeping was lost.
        Datum args[2] = {Int64GetDatum(r.id), Int64GetDatum(r.rows)};
        Oid types[2] = {INT8OID, INT8OID};
        SPI_execute_with_args(
            "UPDATE bitdex_sync.loads SET state = 'complete', chunks = chunk, rows = $2, loaded_to = NULL, "
            "finished_at = now() WHERE id = $1",
            2, types, args, nullptr, false, 0);
        r.id = 0;
        return;
      }
    } else {
      r.chunk = chunk - 1;  // read (chunk_from, ...] again as chunk `chunk`
      r.has_cursor = !from_start;
      r.cursor = chunk_from;
    }
  }
  if (!running) {
    // The planner's estimate of the rows to load (leaf partitions summed).
    Datum args[2] = {Int64GetDatum(r.id), ObjectIdGetDatum(r.table)};
    Oid types[2] = {INT8OID, OIDOID};
    if (SPI_execute_with_args(
            "UPDATE bitdex_sync.loads SET state = 'running', started_at = now(), estimate = (SELECT "
            "pg_catalog.sum(GREATEST(c.reltuples, 0))::bigint FROM pg_catalog.pg_partition_tree($2) p "
            "JOIN pg_catalog.pg_class c ON c.oid = p.relid WHERE p.isleaf) WHERE id = $1",
            2, types, args, nullptr, false, 0) != SPI_OK_UPDATE)
      elog(ERROR, "bitdex_sync: could not start load " INT64_FORMAT, r.id);
  }
  ereport(LOG, (errmsg("bitdex_sync: %s load " INT64_FORMAT " of source \"%s\"", running ? "resuming" : "starting",
                       r.id, r.source.c_str())));
}

char g_failure[1024];

void record_failure() {
  Datum args[2] = {Int64GetDatum(run().id), CStringGetTextDatum(g_failure)};
  Oid types[2] = {INT8OID, TEXTOID};
  if (SPI_execute_with_args("UPDATE bitdex_sync.loads SET state = 'failed', finished_at = now(), error = $2 "
                            "WHERE id = $1 AND state IN ('pending', 'running')",
                            2, types, args, nullptr, false, 0) != SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not record a failed load");
}

void fail_load(const char* why) {
  LoadRun& r = run();
  strlcpy(g_failure, why, sizeof g_failure);
  ereport(WARNING,
          (errmsg("bitdex_sync: load " INT64_FORMAT " of source \"%s\" failed: %s", r.id, r.source.c_str(), why),
           errhint("Fix the cause, then register it again with SELECT bitdex_sync.load('%s');", r.source.c_str())));
  // Called inside pick_next's transaction or after an aborted one.
  if (IsTransactionState() && SPI_connect() == SPI_OK_CONNECT) {
    record_failure();
    SPI_finish();
  } else {
    in_transaction(record_failure);
  }
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->last_error_at = GetCurrentTimestamp();
  snprintf(w->last_error, sizeof w->last_error, "load %lld of source \"%s\" failed: %s", static_cast<long long>(r.id),
           r.source.c_str(), why);
  SpinLockRelease(&w->mutex);
  r.id = 0;
  r.pending.reset();
}

// Runs fn in a transaction of its own; a PostgreSQL error is caught (the
// transaction rolled back) and its message left in g_failure.
bool try_in_transaction(void (*fn)()) {
  MemoryContext cxt = CurrentMemoryContext;
  ResourceOwner owner = CurrentResourceOwner;
  volatile bool ok = true;
  PG_TRY();
  { in_transaction(fn); }
  PG_CATCH();
  {
    MemoryContextSwitchTo(cxt);
    ErrorData* e = CopyErrorData();
    FlushErrorState();
    AbortCurrentTransaction();
    CurrentResourceOwner = owner;
    load_reset();
    strlcpy(g_failure, e->message ? e->message : "unknown error", sizeof g_failure);
    FreeErrorData(e);
    ok = false;
  }
  PG_END_TRY();
  return ok;
}

// ---- reading a chunk -----------------------------------------------------------

struct Reading {
  int64 key = 0;  // of the row being turned into records
  bool failed = false;
};
Reading g_reading;

// LoadSink: one record of the current row into the pending chunk.
void take_record(void*, int64 entity, const char* ops, int len) {
  LoadRun& r = run();
  if (!run_cpp(
          [&] {
            EntityRecord rec;
            rec.entity_id = entity;
            rec.ops = codec::decode_ops(reinterpret_cast<const uint8_t*>(ops), static_cast<size_t>(len));
            r.pending->add(g_reading.key, std::move(rec));
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("bitdex_sync: load: %s", g_worker->error)));
}

load::Snapshot copy_snapshot(Snapshot s) {
  load::Snapshot out;
  out.xmin = s->xmin;
  out.xmax = s->xmax;
  out.xip.assign(s->xip, s->xip + s->xcnt);
  out.subxip.assign(s->subxip, s->subxip + s->subxcnt);
  out.suboverflowed = s->suboverflowed;
  return out;
}

bool g_retry_snapshot = false;

// Whether this process's snapshots hold back the pruning of row versions.
// A process that decodes is flagged PROC_IN_LOGICAL_DECODING, and
// PostgreSQL leaves such a process's xmin out of every horizon (its slot
// holds back catalog rows only): pages pruned by other backends would lose
// row versions a chunk's snapshot still needs, and the chunk would miss the
// rows being updated. While a chunk is read, the flag is off, so the
// snapshot's xmin counts like any backend's.
void hold_back_pruning(bool hold) {
  LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
  if (hold)
    MyProc->statusFlags &= ~PROC_IN_LOGICAL_DECODING;
  else if (g_worker->ctx)
    MyProc->statusFlags |= PROC_IN_LOGICAL_DECODING;
  ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
  LWLockRelease(ProcArrayLock);
}

// In a transaction (in_transaction: SPI connected, one snapshot pushed, every
// query read-only so all of them see it): reads the next chunk.
void read_chunk() {
  LoadRun& r = run();
  g_retry_snapshot = false;
  Snapshot snap = GetActiveSnapshot();
  // After the snapshot: every commit it sees wrote its record before this.
  const XLogRecPtr watermark = wal_inserted_end();
  bool unseen = false;
  if (!run_cpp(
          [&] {
            load::Snapshot s = copy_snapshot(snap);
            unseen = g_worker->recent->any_unseen(s);
            if (!unseen) {
              g_worker->recent->forget_older_than(s.xmin);
              r.pending = std::make_unique<load::Chunk>(std::move(s), r.has_cursor ? r.cursor : INT64_MIN, INT64_MAX);
            }
            r.key_rows.clear();
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: load: %s", g_worker->error)));
  if (unseen) {
    // A commit already in the ops WAL (or the batch) that this snapshot does
    // not see yet: its transaction is leaving the proc array. Try again.
    g_retry_snapshot = true;
    return;
  }
  if (SPI_execute("SELECT COALESCE(pg_catalog.max(id), 0) FROM bitdex_sync.ops", true, 1) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not read the outbox");
  bool isnull;
  const int64 outbox_horizon = spi_int8(0, 1, &isnull);

  // Locked before the snapshot was taken (in_transaction, g_lock_first):
  // a table rewrite (ALTER TABLE ... ADD COLUMN with a volatile default, a
  // type change) committed while the read waited for its lock would leave
  // rows only under the rewrite's xid, invisible to the chunk's snapshot.
  Relation rel = table_open(r.table, AccessShareLock);

  // As the table's owner, in a security-restricted operation with a pinned
  // search_path: the config's code runs as it would for a writer of the
  // table, never as the worker's superuser. That includes compiling the
  // source (the planner runs immutable functions on constants). Row-level
  // security is not applied: a policy that hides rows from the owner
  // (FORCE ROW LEVEL SECURITY) makes the read fail instead of miss rows.
  Oid save_user;
  int save_sec;
  GetUserIdAndSecContext(&save_user, &save_sec);
  SetUserIdAndSecContext(rel->rd_rel->relowner, save_sec | SECURITY_RESTRICTED_OPERATION);
  const int nest = NewGUCNestLevel();
  (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                          false);
  (void)set_config_option("row_security", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

  void* source = load_source(r.trigger, rel);
  if (!source)
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
                    errmsg("the capture trigger of source \"%s\" is not recorded", r.source.c_str())));
  const AttrNumber slot_att = static_cast<AttrNumber>(load_source_slot_column(source));
  if (slot_att <= 0) elog(ERROR, "bitdex_sync: the slot of source \"%s\" is not a column", r.source.c_str());
  const char* column = get_attname(r.table, slot_att, false);
  const char* table =
      quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)), RelationGetRelationName(rel));
  // The whole row through an alias no column of the table is named (a
  // column named like the alias would be read instead of the row).
  char alias[NAMEDATALEN] = "t";
  for (size_t n = 1; get_attnum(r.table, alias) != InvalidAttrNumber && n < NAMEDATALEN - 1; n++) alias[n] = '_';
  const char* a = quote_identifier(alias);
  // A partitioned table's rows are its partitions'; an inheritance parent's
  // capture trigger sees only its own rows.
  StringInfoData sql;
  initStringInfo(&sql);
  appendStringInfo(&sql, "SELECT %s, %s.%s FROM %s%s %s", a, a, quote_identifier(column), r.partitioned ? "" : "ONLY ",
                   table, a);
  if (r.has_cursor) appendStringInfo(&sql, " WHERE %s.%s > $1", a, quote_identifier(column));
  appendStringInfo(&sql, " ORDER BY %s.%s", a, quote_identifier(column));
  Oid argtype = INT8OID;
  Datum arg = Int64GetDatum(r.cursor);
  Portal cursor = SPI_cursor_open_with_args(nullptr, sql.data, r.has_cursor ? 1 : 0, &argtype, &arg, nullptr, true,
                                            CURSOR_OPT_NO_SCROLL);
  if (SPI_gettypeid(cursor->tupDesc, 1) != rel->rd_rel->reltype)
    elog(ERROR, "bitdex_sync: the load of source \"%s\" did not read whole rows of %s", r.source.c_str(), table);
  TupleTableSlot* slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
  LoadSink sink{take_record, nullptr};
  const int64 limit = g_load_chunk_rows;
  int64 rows = 0, last = 0;
  bool exhausted = false, full = false;
  while (!full) {
    SPI_cursor_fetch(cursor, true, 1000);
    if (SPI_processed == 0) {
      exhausted = true;
      break;
    }
    for (uint64 i = 0; i < SPI_processed; i++) {
      bool null_key, null_row;
      const Datum key_datum = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &null_key);
      const Oid key_type = SPI_gettypeid(SPI_tuptable->tupdesc, 2);
      if (null_key) continue;  // capture refuses such a row: it has no slot
      const int64 key = key_type == INT2OID   ? DatumGetInt16(key_datum)
                        : key_type == INT4OID ? DatumGetInt32(key_datum)
                                              : DatumGetInt64(key_datum);
      // Whole slots only: a chunk ends between two keys.
      if (rows >= limit && key != last) {
        full = true;
        break;
      }
      const Datum whole = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &null_row);
      if (null_row) continue;
      HeapTupleHeader header = DatumGetHeapTupleHeader(whole);
      HeapTupleData tuple;
      tuple.t_len = HeapTupleHeaderGetDatumLength(header);
      ItemPointerSetInvalid(&tuple.t_self);
      tuple.t_tableOid = r.table;
      tuple.t_data = header;
      ExecStoreHeapTuple(&tuple, slot, false);
      g_reading.key = key;
      load_row(source, slot, &sink);
      ExecClearTuple(slot);
      if (!run_cpp(
              [&] {
                if (r.key_rows.empty() || r.key_rows.back().first != key) r.key_rows.emplace_back(key, 0);
                r.key_rows.back().second++;
                return true;
              },
              g_worker->error, sizeof g_worker->error))
        ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: load: %s", g_worker->error)));
      rows++;
      last = key;
    }
    SPI_freetuptable(SPI_tuptable);
    CHECK_FOR_INTERRUPTS();
  }
  ExecDropSingleTupleTableSlot(slot);
  SPI_cursor_close(cursor);
  AtEOXact_GUC(true, nest);
  SetUserIdAndSecContext(save_user, save_sec);
  table_close(rel, AccessShareLock);
  // What the chunk covers: through its last key, or everything from its
  // start when the rows ran out.
  r.pending->set_to(exhausted ? INT64_MAX : last);
  r.watermark = watermark;
  r.outbox_horizon = outbox_horizon;
}

}  // namespace
}  // namespace bitdex::pg::bgw

namespace bitdex::pg::bgw {
namespace {

// The chunk being recorded or counted (globals for the in_transaction steps).
struct Planned {
  int32 chunk;
  bool has_from, has_to;
  int64 from, to, rows;
  bool complete;
};
Planned g_planned;
bool g_given_up = false;  // plan_chunk found the load no longer running

// Chunk n's keys, before its ops are written; flushed at commit whatever
// synchronous_commit says (the ops WAL must never hold a chunk this row
// does not name).
void plan_chunk() {
  if (SPI_execute("SET LOCAL synchronous_commit = on", false, 0) != SPI_OK_UTILITY)
    elog(ERROR, "bitdex_sync: could not set synchronous_commit");
  char nulls[5] = {' ', ' ', ' ', ' ', ' '};
  Datum args[5] = {Int64GetDatum(run().id), Int32GetDatum(g_planned.chunk),
                   int8_or_null(g_planned.has_from, g_planned.from, &nulls[2]),
                   int8_or_null(g_planned.has_to, g_planned.to, &nulls[3]), Int64GetDatum(g_planned.rows)};
  Oid types[5] = {INT8OID, INT4OID, INT8OID, INT8OID, INT8OID};
  if (SPI_execute_with_args("UPDATE bitdex_sync.loads SET chunk = $2, chunk_from = $3, chunk_to = $4, "
                            "chunk_rows = $5 WHERE id = $1 AND state = 'running'",
                            5, types, args, nulls, false, 0) != SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not record chunk %d of load " INT64_FORMAT, g_planned.chunk, run().id);
  // Given up meanwhile (a later load of the source, a config change): the
  // chunk is dropped, nothing of it is written.
  g_given_up = SPI_processed != 1;
}

// After the chunk is durable: progress, and the end of the load.
void record_progress() {
  char nulls[5] = {' ', ' ', ' ', ' ', ' '};
  Datum args[5] = {Int64GetDatum(run().id), Int32GetDatum(g_planned.chunk), Int64GetDatum(run().rows),
                   int8_or_null(g_planned.has_to && !g_planned.complete, g_planned.to, &nulls[3]),
                   BoolGetDatum(g_planned.complete)};
  Oid types[5] = {INT8OID, INT4OID, INT8OID, INT8OID, BOOLOID};
  if (SPI_execute("SET LOCAL synchronous_commit = off", false, 0) != SPI_OK_UTILITY ||
      SPI_execute_with_args("UPDATE bitdex_sync.loads SET chunks = $2, rows = $3, loaded_to = $4, "
                            "state = CASE WHEN $5 THEN 'complete' ELSE state END, "
                            "finished_at = CASE WHEN $5 THEN now() END WHERE id = $1",
                            5, types, args, nulls, false, 0) != SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not record the progress of load " INT64_FORMAT, run().id);
}

// The pending chunk, at its place: recorded, written, counted.
void write_chunk() {
  LoadRun& r = run();
  int64 end = 0;
  Batch recs;
  bool cut = false;
  int64 from = 0;
  run_cpp(
      [&] {
        cut = r.pending->cut();
        from = r.pending->from();
        recs = r.pending->take(&end);
        return true;
      },
      g_worker->error, sizeof g_worker->error);
  r.pending.reset();
  if (cut) {
    WorkerShared* w = g_worker->shared;
    SpinLockAcquire(&w->mutex);
    w->load_cuts++;
    SpinLockRelease(&w->mutex);
  }
  if (end == from) return;  // cut before its first key: read again under a later snapshot
  int64 rows = 0;
  for (const auto& [key, n] : r.key_rows)
    if (key <= end) rows += n;
  g_planned = Planned{r.chunk + 1, r.has_cursor, end != INT64_MAX, r.cursor, end, rows, end == INT64_MAX};
  g_given_up = false;
  in_transaction(plan_chunk);
  if (g_worker->extension_gone) return;
  if (g_given_up) {
    ereport(LOG,
            (errmsg("bitdex_sync: load " INT64_FORMAT " of source \"%s\" was given up; its pending chunk is dropped",
                    r.id, r.source.c_str())));
    r.id = 0;
    return;
  }
  const SourcePos pos{Stream::Load, static_cast<uint64_t>(r.id), static_cast<uint32_t>(g_planned.chunk)};
  if (!run_cpp(
          [&] {
            for (EntityRecord& rec : recs) {
              rec.pos = pos;
              g_worker->batcher->add(std::move(rec));
            }
            g_worker->batcher->cover(pos);
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: load: %s", g_worker->error)));
  if (!g_worker->batch_opened) g_worker->batch_opened = GetCurrentTimestamp();
  flush_batch();
  r.chunk = g_planned.chunk;
  r.cursor = end;
  r.has_cursor = end != INT64_MAX;
  r.rows += rows;
  in_transaction(record_progress);
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->load_rows += static_cast<uint64>(rows);
  w->load_chunks++;
  SpinLockRelease(&w->mutex);
  if (g_planned.complete) {
    ereport(LOG,
            (errmsg("bitdex_sync: load " INT64_FORMAT " of source \"%s\" complete: " INT64_FORMAT " rows in %d chunks",
                    r.id, r.source.c_str(), r.rows, r.chunk)));
    r.id = 0;
    r.more = true;
  }
}

}  // namespace

bool load_step(bool look) {
  if (!g_worker->writer || !g_worker->ctx || g_worker->extension_gone || g_worker->slot_stopped) return false;
  LoadRun& r = run();
  if (!r.id) {
    if (!look && !r.more) return false;
    r.more = false;
    in_transaction(pick_next);
    if (!r.id) return r.more;
  }
  if (!r.pending) {
    pgstat_report_activity(STATE_RUNNING, "loading: reading a chunk");
    hold_back_pruning(true);
    g_lock_first = r.table;
    g_lock_first_inheritors = r.partitioned;
    const bool read = try_in_transaction(read_chunk);
    g_lock_first = InvalidOid;
    hold_back_pruning(false);
    if (!read) {
      r.pending.reset();
      fail_load(g_failure);
      r.more = true;
      return true;
    }
    if (g_retry_snapshot) return true;
    XLogFlush(r.watermark);  // decoding reads flushed WAL only
    return true;
  }
  // Decoding stops at the watermark while the chunk waits (load_decode_limit).
  if (g_worker->ctx->reader->EndRecPtr < r.watermark || g_worker->outbox_done < r.outbox_horizon) return true;
  pgstat_report_activity(STATE_RUNNING, "loading: writing a chunk");
  write_chunk();
  return true;
}

XLogRecPtr load_decode_limit() {
  const LoadRun& r = run();
  return r.pending ? r.watermark : InvalidXLogRecPtr;
}

void load_observe(const EntityRecord& rec, uint32_t xid, bool top_level) {
  LoadRun& r = run();
  if (r.pending) r.pending->observe(rec, xid, top_level);
}

void load_stop() {
  LoadRun& r = run();
  r.pending.reset();
  r.id = 0;
  r.more = true;
}

}  // namespace bitdex::pg::bgw
