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
