// The capture trigger, compiling: the definition apply_config recorded for a
// firing trigger (bitdex_sync.sources: the spec and its analysed expression
// and query trees) becomes a Source with ExprStates and stored queries, once
// per backend, dropped when a relation or function it uses changes.
//
// Wall: this runs inside PostgreSQL's executor and may ereport at any call,
// so it holds no C++ objects with destructors; the spec is parsed by the C++
// JSON reader into static storage under try/catch, errors raised after it.
#include <cstring>
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/core/capture_spec.hpp"
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

// The spec being compiled, read into static storage under run_cpp (the
// compiling code below holds no C++ objects of its own).
bitdex::spec::CaptureSpec* g_spec = nullptr;
char g_spec_error[512];
char g_spec_hint[256];
int g_spec_errcode = ERRCODE_INVALID_PARAMETER_VALUE;

// Reads the recorded spec into *g_spec; false with the error's message,
// hint and SQLSTATE (an unknown kind or version: feature not supported) in
// the g_spec_* buffers.
bool load_spec(const char* text) noexcept {
  g_spec_hint[0] = '\0';
  g_spec_errcode = ERRCODE_INVALID_PARAMETER_VALUE;
  try {
    if (!g_spec) g_spec = new bitdex::spec::CaptureSpec();
    *g_spec = bitdex::spec::read(std::string_view(text));
    return true;
  } catch (const bitdex::Error& e) {
    strlcpy(g_spec_error, e.what(), sizeof g_spec_error);
    strlcpy(g_spec_hint, e.hint().c_str(), sizeof g_spec_hint);
    if (e.kind() == bitdex::ErrorKind::NotSupported) g_spec_errcode = ERRCODE_FEATURE_NOT_SUPPORTED;
  } catch (const std::exception& e) {
    strlcpy(g_spec_error, e.what(), sizeof g_spec_error);
  } catch (...) {
    strlcpy(g_spec_error, "unknown C++ exception", sizeof g_spec_error);
  }
  return false;
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

// Builds the compiled form of `s` from *g_spec (already loaded) and the
// analysed trees apply_config stored: a List of (the select list's Query
// over the recorded table, the {ids} Query or NULL, the children's Query or
// NULL). `recorded` is the table they were analysed against; when the
// trigger fires on a partition, column numbers are mapped to the partition's.
void compile(Source* s, Relation rel, Oid recorded, const char* compiled) {
  const bitdex::spec::CaptureSpec& spec = *g_spec;
  s->kind = spec.kind;
  s->outbox = spec.sink == bitdex::config::Sink::Outbox;
  s->alive = spec.alive;
  s->del = spec.on_delete;
  const bool join = s->kind == SourceKind::Join;
  const int nconds = join ? static_cast<int>(spec.computed.size()) : 0;
  s->nfields = join ? 1 + nconds : static_cast<int>(spec.fields.size());
  s->has_filter = spec.filter.has_value();
  s->nqcols = static_cast<int>(spec.query_cols.size());
  s->nids = static_cast<int>(spec.ids_params.size());
  s->njf = static_cast<int>(spec.filter_params.size());
  if (s->kind == SourceKind::QueryFanOut) s->query = MemoryContextStrdup(s->cxt, spec.query.c_str());
  // The order of bitdex::spec::expressions.
  const int expected = 1 + s->nfields + nconds + (s->has_filter ? 1 : 0) + s->nqcols + s->nids +
                       (s->kind == SourceKind::RowFanOut ? 1 : 0) + s->njf;

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
    AttrMap* map = compat::attrmap_by_name(RelationGetDescr(rel), RelationGetDescr(parent));
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
  if (spec.filter_sql && !s->join_filter)
    elog(ERROR, "bitdex_sync: the recorded capture definition lacks its join filter query");
  if ((spec.ids_sql || !spec.ids_params.empty()) && !s->ids)
    elog(ERROR, "bitdex_sync: the recorded capture definition lacks its {ids} query");
  if (s->kind == SourceKind::RowFanOut && !s->rows)
    elog(ERROR, "bitdex_sync: the recorded capture definition lacks its children query");

  int at = 0;
  compile_one(s, (Expr*)list_nth(exprs, at++), &s->slot, Use::Value, "the slot column");
  if (s->slot.conv != Conv::Int2 && s->slot.conv != Conv::Int4 && s->slot.conv != Conv::Int8)
    ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH), errmsg("bitdex_sync: the slot column must be an integer")));
  s->fields = (Field*)palloc0(sizeof(Field) * (s->nfields > 0 ? s->nfields : 1));
  if (join) {
    s->fields[0].target = pstrdup(spec.value.target.c_str());
    compile_one(s, (Expr*)list_nth(exprs, at++), &s->fields[0].value, Use::Value, "the join value");
    for (int i = 0; i < nconds; i++) {
      Field* f = &s->fields[1 + i];
      f->target = pstrdup(spec.computed[i].target.c_str());
      compile_one(s, (Expr*)list_nth(exprs, at++), &f->value, Use::Value, "a computed value");
      compile_one(s, (Expr*)list_nth(exprs, at++), &f->cond, Use::Condition, "a computed condition");
    }
    if (s->has_filter) compile_one(s, (Expr*)list_nth(exprs, at++), &s->filter, Use::Condition, "the filter");
  } else {
    for (int i = 0; i < s->nfields; i++) {
      s->fields[i].target = pstrdup(spec.fields[i].target.c_str());
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
  if (s->kind == SourceKind::RowFanOut)
    compile_one(s, (Expr*)list_nth(exprs, at++), &s->parent_key, Use::Bound, "the parent key");
  if (!join && s->has_filter) compile_one(s, (Expr*)list_nth(exprs, at++), &s->filter, Use::Condition, "the filter");
  if (s->njf > 0) {
    s->jf_params = (Compiled*)palloc0(sizeof(Compiled) * s->njf);
    for (int i = 0; i < s->njf; i++)
      compile_one(s, (Expr*)list_nth(exprs, at++), &s->jf_params[i], Use::Bound, "a join filter parameter");
  }
  if (!spec.fan_ins.empty()) {
    if (s->kind != SourceKind::Direct || list_length(fan_ins) != static_cast<int>(spec.fan_ins.size()))
      elog(ERROR, "bitdex_sync: the recorded capture definition lacks its fan-in queries");
    s->nfan_ins = static_cast<int>(spec.fan_ins.size());
    s->fan_ins = (FanIn*)palloc0(sizeof(FanIn) * s->nfan_ins);
    for (int k = 0; k < s->nfan_ins; k++) {
      FanIn* f = &s->fan_ins[k];
      const bitdex::spec::FanIn& fi = spec.fan_ins[k];
      const char* field = fi.field.c_str();
      f->field = -1;
      for (int i = 0; i < s->nfields; i++)
        if (strcmp(s->fields[i].target, field) == 0) f->field = i;
      if (f->field < 0) elog(ERROR, "bitdex_sync: a fan-in names field \"%s\", which the source lacks", field);
      f->query = stored_query((Node*)list_nth(fan_ins, k));
      f->lock = fi.lock;
      output_function(s->fields[f->field].value.type, &f->key_out, s->cxt);
      f->ncols = list_length(f->query->query->targetList);
      if (static_cast<int>(fi.fields.size()) != f->ncols)
        elog(ERROR, "bitdex_sync: a fan-in's fields do not match its query");
      f->cols = (Compiled*)palloc0(sizeof(Compiled) * f->ncols);
      f->targets = (const char**)palloc(sizeof(char*) * f->ncols);
      for (int j = 0; j < f->ncols; j++) {
        describe_type(s, exprType((Node*)list_nth_node(TargetEntry, f->query->query->targetList, j)->expr),
                      &f->cols[j]);
        f->targets[j] = pstrdup(fi.fields[j].c_str());
      }
    }
  }
  s->fan_in_lock = spec.fan_in_lock;
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
    ereport(ERROR, (errcode(g_spec_errcode), errmsg("bad bitdex_sync capture spec: %s", g_spec_error),
                    g_spec_hint[0] ? errhint("%s", g_spec_hint) : 0));
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

}  // namespace bitdex::pg::trigger
