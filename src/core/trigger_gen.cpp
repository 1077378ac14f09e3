// Capture spec, names and DDL for one source.
#include "bitdex_sync/core/trigger_gen.hpp"

#include <algorithm>
#include <cctype>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/sha256.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::trigger_gen {
namespace {

using config::SourceKind;

// A name part for generated identifiers: lowercase [a-z0-9], anything else '_'.
std::string slug(const std::string& s) {
  std::string out;
  for (char c : s) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out += ((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9')) ? l : '_';
  }
  return out;
}

}  // namespace

std::string rows_sql(const config::Source& s, const Resolved& r) {
  return "SELECT " + config::quote_ident(s.rows_from->slot) + " FROM ONLY " + r.child_table + " WHERE " +
         config::quote_ident(s.rows_from->fk) + " = $1";
}

std::string ids_sql(const config::Source& s) {
  // to_jsonb of the result: a JSON array, a SQL array or a scalar all become
  // JSON, whose elements fill {ids} (never a nested array, unlike BitDex).
  return "SELECT pg_catalog.to_jsonb((" + s.expression->render_params() + "))";
}

bool has_join_filter(const config::Source& s) {
  return s.kind == SourceKind::QueryFanOut && s.join_filter.has_value();
}

std::string join_filter_exists(const config::Source& s, const std::string& row_select) {
  const std::string alias = config::quote_ident(config::split_table(s.table).second);
  std::string sql = "EXISTS (SELECT FROM (" + row_select + ") AS " + alias + " " + s.join_filter->render(alias + ".");
  if (s.filter) sql += " WHERE (" + s.filter->render(alias + ".") + ")";
  return sql + ")";
}

std::string join_filter_sql(const config::Source& s, const std::vector<std::string>& columns) {
  std::string row;
  for (size_t i = 0; i < columns.size(); i++)
    row += (i ? ", $" : "$") + std::to_string(i + 1) + " AS " + config::quote_ident(columns[i]);
  if (row.empty()) row = "1";  // it reads no column of the row
  return "SELECT " + join_filter_exists(s, "SELECT " + row);
}

std::optional<FanIn> fan_in_of(const config::Config& cfg, const config::Source& fan_out) {
  if (fan_out.kind != SourceKind::QueryFanOut || fan_out.expression || !fan_out.query) return std::nullopt;
  const config::Template& query = *fan_out.query;
  const std::string& q = query.text;
  const size_t eq = q.find(" eq ");
  if (eq == std::string::npos || query.columns.size() != 1) return std::nullopt;
  auto trim = [](std::string t) {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.erase(t.begin());
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    return t;
  };
  const std::string field = trim(q.substr(0, eq)), value = trim(q.substr(eq + 4));
  if (value != "{" + query.columns[0] + "}" || field.empty() || field.find(' ') != std::string::npos)
    return std::nullopt;
  std::optional<FanIn> hit;
  for (size_t i = 0; i < cfg.sources.size(); i++) {
    const config::Source& d = cfg.sources[i];
    if (d.kind != SourceKind::Direct) continue;
    for (const auto& tf : d.track_fields)
      if (tf.target == field && tf.expr.columns.size() == 1 && tf.expr.text == "{" + tf.expr.columns[0] + "}") {
        if (hit) return std::nullopt;  // two sources write the field: no one child table
        hit = FanIn{i, field, tf.expr.columns[0], query.columns[0]};
      }
  }
  return hit;
}

std::string fan_in_sql(const config::Source& fan_out, const FanIn& f, const std::string& parent_table, bool only) {
  std::string sql = "SELECT ";
  for (size_t i = 0; i < fan_out.track_fields.size(); i++)
    sql += (i ? ", " : "") + fan_out.track_fields[i].expr.render("p.");
  sql += std::string(" FROM ") + (only ? "ONLY " : "") + parent_table + " AS p WHERE p." +
         config::quote_ident(f.parent_column) + " = $1";
  if (has_join_filter(fan_out))
    sql += " AND " + join_filter_exists(fan_out, "SELECT p.*");
  else if (fan_out.filter)
    sql += " AND (" + fan_out.filter->render("p.") + ")";
  return sql;
}

bool same_but_fan_ins(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty()) return false;
  auto without = [](const std::string& spec) {
    json::Value v = json::parse(spec);
    auto& m = v.members;
    m.erase(std::remove_if(m.begin(), m.end(), [](const auto& kv) { return kv.first == "fan_in"; }), m.end());
    std::string out;
    json::write(out, v);
    return out;
  };
  return without(a) == without(b);
}

