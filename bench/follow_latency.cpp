// Commit -> applied latency of a follower, for bench/follow_bench.sh: reads
// the ops WAL (--wal DIR, or --dsn CONNINFO over libpq), applies each batch
// to an index, and for every set of field --field (the row's commit time in
// microseconds since the epoch, written by the load generator) takes now -
// that value once the batch is applied. Prints one JSON line when the
// count of such ops reaches --expect or --seconds pass.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/index/follower.hpp"
#include "bitdex_sync/index/index.hpp"

using namespace bitdex;

namespace {

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; i++)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string wal = arg(argc, argv, "--wal", ""), dsn = arg(argc, argv, "--dsn", "");
    const std::string field = arg(argc, argv, "--field", "t");
    const std::string consumer = arg(argc, argv, "--consumer", "latency");
    const uint64_t expect = std::strtoull(arg(argc, argv, "--expect", "0"), nullptr, 10);
    const double seconds = std::atof(arg(argc, argv, "--seconds", "60"));
    std::unique_ptr<index::BatchSource> src;
    if (!wal.empty()) {
      src = index::local_source(wal, consumer);
    } else {
      index::RemoteOptions o;
      o.conninfo = dsn;
      o.consumer = consumer;
      o.wait_ms = 1000;
      src = index::remote_source(o);
    }
    // From the WAL's end as it is now: only what is committed from here on.
    std::optional<wal::Cursor> at;
    if (const char* c = arg(argc, argv, "--after", nullptr)) at = wal::parse_cursor(c);
    src->start(at);
    index::Index ix;
    std::vector<int64_t> lat;
    wal::WalBatch b;
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while ((expect == 0 || lat.size() < expect) && std::chrono::steady_clock::now() < until) {
      if (!src->next(&b)) {
        if (!wal.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      ix.apply(b.records);
      const int64_t applied = now_us();
      for (const EntityRecord& r : b.records)
        for (const Op& op : r.ops)
          if (op.kind == OpKind::Set && op.field == field && op.value.kind == OpValue::Kind::Int)
            lat.push_back(applied - op.value.integer);
    }
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) {
      return lat.empty() ? 0.0 : double(lat[std::min(lat.size() - 1, size_t(p * double(lat.size())))]) / 1000.0;
    };
    std::printf("{\"source\":\"%s\",\"commits\":%zu,\"p50_ms\":%.2f,\"p90_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
                wal.empty() ? "dsn" : "wal", lat.size(), pct(0.50), pct(0.90), pct(0.99),
                lat.empty() ? 0.0 : double(lat.back()) / 1000.0);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "follow_latency: %s\n", e.what());
    return 2;
  }
}
