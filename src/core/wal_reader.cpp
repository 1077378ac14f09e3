// The reader keeps only bytes from its cursor on, hands out whole batches,
// and re-reads the tail on every call after a Wait, because bytes the writer
// is still writing can change under it.
#include "bitdex_sync/core/wal_reader.hpp"

#include <fcntl.h>

#include <algorithm>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::wal {
namespace {
constexpr size_t kReadChunk = 4u << 20;
}

WalReader::WalReader(std::string dir, const Cursor& start)
    : dir_(std::move(dir)), wal_id_(start.wal_id), gen_(start.generation), off_(start.offset) {}

void WalReader::corrupt(uint64_t offset, const std::string& why) const {
  throw Error(
      ErrorKind::Corrupt,
      "ops WAL corrupt in segment " + std::to_string(gen_) + " at offset " + std::to_string(offset) + ": " + why,
      "File " + path_ + ".", "Run bitdex-wal verify on the directory.");
}

bool WalReader::sealed() const {
  return fileio::exists(segment_path(dir_, gen_ + 1));
}

// Opens segment gen_ (choosing the oldest when gen_ is 0). False: none yet.
bool WalReader::open_segment() {
  std::vector<uint64_t> gens = fileio::exists(dir_) ? list_segments(dir_) : std::vector<uint64_t>{};
  if (gens.empty()) return false;
  if (gen_ == 0) {
    gen_ = gens.front();
    off_ = 0;
  }
  if (gen_ < gens.front())
    throw Error(ErrorKind::InvalidInput,
                "ops WAL segment " + std::to_string(gen_) + " was already removed from \"" + dir_ + "\"",
                "The consumer fell behind retention.", "Rebuild this consumer from a fresh dump.");
  if (gen_ > gens.back())
    throw Error(ErrorKind::InvalidInput, "cursor points past the newest ops WAL segment in \"" + dir_ + "\"");
  path_ = segment_path(dir_, gen_);
  fd_ = fileio::open_file(path_, O_RDONLY);
  std::string head(kSegmentHeaderFixed + kMarkSize * kMaxMarks + 4, '\0');
  head.resize(fileio::pread_full(fd_.get(), head.data(), head.size(), 0, path_));
  SegmentHeader h;
  size_t hlen = 0;
  std::string why;
  Parse st = decode_segment_header(reinterpret_cast<const uint8_t*>(head.data()), head.size(), &h, &hlen, &why);
  if (st != Parse::Ok) corrupt(0, st == Parse::Incomplete ? "truncated segment header" : why);
  if (h.generation != gen_) corrupt(0, "header claims generation " + std::to_string(h.generation));
  if (wal_id_ == 0) wal_id_ = h.wal_id;
  if (h.wal_id != wal_id_)
    throw Error(ErrorKind::InvalidInput, "ops WAL in \"" + dir_ + "\" is not the one this cursor belongs to",
                "The WAL id differs: the directory was re-created.", "Rebuild this consumer from a fresh dump.");
  if (off_ == 0 || off_ == hlen) {
    off_ = hlen;
    expected_seq_ = h.next_batch_seq;
  } else if (off_ < hlen) {
    corrupt(off_, "cursor points inside the segment header");
  }
  drop_buffer();
  return true;
}

size_t WalReader::read_more(size_t want) {
  if (start_ > 0) {  // compact only when reading: one move per chunk, not per batch
    buf_.erase(0, start_);
    start_ = 0;
  }
  size_t old = buf_.size();
  // Never allocate more than the file holds: a torn length field may claim
  // up to the 256 MiB record limit.
  uint64_t size = fileio::file_size(fd_.get(), path_);
  uint64_t have = off_ + old;
  if (size <= have) return 0;
  want = static_cast<size_t>(std::min<uint64_t>(want, size - have));
  buf_.resize(old + want);
  size_t got = fileio::pread_full(fd_.get(), buf_.data() + old, want, off_ + old, path_);
  buf_.resize(old + got);
  return got;
}

void WalReader::drop_buffer() {
  buf_.clear();
  start_ = 0;
}

