# Which databases get a worker. Automatic mode (bitdex_sync.databases empty,
# the default): the launcher starts one in each database where the extension
# is created (at CREATE EXTENSION's commit, and at server start), none
# elsewhere, none in templates; it ends when the extension is dropped and
# comes back after pg_terminate_backend (also after the launcher's own, which
# the postmaster restarts); DROP DATABASE needs DROP EXTENSION
# first and leaves no worker behind; after CREATE DATABASE from a template with the
# extension, start_worker() starts one. Named mode: one worker per named
# database, waiting quietly until the extension exists. bitdex_sync.
# max_databases bounds how many databases have a worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BitdexTap;

my $node = bitdex_node('launcher');
sub sql { return $node->safe_psql($_[1] // 'postgres', $_[0]); }
# Databases with a running worker, sorted, comma-separated.
sub worker_dbs {
  return sql("SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_stat_activity
              WHERE backend_type = 'bitdex_sync worker'");
}
sub wait_worker_dbs {
  my ($want, $what) = @_;
  $node->poll_query_until('postgres', "SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '')
      FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'", $want)
    or diag("workers in: " . worker_dbs());
  is(worker_dbs(), $want, $what);
}

is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bitdex_sync launcher' AND datname IS NULL"),
  '1', 'the launcher runs, connected to no database');
sql("CREATE DATABASE db2");
sql("CREATE DATABASE db3");
wait_worker_dbs('', 'no worker while no database has the extension');

sql("CREATE EXTENSION bitdex_sync", 'db2');
is(sql("SELECT bitdex_sync.wait_for_sync('30s')", 'db2'), 't', 'wait_for_sync right after CREATE EXTENSION');
wait_worker_dbs('db2', 'CREATE EXTENSION starts a worker in that database only');
is(sql("SELECT string_agg(DISTINCT database || ':' || state, ',') FROM bitdex_sync.status()", 'db2'),
  'db2:running', 'status() shows it running');
my $db2_oid = sql("SELECT oid FROM pg_database WHERE datname = 'db2'");
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bitdex_sync_$db2_oid'"), '1',
  'it created its slot');

create_extension($node);
wait_worker_dbs('db2,postgres', 'a second database, a second worker');
sql("CREATE TABLE t (id int PRIMARY KEY, v int)", 'db2');
sql(q{SELECT count(*) FROM bitdex_sync.apply_config('{"sources": [{"table": "t", "track_fields": ["v"]}]}'::jsonb)},
  'db2');
sql("INSERT INTO t SELECT g, g FROM generate_series(1, 10) g", 'db2');
sql("SELECT bitdex_sync.wait_for_sync('30s')", 'db2');
is(sql("SELECT ops_captured FROM bitdex_sync.status() WHERE source = 'slot' AND database = 'db2'", 'db2'), '10',
  "db2's worker captured db2's changes");
is(sql("SELECT ops_captured FROM bitdex_sync.status() WHERE source = 'slot' AND database = 'postgres'"), '0',
  "postgres's worker did not");
is(sql('SELECT bitdex_sync.wal_directory()', 'db2'),
  $node->data_dir . '/bitdex_sync/' . sql("SELECT oid FROM pg_database WHERE datname = 'db2'"),
  "db2's ops WAL directory is named by its OID");
ok(-d sql('SELECT bitdex_sync.wal_directory()', 'db2'), 'each database has its own ops WAL directory');

# pg_terminate_backend: the launcher starts it again.
my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker' AND datname = 'db2'");
sql("SELECT pg_terminate_backend($pid)");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity
    WHERE backend_type = 'bitdex_sync worker' AND datname = 'db2' AND pid <> $pid")
  or die 'worker not back';
pass('a terminated worker is started again');

# pg_terminate_backend of the launcher: the postmaster starts it again; the
# new one starts no second worker beside the running ones and restarts them
# when they end, like its predecessor.
my $launcher = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync launcher'");
$pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker' AND datname = 'db2'");
my $log_offset = -s $node->logfile;
sql("SELECT pg_terminate_backend($launcher)");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity
    WHERE backend_type = 'bitdex_sync launcher' AND pid <> $launcher AND wait_event = 'Extension'")
  or die 'launcher not back';
sleep 2;
is(sql("SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker' AND datname = 'db2'"),
  $pid, 'a restarted launcher keeps the running worker');
unlike(slurp_file($node->logfile, $log_offset), qr/a worker already runs/, '... and starts no second one');
sql("SELECT pg_terminate_backend($pid)");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity
    WHERE backend_type = 'bitdex_sync worker' AND datname = 'db2' AND pid <> $pid")
  or die 'worker not back after the launcher restart';
pass("... and starts it again when it ends");

# DROP EXTENSION: the worker drops its slot and ends for good.
sql("DROP EXTENSION bitdex_sync CASCADE", 'db2');
wait_worker_dbs('postgres', 'DROP EXTENSION ends the worker');
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bitdex_sync_$db2_oid'"), '0',
  'and drops its slot');
sleep 2;
is(worker_dbs(), 'postgres', 'it is not started again');

# A template with the extension gets no worker (it would block CREATE
# DATABASE from it); a copy of it gets one from start_worker().
sql("CREATE DATABASE tpl IS_TEMPLATE true");
sql("CREATE EXTENSION bitdex_sync", 'tpl');
sleep 1;
is(worker_dbs(), 'postgres', 'no worker in a template database');
sql("CREATE DATABASE db4 TEMPLATE tpl");
my ($rc, $out, $err) = $node->psql('db4', "SELECT bitdex_sync.wait_for_sync('1s')");
like($err, qr/no worker has started for database "db4"/, 'a copy of the template has no worker yet');
is(sql("SELECT bitdex_sync.start_worker()", 'db4'), 't', 'start_worker() asks for one');
is(sql("SELECT bitdex_sync.wait_for_sync('30s')", 'db4'), 't', 'and it runs');
wait_worker_dbs('db4,postgres', 'db4 has a worker');

# A database with the extension cannot be dropped, even WITH (FORCE): its
# slot holds it. DROP EXTENSION first; the worker ends, then it can.
sql("CREATE EXTENSION bitdex_sync", 'db3');
sql("SELECT bitdex_sync.wait_for_sync('30s')", 'db3');
($rc, $out, $err) = $node->psql('postgres', "DROP DATABASE db3 WITH (FORCE)");
like($err, qr/database "db3" is used by an active logical replication slot/, 'DROP DATABASE is refused');
sql("DROP EXTENSION bitdex_sync", 'db3');
wait_worker_dbs('db4,postgres', 'DROP EXTENSION ends its worker');
sql("DROP DATABASE db3");
sleep 2;
is(worker_dbs(), 'db4,postgres', 'then DROP DATABASE works and nothing restarts');
my $log = slurp_file($node->logfile);
unlike($log, qr/FATAL:  database \d+ does not exist/, 'no worker tried the dropped database');

# The postgres worker is still the one the first launcher started (watched
# by the second): DROP EXTENSION ends it for good too; CREATE EXTENSION
# brings it back.
sql("DROP EXTENSION bitdex_sync CASCADE");
wait_worker_dbs('db4', 'DROP EXTENSION ends a watched worker');
sleep 2;
is(worker_dbs(), 'db4', 'it is not started again');
create_extension($node);
wait_worker_dbs('db4,postgres', 'CREATE EXTENSION starts it again');

# Server restart: workers where the extension is, nowhere else.
$node->restart;
wait_worker_dbs('db4,postgres', 'after a restart the launcher finds the databases with the extension');

# Named mode: no launcher; the named database's worker waits for the extension.
my $named = bitdex_node('named', "bitdex_sync.databases = 'postgres'\n");
$named->poll_query_until('postgres', "SELECT query = 'waiting for CREATE EXTENSION bitdex_sync'
    FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'")
  or die 'named worker not waiting';
pass('named mode: the worker waits for the extension');
is($named->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'bitdex_sync launcher'"),
  '0', 'named mode: no launcher');
$named->safe_psql('postgres', 'CREATE EXTENSION bitdex_sync');
is($named->safe_psql('postgres', "SELECT bitdex_sync.start_worker()"), 'f', 'named mode: start_worker() says no');
is($named->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')"), 't', 'named mode: the worker runs');
$named->safe_psql('postgres', 'DROP EXTENSION bitdex_sync');
$named->poll_query_until('postgres', "SELECT query = 'waiting for CREATE EXTENSION bitdex_sync'
    FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'")
  or die 'named worker not waiting again';
pass('named mode: after DROP EXTENSION the worker waits again');
$named->stop('fast');

# bitdex_sync.max_databases: past it a database gets no worker, says so, and
# the others keep theirs.
my $small = bitdex_node('small', "bitdex_sync.max_databases = 1\n");
create_extension($small);
$small->safe_psql('postgres', 'CREATE DATABASE db2');
my $small_log = -s $small->logfile;
$small->safe_psql('db2', 'CREATE EXTENSION bitdex_sync');
$small->wait_for_log(qr/no worker slot left for database "db2"/, $small_log);
like(slurp_file($small->logfile, $small_log),
  qr/WARNING:  bitdex_sync: no worker slot left for database "db2".*\n.*DETAIL:  bitdex_sync.max_databases \(1\) databases have a worker already.\n.*HINT:  Raise bitdex_sync.max_databases/,
  'max_databases: the database past it gets no worker, with a warning and a hint');
sleep 2;
is($small->safe_psql('postgres', "SELECT string_agg(datname, ',') FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'"),
  'postgres', 'max_databases: the first database keeps its worker, no retry loop for the other');
# At server start the launcher probes every database at once: one without
# the extension leaves before taking the only slot.
$small->safe_psql('postgres', 'DROP EXTENSION bitdex_sync');
$small_log = -s $small->logfile;
$small->restart;
$small->poll_query_until('postgres', "SELECT string_agg(datname, ',') FROM pg_stat_activity
    WHERE backend_type = 'bitdex_sync worker'", 'db2')
  or diag('workers: ' . $small->safe_psql('postgres', "SELECT string_agg(datname, ',') FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'"));
sleep 1;
is($small->safe_psql('postgres', "SELECT string_agg(datname, ',') FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'"),
  'db2', 'max_databases: after a restart the database with the extension has the slot');
unlike(slurp_file($small->logfile, $small_log), qr/no worker slot left/, '... the probe of the other did not take it');

# Databases left without a worker are shown (issue 17, item 13): the refused
# one has a "no worker" row naming the setting in every database's status()
# and a metric; wait_for_sync fails at once naming the setting; it holds no
# replication slot. At each restart the database that holds the slot keeps
# the worker (before, which one won was a race, and the loser's slot pinned
# server WAL).
$small->safe_psql('postgres', 'CREATE EXTENSION bitdex_sync');
my $db2_slot = 'bitdex_sync_' . $small->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'db2'");
my $pg_slot = 'bitdex_sync_' . $small->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'postgres'");
for my $restart (0 .. 3) {
  if ($restart) {
    $small->restart;
    $small->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'");
  }
  ok($small->poll_query_until('postgres', q{SELECT count(*) = 1 FROM bitdex_sync.status()
      WHERE source = 'slot' AND database = 'postgres' AND state = 'no worker' AND last_error LIKE '%max_databases%'}),
    "restart $restart: status() shows postgres without a worker, naming bitdex_sync.max_databases");
  is($small->safe_psql('db2', "SELECT string_agg(database || ' ' || state, ',' ORDER BY database) FROM bitdex_sync.status() WHERE source = 'slot'"),
    'db2 running,postgres no worker', "restart $restart: db2, which holds the slot, keeps the worker; db2's status() shows postgres too");
  is($small->safe_psql('postgres', "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots"),
    $db2_slot, "restart $restart: the refused database holds no replication slot");
}
my ($rc, $out, $err) = $small->psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
like($err, qr/no bitdex_sync worker runs for database "postgres".*\n.*DETAIL:  no worker: bitdex_sync.max_databases/,
  'wait_for_sync fails at once, naming bitdex_sync.max_databases');
like($small->safe_psql('postgres', 'SELECT bitdex_sync.metrics()'),
  qr/^bitdex_sync_worker_refused\{database="postgres",setting="bitdex_sync.max_databases"\} 1$/m,
  'metrics() counts the database refused a worker');
# A slot comes free (DROP EXTENSION where the worker ran): the refused
# database gets it without a restart (before, only at the next restart).
$small->safe_psql('db2', 'DROP EXTENSION bitdex_sync');
ok($small->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity
    WHERE backend_type = 'bitdex_sync worker' AND datname = 'postgres'}),
  'the refused database gets the worker slot that came free');
ok($small->poll_query_until('postgres', q{SELECT count(*) = 0 FROM bitdex_sync.status() WHERE state = 'no worker'}),
  '... and status() no longer shows it without one');
$small->stop('fast');

# Out of replication slots: status() shows PostgreSQL's error with its hint,
# which names the setting (before, only the message: "all replication slots
# are in use", or for origins "... replication origin with ID 14").
my $few = bitdex_node('few_slots', "max_replication_slots = 1\nmax_wal_senders = 1\n");
create_extension($few);
$few->safe_psql('postgres', 'CREATE DATABASE db2');
$few->safe_psql('db2', 'CREATE EXTENSION bitdex_sync');
ok($few->poll_query_until('db2', q{SELECT count(*) = 1 FROM bitdex_sync.status()
    WHERE source = 'slot' AND database = 'db2' AND last_error LIKE '%HINT: %max_replication_slots%'}),
  'out of replication slots: status() shows the error with the hint naming max_replication_slots')
  or diag($few->safe_psql('db2', "SELECT last_error FROM bitdex_sync.status() WHERE source = 'slot'"));
$few->stop('fast');

$node->stop('fast');
$log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal (11|6)|PANIC/, 'no segfault, abort or PANIC in the server log');
done_testing();
