#!/usr/bin/env bash
# Runs the TAP tests (test/t/*.pl) with PostgreSQL's test modules, as the
# postgres OS user when we are root (initdb refuses root).
#   BITDEX_TAP_KILLS (default 20): kill -9 rounds per process kind
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=$(pg_config --bindir)
perl_lib=$(pg_config --pkglibdir)/pgxs/src/test/perl
work=${TAP_DIR:-/tmp/bitdex_tap}
rm -rf "$work"
mkdir -p "$work"
cp -r test/t "$work/t"
cp build/bin/bitdex-wal "$work/"
as=()
if [ "$(id -u)" = 0 ]; then
  chown -R postgres: "$work"
  as=(runuser -u postgres --)
fi
cd "$work"
"${as[@]}" env PATH="$bindir:$PATH" PERL5LIB="$perl_lib" TESTDIR="$work" PG_REGRESS=/bin/true \
  BITDEX_WAL_BIN="$work/bitdex-wal" BITDEX_TAP_KILLS="${BITDEX_TAP_KILLS:-20}" \
  prove -v --ext .pl t/ || { tail -50 "$work"/tmp_check/log/*worker*.log 2>/dev/null; exit 1; }
