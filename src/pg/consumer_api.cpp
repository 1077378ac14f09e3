// The ops WAL over SQL, for consumers on other hosts (SPEC §14): register a
// consumer, read whole batches after a cursor (long poll, woken by the
// worker's next batch), acknowledge, and the WAL's records as rows. Role
// bitdex_sync_reader may call these and nothing else; they are SECURITY
// DEFINER and check everything they are given.
#include <string>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/core/wal_reader.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/shared_state.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(bitdex_sync_register_consumer);
Datum bitdex_sync_register_consumer(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_unregister_consumer);
Datum bitdex_sync_unregister_consumer(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_read_wal);
Datum bitdex_sync_read_wal(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_ack_consumer);
Datum bitdex_sync_ack_consumer(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(bitdex_sync_wal_records);
Datum bitdex_sync_wal_records(PG_FUNCTION_ARGS);
Datum bitdex_sync_wal_directory(PG_FUNCTION_ARGS);
}

namespace bitdex::pg {
namespace {

using wal::Cursor;

// One batch of read_wal() at most this large is asked for; a batch larger
// than the budget still comes, alone.
constexpr int64 kMaxReadBytes = 256 << 20;
constexpr int kMaxWaitMs = 600 * 1000;
constexpr int32 kMaxRecordRows = 1000000;

std::string arg_text(FunctionCallInfo fcinfo, int n) {
  return pg_guard([&] { return text_to_cstring(PG_GETARG_TEXT_PP(n)); });
}

std::string wal_dir() {
  return pg_guard([] { return text_to_cstring(DatumGetTextPP(DirectFunctionCall1(bitdex_sync_wal_directory, 0))); });
}

// The ops WAL this installation writes (bitdex_sync.instance.wal_id); 0 while
// the worker has started none. SPI must be connected.
uint64_t current_wal_id() {
  int64 id = pg_guard([] {
    if (SPI_execute("SELECT coalesce(wal_id, 0) FROM bitdex_sync.instance", true, 0) != SPI_OK_SELECT ||
        SPI_processed != 1)
      elog(ERROR, "bitdex_sync.instance does not hold one row");
    bool isnull;
    return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  });
  return static_cast<uint64_t>(id);
}

struct Consumer {
  bool found = false;
  Cursor cursor;
  bool at_end = false;
  bool lagging = false;
  std::string lagging_why;
  bool owned = false;  // the caller is (a member of) the role that registered it
};

// Moving or removing a consumer is for the role that registered it (each
// index host logs in as its own role): another reader would make it lag.
void require_owner(const std::string& name, const Consumer& c) {
  if (!c.owned)
    throw Error(ErrorKind::InsufficientPrivilege, "ops WAL consumer \"" + name + "\" was registered by another role",
                "Only the role that registered a consumer (or a member of it, or a superuser) may acknowledge or "
                "unregister it.");
}

// The consumer's row, locked FOR UPDATE when `lock` (SPI connected).
Consumer read_consumer(const std::string& name, bool lock) {
  Consumer c;
  const char* sql = lock ? "SELECT wal_id, segment, segment_offset, at_end, lagging, "
                           "pg_catalog.pg_has_role(session_user, registered_by, 'MEMBER') "
                           "FROM bitdex_sync.consumers WHERE name = $1 FOR UPDATE"
                         : "SELECT wal_id, segment, segment_offset, at_end, lagging, "
                           "pg_catalog.pg_has_role(session_user, registered_by, 'MEMBER') "
                           "FROM bitdex_sync.consumers WHERE name = $1";
  const bool found = pg_guard([&] {
    Oid type = TEXTOID;
    Datum arg = CStringGetTextDatum(name.c_str());
    if (SPI_execute_with_args(sql, 1, &type, &arg, nullptr, false, 1) != SPI_OK_SELECT)
      elog(ERROR, "bitdex_sync: could not read bitdex_sync.consumers");
    return SPI_processed == 1;
  });
  if (!found) return c;
  c.found = true;
  bool isnull = false;
  auto col = [&](int n) {
    return pg_guard(
        [&] { return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, n, &isnull)); });
  };
  c.cursor = Cursor{static_cast<uint64_t>(col(1)), static_cast<uint64_t>(col(2)), static_cast<uint64_t>(col(3))};
  c.at_end =
      pg_guard([&] { return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)); });
  const char* why = pg_guard([&] { return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5); });
  c.lagging = why != nullptr;
  if (why) c.lagging_why = why;
  c.owned =
      pg_guard([&] { return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull)); });
  return c;
}

