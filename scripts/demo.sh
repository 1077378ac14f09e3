#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine: installs what is
# missing, builds and installs the extension, starts a private PostgreSQL
# with it preloaded, and then, as a user's database would be:
#   1. tables already full (200,000 images, 600,000 tags, 20,000 posts),
#   2. CREATE EXTENSION: at its commit the launcher starts the database's
#      background worker, which creates its logical slot and opens its ops
#      WAL (data/bitdex_sync/<database OID>),
#   3. a capture config applied with bitdex_sync.apply_config (C triggers;
#      a load registered for each source),
#   4. the loads run in the worker while changes are committed and status()
#      is watched: rows loaded in chunks, changes decoded in-process, both
#      deduplicated and appended durably to the ops WAL,
#   5. wait_for_loads(), more changes, wait_for_sync(), then status() and
#      metrics() (lag, latency histogram, loads),
#   6. the ops WAL dumped, verified and summarised,
#   7. the reference index built from the WAL, queried, and verified against
#      the tables (0 differences),
#   8. a follower as on another host: `bitdex-index follow --dsn` over TCP
#      with scram as a role granted only bitdex_sync_reader, while changes
#      go on; its index verified too.
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

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing missing packages, building, installing the extension"
bash scripts/install-deps.sh
make -s -j"$(nproc)" all tools >/dev/null
make -s install >/dev/null

say "starting a private PostgreSQL in $demo (port $port)"
rm -rf "$demo"
. scripts/lib/private_pg.sh
private_pg_start "$demo" "$port" "listen_addresses = '127.0.0.1'" "password_encryption = 'scram-sha-256'"
# Followers on other hosts connect over TCP with a password (scram); add
# hostssl and certificates for TLS (docs/operations.md, *Followers*).
echo "host all all 127.0.0.1/32 scram-sha-256" >> "$demo/data/pg_hba.conf"
"${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$demo/data" reload >/dev/null
stop() { [ $keep = 1 ] || private_pg_stop; }
trap stop EXIT
as_pg=("${AS_PG[@]}")
psql=("${PSQL[@]}")
bindir=$PG_BINDIR

say "a populated database: 200,000 images, 600,000 tags, 20,000 posts (before bitdex_sync is installed)"
"${psql[@]}" <<'SQL'
CREATE TYPE "MediaType" AS ENUM ('image', 'video');
CREATE TABLE "Post" (id int PRIMARY KEY, "publishedAt" timestamp(3));
CREATE TABLE "Image" (id serial PRIMARY KEY, "nsfwLevel" int NOT NULL DEFAULT 1, type "MediaType" NOT NULL DEFAULT 'image',
                      "postId" int, flags int NOT NULL DEFAULT 0, "scannedAt" timestamp(3), "createdAt" timestamp(3) NOT NULL DEFAULT now());
CREATE TABLE "TagsOnImage" ("imageId" int NOT NULL, "tagId" int NOT NULL, PRIMARY KEY ("imageId", "tagId"));
INSERT INTO "Post" SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE timestamp '2026-01-01' + g * interval '1 hour' END
  FROM generate_series(1, 20000) g;
INSERT INTO "Image" ("nsfwLevel", type, "postId", flags, "scannedAt", "createdAt")
  SELECT 1 << (g % 5), CASE WHEN g % 20 = 0 THEN 'video'::"MediaType" ELSE 'image' END, 1 + g % 20000, (g % 4) << 13,
         timestamp '2026-01-01' + g * interval '7 second', timestamp '2026-01-01'
  FROM generate_series(1, 200000) g;
INSERT INTO "TagsOnImage" SELECT i, 1 + (i * 7 + t * 101) % 5000 FROM generate_series(1, 200000) i, generate_series(1, 3) t
  ON CONFLICT DO NOTHING;
ANALYZE;
SQL
"${psql[@]}" -c "SELECT relname AS table, n_live_tup AS rows FROM pg_stat_user_tables ORDER BY relname"

say "CREATE EXTENSION bitdex_sync: at its commit the launcher starts this database's worker; it creates its slot and opens its ops WAL"
"${psql[@]}" -c "CREATE EXTENSION bitdex_sync" -c "\dx bitdex_sync"
wal=$("${psql[@]}" -Atc "SELECT bitdex_sync.wait_for_sync('30s')" -c "SELECT bitdex_sync.wal_directory()" | tail -1)
"${psql[@]}" -c "SELECT bitdex_sync.wait_for_sync('30s') AS worker_ready" \
  -c "SELECT database, state, pid, slot_name, confirmed_lsn FROM bitdex_sync.status()" \
  -c "SELECT backend_type, datname, wait_event_type, wait_event, query FROM pg_stat_activity WHERE backend_type IN ('bitdex_sync launcher', 'bitdex_sync worker') ORDER BY backend_type"

