// The capture trigger, fan-in and fan-outs: a child row arriving under a
// query fan-out's parent takes the parent's fields (read FOR SHARE, under
// key locks); a query fan-out's row renders its BitDex query ({col}, {ids}
// from its expression, a join filter) into a queryOpSet; a per-row fan-out
// writes one record per child slot, resolved in the writing transaction.
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

struct FanInRows {
  FanIn* f;
  OpKind kind;
};

bool fan_in_row(TupleTableSlot* slot, void* arg) {
  auto* a = static_cast<FanInRows*>(arg);
  for (int j = 0; j < a->f->ncols; j++) {
    bool isnull;
    Datum d = slot_getattr(slot, j + 1, &isnull);
    op_field(a->kind, a->f->targets[j], &a->f->cols[j], d, isnull);
  }
  return true;
}

// Key locks (trigger_gen::fan_in_sql says why): advisory-class
// transaction locks in this database, in two levels per parent table, as
// PostgreSQL's own table and row locks nest:
//   - a key: a 64-bit hash of the table and the key's text (equal keys of
//     different integer types are one key; a collision only makes two keys
//     wait for each other). A child takes it shared, a parent's change
//     exclusive, each with the table level in an intent mode first (child
//     RowShareLock, parent RowExclusiveLock: no conflict between them);
//   - the table: after kKeyLocksPerTable keys of one table in a transaction
//     (a bulk INSERT of children or UPDATE of parents), the transaction takes
//     the table level itself, shared (child) or exclusive (parent), and no
//     more key locks: the lock table (max_locks_per_transaction) never fills.
constexpr int kKeyLocksPerTable = 16;
constexpr uint16 kKeyLockClass = 0x6264, kTableLockClass = 0x6265;  // pg_advisory_* use 1 and 2

struct KeyLockCount {
  LocalTransactionId lxid;
  Oid table;
  bool child;
  int keys;  // key locks taken; past kKeyLocksPerTable, the table level instead
};
KeyLockCount g_key_locks[8];

KeyLockCount* key_lock_count(Oid table, bool child) {
  KeyLockCount* victim = &g_key_locks[0];
  for (KeyLockCount& c : g_key_locks) {
    if (c.lxid == MyProc->lxid && c.table == table && c.child == child) return &c;
    if (c.lxid != MyProc->lxid) victim = &c;
  }
  *victim = KeyLockCount{MyProc->lxid, table, child, 0};  // (a table past the 8 counted gets counted again)
  return victim;
}

void lock_key(Oid table, FmgrInfo* out, Datum value, bool child) {
  LOCKTAG tag;
  KeyLockCount* count = key_lock_count(table, child);
  SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, table, 0, kTableLockClass);
  if (count->keys >= kKeyLocksPerTable) {
    (void)LockAcquire(&tag, child ? ShareLock : ExclusiveLock, false, false);
    return;
  }
  (void)LockAcquire(&tag, child ? RowShareLock : RowExclusiveLock, false, false);
  char* text = OutputFunctionCall(out, value);
  const uint64 h = hash_bytes_extended(reinterpret_cast<const unsigned char*>(text), static_cast<int>(strlen(text)),
                                       static_cast<uint64>(table));
  pfree(text);
  SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, static_cast<uint32>(h >> 32), static_cast<uint32>(h), kKeyLockClass);
  if (LockAcquire(&tag, child ? ShareLock : ExclusiveLock, false, false) == LOCKACQUIRE_OK) count->keys++;
}

// A fan-out parent's change: the exclusive key lock of each key it had and has.
void lock_parent_keys(Source* s, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  for (TupleTableSlot* row : {oldrow, newrow}) {
    if (!row) continue;
    bool isnull;
    Datum key = eval(s, &s->qcols[0], row, &isnull);
    if (!isnull) lock_key(s->fan_in_lock, &s->qcols[0].out, key, false);
  }
}

