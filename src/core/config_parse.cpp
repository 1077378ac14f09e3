// Config parsing: YAML (yaml-cpp) is first turned into the same JSON tree
// that JSONB input gives, so one parser sees both and every error message is
// the same whichever form the operator used.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::config {
namespace {

using json::Type;
using json::Value;

[[noreturn]] void bad(const std::string& where, const std::string& what, const std::string& hint = {}) {
  throw Error(ErrorKind::InvalidInput, where + ": " + what, {}, hint);
}

// ---- YAML -> JSON tree -----------------------------------------------------

bool plain_int(const std::string& s) {
  size_t i = (!s.empty() && s[0] == '-') ? 1 : 0;
  if (i >= s.size()) return false;
  return std::all_of(s.begin() + static_cast<long>(i), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Bounds on a config's shape, checked while it is read: a YAML alias
// refers to a node without copying it, so nine levels of aliases to lists
// of nine expand to 9^9 nodes (a backend grew to 22 GB on one before).
constexpr size_t kMaxConfigBytes = 1 << 20;  // the text
constexpr size_t kMaxConfigNodes = 100000;   // values after YAML aliases are expanded
constexpr int kMaxConfigDepth = 32;          // nesting of lists and mappings

// Where a value is, for errors: "sources[2].track_fields[1]", plus its YAML
// line when known.
std::string at(const std::string& path, int line) {
  std::string out = path.empty() ? "the config" : path;
  if (line > 0) out += " (line " + std::to_string(line) + ")";
  return out;
}

// The limits and the checks every string of a config passes, the same for
// YAML and JSON: no NUL character (PostgreSQL text cannot hold one: a name
// would be cut at it), no key twice in one mapping (the first would be
// silently dropped).
class Shape {
 public:
  void enter(const std::string& path, int line, int depth) {
    if (++nodes_ > kMaxConfigNodes)
      throw Error(ErrorKind::InvalidInput,
                  at(path, line) + ": the config has more than " + std::to_string(kMaxConfigNodes) +
                      " values (YAML aliases included, each counted where it is used)",
                  {}, "Write the sources out; a config needs no aliases.");
    if (depth > kMaxConfigDepth)
      throw Error(ErrorKind::InvalidInput,
                  at(path, line) + ": nested deeper than " + std::to_string(kMaxConfigDepth) + " levels");
  }
  static void text(const std::string& s, const std::string& path, int line) {
    if (s.find('\0') != std::string::npos)
      throw Error(ErrorKind::InvalidInput, at(path, line) +
                                               ": contains a NUL character (\\0), which no name, "
                                               "expression or value of a config may hold");
  }
  static void keys(const Value& v, const std::string& path, int line) {
    for (size_t i = 1; i < v.members.size(); i++)
      for (size_t j = 0; j < i; j++)
        if (v.members[i].first == v.members[j].first)
          throw Error(ErrorKind::InvalidInput, at(path, line) + ": duplicate key \"" + v.members[i].first + "\"", {},
                      "Each key may appear once per mapping; a repeated one would replace the first.");
  }

 private:
  size_t nodes_ = 0;
};

std::string child(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}
std::string item(const std::string& path, size_t i) {
  return (path.empty() ? "the config" : path) + "[" + std::to_string(i + 1) + "]";
}

// A JSON config's tree, through the same checks.
void check_json(const Value& v, Shape& shape, const std::string& path, int depth) {
  shape.enter(path, 0, depth);
  switch (v.type) {
    case Type::String: Shape::text(v.text, path, 0); break;
    case Type::Array:
      for (size_t i = 0; i < v.items.size(); i++) check_json(v.items[i], shape, item(path, i), depth + 1);
      break;
    case Type::Object:
      for (const auto& [k, m] : v.members) {
        Shape::text(k, child(path, "<key>"), 0);
        check_json(m, shape, child(path, k), depth + 1);
      }
      Shape::keys(v, path, 0);
      break;
    default: break;
  }
}

Value from_yaml(const YAML::Node& n, Shape& shape, const std::string& path, int depth) {
  const int line = n.Mark().line >= 0 ? n.Mark().line + 1 : 0;
  shape.enter(path, line, depth);
  Value v;
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: v.type = Type::Null; break;
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      Shape::text(s, path, line);
      if (n.Tag() == "!") {  // quoted: always a string
        v.type = Type::String;
        v.text = s;
        break;
      }
      std::string lower = s;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      if (lower == "true" || lower == "false") {
        v.type = Type::Bool;
        v.boolean = lower == "true";
      } else if (lower == "null" || s == "~" || s.empty()) {
        v.type = Type::Null;
      } else if (plain_int(s)) {
        v.type = Type::Number;
        v.text = s;
      } else {
        v.type = Type::String;
        v.text = s;
      }
      break;
    }
    case YAML::NodeType::Sequence: {
      v.type = Type::Array;
      size_t i = 0;
      for (const auto& e : n) v.items.push_back(from_yaml(e, shape, item(path, i++), depth + 1));
      break;
    }
    case YAML::NodeType::Map:
      v.type = Type::Object;
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) throw Error(ErrorKind::InvalidInput, at(path, line) + ": a key must be a plain name");
        const std::string key = kv.first.Scalar();
        Shape::text(key, child(path, "<key>"), line);
        v.members.emplace_back(key, from_yaml(kv.second, shape, child(path, key), depth + 1));
      }
      Shape::keys(v, path, line);
      break;
  }
  return v;
}

