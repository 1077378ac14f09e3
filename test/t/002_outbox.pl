# The outbox reader never passes an id a running transaction may still
# commit: two concurrent transactions, the lower id committing last, nothing
# skipped; a rolled-back id is passed over; rows are deleted once durable;
# wait_for_sync covers the outbox; status() shows the rows waiting; the ops
# read from the outbox equal those the message sink gives for the same changes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Time::HiRes qw(usleep);
use Test::More;
use BitdexTap;

my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";

my $node = bitdex_node('outbox');
my $wal_dir = wal_dir($node);

create_extension($node);
$node->safe_psql('postgres', q{
CREATE TABLE box (id int PRIMARY KEY, v int NOT NULL);
SELECT count(*) FROM bitdex_sync.apply_config($$
capture: outbox
sources:
  - table: box
    sets_alive: true
    track_fields: [v]
$$);
});

# The outbox ids written to the ops WAL, in WAL order, with their entity.
sub written {
  my @out;
  for (split /\n/, `$wal_tool dump $wal_dir`) {
    push @out, "$1:$2" if /"stream":"outbox","id":(\d+)\},"entity_id":(\d+)/;
  }
  return join(' ', @out);
}
sub outbox_id {
  my ($entity) = @_;
  return $node->safe_psql('postgres', "SELECT id FROM bitdex_sync.ops WHERE entity_id = $entity");
}

$node->safe_psql('postgres', 'INSERT INTO box VALUES (1, 1)');
$node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
like(written(), qr/^\d+:1$/, 'a committed outbox row is written');
is($node->safe_psql('postgres', 'SELECT count(*) FROM bitdex_sync.ops'), '0', 'and deleted once durable');

# Late committer: A draws the lower id, B the higher; B commits first.
my $sa = $node->background_psql('postgres');
$sa->query_safe('BEGIN');
$sa->query_safe('INSERT INTO box VALUES (2, 2)');
my $id_a = $sa->query_safe('SELECT id FROM bitdex_sync.ops WHERE entity_id = 2');
$node->safe_psql('postgres', 'INSERT INTO box VALUES (3, 3)');
my $id_b = outbox_id(3);
cmp_ok($id_a, '<', $id_b, "A drew the lower id ($id_a < $id_b)");
# The worker is woken by B's commit and runs many cycles meanwhile.
sleep 1;
unlike(written(), qr/:3\b/, 'B is not written while A, holding a lower id, runs');
is($node->safe_psql('postgres', "SELECT lag_ops FROM bitdex_sync.status() WHERE source = 'outbox'"), '1',
  'status() shows the row waiting');
my ($rc, $stdout, $stderr) = $node->psql('postgres', "SELECT bitdex_sync.wait_for_sync('300ms')");
like($stderr, qr/wait_for_sync timed out/, 'wait_for_sync waits for the outbox too (times out while A runs)');
$sa->query_safe('COMMIT');
$node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
like(written(), qr/ $id_a:2 $id_b:3$/, 'after A commits, both are written, in id order, nothing skipped');

# A rolled-back id is passed over; the committed one after it is written.
$sa->query_safe('BEGIN');
$sa->query_safe('INSERT INTO box VALUES (4, 4)');
$node->safe_psql('postgres', 'INSERT INTO box VALUES (5, 5)');
$sa->query_safe('ROLLBACK');
$node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
like(written(), qr/:3 \d+:5$/, 'after a rollback the next committed row is written');
unlike(written(), qr/:4\b/, 'nothing from the rolled-back transaction');

# Four writers at once, one row per transaction, each transaction sleeping
# a random moment after drawing its id: every row exactly once, ids rising.
$sa->quit;
my @writers;
for my $w (0 .. 3) {
  my $script = join('', map {
    my $e = 100 + $w * 100 + $_;
    "BEGIN; INSERT INTO box VALUES ($e, $_); SELECT pg_sleep(random() * 0.02); COMMIT;\n" } 1 .. 25);
  push @writers, IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
    '<', \$script, '>', \my $o, '2>', \my $e);
}
$_->finish or die "a writer failed" for @writers;
$node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
my @ids = map { (split /:/)[0] } split / /, written();
is(scalar(@ids), 104, 'every committed row once (4 + 100)');
is_deeply([ sort { $a <=> $b } @ids ], \@ids, 'ids rise through the ops WAL');
is($node->safe_psql('postgres', 'SELECT count(*) FROM bitdex_sync.ops'), '0', 'the outbox is empty');
is($node->safe_psql('postgres', "SELECT confirmed_id FROM bitdex_sync.status() WHERE source = 'outbox'"),
  $ids[-1], 'status() confirms the last id');

