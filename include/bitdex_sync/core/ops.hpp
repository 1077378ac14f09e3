// The op model of SPEC §4 (BitDex V2 op JSON) and entity records.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitdex_sync/core/json.hpp"

namespace bitdex {

// A field value. Integers that fit int64 and plain strings get their own kinds
// so the binary codec is compact; any other JSON (floats, big numbers, arrays,
// objects) is kept as compact JSON text and compared by that text.
struct OpValue {
  enum class Kind : uint8_t { Null = 0, False = 1, True = 2, Int = 3, String = 4, Json = 5 };
  Kind kind = Kind::Null;
  int64_t integer = 0;
  std::string text;  // String: the content; Json: compact JSON text

  static OpValue null() { return {}; }
  static OpValue boolean(bool b) { return {b ? Kind::True : Kind::False, 0, {}}; }
  static OpValue int64(int64_t v) { return {Kind::Int, v, {}}; }
  static OpValue string(std::string s) { return {Kind::String, 0, std::move(s)}; }
  static OpValue from_json(const json::Value& v);

  void write_json(std::string& out) const;
  size_t hash() const;
  bool operator==(const OpValue& o) const { return kind == o.kind && integer == o.integer && text == o.text; }
  bool operator!=(const OpValue& o) const { return !(*this == o); }
  bool operator<(const OpValue& o) const;
};

enum class OpKind : uint8_t { Set = 1, Remove = 2, Add = 3, Delete = 4, Alive = 5, QueryOpSet = 6 };

const char* op_kind_name(OpKind k);

struct Op {
  OpKind kind = OpKind::Set;
  std::string field;       // set, remove, add
  OpValue value;           // set, remove, add
  bool has_query = false;  // queryOpSet: false for "query": null
  std::string query;
  std::vector<Op> ops;  // queryOpSet: nested set/remove/add ops

  static Op set(std::string f, OpValue v) { return {OpKind::Set, std::move(f), std::move(v), false, {}, {}}; }
  static Op remove(std::string f, OpValue v) { return {OpKind::Remove, std::move(f), std::move(v), false, {}, {}}; }
  static Op add(std::string f, OpValue v) { return {OpKind::Add, std::move(f), std::move(v), false, {}, {}}; }
  static Op del() { return {OpKind::Delete, {}, {}, false, {}, {}}; }
  static Op alive() { return {OpKind::Alive, {}, {}, false, {}, {}}; }
  static Op query_op_set(std::string q, std::vector<Op> nested) {
    return {OpKind::QueryOpSet, {}, {}, true, std::move(q), std::move(nested)};
  }

  bool is_field_op() const { return kind == OpKind::Set || kind == OpKind::Remove || kind == OpKind::Add; }
  bool operator==(const Op& o) const;
  bool operator!=(const Op& o) const { return !(*this == o); }
};

// Where an op came from. Positions are comparable only within one stream:
// the logical slot's (commit LSN, index in transaction), the outbox id, or
// a load's (load id, chunk number).
enum class Stream : uint8_t { None = 0, Slot = 1, Outbox = 2, Load = 3 };

struct SourcePos {
  Stream stream = Stream::None;
  uint64_t major = 0;  // commit LSN, or outbox id
  uint32_t minor = 0;  // index of the op in its transaction (slot only)

  bool operator==(const SourcePos& o) const { return stream == o.stream && major == o.major && minor == o.minor; }
  bool operator!=(const SourcePos& o) const { return !(*this == o); }
  // Order within a stream; callers compare positions of one stream only.
  bool operator<(const SourcePos& o) const { return major != o.major ? major < o.major : minor < o.minor; }
  bool operator<=(const SourcePos& o) const { return !(o < *this); }
};

// What a clear record takes out of the index, on every slot at once (SPEC
// §9: a TRUNCATE, a field whose definition changed or went away). Either
// the fields are cleared (every bitmap of each dropped), or, with
// delete_slots, every slot holding a value in one of them (and with
// alive_slots every alive slot too) is deleted as a `delete` op would.
struct Clear {
  bool delete_slots = false;
  bool alive_slots = false;  // only with delete_slots
  std::string source;        // the source it comes from: for people reading the WAL
  std::vector<std::string> fields;

  bool operator==(const Clear& o) const {
    return delete_slots == o.delete_slots && alive_slots == o.alive_slots && source == o.source && fields == o.fields;
  }
};

// One entity's ops as captured: {entity_id, ops, creates_slot}; or, when
// `clear` is set, a clear record (entity_id 0, no ops), which no op moves
// across (a barrier for dedup).
struct EntityRecord {
  int64_t entity_id = 0;
  bool creates_slot = false;
  std::vector<Op> ops;
  SourcePos pos;
  std::shared_ptr<const Clear> clear;

  bool is_clear() const { return clear != nullptr; }
  bool operator==(const EntityRecord& o) const {
    return entity_id == o.entity_id && creates_slot == o.creates_slot && ops == o.ops && pos == o.pos &&
           (clear == o.clear || (clear && o.clear && *clear == *o.clear));
  }
  static EntityRecord clearing(Clear c, SourcePos pos = {}) {
    EntityRecord r;
    r.clear = std::make_shared<const Clear>(std::move(c));
    r.pos = pos;
    return r;
  }
};

using Batch = std::vector<EntityRecord>;

// JSON ⇄ model. Parsing ignores unknown keys and rejects unknown ops with an
// Error(InvalidInput) whose message names the op and where it was. A clear
// record is {"clear": {"source": S, "fields": [..], "delete_slots": b,
// "alive_slots": b}}.
Op parse_op(const json::Value& v, const std::string& where, bool nested = false);
std::vector<Op> parse_ops(const json::Value& v, const std::string& where);
EntityRecord parse_record(const json::Value& v, const std::string& where);
Batch parse_batch(std::string_view json_text);
Clear parse_clear(const json::Value& v, const std::string& where);
void write_clear_json(std::string& out, const Clear& c);

void write_op_json(std::string& out, const Op& op);
void write_ops_json(std::string& out, const std::vector<Op>& ops);
void write_record_json(std::string& out, const EntityRecord& r);
std::string batch_to_json(const Batch& batch);

// True when `t` is a canonical JSON integer (no leading zeros, no "-0")
// that fits int64: such values are always OpValue::Kind::Int, never Json.
bool canonical_int(std::string_view t, int64_t& out);

// Total number of ops in a batch, nested queryOpSet ops not counted separately.
size_t count_ops(const Batch& batch);

}  // namespace bitdex
