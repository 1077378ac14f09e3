#!/usr/bin/env bash
# End to end through the index: a config applied to a small schema, rounds
# of random DML (inserts, updates of every tracked field, deletes, join-table
# churn with a filter and a conditional field, per-row and query fan-out
# updates), the background worker writing the captured ops to its ops WAL
# (small segments, so it rotates), the index following that WAL — killed with
# SIGKILL every third round and restarted; the worker itself killed with
# SIGKILL in two rounds — and `bitdex-index verify` finding zero differences.
# Then one flipped bit must make verify fail and name the slot and field.
#
#   E2E_ROUNDS (default 12)  E2E_STATEMENTS per round (default 400)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${E2E_ROUNDS:-12}
statements=${E2E_STATEMENTS:-400}
dir=${E2E_DIR:-/tmp/bitdex_index_e2e}
port=${E2E_PORT:-54351}
fail() { echo "index_e2e: FAIL: $*" >&2; exit 1; }

rm -rf "$dir"
. scripts/lib/private_pg.sh
private_pg_start "$dir" "$port" "bitdex_sync.wal_segment_size = '64kB'"
follower=
signal_follower() { [ -n "$follower" ] && kill "-$1" "$follower" 2>/dev/null || true; }
cleanup() {
  signal_follower KILL
  private_pg_stop
}
trap cleanup EXIT
psql=("${PSQL[@]}")
index=$dir/index.bdx
dsn="host=$dir port=$port user=postgres dbname=postgres"

private_pg_create_extension
# The worker's ops WAL for database postgres (<bitdex_sync.wal_directory>/<database OID>).
wal=$("${psql[@]}" -Atc "SELECT bitdex_sync.wal_directory()")
"${psql[@]}" <<'SQL'
CREATE TYPE media AS ENUM ('image', 'video', 'audio');
CREATE TABLE model (id serial PRIMARY KEY, poi boolean NOT NULL DEFAULT false);
-- No foreign key to post: a post may be deleted while images point at it
-- (the fan-out DELETE then takes its values away from them).
CREATE TABLE post (id serial PRIMARY KEY, published_at timestamptz, status text NOT NULL DEFAULT 'draft');
CREATE TABLE image (id serial PRIMARY KEY, nsfw int NOT NULL DEFAULT 1, type media NOT NULL DEFAULT 'image',
                    post_id int, model_id int, flags int NOT NULL DEFAULT 0, score numeric(6,2),
                    scanned_at timestamp(3), created_at timestamp(3) NOT NULL DEFAULT '2026-01-01');
CREATE TABLE tag_on_image (image_id int NOT NULL REFERENCES image ON DELETE CASCADE, tag_id int NOT NULL,
                           disabled boolean NOT NULL DEFAULT false, automated boolean NOT NULL DEFAULT false,
                           PRIMARY KEY (image_id, tag_id));
SELECT source, action FROM bitdex_sync.apply_config($$
index: e2e
sources:
  - table: image
    sets_alive: true
    on_delete: true
    track_fields:
      - nsfw
      - type
      - {column: model_id, target: modelId}
      - score
      - "round({score}) as scoreWhole"
      # A string needing JSON and COPY escapes (quote, backslash, tab) on its way to verify.
      - 'format(''%s"\%s'', {nsfw}, chr(9)) as label'
      - "GREATEST({scanned_at}, {created_at}) as existedAt"
      - "({flags} & 4) != 0 as onSite"
  - table: tag_on_image
    slot_field: image_id
    field: tagIds
    value_field: tag_id
    filter: "NOT {disabled}"
    computed_fields:
      - {target: autoTagIds, expression: "{automated} AND NOT {disabled}", value: "{tag_id}"}
  - table: post
    type: fan_out_per_row
    rows_from: {table: image, fk: post_id}
    filter: "{status} = 'published'"
    track_fields: [{column: published_at, target: publishedAt}]
  - table: model
    query: "modelId eq {id}"
    track_fields: [poi]
$$) ORDER BY 1;

-- One random statement per call, over every kind of change the config captures.
CREATE FUNCTION churn(n int) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
  r float; img int; p int;
