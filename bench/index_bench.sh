#!/usr/bin/env bash
# Index benchmark on the shared benchmark schema (../shared/bench): the
# config applied to empty tables, then BENCH_IMAGES images with 3 tags each
# inserted and captured, the slot drained into an ops WAL (bitdex-wal append
# --records --dedup), the index built from it (bitdex-index apply: WAL read +
# apply, peak RSS), and `bitdex-index verify` over every image and tag row
# (rows/s). Prints one JSON line per step; figures go to docs/benchmarks.md.
#
#   BENCH_IMAGES (1000000)  SHARED (../shared)  BENCH_DIR (/tmp/bitdex_index_bench)  BENCH_PORT (54361)
set -euo pipefail
cd "$(dirname "$0")/.."
images=${BENCH_IMAGES:-1000000}
posts=$(( images / 5 > 0 ? images / 5 : 1 ))
shared=${SHARED:-../shared}
dir=${BENCH_DIR:-/tmp/bitdex_index_bench}
port=${BENCH_PORT:-54361}
[ -f "$shared/bench/schema.sql" ] || { echo "index_bench: $shared/bench/schema.sql not found (set SHARED)" >&2; exit 2; }

rm -rf "$dir"
. scripts/lib/private_pg.sh
private_pg_start "$dir" "$port" "shared_buffers = 1GB" "max_wal_size = 8GB" "logical_decoding_work_mem = 256MB"
trap private_pg_stop EXIT
psql=("${PSQL[@]}")
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# Tables only: the schema file's data section runs once capture is on.
sed '/^-- ---- data/,$d' "$shared/bench/schema.sql" > "$dir/tables.sql"
sed -n '/^-- ---- data/,$p' "$shared/bench/schema.sql" > "$dir/data.sql"
private_pg_create_extension
"${psql[@]}" -f "$dir/tables.sql" >/dev/null
"${psql[@]}" -v cfg="$(cat "$shared/bench/config.yaml")" >/dev/null <<'SQL'
SELECT count(*) FROM bitdex_sync.apply_config(:'cfg');
SELECT 1 FROM pg_create_logical_replication_slot('bench', 'bitdex_sync');
SQL

t0=$(now)
"${psql[@]}" -v images="$images" -v posts="$posts" -v tags_per_image=3 -f "$dir/data.sql" >/dev/null
t1=$(now)
upto=$("${psql[@]}" -At -c "SELECT pg_current_wal_lsn()")
"${psql[@]}" -At -c "SELECT data FROM pg_logical_slot_peek_changes('bench', '$upto', NULL)" > "$dir/captured.jsonl"
t2=$(now)
build/bin/bitdex-wal append "$dir/ops_wal" --records --dedup < "$dir/captured.jsonl" > "$dir/append.json"
"${psql[@]}" -c "SELECT 1 FROM pg_replication_slot_advance('bench', '$upto')" >/dev/null
t3=$(now)
records=$(wc -l < "$dir/captured.jsonl")
rm -f "$dir/captured.jsonl"
echo "{\"step\":\"load+capture\",\"images\":$images,\"records\":$records,\"load_s\":$(secs "$t0" "$t1"),\"peek_s\":$(secs "$t1" "$t2"),\"append_s\":$(secs "$t2" "$t3")}"

/usr/bin/time -f '%M' -o "$dir/apply.rss" build/bin/bitdex-index apply --wal "$dir/ops_wal" --index "$dir/index.bdx" --json > "$dir/apply.json"
echo "{\"step\":\"apply\",\"peak_rss_kb\":$(cat "$dir/apply.rss"),\"result\":$(cat "$dir/apply.json")}"
echo "{\"step\":\"stats\",\"result\":$(build/bin/bitdex-index stats --index "$dir/index.bdx" --json)}"

# The images are inserted under posts published before them: they take the
# posts' fields through the "postId eq {id}" fan-in, checked by a join.
build/bin/bitdex-index verify --index "$dir/index.bdx" --dsn "host=$dir port=$port user=postgres dbname=postgres" \
  --json > "$dir/verify.json" 2> "$dir/verify.progress" || { cat "$dir/verify.json"; exit 1; }
tail -1 "$dir/verify.progress" >&2 || true
echo "{\"step\":\"verify\",\"result\":$(cat "$dir/verify.json")}"
grep -q '"differences":0,' "$dir/verify.json"
