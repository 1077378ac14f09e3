# Followers on other hosts (SPEC §14, docs/operations.md): the ops WAL read
# over libpq by `bitdex-index follow --dsn`, as a login role that only has
# bitdex_sync_reader, on a server listening on 127.0.0.1 with scram.
#  - what the reader role may do and what it and a role without the grant
#    are refused;
#  - a random write load with the follower killed -9 three times and the
#    postmaster restarted twice mid-stream: verify finds 0 differences and
#    no batch was applied twice;
#  - long poll: a read waiting on an idle server returns the batch of a
#    commit at once (the worker wakes it), not at its timeout;
#  - retention: with bitdex_sync.wal_max_size small, a stopped consumer is
#    marked lagging and its next read fails with the documented error,
#    while the directory stays within the bound plus one segment and the
#    follower that keeps up loses nothing;
#  - failover: a streaming standby, promoted: its worker starts a new ops
#    WAL; the old follower's read fails naming both WAL ids; the rebuilt
#    follower verifies 0 differences against the new primary.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use BitdexTap;

my $index_tool = $ENV{BITDEX_INDEX_BIN} or die "set BITDEX_INDEX_BIN";
my $work = $ENV{TESTDIR} // '/tmp';

my $node = bitdex_node('follow', qq{
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
restart_after_crash = on
bitdex_sync.wal_segment_size = '64kB'
bitdex_sync.batch_max_ops = 400
});
# TCP asks for scram (the test cluster trusts 127.0.0.1 otherwise); the
# Unix socket stays trusted for the test's own connections.
open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die $!;
print $hba "local all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
close($hba);
$node->reload;
my $wal_dir = wal_dir($node);
create_extension($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE ROLE follower LOGIN PASSWORD 'reader-pw' IN ROLE bitdex_sync_reader;
CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw';
CREATE ROLE other_host LOGIN PASSWORD 'other-pw' IN ROLE bitdex_sync_reader;
CREATE TABLE img (id serial PRIMARY KEY, nsfw int NOT NULL, kind text NOT NULL, owner int);
CREATE TABLE tag (img int NOT NULL, tag int NOT NULL, PRIMARY KEY (img, tag));
INSERT INTO img (nsfw, kind, owner) SELECT 1 << (g % 5), CASE WHEN g % 9 = 0 THEN 'video' ELSE 'image' END, g % 100
  FROM generate_series(1, 3000) g;
});
sql(q{SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    on_delete: true
    track_fields: [nsfw, kind, owner]
  - table: tag
    slot_field: img
    field: tags
    value_field: tag
$$)});
sql("SELECT bitdex_sync.wait_for_loads('2 minutes')");

sub dsn {
  my ($n, $user, $pw) = @_;
  return "host=127.0.0.1 port=@{[$n->port]} dbname=postgres user=$user password=$pw sslmode=disable";
}
my $reader_dsn = dsn($node, 'follower', 'reader-pw');

# psql over TCP as a given role: (exit status, stdout, stderr).
sub as_role {
  my ($dsn, $query) = @_;
  my ($out, $err) = ('', '');
  IPC::Run::run([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $dsn, '-c', $query ], '>', \$out, '2>', \$err);
  chomp $out;
  return ($? >> 8, $out, $err);
}