// ---- helpers -----------------------------------------------------------------

std::string str(const Value& v, const std::string& where, const char* key) {
  if (v.type != Type::String || v.text.empty())
    bad(where, std::string("\"") + key + "\" must be a non-empty string, got " +
                   (v.type == Type::String ? "an empty string" : json::type_name(v.type)));
  return v.text;
}

bool boolean(const Value& v, const std::string& where, const char* key) {
  if (v.type != Type::Bool) bad(where, std::string("\"") + key + "\" must be true or false");
  return v.boolean;
}

void only_keys(const Value& obj, const std::string& where, const std::set<std::string>& known) {
  for (const auto& [k, v] : obj.members) {
    if (known.count(k)) continue;
    std::string list;
    for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
    bad(where, "unknown key \"" + k + "\"", "Known keys here: " + list + ".");
  }
}

// Whether `text`, after leading blanks, starts with the keyword `lower_word`
// (any letter case).
bool starts_with_word(const std::string& text, const std::string& lower_word) {
  size_t i = text.find_first_not_of(" \t\r\n");
  if (i == std::string::npos || text.size() - i < lower_word.size()) return false;
  for (size_t k = 0; k < lower_word.size(); k++)
    if (std::tolower(static_cast<unsigned char>(text[i + k])) != lower_word[k]) return false;
  size_t after = i + lower_word.size();
  return after == text.size() || !(std::isalnum(static_cast<unsigned char>(text[after])) || text[after] == '_');
}

Template parse_template(const std::string& text, const std::string& where) {
  Template t;
  t.text = text;
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] == '}') bad(where, "unbalanced '}' in \"" + text + "\"");
    if (text[i] != '{') continue;
    size_t end = text.find('}', i + 1);
    if (end == std::string::npos) bad(where, "unbalanced '{' in \"" + text + "\"");
    std::string col = text.substr(i + 1, end - i - 1);
    if (col.empty() || col.find('{') != std::string::npos || col.find('"') != std::string::npos)
      bad(where, "bad placeholder {" + col + "} in \"" + text + "\"", "Placeholders name a column: {columnName}.");
    if (std::find(t.columns.begin(), t.columns.end(), col) == t.columns.end()) t.columns.push_back(col);
    i = end;
  }
  return t;
}

Template column_template(const std::string& column) {
  return Template{"{" + column + "}", {column}};
}

// A bare column name: no spaces, braces, quotes or parentheses.
bool is_plain_column(const std::string& s) {
  return !s.empty() && s.find_first_of(" \t{}()\"',") == std::string::npos;
}

