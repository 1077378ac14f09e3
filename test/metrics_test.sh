#!/usr/bin/env bash
# metrics() through Prometheus' own parser, and the exporter setup of
# docs/operations.md scraped for real:
#  1. a private server with a config, captured rows, a finished load, a
#     consumer that follows and one made lagging by wal_max_size: every
#     metric family of metrics() has series;
#  2. `promtool check metrics` accepts metrics() (format and lint);
#  3. prometheus-postgres-exporter with contrib/postgres_exporter/queries.yaml,
#     scraped over HTTP: the bitdex_sync series are there, with the values
#     status() gives, and promtool accepts those series too.
#   METRICS_DIR (/tmp/bitdex_metrics_test)  METRICS_PORT (54381)  EXPORTER_PORT (59187)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${METRICS_DIR:-/tmp/bitdex_metrics_test}
port=${METRICS_PORT:-54381}
eport=${EXPORTER_PORT:-59187}
for tool in promtool prometheus-postgres-exporter curl; do
  command -v "$tool" >/dev/null || { echo "metrics_test: $tool is missing (scripts/install-deps.sh)" >&2; exit 2; }
done
rm -rf "$dir"
. scripts/lib/private_pg.sh
private_pg_start "$dir" "$port" "bitdex_sync.wal_segment_size = 64kB" "bitdex_sync.naptime = 100ms"
exporter=
cleanup() { [ -n "$exporter" ] && kill "$exporter" 2>/dev/null; private_pg_stop; }
trap cleanup EXIT
private_pg_create_extension
psql=("${PSQL[@]}")
fail() { echo "metrics_test: $*" >&2; exit 1; }

"${psql[@]}" >/dev/null <<'SQL'
CREATE TABLE img (id serial PRIMARY KEY, nsfw int NOT NULL, kind text NOT NULL);
CREATE TABLE tag (img int NOT NULL, tag int NOT NULL, PRIMARY KEY (img, tag));
INSERT INTO img (nsfw, kind) SELECT g % 5, 'image' FROM generate_series(1, 3000) g;
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    on_delete: true
    track_fields: [nsfw, kind]
  - table: tag
    slot_field: img
    field: tags
    value_field: tag
$$);
SELECT bitdex_sync.wait_for_loads('2 minutes');
SELECT bitdex_sync.register_consumer('kept'), bitdex_sync.register_consumer('stuck');
SQL
# A consumer that keeps up, one left behind by the size bound.
"${psql[@]}" -c "ALTER SYSTEM SET bitdex_sync.wal_max_size = '1MB'" -c "SELECT pg_reload_conf()" >/dev/null
for i in $(seq 1 8); do
  "${psql[@]}" -c "INSERT INTO img (nsfw, kind) SELECT g % 5, 'video' FROM generate_series(1, 2000) g" \
    -c "INSERT INTO tag SELECT id, 7 FROM img WHERE id % 50 = $i ON CONFLICT DO NOTHING" \
    -c "SELECT bitdex_sync.wait_for_sync('60s')" >/dev/null
  cursor=$("${psql[@]}" -At -c "SELECT next FROM bitdex_sync.read_wal('kept', (SELECT lpad(to_hex(wal_id), 16, '0') || '/' || segment || '/' || segment_offset FROM bitdex_sync.consumers WHERE name = 'kept' AND segment > 0), 100000000) ORDER BY batch_seq DESC LIMIT 1")
  [ -n "$cursor" ] && "${psql[@]}" -c "SELECT bitdex_sync.ack_consumer('kept', '$cursor')" >/dev/null
  sleep 0.3
done

"${psql[@]}" -At -c "SELECT bitdex_sync.metrics()" > "$dir/metrics.txt"
for family in bitdex_sync_cursor_position bitdex_sync_lag_rows bitdex_sync_ops_total bitdex_sync_wal_written_bytes_total \
  bitdex_sync_errors_total bitdex_sync_commit_to_durable_seconds_bucket bitdex_sync_commit_to_durable_seconds_count \
  bitdex_sync_loads bitdex_sync_capture_gaps bitdex_sync_consumer_lagging bitdex_sync_consumer_acked_seconds \
  bitdex_sync_wal_directory_bytes bitdex_sync_wal_segments bitdex_sync_load_rows_total; do
  grep -q "^$family[{ ]" "$dir/metrics.txt" || fail "metrics() has no series of $family"
done
grep -q '^bitdex_sync_consumer_lagging{database="postgres",consumer="stuck"} 1$' "$dir/metrics.txt" ||
  fail "the stuck consumer is not lagging in metrics()"
echo "metrics(): $(grep -vc '^#' "$dir/metrics.txt") series; promtool check metrics:"
promtool check metrics < "$dir/metrics.txt" || fail "promtool rejects metrics()"
echo "  accepted"

# The exporter, as docs/operations.md sets it up.
DATA_SOURCE_NAME="host=$dir port=$port user=postgres dbname=postgres sslmode=disable" \
  prometheus-postgres-exporter --extend.query-path=contrib/postgres_exporter/queries.yaml \
  --web.listen-address="127.0.0.1:$eport" > "$dir/exporter.log" 2>&1 &
exporter=$!
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$eport/metrics" > "$dir/exporter.txt" && grep -q '^bitdex_sync_' "$dir/exporter.txt" && break
  sleep 0.2
done
grep -q '^bitdex_sync_lag_bytes{database="postgres",.*source="slot"}' "$dir/exporter.txt" ||
  { cat "$dir/exporter.log" >&2; fail "the exporter shows no bitdex_sync_lag_bytes for the slot"; }
grep -q '^bitdex_sync_lagging{database="postgres",.*source="consumer stuck"} 1$' "$dir/exporter.txt" ||
  fail "the exporter does not show the stuck consumer lagging"
grep -q '^bitdex_sync_loads_in_state{.*state="complete"} [1-9]' "$dir/exporter.txt" || fail "the exporter shows no loads"
grep -q '^bitdex_sync_wal_directory_bytes\({[^}]*}\)\? [1-9]' "$dir/exporter.txt" || fail "the exporter shows no WAL size"
echo "exporter: $(grep -c '^bitdex_sync' "$dir/exporter.txt") bitdex_sync series; promtool check metrics:"
# Ours only: the exporter's built-in pg_* series have lint findings of their own.
grep -E '^(# (HELP|TYPE) )?bitdex_sync_' "$dir/exporter.txt" > "$dir/exporter_ours.txt"
promtool check metrics < "$dir/exporter_ours.txt" || fail "promtool rejects the exporter's bitdex_sync series"
echo "  accepted"
echo "metrics_test: ok"
