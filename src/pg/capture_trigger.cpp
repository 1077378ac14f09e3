// The capture trigger: one C function, bitdex_sync.capture(), behind every
// trigger apply_config creates. At the first row in a backend it compiles the
// definition apply_config recorded for the firing trigger
// (capture_compile.cpp; a trigger that was not recorded is refused). Per row
// it evaluates the source's values on OLD/NEW (capture_value.cpp), builds the
// BitDex ops of a direct or join row here, of a fan-in or fan-out in
// capture_fan.cpp, and emits them (capture_emit.cpp). Also TRUNCATE (a clear
// record) and the rows of loads (load_row).
//
// Wall: everything here runs inside PostgreSQL's executor and may ereport at
// any call, so the functions called per row hold no C++ objects with
// destructors.
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
PG_FUNCTION_INFO_V1(bitdex_sync_capture);
Datum bitdex_sync_capture(PG_FUNCTION_ARGS);
}

namespace bitdex::pg::trigger {

void direct_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  if (TRIGGER_FIRED_BY_DELETE(ev)) {
    if (!s->del) return;
    op_plain(OpKind::Delete);
    emit(s, slot_of(s, oldrow));
    return;
  }
  bool isnull;
  if (TRIGGER_FIRED_BY_UPDATE(ev)) {
    int64 old_id = slot_of(s, oldrow), new_id = slot_of(s, newrow);
    if (old_id == new_id) {
      for (int i = 0; i < s->nfields; i++) {
        Field* f = &s->fields[i];
        if (!may_change(&f->value)) continue;
        bool onull, nnull;
        Datum o = eval(s, &f->value, oldrow, &onull);
        Datum n = eval(s, &f->value, newrow, &nnull);
        if (!distinct(&f->value, o, onull, n, nnull)) continue;
        op_field(OpKind::Remove, f->target, &f->value, o, onull);
        op_field(OpKind::Set, f->target, &f->value, n, nnull);
        // Moved to another parent: the old one's fields go, the new one's come.
        if (s->nfan_ins > 0) {
          fan_in_ops(s, OpKind::Remove, oldrow, i);
          fan_in_ops(s, OpKind::Set, newrow, i);
        }
      }
      emit(s, new_id);
      return;
    }
    // The row moved to another slot: it leaves the old one...
    if (s->del) {
      op_plain(OpKind::Delete);
    } else {
      for (int i = 0; i < s->nfields; i++) {
        Datum o = eval(s, &s->fields[i].value, oldrow, &isnull);
        op_field(OpKind::Remove, s->fields[i].target, &s->fields[i].value, o, isnull);
      }
      fan_in_ops(s, OpKind::Remove, oldrow);
    }
    emit(s, old_id);
    // ...and arrives in the new one as an INSERT would.
  }
  if (s->alive) op_plain(OpKind::Alive);
  for (int i = 0; i < s->nfields; i++) {
    Datum n = eval(s, &s->fields[i].value, newrow, &isnull);
    op_field(OpKind::Set, s->fields[i].target, &s->fields[i].value, n, isnull);
  }
  fan_in_ops(s, OpKind::Set, newrow);
  emit_arrival(s, slot_of(s, newrow));
}

// What a join row contributes: per field (0 = the main value, then computed
// fields) whether it is present and its value.
struct JoinSide {
  bool present;
  Datum value;
  bool isnull;
};

void join_side(Source* s, TupleTableSlot* row, JoinSide* out) {
  bool pass = !s->has_filter || cond_true(s, &s->filter, row);
  for (int i = 0; i < s->nfields; i++) {
    Field* f = &s->fields[i];
    // The filter decides the main value only; a computed field has its own condition.
    out[i].present = i == 0 ? pass : cond_true(s, &f->cond, row);
    if (out[i].present) out[i].value = eval(s, &f->value, row, &out[i].isnull);
  }
}

