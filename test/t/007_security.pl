# Attacks on the worker and the ops WAL (issue 15):
# - forged capture messages: pg_logical_emit_message() is open to every
#   role; a message the capture trigger did not tag never reaches the ops WAL
#   and never stops the slot, whatever the poison policy (item 3).
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
my $wal_dir = $node->data_dir . '/bitdex_sync/postgres';
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
for my $what (sort keys %forged) {
  my $hex = unpack('H*', $forged{$what});
  my ($rc, $err) = as_mallory("SELECT pg_logical_emit_message(true, 'bitdex_sync', '\\x$hex'::bytea)");
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
# The same bytes with the server's tag are taken (what the trigger writes).
my $signed = signed_message($node, 'postgres', $entity . $ops);
sql("SELECT pg_logical_emit_message(true, 'bitdex_sync', '\\x$signed'::bytea)");
sync();
like(dump_wal(), qr/"entity_id":1000,"creates_slot":true,"ops":\[\{"op":"set","field":"lvl","value":42\}\]/,
  'with the capture key\'s tag the same bytes are a capture record');
ok(-f $node->data_dir . '/bitdex_sync.key', 'the capture key lives in the data directory');
is(sprintf('%04o', (stat($node->data_dir . '/bitdex_sync.key'))[2] & 07777), '0600', '... readable by the server only');
my ($rc, $err) = as_mallory(q{SELECT pg_read_binary_file('bitdex_sync.key')});
like($err, qr/permission denied/, 'a role without grants cannot read the key');
set_conf('bitdex_sync.on_poison_slot', 'skip');

$node->stop('fast');
done_testing();
