// The capture trigger: one C function, bitdex_sync.capture(), behind every
// trigger apply_config creates. At the first row in a backend it compiles the
// definition apply_config recorded for the firing trigger in
// bitdex_sync.sources (the spec and its analysed expression trees; a trigger
// that was not recorded is refused) and keeps ExprStates; plain columns are
// read straight from the slot. Per row it evaluates them on OLD/NEW, encodes
// the BitDex ops in the ops WAL's binary form and emits them as a
// transactional logical decoding message (or an outbox row).
//
// Wall: everything from here down runs inside PostgreSQL's executor and may
// ereport at any call, so the functions called per row and at compile time
// hold no C++ objects with destructors. The spec is parsed by the C++ JSON
// reader into static storage under try/catch; errors are raised after it.
#include <cstring>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/pg/capture_key.hpp"
#include "bitdex_sync/pg/compat.hpp"
#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"

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

extern "C" {
PG_FUNCTION_INFO_V1(bitdex_sync_capture);
PG_FUNCTION_INFO_V1(bitdex_sync_op_value);
PG_FUNCTION_INFO_V1(bitdex_sync_op_value_text);
Datum bitdex_sync_capture(PG_FUNCTION_ARGS);
Datum bitdex_sync_op_value(PG_FUNCTION_ARGS);
Datum bitdex_sync_op_value_text(PG_FUNCTION_ARGS);
}

namespace bitdex::pg {

namespace {

using bitdex::OpKind;
using bitdex::OpValue;

// ---- compiled form -----------------------------------------------------------

struct Compiled {     // one expression
  AttrNumber attnum;  // > 0: a plain column, read from the slot
  ExprState* state;   // otherwise
  Oid type;
  Conv conv;
  int16 typlen;
  bool typbyval;
  Bitmapset* cols;  // columns it reads, offset by FirstLowInvalidHeapAttributeNumber
  bool always;      // volatile or whole-row: may change whatever the UPDATE touched
  FmgrInfo out;     // output function (Output, Number)
};

struct Field {
  const char* target;
  Compiled value;
  Compiled cond;  // join computed fields: the condition
};

enum class Kind : uint8_t { Direct, Join, QueryFanOut, RowFanOut };

// A direct source's rows are the children of a query fan-out "F eq {col}":
// a row arriving under a parent (INSERT, or a change of F) takes the
// parent's fields (trigger_gen::fan_in_sql, $1 = F's value).
struct FanIn {
  int field;  // index of F in the source's fields
  StoredQuery* query;
  Oid lock;          // the parent table: key locks (lock_key)
  FmgrInfo key_out;  // F's output function: the key's text
  int ncols;
  Compiled* cols;  // how each result column is written (its type)
  const char** targets;
};

struct Source {
  Oid tgoid;  // the firing trigger (a partition's clone of the recorded one, or that one)
  Oid relid;
  bool valid;
  Kind kind;
  bool outbox;
  bool alive, del;
  Compiled slot;
  int nfields;
  Field* fields;    // direct, fan-out: tracked fields; join: [0] = the value, then computed
  bool has_filter;  // join
  Compiled filter;
  const char* query;  // fan-out template
  int nqcols;
  Compiled* qcols;   // one per column placeholder, in order ({ids} excluded)
  StoredQuery* ids;  // fan-out with expression: the query computing {ids}
  int nids;
  Compiled* ids_params;      // its $1..$n
  StoredQuery* join_filter;  // query fan-out with "join", no "expression": whether a row counts
  int njf;
  Compiled* jf_params;  // its $1..$n: the row's columns it reads
  StoredQuery* rows;    // fan_out_per_row: child slots for a parent key ($1)
  int nfan_ins;
  FanIn* fan_ins;   // direct
  Oid fan_in_lock;  // a query fan-out with a fan-in: its table (key locks, lock_key)
  Compiled parent_key;
  MemoryContext cxt;
  ExprContext* econtext;
  Source* next;
};

Source* g_sources = nullptr;
bool g_callbacks_registered = false;

void drop_plans(Source* s, Oid relid) {
  for (StoredQuery* q : {s->ids, s->rows, s->join_filter})
    if (q) invalidate_stored_query(q, relid);
  for (int i = 0; i < s->nfan_ins; i++) invalidate_stored_query(s->fan_ins[i].query, relid);
}

// Relcache invalidation of a captured table (ALTER TABLE, ...): recompile;
// of a table a fan-out reads: plan its query again.
void invalidate_relation(Datum, Oid relid) {
  for (Source* s = g_sources; s; s = s->next) {
    if (relid == InvalidOid || s->relid == relid) s->valid = false;
    drop_plans(s, relid);
  }
}

// A function changed (CREATE OR REPLACE, ALTER): plans may have inlined it.
void invalidate_functions(Datum, int, uint32) {
  for (Source* s = g_sources; s; s = s->next) drop_plans(s, InvalidOid);
}

// ---- the recorded definition ---------------------------------------------------

bitdex::json::Value g_spec;
char g_spec_error[512];

bool load_spec(const char* text) noexcept {
  return run_cpp(
      [&] {
        g_spec = bitdex::json::parse(text);
        return g_spec.type == bitdex::json::Type::Object;
      },
      g_spec_error, sizeof g_spec_error);
}

const bitdex::json::Value* spec_get(const bitdex::json::Value& obj, const char* key) noexcept {
  return obj.type == bitdex::json::Type::Object ? obj.find(key) : nullptr;
}

const char* spec_str(const bitdex::json::Value& obj, const char* key) {
  const bitdex::json::Value* v = spec_get(obj, key);
  if (!v || v->type != bitdex::json::Type::String)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("bitdex_sync capture spec lacks \"%s\"", key),
                    errhint("Apply the config again with bitdex_sync.apply_config().")));
  return v->text.c_str();
}

bool spec_bool(const bitdex::json::Value& obj, const char* key) {
  const bitdex::json::Value* v = spec_get(obj, key);
  return v && v->type == bitdex::json::Type::Bool && v->boolean;
}