spec::CaptureSpec spec_of(const config::Source& s, const Resolved& r) {
  spec::CaptureSpec out;
  out.source = s.name;
  out.kind = s.kind;
  out.sink = s.sink;
  out.slot = config::quote_ident(s.slot_field);
  out.alive = s.sets_alive;
  out.on_delete = s.on_delete;
  if (s.kind == SourceKind::Join) {
    out.value = spec::Field{s.field, config::quote_ident(s.value_field), {}};
    if (s.filter) out.filter = s.filter->render();
    for (const auto& cf : s.computed_fields)
      out.computed.push_back(
          spec::Field{cf.target, cf.value ? cf.value->render() : config::quote_ident(s.value_field), cf.expr.render()});
  } else {
    for (const auto& tf : s.track_fields) out.fields.push_back(spec::Field{tf.target, tf.expr.render(), {}});
    for (const auto& cf : s.computed_fields) out.fields.push_back(spec::Field{cf.target, cf.expr.render(), {}});
  }
  if (s.kind == SourceKind::QueryFanOut) {
    const std::string& q = s.query->text;
    out.query = q;
    // One entry per placeholder occurrence, in order: the trigger fills them
    // in sequence (Template::columns is distinct, so it cannot serve here).
    for (size_t i = 0; i < q.size(); i++) {
      if (q[i] != '{') continue;
      size_t end = q.find('}', i);
      std::string col = q.substr(i + 1, end - i - 1);
      i = end;
      if (col != "ids") out.query_cols.push_back(col);  // {ids} is filled from "expression"
    }
    if (s.expression) {
      out.ids_sql = ids_sql(s);
      for (const std::string& c : s.expression->columns) out.ids_params.push_back(config::quote_ident(c));
    }
  }
  for (const ResolvedFanIn& f : r.fan_ins)
    out.fan_ins.push_back(spec::FanIn{f.source, f.field, f.sql, f.lock, f.targets});
  out.fan_in_lock = r.fan_in_lock;
  if (has_join_filter(s)) {
    out.filter_sql = join_filter_sql(s, r.join_filter_columns);
    for (const std::string& c : r.join_filter_columns) out.filter_params.push_back(config::quote_ident(c));
  } else if (s.kind != SourceKind::Join && s.filter) {
    out.filter = s.filter->render();
  }
  out.shared = s.shared_ops_fields;  // not read by the trigger: makes helpers part of the definition
  if (s.kind == SourceKind::RowFanOut) {
    out.rows_sql = rows_sql(s, r);
    out.parent_key = config::quote_ident(s.rows_from->parent_key);
  }
  return out;
}

std::string capture_spec(const config::Source& s, const Resolved& r) {
  return spec::write(spec_of(s, r));
}

std::string trigger_events(const config::Source& s) {
  switch (s.kind) {
    case SourceKind::Join: return "AFTER INSERT OR UPDATE OR DELETE";  // join-table UPDATEs are captured too
    case SourceKind::QueryFanOut:
    case SourceKind::RowFanOut: return "AFTER INSERT OR UPDATE OR DELETE";  // DELETE clears the fanned-out values
    default: return s.on_delete ? "AFTER INSERT OR UPDATE OR DELETE" : "AFTER INSERT OR UPDATE";
  }
}

std::string trigger_name(const std::string& qualified_table, const config::Source& s, const Resolved& r) {
  std::string digest = sha256_hex(qualified_table + "\n" + trigger_events(s) + "\n" + capture_spec(s, r));
  std::string base = slug(config::split_table(s.table).second);
  if (s.kind == SourceKind::Join) base += "_" + slug(s.field);
  if (base.size() > 44) base.resize(44);  // "bitdex_" + base + "_" + 8 hex <= 63 bytes
  return "bitdex_" + base + "_" + digest.substr(0, 8);
}

std::string create_sql(const std::string& qualified_table, const config::Source& s, const Resolved& r) {
  if (s.kind == SourceKind::RowFanOut && r.child_table.empty())
    throw Error(ErrorKind::Internal, "source \"" + s.name + "\": child table not resolved");
  // No argument: the trigger reads its definition from bitdex_sync.sources,
  // where apply_config records it under the trigger's OID.
  std::string name = config::quote_ident(trigger_name(qualified_table, s, r));
  return "CREATE TRIGGER " + name + " " + trigger_events(s) + " ON " + qualified_table +
         " FOR EACH ROW EXECUTE FUNCTION bitdex_sync.capture();\nALTER TABLE " + qualified_table +
         " ENABLE ALWAYS TRIGGER " + name + ";\n";
}

std::vector<std::string> spec_expressions(const json::Value& spec) {
  return spec::expressions(spec::read(spec));
}

std::string helper_name(const config::Source& s, const std::string& field) {
  std::string out = "bitdex_" + slug(config::split_table(s.table).second) + "_" + slug(field) + "_ops";
  if (out.size() > 63) out.resize(63);
  return out;
}

std::string helper_sql(const std::string& qualified_table, const std::string& schema, const config::Source& s,
                       const std::string& field) {
  const config::Template* expr = nullptr;
  for (const auto& tf : s.track_fields)
    if (tf.target == field) expr = &tf.expr;
  for (const auto& cf : s.computed_fields)
    if (cf.target == field) expr = &cf.expr;
  if (!expr)
    throw Error(ErrorKind::InvalidInput, "source \"" + s.name + "\": shared_ops_fields names \"" + field + "\"");
  // A RETURN body is parsed when the function is made (apply_config runs
  // this with the search_path it analyses capture expressions under) and
  // stored as a tree: the helper calls what the trigger calls, and a
  // function made later cannot change that.
  return "CREATE OR REPLACE FUNCTION " + config::quote_ident(schema) + "." +
         config::quote_ident(helper_name(s, field)) + "(_row " + qualified_table +
         ") RETURNS jsonb LANGUAGE sql STABLE RETURN "
         "pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('op', 'set', 'field', " +
         config::quote_literal(field) + ", 'value', bitdex_sync.op_value(" + expr->render("_row.") + ")));\n";
}

