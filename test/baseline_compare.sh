#!/usr/bin/env bash
# The same pseudo-random DML runs through the BitDex V2 PL/pgSQL triggers
# (../shared/bench/baseline_bitdex_v2.sql, writing "BitdexOps") and through
# bitdex_sync's triggers for ../shared/bench/config.yaml (message sink, read
# back from a slot), both installed at once. The two op streams must be equal
# record by record, apart from the fan-in ops bitdex_sync adds to Image
# records (a Post's fields on a new or moved Image); then the documented
# differences (join-table UPDATE, Post DELETE) must show up only on
# bitdex_sync's side.
#
#   SHARED (../shared)  CMP_CHANGES (3000)  CMP_PORT (54333)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=$(cd "${SHARED:-../shared}" && pwd)
changes=${CMP_CHANGES:-3000}
port=${CMP_PORT:-54333}
dir=$(mktemp -d /tmp/bitdex_cmp.XXXXXX)
cp -r "$shared/bench" "$dir/bench"
. scripts/lib/private_pg.sh
private_pg_start "$dir" "$port"
cleanup() {
  private_pg_stop
  rm -rf "$dir"
}
trap cleanup EXIT
psql=("${PSQL[@]}")

"${psql[@]}" -v images=2000 -v posts=400 -v tags_per_image=3 -f "$dir/bench/schema.sql" >/dev/null
private_pg_create_extension
"${psql[@]}" -f "$dir/bench/baseline_bitdex_v2.sql" >/dev/null
echo "SELECT count(*) FROM bitdex_sync.apply_config(:'cfg')" | "${psql[@]}" -v cfg="$(cat "$dir/bench/config.yaml")" >/dev/null
"${psql[@]}" -c "SELECT 1 FROM pg_create_logical_replication_slot('cmp', 'bitdex_sync')" >/dev/null

# Pseudo-random DML (fixed seed), one statement per transaction, none of the
# kinds V2 does not capture.
PGOPTIONS="$PGOPTIONS -c bitdex.n=$changes" "${psql[@]}" >/dev/null <<'SQL'
SELECT setseed(0.42);
DO $$
DECLARE
  i int; k int; img int; p int; t int;
BEGIN
  FOR i IN 1 .. current_setting('bitdex.n')::int LOOP
    k := floor(random() * 12);
    img := 1 + floor(random() * 2100);
    p := 1 + floor(random() * 420);
    t := 1 + floor(random() * 60);
    CASE k
      WHEN 0 THEN UPDATE "Image" SET "nsfwLevel" = (ARRAY[1,2,4,8,16])[1 + floor(random()*5)] WHERE id = img;
      WHEN 1 THEN UPDATE "Image" SET type = (ARRAY['image','video','audio'])[1 + floor(random()*3)]::"MediaType", minor = random() < 0.5 WHERE id = img;
      WHEN 2 THEN UPDATE "Image" SET "blockedFor" = CASE WHEN random() < 0.5 THEN NULL ELSE 'tos' END, poi = random() < 0.3 WHERE id = img;
      WHEN 3 THEN UPDATE "Image" SET flags = floor(random() * 32768)::int, "scannedAt" = CASE WHEN random() < 0.2 THEN NULL ELSE timestamp '2024-01-01' + random() * interval '400 days' END WHERE id = img;
      WHEN 4 THEN UPDATE "Image" SET "postId" = CASE WHEN random() < 0.1 THEN NULL ELSE p END, "userId" = 1 + floor(random()*50) WHERE id = img;
      WHEN 5 THEN UPDATE "Image" SET name = 'untracked ' || i WHERE id = img;  -- captures nothing
      WHEN 6 THEN INSERT INTO "Image" (url, "nsfwLevel", "userId", "postId", flags, "scannedAt")
                  VALUES ('u' || i, 1 << floor(random()*5)::int, 1 + floor(random()*50), p, floor(random()*32768)::int, now()::timestamp(3));
      WHEN 7 THEN DELETE FROM "Image" WHERE id = img;
      WHEN 8 THEN INSERT INTO "TagsOnImage" ("imageId", "tagId") VALUES (img, t) ON CONFLICT DO NOTHING;
      WHEN 9 THEN DELETE FROM "TagsOnImage" WHERE ("imageId", "tagId") IN (SELECT "imageId", "tagId" FROM "TagsOnImage" WHERE "imageId" = img LIMIT 1);
      WHEN 10 THEN UPDATE "Post" SET "publishedAt" = CASE WHEN random() < 0.2 THEN NULL ELSE timestamp '2024-01-01' + random() * interval '300 days' END WHERE id = p;
      ELSE UPDATE "Post" SET availability = (ARRAY['Public','Unsearchable','Private','EarlyAccess'])[1 + floor(random()*4)]::"Availability" WHERE id = p;
    END CASE;
    COMMIT;
  END LOOP;