int spec_count(const bitdex::json::Value& obj, const char* key) {
  const bitdex::json::Value* v = spec_get(obj, key);
  return v && v->type == bitdex::json::Type::Array ? static_cast<int>(v->items.size()) : 0;
}

// The trigger apply_config created: the firing one, or for a partition's
// clone the trigger on the partitioned table it was cloned from.
Oid recorded_trigger(const Trigger* t) {
  Oid oid = t->tgoid;
  if (!t->tgisclone) return oid;
  Relation tgrel = table_open(TriggerRelationId, AccessShareLock);
  for (;;) {
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(oid));
    SysScanDesc scan = systable_beginscan(tgrel, TriggerOidIndexId, true, nullptr, 1, &key);
    HeapTuple tup = systable_getnext(scan);
    Oid parent = HeapTupleIsValid(tup) ? ((Form_pg_trigger)GETSTRUCT(tup))->tgparentid : InvalidOid;
    systable_endscan(scan);
    if (!OidIsValid(parent)) break;
    oid = parent;
  }
  table_close(tgrel, AccessShareLock);
  return oid;
}

// What apply_config recorded for trigger `tgoid` in bitdex_sync.sources:
// its table, spec and analysed trees (palloc'd text). False when nothing is.
// Read directly with the latest snapshot, not through SPI: the writer has no
// rights on the table, and a transaction whose snapshot predates the
// apply_config that created the trigger must still find its row.
// The row of bitdex_sync.sources of this installation whose column
// `match` (trigger_oid or truncate_trigger_oid) is `tgoid`: its table and
// the text columns `cols` (palloc'd). False when there is none.
bool recorded_row(Oid tgoid, const char* match, Oid* table, int ncols, const char* const* cols, char** out) {
  Oid nsp = get_namespace_oid("bitdex_sync", true);
  Oid relid = OidIsValid(nsp) ? get_relname_relid("sources", nsp) : InvalidOid;
  Oid instance_rel = OidIsValid(nsp) ? get_relname_relid("instance", nsp) : InvalidOid;
  if (!OidIsValid(relid) || !OidIsValid(instance_rel)) return false;
  Snapshot snap = RegisterSnapshot(GetLatestSnapshot());
  // This installation's id: rows of another (a restored dump) name other
  // OIDs and trees, whatever OID the trigger happens to have now.
  int64 instance = 0;
  bool have_instance = false;
  {
    Relation rel = table_open(instance_rel, AccessShareLock);
    const AttrNumber a_id = get_attnum(instance_rel, "id");
    TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
    if (HeapTuple tup = heap_getnext(scan, ForwardScanDirection)) {
      bool isnull;
      Datum d = heap_getattr(tup, a_id, RelationGetDescr(rel), &isnull);
      have_instance = a_id != InvalidAttrNumber && !isnull;
      if (have_instance) instance = DatumGetInt64(d);
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
  }
  Relation rel = table_open(relid, AccessShareLock);
  const AttrNumber a_trigger = get_attnum(relid, match), a_table = get_attnum(relid, "table_oid"),
                   a_instance = get_attnum(relid, "instance");
  AttrNumber* a_cols = (AttrNumber*)palloc(sizeof(AttrNumber) * ncols);
  bool complete = a_trigger != InvalidAttrNumber && a_table != InvalidAttrNumber && a_instance != InvalidAttrNumber;
  for (int i = 0; i < ncols; i++) complete = complete && (a_cols[i] = get_attnum(relid, cols[i])) != InvalidAttrNumber;
  if (!complete) elog(ERROR, "bitdex_sync: bitdex_sync.sources lacks the columns of this version");
  TableScanDesc scan = table_beginscan(rel, snap, 0, nullptr);
  TupleDesc desc = RelationGetDescr(rel);
  bool found = false;
  HeapTuple tup;
  while (have_instance && !found && (tup = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
    bool isnull;
    Datum trigger = heap_getattr(tup, a_trigger, desc, &isnull);
    if (isnull || DatumGetObjectId(trigger) != tgoid) continue;
    Datum inst = heap_getattr(tup, a_instance, desc, &isnull);
    if (isnull || DatumGetInt64(inst) != instance) continue;
    Datum t = heap_getattr(tup, a_table, desc, &isnull);
    if (isnull) continue;
    bool all = true;
    for (int i = 0; i < ncols && all; i++) {
      Datum d = heap_getattr(tup, a_cols[i], desc, &isnull);
      all = !isnull;
      if (all) out[i] = TextDatumGetCString(d);
    }
    if (!all) continue;
    *table = DatumGetObjectId(t);
    found = true;
  }
  table_endscan(scan);
  UnregisterSnapshot(snap);
  table_close(rel, AccessShareLock);
  return found;
}

// What apply_config recorded for trigger `tgoid` in bitdex_sync.sources:
// its table, spec and analysed trees (palloc'd text). False when nothing is.
// Read directly with the latest snapshot, not through SPI: the writer has no
// rights on the table, and a transaction whose snapshot predates the
// apply_config that created the trigger must still find its row.
bool recorded_source(Oid tgoid, Oid* table, char** spec, char** compiled) {
  static const char* const cols[] = {"spec", "compiled"};
  char* out[2];
  if (!recorded_row(tgoid, "trigger_oid", table, 2, cols, out)) return false;
  *spec = out[0];
  *compiled = out[1];
  return true;
}

// What an expression is for: a captured value (must be capturable), a
// condition (must be boolean), or a bound query parameter (any type).
enum class Use { Value, Condition, Bound };

// The output function of `type`, looked up into `out` (kept in `cxt`).
void output_function(Oid type, FmgrInfo* out, MemoryContext cxt) {
  Oid outfn;
  bool varlena;
  getTypeOutputInfo(type, &outfn, &varlena);
  fmgr_info_cxt(outfn, out, cxt);
}

// How values of `type` are written (conv, length, output function).
void describe_type(Source* s, Oid type, Compiled* c) {
  c->type = type;
  c->conv = conv_for_type(c->type);
  get_typlenbyval(c->type, &c->typlen, &c->typbyval);
  if (c->conv == Conv::Output || c->conv == Conv::Number) output_function(type, &c->out, s->cxt);
}

// An OID the spec holds under `key` (a JSON number), or InvalidOid.
Oid spec_oid(const bitdex::json::Value& obj, const char* key) {
  const bitdex::json::Value* v = spec_get(obj, key);
  return v ? static_cast<Oid>(strtoul(v->text.c_str(), nullptr, 10)) : InvalidOid;
}

void compile_one(Source* s, Expr* e, Compiled* c, Use use, const char* what) {
  describe_type(s, exprType((Node*)e), c);
  c->cols = nullptr;
  pull_varattnos((Node*)e, 1, &c->cols);
  c->always = contain_volatile_functions((Node*)e) ||
              bms_is_member(InvalidAttrNumber - FirstLowInvalidHeapAttributeNumber, c->cols);
  if (use == Use::Condition && c->type != BOOLOID)
    ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH), errmsg("bitdex_sync: %s must be boolean", what)));
  if (use == Use::Value && c->conv == Conv::Unsupported)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("bitdex_sync: %s has type %s, which cannot be captured", what, format_type_be(c->type)),
                    errhint("Cast it in the expression, e.g. \"{col}::text as field\".")));
  if (IsA(e, Var) && ((Var*)e)->varno == 1) {
    c->attnum = ((Var*)e)->varattno;
    c->state = nullptr;
  } else {
    c->attnum = 0;
    c->state = ExecInitExpr(expression_planner(e), nullptr);
  }
}

