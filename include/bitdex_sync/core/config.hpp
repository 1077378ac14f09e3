// The capture config (SPEC §3): BitDex sync-config keys, from YAML or JSON,
// parsed into sources and checked for shape. Checks that need the live
// catalog (tables, columns, expression types) happen in src/pg.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitdex_sync/core/json.hpp"

namespace bitdex::config {

enum class Sink { Message, Outbox };
enum class SourceKind {
  Direct,       // slot = a column of this table: track_fields, computed_fields, sets_alive, on_delete
  Join,         // multi-value join table: field + value_field (+ filter, conditional computed_fields)
  QueryFanOut,  // one queryOpSet per change, query template filled from the row
  RowFanOut,    // type: fan_out_per_row, one op row per child row (rows_from)
};

const char* sink_name(Sink s);
const char* kind_name(SourceKind k);

// A SQL expression with {column} placeholders, as written in the config.
struct Template {
  std::string text;
  std::vector<std::string> columns;  // distinct placeholders, in order of appearance

  // The SQL with every {col} replaced by `prefix` + the quoted identifier
  // ("col", or NEW."col" with prefix "NEW.").
  std::string render(const std::string& prefix = "") const;
  // The SQL with {col} replaced by $1, $2, ... in the order of `columns`.
  std::string render_params() const;
};

struct TrackField {
  std::string target;  // the index field
  Template expr;       // a bare column is the template "{column}"
};

struct ComputedField {
  std::string target;
  Template expr;                  // direct: the value; join: the condition
  std::optional<Template> value;  // join: the value added when the condition holds
};

struct RowsFrom {
  std::string table, fk, slot = "id", parent_key = "id";
};

struct Source {
  std::string name;  // unique: the table, plus ".field" for join sources
  SourceKind kind = SourceKind::Direct;
  std::string table;  // as written; "schema.table" allowed
  std::string slot_field = "id";
  std::vector<TrackField> track_fields;
  std::vector<ComputedField> computed_fields;
  bool sets_alive = false;
  bool on_delete = false;
  std::string field, value_field;       // join
  std::optional<Template> filter;       // join, fan-outs
  std::optional<Template> query;        // fan-out: BitDex query with {col} (and {ids}) placeholders
  std::optional<Template> expression;   // fan-out: SQL whose result fills {ids}
  std::optional<std::string> join;      // query fan-out: the FROM clause of "expression", or (without one)
  std::optional<Template> join_filter;  // ...the JOIN clauses that, with "filter", decide whether a row counts
  std::optional<RowsFrom> rows_from;    // fan_out_per_row
  std::vector<std::string> shared_ops_fields;
  std::vector<std::string> depends_on;  // dump ordering (SPEC §9)
  Sink sink = Sink::Message;
  json::Value raw;  // the source as given (after YAML -> JSON), for storage
};

struct Config {
  std::string index;
  Sink sink = Sink::Message;
  std::vector<Source> sources;
  bool dump_phases = false;  // BitDex's own loader's key: accepted, not used (loads come from the sources)
};

// Parses YAML or JSON text (JSON is recognised by a leading '{'). Throws
// Error(InvalidInput) whose message names the source and key, with a hint.
Config parse(std::string_view text);
Config parse_json_value(const json::Value& doc);

// Splits "schema.table" (or "table") into its parts; identifiers are exact
// (no case folding), as in BitDex configs.
std::pair<std::string, std::string> split_table(const std::string& table);

// A double-quoted SQL identifier.
std::string quote_ident(const std::string& ident);
// A single-quoted SQL literal.
std::string quote_literal(const std::string& text);

}  // namespace bitdex::config
