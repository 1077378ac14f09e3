// bitdex-index: the reference index — build it from an ops WAL, keep it up
// to date, query it, and verify it against PostgreSQL.
//
//   bitdex-index apply  --wal DIR | --dsn CONNINFO --index FILE [--consumer NAME] [--json]
//   bitdex-index follow --wal DIR | --dsn CONNINFO --index FILE [--consumer NAME] [--checkpoint-seconds S] [--json]
//   bitdex-index query  --index FILE [--ids] [--limit N] [--json] FILTER | --filter-file FILE
//   bitdex-index stats  --index FILE [--json]
//   bitdex-index verify --index FILE [--dsn CONNINFO] [--config FILE] [--max-shown N] [--no-join-query-fan-outs]
//   [--json] bitdex-index toggle --index FILE --slot N --field F --value JSON    (test tool)
//
// Exit status: 0 ok, 1 verify found differences (or the snapshot is
// damaged), 2 usage or other error.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/index/follower.hpp"
#include "bitdex_sync/index/index.hpp"
#include "bitdex_sync/index/verify.hpp"
#include "tool_common.hpp"

using namespace bitdex;
using namespace bitdex::index;
using Clock = std::chrono::steady_clock;

namespace {

using tool::cursor_json;

const char* kUsage =
    "usage: bitdex-index COMMAND [options]\n"
    "  apply  (--wal DIR | --dsn CONNINFO) --index FILE [--consumer NAME] [--json]\n"
    "                 apply every complete batch of the ops WAL, save the index, exit\n"
    "  follow (--wal DIR | --dsn CONNINFO) --index FILE [--consumer NAME] [--checkpoint-seconds S] [--json]\n"
    "                 keep applying as batches arrive; save every S seconds (default 5) and on SIGTERM/SIGINT;\n"
    "                 --wal reads the directory on this host, --dsn reads it over libpq from the primary\n"
    "                 (bitdex_sync.read_wal() as a role granted bitdex_sync_reader; reconnects by itself)\n"
    "  query  --index FILE [--ids] [--limit N] [--json] FILTER | --filter-file FILE\n"
    "                 count (and ids of) the alive slots matching FILTER, e.g. 'nsfwLevel in [1, 2] AND NOT "
    "type eq \"video\"';\n"
    "                 --filter-file reads it from FILE ('-': standard input) instead\n"
    "  stats  --index FILE [--json]       slots, fields, values, memory, cursor, counters\n"
    "  verify --index FILE [--dsn CONNINFO] [--config FILE] [--max-shown N] [--no-join-query-fan-outs] [--json]\n"
    "                 recompute every configured field from the tables and compare; exit 1 on any difference;\n"
    "                 (\"F eq {col}\" query fan-outs by a join; --no-join-query-fan-outs lists them unverified)\n"
    "  toggle --index FILE --slot N --field F --value JSON\n"
    "                 flip one slot's membership of one value (to test verify)\n";

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "bitdex-index: %s\n%s", why.c_str(), kUsage);
  std::exit(2);
}

struct Args {
  std::string command;
  std::map<std::string, std::string> opts;  // --name value (flags map to "1")
  std::vector<std::string> positional;

  bool flag(const std::string& name) const { return opts.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = {}) const {
    auto it = opts.find(name);
    return it == opts.end() ? fallback : it->second;
  }
  std::string need(const std::string& name) const {
    auto it = opts.find(name);
    if (it == opts.end() || it->second.empty()) usage(command + " needs --" + name);
    return it->second;
  }
};

Args parse_args(int argc, char** argv) {
  static const char* kFlags[] = {"json", "ids", "join-query-fan-outs", "no-join-query-fan-outs"};
  Args a;
  if (argc < 2) usage("no command");
  a.command = argv[1];
  for (int i = 2; i < argc; i++) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      a.positional.push_back(s);
      continue;
    }
    std::string name = s.substr(2);
    bool is_flag = false;
    for (const char* f : kFlags) is_flag = is_flag || name == f;
    if (is_flag) {
      a.opts[name] = "1";
    } else {
      if (i + 1 >= argc) usage("--" + name + " needs a value");
      a.opts[name] = argv[++i];
    }
  }
  return a;
}

