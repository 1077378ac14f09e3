// The ops WAL directory: segment listing, consumer cursors and retention.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bitdex_sync/core/wal_format.hpp"

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

// A WAL id as text: 16 lowercase hex digits, as logs, errors and cursors show it.
std::string wal_id_hex(uint64_t wal_id);
// A cursor as text, "<WAL id, 16 hex digits>/<segment>/<offset>" (as
// bitdex_sync.read_wal() and ack_consumer() take and give it); parse_cursor
// returns nothing for anything else.
std::string format_cursor(const Cursor& c);
std::optional<Cursor> parse_cursor(const std::string& text);

std::string segment_path(const std::string& dir, uint64_t generation);
// Generations of the segments in dir, ascending.
std::vector<uint64_t> list_segments(const std::string& dir);

// The header of segment `generation` of dir; throws Error(Corrupt) when bad.
SegmentHeader segment_header(const std::string& dir, uint64_t generation);

// The header of the newest segment in dir (its WAL's identity and the marks
// it started with); nothing when dir holds no segment.
std::optional<SegmentHeader> newest_header(const std::string& dir);

// Moves a WAL directory out of the way, to "<dir>.retired-<WAL id in hex>"
// (plus "-2", "-3", ... when taken), durably; returns the new path.
std::string retire_dir(const std::string& dir, uint64_t wal_id);

// Consumer names are 1-64 characters of [A-Za-z0-9_.-]; others are rejected.
void validate_consumer_name(const std::string& name);
// Creates the consumer's cursor if it does not exist yet (at `start`).
void register_consumer(const std::string& dir, const std::string& name, const Cursor& start);
// Stores the cursor durably (atomic replace); the consumer is no longer
// "registered at the end" (an index saved where it is).
void save_cursor(const std::string& dir, const std::string& name, const Cursor& c);
// Registers (or moves) consumer `name` at `at`, marked as registered there
// (`bitdex-wal register --at-end`): until an index saves a cursor for it, a
// new index starts at `at`. Any other new index starts at batch 1.
void register_consumer_at(const std::string& dir, const std::string& name, const Cursor& at);
bool registered_at_end(const std::string& dir, const std::string& name);
std::optional<Cursor> load_cursor(const std::string& dir, const std::string& name);
// Removes the cursor and any lagging mark.
void unregister_consumer(const std::string& dir, const std::string& name);

struct ConsumerInfo {
  std::string name;
  Cursor cursor;
  bool lagging = false;  // retention removed segments it needed: rebuild it from a dump
};
std::vector<ConsumerInfo> list_consumers(const std::string& dir);

struct RetentionLimits {
  // When the segments a consumer still needs exceed this many bytes, the
  // oldest go anyway and that consumer is marked lagging, so one stuck
  // consumer cannot fill the disk and stop the writer. 0: no limit.
  uint64_t max_bytes = 0;
  // Segments last written more than this many seconds before `now` (Unix
  // seconds) go anyway, likewise. 0: no limit.
  uint64_t max_age_seconds = 0;
  int64_t now = 0;
};

struct RetentionResult {
  std::vector<uint64_t> removed;         // generations deleted
  std::vector<std::string> now_lagging;  // consumers (in the directory) marked lagging by this call
  // Consumers of `others` that needed a removed segment, with why: the
  // caller records them lagging.
  std::vector<std::pair<std::string, std::string>> others_lagging;
};

// Deletes every segment that all registered, non-lagging consumers are past
// (their cursor is in a later segment), then applies `limits`. `others` are
// consumers kept elsewhere (bitdex_sync.consumers), counted like the
// directory's. Never deletes the newest segment; with no consumer registered
// deletes nothing unless a limit says so.
RetentionResult remove_consumed_segments(const std::string& dir, const RetentionLimits& limits = {},
                                         const std::vector<ConsumerInfo>& others = {});

}  // namespace bitdex::wal
