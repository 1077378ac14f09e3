#!/usr/bin/env bash
# The background worker, measured in one run of a private PostgreSQL:
#   drain    a backlog of BENCH_OPS committed ops (UPDATEs of a captured
#            table in transactions of 5,000 rows, two ops per row), built
#            while the worker is stopped with SIGSTOP, then timed from
#            SIGCONT until wait_for_sync() returns (everything durable in the
#            ops WAL). Message sink and outbox sink alternate, BENCH_ROUNDS
#            rounds each; the median is reported.
#   latency  pgbench -R BENCH_TPS (2,000) for BENCH_SECONDS, one captured
#            single-row UPDATE per transaction (synchronous_commit on); the
#            worker's commit -> durable histogram (metrics()) over that window.
#
#   BENCH_OPS (1000000)  BENCH_ROUNDS (3)  BENCH_TPS (2000)  BENCH_SECONDS (30)
#   BENCH_DIR (/tmp/bitdex_worker_bench)  BENCH_PORT (54333)
set -euo pipefail
cd "$(dirname "$0")/.."
ops=${BENCH_OPS:-1000000}
rounds=${BENCH_ROUNDS:-3}
tps=${BENCH_TPS:-2000}
seconds=${BENCH_SECONDS:-30}
dir=${BENCH_DIR:-/tmp/bitdex_worker_bench}
port=${BENCH_PORT:-54333}
rows=$((ops / 2))
rm -rf "$dir"
. scripts/lib/private_pg.sh
private_pg_start "$dir" "$port" "shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min"
trap private_pg_stop EXIT
psql=("${PSQL[@]}")
now() { echo "$EPOCHREALTIME"; }

private_pg_create_extension
"${psql[@]}" >/dev/null <<SQL
CREATE TABLE by_message (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE by_outbox (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO by_message SELECT g, 0 FROM generate_series(1, $rows) g;
INSERT INTO by_outbox SELECT g, 0 FROM generate_series(1, $rows) g;
VACUUM ANALYZE by_message, by_outbox;
SELECT count(*) FROM bitdex_sync.apply_config(\$\$
sources:
  - table: by_message
    track_fields: [v]
  - table: by_outbox
    capture: outbox
    track_fields: [v]
\$\$, load => false);
SQL
# No load (a drain measures captured changes; a load running when the worker
# is stopped below could hold PostgreSQL's WAL write lock and stall the
# backlog's writers). The rows' INSERTs are in the server WAL too: decode
# past them before timing.
"${psql[@]}" -c "SELECT bitdex_sync.wait_for_sync('600s')" >/dev/null
captured() { "${psql[@]}" -At -c "SELECT ops_captured FROM bitdex_sync.status() WHERE source = '$1'"; }

echo "drain: $ops ops per backlog ($rows rows updated in transactions of 5000)"
results=$dir/drain.tsv
: > "$results"
for r in $(seq 1 "$rounds"); do
  for sink in message outbox; do
    source=slot; [ $sink = outbox ] && source=outbox
    pid=$(private_pg_worker_pid)
    kill -STOP "$pid"
    for start in $(seq 1 5000 "$rows"); do
      echo "UPDATE by_$sink SET v = v + 1 WHERE id BETWEEN $start AND $((start + 4999));"
    done | "${psql[@]}" >/dev/null
    before=$(captured $source)
    t0=$(now)
    kill -CONT "$pid"
    "${psql[@]}" -c "SELECT bitdex_sync.wait_for_sync('600s')" >/dev/null
    t1=$(now)
    n=$(( $(captured $source) - before ))
    python3 -c "import sys; n, a, b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'{sys.argv[4]}\t{sys.argv[5]}\t{n}\t{b-a:.3f}\t{n/(b-a):.0f}')" \
      "$n" "$t0" "$t1" "$r" "$sink" | tee -a "$results"
  done
done
python3 - "$results" <<'PY'
import sys, statistics
rows = [l.split('\t') for l in open(sys.argv[1])]
for sink in ('message', 'outbox'):
    rates = [float(r[4]) for r in rows if r[1] == sink]
    print(f'drain {sink}: median {statistics.median(rates)/1000:.0f} k ops/s over {len(rates)} rounds '
          f'(min {min(rates)/1000:.0f} k, max {max(rates)/1000:.0f} k)')
PY

echo "latency: pgbench -R $tps for $seconds s, one captured UPDATE per transaction"
printf '\\set id random(1, %d)\nUPDATE by_message SET v = v + 1 WHERE id = :id;\n' "$rows" > "$dir/update.sql"
chmod 644 "$dir/update.sql"
hist() { "${psql[@]}" -At -c "SELECT array_to_string(latency_buckets, ' ') || ' ' || latency_sum_ms FROM bitdex_sync.worker_state()"; }
h0=$(hist)
"${AS_PG[@]}" "$PG_BINDIR/pgbench" -h "$dir" -p "$port" -U postgres -n -c 4 -j 2 -R "$tps" -T "$seconds" \
  -f "$dir/update.sql" postgres > "$dir/pgbench.out" 2>&1
h1=$(hist)
grep -E '^(tps|latency average|rate limit)' "$dir/pgbench.out" || true
python3 - "$h0" "$h1" <<'PY'
import sys
bounds = ['1', '2', '5', '10', '20', '50', '100', '250', '1000', '5000', '30000', '+Inf']
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
d = [y - x for x, y in zip(a, b)]
counts, total_ms = d[:12], d[12]
n = sum(counts)
def pct(p):
    c = 0
    for i, k in enumerate(counts):
        c += k
        if c >= p * n:
            return bounds[i]
print(f'commit -> durable over {n:.0f} transactions: mean {total_ms / n:.2f} ms, '
      f'p50 <= {pct(0.5)} ms, p99 <= {pct(0.99)} ms, p99.9 <= {pct(0.999)} ms')
print('histogram (ms: count): ' + ', '.join(f'{bounds[i]}: {counts[i]:.0f}' for i in range(12) if counts[i]))
PY