// The parents' fields the row takes (kind Set) or gives back (Remove) as a
// child of each fan-in (of the one on field `only`, when given), found by
// the value of its field F in `row`. Only F's changes call it for an
// UPDATE: a parent's own changes reach its children through its queryOpSet.
void fan_in_ops(Source* s, OpKind kind, TupleTableSlot* row, int only) {
  for (int k = 0; k < s->nfan_ins; k++) {
    FanIn* f = &s->fan_ins[k];
    if (only >= 0 && f->field != only) continue;
    Field* field = &s->fields[f->field];
    bool isnull;
    Datum key = eval(s, &field->value, row, &isnull);
    if (isnull) continue;  // no parent has a NULL key
    FanInRows a{f, kind};
    if (g_load_sink) {  // a load: the chunk's snapshot and place order it (docs/load.md)
      run_stored_query(f->query, 1, &field->value.type, &key, &isnull, fan_in_row, &a);
      continue;
    }
    if (OidIsValid(f->lock)) lock_key(f->lock, &f->key_out, key, true);
    // The latest snapshot: what committed before the lock was granted. (On
    // an error the (sub)transaction's abort pops it.)
    PushActiveSnapshot(GetLatestSnapshot());
    run_stored_query(f->query, 1, &field->value.type, &key, &isnull, fan_in_row, &a);
    PopActiveSnapshot();
  }
}

std::string* g_ids = nullptr;  // static-lifetime scratch
char g_ids_error[256];

// "[1,2,"x"]" -> "1, 2, \"x\""; a scalar -> itself, into *g_ids. 1 when
// there are ids, 0 for null or [], -1 when the text is not JSON (g_ids_error).
int ids_list(const char* json_text) noexcept {
  int n = 0;
  bool ok = run_cpp(
      [&] {
        if (!g_ids) g_ids = new std::string();
        g_ids->clear();
        bitdex::json::Value v = bitdex::json::parse(json_text);
        if (v.type == bitdex::json::Type::Null) return true;
        if (v.type != bitdex::json::Type::Array) {
          bitdex::json::write(*g_ids, v);
          n = 1;
          return true;
        }
        for (size_t i = 0; i < v.items.size(); i++) {
          if (i) *g_ids += ", ";
          bitdex::json::write(*g_ids, v.items[i]);
        }
        n = v.items.empty() ? 0 : 1;
        return true;
      },
      g_ids_error, sizeof g_ids_error);
  return ok ? n : -1;
}

// Runs stored query `q` with its n parameters evaluated on `row` (with the
// writer's rights, in the active snapshot), passing each result row to `cb`.
void run_on_row(Source* s, StoredQuery* q, Compiled* params, int n, TupleTableSlot* row,
                bool (*cb)(TupleTableSlot*, void*), void* arg) {
  Datum* values = (Datum*)palloc(sizeof(Datum) * (n > 0 ? n : 1));
  bool* nulls = (bool*)palloc(sizeof(bool) * (n > 0 ? n : 1));
  Oid* types = (Oid*)palloc(sizeof(Oid) * (n > 0 ? n : 1));
  for (int i = 0; i < n; i++) {
    values[i] = eval(s, &params[i], row, &nulls[i]);
    types[i] = params[i].type;
  }
  run_stored_query(q, n, types, values, nulls, cb, arg);
}

// The first row's value (jsonb) as text, or nullptr when NULL.
bool first_jsonb_text(TupleTableSlot* slot, void* arg) {
  bool isnull;
  Datum d = slot_getattr(slot, 1, &isnull);
  *static_cast<char**>(arg) = isnull ? nullptr : DatumGetCString(DirectFunctionCall1(jsonb_out, d));
  return false;
}

// Runs the fan-out's expression for `row` (with the writer's rights) and
// leaves the {ids} text in *g_ids. False when it yields NULL or nothing.
bool compute_ids(Source* s, TupleTableSlot* row) {
  char* text = nullptr;
  run_on_row(s, s->ids, s->ids_params, s->nids, row, first_jsonb_text, &text);
  if (!text) return false;
  const int got = ids_list(text);
  if (got < 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
                    errmsg("bitdex_sync: the fan-out expression gave \"%s\": %s", text, g_ids_error)));
  return got > 0;
}

// The BitDex query with every {col} replaced by that column's text on `row`
// and {ids} by the expression's result (computed already into *g_ids).
void render_query(Source* s, TupleTableSlot* row, StringInfo out) {
  int col = 0;
  for (const char* p = s->query; *p; p++) {
    if (*p != '{') {
      appendStringInfoChar(out, *p);
      continue;
    }
    const char* end = strchr(p, '}');
    if (end - p == 4 && strncmp(p, "{ids}", 5) == 0) {
      appendStringInfoString(out, g_ids->c_str());
      p = end;
      continue;
    }
    bool isnull;
    Datum d = eval(s, &s->qcols[col++], row, &isnull);
    if (isnull) {
      appendStringInfoString(out, "null");
    } else {
      char* t = OutputFunctionCall(&s->qcols[col - 1].out, d);
      appendStringInfoString(out, t);
      pfree(t);
    }
    p = end;
  }
}

