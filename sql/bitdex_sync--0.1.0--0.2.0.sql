-- bitdex_sync 0.1.0 -> 0.2.0: remote consumers of the ops WAL over libpq
-- (read_wal, consumers, role bitdex_sync_reader), retention in the worker,
-- failover. A fresh CREATE EXTENSION runs 0.1.0 and then this script.
\echo Use "ALTER EXTENSION bitdex_sync UPDATE" to load this file. \quit

-- The server timeline the ops WAL was started on (set by the worker). A
-- worker that finds its replication slot missing on a later timeline runs on
-- a promoted standby: the WAL cannot go on, and it starts a new one.
ALTER TABLE bitdex_sync.instance ADD COLUMN timeline integer;

-- Consumers of the ops WAL registered over SQL (remote followers): the
-- cursor each one acknowledged, which retention keeps (segments every
-- consumer has passed are removed by the worker). A cursor is
-- '<WAL id in hex>/<segment>/<offset>'. at_end: registered at the WAL's end
-- (a new index starts there, then bitdex_sync.load() fills it) until its
-- first acknowledgement. lagging: why retention gave up on it (its next
-- read fails; register it again and rebuild its index). Not dumped: a
-- restored database writes a new ops WAL.
CREATE TABLE bitdex_sync.consumers (
  name           text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$'),
  wal_id         bigint NOT NULL,
  segment        bigint NOT NULL CHECK (segment >= 0),
  segment_offset bigint NOT NULL CHECK (segment_offset >= 0),
  at_end         boolean NOT NULL DEFAULT false,
  registered_by  name NOT NULL DEFAULT session_user,
  registered_at  timestamptz NOT NULL DEFAULT now(),
  acked_at       timestamptz,
  lagging        text,
  lagging_since  timestamptz
);
REVOKE ALL ON bitdex_sync.consumers FROM PUBLIC;

-- The role a remote follower logs in with (or is granted): it may read the
-- ops WAL and manage consumers, nothing else. Roles belong to the cluster:
-- it is made by the first database that creates the extension, and stays
-- when the extension is dropped.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bitdex_sync_reader') THEN
    CREATE ROLE bitdex_sync_reader NOLOGIN;
  END IF;
END
$$;

-- Registers consumer `name` (nothing happens when it exists) and returns its
-- cursor: batch 1 of the ops WAL, or with at_end its end (a new index of it
-- starts there; bitdex_sync.load() then fills it).
CREATE FUNCTION bitdex_sync.register_consumer(name text, at_end boolean DEFAULT false) RETURNS text
  AS 'MODULE_PATHNAME', 'bitdex_sync_register_consumer'
  LANGUAGE C VOLATILE STRICT SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp;

