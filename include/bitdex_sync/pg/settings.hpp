// The extension's settings (GUCs under bitdex_sync.*), defined by
// define_settings() in settings.cpp.
#pragma once

#include "bitdex_sync/pg/postgres.hpp"

namespace bitdex::pg {

extern char* g_databases;          // empty: automatic (the launcher); else comma-separated names
extern char* g_wal_directory;      // ops WAL root; relative to the data directory
extern int g_wal_segment_size_kb;  // rotate a segment once it reaches this size
extern int g_batch_max_ops;
extern int g_batch_max_delay_ms;
extern int g_batch_max_memory_kb;
extern int g_naptime_ms;
extern int g_load_chunk_rows;  // rows per load chunk
extern int g_max_databases;    // worker slots in shared memory (databases with a worker at once)
extern int g_wal_max_size_mb;  // retention: bound of the ops WAL directory (0: none)
extern int g_wal_max_age_s;    // retention: oldest segment kept for a lagging consumer (0: none)
constexpr int kPoisonSkip = 0, kPoisonStop = 1;
extern int g_on_poison_slot;  // kPoisonSkip or kPoisonStop
extern int g_on_poison_outbox;
// Tests only: the worker kills itself (SIGKILL) right after a batch is
// durable, once per file kFaultFile in the data directory (it removes it).
extern bool g_fault_injection;
constexpr const char* kFaultFile = "bitdex_sync.kill_after_batch";
// ... and throws a C++ exception out of its loop (the last catch in its main).
constexpr const char* kThrowFile = "bitdex_sync.throw_in_worker";
void define_settings();

// True when bitdex_sync.databases is empty: the launcher starts a worker in
// each database where the extension is created.
bool automatic_mode();

}  // namespace bitdex::pg
