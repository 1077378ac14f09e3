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
#include "catalog/pg_language.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/varlena.h"
#include "utils/array.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "access/relation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "utils/fmgroids.h"
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

// A function a capture expression may not call: a volatile one (random(),
// nextval(), clock_timestamp(): the value captured would not be the row's,
// and an UPDATE's "remove old" would not match what was set), or one that
// changes the writer's session (set_config, even where declared stable).
bool changes_or_varies(Oid func, void* found) {
  if (func != F_SET_CONFIG && func_volatile(func) != PROVOLATILE_VOLATILE) return false;
  *static_cast<Oid*>(found) = func;
  return true;
}

bool volatile_walker(Node* node, void* found) {
  if (!node) return false;
  if (IsA(node, Query)) return query_tree_walker(castNode(Query, node), (bool (*)())volatile_walker, found, 0);
  if (check_functions_in_node(node, changes_or_varies, found)) return true;
  return expression_tree_walker(node, (bool (*)())volatile_walker, found);
}

void refuse_volatile(Node* tree) {
  Oid found = InvalidOid;
  if (volatile_walker(tree, &found))
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("capture expressions may not call %s: it is %s", format_procedure(found),
                           found == F_SET_CONFIG ? "a function that changes the writer's session" : "volatile"),
                    errdetail("A captured value must be a function of the row alone, the same each time it is computed "
                              "(an UPDATE removes the old value it computes again)."),
                    errhint("Use only immutable or stable functions in track_fields, computed_fields and filters.")));
}

namespace {

// Which columns of the derived table standing for the source row (range
// table entry 1 of `row_query`) a join filter reads.
struct RowColumns {
  Query* row_query;
  int depth;  // queries entered below row_query
  Bitmapset* used;
  bool all;  // a whole-row reference, or a column merged by JOIN USING
};

bool row_columns_walker(Node* node, RowColumns* c) {
  if (!node) return false;
  if (IsA(node, Var)) {
    const Var* v = castNode(Var, node);
    if (static_cast<int>(v->varlevelsup) != c->depth) return false;
    const RangeTblEntry* rte = rt_fetch(v->varno, c->row_query->rtable);
    if (rte->rtekind == RTE_JOIN)
      c->all = true;
    else if (v->varno == 1)
      c->used = v->varattno > 0 ? bms_add_member(c->used, v->varattno) : (c->all = true, c->used);
    return false;
  }
  if (IsA(node, Query)) {
    c->depth++;
    const bool r = query_tree_walker(castNode(Query, node), (bool (*)())row_columns_walker, c, QTW_IGNORE_JOINALIASES);
    c->depth--;
    return r;
  }
  return expression_tree_walker(node, (bool (*)())row_columns_walker, c);
}

}  // namespace

namespace {

bool row_security_walker(Node* node, Oid* found) {
  if (!node) return false;
  if (IsA(node, RangeTblEntry)) {
    const auto* rte = castNode(RangeTblEntry, node);
    if (rte->rtekind == RTE_RELATION) {
      HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rte->relid));
      if (HeapTupleIsValid(tup)) {
        const bool rls = ((Form_pg_class)GETSTRUCT(tup))->relrowsecurity;
        ReleaseSysCache(tup);
        if (rls) {
          *found = rte->relid;
          return true;
        }
      }
    }
    return false;
  }
  if (IsA(node, Query))
    return query_tree_walker(castNode(Query, node), (bool (*)())row_security_walker, found, QTW_EXAMINE_RTES_BEFORE);
  return expression_tree_walker(node, (bool (*)())row_security_walker, found);
}

}  // namespace

Oid row_security_relation(Query* q) {
  Oid found = InvalidOid;
  row_security_walker(reinterpret_cast<Node*>(q), &found);
  return found;
}

