# Loads (docs/load.md): a populated schema is loaded while a write load runs
# (inserts, updates of tracked fields, deletes, tag churn, fan-out updates),
# with the worker killed -9 at least 5 times (at random moments and right
# after a durable chunk) and the postmaster twice, all during loads. Then
# the index built from the ops WAL equals the tables (bitdex-index verify: 0
# differences), every load is complete, no chunk is in the ops WAL twice.
# Then: a changed source is loaded again alone (a field's expression
# changed, a field removed), a TRUNCATE of a join and of a direct table, and
# load() by hand for a consumer that starts at the load; each ends with 0
# differences.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use JSON::PP;
use Test::More;
use BitdexTap;

my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";
my $index_tool = $ENV{BITDEX_INDEX_BIN} or die "set BITDEX_INDEX_BIN";
my $images = $ENV{BITDEX_TAP_LOAD_IMAGES} // 40000;

my $node = bitdex_node('load', "restart_after_crash = on\nbitdex_sync.load_chunk_rows = 300\n"
  . "bitdex_sync.fault_injection = on\n");
my $wal_dir = wal_dir($node);
my $fault = $node->data_dir . '/bitdex_sync.kill_after_batch';
my $work = $ENV{TESTDIR} // '/tmp';
create_extension($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

# The tables are filled before the config is applied, as a user's are.
my $posts = int($images / 10);
sql(qq{
CREATE TABLE img (id serial PRIMARY KEY, nsfw int NOT NULL, kind text NOT NULL, owner int, post int,
                  minor boolean NOT NULL DEFAULT false);
CREATE TABLE tag (img int NOT NULL, tag int NOT NULL, PRIMARY KEY (img, tag));
CREATE TABLE post (id int PRIMARY KEY, published int, avail text NOT NULL);
INSERT INTO post SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE g * 3 END, CASE WHEN g % 2 = 0 THEN 'Public' ELSE 'Private' END
  FROM generate_series(1, $posts) g;
INSERT INTO img (nsfw, kind, owner, post, minor) SELECT 1 << (g % 5), CASE WHEN g % 9 = 0 THEN 'video' ELSE 'image' END,
  g % 1000, 1 + g % $posts, g % 13 = 0 FROM generate_series(1, $images) g;
INSERT INTO tag SELECT i, 1 + (i * 7 + t * 13) % 500 FROM generate_series(1, $images) i, generate_series(1, 3) t
  ON CONFLICT DO NOTHING;
ANALYZE;
});

# The write load: one statement (or small transaction) per line. New images
# have no post: a query fan-out sets a parent's fields only on the slots
# matching it when the parent changes (docs/config.md), so a child added
# later under an existing parent lacks them, and verify (which joins the
# tables for "post eq {id}") would rightly say so.
srand(8);
my @dml;
for my $i (1 .. 6000) {
  my $k = 1 + int(rand($images));
  my $r = rand();
  push @dml,
      $r < 0.15 ? "INSERT INTO img (nsfw, kind, owner) VALUES (@{[1 << int(rand(5))]}, 'image', @{[int(rand(1000))]});"
    : $r < 0.40 ? "UPDATE img SET nsfw = @{[1 << int(rand(5))]}, owner = @{[int(rand(1000))]} WHERE id = $k;"
    : $r < 0.45 ? "UPDATE img SET kind = CASE kind WHEN 'image' THEN 'video' ELSE 'image' END, minor = NOT minor WHERE id = $k;"
    : $r < 0.50 ? "DELETE FROM img WHERE id = $k;"
    : $r < 0.65 ? "INSERT INTO tag VALUES ($k, @{[1 + int(rand(500))]}) ON CONFLICT DO NOTHING;"
    : $r < 0.75 ? "DELETE FROM tag WHERE img = $k AND tag = (SELECT min(tag) FROM tag WHERE img = $k);"
    : $r < 0.85 ? "UPDATE post SET published = @{[int(rand(100000))]} WHERE id = @{[1 + int(rand($posts))]};"
    : $r < 0.90 ? "UPDATE post SET avail = CASE avail WHEN 'Public' THEN 'Private' ELSE 'Public' END WHERE id = @{[1 + int(rand($posts))]};"
    : "BEGIN; UPDATE img SET nsfw = nsfw * 2 WHERE id = $k; INSERT INTO tag VALUES ($k, 999) ON CONFLICT DO NOTHING; "
    . "UPDATE post SET published = NULL WHERE id = @{[1 + int(rand($posts))]}; COMMIT;";
}
my $writes = join("\n", @dml) . "\n";
sub start_writer {
  my ($in, $out, $err) = ($writes, '', '');
  return IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr('postgres') ], '<', \$in, '>', \$out, '2>', \$err);
}

