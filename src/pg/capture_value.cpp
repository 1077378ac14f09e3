// The capture trigger, values: the op buffers of the row being captured, a
// column's or expression's value encoded as the ops WAL writes it
// (capture_format.hpp), whether a value changed; and bitdex_sync.op_value()
// and op_value_text(), the same conversion for SQL (verify reads with it).
#include <cstring>
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/core/json.hpp"
#include "bitdex_sync/core/ops_codec.hpp"
#include "bitdex_sync/pg/capture_trigger.hpp"
#include "bitdex_sync/pg/capture_key.hpp"
#include "bitdex_sync/pg/compat.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"
#include "bitdex_sync/pg/wall.hpp"

#include <cstring>

extern "C" {
#include "access/attmap.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_trigger.h"
#include "rewrite/rewriteManip.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "access/sysattr.h"
#include "nodes/bitmapset.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "replication/message.h"
#include "rewrite/rewriteHandler.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "common/hashfn.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/typcache.h"
}

extern "C" {
PG_FUNCTION_INFO_V1(bitdex_sync_op_value);
PG_FUNCTION_INFO_V1(bitdex_sync_op_value_text);
Datum bitdex_sync_op_value(PG_FUNCTION_ARGS);
Datum bitdex_sync_op_value_text(PG_FUNCTION_ARGS);
}

namespace bitdex::pg::trigger {

// ---- per row -----------------------------------------------------------------

Datum eval(Source* s, Compiled* c, TupleTableSlot* slot, bool* isnull) {
  if (c->attnum > 0) return slot_getattr(slot, c->attnum, isnull);
  s->econtext->ecxt_scantuple = slot;
  return ExecEvalExprSwitchContext(c->state, s->econtext, isnull);
}

int64 as_int(Compiled* c, Datum d) {
  switch (c->conv) {
    case Conv::Int2: return DatumGetInt16(d);
    case Conv::Int4: return DatumGetInt32(d);
    default: return DatumGetInt64(d);
  }
}

// Appends the op value for (d, isnull) of type c.
void put_value(InfoOut& out, Compiled* c, Datum d, bool isnull) {
  using bitdex::codec::write_byte;
  if (isnull) {
    write_byte(out, static_cast<uint8_t>(OpValue::Kind::Null));
    return;
  }
  switch (c->conv) {
    case Conv::Int2:
    case Conv::Int4:
    case Conv::Int8: bitdex::codec::write_int_value(out, as_int(c, d)); return;
    case Conv::Bool:
      write_byte(out, static_cast<uint8_t>(DatumGetBool(d) ? OpValue::Kind::True : OpValue::Kind::False));
      return;
    case Conv::Text: {
      text* t = DatumGetTextPP(d);
      bitdex::codec::write_text_value(out, OpValue::Kind::String, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
      if ((Pointer)t != DatumGetPointer(d)) pfree(t);
      return;
    }
    case Conv::Name: {
      const char* n = NameStr(*DatumGetName(d));
      bitdex::codec::write_text_value(out, OpValue::Kind::String, n, strlen(n));
      return;
    }
    case Conv::DateTime: {
      // The text to_jsonb() gives, except that timestamptz is always in UTC
      // so the value key does not depend on the writer's TimeZone setting.
      char buf[MAXDATELEN + 1];
      const int utc = 0;
      JsonEncodeDateTime(buf, d, c->type == TIMESTAMPTZOID || c->type == TIMETZOID ? c->type : getBaseType(c->type),
                         &utc);
      bitdex::codec::write_text_value(out, OpValue::Kind::String, buf, strlen(buf));
      return;
    }
    case Conv::Number: {
      char* s = OutputFunctionCall(&c->out, d);
      // A float printed with an exponent (1e+20, 2.5e-300) is written as
      // numeric prints it (100000000000000000000, 0.000…25), as to_jsonb
      // stores it: one value, one text, whichever the sink (numeric itself
      // never prints an exponent; NaN and the infinities have no 'e').
      if (strpbrk(s, "eE")) {
        Datum n = DirectFunctionCall3(numeric_in, CStringGetDatum(s), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
        pfree(s);
        s = DatumGetCString(DirectFunctionCall1(numeric_out, n));
      }
      // NaN and infinities are not JSON numbers; to_jsonb gives them as strings.
      bool number = (s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) && strcmp(s, "-Infinity") != 0;
      // A whole number is the same value as an integer column's (the same
      // JSON, the same index key): numeric 12 and int 12 must not differ.
      int64_t whole;
      if (number && bitdex::canonical_int(s, whole))
        bitdex::codec::write_int_value(out, whole);
      else
        bitdex::codec::write_text_value(out, number ? OpValue::Kind::Json : OpValue::Kind::String, s, strlen(s));
      pfree(s);
      return;
    }
    default: {
      char* s = OutputFunctionCall(&c->out, d);
      bitdex::codec::write_text_value(out, OpValue::Kind::String, s, strlen(s));
      pfree(s);
      return;
    }
  }
}

// Per-row buffers, reused: the ops of one record, the record, the scratch for
// comparing values.
StringInfoData g_ops, g_record, g_a, g_b;
int g_nops;

void init_buffers() {
  if (g_ops.data) return;
  MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
  initStringInfo(&g_ops);
  initStringInfo(&g_record);
  initStringInfo(&g_a);
  initStringInfo(&g_b);
  MemoryContextSwitchTo(old);
}

void op_field(OpKind kind, const char* target, Compiled* c, Datum d, bool isnull) {
  InfoOut out{&g_ops};
  bitdex::codec::write_field_op(out, kind, target, strlen(target));
  put_value(out, c, d, isnull);
  g_nops++;
}

void op_plain(OpKind kind) {
  InfoOut out{&g_ops};
  bitdex::codec::write_byte(out, static_cast<uint8_t>(kind));
  g_nops++;
}

// The columns the current UPDATE assigned, when that is all that can have
// changed (no BEFORE UPDATE row trigger on the table); nullptr otherwise.
const Bitmapset* g_updated = nullptr;

// False only when an UPDATE certainly left every column `c` reads alone, so
// its value is the same on OLD and NEW and need not be evaluated at all.
bool may_change(const Compiled* c) {
  return !g_updated || c->always || bms_overlap(c->cols, g_updated);
}

// True when the two values would be different op values (IS DISTINCT FROM
// on what the index sees).
bool distinct(Compiled* c, Datum a, bool anull, Datum b, bool bnull) {
  if (anull || bnull) return anull != bnull;
  if (datum_image_eq(a, b, c->typbyval, c->typlen)) return false;
  resetStringInfo(&g_a);
  resetStringInfo(&g_b);
  InfoOut oa{&g_a}, ob{&g_b};
  put_value(oa, c, a, false);
  put_value(ob, c, b, false);
  return g_a.len != g_b.len || memcmp(g_a.data, g_b.data, g_a.len) != 0;
}

int64 slot_of(Source* s, TupleTableSlot* row) {
  bool isnull;
  Datum d = eval(s, &s->slot, row, &isnull);
  if (isnull)
    ereport(ERROR,
            (errcode(ERRCODE_NOT_NULL_VIOLATION), errmsg("bitdex_sync: the slot column of a captured row is NULL"),
             errhint("Every captured row needs a slot id.")));
  return as_int(&s->slot, d);
}

bool cond_true(Source* s, Compiled* c, TupleTableSlot* row) {
  bool isnull;
  Datum d = eval(s, c, row, &isnull);
  return !isnull && DatumGetBool(d);
}

}  // namespace bitdex::pg::trigger

namespace bitdex::pg {
using namespace trigger;
namespace {

std::string* g_value_json = nullptr;  // static-lifetime scratch

// The JSON of the one value in an encoded single-op payload.
char g_value_error[256];

bool value_json(const char* data, int len) noexcept {
  return run_cpp(
      [&] {
        if (!g_value_json) g_value_json = new std::string();
        g_value_json->clear();
        std::vector<bitdex::Op> ops = bitdex::codec::decode_ops(reinterpret_cast<const uint8_t*>(data), len);
        ops.at(0).value.write_json(*g_value_json);
        return true;
      },
      g_value_error, sizeof g_value_error);
}

}  // namespace
}  // namespace bitdex::pg

namespace bitdex::pg {
using namespace trigger;
namespace {

// The argument's conversion, looked up once per call site (fn_extra) and
// reused for every row: verify calls op_value once per row and field.
Compiled* op_value_conversion(FunctionCallInfo fcinfo) {
  Oid type = get_fn_expr_argtype(fcinfo->flinfo, 0);
  if (!OidIsValid(type))
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("bitdex_sync.op_value: cannot tell the argument type")));
  auto* c = static_cast<Compiled*>(fcinfo->flinfo->fn_extra);
  if (c && c->type == type) return c;
  c = static_cast<Compiled*>(MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(Compiled)));
  c->type = type;
  c->conv = conv_for_type(type);
  if (c->conv == Conv::Unsupported)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("values of type %s cannot be captured", format_type_be(type))));
  get_typlenbyval(type, &c->typlen, &c->typbyval);
  if (c->conv == Conv::Output || c->conv == Conv::Number) output_function(type, &c->out, fcinfo->flinfo->fn_mcxt);
  fcinfo->flinfo->fn_extra = c;
  return c;
}

