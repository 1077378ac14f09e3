# Attacks on the worker and the ops WAL, and routine operations that used to
# lose committed changes silently (issue 15):
# - forged capture messages: pg_logical_emit_message() is open to every
#   role; a message the capture trigger did not tag never reaches the ops WAL
#   and never stops the slot, whatever the poison policy (item 3);
# - a capture trigger disabled where the DDL guard did not run is found by
#   the worker and shown as a gap (item 5);
# - DROP EXTENSION with rows waiting in the outbox is refused (item 8);
# - DROP and CREATE EXTENSION, or a database dropped and made again under its
#   name, start a new ops WAL and never take an old WAL's marks (item 6);
# - an ops WAL truncated deep (or gone) is refused at start, naming what was
#   acknowledged, until bitdex_sync.start_new_wal() (item 7).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BitdexTap;

my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";

my $node = bitdex_node('security');
create_extension($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub sync { sql("SELECT bitdex_sync.wait_for_sync('30s')"); }
my $wal_dir = wal_dir($node);
sub dump_wal { return scalar `$wal_tool dump $wal_dir`; }
sub set_conf {
  my ($name, $value) = @_;
  sql("ALTER SYSTEM SET $name = '$value'");
  sql('SELECT pg_reload_conf()');
  $node->poll_query_until('postgres', "SELECT current_setting('$name') = '$value'");
}

sql(q{
CREATE ROLE mallory LOGIN;
CREATE TABLE img (id int PRIMARY KEY, lvl int NOT NULL);
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    track_fields: [lvl]
$$);
});
sub as_mallory {
  my ($query) = @_;
  my ($rc, $out, $err) = $node->psql('postgres', $query, extra_params => ['-U', 'mallory']);
  return ($rc, $err);
}

# --- item 3: forged capture messages ----------------------------------------------
# "entity 1000: set lvl = 42, alive", in the op codec: 2 ops; set "lvl" int 42
# (zigzag 84); alive.
my $ops = "\x02" . "\x01\x03lvl\x03\x54" . "\x05";
my $entity = pack('q<', 1000);
my %forged = (
  'format 1 (no tag)' => "\x01" . $entity . $ops,
  'format 2, zero tag' => "\x02" . ("\0" x 16) . $entity . $ops,
  'format 2, tag of another key' => pack('H*', '02') . ("\x5a" x 16) . $entity . $ops,
  'one zero byte' => "\x00",
);
set_conf('bitdex_sync.on_poison_slot', 'stop');
sql('INSERT INTO img VALUES (1, 1)');
my ($rc, $err);
for my $what (sort keys %forged) {
  my $hex = unpack('H*', $forged{$what});
  ($rc, $err) = as_mallory("SELECT pg_logical_emit_message(true, 'bitdex_sync', '\\x$hex'::bytea)");
  is($rc, 0, "forged message ($what): a role without grants may emit it") or diag($err);
}
sql('INSERT INTO img VALUES (2, 2)');
sync();
my $dump = dump_wal();
like($dump, qr/"entity_id":1,"creates_slot":true/, 'the row before the forgeries is written');
like($dump, qr/"entity_id":2,"creates_slot":true/, 'the row after them is written: the slot did not stop');
unlike($dump, qr/"entity_id":1000/, 'no forged record reaches the ops WAL');
is(sql("SELECT state FROM bitdex_sync.status() WHERE source = 'slot'"), 'running',
  'the slot runs under on_poison_slot = stop');
is(sql("SELECT rejected_messages FROM bitdex_sync.status() WHERE source = 'slot'"), scalar(keys %forged),
  'status() counts the rejected messages');
is(sql("SELECT count(*) FROM bitdex_sync.quarantine"), '0', 'forgeries are not quarantined (no table to fill)');
like(sql('SELECT bitdex_sync.metrics()'), qr/^bitdex_sync_rejected_messages_total\{database="postgres"\} 4$/m,
  'metrics() counts them');