TrackField parse_track_field(const Value& v, const std::string& where) {
  TrackField tf;
  if (v.type == Type::String) {
    const std::string& s = v.text;
    std::string lower = s;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    size_t as = lower.rfind(" as ");
    if (as != std::string::npos) {
      tf.target = s.substr(as + 4);
      tf.target.erase(0, tf.target.find_first_not_of(' '));
      tf.target.erase(tf.target.find_last_not_of(' ') + 1);
      std::string expr = s.substr(0, as);
      if (tf.target.empty() || !is_plain_column(tf.target))
        bad(where, "bad field name after \" as \" in \"" + s + "\"");
      tf.expr = parse_template(expr, where);
      return tf;
    }
    if (!is_plain_column(s))
      bad(where, "\"" + s + "\" is neither a column name nor \"<SQL> as <field>\"",
          "Write expressions as \"GREATEST({scannedAt}, {createdAt}) as existedAt\".");
    tf.target = s;
    tf.expr = column_template(s);
    return tf;
  }
  if (v.type != Type::Object) bad(where, "a track_fields entry must be a string or {column, target, expression}");
  only_keys(v, where, {"column", "target", "expression"});
  const Value* column = v.find("column");
  const Value* target = v.find("target");
  const Value* expression = v.find("expression");
  if (!column && !target) bad(where, "a track_fields entry needs \"column\" or \"target\"");
  std::string col = column ? str(*column, where, "column") : "";
  tf.target = target ? str(*target, where, "target") : col;
  if (expression)
    tf.expr = parse_template(str(*expression, where, "expression"), where);
  else if (!col.empty())
    tf.expr = column_template(col);
  else
    bad(where, "a track_fields entry with only \"target\" needs \"expression\"");
  return tf;
}

std::vector<std::string> string_list(const Value& v, const std::string& where, const char* key) {
  if (v.type != Type::Array) bad(where, std::string("\"") + key + "\" must be a list of strings");
  std::vector<std::string> out;
  for (const Value& item : v.items) out.push_back(str(item, where, key));
  return out;
}

Sink parse_sink(const Value& v, const std::string& where) {
  std::string s = str(v, where, "capture");
  if (s == "message") return Sink::Message;
  if (s == "outbox") return Sink::Outbox;
  bad(where, "\"capture\" must be \"message\" or \"outbox\", got \"" + s + "\"");
}

