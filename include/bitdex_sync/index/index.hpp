// The reference index: per field, value -> roaring bitmap of slots, plus the
// alive bitmap, kept up to date by applying ops with SPEC §4's meaning.
// Pure C++ (CRoaring); the follower and the tools build on it.
#pragma once

#include <roaring/roaring.hh>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "bitdex_sync/core/ops.hpp"
#include "bitdex_sync/core/query.hpp"
#include "bitdex_sync/core/wal_dir.hpp"
#include "bitdex_sync/index/value_map.hpp"

namespace bitdex::index {

// One index field: each distinct value (the dictionary key: integers,
// booleans, strings, JSON text, NULL as its own key) owns one bitmap. A
// bitmap that becomes empty is dropped.
struct Field {
  ValueMap values;
};

// Something the index could not apply, reported rather than dropped.
struct Problem {
  std::string where;  // record position: source position and entity
  std::string what;
};

struct Counters {
  uint64_t records = 0;
  uint64_t ops = 0;             // top-level ops applied
  uint64_t null_queries = 0;    // queryOpSet with "query": null, skipped
  uint64_t bad_queries = 0;     // queryOpSet whose query does not parse, skipped and reported
  uint64_t clears = 0;          // clear records applied (not kept in a snapshot)
  uint64_t batches = 0;         // WAL batches applied (set by the follower)
  uint64_t last_batch_seq = 0;  // seq of the last WAL batch applied
};

class Index {
 public:
  // Applies one record: set/add put the slot in the value's bitmap, remove
  // takes it out, delete takes it out of every bitmap and of alive, alive
  // and creates_slot (after the record's ops) mark it alive, queryOpSet
  // applies its nested ops to every alive slot matching its query. Entity
  // ids outside 0..2^32-1 throw Error(InvalidInput); a malformed query is
  // skipped and appended to problems() with `where`. A clear record drops
  // its fields, or deletes the slots holding a value in them (Clear).
  void apply(const EntityRecord& r, const std::string& where = {});
  void apply(const Batch& b, const std::string& where = {});

  // Alive slots matching the filter.
  Roaring evaluate(const Filter& f) const;
  Roaring evaluate(std::string_view filter) const { return evaluate(parse_filter(filter)); }

  const Roaring& alive() const { return alive_; }
  const std::map<std::string, Field>& fields() const { return fields_; }
  bool has(uint32_t slot, const std::string& field, const OpValue& v) const;
  // Values of one slot in one field (a scan of the field's bitmaps).
  std::vector<OpValue> values_of(uint32_t slot, const std::string& field) const;

  // Flips one slot's membership in a value's bitmap: a test tool for
  // checking that verify notices damage.
  void toggle(uint32_t slot, const std::string& field, const OpValue& v);

  Counters& counters() { return counters_; }
  const Counters& counters() const { return counters_; }
  const std::vector<Problem>& problems() const { return problems_; }

  // Bytes held by the bitmaps (serialized size, close to memory use) and
  // the number of distinct values over all fields.
  uint64_t bitmap_bytes() const;
  uint64_t value_count() const;

  // Snapshot: the whole index plus the WAL cursor after the last batch it
  // holds, written as one file (docs/index.md); save() is atomic and
  // durable (temp file, fsync, rename, fsync dir).
  void save(const std::string& path, const wal::Cursor& cursor) const;
  // Throws Error(Corrupt) for a damaged file, Error(Io) if unreadable.
  static Index load(const std::string& path, wal::Cursor* cursor);

  bool operator==(const Index& o) const;

 private:
  Field& field(const std::string& name);  // created on first use
  // The bitmap of field = value, or nullptr.
  const Roaring* bitmap(const std::string& field, const OpValue& value) const;
  // Applies `edit` to an existing bitmap, dropping it if it becomes empty.
  template <typename Edit>
  void shrink(const std::string& field, const OpValue& value, Edit edit);
  Roaring match(const QueryClause& c) const;
  void field_op(uint32_t slot, const Op& op);
  void query_op_set(const Op& op, const EntityRecord& r, const std::string& where);
  void remove_slot(uint32_t slot);
  void apply_clear(const Clear& c);
  void apply_record(const EntityRecord& r, const std::string& where);
  void purge_deleted();
  // Every value bitmap loses `slots`; emptied values go.
  void take_out_of_every_field(const Roaring& slots);

  std::map<std::string, Field> fields_;
  Roaring alive_;
  Roaring deleted_;  // deleted slots whose values are still to be taken out (purge_deleted)
  Counters counters_;
  std::vector<Problem> problems_;
};

// Index entity ids are roaring's 32-bit slots.
uint32_t slot_of(int64_t entity_id, const std::string& where);

}  // namespace bitdex::index