StoredQuery* stored_query(Node* tree) {
  if (!tree) return nullptr;
  auto* q = static_cast<StoredQuery*>(palloc0(sizeof(StoredQuery)));
  q->query = castNode(Query, tree);
  return q;
}

// Builds the compiled form of `s` from g_spec (already loaded) and the
// analysed trees apply_config stored: a List of (the select list's Query
// over the recorded table, the {ids} Query or NULL, the children's Query or
// NULL). `recorded` is the table they were analysed against; when the
// trigger fires on a partition, column numbers are mapped to the partition's.
void compile(Source* s, Relation rel, Oid recorded, const char* compiled) {
  const bitdex::json::Value& spec = g_spec;
  const char* kind = spec_str(spec, "kind");
  s->kind = strcmp(kind, "join") == 0              ? Kind::Join
            : strcmp(kind, "fan_out") == 0         ? Kind::QueryFanOut
            : strcmp(kind, "fan_out_per_row") == 0 ? Kind::RowFanOut
                                                   : Kind::Direct;
  if (strcmp(kind, "direct") != 0 && s->kind == Kind::Direct)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("bitdex_sync: source kind \"%s\" is not supported", kind)));
  s->outbox = strcmp(spec_str(spec, "sink"), "outbox") == 0;
  s->alive = spec_bool(spec, "alive");
  s->del = spec_bool(spec, "delete");
  const bool join = s->kind == Kind::Join;
  const int nconds = join ? spec_count(spec, "computed") : 0;
  s->nfields = join ? 1 + nconds : spec_count(spec, "fields");
  s->has_filter = spec_get(spec, "filter") != nullptr;
  s->nqcols = spec_count(spec, "query_cols");
  s->nids = spec_count(spec, "ids_params");
  s->njf = spec_count(spec, "filter_params");
  if (s->kind == Kind::QueryFanOut) s->query = MemoryContextStrdup(s->cxt, spec_str(spec, "query"));
  // The order of trigger_gen::spec_expressions.
  const int expected = 1 + s->nfields + nconds + (s->has_filter ? 1 : 0) + s->nqcols + s->nids +
                       (s->kind == Kind::RowFanOut ? 1 : 0) + s->njf;

  MemoryContext old = MemoryContextSwitchTo(s->cxt);
  List* trees = castNode(List, stringToNode(compiled));
  // (select list, {ids} query, children query[, join filter query[, fan-in
  // queries]]): definitions recorded before join filters have three, before
  // fan-ins four.
  if (list_length(trees) < 3 || list_length(trees) > 5)
    elog(ERROR, "bitdex_sync: the recorded capture definition is malformed");
  Query* select = castNode(Query, linitial(trees));
  List* exprs = NIL;
  ListCell* lc;
  foreach (lc, select->targetList) exprs = lappend(exprs, lfirst_node(TargetEntry, lc)->expr);
  if (list_length(exprs) != expected)
    elog(ERROR, "bitdex_sync: capture definition has %d expressions, expected %d", list_length(exprs), expected);
  if (RelationGetRelid(rel) != recorded) {
    Relation parent = table_open(recorded, AccessShareLock);
    AttrMap* map = build_attrmap_by_name(RelationGetDescr(rel), RelationGetDescr(parent));
    table_close(parent, AccessShareLock);
    bool whole_row = false;
    exprs = (List*)map_variable_attnos((Node*)exprs, 1, 0, map, InvalidOid, &whole_row);
    if (whole_row)
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("bitdex_sync: whole-row references cannot be captured on partitions")));
  }
  s->ids = stored_query((Node*)lsecond(trees));
  s->rows = stored_query((Node*)lthird(trees));
  s->join_filter = list_length(trees) >= 4 ? stored_query((Node*)lfourth(trees)) : nullptr;
  List* fan_ins = list_length(trees) >= 5 ? castNode(List, list_nth(trees, 4)) : NIL;
  if (spec_get(spec, "filter_sql") && !s->join_filter)
    elog(ERROR, "bitdex_sync: the recorded capture definition lacks its join filter query");
  if ((s->nids > 0 || s->kind == Kind::QueryFanOut) && spec_get(spec, "ids_params") && !s->ids)
    elog(ERROR, "bitdex_sync: the recorded capture definition lacks its {ids} query");
  if (s->kind == Kind::RowFanOut && !s->rows)
    elog(ERROR, "bitdex_sync: the recorded capture definition lacks its children query");

  int at = 0;
  compile_one(s, (Expr*)list_nth(exprs, at++), &s->slot, Use::Value, "the slot column");
  if (s->slot.conv != Conv::Int2 && s->slot.conv != Conv::Int4 && s->slot.conv != Conv::Int8)
    ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH), errmsg("bitdex_sync: the slot column must be an integer")));
  s->fields = (Field*)palloc0(sizeof(Field) * (s->nfields > 0 ? s->nfields : 1));
  if (join) {
    const bitdex::json::Value* value = spec_get(spec, "value");
    if (!value) ereport(ERROR, (errmsg("bitdex_sync capture spec lacks \"value\"")));
    s->fields[0].target = pstrdup(spec_str(*value, "f"));
    compile_one(s, (Expr*)list_nth(exprs, at++), &s->fields[0].value, Use::Value, "the join value");
    const bitdex::json::Value* computed = spec_get(spec, "computed");
    for (int i = 0; i < nconds; i++) {
      Field* f = &s->fields[1 + i];
      f->target = pstrdup(spec_str(computed->items[i], "f"));
      compile_one(s, (Expr*)list_nth(exprs, at++), &f->value, Use::Value, "a computed value");
      compile_one(s, (Expr*)list_nth(exprs, at++), &f->cond, Use::Condition, "a computed condition");
    }
    if (s->has_filter) compile_one(s, (Expr*)list_nth(exprs, at++), &s->filter, Use::Condition, "the filter");
  } else {
    const bitdex::json::Value* fields = spec_get(spec, "fields");
    for (int i = 0; i < s->nfields; i++) {
      s->fields[i].target = pstrdup(spec_str(fields->items[i], "f"));
      compile_one(s, (Expr*)list_nth(exprs, at++), &s->fields[i].value, Use::Value, s->fields[i].target);
    }
  }
  if (s->nqcols > 0) {
    s->qcols = (Compiled*)palloc0(sizeof(Compiled) * s->nqcols);
    for (int i = 0; i < s->nqcols; i++) {
      compile_one(s, (Expr*)list_nth(exprs, at++), &s->qcols[i], Use::Value, "a query column");
      // Query placeholders are rendered as text whatever their type.
      output_function(s->qcols[i].type, &s->qcols[i].out, s->cxt);
    }
  }
  if (s->nids > 0) {
    s->ids_params = (Compiled*)palloc0(sizeof(Compiled) * s->nids);
    for (int i = 0; i < s->nids; i++)
      compile_one(s, (Expr*)list_nth(exprs, at++), &s->ids_params[i], Use::Bound, "an expression parameter");
  }
  if (s->kind == Kind::RowFanOut)
    compile_one(s, (Expr*)list_nth(exprs, at++), &s->parent_key, Use::Bound, "the parent key");
  if (!join && s->has_filter) compile_one(s, (Expr*)list_nth(exprs, at++), &s->filter, Use::Condition, "the filter");
  if (s->njf > 0) {
    s->jf_params = (Compiled*)palloc0(sizeof(Compiled) * s->njf);
    for (int i = 0; i < s->njf; i++)
      compile_one(s, (Expr*)list_nth(exprs, at++), &s->jf_params[i], Use::Bound, "a join filter parameter");
  }
  if (const bitdex::json::Value* fi = spec_get(spec, "fan_in")) {
    if (s->kind != Kind::Direct || list_length(fan_ins) != static_cast<int>(fi->items.size()))
      elog(ERROR, "bitdex_sync: the recorded capture definition lacks its fan-in queries");
    s->nfan_ins = static_cast<int>(fi->items.size());
    s->fan_ins = (FanIn*)palloc0(sizeof(FanIn) * s->nfan_ins);
    for (int k = 0; k < s->nfan_ins; k++) {
      FanIn* f = &s->fan_ins[k];
      const char* field = spec_str(fi->items[k], "field");
      f->field = -1;
      for (int i = 0; i < s->nfields; i++)
        if (strcmp(s->fields[i].target, field) == 0) f->field = i;
      if (f->field < 0) elog(ERROR, "bitdex_sync: a fan-in names field \"%s\", which the source lacks", field);
      f->query = stored_query((Node*)list_nth(fan_ins, k));
      f->lock = spec_oid(fi->items[k], "lock");
      output_function(s->fields[f->field].value.type, &f->key_out, s->cxt);
      const bitdex::json::Value* targets = spec_get(fi->items[k], "fields");
      f->ncols = list_length(f->query->query->targetList);
      if (!targets || static_cast<int>(targets->items.size()) != f->ncols)
        elog(ERROR, "bitdex_sync: a fan-in's fields do not match its query");
      f->cols = (Compiled*)palloc0(sizeof(Compiled) * f->ncols);
      f->targets = (const char**)palloc(sizeof(char*) * f->ncols);
      for (int j = 0; j < f->ncols; j++) {
        describe_type(s, exprType((Node*)list_nth_node(TargetEntry, f->query->query->targetList, j)->expr),
                      &f->cols[j]);
        f->targets[j] = pstrdup(targets->items[j].text.c_str());
      }
    }
  }
  s->fan_in_lock = spec_oid(spec, "fan_in_lock");
  s->econtext = CreateStandaloneExprContext();
  MemoryContextSwitchTo(old);
  s->valid = true;
}

