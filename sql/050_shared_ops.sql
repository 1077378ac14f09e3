-- shared_ops_fields: a callable helper per field that gives the same set op
-- the trigger emits, recorded and reconciled like the trigger itself.
SET client_min_messages = warning;
CREATE TABLE so_image (id int PRIMARY KEY, sort_at timestamptz, level int);
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: so_image
    sets_alive: true
    track_fields: ["extract(epoch from {sort_at})::bigint as sortAtUnix", level, {column: sort_at, target: sortAt}]
    shared_ops_fields: [sortAtUnix, sortAt]
$$);
SELECT helpers FROM bitdex_sync.sources WHERE name = 'so_image';
SELECT 'slot' FROM pg_create_logical_replication_slot('shared_test', 'bitdex_sync');
INSERT INTO so_image VALUES (1, '2026-11-22 10:00:00+00', 3);
SELECT data FROM pg_logical_slot_get_changes('shared_test', NULL, NULL);
-- The helpers give exactly the trigger's ops for those fields (timestamptz in UTC whatever TimeZone).
SET TimeZone = 'America/New_York';
SELECT public.bitdex_so_image_sortatunix_ops(i) || public.bitdex_so_image_sortat_ops(i) AS helper_ops FROM so_image i;
RESET TimeZone;
SELECT bitdex_sync.op_value(NULL::int) AS null_value, bitdex_sync.op_value(1.50::numeric) AS numeric_value;
SELECT bitdex_sync.op_value(ARRAY[1]);
-- op_value_text (verify's variant) is the same value as JSON text, row after
-- row through one call site, for every kind of value.
SELECT v.label, bitdex_sync.op_value_text(v.x) AS text, bitdex_sync.op_value_text(v.x)::jsonb = bitdex_sync.op_value(v.x) AS same
  FROM (VALUES ('digits', 42::text), ('quote', 'say "hi"\\'), ('control', E'tab\there\nline'), ('unicode', 'ünï €'), ('null', NULL)) v(label, x);
SELECT bitdex_sync.op_value_text(n) AS text, bitdex_sync.op_value_text(n)::jsonb = bitdex_sync.op_value(n) AS same
  FROM unnest(ARRAY[1.50, -2, 'NaN', 1e30]::numeric[]) n;
-- Floats PostgreSQL prints with an exponent: written as numeric prints them,
-- as to_jsonb (and so the outbox) stores them.
SELECT f::text AS float, bitdex_sync.op_value_text(f) AS text, bitdex_sync.op_value_text(f)::jsonb = to_jsonb(f) AS same
  FROM unnest(ARRAY[1e20, 2.5e-30, -1.5e-10, 0.1, 0.30000000000000004, 'Infinity']::float8[]) f;
SELECT bitdex_sync.op_value_text(1e20::float4) AS float4_text, bitdex_sync.op_value_text(1e20::float4)::jsonb = to_jsonb(1e20::float4) AS same;
SELECT bitdex_sync.op_value_text(b) AS bool_text, bitdex_sync.op_value_text(t) AS ts_text,
       bitdex_sync.op_value_text(i) AS int8_text
  FROM (VALUES (true, '2026-11-22 10:00:00.123'::timestamp, 9007199254740993::int8), (false, NULL, -1)) v(b, t, i);
SELECT bitdex_sync.op_value_text(ARRAY[1]);
-- Removing a field from shared_ops_fields drops its helper; removing the source drops all.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: so_image
    sets_alive: true
    track_fields: ["extract(epoch from {sort_at})::bigint as sortAtUnix", level, {column: sort_at, target: sortAt}]
    shared_ops_fields: [sortAtUnix]
$$);
SELECT proname FROM pg_proc WHERE proname LIKE 'bitdex_so_image_%' ORDER BY 1;
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
SELECT count(*) AS helpers_left FROM pg_proc WHERE proname LIKE 'bitdex_so_image_%';
SELECT pg_drop_replication_slot('shared_test');
