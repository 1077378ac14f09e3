// The capture spec's writer and reader: one type for the two sides of
// bitdex_sync.sources.spec (trigger_gen writes it, the trigger reads it).
#include "bitdex_sync/core/capture_spec.hpp"

#include <charconv>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::spec {
namespace {

void strings_member(std::string& out, const char* k, const std::vector<std::string>& v) {
  json::write_key(out, k);
  out += "[";
  for (size_t i = 0; i < v.size(); i++) {
    if (i) out += ",";
    json::write_string(out, v[i]);
  }
  out += "]";
}

void field_object(std::string& out, const Field& f, bool cond) {
  out += "{";
  json::write_string_member(out, "f", f.target);
  if (cond) json::write_string_member(out, "cond", f.cond);
  json::write_string_member(out, "sql", f.sql);
  out += "}";
}

[[noreturn]] void lacks(const char* k, const char* what = "a string") {
  throw Error(ErrorKind::InvalidInput, std::string("capture spec lacks \"") + k + "\" (" + what + ")", {},
              "Apply the config again with bitdex_sync.apply_config().");
}

const json::Value* member(const json::Value& obj, const char* k) {
  return obj.type == json::Type::Object ? obj.find(k) : nullptr;
}

std::string str(const json::Value& obj, const char* k) {
  const json::Value* v = member(obj, k);
  if (!v || v->type != json::Type::String) lacks(k);
  return v->text;
}

std::optional<std::string> opt_str(const json::Value& obj, const char* k) {
  const json::Value* v = member(obj, k);
  if (!v) return std::nullopt;
  if (v->type != json::Type::String) lacks(k);
  return v->text;
}

bool boolean(const json::Value& obj, const char* k) {
  const json::Value* v = member(obj, k);
  return v && v->type == json::Type::Bool && v->boolean;
}

// A whole number in [0, max] written as plain digits; anything else
// (negative, fraction, exponent, too large) is refused.
uint64_t whole(const json::Value& v, const char* k, uint64_t max) {
  uint64_t n = 0;
  const char* end = v.text.data() + v.text.size();
  auto [p, ec] = std::from_chars(v.text.data(), end, n);
  if (v.type != json::Type::Number || ec != std::errc() || p != end || n > max) lacks(k, "a whole number in range");
  return n;
}

uint32_t oid(const json::Value& obj, const char* k) {
  const json::Value* v = member(obj, k);
  return v ? static_cast<uint32_t>(whole(*v, k, UINT32_MAX)) : 0;
}

const std::vector<json::Value>* array(const json::Value& obj, const char* k) {
  const json::Value* v = member(obj, k);
  if (!v) return nullptr;
  if (v->type != json::Type::Array) lacks(k, "an array");
  return &v->items;
}

std::vector<std::string> strings(const json::Value& obj, const char* k) {
  std::vector<std::string> out;
  if (const auto* items = array(obj, k))
    for (const json::Value& i : *items) {
      if (i.type != json::Type::String) lacks(k, "an array of strings");
      out.push_back(i.text);
    }
  return out;
}

Field field(const json::Value& obj, bool cond) {
  Field f;
  f.target = str(obj, "f");
  f.sql = str(obj, "sql");
  if (cond) f.cond = str(obj, "cond");
  return f;
}

config::SourceKind kind_of(const std::string& name) {
  for (config::SourceKind k : {config::SourceKind::Direct, config::SourceKind::Join, config::SourceKind::QueryFanOut,
                               config::SourceKind::RowFanOut})
    if (name == config::kind_name(k)) return k;
  throw Error(ErrorKind::NotSupported, "capture spec: source kind \"" + name + "\" is not supported");
}

}  // namespace

bool CaptureSpec::operator==(const CaptureSpec& o) const {
  return version == o.version && source == o.source && kind == o.kind && sink == o.sink && slot == o.slot &&
         alive == o.alive && on_delete == o.on_delete && fields == o.fields && value == o.value &&
         computed == o.computed && filter == o.filter && query == o.query && query_cols == o.query_cols &&
         ids_sql == o.ids_sql && ids_params == o.ids_params && fan_ins == o.fan_ins && fan_in_lock == o.fan_in_lock &&
         filter_sql == o.filter_sql && filter_params == o.filter_params && shared == o.shared &&
         rows_sql == o.rows_sql && parent_key == o.parent_key;
}

