// The PostgreSQL calls whose signatures change between major versions,
// behind PG_VERSION_NUM (SPEC §13): a port to a new major version starts
// here, not in the callers. Built and tested on 15 only; the 16+ branches
// follow those versions' release notes and are untested.
#pragma once

#include "bitdex_sync/pg/postgres.hpp"

extern "C" {
#include "access/attmap.h"
#include "executor/executor.h"
#include "replication/message.h"
#include "replication/slot.h"
}

// 15 brought what the extension is built on: shmem_request_hook,
// InitMaterializedSRF, GetWALInsertionTimeLine, and this Debian build's
// output_plugin_libraries.
#if PG_VERSION_NUM < 150000
#error "bitdex_sync needs PostgreSQL 15 or later"
#endif

// LSN_FORMAT_ARGS for C++ (PostgreSQL's uses a C-only type check): the two
// halves of an LSN for "%X/%X".
#define BDX_LSN_ARGS(lsn) static_cast<uint32>((lsn) >> 32), static_cast<uint32>(lsn)

namespace bitdex::pg::compat {

// A database-specific logical slot, ephemeral until persisted, without
// two-phase decoding (17 added `failover` and `synced`: both off).
inline void create_logical_slot(const char* name) {
#if PG_VERSION_NUM >= 170000
  ReplicationSlotCreate(name, true, RS_EPHEMERAL, false, false, false);
#else
  ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
#endif
}

// Acquires the slot, failing at once when another process has it (18 added
// `error_if_invalid`: an invalidated slot is an error).
inline void acquire_slot(const char* name) {
#if PG_VERSION_NUM >= 180000
  ReplicationSlotAcquire(name, true, true);
#else
  ReplicationSlotAcquire(name, true);
#endif
}

// A logical decoding message (17 added `flush`: not asked for, the commit
// or the caller flushes).
inline XLogRecPtr log_message(const char* prefix, const char* data, size_t size, bool transactional) {
#if PG_VERSION_NUM >= 170000
  return LogLogicalMessage(prefix, data, size, transactional, false);
#else
  return LogLogicalMessage(prefix, data, size, transactional);
#endif
}

// Maps a partition's columns to its parent's by name (16 added `missing_ok`:
// a column missing from either is an error, as in 15).
inline AttrMap* attrmap_by_name(TupleDesc indesc, TupleDesc outdesc) {
#if PG_VERSION_NUM >= 160000
  return build_attrmap_by_name(indesc, outdesc, false);
#else
  return build_attrmap_by_name(indesc, outdesc);
#endif
}

// Runs a started query to its end (18 dropped `execute_once`).
inline void executor_run_all(QueryDesc* qd) {
#if PG_VERSION_NUM >= 180000
  ExecutorRun(qd, ForwardScanDirection, 0);
#else
  ExecutorRun(qd, ForwardScanDirection, 0, true);
#endif
}

}  // namespace bitdex::pg::compat