ReadStatus WalReader::next(WalBatch* out) {
  tail_note_.clear();
  if (!fd_.valid() && !open_segment()) return ReadStatus::Wait;
  for (;;) {
    const auto* p = reinterpret_cast<const uint8_t*>(buf_.data()) + start_;
    BatchCut cut = cut_batch(p, buf_.size() - start_);
    const size_t at = cut.bad_at;
    const std::string& why = cut.why;
    if (cut.status == Parse::Ok) {
      if (expected_seq_ != 0 && cut.end.batch_seq != expected_seq_)
        corrupt(off_ + at, "batch " + std::to_string(cut.end.batch_seq) + " where " + std::to_string(expected_seq_) +
                               " was expected");
      out->seq = cut.end.batch_seq;
      out->marks = std::move(cut.end.marks);
      if (raw_) {
        out->records.clear();
        out->raw.assign(reinterpret_cast<const char*>(p), cut.len);
      } else {
        try {
          decode_cut(cut, off_, &out->records);
        } catch (const Error& e) {
          corrupt(off_, e.what());
        }
      }
      out->begin = cursor();
      out->bytes = cut.len;
      off_ += cut.len;
      start_ += cut.len;
      expected_seq_ = out->seq + 1;
      out->end = cursor();
      return ReadStatus::Batch;
    }
    if (cut.status == Parse::Corrupt && cut.certain) corrupt(off_ + at, why);
    const Parse st = cut.status;
    const size_t need = cut.need;
    if (st == Parse::Corrupt) {
      if (sealed()) corrupt(off_ + at, why);
      // In the segment being written a bad record may be a write in progress,
      // unless a later complete batch proves otherwise.
      while (read_more(kReadChunk) > 0) {
      }
      const auto* all = reinterpret_cast<const uint8_t*>(buf_.data()) + start_;
      if (later_batch_exists(all, buf_.size() - start_, at + 1, expected_seq_ ? expected_seq_ : 0))
        corrupt(off_ + at, why);
      tail_note_ = "record at offset " + std::to_string(off_ + at) + " fails its check (" + why +
                   "): a write in progress or a torn tail";
      drop_buffer();
      return ReadStatus::Wait;
    }
    // Incomplete: read more of the file.
    if (read_more(std::max(kReadChunk, need)) > 0) continue;
    // At end of file. Once the next segment exists this one never grows, but
    // it may have grown between our read and that check: read once more.
    if (!sealed()) {
      if (buf_.size() > start_)
        tail_note_ = "incomplete batch of " + std::to_string(buf_.size() - start_) + " bytes at offset " +
                     std::to_string(off_) + ": a write in progress or a torn tail";
      drop_buffer();
      return ReadStatus::Wait;
    }
    if (read_more(kReadChunk) > 0) continue;
    if (buf_.size() > start_) corrupt(off_, "sealed segment ends inside a batch");
    gen_++;
    off_ = 0;
    fd_ = fileio::Fd();
    if (!open_segment()) return ReadStatus::Wait;
  }
}

WalBatch decode_batch_bytes(const std::string& bytes, uint64_t expected_seq) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  BatchCut cut = cut_batch(p, bytes.size());
  auto bad = [&](const std::string& why) {
    throw Error(ErrorKind::Corrupt, "ops WAL batch received is corrupt: " + why,
                "It holds " + std::to_string(bytes.size()) + " bytes.");
  };
  if (cut.status == Parse::Incomplete) bad("it ends inside a record");
  if (cut.status == Parse::Corrupt) bad(cut.why + " at byte " + std::to_string(cut.bad_at));
  if (cut.len != bytes.size()) bad("bytes follow its batch end");
  if (expected_seq != 0 && cut.end.batch_seq != expected_seq)
    bad("batch " + std::to_string(cut.end.batch_seq) + " where " + std::to_string(expected_seq) + " was expected");
  WalBatch b;
  b.seq = cut.end.batch_seq;
  b.marks = std::move(cut.end.marks);
  b.bytes = cut.len;
  try {
    decode_cut(cut, 0, &b.records);
  } catch (const Error& e) {
    bad(e.what());
  }
  return b;
}

WalReader open_consumer(const std::string& dir, const std::string& name) {
  for (const ConsumerInfo& c : list_consumers(dir)) {
    if (c.name != name) continue;
    if (c.lagging)
      throw Error(ErrorKind::InvalidInput, "ops WAL consumer \"" + name + "\" is lagging",
                  "Retention removed segments it had not read yet.",
                  "Rebuild it from a fresh dump, then unregister and register it again.");
    return WalReader(dir, c.cursor);
  }
  throw Error(ErrorKind::InvalidInput, "ops WAL consumer \"" + name + "\" is not registered in \"" + dir + "\"");
}

}  // namespace bitdex::wal
