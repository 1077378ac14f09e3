// Meaning-preserving deduplication of one batch of entity records.
#pragma once

#include <cstddef>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex {

struct DedupStats {
  size_t records_in = 0, records_out = 0;
  size_t ops_in = 0, ops_out = 0;
  // Comparisons of one op with another (same pair? same query, and may it
  // merge?): the work, which the tests hold linear in ops_in.
  size_t probes = 0;
};

// Asked every so many records: true stops dedup with Error(Cancelled).
using CancelCheck = bool (*)();

// Returns a batch that, applied to an index whose state agrees with the rows
// the ops were generated from, gives exactly the state that applying `batch`
// record by record gives. See docs/dedup.md for the rules and why each holds.
// Each output record carries the highest source position merged into it.
// Time and memory are linear in the batch's ops.
Batch dedup(Batch batch, DedupStats* stats = nullptr, CancelCheck cancelled = nullptr);

}  // namespace bitdex
