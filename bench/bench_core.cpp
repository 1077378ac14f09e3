// Core benchmarks (single thread): dedup, ops WAL append (one fdatasync per
// batch), ops WAL read, op JSON parse, index apply from the WAL and index
// memory. The op mix follows
// ../shared/bench/workload.sql on the Civitai-like schema: per 4 row changes
// 2 UPDATEs of Image.nsfwLevel, 1 INSERT of an Image (alive + 10 sets), 1
// INSERT into TagsOnImage; plus 1% Post updates (queryOpSet). Updates hit a
// hot set so about 10% of a batch's entities repeat.
//
//   build/bench/bench_core [--benchmark_filter=...]
//   BITDEX_BENCH_DIR=/path  where the WAL benchmarks write (default build/bench_wal;
//                           use a real disk, not tmpfs, for honest fdatasync figures)
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/dedup.hpp"
#include "bitdex_sync/core/file_io.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/core/wal_writer.hpp"
#include "bitdex_sync/index/index.hpp"

using namespace bitdex;

namespace {

std::string bench_dir(const char* name) {
  const char* base = std::getenv("BITDEX_BENCH_DIR");
  std::string dir = std::string(base ? base : "build/bench_wal") + "/" + name;
  std::system(("rm -rf '" + dir + "'").c_str());
  return dir;
}

EntityRecord update_nsfw(int64_t id, int64_t from) {
  EntityRecord r;
  r.entity_id = id;
  int64_t to = from >= 16 ? 1 : from * 2;
  r.ops = {Op::remove("nsfwLevel", OpValue::int64(from)), Op::set("nsfwLevel", OpValue::int64(to))};
  return r;
}

EntityRecord insert_image(int64_t id, std::mt19937_64& rng) {
  EntityRecord r;
  r.entity_id = id;
  r.ops = {Op::alive(),
           Op::set("nsfwLevel", OpValue::int64(1 << (rng() % 5))),
           Op::set("type", OpValue::string("image")),
           Op::set("userId", OpValue::int64(1 + rng() % 100000)),
           Op::set("postId", OpValue::int64(1 + rng() % 200000)),
           Op::set("minor", OpValue::boolean(false)),
           Op::set("poi", OpValue::boolean(false)),
           Op::set("blockedFor", OpValue::null()),
           Op::set("existedAt", OpValue::string("2026-11-22T03:00:0" + std::to_string(rng() % 10) + ".123")),
           Op::set("hasMeta", OpValue::boolean(rng() % 2)),
           Op::set("onSite", OpValue::boolean(rng() % 2))};
  return r;
}

// A batch of about `target_ops` ops in the mix described at the top; tag
// ids come from `tags` distinct values.
Batch make_batch(size_t target_ops, uint64_t seed, uint64_t tags = 900000000) {
  std::mt19937_64 rng(seed);
  Batch b;
  size_t ops = 0;
  int64_t next_image = 2000000 + static_cast<int64_t>(seed % 1000) * 100000;
  for (size_t i = 0; ops < target_ops; i++) {
    EntityRecord r;
    switch (i % 4) {
      case 0:
      case 1: {
        int64_t id = rng() % 10 == 0 ? 1 + static_cast<int64_t>(rng() % 50) : 1 + static_cast<int64_t>(rng() % 1000000);
        r = update_nsfw(id, 1 << (rng() % 5));
        break;
      }
      case 2: r = insert_image(next_image++, rng); break;
      default:
        r.entity_id = 1 + static_cast<int64_t>(rng() % 1000000);
        r.ops = {Op::add("tagIds", OpValue::int64(100000 + static_cast<int64_t>(rng() % tags)))};
    }
    if (rng() % 100 == 0) {
      int64_t post = 1 + static_cast<int64_t>(rng() % 200000);
      r.entity_id = post;
      r.ops = {Op::query_op_set("postId eq " + std::to_string(post),
                                {Op::remove("publishedAt", OpValue::string("2024-01-01T00:00:00")),
                                 Op::set("publishedAt", OpValue::string("2026-11-22T03:00:00"))})};
    }
    ops += r.ops.size();
    b.push_back(std::move(r));
  }
  return b;
}

void number(Batch& b, uint64_t& next_pos) {
  for (EntityRecord& r : b) r.pos = SourcePos{Stream::Slot, next_pos++, 0};
}

void BM_Dedup(benchmark::State& state) {
  const Batch src = make_batch(static_cast<size_t>(state.range(0)), 1);
  const size_t ops = count_ops(src);
  size_t out_ops = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Batch copy = src;
    state.ResumeTiming();
    Batch out = dedup(std::move(copy));
    out_ops = count_ops(out);
    benchmark::DoNotOptimize(out);
  }
  state.counters["ops/s"] =
      benchmark::Counter(static_cast<double>(ops * state.iterations()), benchmark::Counter::kIsRate);
  state.counters["records/s"] =
      benchmark::Counter(static_cast<double>(src.size() * state.iterations()), benchmark::Counter::kIsRate);
  state.counters["ops_kept"] = static_cast<double>(out_ops) / static_cast<double>(ops);
}
BENCHMARK(BM_Dedup)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);

