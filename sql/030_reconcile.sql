-- apply_config reconciliation, dry runs, trigger_sql, the outbox sink, join
-- filters and conditional computed fields, validation errors, privileges.
SET client_min_messages = warning;
CREATE TABLE rec_item (id bigint PRIMARY KEY, level int, label text, detected boolean, mv int, owner_id int);
CREATE TABLE rec_link (item_id int NOT NULL, value_id int NOT NULL, detected boolean NOT NULL DEFAULT true);

-- A trigger that merely looks like ours must survive every reconciliation.
CREATE FUNCTION rec_foreign() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER bitdex_rec_item_foreign AFTER INSERT ON rec_item FOR EACH ROW EXECUTE FUNCTION rec_foreign();

-- dry run: actions reported, nothing created or recorded.
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["level"]}]}'::jsonb, dry_run => true);
SELECT count(*) AS recorded FROM bitdex_sync.sources;
SELECT count(*) AS our_triggers FROM pg_trigger WHERE tgrelid = 'rec_item'::regclass AND tgname ~ '^bitdex_rec_item_[0-9a-f]{8}$';

-- create, then the same config again: unchanged, no DDL.
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["level"]}]}'::jsonb);
SELECT tgname AS created_trigger, tgenabled FROM pg_trigger WHERE tgrelid = 'rec_item'::regclass AND tgname ~ '^bitdex_rec_item_[0-9a-f]{8}$' \gset
SELECT :'tgenabled' AS enabled_always;
SELECT source, action, trigger_name = :'created_trigger' AS same_trigger FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["level"]}]}'::jsonb);
-- YAML with the same keys is the same config.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: rec_item
    track_fields: [level]
$$);

-- change: replace (new name), the old trigger gone; add a join source with the outbox sink.
SELECT source, action, trigger_name <> :'created_trigger' AS renamed FROM bitdex_sync.apply_config($$
capture: outbox
sources:
  - table: rec_item
    track_fields: [level, "upper({label}) as labelUpper"]
  - table: rec_link
    slot_field: item_id
    field: valueIds
    value_field: value_id
    filter: "{detected}"
    computed_fields:
      - {target: manualIds, expression: "NOT {detected}", value: value_id}
$$) ORDER BY source;
SELECT count(*) AS old_trigger_left FROM pg_trigger WHERE tgname = :'created_trigger';
SELECT name, table_name, trigger_name ~ '^bitdex_' AS ours FROM bitdex_sync.sources ORDER BY name;

-- The outbox sink writes rows to bitdex_sync.ops.
INSERT INTO rec_item VALUES (1, 3, 'abc', true, 7, 1);
UPDATE rec_item SET label = 'xyz' WHERE id = 1;
INSERT INTO rec_link VALUES (1, 50, true), (1, 51, false);
UPDATE rec_link SET detected = false WHERE value_id = 50;
DELETE FROM rec_link WHERE value_id = 51;
SELECT entity_id, ops FROM bitdex_sync.ops ORDER BY id;

-- drop: a source left out of the config loses its trigger; the foreign one stays.
SELECT source, action FROM bitdex_sync.apply_config('{"capture":"outbox","sources":[{"table":"rec_link","slot_field":"item_id","field":"valueIds","value_field":"value_id"}]}') ORDER BY source;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'rec_item'::regclass ORDER BY 1;
SELECT count(*) AS history_rows FROM bitdex_sync.config_history;

-- trigger_sql shows the DDL (names are digests of the definition).
SELECT regexp_replace(bitdex_sync.trigger_sql('{"sources":[{"table":"rec_item","on_delete":true}]}'), '_[0-9a-f]{8}"', '_<hash>"', 'g') AS ddl;

-- Errors name the source and key and leave everything as it was.
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"no_such_table","track_fields":["a"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["nope"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["lower({level}) as x"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["{label} +* 1 as x"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["ROW({level}, {label}) as x"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","slot_field":"label","track_fields":["level"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_link","slot_field":"item_id","field":"v","value_field":"value_id","filter":"{value_id} + 1"}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["(SELECT 1) as x"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","type":"fan_out_per_row","rows_from":{"table":"rec_link","fk":"item_id"},"track_fields":["level"]}]}');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["level"]},{"table":"rec_item","track_fields":["label"]}]}');
SELECT * FROM bitdex_sync.apply_config('sources: [{table: rec_item, track_fields: [level], colour: blue}]');
SELECT * FROM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["level"]},{"table":"no_such_table","track_fields":["a"]}]}');
SELECT name FROM bitdex_sync.sources ORDER BY name;
DO $$
BEGIN
  PERFORM bitdex_sync.apply_config('{"sources":[{"table":"rec_item","track_fields":["nope"]}]}');
EXCEPTION WHEN undefined_column THEN
  RAISE WARNING 'sqlstate %', SQLSTATE;
END $$;

-- Privileges: a writer with no rights on schema bitdex_sync is still
-- captured, and can neither read the outbox nor change the config.
CREATE ROLE rec_writer;
GRANT INSERT, UPDATE, DELETE, SELECT ON rec_link TO rec_writer;
SET ROLE rec_writer;
INSERT INTO rec_link VALUES (9, 90, true);
SELECT count(*) FROM bitdex_sync.ops;
SELECT * FROM bitdex_sync.apply_config('{"sources":[]}');
RESET ROLE;
SELECT entity_id, ops FROM bitdex_sync.ops WHERE entity_id = 9;
DROP OWNED BY rec_writer;
DROP ROLE rec_writer;

-- An empty source list drops everything bitdex_sync created.
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
SELECT count(*) AS ours_left FROM pg_trigger WHERE tgname ~ '^bitdex_rec_(item|link).*_[0-9a-f]{8}$';

-- A table renamed after the config was applied (issue 17, item 2): applying
-- a config that names it by its new name replaces the old source's triggers,
-- found by OID; none is left behind, unrecorded, capturing twice.
CREATE TABLE rec_old (id int PRIMARY KEY, v int);
SELECT source, action FROM bitdex_sync.apply_config('sources: [{table: rec_old, capture: outbox, track_fields: [v]}]');
ALTER TABLE rec_old RENAME TO rec_new;
SELECT source, action FROM bitdex_sync.apply_config('sources: [{table: rec_new, capture: outbox, track_fields: [v]}]') ORDER BY 1;
SELECT count(*) AS triggers_on_rec_new FROM pg_trigger WHERE tgrelid = 'rec_new'::regclass AND NOT tgisinternal;
DELETE FROM bitdex_sync.ops;
INSERT INTO rec_new VALUES (1, 5);
SELECT count(*) AS records_of_one_insert FROM bitdex_sync.ops;
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'rec_new'::regclass AND NOT tgisinternal;
DELETE FROM bitdex_sync.ops;
DROP TABLE rec_new;