END $$;
SQL
# Our records without the fan-in (docs/config.md): an Image inserted under a
# Post, or moved to another, also takes the Post's publishedAt and
# availability in its own record, which V2 never wrote. Those ops are taken
# out before comparing, and counted.
compare() {
  "${psql[@]}" -At <<'SQL'
CREATE TEMP TABLE raw AS
  SELECT row_number() OVER () AS n, data::jsonb AS rec FROM pg_logical_slot_peek_changes('cmp', NULL, NULL);
CREATE TEMP TABLE ours AS
  SELECT n, CASE WHEN rec ? 'ops' THEN jsonb_set(rec, '{ops}', (
           SELECT coalesce(jsonb_agg(o ORDER BY i), '[]') FROM jsonb_array_elements(rec->'ops') WITH ORDINALITY e(o, i)
            WHERE NOT (o->>'op' IN ('set', 'remove') AND o->>'field' IN ('publishedAt', 'availability'))))
         ELSE rec END AS rec
    FROM raw;
CREATE TEMP TABLE theirs AS
  SELECT row_number() OVER (ORDER BY id) AS n, jsonb_build_object('entity_id', entity_id, 'ops', ops) AS rec FROM "BitdexOps";
SELECT (SELECT count(*) FROM ours) || ' ' || (SELECT count(*) FROM theirs) || ' ' ||
       (SELECT count(*) FROM ours FULL JOIN theirs USING (n) WHERE ours.rec IS DISTINCT FROM theirs.rec) || ' ' ||
       (SELECT count(*) FROM raw JOIN ours USING (n) WHERE raw.rec <> ours.rec);
SQL
}
# psql's DO block reads the count from a setting.
read -r ours theirs differ fan_in <<<"$(compare)"
echo "baseline_compare: $changes statements -> bitdex_sync $ours records, BitDex V2 $theirs records, $differ differ" \
  "(besides the fan-in ops of $fan_in records)"
if [ "$ours" != "$theirs" ] || [ "$differ" != 0 ] || [ "$ours" -lt $((changes / 2)) ] || [ "$fan_in" = 0 ]; then
  "${psql[@]}" -c "SELECT n, ours.rec AS ours, theirs.rec AS theirs FROM (SELECT row_number() OVER () n, data::jsonb rec FROM pg_logical_slot_peek_changes('cmp', NULL, NULL)) ours FULL JOIN (SELECT row_number() OVER (ORDER BY id) n, jsonb_build_object('entity_id', entity_id, 'ops', ops) rec FROM \"BitdexOps\") theirs USING (n) WHERE ours.rec IS DISTINCT FROM theirs.rec LIMIT 5"
  echo "baseline_compare: FAIL" >&2
  exit 1
fi
# The documented differences: only bitdex_sync captures these.
"${psql[@]}" -c "UPDATE \"TagsOnImage\" SET \"tagId\" = \"tagId\" + 1000000 WHERE \"imageId\" = (SELECT min(\"imageId\") FROM \"TagsOnImage\") AND \"tagId\" = (SELECT min(\"tagId\") FROM \"TagsOnImage\" WHERE \"imageId\" = (SELECT min(\"imageId\") FROM \"TagsOnImage\"))" \
             -c "DELETE FROM \"Post\" WHERE id = 1"
read -r ours2 theirs2 _ <<<"$(compare)"
if [ "$theirs2" != "$theirs" ] || [ "$ours2" != $((ours + 2)) ]; then
  echo "baseline_compare: FAIL: expected exactly 2 more records on bitdex_sync's side, got $ours2 vs $ours (V2 $theirs2 vs $theirs)" >&2
  exit 1
fi
echo "baseline_compare: ok (fan-in, join UPDATE and Post DELETE captured by bitdex_sync only, as documented)"
