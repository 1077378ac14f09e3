# Poison records under both policies and both sources, and the run history:
# - skip (default): a capture record that cannot be decoded is quarantined
#   with its position, bytes and reason; everything around it is written.
# - stop: its source stops in front of it (what came before is written, what
#   follows is not, the other source goes on), status() says so; after
#   switching to skip and reloading it is quarantined and the rest written,
#   nothing twice.
# - bitdex_sync.runs: a run killed with -9 is marked failed by the next one;
#   a clean stop is a success.
# - a crash between a durable batch and the commit of its quarantine rows
#   loses no quarantine row (fault injection).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BitdexTap;

my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";

my $node = bitdex_node('poison', "restart_after_crash = on\n");
my $wal_dir = wal_dir($node);

create_extension($node);
$node->safe_psql('postgres', q{
CREATE TABLE img (id int PRIMARY KEY, nsfw int NOT NULL);
CREATE TABLE box (id int PRIMARY KEY, v int NOT NULL);
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    track_fields: [nsfw]
  - table: box
    capture: outbox
    sets_alive: true
    track_fields: [v]
$$);
});

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub sync { sql("SELECT bitdex_sync.wait_for_sync('30s')"); }
# How many times entity $e was created in the ops WAL.
sub created {
  my ($e) = @_;
  my $dump = `$wal_tool dump $wal_dir`;
  return scalar(() = $dump =~ /"entity_id":$e,"creates_slot":true/g);
}
sub set_policy {
  my ($source, $policy) = @_;
  sql("ALTER SYSTEM SET bitdex_sync.on_poison_$source = '$policy'");
  sql('SELECT pg_reload_conf()');
  $node->poll_query_until('postgres', "SELECT current_setting('bitdex_sync.on_poison_$source') = '$policy'");
}
# A message the decoder cannot read but whose tag is valid (the trigger never
# writes one; a bug could): poison. An untagged one is not poison but a
# forgery, rejected without a trace in the ops WAL (007_security.pl).
my $poison = pack('q<', 77) . 'garbage';
my $poison_hex = unpack('H*', $poison);
my $bad_row = q{INSERT INTO bitdex_sync.ops (entity_id, ops) VALUES (%d, '[{"op": "frobnicate"}]')};

# --- skip ------------------------------------------------------------------
sql('INSERT INTO img VALUES (1, 1)');
emit_signed($node, $poison);
sql(sprintf($bad_row, 900));
sql('INSERT INTO img VALUES (2, 2)');
sql('INSERT INTO box VALUES (1001, 1)');
sync();
is(created(1) + created(2) + created(1001), 3, 'skip: the records around the poison are written');
like(sql("SELECT source || ' ' || payload || ' ' || (reason <> '')::int FROM bitdex_sync.quarantine WHERE source = 'slot'"),
  qr/^slot \\x02[0-9a-f]{32}$poison_hex 1$/, 'skip: the bad message is quarantined with its bytes and a reason');
like(sql("SELECT position FROM bitdex_sync.quarantine WHERE source = 'slot'"), qr{^[0-9A-F]+/[0-9A-F]+:\d+$},
  'skip: ... and its position (commit LSN:index)');
is(sql("SELECT entity_id || ' ' || payload FROM bitdex_sync.quarantine WHERE source = 'outbox'"),
  '900 [{"op": "frobnicate"}]', 'skip: the bad outbox row is quarantined with its entity and ops');
like(sql("SELECT reason FROM bitdex_sync.quarantine WHERE source = 'outbox'"), qr/frobnicate/,
  'skip: the reason names the unknown op');
is(sql("SELECT max(poison_ops) FROM bitdex_sync.status()"), '2', 'status() counts both');
is(sql('SELECT count(*) FROM bitdex_sync.ops'), '0', 'the outbox is empty');

# --- stop, slot ----------------------------------------------------------------
set_policy('slot', 'stop');
sql('INSERT INTO img VALUES (3, 3)');
emit_signed($node, $poison);
sql('INSERT INTO img VALUES (4, 4)');
$node->poll_query_until('postgres', "SELECT state = 'stopped at poison' FROM bitdex_sync.status() WHERE source = 'slot'")
  or die 'slot did not stop';
pass('stop: status() shows the slot stopped at the poison record');
like(sql("SELECT last_error FROM bitdex_sync.status() WHERE source = 'slot'"), qr/stopped at a bad capture record/,
  'stop: last_error says where');
is(created(3), 1, 'stop: what came before the poison is written');
is(created(4), 0, 'stop: what follows it is not');
sql('INSERT INTO box VALUES (1002, 2)');
$node->poll_query_until('postgres', "SELECT confirmed_id >= (SELECT max(id) FROM bitdex_sync.ops) OR NOT EXISTS (SELECT FROM bitdex_sync.ops) FROM bitdex_sync.status() WHERE source = 'outbox'")
  or die 'outbox stalled';
is(created(1002), 1, 'stop: the outbox goes on while the slot is stopped');
my ($rc, $out, $err) = $node->psql('postgres', "SELECT bitdex_sync.wait_for_sync('500ms')");
like($err, qr/timed out/, 'stop: wait_for_sync times out while the slot is stopped');
set_policy('slot', 'skip');
sync();
is(created(4), 1, 'after switching to skip: the rest is written');
is(created(3), 1, '... and nothing twice');
is(sql("SELECT count(*) FROM bitdex_sync.quarantine WHERE source = 'slot'"), '2', '... and the poison quarantined');
is(sql("SELECT state FROM bitdex_sync.status() WHERE source = 'slot'"), 'running', '... and the slot runs');

