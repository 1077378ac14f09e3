// apply_config() and trigger_sql(): validate a config against the live
// catalog, then create / replace / drop capture triggers so that exactly the
// configured ones exist, in the caller's transaction (an error anywhere
// leaves everything as it was). Only triggers recorded in
// bitdex_sync.sources are ever dropped.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/trigger_gen.hpp"
#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"

extern "C" {
#include "access/relation.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
}

extern "C" {
PG_FUNCTION_INFO_V1(bitdex_sync_apply_config);
PG_FUNCTION_INFO_V1(bitdex_sync_trigger_sql);
Datum bitdex_sync_apply_config(PG_FUNCTION_ARGS);
Datum bitdex_sync_trigger_sql(PG_FUNCTION_ARGS);
}

namespace bitdex::pg {
namespace {

using config::Source;
using config::SourceKind;

struct Planned {
  const Source* src;
  Oid relid;
  std::string qualified;  // "schema"."table"
  trigger_gen::Resolved resolved;
  std::string trigger;
  std::string truncate_trigger;  // the statement-level AFTER TRUNCATE trigger beside it
  std::string truncate_spec;     // trigger_gen::truncate_spec
  std::string create;
  std::vector<std::string> helpers;  // qualified names of the shared_ops_fields functions
  std::string spec;                  // trigger_gen::capture_spec
  // The analysed trees the trigger runs (see store_trees): the select list
  // over the table, the {ids} query, the children query (nullptr: none).
  Query* select = nullptr;
  Query* ids = nullptr;
  Query* rows = nullptr;
  Query* join_filter = nullptr;  // query fan-out with "join" and no "expression"
  std::vector<Query*> fan_ins;   // direct: trigger_gen::fan_in_sql of each fan-in, in spec order
};

// The message of a caught PostgreSQL error.
std::string pg_message(const PgError& e) {
  return e.data() && e.data()->message ? e.data()->message : e.what();
}

// Checks one expression of a source and returns its result type.
Oid check_expression(Oid relid, const std::string& where, const std::string& key, const std::string& sql) {
  try {
    List* exprs = pg_guard([&] { return analyze_expressions(relid, sql.c_str()); });
    if (list_length(exprs) != 1)
      throw Error(ErrorKind::InvalidInput, where + ", " + key + ": \"" + sql + "\" is not one expression");
    return pg_guard([&] { return exprType((Node*)linitial(exprs)); });
  } catch (const PgError& e) {
    throw Error(ErrorKind::InvalidInput, where + ", " + key + ": " + pg_message(e), "The expression was: " + sql + ".",
                "Expressions are SQL over the table's columns, written as {column}; functions resolve in pg_catalog "
                "and public.");
  }
}

void need_column(Oid relid, const std::string& where, const std::string& key, const std::string& column,
                 const std::string& table) {
  AttrNumber att = pg_guard([&] { return get_attnum(relid, column.c_str()); });
  if (att == InvalidAttrNumber)
    throw Error(ErrorKind::UndefinedColumn,
                where + ", " + key + ": column \"" + column + "\" does not exist in table \"" + table + "\"", {},
                "Column names are case-sensitive and taken exactly as written.");
}

Oid resolve_table(const std::string& table, const std::string& where, const std::string& key) {
  auto [schema, name] = config::split_table(table);
  Oid relid = pg_guard([&] {
    RangeVar* rv = makeRangeVar(schema.empty() ? nullptr : pstrdup(schema.c_str()), pstrdup(name.c_str()), -1);
    return RangeVarGetRelid(rv, NoLock, true);
  });
  if (!OidIsValid(relid))
    throw Error(ErrorKind::UndefinedTable, where + ", " + key + ": table \"" + table + "\" does not exist", {},
                "Table names are case-sensitive and taken exactly as written; qualify them with the schema when it "
                "is not on search_path.");
  char kind = pg_guard([&] { return get_rel_relkind(relid); });
  if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
    throw Error(ErrorKind::InvalidInput, where + ", " + key + ": \"" + table + "\" is not a table");
  return relid;
}

std::string qualified_name(Oid relid) {
  std::string nsp = pg_guard([&] { return get_namespace_name(get_rel_namespace(relid)); });
  std::string rel = pg_guard([&] { return get_rel_name(relid); });
  return config::quote_ident(nsp) + "." + config::quote_ident(rel);
}

// Refuses a tree that runs code a role other than a superuser, the caller or
// the table's owner wrote or can still change (capture_analyze.cpp): capture
// runs it as whoever writes to the table.
void check_code(const std::string& where, const std::string& key, Node* tree, Oid relid) {
  const char* why = pg_guard([&] {
    HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
    if (!HeapTupleIsValid(tup)) elog(ERROR, "bitdex_sync: cache lookup failed for relation %u", relid);
    const Oid table_owner = ((Form_pg_class)GETSTRUCT(tup))->relowner;
    ReleaseSysCache(tup);
    return untrusted_code(tree, GetUserId(), table_owner);
  });
  if (!why) return;
  throw Error(ErrorKind::InsufficientPrivilege, where + ", " + key + ": " + why,
              "Capture runs the code of a config as whoever writes to the captured table, so it may only run what "
              "superusers, the role applying the config or the table's owner wrote and control.",
              "Qualify the function you mean (e.g. pg_catalog.lower); give SQL and PL functions SET search_path = "
              "pg_catalog (or schemas only trusted roles can create in) or a BEGIN ATOMIC body; have a trusted role "
              "own the functions, domains and views used.");
}

// Analyses `sql` with parameters of `types` (names resolved now, once) and
// checks what it runs (check_code) for the source on table `relid`.
Query* check_query(const std::string& where, const std::string& key, const std::string& sql, std::vector<Oid> types,
                   Oid relid) {
  Query* q = nullptr;
  try {
    q = pg_guard([&] { return analyze_query(sql.c_str(), types.data(), static_cast<int>(types.size())); });
  } catch (const PgError& e) {
    throw Error(ErrorKind::InvalidInput, where + ", " + key + ": " + pg_message(e), "The query was: " + sql + ".");
  }
  check_code(where, key, reinterpret_cast<Node*>(q), relid);
  // Capture runs its queries as the writer: row security would hide rows
  // from some writers and not others, and the index would depend on who
  // wrote (the capture guard refuses enabling it later).
  const Oid rls = pg_guard([&] { return row_security_relation(q); });
  if (OidIsValid(rls))
    throw Error(ErrorKind::NotSupported,
                where + ", " + key + ": table " + qualified_name(rls) +
                    " has row level security, and capture reads it as whoever writes to the captured table",
                "Its policies would hide rows from some writers, and what the index holds would depend on who wrote.",
                "Disable row level security on it (ALTER TABLE ... DISABLE ROW LEVEL SECURITY), or leave this "
                "source out.");
  return q;
}

// A query fan-out's "join" without "expression", with its "filter": the
// query deciding whether a row counts, analysed over the row's columns (as
// parameters) that it reads. It is analysed first with every column, to
// learn which it reads: the trigger then depends on those only.
void plan_join_filter(Planned& p, const std::string& where) {
  const Source& s = *p.src;
  for (const auto& c : s.join_filter->columns) need_column(p.relid, where, "join", c, s.table);
  std::vector<std::string> names;
  std::vector<Oid> types;
  pg_guard([&] {
    Relation rel = relation_open(p.relid, AccessShareLock);
    TupleDesc desc = RelationGetDescr(rel);
    for (int i = 0; i < desc->natts; i++) {
      Form_pg_attribute a = TupleDescAttr(desc, i);
      if (a->attisdropped) continue;
      names.emplace_back(NameStr(a->attname));
      types.push_back(a->atttypid);
    }
    relation_close(rel, AccessShareLock);
  });
  const std::string key = s.filter ? "join + filter" : "join";
  const std::string alias = config::split_table(s.table).second;
  Query* all = check_query(where, key, trigger_gen::join_filter_sql(s, names), types, p.relid);
  Bitmapset* used = pg_guard([&] { return join_filter_reads(all, alias.c_str()); });
  std::vector<std::string> read_names;
  std::vector<Oid> read_types;
  for (size_t i = 0; i < names.size(); i++)
    if (pg_guard([&] { return bms_is_member(static_cast<int>(i + 1), used); })) {
      read_names.push_back(names[i]);
      read_types.push_back(types[i]);
    }
  p.resolved.join_filter_columns = read_names;
  const std::string sql = trigger_gen::join_filter_sql(s, read_names);
  p.join_filter = check_query(where, key, sql, read_types, p.relid);
  try {
    pg_guard([&] { refuse_volatile(reinterpret_cast<Node*>(p.join_filter)); });
  } catch (const PgError& e) {
    throw Error(ErrorKind::NotSupported, where + ", " + key + ": " + pg_message(e), "The query was: " + sql + ".");
  }
}

// The fan-ins whose children are the rows of direct source `p` (see
// trigger_gen::FanIn): each parent fan-out's fields, read by the child's
// column value, analysed as the child's trigger will run them.
void plan_fan_ins(Planned& p, const config::Config& cfg, const std::string& where) {
  const Source& s = *p.src;
  for (const Source& parent : cfg.sources) {
    const std::optional<trigger_gen::FanIn> f = trigger_gen::fan_in_of(cfg, parent);
    if (!f || &cfg.sources[f->child] != &s) continue;
    const std::string key = "fan-in from source \"" + parent.name + "\" (" + parent.query->text + ")";
    const Oid parent_relid = resolve_table(parent.table, where, key);
    need_column(parent_relid, where, key, f->parent_column, parent.table);
    const bool partitioned = pg_guard([&] { return get_rel_relkind(parent_relid) == RELKIND_PARTITIONED_TABLE; });
    const std::string sql = trigger_gen::fan_in_sql(parent, *f, qualified_name(parent_relid), !partitioned);
    std::vector<Oid> types{check_expression(p.relid, where, key, config::quote_ident(f->child_column))};
    Query* q = nullptr;
    try {
      q = pg_guard([&] { return analyze_query(sql.c_str(), types.data(), 1); });
      pg_guard([&] { refuse_volatile(reinterpret_cast<Node*>(q)); });
    } catch (const PgError& e) {
      throw Error(ErrorKind::InvalidInput, where + ", " + key + ": " + pg_message(e), "The query was: " + sql + ".");
    }
    check_code(where, key, reinterpret_cast<Node*>(q), p.relid);
    if (OidIsValid(pg_guard([&] { return row_security_relation(q); })))
      throw Error(ErrorKind::NotSupported,
                  where + ", " + key + ": table " + qualified_name(parent_relid) +
                      " has row level security, and a child's capture reads it as whoever writes the child",
                  "Its policies would hide parents from some writers, and what the index holds would depend on who "
                  "wrote.",
                  "Disable row level security on it, or leave the fan-in out (a query other than \"F eq {col}\").");
    trigger_gen::ResolvedFanIn r{parent.name, f->field, sql, parent_relid, {}};
    for (const auto& tf : parent.track_fields) r.targets.push_back(tf.target);
    p.resolved.fan_ins.push_back(std::move(r));
    p.fan_ins.push_back(q);
  }
}

Planned plan_source(const config::Config& cfg, const Source& s, size_t index) {
  const std::string where = "source " + std::to_string(index + 1) + " (table \"" + s.table + "\")";
  auto [schema, name] = config::split_table(s.table);
  Planned p{&s, InvalidOid, {}, {}, {}, {}, {}};
  p.relid = resolve_table(s.table, where, "table");
  p.qualified = qualified_name(p.relid);

  // Columns first (the clearest message), then each expression's type.
  need_column(p.relid, where, "slot_field", s.slot_field, s.table);
  for (size_t i = 0; i < s.track_fields.size(); i++)
    for (const auto& c : s.track_fields[i].expr.columns)
      need_column(p.relid, where, "track_fields[" + std::to_string(i + 1) + "]", c, s.table);
  for (size_t i = 0; i < s.computed_fields.size(); i++) {
    for (const auto& c : s.computed_fields[i].expr.columns)
      need_column(p.relid, where, "computed_fields[" + std::to_string(i + 1) + "]", c, s.table);
    if (s.computed_fields[i].value)
      for (const auto& c : s.computed_fields[i].value->columns)
        need_column(p.relid, where, "computed_fields[" + std::to_string(i + 1) + "].value", c, s.table);
  }
  if (s.kind == SourceKind::Join) need_column(p.relid, where, "value_field", s.value_field, s.table);
  if (s.filter)
    for (const auto& c : s.filter->columns) need_column(p.relid, where, "filter", c, s.table);
  if (s.query)
    for (const auto& c : s.query->columns)
      if (c != "ids") need_column(p.relid, where, "query", c, s.table);

  auto capturable = [&](const std::string& key, const std::string& sql) {
    Oid t = check_expression(p.relid, where, key, sql);
    if (conv_for_type(t) == Conv::Unsupported)
      throw Error(ErrorKind::NotSupported, where + ", " + key + ": values of type " + pg_guard([&] {
                                             return format_type_be(t);
                                           }) + " cannot be captured",
                  {},
                  "Capture integers, booleans, text, enums, uuid, numbers and dates/times; cast others in the "
                  "expression, e.g. \"{col}::text as field\".");
  };
  auto boolean = [&](const std::string& key, const std::string& sql) {
    if (check_expression(p.relid, where, key, sql) != BOOLOID)
      throw Error(ErrorKind::InvalidInput, where + ", " + key + ": the expression must be a boolean condition",
                  "The expression was: " + sql + ".");
  };
  Oid slot_type = check_expression(p.relid, where, "slot_field", config::quote_ident(s.slot_field));
  Conv sc = conv_for_type(slot_type);
  if (sc != Conv::Int2 && sc != Conv::Int4 && sc != Conv::Int8)
    throw Error(ErrorKind::InvalidInput, where + ", slot_field: column \"" + s.slot_field + "\" must be an integer", {},
                "Slot ids are smallint, integer or bigint.");
  for (size_t i = 0; i < s.track_fields.size(); i++)
    capturable("track_fields[" + std::to_string(i + 1) + "]", s.track_fields[i].expr.render());
  for (size_t i = 0; i < s.computed_fields.size(); i++) {
    const auto& cf = s.computed_fields[i];
    std::string key = "computed_fields[" + std::to_string(i + 1) + "]";
    if (s.kind == SourceKind::Join) {
      boolean(key + ".expression", cf.expr.render());
      capturable(key + ".value", cf.value ? cf.value->render() : config::quote_ident(s.value_field));
    } else {
      capturable(key, cf.expr.render());
    }
  }
  if (s.kind == SourceKind::Join) capturable("value_field", config::quote_ident(s.value_field));
  if (s.filter && !trigger_gen::has_join_filter(s)) boolean("filter", s.filter->render());
  if (trigger_gen::has_join_filter(s)) plan_join_filter(p, where);
  if (s.kind == SourceKind::Direct) plan_fan_ins(p, cfg, where);
  if (trigger_gen::fan_in_of(cfg, s)) p.resolved.fan_in_lock = p.relid;

  if (s.expression) {
    const std::string key = s.join ? "expression + join" : "expression";
    std::vector<Oid> types;
    for (const auto& c : s.expression->columns) {
      need_column(p.relid, where, key, c, s.table);
      types.push_back(check_expression(p.relid, where, key, config::quote_ident(c)));
    }
    p.ids = check_query(where, key, trigger_gen::ids_sql(s), types, p.relid);
  }
  if (s.kind == SourceKind::RowFanOut) {
    const config::RowsFrom& rf = *s.rows_from;
    Oid child = resolve_table(rf.table, where, "rows_from.table");
    need_column(child, where, "rows_from.fk", rf.fk, rf.table);
    need_column(child, where, "rows_from.slot", rf.slot, rf.table);
    need_column(p.relid, where, "rows_from.parent_key", rf.parent_key, s.table);
    Conv cc = conv_for_type(check_expression(child, where, "rows_from.slot", config::quote_ident(rf.slot)));
    if (cc != Conv::Int2 && cc != Conv::Int4 && cc != Conv::Int8)
      throw Error(ErrorKind::InvalidInput, where + ", rows_from.slot: column \"" + rf.slot + "\" must be an integer");
    p.resolved.child_table = qualified_name(child);
    Oid key_type = check_expression(p.relid, where, "rows_from.parent_key", config::quote_ident(rf.parent_key));
    p.rows = check_query(where, "rows_from", trigger_gen::rows_sql(s, p.resolved), {key_type}, p.relid);
  }
  // The trees the trigger runs: every expression of the spec, analysed in
  // one select list over the table, in the order the trigger reads them.
  p.spec = trigger_gen::capture_spec(s, p.resolved);
  const std::vector<std::string> exprs = trigger_gen::spec_expressions(json::parse(p.spec));
  std::string list;
  for (const std::string& e : exprs) list += (list.empty() ? "" : ", ") + e;
  try {
    p.select = pg_guard([&] { return analyze_select(p.relid, list.c_str()); });
  } catch (const PgError& e) {
    throw Error(ErrorKind::InvalidInput, where + ": " + pg_message(e), "The expressions were: " + list + ".");
  }
  for (size_t i = 0; i < exprs.size(); i++) {
    Node* e = pg_guard(
        [&] { return reinterpret_cast<Node*>(list_nth_node(TargetEntry, p.select->targetList, int(i))->expr); });
    check_code(where, "expression \"" + exprs[i] + "\"", e, p.relid);
  }
  p.trigger = trigger_gen::trigger_name(p.qualified, s, p.resolved);
  std::string nsp = pg_guard([&] { return get_namespace_name(get_rel_namespace(p.relid)); });
  for (const std::string& f : s.shared_ops_fields) {
    p.create += trigger_gen::helper_sql(p.qualified, nsp, s, f);
    p.helpers.push_back(config::quote_ident(nsp) + "." + config::quote_ident(trigger_gen::helper_name(s, f)));
  }
  p.create += trigger_gen::create_sql(p.qualified, s, p.resolved);  // rejects what is not supported yet
  p.truncate_trigger = trigger_gen::truncate_trigger_name(p.trigger);
  p.create += trigger_gen::create_truncate_sql(p.qualified, p.trigger);
  return p;
}

std::vector<Planned> plan(const config::Config& cfg) {
  std::vector<Planned> out;
  for (size_t i = 0; i < cfg.sources.size(); i++) {
    out.push_back(plan_source(cfg, cfg.sources[i], i));
    out.back().truncate_spec = trigger_gen::truncate_spec(cfg, cfg.sources[i]);
  }
  return out;
}

// ---- SPI helpers (each PostgreSQL call guarded) ---------------------------------

void spi_exec(const std::string& sql, int expect) {
  int rc = pg_guard([&] { return SPI_execute(sql.c_str(), false, 0); });
  if (rc != expect) throw Error(ErrorKind::Internal, "bitdex_sync: SPI failed (" + std::to_string(rc) + ") on: " + sql);
}

// Not read-only, catalog reads included: each takes a new snapshot,
// so they see what a concurrent apply_config committed while this one
// waited for the lock on bitdex_sync.sources (the statement's own snapshot
// is older).
int spi_exec_args(const char* sql, int nargs, Oid* types, Datum* values) {
  return pg_guard([&] { return SPI_execute_with_args(sql, nargs, types, values, nullptr, false, 0); });
}

std::string spi_text(int row, int col) {
  char* v = pg_guard([&] { return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col); });
  return v ? v : "";
}

bool trigger_exists(Oid relid, const std::string& name) {
  Oid types[2] = {OIDOID, TEXTOID};
  Datum values[2] = {ObjectIdGetDatum(relid), pg_guard([&] { return CStringGetTextDatum(name.c_str()); })};
  spi_exec_args("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2::name", 2, types, values);
  return SPI_processed > 0;
}

struct Recorded {
  Oid relid = InvalidOid;
  std::string table, trigger;
  Oid trigger_oid = InvalidOid;
  std::string truncate_trigger;  // empty: none recorded
  Oid truncate_oid = InvalidOid;
  std::string compiled;
  std::string spec;   // the capture spec (trigger_gen::capture_spec) it was recorded with
  bool ours = false;  // recorded by this installation (not a restored dump's row)
  std::vector<std::string> helpers;
};

// The recorded table by its OID, under its name now (a table renamed since
// the config was applied: dropping by the recorded name would miss it and
// leave its trigger capturing, unrecorded).
std::string table_now(const Recorded& rec) {
  if (OidIsValid(rec.relid) && pg_guard([&] { return get_rel_name(rec.relid); }) != nullptr)
    return qualified_name(rec.relid);
  return rec.table;
}

// Whether trigger `oid` is there, on table `relid`, under `name`.
bool trigger_present(Oid oid, Oid relid, const std::string& name) {
  if (!OidIsValid(oid)) return false;
  Oid types[3] = {OIDOID, OIDOID, TEXTOID};
  Datum values[3] = {ObjectIdGetDatum(oid), ObjectIdGetDatum(relid),
                     pg_guard([&] { return CStringGetTextDatum(name.c_str()); })};
  spi_exec_args("SELECT FROM pg_catalog.pg_trigger WHERE oid = $1 AND tgrelid = $2 AND tgname = $3::name", 3, types,
                values);
  return SPI_processed > 0;
}

bool trigger_present(const Recorded& rec) {
  return trigger_present(rec.trigger_oid, rec.relid, rec.trigger);
}

// Trigger `oid` under another name than `name` (ALTER TRIGGER ... RENAME
// let through): DROP TRIGGER for it, or nothing.
std::string drop_renamed(Oid oid, Oid relid, const std::string& name) {
  if (!OidIsValid(oid)) return {};
  Oid types[2] = {OIDOID, OIDOID};
  Datum values[2] = {ObjectIdGetDatum(oid), ObjectIdGetDatum(relid)};
  spi_exec_args("SELECT tgname FROM pg_catalog.pg_trigger WHERE oid = $1 AND tgrelid = $2", 2, types, values);
  if (SPI_processed == 0) return {};
  const std::string now = spi_text(0, 1);
  return now == name ? std::string() : trigger_gen::drop_sql(qualified_name(relid), now);
}

// Both recorded triggers of a source, renamed or not.
std::string drop_renamed(const Recorded& rec) {
  return drop_renamed(rec.trigger_oid, rec.relid, rec.trigger) +
         drop_renamed(rec.truncate_oid, rec.relid, rec.truncate_trigger);
}

// DROP TRIGGER for the source's TRUNCATE trigger when it is there (the row
// trigger may have gone on its own, with the guard overridden).
std::string drop_truncate_trigger(const Recorded& rec) {
  if (rec.truncate_trigger.empty() || !trigger_present(rec.truncate_oid, rec.relid, rec.truncate_trigger)) return {};
  return trigger_gen::drop_sql(table_now(rec), rec.truncate_trigger);
}

// Runs bitdex_sync's own bookkeeping (its tables) as the extension's owner,
// so that EXECUTE on apply_config is all a role needs besides the rights on
// the captured tables (the DDL runs as the caller and checks those).
class AsExtensionOwner {
 public:
  AsExtensionOwner() {
    pg_guard([&] { was_ = enter_owner(); });
  }
  ~AsExtensionOwner() { leave_owner(was_); }
  AsExtensionOwner(const AsExtensionOwner&) = delete;
  AsExtensionOwner& operator=(const AsExtensionOwner&) = delete;

