// SQL-callable functions of schema bitdex_sync: thin shims over the core.
#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/pg/wall.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(bitdex_sync_dedup);
Datum bitdex_sync_dedup(PG_FUNCTION_ARGS);
}

namespace {

// bitdex_sync.dedup() is for inspection and tests; the worker's batches are
// bounded by bitdex_sync.batch_max_memory. A larger argument is refused
// before anything is parsed: the parsed batch takes several times its size.
constexpr size_t kMaxDedupInput = 16u << 20;

bool interrupt_pending() {
  return InterruptPending != 0;
}

}  // namespace

// bitdex_sync.dedup(jsonb) -> jsonb: the deduplicated form of a batch of
// entity records, as the worker would write it to the ops WAL. Linear in the
// batch; a cancel or statement_timeout stops it.
Datum bitdex_sync_dedup(PG_FUNCTION_ARGS) {
  Jsonb* in = PG_GETARG_JSONB_P(0);
  if (VARSIZE(in) > kMaxDedupInput)
    ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                    errmsg("batch of %zu bytes is too large for bitdex_sync.dedup()", static_cast<size_t>(VARSIZE(in))),
                    errdetail("bitdex_sync.dedup() takes at most %zu MB.", kMaxDedupInput >> 20),
                    errhint("Deduplicate it in parts: records of different entities never interact.")));
  char* text = JsonbToCString(nullptr, &in->root, VARSIZE(in));
  CHECK_FOR_INTERRUPTS();
  bool cancelled = false;
  Datum result = bitdex::pg::cpp_call([&]() -> Datum {
    bitdex::Batch batch = bitdex::parse_batch(text);
    std::string out;
    try {
      out = bitdex::batch_to_json(bitdex::dedup(std::move(batch), nullptr, interrupt_pending));
    } catch (const bitdex::Error& e) {
      if (e.kind() != bitdex::ErrorKind::Cancelled) throw;
      cancelled = true;
      return (Datum)0;
    }
    return bitdex::pg::pg_guard([&]() { return DirectFunctionCall1(jsonb_in, CStringGetDatum(out.c_str())); });
  });
  // Raised here, outside the C++ frames, with PostgreSQL's own message
  // (cancel request, statement_timeout, termination).
  if (cancelled) {
    CHECK_FOR_INTERRUPTS();
    ereport(ERROR, (errcode(ERRCODE_QUERY_CANCELED), errmsg("bitdex_sync.dedup() was cancelled")));
  }
  return result;
}
