-- Attacks by roles without grants (issue 15, items 1, 2 and 4): capture acts
-- only for triggers apply_config created and recorded, with the definition
-- recorded for them; no SQL from a definition runs with more rights than the
-- writer's; functions created after apply_config cannot change what runs.
SET client_min_messages = warning;
CREATE ROLE sec_mallory;
CREATE ROLE sec_writer;
CREATE TABLE sec_img (id int PRIMARY KEY, lvl int, name varchar(40));
CREATE TABLE sec_post (id int PRIMARY KEY, lvl int);
CREATE TABLE sec_child (id int PRIMARY KEY, post_id int);
GRANT SELECT, INSERT, UPDATE, DELETE ON sec_img, sec_post TO sec_writer;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    sets_alive: true
    track_fields: [lvl, "lower({name}) as lname"]
  - table: sec_post
    type: fan_out_per_row
    rows_from: {table: sec_child, fk: post_id}
    track_fields: [lvl]
$$) ORDER BY source;
SELECT 'slot' FROM pg_create_logical_replication_slot('sec_test', 'bitdex_sync');

-- 1. A role without grants tries to run SQL of its choosing as the
-- extension's owner through a capture spec of its own (a query fan-out
-- whose {ids} expression calls a function that makes it superuser).
SET ROLE sec_mallory;
CREATE TEMP TABLE sec_t (id int, x int);
CREATE FUNCTION pg_temp.evil() RETURNS jsonb LANGUAGE sql AS $$ ALTER ROLE sec_mallory SUPERUSER; SELECT '[1]'::jsonb $$;
CREATE TRIGGER sec_forged AFTER INSERT ON pg_temp.sec_t FOR EACH ROW EXECUTE FUNCTION bitdex_sync.capture('{"v":1,"source":"x","kind":"fan_out","sink":"message","slot":"\"id\"","alive":false,"delete":false,"fields":[{"f":"x","sql":"\"x\""}],"query":"postId in [{ids}]","query_cols":[],"ids_sql":"SELECT pg_temp.evil()","ids_params":[]}');
INSERT INTO pg_temp.sec_t VALUES (1, 1);
-- 2. ... and through the outbox sink, rows of its choosing in bitdex_sync.ops.
CREATE TRIGGER sec_forged_outbox AFTER INSERT ON pg_temp.sec_t FOR EACH ROW EXECUTE FUNCTION bitdex_sync.capture('{"v":1,"source":"x","kind":"direct","sink":"outbox","slot":"\"id\"","alive":true,"delete":false,"fields":[{"f":"lvl","sql":"42"}]}');
INSERT INTO pg_temp.sec_t VALUES (1001, 1);
RESET ROLE;
SELECT rolsuper AS mallory_is_superuser FROM pg_roles WHERE rolname = 'sec_mallory';

-- Even a trigger created by a role allowed to (here a superuser) acts only
-- when apply_config recorded it: the argument is not a definition.
CREATE TABLE sec_forge (id int PRIMARY KEY, x int);
CREATE TRIGGER sec_forged AFTER INSERT ON sec_forge FOR EACH ROW EXECUTE FUNCTION bitdex_sync.capture();
INSERT INTO sec_forge VALUES (1, 1);
-- ... the same for the outbox: no forged rows in bitdex_sync.ops.
CREATE TRIGGER sec_forged_outbox AFTER INSERT ON sec_forge FOR EACH ROW EXECUTE FUNCTION bitdex_sync.capture('{"v":1,"source":"x","kind":"direct","sink":"outbox","slot":"\"id\"","alive":true,"delete":false,"fields":[{"f":"lvl","sql":"42"}]}');
DROP TRIGGER sec_forged ON sec_forge;
INSERT INTO sec_forge VALUES (1000, 1);
SELECT count(*) AS forged_outbox_rows FROM bitdex_sync.ops WHERE entity_id IN (1000, 1001);
DROP TABLE sec_forge;

-- A per-row fan-out reads the children with the writer's rights, not the
-- extension owner's: a writer that may not read sec_child is refused.
INSERT INTO sec_child VALUES (100, 1);
INSERT INTO sec_post VALUES (1, 1);
SET ROLE sec_writer;
UPDATE sec_post SET lvl = 2 WHERE id = 1;
RESET ROLE;
GRANT SELECT ON sec_child TO sec_writer;
SET ROLE sec_writer;
UPDATE sec_post SET lvl = 2 WHERE id = 1;
RESET ROLE;

