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
