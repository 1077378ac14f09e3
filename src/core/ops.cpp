// Op model: JSON parsing (strict on shape, lenient on unknown keys) and the
// canonical compact JSON form (key order op, field, value / op, query, ops).
#include "bitdex_sync/core/ops.hpp"

#include <charconv>
#include <cstring>
#include <functional>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex {
namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what, const std::string& hint = {}) {
  throw Error(ErrorKind::InvalidInput, where + ": " + what, {}, hint);
}

}  // namespace

bool canonical_int(std::string_view t, int64_t& out) {
  if (t.empty()) return false;
  size_t i = (t[0] == '-') ? 1 : 0;
  if (i >= t.size() || t.size() - i > 19) return false;
  if (t[i] == '0' && (t.size() - i > 1 || i == 1)) return false;  // leading zero, "-0"
  for (size_t k = i; k < t.size(); k++)
    if (t[k] < '0' || t[k] > '9') return false;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || end != t.data() + t.size()) return false;
  out = v;
  return true;
}

namespace {

const json::Value& member(const json::Value& obj, const char* key, const std::string& where) {
  const json::Value* m = obj.find(key);
  if (!m) bad(where, std::string("missing key \"") + key + "\"");
  return *m;
}

}  // namespace

OpValue OpValue::from_json(const json::Value& v) {
  switch (v.type) {
    case json::Type::Null: return null();
    case json::Type::Bool: return boolean(v.boolean);
    case json::Type::String: return string(v.text);
    case json::Type::Number: {
      int64_t i;
      if (canonical_int(v.text, i)) return int64(i);
      return {Kind::Json, 0, v.text};
    }
    default: {
      OpValue out{Kind::Json, 0, {}};
      json::write(out.text, v);
      return out;
    }
  }
}

void OpValue::write_json(std::string& out) const {
  switch (kind) {
    case Kind::Null: out += "null"; break;
    case Kind::False: out += "false"; break;
    case Kind::True: out += "true"; break;
    case Kind::Int: out += std::to_string(integer); break;
    case Kind::String: json::write_string(out, text); break;
    case Kind::Json: out += text; break;
  }
}

size_t OpValue::hash() const {
  size_t h = static_cast<size_t>(kind) * 0x9E3779B97F4A7C15ull;
  if (kind == Kind::Int) return h ^ std::hash<int64_t>()(integer);
  if (kind == Kind::String || kind == Kind::Json) return h ^ std::hash<std::string>()(text);
  return h;
}

bool OpValue::operator<(const OpValue& o) const {
  if (kind != o.kind) return kind < o.kind;
  if (integer != o.integer) return integer < o.integer;
  return text < o.text;
}

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Set: return "set";
    case OpKind::Remove: return "remove";
    case OpKind::Add: return "add";
    case OpKind::Delete: return "delete";
    case OpKind::Alive: return "alive";
    case OpKind::QueryOpSet: return "queryOpSet";
  }
  return "?";
}

bool Op::operator==(const Op& o) const {
  return kind == o.kind && field == o.field && value == o.value && has_query == o.has_query && query == o.query &&
         ops == o.ops;
}

Op parse_op(const json::Value& v, const std::string& where, bool nested) {
  if (v.type != json::Type::Object) bad(where, std::string("an op must be an object, got ") + json::type_name(v.type));
  const json::Value& name = member(v, "op", where);
  if (name.type != json::Type::String) bad(where, "\"op\" must be a string");
  const std::string& n = name.text;
  Op op;
  if (n == "set" || n == "remove" || n == "add") {
    op.kind = n == "set" ? OpKind::Set : n == "remove" ? OpKind::Remove : OpKind::Add;
    const json::Value& f = member(v, "field", where);
    if (f.type != json::Type::String || f.text.empty())
      bad(where, "\"field\" of a " + n + " op must be a non-empty string");
    op.field = f.text;
    op.value = OpValue::from_json(member(v, "value", where));
    return op;
  }
  if (nested)
    bad(where, "op \"" + n + "\" is not allowed inside queryOpSet",
        "A queryOpSet may contain only set, remove and add ops.");
  if (n == "delete") {
    op.kind = OpKind::Delete;
  } else if (n == "alive") {
    op.kind = OpKind::Alive;
  } else if (n == "queryOpSet") {
    op.kind = OpKind::QueryOpSet;
    const json::Value& q = member(v, "query", where);
    if (q.type == json::Type::String) {
      op.has_query = true;
      op.query = q.text;
    } else if (q.type != json::Type::Null) {
      bad(where, "\"query\" of a queryOpSet must be a string or null");
    }
    const json::Value& inner = member(v, "ops", where);
    if (inner.type != json::Type::Array) bad(where, "\"ops\" of a queryOpSet must be an array");
    op.ops.reserve(inner.items.size());
    for (size_t i = 0; i < inner.items.size(); i++)
      op.ops.push_back(parse_op(inner.items[i], where + ", nested op " + std::to_string(i + 1), true));
  } else {
    bad(where, "unknown op \"" + n + "\"", "Valid ops are set, remove, add, delete, alive and queryOpSet.");
  }
  return op;
}

