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
CREATE TABLE bitdex_sync.ops (
  id         bigserial PRIMARY KEY,
  entity_id  bigint NOT NULL,
  ops        jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  xid        xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
COMMENT ON TABLE bitdex_sync.ops IS 'Outbox sink of the capture triggers (capture: outbox)';

-- The sources apply_config installed, with the trigger each one owns.
CREATE TABLE bitdex_sync.sources (
  name         text PRIMARY KEY,
  table_oid    oid NOT NULL,
  table_name   text NOT NULL,
  trigger_name text NOT NULL,
  config       jsonb NOT NULL,
  helpers      text[] NOT NULL DEFAULT '{}',  -- shared_ops_fields functions, schema-qualified
  applied_at   timestamptz NOT NULL DEFAULT now()
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

CREATE FUNCTION bitdex_sync.capture() RETURNS trigger
  AS 'MODULE_PATHNAME', 'bitdex_sync_capture'
  LANGUAGE C;
COMMENT ON FUNCTION bitdex_sync.capture() IS 'Capture trigger behind every trigger apply_config creates';

CREATE FUNCTION bitdex_sync.apply_config(config text, dry_run boolean DEFAULT false)
  RETURNS TABLE (source text, action text, trigger_name text, table_name text)
  AS 'MODULE_PATHNAME', 'bitdex_sync_apply_config'
  LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION bitdex_sync.apply_config(config jsonb, dry_run boolean DEFAULT false)
  RETURNS TABLE (source text, action text, trigger_name text, table_name text)
  LANGUAGE sql STRICT VOLATILE
  AS $$ SELECT * FROM bitdex_sync.apply_config($1::text, $2) $$;
COMMENT ON FUNCTION bitdex_sync.apply_config(text, boolean) IS
  'Validates a capture config (YAML or JSON) and creates/replaces/drops its triggers in one transaction';

CREATE FUNCTION bitdex_sync.trigger_sql(config text) RETURNS text
  AS 'MODULE_PATHNAME', 'bitdex_sync_trigger_sql'
  LANGUAGE C STRICT STABLE;
CREATE FUNCTION bitdex_sync.trigger_sql(config jsonb) RETURNS text
  LANGUAGE sql STRICT STABLE
  AS $$ SELECT bitdex_sync.trigger_sql($1::text) $$;

REVOKE ALL ON FUNCTION bitdex_sync.apply_config(text, boolean), bitdex_sync.apply_config(jsonb, boolean),
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
