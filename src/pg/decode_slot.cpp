// The worker's slot: created once, then decoded in-process by one
// long-lived decoding context; each committed transaction's capture messages
// go into the open batch in commit order, positioned (commit LSN, index in
// transaction). The slot is confirmed only once they are durable.
//
// How it decodes: the context runs in fast-forward mode, so PostgreSQL keeps
// the slot's bookkeeping (snapshot builder, restart position, the oldest
// transaction still running) but queues no changes and replays nothing —
// its reorder buffer would queue every row change of the database and
// replay each committed transaction inside a transaction of its own (a
// start and an abort per decoded transaction, most of the worker's time
// under a write load). The worker reads the records it needs itself: the
// capture messages (held per transaction in TxnMessages, spilling past
// logical_decoding_work_mem), commits (read the transaction's messages and
// its subtransactions' in WAL order), aborts and running-transactions
// records (drop them).
//
// Why replaying is safe: the slot's confirmed position reaches disk lazily,
// so after a crash the slot may hand out transactions the WAL already holds.
// The WAL records, per stream, the highest position it covers; the batcher
// skips anything at or below it. Nothing is confirmed before it is durable,
// so nothing is lost either.
#include <string>

#include "bitdex_sync/core/capture_format.hpp"
#include "bitdex_sync/pg/capture_key.hpp"
#include "bitdex_sync/pg/compat.hpp"
#include "bitdex_sync/pg/txn_hooks.hpp"
#include "bitdex_sync/pg/worker_state.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "replication/snapbuild.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "storage/standbydefs.h"
}

