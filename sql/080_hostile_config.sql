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
-- Renaming or swapping columns does not change what is captured (the trees
-- refer to columns by number); dropping one or changing its type is refused.
ALTER TABLE he RENAME COLUMN m TO mood;
INSERT INTO he VALUES (1, 'happy', 'y');
SELECT ops FROM bitdex_sync.ops WHERE entity_id = 1 ORDER BY id DESC LIMIT 1;
ALTER TABLE he DROP COLUMN mood;
ALTER TABLE he ALTER COLUMN mood TYPE text;
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
DELETE FROM bitdex_sync.ops;
DROP TABLE he; DROP TYPE hc_mood; DROP TYPE hc_other;
