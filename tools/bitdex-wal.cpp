// bitdex-wal: inspect, verify and write an ops WAL directory.
//
//   bitdex-wal dump DIR [--from GEN:OFFSET]     records as JSON lines
//   bitdex-wal verify DIR [--json]              CRCs, batch completeness, position order
//   bitdex-wal stats DIR [--json]               segments, batches, records, ops, marks, consumers
//   bitdex-wal append DIR [--dedup] [--records] [--segment-size BYTES] < input
//                                               one batch per input line (a JSON array of records);
//                                               --records: one record per line, all one batch
//   bitdex-wal consumers DIR                    registered consumers and their cursors
//   bitdex-wal register DIR NAME [--at-end] | unregister DIR NAME
//   bitdex-wal retain DIR [--max-bytes N]       delete segments every consumer is past; past N
//                                               bytes, also older ones (their consumers become lagging)
//
// Exit status: 0 ok, 1 the WAL is damaged (verify), 2 usage or other error.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/core/wal_writer.hpp"
#include "tool_common.hpp"

using namespace bitdex;
using namespace bitdex::wal;

namespace {

using tool::cursor_json;

const char* kUsage =
    "usage: bitdex-wal COMMAND DIR [options]\n"
    "  dump DIR [--from GEN:OFFSET]      print records and batch ends as JSON lines\n"
    "  verify DIR [--json]               check CRCs, batches and position order\n"
    "  stats DIR [--json]                segments, batches, records, ops, marks, consumers\n"
    "  append DIR [--dedup] [--records] [--segment-size BYTES]\n"
    "                                    append one batch per stdin line (JSON array of records);\n"
    "                                    --records: one record per line, all one batch\n"
    "  consumers DIR                     list consumers and cursors\n"
    "  register DIR NAME [--at-end] | unregister DIR NAME\n"
    "                                    --at-end: from after the last complete batch (a new consumer\n"
    "                                    that starts with bitdex_sync.load())\n"
    "  retain DIR [--max-bytes N]        delete segments every consumer is past; with N, keep at most\n"
    "                                    about N bytes and mark consumers that needed more as lagging\n";

const char* stream_name(Stream s) {
  switch (s) {
    case Stream::Slot: return "slot";
    case Stream::Outbox: return "outbox";
    case Stream::Load: return "load";
    case Stream::None: return "none";
  }
  return "unknown";
}

void write_pos(std::string& out, const SourcePos& p) {
  char buf[128];
  if (p.stream == Stream::Slot)
    std::snprintf(buf, sizeof buf, "{\"stream\":\"slot\",\"lsn\":\"%X/%X\",\"index\":%u}",
                  static_cast<unsigned>(p.major >> 32), static_cast<unsigned>(p.major), p.minor);
  else if (p.stream == Stream::Load)
    std::snprintf(buf, sizeof buf, "{\"stream\":\"load\",\"load\":%" PRIu64 ",\"chunk\":%u}", p.major, p.minor);
  else
    std::snprintf(buf, sizeof buf, "{\"stream\":\"%s\",\"id\":%" PRIu64 "}", stream_name(p.stream), p.major);
  out += buf;
}

void write_marks(std::string& out, const std::vector<SourcePos>& marks) {
  out += '[';
  for (size_t i = 0; i < marks.size(); i++) {
    if (i) out += ',';
    write_pos(out, marks[i]);
  }
  out += ']';
}

// A --from cursor must point where a batch starts (or where the segment's
// complete batches end): anything else would be read as damage, or, past a
// segment's end, silently continue in the next segment.
void check_from(const std::string& dir, const Cursor& from) {
  if (from.generation == 0) return;  // from the oldest segment's start
  WalReader rd(dir, Cursor{0, from.generation, 0});
  WalBatch b;
  uint64_t last = 0, end = 0;
  while (rd.next(&b) == ReadStatus::Batch && b.begin.generation == from.generation) {
    if (b.begin.offset == from.offset || b.end.offset == from.offset) return;
    if (b.begin.offset > from.offset) break;
    last = b.begin.offset;
    end = b.end.offset;
  }
  if (from.offset == 0) return;
  const std::string where = "--from " + std::to_string(from.generation) + ":" + std::to_string(from.offset);
  if (from.offset > end)
    throw Error(
        ErrorKind::InvalidInput,
        where + " is not a cursor of this WAL: it is past the batches of segment " + std::to_string(from.generation),
        {}, "Take a cursor from a batch end's \"next\" in bitdex-wal dump, or use GEN:0.");
  throw Error(ErrorKind::InvalidInput,
              where + " is not a cursor of this WAL: it points inside a batch (the batch before it starts at " +
                  std::to_string(from.generation) + ":" + std::to_string(last) + ")",
              {}, "Take a cursor from a batch end's \"next\" in bitdex-wal dump, or use GEN:0.");
}

int cmd_dump(const std::string& dir, const Cursor& from) {
  check_from(dir, from);
  WalReader rd(dir, from);
  WalBatch b;
  std::string line;
  while (rd.next(&b) == ReadStatus::Batch) {
    for (const EntityRecord& r : b.records) {
      line = "{\"batch\":" + std::to_string(b.seq) + ",\"segment\":" + std::to_string(b.begin.generation) +
             ",\"position\":";
      write_pos(line, r.pos);
      if (r.clear) {
        line += ",\"clear\":";
        write_clear_json(line, *r.clear);
        line += "}\n";
        std::fputs(line.c_str(), stdout);
        continue;
      }
      line += ",\"entity_id\":" + std::to_string(r.entity_id) + ",\"creates_slot\":";
      line += r.creates_slot ? "true" : "false";
      line += ",\"ops\":";
      write_ops_json(line, r.ops);
      line += "}\n";
      std::fputs(line.c_str(), stdout);
    }
    line =
        "{\"batch_end\":" + std::to_string(b.seq) + ",\"records\":" + std::to_string(b.records.size()) + ",\"marks\":";
    write_marks(line, b.marks);
    line += ",\"next\":" + cursor_json(b.end) + "}\n";
    std::fputs(line.c_str(), stdout);
  }
  if (!rd.tail_note().empty()) std::fprintf(stderr, "bitdex-wal: stopped at the tail: %s\n", rd.tail_note().c_str());
  return 0;
}

struct Totals {
  uint64_t segments = 0, bytes = 0, batches = 0, records = 0, ops = 0, creates_slot = 0, nested_ops = 0;
  std::map<std::string, uint64_t> by_kind;
  std::vector<SourcePos> marks;
  Cursor end;
};

// Walks the whole WAL; problems go to *problems (empty when sound).
Totals scan(const std::string& dir, std::vector<std::string>* problems, std::string* tail) {
  Totals t;
  if (!fileio::exists(dir)) {
    problems->push_back("\"" + dir + "\" does not exist");
    return t;
  }
  std::vector<uint64_t> gens = list_segments(dir);
  t.segments = gens.size();
  if (gens.empty()) problems->push_back("\"" + dir + "\" holds no segment: it is not an ops WAL directory");
  for (size_t i = 1; i < gens.size(); i++)
    if (gens[i] != gens[i - 1] + 1)
      problems->push_back("segments " + std::to_string(gens[i - 1] + 1) + " to " + std::to_string(gens[i] - 1) +
                          " are missing (between " + std::to_string(gens[i - 1]) + " and " + std::to_string(gens[i]) +
                          ")");
  // Every segment header must be sound and of one WAL, and must repeat the
  // marks in force when its segment was started.
  std::map<uint64_t, SegmentHeader> headers;
  for (uint64_t g : gens) {
    std::string head = fileio::read_file(segment_path(dir, g));
    t.bytes += head.size();
    SegmentHeader h;
    size_t hlen;
    std::string why;
    Parse st = decode_segment_header(reinterpret_cast<const uint8_t*>(head.data()), head.size(), &h, &hlen, &why);
    if (st != Parse::Ok) {
      problems->push_back("segment " + std::to_string(g) +
                          " has a bad header: " + (st == Parse::Incomplete ? std::string("truncated") : why));
      continue;
    }
    if (h.generation != g)
      problems->push_back("segment " + std::to_string(g) + " claims generation " + std::to_string(h.generation));
    if (!headers.empty() && h.wal_id != headers.begin()->second.wal_id)
      problems->push_back("segment " + std::to_string(g) + " belongs to another WAL (its WAL id differs)");
    headers[g] = h;
  }
  WalReader rd(dir, Cursor{});
  WalBatch b;
  std::vector<SourcePos> prev_marks;
  uint64_t prev_gen = 0;
  try {
    while (rd.next(&b) == ReadStatus::Batch) {
      if (b.begin.generation != prev_gen) {
        const SegmentHeader& h = headers[b.begin.generation];
        if (prev_gen == 0) {
          prev_marks = h.marks;  // the oldest segment kept: its header is the baseline
        } else {
          bool same = h.marks.size() == prev_marks.size();
          for (const SourcePos& m : h.marks) same = same && find_mark(prev_marks, m.stream) == m;
          if (!same || h.next_batch_seq != b.seq)
            problems->push_back("segment " + std::to_string(b.begin.generation) +
                                " header does not continue the previous segment's last batch");
        }
        prev_gen = b.begin.generation;
      }
      for (const SourcePos& m : b.marks)
        if (m < find_mark(prev_marks, m.stream))
          problems->push_back("batch " + std::to_string(b.seq) + " lowers the mark of stream " + stream_name(m.stream));
      for (const EntityRecord& r : b.records) {
        SourcePos lo = find_mark(prev_marks, r.pos.stream), hi = find_mark(b.marks, r.pos.stream);
        if (!(lo < r.pos) || hi < r.pos)
          problems->push_back("batch " + std::to_string(b.seq) + ": record of entity " + std::to_string(r.entity_id) +
                              " has a position outside the batch's range");
        t.records++;
        if (r.clear) t.by_kind["clear"]++;
        t.ops += r.ops.size();
        t.creates_slot += r.creates_slot;
        for (const Op& op : r.ops) {
          t.by_kind[op_kind_name(op.kind)]++;
          t.nested_ops += op.ops.size();
        }
      }
      prev_marks = b.marks;
      t.batches++;
    }
    *tail = rd.tail_note();
  } catch (const Error& e) {
    problems->push_back(e.what());
  }
  t.marks = prev_marks;
  t.end = rd.cursor();
  return t;
}

int cmd_verify(const std::string& dir, bool as_json) {
  std::vector<std::string> problems;
  std::string tail;
  Totals t = scan(dir, &problems, &tail);
  if (as_json) {
    std::string out = "{\"ok\":";
    out += problems.empty() ? "true" : "false";
    out += ",\"segments\":" + std::to_string(t.segments) + ",\"batches\":" + std::to_string(t.batches) +
           ",\"records\":" + std::to_string(t.records) + ",\"problems\":[";
    for (size_t i = 0; i < problems.size(); i++) {
      if (i) out += ',';
      json::write_string(out, problems[i]);
    }
    out += "],\"tail\":";
    if (tail.empty())
      out += "null";
    else
      json::write_string(out, tail);
    out += "}\n";
    std::fputs(out.c_str(), stdout);
  } else {
    for (const auto& p : problems) std::printf("DAMAGED: %s\n", p.c_str());
    if (!tail.empty()) std::printf("warning: %s (the writer truncates it at its next start)\n", tail.c_str());
    std::printf("%s: %" PRIu64 " segments, %" PRIu64 " batches, %" PRIu64 " records checked\n",
                problems.empty() ? "ok" : "FAILED", t.segments, t.batches, t.records);
  }
  return problems.empty() ? 0 : 1;
}

int cmd_stats(const std::string& dir, bool as_json) {
  std::vector<std::string> problems;
  std::string tail;
  Totals t = scan(dir, &problems, &tail);
  auto consumers = list_consumers(dir);
  std::string out = "{\"segments\":" + std::to_string(t.segments) + ",\"bytes\":" + std::to_string(t.bytes) +
                    ",\"batches\":" + std::to_string(t.batches) + ",\"records\":" + std::to_string(t.records) +
                    ",\"ops\":" + std::to_string(t.ops) + ",\"nested_ops\":" + std::to_string(t.nested_ops) +
                    ",\"creates_slot\":" + std::to_string(t.creates_slot) + ",\"ops_by_kind\":{";
  bool firstk = true;
  for (const auto& [k, n] : t.by_kind) {
    if (!firstk) out += ',';
    firstk = false;
    out += "\"" + k + "\":" + std::to_string(n);
  }
  out += "},\"marks\":";
  write_marks(out, t.marks);
  out += ",\"end\":" + cursor_json(t.end) + ",\"consumers\":[";
  for (size_t i = 0; i < consumers.size(); i++) {
    if (i) out += ',';
    out += "{\"name\":";
    json::write_string(out, consumers[i].name);
    out += ",\"cursor\":" + cursor_json(consumers[i].cursor) + ",\"lagging\":";
    out += consumers[i].lagging ? "true}" : "false}";
  }
  out += "],\"damaged\":";
  out += problems.empty() ? "false" : "true";
  out += "}\n";
  if (as_json) {
    std::fputs(out.c_str(), stdout);
  } else {
    std::printf("segments      %" PRIu64 " (%" PRIu64 " bytes)\n", t.segments, t.bytes);
    std::printf("batches       %" PRIu64 "\n", t.batches);
    std::printf("records       %" PRIu64 " (%" PRIu64 " with creates_slot)\n", t.records, t.creates_slot);
    std::printf("ops           %" PRIu64 " (+%" PRIu64 " nested in queryOpSet)\n", t.ops, t.nested_ops);
    for (const auto& [k, n] : t.by_kind) std::printf("  %-11s %" PRIu64 "\n", k.c_str(), n);
    for (const SourcePos& m : t.marks) {
      std::string p;
      write_pos(p, m);
      std::printf("mark          %s\n", p.c_str());
    }
    for (const ConsumerInfo& c : consumers)
      std::printf("consumer      %s at segment %" PRIu64 " offset %" PRIu64 "%s\n", c.name.c_str(), c.cursor.generation,
                  c.cursor.offset, c.lagging ? " (LAGGING: needs a rebuild from a dump)" : "");
    if (!problems.empty()) std::printf("DAMAGED: run bitdex-wal verify\n");
  }
  return problems.empty() ? 0 : 1;
}

// Appends one batch to the WAL: positions in stream "none", numbered on from its mark.
void append_batch(WalWriter& w, Batch b, bool do_dedup) {
  uint64_t next = w.mark(Stream::None).major;
  for (EntityRecord& r : b) r.pos = SourcePos{Stream::None, ++next, 0};
  SourcePos covered{Stream::None, next, 0};
  if (do_dedup) b = dedup(std::move(b));
  AppendResult res = w.append(b, {covered});
  std::printf("{\"batch\":%" PRIu64 ",\"records\":%zu,\"ops\":%zu,\"bytes\":%" PRIu64 ",\"end\":%s}\n", res.batch_seq,
              b.size(), count_ops(b), res.bytes, cursor_json(res.end).c_str());
}

int cmd_append(const std::string& dir, bool do_dedup, bool records, uint64_t segment_size) {
  WriterOptions opts{dir};
  if (segment_size) opts.segment_size = segment_size;
  OpenReport rep;
  auto w = WalWriter::open(opts, &rep);
  if (rep.truncated_bytes)
    std::fprintf(stderr, "bitdex-wal: truncated a torn tail of %" PRIu64 " bytes (%s)\n", rep.truncated_bytes,
                 rep.truncated_reason.c_str());
  std::string line;
  uint64_t lineno = 0;
  Batch all;  // --records: every line is one record of a single batch
  while (std::getline(std::cin, line)) {
    lineno++;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      if (records) {
        all.push_back(parse_record(json::parse(line), "record"));
      } else {
        append_batch(*w, parse_batch(line), do_dedup);
      }
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::InvalidInput) throw;
      throw Error(ErrorKind::InvalidInput, "line " + std::to_string(lineno) + ": " + e.what(), e.detail(), e.hint());
    }
  }
  if (records && !all.empty()) append_batch(*w, std::move(all), do_dedup);
  return 0;
}