Source parse_source(const Value& v, size_t index, Sink default_sink) {
  std::string where = "source " + std::to_string(index + 1);
  if (v.type != Type::Object) bad(where, "a source must be a mapping");
  const Value* table = v.find("table");
  if (!table) bad(where, "missing key \"table\"");
  Source s;
  s.table = str(*table, where, "table");
  where += " (table \"" + s.table + "\")";
  s.raw = v;
  only_keys(v, where,
            {"table", "slot_field", "track_fields", "computed_fields", "sets_alive", "on_delete", "field",
             "value_field", "filter", "query", "query_source", "expression", "join", "type", "rows_from",
             "shared_ops_fields", "capture", "dependsOn", "depends_on"});
  split_table(s.table);  // validates the form
  s.sink = default_sink;
  if (const Value* c = v.find("capture")) s.sink = parse_sink(*c, where);
  if (const Value* sf = v.find("slot_field")) s.slot_field = str(*sf, where, "slot_field");
  if (const Value* t = v.find("track_fields")) {
    if (t->type != Type::Array) bad(where, "\"track_fields\" must be a list");
    for (size_t i = 0; i < t->items.size(); i++)
      s.track_fields.push_back(parse_track_field(t->items[i], where + ", track_fields[" + std::to_string(i + 1) + "]"));
  }
  if (const Value* a = v.find("sets_alive")) s.sets_alive = boolean(*a, where, "sets_alive");
  if (const Value* d = v.find("on_delete")) {
    if (d->type == Type::Bool)
      s.on_delete = d->boolean;
    else if (d->type == Type::String && d->text == "delete_slot")
      s.on_delete = true;
    else
      bad(where, "\"on_delete\" must be true, false or \"delete_slot\"");
  }
  if (const Value* f = v.find("field")) s.field = str(*f, where, "field");
  if (const Value* vf = v.find("value_field")) s.value_field = str(*vf, where, "value_field");
  if (const Value* f = v.find("filter")) s.filter = parse_template(str(*f, where, "filter"), where + ", filter");
  if (const Value* q = v.find("query")) s.query = parse_template(str(*q, where, "query"), where + ", query");
  if (const Value* e = v.find("expression")) s.expression = parse_template(str(*e, where, "expression"), where);
  if (const Value* j = v.find("join")) s.join = str(*j, where, "join");
  if (const Value* sh = v.find("shared_ops_fields")) s.shared_ops_fields = string_list(*sh, where, "shared_ops_fields");
  for (const char* key : {"dependsOn", "depends_on"})
    if (const Value* d = v.find(key)) s.depends_on = string_list(*d, where, key);
  if (v.find("query_source"))
    bad(where, "\"query_source\" is not supported",
        "Use \"expression\" (SQL whose result fills {ids} in the query), which bitdex_sync implements.");
  std::string type;
  if (const Value* t = v.find("type")) type = str(*t, where, "type");
  if (!type.empty() && type != "fan_out" && type != "fan_out_per_row")
    bad(where, "\"type\" must be \"fan_out\" or \"fan_out_per_row\", got \"" + type + "\"");
  if (const Value* rf = v.find("rows_from")) {
    if (rf->type != Type::Object) bad(where, "\"rows_from\" must be {table, fk, slot, parent_key}");
    only_keys(*rf, where + ", rows_from", {"table", "fk", "slot", "parent_key"});
    RowsFrom r;
    const Value* rt = rf->find("table");
    const Value* fk = rf->find("fk");
    if (!rt || !fk) bad(where, "\"rows_from\" needs \"table\" and \"fk\"");
    r.table = str(*rt, where, "rows_from.table");
    r.fk = str(*fk, where, "rows_from.fk");
    if (const Value* x = rf->find("slot")) r.slot = str(*x, where, "rows_from.slot");
    if (const Value* x = rf->find("parent_key")) r.parent_key = str(*x, where, "rows_from.parent_key");
    s.rows_from = r;
  }

  // Which kind of source: exactly one of these shapes, never a silent mix.
  const bool is_join = v.find("field") || v.find("value_field");
  const bool is_row_fan = type == "fan_out_per_row" || s.rows_from;
  const bool is_query_fan = s.query.has_value() || type == "fan_out";
  if (int(is_join) + int(is_row_fan) + int(is_query_fan) > 1)
    bad(where, "mixes the keys of different source kinds",
        "A source is one of: a direct table (track_fields), a join table (field + value_field), a query fan-out "
        "(query), or a per-row fan-out (type: fan_out_per_row + rows_from).");
  auto forbid = [&](bool present, const char* key, const char* kind) {
    if (present) bad(where, std::string("\"") + key + "\" does not apply to a " + kind + " source");
  };
  if (is_join) {
    s.kind = SourceKind::Join;
    if (s.field.empty()) bad(where, "a join source needs \"field\" (the index field)");
    if (s.value_field.empty()) s.value_field = "id";
    s.name = s.table + "." + s.field;
    forbid(!s.track_fields.empty(), "track_fields", "join");
    forbid(s.sets_alive, "sets_alive", "join");
    forbid(v.find("on_delete") != nullptr, "on_delete", "join");
    forbid(s.expression.has_value(), "expression", "join");
    forbid(s.join.has_value(), "join", "join");
    forbid(!s.shared_ops_fields.empty(), "shared_ops_fields", "join");
  } else if (is_row_fan) {
    s.kind = SourceKind::RowFanOut;
    if (type != "fan_out_per_row") bad(where, "\"rows_from\" needs \"type: fan_out_per_row\"");
    if (!s.rows_from) bad(where, "\"type: fan_out_per_row\" needs \"rows_from\"");
    if (s.track_fields.empty()) bad(where, "a fan_out_per_row source needs \"track_fields\"");
    s.name = s.table;
    forbid(s.sets_alive, "sets_alive", "fan_out_per_row");
    forbid(s.expression.has_value(), "expression", "fan_out_per_row");
    forbid(s.join.has_value(), "join", "fan_out_per_row");
  } else if (is_query_fan) {
    s.kind = SourceKind::QueryFanOut;
    if (!s.query) bad(where, "a fan_out source needs \"query\"");
    if (s.track_fields.empty()) bad(where, "a query fan-out source needs \"track_fields\"");
    s.name = s.table;
    forbid(s.sets_alive, "sets_alive", "query fan-out");
    forbid(!s.computed_fields.empty() || v.find("computed_fields"), "computed_fields", "query fan-out");
    forbid(!s.shared_ops_fields.empty(), "shared_ops_fields", "query fan-out");
    // "join" without "expression" (BitDex's shape): the row joined to the
    // join's tables decides, with "filter" over that join, whether the
    // source emits (trigger_gen::join_filter_sql).
    if (s.join && !s.expression) s.join_filter = parse_template(*s.join, where + ", join");
    if (s.join && s.expression) {
      // With "join", "expression" is the select-list value and "join" the FROM
      // clause (tables, JOINs, WHERE) of one query; both may use {col}.
      if (starts_with_word(s.expression->text, "select"))
        bad(where, "with \"join\", \"expression\" is the value to select, not a whole query",
            "Write e.g. expression: \"array_agg(i.id)\" and join: \"Image i JOIN Post p ON p.id = i.postId WHERE "
            "p.modelId = {id}\", or drop \"join\" and write the whole query in \"expression\".");
      s.expression = parse_template("SELECT " + s.expression->text + " FROM " + *s.join, where + ", join");
    }
    bool has_ids = std::find(s.query->columns.begin(), s.query->columns.end(), "ids") != s.query->columns.end();
    if (s.expression && !has_ids) bad(where, "with \"expression\", \"query\" must contain {ids}");
    if (!s.expression && has_ids) bad(where, "\"query\" uses {ids}, which needs \"expression\"");
  } else {
    s.kind = SourceKind::Direct;
    s.name = s.table;
    forbid(s.filter.has_value(), "filter", "direct");
    forbid(s.expression.has_value(), "expression", "direct");
    forbid(s.join.has_value(), "join", "direct");
  }
  if (const Value* c = v.find("computed_fields")) {
    if (c->type != Type::Array) bad(where, "\"computed_fields\" must be a list");
    for (size_t i = 0; i < c->items.size(); i++) {
      std::string w = where + ", computed_fields[" + std::to_string(i + 1) + "]";
      const Value& item = c->items[i];
      if (item.type != Type::Object) bad(w, "a computed field must be {target, expression, value?}");
      only_keys(item, w, {"target", "expression", "value"});
      ComputedField cf;
      const Value* t = item.find("target");
      const Value* e = item.find("expression");
      if (!t || !e) bad(w, "a computed field needs \"target\" and \"expression\"");
      cf.target = str(*t, w, "target");
      cf.expr = parse_template(str(*e, w, "expression"), w);
      if (const Value* val = item.find("value")) {
        if (s.kind != SourceKind::Join) bad(w, "\"value\" (a conditional computed field) applies to join sources only");
        std::string vs = str(*val, w, "value");
        cf.value = is_plain_column(vs) ? column_template(vs) : parse_template(vs, w);
      }
      s.computed_fields.push_back(std::move(cf));
    }
  }
  // Every index field is written by one definition only.
  std::set<std::string> targets;
  if (s.kind == SourceKind::Join) targets.insert(s.field);
  for (const auto& tf : s.track_fields)
    if (!targets.insert(tf.target).second) bad(where, "field \"" + tf.target + "\" is defined twice");
  for (const auto& cf : s.computed_fields)
    if (s.kind != SourceKind::Join && !targets.insert(cf.target).second)
      bad(where, "field \"" + cf.target + "\" is defined twice");
  for (const auto& f : s.shared_ops_fields)
    if (!targets.count(f)) bad(where, "shared_ops_fields names \"" + f + "\", which this source does not define");
  if (s.kind == SourceKind::Direct && s.track_fields.empty() && s.computed_fields.empty() && !s.sets_alive &&
      !s.on_delete)
    bad(where, "a direct source needs at least one of track_fields, computed_fields, sets_alive, on_delete");
  return s;
}

}  // namespace

