#!/usr/bin/env bash
# Runs the TAP tests (test/t/*.pl) with PostgreSQL's test modules, as the
# postgres OS user when we are root (initdb refuses root).
#   BITDEX_TAP_KILLS (default 20): kill -9 rounds per process kind
#   BITDEX_TAP_BIG_ROWS (default 1000000): rows of 004's big transaction
#   BITDEX_TAP_ONLY: the test files to run (default t/, all)
# As root it also mounts a small tmpfs (300 MB, almost all taken by a filler
# file) for 004's disk-full case.
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=$(pg_config --bindir)
perl_lib=$(pg_config --pkglibdir)/pgxs/src/test/perl
work=${TAP_DIR:-/tmp/bitdex_tap}
umount "$work/small_fs" 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work"
cp -r test/t "$work/t"
cp build/bin/bitdex-wal build/bin/bitdex-index "$work/"
as=()
small_fs=
if [ "$(id -u)" = 0 ]; then
  small_fs=$work/small_fs
  mkdir -p "$small_fs"
  if mount -t tmpfs -o size=300m,mode=0700 bitdex_tap "$small_fs"; then
    trap 'umount "$small_fs" 2>/dev/null || true' EXIT
    fallocate -l $((300 * 1024 * 1024 - 768 * 1024)) "$small_fs/filler"
  else
    echo "tap: cannot mount a tmpfs; the disk-full case is skipped" >&2
    small_fs=
  fi
  chown -R postgres: "$work"
  as=(runuser -u postgres --)
fi
cd "$work"
"${as[@]}" env PATH="$bindir:$PATH" PERL5LIB="$perl_lib:$work/t" TESTDIR="$work" PG_REGRESS=/bin/true \
  BITDEX_WAL_BIN="$work/bitdex-wal" BITDEX_INDEX_BIN="$work/bitdex-index" BITDEX_TAP_KILLS="${BITDEX_TAP_KILLS:-20}" \
  BITDEX_TAP_BIG_ROWS="${BITDEX_TAP_BIG_ROWS:-1000000}" BITDEX_TAP_SMALL_FS="$small_fs" \
  prove -v --ext .pl ${BITDEX_TAP_ONLY:-t/} || { tail -50 "$work"/tmp_check/log/*.log 2>/dev/null; exit 1; }
