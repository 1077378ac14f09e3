-- Hostile configs (issue 17, items 7-9) are refused by every entry point
-- that reads a config (apply_config, its dry run, trigger_sql), with the
-- key or the limit named: a YAML alias bomb is not expanded, a repeated key
-- does not silently replace the first, a NUL character does not cut a name.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS bitdex_sync;
CREATE TABLE hc (id int PRIMARY KEY, v int);
\set VERBOSITY terse

-- Nine levels of aliases to lists of nine (9^9 values if expanded).
SELECT string_agg(format('a%s: &a%s [%s]', i, i,
         CASE WHEN i = 0 THEN 'x, x, x, x, x, x, x, x, x'
              ELSE rtrim(repeat(format('*a%s, ', i - 1), 9), ', ') END), E'\n' ORDER BY i)
       || E'\nsources: [{table: hc, track_fields: [v]}]' AS bomb
  FROM generate_series(0, 9) i \gset
SELECT * FROM bitdex_sync.apply_config(:'bomb', dry_run => true);
SELECT bitdex_sync.trigger_sql(:'bomb');

-- A key twice: YAML and JSON, at the top and inside a source.
SELECT * FROM bitdex_sync.apply_config($$
sources: [{table: hc, track_fields: [v]}]
sources: []
$$, dry_run => true);
SELECT * FROM bitdex_sync.apply_config($$
sources:
  - table: hc
    track_fields: [v]
    track_fields: [id]
$$);
SELECT * FROM bitdex_sync.apply_config('{"sources": [{"table": "hc", "track_fields": ["v"]}], "sources": []}'::text);

-- A NUL character in a name, through a YAML escape.
SELECT * FROM bitdex_sync.apply_config(E'sources: [{table: hc, track_fields: ["v as f\\0x"]}]', dry_run => true);
SELECT bitdex_sync.trigger_sql(E'sources: [{table: "h\\0c", track_fields: [v]}]');

-- Nothing was applied.
SELECT count(*) AS sources FROM bitdex_sync.sources WHERE table_name = '"public"."hc"';
DROP TABLE hc;

-- Volatile expressions (issue 17, item 4): random() piled up values in the
-- index, set_config() rewrote the writer's session. Refused, naming the
-- function; stable ones (now(), format()) are accepted.
CREATE TABLE hv (id int PRIMARY KEY, v int, t timestamptz);
SELECT * FROM bitdex_sync.apply_config('sources: [{table: hv, track_fields: ["({v} + random()) as r"]}]', dry_run => true);
SELECT * FROM bitdex_sync.apply_config('sources: [{table: hv, track_fields: ["set_config(''search_path'', ''x'', true) as s"]}]', dry_run => true);
CREATE SEQUENCE hv_seq;
SELECT * FROM bitdex_sync.apply_config('sources: [{table: hv, track_fields: ["nextval(''hv_seq'') as n"]}]', dry_run => true);
SELECT source, action FROM bitdex_sync.apply_config('sources: [{table: hv, track_fields: ["format(''%s'', {v}) as f", "({t} < now()) as past"]}]', dry_run => true);
DROP TABLE hv; DROP SEQUENCE hv_seq;

-- ALTER TYPE ... RENAME VALUE of an enum a capture trigger reads (issue 17,
-- item 3): the index would keep the old label. Refused, naming the source
-- and column; an enum no source reads, and ADD VALUE, go through.
CREATE TYPE hc_mood AS ENUM ('sad', 'happy');
CREATE TYPE hc_other AS ENUM ('x', 'y');
CREATE TABLE he (id int PRIMARY KEY, m hc_mood, n hc_other);
SELECT source, action FROM bitdex_sync.apply_config('sources: [{table: he, capture: outbox, track_fields: [m]}]', load => false);
ALTER TYPE hc_mood RENAME VALUE 'sad' TO 'unhappy';
ALTER TYPE hc_other RENAME VALUE 'x' TO 'z';
ALTER TYPE hc_mood ADD VALUE 'meh';
-- Dropping a captured column or changing its type is refused, naming the
-- source and the config keys that use it (issue 17, item 3; PostgreSQL's
-- own dependency error named neither).
ALTER TABLE he ALTER COLUMN m TYPE text;
ALTER TABLE he DROP COLUMN m CASCADE;
ALTER TABLE he ALTER COLUMN n TYPE text;  -- n is not captured
-- Renaming or swapping columns does not change what is captured (the trees
-- refer to columns by number); the refusal then says the config has the old name.
ALTER TABLE he RENAME COLUMN m TO mood;
INSERT INTO he VALUES (1, 'happy');
SELECT ops FROM bitdex_sync.ops WHERE entity_id = 1 ORDER BY id DESC LIMIT 1;
ALTER TABLE he DROP COLUMN mood;
-- A role that does not own the table gets PostgreSQL's permission error, not
-- the config's contents.
CREATE ROLE hc_other_role;
SET ROLE hc_other_role;
ALTER TABLE he DROP COLUMN mood;
RESET ROLE;
DROP ROLE hc_other_role;
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
DELETE FROM bitdex_sync.ops;
DROP TABLE he; DROP TYPE hc_mood; DROP TYPE hc_other;
-- The hint's way: change the config first, in the same transaction. A
-- column used under several keys is named with each.
CREATE TABLE hf (id int PRIMARY KEY, lvl int, kind text, note text);
SELECT source, action FROM bitdex_sync.apply_config('sources: [{table: hf, capture: outbox, track_fields: [lvl, "upper({kind}) as k"], computed_fields: [{target: kx, expression: "{kind} = ''x''"}]}]', load => false);
ALTER TABLE hf DROP COLUMN kind;
ALTER TABLE hf DROP COLUMN note;
BEGIN;
SELECT source, action FROM bitdex_sync.apply_config('sources: [{table: hf, capture: outbox, track_fields: [lvl]}]', load => false);
ALTER TABLE hf DROP COLUMN kind;
COMMIT;
INSERT INTO hf VALUES (7, 3);
SELECT ops FROM bitdex_sync.ops WHERE entity_id = 7;
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
DELETE FROM bitdex_sync.ops;
DROP TABLE hf;