 private:
  UserContext was_{};
};

// The DDL of apply_config itself is what the capture guard lets through.
class Applying {
 public:
  Applying() { g_applying_config = true; }
  ~Applying() { g_applying_config = false; }
};

struct Action {
  std::string source, action, trigger, table;
};

// Dependencies of the new trigger on what its trees use: the columns of its
// table, the functions, the tables and columns its queries read. Dropping or
// retyping one of them is refused (as for a trigger's WHEN clause) unless the
// trigger goes too.
void record_dependencies(Oid trigger_oid, const Planned& p) {
  pg_guard([&] {
    ObjectAddress self{TriggerRelationId, trigger_oid, 0};
    List* exprs = NIL;
    ListCell* lc;
    foreach (lc, p.select->targetList) exprs = lappend(exprs, lfirst_node(TargetEntry, lc)->expr);
    recordDependencyOnExpr(&self, (Node*)exprs, p.select->rtable, DEPENDENCY_NORMAL);
    for (Query* q : {p.ids, p.rows, p.join_filter})
      if (q) recordDependencyOnExpr(&self, (Node*)q, NIL, DEPENDENCY_NORMAL);
    for (Query* q : p.fan_ins) recordDependencyOnExpr(&self, (Node*)q, NIL, DEPENDENCY_NORMAL);
  });
}

// ALTER TABLE ... ENABLE ALWAYS TRIGGER for each of the source's triggers
// (the recorded one, its clones on partitions) that does not fire always.
std::string enable_sql(const std::string& source) {
  AsExtensionOwner owner;
  Datum value = pg_guard([&] { return CStringGetTextDatum(source.c_str()); });
  Oid type = TEXTOID;
  spi_exec_args(
      "SELECT format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I;', table_name, trigger_name) "
      "FROM bitdex_sync.broken_capture() WHERE source = $1 AND problem NOT IN ('dropped', 'recorded by an earlier "
      "installation (a restored dump)') AND problem NOT LIKE 'renamed%' ORDER BY 1",
      1, &type, &value);
  std::string sql;
  for (uint64 i = 0; i < SPI_processed; i++) sql += spi_text(static_cast<int>(i), 1) + "\n";
  return sql;
}

// What a changed config takes out of the index and loads again (SPEC §9):
// for every source recorded before, the fields it wrote that the new
// config does not write the same way are cleared, with a clear record in
// this transaction (in the old source's sink, after everything it
// captured); every new source, every source whose definition changed and
// every source writing a cleared field gets a load (unless `load` is
// false). Older loads of those sources still pending or running are given
// up. NOTICEs say what was done.
void clear_and_register_loads(const config::Config& cfg, const std::vector<Planned>& planned,
                              const std::map<std::string, Recorded>& recorded, bool load) {
  std::set<std::string> cleared_fields;
  for (const auto& [name, rec] : recorded) {
    if (!rec.ours || rec.spec.empty()) continue;
    const Planned* now = nullptr;
    for (const Planned& p : planned)
      if (p.src->name == name) now = &p;
    json::Value old_spec = json::parse(rec.spec), new_spec;
    if (now) new_spec = json::parse(now->spec);
    std::vector<std::string> fields =
        trigger_gen::fields_to_clear(old_spec, rec.relid, now ? &new_spec : nullptr, now ? now->relid : 0);
    if (fields.empty()) continue;
    Clear c;
    c.source = name;
    c.fields = fields;
    const std::string message = capture::clear_message(c);
    std::string clear_json = "{\"clear\":";
    write_clear_json(clear_json, c);
    clear_json += "}";
    const json::Value* sink = old_spec.find("sink");
    const bool outbox = sink && sink->type == json::Type::String && sink->text == "outbox";
    pg_guard([&] { emit_clear(message.data(), static_cast<int>(message.size()), clear_json.c_str(), outbox); });
    std::string list;
    for (const std::string& f : fields) {
      list += (list.empty() ? "" : ", ") + f;
      cleared_fields.insert(f);
    }
    pg_guard([&] {
      ereport(NOTICE, (errmsg("bitdex_sync: source \"%s\": the index's %s cleared (%s)", name.c_str(), list.c_str(),
                              now ? "its definition changed" : "the source is gone")));
    });
  }
  // Loads of sources that left the config end here.
  for (const auto& [name, rec] : recorded) {
    bool still = false;
    for (const Planned& p : planned) still = still || p.src->name == name;
    if (still) continue;
    AsExtensionOwner owner;
    Oid type = TEXTOID;
    Datum value = pg_guard([&] { return CStringGetTextDatum(name.c_str()); });
    if (spi_exec_args("UPDATE bitdex_sync.loads SET state = 'failed', finished_at = now(), error = 'given up: the "
                      "source left the config' WHERE source = $1 AND state IN ('pending', 'running')",
                      1, &type, &value) != SPI_OK_UPDATE)
      throw Error(ErrorKind::Internal, "bitdex_sync: could not give up the loads of source " + name);
  }
  if (!load) return;
  // Loads run in id order: direct sources first, then joins, then fan-outs
  // (a fan-out's query finds the slots the direct sources loaded).
  std::vector<const Planned*> order;
  for (const Planned& p : planned) order.push_back(&p);
  auto rank = [](const Planned* p) {
    switch (p->src->kind) {
      case SourceKind::Direct: return 0;
      case SourceKind::Join: return 1;
      case SourceKind::RowFanOut: return 2;
      case SourceKind::QueryFanOut: return 3;
    }
    return 3;
  };
  std::stable_sort(order.begin(), order.end(), [&](const Planned* a, const Planned* b) { return rank(a) < rank(b); });
  std::vector<std::pair<std::string, std::string>> loads;  // source, reason
  for (const Planned* pp : order) {
    const Planned& p = *pp;
    auto rec = recorded.find(p.src->name);
    std::string reason;
    if (rec == recorded.end() || !rec->second.ours)
      reason = "new source";
    else if (rec->second.trigger != p.trigger && !trigger_gen::same_but_fan_ins(rec->second.spec, p.spec))
      reason = "definition changed";
    else
      for (const std::string& f : trigger_gen::fields_written(*p.src))
        if (cleared_fields.count(f)) reason = "field " + f + " cleared";
    if (!reason.empty()) loads.emplace_back(p.src->name, reason);
  }
  if (loads.empty()) return;
  AsExtensionOwner owner;
  std::string names;
  for (const auto& [source, reason] : loads) {
    std::string digest;
    for (const Planned& p : planned)
      if (p.src->name == source) digest = p.trigger;
    Oid types[3] = {TEXTOID, TEXTOID, TEXTOID};
    Datum values[3] = {pg_guard([&] { return CStringGetTextDatum(source.c_str()); }),
                       pg_guard([&] { return CStringGetTextDatum(digest.c_str()); }),
                       pg_guard([&] { return CStringGetTextDatum(reason.c_str()); })};
    if (spi_exec_args("UPDATE bitdex_sync.loads SET state = 'failed', finished_at = now(), error = 'given up: a later "
                      "load of the source was registered (' || $3 || ')' WHERE source = $1 AND state IN ('pending', "
                      "'running')",
                      3, types, values) != SPI_OK_UPDATE ||
        spi_exec_args("INSERT INTO bitdex_sync.loads (source, digest, reason) VALUES ($1, $2, $3)", 3, types, values) !=
            SPI_OK_INSERT)
      throw Error(ErrorKind::Internal, "bitdex_sync: could not register a load of source " + source);
    names += (names.empty() ? "" : ", ") + source;
  }
  pg_guard([&] {
    ereport(NOTICE, (errmsg("bitdex_sync: registered a load of %zu source%s (%s)", loads.size(),
                            loads.size() == 1 ? "" : "s", names.c_str()),
                     errhint("The worker loads them after this transaction commits, while capture goes on; SELECT "
                             "bitdex_sync.wait_for_loads(); waits for them.")));
  });
  pg_guard([] { extension_change_at_commit(); });
}

std::vector<Action> reconcile(const config::Config& cfg, const std::vector<Planned>& planned, const char* config_text,
                              bool dry_run, bool load) {
  std::vector<Action> actions;
  std::map<std::string, Recorded> recorded;
  {
    AsExtensionOwner owner;
    // One apply_config at a time; readers of bitdex_sync.sources are not blocked.
    spi_exec("LOCK TABLE bitdex_sync.sources IN SHARE ROW EXCLUSIVE MODE", SPI_OK_UTILITY);
    spi_exec(
        "SELECT name, table_oid, table_name, trigger_name, trigger_oid, compiled, h, "
        "instance = (SELECT id FROM bitdex_sync.instance), coalesce(truncate_trigger_name, ''), "
        "coalesce(truncate_trigger_oid, 0), spec FROM bitdex_sync.sources "
        "LEFT JOIN LATERAL unnest(helpers) h ON true ORDER BY name",
        SPI_OK_SELECT);
    for (uint64 i = 0; i < SPI_processed; i++) {
      int r = static_cast<int>(i);
      Recorded& rec = recorded[spi_text(r, 1)];
      rec.relid = static_cast<Oid>(std::stoul(spi_text(r, 2)));
      rec.table = spi_text(r, 3);
      rec.trigger = spi_text(r, 4);
      rec.trigger_oid = static_cast<Oid>(std::stoul(spi_text(r, 5)));
      rec.compiled = spi_text(r, 6);
      std::string h = spi_text(r, 7);
      if (!h.empty()) rec.helpers.push_back(h);
      rec.ours = spi_text(r, 8) == "t";
      rec.truncate_trigger = spi_text(r, 9);
      rec.truncate_oid = static_cast<Oid>(std::stoul(spi_text(r, 10)));
      rec.spec = spi_text(r, 11);
    }
  }
  auto drop_helpers = [](const Recorded& rec) {
    std::string sql;
    for (const std::string& h : rec.helpers) sql += trigger_gen::drop_helper_sql(h, rec.table);
    return sql;
  };

  std::string ddl;
  std::vector<bool> created(planned.size(), false);
  for (size_t i = 0; i < planned.size(); i++) {
    const Planned& p = planned[i];
    const std::string& name = p.src->name;
    auto rec = recorded.find(name);
    // A helper's name taken by a function bitdex_sync did not make (CREATE
    // OR REPLACE would keep its owner, who could change it later).
    for (const std::string& h : p.helpers) {
      const bool ours =
          rec != recorded.end() && rec->second.ours &&
          std::find(rec->second.helpers.begin(), rec->second.helpers.end(), h) != rec->second.helpers.end();
      Oid type = TEXTOID;
      Datum arg = pg_guard([&] { return CStringGetTextDatum((h + "(" + p.qualified + ")").c_str()); });
      spi_exec_args("SELECT pg_catalog.to_regprocedure($1) IS NOT NULL", 1, &type, &arg);
      if (!ours && spi_text(0, 1) == "t")
        throw Error(ErrorKind::InvalidInput,
                    "source \"" + name + "\", shared_ops_fields: a function " + h + "(" + p.qualified +
                        ") exists but was not created by bitdex_sync",
                    {}, "Drop it or rename the field; bitdex_sync only replaces helpers it created.");
    }
    const bool exists = trigger_exists(p.relid, p.trigger);
    const bool present = rec != recorded.end() && rec->second.ours && trigger_present(rec->second);
    if (rec != recorded.end() && rec->second.trigger == p.trigger && rec->second.relid == p.relid && present) {
      // Disabled behind our back (on the table or a partition's clone):
      // capture fires again from here on.
      std::string enable = enable_sql(name);
      std::string action = enable.empty() ? "unchanged" : "enable";
      ddl += enable;
      // The TRUNCATE trigger: recorded and there, or made now (a config
      // applied before TRUNCATE was captured, or the trigger dropped while
      // bitdex_sync.allow_capture_loss let it through).
      if (!trigger_present(rec->second.truncate_oid, p.relid, p.truncate_trigger)) {
        if (trigger_exists(p.relid, p.truncate_trigger) && rec->second.truncate_trigger != p.truncate_trigger)
          throw Error(ErrorKind::InvalidInput,
                      "source \"" + name + "\": a trigger named \"" + p.truncate_trigger +
                          "\" exists but was not recorded by bitdex_sync",
                      {}, "Drop or rename that trigger; bitdex_sync only replaces triggers it created.");
        if (rec->second.truncate_oid != InvalidOid)
          ddl += drop_renamed(rec->second.truncate_oid, p.relid, rec->second.truncate_trigger);
        ddl += trigger_gen::drop_sql(p.qualified, p.truncate_trigger);
        ddl += trigger_gen::create_truncate_sql(p.qualified, p.trigger);
        action = "enable";
      }
      actions.push_back({name, action, p.trigger, p.qualified});
      continue;
    }
    // Our trigger name on the table recorded for the source, by OID or (a
    // restored dump: other OIDs) by name.
    const bool ours = rec != recorded.end() && rec->second.trigger == p.trigger &&
                      (rec->second.relid == p.relid || rec->second.table == p.qualified);
    const bool truncate_ours = rec != recorded.end() && rec->second.truncate_trigger == p.truncate_trigger &&
                               (rec->second.relid == p.relid || rec->second.table == p.qualified);
    for (const auto& [tg, mine] : {std::pair{&p.trigger, ours}, std::pair{&p.truncate_trigger, truncate_ours}})
      if (!mine && trigger_exists(p.relid, *tg))
        throw Error(
            ErrorKind::InvalidInput,
            "source \"" + name + "\": a trigger named \"" + *tg + "\" exists but was not recorded by bitdex_sync", {},
            "Drop or rename that trigger; bitdex_sync only replaces triggers it created.");
    if (rec != recorded.end()) {
      // The recorded trigger, or one of our computed name on the same table
      // recorded under another OID (a restored dump): ours to replace.
      if (present || (ours && exists)) ddl += trigger_gen::drop_sql(table_now(rec->second), rec->second.trigger);
      ddl += drop_truncate_trigger(rec->second);
      if (truncate_ours && !rec->second.ours && trigger_exists(p.relid, p.truncate_trigger))
        ddl += trigger_gen::drop_sql(p.qualified, p.truncate_trigger);  // a restored dump's
      if (rec->second.ours) ddl += drop_renamed(rec->second);
      if (present || (ours && exists) || rec->second.relid == p.relid) ddl += drop_helpers(rec->second);
      actions.push_back({name, "replace", p.trigger, p.qualified});
    } else {
      actions.push_back({name, "create", p.trigger, p.qualified});
    }
    ddl += p.create;
    created[i] = true;
  }
  for (const auto& [name, rec] : recorded) {
    bool still = false;
    for (const Planned& p : planned) still = still || p.src->name == name;
    if (still) continue;
    if (trigger_present(rec)) ddl += trigger_gen::drop_sql(table_now(rec), rec.trigger) + drop_helpers(rec);
    ddl += drop_truncate_trigger(rec);
    if (rec.ours) ddl += drop_renamed(rec);
    actions.push_back({name, "drop", rec.trigger, rec.table});
  }
  if (dry_run) return actions;
  bool message_sink = false;
  for (const Planned& p : planned) message_sink = message_sink || p.src->sink == config::Sink::Message;
  if (message_sink && pg_guard([] { return bitdex::pg::worker_not_ready(extension_instance()); }))
    throw Error(ErrorKind::NotReady,
                "the bitdex_sync worker of this database has not created its replication slot for this installation "
                "of the extension yet",
                "Changes captured as messages before the slot exists would never reach the ops WAL.",
                "Commit CREATE EXTENSION, run SELECT bitdex_sync.wait_for_sync(); (it returns once the worker is "
                "decoding), then apply the config.");
  if (!ddl.empty()) {
    Applying applying;
    // The search_path capture expressions are analysed under: the helpers'
    // bodies (parsed now and stored) resolve what the trigger's trees do.
    const char* ddl_text = ddl.c_str();
    pg_guard([&] {
      const int nest = NewGUCNestLevel();
      (void)set_config_option("search_path", "pg_catalog, public, pg_temp", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                              true, 0, false);
      if (SPI_execute(ddl_text, false, 0) != SPI_OK_UTILITY) elog(ERROR, "bitdex_sync: apply_config's DDL failed");
      AtEOXact_GUC(true, nest);
    });
  }
  // applied_by names the caller, not the owner who writes the row.
  const std::string applier = pg_guard([] { return GetUserNameFromId(GetUserId(), false); });
  const uint64 instance = pg_guard([] { return extension_instance(); });
  AsExtensionOwner owner;
  spi_exec("DELETE FROM bitdex_sync.sources", SPI_OK_DELETE);
  for (size_t i = 0; i < planned.size(); i++) {
    const Planned& p = planned[i];
    Oid trigger_oid = pg_guard([&] { return get_trigger_oid(p.relid, p.trigger.c_str(), false); });
    Oid truncate_oid = pg_guard([&] { return get_trigger_oid(p.relid, p.truncate_trigger.c_str(), false); });
    std::string compiled;
    auto rec = recorded.find(p.src->name);
    if (!created[i] && rec != recorded.end() && rec->second.ours && !rec->second.compiled.empty()) {
      compiled = rec->second.compiled;  // resolved when it was created; its dependencies say so
    } else {
      compiled = pg_guard([&] {
        List* fan_ins = NIL;
        for (Query* q : p.fan_ins) fan_ins = lappend(fan_ins, q);
        return nodeToString(list_make5(p.select, p.ids, p.rows, p.join_filter, fan_ins));
      });
      record_dependencies(trigger_oid, p);
    }
    std::string raw;
    json::write(raw, p.src->raw);
    std::string helpers = "{";
    for (size_t h = 0; h < p.helpers.size(); h++) {
      if (h) helpers += ",";
      helpers += "\"";
      for (char c : p.helpers[h]) {
        if (c == '"' || c == '\\') helpers += '\\';
        helpers += c;
      }
      helpers += "\"";
    }
    helpers += "}";
    Oid types[13] = {TEXTOID, OIDOID,  TEXTOID, TEXTOID, TEXTOID, TEXTOID, OIDOID,
                     TEXTOID, TEXTOID, INT8OID, TEXTOID, OIDOID,  TEXTOID};
    Datum values[13] = {pg_guard([&] { return CStringGetTextDatum(p.src->name.c_str()); }),
                        ObjectIdGetDatum(p.relid),
                        pg_guard([&] { return CStringGetTextDatum(p.qualified.c_str()); }),
                        pg_guard([&] { return CStringGetTextDatum(p.trigger.c_str()); }),
                        pg_guard([&] { return CStringGetTextDatum(raw.c_str()); }),
                        pg_guard([&] { return CStringGetTextDatum(helpers.c_str()); }),
                        ObjectIdGetDatum(trigger_oid),
                        pg_guard([&] { return CStringGetTextDatum(p.spec.c_str()); }),
                        pg_guard([&] { return CStringGetTextDatum(compiled.c_str()); }),
                        Int64GetDatum(static_cast<int64>(instance)),
                        pg_guard([&] { return CStringGetTextDatum(p.truncate_trigger.c_str()); }),
                        ObjectIdGetDatum(truncate_oid),
                        pg_guard([&] { return CStringGetTextDatum(p.truncate_spec.c_str()); })};
    int rc = spi_exec_args(
        "INSERT INTO bitdex_sync.sources (name, table_oid, table_name, trigger_name, config, helpers, trigger_oid, "
        "spec, compiled, instance, truncate_trigger_name, truncate_trigger_oid, truncate_spec) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6::text[], $7, $8, $9, $10, $11, $12, $13)",
        13, types, values);
    if (rc != SPI_OK_INSERT) throw Error(ErrorKind::Internal, "bitdex_sync: could not record source " + p.src->name);
  }
  Oid types[3] = {TEXTOID, TEXTOID, TEXTOID};
  Datum values[3] = {pg_guard([&] { return CStringGetTextDatum(config_text); }),
                     pg_guard([&] { return CStringGetTextDatum(cfg.index.c_str()); }),
                     pg_guard([&] { return CStringGetTextDatum(applier.c_str()); })};
  spi_exec_args("INSERT INTO bitdex_sync.config_history (config, index_name, applied_by) VALUES ($1, $2, $3::name)", 3,
                types, values);
  clear_and_register_loads(cfg, planned, recorded, load);
  // Capture is whole again wherever no trigger is missing or disabled now.
  spi_exec(
      "UPDATE bitdex_sync.capture_gaps g SET ended_at = now() WHERE ended_at IS NULL AND NOT EXISTS "
      "(SELECT FROM bitdex_sync.broken_capture() b WHERE b.source = g.source AND b.table_name = g.table_name "
      "AND b.trigger_name = g.trigger_name)",
      SPI_OK_UPDATE);
  return actions;
}

}  // namespace
}  // namespace bitdex::pg