say "the capture config: three sources (direct, join, fan-out) applied with bitdex_sync.apply_config; a load of each is registered"
"${psql[@]}" <<'SQL'
SET client_min_messages = notice;
SELECT * FROM bitdex_sync.apply_config($$
index: demo
sources:
  - table: Image
    sets_alive: true
    on_delete: true
    track_fields:
      - nsfwLevel
      - type
      - postId
      - "GREATEST({scannedAt}, {createdAt}) as existedAt"
      - "({flags} & (1 << 14)) != 0 as onSite"
  - table: TagsOnImage
    slot_field: imageId
    field: tagIds
    value_field: tagId
  - table: Post
    query: "postId eq {id}"
    track_fields: [publishedAt]
$$);
SELECT id, source, reason, state FROM bitdex_sync.loads ORDER BY id;
SQL

say "loads and live changes at once: a writer commits 40 small transactions over ~4 s; status() every half second"
# New images belong to new posts (a query fan-out sets a post's fields on
# the images matching it when the post changes: see docs/config.md).
"${psql[@]}" -c "INSERT INTO \"Post\" SELECT 900000 + g, NULL FROM generate_series(1, 50) g"
(
  for i in $(seq 1 40); do
    echo "INSERT INTO \"Image\" (\"nsfwLevel\", \"postId\", \"scannedAt\", \"createdAt\")
            SELECT 1, 900001 + g % 50, timestamp '2026-11-01' + g * interval '1 minute', timestamp '2026-11-01'
            FROM generate_series(1, 50) g;
          UPDATE \"Image\" SET \"nsfwLevel\" = 16 WHERE id = $((i * 4099));
          INSERT INTO \"TagsOnImage\" VALUES ($((i * 4099)), 9999) ON CONFLICT DO NOTHING;
          SELECT pg_sleep(0.1);"
  done | "${psql[@]}" >/dev/null
) &
writer=$!
printf '%-8s %-28s %-14s %10s %10s %12s %12s\n' time source state rows rows/s ops_written lag_bytes
while kill -0 "$writer" 2>/dev/null || [ "$("${psql[@]}" -Atc "SELECT count(*) FROM bitdex_sync.loads WHERE state IN ('pending', 'running')")" != 0 ]; do
  "${psql[@]}" -At -F '|' -c "SELECT to_char(clock_timestamp(), 'HH24:MI:SS'), source, state, coalesce(load_rows::text, ''),
                                     coalesce(round(load_rows_per_second)::text, ''), ops_written, lag_bytes
                                FROM bitdex_sync.status() WHERE source <> 'outbox' ORDER BY source = 'slot' DESC, source" |
    while IFS='|' read -r t src st rows rate w lb; do
      printf '%-8s %-28s %-14s %10s %10s %12s %12s\n' "$t" "$src" "$st" "$rows" "$rate" "$w" "$lb"
    done
  sleep 0.5
done
wait "$writer"
"${psql[@]}" -c "SELECT bitdex_sync.wait_for_loads() AS loads_done" \
  -c "SELECT id, source, state, rows, chunks, finished_at - started_at AS took,
             round(rows / extract(epoch FROM finished_at - started_at)) AS rows_per_second FROM bitdex_sync.loads ORDER BY id"

say "more changes: updates, tags added and removed, deletes, a post published twice"
"${psql[@]}" <<'SQL'
UPDATE "Image" SET "nsfwLevel" = 2 WHERE id % 2 = 1 AND id > 200000;
-- One transaction changing a row twice: the worker's dedup keeps the last value.
BEGIN;
UPDATE "Image" SET "nsfwLevel" = 3 WHERE id % 2 = 1 AND id > 200000;
UPDATE "Image" SET "nsfwLevel" = 4, flags = 1 << 14 WHERE id % 2 = 1 AND id > 200000;
COMMIT;
INSERT INTO "TagsOnImage" SELECT id, 100 + id % 7 FROM "Image" WHERE id > 200000;
DELETE FROM "TagsOnImage" WHERE "imageId" % 3 = 0 AND "imageId" > 200000;
DELETE FROM "Image" WHERE id % 10 = 0;
UPDATE "Post" SET "publishedAt" = '2026-11-21 12:00' WHERE id = 900007;
UPDATE "Post" SET "publishedAt" = '2026-11-22 09:00' WHERE id = 900007;
SQL

say "wait_for_sync(): returns once everything committed before it is durable in the ops WAL"
"${psql[@]}" -c "SELECT bitdex_sync.wait_for_sync('30s') AS synced"
"${psql[@]}" -c '\x on' -c "SELECT * FROM bitdex_sync.status()"
echo "metrics() (Prometheus text), commit-to-durable latency histogram included:"
"${psql[@]}" -At -c "SELECT bitdex_sync.metrics()" | grep -v '^#' | head -20

