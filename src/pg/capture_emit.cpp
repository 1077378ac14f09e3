// The capture trigger, emitting: a row's ops sealed into a record and written
// as a transactional logical message tagged with the capture key, or as an
// outbox row; arrivals held to the end of their statement (ExecutorFinish
// hook) so a statement that trades slots is captured in an order-independent
// way; a TRUNCATE's clear record.
#include <cstring>
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/pg/capture_trigger.hpp"
#include "bitdex_sync/pg/capture_key.hpp"
#include "bitdex_sync/pg/compat.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"
#include "bitdex_sync/pg/wall.hpp"

#include <cstring>

extern "C" {
#include "access/attmap.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_trigger.h"
#include "rewrite/rewriteManip.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "access/sysattr.h"
#include "nodes/bitmapset.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "replication/message.h"
#include "rewrite/rewriteHandler.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "common/hashfn.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/typcache.h"
}

namespace bitdex::pg::trigger {

SPIPlanPtr g_outbox_plan = nullptr;
std::string* g_json = nullptr;  // static-lifetime scratch for the outbox JSON
char g_json_error[256];

bool payload_to_json(const char* data, int len) noexcept {
  return run_cpp(
      [&] {
        if (!g_json) g_json = new std::string();
        bitdex::EntityRecord r =
            bitdex::capture::decode(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len));
        g_json->clear();
        bitdex::write_ops_json(*g_json, r.ops);
        return true;
      },
      g_json_error, sizeof g_json_error);
}

// Switches to the extension's owner and connects to SPI (restored by
// as_owner_end; on error, transaction abort restores both).
UserContext as_owner_begin() {
  UserContext was = enter_owner();
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  return was;
}

void as_owner_end(const UserContext& was) {
  SPI_finish();
  leave_owner(was);
}

// Inserts the record into bitdex_sync.ops as the capture owner: writers of
// captured tables need no rights on schema bitdex_sync and cannot forge rows.
void emit_outbox(int64 entity_id) {
  if (!payload_to_json(g_record.data, g_record.len))
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("bitdex_sync: %s", g_json_error)));
  UserContext owner = as_owner_begin();
  if (!g_outbox_plan) {
    Oid types[2] = {INT8OID, TEXTOID};
    SPIPlanPtr p = SPI_prepare("INSERT INTO bitdex_sync.ops (entity_id, ops) VALUES ($1, $2::jsonb)", 2, types);
    if (!p) elog(ERROR, "bitdex_sync: could not prepare the outbox insert");
    SPI_keepplan(p);
    g_outbox_plan = p;
  }
  Datum values[2] = {Int64GetDatum(entity_id), CStringGetTextDatum(g_json->c_str())};
  if (SPI_execute_plan(g_outbox_plan, values, nullptr, false, 0) != SPI_OK_INSERT)
    elog(ERROR, "bitdex_sync: outbox insert failed");
  as_owner_end(owner);
}

char g_seal_error[256];

// Tags g_record with the server's capture key for this transaction
// (capture_format.hpp): the worker accepts no capture message without it.
void seal_record() {
  const bitdex::SipHash128* mac = capture_mac();
  if (!mac) ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: no capture key")));
  // The top-level transaction: decoding sees the message at its commit.
  const TransactionId xid = GetTopTransactionId();
  if (!run_cpp(
          [&] {
            bitdex::capture::seal(reinterpret_cast<uint8_t*>(g_record.data), static_cast<size_t>(g_record.len), *mac,
                                  MyDatabaseId, xid);
            return true;
          },
          g_seal_error, sizeof g_seal_error))
    elog(ERROR, "bitdex_sync: %s", g_seal_error);
}

// Set while the worker loads rows (load_row): records go to it instead.
LoadSink* g_load_sink = nullptr;