std::string write(const CaptureSpec& s) {
  const bool join = s.kind == config::SourceKind::Join;
  std::string out = "{";
  json::write_key(out, "v");
  out += std::to_string(s.version);
  json::write_string_member(out, "source", s.source);
  json::write_string_member(out, "kind", config::kind_name(s.kind));
  json::write_string_member(out, "sink", config::sink_name(s.sink));
  json::write_string_member(out, "slot", s.slot);
  json::write_key(out, "alive");
  out += s.alive ? "true" : "false";
  json::write_key(out, "delete");
  out += s.on_delete ? "true" : "false";
  if (join) {
    json::write_key(out, "value");
    field_object(out, s.value, false);
    if (s.filter) json::write_string_member(out, "filter", *s.filter);
    json::write_key(out, "computed");
    out += "[";
    for (size_t i = 0; i < s.computed.size(); i++) {
      if (i) out += ",";
      field_object(out, s.computed[i], true);
    }
    out += "]";
  } else {
    json::write_key(out, "fields");
    out += "[";
    for (size_t i = 0; i < s.fields.size(); i++) {
      if (i) out += ",";
      field_object(out, s.fields[i], false);
    }
    out += "]";
  }
  if (s.kind == config::SourceKind::QueryFanOut) {
    json::write_string_member(out, "query", s.query);
    strings_member(out, "query_cols", s.query_cols);
    if (s.ids_sql) {
      json::write_string_member(out, "ids_sql", *s.ids_sql);
      strings_member(out, "ids_params", s.ids_params);
    }
  }
  if (!s.fan_ins.empty()) {
    json::write_key(out, "fan_in");
    out += "[";
    for (size_t i = 0; i < s.fan_ins.size(); i++) {
      const FanIn& f = s.fan_ins[i];
      if (i) out += ",";
      out += "{";
      json::write_string_member(out, "source", f.source);
      json::write_string_member(out, "field", f.field);
      json::write_string_member(out, "sql", f.sql);
      json::write_key(out, "lock");
      out += std::to_string(f.lock);
      strings_member(out, "fields", f.fields);
      out += "}";
    }
    out += "]";
  }
  if (s.fan_in_lock != 0) {
    json::write_key(out, "fan_in_lock");
    out += std::to_string(s.fan_in_lock);
  }
  if (s.filter_sql) {
    json::write_string_member(out, "filter_sql", *s.filter_sql);
    strings_member(out, "filter_params", s.filter_params);
  } else if (!join && s.filter) {
    json::write_string_member(out, "filter", *s.filter);
  }
  if (!s.shared.empty()) strings_member(out, "shared", s.shared);
  if (s.kind == config::SourceKind::RowFanOut) {
    json::write_string_member(out, "rows_sql", s.rows_sql);
    json::write_string_member(out, "parent_key", s.parent_key);
  }
  out += "}";
  return out;
}

CaptureSpec read(const json::Value& v) {
  if (v.type != json::Type::Object)
    throw Error(ErrorKind::InvalidInput, "capture spec is not a JSON object", {},
                "Apply the config again with bitdex_sync.apply_config().");
  CaptureSpec s;
  if (const json::Value* ver = member(v, "v")) s.version = static_cast<int>(whole(*ver, "v", 1000));
  if (s.version != 1)
    throw Error(ErrorKind::NotSupported, "capture spec version " + std::to_string(s.version) + " is not supported", {},
                "Apply the config again with bitdex_sync.apply_config() (this build writes version 1).");
  s.source = opt_str(v, "source").value_or("");
  s.kind = kind_of(str(v, "kind"));
  const std::string sink = str(v, "sink");
  s.sink = sink == "outbox" ? config::Sink::Outbox : config::Sink::Message;
  s.slot = str(v, "slot");
  s.alive = boolean(v, "alive");
  s.on_delete = boolean(v, "delete");
  s.filter = opt_str(v, "filter");
  if (s.kind == config::SourceKind::Join) {
    const json::Value* value = member(v, "value");
    if (!value) lacks("value", "an object");
    s.value = field(*value, false);
    if (const auto* computed = array(v, "computed"))
      for (const json::Value& c : *computed) s.computed.push_back(field(c, true));
  } else {
    const auto* fields = array(v, "fields");
    if (!fields) lacks("fields", "an array");
    for (const json::Value& f : *fields) s.fields.push_back(field(f, false));
  }
  if (s.kind == config::SourceKind::QueryFanOut) s.query = str(v, "query");
  s.query_cols = strings(v, "query_cols");
  s.ids_sql = opt_str(v, "ids_sql");
  s.ids_params = strings(v, "ids_params");
  if (const auto* fan_ins = array(v, "fan_in"))
    for (const json::Value& f : *fan_ins) {
      FanIn fi;
      fi.source = str(f, "source");
      fi.field = str(f, "field");
      fi.sql = str(f, "sql");
      fi.lock = oid(f, "lock");
      fi.fields = strings(f, "fields");
      s.fan_ins.push_back(std::move(fi));
    }
  s.fan_in_lock = oid(v, "fan_in_lock");
  s.filter_sql = opt_str(v, "filter_sql");
  s.filter_params = strings(v, "filter_params");
  s.shared = strings(v, "shared");
  if (s.kind == config::SourceKind::RowFanOut) {
    s.rows_sql = str(v, "rows_sql");
    s.parent_key = str(v, "parent_key");
  }
  return s;
}

CaptureSpec read(std::string_view text) {
  return read(json::parse(text));
}

std::vector<std::string> expressions(const CaptureSpec& s) {
  const bool join = s.kind == config::SourceKind::Join;
  std::vector<std::string> out{s.slot};
  if (join) {
    out.push_back(s.value.sql);
    for (const Field& c : s.computed) {
      out.push_back(c.sql);
      out.push_back(c.cond);
    }
    if (s.filter) out.push_back(*s.filter);
  } else {
    for (const Field& f : s.fields) out.push_back(f.sql);
  }
  for (const std::string& c : s.query_cols) out.push_back(config::quote_ident(c));
  out.insert(out.end(), s.ids_params.begin(), s.ids_params.end());
  if (s.kind == config::SourceKind::RowFanOut) out.push_back(s.parent_key);
  if (!join && s.filter) out.push_back(*s.filter);
  out.insert(out.end(), s.filter_params.begin(), s.filter_params.end());
  return out;
}

}  // namespace bitdex::spec