// bitdex_sync.apply_config(config text, dry_run boolean) -> setof (source, action, trigger_name, table_name)
Datum bitdex_sync_apply_config(PG_FUNCTION_ARGS) {
  char* config_text = text_to_cstring(PG_GETARG_TEXT_PP(0));
  bool dry_run = PG_GETARG_BOOL(1);
  bool load = PG_NARGS() > 2 ? PG_GETARG_BOOL(2) : true;
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo* rsinfo = (ReturnSetInfo*)fcinfo->resultinfo;
  return bitdex::pg::cpp_call([&]() -> Datum {
    using namespace bitdex::pg;
    bitdex::config::Config cfg = bitdex::config::parse(config_text);
    if (pg_guard([] { return SPI_connect(); }) != SPI_OK_CONNECT)
      throw bitdex::Error(bitdex::ErrorKind::Internal, "bitdex_sync: SPI_connect failed");
    std::vector<Planned> planned = plan(cfg);
    if (cfg.dump_phases)
      pg_guard([] {
        ereport(NOTICE, (errmsg("bitdex_sync: \"dump_phases\" is accepted and not used: loads are derived from the "
                                "sources"),
                         errdetail("A load of a source captures, per row, what an INSERT of the row would; see "
                                   "docs/load.md.")));
      });
    std::vector<Action> actions = reconcile(cfg, planned, config_text, dry_run, load);
    pg_guard([] { SPI_finish(); });
    for (const Action& a : actions) {
      pg_guard([&] {
        Datum values[4] = {CStringGetTextDatum(a.source.c_str()), CStringGetTextDatum(a.action.c_str()),
                           CStringGetTextDatum(a.trigger.c_str()), CStringGetTextDatum(a.table.c_str())};
        bool nulls[4] = {false, false, false, false};
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
      });
    }
    return (Datum)0;
  });
}

// bitdex_sync.trigger_sql(config text) -> text: the DDL apply_config would run
// to create every source's trigger (after the same checks).
Datum bitdex_sync_trigger_sql(PG_FUNCTION_ARGS) {
  char* config_text = text_to_cstring(PG_GETARG_TEXT_PP(0));
  return bitdex::pg::cpp_call([&]() -> Datum {
    using namespace bitdex::pg;
    bitdex::config::Config cfg = bitdex::config::parse(config_text);
    if (pg_guard([] { return SPI_connect(); }) != SPI_OK_CONNECT)
      throw bitdex::Error(bitdex::ErrorKind::Internal, "bitdex_sync: SPI_connect failed");
    std::string sql;
    for (const Planned& p : plan(cfg)) sql += "-- source " + p.src->name + "\n" + p.create;
    pg_guard([] { SPI_finish(); });
    return pg_guard([&] { return PointerGetDatum(cstring_to_text(sql.c_str())); });
  });
}
