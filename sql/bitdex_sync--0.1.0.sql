-- bitdex_sync 0.1.0: install script.
\echo Use "CREATE EXTENSION bitdex_sync" to load this file. \quit

COMMENT ON SCHEMA bitdex_sync IS 'bitdex_sync: capture of row changes into the ops WAL of a bitmap index';
-- Only superusers and roles granted USAGE reach anything in this schema.
REVOKE ALL ON SCHEMA bitdex_sync FROM PUBLIC;

CREATE FUNCTION bitdex_sync.dedup(batch jsonb) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'bitdex_sync_dedup'
  LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION bitdex_sync.dedup(jsonb) IS
  'Deduplicates a batch (array of {entity_id, ops, creates_slot}) without changing its meaning';

-- ---- capture ---------------------------------------------------------------

-- The outbox sink: one row per captured row change. Writers of captured
-- tables need no rights here; the capture trigger inserts as the owner.
-- xid comes first: defaults are evaluated in column order, so an insert
-- holds its transaction id before it draws a row id. The worker relies on
-- that to never pass an id a running transaction may still commit.
CREATE TABLE bitdex_sync.ops (
  xid        xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
  id         bigserial PRIMARY KEY,
  entity_id  bigint NOT NULL,
  ops        jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bitdex_sync.ops IS 'Outbox sink of the capture triggers (capture: outbox)';

-- This installation of the extension: a random id made by CREATE EXTENSION
-- (DROP and CREATE make another), the ops WAL it writes (set by the worker
-- when it starts one in <bitdex_sync.wal_directory>/<database OID>; a WAL
-- found there with no id recorded is an earlier installation's and is moved
-- aside) and how far the outbox is acknowledged (rows deleted once durable).
-- At each start the worker checks that the WAL is there and covers what the
-- slot and the outbox acknowledged, and refuses to go on otherwise. Not
-- dumped: a restored database is a new installation.
CREATE TABLE bitdex_sync.instance (
  one          boolean PRIMARY KEY DEFAULT true CHECK (one),
  id           bigint NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  wal_id       bigint,
  outbox_acked bigint NOT NULL DEFAULT 0
);
INSERT INTO bitdex_sync.instance (id)
  VALUES (('x' || substr(replace(pg_catalog.gen_random_uuid()::text, '-', ''), 1, 16))::bit(64)::bigint);

-- The sources apply_config installed, with the trigger each one owns. The
-- capture trigger reads its definition here, by its OID (spec: what to
-- capture; compiled: the analysed expression and query trees, resolved once
-- by apply_config); a trigger not recorded here captures nothing.
CREATE TABLE bitdex_sync.sources (
  name         text PRIMARY KEY,
  table_oid    oid NOT NULL,
  table_name   text NOT NULL,
  trigger_name text NOT NULL,
  config       jsonb NOT NULL,
  helpers      text[] NOT NULL DEFAULT '{}',  -- shared_ops_fields functions, schema-qualified
  applied_at   timestamptz NOT NULL DEFAULT now(),
  trigger_oid  oid NOT NULL UNIQUE,
  spec         text NOT NULL,
  compiled     text NOT NULL,
  instance     bigint NOT NULL,  -- bitdex_sync.instance.id when recorded: a restored dump's rows are not this one's
  -- The statement-level AFTER TRUNCATE trigger beside the row trigger, and
  -- what it captures: {"sink", "clear": the clear record, "refuse": reason or null}.
  truncate_trigger_name text,
  truncate_trigger_oid  oid UNIQUE,
  truncate_spec         text
);
CREATE TABLE bitdex_sync.config_history (
  id         bigserial PRIMARY KEY,
  index_name text NOT NULL,
  config     text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  applied_by name NOT NULL DEFAULT current_user
);
SELECT pg_catalog.pg_extension_config_dump('bitdex_sync.sources', '');
SELECT pg_catalog.pg_extension_config_dump('bitdex_sync.config_history', '');
-- ... and its sequence, or a restored history collides with the next row.
SELECT pg_catalog.pg_extension_config_dump('bitdex_sync.config_history_id_seq', '');

CREATE FUNCTION bitdex_sync.capture() RETURNS trigger
  AS 'MODULE_PATHNAME', 'bitdex_sync_capture'
  LANGUAGE C;
COMMENT ON FUNCTION bitdex_sync.capture() IS 'Capture trigger behind every trigger apply_config creates';
-- Creating a trigger needs EXECUTE on its function (firing one does not):
-- only apply_config's callers create capture triggers.
REVOKE ALL ON FUNCTION bitdex_sync.capture() FROM PUBLIC;

-- Capture gaps: a recorded capture trigger that was dropped or stopped
-- firing always (let through by bitdex_sync.allow_capture_loss, or done
-- where event triggers do not run) loses every change after it. Recorded by
-- the guard below or found by the worker; ended_at is set when apply_config
-- restores capture. The changes in between stay missing from the ops WAL
-- until the source is loaded again: delete the row once that is done.
CREATE TABLE bitdex_sync.capture_gaps (
  id           bigserial PRIMARY KEY,
  source       text NOT NULL,
  table_name   text NOT NULL,
  trigger_name text NOT NULL,
  problem      text NOT NULL,
  detected_by  text NOT NULL CHECK (detected_by IN ('ddl', 'worker')),
  role         name,            -- who ran the command (ddl) or the worker's role
  started_at   timestamptz NOT NULL DEFAULT now(),
  ended_at     timestamptz
);

-- The recorded capture triggers that are missing or do not fire always,
-- with the clones on partitions (any depth); tables named as in sources.
CREATE FUNCTION bitdex_sync.broken_capture()
  RETURNS TABLE (source text, table_name text, trigger_name text, problem text)
  LANGUAGE sql STABLE
  SET search_path = pg_catalog
  AS $$
  WITH RECURSIVE mine AS (
    -- Each source's row trigger and its TRUNCATE trigger.
    SELECT s.name, s.table_name, t.trigger_name, t.trigger_oid
      FROM bitdex_sync.sources s JOIN bitdex_sync.instance i ON i.id = s.instance
      CROSS JOIN LATERAL (VALUES (s.trigger_name, s.trigger_oid),
                                 (s.truncate_trigger_name, s.truncate_trigger_oid)) t(trigger_name, trigger_oid)
     WHERE t.trigger_oid IS NOT NULL),
  tr(source, oid) AS (
    SELECT name, trigger_oid FROM mine
    UNION ALL
    SELECT tr.source, c.oid FROM tr JOIN pg_trigger c ON c.tgparentid = tr.oid)
  SELECT s.name, s.table_name, s.trigger_name, 'dropped'
    FROM mine s
   WHERE NOT EXISTS (SELECT FROM pg_trigger t WHERE t.oid = s.trigger_oid)
  UNION ALL
  SELECT s.name, s.table_name, t.tgname, 'renamed from ' || s.trigger_name
    FROM mine s JOIN pg_trigger t ON t.oid = s.trigger_oid
   WHERE t.tgname <> s.trigger_name
  UNION ALL
  -- Rows recorded by another installation (a restored dump): their OIDs and
  -- trees are another database's, so their triggers capture nothing until
  -- the config is applied again.
  SELECT s.name, s.table_name, s.trigger_name, 'recorded by an earlier installation (a restored dump)'
    FROM bitdex_sync.sources s
   WHERE s.instance <> (SELECT id FROM bitdex_sync.instance)
  UNION ALL
  SELECT tr.source, '"' || replace(n.nspname, '"', '""') || '"."' || replace(c.relname, '"', '""') || '"', t.tgname,
         CASE t.tgenabled WHEN 'D' THEN 'disabled' WHEN 'O' THEN 'not firing in replica sessions'
                          WHEN 'R' THEN 'firing in replica sessions only' END
    FROM tr JOIN pg_trigger t ON t.oid = tr.oid
    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE t.tgenabled <> 'A'
  $$;

-- The capture guard (src/pg/capture_guard.cpp): refuses DDL that leaves a
-- recorded capture trigger dropped or not firing always.
CREATE FUNCTION bitdex_sync.guard_ddl() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'bitdex_sync_guard_ddl'
  LANGUAGE C;
CREATE EVENT TRIGGER bitdex_sync_guard ON ddl_command_end EXECUTE FUNCTION bitdex_sync.guard_ddl();
-- Also under session_replication_role = replica.
ALTER EVENT TRIGGER bitdex_sync_guard ENABLE ALWAYS;
-- DROP EXTENSION bitdex_sync with rows waiting in the outbox is refused (and
-- DROP SCHEMA bitdex_sync CASCADE, DROP OWNED BY its owner: they drop it too).
CREATE FUNCTION bitdex_sync.guard_drop() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'bitdex_sync_guard_drop'
  LANGUAGE C;
CREATE EVENT TRIGGER bitdex_sync_guard_drop ON ddl_command_start WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
  EXECUTE FUNCTION bitdex_sync.guard_drop();
ALTER EVENT TRIGGER bitdex_sync_guard_drop ENABLE ALWAYS;
REVOKE ALL ON FUNCTION bitdex_sync.broken_capture(), bitdex_sync.guard_ddl(), bitdex_sync.guard_drop() FROM PUBLIC;

-- load => false: no load is registered for new or changed sources (what a
-- changed or removed definition put in the index is still cleared).
CREATE FUNCTION bitdex_sync.apply_config(config text, dry_run boolean DEFAULT false, load boolean DEFAULT true)
  RETURNS TABLE (source text, action text, trigger_name text, table_name text)
  AS 'MODULE_PATHNAME', 'bitdex_sync_apply_config'
  LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION bitdex_sync.apply_config(config jsonb, dry_run boolean DEFAULT false, load boolean DEFAULT true)
  RETURNS TABLE (source text, action text, trigger_name text, table_name text)
  LANGUAGE sql STRICT VOLATILE
  AS $$ SELECT * FROM bitdex_sync.apply_config($1::text, $2, $3) $$;
COMMENT ON FUNCTION bitdex_sync.apply_config(text, boolean, boolean) IS
  'Validates a capture config (YAML or JSON), creates/replaces/drops its triggers and registers loads in one transaction';

CREATE FUNCTION bitdex_sync.trigger_sql(config text) RETURNS text
  AS 'MODULE_PATHNAME', 'bitdex_sync_trigger_sql'
  LANGUAGE C STRICT STABLE;
CREATE FUNCTION bitdex_sync.trigger_sql(config jsonb) RETURNS text
  LANGUAGE sql STRICT STABLE
  AS $$ SELECT bitdex_sync.trigger_sql($1::text) $$;

REVOKE ALL ON FUNCTION bitdex_sync.apply_config(text, boolean, boolean), bitdex_sync.apply_config(jsonb, boolean, boolean),
  bitdex_sync.trigger_sql(text), bitdex_sync.trigger_sql(jsonb) FROM PUBLIC;

-- The op value of any capturable value, exactly as the capture trigger
-- encodes it (shared_ops_fields helpers call it, so both agree by construction).
CREATE FUNCTION bitdex_sync.op_value(value anyelement) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'bitdex_sync_op_value'
  LANGUAGE C STABLE PARALLEL SAFE;
-- The same value as compact JSON text, without the jsonb round trip
-- (bitdex-index verify computes one per row and field).
CREATE FUNCTION bitdex_sync.op_value_text(value anyelement) RETURNS text
  AS 'MODULE_PATHNAME', 'bitdex_sync_op_value_text'
  LANGUAGE C STABLE PARALLEL SAFE;
-- Helpers run as their caller: PUBLIC may reach op_value (it reads nothing),
-- and nothing else in the schema.
GRANT USAGE ON SCHEMA bitdex_sync TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA bitdex_sync FROM PUBLIC;
REVOKE ALL ON FUNCTION bitdex_sync.dedup(jsonb) FROM PUBLIC;

-- ---- the worker -------------------------------------------------------------
-- Capture records the worker could not decode (bitdex_sync.on_poison_slot /
-- on_poison_outbox = skip): where they were, their bytes, and why.
CREATE TABLE bitdex_sync.quarantine (
  id             bigserial PRIMARY KEY,
  source         text NOT NULL CHECK (source IN ('slot', 'outbox')),
  position       text NOT NULL,   -- slot: commit LSN:index in transaction; outbox: id N
  entity_id      bigint,          -- when known (outbox rows)
  payload        text NOT NULL,   -- slot: the message bytes as \x hex; outbox: the ops as stored
  reason         text NOT NULL,
  quarantined_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (source, position)
);
-- One row per run of the worker (from the moment it finds the extension to
-- its end): running, success (a clean stop) or failed (with the error). Rows
-- left running by a crash are marked failed when the next run starts.
CREATE TABLE bitdex_sync.runs (
  id          bigserial PRIMARY KEY,
  pid         int NOT NULL,
  status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'success', 'failed')),
  started_at  timestamptz NOT NULL DEFAULT now(),
  ended_at    timestamptz,
  batches     bigint NOT NULL DEFAULT 0,
  ops_written bigint NOT NULL DEFAULT 0,
  error       text
);

