// The worker's outbox: rows of bitdex_sync.ops into the open batch, then
// deleted.
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
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/pg/worker_state.hpp"

extern "C" {
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/builtins.h"
}

namespace bitdex::pg::bgw {
namespace {

// Rows read from the outbox per query; the batcher closes batches by its own limits.
constexpr int kOutboxChunk = 10000;

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
  XLogFlush(wal_inserted_end());
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
      nullptr,
      "SELECT id, entity_id, ops::text, xmin::text::bigint FROM bitdex_sync.ops WHERE id > $1 AND id <= $2 "
      "ORDER BY id",
      2, types, args, nullptr, true, CURSOR_OPT_NO_SCROLL | CURSOR_OPT_FAST_PLAN);
  for (;;) {
    SPI_cursor_fetch(cursor, true, kOutboxChunk);
    const uint64 rows = SPI_processed;
    for (uint64 i = 0; i < rows; i++) {
      bool isnull;
      const int64 id = spi_int8(static_cast<int>(i), 1, &isnull);
      const int64 entity = spi_int8(static_cast<int>(i), 2, &isnull);
      const char* text = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
      const uint32 writer = static_cast<uint32>(spi_int8(static_cast<int>(i), 4, &isnull));
      after = id;
      size_t nops = 0;
      bool ok = run_cpp(
          [&] {
            // The trigger writes no bigger row; a row written by hand may be.
            if (strlen(text) > 2 * capture::kMaxRecord)
              throw Error(ErrorKind::InvalidInput, "outbox id " + std::to_string(id) + ": ops of " +
                                                       std::to_string(strlen(text)) +
                                                       " bytes are too large to capture");
            EntityRecord r;
            const std::string where = "outbox id " + std::to_string(id);
            json::Value v = json::parse(text);
            // A TRUNCATE's clear record is {"clear": {...}} (entity 0).
            const json::Value* clear = v.type == json::Type::Object ? v.find("clear") : nullptr;
            if (clear)
              r = EntityRecord::clearing(parse_clear(*clear, where));
            else
              r.ops = parse_ops(v, where);
            r.entity_id = clear ? 0 : entity;
            r.pos = SourcePos{Stream::Outbox, static_cast<uint64_t>(id), 0};
            nops = r.ops.size();
            load_observe(r, writer, false);  // xmin: the writer, maybe a subtransaction
            g_worker->batcher->add(std::move(r));
            return true;
          },
          g_worker->error, sizeof g_worker->error);
      if (!ok) {
        char where[32];
        snprintf(where, sizeof where, "id " INT64_FORMAT, id);
        horizon_reached = false;
        PoisonRecord bad;
        bad.text = text;
        bad.entity_id = entity;
        bad.has_entity = true;
        if (note_poison("outbox", where, g_on_poison_outbox, bad)) {
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
  // Up to the horizon every id is written, quarantined or was never
  // committed; when ended early, up to the last row taken.
  const int64 done = horizon_reached ? horizon : after;
  flush_batch();
  // The delete need not wait for its commit record to be flushed: if a crash
  // loses it, the rows come back and are deleted as written (they lie at or
  // below the WAL's outbox mark). Quarantine rows must not be lost.
  if (g_worker->quarantine.empty() && SPI_execute("SET LOCAL synchronous_commit = off", false, 0) != SPI_OK_UTILITY)
    elog(ERROR, "bitdex_sync: could not set synchronous_commit");
  write_quarantine();
  outbox_delete_through(done);
  // What the ops WAL holds of the outbox, recorded with the delete: at open,
  // a WAL whose outbox mark is below it lost acknowledged batches. (Rows
  // deleted beyond it were never in the WAL: aborted ids, quarantined rows;
  // the mark does not pass a quarantined row before its quarantine commits.)
  Datum acked = Int64GetDatum(static_cast<int64>(g_worker->writer->mark(Stream::Outbox).major));
  Oid type = INT8OID;
  if (SPI_execute_with_args("UPDATE bitdex_sync.instance SET outbox_acked = $1 WHERE outbox_acked < $1", 1, &type,
                            &acked, nullptr, false, 0) != SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not record the outbox's acknowledged id");
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

}  // namespace

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

}  // namespace bitdex::pg::bgw
