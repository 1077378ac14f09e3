# The capture worker: lifecycle (none before the extension exists, SIGHUP),
# then crash loops — kill -9 of the worker and of the postmaster
# at random moments under a write load on both sinks (a message source and an
# outbox source, some transactions writing both) — after which every committed
# row is in the ops WAL exactly once, in position order per source, no
# aborted one is, and the outbox is empty.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use BitdexTap;

my $kills = $ENV{BITDEX_TAP_KILLS} // 20;
my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";

my $node = bitdex_node('worker', "restart_after_crash = on\n");
my $wal_dir = wal_dir($node);

sub worker_pid {
  return $node->safe_psql('postgres',
    "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'");
}

# Before CREATE EXTENSION only the launcher runs (005_launcher.pl tests it).
$node->poll_query_until('postgres',
  "SELECT count(*) FILTER (WHERE backend_type = 'bitdex_sync launcher') = 1
      AND count(*) FILTER (WHERE backend_type = 'bitdex_sync worker') = 0 FROM pg_stat_activity")
  or die "launcher not alone";
pass('no worker before the extension exists');

# In the transaction that creates the extension the worker cannot have its
# slot yet: apply_config refuses message sources rather than lose changes.
my ($rc, $out, $err) = $node->psql('postgres', q{
BEGIN;
CREATE EXTENSION bitdex_sync;
CREATE TABLE early (id int PRIMARY KEY, v int);
SELECT bitdex_sync.apply_config('{"sources": [{"table": "early", "track_fields": ["v"]}]}'::jsonb);
COMMIT;
});
like($err, qr/has not created its replication slot/, 'apply_config refuses message sources before the slot exists');
create_extension($node);
$node->safe_psql('postgres', q{
CREATE TABLE img (id serial PRIMARY KEY, nsfw int NOT NULL);
-- Outbox rows get entity ids far from img's, so dedup never merges the two.
CREATE TABLE box (id serial PRIMARY KEY, v int NOT NULL);
ALTER SEQUENCE box_id_seq RESTART 100000000;
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    on_delete: true
    track_fields: [nsfw]
  - table: box
    capture: outbox
    sets_alive: true
    track_fields: [v]
$$);
});
$node->poll_query_until('postgres', "SELECT bool_and(state = 'running') FROM bitdex_sync.status()")
  or die "worker not running";
$node->safe_psql('postgres', "INSERT INTO img (nsfw) SELECT g % 5 FROM generate_series(1, 100) g");
is($node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')"), 't', 'wait_for_sync returns');
my $dump = `$wal_tool dump $wal_dir`;
is(scalar(() = $dump =~ /"creates_slot":true/g), 100, '100 inserts are in the ops WAL');

# SIGHUP reloads without a restart.
my $pid = worker_pid();
$node->append_conf('postgresql.conf', "bitdex_sync.batch_max_ops = 50\n");
$node->reload;
$node->safe_psql('postgres', "INSERT INTO img (nsfw) SELECT 1 FROM generate_series(1, 120)");
$node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
is(worker_pid(), $pid, 'SIGHUP does not restart the worker');
cmp_ok($node->safe_psql('postgres', "SELECT batches FROM bitdex_sync.status() WHERE source = 'slot'"), '>=', 4,
  'the reloaded batch_max_ops splits a 120-row transaction');

# Crash loops under load: one row per transaction into img (message sink)
# or box (outbox sink), every seventh transaction writes both, every tenth
# rolls back. The tables are the truth after each recovery.
my $load = join('', map {
    $_ % 10 == 0 ? "BEGIN; INSERT INTO img (nsfw) VALUES (99); INSERT INTO box (v) VALUES (99); ROLLBACK;\n"
  : $_ % 7 == 0 ? "BEGIN; INSERT INTO img (nsfw) VALUES (7); INSERT INTO box (v) VALUES (7); COMMIT;\n"
  : $_ % 2 == 0 ? "INSERT INTO box (v) VALUES ($_ % 5);\n"
  : "INSERT INTO img (nsfw) VALUES ($_ % 5);\n" } 1 .. 400);
sub start_load {
  my ($in, $out, $err) = ($load, '', '');
  return IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres') ],
    '<', \$in, '>', \$out, '2>', \$err);
}
sub crash_round {
  my ($what) = @_;
  my $h = start_load();
  select(undef, undef, undef, rand(0.4));
  if ($what eq 'worker') {
    my $p = worker_pid();
    kill 'KILL', $p if $p;
  } else {
    $node->kill9;
  }
  eval { $h->finish };
  start_after_kill9($node) if $what eq 'postmaster';
  # The worker is back (the postmaster restarts everything after a crash).
  $node->poll_query_until('postgres', "SELECT bool_and(state = 'running') FROM bitdex_sync.status()", 't')
    or die "worker did not come back after killing the $what";
}
for my $what ('worker', 'postmaster') {
  crash_round($what) for 1 .. $kills;
  pass("$kills kill -9 of the $what survived");
}

