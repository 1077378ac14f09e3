// The capture spec: what apply_config records for each capture trigger in
// bitdex_sync.sources and the trigger compiles at its first row. Written by
// trigger_gen (capture_spec()) and read by the trigger (capture_compile.cpp)
// through this one type, as compact JSON:
// {"v":1,"source":..,"kind":..,"sink":..,"slot":<sql>,"alive":b,"delete":b,
//  "fields":[{"f":target,"sql":<sql>}],                 direct, fan-outs
//  "value":{"f":field,"sql":<sql>},"filter":<sql>,       join
//  "computed":[{"f":target,"cond":<sql>,"sql":<sql>}],   join (conditional)
//  "query":<template>,"query_cols":[..],                 query fan-out
//  "ids_sql":<SELECT ...>,"ids_params":[<sql>],           ...with expression
//  "fan_in":[{"source":..,"field":F,"sql":..,"lock":oid,"fields":[..]}],  direct
//  "fan_in_lock":oid,                                    query fan-out with a fan-in
//  "filter_sql":<SELECT EXISTS ...>,"filter_params":[<sql>],  ...with join, no expression
//  "filter":<sql>,                                       other filtered fan-outs
//  "shared":[..],                                        shared_ops_fields (not read by the trigger)
//  "rows_sql":<SELECT ...>,"parent_key":<sql>}           fan_out_per_row
// Keys come in this order: trigger names hash the text, so writing a spec
// read from a recorded one gives back the same bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/json.hpp"

namespace bitdex::spec {

struct Field {
  std::string target;  // "f"
  std::string sql;
  std::string cond;  // join computed fields: the condition ("cond")
  bool operator==(const Field& o) const { return target == o.target && sql == o.sql && cond == o.cond; }
};

// A fan-in (trigger_gen::FanIn): the child's rows take the parent's fields.
struct FanIn {
  std::string source;               // the query fan-out (parent)
  std::string field;                // F, a field of this source
  std::string sql;                  // trigger_gen::fan_in_sql, $1 = F's value
  uint32_t lock = 0;                // the parent table's OID (key locks)
  std::vector<std::string> fields;  // the parent's fields, in the query's column order
  bool operator==(const FanIn& o) const {
    return source == o.source && field == o.field && sql == o.sql && lock == o.lock && fields == o.fields;
  }
};

struct CaptureSpec {
  int version = 1;
  std::string source;
  config::SourceKind kind = config::SourceKind::Direct;
  config::Sink sink = config::Sink::Message;
  std::string slot;  // SQL of the slot id
  bool alive = false, on_delete = false;
  std::vector<Field> fields;               // not join: every field written, in order
  Field value;                             // join: the field and its value
  std::vector<Field> computed;             // join: conditional fields
  std::optional<std::string> filter;       // join: over the join row; others: a fan-out's row filter
  std::string query;                       // query fan-out: the BitDex query template
  std::vector<std::string> query_cols;     // ... its {col} placeholders, one per occurrence ({ids} excluded)
  std::optional<std::string> ids_sql;      // ... with "expression": the query computing {ids}
  std::vector<std::string> ids_params;     //     its $n, as SQL over the row
  std::vector<FanIn> fan_ins;              // direct: children of query fan-outs
  uint32_t fan_in_lock = 0;                // query fan-out with a fan-in: its table's OID
  std::optional<std::string> filter_sql;   // query fan-out with "join" and no "expression"
  std::vector<std::string> filter_params;  //     its $n, as SQL over the row
  std::vector<std::string> shared;         // shared_ops_fields: part of the definition only
  std::string rows_sql;                    // fan_out_per_row: child slots for a parent key ($1)
  std::string parent_key;                  //     the parent key, as SQL over the row

  bool operator==(const CaptureSpec& o) const;
};

// The spec as recorded (compact JSON, the key order above).
std::string write(const CaptureSpec& s);
// Reads a recorded spec; throws Error(InvalidInput) when a key its kind
// needs is missing or mistyped, Error(NotSupported) for an unknown kind.
CaptureSpec read(const json::Value& v);
CaptureSpec read(std::string_view text);

// The SQL expressions over the source table's row, in the order the capture
// trigger consumes their analysed trees: the slot; join: the value, then
// (value, condition) per computed field, then the filter; other kinds: the
// fields; then the query placeholder columns, the {ids} parameters, the
// parent key (fan_out_per_row), a fan-out's filter, the join filter's
// parameters.
std::vector<std::string> expressions(const CaptureSpec& s);

}  // namespace bitdex::spec
