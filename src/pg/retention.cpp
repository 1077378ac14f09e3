// Retention in the worker: every naptime, the ops WAL segments that every
// consumer has passed (the directory's own cursors and bitdex_sync.consumers)
// are removed; bitdex_sync.wal_max_size and wal_max_age bound the directory
// even when a consumer is stuck, which is then marked lagging. The writer
// never waits for a consumer.
#include <ctime>
#include <string>
#include <vector>

#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/settings.hpp"
#include "bitdex_sync/pg/shared_state.hpp"
#include "bitdex_sync/pg/worker_state.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
}

namespace bitdex::pg::bgw {
namespace {

// What a pass decided, in static storage: run_cpp frames hold nothing a
// longjmp could skip, and the messages exist before any PostgreSQL call.
struct Pass {
  std::vector<wal::ConsumerInfo> table;
  std::vector<std::pair<std::string, std::string>> lagging;  // consumer, why: to record
  wal::RetentionResult result;
};
Pass* g_pass = nullptr;

// Records a consumer lagging, unless a reader holds its row right now (the
// next pass marks it then: its cursor still points at a removed segment).
void mark_lagging(const char* name, const char* why) {
  Oid types[2] = {TEXTOID, TEXTOID};
  Datum args[2] = {CStringGetTextDatum(name), CStringGetTextDatum(why)};
  if (SPI_execute_with_args("UPDATE bitdex_sync.consumers SET lagging = $2, lagging_since = pg_catalog.now() "
                            "WHERE name = $1 AND lagging IS NULL AND ctid = (SELECT ctid FROM bitdex_sync.consumers "
                            "WHERE name = $1 FOR UPDATE SKIP LOCKED)",
                            2, types, args, nullptr, false, 0) != SPI_OK_UPDATE)
    elog(ERROR, "bitdex_sync: could not mark a consumer lagging");
  if (SPI_processed > 0)
    ereport(WARNING, (errmsg("bitdex_sync: ops WAL consumer \"%s\" is lagging: %s", name, why),
                      errhint("Its next read fails; rebuild its index (docs/operations.md, retention).")));
}

}  // namespace

// In the worker's transaction (in_transaction): one retention pass.
void retain_segments() {
  if (!g_worker->writer) return;
  if (!g_pass && !run_cpp(
                     [] {
                       g_pass = new Pass();
                       return true;
                     },
                     g_worker->error, sizeof g_worker->error))
    elog(ERROR, "bitdex_sync: out of memory");
  // Registering and acknowledging wait while the pass decides, so a consumer
  // registered at the oldest segment is never removed from under it; but the
  // pass never waits for them (a reader's open transaction would stall the
  // writer): when the table is busy, this pass is skipped. An installation
  // not yet updated to 0.2.0 has no such table: only the directory's
  // consumers count.
  const Oid ns = get_namespace_oid("bitdex_sync", false);
  const Oid table = get_relname_relid("consumers", ns);
  if (OidIsValid(table) && !ConditionalLockRelationOid(table, ShareLock)) return;
  uint64 rows = 0;
  char** names = nullptr;
  if (OidIsValid(table)) {
    if (SPI_execute("SELECT name, wal_id, segment, segment_offset FROM bitdex_sync.consumers WHERE lagging IS NULL",
                    true, 0) != SPI_OK_SELECT)
      elog(ERROR, "bitdex_sync: could not read bitdex_sync.consumers");
    rows = SPI_processed;
    names = static_cast<char**>(palloc(sizeof(char*) * (rows + 1)));
    for (uint64 i = 0; i < rows; i++) names[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
  }
  const uint64_t wal_id = g_worker->writer->wal_id();
  bool ok = run_cpp(
      [&] {
        g_pass->table.clear();
        g_pass->lagging.clear();
        for (uint64 i = 0; i < rows; i++) {
          HeapTuple t = SPI_tuptable->vals[i];
          bool isnull;
          wal::ConsumerInfo c;
          c.name = names[i];
          c.cursor.wal_id = static_cast<uint64_t>(DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull)));
          c.cursor.generation =
              static_cast<uint64_t>(DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull)));
          c.cursor.offset = static_cast<uint64_t>(DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 4, &isnull)));
          if (c.cursor.wal_id != 0 && c.cursor.wal_id != wal_id)
            g_pass->lagging.emplace_back(c.name,
                                         "its cursor belongs to an earlier ops WAL (this database now writes "
                                         "ops WAL " +
                                             wal::wal_id_hex(wal_id) + ")");
          else
            g_pass->table.push_back(std::move(c));
        }
        wal::RetentionLimits limits;
        limits.max_bytes = uint64_t(g_wal_max_size_mb) << 20;
        limits.max_age_seconds = uint64_t(g_wal_max_age_s);
        limits.now = static_cast<int64_t>(std::time(nullptr));
        g_pass->result = wal::remove_consumed_segments(g_worker->wal_dir, limits, g_pass->table);
        for (auto& l : g_pass->result.others_lagging) g_pass->lagging.push_back(l);
        return true;
      },
      g_worker->error, sizeof g_worker->error);
  if (!ok) {
    // The writer never stops for retention: the next pass tries again.
    ereport(WARNING, (errcode(ERRCODE_IO_ERROR),
                      errmsg("bitdex_sync: retention of the ops WAL in \"%s\" failed: %s", g_worker->wal_dir.c_str(),
                             g_worker->error),
                      errhint("Segments are kept until it succeeds; see the consumer files in the directory.")));
    return;
  }
  for (const auto& [name, why] : g_pass->lagging) mark_lagging(name.c_str(), why.c_str());
  for (const std::string& name : g_pass->result.now_lagging)
    ereport(WARNING, (errmsg("bitdex_sync: ops WAL consumer \"%s\" (a cursor in the directory) is lagging: "
                             "retention removed a segment it needed",
                             name.c_str())));
  if (!g_pass->result.removed.empty())
    ereport(DEBUG1,
            (errmsg("bitdex_sync: retention removed %zu ops WAL segments (%llu to %llu)", g_pass->result.removed.size(),
                    static_cast<unsigned long long>(g_pass->result.removed.front()),
                    static_cast<unsigned long long>(g_pass->result.removed.back()))));
}

}  // namespace bitdex::pg::bgw
