-- Per-row fan-out (rows_from, resolved in the writing transaction) and
-- query fan-out with an expression filling {ids}.
SET client_min_messages = warning;
CREATE TABLE fo_post (id int PRIMARY KEY, published_at timestamp, status text);
CREATE TABLE fo_image (id int PRIMARY KEY, post_id int REFERENCES fo_post ON DELETE CASCADE);
CREATE TABLE fo_model (id int PRIMARY KEY, poi boolean NOT NULL DEFAULT false, kind text);
CREATE TABLE fo_version (id int PRIMARY KEY, model_id int, kind text);
INSERT INTO fo_post VALUES (1, '2024-01-01', 'draft'), (2, NULL, 'draft');
INSERT INTO fo_image VALUES (10, 1), (11, 1), (12, 2), (13, NULL);
INSERT INTO fo_model VALUES (5, false, 'checkpoint'), (6, false, 'lora');
INSERT INTO fo_version VALUES (50, 5, 'checkpoint'), (51, 5, 'checkpoint'), (52, 5, 'lora');

SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: fo_post
    type: fan_out_per_row
    rows_from: {table: fo_image, fk: post_id}
    track_fields: [{column: published_at, target: publishedAt}, status]
  - table: fo_model
    query: "modelVersionIds in [{ids}]"
    expression: "SELECT array_agg(v.id ORDER BY v.id) FROM fo_version v WHERE v.model_id = {id} AND v.kind = {kind}"
    track_fields: [poi]
$$) ORDER BY source;
SELECT 'slot' FROM pg_create_logical_replication_slot('fan_out_test', 'bitdex_sync');

-- One record per child image, resolved now, in this transaction.
UPDATE fo_post SET status = 'published' WHERE id = 1;
-- Fields that did not change: nothing.
UPDATE fo_post SET status = 'published' WHERE id = 1;
-- A post with no images: nothing.
INSERT INTO fo_post VALUES (3, '2024-05-01', 'draft');
-- NULL to a value.
UPDATE fo_post SET published_at = '2024-06-01' WHERE id = 2;
-- The expression's result fills {ids} as list elements (never a nested array).
UPDATE fo_model SET poi = true WHERE id = 5;
-- An expression with no result captures nothing (no slot to update).
UPDATE fo_model SET poi = true WHERE id = 6;
-- Deleting a parent takes its values away from the children that still exist
-- (here ON DELETE CASCADE removed them first, so nothing remains to update).
DELETE FROM fo_post WHERE id = 3;
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);

-- Errors are caught before any trigger exists.
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"fo_post","type":"fan_out_per_row","rows_from":{"table":"fo_imagez","fk":"post_id"},"track_fields":["status"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"fo_post","type":"fan_out_per_row","rows_from":{"table":"fo_image","fk":"postid"},"track_fields":["status"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"fo_model","query":"m in [{ids}]","expression":"SELECT nope FROM fo_version WHERE model_id = {id}","track_fields":["poi"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"fo_model","query":"m in [{ids}]","expression":"SELECT 1","join":"fo_version v","track_fields":["poi"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"fo_model","query":"m in [{ids}]","expression":"array_agg(v.id)","join":"fo_version v WHERE v.nope = {id}","track_fields":["poi"]}]}');

-- A fan-out filter decides whether the parent contributes at all: entering
-- it sets the values, leaving it removes them, outside it nothing happens.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: fo_post
    type: fan_out_per_row
    rows_from: {table: fo_image, fk: post_id}
    filter: "{status} = 'published'"
    track_fields: [{column: published_at, target: publishedAt}]
  - table: fo_model
    query: "modelId eq {id}"
    filter: "{kind} = 'checkpoint'"
    track_fields: [poi]
$$) ORDER BY source;
UPDATE fo_post SET published_at = '2024-07-01' WHERE id = 2;          -- draft: nothing
UPDATE fo_post SET status = 'published' WHERE id = 2;                -- enters: set
UPDATE fo_post SET published_at = '2024-07-02' WHERE id = 2;          -- inside: remove/set
UPDATE fo_post SET status = 'hidden' WHERE id = 2;                   -- leaves: remove
UPDATE fo_model SET poi = false WHERE id = 6;                        -- a lora: nothing
UPDATE fo_model SET poi = false WHERE id = 5;                        -- a checkpoint: captured
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);

