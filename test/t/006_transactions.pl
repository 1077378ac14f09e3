# The worker reads capture messages from the WAL itself (fast-forward
# decoding) and puts each committed transaction together: subtransactions
# (savepoints, PL/pgSQL exception blocks) merged in WAL order, rolled-back
# ones left out; prepared transactions at COMMIT PREPARED, in that commit's
# place; nothing of ROLLBACK PREPARED, of aborts, or of a transaction a
# server crash ended. With logical_decoding_work_mem at its 64kB minimum,
# large transactions go through spill files, which are removed after.
# An asynchronous commit is picked up without a wake-up; COMMIT PREPARED
# wakes the worker. (The crash loops of 001 cover ordinary transactions
# across restarts.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BitdexTap;

my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";
my $node = bitdex_node('transactions', "max_prepared_transactions = 4\nlogical_decoding_work_mem = '64kB'\n");
my $wal_dir = wal_dir($node);
create_extension($node);
$node->safe_psql('postgres', q{
CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: t
    sets_alive: true
    track_fields: [v]
$$);
});
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub sync { sql("SELECT bitdex_sync.wait_for_sync('60s')"); }

# Entities created (inserts) in ops WAL order, each as "entity@commit_lsn:index".
sub created {
  my @out;
  for (split /\n/, `$wal_tool dump $wal_dir`) {
    push @out, "$3\@$1:$2" if /"lsn":"([0-9A-F\/]+)","index":(\d+)\},"entity_id":(\d+),"creates_slot":true/;
  }
  return @out;
}
# Just the entities created since mark $from (a count of earlier records).
sub entities_since {
  my ($from) = @_;
  my @all = created();
  return join(' ', map { (split /\@/)[0] } @all[ $from .. $#all ]);
}
sub spill_files {
  my @f = glob($node->data_dir . '/pg_replslot/*/bitdex-*.spill');
  return scalar(@f);
}

my $mark = scalar(created());
sql(q{
BEGIN;
INSERT INTO t VALUES (1, 1);
SAVEPOINT a;
INSERT INTO t VALUES (2, 2);
ROLLBACK TO a;
INSERT INTO t VALUES (3, 3);
SAVEPOINT b;
INSERT INTO t VALUES (4, 4);
SAVEPOINT c;
INSERT INTO t VALUES (5, 5);
RELEASE b;
INSERT INTO t VALUES (6, 6);
COMMIT;
});
sync();
is(entities_since($mark), '1 3 4 5 6', 'savepoints: released ones in order, the rolled-back one left out');
my @last = (created())[ $mark .. $mark + 4 ];
my %commits = map { (split /[\@:]/)[1] => 1 } @last;
is(scalar(keys %commits), 1, 'one commit position for the whole transaction');
is(join(' ', map { (split /:/)[1] } @last), '0 1 2 3 4', 'indexes 0.. in WAL order');

$mark = scalar(created());
sql(q{
DO $$
BEGIN
  FOR i IN 10..19 LOOP
    BEGIN
      INSERT INTO t VALUES (i, i);
      IF i % 3 = 0 THEN RAISE EXCEPTION 'undo %', i; END IF;
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
  END LOOP;
END $$;
});
sync();
is(entities_since($mark), '10 11 13 14 16 17 19', 'PL/pgSQL exception blocks: failed ones left out');

$mark = scalar(created());
$node->psql('postgres', q{
BEGIN;
INSERT INTO t VALUES (20, 20);
SAVEPOINT a;
INSERT INTO t VALUES (21, 21);
RELEASE a;
SELECT 1/0;
COMMIT;
});
sql('INSERT INTO t VALUES (22, 22)');
sync();
is(entities_since($mark), '22', 'an aborted transaction with a subtransaction: nothing of it');

# Prepared transactions: written at COMMIT PREPARED, after what committed
# meanwhile; ROLLBACK PREPARED leaves nothing.
$mark = scalar(created());
sql("BEGIN; INSERT INTO t VALUES (30, 30); SAVEPOINT s; INSERT INTO t VALUES (31, 31); PREPARE TRANSACTION 'p1'");
sql("BEGIN; INSERT INTO t VALUES (32, 32); PREPARE TRANSACTION 'p2'");
sql('INSERT INTO t VALUES (33, 33)');
sync();
is(entities_since($mark), '33', 'prepared transactions are not written before they commit');
sql("COMMIT PREPARED 'p1'");
sql("ROLLBACK PREPARED 'p2'");
sync();
is(entities_since($mark), '33 30 31', 'COMMIT PREPARED writes it in its commit order; ROLLBACK PREPARED nothing');

# A large transaction (well over the 64kB bound) spills and comes back whole,
# in order; a small one committing while it is open is not held up.
$mark = scalar(created());
my $big = $node->background_psql('postgres');
$big->query_safe('BEGIN');
$big->query_safe('INSERT INTO t SELECT g, g FROM generate_series(1000, 20999) g');
sql('INSERT INTO t VALUES (40, 40)');
sync();
is(entities_since($mark), '40', 'a transaction committing during a large open one is written');
cmp_ok(spill_files(), '>=', 1, 'the large open transaction spilled to a file');
$big->query_safe('INSERT INTO t SELECT g, g FROM generate_series(21000, 22999) g');
$big->query_safe('COMMIT');
sync();
my @ents = split / /, entities_since($mark);
is(scalar(@ents), 1 + 22000, 'every row of the large transaction');
is_deeply([ @ents[ 1 .. $#ents ] ], [ 1000 .. 22999 ], 'in order');
is(spill_files(), 0, 'its spill file is gone after its commit');

# A transaction the server's crash ends (no abort record): its messages,
# spilled or not, never appear; the leftover spill file is removed.
$mark = scalar(created());
$big->query_safe('BEGIN');
$big->query_safe('INSERT INTO t SELECT g, g FROM generate_series(50000, 59999) g');
sql('INSERT INTO t VALUES (41, 41)');
sync();
cmp_ok(spill_files(), '>=', 1, 'an open transaction spilled');
$node->stop('immediate');
eval { $big->quit };
$node->start;
# The worker decodes the ended transaction again after the restart; the
# next running-transactions record (a CHECKPOINT logs one) shows it ended.
sql('CHECKPOINT');
sql('INSERT INTO t VALUES (42, 42)');
sync();
is(entities_since($mark), '41 42', 'nothing of the transaction the crash ended');
is(spill_files(), 0, 'its spill file is gone once a running-transactions record shows it ended');
is(sql('SELECT count(*) FROM t WHERE id >= 50000'), '0', '(and its rows are not in the table)');

# A prepared transaction outlives a restart (the slot keeps its start):
# COMMIT PREPARED afterwards still writes all of it.
$mark = scalar(created());
sql("BEGIN; INSERT INTO t VALUES (60, 60); SAVEPOINT s; INSERT INTO t VALUES (61, 61); PREPARE TRANSACTION 'p3'");
sql('INSERT INTO t VALUES (62, 62)');
sync();
$node->restart;
sql('CHECKPOINT');
sql("COMMIT PREPARED 'p3'");
sync();
is(entities_since($mark), '62 60 61', 'a transaction prepared before a restart and committed after it');

# An asynchronous commit does not wake the worker (nothing to decode before
# the WAL writer flushes it); the worker looks again every wal_writer_delay
# until it has it. With naptime at an hour, only that can find it.
sql("ALTER SYSTEM SET bitdex_sync.naptime = '1h'");
$node->reload;
sleep 1;
$mark = scalar(created());
sql('SET synchronous_commit = off; INSERT INTO t VALUES (70, 70)');
my $until = time + 30;
sleep 1 while entities_since($mark) ne '70' && time < $until;
is(entities_since($mark), '70', 'an asynchronous commit is written without a wake-up or wait_for_sync');

# COMMIT PREPARED wakes the worker, in a session that captured nothing itself
# (naptime is still an hour).
$mark = scalar(created());
sql("BEGIN; INSERT INTO t VALUES (80, 80); PREPARE TRANSACTION 'p4'");
sql("COMMIT PREPARED 'p4'");
$until = time + 30;
sleep 1 while entities_since($mark) ne '80' && time < $until;
is(entities_since($mark), '80', 'COMMIT PREPARED wakes the worker');
sql('ALTER SYSTEM RESET bitdex_sync.naptime');

$node->stop('fast');
done_testing();