Bitmapset* join_filter_reads(Query* q, const char* alias) {
  // SELECT EXISTS (<row_query>): see trigger_gen::join_filter_sql.
  const auto* te = linitial_node(TargetEntry, q->targetList);
  Query* row_query = IsA(te->expr, SubLink) ? castNode(Query, castNode(SubLink, te->expr)->subselect) : nullptr;
  if (!row_query || row_query->rtable == NIL || rt_fetch(1, row_query->rtable)->rtekind != RTE_SUBQUERY ||
      strcmp(rt_fetch(1, row_query->rtable)->eref->aliasname, alias) != 0)
    elog(ERROR, "bitdex_sync: the join filter query does not have the shape it was built with");
  RowColumns c{row_query, 0, nullptr, false};
  query_tree_walker(row_query, (bool (*)())row_columns_walker, &c, QTW_IGNORE_JOINALIASES);
  if (c.all) {
    const int n = list_length(castNode(Query, rt_fetch(1, row_query->rtable)->subquery)->targetList);
    for (int i = 1; i <= n; i++) c.used = bms_add_member(c.used, i);
  }
  return c.used;
}

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
  refuse_volatile(reinterpret_cast<Node*>(q->targetList));
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

// What a capture definition may run: code that only trusted roles can
// write or change. Trusted: superusers, the role applying the config, and
// the captured table's owner (who can already run any code as that table's
// writers, with a trigger of its own).
struct TrustCheck {
  Oid applier, table_owner;
  char* why;         // the first thing that is not trusted, described
  List* seen = NIL;  // views and atomic bodies already walked (a view's range table names itself)
};

bool trust_walker(Node* node, TrustCheck* c);

bool trusted(const TrustCheck* c, Oid role) {
  return role == c->applier || role == c->table_owner || superuser_arg(role);
}

const char* role_name(Oid role) {
  const char* n = GetUserNameFromId(role, true);
  return n ? n : "?";
}

// Whether nobody but trusted roles can create objects in schema `nsp`
// (PUBLIC included): then names resolved in it stay what they were.
bool schema_closed(const TrustCheck* c, const char* nsp) {
  if (strcmp(nsp, "pg_catalog") == 0) return true;
  if (strcmp(nsp, "$user") == 0 || strcmp(nsp, "pg_temp") == 0) return false;  // the caller's own
  Oid oid = get_namespace_oid(nsp, true);
  if (!OidIsValid(oid)) return false;  // could be created later by anyone with CREATE on the database
  HeapTuple tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(oid));
  if (!HeapTupleIsValid(tup)) return false;
  auto* form = (Form_pg_namespace)GETSTRUCT(tup);
  bool isnull;
  Datum acl_datum = SysCacheGetAttr(NAMESPACEOID, tup, Anum_pg_namespace_nspacl, &isnull);
  Acl* acl = isnull ? acldefault(OBJECT_SCHEMA, form->nspowner) : DatumGetAclPCopy(acl_datum);
  bool closed = trusted(c, form->nspowner);
  const AclItem* items = ACL_DAT(acl);
  for (int i = 0; closed && i < ACL_NUM(acl); i++)
    if ((items[i].ai_privs & ACL_CREATE) && (items[i].ai_grantee == ACL_ID_PUBLIC || !trusted(c, items[i].ai_grantee)))
      closed = false;
  ReleaseSysCache(tup);
  return closed;
}

// A function runs what its owner wrote; one whose body names things at run
// time (SQL or PL without BEGIN ATOMIC) also runs whatever those names then
// resolve to: it needs a SET search_path of schemas only trusted roles can
// create in.
bool function_untrusted(Oid func, void* arg) {
  auto* c = static_cast<TrustCheck*>(arg);
  HeapTuple tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(func));
  if (!HeapTupleIsValid(tup)) elog(ERROR, "bitdex_sync: cache lookup failed for function %u", func);
  auto* proc = (Form_pg_proc)GETSTRUCT(tup);
  const Oid owner = proc->proowner, lang = proc->prolang, nsp = proc->pronamespace;
  bool no_body_tree = true, config_null = true;
  SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosqlbody, &no_body_tree);
  Datum config = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_proconfig, &config_null);
  char* path = nullptr;
  if (!config_null) {
    ArrayType* arr = DatumGetArrayTypeP(config);
    Datum* items;
    int n;
    deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &items, nullptr, &n);
    for (int i = 0; i < n; i++) {
      char* item = TextDatumGetCString(items[i]);
      if (strncmp(item, "search_path=", 12) == 0) path = item + 12;
    }
  }
  if (!trusted(c, owner)) {
    ReleaseSysCache(tup);
    c->why = psprintf(
        "function %s is owned by role \"%s\", which is neither a superuser, the role applying the "
        "config nor the owner of the table",
        format_procedure_qualified(func), role_name(owner));
    return true;
  }
  if (!no_body_tree) {
    // BEGIN ATOMIC: the body was resolved when the function was made; what
    // it calls must be trusted as well.
    bool isnull;
    char* body = TextDatumGetCString(SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosqlbody, &isnull));
    ReleaseSysCache(tup);
    if (list_member_oid(c->seen, func)) return false;
    c->seen = lappend_oid(c->seen, func);
    return trust_walker(static_cast<Node*>(stringToNode(body)), c);
  }
  ReleaseSysCache(tup);
  if (lang == INTERNALlanguageId || lang == ClanguageId || nsp == PG_CATALOG_NAMESPACE) return false;
  bool closed = path != nullptr;
  if (path) {
    List* names = NIL;
    char* copy = pstrdup(path);
    if (!SplitIdentifierString(copy, ',', &names)) closed = false;
    ListCell* lc;
    foreach (lc, names) closed = closed && schema_closed(c, static_cast<char*>(lfirst(lc)));
  }
  if (closed) return false;
  c->why =
      psprintf("function %s resolves the names in its body when it runs, %s", format_procedure_qualified(func),
               path ? psprintf("with search_path = %s, in which roles that are not trusted may create objects", path)
                    : "in the search_path of whoever writes to the table");
  return true;
}