void join_row(Source* s, TriggerEvent ev, TupleTableSlot* oldrow, TupleTableSlot* newrow) {
  if (oldrow && newrow && g_updated) {  // an UPDATE that touched nothing this source reads
    bool any = may_change(&s->slot) || (s->has_filter && may_change(&s->filter));
    for (int i = 0; i < s->nfields && !any; i++)
      any = may_change(&s->fields[i].value) || (i > 0 && may_change(&s->fields[i].cond));
    if (!any) return;
  }
  JoinSide* olds = (JoinSide*)palloc0(sizeof(JoinSide) * s->nfields);
  JoinSide* news = (JoinSide*)palloc0(sizeof(JoinSide) * s->nfields);
  int64 old_id = 0, new_id = 0;
  if (oldrow) {
    old_id = slot_of(s, oldrow);
    join_side(s, oldrow, olds);
  }
  if (newrow) {
    new_id = slot_of(s, newrow);
    join_side(s, newrow, news);
  }
  // An UPDATE that keeps slot, value and filter outcome captures nothing.
  bool same_slot = oldrow && newrow && old_id == new_id;
  bool* skip = (bool*)palloc0(sizeof(bool) * s->nfields);
  for (int i = 0; i < s->nfields; i++) {
    Field* f = &s->fields[i];
    skip[i] = same_slot && olds[i].present == news[i].present &&
              (!olds[i].present || !distinct(&f->value, olds[i].value, olds[i].isnull, news[i].value, news[i].isnull));
  }
  for (int i = 0; i < s->nfields; i++)
    if (olds[i].present && !skip[i])
      op_field(OpKind::Remove, s->fields[i].target, &s->fields[i].value, olds[i].value, olds[i].isnull);
  if (!same_slot) emit(s, old_id);
  for (int i = 0; i < s->nfields; i++)
    if (news[i].present && !skip[i])
      op_field(OpKind::Add, s->fields[i].target, &s->fields[i].value, news[i].value, news[i].isnull);
  if (newrow && !same_slot)
    emit_arrival(s, new_id);
  else
    emit(s, newrow ? new_id : old_id);
  pfree(olds);
  pfree(news);
  pfree(skip);
}

// ---- TRUNCATE ------------------------------------------------------------------

// A recorded TRUNCATE trigger's spec, parsed: the clear message (zero tag),
// its JSON for the outbox, whether it goes to the outbox, and why a TRUNCATE
// is refused (empty: captured). Static storage: filled under run_cpp.
struct TruncateSpec {
  std::string message, json, refuse;
  bool outbox = false;
};
TruncateSpec* g_truncate = nullptr;
char g_truncate_error[256];

bool parse_truncate_spec(const char* text) noexcept {
  return run_cpp(
      [&] {
        if (!g_truncate) g_truncate = new TruncateSpec();
        const bitdex::json::Value v = bitdex::json::parse(text);
        const bitdex::json::Value* clear = v.find("clear");
        const bitdex::json::Value* sink = v.find("sink");
        if (!clear || !sink || sink->type != bitdex::json::Type::String)
          throw bitdex::Error(bitdex::ErrorKind::InvalidInput, "the TRUNCATE spec lacks \"clear\" or \"sink\"");
        const bitdex::Clear c = bitdex::parse_clear(*clear, "TRUNCATE spec");
        g_truncate->message = bitdex::capture::clear_message(c);
        g_truncate->json = "{\"clear\":";
        bitdex::write_clear_json(g_truncate->json, c);
        g_truncate->json += "}";
        g_truncate->outbox = sink->text == "outbox";
        const bitdex::json::Value* refuse = v.find("refuse");
        g_truncate->refuse = refuse && refuse->type == bitdex::json::Type::String ? refuse->text : "";
        return true;
      },
      g_truncate_error, sizeof g_truncate_error);
}

// A TRUNCATE of a captured table: one clear record of what the source put in
// the index (trigger_gen::truncate_clear), in the truncating transaction.
void capture_truncate(TriggerData* td) {
  static const char* const cols[] = {"truncate_spec", "name"};
  char* out[2];
  Oid table = InvalidOid;
  if (!recorded_row(td->tg_trigger->tgoid, "truncate_trigger_oid", &table, 2, cols, out))
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("trigger \"%s\" on table \"%s\" is not a capture trigger of bitdex_sync",
                           td->tg_trigger->tgname, RelationGetRelationName(td->tg_relation)),
                    errhint("Drop this trigger, or apply the config again to let apply_config create its own.")));
  if (!parse_truncate_spec(out[0]))
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("bad bitdex_sync TRUNCATE spec: %s", g_truncate_error),
             errhint("Apply the config again with bitdex_sync.apply_config().")));
  if (!g_truncate->refuse.empty()) {
    if (!g_allow_capture_loss)
      ereport(ERROR,
              (errcode(ERRCODE_OBJECT_IN_USE),
               errmsg("TRUNCATE of %s cannot be captured (source \"%s\" of bitdex_sync): %s",
                      RelationGetRelationName(td->tg_relation), out[1], g_truncate->refuse.c_str()),
               errdetail("Clearing the field would take the other source's values out of the index too."),
               errhint("DELETE the rows instead (each is captured), or give each source fields of its own. To "
                       "truncate anyway and record the gap, a superuser sets bitdex_sync.allow_capture_loss = on.")));
    record_truncate_gap(out[1], RelationGetRelid(td->tg_relation), td->tg_trigger->tgname);
    return;
  }
  emit_clear(g_truncate->message.data(), static_cast<int>(g_truncate->message.size()), g_truncate->json.c_str(),
             g_truncate->outbox);
}

}  // namespace bitdex::pg::trigger

