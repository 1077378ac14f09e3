# Loads against hostile or unusual tables (found by an adversarial review):
# - a table owner's function, run while the worker compiles the source for
#   a load, must run as that owner, never as the worker's superuser;
# - a column named like the read's row alias must not be read as the row;
# - FORCE ROW LEVEL SECURITY must make a load fail, not miss rows;
# - a table rewrite (ALTER TABLE ... ADD COLUMN with a volatile default)
#   committed while a chunk waits for its lock must not make the load end
#   early with rows missing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use BitdexTap;

my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";
my $node = bitdex_node('load_attacks', "bitdex_sync.load_chunk_rows = 100\n");
my $wal_dir = wal_dir($node);
create_extension($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub as_own {
  my ($query) = @_;
  my ($rc, $out, $err) = $node->psql('postgres', $query, extra_params => ['-U', 'own']);
  die "as own: $query: $err" if $rc;
  return $out;
}
sub load_of {
  my ($source) = @_;
  sql("SELECT count(*) FROM bitdex_sync.load('$source')");
  sql("SELECT bitdex_sync.wait_for_loads('60s')");
  return sql("SELECT format('%s %s %s', state, rows, error) FROM bitdex_sync.loads "
    . "WHERE source = '$source' ORDER BY id DESC LIMIT 1");
}
my $config = '';
sub add_source {
  $config .= $_[0];
  sql("SELECT count(*) FROM bitdex_sync.apply_config(\$\$sources:$config\$\$, load => false)");
}

sql(q{CREATE ROLE own LOGIN; GRANT CREATE ON SCHEMA public TO own;});

# --- a function the table owner redefines after the config was applied ---------
as_own(q{
CREATE TABLE o (id int PRIMARY KEY, v int);
INSERT INTO o SELECT g, g % 3 FROM generate_series(1, 300) g;
CREATE FUNCTION public.own_f(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog
  AS $f$ BEGIN RETURN i; END $f$;
});
add_source(q{
  - table: o
    track_fields: ["{v} + public.own_f(0) as ov"]});
as_own(q{
CREATE FUNCTION public.own_h() RETURNS void LANGUAGE plpgsql VOLATILE AS $f$ BEGIN EXECUTE 'ALTER ROLE own SUPERUSER'; END $f$;
CREATE OR REPLACE FUNCTION public.own_f(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog
  AS $f$ BEGIN PERFORM public.own_h(); RETURN i; END $f$;
});
my $state = load_of('o');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'own'}), 'f',
  "the owner's function does not run as the worker's superuser during a load ($state)");
like($state, qr/^failed .*(permission denied|must be superuser)/, '... it runs as the owner, who may not do that: the load fails, saying why');
sql(q{CREATE OR REPLACE FUNCTION public.own_f(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog
  AS $f$ BEGIN RETURN i; END $f$; ALTER FUNCTION public.own_f(int) OWNER TO own});
like(load_of('o'), qr/^complete 300 /, 'with the function put right the load completes');

# --- a column named like the row alias ----------------------------------------------
sql(q{
CREATE TABLE ct (id int PRIMARY KEY, t int, t_ int, v int);
INSERT INTO ct SELECT g, g * 10, g * 100, g % 7 FROM generate_series(1, 500) g;
});
add_source(q{
  - table: ct
    sets_alive: true
    on_delete: true
    track_fields: [v, t, t_]});
my $worker = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'});
like(load_of('ct'), qr/^complete 500 /, 'a table with columns named t and t_ is loaded');
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'}), $worker, '... by the same worker (no crash)');
sql("SELECT bitdex_sync.wait_for_sync('30s')");
like(`$wal_tool dump $wal_dir`, qr/"entity_id":5,"creates_slot":true,"ops":\[\{"op":"set","field":"v","value":5\},\{"op":"set","field":"t","value":50\},\{"op":"set","field":"t_","value":500\}/,
  '... with the values of those columns');

# --- FORCE ROW LEVEL SECURITY hides rows from the owner -------------------------------
as_own(q{
CREATE TABLE r (id int PRIMARY KEY, v int);
INSERT INTO r SELECT g, g % 5 FROM generate_series(1, 1000) g;
ALTER TABLE r ENABLE ROW LEVEL SECURITY;
ALTER TABLE r FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON r USING (id % 2 = 0);
});
add_source(q{
  - table: r
    sets_alive: true
    track_fields: [v]});
like(load_of('r'), qr/^failed 0 .*row-level security/, 'a load of a table whose policies hide rows from its owner fails, saying why');

# --- a table rewrite committed while a chunk waits for its lock ----------------------
sql(q{
CREATE TABLE w (id int PRIMARY KEY, v int);
INSERT INTO w SELECT g, g % 11 FROM generate_series(1, 3000) g;
});
add_source(q{
  - table: w
    sets_alive: true
    track_fields: [v]});
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE w IN ACCESS EXCLUSIVE MODE');
sql(q{SELECT count(*) FROM bitdex_sync.load('w')});
$node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
  WHERE a.backend_type = 'bitdex_sync worker' AND NOT l.granted AND l.relation = 'w'::regclass})
  or die 'the load did not wait for the lock on w';
$locker->query_safe('ALTER TABLE w ADD COLUMN x float8 DEFAULT random()');
$locker->query_safe('COMMIT');
$locker->quit;
sql("SELECT bitdex_sync.wait_for_loads('60s')");
like(sql(q{SELECT state || ' ' || rows FROM bitdex_sync.loads WHERE source = 'w' ORDER BY id DESC LIMIT 1}), qr/^complete 3000$/,
  'a rewrite committed while the load waited for the table: every row is loaded');

