#!/usr/bin/env bash
# Load speed (docs/load.md, docs/benchmarks.md): a full load of the
# benchmark schema of ../shared/bench (1M images, 200k posts, 3M tags by
# default) into the ops WAL, by bitdex_sync.load(), in two variants run
# side by side per round (shuffled order):
#   quiet   nothing else runs
#   writes  pgbench (workload BENCH_WRITE of ../shared/bench/pgbench, BENCH_CLIENTS
#           clients, as fast as it can: on 2 cores it takes most of the CPU)
#           writes all along; its TPS in the seconds before the load and
#           during it, from the same pgbench run (-P 1), are compared
#   paced   the same at BENCH_RATE transactions per second (pgbench -R)
# Per run: rows, seconds (registration to the last load's end), rows/s in
# all and per source, ops WAL bytes per row, and the worker's peak private
# memory (RssAnon, sampled every 0.2 s) and peak RSS (VmHWM, shared buffers
# it touched included).
#
#   BENCH_IMAGES (1000000)  BENCH_ROUNDS (2)  BENCH_CLIENTS (2)  BENCH_WRITE (a)
#   BENCH_RATE (2000)  BENCH_VARIANTS ("quiet writes paced")  BENCH_CHUNK_ROWS (the default of bitdex_sync.load_chunk_rows)
#   BENCH_DIR (/tmp/bitdex_load_bench)  BENCH_PORT (54333)  SHARED (../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
[ -d "$shared/bench" ] || { echo "load_bench: $shared/bench not found (set SHARED)" >&2; exit 2; }
shared=$(cd "$shared" && pwd)
images=${BENCH_IMAGES:-1000000}
rounds=${BENCH_ROUNDS:-2}
clients=${BENCH_CLIENTS:-2}
write=${BENCH_WRITE:-a}
rate=${BENCH_RATE:-2000}
variants=${BENCH_VARIANTS:-quiet writes paced}
dir=${BENCH_DIR:-/tmp/bitdex_load_bench}
port=${BENCH_PORT:-54333}
rm -rf "$dir" && mkdir -p "$dir"
cp -r "$shared/bench" "$dir/bench"
# The pgbench scripts pick ids in 1..1000000 (the default size): keep them on rows that exist.
sed -i "s/random(1, 1000000)/random(1, $images)/" "$dir/bench/pgbench/"*.sql
. scripts/lib/private_pg.sh
extra=()
[ -n "${BENCH_CHUNK_ROWS:-}" ] && extra+=("bitdex_sync.load_chunk_rows = $BENCH_CHUNK_ROWS")
private_pg_start "$dir" "$port" "synchronous_commit = off" "shared_buffers = 1GB" "max_wal_size = 8GB" \
  "checkpoint_timeout = 30min" "autovacuum = off" "${extra[@]+"${extra[@]}"}"
trap private_pg_stop EXIT
psql=("${PSQL[@]}")
posts=$((images / 5)); [ $posts -lt 1 ] && posts=1
echo "loading schema: $images images, $posts posts, 3 tags per image"
"${psql[@]}" -v images="$images" -v posts="$posts" -v tags_per_image=3 -f "$dir/bench/schema.sql" >/dev/null
private_pg_create_extension
# Capture on (pgbench's changes are captured while the load runs); the
# loads apply_config would register are left to each run's load().
echo "SELECT count(*) FROM bitdex_sync.apply_config(:'cfg', load => false)" |
  "${psql[@]}" -v cfg="$(cat "$dir/bench/config.yaml")" >/dev/null
"${psql[@]}" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null

sql() { "${psql[@]}" -Atc "$1"; }
wal_bytes() { sql "SELECT wal_bytes_written FROM bitdex_sync.status() WHERE source = 'slot'"; }

# One full load: registers it, samples the worker's memory until every load
# has ended; prints "rows seconds wal_bytes peak_anon_kb hwm_kb per-source".
run_load() {
  local worker before first last anon=0 a
  worker=$(private_pg_worker_pid)
  before=$(wal_bytes)
  first=$(sql "SELECT max(id) FROM bitdex_sync.loads")
  first=${first:-0}
  sql "SELECT count(*) FROM bitdex_sync.load()" >/dev/null
  while [ "$(sql "SELECT count(*) FROM bitdex_sync.loads WHERE state IN ('pending', 'running')")" != 0 ]; do
    a=$(awk '/^RssAnon:/ {print $2}' "/proc/$worker/status")
    [ "$a" -gt "$anon" ] && anon=$a
    sleep 0.2
  done
  sql "SELECT bitdex_sync.wait_for_sync('600s')" >/dev/null
  local hwm
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$worker/status")
  local failed
  failed=$(sql "SELECT count(*) FROM bitdex_sync.loads WHERE id > $first AND state <> 'complete'")
  [ "$failed" = 0 ] || { echo "load_bench: a load failed" >&2; sql "SELECT * FROM bitdex_sync.loads WHERE id > $first" >&2; exit 1; }
  sql "SELECT sum(rows), extract(epoch FROM max(finished_at) - min(registered_at)),
              $(wal_bytes) - $before, $anon, $hwm,
              string_agg(format('%s:%s', source, round(rows / extract(epoch FROM finished_at - started_at))), ',' ORDER BY id)
         FROM bitdex_sync.loads WHERE id > $first" | tr '|' ' '
}

