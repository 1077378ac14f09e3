// Parse analysis of capture definitions, done once by apply_config: the
// expressions of a source over its table's row and the queries of fan-outs
// are resolved here, with search_path pinned, and stored as analysed trees
// (as PostgreSQL stores CHECK constraints and generated columns). The capture
// trigger only reads those trees: a function or table created later cannot
// change what it runs. C-style: these run PostgreSQL code and may ereport.
#include "bitdex_sync/pg/capture.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

namespace bitdex::pg {

bool g_applying_config = false;

Oid extension_owner() {
  static Oid cached_rel = InvalidOid, owner = InvalidOid;  // per installation of the extension
  Oid nsp = get_namespace_oid("bitdex_sync", true);
  Oid rel = OidIsValid(nsp) ? get_relname_relid("ops", nsp) : InvalidOid;
  if (!OidIsValid(rel))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("bitdex_sync.ops does not exist"),
                    errhint("Is the extension installed in this database?")));
  if (rel != cached_rel) {
    HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
    if (!HeapTupleIsValid(tup)) elog(ERROR, "bitdex_sync: cache lookup failed for relation %u", rel);
    owner = ((Form_pg_class)GETSTRUCT(tup))->relowner;
    ReleaseSysCache(tup);
    cached_rel = rel;
  }
  return owner;
}

uint64 extension_instance() {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "bitdex_sync: SPI_connect failed");
  UserContext was = enter_owner();
  if (SPI_execute("SELECT id FROM bitdex_sync.instance", true, 0) != SPI_OK_SELECT || SPI_processed != 1)
    ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("bitdex_sync.instance does not hold one row"),
                    errhint("Drop and create the extension again.")));
  bool isnull;
  const uint64 id =
      static_cast<uint64>(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
  leave_owner(was);
  SPI_finish();
  return id;
}

UserContext enter_owner() {
  UserContext was;
  GetUserIdAndSecContext(&was.user, &was.sec);
  SetUserIdAndSecContext(extension_owner(), was.sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
  return was;
}

void leave_owner(const UserContext& was) {
  SetUserIdAndSecContext(was.user, was.sec);
}

Oid function_owner(Oid func) {
  HeapTuple tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(func));
  if (!HeapTupleIsValid(tup)) elog(ERROR, "bitdex_sync: cache lookup failed for function %u", func);
  const Oid owner = ((Form_pg_proc)GETSTRUCT(tup))->proowner;
  ReleaseSysCache(tup);
  return owner;
}

Conv conv_for_type(Oid type) {
  Oid base = getBaseType(type);
  switch (base) {
    case INT2OID: return Conv::Int2;
    case INT4OID: return Conv::Int4;
    case INT8OID: return Conv::Int8;
    case BOOLOID: return Conv::Bool;
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID: return Conv::Text;
    case NAMEOID: return Conv::Name;
    case UUIDOID: return Conv::Output;
    case FLOAT4OID:
    case FLOAT8OID:
    case NUMERICOID: return Conv::Number;
    case DATEOID:
    case TIMESTAMPOID:
    case TIMESTAMPTZOID:
    case TIMEOID:
    case TIMETZOID: return Conv::DateTime;
    default: return type_is_enum(base) ? Conv::Output : Conv::Unsupported;
  }
}

namespace {

// Parses and analyses one statement with names resolved in pg_catalog, then
// public, then the caller's temporary schema (last, so that a temporary
// object never stands in for a real one), whatever the session's search_path.
Query* analyze_pinned(const char* sql, Oid* types, int ntypes) {
  int nest = NewGUCNestLevel();
  (void)set_config_option("search_path", "pg_catalog, public, pg_temp", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                          true, 0, false);
  List* raw = raw_parser(sql, RAW_PARSE_DEFAULT);
  if (list_length(raw) != 1)
    ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR), errmsg("\"%s\" is not one statement", sql)));
  Query* q = parse_analyze_fixedparams(linitial_node(RawStmt, raw), sql, types, ntypes, nullptr);
  AtEOXact_GUC(true, nest);
  return q;
}

}  // namespace

Query* analyze_select(Oid relid, const char* select_list) {
  char* nsp = get_namespace_name(get_rel_namespace(relid));
  char* rel = get_rel_name(relid);
  if (!nsp || !rel) elog(ERROR, "bitdex_sync: relation %u vanished", relid);
  char* sql = psprintf("SELECT %s FROM ONLY %s", select_list, quote_qualified_identifier(nsp, rel));
  Query* q = analyze_pinned(sql, nullptr, 0);
  if (q->commandType != CMD_SELECT || q->utilityStmt)
    ereport(ERROR,
            (errcode(ERRCODE_SYNTAX_ERROR), errmsg("expression list \"%s\" is not one select list", select_list)));
  if (q->hasSubLinks)
    ereport(ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("subqueries are not supported in capture expressions"),
             errhint("Capture expressions are evaluated on the changed row alone.")));
  if (q->hasAggs || q->hasWindowFuncs || q->hasTargetSRFs)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("aggregates, window functions and set-returning functions are not allowed in capture "
                           "expressions")));
  return q;
}

List* analyze_expressions(Oid relid, const char* select_list) {
  Query* q = analyze_select(relid, select_list);
  List* out = NIL;
  ListCell* lc;
  foreach (lc, q->targetList) out = lappend(out, lfirst_node(TargetEntry, lc)->expr);
  return out;
}

Query* analyze_query(const char* sql, Oid* types, int ntypes) {
  Query* q = analyze_pinned(sql, types, ntypes);
  if (q->commandType != CMD_SELECT || q->utilityStmt || q->rowMarks != NIL)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("\"%s\" is not a plain SELECT", sql)));
  return q;
}

namespace {

struct OwnerCheck {
  Oid applier;
  Oid found;  // the first function owned by neither a superuser nor applier
};

bool owner_not_trusted(Oid func, void* arg) {
  auto* c = static_cast<OwnerCheck*>(arg);
  const Oid owner = function_owner(func);
  if (owner == c->applier || superuser_arg(owner)) return false;
  c->found = func;
  return true;
}

bool owner_walker(Node* node, OwnerCheck* c) {
  if (!node) return false;
  if (check_functions_in_node(node, owner_not_trusted, c)) return true;
  if (IsA(node, Query)) return query_tree_walker((Query*)node, (bool (*)())owner_walker, c, 0);
  return expression_tree_walker(node, (bool (*)())owner_walker, c);
}

}  // namespace

Oid untrusted_function(Node* node, Oid applier) {
  OwnerCheck c{applier, InvalidOid};
  if (IsA(node, Query))
    (void)query_tree_walker((Query*)node, (bool (*)())owner_walker, &c, 0);
  else
    (void)owner_walker(node, &c);
  return c.found;
}

}  // namespace bitdex::pg
