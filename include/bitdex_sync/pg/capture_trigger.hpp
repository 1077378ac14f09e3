// The capture trigger's internals, shared by its files (src/pg/capture_*.cpp):
// the compiled form of a source (capture_compile.cpp), the op buffers and
// value encoding (capture_value.cpp), emitting records (capture_emit.cpp),
// fan-in and fan-outs (capture_fan.cpp) and the trigger itself
// (capture_trigger.cpp). Not for other code: capture.hpp is the interface.
#pragma once

#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/pg/capture.hpp"
#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/bitmapset.h"
}

namespace bitdex::pg::trigger {

using bitdex::OpKind;
using bitdex::OpValue;
using bitdex::config::SourceKind;

struct Compiled {     // one expression
  AttrNumber attnum;  // > 0: a plain column, read from the slot
  ExprState* state;   // otherwise
  Oid type;
  Conv conv;
  int16 typlen;
  bool typbyval;
  Bitmapset* cols;  // columns it reads, offset by FirstLowInvalidHeapAttributeNumber
  bool always;      // volatile or whole-row: may change whatever the UPDATE touched
  FmgrInfo out;     // output function (Output, Number)
};

struct Field {
  const char* target;
  Compiled value;
  Compiled cond;  // join computed fields: the condition
};

// A direct source's rows are the children of a query fan-out "F eq {col}":
// a row arriving under a parent (INSERT, or a change of F) takes the
// parent's fields (trigger_gen::fan_in_sql, $1 = F's value).
struct FanIn {
  int field;  // index of F in the source's fields
  StoredQuery* query;
  Oid lock;          // the parent table: key locks (lock_key)
  FmgrInfo key_out;  // F's output function: the key's text
  int ncols;
  Compiled* cols;  // how each result column is written (its type)
  const char** targets;
};

struct Source {
  Oid tgoid;  // the firing trigger (a partition's clone of the recorded one, or that one)
  Oid relid;
  bool valid;
  SourceKind kind;
  bool outbox;
  bool alive, del;
  Compiled slot;
  int nfields;
  Field* fields;    // direct, fan-out: tracked fields; join: [0] = the value, then computed
  bool has_filter;  // join
  Compiled filter;
  const char* query;  // fan-out template
  int nqcols;
  Compiled* qcols;   // one per column placeholder, in order ({ids} excluded)
  StoredQuery* ids;  // fan-out with expression: the query computing {ids}
  int nids;
  Compiled* ids_params;      // its $1..$n
  StoredQuery* join_filter;  // query fan-out with "join", no "expression": whether a row counts
  int njf;
  Compiled* jf_params;  // its $1..$n: the row's columns it reads
  StoredQuery* rows;    // fan_out_per_row: child slots for a parent key ($1)
  int nfan_ins;
  FanIn* fan_ins;   // direct
  Oid fan_in_lock;  // a query fan-out with a fan-in: its table (key locks, lock_key)
  Compiled parent_key;
  MemoryContext cxt;
  ExprContext* econtext;
  Source* next;
};

// Appends to a StringInfo: the byte sink of the shared codec writers.
struct InfoOut {
  StringInfo si;
  void append(const char* p, size_t n) { appendBinaryStringInfo(si, p, static_cast<int>(n)); }
};

// ---- the row being captured: op buffers (capture_value.cpp), a load's sink (capture_emit.cpp)

extern StringInfoData g_ops, g_record, g_a, g_b;
extern int g_nops;
extern const Bitmapset* g_updated;
extern LoadSink* g_load_sink;

// ---- shared functions ----------------------------------------------------------

bool cond_true(Source* s, Compiled* c, TupleTableSlot* row);
bool distinct(Compiled* c, Datum a, bool anull, Datum b, bool bnull);
void emit(Source* s, int64 entity_id);
void emit_arrival(Source* s, int64 entity_id);
void emit_keep(Source* s, int64 entity_id);
Datum eval(Source* s, Compiled* c, TupleTableSlot* slot, bool* isnull);
void fan_in_ops(Source* s, OpKind kind, TupleTableSlot* row, int only = -1);
void fan_out_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow);
Source* get_source(TriggerData* td);
void init_buffers();
bool may_change(const Compiled* c);
void op_field(OpKind kind, const char* target, Compiled* c, Datum d, bool isnull);
void op_plain(OpKind kind);
void output_function(Oid type, FmgrInfo* out, MemoryContext cxt);
void put_value(InfoOut& out, Compiled* c, Datum d, bool isnull);
bool recorded_row(Oid tgoid, const char* match, Oid* table, int ncols, const char* const* cols, char** out);
void row_fan_out_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow);
int64 slot_of(Source* s, TupleTableSlot* row);
Source* source_for(Oid tgoid, Oid recorded, Relation rel);

}  // namespace bitdex::pg::trigger