# --- stop, outbox ----------------------------------------------------------------
set_policy('outbox', 'stop');
sql('INSERT INTO box VALUES (1003, 3)');
sql(sprintf($bad_row, 901));
sql('INSERT INTO box VALUES (1004, 4)');
sql('INSERT INTO img VALUES (5, 5)');
$node->poll_query_until('postgres',
  "SELECT state = 'stopped at poison' FROM bitdex_sync.status() WHERE source = 'outbox'")
  or die 'outbox did not stop';
pass('stop: status() shows the outbox stopped');
$node->poll_query_until('postgres', "SELECT lag_bytes = 0 FROM bitdex_sync.status() WHERE source = 'slot'");
is(created(5), 1, 'stop: the slot goes on while the outbox is stopped');
is(created(1003), 1, 'stop: the outbox row before the poison is written');
is(created(1004), 0, 'stop: the one after it is not');
is(sql('SELECT string_agg(entity_id::text, \' \' ORDER BY id) FROM bitdex_sync.ops'), '901 1004',
  'stop: the poison row and the rest stay in the outbox');
set_policy('outbox', 'skip');
sync();
is(created(1004), 1, 'after switching to skip: the rest is written');
is(created(1003), 1, '... and nothing twice');
is(sql("SELECT count(*) FROM bitdex_sync.quarantine WHERE source = 'outbox'"), '2', '... and the poison quarantined');
is(sql('SELECT count(*) FROM bitdex_sync.ops'), '0', '... and the outbox is empty');

# --- run history ----------------------------------------------------------------
is(sql("SELECT count(*) FROM bitdex_sync.runs WHERE status = 'running'"), '1', 'one run is running');
my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'");
kill 'KILL', $pid;
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM bitdex_sync.runs", 't')
  or die 'no new run after kill -9';
is(sql("SELECT status || ' ' || (error LIKE '%without recording%')::int FROM bitdex_sync.runs ORDER BY id LIMIT 1"),
  'failed 1', 'the killed run is marked failed when the next starts');
is(sql("SELECT status FROM bitdex_sync.runs ORDER BY id DESC LIMIT 1"), 'running', 'the new run is running');
$node->restart;
$node->poll_query_until('postgres', "SELECT count(*) = 3 FROM bitdex_sync.runs", 't') or die 'no run after restart';
is(sql("SELECT status || ' ' || coalesce(error, '-') FROM bitdex_sync.runs ORDER BY id LIMIT 1 OFFSET 1"), 'success -',
  'a clean stop is a success');

# --- a crash right after a batch that passed a poison outbox row ----------------
# The batch is durable, the quarantine row and the outbox delete are not: the
# poison row must still reach the quarantine after the restart.
sql('ALTER SYSTEM SET bitdex_sync.fault_injection = on');
sql('SELECT pg_reload_conf()');
$node->poll_query_until('postgres', "SELECT current_setting('bitdex_sync.fault_injection') = 'on'");
my $fault = $node->data_dir . '/bitdex_sync.kill_after_batch';
open(my $fh, '>', $fault) or die "cannot create $fault: $!";
close($fh);
sql("BEGIN; INSERT INTO box VALUES (1005, 5); " . sprintf($bad_row, 902) . "; INSERT INTO box VALUES (1006, 6); COMMIT");
$node->poll_query_until('postgres', "SELECT NOT EXISTS (SELECT FROM bitdex_sync.ops)")
  or die 'the outbox was not emptied';
ok(!-e $fault, 'crash: the worker was killed after a durable batch');
like(slurp_file($node->logfile), qr/bitdex_sync worker.*was terminated by signal 9/, 'crash: ... by signal 9');
sync();
is(created(1005) . created(1006), '11', 'crash: the rows around the poison are written once');
is(sql("SELECT count(*) FROM bitdex_sync.quarantine WHERE source = 'outbox' AND entity_id = 902"), '1',
  'crash: the poison row is quarantined');
# The same for the slot: its quarantine row commits before the slot is
# confirmed, so the message is decoded again after the crash.
open($fh, '>', $fault) or die "cannot create $fault: $!";
close($fh);
emit_signed($node, $poison, before => ['INSERT INTO img VALUES (6, 6)'], after => ['INSERT INTO img VALUES (7, 7)']);
$node->poll_query_until('postgres', "SELECT count(*) = 3 FROM bitdex_sync.quarantine WHERE source = 'slot'")
  or die 'the third bad message was not quarantined';
ok(!-e $fault, 'crash, slot: the worker was killed after a durable batch');
sync();
is(created(6) . created(7), '11', 'crash, slot: the records around the poison are written once');

# --- a C++ exception no inner wall caught ----------------------------------------
# It ends the worker through its last catch (an ERROR, a restart of the
# worker alone), not std::terminate (which would make the postmaster
# reinitialize every backend: this open session would be lost).
my $session = $node->background_psql('postgres');
my $backend = $session->query_safe('SELECT pg_backend_pid()');
my $log_at = -s $node->logfile;
my $throw = $node->data_dir . '/bitdex_sync.throw_in_worker';
open($fh, '>', $throw) or die "cannot create $throw: $!";
close($fh);
$node->poll_query_until('postgres', "SELECT status = 'failed' AND error LIKE '%unexpected C++ exception%' FROM bitdex_sync.runs ORDER BY id DESC LIMIT 1")
  or die 'the exception did not end the run';
ok(!-e $throw, 'last catch: the worker met the exception');
is($session->query_safe('SELECT pg_backend_pid()'), $backend, 'last catch: other sessions live on (no crash restart)');
unlike(substr(slurp_file($node->logfile), $log_at), qr/terminating any other active server processes|terminate called/,
  'last catch: no std::terminate, no reinitialization');
$session->quit;
sql('INSERT INTO img VALUES (8, 8)');
sync();
is(created(8), '1', 'last catch: the restarted worker captures again');
$node->stop('fast');
done_testing();
