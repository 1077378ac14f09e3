# Capture stays right where the order of changes decides (issue 17), checked
# end to end with the index built from the ops WAL (bitdex-index verify):
# - a child inserted under a query fan-out's parent while the parent
#   changes concurrently, in both lock orders (item 6: the child reads the
#   parent FOR SHARE, so the parent's change either reaches it through the
#   child's own record or through the parent's later queryOpSet);
# - children inserted and moved between parents, by a random writer (item 6);
# - rows that trade slots in one statement (item 1);
# - BitDex's fan-out shape, join + filter without expression, loaded and
#   captured (item 10);
# - verify of two direct sources sharing a field, both setting alive bits
#   (it crashed).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BitdexTap;

my $index_tool = $ENV{BITDEX_INDEX_BIN} or die "set BITDEX_INDEX_BIN";
my $node = bitdex_node('capture_order');
my $wal_dir = wal_dir($node);
create_extension($node);
my $work = PostgreSQL::Test::Utils::tempdir;
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE "Model" (id int PRIMARY KEY, poi boolean NOT NULL DEFAULT false, type text NOT NULL DEFAULT 'Checkpoint');
CREATE TABLE "ModelVersion" (id int PRIMARY KEY, "modelId" int, "baseModel" text);
CREATE TABLE "Image" (id int PRIMARY KEY DEFERRABLE, "modelVersionId" int, "modelId" int, lvl int);
INSERT INTO "Model" SELECT g, g % 2 = 0, CASE WHEN g % 3 = 0 THEN 'LORA' ELSE 'Checkpoint' END FROM generate_series(1, 20) g;
INSERT INTO "ModelVersion" SELECT g, 1 + g % 20, 'SD' || (g % 4) FROM generate_series(1, 60) g;
INSERT INTO "Image" SELECT g, 1 + g % 60, 1 + g % 21, g % 5 FROM generate_series(1, 300) g;
CREATE TABLE "S" (id int PRIMARY KEY, lvl int);
INSERT INTO "S" SELECT g, g % 3 FROM generate_series(100001, 100010) g;
});
sql(q{SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: Model
    query: "modelId eq {id}"
    track_fields: [poi]
  - table: ModelVersion
    type: fan_out
    query: "modelVersionId eq {id}"
    join: 'INNER JOIN "Model" ON "Model".id = "ModelVersion"."modelId"'
    filter: '"Model".type = ''Checkpoint'''
    track_fields: [baseModel]
  - table: Image
    track_fields: [modelVersionId, modelId, lvl]
    sets_alive: true
    on_delete: true
  - table: S
    track_fields: [lvl]
    sets_alive: true
    on_delete: true
$$)});
is(sql("SELECT bitdex_sync.wait_for_loads('120s')"), 't', 'the initial loads end');
is(sql("SELECT count(*) FROM bitdex_sync.loads WHERE state <> 'complete'"), '0', 'every load is complete');

sub verify {
  my ($name) = @_;
  sql("SELECT bitdex_sync.wait_for_sync('60s')");
  unlink "$work/ix";
  my $out = `$index_tool apply --wal $wal_dir --index $work/ix 2>&1`;
  is($?, 0, "$name: bitdex-index apply") or diag($out);
  $out = `$index_tool verify --index $work/ix --dsn '@{[$node->connstr('postgres')]}' --max-shown 5 2>&1`;
  like($out, qr/: 0 differences/, "$name: verify finds 0 differences") or diag($out);
  unlike($out, qr/not verified/, "$name: every field is verified (fan-in fields by a join)") or diag($out);
}
verify('after the loads');

