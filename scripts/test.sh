#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds everything with warnings as errors, installs the extension,
# then runs unit/property tests, the CLI tests, a fuzz smoke, a benchmark
# smoke, pg_regress on a temporary instance and the end-to-end index test. .ci/run calls this.
#
#   FUZZ_SECONDS=N   seconds per fuzz target (default 30)
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1
jobs=$(nproc 2>/dev/null || echo 2)

step() { echo; echo "=== $* ==="; }
passed=0; failed=0; failures=()
run() {  # run NAME CMD...: one suite
  local name=$1; shift
  step "$name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

step build
make -j"$jobs" WERROR=1 all tools unit fuzz bench || { echo "build failed"; exit 1; }
make install >/dev/null || { echo "make install failed"; exit 1; }

run "wall: core is free of PostgreSQL headers" make -s check-wall
run "format: clang-format --dry-run" make -s check-format
run "unit and property tests (GoogleTest)" build/test/unit_tests
run "bitdex-wal CLI" bash scripts/cli_test.sh
fuzz_one() {
  local t=$1 corpus
  corpus=$(mktemp -d /tmp/bitdex_corpus.XXXXXX)
  [ -d "test/fuzz/corpus/$t" ] && cp "test/fuzz/corpus/$t"/* "$corpus/"
  "build/fuzz/$t" -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1 "$corpus" 2>&1 | tail -4
  local rc=${PIPESTATUS[0]}
  rm -rf "$corpus"
  return "$rc"
}
for t in build/fuzz/*; do
  run "fuzz smoke: $(basename "$t")" fuzz_one "$(basename "$t")"
done
run "benchmark smoke" build/bench/bench_core --benchmark_min_time=0.01
run "pg_regress (temporary instance)" bash scripts/pg_regress.sh
run "capture vs BitDex V2 triggers: same DML, same ops" bash test/baseline_compare.sh
run "TAP: worker lifecycle and launcher, 20 kill -9 of the worker and of the postmaster on both sinks, outbox late committer, poison, runs, disk full, 1M-row transactions, subtransactions, 2PC, spilling" bash test/tap.sh
run "metrics(): promtool check metrics, and the prometheus-postgres-exporter setup scraped" bash test/metrics_test.sh
run "end to end: random DML -> ops WAL -> index (killed mid-run) -> verify 0 differences" bash test/index_e2e.sh
run "index benchmark smoke (build + verify, 20k images)" env BENCH_IMAGES=20000 BENCH_DIR=/tmp/bitdex_index_bench_smoke \
  bash bench/index_bench.sh
run "worker benchmark smoke (drain 20k ops per sink, 5 s at 200 TPS)" env BENCH_OPS=20000 BENCH_ROUNDS=1 BENCH_TPS=200 \
  BENCH_SECONDS=5 BENCH_DIR=/tmp/bitdex_worker_bench_smoke bash bench/worker_bench.sh
run "load benchmark smoke (full load of 20k images, quiet and under writes)" env BENCH_IMAGES=20000 BENCH_ROUNDS=1 \
  BENCH_DIR=/tmp/bitdex_load_bench_smoke bash bench/load_bench.sh
run "follower benchmark smoke (remote and local follow of 20k images, 3 s at 500 TPS)" env BENCH_IMAGES=20000 \
  BENCH_ROUNDS=1 BENCH_TPS=500 BENCH_SECONDS=3 BENCH_DIR=/tmp/bitdex_follow_bench_smoke BENCH_PORT=54372 \
  bash bench/follow_bench.sh
run "capture benchmark smoke" env BENCH_IMAGES=20000 BENCH_SECONDS=2 BENCH_ROUNDS=1 BENCH_DIR=/tmp/bitdex_bench_smoke \
  bash bench/capture_bench.sh

echo
for f in "${failures[@]+"${failures[@]}"}"; do echo "FAILED: $f"; done
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