// Emits g_ops (g_nops ops) as one record for entity_id, keeping g_ops.
void emit_record(bool outbox, int64 entity_id) {
  resetStringInfo(&g_record);
  InfoOut out{&g_record};
  bitdex::capture::write_header(out, entity_id);
  bitdex::codec::write_varint(out, static_cast<uint64_t>(g_nops));
  appendBinaryStringInfo(&g_record, g_ops.data, g_ops.len);
  if (static_cast<size_t>(g_record.len) > bitdex::capture::kMaxRecord)
    ereport(ERROR,
            (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
             errmsg("bitdex_sync: the captured change of entity " INT64_FORMAT " is %d bytes, more than %zu MB",
                    entity_id, g_record.len, bitdex::capture::kMaxRecord >> 20),
             errdetail("A capture record of the ops WAL holds at most %zu MB.", bitdex::capture::kMaxRecord >> 20),
             errhint("Capture a shorter value (a prefix or a hash of the column) in the config.")));
  if (g_load_sink) {  // a load: the worker takes the record
    g_load_sink->record(g_load_sink->arg, entity_id, g_record.data + bitdex::capture::kHeaderSize,
                        g_record.len - static_cast<int>(bitdex::capture::kHeaderSize));
    return;
  }
  if (outbox) {
    emit_outbox(entity_id);
  } else {
    seal_record();
    bitdex::pg::compat::log_message(bitdex::capture::kMessagePrefix, g_record.data, g_record.len, true);
  }
  bitdex::pg::note_captured(outbox);  // wake the worker at commit
}

void emit_keep(Source* s, int64 entity_id) {
  emit_record(s->outbox, entity_id);
}

// ---- arrivals held to the end of the statement ----------------------------------
//
// Inside one statement, rows may trade slots: UPDATE ... SET id = id + 1
// over ids 1, 2, 3 (a deferrable key) moves row 1 into slot 2 before row 2
// leaves it. Per-row records would then kill slot 2 after row 1 arrived in
// it. So in a statement that can move rows (UPDATE, MERGE, INSERT ... ON
// CONFLICT DO UPDATE, or one with data-modifying WITH queries), what arrives in a slot (a moved row's new
// slot, an INSERT) is held until every row trigger of the statement has
// fired, and written after all its leaves: the result no longer depends on
// the order of the rows. Held records spill to disk past work_mem. Outside
// a statement's executor (logical replication's apply worker) rows are
// written as they come.

void emit(Source* s, int64 entity_id);

struct Statement {
  bool holds;  // this statement's arrivals are held
  MemoryContext cxt;
  Tuplestorestate* held;
  Statement* outer;
};
Statement* g_statement = nullptr;
TupleDesc g_held_desc = nullptr;  // (entity int8, outbox bool, ops bytea, nops int4)
ExecutorFinish_hook_type g_prev_finish = nullptr;

// Appends a record (entity, sink, ops) to what statement `st` holds.
void hold(Statement* st, int64 entity_id, bool outbox, const char* ops_data, int ops_len, int nops) {
  if (!g_held_desc) {
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    g_held_desc = CreateTemplateTupleDesc(4);
    TupleDescInitEntry(g_held_desc, 1, "entity", INT8OID, -1, 0);
    TupleDescInitEntry(g_held_desc, 2, "outbox", BOOLOID, -1, 0);
    TupleDescInitEntry(g_held_desc, 3, "ops", BYTEAOID, -1, 0);
    TupleDescInitEntry(g_held_desc, 4, "nops", INT4OID, -1, 0);
    MemoryContextSwitchTo(old);
  }
  if (!st->held) {
    MemoryContext old = MemoryContextSwitchTo(st->cxt);
    st->held = tuplestore_begin_heap(false, false, work_mem);
    MemoryContextSwitchTo(old);
  }
  bytea* ops = (bytea*)palloc(VARHDRSZ + ops_len);
  SET_VARSIZE(ops, VARHDRSZ + ops_len);
  memcpy(VARDATA(ops), ops_data, ops_len);
  Datum values[4] = {Int64GetDatum(entity_id), BoolGetDatum(outbox), PointerGetDatum(ops), Int32GetDatum(nops)};
  bool nulls[4] = {false, false, false, false};
  tuplestore_putvalues(st->held, g_held_desc, values, nulls);
  pfree(ops);
}

// Emits g_ops as the record of what arrives in slot entity_id: now, or at
// the end of the statement when it holds arrivals.
void emit_arrival(Source* s, int64 entity_id) {
  if (g_nops == 0) return;
  if (g_load_sink || !g_statement || !g_statement->holds) {
    emit(s, entity_id);
    return;
  }
  hold(g_statement, entity_id, s->outbox, g_ops.data, g_ops.len, g_nops);
  resetStringInfo(&g_ops);
  g_nops = 0;
}

