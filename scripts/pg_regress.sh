#!/usr/bin/env bash
# Runs the pg_regress suite against a temporary instance it starts itself.
# initdb refuses root, so as root the suite runs as the postgres OS user in a
# scratch directory that user owns. Usage: scripts/pg_regress.sh [test ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$("$PG_CONFIG" --bindir)
regress=$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  for f in sql/*.sql; do
    case "$f" in sql/bitdex_sync--*) continue ;; esac
    tests+=("$(basename "$f" .sql)")
  done
fi
out=$(mktemp -d /tmp/bitdex_regress.XXXXXX)
cp -r sql expected test/regress.conf "$out/"
run=()
if [ "$(id -u)" = 0 ]; then
  chown -R postgres: "$out"
  run=(runuser -u postgres --)
fi
status=0
(cd "$out" && "${run[@]}" "$regress" --temp-instance="$out/tmp_check" --temp-config="$out/regress.conf" \
  --inputdir=. --outputdir=. --bindir="$bindir" --port="${BITDEX_REGRESS_PORT:-58432}" \
  --dbname=contrib_regression "${tests[@]}") || status=$?
if [ $status -ne 0 ] && [ -f "$out/regression.diffs" ]; then
  cat "$out/regression.diffs"
fi
# Keep the actual results next to the sources for inspection.
rm -rf results && mkdir -p results && cp -r "$out/results/." results/ 2>/dev/null || true
rm -rf "$out"
exit $status