Cursor parse_from(const std::string& s) {
  size_t colon = s.find(':');
  if (colon == std::string::npos) throw Error(ErrorKind::InvalidInput, "--from takes GEN:OFFSET");
  return Cursor{0, std::strtoull(s.substr(0, colon).c_str(), nullptr, 10),
                std::strtoull(s.substr(colon + 1).c_str(), nullptr, 10)};
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string cmd = argv[1], dir = argv[2];
  bool as_json = false, do_dedup = false, records = false, at_end = false;
  uint64_t segment_size = 0, max_bytes = 0;
  Cursor from{};
  std::vector<std::string> rest;
  for (int i = 3; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--json") {
      as_json = true;
    } else if (a == "--dedup") {
      do_dedup = true;
    } else if (a == "--at-end") {
      at_end = true;
    } else if (a == "--records") {
      records = true;
    } else if (a == "--segment-size" && i + 1 < argc) {
      segment_size = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--max-bytes" && i + 1 < argc) {
      max_bytes = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--from" && i + 1 < argc) {
      from = parse_from(argv[++i]);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "bitdex-wal: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    } else {
      rest.push_back(a);
    }
  }
  if (cmd != "append" && cmd != "register" && !fileio::exists(dir))
    throw Error(ErrorKind::InvalidInput, "no such directory: " + dir);
  if (cmd == "dump") return cmd_dump(dir, from);
  if (cmd == "verify") return cmd_verify(dir, as_json);
  if (cmd == "stats") return cmd_stats(dir, as_json);
  if (cmd == "append") return cmd_append(dir, do_dedup, records, segment_size);
  if (cmd == "consumers") {
    for (const ConsumerInfo& c : list_consumers(dir))
      std::printf("%s %s%s\n", c.name.c_str(), cursor_json(c.cursor).c_str(), c.lagging ? " lagging" : "");
    return 0;
  }
  if ((cmd == "register" || cmd == "unregister") && rest.size() == 1) {
    if (cmd == "register" && at_end) {
      // After the last complete batch: the consumer sees only what comes next.
      validate_consumer_name(rest[0]);
      WalReader rd(dir, Cursor{});
      WalBatch b;
      Cursor end{};
      while (rd.next(&b) == ReadStatus::Batch) end = b.end;
      if (end.offset == 0) end = rd.cursor();
      if (load_cursor(dir, rest[0]))
        throw Error(ErrorKind::InvalidInput, "consumer \"" + rest[0] + "\" is registered already",
                    "Unregister it first to move it.");
      register_consumer_at(dir, rest[0], end);
      std::printf("%s %s\n", rest[0].c_str(), cursor_json(end).c_str());
    } else if (cmd == "register") {
      register_consumer(dir, rest[0], Cursor{});
    } else
      unregister_consumer(dir, rest[0]);
    return 0;
  }
  if (cmd == "retain") {
    RetentionResult r = remove_consumed_segments(dir, RetentionLimits{max_bytes});
    for (uint64_t g : r.removed) std::printf("removed segment %" PRIu64 "\n", g);
    for (const std::string& n : r.now_lagging)
      std::printf("consumer %s is now lagging: rebuild it from a dump\n", n.c_str());
    return 0;
  }
  std::fputs(kUsage, stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  return tool::main_guard("bitdex-wal", [&] { return run(argc, argv); });
}
