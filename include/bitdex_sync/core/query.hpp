// BitDex query syntax as used by queryOpSet: clauses joined by " AND ", each
// `field eq value` or `field in [v1, v2, ...]`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex {

struct QueryClause {
  std::string field;
  std::vector<OpValue> values;  // eq: one value; in: any number
};

struct Query {
  std::vector<QueryClause> clauses;  // all must match
};

// Parses a query; throws Error(InvalidInput) naming the offending text.
// Values: null, true, false, integers, "double" or 'single' quoted strings,
// other numbers (kept as JSON text), or a bare word (a string).
Query parse_query(std::string_view text);

// A filter for index queries: clauses (`eq`, `in`) combined with AND, OR,
// NOT and parentheses; NOT binds tightest, then AND, then OR. An empty
// filter or `*` matches every alive slot.
struct Filter {
  enum class Kind { All, Clause, And, Or, Not };
  Kind kind = Kind::All;
  QueryClause clause;            // Clause
  std::vector<Filter> children;  // And, Or: two or more; Not: one
};

// Throws Error(InvalidInput) naming the offending text and offset.
Filter parse_filter(std::string_view text);

}  // namespace bitdex