std::string drop_helper_sql(const std::string& qualified_helper, const std::string& qualified_table) {
  return "DROP FUNCTION IF EXISTS " + qualified_helper + "(" + qualified_table + ");\n";
}

std::vector<std::string> fields_written(const config::Source& s) {
  std::vector<std::string> out;
  if (s.kind == SourceKind::Join) out.push_back(s.field);
  for (const auto& tf : s.track_fields) out.push_back(tf.target);
  for (const auto& cf : s.computed_fields) out.push_back(cf.target);
  return out;
}

Clear truncate_clear(const config::Source& s) {
  Clear c;
  c.source = s.name;
  c.fields = fields_written(s);
  c.delete_slots = s.kind == SourceKind::Direct && s.on_delete;
  c.alive_slots = c.delete_slots && s.sets_alive;
  return c;
}

std::string truncate_spec(const config::Config& cfg, const config::Source& s) {
  const Clear c = truncate_clear(s);
  std::string refuse;
  for (const config::Source& other : cfg.sources) {
    if (&other == &s || !refuse.empty()) continue;
    for (const std::string& f : fields_written(other))
      if (std::find(c.fields.begin(), c.fields.end(), f) != c.fields.end()) {
        refuse = "field \"" + f + "\" is also written by source \"" + other.name + "\"";
        break;
      }
  }
  std::string out = "{";
  json::write_string_member(out, "sink", config::sink_name(s.sink));
  json::write_key(out, "clear");
  write_clear_json(out, c);
  if (refuse.empty()) {
    json::write_key(out, "refuse");
    out += "null";
  } else {
    json::write_string_member(out, "refuse", refuse);
  }
  return out + "}";
}

std::vector<std::pair<std::string, std::string>> field_definitions(const json::Value& spec, uint32_t table) {
  auto text = [&](const json::Value& obj, const char* key) {
    const json::Value* v = obj.type == json::Type::Object ? obj.find(key) : nullptr;
    std::string out;
    if (v) json::write(out, *v);
    return out;
  };
  const bool join = text(spec, "kind") == "\"join\"";
  std::string base = std::to_string(table);
  for (const char* k : {"kind", "slot", "query", "query_cols", "ids_sql", "ids_params", "rows_sql", "parent_key",
                        "filter_sql", "filter_params"})
    base += "\n" + std::string(k) + "=" + text(spec, k);
  if (!join) base += "\nfilter=" + text(spec, "filter");
  std::vector<std::pair<std::string, std::string>> out;
  auto field = [&](const json::Value& f, const std::string& extra) {
    const json::Value* name = f.type == json::Type::Object ? f.find("f") : nullptr;
    if (!name || name->type != json::Type::String) return;
    out.emplace_back(name->text, base + extra + "\ncond=" + text(f, "cond") + "\nsql=" + text(f, "sql"));
  };
  if (join) {
    if (const json::Value* v = spec.find("value")) field(*v, "\nfilter=" + text(spec, "filter"));
    if (const json::Value* c = spec.find("computed"); c && c->type == json::Type::Array)
      for (const json::Value& f : c->items) field(f, "");
  } else if (const json::Value* fs = spec.find("fields"); fs && fs->type == json::Type::Array) {
    for (const json::Value& f : fs->items) field(f, "");
  }
  return out;
}

std::vector<std::string> fields_to_clear(const json::Value& old_spec, uint32_t old_table, const json::Value* new_spec,
                                         uint32_t new_table) {
  std::vector<std::pair<std::string, std::string>> now;
  if (new_spec) now = field_definitions(*new_spec, new_table);
  std::vector<std::string> out;
  for (const auto& [field, def] : field_definitions(old_spec, old_table))
    if (std::find(now.begin(), now.end(), std::make_pair(field, def)) == now.end()) out.push_back(field);
  return out;
}

std::string truncate_trigger_name(const std::string& row_trigger) {
  return row_trigger + "_t";
}

std::string create_truncate_sql(const std::string& qualified_table, const std::string& row_trigger) {
  const std::string name = config::quote_ident(truncate_trigger_name(row_trigger));
  return "CREATE TRIGGER " + name + " AFTER TRUNCATE ON " + qualified_table +
         " FOR EACH STATEMENT EXECUTE FUNCTION bitdex_sync.capture();\nALTER TABLE " + qualified_table +
         " ENABLE ALWAYS TRIGGER " + name + ";\n";
}

std::string drop_sql(const std::string& qualified_table, const std::string& trigger) {
  return "DROP TRIGGER IF EXISTS " + config::quote_ident(trigger) + " ON " + qualified_table + ";\n";
}

}  // namespace bitdex::trigger_gen