std::vector<Op> parse_ops(const json::Value& v, const std::string& where) {
  if (v.type != json::Type::Array) bad(where, std::string("\"ops\" must be an array, got ") + json::type_name(v.type));
  std::vector<Op> out;
  out.reserve(v.items.size());
  for (size_t i = 0; i < v.items.size(); i++)
    out.push_back(parse_op(v.items[i], where + ", op " + std::to_string(i + 1)));
  return out;
}

Clear parse_clear(const json::Value& v, const std::string& where) {
  if (v.type != json::Type::Object) bad(where, "\"clear\" must be an object {source, fields, delete_slots}");
  Clear c;
  if (const json::Value* s = v.find("source")) {
    if (s->type != json::Type::String) bad(where, "\"clear\".\"source\" must be a string");
    c.source = s->text;
  }
  const json::Value& fields = member(v, "fields", where);
  if (fields.type != json::Type::Array) bad(where, "\"clear\".\"fields\" must be an array of field names");
  for (const json::Value& f : fields.items) {
    if (f.type != json::Type::String || f.text.empty()) bad(where, "\"clear\".\"fields\" must hold non-empty strings");
    c.fields.push_back(f.text);
  }
  for (auto [key, flag] : {std::pair{"delete_slots", &c.delete_slots}, std::pair{"alive_slots", &c.alive_slots}})
    if (const json::Value* b = v.find(key)) {
      if (b->type != json::Type::Bool) bad(where, std::string("\"clear\".\"") + key + "\" must be a boolean");
      *flag = b->boolean;
    }
  if (c.alive_slots && !c.delete_slots) bad(where, "\"clear\".\"alive_slots\" needs \"delete_slots\"");
  if (c.fields.empty() && !c.alive_slots) bad(where, "\"clear\" names no field");
  return c;
}

void write_clear_json(std::string& out, const Clear& c) {
  out += "{\"source\":";
  json::write_string(out, c.source);
  out += ",\"fields\":[";
  for (size_t i = 0; i < c.fields.size(); i++) {
    if (i) out += ',';
    json::write_string(out, c.fields[i]);
  }
  out += "],\"delete_slots\":";
  out += c.delete_slots ? "true" : "false";
  out += ",\"alive_slots\":";
  out += c.alive_slots ? "true" : "false";
  out += '}';
}

EntityRecord parse_record(const json::Value& v, const std::string& where) {
  if (v.type != json::Type::Object)
    bad(where,
        std::string("a record must be an object {entity_id, ops, creates_slot}, got ") + json::type_name(v.type));
  if (const json::Value* c = v.find("clear")) return EntityRecord::clearing(parse_clear(*c, where));
  EntityRecord r;
  const json::Value& id = member(v, "entity_id", where);
  if (id.type != json::Type::Number || !canonical_int(id.text, r.entity_id))
    bad(where, "\"entity_id\" must be an integer in the bigint range");
  r.ops = parse_ops(member(v, "ops", where), where);
  if (const json::Value* cs = v.find("creates_slot")) {
    if (cs->type != json::Type::Bool) bad(where, "\"creates_slot\" must be a boolean");
    r.creates_slot = cs->boolean;
  }
  return r;
}

Batch parse_batch(std::string_view json_text) {
  json::Value doc = json::parse(json_text);
  if (doc.type != json::Type::Array)
    throw Error(ErrorKind::InvalidInput, "a batch must be a JSON array of records", {},
                "Pass an array such as [{\"entity_id\": 1, \"ops\": [{\"op\": \"delete\"}]}].");
  Batch out;
  out.reserve(doc.items.size());
  for (size_t i = 0; i < doc.items.size(); i++)
    out.push_back(parse_record(doc.items[i], "record " + std::to_string(i + 1)));
  return out;
}

void write_op_json(std::string& out, const Op& op) {
  out += "{\"op\":\"";
  out += op_kind_name(op.kind);
  out += '"';
  if (op.is_field_op()) {
    out += ",\"field\":";
    json::write_string(out, op.field);
    out += ",\"value\":";
    op.value.write_json(out);
  } else if (op.kind == OpKind::QueryOpSet) {
    out += ",\"query\":";
    if (op.has_query)
      json::write_string(out, op.query);
    else
      out += "null";
    out += ",\"ops\":";
    write_ops_json(out, op.ops);
  }
  out += '}';
}

void write_ops_json(std::string& out, const std::vector<Op>& ops) {
  out += '[';
  for (size_t i = 0; i < ops.size(); i++) {
    if (i) out += ',';
    write_op_json(out, ops[i]);
  }
  out += ']';
}

void write_record_json(std::string& out, const EntityRecord& r) {
  if (r.clear) {
    out += "{\"clear\":";
    write_clear_json(out, *r.clear);
    out += '}';
    return;
  }
  out += "{\"entity_id\":";
  out += std::to_string(r.entity_id);
  out += ",\"ops\":";
  write_ops_json(out, r.ops);
  out += ",\"creates_slot\":";
  out += r.creates_slot ? "true" : "false";
  out += '}';
}

std::string batch_to_json(const Batch& batch) {
  std::string out = "[";
  for (size_t i = 0; i < batch.size(); i++) {
    if (i) out += ',';
    write_record_json(out, batch[i]);
  }
  out += ']';
  return out;
}

size_t count_ops(const Batch& batch) {
  size_t n = 0;
  for (const auto& r : batch) n += r.ops.size();
  return n;
}

}  // namespace bitdex
