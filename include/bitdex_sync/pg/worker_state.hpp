// The capture worker's own state and the steps its three files share:
// worker.cpp (lifecycle, batches, run history), decode_slot.cpp (the slot)
// and outbox_reader.cpp (the outbox). One Worker per process (g_worker).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bitdex_sync/core/batcher.hpp"
#include "bitdex_sync/core/load.hpp"
#include "bitdex_sync/core/txn_messages.hpp"
#include "bitdex_sync/core/wal_writer.hpp"
#include "bitdex_sync/pg/wall.hpp"
#include "bitdex_sync/pg/settings.hpp"
#include "bitdex_sync/pg/shared_state.hpp"

extern "C" {
#include "replication/logical.h"
#include "replication/origin.h"
#include "utils/timestamp.h"
}

// Internal to the library: not exported, so calls and g_worker need no
// indirection through the symbol table.
#pragma GCC visibility push(hidden)
namespace bitdex::pg::bgw {

struct Quarantined {
  const char* source;  // "slot" or "outbox"
  std::string position, payload, reason;
  int64 entity_id;
  bool has_entity;
};

// The load being run (load_runner.cpp).
struct LoadRun {
  int64 id = 0;      // 0: none
  bool more = true;  // look for the next load without waiting for the naptime
  std::string source;
  Oid table = InvalidOid, trigger = InvalidOid;
  bool partitioned = false;
  int32 chunk = 0;          // the last chunk written (or recorded and to be read again)
  bool has_cursor = false;  // false: from the first key
  int64 cursor = 0;         // every key <= it is loaded
  int64 rows = 0;
  std::unique_ptr<load::Chunk> pending;           // read, waiting for its place
  std::vector<std::pair<int64, int64>> key_rows;  // of the pending chunk: rows per key
  XLogRecPtr watermark = InvalidXLogRecPtr;       // decoding stops here while it waits
  int64 outbox_horizon = 0;                       // the outbox reader must pass it
};

struct Worker {
  WorkerShared* shared = nullptr;
  std::string slot_name;
  std::string wal_dir;
  std::unique_ptr<wal::WalWriter> writer;
  std::unique_ptr<pipeline::Batcher> batcher;
  LogicalDecodingContext* ctx = nullptr;            // while the slot is acquired
  std::unique_ptr<pipeline::TxnMessages> messages;  // of transactions in progress, while ctx
  TimestampTz batch_opened = 0;                     // 0: the batch is empty
  std::vector<TimestampTz> commit_times;            // of the transactions in the open batch
  XLogRecPtr confirmed = InvalidXLogRecPtr;
  // Outbox: every row with id <= outbox_done is durable in the WAL (or was
  // an aborted id). While outbox_pending, rows up to outbox_horizon wait for
  // the transactions in outbox_snapshot's in-progress list to end.
  int64 outbox_done = 0;
  bool outbox_leftovers_deleted = false;  // once per writer open: see outbox_delete_through
  bool outbox_cut = false;                // the pass ended at a quarantined row: another follows
  bool outbox_pending = false;
  int64 outbox_horizon = 0;
  std::string outbox_snapshot;
  // Poison: records that failed to decode, waiting to be written to
  // bitdex_sync.quarantine; a source whose policy is `stop` stops at its
  // first one until the settings are reloaded.
  std::vector<Quarantined> quarantine;
  bool slot_stop_requested = false;  // set while decoding; acted on after
  bool slot_stopped = false, outbox_stopped = false;
  bool automatic = false;          // started by the launcher: exits when the extension is gone
  bool extension_gone = true;      // as of the last look (run() looks first)
  Oid extension_oid = InvalidOid;  // the installation the worker serves (a new one is another)
  // bitdex_sync.instance, as last read: this installation's id, the ops WAL
  // it writes (0: none started yet) and the outbox rows it acknowledged.
  uint64 instance_id = 0;
  uint64 recorded_wal_id = 0;
  // The server timeline the WAL was recorded on (bitdex_sync.instance.timeline;
  // 0: not recorded): a later one with the slot missing is a promoted standby.
  uint32 recorded_timeline = 0;
  int64 outbox_acked = 0;
  TimestampTz marked_at = 0;                // last time the slot's mark was raised without records
  bool caches_for_decoding = false;         // see use_caches_for_decoding
  bool wal_unflushed = false;               // decoding reached a record not flushed whole yet
  int64 run_id = 0;                         // this run's row in bitdex_sync.runs
  const SipHash128* mac = nullptr;          // authenticates capture messages (set before decoding)
  TimestampTz rejected_warned_at = 0;       // last warning of a rejected message
  RepOriginId origin = InvalidRepOriginId;  // marks the worker's own writes
  bool origin_dropped = false;              // by this process, since the extension went
  std::unique_ptr<LoadRun> load = std::make_unique<LoadRun>();
  // Commits decoded whose transactions may still be in the proc array.
  std::unique_ptr<load::RecentCommits> recent = std::make_unique<load::RecentCommits>();
  char error[512] = {0};
};

extern Worker* g_worker;

// worker.cpp
void set_state(WorkerState s);
void open_writer();
void close_writer();
void flush_batch();
void use_caches_for_decoding(bool decoding);
bool extension_installed();
// What a bad capture record was, as plain data (the quarantine's payload is
// made from it inside the wall): a slot message's bytes or an outbox row's text.
struct PoisonRecord {
  const uint8* bytes = nullptr;
  size_t size = 0;
  const char* text = nullptr;
  int64 entity_id = 0;
  bool has_entity = false;
};
bool note_poison(const char* source, const char* where, int policy, const PoisonRecord& r);
void publish_stops();
void write_quarantine();
void in_transaction(void (*fn)());
// One retention pass over the ops WAL directory (retention.cpp); in_transaction.
void retain_segments();
// A relation in_transaction locks (AccessShareLock; with its partitions when
// g_lock_first_inheritors) before it takes the transaction's snapshot, so a
// rewrite of it cannot commit between the snapshot and the read.
extern Oid g_lock_first;
extern bool g_lock_first_inheritors;

// decode_slot.cpp
void create_slot_if_missing();
XLogRecPtr slot_confirmed();
// The end of the WAL inserted so far, as a position XLogFlush accepts and a
// record can end at (GetXLogInsertRecPtr points past the header of a page no
// record has reached yet, which is not written until one does).
XLogRecPtr wal_inserted_end();
void start_decoding();
void stop_decoding(bool drop_slot);
void set_up_origin();
void drop_origin();
void drop_leftover_slot_and_origin();
void decode_available();
bool poll_async_commits();
[[noreturn]] void messages_failed();

// outbox_reader.cpp
bool read_outbox();
bool take_outbox_signal();

// load_runner.cpp
// One step of the active load (pick one at a `look` or right after the last
// ended, read a chunk, or write the one waiting once decoding reached its
// watermark). True while a load is active.
bool load_step(bool look);
// The WAL position decoding must stop at while a chunk waits (0: none).
XLogRecPtr load_decode_limit();
// A record about to enter the batch, committed by `xid` (C++: call in run_cpp).
void load_observe(const EntityRecord& rec, uint32_t xid, bool top_level);
// The ops WAL was closed: what was read and not written is dropped.
void load_stop();

}  // namespace bitdex::pg::bgw
#pragma GCC visibility pop
