-- Loads and TRUNCATE (docs/load.md): the registry apply_config, load() and
-- wait_for_loads() keep, the clears of changed or removed definitions, and
-- TRUNCATE captured as clear records (read back from a logical slot). No
-- worker runs in this database, so loads stay pending here; TAP 008 runs
-- them.
SET client_min_messages = notice;
CREATE TABLE ld_img (id int PRIMARY KEY, lvl int, kind text, post int);
CREATE TABLE ld_tag (img int, tag int, PRIMARY KEY (img, tag));
CREATE TABLE ld_post (id int PRIMARY KEY, pub int);
CREATE TABLE ld_box (id int PRIMARY KEY, v int);
INSERT INTO ld_img SELECT g, g % 3, 'a', g % 2 FROM generate_series(1, 10) g;
INSERT INTO ld_tag SELECT g, 1 FROM generate_series(1, 10) g;
SELECT 'slot' FROM pg_create_logical_replication_slot('load_test', 'bitdex_sync');
DELETE FROM bitdex_sync.loads;
DELETE FROM bitdex_sync.ops;

-- A load per new source, direct sources first; dump_phases is accepted and
-- not used.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: ld_post
    query: "post eq {id}"
    track_fields: [pub]
  - table: ld_tag
    slot_field: img
    field: tags
    value_field: tag
  - table: ld_img
    sets_alive: true
    on_delete: true
    track_fields: [lvl, kind, post]
  - table: ld_box
    capture: outbox
    track_fields: [v]
dump_phases:
  - name: images
    copy: "COPY ld_img TO STDOUT"
$$) ORDER BY source;
SELECT source, reason, state, rows, chunks, chunk, loaded_to, error IS NULL AS no_error
  FROM bitdex_sync.loads ORDER BY id;

-- The same config again: nothing new to load.
SET client_min_messages = warning;
SELECT count(*) FROM bitdex_sync.apply_config($$
sources:
  - table: ld_post
    query: "post eq {id}"
    track_fields: [pub]
  - table: ld_tag
    slot_field: img
    field: tags
    value_field: tag
  - table: ld_img
    sets_alive: true
    on_delete: true
    track_fields: [lvl, kind, post]
  - table: ld_box
    capture: outbox
    track_fields: [v]
$$);
SELECT count(*) AS loads FROM bitdex_sync.loads;
SELECT data FROM pg_logical_slot_get_changes('load_test', NULL, NULL);

-- A field's expression changed and a field removed: what the old
-- definition wrote is cleared (in the sink of the old source, at this
-- commit), only that source is loaded again, and its pending load is given
-- up. A removed source is cleared and not loaded.
SET client_min_messages = notice;
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: ld_post
    query: "post eq {id}"
    track_fields: [pub]
  - table: ld_tag
    slot_field: img
    field: tags
    value_field: tag
  - table: ld_img
    sets_alive: true
    on_delete: true
    track_fields: ["{lvl} * 10 as lvl", post]
$$) ORDER BY source;
SELECT id > 4 AS new, source, reason, state, error FROM bitdex_sync.loads ORDER BY id;
SELECT data FROM pg_logical_slot_get_changes('load_test', NULL, NULL);
SELECT entity_id, ops FROM bitdex_sync.ops ORDER BY id;
DELETE FROM bitdex_sync.ops;

-- load => false: the clear, and no load.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: ld_post
    query: "post eq {id}"
    track_fields: [pub]
  - table: ld_tag
    slot_field: img
    field: tags
    value_field: tag
  - table: ld_img
    sets_alive: true
    on_delete: true
    track_fields: ["{lvl} * 100 as lvl", post]
$$, load => false) ORDER BY source;
SELECT count(*) AS loads, count(*) FILTER (WHERE state = 'pending') AS pending FROM bitdex_sync.loads;
SELECT data FROM pg_logical_slot_get_changes('load_test', NULL, NULL);

-- load() by hand: one source, every source, errors.
SELECT source, reason, state FROM bitdex_sync.load('ld_tag.tags');
SELECT source, reason, state FROM bitdex_sync.load();
SELECT source, state, error FROM bitdex_sync.loads WHERE state = 'failed' ORDER BY id DESC LIMIT 2;
SELECT * FROM bitdex_sync.load('ld_nothing');
SELECT * FROM bitdex_sync.load('');

-- wait_for_loads: false while loads are pending (no worker here), true
-- once none is.
SELECT bitdex_sync.wait_for_loads('50 milliseconds');
SELECT bitdex_sync.wait_for_loads(timeout => '0');

-- status() and metrics() show them.
SELECT source, state, lag_ops IS NULL AS no_estimate_yet, load_rows,
       regexp_replace(last_error, 'load \d+', 'load N') AS progress
  FROM bitdex_sync.status() WHERE state LIKE 'load%' ORDER BY source;
SELECT line FROM regexp_split_to_table(bitdex_sync.metrics(), E'\n') line
 WHERE line LIKE 'bitdex_sync_loads%' ORDER BY line;
UPDATE bitdex_sync.loads SET state = 'complete' WHERE state = 'pending';
SELECT bitdex_sync.wait_for_loads();

-- Not for PUBLIC.
CREATE ROLE ld_nobody;
SET ROLE ld_nobody;
SELECT * FROM bitdex_sync.load();
SELECT bitdex_sync.wait_for_loads();
SELECT count(*) FROM bitdex_sync.loads;
RESET ROLE;
DROP ROLE ld_nobody;

-- TRUNCATE is captured as a clear record: a direct source with on_delete
-- deletes its slots (every alive one too with sets_alive), a join source
-- clears its field, a fan-out its fields; in the source's sink.
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: ld_post
    query: "post eq {id}"
    track_fields: [pub]
  - table: ld_tag
    slot_field: img
    field: tags
    value_field: tag
  - table: ld_img
    sets_alive: true
    on_delete: true
    track_fields: [lvl, kind, post]
  - table: ld_box
    capture: outbox
    track_fields: [v]
$$, load => false) ORDER BY source;
SELECT data FROM pg_logical_slot_get_changes('load_test', NULL, NULL);
TRUNCATE ld_tag;
TRUNCATE ld_img, ld_post;
BEGIN;
TRUNCATE ld_box;
ROLLBACK;
TRUNCATE ld_box;
SELECT data FROM pg_logical_slot_get_changes('load_test', NULL, NULL);
SELECT entity_id, ops FROM bitdex_sync.ops ORDER BY id;
DELETE FROM bitdex_sync.ops;

-- A TRUNCATE whose clear would take another source's values too is
-- refused (the field is written by two sources).
SELECT source, action FROM bitdex_sync.apply_config($$
sources:
  - table: ld_img
    sets_alive: true
    track_fields: [lvl]
  - table: ld_box
    slot_field: id
    track_fields: ["{v} as lvl"]
$$, load => false) ORDER BY source;
TRUNCATE ld_box;
SELECT data FROM pg_logical_slot_get_changes('load_test', NULL, NULL);

-- The TRUNCATE trigger is guarded like the row trigger.
SELECT truncate_trigger_name AS box_truncate FROM bitdex_sync.sources WHERE name = 'ld_box' \gset
DROP TRIGGER :"box_truncate" ON ld_box;
ALTER TABLE ld_box DISABLE TRIGGER :"box_truncate";

SET client_min_messages = warning;
SELECT count(*) FROM bitdex_sync.apply_config('{"sources": []}'::jsonb, load => false);
SELECT pg_drop_replication_slot('load_test');
DROP TABLE ld_img, ld_tag, ld_post, ld_box;
DELETE FROM bitdex_sync.loads;
DELETE FROM bitdex_sync.ops;
