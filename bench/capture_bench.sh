#!/usr/bin/env bash
# Capture cost, side by side in one run: pgbench TPS of the single-row
# workloads of ../shared/bench/pgbench under these variants, interleaved so
# machine noise hits them alike (per round and workload, every variant runs
# back to back, in a shuffled order):
#   none      no capture triggers
#   noop      the BitDex triggers with an empty PL/pgSQL body (baseline_noop.sql)
#   v2        BitDex Sync V2 PL/pgSQL triggers into "BitdexOps" (baseline_bitdex_v2.sql)
#   bitdex    bitdex_sync.apply_config(../shared/bench/config.yaml) (C trigger,
#             message sink), the database's worker writing the ops WAL
#   paused    as bitdex, but the worker is paused (SIGSTOP) while pgbench
#             runs: the capture triggers' cost alone (not in the default set)
#   bare      as none, with the worker paused: not even decoding (in none the
#             worker decodes every transaction and finds nothing to capture;
#             not in the default set)
# Starts its own PostgreSQL (synchronous_commit = off, as the baseline), with
# autovacuum off: every variant starts from freshly vacuumed tables instead
# of meeting an autovacuum of the 1M-row table at a random moment (each run
# updates a quarter of it, over autovacuum's threshold).
#
#   BENCH_IMAGES (1000000)  BENCH_SECONDS (30)  BENCH_ROUNDS (3)  BENCH_CLIENTS (2)
#   BENCH_WORKLOADS ("a b c")  BENCH_VARIANTS ("none noop v2 bitdex")
#   BENCH_DIR (/tmp/bitdex_capture_bench)  BENCH_PORT (54331)  SHARED (../shared)
# Prints one line per run and a summary table: median TPS, and the median
# over rounds of each run's change against the none run next to it. Each run
# line also has the CPU the server used per transaction (µs: all its
# processes, and the worker alone): steadier than TPS on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
[ -d "$shared/bench" ] || { echo "capture_bench: $shared/bench not found (set SHARED)" >&2; exit 2; }
shared=$(cd "$shared" && pwd)
images=${BENCH_IMAGES:-1000000}
seconds=${BENCH_SECONDS:-30}
rounds=${BENCH_ROUNDS:-3}
clients=${BENCH_CLIENTS:-2}
workloads=${BENCH_WORKLOADS:-a b c}
variants=${BENCH_VARIANTS:-none noop v2 bitdex}
dir=${BENCH_DIR:-/tmp/bitdex_capture_bench}
port=${BENCH_PORT:-54331}
rm -rf "$dir" && mkdir -p "$dir"
cp -r "$shared/bench" "$dir/bench"
. scripts/lib/private_pg.sh
private_pg_start "$dir" "$port" "synchronous_commit = off" "shared_buffers = 1GB" "max_wal_size = 8GB" \
  "checkpoint_timeout = 30min" "autovacuum = off"
trap private_pg_stop EXIT
psql=("${PSQL[@]}")
posts=$((images / 5)); [ $posts -lt 1 ] && posts=1
echo "loading schema: $images images, $posts posts, 3 tags per image"
"${psql[@]}" -v images="$images" -v posts="$posts" -v tags_per_image=3 -f "$dir/bench/schema.sql" >/dev/null
private_pg_create_extension

use_variant() {
  "${psql[@]}" -f "$dir/bench/baseline_drop.sql" >/dev/null
  "${psql[@]}" -c "SELECT count(*) FROM bitdex_sync.apply_config('{\"sources\":[]}')" >/dev/null
  case $1 in
    none | bare) ;;
    noop) "${psql[@]}" -f "$dir/bench/baseline_noop.sql" >/dev/null ;;
    v2) "${psql[@]}" -f "$dir/bench/baseline_bitdex_v2.sql" >/dev/null ;;
    bitdex | paused)
      # load => false: the tables' rows are not loaded into the ops WAL while
      # pgbench runs (that is the load benchmark's, bench/load_bench.sh).
      echo "SELECT count(*) FROM bitdex_sync.apply_config(:'cfg', load => false)" |
        "${psql[@]}" -v cfg="$(cat "$dir/bench/config.yaml")" >/dev/null ;;
  esac
  # Start every variant from the same state: no outbox backlog from the last
  # one, no dead rows, nothing dirty.
  "${psql[@]}" -c "TRUNCATE \"BitdexOps\", bitdex_sync.ops" -c "VACUUM \"Image\", \"TagsOnImage\", \"Post\"" \
    -c "CHECKPOINT" >/dev/null
}

