# Sourced by the demo, tests and benchmarks: a throwaway PostgreSQL with
# bitdex_sync preloaded, run as the postgres OS user when we are root (initdb
# refuses root). Never touches the machine's own clusters.
#
#   private_pg_start DIR PORT [postgresql.conf lines...]
#     initdb DIR/data, start it on a Unix socket in DIR; sets
#     PG_BINDIR, AS_PG (command prefix), AS_PG_EXEC (a prefix that execs, so
#     $! of a background job is the command itself and signals reach it),
#     PSQL (psql command as an array).
#   private_pg_create_extension
#     CREATE EXTENSION bitdex_sync, then wait until the database's worker has
#     created its slot (apply_config refuses message sources before that).
#   private_pg_worker_pid
#     the pid of the server's bitdex_sync worker (these scripts use one
#     database, so there is one).
#   private_pg_stop

private_pg_start() {
  local dir=$1 port=$2
  shift 2
  PG_BINDIR=$(pg_config --bindir)
  AS_PG=()
  AS_PG_EXEC=()
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    AS_PG=(runuser -u postgres --)
    AS_PG_EXEC=(setpriv --reuid=postgres --regid=postgres --init-groups --reset-env --)
    chown -R postgres: "$dir"
  fi
  if [ -f "$dir/data/postmaster.pid" ]; then
    "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$dir/data" stop -m fast >/dev/null 2>&1 || true
  fi
  rm -rf "$dir/data"
  "${AS_PG[@]}" "$PG_BINDIR/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  {
    echo "port = $port"
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$dir'"
    echo "shared_preload_libraries = 'bitdex_sync'"
    echo "wal_level = logical"
    echo "# This Debian build refuses output plugins not listed here."
    echo "output_plugin_libraries = 'bitdex_sync, test_decoding, pgoutput'"
    [ $# -gt 0 ] && printf '%s\n' "$@"
  } >> "$dir/data/postgresql.conf"
  "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
  PSQL=("${AS_PG[@]}" "$PG_BINDIR/psql" -h "$dir" -p "$port" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)
  PRIVATE_PG_DIR=$dir
  export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
}

private_pg_create_extension() {
  "${PSQL[@]}" -c "CREATE EXTENSION bitdex_sync" >/dev/null
  "${PSQL[@]}" -c "SELECT bitdex_sync.wait_for_sync('60s')" >/dev/null
}

private_pg_worker_pid() {
  "${PSQL[@]}" -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'"
}

private_pg_stop() {
  "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PRIVATE_PG_DIR/data" stop -m fast >/dev/null 2>&1 || true
}