-- "join": the expression is the selected value, the join its FROM clause,
-- both filled from the row (the posts of the model's versions here).
ALTER TABLE fo_post ADD COLUMN version_id int;
UPDATE fo_post SET version_id = 50 WHERE id = 1;
UPDATE fo_post SET version_id = 52 WHERE id = 2;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: fo_model
    query: "postId in [{ids}]"
    expression: "array_agg(DISTINCT p.id ORDER BY p.id)"
    join: "fo_post p JOIN fo_version v ON v.id = p.version_id WHERE v.model_id = {id}"
    track_fields: [poi]
$$) ORDER BY source;
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);
UPDATE fo_model SET poi = true WHERE id = 5;                         -- posts 1 (v50) and 2 (v52)
UPDATE fo_version SET model_id = 6 WHERE id = 52;
UPDATE fo_model SET poi = false WHERE id = 5;                        -- post 1 only
UPDATE fo_model SET poi = true WHERE id = 6;                         -- post 2 now
DELETE FROM fo_post WHERE id = 2;
UPDATE fo_model SET poi = false WHERE id = 6;                        -- no posts: nothing
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);

-- Children that arrive under a query fan-out's parent (issue 17, item 6):
-- "modelId eq {id}" where modelId is a plain column of the direct source on
-- fo_version. A version inserted under a model, or moved to another one,
-- takes the model's fields in its own record (only while the model passes
-- the fan-out's filter); moved away, it gives them back.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: fo_model
    query: "modelId eq {id}"
    filter: "{kind} = 'checkpoint'"
    track_fields: [poi, {column: kind, target: modelKind}]
  - table: fo_version
    track_fields: [{column: model_id, target: modelId}, kind]
$$, load => false) ORDER BY source;
UPDATE fo_model SET poi = true WHERE id = 5;
INSERT INTO fo_version VALUES (60, 5, 'checkpoint');                 -- takes model 5's poi and modelKind
INSERT INTO fo_version VALUES (61, 6, 'lora'), (62, NULL, 'x'), (63, 999, 'x');  -- outside the filter, no parent
UPDATE fo_version SET kind = 'lora' WHERE id = 60;                   -- not a move: its own field only
UPDATE fo_version SET model_id = 6 WHERE id = 60;                    -- moved to a lora model: gives back
UPDATE fo_version SET model_id = 5 WHERE id = 61;                    -- moved under model 5: takes
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);
-- The reader of a child table needs SELECT on the parent only (the row lock
-- that orders a parent's change against the child's write is capture's).
CREATE ROLE fo_writer;
GRANT SELECT, INSERT ON fo_version TO fo_writer;
GRANT SELECT ON fo_model TO fo_writer;
SET ROLE fo_writer;
INSERT INTO fo_version VALUES (64, 5, 'checkpoint');
RESET ROLE;
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);
DELETE FROM fo_version WHERE id >= 60;
REVOKE ALL ON fo_version, fo_model FROM fo_writer;
DROP ROLE fo_writer;

-- BitDex's own shape (issue 17, item 10), this exact source from its Civitai
-- config: "join" without "expression", "filter" over that join. The row
-- counts only while the join finds a row passing the filter, the OLD row on
-- leave and the NEW row on arrive (as fan-out filters do).
CREATE TABLE "Model" (id int PRIMARY KEY, type text, name text);
CREATE TABLE "ModelVersion" (id int PRIMARY KEY, "modelId" int, "baseModel" text, notes text);
INSERT INTO "Model" VALUES (1, 'Checkpoint', 'a'), (2, 'LORA', 'b');
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: ModelVersion
    type: fan_out
    query: "modelVersionIds eq {id}"
    join: 'INNER JOIN "Model" ON "Model".id = "ModelVersion"."modelId"'
    filter: '"Model".type = ''Checkpoint'''
    track_fields: [baseModel]
