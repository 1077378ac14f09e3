// The ops WAL directory: segment listing, consumer cursors and retention.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bitdex::wal {

// A reader position: the next unread byte of segment `generation`.
// generation 0 means "the start of the oldest segment".
struct Cursor {
  uint64_t wal_id = 0;
  uint64_t generation = 0;
  uint64_t offset = 0;

  bool operator==(const Cursor& o) const {
    return wal_id == o.wal_id && generation == o.generation && offset == o.offset;
  }
};

std::string segment_path(const std::string& dir, uint64_t generation);
// Generations of the segments in dir, ascending.
std::vector<uint64_t> list_segments(const std::string& dir);

// Consumer names are 1-64 characters of [A-Za-z0-9_.-]; others are rejected.
void validate_consumer_name(const std::string& name);
// Creates the consumer's cursor if it does not exist yet (at `start`).
void register_consumer(const std::string& dir, const std::string& name, const Cursor& start);
// Stores the cursor durably (atomic replace).
void save_cursor(const std::string& dir, const std::string& name, const Cursor& c);
std::optional<Cursor> load_cursor(const std::string& dir, const std::string& name);
void unregister_consumer(const std::string& dir, const std::string& name);
std::vector<std::pair<std::string, Cursor>> list_consumers(const std::string& dir);

// Deletes every segment that all registered consumers are past (their cursor
// is in a later segment). Never deletes the newest segment; with no consumer
// registered deletes nothing. Returns the deleted generations.
std::vector<uint64_t> remove_consumed_segments(const std::string& dir);

}  // namespace bitdex::wal