-- 4. A role with CREATE on public plants public.lower(varchar), which would
-- beat pg_catalog.lower(text) for a varchar column if names were resolved
-- again at the first row of a backend. They are not: the expression was
-- resolved once by apply_config and stored, so capture still runs
-- pg_catalog.lower.
GRANT CREATE ON SCHEMA public TO sec_mallory;
SET ROLE sec_mallory;
CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'forged' $$;
RESET ROLE;
INSERT INTO sec_img VALUES (1, 3, 'MiXeD');
SELECT data FROM pg_logical_slot_get_changes('sec_test', NULL, NULL);

-- apply_config resolves names now and refuses functions owned by a role that
-- is neither a superuser nor the role applying the config.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    sets_alive: true
    track_fields: [lvl, "lower({name}) as lname", "lower({name}::text) as other"]
$$);
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    sets_alive: true
    track_fields: [lvl, "pg_catalog.lower({name}) as lname"]
$$);
-- One level down: a superuser's SQL function whose body resolves names when
-- it runs would call mallory's public.lower(varchar) as the writer. Such a
-- function is refused unless its search_path is pinned to schemas only
-- trusted roles can create in (or its body is BEGIN ATOMIC, parsed once).
CREATE FUNCTION public.sec_norm(v varchar) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower(v)';
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    track_fields: ["public.sec_norm({name}) as n"]
$$);
ALTER FUNCTION public.sec_norm(varchar) SET search_path = public;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    track_fields: ["public.sec_norm({name}) as n"]
$$);
-- A BEGIN ATOMIC body was resolved when the function was made: made now, it
-- calls mallory's lower(), and what it calls is checked too.
CREATE FUNCTION public.sec_norm_atomic(v varchar) RETURNS text LANGUAGE sql IMMUTABLE BEGIN ATOMIC SELECT lower(v); END;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    track_fields: ["public.sec_norm_atomic({name}) as a"]
$$);
ALTER FUNCTION public.sec_norm(varchar) SET search_path = pg_catalog;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    sets_alive: true
    track_fields: ["public.sec_norm({name}) as n"]
$$);
INSERT INTO sec_img VALUES (2, 1, 'AbC');
SELECT data FROM pg_logical_slot_get_changes('sec_test', NULL, NULL);
-- A domain (its CHECK runs on each value) and a view a fan-out reads (its
-- definition can change after apply_config) belong to trusted roles only.
SET ROLE sec_mallory;
CREATE DOMAIN public.sec_dom AS int CHECK (VALUE > 0);
CREATE VIEW public.sec_view AS SELECT id, post_id FROM sec_child;
RESET ROLE;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_img
    track_fields: ["{lvl}::public.sec_dom as d"]
$$);
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_post
    query: "ids in [{ids}]"
    expression: "SELECT array_agg(v.id) FROM public.sec_view v WHERE v.post_id = {id}"
    track_fields: [lvl]
$$);
ALTER VIEW public.sec_view OWNER TO CURRENT_USER;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_post
    query: "ids in [{ids}]"
    expression: "SELECT array_agg(v.id) FROM public.sec_view v WHERE v.post_id = {id}"
    track_fields: [lvl]
$$);
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
DROP VIEW public.sec_view;
DROP DOMAIN public.sec_dom;
DROP FUNCTION public.sec_norm(varchar), public.sec_norm_atomic(varchar);
DROP FUNCTION public.lower(varchar);
REVOKE CREATE ON SCHEMA public FROM sec_mallory;

-- The capture function itself is not for PUBLIC.
SELECT has_function_privilege('sec_mallory', 'bitdex_sync.capture()', 'EXECUTE') AS public_may_execute_capture;

-- Partitions: the trigger on a partitioned table fires on each partition as
-- a clone; the clone finds the definition recorded for its parent, and the
-- columns are mapped to the partition's (here in another order).
CREATE TABLE sec_part (id int, lvl int, name text) PARTITION BY RANGE (id);
CREATE TABLE sec_part_1 (name text, lvl int, id int);
ALTER TABLE sec_part ATTACH PARTITION sec_part_1 FOR VALUES FROM (0) TO (100);
CREATE TABLE sec_part_2 PARTITION OF sec_part FOR VALUES FROM (100) TO (200);
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_part
    sets_alive: true
    track_fields: [lvl, "pg_catalog.upper({name}) as uname"]
$$);
INSERT INTO sec_part VALUES (1, 5, 'one'), (150, 6, 'two');
UPDATE sec_part SET lvl = 7 WHERE id = 150;
UPDATE sec_part SET lvl = 8 WHERE id = 1;
SELECT data FROM pg_logical_slot_get_changes('sec_test', NULL, NULL);

