// The capture guard: an event trigger at the end of every DDL command that
// refuses a command leaving a recorded capture trigger dropped or not
// firing always (DROP TRIGGER, ALTER TABLE ... DISABLE TRIGGER, DROP TABLE,
// DROP ... CASCADE, a partition's clone disabled), because every change
// after it would be lost silently. apply_config's own DDL passes. A
// superuser who must do it anyway sets bitdex_sync.allow_capture_loss: the
// command then goes through and the gap is recorded in
// bitdex_sync.capture_gaps (status() and metrics() show it) until
// apply_config restores capture. C-style: no C++ objects here.
#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/heap.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_inherits.h"
#include "nodes/value.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(bitdex_sync_guard_ddl);
Datum bitdex_sync_guard_ddl(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_guard_drop);
Datum bitdex_sync_guard_drop(PG_FUNCTION_ARGS);
}

namespace bitdex::pg {

bool g_allow_capture_loss = false;

namespace {

// The recorded capture triggers that are gone or do not fire always (also a
// partition's clone), and what is wrong with each. Rows of a restored dump
// (recorded by another installation) are not this command's doing: a
// restore's own DDL must go through.
constexpr const char* kBroken =
    "SELECT source, table_name, trigger_name, problem FROM bitdex_sync.broken_capture() "
    "WHERE problem <> 'recorded by an earlier installation (a restored dump)' ORDER BY 1, 2, 3";

}  // namespace

int record_capture_gaps(const char* detected_by, bool log) {
  Datum by = CStringGetTextDatum(detected_by);
  Datum role = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
  UserContext was = enter_owner();
  Oid types[2] = {TEXTOID, TEXTOID};
  Datum values[2] = {by, role};
  if (SPI_execute_with_args(
          "INSERT INTO bitdex_sync.capture_gaps (source, table_name, trigger_name, problem, detected_by, role) "
          "SELECT b.source, b.table_name, b.trigger_name, b.problem, $1, $2 FROM bitdex_sync.broken_capture() b "
          "WHERE b.problem <> 'recorded by an earlier installation (a restored dump)' AND NOT EXISTS (SELECT FROM "
          "bitdex_sync.capture_gaps g WHERE g.ended_at IS NULL AND g.source = b.source "
          "AND g.table_name = b.table_name AND g.trigger_name = b.trigger_name) "
          "RETURNING source, table_name, trigger_name, problem",
          2, types, values, nullptr, false, 0) != SPI_OK_INSERT_RETURNING)
    elog(ERROR, "bitdex_sync: could not record a capture gap");
  const int n = static_cast<int>(SPI_processed);
  for (int i = 0; log && i < n; i++)
    ereport(WARNING, (errmsg("bitdex_sync: capture gap recorded: source \"%s\", trigger \"%s\" on %s %s",
                             SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
                             SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3),
                             SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
                             SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4)),
                      errdetail("Changes to that table are not captured from now on and will be missing from the "
                                "ops WAL."),
                      errhint("Apply the config again to restore capture; the table's source then needs a reload.")));
  leave_owner(was);
  return n;
}

}  // namespace bitdex::pg

