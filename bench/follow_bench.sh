#!/usr/bin/env bash
# Followers over libpq against the local follower, side by side in one run
# (docs/benchmarks.md, issue 18). A private server listens on 127.0.0.1 with
# scram; the remote follower logs in as a role granted bitdex_sync_reader.
#  1. throughput: BENCH_IMAGES images of the shared benchmark schema with 3
#     tags each, captured by the worker into its ops WAL (its own batches);
#     then `bitdex-index apply --wal DIR` and `apply --dsn CONNINFO`, fresh
#     index each, alternated BENCH_ROUNDS times: read + decode + apply, ops/s.
#  2. latency: pgbench at BENCH_TPS single-row commits for BENCH_SECONDS, each
#     row carrying its clock_timestamp() in microseconds; a remote and a
#     local follower (build/bench/follow_latency) both at the WAL's end take
#     applied - that time per commit: p50, p90, p99, max.
# Prints one JSON line per measurement.
#
#   BENCH_IMAGES (300000)  BENCH_ROUNDS (3)  BENCH_TPS (2000)  BENCH_SECONDS (20)
#   SHARED (../shared)  BENCH_DIR (/tmp/bitdex_follow_bench)  BENCH_PORT (54371)
set -euo pipefail
cd "$(dirname "$0")/.."
images=${BENCH_IMAGES:-300000}
posts=$(( images / 5 > 0 ? images / 5 : 1 ))
rounds=${BENCH_ROUNDS:-3}
tps=${BENCH_TPS:-2000}
seconds=${BENCH_SECONDS:-20}
shared=${SHARED:-../shared}
dir=${BENCH_DIR:-/tmp/bitdex_follow_bench}
port=${BENCH_PORT:-54371}
[ -f "$shared/bench/schema.sql" ] || { echo "follow_bench: $shared/bench/schema.sql not found (set SHARED)" >&2; exit 2; }
[ -x build/bench/follow_latency ] || { echo "follow_bench: run make bench first" >&2; exit 2; }

rm -rf "$dir"
. scripts/lib/private_pg.sh
private_pg_start "$dir" "$port" "shared_buffers = 1GB" "max_wal_size = 8GB" "listen_addresses = '127.0.0.1'" \
  "password_encryption = 'scram-sha-256'" "max_connections = 50"
trap private_pg_stop EXIT
echo "host all all 127.0.0.1/32 scram-sha-256" >> "$dir/data/pg_hba.conf"
"${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$dir/data" reload >/dev/null
psql=("${PSQL[@]}")
dsn="host=127.0.0.1 port=$port dbname=postgres user=follower password=follow-pw sslmode=disable"

sed '/^-- ---- data/,$d' "$shared/bench/schema.sql" > "$dir/tables.sql"
sed -n '/^-- ---- data/,$p' "$shared/bench/schema.sql" > "$dir/data.sql"
private_pg_create_extension
"${psql[@]}" -f "$dir/tables.sql" >/dev/null
{ cat "$shared/bench/config.yaml"; printf '  - table: lat\n    sets_alive: true\n    track_fields: [t]\n'; } > "$dir/config.yaml"
"${psql[@]}" -v cfg="$(cat "$dir/config.yaml")" >/dev/null <<'SQL'
CREATE TABLE lat (id bigserial PRIMARY KEY, t bigint NOT NULL);
CREATE ROLE follower LOGIN PASSWORD 'follow-pw' IN ROLE bitdex_sync_reader;
SELECT count(*) FROM bitdex_sync.apply_config(:'cfg', load => false);
SQL
wal_dir=$("${psql[@]}" -At -c "SELECT bitdex_sync.wal_directory()")

# ---- 1. throughput ----
"${psql[@]}" -v images="$images" -v posts="$posts" -v tags_per_image=3 -f "$dir/data.sql" >/dev/null
"${psql[@]}" -c "SELECT bitdex_sync.wait_for_sync('30 minutes')" >/dev/null
wal_bytes=$("${psql[@]}" -At -c "SELECT sum(bytes) FROM bitdex_sync.wal_segments()")
echo "{\"step\":\"ops WAL\",\"images\":$images,\"wal_bytes\":$wal_bytes}"
for round in $(seq 1 "$rounds"); do
  for src in wal dsn; do
    rm -f "$dir/$src.bdx"
    if [ "$src" = wal ]; then
      build/bin/bitdex-index apply --wal "$wal_dir" --consumer "tp_$round" --index "$dir/$src.bdx" --json > "$dir/out.json"
    else
      build/bin/bitdex-index apply --dsn "$dsn" --consumer "tp_$round" --index "$dir/$src.bdx" --json > "$dir/out.json"
    fi
    echo "{\"step\":\"apply\",\"source\":\"$src\",\"round\":$round,\"result\":$(cat "$dir/out.json")}"
  done
  "${psql[@]}" -c "SELECT bitdex_sync.unregister_consumer('tp_$round')" >/dev/null
  build/bin/bitdex-wal unregister "$wal_dir" "tp_$round" >/dev/null 2>&1 || true
done

# ---- 2. commit -> applied latency at BENCH_TPS ----
"${psql[@]}" -c "SELECT bitdex_sync.register_consumer('lat_remote', at_end => true)" >/dev/null
build/bin/bitdex-wal register "$wal_dir" lat_local --at-end >/dev/null
commits=$(( tps * seconds ))
build/bench/follow_latency --dsn "$dsn" --consumer lat_remote --expect "$commits" --seconds $(( seconds + 60 )) \
  > "$dir/lat_remote.json" &
remote=$!
build/bench/follow_latency --wal "$wal_dir" --consumer lat_local --expect "$commits" --seconds $(( seconds + 60 )) \
  > "$dir/lat_local.json" &
local_pid=$!
sleep 1
echo "INSERT INTO lat (t) VALUES ((extract(epoch FROM clock_timestamp()) * 1000000)::bigint);" > "$dir/lat.sql"
"${AS_PG[@]}" "$PG_BINDIR/pgbench" -h "$dir" -p "$port" -U postgres -n -f "$dir/lat.sql" -c 4 -j 2 -R "$tps" \
  -t $(( commits / 4 )) postgres > "$dir/pgbench.out" 2>&1
achieved=$(awk '/^tps = / { printf "%.0f", $3 }' "$dir/pgbench.out")
wait "$remote" "$local_pid"
echo "{\"step\":\"latency\",\"target_tps\":$tps,\"achieved_tps\":${achieved:-0},\"remote\":$(cat "$dir/lat_remote.json"),\"local\":$(cat "$dir/lat_local.json")}"
