// The ops WAL writer. Recovery at open is the delicate part: it must cut a
// torn tail (a batch whose write was interrupted by a crash, never
// acknowledged) but must not silently cut acknowledged batches that follow a
// damaged record. Batches never span segments, so only the last segment can
// have a torn tail.
#include "bitdex_sync/core/wal_writer.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::wal {
namespace {

uint64_t random_wal_id() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return id;
}

}  // namespace

std::unique_ptr<WalWriter> WalWriter::open(const WriterOptions& opts, OpenReport* report) {
  OpenReport local;
  OpenReport* rep = report ? report : &local;
  *rep = OpenReport{};
  if (opts.dir.empty()) throw Error(ErrorKind::InvalidInput, "ops WAL directory is not set");
  if (opts.segment_size < 4096)
    throw Error(ErrorKind::InvalidInput, "ops WAL segment size must be at least 4096 bytes");
  std::unique_ptr<WalWriter> w(new WalWriter(opts));
  fileio::make_dirs(opts.dir);
  // Two writers appending to one directory would interleave batches; the lock
  // is released by the kernel when the process dies, so a crash never leaves
  // it stale.
  const std::string lock_path = opts.dir + "/writer.lock";
  w->lock_ = fileio::open_file(lock_path, O_RDWR | O_CREAT, 0600);
  if (::flock(w->lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw Error(ErrorKind::InvalidInput, "ops WAL directory \"" + opts.dir + "\" is in use by another writer",
                  "Only one writer (one worker) may append to an ops WAL directory.");
    throw_io_error("lock file", lock_path, errno);
  }
  // Leftovers of an interrupted segment creation hold nothing acknowledged.
  for (const std::string& n : fileio::list_dir(opts.dir)) {
    if (n.size() > 8 && n.compare(n.size() - 8, 8, ".seg.tmp") == 0) {
      std::string p = opts.dir + "/" + n;
      if (::unlink(p.c_str()) != 0) throw_io_error("remove file", p, errno);
    }
  }
  std::vector<uint64_t> gens = list_segments(opts.dir);
  rep->segments = gens.size();
  if (gens.empty()) {
    if (!opts.create)
      throw Error(ErrorKind::NotReady, "no ops WAL in \"" + opts.dir + "\"",
                  "A WAL was started there before and its segments are gone.");
    w->wal_id_ = random_wal_id();
    w->database_ = opts.database;
    w->instance_ = opts.instance;
    w->create_segment(1);
    rep->created = true;
    rep->segments = 1;
    return w;
  }
  for (size_t i = 1; i < gens.size(); i++)
    if (gens[i] != gens[i - 1] + 1)
      throw Error(ErrorKind::Corrupt,
                  "ops WAL segment " + std::to_string(gens[i - 1] + 1) + " is missing in \"" + opts.dir + "\"",
                  "Segments between the oldest and the newest must all be present.");
  w->recover_last_segment(gens.back(), rep);
  return w;
}

void WalWriter::recover_last_segment(uint64_t generation, OpenReport* rep) {
  path_ = segment_path(opts_.dir, generation);
  fd_ = fileio::open_file(path_, O_RDWR);
  std::string data = fileio::read_file(path_);
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  SegmentHeader h;
  size_t hlen = 0;
  std::string why;
  if (decode_segment_header(p, data.size(), &h, &hlen, &why) != Parse::Ok)
    throw Error(ErrorKind::Corrupt, "ops WAL segment \"" + path_ +
                                        "\" has a bad header: " + (why.empty() ? std::string("truncated") : why));
  if (h.generation != generation)
    throw Error(ErrorKind::Corrupt,
                "ops WAL segment \"" + path_ + "\" claims generation " + std::to_string(h.generation));
  wal_id_ = h.wal_id;
  database_ = h.database;
  instance_ = h.instance;
  generation_ = generation;
  header_len_ = hlen;
  version_ = h.version;
  marks_ = h.marks;
  next_seq_ = h.next_batch_seq;

  size_t at = hlen, good_end = hlen;
  uint32_t in_batch = 0;
  while (at < data.size()) {
    RecordView v;
    Parse st = decode_record(p + at, data.size() - at, &v, &why);
    if (st == Parse::Incomplete) {
      why = "incomplete record";
      break;
    }
    if (st == Parse::Corrupt) break;
    if (is_batch_member(v.type)) {
      in_batch++;
      at += v.total_len;
      continue;
    }
    BatchEnd b;
    try {
      b = decode_batch_end(v);
    } catch (const Error& e) {
      why = e.what();
      break;
    }
    if (b.batch_seq != next_seq_ || b.record_count != in_batch) {
      why = "batch-end does not match the batch before it";
      break;
    }
    at += v.total_len;
    good_end = at;
    in_batch = 0;
    marks_ = b.marks;
    next_seq_++;
  }
  if (good_end < data.size()) {
    if (later_batch_exists(reinterpret_cast<const uint8_t*>(data.data()), data.size(), good_end + 1, next_seq_))
      throw Error(ErrorKind::Corrupt,
                  "ops WAL segment \"" + path_ + "\" is damaged at offset " + std::to_string(good_end) + " (" + why +
                      ") and complete batches follow",
                  "This is not a torn write from a crash, so the writer does not truncate it.",
                  "Inspect it with bitdex-wal verify; restore the directory from a backup or re-dump.");
    if (::ftruncate(fd_.get(), static_cast<off_t>(good_end)) != 0) throw_io_error("truncate", path_, errno);
    fileio::fdatasync_or_throw(fd_.get(), path_);
    rep->truncated_bytes = data.size() - good_end;
    rep->truncated_reason = why;
  }
  end_ = good_end;
}

void WalWriter::create_segment(uint64_t generation) {
  SegmentHeader h;
  h.wal_id = wal_id_;
  h.database = database_;
  h.instance = instance_;
  h.generation = generation;
  h.next_batch_seq = next_seq_;
  h.marks = marks_;
  std::string bytes;
  encode_segment_header(bytes, h);
  // Written under a temporary name and renamed, so a segment file always has
  // a complete header; the directory fsync makes the new name durable.
  std::string name = segment_file_name(generation);
  fileio::write_file_atomic(opts_.dir, name, bytes);
  path_ = opts_.dir + "/" + name;
  fd_ = fileio::open_file(path_, O_RDWR);
  generation_ = generation;
  header_len_ = bytes.size();
  end_ = bytes.size();
  version_ = kFormatVersion;
}

AppendResult WalWriter::append(const Batch& records, const std::vector<SourcePos>& covered) {
  if (broken_) throw Error(ErrorKind::Internal, "ops WAL writer hit an I/O error earlier and must be reopened");
  std::vector<SourcePos> new_marks = marks_;
  for (const SourcePos& c : covered) {
    SourcePos old = find_mark(marks_, c.stream);
    if (c < old)
      throw Error(ErrorKind::InvalidInput, "batch covers positions below the durable mark of stream " +
                                               std::to_string(static_cast<int>(c.stream)));
    raise_mark(new_marks, c);
  }
  for (const EntityRecord& r : records) {
    SourcePos old = find_mark(marks_, r.pos.stream);
    SourcePos cov = find_mark(new_marks, r.pos.stream);
    if (!(old < r.pos) || cov < r.pos)
      throw Error(ErrorKind::InvalidInput,
                  "record of entity " + std::to_string(r.entity_id) +
                      " has a source position outside the range this batch covers",
                  "Positions must be above the durable mark and at most the covered position.");
  }

  // A clear record goes only into a segment whose version has them: a
  // reader of an older version stops at the segment header, not at a
  // record it would take for damage.
  bool clears = false;
  for (const EntityRecord& r : records) clears = clears || r.is_clear();
  if ((end_ >= opts_.segment_size && end_ > header_len_) || (clears && version_ < kFirstClearVersion))
    create_segment(generation_ + 1);

  buf_.clear();
  for (const EntityRecord& r : records) append_entity_record(buf_, r);
  BatchEnd be;
  be.batch_seq = next_seq_;
  be.record_count = static_cast<uint32_t>(records.size());
  be.marks = new_marks;
  append_batch_end(buf_, be);

  try {
    fileio::pwrite_all(fd_.get(), buf_.data(), buf_.size(), end_, path_);
    fileio::fdatasync_or_throw(fd_.get(), path_);
  } catch (const Error&) {
    // Cut what may have reached the file; if even that fails, reopening will
    // find the partial batch and truncate it as a torn tail. After a failed
    // fdatasync the kernel may have dropped the pages, so never retry on
    // this descriptor (the PostgreSQL fsync lesson).
    if (::ftruncate(fd_.get(), static_cast<off_t>(end_)) != 0) {
      // ignored: the next open() truncates the torn tail
    }
    broken_ = true;
    throw;
  }
  end_ += buf_.size();
  marks_ = std::move(new_marks);
  AppendResult res;
  res.batch_seq = next_seq_++;
  res.end = end();
  res.bytes = buf_.size();
  return res;
}

}  // namespace bitdex::wal