# --- a child and its parent's change, concurrently --------------------------------
# concurrently($first, $second, $what): one session runs $first in an open
# transaction, another runs $second, which must wait for a lock; then the
# first commits, then the second.
sub concurrently {
  my ($first, $second, $what) = @_;
  my ($one, $two) = ($node->background_psql('postgres'), $node->background_psql('postgres'));
  $one->query_safe('BEGIN');
  $one->query_safe($first);
  $two->query_safe('BEGIN');
  $two->query_until(qr/sent/, "\\echo sent\n$second;\n");
  ok($node->poll_query_until('postgres',
      q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query = } . quote_sql("$second;")),
    $what);
  $one->query_safe('COMMIT');
  $two->query_safe('COMMIT');
  $one->quit;
  $two->quit;
}
sub quote_sql { my ($t) = @_; $t =~ s/'/''/g; return "'$t'"; }

# The parent's change first: the child's insert waits for it and reads the
# new value. Without the lock it read the old one and committed after the
# parent: the parent's queryOpSet, applied first, could not reach it.
concurrently(q{UPDATE "Model" SET poi = NOT poi WHERE id = 4}, q{INSERT INTO "Image" VALUES (1001, 1, 4, 0)},
  "the child's insert waits for the parent's change");
# The child first: the parent's change waits for the child's commit.
concurrently(q{INSERT INTO "Image" VALUES (1002, 2, 6, 0)}, q{UPDATE "Model" SET poi = NOT poi WHERE id = 6},
  "the parent's change waits for the child's commit");
verify('a child and its parent changed concurrently');

# A parent that is not there yet (a concurrent INSERT: no row to lock), and
# one that enters the fan-out's filter concurrently: the child's key lock
# waits for the parent's change either way (found by a review: with a row
# lock neither waited, and the child missed the parent's fields).
concurrently(q{INSERT INTO "Model" VALUES (50, true)}, q{INSERT INTO "Image" VALUES (1003, 1, 50, 0)},
  'a child of a parent inserted concurrently waits for it');
my $lora_version = sql(q{SELECT v.id FROM "ModelVersion" v JOIN "Model" m ON m.id = v."modelId" WHERE m.type = 'LORA' ORDER BY 1 LIMIT 1});
concurrently(qq{UPDATE "ModelVersion" SET "modelId" = 1 WHERE id = $lora_version},
  qq{INSERT INTO "Image" VALUES (1004, $lora_version, 1, 0)},
  'a child of a parent entering the join filter concurrently waits for it');
verify('a parent inserted, and one entering its filter, concurrently with a child');

# A parent's key changes: its old children lose its fields, the children of
# the new key get them (before, only changed fields were sent, to the new
# key's children only).
# (Its versions move away first: a version's join to a Model whose key
# changed is not followed, docs/config.md, "What capture does not see".)
sql(q{UPDATE "ModelVersion" SET "modelId" = 11 WHERE "modelId" = 10});
sql(q{INSERT INTO "Image" VALUES (1005, 1, 99, 0)});
sql(q{UPDATE "Model" SET id = 99 WHERE id = 10});
verify("a parent's key changed");

# --- rows that trade slots in one statement ----------------------------------
sql('UPDATE "Image" SET id = id + 1');
sql('UPDATE "Image" SET id = CASE id WHEN 2 THEN 3 ELSE 2 END WHERE id IN (2, 3)');
verify('rows renumbered inside one statement');

# A trigger's nested INSERT into a slot that its statement's row leaves: it
# sorts before the capture trigger, so the nested statement ends before the
# leave is written; its arrival is held to the enclosing statement's end.
sql(q{
CREATE FUNCTION refill() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO "Image" VALUES (OLD.id, 1, 1, 4); RETURN NULL; END $$;
CREATE TRIGGER a_refill AFTER UPDATE OF id ON "Image" FOR EACH ROW WHEN (OLD.id = 7) EXECUTE FUNCTION refill();
UPDATE "Image" SET id = 20007 WHERE id = 7;
DROP TRIGGER a_refill ON "Image";
});
verify('a slot left and filled again by a nested statement');

# --- a random writer: children move between parents, parents change ----------
sql(q{
DO $$
DECLARE i int;
BEGIN
  FOR i IN 1 .. 600 LOOP
    CASE floor(random() * 7)::int
      WHEN 0 THEN UPDATE "Model" SET poi = NOT poi WHERE id = 1 + floor(random() * 20)::int;
      WHEN 1 THEN UPDATE "ModelVersion" SET "modelId" = 1 + floor(random() * 21)::int
                  WHERE id = 1 + floor(random() * 60)::int;
      WHEN 2 THEN UPDATE "ModelVersion" SET "baseModel" = 'SD' || i % 5 WHERE id = 1 + floor(random() * 60)::int;
      WHEN 3 THEN INSERT INTO "ModelVersion" VALUES (2000 + i, 1 + floor(random() * 21)::int, 'SD' || i % 3);
      WHEN 4 THEN UPDATE "Image" SET "modelVersionId" = 1 + floor(random() * 60)::int,
                  "modelId" = CASE WHEN random() < 0.5 THEN "modelId" ELSE 1 + floor(random() * 21)::int END
                  WHERE id = 1 + floor(random() * 300)::int;
      WHEN 5 THEN DELETE FROM "Image" WHERE id = 1 + floor(random() * 300)::int;
      ELSE INSERT INTO "Image" VALUES (5000 + i, 1 + floor(random() * 60)::int, 1 + floor(random() * 21)::int, i % 5);
    END CASE;
  END LOOP;
END $$;
});
verify('random writes: parents change, children come, go and move');

# Bulk writes take a table-level key lock past 16 keys of a table in a
# transaction: 20,000 parents inserted and 20,000 children under them, each
# in one statement, do not fill the lock table (max_locks_per_transaction;
# with one lock per key they failed with "out of shared memory").
sql(q{INSERT INTO "Model" SELECT g, g % 2 = 0 FROM generate_series(100, 20099) g});
sql(q{INSERT INTO "Image" SELECT 100000 + g, 1, g, 0 FROM generate_series(100, 20099) g});
sql(q{UPDATE "Model" SET poi = NOT poi WHERE id >= 100});
verify('20,000 parents and their children in single statements');

done_testing();