void free_source(Source* s) {
  for (StoredQuery* q : {s->ids, s->rows, s->join_filter})
    if (q && q->cxt) MemoryContextDelete(q->cxt);
  for (int i = 0; i < s->nfan_ins; i++)
    if (s->fan_ins[i].query->cxt) MemoryContextDelete(s->fan_ins[i].query->cxt);
  MemoryContextDelete(s->cxt);  // also frees the old ExprContext's memory
}

// The compiled source of the firing trigger: compiled at its first row in
// this backend (again after an invalidation) from what apply_config recorded
// for it. A trigger apply_config did not record captures nothing: its
// statement fails, whoever created it and whatever its arguments say.
// The compiled source of capture trigger `tgoid` (the recorded one, or a
// partition's clone of it) for rows of `rel`: compiled at its first use in
// this process (again after an invalidation) from what apply_config
// recorded for the trigger `recorded`. nullptr when nothing is recorded.
Source* source_for(Oid tgoid, Oid recorded, Relation rel) {
  Source* s = g_sources;
  while (s && s->tgoid != tgoid) s = s->next;
  if (s && s->valid) return s;
  if (!g_callbacks_registered) {
    CacheRegisterRelcacheCallback(invalidate_relation, (Datum)0);
    CacheRegisterSyscacheCallback(PROCOID, invalidate_functions, (Datum)0);
    g_callbacks_registered = true;
  }
  Oid table = InvalidOid;
  char *spec = nullptr, *compiled = nullptr;
  if (!recorded_source(recorded, &table, &spec, &compiled)) return nullptr;
  if (!load_spec(spec))
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("bad bitdex_sync capture spec: %s", g_spec_error)));
  if (!s) {
    s = (Source*)MemoryContextAllocZero(CacheMemoryContext, sizeof(Source));
    s->tgoid = tgoid;
    s->next = g_sources;
    g_sources = s;
  } else if (s->cxt) {
    free_source(s);
    Source* next = s->next;
    memset(s, 0, sizeof *s);
    s->tgoid = tgoid;
    s->next = next;
  }
  s->relid = RelationGetRelid(rel);
  s->cxt = AllocSetContextCreate(CacheMemoryContext, "bitdex_sync capture", ALLOCSET_SMALL_SIZES);
  compile(s, rel, table, compiled);
  return s;
}