# The outbox reader walks the stored jsonb itself (no text round trip): the
# same changes captured through both sinks give the same ops in the WAL.
# Values with escapes, unicode, big, negative and scaled numbers, NaN,
# booleans, NULLs, timestamps, floats PostgreSQL prints with an exponent
# (both sinks write them as numeric prints them, as the outbox's jsonb does).
$node->safe_psql('postgres', q{
CREATE TABLE via_msg (id int PRIMARY KEY, s text, n numeric, f float8, b boolean, i bigint, t timestamptz);
CREATE TABLE via_box (LIKE via_msg INCLUDING ALL);
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: box
    capture: outbox
    sets_alive: true
    track_fields: [v]
  - table: via_msg
    sets_alive: true
    track_fields: [s, n, f, b, i, t]
  - table: via_box
    capture: outbox
    sets_alive: true
    track_fields: [s, n, f, b, i, t]
$$);
});
my @rows = (
  q{'plain', 1, 1.5, true, 1, '2024-02-01 10:00:00.5+02'},
  q{E'quote " backslash \\\\ tab \t newline \n', -0.000100, -2.5, false, -9223372036854775808, NULL},
  q{'ünïcødé ✓ 🚀', 123456789012345678901234567890.123456789, 'NaN', NULL, 9223372036854775807, 'infinity'},
  q{'', 1.50, 'Infinity', true, 0, '1999-12-31 23:59:59+00'},
  q{NULL, NULL, NULL, NULL, NULL, NULL},
  q{E'\\u0001 control', 0, 0, false, 42, now()},
  q{'exponents', 1e-7, 1e20, true, 1, NULL},
  q{'small', 2, 2.5e-300, false, 2, NULL},
  q{'negative', 3, -1.5e-10, NULL, 3, NULL});
my $n = scalar(@rows);
for my $k (1 .. $n) {
  my $values = $rows[ $k - 1 ];
  $node->safe_psql('postgres', "INSERT INTO via_msg VALUES (" . (10000 + $k) . ", $values)");
  $node->safe_psql('postgres', "INSERT INTO via_box SELECT " . (20000 + $k) . ", s, n, f, b, i, t FROM via_msg WHERE id = " . (10000 + $k));
}
$node->safe_psql('postgres', "UPDATE via_msg SET s = s || '!', n = n * 2");
$node->safe_psql('postgres', "UPDATE via_box SET s = s || '!', n = n * 2");
$node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
my (%msg, %box);
for my $line (split /\n/, `$wal_tool dump $wal_dir`) {
  next unless $line =~ /"entity_id":(\d+),"creates_slot":(true|false),"ops":(.*)\}$/;
  my ($entity, $ops) = ($1, "$2 $3");
  push @{ $msg{ $entity - 10000 } }, $ops if $entity > 10000 && $entity <= 10000 + $n;
  push @{ $box{ $entity - 20000 } }, $ops if $entity > 20000 && $entity <= 20000 + $n;
}
is(scalar(keys %box), $n, "every outbox row of the comparison is in the ops WAL ($n)");
is_deeply(\%box, \%msg, 'the outbox gives the same ops as the message sink for the same changes');
like(join("\n", map { @$_ } values %box), qr/\\ud83d\\ude80|🚀/, 'the comparison covers non-BMP unicode');
like(join("\n", map { @$_ } values %msg), qr/^(?=.*"value":100000000000000000000\}).*"value":-0\.00000000015\}/s,
  'floats with an exponent are written in plain decimal by the message sink too');

# A row committed with synchronous_commit = off is visible before its commit
# is flushed. The worker must not make its ops durable before that commit is:
# a crash would undo the row and leave its op invented. The WAL writer is
# held back (10 s) so that only the worker can flush the commit; then the
# server crashes right after the op is written.
$node->safe_psql('postgres', "ALTER SYSTEM SET wal_writer_delay = '10s'");
$node->reload;
$node->safe_psql('postgres', 'SET synchronous_commit = off; INSERT INTO box VALUES (900, 9)');
my $until = time + 30;
usleep(10_000) until written() =~ /:900\b/ || time > $until;
like(written(), qr/:900\b/, 'an asynchronously committed outbox row is written');
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', 'SELECT count(*) FROM box WHERE id = 900'), '1',
  'after a crash right after, its row exists: the worker flushed its commit before writing the op');
my %in_table = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', 'SELECT id FROM box');
my @invented = grep { $_ < 10000 && !$in_table{$_} } map { (split /:/)[1] } split / /, written();
is("@invented", '', 'every entity written from table box exists in it');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET wal_writer_delay');

$node->stop('fast');
done_testing();