namespace bitdex::pg::bgw {

XLogRecPtr wal_inserted_end() {
  XLogRecPtr at = GetXLogInsertRecPtr();
  if (XLogSegmentOffset(at, wal_segment_size) == SizeOfXLogLongPHD)
    at -= SizeOfXLogLongPHD;
  else if (at % XLOG_BLCKSZ == SizeOfXLogShortPHD)
    at -= SizeOfXLogShortPHD;
  return at;
}

namespace {

// The worker's replication origin: "bitdex_sync_<database oid>".
void origin_name(char (&name)[NAMEDATALEN]) {
  snprintf(name, sizeof name, "bitdex_sync_%u", MyDatabaseId);
}

// Reads a WAL page for decoding. A record may cross the flush pointer the
// worker decodes up to: then the page is "not available" (-1), XLogReadRecord
// returns no record and no error, and the cycle ends there; the next one
// reads the record again from its start once the rest is flushed (the commit
// that flushes it wakes the worker). Waiting here instead would poll for
// every such record, hundreds of times a second under load.
int read_wal_page(XLogReaderState* state, XLogRecPtr page, int want, XLogRecPtr record, char* buf) {
  if (page + want > GetFlushRecPtr(nullptr)) {
    g_worker->wal_unflushed = true;
    return -1;
  }
  return read_local_xlog_page(state, page, want, record, buf);
}

// Creating the slot must find its start point in WAL that may not be
// flushed yet: it waits, like read_local_xlog_page, but also leaves if the
// postmaster died (which would never flush it) or SIGTERM came.
int read_wal_page_waiting(XLogReaderState* state, XLogRecPtr page, int want, XLogRecPtr record, char* buf) {
  while (page + want > GetFlushRecPtr(nullptr)) {
    if (!PostmasterIsAlive() || ShutdownRequestPending) proc_exit(1);
    CHECK_FOR_INTERRUPTS();
    pg_usleep(1000L);
  }
  return read_local_xlog_page(state, page, want, record, buf);
}

// XL_ROUTINE is C only.
XLogReaderRoutine g_wal_routine = {read_wal_page, wal_segment_open, wal_segment_close};

XLogReaderRoutine g_wal_routine_waiting = {read_wal_page_waiting, wal_segment_open, wal_segment_close};

bool is_worker_origin(RepOriginId origin) {
  return origin != InvalidRepOriginId && origin == g_worker->origin;
}

// A message with our prefix that the capture trigger did not write in the
// transaction it is in: any role may call pg_logical_emit_message(). It is
// dropped, never written and never taken for poison (which could stop the
// slot); status() counts it, and the log says so at most every minute.
void reject_message(XLogRecPtr lsn) {
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  const uint64 total = ++w->rejected_messages;
  SpinLockRelease(&w->mutex);
  const TimestampTz now = GetCurrentTimestamp();
  if (g_worker->rejected_warned_at && !TimestampDifferenceExceeds(g_worker->rejected_warned_at, now, 60 * 1000)) return;
  g_worker->rejected_warned_at = now;
  ereport(WARNING, (errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
                    errmsg("bitdex_sync: rejected a logical message with prefix \"%s\" that the capture trigger did "
                           "not write (at %X/%X)",
                           capture::kMessagePrefix, BDX_LSN_ARGS(lsn)),
                    errdetail("%llu such messages were rejected by this worker; none reaches the ops WAL.",
                              static_cast<unsigned long long>(total)),
                    errhint("Some role called pg_logical_emit_message() with this prefix.")));
}

// A transactional capture message of this database: held until its
// transaction ends. Like PostgreSQL's own decoding, only once the snapshot
// builder can decode whole transactions (any transaction committing after
// the slot's start began after that).
void hold_message(LogicalDecodingContext* ctx, XLogReaderState* r) {
  if ((XLogRecGetInfo(r) & ~XLR_INFO_MASK) != XLOG_LOGICAL_MESSAGE) return;
  const auto* m = reinterpret_cast<const xl_logical_message*>(XLogRecGetData(r));
  if (!m->transactional || m->dbId != MyDatabaseId || is_worker_origin(XLogRecGetOrigin(r))) return;
  if (m->prefix_size != sizeof capture::kMessagePrefix ||
      memcmp(m->message, capture::kMessagePrefix, sizeof capture::kMessagePrefix) != 0)
    return;
  if (SnapBuildCurrentState(ctx->snapshot_builder) < SNAPBUILD_FULL_SNAPSHOT) return;
  const TransactionId xid = XLogRecGetXid(r);
  const XLogRecPtr lsn = r->ReadRecPtr;
  const auto* data = reinterpret_cast<const uint8_t*>(m->message + m->prefix_size);
  const size_t size = m->message_size;
  // Authenticated at commit, when the transaction it belongs to is known
  // (capture_format.hpp); what can never authenticate is dropped now.
  const bool known = size > 0 && ((data[0] == capture::kFormat && size >= capture::kHeaderSize) ||
                                  (data[0] == capture::kFormatClear && size >= capture::kClearHeaderSize));
  if (!known) {
    reject_message(lsn);
    return;
  }
  if (!run_cpp(
          [&] {
            g_worker->messages->add(xid, lsn, data, size);
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    messages_failed();
}

// One capture message of a committed transaction, in commit order: decoded
// into the open batch, or quarantined.
void take_message(XLogRecPtr commit_lsn, TimestampTz commit_time, TransactionId xid, uint32_t index,
                  const uint8_t* data, size_t size) {
  if (g_worker->slot_stop_requested) return;  // stopped in front of a poison record
  if (!capture::authentic(data, size, *g_worker->mac, MyDatabaseId, xid)) {
    reject_message(commit_lsn);
    return;
  }
  bool added = false;
  bool ok = run_cpp(
      [&] {
        EntityRecord r = capture::decode(data, size);
        r.pos = SourcePos{Stream::Slot, commit_lsn, index};
        load_observe(r, xid, true);
        added = g_worker->batcher->add(std::move(r));
        return true;
      },
      g_worker->error, sizeof g_worker->error);
  if (!ok) {
    // A payload the trigger could not have written.
    char where[64];
    snprintf(where, sizeof where, "%X/%X:%u", BDX_LSN_ARGS(commit_lsn), index);
    PoisonRecord bad;
    bad.bytes = reinterpret_cast<const uint8*>(data);
    bad.size = size;
    if (note_poison("slot", where, g_on_poison_slot, bad)) g_worker->slot_stop_requested = true;
    return;
  }
  if (!added) return;
  if (!g_worker->batch_opened) g_worker->batch_opened = GetCurrentTimestamp();
  if (g_worker->commit_times.empty() || g_worker->commit_times.back() != commit_time)
    g_worker->commit_times.push_back(commit_time);
  if (g_worker->batcher->full()) flush_batch();
}

static_assert(sizeof(TransactionId) == sizeof(uint32_t));

// A commit: its messages and those of its committed subtransactions, in WAL
// order, numbered from 0 — unless PostgreSQL's decoding would skip it
// (committed before the slot's confirmed start) or it is the worker's own.
void commit_record(LogicalDecodingContext* ctx, XLogReaderState* r, uint8 info) {
  xl_xact_parsed_commit parsed;
  ParseCommitRecord(XLogRecGetInfo(r), reinterpret_cast<xl_xact_commit*>(XLogRecGetData(r)), &parsed);
  const TransactionId xid = info == XLOG_XACT_COMMIT_PREPARED ? parsed.twophase_xid : XLogRecGetXid(r);
  const XLogRecPtr commit_lsn = r->ReadRecPtr;
  const bool skip = SnapBuildXactNeedsSkip(ctx->snapshot_builder, commit_lsn) || is_worker_origin(XLogRecGetOrigin(r));
  if (!run_cpp(
          [&] {
            if (skip)
              g_worker->messages->forget(xid, parsed.subxacts, size_t(parsed.nsubxacts));
            else
              g_worker->messages->open(xid, parsed.subxacts, size_t(parsed.nsubxacts));
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    messages_failed();
  if (skip) return;
  for (uint32_t index = 0;; index++) {
    uint64_t lsn;
    const uint8_t* data;
    size_t size;
    bool more = false;
    if (!run_cpp(
            [&] {
              more = g_worker->messages->next(&lsn, &data, &size);
              return true;
            },
            g_worker->error, sizeof g_worker->error))
      messages_failed();
    if (!more) break;
    take_message(commit_lsn, parsed.xact_time, xid, index, data, size);
  }
  // Its records precede any load chunk read from now on: a chunk's
  // snapshot must see it (load.hpp).
  if (run_cpp(
          [&] {
            g_worker->recent->add(xid);
            return true;
          },
          g_worker->error, sizeof g_worker->error) == false)
    messages_failed();
  run_cpp(
      [] {
        g_worker->messages->close();
        return true;
      },
      g_worker->error, sizeof g_worker->error);
}

// An abort (of a transaction, a subtransaction or a prepared transaction):
// its messages and those of the subtransactions it lists are dropped.
void abort_record(XLogReaderState* r, uint8 info) {
  xl_xact_parsed_abort parsed;
  ParseAbortRecord(XLogRecGetInfo(r), reinterpret_cast<xl_xact_abort*>(XLogRecGetData(r)), &parsed);
  const TransactionId xid = info == XLOG_XACT_ABORT_PREPARED ? parsed.twophase_xid : XLogRecGetXid(r);
  run_cpp(
      [&] {
        g_worker->messages->forget(xid, parsed.subxacts, size_t(parsed.nsubxacts));
        return true;
      },
      g_worker->error, sizeof g_worker->error);
}

// What the worker reads of a record PostgreSQL's decoding has just processed
// (fast-forward: it kept only the slot's bookkeeping).
void take_record(LogicalDecodingContext* ctx) {
  XLogReaderState* r = ctx->reader;
  switch (XLogRecGetRmid(r)) {
    case RM_LOGICALMSG_ID: hold_message(ctx, r); break;
    case RM_XACT_ID: {
      const uint8 info = XLogRecGetInfo(r) & XLOG_XACT_OPMASK;
      if (info == XLOG_XACT_COMMIT || info == XLOG_XACT_COMMIT_PREPARED) commit_record(ctx, r, info);
      if (info == XLOG_XACT_ABORT || info == XLOG_XACT_ABORT_PREPARED) abort_record(r, info);
      break;
    }
    case RM_STANDBY_ID:
      // Transactions older than the oldest still running ended in a crash
      // without an abort record (PostgreSQL's ReorderBufferAbortOld).
      if ((XLogRecGetInfo(r) & ~XLR_INFO_MASK) == XLOG_RUNNING_XACTS) {
        const TransactionId oldest = reinterpret_cast<const xl_running_xacts*>(XLogRecGetData(r))->oldestRunningXid;
        run_cpp(
            [&] {
              g_worker->messages->forget_older_than(oldest);
              g_worker->recent->forget_older_than(oldest);
              return true;
            },
            g_worker->error, sizeof g_worker->error);
      }
      break;
    default: break;
  }
}

}  // namespace

// Creates the slot (persistent, this library as its plugin) if missing.
void create_slot_if_missing() {
  if (SearchNamedReplicationSlot(g_worker->slot_name.c_str(), true)) return;
  CheckLogicalDecodingRequirements();
  compat::create_logical_slot(g_worker->slot_name.c_str());
  LogicalDecodingContext* c = CreateInitDecodingContext("bitdex_sync", NIL, false, InvalidXLogRecPtr,
                                                        &g_wal_routine_waiting, nullptr, nullptr, nullptr);
  DecodingContextFindStartpoint(c);
  FreeDecodingContext(c);
  ReplicationSlotPersist();
  ReplicationSlotRelease();
  ereport(LOG, (errmsg("bitdex_sync: created logical replication slot \"%s\"", g_worker->slot_name.c_str())));
}

// The slot's confirmed position, read without acquiring it (0: no slot).
XLogRecPtr slot_confirmed() {
  XLogRecPtr confirmed = InvalidXLogRecPtr;
  LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
  if (ReplicationSlot* s = SearchNamedReplicationSlot(g_worker->slot_name.c_str(), false)) {
    SpinLockAcquire(&s->mutex);
    confirmed = s->data.confirmed_flush;
    SpinLockRelease(&s->mutex);
  }
  LWLockRelease(ReplicationSlotControlLock);
  return confirmed;
}

// Acquires the slot and keeps one decoding context for the worker's life,
// reading on from where the previous cycle stopped.
void start_decoding() {
  if (g_worker->ctx) return;
  g_worker->mac = capture_mac();
  if (!g_worker->mac) ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("bitdex_sync: no capture key")));
  compat::acquire_slot(g_worker->slot_name.c_str());
  // Spill files go with the slot: dropping it removes its directory.
  char spill_dir[MAXPGPATH];
  snprintf(spill_dir, sizeof spill_dir, "pg_replslot/%s", g_worker->slot_name.c_str());
  if (!run_cpp(
          [&] {
            g_worker->messages =
                std::make_unique<pipeline::TxnMessages>(spill_dir, size_t(logical_decoding_work_mem) * 1024);
            return true;
          },
          g_worker->error, sizeof g_worker->error))
    ereport(ERROR, (errcode(ERRCODE_IO_ERROR), errmsg("bitdex_sync: %s", g_worker->error)));
  // Fast-forward: see the top of this file.
  g_worker->ctx = CreateDecodingContext(InvalidXLogRecPtr, NIL, true, &g_wal_routine, nullptr, nullptr, nullptr);
  // The whole of every transaction committed after confirmed_flush must be
  // seen, so reading starts at restart_lsn.
  XLogBeginRead(g_worker->ctx->reader, MyReplicationSlot->data.restart_lsn);
  g_worker->confirmed = MyReplicationSlot->data.confirmed_flush;
}

void stop_decoding(bool drop_slot) {
  if (g_worker->ctx) {
    FreeDecodingContext(g_worker->ctx);
    g_worker->ctx = nullptr;
    ReplicationSlotRelease();
    run_cpp(
        [] {
          g_worker->messages.reset();
          return true;
        },
        g_worker->error, sizeof g_worker->error);
  }
  if (drop_slot && SearchNamedReplicationSlot(g_worker->slot_name.c_str(), true)) {
    ReplicationSlotDrop(g_worker->slot_name.c_str(), true);
    ereport(LOG, (errmsg("bitdex_sync: extension dropped, dropped slot \"%s\"", g_worker->slot_name.c_str())));
  }
}

namespace {

// Drops replication origin `name` in a transaction of its own; false when
// there was none.
bool drop_origin_named(const char* name) {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  const bool existed = replorigin_by_name(name, true) != InvalidRepOriginId;
  if (existed) replorigin_drop_by_name(name, true, false);
  CommitTransactionCommand();
  return existed;
}

}  // namespace

// A worker that finds no extension at its start: the slot and origin of an
// installation dropped just before a restart (the worker had no time to drop
// them) go now. A slot left behind would pin the server's WAL and make DROP
// DATABASE fail.
void drop_leftover_slot_and_origin() {
  char name[NAMEDATALEN];
  origin_name(name);  // the slot's name too: bitdex_sync_<database OID>
  if (SearchNamedReplicationSlot(name, true)) {
    ReplicationSlotDrop(name, true);
    ereport(LOG, (errmsg("bitdex_sync: no extension in this database, dropped the slot \"%s\" it left", name)));
  }
  if (drop_origin_named(name))
    ereport(LOG, (errmsg("bitdex_sync: no extension in this database, dropped the origin \"%s\"", name)));
}

// The extension is gone: its replication origin goes too (CREATE EXTENSION
// makes a new one), once per process. The session lets go of it first: a
// drop refuses an origin in use.
void drop_origin() {
  if (g_worker->origin_dropped) return;
  if (g_worker->origin != InvalidRepOriginId) {
    replorigin_session_reset();
    replorigin_session_origin = InvalidRepOriginId;
    g_worker->origin = InvalidRepOriginId;
  }
  char name[NAMEDATALEN];
  origin_name(name);
  const bool existed = drop_origin_named(name);
  g_worker->origin_dropped = true;
  if (existed) ereport(LOG, (errmsg("bitdex_sync: extension dropped, dropped replication origin \"%s\"", name)));
}

// Tags every transaction of this process with the replication origin
// "bitdex_sync_<database oid>" (created once), so the worker's decoding
// skips its own writes.
void set_up_origin() {
  char name[NAMEDATALEN];
  origin_name(name);
  RepOriginId id = replorigin_by_name(name, true);
  if (id == InvalidRepOriginId) id = replorigin_create(name);
  g_worker->origin = id;
  g_worker->origin_dropped = false;
}

// Decodes everything flushed so far; batches are written as they fill or
// age, and the rest at the end. Then confirms the slot up to where decoding
// stopped: every transaction committed before it is durable in the ops WAL.
void decode_available() {
  LogicalDecodingContext* ctx = g_worker->ctx;
  XLogRecPtr end_of_wal = GetFlushRecPtr(nullptr);
  // While a load chunk waits for its place, decoding stops there.
  const XLogRecPtr limit = load_decode_limit();
  if (limit != InvalidXLogRecPtr && limit < end_of_wal) end_of_wal = limit;
  // Woken by a commit not flushed yet (synchronous_commit = off): nothing to
  // do, unless what was decoded is still to be confirmed (see below).
  if (ctx->reader->EndRecPtr >= end_of_wal &&
      !(ctx->reader->EndRecPtr > g_worker->confirmed &&
        TimestampDifferenceExceeds(g_worker->marked_at, GetCurrentTimestamp(), g_naptime_ms)))
    return;
  use_caches_for_decoding(true);
  g_worker->wal_unflushed = false;
  const uint64 batches_before = g_worker->batcher->totals().batches;
  while (ctx->reader->EndRecPtr < end_of_wal) {
    char* errm = nullptr;
    XLogRecord* record = XLogReadRecord(ctx->reader, &errm);
    if (errm) elog(ERROR, "bitdex_sync: could not read WAL for decoding: %s", errm);
    if (!record && g_worker->wal_unflushed) break;  // the rest of it is not flushed yet
    if (record && limit != InvalidXLogRecPtr && ctx->reader->ReadRecPtr >= limit) {
      // A load chunk goes here, before this record: read it again later.
      XLogBeginRead(ctx->reader, ctx->reader->ReadRecPtr);
      break;
    }
    if (record) {
      LogicalDecodingProcessRecord(ctx, ctx->reader);
      take_record(ctx);
    }
    if (g_worker->batch_opened &&
        TimestampDifferenceExceeds(g_worker->batch_opened, GetCurrentTimestamp(), g_batch_max_delay_ms))
      flush_batch();
    if (g_worker->slot_stop_requested) break;
    CHECK_FOR_INTERRUPTS();
  }
  // The slot is confirmed only as far as the ops WAL covers it: its slot
  // mark is raised to where decoding stopped, in the last batch (or, when
  // there were no records, in a batch of its own at most every naptime), so
  // that at open a WAL behind the slot's confirmed position is known to have
  // lost acknowledged batches. Every transaction committing before `done`
  // was read whole; one committing later starts at or after it.
  const XLogRecPtr done = ctx->reader->EndRecPtr;
  const TimestampTz now = GetCurrentTimestamp();
  const bool records = !g_worker->batcher->empty() || g_worker->batcher->totals().batches != batches_before;
  const bool confirm = !g_worker->slot_stop_requested && done > g_worker->confirmed &&
                       (records || TimestampDifferenceExceeds(g_worker->marked_at, now, g_naptime_ms));
  if (confirm) {
    run_cpp(
        [&] {
          g_worker->batcher->cover(SourcePos{Stream::Slot, done - 1, UINT32_MAX});
          return true;
        },
        g_worker->error, sizeof g_worker->error);
    if (!records) g_worker->marked_at = now;
  }
  flush_batch();
  if (!g_worker->quarantine.empty()) in_transaction(write_quarantine);
  if (g_worker->slot_stop_requested) {
    // Everything before the poison record is durable; the slot is not
    // confirmed past it. Decoding starts again from the slot after a reload.
    g_worker->slot_stop_requested = false;
    g_worker->slot_stopped = true;
    stop_decoding(false);
    publish_stops();
    return;
  }
  if (confirm) {
    LogicalConfirmReceivedLocation(done);
    g_worker->confirmed = done;
  }
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->durable_lsn = done;
  w->failures = 0;
  SpinLockRelease(&w->mutex);
}

// True while a commit made with synchronous_commit = off lies beyond what
// was decoded: then its backend did not wake us (see at_transaction_end),
// and the worker looks again after wal_writer_delay. The flag is set in the
// same critical section that reads the position, so a commit either sees it
// or wakes the worker.
bool poll_async_commits() {
  const XLogRecPtr decoded = g_worker->ctx ? g_worker->ctx->reader->EndRecPtr : InvalidXLogRecPtr;
  WorkerShared* w = g_worker->shared;
  SpinLockAcquire(&w->mutex);
  w->async_polling = g_worker->ctx && w->async_commit_end > decoded;
  const bool polling = w->async_polling;
  SpinLockRelease(&w->mutex);
  return polling;
}

// Raises the error run_cpp recorded.
[[noreturn]] void messages_failed() {
  ereport(ERROR, (errcode(ERRCODE_IO_ERROR), errmsg("bitdex_sync: decoding: %s", g_worker->error)));
}

}  // namespace bitdex::pg::bgw