// bitdex_sync.guard_ddl(): the event trigger (ddl_command_end).
Datum bitdex_sync_guard_ddl(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("bitdex_sync.guard_ddl() must be called as an event trigger")));
  // apply_config's own DDL; a DROP EXTENSION that took the catalog with it.
  if (g_applying_config) PG_RETURN_VOID();
  Oid nsp = get_namespace_oid("bitdex_sync", true);
  if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("sources", nsp))) PG_RETURN_VOID();
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  if (g_allow_capture_loss) {
    record_capture_gaps("ddl", true);
    SPI_finish();
    PG_RETURN_VOID();
  }
  UserContext was = enter_owner();
  // Not read-only: the snapshot must see what this command changed.
  if (SPI_execute(kBroken, false, 1) != SPI_OK_SELECT) elog(ERROR, "bitdex_sync: could not check the capture triggers");
  leave_owner(was);
  if (SPI_processed > 0) {
    HeapTuple row = SPI_tuptable->vals[0];
    TupleDesc desc = SPI_tuptable->tupdesc;
    const auto* event = reinterpret_cast<EventTriggerData*>(fcinfo->context);
    const char* tag = GetCommandTagName(event->tag);
    ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE),
                    errmsg("%s would leave capture trigger \"%s\" on %s %s (source \"%s\" of bitdex_sync)", tag,
                           SPI_getvalue(row, desc, 3), SPI_getvalue(row, desc, 2), SPI_getvalue(row, desc, 4),
                           SPI_getvalue(row, desc, 1)),
                    errdetail("Every change to the table after it would be missing from the ops WAL, silently."),
                    errhint("Change the config first (bitdex_sync.apply_config() without that source, in the same "
                            "transaction if you like). To do it anyway and record the gap, a superuser sets "
                            "bitdex_sync.allow_capture_loss = on.")));
  }
  // ALTER TYPE ... RENAME VALUE of an enum a capture trigger reads: capture
  // would emit the new label from now on while the index holds the old one
  // (an UPDATE's remove of the new label would not take the old one out).
  const auto* event = reinterpret_cast<EventTriggerData*>(fcinfo->context);
  if (event->parsetree && IsA(event->parsetree, AlterEnumStmt) &&
      castNode(AlterEnumStmt, event->parsetree)->oldVal != nullptr) {
    const auto* stmt = castNode(AlterEnumStmt, event->parsetree);
    const Oid type = typenameTypeId(nullptr, makeTypeNameFromNameList(stmt->typeName));
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(type)};
    was = enter_owner();
    if (SPI_execute_with_args(
            "SELECT s.name, a.attname::text FROM bitdex_sync.sources s "
            "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass "
            "AND d.objid = s.trigger_oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass "
            "AND d.refobjsubid > 0 "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
            "WHERE t.oid = $1 OR t.typelem = $1 OR t.typbasetype = $1 ORDER BY 1, 2 LIMIT 1",
            1, types, values, nullptr, false, 1) != SPI_OK_SELECT)
      elog(ERROR, "bitdex_sync: could not check the captured columns");
    leave_owner(was);
    if (SPI_processed > 0)
      ereport(ERROR,
              (errcode(ERRCODE_OBJECT_IN_USE),
               errmsg("ALTER TYPE %s RENAME VALUE would change what source \"%s\" of bitdex_sync captures from column "
                      "\"%s\"",
                      format_type_be(type), SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
                      SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
               errdetail("The index holds the old label; capture would emit the new one from now on, and an UPDATE "
                         "would not take the old label out."),
               errhint("Remove the source from the config, rename the value, then apply the source again (it is "
                       "loaded again). To do it anyway, a superuser sets bitdex_sync.allow_capture_loss = on.")));
  }
  SPI_finish();
  PG_RETURN_VOID();
}

namespace {

// Whether the command may drop the extension: DROP EXTENSION bitdex_sync,
// DROP SCHEMA bitdex_sync (CASCADE), DROP OWNED BY its owner.
bool drops_extension(Node* stmt) {
  ListCell* lc;
  if (IsA(stmt, DropStmt)) {
    auto* drop = castNode(DropStmt, stmt);
    if (drop->removeType != OBJECT_EXTENSION && drop->removeType != OBJECT_SCHEMA) return false;
    foreach (lc, drop->objects)
      if (IsA(lfirst(lc), String) && strcmp(strVal(lfirst(lc)), "bitdex_sync") == 0) return true;
    return false;
  }
  if (IsA(stmt, DropOwnedStmt)) {
    const Oid owner = bitdex::pg::extension_owner();
    foreach (lc, castNode(DropOwnedStmt, stmt)->roles)
      if (get_rolespec_oid(lfirst_node(RoleSpec, lc), true) == owner) return true;
  }
  return false;
}

}  // namespace

