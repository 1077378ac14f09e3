#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine: installs what is
# missing, builds and installs the extension, starts a private PostgreSQL
# with it preloaded, and runs what exists today:
#   1. a capture config applied with bitdex_sync.apply_config (C triggers),
#   2. changes made to the tables, captured as logical decoding messages and
#      read from a slot with the bitdex_sync output plugin,
#   3. that batch deduplicated and appended durably to an ops WAL
#      (bitdex-wal append; the background worker of issue 5 will do this
#      in-process), then the slot advanced,
#   4. the WAL dumped, verified and summarised,
#   5. the reference index built from the WAL, queried, and verified against
#      the tables (0 differences).
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
private_pg_start "$demo" "$port"
stop() { [ $keep = 1 ] || private_pg_stop; }
trap stop EXIT
as_pg=("${AS_PG[@]}")
psql=("${PSQL[@]}")
bindir=$PG_BINDIR

say "CREATE EXTENSION bitdex_sync"
"${psql[@]}" -c "CREATE EXTENSION bitdex_sync" -c "\dx bitdex_sync"

say "the capture config: three sources (direct, join, fan-out) applied with bitdex_sync.apply_config"
"${psql[@]}" <<'SQL'
CREATE TYPE "MediaType" AS ENUM ('image', 'video');
CREATE TABLE "Post" (id int PRIMARY KEY, "publishedAt" timestamp(3));
CREATE TABLE "Image" (id serial PRIMARY KEY, "nsfwLevel" int NOT NULL DEFAULT 1, type "MediaType" NOT NULL DEFAULT 'image',
                      "postId" int, flags int NOT NULL DEFAULT 0, "scannedAt" timestamp(3), "createdAt" timestamp(3) NOT NULL DEFAULT now());
CREATE TABLE "TagsOnImage" ("imageId" int NOT NULL, "tagId" int NOT NULL, PRIMARY KEY ("imageId", "tagId"));
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
SELECT 'created' AS capture_slot FROM pg_create_logical_replication_slot('demo', 'bitdex_sync');
SQL

say "changes: 2,000 images inserted, then updated, tagged and untagged, some deleted, a post published twice"
"${psql[@]}" <<'SQL'
INSERT INTO "Post" SELECT 1000 + g, NULL FROM generate_series(1, 50) g;
INSERT INTO "Image" ("nsfwLevel", "postId", "scannedAt", "createdAt")
  SELECT 1, 1001 + g % 50, timestamp '2026-11-01' + g * interval '1 minute', timestamp '2026-11-01' FROM generate_series(1, 2000) g;
UPDATE "Image" SET "nsfwLevel" = 2 WHERE id % 2 = 1;
UPDATE "Image" SET "nsfwLevel" = 4, flags = 1 << 14 WHERE id % 2 = 1;
INSERT INTO "TagsOnImage" SELECT id, 100 + id % 7 FROM "Image";
DELETE FROM "TagsOnImage" WHERE "imageId" % 3 = 0;
DELETE FROM "Image" WHERE id % 10 = 0;
UPDATE "Post" SET "publishedAt" = '2026-11-21 12:00' WHERE id = 1007;
UPDATE "Post" SET "publishedAt" = '2026-11-22 09:00' WHERE id = 1007;
SQL

say "captured: the slot's messages, decoded by the bitdex_sync output plugin (first 3 of them)"
"${psql[@]}" -At -c "SELECT data FROM pg_logical_slot_peek_changes('demo', NULL, NULL)" > "$demo/captured.jsonl"
head -3 "$demo/captured.jsonl"
echo "... $(wc -l < "$demo/captured.jsonl") records, $(grep -o '"op":' "$demo/captured.jsonl" | wc -l) ops"

say "the same batch through bitdex_sync.dedup() in SQL: what dedup merged"
"${psql[@]}" <<'SQL'
CREATE TEMP TABLE captured AS SELECT jsonb_agg(data::jsonb) AS batch FROM pg_logical_slot_peek_changes('demo', NULL, NULL);
SELECT jsonb_array_length(batch) AS records_captured,
       jsonb_array_length(bitdex_sync.dedup(batch)) AS records_after_dedup,
       (SELECT count(*) FROM jsonb_array_elements(bitdex_sync.dedup(batch)) r, jsonb_array_elements(r->'ops')) AS ops_after_dedup
FROM captured;
\echo 'image 3: inserted, nsfwLevel 1 -> 2 -> 4, onSite set, tag added then removed: one record'
SELECT r FROM captured, jsonb_array_elements(bitdex_sync.dedup(batch)) r WHERE r->>'entity_id' = '3';
\echo 'image 10: inserted, tagged, deleted: only the delete'
SELECT r FROM captured, jsonb_array_elements(bitdex_sync.dedup(batch)) r WHERE r->>'entity_id' = '10';
SQL

say "deduplicated and appended durably to the ops WAL in $demo/ops_wal (peek, write, then advance the slot)"
"${as_pg[@]}" build/bin/bitdex-wal append "$demo/ops_wal" --records --dedup < "$demo/captured.jsonl"
"${psql[@]}" -At -c "SELECT count(*) || ' slot messages confirmed' FROM pg_logical_slot_get_changes('demo', NULL, NULL)"
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

say "the reference index: built from the ops WAL as consumer reference-index (roaring bitmaps, snapshot + cursor)"
"${as_pg[@]}" build/bin/bitdex-index apply --wal "$demo/ops_wal" --index "$demo/index.bdx" --consumer reference-index
"${as_pg[@]}" build/bin/bitdex-index stats --index "$demo/index.bdx"
echo "query 'nsfwLevel eq 4 AND tagIds in [101, 102]':"
"${as_pg[@]}" build/bin/bitdex-index query --index "$demo/index.bdx" 'nsfwLevel eq 4 AND tagIds in [101, 102]'
echo "the same in SQL:"
"${psql[@]}" -At -c "SELECT count(*) FROM \"Image\" i WHERE \"nsfwLevel\" = 4 AND EXISTS (SELECT 1 FROM \"TagsOnImage\" t WHERE t.\"imageId\" = i.id AND t.\"tagId\" IN (101, 102))"
echo "published posts' images ('publishedAt eq \"2026-11-22T09:00:00\"', set by the Post fan-out):"
"${as_pg[@]}" build/bin/bitdex-index query --index "$demo/index.bdx" 'publishedAt eq "2026-11-22T09:00:00"'

say "verify: every configured field of every slot recomputed from the tables and compared with the index"
"${as_pg[@]}" build/bin/bitdex-index verify --index "$demo/index.bdx" --dsn "host=$demo port=$port user=postgres dbname=postgres"
if [ $keep = 1 ]; then
  say "server left running: psql -h $demo -p $port -U postgres; stop with: ${as_pg[*]} $bindir/pg_ctl -D $demo/data stop"
else
  say "done; server stopped (run with --keep to leave it running)"
fi
