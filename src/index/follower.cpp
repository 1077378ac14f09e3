// The index as an ops WAL consumer: snapshot + cursor, whole batches, each
// exactly once.
#include "bitdex_sync/index/follower.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "bitdex_sync/core/error.hpp"

namespace bitdex::index {

Follower::Follower(std::string wal_dir, std::string snapshot, std::string consumer)
    : wal_dir_(std::move(wal_dir)), snapshot_(std::move(snapshot)), consumer_(std::move(consumer)) {
  wal::validate_consumer_name(consumer_);
  // A mistyped path must not become an empty directory and an empty index
  // reported as a success.
  if (!fileio::exists(wal_dir_) || wal::list_segments(wal_dir_).empty())
    throw Error(ErrorKind::InvalidInput, "\"" + wal_dir_ + "\" is not an ops WAL directory (it holds no segment)", {},
                "Give the directory of the database's ops WAL: SELECT bitdex_sync.wal_directory(); in that "
                "database.");
  // Two followers of one snapshot would each apply every batch and then
  // overwrite each other's file; the kernel drops the lock when we die.
  const std::string lock_path = snapshot_ + ".lock";
  lock_ = fileio::open_file(lock_path, O_RDWR | O_CREAT, 0600);
  if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      throw Error(ErrorKind::InvalidInput, "index \"" + snapshot_ + "\" is in use by another bitdex-index process");
    throw_io_error("lock file", lock_path, errno);
  }
  if (fileio::exists(snapshot_)) {
    index_ = Index::load(snapshot_, &cursor_);
  } else if (auto registered = wal::load_cursor(wal_dir_, consumer_);
             registered && registered->offset > 0 && wal::registered_at_end(wal_dir_, consumer_)) {
    // A new index for a consumer registered at a later point (`bitdex-wal
    // register --at-end`, then bitdex_sync.load()): it starts there. Any
    // other new index is built from batch 1, whatever an earlier index of
    // the consumer had reached (its first checkpoint moves the cursor).
    cursor_ = *registered;
    starts_mid_wal_ = true;
  }
  wal::register_consumer(wal_dir_, consumer_, cursor_);
  for (const wal::ConsumerInfo& c : wal::list_consumers(wal_dir_))
    if (c.name == consumer_ && c.lagging)
      throw Error(ErrorKind::InvalidInput, "ops WAL consumer \"" + consumer_ + "\" is lagging",
                  "Retention removed segments this index had not applied yet.",
                  "Rebuild the index from a dump, then `bitdex-wal unregister` and register the consumer again.");
  reader_ = std::make_unique<wal::WalReader>(wal_dir_, cursor_);
}

bool Follower::step() {
  wal::WalBatch b;
  if (reader_->next(&b) != wal::ReadStatus::Batch) return false;
  Counters& c = index_.counters();
  // Batch numbers run 1, 2, 3... over the whole WAL: anything else means
  // batches this index never saw (retention, or a different WAL).
  if (starts_mid_wal_ && c.batches == 0) c.last_batch_seq = b.seq - 1;
  if (b.seq != c.last_batch_seq + 1)
    throw Error(ErrorKind::InvalidInput,
                "ops WAL batch " + std::to_string(b.seq) + " does not follow the index's last batch " +
                    std::to_string(c.last_batch_seq),
                "Batches between them are no longer in \"" + wal_dir_ + "\".",
                "Rebuild the index from a dump of the tables.");
  index_.apply(b.records, "batch " + std::to_string(b.seq));
  c.batches++;
  c.last_batch_seq = b.seq;
  cursor_ = reader_->cursor();
  unsaved_++;
  return true;
}

void Follower::checkpoint() {
  index_.save(snapshot_, cursor_);
  wal::save_cursor(wal_dir_, consumer_, cursor_);
  unsaved_ = 0;
}

}  // namespace bitdex::index
