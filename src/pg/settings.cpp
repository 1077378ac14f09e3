// The extension's settings (GUCs under bitdex_sync.*): their variables and
// their definitions, read by the workers, the launcher and the trigger.
#include "bitdex_sync/pg/settings.hpp"

#include <climits>

#include "bitdex_sync/pg/capture.hpp"

extern "C" {
#include "utils/guc.h"
}

namespace bitdex::pg {

char* g_databases = nullptr;
char* g_wal_directory = nullptr;
int g_wal_max_size_mb = 0;
int g_wal_max_age_s = 0;
int g_wal_segment_size_kb = 64 * 1024;
int g_on_poison_slot = kPoisonSkip;
int g_on_poison_outbox = kPoisonSkip;
int g_batch_max_ops = 100000;
int g_batch_max_delay_ms = 10;
int g_batch_max_memory_kb = 64 * 1024;
int g_naptime_ms = 1000;
int g_load_chunk_rows = 20000;
int g_max_databases = 16;
bool g_fault_injection = false;

namespace {
const struct config_enum_entry kPoisonPolicies[] = {
    {"skip", kPoisonSkip, false}, {"stop", kPoisonStop, false}, {nullptr, 0, false}};
}  // namespace

void define_settings() {
  DefineCustomStringVariable(
      "bitdex_sync.databases", "Databases whose captured ops a worker writes to the ops WAL.",
      "Empty (the default): a launcher starts a worker in every database where the extension is created. "
      "Otherwise a comma-separated list: one worker per named database, started with the server.",
      &g_databases, "", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomStringVariable("bitdex_sync.wal_directory", "Root directory of the ops WALs.",
                             "Relative paths are under the data directory; each database writes to "
                             "<wal_directory>/<database name>.",
                             &g_wal_directory, "bitdex_sync", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "bitdex_sync.wal_segment_size", "Size at which an ops WAL segment is closed and a new one begun.", nullptr,
      &g_wal_segment_size_kb, 64 * 1024, 64, 1024 * 1024, PGC_POSTMASTER, GUC_UNIT_KB, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "bitdex_sync.wal_max_size", "Size the ops WAL directory is kept within, lagging consumers or not.",
      "Segments every consumer has passed are removed anyway; past this size the oldest go even when a consumer "
      "still needs them, and that consumer is marked lagging (it must be rebuilt). 0: no bound.",
      &g_wal_max_size_mb, 0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MB, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "bitdex_sync.wal_max_age", "Age after which an ops WAL segment is removed, lagging consumers or not.",
      "A segment last written longer ago is removed even when a consumer still needs it, and that consumer is "
      "marked lagging. The newest segment always stays. 0: no bound.",
      &g_wal_max_age_s, 0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.batch_max_ops", "Ops after which a batch is written.", nullptr, &g_batch_max_ops,
                          100000, 1, INT_MAX, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.batch_max_delay", "Longest time a batch stays open while decoding.", nullptr,
                          &g_batch_max_delay_ms, 10, 0, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
                          nullptr);
  DefineCustomIntVariable("bitdex_sync.batch_max_memory", "Memory of captured records after which a batch is written.",
                          "A transaction larger than this is written in several batches, in order.",
                          &g_batch_max_memory_kb, 64 * 1024, 64, MAX_KILOBYTES, PGC_SIGHUP, GUC_UNIT_KB, nullptr,
                          nullptr, nullptr);
  DefineCustomEnumVariable("bitdex_sync.on_poison_slot",
                           "What a capture message that cannot be decoded does: skip (quarantine it) or stop.",
                           "stop: decoding halts in front of it (nothing after it is written) until a reload.",
                           &g_on_poison_slot, kPoisonSkip, kPoisonPolicies, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomEnumVariable("bitdex_sync.on_poison_outbox",
                           "What an outbox row that cannot be decoded does: skip (quarantine it) or stop.",
                           "stop: the outbox is not read past it until a reload.", &g_on_poison_outbox, kPoisonSkip,
                           kPoisonPolicies, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.naptime", "How long an idle worker sleeps when no commit wakes it.",
                          "Idle wake-ups confirm the slot (so it does not pin WAL) and notice a created or "
                          "dropped extension.",
                          &g_naptime_ms, 1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.load_chunk_rows", "Rows a load reads per chunk (one snapshot each).",
                          "A chunk's ops are written as one batch; a larger chunk costs fewer transactions and more "
                          "memory, and is more often cut by a concurrent commit.",
                          &g_load_chunk_rows, 20000, 1, 10000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("bitdex_sync.max_databases", "How many databases can have a worker at the same time.",
                          "Each takes a slot of shared memory (about 1 kB) and a background worker process.",
                          &g_max_databases, 16, 1, 1024, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "bitdex_sync.allow_capture_loss", "Lets DDL drop or disable capture triggers, recording the gap.",
      "Off: a command that would leave a capture trigger apply_config created dropped or not firing always is "
      "refused. On (superusers only): it goes through and bitdex_sync.capture_gaps records the gap.",
      &g_allow_capture_loss, false, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("bitdex_sync.fault_injection", "For tests: crash points the test suite can arm.",
                           "When on, a worker that finds the file bitdex_sync.kill_after_batch in the data directory "
                           "removes it and kills itself right after its next batch is durable.",
                           &g_fault_injection, false, PGC_SIGHUP, GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr,
                           nullptr);
}

bool automatic_mode() {
  // No allocation: callers are PostgreSQL code.
  for (const char* p = g_databases ? g_databases : ""; *p; p++)
    if (*p != ',' && *p != ' ' && *p != '\t') return false;
  return true;
}

}  // namespace bitdex::pg