const char* sink_name(Sink s) {
  return s == Sink::Message ? "message" : "outbox";
}

const char* kind_name(SourceKind k) {
  switch (k) {
    case SourceKind::Direct: return "direct";
    case SourceKind::Join: return "join";
    case SourceKind::QueryFanOut: return "fan_out";
    case SourceKind::RowFanOut: return "fan_out_per_row";
  }
  return "?";
}

std::string quote_ident(const std::string& ident) {
  std::string out = "\"";
  for (char c : ident) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string quote_literal(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

// The template's text with each {col} replaced by replace(col).
template <class Fn>
std::string substitute(const std::string& text, Fn replace) {
  std::string out;
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] != '{') {
      out += text[i];
      continue;
    }
    size_t end = text.find('}', i + 1);
    out += replace(text.substr(i + 1, end - i - 1));
    i = end;
  }
  return out;
}

std::string Template::render(const std::string& prefix) const {
  return substitute(text, [&](const std::string& col) { return prefix + quote_ident(col); });
}

std::string Template::render_params() const {
  return substitute(text, [&](const std::string& col) {
    size_t k = std::find(columns.begin(), columns.end(), col) - columns.begin();
    return "$" + std::to_string(k + 1);
  });
}

std::pair<std::string, std::string> split_table(const std::string& table) {
  size_t dot = table.find('.');
  if (dot == std::string::npos) return {"", table};
  if (dot == 0 || dot + 1 == table.size() || table.find('.', dot + 1) != std::string::npos)
    throw Error(ErrorKind::InvalidInput, "bad table name \"" + table + "\"", {},
                "Write \"Table\" or \"schema.Table\"; names are taken exactly as written.");
  return {table.substr(0, dot), table.substr(dot + 1)};
}