// The argument encoded as the trigger encodes a value, then as JSON text.
const char* op_value_json(FunctionCallInfo fcinfo) {
  Compiled* c = op_value_conversion(fcinfo);
  StringInfoData buf;
  initStringInfo(&buf);
  InfoOut out{&buf};
  bitdex::codec::write_varint(out, 1);
  bitdex::codec::write_field_op(out, OpKind::Set, "v", 1);
  put_value(out, c, PG_ARGISNULL(0) ? (Datum)0 : PG_GETARG_DATUM(0), PG_ARGISNULL(0));
  if (!value_json(buf.data, buf.len))
    elog(ERROR, "bitdex_sync.op_value: could not encode the value: %s", g_value_error);
  pfree(buf.data);
  return g_value_json->c_str();
}

}  // namespace
}  // namespace bitdex::pg

// bitdex_sync.op_value(anyelement) -> jsonb: the value as the capture trigger
// encodes it (same conversion code), for shared_ops_fields helpers.
Datum bitdex_sync_op_value(PG_FUNCTION_ARGS) {
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(bitdex::pg::op_value_json(fcinfo))));
}

// bitdex_sync.op_value_text(anyelement) -> text: the same value as compact
// JSON text, without the jsonb round trip (verify reads millions of them).
Datum bitdex_sync_op_value_text(PG_FUNCTION_ARGS) {
  PG_RETURN_TEXT_P(cstring_to_text(bitdex::pg::op_value_json(fcinfo)));
}