// At the end of statement `st`: its held arrivals, in the order they came,
// are written, or passed on to the enclosing statement when that one holds
// arrivals too (a trigger's nested INSERT into a slot that a row of the
// enclosing statement leaves must come after that leave).
void write_held(Statement* st) {
  if (!st->held) return;
  init_buffers();
  TupleTableSlot* slot = MakeSingleTupleTableSlot(g_held_desc, &TTSOpsMinimalTuple);
  tuplestore_rescan(st->held);
  Statement* outer = st->outer && st->outer->holds ? st->outer : nullptr;
  while (tuplestore_gettupleslot(st->held, true, false, slot)) {
    bool isnull;
    const int64 entity = DatumGetInt64(slot_getattr(slot, 1, &isnull));
    const bool outbox = DatumGetBool(slot_getattr(slot, 2, &isnull));
    bytea* ops = DatumGetByteaPP(slot_getattr(slot, 3, &isnull));
    const int nops = DatumGetInt32(slot_getattr(slot, 4, &isnull));
    if (outer) {
      hold(outer, entity, outbox, VARDATA_ANY(ops), static_cast<int>(VARSIZE_ANY_EXHDR(ops)), nops);
      continue;
    }
    resetStringInfo(&g_ops);
    appendBinaryStringInfo(&g_ops, VARDATA_ANY(ops), VARSIZE_ANY_EXHDR(ops));
    g_nops = nops;
    emit_record(outbox, entity);
  }
  resetStringInfo(&g_ops);
  g_nops = 0;
  ExecDropSingleTupleTableSlot(slot);
  tuplestore_end(st->held);
  st->held = nullptr;
}

// ExecutorFinish runs the statement's AFTER row triggers: around it, the
// statement holds arrivals and writes them at its end. A nested statement
// (in a trigger or function) has its own, passed on to the enclosing one
// when that one holds. On error nothing held is written (the statement's
// transaction or subtransaction rolls back).
void finish_hook(QueryDesc* qd) {
  const PlannedStmt* ps = qd->plannedstmt;
  const bool upsert = ps && ps->planTree && IsA(ps->planTree, ModifyTable) &&
                      castNode(ModifyTable, ps->planTree)->onConflictAction == ONCONFLICT_UPDATE;
  // A statement inside one that holds arrivals holds its own too (write_held).
  Statement st{qd->operation == CMD_UPDATE || qd->operation == CMD_MERGE || upsert || (ps && ps->hasModifyingCTE) ||
                   (g_statement && g_statement->holds),
               CurrentMemoryContext, nullptr, g_statement};
  g_statement = &st;
  PG_TRY();
  {
    if (g_prev_finish)
      g_prev_finish(qd);
    else
      standard_ExecutorFinish(qd);
    write_held(&st);
  }
  PG_FINALLY();
  { g_statement = st.outer; }
  PG_END_TRY();
}

// Emits g_ops as one record for entity_id, then clears it.
void emit(Source* s, int64 entity_id) {
  if (g_nops == 0) return;
  emit_keep(s, entity_id);
  resetStringInfo(&g_ops);
  g_nops = 0;
}

}  // namespace bitdex::pg::trigger

namespace bitdex::pg {
using namespace trigger;

void emit_clear(const char* message, int len, const char* json, bool outbox) {
  init_buffers();
  if (outbox) {
    UserContext owner = as_owner_begin();
    Oid types[1] = {TEXTOID};
    Datum values[1] = {CStringGetTextDatum(json)};
    if (SPI_execute_with_args("INSERT INTO bitdex_sync.ops (entity_id, ops) VALUES (0, $1::jsonb)", 1, types, values,
                              nullptr, false, 0) != SPI_OK_INSERT)
      elog(ERROR, "bitdex_sync: outbox insert failed");
    as_owner_end(owner);
  } else {
    resetStringInfo(&g_record);
    appendBinaryStringInfo(&g_record, message, len);
    seal_record();
    bitdex::pg::compat::log_message(bitdex::capture::kMessagePrefix, g_record.data, g_record.len, true);
  }
  note_captured(outbox);
}

void install_executor_hook() {
  g_prev_finish = ExecutorFinish_hook;
  ExecutorFinish_hook = finish_hook;
}

}  // namespace bitdex::pg