// Appends deduplicated 10,000-op batches, one fdatasync each.
void BM_WalAppend(benchmark::State& state) {
  const size_t target = static_cast<size_t>(state.range(0));
  std::vector<Batch> batches;
  for (uint64_t s = 0; s < 16; s++) batches.push_back(dedup(make_batch(target, s + 10)));
  auto w = wal::WalWriter::open({bench_dir("append")});
  uint64_t pos = 1, ops = 0, records = 0, bytes = 0;
  size_t i = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Batch b = batches[i++ % batches.size()];
    number(b, pos);
    state.ResumeTiming();
    wal::AppendResult res = w->append(b, {SourcePos{Stream::Slot, pos - 1, 0}});
    ops += count_ops(b);
    records += b.size();
    bytes += res.bytes;
  }
  state.counters["ops/s"] = benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
  state.counters["records/s"] = benchmark::Counter(static_cast<double>(records), benchmark::Counter::kIsRate);
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e6, benchmark::Counter::kIsRate);
  state.counters["bytes/op"] = static_cast<double>(bytes) / static_cast<double>(ops);
}
BENCHMARK(BM_WalAppend)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

// Reads and decodes a WAL of 200 batches of 10,000 ops (about 2M ops).
void BM_WalRead(benchmark::State& state) {
  const std::string dir = bench_dir("read");
  uint64_t pos = 1, ops_total = 0;
  {
    auto w = wal::WalWriter::open({dir});
    for (uint64_t s = 0; s < 200; s++) {
      Batch b = dedup(make_batch(10000, s + 100));
      number(b, pos);
      ops_total += count_ops(b);
      w->append(b, {SourcePos{Stream::Slot, pos - 1, 0}});
    }
  }
  uint64_t ops = 0;
  for (auto _ : state) {
    wal::WalReader rd(dir, wal::Cursor{});
    wal::WalBatch b;
    while (rd.next(&b) == wal::ReadStatus::Batch) ops += count_ops(b.records);
  }
  if (ops != ops_total * state.iterations()) state.SkipWithError("reader lost ops");
  state.counters["ops/s"] = benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_WalRead)->Unit(benchmark::kMillisecond)->UseRealTime();

// Parses the JSON form of a 10,000-op batch (what bitdex_sync.dedup and the
// outbox path read).
void BM_ParseJson(benchmark::State& state) {
  const std::string text = batch_to_json(make_batch(10000, 3));
  size_t ops = 0;
  for (auto _ : state) {
    Batch b = parse_batch(text);
    ops += count_ops(b);
  }
  state.counters["ops/s"] = benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
  state.counters["MB/s"] =
      benchmark::Counter(static_cast<double>(text.size() * state.iterations()) / 1e6, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ParseJson)->Unit(benchmark::kMillisecond);

// ---- reference index ------------------------------------------------------
long rss_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * 4096;
}

