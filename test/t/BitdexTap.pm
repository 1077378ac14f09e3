# What the worker's TAP tests share: a started node with bitdex_sync
# preloaded (worker napping 100 ms), and the extension created once the
# worker is ready for it. test/tap.sh puts this directory on PERL5LIB.
package BitdexTap;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(bitdex_node create_extension signed_message wal_dir);

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

# signed_message($node, $db, $rest): the hex of a capture message (format 2)
# whose bytes after the tag are $rest (entity id and ops), tagged with the
# server's capture key as the capture trigger tags it, for
# pg_logical_emit_message(true, 'bitdex_sync', '\x...'::bytea). Tests use it
# to reach the decoder with bytes the trigger would never write.
sub signed_message {
  my ($node, $db, $rest) = @_;
  require Digest::SHA;
  my $path = $node->data_dir . '/bitdex_sync.key';
  open(my $fh, '<:raw', $path) or die "cannot read $path: $!";
  local $/;
  my $key = <$fh>;
  close($fh);
  my $dboid = $node->safe_psql($db, 'SELECT oid FROM pg_database WHERE datname = current_database()');
  my $tag = substr(Digest::SHA::hmac_sha256(pack('V', $dboid) . "\x02" . $rest, $key), 0, 16);
  return unpack('H*', "\x02" . $tag . $rest);
}

1;