-- Removes a consumer: retention no longer keeps segments for it.
CREATE FUNCTION bitdex_sync.unregister_consumer(name text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'bitdex_sync_unregister_consumer'
  LANGUAGE C VOLATILE STRICT SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp;

-- Whole batches of the ops WAL after cursor `after` (NULL: where the
-- consumer starts, batch 1 or its at_end cursor), up to max_bytes (at least
-- one batch), each as its bytes in the WAL (docs/wal-format.md) and the
-- cursor after it. With nothing new, waits up to wait_ms for the worker's
-- next batch. Refused to a lagging consumer and to a cursor of another ops WAL.
CREATE FUNCTION bitdex_sync.read_wal(consumer text, after text, max_bytes integer DEFAULT 8388608,
                                     wait_ms integer DEFAULT 0)
  RETURNS TABLE (batch_seq bigint, next text, bytes bytea)
  AS 'MODULE_PATHNAME', 'bitdex_sync_read_wal'
  LANGUAGE C VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp;

-- The consumer's durable position: its index holds every batch before
-- `cursor` durably. Retention keeps the segments from there on.
CREATE FUNCTION bitdex_sync.ack_consumer(name text, cursor text) RETURNS void
  AS 'MODULE_PATHNAME', 'bitdex_sync_ack_consumer'
  LANGUAGE C VOLATILE STRICT SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp;

-- The ops WAL as rows, for inspection: records of batches from `from_batch`
-- on, at most max_rows. A clear record has no entity_id and its clear in ops.
CREATE FUNCTION bitdex_sync.wal_records(from_batch bigint DEFAULT 1, max_rows integer DEFAULT 1000)
  RETURNS TABLE (batch_seq bigint, "position" text, entity_id bigint, creates_slot boolean, ops jsonb)
  AS 'MODULE_PATHNAME', 'bitdex_sync_wal_records'
  LANGUAGE C VOLATILE STRICT SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION bitdex_sync.register_consumer(text, boolean), bitdex_sync.unregister_consumer(text),
  bitdex_sync.read_wal(text, text, integer, integer), bitdex_sync.ack_consumer(text, text),
  bitdex_sync.wal_records(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bitdex_sync.register_consumer(text, boolean), bitdex_sync.unregister_consumer(text),
  bitdex_sync.read_wal(text, text, integer, integer), bitdex_sync.ack_consumer(text, text),
  bitdex_sync.wal_records(bigint, integer) TO bitdex_sync_reader;

-- The ops WAL's segments: number, size, last written (status() and
-- metrics() read it).
CREATE FUNCTION bitdex_sync.wal_segments(OUT segment bigint, OUT bytes bigint, OUT modified timestamptz)
  RETURNS SETOF record
  LANGUAGE sql VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
  SELECT ('x' || substr(f, 1, 16))::bit(64)::bigint, s.size, s.modification
    FROM pg_ls_dir(bitdex_sync.wal_directory(), true, false) f,
         LATERAL pg_stat_file(bitdex_sync.wal_directory() || '/' || f, true) s
   WHERE f ~ '^[0-9a-f]{16}\.seg$' AND s.size IS NOT NULL
   ORDER BY 1
  $$;
REVOKE ALL ON FUNCTION bitdex_sync.wal_segments() FROM PUBLIC;

-- status() and metrics() with the consumers and the directory's size;
-- metrics() with HELP and TYPE for every family (promtool check metrics
-- accepts it), the latency histogram in seconds
-- (bitdex_sync_commit_to_durable_seconds, was _ms) and the bytes written as
-- a counter named for it (bitdex_sync_wal_written_bytes_total, was
-- bitdex_sync_wal_bytes). The
-- catalog views they read are schema-qualified and pg_temp comes last (a
-- temporary view named like one of them must not run as the owner).
CREATE OR REPLACE FUNCTION bitdex_sync.status()
  RETURNS TABLE (source text, database text, state text, pid int, slot_name text, confirmed_lsn pg_lsn,
                 confirmed_id bigint, lag_bytes numeric, lag_ops bigint, lag_seconds float8,
                 slot_retained_wal_bytes numeric, ops_captured bigint, ops_written bigint, records_skipped bigint,
                 batches bigint, wal_bytes_written bigint, poison_ops bigint, errors_total bigint,
                 failures_in_a_row int, last_batch_at timestamptz, last_error text, last_error_at timestamptz,
                 rejected_messages bigint, load_rows bigint, load_rows_per_second float8, load_eta_seconds float8)
  LANGUAGE sql VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
  -- The directory is listed once per call, not once per consumer.
  WITH segs AS MATERIALIZED (SELECT * FROM bitdex_sync.wal_segments())
  SELECT 'slot', w.database, CASE WHEN w.slot_stopped THEN 'stopped at poison' ELSE w.state END, w.pid, s.slot_name::text, w.durable_lsn, NULL::bigint,
         pg_wal_lsn_diff(pg_current_wal_flush_lsn(), w.durable_lsn), NULL::bigint,
         CASE WHEN pg_wal_lsn_diff(pg_current_wal_flush_lsn(), w.durable_lsn) > 0 AND w.last_batch_at IS NOT NULL
              THEN extract(epoch FROM clock_timestamp() - w.last_batch_at)::float8 ELSE 0 END,
         pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn),
         w.ops_captured - w.outbox_ops, w.ops_written, w.records_skipped, w.batches, w.wal_bytes_written, w.poison_ops,
         w.errors_total, w.failures_in_a_row, w.last_batch_at, w.last_error, w.last_error_at, w.rejected_messages,
         NULL::bigint, NULL::float8, NULL::float8
    FROM bitdex_sync.worker_state() w
    LEFT JOIN pg_catalog.pg_database d ON d.datname = w.database
    LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = 'bitdex_sync_' || d.oid
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
  UNION ALL
  -- Consumers registered over SQL (remote followers): the cursor each one
  -- acknowledged, the ops WAL bytes after it (lag_bytes) and the time since
  -- it acknowledged; a lagging one with why retention gave up on it.
  SELECT 'consumer ' || c.name, current_database(),
         CASE WHEN c.lagging IS NOT NULL THEN 'lagging' WHEN c.acked_at IS NULL THEN 'registered' ELSE 'following' END,
         NULL, NULL, NULL, NULL,
         (SELECT coalesce(sum(CASE WHEN g.segment = c.segment THEN greatest(g.bytes - c.segment_offset, 0)
                                   ELSE g.bytes END), 0)
            FROM segs g
           WHERE g.segment >= c.segment AND c.lagging IS NULL AND c.wal_id = i.wal_id),
         NULL, extract(epoch FROM clock_timestamp() - coalesce(c.acked_at, c.registered_at))::float8, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, c.acked_at,
         coalesce('lagging: ' || c.lagging,
                  format('cursor %s/%s/%s%s', lpad(to_hex(c.wal_id), 16, '0'), c.segment, c.segment_offset,
                         CASE WHEN c.at_end THEN ' (registered at the end)' ELSE '' END)),
         c.lagging_since, NULL, NULL, NULL, NULL
    FROM bitdex_sync.consumers c CROSS JOIN bitdex_sync.instance i
  ORDER BY 2, 1 DESC
  $$;