like(slurp_file($node->logfile), qr/rejected a logical message with prefix "bitdex_sync"/, 'the log says so');
# The same bytes with the server's tag for their transaction are taken
# (what the trigger writes) ...
my $signed = emit_signed($node, $entity . $ops);
sync();
like(dump_wal(), qr/"entity_id":1000,"creates_slot":true,"ops":\[\{"op":"set","field":"lvl","value":42\}\]/,
  'with the capture key\'s tag the same bytes are a capture record');
# ... but not when copied into another transaction (a role that could read
# the message, with REPLICATION say, cannot replay it).
($rc, $err) = as_mallory("SELECT pg_logical_emit_message(true, 'bitdex_sync', '\\x$signed'::bytea)");
is($rc, 0, 'a replay may be emitted') or diag($err);
sql('INSERT INTO img VALUES (3, 3)');
sync();
is(scalar(() = dump_wal() =~ /"entity_id":1000,/g), 1, 'a tagged message replayed in another transaction is rejected');
is(sql("SELECT rejected_messages FROM bitdex_sync.status() WHERE source = 'slot'"), scalar(keys %forged) + 1,
  '... and counted');
ok(-f $node->data_dir . '/bitdex_sync.key', 'the capture key lives in the data directory');
is(sprintf('%04o', (stat($node->data_dir . '/bitdex_sync.key'))[2] & 07777), '0600', '... readable by the server only');
($rc, $err) = as_mallory(q{SELECT pg_read_binary_file('bitdex_sync.key')});
like($err, qr/permission denied/, 'a role without grants cannot read the key');
set_conf('bitdex_sync.on_poison_slot', 'skip');

# --- one huge value: refused in the writing statement, not a stalled worker -----
sql(q{
CREATE TABLE big (id int PRIMARY KEY, t text);
GRANT INSERT ON big TO mallory;
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    track_fields: [lvl]
  - table: big
    sets_alive: true
    track_fields: [t]
$$);
});
($rc, $err) = as_mallory(q{INSERT INTO big VALUES (1, repeat('a', 65 * 1024 * 1024))});
like($err, qr/captured change of entity 1 is \d+ bytes, more than 64 MB/, 'a change too large for a capture record is refused');
($rc, $err) = as_mallory(q{INSERT INTO big VALUES (2, repeat('b', 1000))});
is($rc, 0, 'smaller ones go through') or diag($err);
sync();
like(dump_wal(), qr/"entity_id":2,"creates_slot":true/, '... and the worker writes them');
is(sql("SELECT state FROM bitdex_sync.status() WHERE source = 'slot'"), 'running', '... and runs');

# --- item 5: a gap where the guard did not run ----------------------------------
# A superuser can switch the guard itself off; the worker still notices.
sql(q{ALTER EVENT TRIGGER bitdex_sync_guard DISABLE});
sql(q{ALTER TABLE img DISABLE TRIGGER ALL});
sql(q{ALTER EVENT TRIGGER bitdex_sync_guard ENABLE ALWAYS});
# Both of img's capture triggers: the row trigger and the TRUNCATE trigger.
$node->poll_query_until('postgres', "SELECT count(*) = 2 FROM bitdex_sync.capture_gaps WHERE detected_by = 'worker'")
  or die 'the worker did not record the gaps';
is(sql("SELECT string_agg(source || ' ' || trigger_name || ' ' || problem, ', ' ORDER BY trigger_name) FROM bitdex_sync.capture_gaps"),
  'img bitdex_img_2200a7ef disabled, img bitdex_img_2200a7ef_t disabled',
  'the worker records both capture triggers disabled behind the guard');
is(sql("SELECT string_agg(state, ', ') FROM bitdex_sync.status() WHERE source = 'img'"), 'capture gap, capture gap',
  'status() shows each gap');