say "the ops WAL in $wal: first records"
"${as_pg[@]}" build/bin/bitdex-wal dump "$wal" > "$demo/dump.jsonl"
head -4 "$demo/dump.jsonl"
echo "... ($(wc -l < "$demo/dump.jsonl") lines in $demo/dump.jsonl)"
say "verify"
"${as_pg[@]}" build/bin/bitdex-wal verify "$wal"
say "stats"
"${as_pg[@]}" build/bin/bitdex-wal stats "$wal"
ls -l "$wal"

say "image 200003: inserted, nsfwLevel 1 -> 2 -> 3 -> 4 (the last two in one transaction), tagged: its records"
grep '"entity_id":200003,' "$demo/dump.jsonl" | head -5
say "image 3: loaded (stream \"load\"), a record per source"
grep '"entity_id":3,' "$demo/dump.jsonl" | head -3
"${as_pg[@]}" build/bin/bitdex-wal register "$wal" reference-index

say "the reference index: built from the ops WAL as consumer reference-index (roaring bitmaps, snapshot + cursor)"
"${as_pg[@]}" build/bin/bitdex-index apply --wal "$wal" --index "$demo/index.bdx" --consumer reference-index
"${as_pg[@]}" build/bin/bitdex-index stats --index "$demo/index.bdx"
echo "query 'nsfwLevel eq 4 AND tagIds in [101, 102]':"
"${as_pg[@]}" build/bin/bitdex-index query --index "$demo/index.bdx" 'nsfwLevel eq 4 AND tagIds in [101, 102]'
echo "the same in SQL:"
"${psql[@]}" -At -c "SELECT count(*) FROM \"Image\" i WHERE \"nsfwLevel\" = 4 AND EXISTS (SELECT 1 FROM \"TagsOnImage\" t WHERE t.\"imageId\" = i.id AND t.\"tagId\" IN (101, 102))"
echo "published posts' images ('publishedAt eq \"2026-11-22T09:00:00\"', set by the Post fan-out):"
"${as_pg[@]}" build/bin/bitdex-index query --index "$demo/index.bdx" 'publishedAt eq "2026-11-22T09:00:00"'
echo "a loaded post's images ('publishedAt eq \"2026-01-01T05:00:00\"', post 5, set by the Post load):"
"${as_pg[@]}" build/bin/bitdex-index query --index "$demo/index.bdx" 'publishedAt eq "2026-01-01T05:00:00"'

say "verify: every configured field of every slot recomputed from the tables and compared with the index"
# The "postId eq {id}" fan-out fields are checked too, by joining images to
# posts (new images here go to posts that change after them).
"${as_pg[@]}" build/bin/bitdex-index verify --index "$demo/index.bdx" --dsn "host=$demo port=$port user=postgres dbname=postgres"

say "a follower on another host: bitdex-index follow --dsn, over TCP with scram, as a role that may only read the ops WAL"
"${psql[@]}" -c "CREATE ROLE index_host LOGIN PASSWORD 'demo-only' IN ROLE bitdex_sync_reader"
dsn="host=127.0.0.1 port=$port dbname=postgres user=index_host password=demo-only"
rm -f "$demo/remote.bdx"
build/bin/bitdex-index follow --dsn "$dsn" --consumer index-host-1 --index "$demo/remote.bdx" --checkpoint-seconds 1 \
  > "$demo/follower.out" 2>&1 &
follower=$!
"${psql[@]}" -c "UPDATE \"Image\" SET \"nsfwLevel\" = 8 WHERE id % 1000 = 1" \
  -c "INSERT INTO \"TagsOnImage\" SELECT id, 4242 FROM \"Image\" WHERE id % 500 = 2 ON CONFLICT DO NOTHING" \
  -c "SELECT bitdex_sync.wait_for_sync('30s') AS synced"
for _ in $(seq 1 100); do  # until the follower has acknowledged all but the idle batches since
  [ "$("${psql[@]}" -Atc "SELECT lag_bytes < 4096 FROM bitdex_sync.status() WHERE source = 'consumer index-host-1'")" = t ] && break
  sleep 0.2
done
"${psql[@]}" -c "SELECT source, state, lag_bytes, lag_seconds, last_error AS cursor FROM bitdex_sync.status() WHERE source LIKE 'consumer %'"
echo "what that role may not do:"
PGCONNECT_TIMEOUT=5 psql -X "$dsn" -c "SELECT count(*) FROM bitdex_sync.ops" 2>&1 | head -1 || true
kill -TERM "$follower"
wait "$follower" || true
cat "$demo/follower.out"
build/bin/bitdex-index verify --index "$demo/remote.bdx" --dsn "host=$demo port=$port user=postgres dbname=postgres"

if [ $keep = 1 ]; then
  say "server left running: psql -h $demo -p $port -U postgres; stop with: ${as_pg[*]} $bindir/pg_ctl -D $demo/data stop"
else
  say "done; server stopped (run with --keep to leave it running)"
fi