Config parse_json_value(const Value& doc) {
  if (doc.type != Type::Object) throw Error(ErrorKind::InvalidInput, "the config must be a mapping (an object)");
  only_keys(
      doc, "config",
      {"index", "sources", "triggers", "sync_sources", "capture", "postgres", "clickhouse", "bitdex", "dump_phases"});
  Config cfg;
  cfg.dump_phases = doc.find("dump_phases") != nullptr;
  if (const Value* i = doc.find("index")) cfg.index = str(*i, "config", "index");
  if (const Value* c = doc.find("capture")) cfg.sink = parse_sink(*c, "config");
  const Value* list = nullptr;
  for (const char* key : {"sources", "triggers", "sync_sources"}) {
    if (const Value* l = doc.find(key)) {
      if (list)
        throw Error(ErrorKind::InvalidInput, "config: give the sources under one key only", {},
                    "\"sources\", \"triggers\" and \"sync_sources\" are the same list.");
      list = l;
    }
  }
  if (!list) throw Error(ErrorKind::InvalidInput, "config: missing key \"sources\"");
  if (list->type != Type::Array) throw Error(ErrorKind::InvalidInput, "config: the sources must be a list");
  std::set<std::string> names;
  for (size_t i = 0; i < list->items.size(); i++) {
    Source s = parse_source(list->items[i], i, cfg.sink);
    if (!names.insert(s.name).second)
      throw Error(
          ErrorKind::InvalidInput,
          "source " + std::to_string(i + 1) + " (table \"" + s.table + "\"): duplicate source \"" + s.name + "\"", {},
          "Give each table one direct or fan-out source, and each join field one source.");
    cfg.sources.push_back(std::move(s));
  }
  return cfg;
}

Config parse(std::string_view text) {
  if (text.size() > kMaxConfigBytes)
    throw Error(ErrorKind::InvalidInput, "the config is " + std::to_string(text.size()) + " bytes, more than " +
                                             std::to_string(kMaxConfigBytes) + " (1 MiB)");
  Shape shape;
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && text[first] == '{') {
    Value doc = json::parse(text);
    check_json(doc, shape, "", 0);
    return parse_json_value(doc);
  }
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::InvalidInput, std::string("invalid YAML: ") + e.what());
  }
  Value doc;
  try {
    doc = from_yaml(root, shape, "", 0);
  } catch (const YAML::Exception& e) {
    throw Error(ErrorKind::InvalidInput, std::string("invalid YAML: ") + e.what());
  }
  return parse_json_value(doc);
}

}  // namespace bitdex::config