my $config = q{
sources:
  - table: img
    sets_alive: true
    on_delete: true
    track_fields: [nsfw, kind, owner, post, minor, "{nsfw} * 2 as nsfw2"]
  - table: tag
    slot_field: img
    field: tags
    value_field: tag
  - table: post
    query: "post eq {id}"
    track_fields: [published, avail]
};
my $writer = start_writer();
sql("SELECT count(*) FROM bitdex_sync.apply_config(\$\$$config\$\$)");
is(sql("SELECT string_agg(source || ':' || reason, ', ' ORDER BY id) FROM bitdex_sync.loads"),
  'img:new source, tag.tags:new source, post:new source', 'apply_config registers a load of each new source, direct first');

sub worker_pid {
  return sql("SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'");
}
sub loading { return sql("SELECT count(*) FROM bitdex_sync.loads WHERE state IN ('pending', 'running')") > 0; }

# Kills, all while a load runs (a new full load by hand when the last ended).
my ($during, $hand_loads) = (0, 0);
for my $round (1 .. 7) {
  my $what = $round == 3 || $round == 6 ? 'postmaster' : 'worker';
  if (!loading()) {
    sql('SELECT count(*) FROM bitdex_sync.load()');
    $hand_loads++;
  }
  $node->poll_query_until('postgres', "SELECT count(*) > 0 FROM bitdex_sync.loads WHERE state = 'running' AND chunks > 0")
    or die 'no load running';
  if ($what eq 'postmaster') {
    select(undef, undef, undef, rand(0.5));
    $during++ if loading();
    $node->kill9;
    start_after_kill9($node);
  } elsif ($round % 2 == 0) {
    # Right after a durable batch (a chunk's, while a load runs): the
    # chunk is in the ops WAL, its progress row not yet.
    open(my $fh, '>', $fault) or die "cannot create $fault: $!";
    close($fh);
    $node->poll_query_until('postgres', "SELECT NOT pg_stat_file('bitdex_sync.kill_after_batch', true) IS NOT NULL")
      or die 'fault not taken';
    $during++;
  } else {
    select(undef, undef, undef, rand(0.5));
    $during++ if loading();
    kill 'KILL', worker_pid();
  }
  eval { $writer->finish };
  $node->poll_query_until('postgres', "SELECT count(*) = 2 FROM bitdex_sync.status() WHERE state = 'running'")
    or die "worker did not come back after killing the $what";
  $writer = start_writer();
}
cmp_ok($during, '>=', 7, "7 kill -9 (5 of the worker, 2 of the postmaster) landed during loads ($hand_loads loads by hand)");
$writer->finish;
is(sql("SELECT bitdex_sync.wait_for_loads('5 minutes')"), 't', 'every load ends');
sql("SELECT bitdex_sync.wait_for_sync('60s')");
is(sql("SELECT count(*) FROM bitdex_sync.loads WHERE state <> 'complete' AND coalesce(error, '') NOT LIKE 'given up%'"),
  '0', 'every load is complete (none failed)');
diag(sql("SELECT string_agg(format('%s %s %s: %s rows, %s chunks', id, source, state, rows, chunks), E'\n' ORDER BY id) FROM bitdex_sync.loads"));
diag('chunks cut by a concurrent commit: ' . sql("SELECT load_cuts FROM bitdex_sync.worker_state()"));