[[noreturn]] void not_registered(const std::string& name) {
  throw Error(ErrorKind::InvalidInput, "ops WAL consumer \"" + name + "\" is not registered", {},
              "Register it first: SELECT bitdex_sync.register_consumer('" + name + "');");
}

[[noreturn]] void lagging(const std::string& name, const std::string& why) {
  throw Error(ErrorKind::NotReady, "ops WAL consumer \"" + name + "\" is lagging: " + why,
              "Retention removed ops WAL segments this consumer had not acknowledged; its index can no longer "
              "be brought up to date from the WAL.",
              "Rebuild it: SELECT bitdex_sync.unregister_consumer('" + name +
                  "'); SELECT bitdex_sync.register_consumer('" + name +
                  "', at_end => true); SELECT bitdex_sync.load(); then follow with an empty index.");
}

[[noreturn]] void other_wal(const std::string& what, uint64_t theirs, uint64_t ours) {
  throw Error(ErrorKind::InvalidInput,
              what + " belongs to ops WAL " + wal::wal_id_hex(theirs) + ", but this database writes ops WAL " +
                  wal::wal_id_hex(ours),
              "The ops WAL was started anew: a promoted standby (failover), bitdex_sync.start_new_wal(), or the "
              "extension created again. Nothing of the old WAL's cursor applies to the new one.",
              "Rebuild the index: unregister and register the consumer again, then follow with an empty index "
              "(the new WAL begins with a full load of every source; docs/operations.md, failover).");
}

Cursor require_cursor(const std::string& text) {
  std::optional<Cursor> c = wal::parse_cursor(text);
  if (!c)
    throw Error(ErrorKind::InvalidInput, "invalid ops WAL cursor \"" + text + "\"", {},
                "A cursor is '<WAL id in hex>/<segment>/<offset>', as read_wal() returns it in column next.");
  return *c;
}

// The cursor after the last whole batch of the WAL (a new consumer
// registered at the end starts there).
Cursor end_of_wal(const std::string& dir, uint64_t wal_id) {
  std::vector<uint64_t> gens = wal::list_segments(dir);
  if (gens.empty()) return Cursor{wal_id, 0, 0};
  wal::WalReader rd(dir, Cursor{wal_id, gens.back(), 0});
  rd.set_raw(true);
  wal::WalBatch b;
  while (rd.next(&b) == wal::ReadStatus::Batch) {
  }
  return rd.cursor();
}

uint64 appends_of(WorkerShared* w) {
  SpinLockAcquire(&w->mutex);
  uint64 n = w->appends;
  SpinLockRelease(&w->mutex);
  return n;
}

// Sleeps until the database's worker makes another batch durable (after
// `seen` appends) or timeout_ms pass; a cancel request interrupts it. PG
// calls only: run it in pg_guard.
void wait_for_append(uint64 seen, long timeout_ms) {
  WorkerShared* w = worker_for_database(MyDatabaseId);
  if (!w) {  // no worker (yet): look again now and then
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, Min(timeout_ms, 100L), PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    return;
  }
  const TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
  ConditionVariablePrepareToSleep(&w->appended);
  while (appends_of(w) == seen) {
    long left = static_cast<long>((until - GetCurrentTimestamp()) / 1000);
    if (left <= 0 || ConditionVariableTimedSleep(&w->appended, left, PG_WAIT_EXTENSION)) break;
  }
  ConditionVariableCancelSleep();
}

// The end of what the database's worker has made durable (nothing known:
// all zero).
Cursor durable_end() {
  WorkerShared* w = worker_for_database(MyDatabaseId);
  Cursor c;
  if (!w) return c;
  SpinLockAcquire(&w->mutex);
  c = Cursor{w->durable_wal_id, w->durable_generation, w->durable_offset};
  SpinLockRelease(&w->mutex);
  return c;
}

// The appends of this database's worker so far (0 without a worker).
uint64 appends_now() {
  WorkerShared* w = worker_for_database(MyDatabaseId);
  return w ? appends_of(w) : 0;
}

void spi_connect() {
  pg_guard([] {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  });
}

void spi_finish() {
  pg_guard([] { SPI_finish(); });
}

}  // namespace
}  // namespace bitdex::pg

using namespace bitdex;
using namespace bitdex::pg;