CREATE OR REPLACE FUNCTION bitdex_sync.metrics() RETURNS text
  LANGUAGE sql VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
  WITH w AS (SELECT * FROM bitdex_sync.worker_state() WHERE state <> 'no worker'),
  segs AS (SELECT coalesce(sum(bytes), 0) AS bytes, count(*) AS n FROM bitdex_sync.wal_segments()),
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
    UNION ALL SELECT 5, format('bitdex_sync_wal_written_bytes_total{database="%s"} %s', database, wal_bytes_written) FROM w
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
    SELECT 11 + CASE st WHEN 'open' THEN 0 ELSE 0.1 END,
           format('bitdex_sync_capture_gaps{database="%s",state="%s"} %s', current_database(), st,
                      (SELECT count(*) FROM bitdex_sync.capture_gaps g
                        WHERE (g.ended_at IS NULL) = (st = 'open')))
      FROM unnest(ARRAY['open', 'restored']) st
    UNION ALL
    SELECT 7 + b.i / 100.0, format('bitdex_sync_commit_to_durable_seconds_bucket{database="%s",le="%s"} %s', w.database, b.le,
                     (SELECT sum(x) FROM unnest(w.latency_buckets[1:b.i]) x))
      FROM w, unnest(ARRAY['0.001','0.002','0.005','0.01','0.02','0.05','0.1','0.25','1','5','30','+Inf']) WITH ORDINALITY b(le, i)
    UNION ALL SELECT 8, format('bitdex_sync_commit_to_durable_seconds_sum{database="%s"} %s', database, latency_sum_ms / 1000) FROM w
    UNION ALL SELECT 9, format('bitdex_sync_commit_to_durable_seconds_count{database="%s"} %s', database, latency_count) FROM w
    UNION ALL
    SELECT 17 + c.n / 1e6, format('bitdex_sync_consumer_lagging{database="%s",consumer="%s"} %s', current_database(),
                                  c.name, CASE WHEN c.lagging IS NULL THEN 0 ELSE 1 END)
      FROM (SELECT name, lagging, row_number() OVER (ORDER BY name) AS n FROM bitdex_sync.consumers) c
    UNION ALL
    SELECT 18 + c.n / 1e6, format('bitdex_sync_consumer_acked_seconds{database="%s",consumer="%s"} %s',
                                  current_database(), c.name,
                                  round(extract(epoch FROM clock_timestamp() - coalesce(c.acked_at, c.registered_at))::numeric, 3))
      FROM (SELECT *, row_number() OVER (ORDER BY name) AS n FROM bitdex_sync.consumers) c
    UNION ALL SELECT 19, format('bitdex_sync_wal_directory_bytes{database="%s"} %s', current_database(),
                                (SELECT bytes FROM segs))
    UNION ALL SELECT 19.1, format('bitdex_sync_wal_segments{database="%s"} %s', current_database(),
                                  (SELECT n FROM segs))
    -- Every family's HELP and TYPE, right before its series.
    UNION ALL SELECT 0.998, '# HELP bitdex_sync_cursor_position Position durable in the ops WAL: slot, an LSN in bytes; outbox, the highest row id'
    UNION ALL SELECT 0.999, '# TYPE bitdex_sync_cursor_position gauge'
    UNION ALL SELECT 1.998, '# HELP bitdex_sync_max_id Newest position of the source: slot, the flushed server WAL in bytes; outbox, the highest row id'
    UNION ALL SELECT 1.999, '# TYPE bitdex_sync_max_id gauge'
    UNION ALL SELECT 2.998, '# HELP bitdex_sync_lag_rows Behind the source: slot, server WAL bytes not yet durable; outbox, rows not yet written'
    UNION ALL SELECT 2.999, '# TYPE bitdex_sync_lag_rows gauge'
    UNION ALL SELECT 3.998, '# HELP bitdex_sync_ops_total Ops read from the source since the worker started'
    UNION ALL SELECT 3.999, '# TYPE bitdex_sync_ops_total counter'
    UNION ALL SELECT 4.998, '# HELP bitdex_sync_wal_written_bytes_total Bytes appended to the ops WAL since the worker started'
    UNION ALL SELECT 4.999, '# TYPE bitdex_sync_wal_written_bytes_total counter'
    UNION ALL SELECT 5.998, '# HELP bitdex_sync_errors_total Failed runs of the worker since the server started'
    UNION ALL SELECT 5.999, '# TYPE bitdex_sync_errors_total counter'
    UNION ALL SELECT 6.498, '# HELP bitdex_sync_worker_refused 1 for a database a limit refused a worker (the setting to raise)'
    UNION ALL SELECT 6.499, '# TYPE bitdex_sync_worker_refused gauge'
    UNION ALL SELECT 6.998, '# HELP bitdex_sync_commit_to_durable_seconds Time from a captured commit to its batch being durable in the ops WAL'
    UNION ALL SELECT 6.999, '# TYPE bitdex_sync_commit_to_durable_seconds histogram'
    UNION ALL SELECT 9.998, '# HELP bitdex_sync_rejected_messages_total Capture messages without a valid tag, dropped'
    UNION ALL SELECT 9.999, '# TYPE bitdex_sync_rejected_messages_total counter'
    UNION ALL SELECT 10.998, '# HELP bitdex_sync_capture_gaps Capture gaps recorded, open or restored'
    UNION ALL SELECT 10.999, '# TYPE bitdex_sync_capture_gaps gauge'
    UNION ALL SELECT 11.998, '# HELP bitdex_sync_load_rows_total Rows loaded by the worker since it started'
    UNION ALL SELECT 11.999, '# TYPE bitdex_sync_load_rows_total counter'
    UNION ALL SELECT 12.098, '# HELP bitdex_sync_load_chunks_total Load chunks written by the worker since it started'
    UNION ALL SELECT 12.099, '# TYPE bitdex_sync_load_chunks_total counter'
    UNION ALL SELECT 12.198, '# HELP bitdex_sync_load_chunks_cut_total Load chunks cut short by a concurrent commit'
    UNION ALL SELECT 12.199, '# TYPE bitdex_sync_load_chunks_cut_total counter'
    UNION ALL SELECT 12.998, '# HELP bitdex_sync_loads Loads by state'
    UNION ALL SELECT 12.999, '# TYPE bitdex_sync_loads gauge'
    UNION ALL SELECT 13.998, '# HELP bitdex_sync_load_progress_rows Rows a running load has read'
    UNION ALL SELECT 13.999, '# TYPE bitdex_sync_load_progress_rows gauge'
    UNION ALL SELECT 14.998, '# HELP bitdex_sync_load_rows_per_second Rows per second of a running load'
    UNION ALL SELECT 14.999, '# TYPE bitdex_sync_load_rows_per_second gauge'
    UNION ALL SELECT 15.998, '# HELP bitdex_sync_load_eta_seconds Estimated seconds left of a running load'
    UNION ALL SELECT 15.999, '# TYPE bitdex_sync_load_eta_seconds gauge'
    UNION ALL SELECT 16.998, '# HELP bitdex_sync_consumer_lagging 1 when retention removed ops WAL segments the consumer needed (rebuild it)'
    UNION ALL SELECT 16.999, '# TYPE bitdex_sync_consumer_lagging gauge'
    UNION ALL SELECT 17.998, '# HELP bitdex_sync_consumer_acked_seconds Seconds since the consumer last acknowledged (or registered)'
    UNION ALL SELECT 17.999, '# TYPE bitdex_sync_consumer_acked_seconds gauge'
    UNION ALL SELECT 18.998, '# HELP bitdex_sync_wal_directory_bytes Bytes of the ops WAL segments in the directory'
    UNION ALL SELECT 18.999, '# TYPE bitdex_sync_wal_directory_bytes gauge'
    UNION ALL SELECT 19.098, '# HELP bitdex_sync_wal_segments Ops WAL segments in the directory'
    UNION ALL SELECT 19.099, '# TYPE bitdex_sync_wal_segments gauge'
  )
  SELECT string_agg(line, E'\n' ORDER BY k) || E'\n' FROM lines
  $$;
