#!/usr/bin/env bash
# Behaviour of the bitdex-wal CLI: append (with dedup), dump, verify, stats,
# consumers and retention, and that damage makes verify fail; bitdex-index
# refusing what is not an ops WAL, and hostile filters.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin/bitdex-wal
dir=$(mktemp -d /tmp/bitdex_cli.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "cli_test: FAIL: $*" >&2; exit 1; }

# Two batches; the first dedups 2 records into 1.
printf '%s\n' \
  '[{"entity_id":1,"ops":[{"op":"alive"},{"op":"set","field":"a","value":1}]},{"entity_id":1,"ops":[{"op":"remove","field":"a","value":1},{"op":"set","field":"a","value":2}]}]' \
  '[{"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"set","field":"p","value":"x"}]}]}]' |
  $bin append "$dir/wal" --dedup > "$dir/append.out"
[ "$(wc -l < "$dir/append.out")" = 2 ] || fail "append reported $(wc -l < "$dir/append.out") batches"
$bin dump "$dir/wal" > "$dir/dump.out"
grep -q '"entity_id":1,"creates_slot":true,"ops":\[{"op":"set","field":"a","value":2}\]' "$dir/dump.out" || fail "dump lacks the deduplicated record"
[ "$(grep -c batch_end "$dir/dump.out")" = 2 ] || fail "dump shows wrong batch count"
$bin verify "$dir/wal" | grep -q '^ok: 1 segments, 2 batches, 2 records' || fail "verify of a sound WAL"
$bin stats "$dir/wal" --json | grep -q '"records":2,"ops":2' || fail "stats"

# --records: one record per line (what a slot peek prints), all one batch.
printf '%s\n' '{"entity_id":7,"ops":[{"op":"add","field":"t","value":1}]}' '{"entity_id":7,"ops":[{"op":"remove","field":"t","value":1}]}' \
  '{"entity_id":8,"ops":[{"op":"delete"}]}' | $bin append "$dir/wal_records" --records --dedup > "$dir/records.out"
grep -q '"batch":1,"records":1,"ops":1' "$dir/records.out" || fail "--records did not make one deduplicated batch: $(cat "$dir/records.out")"

# Bad input is refused with the line number and nothing is written.
if echo '[{"entity_id":1,"ops":[{"op":"nope"}]}]' | $bin append "$dir/wal" 2> "$dir/err"; then fail "bad op accepted"; fi
grep -q 'line 1: record 1, op 1: unknown op "nope"' "$dir/err" || fail "error message: $(cat "$dir/err")"
$bin verify "$dir/wal" | grep -q '2 batches' || fail "a refused batch changed the WAL"

# Retention: many small segments, one consumer part way.
for i in $(seq 1 40); do
  echo "[{\"entity_id\":$i,\"ops\":[{\"op\":\"set\",\"field\":\"name\",\"value\":\"$(printf 'x%.0s' $(seq 1 200))\"}]}]"