// bitdex_sync.register_consumer(name, at_end) -> text: the consumer's cursor.
Datum bitdex_sync_register_consumer(PG_FUNCTION_ARGS) {
  return cpp_call([&]() -> Datum {
    const std::string name = arg_text(fcinfo, 0);
    const bool at_end = PG_GETARG_BOOL(1);
    wal::validate_consumer_name(name);
    spi_connect();
    Consumer c = read_consumer(name, true);
    Cursor cur = c.cursor;
    if (!c.found) {
      const uint64_t wal_id = current_wal_id();
      const std::string dir = wal_dir();
      cur = Cursor{wal_id, 0, 0};
      bool mark_end = false;
      if (wal_id != 0 && at_end) {
        // The end of what is durable (a batch boundary); without a worker
        // to say, the last complete batch in the files.
        const Cursor durable = durable_end();
        cur = durable.wal_id == wal_id ? durable : end_of_wal(dir, wal_id);
        mark_end = true;
      } else if (wal_id != 0) {
        std::vector<uint64_t> gens = wal::list_segments(dir);
        if (!gens.empty()) cur.generation = gens.front();
      }
      pg_guard([&] {
        Oid types[5] = {TEXTOID, INT8OID, INT8OID, INT8OID, BOOLOID};
        Datum args[5] = {CStringGetTextDatum(name.c_str()), Int64GetDatum(static_cast<int64>(cur.wal_id)),
                         Int64GetDatum(static_cast<int64>(cur.generation)),
                         Int64GetDatum(static_cast<int64>(cur.offset)), BoolGetDatum(mark_end)};
        if (SPI_execute_with_args("INSERT INTO bitdex_sync.consumers (name, wal_id, segment, segment_offset, at_end) "
                                  "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                                  5, types, args, nullptr, false, 0) != SPI_OK_INSERT)
          elog(ERROR, "bitdex_sync: could not register the consumer");
      });
      // Registered by a concurrent call in between: its cursor is the one.
      if (SPI_processed == 0) cur = read_consumer(name, false).cursor;
    }
    spi_finish();
    const std::string text = wal::format_cursor(cur);
    return pg_guard([&] { return PointerGetDatum(cstring_to_text(text.c_str())); });
  });
}

// bitdex_sync.unregister_consumer(name) -> boolean: whether it was registered.
Datum bitdex_sync_unregister_consumer(PG_FUNCTION_ARGS) {
  return cpp_call([&]() -> Datum {
    const std::string name = arg_text(fcinfo, 0);
    wal::validate_consumer_name(name);
    spi_connect();
    const Consumer c = read_consumer(name, true);
    if (c.found) require_owner(name, c);
    const bool removed = pg_guard([&] {
      Oid type = TEXTOID;
      Datum arg = CStringGetTextDatum(name.c_str());
      if (SPI_execute_with_args("DELETE FROM bitdex_sync.consumers WHERE name = $1", 1, &type, &arg, nullptr, false,
                                0) != SPI_OK_DELETE)
        elog(ERROR, "bitdex_sync: could not unregister the consumer");
      return SPI_processed > 0;
    });
    spi_finish();
    return BoolGetDatum(removed);
  });
}

// bitdex_sync.read_wal(consumer, after, max_bytes, wait_ms) -> (batch_seq, next, bytes).
Datum bitdex_sync_read_wal(PG_FUNCTION_ARGS) {
  return cpp_call([&]() -> Datum {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
      throw Error(ErrorKind::InvalidInput, "bitdex_sync.read_wal() needs a consumer, max_bytes and wait_ms");
    const std::string name = arg_text(fcinfo, 0);
    wal::validate_consumer_name(name);
    const int64 max_bytes = PG_GETARG_INT32(2);
    const int wait_ms = PG_GETARG_INT32(3);
    if (max_bytes < 1 || wait_ms < 0 || wait_ms > kMaxWaitMs)
      throw Error(ErrorKind::InvalidInput,
                  "bitdex_sync.read_wal(): max_bytes must be at least 1 and wait_ms "
                  "between 0 and " +
                      std::to_string(kMaxWaitMs));
    std::optional<Cursor> after;
    if (!PG_ARGISNULL(1)) after = require_cursor(arg_text(fcinfo, 1));
    if (after && after->generation == 0)
      throw Error(ErrorKind::InvalidInput, "invalid ops WAL cursor " + wal::format_cursor(*after), {},
                  "Pass NULL to start where the consumer starts, or a cursor read_wal() returned.");
    ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    pg_guard([&] { InitMaterializedSRF(fcinfo, 0); });

    spi_connect();
    const Consumer c = read_consumer(name, false);
    const uint64_t wal_id = current_wal_id();
    spi_finish();
    // The reader's own cursor first: after a failover it names both WALs.
    if (after && after->wal_id != wal_id) other_wal("Cursor " + wal::format_cursor(*after), after->wal_id, wal_id);
    if (!c.found) not_registered(name);
    if (wal_id != 0 && c.cursor.wal_id != 0 && c.cursor.wal_id != wal_id)
      other_wal("The cursor of consumer \"" + name + "\"", c.cursor.wal_id, wal_id);
    if (c.lagging) lagging(name, c.lagging_why);
    if (wal_id == 0) return (Datum)0;  // no ops WAL yet: nothing to read

    const std::string dir = wal_dir();
    std::vector<uint64_t> gens = wal::list_segments(dir);
    if (gens.empty()) return (Datum)0;  // a new WAL before its first segment
    Cursor start{wal_id, gens.front(), 0};
    bool from_batch_one = false;
    if (after) {
      start = *after;
    } else if (c.at_end && c.cursor.generation != 0) {
      start = c.cursor;
    } else {
      from_batch_one = true;  // the oldest segment, which must start at batch 1
    }
    if (start.generation < gens.front())
      lagging(name, "its cursor " + wal::format_cursor(start) + " is in segment " + std::to_string(start.generation) +
                        ", which was removed");
    if (from_batch_one) {
      const uint64_t first = wal::segment_header(dir, start.generation).next_batch_seq;
      if (first != 1)
        throw Error(
            ErrorKind::NotReady,
            "the ops WAL no longer starts at batch 1: retention removed batches 1 to " + std::to_string(first - 1),
            "An empty index of consumer \"" + name + "\" would miss them.",
            "Register the consumer at the end and load: SELECT bitdex_sync.unregister_consumer('" + name +
                "'); SELECT bitdex_sync.register_consumer('" + name + "', at_end => true); SELECT bitdex_sync.load();");
    }

    wal::WalReader rd(dir, start);
    rd.set_raw(true);
    wal::WalBatch b;
    int64 total = 0;
    uint64 seen = appends_now();
    Cursor durable = durable_end();
    const TimestampTz until = pg_guard([&] { return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms); });
    for (;;) {
      while (total < std::min(max_bytes, kMaxReadBytes)) {
        wal::ReadStatus st;
        try {
          st = rd.next(&b);
        } catch (const Error& e) {
          // Retention removed the segment between the listing and the read.
          std::vector<uint64_t> now = wal::list_segments(dir);
          if (e.kind() == ErrorKind::InvalidInput && (now.empty() || rd.cursor().generation < now.front()))
            lagging(name, std::string("its next segment was removed: ") + e.what());
          throw;
        }
        if (st != wal::ReadStatus::Batch) break;
        // Written but not yet fdatasync'ed: an OS crash could take it back,
        // and a follower must never hold a batch the WAL then lacks.
        if (durable.wal_id != wal_id || b.end.generation > durable.generation ||
            (b.end.generation == durable.generation && b.end.offset > durable.offset)) {
          rd = wal::WalReader(dir, b.begin);
          rd.set_raw(true);
          break;
        }
        const std::string next = wal::format_cursor(b.end);
        pg_guard([&] {
          bytea* bytes = static_cast<bytea*>(palloc(VARHDRSZ + b.raw.size()));
          SET_VARSIZE(bytes, VARHDRSZ + b.raw.size());
          memcpy(VARDATA(bytes), b.raw.data(), b.raw.size());
          Datum values[3] = {Int64GetDatum(static_cast<int64>(b.seq)), CStringGetTextDatum(next.c_str()),
                             PointerGetDatum(bytes)};
          bool nulls[3] = {false, false, false};
          tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
          pfree(bytes);
        });
        total += static_cast<int64>(b.bytes);
      }
      if (total > 0) break;
      const long left = pg_guard([&] { return static_cast<long>((until - GetCurrentTimestamp()) / 1000); });
      if (left <= 0) break;
      pg_guard([&] { wait_for_append(seen, left); });
      seen = appends_now();
      durable = durable_end();
    }
    return (Datum)0;
  });
}

// bitdex_sync.ack_consumer(name, cursor): the consumer's durable position.
Datum bitdex_sync_ack_consumer(PG_FUNCTION_ARGS) {
  return cpp_call([&]() -> Datum {
    const std::string name = arg_text(fcinfo, 0);
    wal::validate_consumer_name(name);
    const Cursor cur = require_cursor(arg_text(fcinfo, 1));
    spi_connect();
    const Consumer c = read_consumer(name, true);
    const uint64_t wal_id = current_wal_id();
    if (!c.found) not_registered(name);
    require_owner(name, c);
    if (c.lagging) lagging(name, c.lagging_why);
    if (cur.wal_id != wal_id) other_wal("Cursor " + wal::format_cursor(cur), cur.wal_id, wal_id);
    const std::string dir = wal_dir();
    std::vector<uint64_t> gens = wal::list_segments(dir);
    if (gens.empty() || cur.generation < gens.front() || cur.generation > gens.back())
      throw Error(ErrorKind::InvalidInput, "cursor " + wal::format_cursor(cur) + " is not in a segment of the ops WAL",
                  gens.empty()
                      ? "The ops WAL has no segment."
                      : "Its segments are " + std::to_string(gens.front()) + " to " + std::to_string(gens.back()) + ".",
                  "Acknowledge a cursor read_wal() returned.");
    pg_guard([&] {
      Oid types[4] = {TEXTOID, INT8OID, INT8OID, INT8OID};
      Datum args[4] = {CStringGetTextDatum(name.c_str()), Int64GetDatum(static_cast<int64>(cur.wal_id)),
                       Int64GetDatum(static_cast<int64>(cur.generation)),
                       Int64GetDatum(static_cast<int64>(cur.offset))};
      if (SPI_execute_with_args("UPDATE bitdex_sync.consumers SET wal_id = $2, segment = $3, segment_offset = $4, "
                                "at_end = false, acked_at = now() WHERE name = $1",
                                4, types, args, nullptr, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "bitdex_sync: could not acknowledge the cursor");
    });
    spi_finish();
    return (Datum)0;
  });
}

// bitdex_sync.wal_records(from_batch, max_rows) -> (batch_seq, position, entity_id, creates_slot, ops).
Datum bitdex_sync_wal_records(PG_FUNCTION_ARGS) {
  return cpp_call([&]() -> Datum {
    const int64 from = PG_GETARG_INT64(0);
    const int32 max_rows = PG_GETARG_INT32(1);
    if (from < 1 || max_rows < 0 || max_rows > kMaxRecordRows)
      throw Error(ErrorKind::InvalidInput,
                  "bitdex_sync.wal_records(): from_batch must be at least 1 and max_rows "
                  "between 0 and " +
                      std::to_string(kMaxRecordRows));
    ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    pg_guard([&] { InitMaterializedSRF(fcinfo, 0); });
    spi_connect();
    const uint64_t wal_id = current_wal_id();
    spi_finish();
    const std::string dir = wal_dir();
    std::vector<uint64_t> gens = wal_id == 0 ? std::vector<uint64_t>{} : wal::list_segments(dir);
    if (gens.empty() || max_rows == 0) return (Datum)0;
    // The last segment starting at or before the batch.
    uint64_t gen = gens.front();
    for (uint64_t g : gens)
      if (wal::segment_header(dir, g).next_batch_seq <= static_cast<uint64_t>(from)) gen = g;
    wal::WalReader rd(dir, Cursor{wal_id, gen, 0});
    wal::WalBatch b;
    int32 rows = 0;
    std::string ops;
    while (rows < max_rows && rd.next(&b) == wal::ReadStatus::Batch) {
      pg_guard([] { CHECK_FOR_INTERRUPTS(); });
      if (b.seq < static_cast<uint64_t>(from)) continue;
      for (const EntityRecord& r : b.records) {
        if (rows >= max_rows) break;
        ops.clear();
        if (r.clear) {
          ops = "{\"clear\":";
          write_clear_json(ops, *r.clear);
          ops += "}";
        } else {
          write_ops_json(ops, r.ops);
        }
        char pos[64];
        if (r.pos.stream == Stream::Outbox)
          snprintf(pos, sizeof pos, "outbox %llu.%u", static_cast<unsigned long long>(r.pos.major), r.pos.minor);
        else
          snprintf(pos, sizeof pos, "slot %X/%X.%u", BDX_LSN_ARGS(r.pos.major), r.pos.minor);
        pg_guard([&] {
          Datum values[5] = {Int64GetDatum(static_cast<int64>(b.seq)), CStringGetTextDatum(pos),
                             Int64GetDatum(r.entity_id), BoolGetDatum(r.creates_slot),
                             DirectFunctionCall1(jsonb_in, CStringGetDatum(ops.c_str()))};
          const bool clear = static_cast<bool>(r.clear);
          bool nulls[5] = {false, false, clear, clear, false};
          tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        });
        rows++;
      }
    }
    return (Datum)0;
  });
}