like(slurp_file($node->logfile), qr/capture gap recorded: source "img"/, 'the log says so');
is(sql(q{SELECT string_agg(source || ' ' || action, ', ' ORDER BY source) FROM bitdex_sync.apply_config('{"sources":[{"table":"img","sets_alive":true,"track_fields":["lvl"]}]}')}),
  'big drop, img enable', 'apply_config enables it again');
is(sql("SELECT string_agg(state, ', ') FROM bitdex_sync.status() WHERE source = 'img'"),
  'capture gap (restored), capture gap (restored)', 'the gaps are shown as restored until they are dealt with');
sql('DELETE FROM bitdex_sync.capture_gaps');

# --- item 8: DROP EXTENSION with rows in the outbox --------------------------------
sql(q{
CREATE TABLE box (id int PRIMARY KEY, v int NOT NULL);
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    track_fields: [lvl]
  - table: box
    capture: outbox
    sets_alive: true
    track_fields: [v]
$$);
});
# Rows held in the outbox: the source stops in front of a poison row.
set_conf('bitdex_sync.on_poison_outbox', 'stop');
sql(q{INSERT INTO bitdex_sync.ops (entity_id, ops) VALUES (5000, '[{"op": "frobnicate"}]')});
sql('INSERT INTO box SELECT g, g FROM generate_series(1, 300) g');
$node->poll_query_until('postgres', "SELECT state = 'stopped at poison' FROM bitdex_sync.status() WHERE source = 'outbox'")
  or die 'the outbox did not stop';
