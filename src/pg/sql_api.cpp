// SQL-callable functions of schema bitdex_sync: thin shims over the core.
#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/pg/wall.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(bitdex_sync_dedup);
Datum bitdex_sync_dedup(PG_FUNCTION_ARGS);
}

// bitdex_sync.dedup(jsonb) -> jsonb: the deduplicated form of a batch of
// entity records, as the worker would write it to the ops WAL.
Datum bitdex_sync_dedup(PG_FUNCTION_ARGS) {
  Jsonb* in = PG_GETARG_JSONB_P(0);
  char* text = JsonbToCString(nullptr, &in->root, VARSIZE(in));
  return bitdex::pg::cpp_call([&]() -> Datum {
    std::string out = bitdex::batch_to_json(bitdex::dedup(bitdex::parse_batch(text)));
    return bitdex::pg::pg_guard([&]() { return DirectFunctionCall1(jsonb_in, CStringGetDatum(out.c_str())); });
  });
}
