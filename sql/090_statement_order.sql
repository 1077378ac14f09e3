-- The order of a statement's records (issue 17, item 1): rows that trade
-- slots in one statement. Read back through the output plugin.
SET client_min_messages = warning;
SELECT 'slot' FROM pg_create_logical_replication_slot('order_test', 'bitdex_sync');
-- Every leave is written before any arrival, whatever order the rows come
-- in. Before, ids 1, 2, 3 moved up by one left only slot 4 alive (row 2's
-- delete of slot 2 came after row 1 arrived there).
CREATE TABLE "S" (id int PRIMARY KEY DEFERRABLE, lvl int);
CREATE TABLE "SJ" (id int PRIMARY KEY, slot int, tag int);
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - {table: S, sets_alive: true, on_delete: true, track_fields: [lvl]}
  - {table: SJ, slot_field: slot, field: tags, value_field: tag}
$$, load => false) ORDER BY source;
INSERT INTO "S" VALUES (1, 10), (2, 20), (3, 30);
INSERT INTO "SJ" VALUES (1, 1, 7), (2, 2, 7);
SELECT data FROM pg_logical_slot_get_changes('order_test', NULL, NULL);
UPDATE "S" SET id = id + 1;
SELECT data FROM pg_logical_slot_get_changes('order_test', NULL, NULL);
-- Two ids swapped, and a join row moving into a slot another one leaves.
UPDATE "S" SET id = CASE id WHEN 2 THEN 3 ELSE 2 END WHERE id IN (2, 3);
UPDATE "SJ" SET slot = slot + 1;
SELECT data FROM pg_logical_slot_get_changes('order_test', NULL, NULL);
-- A statement's arrivals are held while its rows are processed: a function
-- run by the statement writes its own records (a nested statement) at its
-- end, and a failed statement writes none.
CREATE FUNCTION s_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
CREATE TRIGGER z_fail AFTER UPDATE ON "S" FOR EACH ROW WHEN (NEW.id = 104) EXECUTE FUNCTION s_fail();
CREATE FUNCTION s_bump(i int) RETURNS int LANGUAGE sql AS $$ UPDATE "S" SET lvl = lvl + 1 WHERE id = 4 RETURNING 0 $$;
UPDATE "S" SET id = id + 10 + s_bump(id) WHERE id = 2;
BEGIN;
SAVEPOINT a;
UPDATE "S" SET id = id + 100 WHERE id = 4;  -- fails after capture held slot 104's arrival
ROLLBACK TO a;
UPDATE "S" SET id = 5 WHERE id = 4;
COMMIT;
SELECT data FROM pg_logical_slot_get_changes('order_test', NULL, NULL);
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}') ORDER BY source;
DROP TABLE "S", "SJ";
DROP FUNCTION s_bump(int), s_fail();
SELECT pg_drop_replication_slot('order_test');
