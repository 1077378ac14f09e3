# What the worker's TAP tests share: a started node with bitdex_sync
# preloaded (worker napping 100 ms), and the extension created once the
# worker is ready for it. test/tap.sh puts this directory on PERL5LIB.
package BitdexTap;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(bitdex_node create_extension emit_signed start_after_kill9 wal_dir);

# bitdex_node($name, $extra_conf): the node, started; $extra_conf holds more
# postgresql.conf lines.
sub bitdex_node {
  my ($name, $extra_conf) = @_;
  my $node = PostgreSQL::Test::Cluster->new($name);
  $node->init(allows_streaming => 'logical');
  $node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'bitdex_sync'
output_plugin_libraries = 'bitdex_sync'
bitdex_sync.naptime = '100ms'
} . ($extra_conf // ''));
  $node->start;
  return $node;
}

# CREATE EXTENSION, then wait until the worker has its slot (apply_config
# refuses message sources before that).
sub create_extension {
  my ($node) = @_;
  $node->safe_psql('postgres', 'CREATE EXTENSION bitdex_sync');
  $node->safe_psql('postgres', "SELECT bitdex_sync.wait_for_sync('30s')");
}

# start_after_kill9($node): starts the node again after kill -9 of its
# postmaster. Its children notice the postmaster's death and exit; until they
# have, a new postmaster refuses to start, so this tries for 20 s.
sub start_after_kill9 {
  my ($node) = @_;
  for (1 .. 100) {
    $node->{_pid} = undef;    # a failed start read the stale pid file
    return if $node->start(fail_ok => 1);
    select(undef, undef, undef, 0.2);
  }
  die 'server did not restart after kill -9 of the postmaster';
}

# wal_dir($node, $db = 'postgres'): where that database's ops WAL lives
# (<bitdex_sync.wal_directory>/<database OID>).
# Computed as bitdex_sync.wal_directory() does, so that it works before
# CREATE EXTENSION too.
sub wal_dir {
  my ($node, $db) = @_;
  my ($root, $oid) = split /\|/, $node->safe_psql($db // 'postgres',
    "SELECT current_setting('bitdex_sync.wal_directory') || '|' || oid FROM pg_database WHERE datname = current_database()");
  $root = $node->data_dir . "/$root" unless $root =~ m{^/};
  return "$root/$oid";
}

# siphash128($key, $message): SipHash-2-4-128 (what capture tags messages
# with; src/core/siphash.cpp), as 16 bytes.
sub _rotl { use integer; my ($x, $b) = @_; return ($x << $b) | (($x >> (64 - $b)) & ((1 << $b) - 1)); }
sub siphash128 {
  use integer;
  no warnings 'portable';
  my ($key, $msg) = @_;
  my ($k0, $k1) = unpack('q<q<', $key);
  my @v = ($k0 ^ 0x736f6d6570736575, $k1 ^ 0x646f72616e646f6d ^ 0xee, $k0 ^ 0x6c7967656e657261,
    $k1 ^ 0x7465646279746573);
  my $round = sub {
    $v[0] += $v[1]; $v[1] = _rotl($v[1], 13); $v[1] ^= $v[0]; $v[0] = _rotl($v[0], 32);
    $v[2] += $v[3]; $v[3] = _rotl($v[3], 16); $v[3] ^= $v[2];
    $v[0] += $v[3]; $v[3] = _rotl($v[3], 21); $v[3] ^= $v[0];
    $v[2] += $v[1]; $v[1] = _rotl($v[1], 17); $v[1] ^= $v[2]; $v[2] = _rotl($v[2], 32);
  };
  my $len = length($msg);
  my $padded = $msg . ("\0" x ((8 - ($len + 1) % 8) % 8)) . chr($len & 0xff);
  for my $m (unpack('q<*', $padded)) { $v[3] ^= $m; $round->(); $round->(); $v[0] ^= $m; }
  $v[2] ^= 0xee;
  $round->() for 1 .. 4;
  my $lo = $v[0] ^ $v[1] ^ $v[2] ^ $v[3];
  $v[1] ^= 0xdd;
  $round->() for 1 .. 4;
  return pack('q<q<', $lo, $v[0] ^ $v[1] ^ $v[2] ^ $v[3]);
}

# emit_signed($node, $rest, db => 'postgres', before => [...], after => [...]):
# in one transaction (the statements `before`, the message, the statements
# `after`), emits a capture message (format 2) whose bytes after the tag are
# $rest, tagged with the server's capture key for that transaction as the
# capture trigger tags it; returns the message in hex. Tests use it to reach
# the decoder with bytes the trigger would never write.
sub emit_signed {
  my ($node, $rest, %o) = @_;
  my $db = $o{db} // 'postgres';
  my $path = $node->data_dir . '/bitdex_sync.key';
  open(my $fh, '<:raw', $path) or die "cannot read $path: $!";
  local $/;
  my $key = substr(<$fh>, 0, 16);
  close($fh);
  my $dboid = $node->safe_psql($db, 'SELECT oid FROM pg_database WHERE datname = current_database()');
  my $s = $node->background_psql($db);
  $s->query_safe('BEGIN');
  $s->query_safe($_) for @{ $o{before} // [] };
  my $xid = $s->query_safe('SELECT pg_current_xact_id()::text::bigint % 4294967296');
  my $msg = "\x02" . siphash128($key, pack('VV', $dboid, $xid) . "\x02" . $rest) . $rest;
  my $hex = unpack('H*', $msg);
  $s->query_safe("SELECT pg_logical_emit_message(true, 'bitdex_sync', '\\x$hex'::bytea)");
  $s->query_safe($_) for @{ $o{after} // [] };
  $s->query_safe('COMMIT');
  $s->quit;
  return $hex;
}

1;
