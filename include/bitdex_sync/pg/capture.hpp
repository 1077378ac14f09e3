// Compiling the expressions of a capture spec against a table, shared by the
// capture trigger (at first use) and apply_config (to check a config before
// anything is created). C-style: these run PostgreSQL code and may ereport.
#pragma once

#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "nodes/execnodes.h"
#include "utils/relcache.h"
}

namespace bitdex::pg {

// How a value of a given type becomes an op value.
enum class Conv : uint8_t { Int2, Int4, Int8, Bool, Text, Name, Output, Number, DateTime, Unsupported };

// Conversion for a result type (domains resolved); Unsupported when the type
// cannot be captured.
Conv conv_for_type(Oid type);

// Parses `select_list` (comma-separated SQL expressions over the columns of
// `relid`) as "SELECT <list> FROM ONLY <relid>" with search_path pinned to
// pg_catalog, public, and returns the analysed target expressions (a List of
// Expr*). Errors (syntax, unknown column or function, subqueries) are
// ereported.
List* analyze_expressions(Oid relid, const char* select_list);

}  // namespace bitdex::pg