-- Loads (docs/load.md): one row per load of one source, registered by
-- apply_config (a new source, a changed definition), load() or
-- start_new_wal(), run by the worker in chunks of slot keys while capture
-- goes on. A reload is a new row; older rows stay as history. A chunk's
-- keys (chunk_from, chunk_to] are recorded before its ops are written; the
-- ops WAL's load mark says whether they were, so a restart neither repeats
-- nor skips a chunk. NULL keys are the ends of the key range.
CREATE TABLE bitdex_sync.loads (
  id            bigserial PRIMARY KEY,
  source        text NOT NULL,
  digest        text NOT NULL,   -- the source's definition when registered (its trigger's name)
  reason        text NOT NULL,   -- new source | definition changed | by hand | new ops WAL
  state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'complete', 'failed')),
  rows          bigint NOT NULL DEFAULT 0,   -- source rows loaded so far
  estimate      bigint,                      -- the planner's estimate of the source's rows at the start
  chunks        integer NOT NULL DEFAULT 0,  -- chunks written
  chunk         integer NOT NULL DEFAULT 0,  -- the last chunk planned (written, or in flight)
  chunk_from    bigint,
  chunk_to      bigint,
  chunk_rows    bigint NOT NULL DEFAULT 0,   -- source rows in that chunk
  loaded_to     bigint,                      -- every key <= it is loaded (NULL: none, or all when complete)
  registered_at timestamptz NOT NULL DEFAULT now(),
  started_at    timestamptz,
  finished_at   timestamptz,
  error         text
);
CREATE INDEX ON bitdex_sync.loads (state) WHERE state IN ('pending', 'running');

