# What the worker's TAP tests share: a started node with bitdex_sync
# preloaded (worker napping 100 ms), and the extension created once the
# worker is ready for it. test/tap.sh puts this directory on PERL5LIB.
package BitdexTap;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(bitdex_node create_extension install_signer wal_dir);

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

# install_signer($node, $db = 'postgres'): functions in schema bdx_test of
# that database; SELECT bdx_test.emit_signed('\x...'::bytea) then emits a
# capture message (format 2) whose bytes after the tag are the argument,
# tagged with the server's capture key for the emitting transaction as the
# capture trigger tags it, and returns the whole message. Tests use it to
# reach the decoder with bytes the trigger would never write. Superuser:
# it reads the key file.
sub install_signer {
  my ($node, $db) = @_;
  $node->safe_psql($db // 'postgres', q{
CREATE SCHEMA IF NOT EXISTS bdx_test;
CREATE OR REPLACE FUNCTION bdx_test.le32(v bigint) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
  SELECT set_byte(set_byte(set_byte(set_byte('\x00000000'::bytea, 0, (v & 255)::int), 1, ((v >> 8) & 255)::int),
                           2, ((v >> 16) & 255)::int), 3, ((v >> 24) & 255)::int) $$;
CREATE OR REPLACE FUNCTION bdx_test.pad(k bytea, c int) RETURNS bytea LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE r bytea := decode(repeat('00', 64), 'hex');
BEGIN
  FOR i IN 0..63 LOOP
    r := set_byte(r, i, (CASE WHEN i < length(k) THEN get_byte(k, i) ELSE 0 END) # c);
  END LOOP;
  RETURN r;
END $$;
CREATE OR REPLACE FUNCTION bdx_test.hmac(k bytea, m bytea) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
  SELECT sha256(bdx_test.pad(k, 92) || sha256(bdx_test.pad(k, 54) || m)) $$;
CREATE OR REPLACE FUNCTION bdx_test.emit_signed(rest bytea) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
  xid bigint := pg_current_xact_id()::text::bigint % 4294967296;
  db bigint := (SELECT oid FROM pg_database WHERE datname = current_database());
  msg bytea;
BEGIN
  msg := '\x02'::bytea || substr(bdx_test.hmac(pg_read_binary_file('bitdex_sync.key'),
                                               bdx_test.le32(db) || bdx_test.le32(xid) || '\x02'::bytea || rest), 1, 16)
         || rest;
  PERFORM pg_logical_emit_message(true, 'bitdex_sync', msg);
  RETURN msg;
END $$;
});
}

1;