// The compiled source of the firing trigger. A trigger apply_config did not
// record captures nothing: its statement fails, whoever created it and
// whatever its arguments say.
Source* get_source(TriggerData* td) {
  Source* s = source_for(td->tg_trigger->tgoid, recorded_trigger(td->tg_trigger), td->tg_relation);
  if (!s)
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("trigger \"%s\" on table \"%s\" is not a capture trigger of bitdex_sync",
                           td->tg_trigger->tgname, RelationGetRelationName(td->tg_relation)),
                    errdetail("bitdex_sync.capture() acts only for the triggers bitdex_sync.apply_config() created and "
                              "recorded in bitdex_sync.sources."),
                    errhint("Drop this trigger, or apply the config again to let apply_config create its own.")));
  return s;
}

// ---- per row -----------------------------------------------------------------

// Appends to a StringInfo: the byte sink of the shared codec writers.
struct InfoOut {
  StringInfo si;
  void append(const char* p, size_t n) { appendBinaryStringInfo(si, p, static_cast<int>(n)); }
};

Datum eval(Source* s, Compiled* c, TupleTableSlot* slot, bool* isnull) {
  if (c->attnum > 0) return slot_getattr(slot, c->attnum, isnull);
  s->econtext->ecxt_scantuple = slot;
  return ExecEvalExprSwitchContext(c->state, s->econtext, isnull);
}

int64 as_int(Compiled* c, Datum d) {
  switch (c->conv) {
    case Conv::Int2: return DatumGetInt16(d);
    case Conv::Int4: return DatumGetInt32(d);
    default: return DatumGetInt64(d);
  }
}