sub verify {
  my ($name, $index, %o) = @_;
  unlink $index unless $o{keep};
  my $consumer = $o{consumer} ? "--consumer $o{consumer}" : '';
  my $out = `$index_tool apply --wal $wal_dir --index $index $consumer 2>&1`;
  is($?, 0, "$name: bitdex-index apply") or diag($out);
  $out = `$index_tool verify --index $index --dsn '@{[$node->connstr('postgres')]}' --max-shown 5 2>&1`;
  like($out, qr/: 0 differences/, "$name: bitdex-index verify finds 0 differences") or diag($out);
  return $out;
}
my $out = verify('load under writes and kills', "$work/load.ix");
unlike($out, qr/not verified: published|not verified: avail/, 'the "post eq {id}" fan-out fields are verified too');

# No chunk twice: each (load, chunk) lies in one batch, each slot in at most
# one record per load.
my (%chunk_batches, %slot_records, $load_records);
for my $line (split /\n/, `$wal_tool dump $wal_dir`) {
  next unless $line =~ /"position":\{"stream":"load"/;
  my $r = decode_json($line);
  my ($load, $chunk) = ($r->{position}{load}, $r->{position}{chunk});
  $chunk_batches{"$load/$chunk"}{ $r->{batch} } = 1;
  $slot_records{"$load/$r->{entity_id}"}++ if defined $r->{entity_id};
  $load_records++;
}
cmp_ok($load_records, '>', $images, "the ops WAL holds the loads' records ($load_records)");
is(scalar(grep { keys %{ $chunk_batches{$_} } > 1 } keys %chunk_batches), 0,
  'no chunk is in the ops WAL twice (' . scalar(keys %chunk_batches) . ' chunks)');
is(scalar(grep { $slot_records{$_} > 1 } keys %slot_records), 0, 'no slot in two records of one load');
is(system("$wal_tool verify $wal_dir > /dev/null"), 0, 'bitdex-wal verify accepts the ops WAL');

# A changed source is loaded again, alone: an expression changed, a field
# removed. What the old definition wrote is cleared first.
my $max_load = sql('SELECT max(id) FROM bitdex_sync.loads');
(my $changed = $config) =~ s/\{nsfw\} \* 2 as nsfw2/{nsfw} * 3 as nsfw2/;
$changed =~ s/, minor,/,/;
$writer = start_writer();
sql("SELECT count(*) FROM bitdex_sync.apply_config(\$\$$changed\$\$)");
is(sql("SELECT string_agg(source || ':' || reason, ', ') FROM bitdex_sync.loads WHERE id > $max_load"),
  'img:definition changed', 'a changed source gets a load of its own');
$writer->finish;
sql("SELECT bitdex_sync.wait_for_loads('5 minutes')");
sql("SELECT bitdex_sync.wait_for_sync('60s')");
verify('changed source reloaded', "$work/load.ix", keep => 1);
my $stats = decode_json(`$index_tool stats --index $work/load.ix --json`);
ok(!exists $stats->{fields}{minor}, 'the removed field is gone from the index');
ok(exists $stats->{fields}{nsfw2}, 'the changed field is there');

# TRUNCATE of a join table, then of the direct table: captured as clears.
sql('TRUNCATE tag');
sql('INSERT INTO tag SELECT id, 7 FROM img WHERE id % 100 = 0');
sql("SELECT bitdex_sync.wait_for_sync('60s')");
verify('TRUNCATE of the join table', "$work/load.ix", keep => 1);
sql('TRUNCATE img');
sql("INSERT INTO img (nsfw, kind) SELECT 2, 'image' FROM generate_series(1, 200)");
sql("SELECT bitdex_sync.wait_for_sync('60s')");
verify('TRUNCATE of the direct table', "$work/load.ix", keep => 1);

# A consumer that starts at a load by hand: registered at the end of the
# ops WAL, it sees only what comes after, and that is all it needs.
system("$wal_tool register $wal_dir fresh --at-end > /dev/null") == 0 or die 'register failed';
sql('SELECT count(*) FROM bitdex_sync.load()');
sql("SELECT bitdex_sync.wait_for_loads('5 minutes')");
sql("SELECT bitdex_sync.wait_for_sync('60s')");
verify('a consumer starting at load()', "$work/fresh.ix", consumer => 'fresh');

done_testing();