// A relation a fan-out query reads: its owner's code (a view's definition,
// row security policies) runs as the writer.
bool relation_untrusted(Oid relid, TrustCheck* c) {
  HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
  if (!HeapTupleIsValid(tup)) return false;
  auto* rel = (Form_pg_class)GETSTRUCT(tup);
  const Oid owner = rel->relowner;
  const char kind = rel->relkind;
  ReleaseSysCache(tup);
  if (list_member_oid(c->seen, relid)) return false;
  c->seen = lappend_oid(c->seen, relid);
  if (!trusted(c, owner)) {
    c->why = psprintf(
        "%s %s is owned by role \"%s\", which is neither a superuser, the role applying the config "
        "nor the owner of the table (its definition or row security runs as the writer)",
        kind == RELKIND_VIEW ? "view" : "relation", get_rel_name(relid), role_name(owner));
    return true;
  }
  if (kind != RELKIND_VIEW) return false;
  Relation view = relation_open(relid, AccessShareLock);
  Query* q = static_cast<Query*>(copyObjectImpl(get_view_query(view)));
  relation_close(view, AccessShareLock);
  return trust_walker(reinterpret_cast<Node*>(q), c);
}

bool trust_walker(Node* node, TrustCheck* c) {
  if (!node) return false;
  if (check_functions_in_node(node, function_untrusted, c)) return true;
  if (IsA(node, CoerceToDomain)) {
    // A domain's CHECK constraints are its owner's code, run on each value.
    const Oid domain = castNode(CoerceToDomain, node)->resulttype;
    HeapTuple tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(domain));
    const Oid owner = HeapTupleIsValid(tup) ? ((Form_pg_type)GETSTRUCT(tup))->typowner : InvalidOid;
    if (HeapTupleIsValid(tup)) ReleaseSysCache(tup);
    if (OidIsValid(owner) && !trusted(c, owner)) {
      c->why = psprintf(
          "domain %s is owned by role \"%s\", which is neither a superuser, the role applying the config "
          "nor the owner of the table",
          format_type_be(domain), role_name(owner));
      return true;
    }
  }
  if (IsA(node, RangeTblEntry)) {
    auto* rte = castNode(RangeTblEntry, node);
    return rte->rtekind == RTE_RELATION && relation_untrusted(rte->relid, c);
  }
  if (IsA(node, Query)) return query_tree_walker((Query*)node, (bool (*)())trust_walker, c, QTW_EXAMINE_RTES_BEFORE);
  return expression_tree_walker(node, (bool (*)())trust_walker, c);
}

}  // namespace

char* untrusted_code(Node* tree, Oid applier, Oid table_owner) {
  TrustCheck c{applier, table_owner, nullptr, NIL};
  if (IsA(tree, Query))
    (void)query_tree_walker((Query*)tree, (bool (*)())trust_walker, &c, QTW_EXAMINE_RTES_BEFORE);
  else
    (void)trust_walker(tree, &c);
  return c.why;
}

}  // namespace bitdex::pg
