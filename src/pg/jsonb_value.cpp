// jsonb → json::Value without the text round trip (see jsonb_value.hpp).
#include "bitdex_sync/pg/jsonb_value.hpp"

#include <string>
#include <utility>

#include "bitdex_sync/core/error.hpp"

extern "C" {
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"
}

namespace bitdex::pg {

namespace {

JsonbToken* next_slot(JsonbTokens* out) {
  if (out->count == out->capacity) {
    out->capacity = out->capacity ? out->capacity * 2 : 64;
    out->items = static_cast<JsonbToken*>(out->items ? repalloc(out->items, sizeof(JsonbToken) * out->capacity)
                                                     : palloc(sizeof(JsonbToken) * out->capacity));
  }
  return &out->items[out->count++];
}

// Builds the value starting at tokens[*i] (a container opening or a scalar
// step) and leaves *i after it.
json::Value build(const JsonbTokens& t, int* i);

json::Value scalar(const JsonbToken& k) {
  json::Value v;
  switch (k.type) {
    case jbvNull: v.type = json::Type::Null; break;
    case jbvBool:
      v.type = json::Type::Bool;
      v.boolean = k.boolean;
      break;
    case jbvNumeric:
      v.type = json::Type::Number;
      v.text.assign(k.text, static_cast<size_t>(k.len));
      break;
    case jbvString:
      v.type = json::Type::String;
      v.text.assign(k.text, static_cast<size_t>(k.len));
      break;
    default: throw Error(ErrorKind::InvalidInput, "unexpected jsonb value type " + std::to_string(k.type));
  }
  return v;
}

json::Value build(const JsonbTokens& t, int* i) {
  if (*i >= t.count) throw Error(ErrorKind::InvalidInput, "jsonb ends early");
  const JsonbToken& k = t.items[(*i)++];
  if (k.token == WJB_VALUE || k.token == WJB_ELEM) return scalar(k);
  if (k.token == WJB_BEGIN_ARRAY) {
    json::Value arr;
    arr.type = json::Type::Array;
    while (*i < t.count && t.items[*i].token != WJB_END_ARRAY) arr.items.push_back(build(t, i));
    (*i)++;  // WJB_END_ARRAY
    if (k.raw_scalar) {
      if (arr.items.size() != 1) throw Error(ErrorKind::InvalidInput, "jsonb scalar without one value");
      return std::move(arr.items[0]);
    }
    return arr;
  }
  if (k.token == WJB_BEGIN_OBJECT) {
    json::Value obj;
    obj.type = json::Type::Object;
    while (*i < t.count && t.items[*i].token == WJB_KEY) {
      const JsonbToken& key = t.items[(*i)++];
      std::string name(key.text, static_cast<size_t>(key.len));
      obj.members.emplace_back(std::move(name), build(t, i));
    }
    if (*i >= t.count || t.items[*i].token != WJB_END_OBJECT)
      throw Error(ErrorKind::InvalidInput, "jsonb object not closed");
    (*i)++;
    return obj;
  }
  throw Error(ErrorKind::InvalidInput, "unexpected jsonb token " + std::to_string(k.token));
}

}  // namespace

// No C++ objects in this frame: the iterator and numeric_out may ereport.
void jsonb_tokens(Jsonb* jb, JsonbTokens* out) {
  out->count = 0;
  JsonbIterator* it = JsonbIteratorInit(&jb->root);
  JsonbValue v;
  JsonbIteratorToken r;
  while ((r = JsonbIteratorNext(&it, &v, false)) != WJB_DONE) {
    JsonbToken* k = next_slot(out);
    *k = JsonbToken{r, jbvNull, nullptr, 0, false, false};
    if (r == WJB_BEGIN_ARRAY) k->raw_scalar = v.val.array.rawScalar;
    if (r != WJB_KEY && r != WJB_VALUE && r != WJB_ELEM) continue;
    k->type = v.type;
    switch (v.type) {
      case jbvString:
        k->text = v.val.string.val;
        k->len = v.val.string.len;
        break;
      case jbvNumeric:
        k->text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
        k->len = static_cast<int>(strlen(k->text));
        break;
      case jbvBool: k->boolean = v.val.boolean; break;
      default: break;
    }
  }
}

json::Value value_from_tokens(const JsonbTokens& tokens) {
  int i = 0;
  json::Value v = build(tokens, &i);
  if (i != tokens.count) throw Error(ErrorKind::InvalidInput, "jsonb has tokens after its value");
  return v;
}

}  // namespace bitdex::pg