$$) ORDER BY source;
INSERT INTO "ModelVersion" VALUES (10, 1, 'SDXL'), (20, 2, 'SD1.5'), (30, NULL, 'SD1.5');  -- 10 only
UPDATE "ModelVersion" SET "baseModel" = 'Pony' WHERE id IN (10, 20);   -- 10: remove/set
UPDATE "ModelVersion" SET "modelId" = 2 WHERE id = 10;                 -- leaves: remove
UPDATE "ModelVersion" SET "modelId" = 1 WHERE id = 20;                 -- arrives: set
UPDATE "ModelVersion" SET notes = 'x' WHERE id = 20;                   -- no tracked change
DELETE FROM "ModelVersion" WHERE id IN (10, 20);                        -- 20: remove
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);
-- The trigger depends on what the join reads: "Model".type cannot go, the
-- version's unread columns can.
ALTER TABLE "Model" DROP COLUMN type;
ALTER TABLE "ModelVersion" DROP COLUMN notes;
ALTER TABLE "Model" DROP COLUMN name;
-- Errors name the keys and show the query; volatile filters are refused.
SELECT * FROM bitdex_sync.apply_config($$
sources: [{table: ModelVersion, query: "m eq {id}", join: 'INNER JOIN "Modell" ON "Modell".id = "ModelVersion"."modelId"', track_fields: [baseModel]}]
$$, dry_run => true);
SELECT * FROM bitdex_sync.apply_config($$
sources: [{table: ModelVersion, query: "m eq {id}", join: 'INNER JOIN "Model" ON "Model".id = "ModelVersion"."modelId"', filter: 'random() < 0.5', track_fields: [baseModel]}]
$$, dry_run => true);

-- Row level security on a table a capture query reads (here a fan-in's
-- parent) is refused at apply_config and when enabled later: capture reads
-- it as the writer, and the index would depend on who wrote (review finding).
CREATE TABLE fo_rls_p (id int PRIMARY KEY, k int, v int);
CREATE TABLE fo_rls_c (id int PRIMARY KEY, pk int);
ALTER TABLE fo_rls_p ENABLE ROW LEVEL SECURITY;
SELECT * FROM bitdex_sync.apply_config($$
sources:
  - {table: fo_rls_p, query: "pk eq {k}", track_fields: [v]}
  - {table: fo_rls_c, track_fields: [pk]}
$$, dry_run => true);
ALTER TABLE fo_rls_p DISABLE ROW LEVEL SECURITY;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - {table: fo_rls_p, query: "pk eq {k}", track_fields: [v]}
  - {table: fo_rls_c, track_fields: [pk]}
$$, load => false) ORDER BY source;
ALTER TABLE fo_rls_p ENABLE ROW LEVEL SECURITY;
-- The DDL guard names the table's own source and its key, though the
-- child's fan-in reads the column too (review: it named the child).
ALTER TABLE fo_rls_p DROP COLUMN k;
ALTER TABLE fo_rls_p ALTER COLUMN v TYPE bigint;
-- A parent whose query key changes takes its fields from the old key's
-- slots and gives them to the new key's (before: only changed fields, to
-- the new key); a NULL key addresses no slot (SQL equality, as the fan-in
-- and verify read it; before: "pk eq null").
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL) WHERE data NOT LIKE '{"clear"%';
INSERT INTO fo_rls_p VALUES (1, 5, 10), (2, NULL, 20);
UPDATE fo_rls_p SET k = 6 WHERE id = 1;
UPDATE fo_rls_p SET v = 21 WHERE id = 2;
SELECT data FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL);
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}') ORDER BY source;
DROP TABLE fo_rls_p, fo_rls_c;

-- A fan-out expression that raises at run time raises in the writer's
-- statement (which rolls back): never an update captured with no slots.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: fo_model
    query: "modelVersionIds in [{ids}]"
    expression: "SELECT array_agg(v.id / (v.model_id - 5)) FROM fo_version v WHERE v.model_id = {id}"
    track_fields: [poi]
$$) ORDER BY source;
UPDATE fo_model SET poi = NOT poi WHERE id = 5;
SELECT id, poi FROM fo_model WHERE id = 5;
SELECT count(*) AS captured FROM pg_logical_slot_get_changes('fan_out_test', NULL, NULL) WHERE data LIKE '%poi%';

SELECT pg_drop_replication_slot('fan_out_test');
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}') ORDER BY source;
DROP TABLE "ModelVersion", "Model";