-- Raw per-worker state from shared memory (one row per database with a
-- worker); status() and metrics() present it.
CREATE FUNCTION bitdex_sync.worker_state(
    OUT database text, OUT pid int, OUT state text, OUT durable_lsn pg_lsn,
    OUT ops_captured bigint, OUT ops_written bigint, OUT records_written bigint, OUT records_skipped bigint,
    OUT batches bigint, OUT wal_bytes_written bigint, OUT poison_ops bigint, OUT errors_total bigint,
    OUT started_at timestamptz, OUT last_batch_at timestamptz, OUT last_error text, OUT last_error_at timestamptz,
    OUT failures_in_a_row int, OUT latency_buckets bigint[], OUT latency_sum_ms float8, OUT latency_count bigint,
    OUT outbox_done bigint, OUT outbox_ops bigint, OUT slot_stopped boolean, OUT outbox_stopped boolean,
    OUT rejected_messages bigint, OUT load_rows bigint, OUT load_chunks bigint, OUT load_cuts bigint)
  RETURNS SETOF record
  AS 'MODULE_PATHNAME', 'bitdex_sync_worker_state'
  LANGUAGE C VOLATILE;

-- Per worker and source (the logical slot, the outbox table): its state, how
-- far the source is durable in the ops WAL, the lag behind it (slot: bytes of
-- server WAL and seconds since the last batch when behind; outbox: rows and
-- the age of the oldest row not yet written, counted in the current database
-- only), what the slot retains, totals and the last error. ops_written,
-- batches, wal_bytes_written and the error columns belong to the worker (one
-- ops WAL for both sources) and repeat on its two rows.
CREATE FUNCTION bitdex_sync.status()
  RETURNS TABLE (source text, database text, state text, pid int, slot_name text, confirmed_lsn pg_lsn,
                 confirmed_id bigint, lag_bytes numeric, lag_ops bigint, lag_seconds float8,
                 slot_retained_wal_bytes numeric, ops_captured bigint, ops_written bigint, records_skipped bigint,
                 batches bigint, wal_bytes_written bigint, poison_ops bigint, errors_total bigint,
                 failures_in_a_row int, last_batch_at timestamptz, last_error text, last_error_at timestamptz,
                 rejected_messages bigint, load_rows bigint, load_rows_per_second float8, load_eta_seconds float8)
  LANGUAGE sql VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog
  AS $$
  SELECT 'slot', w.database, CASE WHEN w.slot_stopped THEN 'stopped at poison' ELSE w.state END, w.pid, s.slot_name::text, w.durable_lsn, NULL::bigint,
         pg_wal_lsn_diff(pg_current_wal_flush_lsn(), w.durable_lsn), NULL::bigint,
         CASE WHEN pg_wal_lsn_diff(pg_current_wal_flush_lsn(), w.durable_lsn) > 0 AND w.last_batch_at IS NOT NULL
              THEN extract(epoch FROM clock_timestamp() - w.last_batch_at)::float8 ELSE 0 END,
         pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn),
         w.ops_captured - w.outbox_ops, w.ops_written, w.records_skipped, w.batches, w.wal_bytes_written, w.poison_ops,
         w.errors_total, w.failures_in_a_row, w.last_batch_at, w.last_error, w.last_error_at, w.rejected_messages,
         NULL::bigint, NULL::float8, NULL::float8
    FROM bitdex_sync.worker_state() w
    LEFT JOIN pg_database d ON d.datname = w.database
    LEFT JOIN pg_replication_slots s ON s.slot_name = 'bitdex_sync_' || d.oid
  UNION ALL
  SELECT 'outbox', w.database, CASE WHEN w.outbox_stopped THEN 'stopped at poison' ELSE w.state END, w.pid, NULL, NULL, w.outbox_done, NULL, o.rows,
         coalesce(extract(epoch FROM clock_timestamp() - o.oldest)::float8, 0), NULL,
         w.outbox_ops, w.ops_written, w.records_skipped, w.batches, w.wal_bytes_written, w.poison_ops,
         w.errors_total, w.failures_in_a_row, w.last_batch_at, w.last_error, w.last_error_at, NULL::bigint,
         NULL, NULL, NULL
    FROM bitdex_sync.worker_state() w
    LEFT JOIN LATERAL (SELECT count(*) AS rows, min(created_at) AS oldest FROM bitdex_sync.ops
                        WHERE id > coalesce(w.outbox_done, 0)) o ON w.database = current_database()
   WHERE w.state <> 'no worker'
  UNION ALL
  -- This database has the extension and no worker, and no limit is known
  -- to have refused it one (a refused database has its worker_state() row).
  SELECT 'slot', current_database(), 'no worker', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL,
         CASE WHEN current_setting('bitdex_sync.databases') = ''
              THEN 'no worker runs for this database: the launcher starts one when CREATE EXTENSION commits; after '
                   || 'CREATE DATABASE from a template, SELECT bitdex_sync.start_worker(); see the server log'
              ELSE 'no worker runs for this database: it is not in bitdex_sync.databases (takes a restart)' END,
         NULL, NULL, NULL, NULL, NULL
   WHERE NOT EXISTS (SELECT FROM bitdex_sync.worker_state() w WHERE w.database = current_database())
  UNION ALL
  -- Capture gaps of this database: recorded ones until their row is deleted
  -- (after the source is loaded again), and any not recorded yet.
  SELECT g.source, current_database(), CASE WHEN g.ended_at IS NULL THEN 'capture gap' ELSE 'capture gap (restored)' END,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         format('trigger %s on %s %s from %s%s: changes to the table in between are missing from the ops WAL',
                g.trigger_name, g.table_name, g.problem, g.started_at,
                CASE WHEN g.ended_at IS NULL THEN ' on' ELSE ' to ' || g.ended_at END),
         g.started_at, NULL, NULL, NULL, NULL
    FROM bitdex_sync.capture_gaps g
  UNION ALL
  SELECT b.source, current_database(), 'capture gap', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL,
         format('trigger %s on %s %s (not recorded yet): changes to the table are not captured', b.trigger_name,
                b.table_name, b.problem),
         clock_timestamp(), NULL, NULL, NULL, NULL
    FROM bitdex_sync.broken_capture() b
   WHERE NOT EXISTS (SELECT FROM bitdex_sync.capture_gaps g WHERE g.ended_at IS NULL AND g.source = b.source
                       AND g.table_name = b.table_name AND g.trigger_name = b.trigger_name)
  UNION ALL
  -- Loads pending or running, and each source's latest load when it failed:
  -- rows so far, rows per second, and the time left by the planner's
  -- estimate of the source's rows (docs/load.md).
  SELECT l.source, current_database(), 'load ' || l.state, NULL, NULL, NULL, NULL, NULL,
         CASE WHEN l.estimate IS NOT NULL THEN greatest(l.estimate - l.rows, 0) END, NULL, NULL, NULL, NULL, NULL, l.chunks, NULL, NULL, NULL, NULL, NULL,
         CASE WHEN l.state = 'failed' THEN l.error
              ELSE format('load %s (%s): %s of ~%s rows in %s chunks', l.id, l.reason, l.rows,
                          coalesce(l.estimate::text, '?'), l.chunks) END,
         CASE WHEN l.state = 'failed' THEN l.finished_at END, NULL,
         l.rows, r.per_second,
         CASE WHEN r.per_second > 0 AND l.estimate IS NOT NULL
              THEN greatest(l.estimate - l.rows, 0) / r.per_second END
    FROM bitdex_sync.loads l
    LEFT JOIN LATERAL (SELECT CASE WHEN l.started_at IS NOT NULL AND clock_timestamp() > l.started_at
                                   THEN l.rows / extract(epoch FROM clock_timestamp() - l.started_at)::float8 END
                                AS per_second) r ON true
   WHERE l.state IN ('pending', 'running')
      OR (l.state = 'failed' AND l.id = (SELECT max(id) FROM bitdex_sync.loads x WHERE x.source = l.source)
          AND EXISTS (SELECT FROM bitdex_sync.sources s WHERE s.name = l.source))
  ORDER BY 2, 1 DESC
  $$;