// 1M alive images with the fields of insert_image and 3 tags each out of
// 50,000: the index the apply benchmark starts from.
const index::Index& base_index() {
  static const index::Index ix = [] {
    index::Index out;
    std::mt19937_64 rng(1);
    for (int64_t id = 1; id <= 1000000; id++) {
      EntityRecord r = insert_image(id, rng);
      for (int t = 0; t < 3; t++) r.ops.push_back(Op::add("tagIds", OpValue::int64(100000 + int64_t(rng() % 50000))));
      out.apply(r);
    }
    return out;
  }();
  return ix;
}

// Memory of the 1M-image index: serialized bitmap bytes and the process's
// resident growth while building it.
void BM_IndexMemoryPer1MSlots(benchmark::State& state) {
  long before = rss_bytes();
  const index::Index& ix = base_index();
  long after = rss_bytes();
  for (auto _ : state) benchmark::DoNotOptimize(ix.alive().cardinality());
  state.counters["slots"] = static_cast<double>(ix.alive().cardinality());
  state.counters["values"] = static_cast<double>(ix.value_count());
  state.counters["bitmap_MB"] = static_cast<double>(ix.bitmap_bytes()) / 1e6;
  // 0 when another benchmark built the index first.
  state.counters["rss_growth_MB"] = static_cast<double>(after - before) / 1e6;
}
BENCHMARK(BM_IndexMemoryPer1MSlots)->Iterations(1);

// Reads and applies a WAL of 200 batches of 10,000 ops (the mix at the top,
// tags from 50,000) to a copy of the 1M-image index: the follower's work.
void BM_IndexApplyFromWal(benchmark::State& state) {
  const std::string dir = bench_dir("index");
  uint64_t pos = 1, ops_total = 0;
  {
    auto w = wal::WalWriter::open({dir});
    for (uint64_t s = 0; s < 200; s++) {
      Batch b = dedup(make_batch(10000, s + 300, 50000));
      number(b, pos);
      ops_total += count_ops(b);
      w->append(b, {SourcePos{Stream::Slot, pos - 1, 0}});
    }
  }
  const index::Index& base = base_index();
  uint64_t ops = 0;
  // Copied and destroyed outside the timed region: freeing a 1M-slot index
  // is not the follower's work.
  std::unique_ptr<index::Index> held;
  for (auto _ : state) {
    state.PauseTiming();
    held.reset();
    held = std::make_unique<index::Index>(base);
    index::Index& ix = *held;
    state.ResumeTiming();
    wal::WalReader rd(dir, wal::Cursor{});
    wal::WalBatch b;
    while (rd.next(&b) == wal::ReadStatus::Batch) {
      ix.apply(b.records);
      ops += count_ops(b.records);
    }
    benchmark::DoNotOptimize(ix);
  }
  if (ops != ops_total * state.iterations()) state.SkipWithError("apply lost ops");
  state.counters["ops/s"] = benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_IndexApplyFromWal)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

// The tag of one capture record (issue 15): what the trigger adds per
// captured row change, and the worker per message. Records of 64 and 256
// bytes: an UPDATE of one field (remove + set) is ~40 bytes of ops, an
// INSERT of an Image with 10 fields ~200.
void BM_CaptureSeal(benchmark::State& state) {
  const uint8_t raw[bitdex::kSipKeySize] = {0x5a};
  const bitdex::SipHash128 key(raw);
  std::string record(static_cast<size_t>(state.range(0)), 'x');
  record[0] = static_cast<char>(bitdex::capture::kFormat);
  auto* p = reinterpret_cast<uint8_t*>(record.data());
  uint32_t xid = 1000;
  for (auto _ : state) {
    bitdex::capture::seal(p, record.size(), key, 16384, ++xid);
    benchmark::DoNotOptimize(record);
  }
  state.counters["records/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CaptureSeal)->Arg(64)->Arg(256);

BENCHMARK_MAIN();
