// verify: one scan per direct source (all its fields at once) and one per
// other field, each `ORDER BY slot` streamed with COPY ... TO STDOUT (the
// server computes the next rows while we compare), merged against the
// index's (slot, value) pairs sorted the same way.
#include "bitdex_sync/index/verify.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/core/trigger_gen.hpp"

namespace bitdex::index {
namespace {

using config::SourceKind;

// One SELECT producing (slot, value of field 1, value of field 2, ...).
struct Scan {
  std::string name;
  std::string estimate_table;  // for the row estimate
  std::string from;            // FROM ... WHERE ...
  std::string slot_sql;
  std::vector<std::string> fields;
  std::vector<std::vector<std::string>> values;  // per field: one SELECT per contribution (UNION ALL)
  bool alive = false;                            // its slots are the alive set (direct source with sets_alive)
  bool fan_out = false;                          // NULL from the database may be absent in the index
};

std::string qualified(const std::string& table) {
  auto [schema, name] = config::split_table(table);
  return schema.empty() ? config::quote_ident(name) : config::quote_ident(schema) + "." + config::quote_ident(name);
}

std::string op_value(const std::string& sql) {
  return "bitdex_sync.op_value_text(" + sql + ")";
}

// A field fed by several sources (or several conditions of one join
// source) is compared as the union of what they contribute.
struct Contribution {
  std::string select;  // SELECT slot, value FROM ... WHERE ...
  std::string table;
  bool fan_out = false;
};

struct Plan {
  std::vector<Scan> scans;
  std::vector<std::string> unverified;
};

// A query fan-out's "F eq {col}": the direct source whose field F is a plain
// column, and the parent's column (trigger_gen::fan_in_of).
struct DirectColumn {
  std::string table, slot, column, parent_column;
};

std::optional<DirectColumn> eq_column(const config::Config& cfg, const config::Source& fan_out) {
  const std::optional<trigger_gen::FanIn> f = trigger_gen::fan_in_of(cfg, fan_out);
  if (!f) return std::nullopt;
  const config::Source& d = cfg.sources[f->child];
  return DirectColumn{qualified(d.table), config::quote_ident(d.slot_field), f->child_column, f->parent_column};
}

Plan make_plan(const config::Config& cfg, bool join_query_fan_outs, const std::set<std::string>& partitioned) {
  // A partitioned table's rows are its partitions' (capture triggers are
  // cloned to them); any other table is read ONLY (an inheritance child's
  // rows are not captured by its parent's trigger).
  auto only = [&](const std::string& t) { return (partitioned.count(t) ? "" : "ONLY ") + t; };
  Plan plan;
  std::map<std::string, std::vector<Contribution>> by_field;
  std::map<std::string, int> direct_uses;  // field -> number of direct sources setting it
  for (const config::Source& s : cfg.sources)
    if (s.kind == SourceKind::Direct) {
      for (const auto& tf : s.track_fields) direct_uses[tf.target]++;
      for (const auto& cf : s.computed_fields) direct_uses[cf.target]++;
    }
  for (const config::Source& s : cfg.sources) {
    const std::string table = qualified(s.table);
    const std::string slot = config::quote_ident(s.slot_field);
    switch (s.kind) {
      case SourceKind::Direct: {
        Scan scan;
        scan.name = s.name;
        scan.estimate_table = table;
        scan.from = "FROM " + only(table);
        scan.slot_sql = slot;
        scan.alive = s.sets_alive;
        auto add = [&](const std::string& target, const config::Template& expr) {
          if (direct_uses[target] > 1) {
            by_field[target].push_back(
                {"SELECT " + slot + ", " + op_value(expr.render()) + " FROM " + only(table), table, false});
            return;
          }
          scan.fields.push_back(target);
          scan.values.push_back({op_value(expr.render())});
        };
        for (const auto& tf : s.track_fields) add(tf.target, tf.expr);
        for (const auto& cf : s.computed_fields) add(cf.target, cf.expr);
        if (!scan.fields.empty() || scan.alive) plan.scans.push_back(std::move(scan));
        break;
      }
      case SourceKind::Join: {
        std::string where = s.filter ? " WHERE (" + s.filter->render() + ")" : "";
        by_field[s.field].push_back(
            {"SELECT " + slot + ", " + op_value(config::quote_ident(s.value_field)) + " FROM " + only(table) + where,
             table, false});
        for (const auto& cf : s.computed_fields) {
          std::string value = cf.value ? cf.value->render() : config::quote_ident(s.value_field);
          by_field[cf.target].push_back(
              {"SELECT " + slot + ", " + op_value(value) + " FROM " + only(table) + " WHERE (" + cf.expr.render() + ")",
               table, false});
        }
        break;
      }
      case SourceKind::RowFanOut: {
        const config::RowsFrom& rf = *s.rows_from;
        const std::string child = qualified(rf.table);
        std::string from = " FROM " + only(child) + " c JOIN " + only(table) + " p ON c." + config::quote_ident(rf.fk) +
                           " = p." + config::quote_ident(rf.parent_key);
        if (s.filter) from += " WHERE (" + s.filter->render("p.") + ")";
        for (const auto& tf : s.track_fields)
          by_field[tf.target].push_back(
              {"SELECT c." + config::quote_ident(rf.slot) + ", " + op_value(tf.expr.render("p.")) + from, child, true});
        break;
      }
      case SourceKind::QueryFanOut: {
        // "F eq {col}" where F is a plain column of a direct source: the
        // slots are the rows of that source whose column equals the
        // parent's, so the tables can be joined.
        const std::optional<DirectColumn> via = !join_query_fan_outs ? std::nullopt : eq_column(cfg, s);
        if (!via) {
          for (const auto& tf : s.track_fields)
            plan.unverified.push_back(
                tf.target + " (query fan-out from " + s.table + ": its slots are chosen by a query over the index" +
                (join_query_fan_outs ? std::string(", not \"F eq {col}\" with F a plain column of one direct source")
                                     : std::string("; --no-join-query-fan-outs")) +
                ")");
          break;
        }
        std::string from = " FROM " + only(via->table) + " c JOIN " + only(table) + " p ON c." +
                           config::quote_ident(via->column) + " = p." + config::quote_ident(via->parent_column);
        if (trigger_gen::has_join_filter(s))
          from += " WHERE " + trigger_gen::join_filter_exists(s, "SELECT p.*");
        else if (s.filter)
          from += " WHERE (" + s.filter->render("p.") + ")";
        for (const auto& tf : s.track_fields)
          by_field[tf.target].push_back(
              {"SELECT c." + via->slot + ", " + op_value(tf.expr.render("p.")) + from, via->table, true});
        break;
      }
    }
  }
  for (auto& [field, parts] : by_field) {
    Scan scan;
    scan.name = field;
    scan.estimate_table = parts.front().table;
    scan.fields.push_back(field);
    std::vector<std::string> selects;
    for (const Contribution& c : parts) {
      selects.push_back(c.select);
      scan.fan_out = scan.fan_out || c.fan_out;
    }
    scan.values.push_back(selects);
    plan.scans.push_back(std::move(scan));
  }
  return plan;
}

std::string scan_sql(const Scan& s) {
  if (s.values.size() == 1 && s.values[0].size() > 1) {
    std::string sql;
    for (const std::string& part : s.values[0]) sql += (sql.empty() ? "" : " UNION ALL ") + part;
    return "SELECT * FROM (" + sql + ") u ORDER BY 1";
  }
  if (s.from.empty()) return s.values[0][0] + " ORDER BY 1";
  std::string sql = "SELECT " + s.slot_sql;
  for (const auto& v : s.values) sql += ", " + v[0];
  return sql + " " + s.from + " ORDER BY 1";
}

// A database value as the index holds it, from op_value_text's JSON text.
// Plain integers and strings without escapes (most values) skip the JSON
// parser.
OpValue parse_value(std::string_view t) {
  if (t == "null") return OpValue::null();
  if (t == "true") return OpValue::boolean(true);
  if (t == "false") return OpValue::boolean(false);
  int64_t v;
  if (canonical_int(t, v)) return OpValue::int64(v);
  if (t.size() >= 2 && t.front() == '"' && t.back() == '"' && t.find('\\') == std::string_view::npos)
    return OpValue::string(std::string(t.substr(1, t.size() - 2)));
  return OpValue::from_json(json::parse(t));
}

// The index side of one field: (slot, value id) sorted by slot.
struct IndexSide {
  std::vector<OpValue> dict;
  std::vector<std::pair<uint32_t, uint32_t>> pairs;
  size_t at = 0;
};

IndexSide index_side(const Index& ix, const std::string& field) {
  IndexSide side;
  auto f = ix.fields().find(field);
  if (f == ix.fields().end()) return side;
  for (const ValueMap::Entry& e : f->second.values) {
    uint32_t id = static_cast<uint32_t>(side.dict.size());
    side.dict.push_back(e.value);
    for (uint32_t slot : e.bitmap) side.pairs.emplace_back(slot, id);
  }
  std::sort(side.pairs.begin(), side.pairs.end());
  return side;
}

class Connection {
 public:
  explicit Connection(const std::string& conninfo) : c_(PQconnectdb(conninfo.c_str())) {
    if (PQstatus(c_) != CONNECTION_OK)
      throw Error(ErrorKind::InvalidInput, std::string("cannot connect to PostgreSQL: ") + PQerrorMessage(c_));
  }
  ~Connection() { PQfinish(c_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;
  Result run(const std::string& sql, ExecStatusType want = PGRES_TUPLES_OK) {
    Result r(PQexec(c_, sql.c_str()), &PQclear);
    ExecStatusType st = PQresultStatus(r.get());
    if (st != want && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
      throw Error(ErrorKind::Io, std::string("query failed: ") + PQerrorMessage(c_), "The query was: " + sql);
    return r;
  }

  // Streams the rows of `COPY (sql) TO STDOUT` (text format) to `row`, one
  // line at a time, without its newline.
  template <typename Row>
  void copy_out(const std::string& sql, Row row) {
    const std::string copy = "COPY (" + sql + ") TO STDOUT";
    run(copy, PGRES_COPY_OUT);
    char* line = nullptr;
    int n;
    while ((n = PQgetCopyData(c_, &line, 0)) > 0) {
      std::unique_ptr<char, decltype(&PQfreemem)> hold(line, &PQfreemem);
      row(std::string_view(line, n > 0 && line[n - 1] == '\n' ? n - 1 : n));
    }
    if (n == -2)
      throw Error(ErrorKind::Io, std::string("COPY failed: ") + PQerrorMessage(c_), "The query was: " + copy);
    Result end(PQgetResult(c_), &PQclear);
    if (PQresultStatus(end.get()) != PGRES_COMMAND_OK)
      throw Error(ErrorKind::Io, std::string("query failed: ") + PQerrorMessage(c_), "The query was: " + copy);
    while (PGresult* extra = PQgetResult(c_)) PQclear(extra);
  }

 private:
  PGconn* c_;
};

class Verifier {
 public:
  Verifier(const Index& ix, const VerifyOptions& opts) : ix_(ix), opts_(opts) {}

  VerifyReport run() {
    auto t0 = std::chrono::steady_clock::now();
    start_ = last_tick_ = t0;
    Connection db(opts_.conninfo);
    // One snapshot for every scan, and nothing written.
    db.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    std::string text = opts_.config_text;
    if (text.empty()) {
      auto r = db.run("SELECT config FROM bitdex_sync.config_history ORDER BY id DESC LIMIT 1");
      if (PQntuples(r.get()) == 0)
        throw Error(ErrorKind::InvalidInput, "no config was ever applied in this database",
                    "Pass the config with --config, or run bitdex_sync.apply_config first.");
      text = PQgetvalue(r.get(), 0, 0);
    }
    const config::Config cfg = config::parse(text);
    std::set<std::string> partitioned;
    for (const config::Source& src : cfg.sources)
      for (const std::string& t : {src.table, src.rows_from ? src.rows_from->table : std::string()}) {
        if (t.empty()) continue;
        auto r = db.run("SELECT c.relkind = 'p' FROM pg_class c WHERE c.oid = to_regclass(" +
                        config::quote_literal(qualified(t)) + ")");
        if (PQntuples(r.get()) == 1 && std::string(PQgetvalue(r.get(), 0, 0)) == "t") partitioned.insert(qualified(t));
      }
    Plan plan = make_plan(cfg, opts_.join_query_fan_outs, partitioned);
    report_.unverified = plan.unverified;
    for (const Scan& s : plan.scans) {
      auto r = db.run("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = " +
                      config::quote_literal(s.estimate_table) + "::regclass");
      estimate_ +=
          std::stoull(PQgetvalue(r.get(), 0, 0)) * std::max<size_t>(1, s.values.empty() ? 0 : s.values[0].size());
    }
    // The alive scans first: once the live slots are known, other scans
    // compare only those (a join row may outlive its entity; the index
    // drops a deleted slot's values, and queries never return dead slots).
    std::stable_partition(plan.scans.begin(), plan.scans.end(), [](const Scan& s) { return s.alive; });
    std::set<std::string> covered;
    for (const Scan& s : plan.scans) {
      alive_done_ = alive_known_ && !s.alive;
      run_scan(db, s);
      alive_known_ = alive_known_ || s.alive;
      covered.insert(s.fields.begin(), s.fields.end());
    }
    db.run("COMMIT");
    if (alive_known_) compare_alive(db_alive_);
    for (const auto& [name, field] : ix_.fields())
      if (!covered.count(name) && std::none_of(report_.unverified.begin(), report_.unverified.end(),
                                               [&](const std::string& u) { return u.rfind(name + " ", 0) == 0; }))
        report_.unverified.push_back(name + " (in the index, not in the config)");
    report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report_;
  }

 private:
  void differ(int64_t slot, const std::string& field, std::vector<OpValue> db, std::vector<OpValue> ix) {
    report_.differences++;
    if (report_.shown.size() < opts_.max_shown) report_.shown.push_back({slot, field, std::move(db), std::move(ix)});
  }

  void compare_alive(const Roaring& db) {
    Roaring only_db = db - ix_.alive(), only_ix = ix_.alive() - db;
    std::vector<OpValue> yes{OpValue::boolean(true)}, no;
    for (uint32_t s : only_db) differ(s, "(alive)", yes, no);
    for (uint32_t s : only_ix) differ(s, "(alive)", no, yes);
  }

  // Index values of `side` for every slot below `slot` have no database row.
  void drain_below(IndexSide& side, const std::string& field, int64_t slot) {
    while (side.at < side.pairs.size() && int64_t(side.pairs[side.at].first) < slot) {
      uint32_t s = side.pairs[side.at].first;
      std::vector<OpValue> have = take(side, s);
      if (compared(s)) differ(s, field, {}, have);
    }
  }

  std::vector<OpValue> take(IndexSide& side, uint32_t slot) {
    std::vector<OpValue> out;
    while (side.at < side.pairs.size() && side.pairs[side.at].first == slot)
      out.push_back(side.dict[side.pairs[side.at++].second]);
    std::sort(out.begin(), out.end());
    return out;
  }

  // Whether a slot's values are compared in the scan now running.
  bool compared(int64_t slot) const {
    return !alive_done_ || (slot >= 0 && slot <= int64_t(UINT32_MAX) && db_alive_.contains(uint32_t(slot)));
  }

  void compare_group(const Scan& s, std::vector<IndexSide>& sides, int64_t slot,
                     std::vector<std::vector<OpValue>>& expected) {
    report_.slots++;
    for (size_t k = 0; k < s.fields.size(); k++) {
      IndexSide& side = sides[k];
      drain_below(side, s.fields[k], slot);
      std::vector<OpValue>& want = expected[k];
      std::sort(want.begin(), want.end());
      want.erase(std::unique(want.begin(), want.end()), want.end());
      std::vector<OpValue> have;
      if (slot >= 0 && slot <= int64_t(UINT32_MAX)) have = take(side, static_cast<uint32_t>(slot));
      bool same = want == have;
      // A child that has not seen its parent change since it appeared holds
      // nothing; for fan-out fields that equals the parent's NULL.
      if (!same && s.fan_out && have.empty() && want.size() == 1 && want[0] == OpValue::null()) same = true;
      if (!same && compared(slot)) differ(slot, s.fields[k], want, have);
      want.clear();
    }
  }

  void run_scan(Connection& db, const Scan& s) {
    Roaring* alive = s.alive ? &db_alive_ : nullptr;
    std::vector<IndexSide> sides;
    for (const std::string& f : s.fields) sides.push_back(index_side(ix_, f));
    std::vector<std::vector<OpValue>> expected(s.fields.size());
    int64_t current = 0;
    bool have_group = false;
    std::vector<std::string> cols;
    std::vector<bool> null;
    const std::string sql = scan_sql(s);
    db.copy_out(sql, [&](std::string_view line) {
      int64_t slot = 0;
      if (!split_copy_line(line, cols, null) || cols.size() != s.fields.size() + 1 || null[0] ||
          std::from_chars(cols[0].data(), cols[0].data() + cols[0].size(), slot).ec != std::errc())
        throw Error(ErrorKind::Io, "unexpected row from the database: " + std::string(line), "The query was: " + sql);
      if (have_group && slot != current) compare_group(s, sides, current, expected);
      current = slot;
      have_group = true;
      if (alive && slot >= 0 && slot <= int64_t(UINT32_MAX)) alive->add(static_cast<uint32_t>(slot));
      for (size_t k = 0; k < s.fields.size(); k++)
        expected[k].push_back(null[k + 1] ? OpValue::null() : parse_value(cols[k + 1]));
      if (++report_.rows % 4096 == 0) tick(s.name);
    });
    if (have_group) compare_group(s, sides, current, expected);
    for (size_t k = 0; k < s.fields.size(); k++) drain_below(sides[k], s.fields[k], int64_t(UINT32_MAX) + 1);
  }

  void tick(const std::string& scan) {
    if (!opts_.progress) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_tick_ < std::chrono::seconds(1)) return;
    last_tick_ = now;
    opts_.progress({scan, report_.rows, estimate_, std::chrono::duration<double>(now - start_).count()});
  }

  const Index& ix_;
  const VerifyOptions& opts_;
  VerifyReport report_;
  Roaring db_alive_;          // slots of the alive scans (direct sources with sets_alive)
  bool alive_known_ = false;  // some source defines alive
  bool alive_done_ = false;   // ... and its scans are over: compare only alive slots
  uint64_t estimate_ = 0;
  std::chrono::steady_clock::time_point start_, last_tick_;
};

}  // namespace

bool split_copy_line(std::string_view line, std::vector<std::string>& fields, std::vector<bool>& null) {
  fields.clear();
  null.clear();
  std::string cur;
  bool cur_null = false;
  for (size_t i = 0; i <= line.size(); i++) {
    if (i == line.size() || line[i] == '\t') {
      fields.push_back(std::move(cur));
      null.push_back(cur_null);
      cur.clear();
      cur_null = false;
      continue;
    }
    char c = line[i];
    if (c != '\\') {
      cur.push_back(c);
      continue;
    }
    if (++i == line.size()) return false;
    switch (char e = line[i]) {
      case 'N': cur_null = true; break;
      case 'b': cur.push_back('\b'); break;
      case 'f': cur.push_back('\f'); break;
      case 'n': cur.push_back('\n'); break;
      case 'r': cur.push_back('\r'); break;
      case 't': cur.push_back('\t'); break;
      case 'v': cur.push_back('\v'); break;
      case 'x': {
        int v = 0, digits = 0;
        while (digits < 2 && i + 1 < line.size() && std::isxdigit(static_cast<unsigned char>(line[i + 1]))) {
          char h = line[++i];
          v = v * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          digits++;
        }
        if (digits == 0) return false;
        cur.push_back(static_cast<char>(v));
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0';
          for (int k = 0; k < 2 && i + 1 < line.size() && line[i + 1] >= '0' && line[i + 1] <= '7'; k++)
            v = v * 8 + (line[++i] - '0');
          cur.push_back(static_cast<char>(v));
        } else {
          cur.push_back(e);  // \\ and any other escaped character stand for themselves
        }
    }
  }
  return true;
}

VerifyReport verify(const Index& ix, const VerifyOptions& opts) {
  return Verifier(ix, opts).run();
}

}  // namespace bitdex::index
