# ALTER EXTENSION bitdex_sync UPDATE from 0.1.0 (docs/operations.md,
# *Upgrading*): installed at 0.1.0 with a config, captured rows and a
# running worker, updated while a writer commits; capture goes on without a
# gap (the index built from the ops WAL across the update verifies with 0
# differences), the 0.2.0 objects work (a follower over libpq), the worker
# records the timeline, and the updated installation has the same catalog
# objects as a fresh CREATE EXTENSION of 0.2.0.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use BitdexTap;

my $index_tool = $ENV{BITDEX_INDEX_BIN} or die "set BITDEX_INDEX_BIN";
my $work = $ENV{TESTDIR} // '/tmp';

my $node = bitdex_node('upgrade');
my $wal_dir = wal_dir($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql("CREATE EXTENSION bitdex_sync VERSION '0.1.0'");
sql("SELECT bitdex_sync.wait_for_sync('30s')");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'bitdex_sync'"), '0.1.0', 'installed at 0.1.0');
sql(q{
CREATE TABLE img (id serial PRIMARY KEY, nsfw int NOT NULL, kind text NOT NULL);
CREATE TABLE tag (img int NOT NULL, tag int NOT NULL, PRIMARY KEY (img, tag));
INSERT INTO img (nsfw, kind) SELECT g % 5, CASE WHEN g % 3 = 0 THEN 'video' ELSE 'image' END FROM generate_series(1, 2000) g;
INSERT INTO tag SELECT g, g % 50 FROM generate_series(1, 2000) g;
});
sql(q{SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    on_delete: true
    track_fields: [nsfw, kind]
  - table: tag
    slot_field: img
    field: tags
    value_field: tag
$$)});
sql("SELECT bitdex_sync.wait_for_loads('2 minutes')");
my $ix = "$work/upgrade.ix";
unlink $ix;
my $out = `$index_tool apply --wal $wal_dir --index $ix 2>&1`;
is($?, 0, 'an index follows the 0.1.0 ops WAL') or diag($out);

# The update, while a writer commits and the worker runs.
my $writes = join('', map {
  "INSERT INTO img (nsfw, kind) VALUES ($_ % 5, 'image'); UPDATE img SET nsfw = nsfw + 1 WHERE id = $_; "
  . "INSERT INTO tag VALUES ($_, 77) ON CONFLICT DO NOTHING;\n" } 1 .. 1500);
my ($o, $e) = ('', '');
my $writer = IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
  '<', \$writes, '>', \$o, '2>', \$e);
sleep(1);
my $worker = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'");
sql('ALTER EXTENSION bitdex_sync UPDATE');
ok($writer->finish, 'the writer committed throughout the update') or diag($e);
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'bitdex_sync'"), '0.2.0', 'updated to 0.2.0');
is(sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'"), $worker,
  'the same worker runs on (no restart needed)');
sql("SELECT bitdex_sync.wait_for_sync('60s')");
$out = `$index_tool apply --wal $wal_dir --index $ix 2>&1`;
is($?, 0, 'the index follows on across the update') or diag($out);
$out = `$index_tool verify --index $ix --dsn '@{[$node->connstr('postgres')]}' 2>&1`;
like($out, qr/: 0 differences/, 'and equals the tables: nothing lost across the update') or diag($out);
ok($node->poll_query_until('postgres', 'SELECT timeline IS NOT NULL FROM bitdex_sync.instance'),
  'the worker records the timeline of its ops WAL (failover detection) without a restart');

# The 0.2.0 objects: a consumer over SQL, the role, status rows.
sql("CREATE ROLE up_reader LOGIN IN ROLE bitdex_sync_reader");
my $remote = "$work/upgrade_remote.ix";
unlink $remote;
$out = `$index_tool apply --dsn '@{[$node->connstr('postgres')]} user=up_reader' --consumer up --index $remote 2>&1`;
is($?, 0, 'a follower reads the updated installation over libpq') or diag($out);
$out = `$index_tool verify --index $remote --dsn '@{[$node->connstr('postgres')]}' 2>&1`;
like($out, qr/: 0 differences/, 'from batch 1 of the WAL 0.1.0 started') or diag($out);
is(sql("SELECT state FROM bitdex_sync.status() WHERE source = 'consumer up'"), 'following', 'status() shows it');

# The same catalog objects as a fresh installation of 0.2.0.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION bitdex_sync');
my $objects = q{
SELECT string_agg(o, E'\n' ORDER BY o) FROM (
  SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
         || CASE WHEN d.classid = 'pg_proc'::regclass THEN ' ' || md5(pg_get_functiondef(d.objid)) ELSE '' END
         || coalesce(' ' || (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod)
                                               || ':' || a.attnotnull, ',' ORDER BY a.attnum)
                               FROM pg_attribute a
                              WHERE d.classid = 'pg_class'::regclass AND a.attrelid = d.objid AND a.attnum > 0
                                AND NOT a.attisdropped), '') AS o
    FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'bitdex_sync'
   WHERE d.deptype = 'e'
) s};
my $updated = $node->safe_psql('postgres', $objects);
my $fresh = $node->safe_psql('fresh', $objects);
cmp_ok(scalar(split /\n/, $fresh), '>', 40, 'the fresh installation lists its objects');
is($updated, $fresh, 'the updated installation has the same objects, function bodies and columns as a fresh one');
my $privs = q{SELECT string_agg(p.proname || ':' || coalesce(array_to_string(p.proacl, ' '), 'default'), E'\n' ORDER BY p.proname, p.oid)
                FROM pg_proc p WHERE p.pronamespace = 'bitdex_sync'::regnamespace};
is($node->safe_psql('postgres', $privs), $node->safe_psql('fresh', $privs), 'and the same privileges');

done_testing();