# ---- what the reader role may do, and nothing else ----
my ($rc, $out, $err) = as_role($reader_dsn, "SELECT bitdex_sync.register_consumer('probe')");
is($rc, 0, 'the reader role registers a consumer') or diag($err);
($rc, $out, $err) = as_role($reader_dsn, "SELECT count(*) FROM bitdex_sync.read_wal('probe', NULL, 1000000)");
ok($rc == 0 && $out > 0, "the reader role reads whole batches ($out)") or diag($err);
($rc, $out, $err) = as_role($reader_dsn, "SELECT count(*) FROM bitdex_sync.wal_records(1, 10)");
is($out, '10', 'the reader role reads wal_records') or diag($err);
for my $q ("SELECT count(*) FROM bitdex_sync.apply_config('sources: []')", 'SELECT count(*) FROM bitdex_sync.ops',
  'SELECT count(*) FROM bitdex_sync.quarantine', 'SELECT count(*) FROM bitdex_sync.runs',
  'SELECT count(*) FROM bitdex_sync.consumers', "SELECT count(*) FROM bitdex_sync.load()",
  "UPDATE bitdex_sync.consumers SET lagging = NULL", 'SELECT bitdex_sync.start_new_wal()') {
  ($rc, $out, $err) = as_role($reader_dsn, $q);
  ok($rc != 0 && $err =~ /permission denied/, "the reader role is refused: $q") or diag("rc $rc: $err");
}
my $outsider_dsn = dsn($node, 'outsider', 'outsider-pw');
for my $q ("SELECT bitdex_sync.register_consumer('x')", "SELECT count(*) FROM bitdex_sync.read_wal('probe', NULL)",
  "SELECT bitdex_sync.ack_consumer('probe', '0000000000000001/1/0')", 'SELECT count(*) FROM bitdex_sync.wal_records()',
  "SELECT bitdex_sync.unregister_consumer('probe')") {
  ($rc, $out, $err) = as_role($outsider_dsn, $q);
  ok($rc != 0 && $err =~ /permission denied/, "a role without the grant is refused: $q") or diag("rc $rc: $err");
}
($rc, $out, $err) = as_role(dsn($node, 'follower', 'wrong'), 'SELECT 1');
like($err, qr/password authentication failed/, 'scram refuses a wrong password over TCP');
($rc, $out, $err) = as_role($reader_dsn, "SELECT count(*) FROM bitdex_sync.read_wal('probe', 'garbage')");
like($err, qr/invalid ops WAL cursor/, 'a malformed cursor is refused');
($rc, $out, $err) = as_role($reader_dsn, "SELECT count(*) FROM bitdex_sync.read_wal('nobody', NULL)");
like($err, qr/is not registered/, 'an unregistered consumer is refused');
($rc, $out, $err) = as_role($reader_dsn, "SELECT count(*) FROM bitdex_sync.read_wal('../x', NULL)");
like($err, qr/is not registered|invalid consumer name/, 'a consumer name is not a path');
# Another index host's role may read but not move or remove this host's consumer.
my $other_dsn = dsn($node, 'other_host', 'other-pw');
my $probe_cursor = (as_role($reader_dsn, "SELECT bitdex_sync.register_consumer('probe')"))[1];
for my $q ("SELECT bitdex_sync.ack_consumer('probe', '$probe_cursor')", "SELECT bitdex_sync.unregister_consumer('probe')") {
  ($rc, $out, $err) = as_role($other_dsn, $q);
  like($err, qr/was registered by another role/, "another reader role is refused: $q");
}
($rc, $out, $err) = as_role($reader_dsn, "SELECT bitdex_sync.ack_consumer('probe', '$probe_cursor')");
is($rc, 0, 'the registering role acknowledges its consumer') or diag($err);
($rc, $out, $err) = as_role($reader_dsn,
  "SELECT count(*) FROM bitdex_sync.read_wal('probe', '" . substr($probe_cursor, 0, 16) . "/0/0')");
like($err, qr/invalid ops WAL cursor/, 'a cursor at segment 0 is refused (it would skip the removed-segment check)');
as_role($reader_dsn, "SELECT bitdex_sync.unregister_consumer('probe')");