// bitdex_sync.guard_drop(): the event trigger at the start of DROP
// EXTENSION, DROP SCHEMA and DROP OWNED (each can drop the extension).
// Rows waiting in the outbox would go with the table: the drop is refused
// while there are any (bitdex_sync.allow_capture_loss lets it through). The
// extension is locked first, as the drop itself will: the worker finishes
// the outbox pass it is in and starts no other, so no deadlock; then the
// outbox, so that no writer adds a row between the count and the drop.
// Capture messages need no check: at the drop's commit the worker decodes
// to the end of the WAL before it drops its slot.
Datum bitdex_sync_guard_drop(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("bitdex_sync.guard_drop() must be called as an event trigger")));
  auto* event = reinterpret_cast<EventTriggerData*>(fcinfo->context);
  const Oid ext = get_extension_oid("bitdex_sync", true);
  if (!OidIsValid(ext) || !drops_extension(event->parsetree)) PG_RETURN_VOID();
  extension_change_at_commit();
  LockDatabaseObject(ExtensionRelationId, ext, 0, AccessExclusiveLock);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  UserContext was = enter_owner();
  if (SPI_execute("LOCK TABLE bitdex_sync.ops IN SHARE MODE", false, 0) != SPI_OK_UTILITY ||
      SPI_execute("SELECT count(*), min(id), max(id) FROM bitdex_sync.ops", false, 1) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not read the outbox");
  leave_owner(was);
  bool isnull;
  const int64 rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  if (rows > 0) {
    const char* first = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
    const char* last = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
    if (!g_allow_capture_loss)
      ereport(ERROR,
              (errcode(ERRCODE_OBJECT_IN_USE),
               errmsg("cannot drop extension bitdex_sync: " INT64_FORMAT " captured rows (ids %s to %s) wait in the "
                      "outbox bitdex_sync.ops and are not in the ops WAL yet",
                      rows, first, last),
               errdetail("Dropping the extension drops the outbox with them: those changes would never reach the "
                         "index."),
               errhint("Remove the outbox sources from the config (no new rows), SELECT bitdex_sync.wait_for_sync(); "
                       "then drop again; see status() if rows do not drain. To drop them anyway, a superuser sets "
                       "bitdex_sync.allow_capture_loss = on.")));
    ereport(WARNING, (errmsg("bitdex_sync: dropping " INT64_FORMAT " captured rows (ids %s to %s) of the outbox that "
                             "are not in the ops WAL",
                             rows, first, last)));
  }
  SPI_finish();
  PG_RETURN_VOID();
}

// ---- commands that change a captured table's rows without firing capture ----