results=$dir/results.tsv
: > "$results"
k=0
for r in $(seq 1 "$rounds"); do
  k=$((k + 1))
  read -r -a order <<<"$(python3 -c "import random,sys; v=sys.argv[2:]; random.Random(int(sys.argv[1])).shuffle(v); print(' '.join(v))" "$k" $variants)"
  for v in "${order[@]}"; do
    "${psql[@]}" -c "VACUUM \"Image\", \"TagsOnImage\", \"Post\"" -c "CHECKPOINT" >/dev/null
    tps_before=- tps_during=-
    if [ "$v" != quiet ]; then
      f=$(ls "$dir/bench/pgbench/${write}_"*.sql)
      pace=()
      [ "$v" = paced ] && pace=(-R "$rate")
      "${AS_PG[@]}" "$PG_BINDIR/pgbench" -h "$dir" -p "$port" -U postgres -n -c "$clients" -j "$clients" -T 900 -P 1 \
        "${pace[@]}" -f "$f" postgres > /dev/null 2> "$dir/pgbench.log" &
      bench=$!
      sleep 12
      t_load=$(date +%s.%N)
      line=$(run_load)
      t_done=$(date +%s.%N)
      # Stop pgbench itself ($bench is runuser), with SIGTERM: a background
      # job of a script ignores SIGINT.
      pkill -TERM -P "$bench" 2>/dev/null || true
      wait "$bench" 2>/dev/null || true
      # pgbench -P 1: "progress: N.0 s, X tps, ..." from its start (12 s before the load).
      read -r tps_before tps_during <<<"$(python3 - "$dir/pgbench.log" "$t_load" "$t_done" <<'PY'
import re, sys
path, t_load, t_done = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
load_at, done_at = 12.0, 12.0 + (t_done - t_load)
before, during = [], []
for line in open(path):
    m = re.match(r'progress: ([\d.]+) s, ([\d.]+) tps', line)
    if not m: continue
    t, tps = float(m.group(1)), float(m.group(2))
    if 2 < t <= load_at: before.append(tps)
    elif load_at + 1 < t <= done_at: during.append(tps)
avg = lambda xs: f'{sum(xs)/len(xs):.0f}' if xs else '-'
print(avg(before), avg(during))
PY
)"
    else
      line=$(run_load)
    fi
    read -r rows secs bytes anon hwm per <<<"$line"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$v" "$rows" "$secs" "$bytes" "$anon" "$hwm" "$tps_before" \
      "$tps_during" "$per" | tee -a "$results"
  done
done

python3 - "$results" <<'PY'
import sys, statistics
runs = {}
for line in open(sys.argv[1]):
    r, v, rows, secs, wal, anon, hwm, tb, td, per = line.rstrip('\n').split('\t')
    runs.setdefault(v, []).append((int(rows), float(secs), int(wal), int(anon), int(hwm), tb, td, per))
print()
print('| variant | rows | seconds | rows/s | per source (rows/s) | WAL bytes/row | worker RssAnon peak | VmHWM | writer TPS before → during |')
print('|---|---|---|---|---|---|---|---|---|')
for v, rs in runs.items():
    secs = statistics.median(x[1] for x in rs)
    rows = rs[0][0]
    rate = statistics.median(x[0] / x[1] for x in rs)
    per = rs[len(rs) // 2][7]
    tps = ', '.join(f'{x[5]} → {x[6]}' for x in rs) if rs[0][5] != '-' else '—'
    print(f'| {v} | {rows} | {secs:.2f} | {rate/1000:.0f} k | {per} | {statistics.median(x[2]/x[0] for x in rs):.1f} | '
          f'{max(x[3] for x in rs)/1024:.0f} MB | {max(x[4] for x in rs)/1024:.0f} MB | {tps} |')
PY