bool first_bool(TupleTableSlot* slot, void* arg) {
  bool isnull;
  Datum d = slot_getattr(slot, 1, &isnull);
  *static_cast<bool*>(arg) = !isnull && DatumGetBool(d);
  return false;
}

// Whether `row` passes the fan-out's filter: over the row alone, or (join
// filter) over the row joined to the join's tables, run with the writer's
// rights in the writing transaction's snapshot.
bool filter_holds(Source* s, TupleTableSlot* row) {
  if (!s->join_filter) return cond_true(s, &s->filter, row);
  bool holds = false;
  run_on_row(s, s->join_filter, s->jf_params, s->njf, row, first_bool, &holds);
  return holds;
}

// Applies a fan-out's filter to the event: a row entering the filter counts
// as an INSERT, one leaving it as a DELETE; false when the row is outside the
// filter on every side (nothing to capture).
bool filtered_event(Source* s, TriggerEvent* ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  if (!s->has_filter && !s->join_filter) return true;
  bool was = oldrow && filter_holds(s, oldrow);
  bool is = newrow && filter_holds(s, newrow);
  if (was && is) return true;
  if (is) *ev = (*ev & ~TRIGGER_EVENT_OPMASK) | TRIGGER_EVENT_INSERT;
  if (was) *ev = (*ev & ~TRIGGER_EVENT_OPMASK) | TRIGGER_EVENT_DELETE;
  return was || is;
}

// The row whose values address the children: OLD when they are being taken away.
TupleTableSlot* addressing_row(TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  return TRIGGER_FIRED_BY_DELETE(ev) || !newrow ? oldrow : newrow;
}

// Whether an UPDATE changed what the fan-out's query addresses: a value its
// {col} placeholders or its expression's parameters read.
bool query_key_changed(Source* s, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  const struct {
    Compiled* cols;
    int n;
  } keys[] = {{s->qcols, s->nqcols}, {s->ids_params, s->nids}};
  for (const auto& [cols, n] : keys) {
    for (int i = 0; i < n; i++) {
      if (!may_change(&cols[i])) continue;
      bool onull, nnull;
      Datum o = eval(s, &cols[i], oldrow, &onull);
      Datum v = eval(s, &cols[i], newrow, &nnull);
      if (onull != nnull || (!onull && !datum_image_eq(o, v, cols[i].typbyval, cols[i].typlen))) return true;
    }
  }
  return false;
}

// Whether a {col} placeholder of the query is NULL on `row`: SQL equality
// matches no row then (as the fan-in and verify read it), so the row
// addresses no slot.
bool query_has_null(Source* s, TupleTableSlot* row) {
  for (int i = 0; i < s->nqcols; i++) {
    bool isnull;
    (void)eval(s, &s->qcols[i], row, &isnull);
    if (isnull) return true;
  }
  return false;
}

