// Meaning-preserving deduplication of one batch of entity records.
#pragma once

#include <cstddef>

#include "bitdex_sync/core/ops.hpp"

namespace bitdex {

struct DedupStats {
  size_t records_in = 0, records_out = 0;
  size_t ops_in = 0, ops_out = 0;
};

// Returns a batch that, applied to an index whose state agrees with the rows
// the ops were generated from, gives exactly the state that applying `batch`
// record by record gives. See docs/dedup.md for the rules and why each holds.
// Each output record carries the highest source position merged into it.
Batch dedup(Batch batch, DedupStats* stats = nullptr);

}  // namespace bitdex