uint64_t number(const Args& a, const std::string& name, uint64_t fallback) {
  std::string v = a.get(name);
  if (v.empty()) return fallback;
  char* end = nullptr;
  unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (*end != '\0') usage("--" + name + " must be a number");
  return n;
}

std::string value_json(const OpValue& v) {
  std::string out;
  v.write_json(out);
  return out;
}

std::string counters_json(const Counters& c) {
  return "\"batches\":" + std::to_string(c.batches) + ",\"last_batch_seq\":" + std::to_string(c.last_batch_seq) +
         ",\"records\":" + std::to_string(c.records) + ",\"ops\":" + std::to_string(c.ops) +
         ",\"null_queries\":" + std::to_string(c.null_queries) + ",\"bad_queries\":" + std::to_string(c.bad_queries);
}

void print_problems(const Index& ix, size_t from) {
  for (size_t i = from; i < ix.problems().size(); i++)
    std::fprintf(stderr, "bitdex-index: skipped a queryOpSet at %s: %s\n", ix.problems()[i].where.c_str(),
                 ix.problems()[i].what.c_str());
}

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
  g_stop = 1;
}

// The follower's source: the WAL directory (--wal) or the primary (--dsn).
std::unique_ptr<BatchSource> source_of(const Args& a, bool follow) {
  const std::string consumer = a.get("consumer", "index");
  if (a.flag("wal") == a.flag("dsn")) usage(a.command + " needs --wal DIR or --dsn CONNINFO (one of them)");
  if (a.flag("wal")) return local_source(a.need("wal"), consumer);
  RemoteOptions o;
  o.conninfo = a.need("dsn");
  o.consumer = consumer;
  o.wait_ms = follow ? 1000 : 0;
  o.stopping = [] { return g_stop != 0; };
  o.log = [](const std::string& m) { std::fprintf(stderr, "bitdex-index: %s\n", m.c_str()); };
  return remote_source(std::move(o));
}