# ---- long poll: a read waiting on an idle server is woken by the commit ----
sql("SELECT bitdex_sync.wait_for_sync('30s')");
as_role($reader_dsn, "SELECT bitdex_sync.register_consumer('poll')");
# The cursor after the last batch: the last row's (rows come in WAL order).
my @rows = split /\n/, (as_role($reader_dsn, "SELECT next FROM bitdex_sync.read_wal('poll', NULL, 2000000000)"))[1];
my $end = $rows[-1];
# Reads after the end until a batch with records comes (batches that only
# raise the slot's mark come too), then says when.
my $poll_sql = qq{DO \$\$ DECLARE c text := '$end'; r record; done boolean := false;
    deadline timestamptz := clock_timestamp() + interval '30 s'; BEGIN
  WHILE NOT done AND clock_timestamp() < deadline LOOP
    FOR r IN SELECT * FROM bitdex_sync.read_wal('poll', c, 1000000, 20000) LOOP
      c := r.next;
      done := done OR EXISTS (SELECT FROM bitdex_sync.wal_records(r.batch_seq, 1) w WHERE w.batch_seq = r.batch_seq);
    END LOOP;
  END LOOP;
END \$\$};
my $poll_out = '';
my $poll = IPC::Run::start(
  [ 'psql', '-X', '-q', '-At', '-d', $reader_dsn, '-c', $poll_sql, '-c', 'SELECT extract(epoch FROM clock_timestamp())' ],
  '>', \$poll_out, '2>', \my $poll_err);
sleep(1);
my $committed = sql("INSERT INTO img (nsfw, kind, owner) VALUES (1, 'image', 1); SELECT extract(epoch FROM clock_timestamp())");
$poll->finish;
chomp $poll_out;
my $wake_ms = ($poll_out - $committed) * 1000;
# The reader may return between the commit and the writer's clock reading.
ok($poll_out =~ /^[0-9.]+$/ && $wake_ms > -100 && $wake_ms < 2000,
  sprintf('a long poll returns the batch of a commit %.1f ms after it (read timeout 20 s)', $wake_ms))
  or diag("$poll_out $poll_err");

# ---- the follower under writes, kill -9 and postmaster restarts ----
srand(11);
my @dml;
for my $i (1 .. 5000) {
  my $k = 1 + int(rand(3000));
  my $r = rand();
  push @dml,
      $r < 0.20 ? "INSERT INTO img (nsfw, kind, owner) VALUES (@{[1 << int(rand(5))]}, 'image', @{[int(rand(100))]});"
    : $r < 0.50 ? "UPDATE img SET nsfw = @{[1 << int(rand(5))]}, owner = @{[int(rand(100))]} WHERE id = $k;"
    : $r < 0.55 ? "DELETE FROM img WHERE id = $k;"
    : $r < 0.75 ? "INSERT INTO tag VALUES ($k, @{[1 + int(rand(300))]}) ON CONFLICT DO NOTHING;"
    : $r < 0.85 ? "DELETE FROM tag WHERE img = $k AND tag = (SELECT min(tag) FROM tag WHERE img = $k);"
    : "BEGIN; UPDATE img SET kind = CASE kind WHEN 'image' THEN 'video' ELSE 'image' END WHERE id = $k; "
    . "INSERT INTO tag VALUES ($k, 999) ON CONFLICT DO NOTHING; COMMIT;";
}
my @parts = map { join("\n", @dml[ $_ * 1000 .. $_ * 1000 + 999 ]) . "\n" } 0 .. 4;
sub write_part {
  my ($text) = @_;
  my ($o, $e) = ('', '');
  # Writes may meet a restart: the statements that fail are simply not made.
  IPC::Run::run([ 'psql', '-X', '-q', '-d', $node->connstr('postgres') ], '<', \$text, '>', \$o, '2>', \$e);
}

