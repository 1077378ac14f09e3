-- wait_for_sync() in the transaction that creates the extension fails at
-- once (its worker starts at the commit), not after the timeout.
BEGIN;
CREATE EXTENSION bitdex_sync;
SELECT bitdex_sync.wait_for_sync('20s');
ROLLBACK;
-- The extension installs into its own schema in a cluster that preloads it.
CREATE EXTENSION bitdex_sync;
SELECT extname, extversion, extrelocatable, nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'bitdex_sync';
SELECT p.proname, left(pg_get_function_arguments(p.oid), 50) AS args, left(pg_get_function_result(p.oid), 40) AS result,
       p.provolatile, p.proisstrict
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'bitdex_sync' ORDER BY 1, 2;
SHOW wal_level;
-- Settings under the reserved prefix that the extension does not define are refused.
SET bitdex_sync.no_such_setting = 1;
-- A role without explicit grants cannot call the functions (only op_value and op_value_text are public).
CREATE ROLE bitdex_sync_nobody;
SET ROLE bitdex_sync_nobody;
SELECT bitdex_sync.dedup('[]');
RESET ROLE;
SELECT p.proname AS public_may_execute FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'bitdex_sync' AND has_function_privilege('bitdex_sync_nobody', p.oid, 'EXECUTE') ORDER BY 1;
SELECT c.relname AS public_may_touch FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'bitdex_sync' AND c.relkind IN ('r', 'S', 'v')
   AND (has_table_privilege('bitdex_sync_nobody', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
        OR (c.relkind = 'S' AND has_sequence_privilege('bitdex_sync_nobody', c.oid, 'USAGE')));
DROP ROLE bitdex_sync_nobody;