-- 5. The owner of a captured table cannot switch capture off: DDL that
-- leaves a recorded capture trigger dropped or not firing always is refused.
CREATE ROLE sec_owner;
CREATE TABLE sec_guard (id int PRIMARY KEY, lvl int);
ALTER TABLE sec_guard OWNER TO sec_owner;
ALTER TABLE sec_part OWNER TO sec_owner;
ALTER TABLE sec_part_1 OWNER TO sec_owner;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_part
    sets_alive: true
    track_fields: [lvl, "pg_catalog.upper({name}) as uname"]
  - table: sec_guard
    track_fields: [lvl]
$$) ORDER BY source;
SELECT trigger_name AS guard_trigger FROM bitdex_sync.sources WHERE name = 'sec_guard' \gset
SELECT tgname AS clone_trigger FROM pg_trigger WHERE tgrelid = 'sec_part_1'::regclass AND tgisinternal = false AND tgname LIKE 'bitdex_%' \gset
SET ROLE sec_owner;
ALTER TABLE sec_guard DISABLE TRIGGER :"guard_trigger";
ALTER TABLE sec_guard DISABLE TRIGGER ALL;
ALTER TABLE sec_guard DISABLE TRIGGER USER;
ALTER TABLE sec_guard ENABLE TRIGGER :"guard_trigger";
ALTER TABLE sec_guard ENABLE REPLICA TRIGGER :"guard_trigger";
DROP TRIGGER :"guard_trigger" ON sec_guard;
DROP TABLE sec_guard;
ALTER TABLE sec_part_1 DISABLE TRIGGER :"clone_trigger";
ALTER TRIGGER :"guard_trigger" ON sec_guard RENAME TO sec_renamed;
-- ... while what leaves capture alone is not in the way.
ALTER TABLE sec_guard ADD COLUMN note text;
ALTER TABLE sec_guard ENABLE ALWAYS TRIGGER :"guard_trigger";
RESET ROLE;
SELECT tgenabled FROM pg_trigger WHERE tgname = :'guard_trigger';
-- A superuser may, with bitdex_sync.allow_capture_loss: the gap is recorded,
-- status() and metrics() show it, apply_config restores capture.
SET ROLE sec_owner;
SET bitdex_sync.allow_capture_loss = on;
RESET ROLE;
SET bitdex_sync.allow_capture_loss = on;
ALTER TABLE sec_guard DISABLE TRIGGER :"guard_trigger";
ALTER TABLE sec_part_1 DISABLE TRIGGER :"clone_trigger";
RESET bitdex_sync.allow_capture_loss;
SELECT source, table_name, problem, detected_by, role, ended_at IS NULL AS open FROM bitdex_sync.capture_gaps ORDER BY id;
SELECT source, state, regexp_replace(last_error, 'from .* on:', 'from <time> on:') AS last_error
  FROM bitdex_sync.status() WHERE state LIKE 'capture gap%' ORDER BY source;
SELECT line FROM regexp_split_to_table(bitdex_sync.metrics(), E'\n') line WHERE line LIKE 'bitdex_sync_capture_gaps%';
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_part
    sets_alive: true
    track_fields: [lvl, "pg_catalog.upper({name}) as uname"]
  - table: sec_guard
    track_fields: [lvl]
$$) ORDER BY source;
SELECT count(*) AS not_firing_always FROM bitdex_sync.broken_capture();
SELECT source, problem, ended_at IS NOT NULL AS restored FROM bitdex_sync.capture_gaps ORDER BY id;
SET bitdex_sync.allow_capture_loss = on;
DROP TRIGGER :"guard_trigger" ON sec_guard;
RESET bitdex_sync.allow_capture_loss;
SELECT source, state FROM bitdex_sync.status() WHERE state LIKE 'capture gap%' ORDER BY source, state;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_part
    sets_alive: true
    track_fields: [lvl, "pg_catalog.upper({name}) as uname"]
  - table: sec_guard
    track_fields: [lvl]
$$) ORDER BY source;
SELECT count(*) AS open_gaps FROM bitdex_sync.capture_gaps WHERE ended_at IS NULL;
DELETE FROM bitdex_sync.capture_gaps;
-- A trigger renamed anyway is dropped by its OID when apply_config
-- replaces it (not left behind beside the new one).
SET bitdex_sync.allow_capture_loss = on;
ALTER TRIGGER :"guard_trigger" ON sec_guard RENAME TO sec_renamed;
RESET bitdex_sync.allow_capture_loss;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_part
    sets_alive: true
    track_fields: [lvl, "pg_catalog.upper({name}) as uname"]
  - table: sec_guard
    track_fields: [lvl]