void fan_out_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  // Before anything: a filter the row enters or leaves matters to children too.
  if (OidIsValid(s->fan_in_lock) && s->nqcols == 1 && !g_load_sink) lock_parent_keys(s, oldrow, newrow);
  if (!filtered_event(s, &ev, oldrow, newrow)) return;
  // The row now addresses other slots (its key changed): the old ones lose
  // its values as at a DELETE, the new ones get them as at an INSERT.
  if (oldrow && newrow && query_key_changed(s, oldrow, newrow)) {
    fan_out_row(s, (ev & ~TRIGGER_EVENT_OPMASK) | TRIGGER_EVENT_DELETE, oldrow, nullptr);
    fan_out_row(s, (ev & ~TRIGGER_EVENT_OPMASK) | TRIGGER_EVENT_INSERT, nullptr, newrow);
    return;
  }
  if (query_has_null(s, addressing_row(ev, oldrow, newrow))) return;
  // Nested ops go to g_a first: the queryOpSet's op count is known only after.
  StringInfoData nested;
  initStringInfo(&nested);
  int nested_ops = 0;
  InfoOut nout{&nested};
  bool isnull, onull, nnull;
  auto nested_op = [&](OpKind kind, Field* f, Datum d, bool dnull) {
    bitdex::codec::write_field_op(nout, kind, f->target, strlen(f->target));
    put_value(nout, &f->value, d, dnull);
    nested_ops++;
  };
  TupleTableSlot* row = addressing_row(ev, oldrow, newrow);
  for (int i = 0; i < s->nfields; i++) {
    Field* f = &s->fields[i];
    if (TRIGGER_FIRED_BY_INSERT(ev)) {
      Datum n = eval(s, &f->value, newrow, &isnull);
      nested_op(OpKind::Set, f, n, isnull);
    } else if (TRIGGER_FIRED_BY_DELETE(ev)) {
      // A deleted parent takes its values away from the slots that still match.
      Datum o = eval(s, &f->value, oldrow, &isnull);
      nested_op(OpKind::Remove, f, o, isnull);
    } else {
      if (!may_change(&f->value)) continue;
      Datum o = eval(s, &f->value, oldrow, &onull);
      Datum n = eval(s, &f->value, newrow, &nnull);
      if (!distinct(&f->value, o, onull, n, nnull)) continue;
      nested_op(OpKind::Remove, f, o, onull);
      nested_op(OpKind::Set, f, n, nnull);
    }
  }
  // With an expression, its result picks the slots; no result, nothing to do.
  if (nested_ops > 0 && s->ids && !compute_ids(s, row)) nested_ops = 0;
  if (nested_ops > 0) {
    StringInfoData query;
    initStringInfo(&query);
    render_query(s, row, &query);
    InfoOut out{&g_ops};
    bitdex::codec::write_byte(out, static_cast<uint8_t>(OpKind::QueryOpSet));
    bitdex::codec::write_byte(out, 1);  // has query
    bitdex::codec::write_bytes(out, query.data, static_cast<size_t>(query.len));
    bitdex::codec::write_varint(out, static_cast<uint64_t>(nested_ops));
    appendBinaryStringInfo(&g_ops, nested.data, nested.len);
    g_nops++;
    emit(s, slot_of(s, row));
    pfree(query.data);
  }
  pfree(nested.data);
}

struct Children {
  Oid type;
  int64* ids;
  int n, cap;
};

bool add_child(TupleTableSlot* slot, void* arg) {
  auto* c = static_cast<Children*>(arg);
  bool isnull;
  Datum d = slot_getattr(slot, 1, &isnull);
  if (isnull) return true;  // a child without a slot id cannot be addressed
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 16;
    c->ids = c->ids ? (int64*)repalloc(c->ids, sizeof(int64) * c->cap) : (int64*)palloc(sizeof(int64) * c->cap);
  }
  c->ids[c->n++] = c->type == INT2OID ? DatumGetInt16(d) : c->type == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d);
  return true;
}

// The child slots of parent key `key`, read with the writer's rights inside
// the writing transaction. Returns a palloc'd array of *n ids.
int64* child_slots(Source* s, Datum key, int* n) {
  Children c{exprType((Node*)linitial_node(TargetEntry, s->rows->query->targetList)->expr), nullptr, 0, 0};
  bool isnull = false;
  run_stored_query(s->rows, 1, &s->parent_key.type, &key, &isnull, add_child, &c);
  *n = c.n;
  return c.ids;
}

// fan_out_per_row: the parent's field ops, once per child row that references it.
void row_fan_out_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  if (!filtered_event(s, &ev, oldrow, newrow)) return;
  bool isnull, onull, nnull;
  for (int i = 0; i < s->nfields; i++) {
    Field* f = &s->fields[i];
    if (TRIGGER_FIRED_BY_INSERT(ev)) {
      Datum n = eval(s, &f->value, newrow, &isnull);  // before reading isnull
      op_field(OpKind::Set, f->target, &f->value, n, isnull);
    } else if (TRIGGER_FIRED_BY_DELETE(ev)) {
      Datum o = eval(s, &f->value, oldrow, &isnull);  // before reading isnull
      op_field(OpKind::Remove, f->target, &f->value, o, isnull);
    } else {
      if (!may_change(&f->value)) continue;
      Datum o = eval(s, &f->value, oldrow, &onull);
      Datum n = eval(s, &f->value, newrow, &nnull);
      if (!distinct(&f->value, o, onull, n, nnull)) continue;
      op_field(OpKind::Remove, f->target, &f->value, o, onull);
      op_field(OpKind::Set, f->target, &f->value, n, nnull);
    }
  }
  if (g_nops == 0) return;
  Datum key = eval(s, &s->parent_key, addressing_row(ev, oldrow, newrow), &isnull);
  if (isnull) return;  // no child can reference a NULL key
  int n = 0;
  int64* children = child_slots(s, key, &n);
  for (int i = 0; i < n; i++) emit_keep(s, children[i]);
  if (children) pfree(children);
}

}  // namespace bitdex::pg::trigger
