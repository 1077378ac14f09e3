#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine: installs what is
# missing, builds and installs the extension, starts a private PostgreSQL
# with it preloaded, and runs what exists today:
#   1. a batch of BitDex ops as the capture triggers will emit them (made in SQL
#      from a generated Image table),
#   2. bitdex_sync.dedup() on it inside the server,
#   3. the deduplicated batch appended durably to an ops WAL (bitdex-wal append),
#   4. the WAL dumped, verified and summarised; an index consumer registered.
# The server is stopped at the end unless --keep is given.
#
#   BITDEX_DEMO_DIR   where the private cluster and WAL live (default /tmp/bitdex_demo)
#   BITDEX_DEMO_PORT  its port (default 54329)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1
demo=${BITDEX_DEMO_DIR:-/tmp/bitdex_demo}
port=${BITDEX_DEMO_PORT:-54329}
bindir=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing missing packages, building, installing the extension"
bash scripts/install-deps.sh
bindir=$(pg_config --bindir)
make -s -j"$(nproc)" all tools >/dev/null
make -s install >/dev/null

say "starting a private PostgreSQL in $demo (port $port)"
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
if [ -f "$demo/data/postmaster.pid" ]; then "${as_pg[@]}" "$bindir/pg_ctl" -D "$demo/data" stop -m fast >/dev/null || true; fi
rm -rf "$demo" && mkdir -p "$demo"
[ "$(id -u)" = 0 ] && chown postgres: "$demo"
"${as_pg[@]}" "$bindir/initdb" -D "$demo/data" -A trust -U postgres >/dev/null
cat >> "$demo/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$demo'
shared_preload_libraries = 'bitdex_sync'
wal_level = logical
output_plugin_libraries = 'bitdex_sync, test_decoding, pgoutput'
CONF
"${as_pg[@]}" "$bindir/pg_ctl" -D "$demo/data" -l "$demo/server.log" -w start >/dev/null
stop() { [ $keep = 1 ] || "${as_pg[@]}" "$bindir/pg_ctl" -D "$demo/data" stop -m fast >/dev/null; }
trap stop EXIT
psql=("${as_pg[@]}" "$bindir/psql" -h "$demo" -p "$port" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)

say "CREATE EXTENSION bitdex_sync"
"${psql[@]}" -c "CREATE EXTENSION bitdex_sync" -c "\dx bitdex_sync"

say "one batch of captured changes: 2,000 images inserted, then updated, tagged, some deleted"
"${psql[@]}" <<'SQL'
CREATE TABLE demo_batch AS
WITH ins AS (   -- INSERT: alive + sets (BitDex V2 shape)
  SELECT g AS seq, g AS id, jsonb_build_array(
           jsonb_build_object('op','alive'),
           jsonb_build_object('op','set','field','nsfwLevel','value',1),
           jsonb_build_object('op','set','field','type','value','image'),
           jsonb_build_object('op','set','field','postId','value',1 + g % 50)) AS ops
  FROM generate_series(1, 2000) g),
upd AS (        -- UPDATE nsfwLevel 1 -> 2 -> 4 on every other image
  SELECT 2000 + g * 2 + k AS seq, g AS id, jsonb_build_array(
           jsonb_build_object('op','remove','field','nsfwLevel','value', 1 << k),
           jsonb_build_object('op','set','field','nsfwLevel','value', 2 << k)) AS ops
  FROM generate_series(1, 2000, 2) g, generate_series(0, 1) k),
tag AS (        -- tag added, and on every third image removed again
  SELECT 10000 + g * 2 + k AS seq, g AS id, jsonb_build_array(
           jsonb_build_object('op', CASE k WHEN 0 THEN 'add' ELSE 'remove' END, 'field','tagIds','value', 100 + g % 7)) AS ops
  FROM generate_series(1, 2000) g, generate_series(0, 1) k WHERE k = 0 OR g % 3 = 0),
del AS (        -- DELETE of every tenth image
  SELECT 20000 + g AS seq, g AS id, '[{"op":"delete"}]'::jsonb AS ops
  FROM generate_series(10, 2000, 10) g),
post AS (       -- fan-out: Post.publishedAt changed twice for post 7 (the two merge)
  SELECT 30000 + k AS seq, 7 AS id, jsonb_build_array(jsonb_build_object('op','queryOpSet','query','postId eq 7',
           'ops', jsonb_build_array(jsonb_build_object('op','set','field','publishedAt','value', '2026-11-2' || k)))) AS ops
  FROM generate_series(1, 2) k)
SELECT jsonb_agg(jsonb_build_object('entity_id', id, 'ops', ops) ORDER BY seq) AS batch
FROM (SELECT * FROM ins UNION ALL SELECT * FROM upd UNION ALL SELECT * FROM tag
      UNION ALL SELECT * FROM del UNION ALL SELECT * FROM post) s;
SELECT jsonb_array_length(batch) AS records_captured,
       (SELECT count(*) FROM jsonb_array_elements(batch) r, jsonb_array_elements(r->'ops')) AS ops_captured
FROM demo_batch;
SQL

say "bitdex_sync.dedup() in the server (same index state, fewer ops)"
"${psql[@]}" <<'SQL'
CREATE TABLE demo_dedup AS SELECT bitdex_sync.dedup(batch) AS batch FROM demo_batch;
SELECT jsonb_array_length(batch) AS records_after_dedup,
       (SELECT count(*) FROM jsonb_array_elements(batch) r, jsonb_array_elements(r->'ops')) AS ops_after_dedup
FROM demo_dedup;
\echo 'image 2 (inserted, nsfwLevel 1, tag 102 added): one record'
SELECT r FROM demo_dedup, jsonb_array_elements(batch) r WHERE r->>'entity_id' = '2';
\echo 'image 3 (inserted, updated 1->2->4, tag 103 added then removed): the update chain folds into the insert, the tag cancels'
SELECT r FROM demo_dedup, jsonb_array_elements(batch) r WHERE r->>'entity_id' = '3';
\echo 'image 10 (inserted, updated, tagged, deleted): only the delete'
SELECT r FROM demo_dedup, jsonb_array_elements(batch) r WHERE r->>'entity_id' = '10';
SQL

say "appending the batch durably to the ops WAL in $demo/ops_wal"
"${psql[@]}" -At -c "SELECT batch FROM demo_batch" > "$demo/batch.json"
"${as_pg[@]}" build/bin/bitdex-wal append "$demo/ops_wal" --dedup < "$demo/batch.json"
"${as_pg[@]}" build/bin/bitdex-wal register "$demo/ops_wal" reference-index

say "the ops WAL: first records"
"${as_pg[@]}" build/bin/bitdex-wal dump "$demo/ops_wal" > "$demo/dump.jsonl"
head -4 "$demo/dump.jsonl"
echo "... ($(wc -l < "$demo/dump.jsonl") lines in $demo/dump.jsonl)"
say "verify"
"${as_pg[@]}" build/bin/bitdex-wal verify "$demo/ops_wal"
say "stats"
"${as_pg[@]}" build/bin/bitdex-wal stats "$demo/ops_wal"
ls -l "$demo/ops_wal"
if [ $keep = 1 ]; then
  say "server left running: psql -h $demo -p $port -U postgres; stop with: ${as_pg[*]} $bindir/pg_ctl -D $demo/data stop"
else
  say "done; server stopped (run with --keep to leave it running)"
fi