my $remote_ix = "$work/remote.ix";
unlink $remote_ix;
my $follower_log = "$work/follower.log";
sub start_follower {
  my ($n, $ix, $dsn) = @_;
  return IPC::Run::start([ $index_tool, 'follow', '--dsn', $dsn, '--consumer', 'remote', '--index', $ix,
      '--checkpoint-seconds', '1' ], '>>', $follower_log, '2>>', $follower_log);
}
my $follower = start_follower($node, $remote_ix, $reader_dsn);
for my $round (0 .. 4) {
  write_part($parts[$round]);
  if ($round < 3) {
    sleep(0.3 + rand(1));
    kill 'KILL', $follower->{KIDS}[0]{PID};
    $follower->finish;
    $follower = start_follower($node, $remote_ix, $reader_dsn);
  } else {
    # The postmaster, while the follower runs: it reconnects by itself.
    $node->restart;
    sql("SELECT bitdex_sync.wait_for_sync('60s')");
  }
}
sql("SELECT bitdex_sync.wait_for_sync('60s')");
# Caught up: the consumer acknowledged the WAL's end.
my $caught_up = 0;
for (1 .. 300) {
  my $lag = sql("SELECT lag_bytes FROM bitdex_sync.status() WHERE source = 'consumer remote'");
  if (defined $lag && $lag ne '' && $lag == 0) { $caught_up = 1; last; }
  sleep(0.1);
}
ok($caught_up, 'the follower caught up (the consumer acknowledged the end of the ops WAL)');
ok(kill(0, $follower->{KIDS}[0]{PID}), 'the follower survived two postmaster restarts');
kill 'TERM', $follower->{KIDS}[0]{PID};
ok($follower->finish, 'the follower stops cleanly on SIGTERM (exit status 0)');
my $log = slurp_file($follower_log);
like($log, qr/reconnecting/, 'the follower said it reconnected');
my $stats = decode_json(`$index_tool stats --index $remote_ix --json`);
is($stats->{batches}, $stats->{last_batch_seq},
  "no batch applied twice or skipped ($stats->{batches} batches applied, the last is batch $stats->{last_batch_seq})");
$out = `$index_tool verify --index $remote_ix --dsn '@{[$node->connstr('postgres')]}' --max-shown 5 2>&1`;
like($out, qr/: 0 differences/, 'the remote follower\'s index equals the tables') or diag($out);

# ---- retention: a stopped consumer, a small bound, writes go on ----
as_role($reader_dsn, "SELECT bitdex_sync.register_consumer('stuck')");
$node->append_conf('postgresql.conf', "bitdex_sync.wal_max_size = '1MB'\n");
$node->reload;
$follower = start_follower($node, $remote_ix, $reader_dsn);
my ($max_dir, $bound) = (0, 1024 * 1024 + 64 * 1024 + 64 * 1024);  # the bound, one segment, one batch
for my $round (1 .. 12) {
  sql(q{INSERT INTO img (nsfw, kind, owner) SELECT 1 << (g % 5), 'image', g % 100 FROM generate_series(1, 1500) g});
  sql(q{UPDATE img SET owner = owner + 1 WHERE id % 7 = 0});
  sql("SELECT bitdex_sync.wait_for_sync('60s')");
  sleep(0.3);    # a naptime or two: the worker's retention pass
  my $size = sql('SELECT coalesce(sum(bytes), 0) FROM bitdex_sync.wal_segments()');
  $max_dir = $size if $size > $max_dir;
}
cmp_ok($max_dir, '<=', $bound, "the ops WAL directory stayed within wal_max_size plus a segment (largest $max_dir bytes)");
is(sql("SELECT state FROM bitdex_sync.status() WHERE source = 'consumer stuck'"), 'lagging',
  'the stopped consumer is marked lagging in status()');
like(sql('SELECT bitdex_sync.metrics()'), qr/bitdex_sync_consumer_lagging\{database="postgres",consumer="stuck"\} 1/,
  'and in metrics()');
($rc, $out, $err) = as_role($reader_dsn, "SELECT count(*) FROM bitdex_sync.read_wal('stuck', NULL)");
like($err, qr/consumer "stuck" is lagging: segment \d+ removed by the size limit.*HINT:.*register_consumer\('stuck', at_end => true\).*load\(\)/s,
  'its next read fails with the documented error and how to recover') or diag($err);
sql("SELECT bitdex_sync.wait_for_sync('60s')");
$caught_up = 0;
for (1 .. 300) {
  my $lag = sql("SELECT lag_bytes FROM bitdex_sync.status() WHERE source = 'consumer remote'");
  if (defined $lag && $lag ne '' && $lag == 0) { $caught_up = 1; last; }
  sleep(0.1);
}
kill 'TERM', $follower->{KIDS}[0]{PID};
$follower->finish;
is(sql("SELECT state FROM bitdex_sync.status() WHERE source = 'consumer remote'"), 'following',
  'the follower that keeps up is not lagging');
