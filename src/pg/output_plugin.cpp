// bitdex_sync as a logical decoding output plugin: prints each captured row
// change (a "bitdex_sync" logical message) as one JSON line
// {"entity_id":..,"ops":[..]}. Row changes and other messages are skipped.
// Used by the tests and tools through pg_logical_slot_peek_changes(). The
// worker's own slot has this plugin too, but the worker decodes in
// fast-forward mode and reads the messages itself (src/pg/decode_slot.cpp).
#include <cstring>
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/pg/capture_key.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/shared_state.hpp"

extern "C" {
#include "replication/logical.h"
#include "replication/output_plugin.h"
}

extern "C" {
void _PG_output_plugin_init(OutputPluginCallbacks* cb);
}

namespace {

std::string* g_line = nullptr;  // static-lifetime scratch: no destructor skipped by a longjmp
char g_error[256];

bool to_json(const char* data, Size len) noexcept {
  return bitdex::pg::run_cpp(
      [&] {
        if (!g_line) g_line = new std::string();
        *g_line = bitdex::capture::to_json(reinterpret_cast<const uint8_t*>(data), len);
        return true;
      },
      g_error, sizeof g_error);
}

void startup(LogicalDecodingContext*, OutputPluginOptions* opt, bool) {
  opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
}
void begin(LogicalDecodingContext*, ReorderBufferTXN*) {}
void commit(LogicalDecodingContext*, ReorderBufferTXN*, XLogRecPtr) {}
void change(LogicalDecodingContext*, ReorderBufferTXN*, Relation, ReorderBufferChange*) {}

// A message with our prefix but without the capture trigger's tag (any role
// may emit one) is not printed: what this plugin shows is what the worker
// would write.
void message(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr, bool transactional, const char* prefix,
             Size size, const char* data) {
  if (!transactional || strcmp(prefix, bitdex::capture::kMessagePrefix) != 0) return;
  const bitdex::SipHash128* mac = bitdex::pg::capture_mac();
  if (!mac) ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: no capture key")));
  if (!bitdex::capture::authentic(reinterpret_cast<const uint8_t*>(data), size, *mac, MyDatabaseId, txn->xid)) return;
  if (!to_json(data, size))
    ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("bad bitdex_sync capture message: %s", g_error)));
  OutputPluginPrepareWrite(ctx, true);
  appendBinaryStringInfo(ctx->out, g_line->data(), static_cast<int>(g_line->size()));
  OutputPluginWrite(ctx, true);
}

}  // namespace

void _PG_output_plugin_init(OutputPluginCallbacks* cb) {
  cb->startup_cb = startup;
  cb->begin_cb = begin;
  cb->change_cb = change;
  cb->commit_cb = commit;
  cb->message_cb = message;
}
