# Limits: one transaction larger than batch_max_memory is written whole, in
# order, in several batches, with the worker's memory bounded (peak RSS
# reported); a full disk under the ops WAL pauses the worker with the error
# in status() and bitdex_sync.runs, loses nothing, and it resumes once there
# is space again.
#   BITDEX_TAP_BIG_ROWS (default 1000000): rows in the big transaction
#   BITDEX_TAP_SMALL_FS: a small file system (tmpfs) for the disk-full case,
#     holding a file "filler" that the test deletes to free space; without
#     it that case is skipped (test/tap.sh mounts one when run as root).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BitdexTap;

my $wal_tool = $ENV{BITDEX_WAL_BIN} or die "set BITDEX_WAL_BIN";
my $rows = $ENV{BITDEX_TAP_BIG_ROWS} // 1000000;
my $small_fs = $ENV{BITDEX_TAP_SMALL_FS};

my $node = bitdex_node('limits', qq{
bitdex_sync.batch_max_memory = '64MB'
bitdex_sync.batch_max_ops = 100000000
bitdex_sync.wal_segment_size = '64kB'
max_wal_size = '4GB'
} . ($small_fs ? "bitdex_sync.wal_directory = '$small_fs'\n" : ''));
my $wal_dir = wal_dir($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

create_extension($node);
sql(q{
CREATE TABLE img (id int PRIMARY KEY, nsfw int NOT NULL);
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: img
    sets_alive: true
    track_fields: [nsfw]
$$);
});

# --- disk full ---------------------------------------------------------------
SKIP: {
  skip 'no small file system (BITDEX_TAP_SMALL_FS)', 6 unless $small_fs;
  # Rows until the file system is full and the worker fails.
  my $n = 0;
  for my $i (1 .. 200) {
    sql("INSERT INTO img SELECT g, 1 FROM generate_series($n + 1, $n + 2000) g");
    $n += 2000;
    last if sql("SELECT errors_total > 0 FROM bitdex_sync.status() WHERE source = 'slot'") eq 't';
    select(undef, undef, undef, 0.05);
  }
  $node->poll_query_until('postgres', "SELECT errors_total > 0 FROM bitdex_sync.status() WHERE source = 'slot'")
    or die 'the worker never failed on the full file system';
  like(sql("SELECT last_error FROM bitdex_sync.status() WHERE source = 'slot'"), qr/No space left on device/,
    "disk full: status() shows the error (after $n rows)");
  my ($rc, $out, $err) = $node->psql('postgres', "SELECT bitdex_sync.wait_for_sync('1s')");
  like($err, qr/timed out/, 'disk full: nothing is confirmed while the disk is full');
  # More commits while it cannot write.
  sql("INSERT INTO img SELECT g, 2 FROM generate_series($n + 1, $n + 500) g");
  $n += 500;
  $node->poll_query_until('postgres', "SELECT count(*) > 0 FROM bitdex_sync.runs WHERE status = 'failed'")
    or die 'no failed run recorded';
  like(sql("SELECT error FROM bitdex_sync.runs WHERE status = 'failed' ORDER BY id LIMIT 1"),
    qr/No space left on device/, 'disk full: the failed run is recorded with its error');
  unlink("$small_fs/filler") or die "cannot remove the filler: $!";
  sql("SELECT bitdex_sync.wait_for_sync('120s')");
  pass('space returned: the worker resumed and caught up');
  my $dump = `$wal_tool dump $wal_dir`;
  my %seen;
  $seen{$1}++ while $dump =~ /"entity_id":(\d+),"creates_slot":true/g;
  is(scalar(keys %seen), $n, "every row committed around the full disk is in the ops WAL ($n)");
  is(scalar(grep { $seen{$_} > 1 } keys %seen), 0, 'none twice');
  sql('DELETE FROM img');  # not TRUNCATE: the capture guard refuses it on a captured table
}

# --- one transaction larger than batch_max_memory ------------------------------
my $before = sql("SELECT batches FROM bitdex_sync.status() WHERE source = 'slot'");
sql("INSERT INTO img SELECT g, 0 FROM generate_series(10000001, 10000000 + $rows) g");
sql("SELECT bitdex_sync.wait_for_sync('600s')");
sql("UPDATE img SET nsfw = 1 WHERE id > 10000000");
sql("SELECT bitdex_sync.wait_for_sync('600s')");
my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bitdex_sync worker'");
my ($hwm) = slurp_file("/proc/$pid/status") =~ /VmHWM:\s+(\d+) kB/;
my $batches = sql("SELECT batches FROM bitdex_sync.status() WHERE source = 'slot'") - $before;
diag(sprintf('two transactions of %d rows each: %d batches, worker peak RSS %.0f MB', $rows, $batches, $hwm / 1024));
SKIP: {
  skip 'fewer rows than fill a 64 MB batch', 1 if $rows < 500000;
  cmp_ok($batches, '>', 2, 'the big transactions were split into several batches');
}
# The batches hold the update in order, each row once: read position order.
my ($updates, $ordered, $last) = (0, 1, '');
for (split /\n/, `$wal_tool dump $wal_dir`) {
  next unless /"lsn":"([0-9A-F]+)\/([0-9A-F]+)","index":(\d+)\},"entity_id":\d+,"creates_slot":false,"ops":\[\{"op":"remove","field":"nsfw","value":0\}/;
  my $pos = sprintf('%08X%08X:%010d', hex($1), hex($2), $3);
  $ordered = 0 if $pos le $last;
  $last = $pos;
  $updates++;
}
is($updates, $rows, 'every row of the big update is in the ops WAL');
ok($ordered, 'in transaction order');
# 64 MB of records, the reorder buffer's 64 MB (logical_decoding_work_mem)
# and the server's own memory: far below what 1M decoded records would take.
cmp_ok($hwm / 1024, '<', 400, 'the worker stays within bounded memory');
$node->stop('fast');
done_testing();