// Appends the op value for (d, isnull) of type c.
void put_value(InfoOut& out, Compiled* c, Datum d, bool isnull) {
  using bitdex::codec::write_byte;
  if (isnull) {
    write_byte(out, static_cast<uint8_t>(OpValue::Kind::Null));
    return;
  }
  switch (c->conv) {
    case Conv::Int2:
    case Conv::Int4:
    case Conv::Int8: bitdex::codec::write_int_value(out, as_int(c, d)); return;
    case Conv::Bool:
      write_byte(out, static_cast<uint8_t>(DatumGetBool(d) ? OpValue::Kind::True : OpValue::Kind::False));
      return;
    case Conv::Text: {
      text* t = DatumGetTextPP(d);
      bitdex::codec::write_text_value(out, OpValue::Kind::String, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
      if ((Pointer)t != DatumGetPointer(d)) pfree(t);
      return;
    }
    case Conv::Name: {
      const char* n = NameStr(*DatumGetName(d));
      bitdex::codec::write_text_value(out, OpValue::Kind::String, n, strlen(n));
      return;
    }
    case Conv::DateTime: {
      // The text to_jsonb() gives, except that timestamptz is always in UTC
      // so the value key does not depend on the writer's TimeZone setting.
      char buf[MAXDATELEN + 1];
      const int utc = 0;
      JsonEncodeDateTime(buf, d, c->type == TIMESTAMPTZOID || c->type == TIMETZOID ? c->type : getBaseType(c->type),
                         &utc);
      bitdex::codec::write_text_value(out, OpValue::Kind::String, buf, strlen(buf));
      return;
    }
    case Conv::Number: {
      char* s = OutputFunctionCall(&c->out, d);
      // A float printed with an exponent (1e+20, 2.5e-300) is written as
      // numeric prints it (100000000000000000000, 0.000…25), as to_jsonb
      // stores it: one value, one text, whichever the sink (numeric itself
      // never prints an exponent; NaN and the infinities have no 'e').
      if (strpbrk(s, "eE")) {
        Datum n = DirectFunctionCall3(numeric_in, CStringGetDatum(s), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
        pfree(s);
        s = DatumGetCString(DirectFunctionCall1(numeric_out, n));
      }
      // NaN and infinities are not JSON numbers; to_jsonb gives them as strings.
      bool number = (s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) && strcmp(s, "-Infinity") != 0;
      // A whole number is the same value as an integer column's (the same
      // JSON, the same index key): numeric 12 and int 12 must not differ.
      int64_t whole;
      if (number && bitdex::canonical_int(s, whole))
        bitdex::codec::write_int_value(out, whole);
      else
        bitdex::codec::write_text_value(out, number ? OpValue::Kind::Json : OpValue::Kind::String, s, strlen(s));
      pfree(s);
      return;
    }
    default: {
      char* s = OutputFunctionCall(&c->out, d);
      bitdex::codec::write_text_value(out, OpValue::Kind::String, s, strlen(s));
      pfree(s);
      return;
    }
  }
}

// Per-row buffers, reused: the ops of one record, the record, the scratch for
// comparing values.
StringInfoData g_ops, g_record, g_a, g_b;
int g_nops;

void init_buffers() {
  if (g_ops.data) return;
  MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
  initStringInfo(&g_ops);
  initStringInfo(&g_record);
  initStringInfo(&g_a);
  initStringInfo(&g_b);
  MemoryContextSwitchTo(old);
}

void op_field(OpKind kind, const char* target, Compiled* c, Datum d, bool isnull) {
  InfoOut out{&g_ops};
  bitdex::codec::write_field_op(out, kind, target, strlen(target));
  put_value(out, c, d, isnull);
  g_nops++;
}

void op_plain(OpKind kind) {
  InfoOut out{&g_ops};
  bitdex::codec::write_byte(out, static_cast<uint8_t>(kind));
  g_nops++;
}

// The columns the current UPDATE assigned, when that is all that can have
// changed (no BEFORE UPDATE row trigger on the table); nullptr otherwise.
const Bitmapset* g_updated = nullptr;

// False only when an UPDATE certainly left every column `c` reads alone, so
// its value is the same on OLD and NEW and need not be evaluated at all.
bool may_change(const Compiled* c) {
  return !g_updated || c->always || bms_overlap(c->cols, g_updated);
}

// True when the two values would be different op values (IS DISTINCT FROM
// on what the index sees).
bool distinct(Compiled* c, Datum a, bool anull, Datum b, bool bnull) {
  if (anull || bnull) return anull != bnull;
  if (datum_image_eq(a, b, c->typbyval, c->typlen)) return false;
  resetStringInfo(&g_a);
  resetStringInfo(&g_b);
  InfoOut oa{&g_a}, ob{&g_b};
  put_value(oa, c, a, false);
  put_value(ob, c, b, false);
  return g_a.len != g_b.len || memcmp(g_a.data, g_b.data, g_a.len) != 0;
}

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

int64 slot_of(Source* s, TupleTableSlot* row) {
  bool isnull;
  Datum d = eval(s, &s->slot, row, &isnull);
  if (isnull)
    ereport(ERROR,
            (errcode(ERRCODE_NOT_NULL_VIOLATION), errmsg("bitdex_sync: the slot column of a captured row is NULL"),
             errhint("Every captured row needs a slot id.")));
  return as_int(&s->slot, d);
}

bool cond_true(Source* s, Compiled* c, TupleTableSlot* row) {
  bool isnull;
  Datum d = eval(s, c, row, &isnull);
  return !isnull && DatumGetBool(d);
}

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
void fan_in_ops(Source* s, OpKind kind, TupleTableSlot* row, int only = -1) {
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

void direct_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  if (TRIGGER_FIRED_BY_DELETE(ev)) {
    if (!s->del) return;
    op_plain(OpKind::Delete);
    emit(s, slot_of(s, oldrow));
    return;
  }
  bool isnull;
  if (TRIGGER_FIRED_BY_UPDATE(ev)) {
    int64 old_id = slot_of(s, oldrow), new_id = slot_of(s, newrow);
    if (old_id == new_id) {
      for (int i = 0; i < s->nfields; i++) {
        Field* f = &s->fields[i];
        if (!may_change(&f->value)) continue;
        bool onull, nnull;
        Datum o = eval(s, &f->value, oldrow, &onull);
        Datum n = eval(s, &f->value, newrow, &nnull);
        if (!distinct(&f->value, o, onull, n, nnull)) continue;
        op_field(OpKind::Remove, f->target, &f->value, o, onull);
        op_field(OpKind::Set, f->target, &f->value, n, nnull);
        // Moved to another parent: the old one's fields go, the new one's come.
        if (s->nfan_ins > 0) {
          fan_in_ops(s, OpKind::Remove, oldrow, i);
          fan_in_ops(s, OpKind::Set, newrow, i);
        }
      }
      emit(s, new_id);
      return;
    }
    // The row moved to another slot: it leaves the old one...
    if (s->del) {
      op_plain(OpKind::Delete);
    } else {
      for (int i = 0; i < s->nfields; i++) {
        Datum o = eval(s, &s->fields[i].value, oldrow, &isnull);
        op_field(OpKind::Remove, s->fields[i].target, &s->fields[i].value, o, isnull);
      }
      fan_in_ops(s, OpKind::Remove, oldrow);
    }
    emit(s, old_id);
    // ...and arrives in the new one as an INSERT would.
  }
  if (s->alive) op_plain(OpKind::Alive);
  for (int i = 0; i < s->nfields; i++) {
    Datum n = eval(s, &s->fields[i].value, newrow, &isnull);
    op_field(OpKind::Set, s->fields[i].target, &s->fields[i].value, n, isnull);
  }
  fan_in_ops(s, OpKind::Set, newrow);
  emit_arrival(s, slot_of(s, newrow));
}

// What a join row contributes: per field (0 = the main value, then computed
// fields) whether it is present and its value.
struct JoinSide {
  bool present;
  Datum value;
  bool isnull;
};

void join_side(Source* s, TupleTableSlot* row, JoinSide* out) {
  bool pass = !s->has_filter || cond_true(s, &s->filter, row);
  for (int i = 0; i < s->nfields; i++) {
    Field* f = &s->fields[i];
    // The filter decides the main value only; a computed field has its own condition.
    out[i].present = i == 0 ? pass : cond_true(s, &f->cond, row);
    if (out[i].present) out[i].value = eval(s, &f->value, row, &out[i].isnull);
  }
}

void join_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  if (oldrow && newrow && g_updated) {  // an UPDATE that touched nothing this source reads
    bool any = may_change(&s->slot) || (s->has_filter && may_change(&s->filter));
    for (int i = 0; i < s->nfields && !any; i++)
      any = may_change(&s->fields[i].value) || (i > 0 && may_change(&s->fields[i].cond));
    if (!any) return;
  }
  JoinSide* olds = (JoinSide*)palloc0(sizeof(JoinSide) * s->nfields);
  JoinSide* news = (JoinSide*)palloc0(sizeof(JoinSide) * s->nfields);
  int64 old_id = 0, new_id = 0;
  if (oldrow) {
    old_id = slot_of(s, oldrow);
    join_side(s, oldrow, olds);
  }
  if (newrow) {
    new_id = slot_of(s, newrow);
    join_side(s, newrow, news);
  }
  // An UPDATE that keeps slot, value and filter outcome captures nothing.
  bool same_slot = oldrow && newrow && old_id == new_id;
  bool* skip = (bool*)palloc0(sizeof(bool) * s->nfields);
  for (int i = 0; i < s->nfields; i++) {
    Field* f = &s->fields[i];
    skip[i] = same_slot && olds[i].present == news[i].present &&
              (!olds[i].present || !distinct(&f->value, olds[i].value, olds[i].isnull, news[i].value, news[i].isnull));
  }
  for (int i = 0; i < s->nfields; i++)
    if (olds[i].present && !skip[i])
      op_field(OpKind::Remove, s->fields[i].target, &s->fields[i].value, olds[i].value, olds[i].isnull);
  if (!same_slot) emit(s, old_id);
  for (int i = 0; i < s->nfields; i++)
    if (news[i].present && !skip[i])
      op_field(OpKind::Add, s->fields[i].target, &s->fields[i].value, news[i].value, news[i].isnull);
  if (newrow && !same_slot)
    emit_arrival(s, new_id);
  else
    emit(s, newrow ? new_id : old_id);
  pfree(olds);
  pfree(news);
  pfree(skip);
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

// ---- TRUNCATE ------------------------------------------------------------------

// A recorded TRUNCATE trigger's spec, parsed: the clear message (zero tag),
// its JSON for the outbox, whether it goes to the outbox, and why a TRUNCATE
// is refused (empty: captured). Static storage: filled under run_cpp.
struct TruncateSpec {
  std::string message, json, refuse;
  bool outbox = false;
};
TruncateSpec* g_truncate = nullptr;
char g_truncate_error[256];

bool parse_truncate_spec(const char* text) noexcept {
  return run_cpp(
      [&] {
        if (!g_truncate) g_truncate = new TruncateSpec();
        const bitdex::json::Value v = bitdex::json::parse(text);
        const bitdex::json::Value* clear = v.find("clear");
        const bitdex::json::Value* sink = v.find("sink");
        if (!clear || !sink || sink->type != bitdex::json::Type::String)
          throw bitdex::Error(bitdex::ErrorKind::InvalidInput, "the TRUNCATE spec lacks \"clear\" or \"sink\"");
        const bitdex::Clear c = bitdex::parse_clear(*clear, "TRUNCATE spec");
        g_truncate->message = bitdex::capture::clear_message(c);
        g_truncate->json = "{\"clear\":";
        bitdex::write_clear_json(g_truncate->json, c);
        g_truncate->json += "}";
        g_truncate->outbox = sink->text == "outbox";
        const bitdex::json::Value* refuse = v.find("refuse");
        g_truncate->refuse = refuse && refuse->type == bitdex::json::Type::String ? refuse->text : "";
        return true;
      },
      g_truncate_error, sizeof g_truncate_error);
}

// A TRUNCATE of a captured table: one clear record of what the source put in
// the index (trigger_gen::truncate_clear), in the truncating transaction.
void capture_truncate(TriggerData* td) {
  static const char* const cols[] = {"truncate_spec", "name"};
  char* out[2];
  Oid table = InvalidOid;
  if (!recorded_row(td->tg_trigger->tgoid, "truncate_trigger_oid", &table, 2, cols, out))
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("trigger \"%s\" on table \"%s\" is not a capture trigger of bitdex_sync",
                           td->tg_trigger->tgname, RelationGetRelationName(td->tg_relation)),
                    errhint("Drop this trigger, or apply the config again to let apply_config create its own.")));
  if (!parse_truncate_spec(out[0]))
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("bad bitdex_sync TRUNCATE spec: %s", g_truncate_error),
             errhint("Apply the config again with bitdex_sync.apply_config().")));
  if (!g_truncate->refuse.empty()) {
    if (!g_allow_capture_loss)
      ereport(ERROR,
              (errcode(ERRCODE_OBJECT_IN_USE),
               errmsg("TRUNCATE of %s cannot be captured (source \"%s\" of bitdex_sync): %s",
                      RelationGetRelationName(td->tg_relation), out[1], g_truncate->refuse.c_str()),
               errdetail("Clearing the field would take the other source's values out of the index too."),
               errhint("DELETE the rows instead (each is captured), or give each source fields of its own. To "
                       "truncate anyway and record the gap, a superuser sets bitdex_sync.allow_capture_loss = on.")));
    record_truncate_gap(out[1], RelationGetRelid(td->tg_relation), td->tg_trigger->tgname);
    return;
  }
  emit_clear(g_truncate->message.data(), static_cast<int>(g_truncate->message.size()), g_truncate->json.c_str(),
             g_truncate->outbox);
}

}  // namespace

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