# One last load without crashes, then everything must be durable.
my $h = start_load();
$h->finish;
$node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('60s')");
$dump = `$wal_tool dump $wal_dir`;
# Per source: positions never repeat and rise; each row created once.
sub check_source {
  my ($name, $pattern, $key, $table) = @_;
  my (%created, %positions, $dup_positions, $last);
  my $ordered = 1;
  for my $line (split /\n/, $dump) {
    next unless $line =~ $pattern;
    my ($pos, $entity, $creates) = ($key->(), $+{entity}, $+{creates});
    $dup_positions++ if $positions{$pos}++;
    $ordered = 0 if defined $last && $pos le $last;
    $last = $pos;
    $created{$entity}++ if $creates eq 'true';
  }
  my @ids = split /\n/, $node->safe_psql('postgres', "SELECT id FROM $table ORDER BY id");
  my @missing = grep { !$created{$_} } @ids;
  my %in_table = map { $_ => 1 } @ids;
  my @extra = grep { !$in_table{$_} } keys %created;
  my @twice = grep { $created{$_} > 1 } keys %created;
  ok(!$dup_positions, "$name: no source position twice in the ops WAL");
  ok($ordered, "$name: positions rise through the ops WAL");
  is(scalar(@missing), 0, "$name: every committed row is in the ops WAL (" . scalar(@ids) . ' rows)')
    or diag("missing: @missing[0 .. 9]");
  is(scalar(@extra), 0, "$name: nothing from an aborted transaction") or diag("extra: @extra[0 .. 9]");
  is(scalar(@twice), 0, "$name: every row exactly once");
}
check_source('slot',
  qr/"lsn":"(?<hi>[0-9A-F]+)\/(?<lo>[0-9A-F]+)","index":(?<i>\d+)\},"entity_id":(?<entity>\d+),"creates_slot":(?<creates>true|false)/,
  sub { sprintf('%08X%08X:%010d', hex($+{hi}), hex($+{lo}), $+{i}) }, 'img');
check_source('outbox',
  qr/"stream":"outbox","id":(?<id>\d+)\},"entity_id":(?<entity>\d+),"creates_slot":(?<creates>true|false)/,
  sub { sprintf('%020d', $+{id}) }, 'box');
diag('records skipped as already durable after restarts: ' .
  $node->safe_psql('postgres', "SELECT records_skipped FROM bitdex_sync.status() WHERE source = 'slot'"));
is($node->safe_psql('postgres', 'SELECT count(*) FROM bitdex_sync.ops'), '0', 'the outbox is empty once written');
is(system("$wal_tool verify $wal_dir > /dev/null"), 0, 'bitdex-wal verify accepts the WAL');

# DROP EXTENSION: the worker drops its slot and replication origin, and ends.
my $origins = "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'bitdex_sync_%'";
is($node->safe_psql('postgres', $origins), '1', 'the worker has its replication origin');
$node->safe_psql('postgres', 'DROP EXTENSION bitdex_sync CASCADE');
$node->poll_query_until('postgres',
  "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'bitdex_sync_%'")
  or die "slot not dropped";
pass('drop extension drops the slot');
$node->poll_query_until('postgres',
  "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'")
  or die "worker still running";
pass('the worker ends once the extension is dropped');
is($node->safe_psql('postgres', $origins), '0', 'drop extension drops the replication origin');

# SIGTERM: a clean stop. Over the whole run the worker never crashed by
# itself (only the kills above ended it).
$node->stop('fast');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal (11|6)|PANIC/, 'no segfault, abort or PANIC in the server log');
like($log, qr/bitdex_sync: created logical replication slot/, 'the worker created its slot');
done_testing();
