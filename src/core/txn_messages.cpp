// Messages of transactions in progress, held until commit or abort.
#include "bitdex_sync/core/txn_messages.hpp"

#include <cerrno>
#include <cstring>

#include "bitdex_sync/core/cpp_only.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"

namespace bitdex::pipeline {

namespace {

constexpr char kSpillPrefix[] = "bitdex-";
constexpr char kSpillSuffix[] = ".spill";

bool is_spill_file(const std::string& name) {
  const size_t p = sizeof kSpillPrefix - 1, s = sizeof kSpillSuffix - 1;
  return name.size() > p + s && name.compare(0, p, kSpillPrefix) == 0 &&
         name.compare(name.size() - s, s, kSpillSuffix) == 0;
}

// True when a precedes b, modulo 2^32 (PostgreSQL's TransactionIdPrecedes
// for normal ids).
bool xid_precedes(uint32_t a, uint32_t b) {
  return static_cast<int32_t>(a - b) < 0;
}

}  // namespace

TxnMessages::TxnMessages(std::string spill_dir, size_t max_bytes) : dir_(std::move(spill_dir)), max_bytes_(max_bytes) {
  // Files a crash left: their transactions are decoded again from the WAL.
  if (fileio::exists(dir_))
    for (const std::string& name : fileio::list_dir(dir_))
      if (is_spill_file(name)) std::remove((dir_ + "/" + name).c_str());
}

TxnMessages::~TxnMessages() {
  for (auto& [xid, t] : txns_)
    if (t.spill) {
      std::fclose(t.spill);
      std::remove(spill_path(xid).c_str());
    }
}

std::string TxnMessages::spill_path(uint32_t xid) const {
  return dir_ + "/" + kSpillPrefix + std::to_string(xid) + kSpillSuffix;
}

void TxnMessages::add(uint32_t xid, uint64_t lsn, const uint8_t* data, size_t size) {
  if (size > UINT32_MAX) throw Error(ErrorKind::InvalidInput, "a capture message larger than 4 GB");
  Txn& t = txns_[xid];
  t.msgs.push_back(Msg{lsn, static_cast<uint32_t>(t.bytes.size()), static_cast<uint32_t>(size)});
  t.bytes.append(reinterpret_cast<const char*>(data), size);
  const size_t n = size + sizeof(Msg);
  t.held += n;
  memory_ += n;
  while (memory_ > max_bytes_ && spill_largest()) {
  }
}

// Moves the messages of the transaction holding the most memory to its
// spill file (appending: a transaction may spill many times).
bool TxnMessages::spill_largest() {
  uint32_t xid = 0;
  Txn* big = nullptr;
  for (auto& [x, t] : txns_)
    if (!big || t.held > big->held) {
      big = &t;
      xid = x;
    }
  if (!big || big->msgs.empty()) return false;
  const std::string path = spill_path(xid);
  if (!big->spill) {
    big->spill = std::fopen(path.c_str(), "w+b");
    if (!big->spill) throw_io_error("create spill file", path, errno);
  }
  for (const Msg& m : big->msgs) {
    uint8_t head[12];
    std::memcpy(head, &m.lsn, 8);
    std::memcpy(head + 8, &m.size, 4);
    if (std::fwrite(head, 1, sizeof head, big->spill) != sizeof head ||
        std::fwrite(big->bytes.data() + m.offset, 1, m.size, big->spill) != m.size)
      throw_io_error("write spill file", path, errno);
  }
  big->spilled += big->msgs.size();
  memory_ -= big->held;
  big->held = 0;
  std::vector<Msg>().swap(big->msgs);  // give the memory back
  std::string().swap(big->bytes);
  spills_++;
  return true;
}

void TxnMessages::drop(uint32_t xid) {
  auto it = txns_.find(xid);
  if (it == txns_.end()) return;
  memory_ -= it->second.held;
  if (it->second.spill) {
    std::fclose(it->second.spill);
    std::remove(spill_path(xid).c_str());
  }
  txns_.erase(it);
}

void TxnMessages::open(uint32_t top, const uint32_t* subxacts, size_t nsubxacts) {
  cursors_.clear();
  returned_ = nullptr;
  reading_.assign(1, top);
  reading_.insert(reading_.end(), subxacts, subxacts + nsubxacts);
  for (uint32_t xid : reading_) {
    auto it = txns_.find(xid);
    if (it == txns_.end()) continue;
    Txn& t = it->second;
    if (t.spill) {
      if (std::fflush(t.spill) != 0 || std::fseek(t.spill, 0, SEEK_SET) != 0)
        throw_io_error("rewind spill file", spill_path(xid), errno);
    }
    Cursor c;
    c.txn = &t;
    c.xid = xid;
    c.spilled_left = t.spilled;
    cursors_.push_back(std::move(c));
    advance(cursors_.back());
  }
}

// Moves the cursor to its transaction's next message.
void TxnMessages::advance(Cursor& c) {
  if (c.spilled_left > 0) {
    uint8_t head[12];
    if (std::fread(head, 1, sizeof head, c.txn->spill) != sizeof head)
      throw Error(ErrorKind::Io, "spill file " + spill_path(c.xid) + " ends early");
    uint32_t size;
    std::memcpy(&c.lsn, head, 8);
    std::memcpy(&size, head + 8, 4);
    c.buf.resize(size);
    if (size > 0 && std::fread(c.buf.data(), 1, size, c.txn->spill) != size)
      throw Error(ErrorKind::Io, "spill file " + spill_path(c.xid) + " ends early");
    c.data = c.buf.data();
    c.size = size;
    c.spilled_left--;
    return;
  }
  if (c.in_memory < c.txn->msgs.size()) {
    const Msg& m = c.txn->msgs[c.in_memory++];
    c.lsn = m.lsn;
    c.data = reinterpret_cast<const uint8_t*>(c.txn->bytes.data()) + m.offset;
    c.size = m.size;
    return;
  }
  c.done = true;
}

bool TxnMessages::next(uint64_t* lsn, const uint8_t** data, size_t* size) {
  // The message returned last stays valid until now: only now move on.
  if (returned_) {
    advance(*returned_);
    returned_ = nullptr;
  }
  // The cursor whose message comes first; there is one per transaction or
  // subtransaction with messages, seldom more than a few.
  Cursor* best = nullptr;
  for (Cursor& c : cursors_)
    if (!c.done && (!best || c.lsn < best->lsn)) best = &c;
  if (!best) return false;
  *lsn = best->lsn;
  *data = best->data;
  *size = best->size;
  returned_ = best;
  return true;
}

void TxnMessages::close() {
  cursors_.clear();
  returned_ = nullptr;
  for (uint32_t xid : reading_) drop(xid);
  reading_.clear();
}

void TxnMessages::forget(uint32_t top, const uint32_t* subxacts, size_t nsubxacts) {
  drop(top);
  for (size_t i = 0; i < nsubxacts; i++) drop(subxacts[i]);
}

void TxnMessages::forget_older_than(uint32_t oldest_running) {
  std::vector<uint32_t> old;
  for (const auto& [xid, t] : txns_)
    if (xid_precedes(xid, oldest_running)) old.push_back(xid);
  for (uint32_t xid : old) drop(xid);
}

void TxnMessages::set_max_bytes(size_t max_bytes) {
  max_bytes_ = max_bytes;
  while (memory_ > max_bytes_ && spill_largest()) {
  }
}

}  // namespace bitdex::pipeline