void* load_source(Oid tgoid, Relation rel) {
  return source_for(tgoid, tgoid, rel);
}

int load_source_slot_column(void* source) {
  return static_cast<Source*>(source)->slot.attnum;
}

void load_row(void* source, TupleTableSlot* row, LoadSink* sink) {
  auto* s = static_cast<Source*>(source);
  init_buffers();
  resetStringInfo(&g_ops);
  g_nops = 0;
  g_updated = nullptr;
  g_load_sink = sink;
  const TriggerEvent ev = TRIGGER_EVENT_INSERT | TRIGGER_EVENT_ROW | TRIGGER_EVENT_AFTER;
  switch (s->kind) {
    case Kind::Direct: direct_row(s, ev, nullptr, row); break;
    case Kind::Join: join_row(s, ev, nullptr, row); break;
    case Kind::QueryFanOut: fan_out_row(s, ev, nullptr, row); break;
    case Kind::RowFanOut: row_fan_out_row(s, ev, nullptr, row); break;
  }
  g_load_sink = nullptr;
  ResetExprContext(s->econtext);
}

void install_executor_hook() {
  g_prev_finish = ExecutorFinish_hook;
  ExecutorFinish_hook = finish_hook;
}

void load_reset() {
  g_load_sink = nullptr;
}

}  // namespace bitdex::pg

