// Capture definitions on the PostgreSQL side: analysing them once at
// apply_config (src/pg/capture_analyze.cpp), and running a stored fan-out
// query from the capture trigger (src/pg/stored_query.cpp). C-style: these
// run PostgreSQL code and may ereport.
#pragma once

#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "nodes/execnodes.h"
#include "nodes/parsenodes.h"
#include "utils/relcache.h"
}

namespace bitdex::pg {

// How a value of a given type becomes an op value.
enum class Conv : uint8_t { Int2, Int4, Int8, Bool, Text, Name, Output, Number, DateTime, Unsupported };

// Conversion for a result type (domains resolved); Unsupported when the type
// cannot be captured.
Conv conv_for_type(Oid type);

// Parses `select_list` (comma-separated SQL expressions over the columns of
// `relid`) as "SELECT <list> FROM ONLY <relid>" with search_path pinned to
// pg_catalog, public, pg_temp and returns the analysed query (its target
// list holds the expressions in order; its range table has the table at
// varno 1). Errors (syntax, unknown column or function, subqueries,
// aggregates) are ereported.
Query* analyze_select(Oid relid, const char* select_list);
// The target expressions of analyze_select (a List of Expr*).
List* analyze_expressions(Oid relid, const char* select_list);
// Parses and analyses a plain SELECT with parameters $1..$n of `types`,
// search_path pinned as above.
Query* analyze_query(const char* sql, Oid* types, int ntypes);
// A table with row level security enabled that query `q` reads (views are
// not expanded: their own tables are checked when they are planned), or
// InvalidOid.
Oid row_security_relation(Query* q);
// Refuses (ereport) a tree that calls a volatile function or set_config.
void refuse_volatile(Node* tree);
// The columns (1-based positions) of the derived table `alias` standing for
// the source row that the analysed join filter query `q` reads
// (trigger_gen::join_filter_sql); all of them for a whole-row reference.
Bitmapset* join_filter_reads(Query* q, const char* alias);

// What in `tree` (an expression or a Query) runs code that a role other than
// a superuser, `applier` or `table_owner` wrote or can still change, as a
// palloc'd description; nullptr when nothing does. Capture runs it as
// whoever writes to the captured table. Looked at: the owners of functions
// (and, for functions whose body resolves names when it runs, the schemas of
// their pinned search_path), of domains, of the relations and views a query
// reads (views' definitions too).
char* untrusted_code(Node* tree, Oid applier, Oid table_owner);
Oid function_owner(Oid func);

// The owner of the extension's tables (bitdex_sync.ops): outbox rows and
// bitdex_sync's bookkeeping are written as this role.
Oid extension_owner();

// The user to return to after running as the extension's owner.
struct UserContext {
  Oid user;
  int sec;
};
// Runs what follows as the extension's owner, as a security-restricted
// operation (no SET ROLE, no temporary objects), until leave_owner(). On an
// error, transaction abort restores the user.
UserContext enter_owner();
void leave_owner(const UserContext& was);

// This installation of the extension in the database (bitdex_sync.instance.id,
// random, made by CREATE EXTENSION): it names the ops WAL the worker writes.
uint64 extension_instance();

// True while apply_config runs its own DDL (the capture guard lets it pass).
extern bool g_applying_config;
// bitdex_sync.allow_capture_loss: the guard records a gap instead of refusing.
extern bool g_allow_capture_loss;
// Records in bitdex_sync.capture_gaps every recorded capture trigger that is
// gone or does not fire always and has no open gap yet (SPI connected, as
// the extension's owner); WARNING per gap when `log`. Returns how many.
int record_capture_gaps(const char* detected_by, bool log);
// Before a utility command runs: refuses a TRUNCATE that a source would not
// capture (a partition of a captured partitioned table truncated without
// it, a source whose TRUNCATE trigger is missing or disabled), and ATTACH or
// DETACH of a partition holding rows on a captured partitioned table: they
// change rows without firing capture (bitdex_sync.allow_capture_loss
// records a gap).
void guard_utility(Node* stmt);
// Records a TRUNCATE of `relid` let through without its clear (the source
// shares a field) as a capture gap of `source`, with a WARNING.
void record_truncate_gap(const char* source, Oid relid, const char* trigger);

// Emits a clear record (capture_format: `message` with a zero tag; `json`
// for the outbox) in the current transaction, as a signed logical message
// or, with `outbox`, as a row of bitdex_sync.ops.
void emit_clear(const char* message, int len, const char* json, bool outbox);

// ---- loads (the worker, src/pg/load_runner.cpp) ----------------------------
// Where load_row puts each record: entity and ops payload (ops_codec).
struct LoadSink {
  void (*record)(void* arg, int64 entity, const char* ops, int len);
  void* arg;
};
// The compiled source recorded for capture trigger `tgoid` (a source's row
// trigger), for rows in the layout of `rel` (the recorded table); nullptr
// when bitdex_sync.sources has nothing for it.
void* load_source(Oid tgoid, Relation rel);
// The slot column's number in the recorded table (0 when it is not a plain column).
int load_source_slot_column(void* source);
// The records an INSERT of `row` would capture, to `sink` (stored fan-out
// queries run as the current user in the active snapshot). May ereport;
// then call load_reset().
void load_row(void* source, TupleTableSlot* row, LoadSink* sink);
void load_reset();
// The ExecutorFinish hook that holds a statement's arrivals (capture records
// of rows arriving in a slot) until its row triggers have all fired.
void install_executor_hook();

// A stored fan-out query, planned once per backend and planned again after
// an invalidation of a relation it reads or of any function; run with the
// current user's rights (the writer's), in the active snapshot.
struct StoredQuery {
  Query* query;  // analysed, not rewritten (views expand at each planning)
  MemoryContext cxt;
  struct PlannedStmt* plan;  // nullptr: plan at the next run
  List* relations;           // OIDs the plan depends on
};

// Runs `q` with parameters values[i] (nulls[i]) of types[i]; for each
// result row calls row(slot, arg) until it returns false, in the caller's
// memory context (what it allocates outlives the run).
void run_stored_query(StoredQuery* q, int nparams, Oid* types, Datum* values, bool* nulls,
                      bool (*row)(TupleTableSlot* slot, void* arg), void* arg);
// Relation (InvalidOid: any) or function definitions changed: plans that
// may depend on them are planned again at their next run.
void invalidate_stored_query(StoredQuery* q, Oid relid);

}  // namespace bitdex::pg