$out = `$index_tool verify --index $remote_ix --dsn '@{[$node->connstr('postgres')]}' --max-shown 5 2>&1`;
like($out, qr/: 0 differences/, 'and its index still equals the tables: retention took nothing it needed') or diag($out);
# Recovery of the lagging consumer as documented: registered at the end, a
# load. The load alone is larger than this test's 1 MB bound, and nobody
# follows while it runs: the bound is lifted first (docs/operations.md).
$node->append_conf('postgresql.conf', "bitdex_sync.wal_max_size = 0\n");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('bitdex_sync.wal_max_size') = '0'");
as_role($reader_dsn, "SELECT bitdex_sync.unregister_consumer('stuck')");
as_role($reader_dsn, "SELECT bitdex_sync.register_consumer('stuck', at_end => true)");
sql('SELECT count(*) FROM bitdex_sync.load()');
sql("SELECT bitdex_sync.wait_for_loads('2 minutes')");
sql("SELECT bitdex_sync.wait_for_sync('60s')");
my $stuck_ix = "$work/stuck.ix";
unlink $stuck_ix;
$out = `$index_tool apply --dsn '$reader_dsn' --consumer stuck --index $stuck_ix 2>&1`;
is($?, 0, 'the reloaded consumer applies from its at-end cursor') or diag($out);
$out = `$index_tool verify --index $stuck_ix --dsn '@{[$node->connstr('postgres')]}' --max-shown 5 2>&1`;
like($out, qr/: 0 differences/, 'and its index equals the tables') or diag($out);

# ---- failover: a promoted standby starts a new ops WAL ----
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'\n");
$standby->start;
$follower = start_follower($node, $remote_ix, $reader_dsn);
write_part(join("\n", @dml[ 0 .. 300 ]) . "\n");
sql("SELECT bitdex_sync.wait_for_sync('60s')");
$node->wait_for_catchup($standby);
sleep(1.5);    # the follower's next checkpoint
kill 'TERM', $follower->{KIDS}[0]{PID};
$follower->finish;
my $old_wal = sql("SELECT lpad(to_hex(wal_id), 16, '0') FROM bitdex_sync.instance");
$node->stop;
$standby->promote;
my $new_wal = '';
for (1 .. 300) {
  $new_wal = $standby->safe_psql('postgres', "SELECT coalesce(lpad(to_hex(wal_id), 16, '0'), '') FROM bitdex_sync.instance");
  last if $new_wal ne '' && $new_wal ne $old_wal;
  sleep(0.1);
}
isnt($new_wal, $old_wal, "the promoted standby's worker started a new ops WAL ($old_wal -> $new_wal)");
ok($standby->log_contains('this server was promoted'), 'and said why in the server log');
my $standby_dsn = dsn($standby, 'follower', 'reader-pw');
$out = `$index_tool apply --dsn '$standby_dsn' --consumer remote --index $remote_ix 2>&1`;
isnt($?, 0, 'the old follower is refused by the new primary');
like($out, qr/belongs to ops WAL $old_wal, but this database writes ops WAL $new_wal/, 'with an error naming both WAL ids')
  or diag($out);
$standby->safe_psql('postgres', "SELECT bitdex_sync.wait_for_loads('2 minutes')");
$standby->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('60s')");
as_role($standby_dsn, "SELECT bitdex_sync.unregister_consumer('remote')");
as_role($standby_dsn, "SELECT bitdex_sync.register_consumer('remote')");
unlink $remote_ix;
$out = `$index_tool apply --dsn '$standby_dsn' --consumer remote --index $remote_ix 2>&1`;
is($?, 0, 'the rebuilt follower applies the new ops WAL from batch 1') or diag($out);
$out = `$index_tool verify --index $remote_ix --dsn '@{[$standby->connstr('postgres')]}' --max-shown 5 2>&1`;
like($out, qr/: 0 differences/, 'and its index equals the new primary\'s tables') or diag($out);

done_testing();
