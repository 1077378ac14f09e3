// Capture messages of transactions still in progress, kept by transaction id
// until the transaction commits (then read in WAL order, its subtransactions
// merged in) or aborts (then dropped). The worker decodes the WAL itself and
// needs nothing else of PostgreSQL's reorder buffer, which would replay
// every transaction inside a transaction of its own.
//
// Memory is bounded: once the messages held exceed max_bytes, those of the
// largest transaction move to a spill file (spill_dir/bitdex-<xid>.spill,
// records [lsn u64][size u32][bytes]) and are read back from it at commit.
// Spill files are removed when their transaction ends, by the destructor,
// and (left by a crash) by the constructor. Pure C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

namespace bitdex::pipeline {

class TxnMessages {
 public:
  TxnMessages(std::string spill_dir, size_t max_bytes);
  ~TxnMessages();
  TxnMessages(const TxnMessages&) = delete;
  TxnMessages& operator=(const TxnMessages&) = delete;

  // A message of transaction xid at WAL position lsn (rising per xid).
  void add(uint32_t xid, uint64_t lsn, const uint8_t* data, size_t size);

  // Starts reading the messages of top and its committed subtransactions,
  // merged in LSN order; next() yields them, close() forgets them all.
  void open(uint32_t top, const uint32_t* subxacts, size_t nsubxacts);
  // The next message (data valid until the following call); false at the end.
  bool next(uint64_t* lsn, const uint8_t** data, size_t* size);
  void close();

  // Drops the messages of an aborted transaction and its subtransactions.
  void forget(uint32_t top, const uint32_t* subxacts, size_t nsubxacts);
  // Drops every transaction older than oldest_running (it ended in a crash
  // without an abort record). Transaction ids compare modulo 2^32.
  void forget_older_than(uint32_t oldest_running);

  void set_max_bytes(size_t max_bytes);
  size_t memory() const { return memory_; }
  size_t transactions() const { return txns_.size(); }
  uint64_t spills() const { return spills_; }

 private:
  struct Msg {
    uint64_t lsn;
    uint32_t offset, size;  // in Txn::bytes
  };
  struct Txn {
    std::vector<Msg> msgs;
    std::string bytes;
    size_t held = 0;             // bytes counted in memory_
    std::FILE* spill = nullptr;  // open while it has spilled messages
    uint64_t spilled = 0;        // messages in the spill file
  };
  // A transaction being read: its spill file first, then what is in memory.
  struct Cursor {
    Txn* txn = nullptr;
    uint32_t xid = 0;
    uint64_t spilled_left = 0;
    size_t in_memory = 0;
    uint64_t lsn = 0;  // of the current message
    const uint8_t* data = nullptr;
    size_t size = 0;
    std::vector<uint8_t> buf;  // the current spilled message
    bool done = false;
  };

  std::string spill_path(uint32_t xid) const;
  bool spill_largest();  // false when nothing is left to spill
  void drop(uint32_t xid);
  void advance(Cursor& c);

  std::string dir_;
  size_t max_bytes_;
  size_t memory_ = 0;
  uint64_t spills_ = 0;
  std::unordered_map<uint32_t, Txn> txns_;
  std::vector<Cursor> cursors_;
  Cursor* returned_ = nullptr;     // its message was returned by next()
  std::vector<uint32_t> reading_;  // xids open() took
};

}  // namespace bitdex::pipeline