// apply and follow: the same loop; follow keeps waiting for more.
int run_follow(const Args& a, bool follow) {
  if (follow) {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
  }
  const bool remote = a.flag("dsn");
  Follower f(source_of(a, follow), a.need("index"));
  const bool json = a.flag("json");
  const double every = double(number(a, "checkpoint-seconds", 5));
  const uint64_t ops0 = f.index().counters().ops, batches0 = f.index().counters().batches;
  size_t problems = f.index().problems().size();
  auto start = Clock::now(), last_save = start, last_report = start;
  uint64_t ops_at_report = ops0;
  std::optional<uint64_t> left_at_report = f.source().bytes_after(f.cursor());
  while (!g_stop) {
    bool got = false;
    try {
      got = f.step();
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::Cancelled) throw;
      break;  // a signal while the source reconnected
    }
    if (f.index().problems().size() != problems) {
      print_problems(f.index(), problems);
      problems = f.index().problems().size();
    }
    auto now = Clock::now();
    if (now - last_report >= std::chrono::seconds(5)) {
      double dt = std::chrono::duration<double>(now - last_report).count();
      std::optional<uint64_t> left = f.source().bytes_after(f.cursor());
      std::string behind;
      if (left) {
        double byte_rate = left_at_report && *left_at_report > *left ? double(*left_at_report - *left) / dt : 0;
        behind = ", " + std::to_string(*left) + " WAL bytes behind, ETA " +
                 (byte_rate > 0 ? std::to_string(uint64_t(double(*left) / byte_rate)) + " s" : "unknown");
      }
      std::fprintf(stderr, "bitdex-index: batch %" PRIu64 ", %" PRIu64 " ops applied (%.0f ops/s)%s\n",
                   f.index().counters().last_batch_seq, f.index().counters().ops - ops0,
                   double(f.index().counters().ops - ops_at_report) / dt, behind.c_str());
      last_report = now;
      ops_at_report = f.index().counters().ops;
      left_at_report = left;
    }
    if (!got && !follow) break;
    if (follow && f.unsaved() > 0 && std::chrono::duration<double>(now - last_save).count() >= every) {
      f.checkpoint();
      last_save = now;
    }
    // The remote source's read already waited (long poll, woken by the worker).
    if (!got && !remote) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  try {
    f.checkpoint();
  } catch (const Error& e) {
    // The snapshot is saved; only the acknowledgement waits for the next run.
    if (e.kind() != ErrorKind::Cancelled) throw;
    std::fprintf(stderr, "bitdex-index: index saved; the cursor is acknowledged at the next start (%s)\n", e.what());
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const Counters& c = f.index().counters();
  uint64_t ops = c.ops - ops0;
  if (json) {
    std::printf("{\"applied_batches\":%" PRIu64 ",\"applied_ops\":%" PRIu64
                ",\"seconds\":%.3f,\"ops_per_second\":%.0f,"
                "\"alive\":%" PRIu64 ",\"cursor\":%s,%s}\n",
                c.batches - batches0, ops, secs, secs > 0 ? double(ops) / secs : 0.0, f.index().alive().cardinality(),
                cursor_json(f.cursor()).c_str(), counters_json(c).c_str());
  } else {
    std::printf("applied %" PRIu64 " batches, %" PRIu64 " ops in %.3f s (%.0f ops/s); index at batch %" PRIu64
                ", %" PRIu64 " alive slots\n",
                c.batches - batches0, ops, secs, secs > 0 ? double(ops) / secs : 0.0, c.last_batch_seq,
                f.index().alive().cardinality());
    if (!f.tail_note().empty()) std::printf("ops WAL tail: %s\n", f.tail_note().c_str());
  }
  return 0;
}

// The filter of `query`: its argument, or the contents of --filter-file
// (long filters need not fit on a command line).
std::string query_filter(const Args& a) {
  if (!a.flag("filter-file")) {
    if (a.positional.size() != 1) usage("query takes one FILTER (or --filter-file FILE)");
    return a.positional[0];
  }
  if (!a.positional.empty()) usage("query takes FILTER or --filter-file, not both");
  const std::string path = a.need("filter-file");
  std::string text;
  if (path == "-") {
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) text.append(buf, n);
  } else {
    text = fileio::read_file(path);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

int run_query(const Args& a) {
  const std::string filter = query_filter(a);
  Index ix = Index::load(a.need("index"), nullptr);
  Roaring r = ix.evaluate(filter);
  uint64_t limit = number(a, "limit", 100);
  std::vector<uint32_t> ids;
  if (a.flag("ids"))
    for (uint32_t s : r) {
      if (ids.size() >= limit) break;
      ids.push_back(s);
    }
  if (a.flag("json")) {
    std::string out = "{\"count\":" + std::to_string(r.cardinality());
    if (a.flag("ids")) {
      out += ",\"ids\":[";
      for (size_t i = 0; i < ids.size(); i++) out += (i ? "," : "") + std::to_string(ids[i]);
      out += "]";
    }
    std::printf("%s}\n", out.c_str());
  } else {
    std::printf("%" PRIu64 "\n", r.cardinality());
    for (uint32_t s : ids) std::printf("%u\n", s);
  }
  return 0;
}

int run_stats(const Args& a) {
  wal::Cursor cur;
  Index ix = Index::load(a.need("index"), &cur);
  if (a.flag("json")) {
    std::string fields;
    for (const auto& [name, f] : ix.fields()) {
      if (!fields.empty()) fields += ",";
      json::write_string(fields, name);
      fields += ":" + std::to_string(f.values.size());
    }
    std::printf("{\"alive\":%" PRIu64 ",\"values\":%" PRIu64 ",\"bitmap_bytes\":%" PRIu64
                ",\"fields\":{%s},\"cursor\":%s,%s}\n",
                ix.alive().cardinality(), ix.value_count(), ix.bitmap_bytes(), fields.c_str(), cursor_json(cur).c_str(),
                counters_json(ix.counters()).c_str());
    return 0;
  }
  std::printf("alive slots   %" PRIu64 "\nvalues        %" PRIu64 "\nbitmap bytes  %" PRIu64
              "\ncursor        segment %" PRIu64 " offset %" PRIu64 " (batch %" PRIu64 ")\n",
              ix.alive().cardinality(), ix.value_count(), ix.bitmap_bytes(), cur.generation, cur.offset,
              ix.counters().last_batch_seq);
  for (const auto& [name, f] : ix.fields()) std::printf("field %-20s %zu values\n", name.c_str(), f.values.size());
  return 0;
}

int run_verify(const Args& a) {
  Index ix = Index::load(a.need("index"), nullptr);
  VerifyOptions o;
  o.conninfo = a.get("dsn");
  if (!a.get("config").empty()) o.config_text = fileio::read_file(a.get("config"));
  o.max_shown = number(a, "max-shown", 100);
  o.join_query_fan_outs = !a.flag("no-join-query-fan-outs");  // --join-query-fan-outs: the default
  o.progress = [](const VerifyProgress& p) {
    double rate = p.seconds > 0 ? double(p.rows) / p.seconds : 0;
    double eta = rate > 0 && p.estimate > p.rows ? double(p.estimate - p.rows) / rate : 0;
    std::fprintf(stderr, "bitdex-index verify: %s: %" PRIu64 " rows (%.0f rows/s, ETA %.0f s)\n", p.scan.c_str(),
                 p.rows, rate, eta);
  };
  VerifyReport r = verify(ix, o);
  const double rate = r.seconds > 0 ? double(r.rows) / r.seconds : 0;
  if (a.flag("json")) {
    std::string out = "{\"rows\":" + std::to_string(r.rows) + ",\"slots\":" + std::to_string(r.slots) +
                      ",\"seconds\":" + std::to_string(r.seconds) +
                      ",\"rows_per_second\":" + std::to_string(uint64_t(rate)) +
                      ",\"differences\":" + std::to_string(r.differences) + ",\"shown\":[";
    for (size_t i = 0; i < r.shown.size(); i++) {
      const Difference& d = r.shown[i];
      out += std::string(i ? "," : "") + "{\"slot\":" + std::to_string(d.slot) + ",\"field\":";
      json::write_string(out, d.field);
      for (const auto& [key, values] : {std::pair{"database", &d.database}, std::pair{"index", &d.index}}) {
        out += std::string(",\"") + key + "\":[";
        for (size_t k = 0; k < values->size(); k++) out += (k ? "," : "") + value_json((*values)[k]);
        out += "]";
      }
      out += "}";
    }
    out += "],\"unverified\":[";
    for (size_t i = 0; i < r.unverified.size(); i++) {
      if (i) out += ",";
      json::write_string(out, r.unverified[i]);
    }
    std::printf("%s]}\n", out.c_str());
  } else {
    for (const Difference& d : r.shown) {
      std::string db, ixv;
      for (const OpValue& v : d.database) db += (db.empty() ? "" : ", ") + value_json(v);
      for (const OpValue& v : d.index) ixv += (ixv.empty() ? "" : ", ") + value_json(v);
      std::printf("DIFF slot %" PRId64 " field %s: database [%s], index [%s]\n", d.slot, d.field.c_str(), db.c_str(),
                  ixv.c_str());
    }
    for (const std::string& u : r.unverified) std::printf("not verified: %s\n", u.c_str());
    std::printf("verified %" PRIu64 " rows, %" PRIu64 " slot groups in %.2f s (%.0f rows/s): %" PRIu64 " differences\n",
                r.rows, r.slots, r.seconds, rate, r.differences);
  }
  return r.differences == 0 ? 0 : 1;
}

int run_toggle(const Args& a) {
  const std::string path = a.need("index");
  wal::Cursor cur;
  Index ix = Index::load(path, &cur);
  uint64_t slot = number(a, "slot", UINT64_MAX);
  if (slot > UINT32_MAX) usage("toggle needs --slot 0..4294967295");
  OpValue v = OpValue::from_json(json::parse(a.need("value")));
  const bool was = ix.has(uint32_t(slot), a.need("field"), v);
  ix.toggle(uint32_t(slot), a.need("field"), v);
  ix.save(path, cur);
  std::printf("slot %" PRIu64 " %s %s = %s\n", slot, was ? "removed from" : "added to", a.need("field").c_str(),
              value_json(v).c_str());
  return 0;
}

int run(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.command == "apply") return run_follow(a, false);
  if (a.command == "follow") return run_follow(a, true);
  if (a.command == "query") return run_query(a);
  if (a.command == "stats") return run_stats(a);
  if (a.command == "verify") return run_verify(a);
  if (a.command == "toggle") return run_toggle(a);
  if (a.command == "help" || a.command == "--help") {
    std::printf("%s", kUsage);
    return 0;
  }
  usage("unknown command \"" + a.command + "\"");
}

}  // namespace

int main(int argc, char** argv) {
  return tool::main_guard("bitdex-index", [&] { return run(argc, argv); });
}