($rc, my $out, $err) = $node->psql('postgres', 'DROP EXTENSION bitdex_sync CASCADE');
isnt($rc, 0, 'DROP EXTENSION is refused while rows wait in the outbox');
like($err, qr/301 captured rows .* wait in the outbox/, '... saying how many');
($rc, $out, $err) = $node->psql('postgres', 'DROP SCHEMA bitdex_sync CASCADE');
like($err, qr/301 captured rows .* wait in the outbox/, 'so is DROP SCHEMA bitdex_sync CASCADE');
($rc, $out, $err) = $node->psql('postgres', 'DROP OWNED BY CURRENT_USER CASCADE');
like($err, qr/301 captured rows .* wait in the outbox/, 'and DROP OWNED BY the extension\'s owner');
is(sql('SELECT count(*) FROM bitdex_sync.ops'), '301', '... and they are still there');
set_conf('bitdex_sync.on_poison_outbox', 'skip');
sync();
is(scalar(() = dump_wal() =~ /"entity_id":(?:[1-9]|[1-9]\d|[12]\d\d|300),"creates_slot":true,"ops":\[\{"op":"set","field":"v"/g), 300,
  'once the outbox drained, its 300 rows are in the ops WAL');

# --- item 6: a new installation starts a new ops WAL ---------------------------------
my $old_wal_id = sql('SELECT lpad(to_hex(wal_id), 16, \'0\') FROM bitdex_sync.instance');
my $old_mark = sql('SELECT outbox_acked FROM bitdex_sync.instance');
ok($old_mark >= 301, "the outbox is acknowledged up to id $old_mark");
# The same drop once drained, and at once a new installation.
($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION bitdex_sync CASCADE; CREATE EXTENSION bitdex_sync');
is($rc, 0, 'DROP EXTENSION goes through once the outbox is empty') or diag($err);
like($err, qr/an ops WAL of an earlier installation of bitdex_sync is in/, 'CREATE EXTENSION says an old ops WAL is there');
sync();
sql('TRUNCATE box');  # before it is captured again
sql(q{
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: box
    capture: outbox
    sets_alive: true
    track_fields: [v]
$$);
});
sql('INSERT INTO box SELECT g, g FROM generate_series(1, 250) g');
sync();
my $new_wal_id = sql('SELECT lpad(to_hex(wal_id), 16, \'0\') FROM bitdex_sync.instance');
isnt($new_wal_id, $old_wal_id, "the new installation writes a new ops WAL ($new_wal_id, was $old_wal_id)");
ok(-d "$wal_dir.retired-$old_wal_id", 'the old one was moved aside, not appended to');
is(scalar(() = dump_wal() =~ /"creates_slot":true/g), 250,
  'every one of the 250 rows is in the new WAL (ids restart at 1, below the old WAL\'s outbox mark)');
like(`$wal_tool dump $wal_dir.retired-$old_wal_id`, qr/"entity_id":300,"creates_slot":true/,
  'the old WAL is intact where it was moved');

# The same for a database dropped and made again under its name.
sub in_db { return $node->safe_psql($_[0], $_[1]); }
sql('CREATE DATABASE again');
in_db('again', 'CREATE EXTENSION bitdex_sync');
in_db('again', "SELECT bitdex_sync.wait_for_sync('30s')");
my $config = q{SELECT count(*) FROM bitdex_sync.apply_config('{"sources":[{"table":"t","capture":"outbox","sets_alive":true,"track_fields":["v"]}]}')};
in_db('again', "CREATE TABLE t (id int PRIMARY KEY, v int); $config");
in_db('again', 'INSERT INTO t SELECT g, g FROM generate_series(1, 200) g');
in_db('again', "SELECT bitdex_sync.wait_for_sync('30s')");
my $first_dir = wal_dir($node, 'again');
in_db('again', 'DROP EXTENSION bitdex_sync CASCADE');
sql('DROP DATABASE again');
sql('CREATE DATABASE again');
in_db('again', 'CREATE EXTENSION bitdex_sync');
in_db('again', "SELECT bitdex_sync.wait_for_sync('30s')");
in_db('again', "CREATE TABLE t (id int PRIMARY KEY, v int); $config");
in_db('again', 'INSERT INTO t SELECT g, g FROM generate_series(1, 250) g');
in_db('again', "SELECT bitdex_sync.wait_for_sync('30s')");
my $second_dir = wal_dir($node, 'again');
isnt($second_dir, $first_dir, 'a database made again under a dropped one\'s name writes to a directory of its own');
is(scalar(() = `$wal_tool dump $second_dir` =~ /"creates_slot":true/g), 250, '... with all of its 250 rows');
in_db('again', 'DROP EXTENSION bitdex_sync CASCADE');
sql('DROP DATABASE again');

# A dump restored into another database is another installation: the guard
# lets the restore's DDL through; the restored triggers refuse writes (their
# recorded OIDs and trees are the old database's) until the config is
# applied again, which replaces them.
my $dumpfile = $node->basedir . '/again.dump';
in_db('postgres', 'CREATE DATABASE orig');
in_db('orig', 'CREATE EXTENSION bitdex_sync');
in_db('orig', "SELECT bitdex_sync.wait_for_sync('30s')");
in_db('orig', "CREATE TABLE t (id int PRIMARY KEY, v int); $config");
in_db('orig', 'INSERT INTO t VALUES (1, 1)');
$node->command_ok(['pg_dump', '-Fc', '-f', $dumpfile, '-d', $node->connstr('orig')], 'pg_dump of a database with the extension');
in_db('postgres', 'CREATE DATABASE restored');
$node->command_ok(['pg_restore', '-d', $node->connstr('restored'), $dumpfile], 'pg_restore goes through the capture guard');
in_db('restored', "SELECT bitdex_sync.wait_for_sync('30s')");
($rc, $out, $err) = $node->psql('restored', 'INSERT INTO t VALUES (2, 2)');
like($err, qr/is not a capture trigger of bitdex_sync/, 'a restored capture trigger refuses writes until the config is applied');
like(in_db('restored', "SELECT string_agg(state || ': ' || last_error, ' ') FROM bitdex_sync.status() WHERE source = 't'"),
  qr/capture gap: .*recorded by an earlier installation/, 'status() says why');
is(in_db('restored', "SELECT action FROM bitdex_sync.apply_config((SELECT config FROM bitdex_sync.config_history ORDER BY id DESC LIMIT 1))"),
  'replace', 'applying the last config again replaces the restored trigger');
in_db('restored', 'INSERT INTO t VALUES (2, 2)');
in_db('restored', "SELECT bitdex_sync.wait_for_sync('30s')");
like(`$wal_tool dump ${\ wal_dir($node, 'restored')}`, qr/"entity_id":2,"creates_slot":true/, '... and capture works');
for my $db ('orig', 'restored') {
  in_db($db, 'DROP EXTENSION bitdex_sync CASCADE');
  in_db('postgres', "DROP DATABASE $db");
}

# --- item 7: an ops WAL that lost acknowledged batches is refused ----------------------
sql('INSERT INTO box SELECT g, g FROM generate_series(1001, 1020) g') for 1 .. 1;
for my $i (1 .. 20) { sql("INSERT INTO box VALUES (2000 + $i, $i)"); sync(); }
# Cut the newest segment at the end of a batch ten batches back: a clean
# cut, not a torn write, so nothing at start may repair it away.
my @ends = map { /"segment":(\d+),"offset":(\d+)/ ? [$1, $2] : () } grep { /"batch_end"/ } split /\n/, dump_wal();
my ($gen, $cut) = @{ $ends[-11] };
my $seg = sprintf('%s/%016x.seg', $wal_dir, $gen);
$node->stop('fast');
truncate($seg, $cut) or die "cannot truncate $seg: $!";
$node->start;
$node->poll_query_until('postgres', "SELECT last_error LIKE '%ends before what the %acknowledged%' FROM bitdex_sync.status() WHERE source = 'slot'")
  or die 'the worker did not refuse the truncated WAL';
like(sql("SELECT last_error FROM bitdex_sync.status() WHERE source = 'slot'"), qr/ends before what the (outbox|slot) acknowledged/,
  'a WAL cut deep below what was acknowledged is refused at start');
like(slurp_file($node->logfile), qr/covers the (outbox|slot) up to .*acknowledged up to/, 'the log names both positions');
is(-s $seg, $cut, 'nothing more is cut or written');
sql('INSERT INTO box VALUES (3001, 1)');
($rc, $out, $err) = $node->psql('postgres', "SELECT bitdex_sync.wait_for_sync('2s')");
isnt($rc, 0, 'wait_for_sync does not pretend it is in sync');
is(sql('SELECT bitdex_sync.start_new_wal()'), $new_wal_id, 'start_new_wal() gives up the damaged WAL');
sync();
my $third_wal_id = sql('SELECT lpad(to_hex(wal_id), 16, \'0\') FROM bitdex_sync.instance');
isnt($third_wal_id, $new_wal_id, '... and the worker starts another');
ok(-d "$wal_dir.retired-$new_wal_id", '... after moving the damaged one aside');
like(dump_wal(), qr/"entity_id":3001,"creates_slot":true/, 'changes committed meanwhile are in it');
is(sql(q{SELECT string_agg(source, ', ' ORDER BY id) FROM bitdex_sync.loads WHERE reason = 'new ops WAL'}),
  sql(q{SELECT string_agg(name, ', ' ORDER BY name) FROM bitdex_sync.sources}), '... and registers a load of every source');
$node->safe_psql('postgres', q{SELECT bitdex_sync.wait_for_loads('60s')});
like(dump_wal(), qr/"position":\{"stream":"load","load":\d+,"chunk":\d+\},"entity_id":2001,/,
  'rows from before are in the new WAL through that load');

# A WAL directory removed is refused too, never started afresh in silence.
$node->stop('fast');
system('rm', '-rf', $wal_dir) == 0 or die "cannot remove $wal_dir";
$node->start;
$node->poll_query_until('postgres', "SELECT last_error LIKE '%is missing from%' FROM bitdex_sync.status() WHERE source = 'slot'")
  or die 'the worker did not refuse the missing WAL';
pass('a removed ops WAL directory is refused');
ok(!-e "$wal_dir/0000000000000001.seg", 'no new WAL was started in its place');

$node->stop('fast');
done_testing();