BEGIN
  FOR i IN 1..n LOOP
    r := random();
    SELECT id INTO img FROM image OFFSET floor(random() * GREATEST((SELECT count(*) FROM image), 1)) LIMIT 1;
    IF r < 0.20 OR img IS NULL THEN
      -- New images go to posts that are not published (or to none): a post's
      -- fan-out reaches the images it has when it changes.
      SELECT id INTO p FROM post WHERE status = 'draft' ORDER BY random() LIMIT 1;
      INSERT INTO image (nsfw, type, post_id, model_id, flags, score, scanned_at)
        VALUES ((ARRAY[1, 2, 4, 8, 16])[1 + floor(random() * 5)], (ARRAY['image', 'video', 'audio'])[1 + floor(random() * 3)]::media,
                CASE WHEN random() < 0.8 THEN p END, CASE WHEN random() < 0.7 THEN 1 + floor(random() * 5) END,
                floor(random() * 8), CASE WHEN random() < 0.8 THEN round((random() * 100)::numeric, 2) END,
                CASE WHEN random() < 0.5 THEN timestamp '2026-01-01' + random() * interval '30 days' END);
    ELSIF r < 0.40 THEN
      UPDATE image SET nsfw = (ARRAY[1, 2, 4, 8, 16])[1 + floor(random() * 5)] WHERE id = img;
    ELSIF r < 0.45 THEN
      UPDATE image SET type = (ARRAY['image', 'video', 'audio'])[1 + floor(random() * 3)]::media, flags = floor(random() * 8) WHERE id = img;
    ELSIF r < 0.50 THEN
      UPDATE image SET scanned_at = timestamp '2026-01-01' + random() * interval '60 days',
                       score = CASE WHEN random() < 0.9 THEN round((random() * 100)::numeric, 2) END WHERE id = img;
    ELSIF r < 0.53 THEN
      UPDATE image SET model_id = CASE WHEN random() < 0.8 THEN 1 + floor(random() * 5) END WHERE id = img;
    ELSIF r < 0.58 THEN
      DELETE FROM image WHERE id = img;
    ELSIF r < 0.72 THEN
      INSERT INTO tag_on_image VALUES (img, 1 + floor(random() * 30), random() < 0.2, random() < 0.3) ON CONFLICT DO NOTHING;
    ELSIF r < 0.77 THEN
      DELETE FROM tag_on_image WHERE ctid = (SELECT ctid FROM tag_on_image WHERE image_id = img LIMIT 1);
    ELSIF r < 0.82 THEN
      UPDATE tag_on_image SET disabled = NOT disabled, automated = random() < 0.5
        WHERE ctid = (SELECT ctid FROM tag_on_image WHERE image_id = img LIMIT 1);
    ELSIF r < 0.85 THEN
      BEGIN
        UPDATE tag_on_image SET tag_id = 1 + floor(random() * 30)
          WHERE ctid = (SELECT ctid FROM tag_on_image WHERE image_id = img LIMIT 1);
      EXCEPTION WHEN unique_violation THEN NULL;
      END;
    ELSIF r < 0.88 THEN
      INSERT INTO post (published_at) VALUES (CASE WHEN random() < 0.5 THEN timestamptz '2026-02-01' + random() * interval '90 days' END);
    ELSIF r < 0.94 THEN
      UPDATE post SET status = (ARRAY['draft', 'published', 'hidden'])[1 + floor(random() * 3)],
                      published_at = timestamptz '2026-02-01' + random() * interval '90 days'
        WHERE id = (SELECT id FROM post ORDER BY random() LIMIT 1) AND status <> 'draft' OR
              id = (SELECT id FROM post WHERE status = 'draft' ORDER BY random() LIMIT 1) AND random() < 0.3;
    ELSIF r < 0.96 THEN
      DELETE FROM post WHERE id = (SELECT id FROM post ORDER BY random() LIMIT 1);
    ELSIF r < 0.98 THEN
      INSERT INTO model (poi) VALUES (random() < 0.5);
    ELSE
      UPDATE model SET poi = NOT poi WHERE id = (SELECT id FROM model ORDER BY random() LIMIT 1);
    END IF;
  END LOOP;
END
$f$;
INSERT INTO model (poi) SELECT false FROM generate_series(1, 5);
SQL

# Everything committed so far durable in the ops WAL (the worker's).
sync() { "${psql[@]}" -At -c "SELECT bitdex_sync.wait_for_sync('60s')" >/dev/null; }

# SIGKILL of the worker: the postmaster reinitialises shared memory and
# restarts everything; wait until connections are accepted again.
kill_worker() {
  local pid
  pid=$(private_pg_worker_pid)
  [ -n "$pid" ] || fail "no bitdex_sync worker in pg_stat_activity"
  kill -KILL "$pid"
  for _ in $(seq 1 100); do
    sleep 0.2
    "${psql[@]}" -At -c "SELECT 1" >/dev/null 2>&1 && return 0
  done
  fail "server did not come back after the worker was killed"
}

start_follower() {
  "${AS_PG_EXEC[@]}" build/bin/bitdex-index follow --wal "$wal" --index "$index" --checkpoint-seconds 1 >>"$dir/follow.log" 2>&1 &
  follower=$!
}

kills=0
worker_kills=0
for round in $(seq 1 "$rounds"); do
  # Several transactions per round, some rolled back.
  for t in 1 2 3 4; do
    if [ "$t" = 3 ]; then
      "${psql[@]}" -c "BEGIN; SELECT churn($((statements / 4))); ROLLBACK;" >/dev/null
    else
      "${psql[@]}" -c "SELECT setseed($(( (round * 10 + t) % 97 )) / 100.0); SELECT churn($((statements / 4)))" >/dev/null
    fi
  done
  # Twice the worker dies without warning right after the round's commits.
  if [ "$round" = 2 ] || [ "$round" = $((rounds - 1)) ]; then
    kill_worker
    worker_kills=$((worker_kills + 1))
  fi
  sync
  if [ -z "$follower" ]; then start_follower; fi
  # Every third round the index process dies without warning.
  if [ $((round % 3)) = 0 ]; then
    sleep 0.$((RANDOM % 9 + 1))
    signal_follower KILL
    wait "$follower" 2>/dev/null || true
    follower=
    kills=$((kills + 1))
  fi