$$) ORDER BY source;
SELECT tgname ~ '^bitdex_sec_guard_' AS ours FROM pg_trigger WHERE tgrelid = 'sec_guard'::regclass AND NOT tgisinternal;
DELETE FROM bitdex_sync.capture_gaps;
-- A shared_ops_fields helper name taken by a function bitdex_sync did not
-- make is refused (CREATE OR REPLACE would keep its owner, who could change
-- it); the helper's body is parsed once, like the trigger's expressions.
CREATE FUNCTION public.bitdex_sec_guard_lvl_ops(_row sec_guard) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_guard
    track_fields: [lvl]
    shared_ops_fields: [lvl]
$$) ORDER BY source;
DROP FUNCTION public.bitdex_sec_guard_lvl_ops(sec_guard);
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_part
    sets_alive: true
    track_fields: [lvl, "pg_catalog.upper({name}) as uname"]
  - table: sec_guard
    track_fields: [lvl]
    shared_ops_fields: [lvl]
$$) ORDER BY source;
SELECT prosqlbody IS NOT NULL AS body_parsed_once FROM pg_proc WHERE proname = 'bitdex_sec_guard_lvl_ops';
-- Commands that change a captured table's rows without being captured
-- exactly are refused: TRUNCATE of a table whose source shares a field with
-- another source (its clear would take the other's values too; also when
-- reached by CASCADE), of a partition without its captured partitioned
-- table, ATTACH or DETACH of a partition that holds rows. Empty partitions
-- come and go. (TRUNCATE captured as a clear record: 070_load.)
CREATE TABLE sec_ref (id int PRIMARY KEY);
ALTER TABLE sec_guard ADD COLUMN ref int REFERENCES sec_ref;
TRUNCATE sec_guard;
TRUNCATE sec_part_2;
TRUNCATE sec_ref CASCADE;
CREATE TABLE sec_part_3 (id int, lvl int, name text);
INSERT INTO sec_part_3 VALUES (250, 1, 'x');
ALTER TABLE sec_part ATTACH PARTITION sec_part_3 FOR VALUES FROM (200) TO (300);
DELETE FROM sec_part_3;
ALTER TABLE sec_part ATTACH PARTITION sec_part_3 FOR VALUES FROM (200) TO (300);
ALTER TABLE sec_part DETACH PARTITION sec_part_1;
ALTER TABLE sec_part DETACH PARTITION sec_part_3;
TRUNCATE sec_part_3;
SET bitdex_sync.allow_capture_loss = on;
TRUNCATE sec_guard;
RESET bitdex_sync.allow_capture_loss;
SELECT source, problem, ended_at IS NOT NULL AS ended FROM bitdex_sync.capture_gaps WHERE problem LIKE 'TRUNCATE%';
DELETE FROM bitdex_sync.capture_gaps;
ALTER TABLE sec_guard DROP COLUMN ref;
DROP TABLE sec_ref, sec_part_3;

-- A source leaves the config first, then its table can go.
BEGIN;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_part
    sets_alive: true
    track_fields: [lvl, "pg_catalog.upper({name}) as uname"]
$$) ORDER BY source;
DROP TABLE sec_guard;
COMMIT;

-- EXECUTE on apply_config is all a role needs besides the rights on its
-- tables: the bookkeeping in schema bitdex_sync is done as the owner.
CREATE TABLE sec_own (id int PRIMARY KEY, lvl int);
ALTER TABLE sec_own OWNER TO sec_owner;
GRANT EXECUTE ON FUNCTION bitdex_sync.apply_config(text, boolean, boolean) TO sec_owner;
GRANT EXECUTE ON FUNCTION bitdex_sync.capture() TO sec_owner;
SET ROLE sec_owner;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_own
    track_fields: [lvl]
$$) ORDER BY source;
-- ... and CREATE TRIGGER still checks its rights on the tables.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: sec_own
    track_fields: [lvl]
  - table: sec_img
    track_fields: [lvl]
$$) ORDER BY source;
RESET ROLE;
SELECT applied_by FROM bitdex_sync.config_history ORDER BY id DESC LIMIT 1;

SELECT pg_drop_replication_slot('sec_test');
SELECT source, action FROM bitdex_sync.apply_config('{"sources":[]}');
DROP TABLE sec_img, sec_post, sec_child, sec_part, sec_own;
DROP OWNED BY sec_mallory;
DROP OWNED BY sec_writer;
DROP ROLE sec_mallory;
DROP ROLE sec_writer;
DROP OWNED BY sec_owner;
DROP ROLE sec_owner;
