# What the worker's TAP tests share: a started node with bitdex_sync
# preloaded (worker napping 100 ms), and the extension created once the
# worker is ready for it. test/tap.sh puts this directory on PERL5LIB.
package BitdexTap;
use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(bitdex_node create_extension);

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

1;