namespace bitdex::pg {
using namespace trigger;

void* load_source(Oid tgoid, Relation rel) {
  return source_for(tgoid, tgoid, rel);
}

int load_source_slot_column(void* source) {
  return static_cast<Source*>(source)->slot.attnum;
}

void load_row(void* source, TupleTableSlot* row, LoadSink* sink) {
  auto* s = static_cast<Source*>(source);
  init_buffers();
  resetStringInfo(&g_ops);
  g_nops = 0;
  g_updated = nullptr;
  g_load_sink = sink;
  const TriggerEvent ev = TRIGGER_EVENT_INSERT | TRIGGER_EVENT_ROW | TRIGGER_EVENT_AFTER;
  switch (s->kind) {
    case SourceKind::Direct: direct_row(s, ev, nullptr, row); break;
    case SourceKind::Join: join_row(s, ev, nullptr, row); break;
    case SourceKind::QueryFanOut: fan_out_row(s, ev, nullptr, row); break;
    case SourceKind::RowFanOut: row_fan_out_row(s, ev, nullptr, row); break;
  }
  g_load_sink = nullptr;
  ResetExprContext(s->econtext);
}

void load_reset() {
  g_load_sink = nullptr;
}

}  // namespace bitdex::pg

// bitdex_sync.capture(spec): AFTER ROW trigger behind every generated trigger.
Datum bitdex_sync_capture(PG_FUNCTION_ARGS) {
  using namespace bitdex::pg;
  using namespace bitdex::pg::trigger;
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("bitdex_sync.capture() must be called as a trigger")));
  TriggerData* td = (TriggerData*)fcinfo->context;
  TriggerEvent ev = td->tg_event;
  const bool truncate = TRIGGER_FIRED_BY_TRUNCATE(ev) && TRIGGER_FIRED_FOR_STATEMENT(ev);
  if (!TRIGGER_FIRED_AFTER(ev) || !(TRIGGER_FIRED_FOR_ROW(ev) || truncate))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("bitdex_sync.capture() must be an AFTER ... FOR EACH ROW trigger, or AFTER TRUNCATE")));
  init_buffers();
  g_load_sink = nullptr;
  if (truncate) {
    capture_truncate(td);
    return PointerGetDatum(nullptr);
  }
  Source* s = get_source(td);
  resetStringInfo(&g_ops);
  g_nops = 0;
  TupleTableSlot* oldrow = nullptr;
  TupleTableSlot* newrow = nullptr;
  if (TRIGGER_FIRED_BY_INSERT(ev)) {
    newrow = td->tg_trigslot;
  } else if (TRIGGER_FIRED_BY_UPDATE(ev)) {
    oldrow = td->tg_trigslot;
    newrow = td->tg_newslot;
  } else if (TRIGGER_FIRED_BY_DELETE(ev)) {
    oldrow = td->tg_trigslot;
  } else {
    return PointerGetDatum(nullptr);
  }
  // A BEFORE UPDATE row trigger may change columns the statement did not
  // assign; then every field has to be compared.
  TriggerDesc* trigdesc = td->tg_relation->trigdesc;
  g_updated =
      TRIGGER_FIRED_BY_UPDATE(ev) && !(trigdesc && trigdesc->trig_update_before_row) ? td->tg_updatedcols : nullptr;
  switch (s->kind) {
    case SourceKind::Direct: direct_row(s, ev, oldrow, newrow); break;
    case SourceKind::Join: join_row(s, ev, oldrow, newrow); break;
    case SourceKind::QueryFanOut: fan_out_row(s, ev, oldrow, newrow); break;
    case SourceKind::RowFanOut: row_fan_out_row(s, ev, oldrow, newrow); break;
  }
  ResetExprContext(s->econtext);
  return PointerGetDatum(nullptr);
}