namespace bitdex::pg {
namespace {

// The sources of this installation on table `relid`, as lists of (name,
// trigger, table) (SPI connected, as the owner); empty when none. With
// `untruncatable`, only those whose TRUNCATE trigger is not there and firing
// always (a TRUNCATE of the table would not be captured for them).
List* sources_on(Oid relid, bool untruncatable = false) {
  Datum arg = ObjectIdGetDatum(relid);
  Oid type = OIDOID;
  const char* sql =
      untruncatable
          ? "SELECT s.name, s.trigger_name, s.table_name FROM bitdex_sync.sources s "
            "JOIN bitdex_sync.instance i ON i.id = s.instance WHERE s.table_oid = $1 AND NOT EXISTS (SELECT FROM "
            "pg_catalog.pg_trigger t WHERE t.oid = s.truncate_trigger_oid AND t.tgrelid = s.table_oid AND "
            "t.tgenabled = 'A') ORDER BY 1"
          : "SELECT s.name, s.trigger_name, s.table_name FROM bitdex_sync.sources s "
            "JOIN bitdex_sync.instance i ON i.id = s.instance WHERE s.table_oid = $1 ORDER BY 1";
  if (SPI_execute_with_args(sql, 1, &type, &arg, nullptr, true, 0) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not read bitdex_sync.sources");
  List* out = NIL;
  for (uint64 i = 0; i < SPI_processed; i++) {
    HeapTuple row = SPI_tuptable->vals[i];
    TupleDesc desc = SPI_tuptable->tupdesc;
    out = lappend(out, list_make3(makeString(SPI_getvalue(row, desc, 1)), makeString(SPI_getvalue(row, desc, 2)),
                                  makeString(SPI_getvalue(row, desc, 3))));
  }
  return out;
}

// `relid` or the partitioned tables it belongs to, as captured: its sources.
List* captured_sources(Oid relid) {
  List* out = sources_on(relid);
  ListCell* lc;
  List* ancestors = get_rel_relispartition(relid) ? get_partition_ancestors(relid) : NIL;
  foreach (lc, ancestors) out = list_concat(out, sources_on(lfirst_oid(lc)));
  return out;
}

// Refuses `what` on `relid` (its rows change and capture sees nothing) when
// `sources` (those that would miss it) is not empty; with
// bitdex_sync.allow_capture_loss it is let through and recorded as a
// capture gap of each such source.
void refuse_or_record(Oid relid, List* sources, const char* what, const char* hint) {
  if (sources == NIL) return;
  List* first = linitial_node(List, sources);
  if (!g_allow_capture_loss)
    ereport(ERROR,
            (errcode(ERRCODE_OBJECT_IN_USE),
             errmsg("%s would change the rows of %s without capture seeing it (source \"%s\" of bitdex_sync)", what,
                    get_rel_name(relid), strVal(linitial(first))),
             errdetail("The index would keep what the table no longer holds, or lack what it holds now."),
             errhint("%s To do it anyway and record the gap, a superuser sets bitdex_sync.allow_capture_loss = on.",
                     hint)));
  ListCell* lc;
  foreach (lc, sources) {
    List* s = lfirst_node(List, lc);
    Oid types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
    Datum values[5] = {CStringGetTextDatum(strVal(linitial(s))), CStringGetTextDatum(strVal(lthird(s))),
                       CStringGetTextDatum(strVal(lsecond(s))),
                       CStringGetTextDatum(psprintf("%s of %s", what, get_rel_name(relid))),
                       CStringGetTextDatum(GetUserNameFromId(GetUserId(), false))};
    if (SPI_execute_with_args("INSERT INTO bitdex_sync.capture_gaps (source, table_name, trigger_name, problem, "
                              "detected_by, role, ended_at) VALUES ($1, $2, $3, $4, 'ddl', $5, now())",
                              5, types, values, nullptr, false, 0) != SPI_OK_INSERT)
      elog(ERROR, "bitdex_sync: could not record a capture gap");
    ereport(WARNING, (errmsg("bitdex_sync: capture gap recorded: %s of %s (source \"%s\")", what, get_rel_name(relid),
                             strVal(linitial(s))),
                      errhint("The source needs a load to match the table again.")));
  }
}

// Whether the table (with its partitions or children) holds a row.
bool has_rows(Oid relid) {
  const char* sql =
      psprintf("SELECT EXISTS (SELECT FROM %s)",
               quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid)));
  if (SPI_execute(sql, true, 1) != SPI_OK_SELECT) elog(ERROR, "bitdex_sync: could not read %s", get_rel_name(relid));
  bool isnull;
  return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

void guard_truncate(TruncateStmt* stmt) {
  List* relids = NIL;
  ListCell* lc;
  foreach (lc, stmt->relations) {
    RangeVar* rv = lfirst_node(RangeVar, lc);
    Oid relid = RangeVarGetRelid(rv, NoLock, true);
    if (!OidIsValid(relid)) continue;
    relids = list_append_unique_oid(relids, relid);
    if (rv->inh) relids = list_concat_unique_oid(relids, find_all_inheritors(relid, NoLock, nullptr));
  }
  // CASCADE truncates what references them too, to the end of the chain.
  for (List* added = relids; stmt->behavior == DROP_CASCADE && added != NIL;) {
    List* more = NIL;
    foreach (lc, heap_truncate_find_FKs(relids))
      if (!list_member_oid(relids, lfirst_oid(lc))) more = lappend_oid(more, lfirst_oid(lc));
    relids = list_concat(relids, more);
    added = more;
  }
  // Each table's own sources capture its TRUNCATE with their TRUNCATE
  // trigger. A partition has none (statement triggers are not cloned): it
  // may be truncated only with the captured partitioned table above it,
  // whose trigger then fires.
  foreach (lc, relids) {
    const Oid relid = lfirst_oid(lc);
    List* missed = sources_on(relid, true);
    ListCell* a;
    List* ancestors = get_rel_relispartition(relid) ? get_partition_ancestors(relid) : NIL;
    foreach (a, ancestors)
      if (!list_member_oid(relids, lfirst_oid(a))) missed = list_concat(missed, sources_on(lfirst_oid(a)));
    refuse_or_record(relid, missed, "TRUNCATE",
                     "Truncate the partitioned table, or DELETE the rows (each is captured); apply the config "
                     "again if its TRUNCATE trigger is missing or disabled.");
  }
}

// DROP COLUMN or ALTER COLUMN TYPE of a column a capture trigger reads
// (found through the dependencies apply_config recorded for its trees):
// refused before PostgreSQL's own dependency error, naming the source and
// the config keys that use the column. Only for the table's owner: anyone
// else gets PostgreSQL's permission error, not the config's contents.
// bitdex_sync.allow_capture_loss leaves it to PostgreSQL (CASCADE then drops
// the trigger, and the guard at the command's end records the gap).
// This installation's sources s whose capture trigger reads relation $1
// (d: the trigger's dependencies on it and its columns, recorded by
// apply_config for what its trees read), for a FROM clause.
#define BDX_SOURCES_READING_REL                                                                \
  "bitdex_sync.sources s JOIN bitdex_sync.instance i ON i.id = s.instance "                    \
  "JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass "   \
  "AND d.objid = s.trigger_oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass " \
  "AND d.refobjid = $1"

void guard_captured_column(Oid user, Oid relid, const char* column, bool drop) {
  if (g_allow_capture_loss || !pg_class_ownercheck(relid, user)) return;
  const AttrNumber attnum = get_attnum(relid, column);
  if (attnum == InvalidAttrNumber) return;
  // The column as a word of the config's text: a regular expression with
  // every character but letters, digits and _ escaped.
  StringInfoData word;
  initStringInfo(&word);
  appendStringInfoString(&word, "(^|[^A-Za-z0-9_])");
  for (const char* c = column; *c; c++) {
    if (!isalnum(static_cast<unsigned char>(*c)) && *c != '_') appendStringInfoChar(&word, '\\');
    appendStringInfoChar(&word, *c);
  }
  appendStringInfoString(&word, "($|[^A-Za-z0-9_])");
  Oid types[3] = {OIDOID, INT4OID, TEXTOID};
  Datum values[3] = {ObjectIdGetDatum(relid), Int32GetDatum(attnum), CStringGetTextDatum(word.data)};
  // The sources whose trigger reads it, the table's own first: which config
  // keys name it, and whether the source is on this table (a source of
  // another table reads it through a query: a fan-out's, a join's, a fan-in's).
  if (SPI_execute_with_args("SELECT s.name, (SELECT pg_catalog.string_agg(e.key, ', ' ORDER BY e.key) FROM "
                            "pg_catalog.jsonb_each(s.config) e WHERE e.key <> 'table' AND e.value::text ~ $3), "
                            "s.table_oid = $1 FROM " BDX_SOURCES_READING_REL " AND d.refobjsubid = $2 "
                            "ORDER BY 3 DESC, 1 LIMIT 1",
                            3, types, values, nullptr, true, 1) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not check the captured columns");
  if (SPI_processed == 0) return;
  HeapTuple row = SPI_tuptable->vals[0];
  TupleDesc desc = SPI_tuptable->tupdesc;
  const char* keys = SPI_getvalue(row, desc, 2);
  const bool own = strcmp(SPI_getvalue(row, desc, 3), "t") == 0;
  const char* where = keys != nullptr ? psprintf("key%s %s", strchr(keys, ',') ? "s" : "", keys)
                      : own           ? "by the name the column had when the config was applied"
                                      : "through a query it runs on this table";
  ereport(ERROR,
          (errcode(ERRCODE_OBJECT_IN_USE),
           errmsg("%s of column \"%s\" of %s would break capture: source \"%s\" of bitdex_sync reads it (%s)",
                  drop ? "DROP COLUMN" : "ALTER COLUMN TYPE", column, get_rel_name(relid), SPI_getvalue(row, desc, 1),
                  where),
           errdetail(drop ? "The capture trigger reads the column: it cannot go while the source uses it."
                          : "Values of the new type could differ from those the index holds, so later removes would "
                            "not match."),
           errhint("Change the config first, in the same transaction if you like: apply_config() without that column "
                   "(or without the source), then %s; apply it again afterwards, and the changed source is loaded "
                   "again.",
                   drop ? "drop the column" : "change the type")));
}

// ENABLE or FORCE ROW LEVEL SECURITY on a table a capture query of another
// table reads (a fan-out's, a join filter's, a fan-in's): the query runs as
// the writer, whose policies would then hide rows from the index.
// apply_config refuses such tables too.
void guard_row_security(Oid relid) {
  if (g_allow_capture_loss) return;
  Oid types[1] = {OIDOID};
  Datum values[1] = {ObjectIdGetDatum(relid)};
  if (SPI_execute_with_args("SELECT s.name FROM " BDX_SOURCES_READING_REL " WHERE s.table_oid <> $1 ORDER BY 1 LIMIT 1",
                            1, types, values, nullptr, true, 1) != SPI_OK_SELECT)
    elog(ERROR, "bitdex_sync: could not check the captured tables");
  if (SPI_processed == 0) return;
  ereport(ERROR,
          (errcode(ERRCODE_OBJECT_IN_USE),
           errmsg("row level security on %s would hide rows from capture: source \"%s\" of bitdex_sync reads the "
                  "table as whoever writes to its own",
                  get_rel_name(relid), SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
           errdetail("What the index holds would depend on who wrote."),
           errhint("Remove the source from the config first. To do it anyway, a superuser sets "
                   "bitdex_sync.allow_capture_loss = on.")));
}

void guard_alter_table(Oid user, AlterTableStmt* stmt) {
  ListCell* lc;
  foreach (lc, stmt->cmds) {
    auto* cmd = lfirst_node(AlterTableCmd, lc);
    if (cmd->subtype == AT_EnableRowSecurity || cmd->subtype == AT_ForceRowSecurity) {
      const Oid relid = RangeVarGetRelid(stmt->relation, NoLock, true);
      if (OidIsValid(relid)) guard_row_security(relid);
      continue;
    }
    if (cmd->subtype == AT_DropColumn || cmd->subtype == AT_AlterColumnType) {
      const Oid relid = RangeVarGetRelid(stmt->relation, NoLock, true);
      if (OidIsValid(relid) && cmd->name) guard_captured_column(user, relid, cmd->name, cmd->subtype == AT_DropColumn);
      continue;
    }
    if (cmd->subtype != AT_AttachPartition && cmd->subtype != AT_DetachPartition) continue;
    Oid parent = RangeVarGetRelid(stmt->relation, NoLock, true);
    Oid part = RangeVarGetRelid(castNode(PartitionCmd, cmd->def)->name, NoLock, true);
    if (!OidIsValid(parent) || !OidIsValid(part) || captured_sources(parent) == NIL) continue;
    // The command takes this lock too: no row can come or go before it runs.
    LockRelationOid(part, AccessExclusiveLock);
    if (!has_rows(part)) continue;  // an empty partition changes nothing captured
    const bool attach = cmd->subtype == AT_AttachPartition;
    refuse_or_record(parent, captured_sources(parent),
                     attach ? "ATTACH PARTITION of a table with rows" : "DETACH PARTITION of a table with rows",
                     attach ? "Attach it while empty and fill it through the partitioned table, or remove the source "
                              "from the config first."
                            : "Empty it first (through the partitioned table, so that capture sees the deletes), or "
                              "remove the source from the config first.");
  }
}

}  // namespace

// A TRUNCATE whose clear cannot be captured, let through by
// bitdex_sync.allow_capture_loss: a capture gap of the source.
void record_truncate_gap(const char* source, Oid relid, const char* trigger) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  UserContext was = enter_owner();
  Oid types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
  Datum values[5] = {CStringGetTextDatum(source),
                     CStringGetTextDatum(
                         quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid))),
                     CStringGetTextDatum(trigger), CStringGetTextDatum(psprintf("TRUNCATE of %s", get_rel_name(relid))),
                     CStringGetTextDatum(GetUserNameFromId(GetUserId(), false))};
  if (SPI_execute_with_args("INSERT INTO bitdex_sync.capture_gaps (source, table_name, trigger_name, problem, "
                            "detected_by, role, ended_at) VALUES ($1, $2, $3, $4, 'ddl', $5, now())",
                            5, types, values, nullptr, false, 0) != SPI_OK_INSERT)
    elog(ERROR, "bitdex_sync: could not record a capture gap");
  leave_owner(was);
  SPI_finish();
  ereport(WARNING,
          (errmsg("bitdex_sync: capture gap recorded: TRUNCATE of %s (source \"%s\")", get_rel_name(relid), source),
           errhint("The source needs a load to match the table again.")));
}

void guard_utility(Node* stmt) {
  if (!IsA(stmt, TruncateStmt) && !IsA(stmt, AlterTableStmt)) return;
  if (!IsTransactionState() || !OidIsValid(get_extension_oid("bitdex_sync", true))) return;
  Oid nsp = get_namespace_oid("bitdex_sync", true);
  if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("instance", nsp))) return;
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  const Oid user = GetUserId();
  UserContext was = enter_owner();
  if (IsA(stmt, TruncateStmt))
    guard_truncate(castNode(TruncateStmt, stmt));
  else
    guard_alter_table(user, castNode(AlterTableStmt, stmt));
  leave_owner(was);
  SPI_finish();
}

}  // namespace bitdex::pg