// bitdex_sync.capture(spec): AFTER ROW trigger behind every generated trigger.
Datum bitdex_sync_capture(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("bitdex_sync.capture() must be called as a trigger")));
  TriggerData* td = (TriggerData*)fcinfo->context;
  TriggerEvent ev = td->tg_event;
  const bool truncate = TRIGGER_FIRED_BY_TRUNCATE(ev) && TRIGGER_FIRED_FOR_STATEMENT(ev);
  if (!TRIGGER_FIRED_AFTER(ev) || !(TRIGGER_FIRED_FOR_ROW(ev) || truncate))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("bitdex_sync.capture() must be an AFTER ... FOR EACH ROW trigger, or AFTER TRUNCATE")));
  init_buffers();
  g_load_sink = nullptr;
  if (truncate) {
    capture_truncate(td);
    return PointerGetDatum(nullptr);
  }
  Source* s = get_source(td);
  resetStringInfo(&g_ops);
  g_nops = 0;
  TupleTableSlot* oldrow = nullptr;
  TupleTableSlot* newrow = nullptr;
  if (TRIGGER_FIRED_BY_INSERT(ev)) {
    newrow = td->tg_trigslot;
  } else if (TRIGGER_FIRED_BY_UPDATE(ev)) {
    oldrow = td->tg_trigslot;
    newrow = td->tg_newslot;
  } else if (TRIGGER_FIRED_BY_DELETE(ev)) {
    oldrow = td->tg_trigslot;
  } else {
    return PointerGetDatum(nullptr);
  }
  // A BEFORE UPDATE row trigger may change columns the statement did not
  // assign; then every field has to be compared.
  TriggerDesc* trigdesc = td->tg_relation->trigdesc;
  g_updated =
      TRIGGER_FIRED_BY_UPDATE(ev) && !(trigdesc && trigdesc->trig_update_before_row) ? td->tg_updatedcols : nullptr;
  switch (s->kind) {
    case Kind::Direct: direct_row(s, ev, oldrow, newrow); break;
    case Kind::Join: join_row(s, ev, oldrow, newrow); break;
    case Kind::QueryFanOut: fan_out_row(s, ev, oldrow, newrow); break;
    case Kind::RowFanOut: row_fan_out_row(s, ev, oldrow, newrow); break;
  }
  ResetExprContext(s->econtext);
  return PointerGetDatum(nullptr);
}

namespace bitdex::pg {
namespace {

std::string* g_value_json = nullptr;  // static-lifetime scratch

// The JSON of the one value in an encoded single-op payload.
char g_value_error[256];

bool value_json(const char* data, int len) noexcept {
  return run_cpp(
      [&] {
        if (!g_value_json) g_value_json = new std::string();
        g_value_json->clear();
        std::vector<bitdex::Op> ops = bitdex::codec::decode_ops(reinterpret_cast<const uint8_t*>(data), len);
        ops.at(0).value.write_json(*g_value_json);
        return true;
      },
      g_value_error, sizeof g_value_error);
}

}  // namespace
}  // namespace bitdex::pg

namespace bitdex::pg {
namespace {

// The argument's conversion, looked up once per call site (fn_extra) and
// reused for every row: verify calls op_value once per row and field.
Compiled* op_value_conversion(FunctionCallInfo fcinfo) {
  Oid type = get_fn_expr_argtype(fcinfo->flinfo, 0);
  if (!OidIsValid(type))
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("bitdex_sync.op_value: cannot tell the argument type")));
  auto* c = static_cast<Compiled*>(fcinfo->flinfo->fn_extra);
  if (c && c->type == type) return c;
  c = static_cast<Compiled*>(MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(Compiled)));
  c->type = type;
  c->conv = conv_for_type(type);
  if (c->conv == Conv::Unsupported)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("values of type %s cannot be captured", format_type_be(type))));
  get_typlenbyval(type, &c->typlen, &c->typbyval);
  if (c->conv == Conv::Output || c->conv == Conv::Number) output_function(type, &c->out, fcinfo->flinfo->fn_mcxt);
  fcinfo->flinfo->fn_extra = c;
  return c;
}

// The argument encoded as the trigger encodes a value, then as JSON text.
const char* op_value_json(FunctionCallInfo fcinfo) {
  Compiled* c = op_value_conversion(fcinfo);
  StringInfoData buf;
  initStringInfo(&buf);
  InfoOut out{&buf};
  bitdex::codec::write_varint(out, 1);
  bitdex::codec::write_field_op(out, OpKind::Set, "v", 1);
  put_value(out, c, PG_ARGISNULL(0) ? (Datum)0 : PG_GETARG_DATUM(0), PG_ARGISNULL(0));
  if (!value_json(buf.data, buf.len))
    elog(ERROR, "bitdex_sync.op_value: could not encode the value: %s", g_value_error);
  pfree(buf.data);
  return g_value_json->c_str();
}

}  // namespace
}  // namespace bitdex::pg

// bitdex_sync.op_value(anyelement) -> jsonb: the value as the capture trigger
// encodes it (same conversion code), for shared_ops_fields helpers.
Datum bitdex_sync_op_value(PG_FUNCTION_ARGS) {
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(bitdex::pg::op_value_json(fcinfo))));
}

// bitdex_sync.op_value_text(anyelement) -> text: the same value as compact
// JSON text, without the jsonb round trip (verify reads millions of them).
Datum bitdex_sync_op_value_text(PG_FUNCTION_ARGS) {
  PG_RETURN_TEXT_P(cstring_to_text(bitdex::pg::op_value_json(fcinfo)));
}