done
if [ -z "$follower" ]; then start_follower; fi
sleep 1
signal_follower TERM
wait "$follower" || fail "follow did not exit cleanly on SIGTERM: $(tail -3 "$dir/follow.log")"
follower=
# Whatever the follower had not applied yet.
"${AS_PG[@]}" build/bin/bitdex-index apply --wal "$wal" --index "$index" --json > "$dir/apply.json"
# The WAL's last batch number (the worker's retention removes segments every
# consumer has passed, so counting the batches left would not give it).
batches=$("${AS_PG[@]}" build/bin/bitdex-wal dump "$wal" | grep -o '"batch_end":[0-9]*' | tail -1 | cut -d: -f2)
grep -q "\"last_batch_seq\":$batches," "$dir/apply.json" || fail "index is not at the WAL's last batch $batches: $(cat "$dir/apply.json")"
"${psql[@]}" -At -c "SELECT 'images ' || count(*) FROM image" -c "SELECT 'tags ' || count(*) FROM tag_on_image" \
  -c "SELECT 'posts ' || count(*) FROM post"
newest=$(find "$wal" -name '*.seg' -printf '%f\n' | sort | tail -1)
segments=$((16#${newest%.seg}))
[ "$segments" -gt 1 ] || fail "the worker's ops WAL never rotated ($segments segment)"
echo "ops WAL: $batches batches in $segments segments ($(find "$wal" -name '*.seg' | wc -l) left after retention); index killed $kills times, worker $worker_kills times; $(cat "$dir/apply.json")"

# Images here gain a model after the model last changed: they take its poi
# through the "modelId eq {id}" fan-in (issue 17, item 6), which verify
# checks by joining the tables.
build/bin/bitdex-index verify --index "$index" --dsn "$dsn" > "$dir/verify.out" 2>&1 ||
  { cat "$dir/verify.out"; fail "verify found differences"; }
cat "$dir/verify.out"
grep -q ': 0 differences$' "$dir/verify.out" || fail "verify did not report 0 differences"
if grep -q '^not verified' "$dir/verify.out"; then fail "verify left fields unverified"; fi

# Cross-check with queries: the index's counts equal SQL counts.
alive=$("${psql[@]}" -At -c "SELECT count(*) FROM image")
[ "$(build/bin/bitdex-index query --index "$index" '*')" = "$alive" ] || fail "alive count"
want=$("${psql[@]}" -At -c "SELECT count(*) FROM image WHERE nsfw IN (1, 2) AND type <> 'video'")
got=$(build/bin/bitdex-index query --index "$index" 'nsfw in [1, 2] AND NOT type eq video')
[ "$got" = "$want" ] || fail "query nsfw/type: index $got, database $want"
want=$("${psql[@]}" -At -c "SELECT count(DISTINCT image_id) FROM tag_on_image WHERE NOT disabled AND tag_id IN (3, 4)")
got=$(build/bin/bitdex-index query --index "$index" 'tagIds in [3, 4]')
[ "$got" = "$want" ] || fail "query tagIds: index $got, database $want"
# A whole numeric is the same key as an integer: a query for 50 finds it.
want=$("${psql[@]}" -At -c "SELECT count(*) FROM image WHERE round(score) IN (49, 50)")
got=$(build/bin/bitdex-index query --index "$index" 'scoreWhole in [49, 50]')
[ "$got" = "$want" ] || fail "query scoreWhole: index $got, database $want"
[ "$want" -gt 0 ] || fail "no image has a score of about 50: the check above proves nothing"

# One flipped bit: verify must fail and name the slot and the field.
slot=$("${psql[@]}" -At -c "SELECT min(id) FROM image")
nsfw=$("${psql[@]}" -At -c "SELECT nsfw FROM image WHERE id = $slot")
build/bin/bitdex-index toggle --index "$index" --slot "$slot" --field nsfw --value "$nsfw" >/dev/null
if build/bin/bitdex-index verify --index "$index" --dsn "$dsn" --json > "$dir/verify_bad.json" 2>/dev/null; then
  fail "verify passed a corrupted index"
fi
grep -q "\"differences\":1,\"shown\":\[{\"slot\":$slot,\"field\":\"nsfw\",\"database\":\[$nsfw\],\"index\":\[\]}" \
  "$dir/verify_bad.json" || fail "verify did not name slot $slot field nsfw: $(cat "$dir/verify_bad.json")"
echo "index_e2e: ok ($rounds rounds through the worker, $kills index kills, $worker_kills worker kills, flipped bit found at slot $slot field nsfw)"