# --- a partitioned table: loaded through its partitions, verified through them ------
# (issue 17, item 5: verify read FROM ONLY the partitioned parent, which holds
# no rows, and reported every row as a difference.)
my $index_tool = $ENV{BITDEX_INDEX_BIN} or die "set BITDEX_INDEX_BIN";
sql(q{
CREATE TABLE pt (id int, v int) PARTITION BY RANGE (id);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (1) TO (1000);
CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (1000) TO (2000);
INSERT INTO pt SELECT g, g % 4 FROM generate_series(1, 1999) g;
});
add_source(q{
  - table: pt
    sets_alive: true
    on_delete: true
    track_fields: [v]});
system("$wal_tool register $wal_dir pt --at-end > /dev/null") == 0 or die 'register failed';
like(load_of('pt'), qr/^complete 1999 /, 'a partitioned table is loaded through its partitions');
sql('UPDATE pt SET v = 9 WHERE id IN (5, 1500)');
sql("SELECT bitdex_sync.wait_for_sync('30s')");
my $base = $node->basedir;
open(my $cf, '>', "$base/pt.yaml") or die;
print $cf "sources:
  - table: pt
    sets_alive: true
    on_delete: true
    track_fields: [v]
";
close($cf);
my $out = `$index_tool apply --wal $wal_dir --index $base/pt.ix --consumer pt 2>&1`;
is($?, 0, 'the index applies the load') or diag($out);
$out = `$index_tool verify --index $base/pt.ix --config $base/pt.yaml --dsn '@{[$node->connstr('postgres')]}' 2>&1`;
like($out, qr/verified 1999 rows.*: 0 differences/, 'verify reads the partitions: 0 differences') or diag($out);

# --- loads given up while a chunk waits for its place ----------------------------------
# load() by hand gives up the running load of the source; a chunk of it that
# was read and waits must be dropped, not stop the worker.
sql(q{CREATE TABLE g (id int PRIMARY KEY, v int); INSERT INTO g SELECT n, n % 3 FROM generate_series(1, 20000) n;});
add_source(q{
  - table: g
    sets_alive: true
    track_fields: [v]});
$worker = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'});
for (1 .. 15) {
  sql(q{SELECT count(*) FROM bitdex_sync.load('g')});
  select(undef, undef, undef, 0.05);
}
sql("SELECT bitdex_sync.wait_for_loads('60s')");
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'}), $worker,
  'loads given up one after another while they run: the worker goes on');
like(sql(q{SELECT format('%s %s', state, rows) FROM bitdex_sync.loads WHERE source = 'g' ORDER BY id DESC LIMIT 1}),
  qr/^complete 20000$/, '... and the last load is complete');
is(sql(q{SELECT count(*) FROM bitdex_sync.loads WHERE source = 'g' AND state NOT IN ('complete', 'failed')}), '0',
  '... and no other is left running');

# --- two apply_config at once (issue 17, item 2) ---------------------------------------
# The second waits for the first and sees its result: it drops the first's
# source, recorded, and leaves no trigger behind.
sql(q{CREATE TABLE ca (id int PRIMARY KEY, v int); CREATE TABLE cb (id int PRIMARY KEY, v int);});
my $first = $node->background_psql('postgres');
$first->query_safe('SET client_min_messages = warning');
$first->query_safe('BEGIN');
$first->query_safe(q{SELECT count(*) FROM bitdex_sync.apply_config('sources: [{table: ca, capture: outbox, track_fields: [v]}]', load => false)});
my ($in2, $out2, $err2) = (q{SELECT string_agg(source || ' ' || action, ', ' ORDER BY source) FROM bitdex_sync.apply_config('sources: [{table: cb, capture: outbox, track_fields: [v]}]', load => false) WHERE source IN ('ca', 'cb');} . "\n", '', '');
my $second = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr('postgres') ], '<', \$in2, '>', \$out2, '2>', \$err2);
my $waited = 0;
for (1 .. 300) {  # IPC::Run feeds psql its input while pumped
  $second->pump_nb;
  last if ($waited = sql(q{SELECT count(*) > 0 FROM pg_locks WHERE NOT granted}) eq 't');
  select(undef, undef, undef, 0.1);
}
ok($waited, 'the second apply_config waits for the first');
$first->query_safe('COMMIT');
$first->quit;
$second->finish;
is($out2, "ca drop, cb create\n", 'the second apply_config saw the first one\'s source and dropped it') or diag($err2);
is(sql(q{SELECT string_agg(name, ', ') FROM bitdex_sync.sources}), 'cb', '... which is no longer recorded');
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ca'::regclass AND NOT tgisinternal}), '0', '... and left no trigger on its table');

# --- the slot of an extension dropped just before a crash (issue 17, item 12) ---------
# The worker cannot drop its slot (stopped); the server dies right after the
# DROP EXTENSION commits. At the next start the database's worker finds no
# extension and drops the slot and origin it left, instead of leaving a slot
# that pins the server's WAL and blocks DROP DATABASE.
my $stopped = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'});
kill 'STOP', $stopped;
sql('DROP EXTENSION bitdex_sync CASCADE');
is(sql(q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'bitdex\_sync\_%'}), '1',
  'the slot is still there after DROP EXTENSION (its worker is stopped)');
$node->kill9;
kill 'KILL', $stopped;
start_after_kill9($node);
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'bitdex\_sync\_%'}),
  'after the restart the database\'s worker drops the slot the dropped extension left');
is(sql(q{SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'bitdex\_sync\_%'}), '0', '... and its replication origin');

done_testing();
