// A small strict JSON reader (RFC 8259) and writer, enough for op payloads and
// config. Numbers keep their source text so nothing is lost in a round trip.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bitdex::json {

enum class Type { Null, Bool, Number, String, Array, Object };

struct Value {
  Type type = Type::Null;
  bool boolean = false;
  std::string text;  // string content (UTF-8), or a number's source text
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> members;

  // Last member named `key` (as jsonb keeps the last duplicate), or nullptr.
  const Value* find(std::string_view key) const;
};

// Parses one JSON document; throws Error(InvalidInput) naming the byte offset.
Value parse(std::string_view text);

// Appends `s` as a quoted JSON string, escaped the way Postgres prints jsonb.
void write_string(std::string& out, std::string_view s);

// Appends the key of an object member being written by hand: a comma unless
// it is the first member (`out` ends with '{'), then "k":.
void write_key(std::string& out, std::string_view k);
// ... and a member whose value is the string `v`.
void write_string_member(std::string& out, std::string_view k, std::string_view v);

// Appends `v` in compact form (no spaces).
void write(std::string& out, const Value& v);

// Name of a type for error messages ("a string", "an object", ...).
const char* type_name(Type t);

}  // namespace bitdex::json