done | $bin append "$dir/wal2" --segment-size 4096 > /dev/null
nseg=$(ls "$dir/wal2"/*.seg | wc -l)
[ "$nseg" -ge 3 ] || fail "expected rotation, got $nseg segments"
[ -z "$($bin retain "$dir/wal2")" ] || fail "retain removed segments with no consumer registered"
$bin register "$dir/wal2" idx
[ -z "$($bin retain "$dir/wal2")" ] || fail "retain removed segments a new consumer still needs"
$bin consumers "$dir/wal2" | grep -q '^idx ' || fail "consumer not listed"

# --from must be a batch boundary: inside a batch, or past a segment's
# batches, is an invalid cursor (exit 2), not damage and not a silent jump
# to the next segment (issue 17, item 14).
seg1_end=$($bin dump "$dir/wal2" | grep '"batch_end"' | grep '"segment":1,' | tail -1 | grep -o '"offset":[0-9]*' | cut -d: -f2)
$bin dump "$dir/wal2" --from "1:$seg1_end" > "$dir/from.out"
head -1 "$dir/from.out" | grep -q '"segment":2' || fail "--from the end of segment 1 does not go on in segment 2"
set +e
$bin dump "$dir/wal2" --from 1:70 > /dev/null 2> "$dir/from.err"; rc=$?
set -e
[ $rc = 2 ] && grep -q 'is not a cursor of this WAL: it points inside a batch' "$dir/from.err" ||
  fail "--from inside a batch: exit $rc, $(cat "$dir/from.err")"
set +e
$bin dump "$dir/wal2" --from "1:$((seg1_end + 10))" > /dev/null 2> "$dir/from.err"; rc=$?
set -e
[ $rc = 2 ] && grep -q 'it is past the batches of segment 1' "$dir/from.err" ||
  fail "--from past a segment's end: exit $rc, $(cat "$dir/from.err")"

# A consumer registered --at-end starts after the last batch: a new index
# following it applies only what comes later (a consumer rebuilt from a load).
$bin register "$dir/wal2" late --at-end > /dev/null
echo '[{"entity_id":41,"creates_slot":true,"ops":[{"op":"set","field":"name","value":"late"}]}]' | $bin append "$dir/wal2" --segment-size 4096 > /dev/null
ibin=$(dirname "$bin")/bitdex-index
$ibin apply --wal "$dir/wal2" --index "$dir/late.bdx" --consumer late --json > "$dir/late.out"
grep -q '"applied_batches":1,"applied_ops":1,' "$dir/late.out" || fail "an --at-end consumer applied: $(cat "$dir/late.out")"
$ibin query --index "$dir/late.bdx" --ids 'name eq "late"' | grep -qx '41' || fail "the later batch is not in the late index"
$ibin stats --index "$dir/late.bdx" | grep -q '^field name  *1 values$' || fail "the late index holds earlier batches"
# Once an index saved a cursor for it, the consumer is an ordinary one: a
# new index file for it is built from batch 1 (it started at the consumer's
# cursor, empty, and claimed success).
rm -f "$dir/late.bdx"
$ibin apply --wal "$dir/wal2" --index "$dir/late.bdx" --consumer late --json > "$dir/late.out"
batches2=$($bin stats "$dir/wal2" --json | grep -o '"batches":[0-9]*' | head -1 | cut -d: -f2)
grep -q "\"applied_batches\":$batches2," "$dir/late.out" ||
  fail "a new index of a consumer that an earlier index advanced did not start at batch 1: $(cat "$dir/late.out")"
$bin unregister "$dir/wal2" late

# A flipped byte in a sealed segment makes verify fail (exit 1) and name it.
python3 - "$dir/wal2/0000000000000001.seg" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[200] ^= 0x40
open(p, 'wb').write(b)
PY
set +e
$bin verify "$dir/wal2" > "$dir/verify.out"
rc=$?
set -e
[ $rc = 1 ] || fail "verify exit $rc on a damaged WAL"
grep -q 'DAMAGED: ops WAL corrupt in segment 1' "$dir/verify.out" || fail "verify output: $(cat "$dir/verify.out")"
# The size limit: a consumer that holds back more than --max-bytes is marked
# lagging and the old segments go.
cp -r "$dir/wal2" "$dir/wal3"
rm -f "$dir/wal3/0000000000000001.seg.tmp"
python3 - "$dir/wal3/0000000000000001.seg" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[200] ^= 0x40   # undo the flip above
open(p, 'wb').write(b)
PY
$bin verify "$dir/wal3" > /dev/null || fail "wal3 should verify after undoing the flip"
$bin retain "$dir/wal3" --max-bytes 9000 > "$dir/retain.out"
grep -q '^removed segment 1$' "$dir/retain.out" || fail "size limit removed nothing: $(cat "$dir/retain.out")"
grep -q '^consumer idx is now lagging' "$dir/retain.out" || fail "consumer not marked lagging"
$bin consumers "$dir/wal3" | grep -q '^idx .* lagging$' || fail "consumers does not show lagging"
$bin verify "$dir/wal3" | grep -q '^ok' || fail "a WAL trimmed by retention must still verify"

# verify reports a gap in the segments and a segment that is not one; a
# directory with no segment is no ops WAL.
expect_damaged() {  # expect_damaged DIR PATTERN
  set +e
  $bin verify "$1" > "$dir/v.out"
  local rc=$?
  set -e
  [ $rc = 1 ] || fail "verify exit $rc for $1: $(cat "$dir/v.out")"
  grep -q "$2" "$dir/v.out" || fail "verify of $1 does not say '$2': $(cat "$dir/v.out")"
}
cp -r "$dir/wal" "$dir/wal4"
head -c 4096 /dev/urandom > "$dir/wal4/0000000000000009.seg"
expect_damaged "$dir/wal4" 'DAMAGED: segments 2 to 8 are missing'
expect_damaged "$dir/wal4" 'DAMAGED: segment 9 has a bad header'
mkdir "$dir/empty"
expect_damaged "$dir/empty" 'holds no segment'
if $bin verify "$dir/typo" > /dev/null 2> "$dir/v.err"; then fail "verify accepted a missing directory"; fi
grep -q 'no such directory' "$dir/v.err" || fail "verify of a missing directory: $(cat "$dir/v.err")"

# bitdex-index: a path that is not an ops WAL is refused, not created.
ix=build/bin/bitdex-index
set +e
$ix apply --wal "$dir/typo" --index "$dir/typo.bdx" 2> "$dir/ix.err"
rc=$?
set -e
[ $rc != 0 ] || fail "bitdex-index apply accepted a directory that does not exist"
grep -q 'is not an ops WAL directory' "$dir/ix.err" || fail "apply error: $(cat "$dir/ix.err")"
[ ! -e "$dir/typo" ] || fail "bitdex-index apply created the mistyped directory"
$ix apply --wal "$dir/wal" --index "$dir/ok.bdx" > /dev/null || fail "apply of a sound WAL"
# A filter nested 8,000 deep is an error, not a crash; long filters come from a file or stdin.
deep=$(python3 -c 'print("(" * 8000 + "a eq 1" + ")" * 8000)')
set +e
$ix query --index "$dir/ok.bdx" "$deep" > /dev/null 2> "$dir/q.err"
rc=$?
set -e
[ $rc = 2 ] || fail "deep filter: exit $rc (a crash is 139): $(head -c 300 "$dir/q.err")"
grep -q 'nests deeper than 200 levels' "$dir/q.err" || fail "deep filter error: $(head -c 300 "$dir/q.err")"
python3 -c 'print("NOT " * 8000 + "a eq 1")' > "$dir/not.filter"
set +e
$ix query --index "$dir/ok.bdx" --filter-file "$dir/not.filter" > /dev/null 2> "$dir/q.err"
rc=$?
set -e
[ $rc = 2 ] && grep -q 'nests deeper' "$dir/q.err" || fail "8,000 NOTs: exit $rc: $(head -c 300 "$dir/q.err")"
[ "$(echo 'a eq 2' | $ix query --index "$dir/ok.bdx" --filter-file -)" = 1 ] || fail "filter from stdin"
[ "$(python3 -c 'print("(" * 150 + "a eq 2" + ")" * 150)' | $ix query --index "$dir/ok.bdx" --filter-file -)" = 1 ] ||
  fail "a filter nested 150 deep is fine"
echo "cli_test: ok"
