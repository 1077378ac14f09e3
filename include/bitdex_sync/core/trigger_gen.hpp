// From a parsed source to what gets installed: the capture spec (the one
// argument of the generic C trigger function), a stable trigger name, and the
// DDL. Pure text generation; the catalog checks are in src/pg.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bitdex_sync/core/capture_spec.hpp"
#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/ops.hpp"

namespace bitdex::trigger_gen {

// What the catalog resolved for a source: the qualified child table of a
// fan_out_per_row source ("schema"."table").
// A fan-in a direct source's trigger runs (see FanIn below).
struct ResolvedFanIn {
  std::string source;                // the query fan-out
  std::string field;                 // the child's field (a plain column) whose value finds the parents
  std::string sql;                   // fan_in_sql
  uint32_t lock = 0;                 // the parent table's OID: its key locks (see FanIn)
  std::vector<std::string> targets;  // the fields its columns set, in order
};

struct Resolved {
  std::string child_table;
  std::vector<ResolvedFanIn> fan_ins;  // direct: the fan-ins whose children its rows are
  uint32_t fan_in_lock = 0;            // query fan-out with a fan-in: its table's OID (see FanIn)
  // A query fan-out with "join" and no "expression": the columns of the
  // source table that the join and its filter read, in $n order.
  std::vector<std::string> join_filter_columns;
};

// The capture spec of a source (capture_spec.hpp), and as recorded (its
// JSON text, what the trigger compiles at first use).
spec::CaptureSpec spec_of(const config::Source& s, const Resolved& r = {});
std::string capture_spec(const config::Source& s, const Resolved& r = {});

// The events the trigger fires on, as the "AFTER ..." clause.
std::string trigger_events(const config::Source& s);

// bitdex_<table>_<first 8 hex of SHA-256 over the qualified table, the events
// and the spec>: a changed definition gives a new name, an unchanged one the
// same name on every run and every machine. At most 63 bytes.
std::string trigger_name(const std::string& qualified_table, const config::Source& s, const Resolved& r = {});

// CREATE TRIGGER ... EXECUTE FUNCTION bitdex_sync.capture(); plus ALTER
// TABLE ... ENABLE ALWAYS TRIGGER (fires under session_replication_role =
// replica too). The trigger takes no argument: its spec is recorded with its
// OID in bitdex_sync.sources, where only apply_config writes.
std::string create_sql(const std::string& qualified_table, const config::Source& s, const Resolved& r = {});

// The SQL expressions of a spec over the source table's row, in the order the
// capture trigger consumes their analysed trees: the slot; join: the value,
// then (value, condition) per computed field, then the filter; other kinds:
// the fields; then one per query placeholder column, the {ids} expression's
// parameters, the parent key (fan_out_per_row), a fan-out's filter, and
// the join filter's parameters.
// Throws Error(InvalidInput) for a spec without the keys its kind needs.
std::vector<std::string> spec_expressions(const json::Value& spec);
// The query that lists a fan_out_per_row source's child slots for a parent key ($1).
std::string rows_sql(const config::Source& s, const Resolved& r);
// The query that computes {ids} of a fan-out with "expression" ($n = its columns).
std::string ids_sql(const config::Source& s);
// A query fan-out "F eq {col}" (no "expression") where F is a plain column
// of exactly one direct source: that source's rows are the fan-out's
// children, joined by column. Children that arrive under a parent (INSERT,
// or a change of that column) take the parent's fields in their own record
// (the fan-in), and verify can join the tables.
struct FanIn {
  size_t child = 0;           // index of the direct source in the config
  std::string field;          // F
  std::string child_column;   // the child's column F is
  std::string parent_column;  // {col}
};
std::optional<FanIn> fan_in_of(const config::Config& cfg, const config::Source& fan_out);
// The query a child's trigger runs for one fan-in, with $1 the child's
// column value: the parent's fields (the fan-out's track fields, in order)
// of each parent row matching it and passing the fan-out's filter.
// Ordering against the parents' changes: the parent's trigger takes an
// exclusive transaction lock on (parent table, key) for every change, the
// child's a shared one on its key before it reads, with the latest
// snapshot. A parent change then commits either before the child reads (and
// is read) or after the child's commit (and its queryOpSet, later in the
// ops WAL, reaches the child): also for a parent inserted concurrently, and
// one entering the filter. `parent_table` is the qualified table, `only`
// false for a partitioned one.
std::string fan_in_sql(const config::Source& fan_out, const FanIn& f, const std::string& parent_table, bool only);
// Whether two capture specs differ in their fan-ins at most: the source then
// needs no load (its parents' loads reach its rows through their queries).
bool same_but_fan_ins(const std::string& a, const std::string& b);
// Whether `s` is a query fan-out whose "join" (without "expression") and
// "filter" decide whether a row counts (BitDex's shape).
bool has_join_filter(const config::Source& s);
// Its condition on one row: SELECT EXISTS (SELECT FROM (SELECT $1 AS "c1",
// ...) AS "<table>" <join> WHERE <filter>), the derived table standing for
// the source row under the table's own name (as the join text refers to it),
// with `columns` as its columns ($n in order); {col} placeholders in join
// and filter refer to that row too.
std::string join_filter_sql(const config::Source& s, const std::vector<std::string>& columns);
// The EXISTS (...) condition of it with `row_select` (a SELECT giving the
// row's columns) for the derived table: verify uses "SELECT p.*".
std::string join_filter_exists(const config::Source& s, const std::string& row_select);
std::string drop_sql(const std::string& qualified_table, const std::string& trigger);

// The index fields a source writes (direct: its tracked and computed fields;
// join: its field and the targets of its computed fields; fan-outs: their
// tracked fields), in config order.
std::vector<std::string> fields_written(const config::Source& s);

// What a TRUNCATE of the source's table takes out of the index: a direct
// source with on_delete deletes the slots holding its fields (and, with
// sets_alive, every alive slot), as a DELETE of each row would; any other
// source clears the fields it writes (a direct source without on_delete
// captures no DELETE either, so its slots stay).
Clear truncate_clear(const config::Source& s);

// The spec of the source's TRUNCATE trigger, recorded with it:
// {"sink":..,"clear":{..clear record JSON..},"refuse":null|reason}. A
// TRUNCATE is refused when another source of `cfg` writes one of its fields:
// clearing the field would take that source's values out too.
std::string truncate_spec(const config::Config& cfg, const config::Source& s);

// What decides each field's values, per field written, from a capture spec
// (capture_spec) and the table it is on: the field's own expression and
// everything of the source that applies to every field (kind, slot, query,
// children, a fan-out's filter; a join's filter for its main field). Two
// definitions of a field give the same values iff these strings are equal.
std::vector<std::pair<std::string, std::string>> field_definitions(const json::Value& spec, uint32_t table);

// The fields an earlier definition wrote that a new one does not write the
// same way (new_spec nullptr: the source is gone): what a changed config
// must clear before the source is loaded again.
std::vector<std::string> fields_to_clear(const json::Value& old_spec, uint32_t old_table, const json::Value* new_spec,
                                         uint32_t new_table);

// The statement-level AFTER TRUNCATE trigger beside a source's row trigger
// `row_trigger`: its name (the row trigger's plus "_t") and its DDL.
std::string truncate_trigger_name(const std::string& row_trigger);
std::string create_truncate_sql(const std::string& qualified_table, const std::string& row_trigger);

// shared_ops_fields: one callable helper per field, "<schema>"."bitdex_<table>_<field>_ops"(row)
// RETURNS jsonb, giving the field's set op for a row exactly as the trigger
// builds it (both go through bitdex_sync.op_value). Stable, unhashed names so
// re-emitters can call them; CREATE OR REPLACE keeps them current.
std::string helper_name(const config::Source& s, const std::string& field);  // unquoted
std::string helper_sql(const std::string& qualified_table, const std::string& schema, const config::Source& s,
                       const std::string& field);
std::string drop_helper_sql(const std::string& qualified_helper, const std::string& qualified_table);

}  // namespace bitdex::trigger_gen