-- The same in Prometheus' text exposition format.
CREATE FUNCTION bitdex_sync.metrics() RETURNS text
  LANGUAGE sql VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog
  AS $$
  WITH w AS (SELECT * FROM bitdex_sync.worker_state() WHERE state <> 'no worker'),
  refused AS (SELECT * FROM bitdex_sync.worker_state() WHERE state = 'no worker'),
  o AS (SELECT max(id) AS max_id, count(*) FILTER (WHERE id > (SELECT outbox_done FROM w WHERE database = current_database())) AS rows
          FROM bitdex_sync.ops),
  lines AS (
    SELECT 1.0 AS k, format('bitdex_sync_cursor_position{source="slot",database="%s"} %s', database,
                          coalesce(pg_wal_lsn_diff(durable_lsn, '0/0'), 0)) AS line FROM w
    UNION ALL SELECT 1, format('bitdex_sync_cursor_position{source="outbox",database="%s"} %s', database,
                               coalesce(outbox_done, 0)) FROM w
    UNION ALL SELECT 2, format('bitdex_sync_max_id{source="slot",database="%s"} %s', database,
                               pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')) FROM w
    UNION ALL SELECT 2, format('bitdex_sync_max_id{source="outbox",database="%s"} %s', database,
                               greatest(o.max_id, w.outbox_done, 0)) FROM w, o WHERE database = current_database()
    UNION ALL SELECT 3, format('bitdex_sync_lag_rows{source="slot",database="%s"} %s', database,
                               coalesce(pg_wal_lsn_diff(pg_current_wal_flush_lsn(), durable_lsn), 0)) FROM w
    UNION ALL SELECT 3, format('bitdex_sync_lag_rows{source="outbox",database="%s"} %s', database, o.rows)
                 FROM w, o WHERE database = current_database()
    UNION ALL SELECT 4, format('bitdex_sync_ops_total{source="slot",database="%s"} %s', database,
                               ops_captured - outbox_ops) FROM w
    UNION ALL SELECT 4, format('bitdex_sync_ops_total{source="outbox",database="%s"} %s', database, outbox_ops) FROM w
    UNION ALL SELECT 5, format('bitdex_sync_wal_bytes{source="all",database="%s"} %s', database, wal_bytes_written) FROM w
    UNION ALL SELECT 6, format('bitdex_sync_errors_total{database="%s"} %s', database, errors_total) FROM w
    UNION ALL SELECT 6.5, format('bitdex_sync_worker_refused{database="%s",setting="%s"} 1', database,
                                 CASE WHEN last_error LIKE '%max_databases%' THEN 'bitdex_sync.max_databases'
                                      ELSE 'max_worker_processes' END) FROM refused
    UNION ALL SELECT 10, format('bitdex_sync_rejected_messages_total{database="%s"} %s', database, rejected_messages)
                 FROM w
    UNION ALL SELECT 12, format('bitdex_sync_load_rows_total{database="%s"} %s', database, load_rows) FROM w
    UNION ALL SELECT 12.1, format('bitdex_sync_load_chunks_total{database="%s"} %s', database, load_chunks) FROM w
    UNION ALL SELECT 12.2, format('bitdex_sync_load_chunks_cut_total{database="%s"} %s', database, load_cuts) FROM w
    UNION ALL
    SELECT 13, format('bitdex_sync_loads{database="%s",state="%s"} %s', current_database(), st,
                      (SELECT count(*) FROM bitdex_sync.loads l WHERE l.state = st))
      FROM unnest(ARRAY['pending', 'running', 'complete', 'failed']) st
    UNION ALL
    SELECT 14 + l.id / 1e12, format('bitdex_sync_load_progress_rows{database="%s",source="%s"} %s', current_database(),
                                    replace(replace(l.source, '\', '\\'), '"', '\"'), l.rows)
      FROM bitdex_sync.loads l WHERE l.state = 'running'
    UNION ALL
    SELECT 15 + l.id / 1e12, format('bitdex_sync_load_rows_per_second{database="%s",source="%s"} %s', current_database(),
                                    replace(replace(l.source, '\', '\\'), '"', '\"'),
                                    round((l.rows / greatest(extract(epoch FROM clock_timestamp() - l.started_at), 0.001))::numeric, 1))
      FROM bitdex_sync.loads l WHERE l.state = 'running' AND l.started_at IS NOT NULL
    UNION ALL
    SELECT 16 + l.id / 1e12, format('bitdex_sync_load_eta_seconds{database="%s",source="%s"} %s', current_database(),
                                    replace(replace(l.source, '\', '\\'), '"', '\"'),
                                    round((greatest(l.estimate - l.rows, 0) * extract(epoch FROM clock_timestamp() - l.started_at)
                                           / greatest(l.rows, 1))::numeric, 1))
      FROM bitdex_sync.loads l WHERE l.state = 'running' AND l.started_at IS NOT NULL AND l.estimate IS NOT NULL
    UNION ALL
    SELECT 11, format('bitdex_sync_capture_gaps{database="%s",state="%s"} %s', current_database(), st,
                      (SELECT count(*) FROM bitdex_sync.capture_gaps g
                        WHERE (g.ended_at IS NULL) = (st = 'open')))
      FROM unnest(ARRAY['open', 'restored']) st
    UNION ALL
    SELECT 7 + b.i / 100.0, format('bitdex_sync_commit_to_durable_ms_bucket{database="%s",le="%s"} %s', w.database, b.le,
                     (SELECT sum(x) FROM unnest(w.latency_buckets[1:b.i]) x))
      FROM w, unnest(ARRAY['1','2','5','10','20','50','100','250','1000','5000','30000','+Inf']) WITH ORDINALITY b(le, i)
    UNION ALL SELECT 8, format('bitdex_sync_commit_to_durable_ms_sum{database="%s"} %s', database, latency_sum_ms) FROM w
    UNION ALL SELECT 9, format('bitdex_sync_commit_to_durable_ms_count{database="%s"} %s', database, latency_count) FROM w)
  SELECT string_agg(line, E'\n' ORDER BY k) || E'\n' FROM lines
  $$;

-- Returns true once every transaction committed before the call is durable
-- in the ops WAL; an error after `timeout`.
CREATE FUNCTION bitdex_sync.wait_for_sync(timeout interval DEFAULT '30 seconds') RETURNS boolean
  AS 'MODULE_PATHNAME', 'bitdex_sync_wait_for_sync'
  LANGUAGE C VOLATILE STRICT;

-- Asks the launcher to start this database's worker once the calling
-- transaction commits (when bitdex_sync.databases is empty, the default);
-- false when that setting names the databases instead. CREATE EXTENSION
-- calls it; call it after CREATE DATABASE from a template that has the
-- extension.
CREATE FUNCTION bitdex_sync.start_worker() RETURNS boolean
  AS 'MODULE_PATHNAME', 'bitdex_sync_start_worker'
  LANGUAGE C VOLATILE STRICT;

-- Where this database's ops WAL lives.
CREATE FUNCTION bitdex_sync.wal_directory() RETURNS text
  AS 'MODULE_PATHNAME', 'bitdex_sync_wal_directory'
  LANGUAGE C STABLE STRICT;

-- Recovery when the worker refuses the ops WAL (missing, another WAL's, or
-- behind what was acknowledged): the worker moves the directory aside and
-- starts a new ops WAL (a new WAL id) at the positions the slot and the
-- outbox have reached. What the lost batches held is not in the new WAL:
-- every consumer must be rebuilt from a full load. Returns the WAL id given up.
-- The new WAL starts with a full load of every source (loads still pending
-- or running are given up: their chunks so far are in the old WAL).
CREATE FUNCTION bitdex_sync.start_new_wal() RETURNS text
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog
  AS $$
  DECLARE
    given_up text;
  BEGIN
    WITH old AS (SELECT wal_id FROM bitdex_sync.instance FOR UPDATE)
    UPDATE bitdex_sync.instance SET wal_id = NULL FROM old
    RETURNING coalesce(lpad(to_hex(old.wal_id), 16, '0'), 'none') INTO given_up;
    UPDATE bitdex_sync.loads SET state = 'failed', finished_at = now(),
           error = 'given up: a new ops WAL was started (start_new_wal)'
     WHERE state IN ('pending', 'running');
    INSERT INTO bitdex_sync.loads (source, digest, reason)
    SELECT s.name, s.trigger_name, 'new ops WAL' FROM bitdex_sync.sources s
      JOIN bitdex_sync.instance i ON i.id = s.instance
     ORDER BY CASE s.spec::jsonb ->> 'kind' WHEN 'direct' THEN 0 WHEN 'join' THEN 1 WHEN 'fan_out_per_row' THEN 2 ELSE 3 END, s.name;
    PERFORM bitdex_sync.wake_worker();
    RETURN given_up;
  END
  $$;

-- Registers a load of one source, or of every source (NULL): a fresh
-- consumer, recovery after retention or a failover, a field to fill again.
-- Loads run in the order registered, direct sources first, then joins, then
-- fan-outs (whose queries find the slots the direct sources loaded).
-- Loads of the same sources still pending or running are given up (the new
-- one reads every row). Returns the loads registered.
CREATE FUNCTION bitdex_sync.load(source text DEFAULT NULL) RETURNS SETOF bitdex_sync.loads
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog
  AS $$
  BEGIN
    IF NOT EXISTS (SELECT FROM bitdex_sync.sources s JOIN bitdex_sync.instance i ON i.id = s.instance
                    WHERE load.source IS NULL OR s.name = load.source) THEN
      IF load.source IS NULL THEN
        RAISE EXCEPTION 'bitdex_sync: no source to load'
          USING ERRCODE = 'undefined_object', HINT = 'Apply a config first with bitdex_sync.apply_config().';
      END IF;
      RAISE EXCEPTION 'bitdex_sync: no source "%"', load.source
        USING ERRCODE = 'undefined_object',
              HINT = 'Sources are named after their table (plus ".field" for join sources): '
                     || coalesce((SELECT string_agg(format('%I', name), ', ' ORDER BY name) FROM bitdex_sync.sources), 'none')
                     || '.';
    END IF;
    UPDATE bitdex_sync.loads l SET state = 'failed', finished_at = now(),
           error = 'given up: a later load of the source was registered by hand'
     WHERE l.state IN ('pending', 'running') AND (load.source IS NULL OR l.source = load.source)
       AND l.source IN (SELECT s.name FROM bitdex_sync.sources s JOIN bitdex_sync.instance i ON i.id = s.instance);
    RETURN QUERY
      INSERT INTO bitdex_sync.loads (source, digest, reason)
      SELECT s.name, s.trigger_name, 'by hand' FROM bitdex_sync.sources s
        JOIN bitdex_sync.instance i ON i.id = s.instance
       WHERE load.source IS NULL OR s.name = load.source
       ORDER BY CASE s.spec::jsonb ->> 'kind' WHEN 'direct' THEN 0 WHEN 'join' THEN 1 WHEN 'fan_out_per_row' THEN 2 ELSE 3 END, s.name
      RETURNING *;
    PERFORM bitdex_sync.wake_worker();
  END
  $$;

-- True once no load is pending or running (false after `timeout`). A load
-- that failed does not hold it up: see its error in bitdex_sync.loads.
CREATE FUNCTION bitdex_sync.wait_for_loads(timeout interval DEFAULT '10 minutes') RETURNS boolean
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog
  AS $$
  DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
  BEGIN
    LOOP
      IF NOT EXISTS (SELECT FROM bitdex_sync.loads WHERE state IN ('pending', 'running')) THEN
        RETURN true;
      END IF;
      IF clock_timestamp() >= deadline THEN
        RETURN false;
      END IF;
      PERFORM pg_sleep(0.05);
    END LOOP;
  END
  $$;

-- At commit, the worker looks at the catalog (and at loads) at once
-- instead of at its next naptime.
CREATE FUNCTION bitdex_sync.wake_worker() RETURNS void
  AS 'MODULE_PATHNAME', 'bitdex_sync_wake_worker'
  LANGUAGE C VOLATILE STRICT;

REVOKE ALL ON FUNCTION bitdex_sync.worker_state(), bitdex_sync.status(), bitdex_sync.metrics(),
  bitdex_sync.wait_for_sync(interval), bitdex_sync.start_worker(), bitdex_sync.wal_directory(),
  bitdex_sync.start_new_wal(), bitdex_sync.load(text), bitdex_sync.wait_for_loads(interval),
  bitdex_sync.wake_worker() FROM PUBLIC;

SELECT bitdex_sync.start_worker();
