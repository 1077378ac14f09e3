// The index as an ops WAL consumer: snapshot + cursor, whole batches, each
// exactly once.
#include "bitdex_sync/index/follower.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>

#include "bitdex_sync/core/error.hpp"

namespace bitdex::index {
namespace {

class LocalSource : public BatchSource {
 public:
  LocalSource(std::string dir, std::string consumer) : dir_(std::move(dir)), consumer_(std::move(consumer)) {
    wal::validate_consumer_name(consumer_);
    // A mistyped path must not become an empty directory and an empty index
    // reported as a success.
    if (!fileio::exists(dir_) || wal::list_segments(dir_).empty())
      throw Error(ErrorKind::InvalidInput, "\"" + dir_ + "\" is not an ops WAL directory (it holds no segment)", {},
                  "Give the directory of the database's ops WAL: SELECT bitdex_sync.wal_directory(); in that "
                  "database.");
  }

  bool start(const std::optional<wal::Cursor>& after) override {
    wal::Cursor c = after.value_or(wal::Cursor{});
    bool mid = false;
    if (!after) {
      // A new index for a consumer registered at a later point (`bitdex-wal
      // register --at-end`, then bitdex_sync.load()) starts there. Any other
      // new index is built from batch 1, whatever an earlier index of the
      // consumer had reached (its first checkpoint moves the cursor).
      if (auto registered = wal::load_cursor(dir_, consumer_);
          registered && registered->offset > 0 && wal::registered_at_end(dir_, consumer_)) {
        c = *registered;
        mid = true;
      }
    }
    wal::register_consumer(dir_, consumer_, c);
    for (const wal::ConsumerInfo& info : wal::list_consumers(dir_))
      if (info.name == consumer_ && info.lagging)
        throw Error(ErrorKind::InvalidInput, "ops WAL consumer \"" + consumer_ + "\" is lagging",
                    "Retention removed segments this index had not applied yet.",
                    "Rebuild the index from a dump, then `bitdex-wal unregister` and register the consumer again.");
    reader_ = std::make_unique<wal::WalReader>(dir_, c);
    return mid;
  }

  bool next(wal::WalBatch* out) override { return reader_->next(out) == wal::ReadStatus::Batch; }
  void acknowledge(const wal::Cursor& c) override { wal::save_cursor(dir_, consumer_, c); }
  std::string tail_note() const override { return reader_->tail_note(); }
  std::string where() const override { return "\"" + dir_ + "\""; }

  std::optional<uint64_t> bytes_after(const wal::Cursor& c) const override {
    uint64_t left = 0;
    for (uint64_t gen : wal::list_segments(dir_)) {
      if (gen < c.generation) continue;
      struct stat st;
      if (::stat(wal::segment_path(dir_, gen).c_str(), &st) != 0) continue;
      uint64_t size = static_cast<uint64_t>(st.st_size);
      left += gen == c.generation ? (size > c.offset ? size - c.offset : 0) : size;
    }
    return left;
  }

 private:
  std::string dir_, consumer_;
  std::unique_ptr<wal::WalReader> reader_;
};

}  // namespace

std::unique_ptr<BatchSource> local_source(std::string wal_dir, std::string consumer) {
  return std::make_unique<LocalSource>(std::move(wal_dir), std::move(consumer));
}

Follower::Follower(std::unique_ptr<BatchSource> source, std::string snapshot)
    : source_(std::move(source)), snapshot_(std::move(snapshot)) {
  // Two followers of one snapshot would each apply every batch and then
  // overwrite each other's file; the kernel drops the lock when we die.
  const std::string lock_path = snapshot_ + ".lock";
  lock_ = fileio::open_file(lock_path, O_RDWR | O_CREAT, 0600);
  if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw Error(ErrorKind::InvalidInput, "index \"" + snapshot_ + "\" is in use by another bitdex-index process");
    throw_io_error("lock file", lock_path, errno);
  }
  std::optional<wal::Cursor> after;
  if (fileio::exists(snapshot_)) {
    index_ = Index::load(snapshot_, &cursor_);
    // A snapshot saved before its first batch has no cursor yet.
    if (!(cursor_ == wal::Cursor{})) after = cursor_;
  }
  starts_mid_wal_ = source_->start(after);
}

bool Follower::step() {
  wal::WalBatch b;
  if (!source_->next(&b)) {
    tail_note_ = source_->tail_note();
    return false;
  }
  tail_note_.clear();
  Counters& c = index_.counters();
  // Batch numbers run 1, 2, 3... over the whole WAL: anything else means
  // batches this index never saw (retention, or a different WAL).
  if (starts_mid_wal_ && c.batches == 0) c.last_batch_seq = b.seq - 1;
  if (b.seq != c.last_batch_seq + 1)
    throw Error(ErrorKind::InvalidInput,
                "ops WAL batch " + std::to_string(b.seq) + " does not follow the index's last batch " +
                    std::to_string(c.last_batch_seq),
                "Batches between them are no longer in " + source_->where() + ".",
                "Rebuild the index from a dump of the tables.");
  index_.apply(b.records, "batch " + std::to_string(b.seq));
  c.batches++;
  c.last_batch_seq = b.seq;
  cursor_ = b.end;
  unsaved_++;
  return true;
}

void Follower::checkpoint() {
  index_.save(snapshot_, cursor_);
  if (cursor_.wal_id != 0 || cursor_.generation != 0) source_->acknowledge(cursor_);
  unsaved_ = 0;
}

}  // namespace bitdex::index