# CPU seconds (utime + stime, in clock ticks) of the server so far: its live
# processes and what the postmaster has reaped (backends that exited).
server_ticks() {
  local pm=$1 t=0 p
  t=$(awk '{print $16 + $17}' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
postmaster=$(head -1 "$dir/data/postmaster.pid")

results=$dir/results.tsv
: > "$results"
k=0
for r in $(seq 1 "$rounds"); do
  for w in $workloads; do
    # A different order each time (seeded, so reruns repeat it): no variant
    # always runs after the same other one.
    k=$((k + 1))
    read -r -a order <<<"$(python3 -c "import random,sys; v=sys.argv[2:]; random.Random(int(sys.argv[1])).shuffle(v); print(' '.join(v))" "$k" $variants)"
    for v in "${order[@]}"; do
      use_variant "$v"
      f=$(ls "$dir/bench/pgbench/${w}_"*.sql)
      pid=
      if [ "$v" = paused ] || [ "$v" = bare ]; then pid=$(private_pg_worker_pid); kill -STOP "$pid"; fi
      worker=$(private_pg_worker_pid)
      t0=$(server_ticks "$postmaster"); w0=$(proc_ticks "$worker")
      tps=$("${AS_PG[@]}" "$PG_BINDIR/pgbench" -h "$dir" -p "$port" -U postgres -n -c "$clients" -j "$clients" -T "$seconds" \
              -f "$f" postgres 2>/dev/null | awk '/^tps = / {print $3; exit}')
      if [ -n "$pid" ]; then kill -CONT "$pid"; fi
      # Every variant starts with the worker caught up (what it does to
      # catch up counts in its CPU).
      "${psql[@]}" -c "SELECT bitdex_sync.wait_for_sync('600s')" >/dev/null
      t1=$(server_ticks "$postmaster"); w1=$(proc_ticks "$worker")
      cpu=$(python3 -c "import sys; t,s,h,a,b,c,d=map(float,sys.argv[1:]); n=t*s; print(f'{(b-a)/h*1e6/n:.1f}\t{(d-c)/h*1e6/n:.2f}')" \
              "$tps" "$seconds" "$hz" "$t0" "$t1" "$w0" "$w1")
      printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$v" "$w" "$tps" "$cpu" | tee -a "$results"
    done
  done
done

python3 - "$results" "$variants" "$workloads" <<'PY'
import sys, statistics
path, variants, workloads = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
runs, by_round = {}, {}
for line in open(path):
    r, v, w, tps = line.split('\t')[:4]
    runs.setdefault((v, w), []).append(float(tps))
    by_round[(r, v, w)] = float(tps)
print()
print('| workload | ' + ' | '.join(variants) + ' |')
print('|---' * (len(variants) + 1) + '|')
def change(v, w, against):
    base = statistics.median(runs[(against, w)])
    m = statistics.median(runs[(v, w)])
    paired = [t / by_round[(r, against, w2)] - 1 for (r, v2, w2), t in by_round.items()
              if v2 == v and w2 == w and (r, against, w2) in by_round]
    return f'{(m/base - 1)*100:+.1f}%; paired {statistics.median(paired)*100:+.1f}%'
for w in workloads:
    cells = []
    for v in variants:
        cell = f'{statistics.median(runs[(v, w)])/1000:.1f} k'
        if v != 'none' and ('none', w) in runs:
            cell += f' ({change(v, w, "none")})'
        cells.append(cell)
    print(f'| ({w}) | ' + ' | '.join(cells) + ' |')
if 'bare' in variants:
    print()
    print('Against bare (no triggers, worker paused):')
    for w in workloads:
        print(f'  ({w}) ' + ', '.join(f'{v} {change(v, w, "bare")}' for v in variants if v != 'bare'))
PY
