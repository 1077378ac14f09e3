// A jsonb datum as a json::Value, walked directly (the outbox reader's hot
// path) instead of printed as text by jsonb_out and parsed again.
//
// Two steps, on either side of the wall (wall.hpp): jsonb_tokens() calls
// PostgreSQL (the jsonb iterator, numeric_out) and holds no C++ objects;
// value_from_tokens() builds C++ objects and calls no PostgreSQL function.
#pragma once

#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "utils/jsonb.h"
}

namespace bitdex::pg {

// One step of the jsonb iterator: a container opening or closing, a key, or
// a scalar (strings and numbers point into palloc'd memory).
struct JsonbToken {
  JsonbIteratorToken token;
  enum jbvType type;  // scalars and keys
  const char* text;   // string content, or a number as numeric_out prints it
  int len;
  bool boolean;
  bool raw_scalar;  // WJB_BEGIN_ARRAY of a top-level scalar
};

struct JsonbTokens {
  JsonbToken* items = nullptr;  // palloc'd; grows
  int count = 0, capacity = 0;
};

// Walks jb into out (count reset first); memory from CurrentMemoryContext.
void jsonb_tokens(Jsonb* jb, JsonbTokens* out);

// The value the tokens describe; throws Error(InvalidInput) on a malformed
// sequence (which jsonb_tokens never produces).
json::Value value_from_tokens(const JsonbTokens& tokens);

}  // namespace bitdex::pg
