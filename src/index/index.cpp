// Applying ops to roaring bitmaps, evaluating filters, and the snapshot file.
#include "bitdex_sync/index/index.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "bitdex_sync/core/crc32c.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/file_io.hpp"

namespace bitdex::index {

uint32_t slot_of(int64_t entity_id, const std::string& where) {
  if (entity_id < 0 || entity_id > int64_t(UINT32_MAX))
    throw Error(ErrorKind::InvalidInput, "entity id " + std::to_string(entity_id) +
                                             " is not an index slot (0..4294967295)" +
                                             (where.empty() ? "" : " at " + where));
  return static_cast<uint32_t>(entity_id);
}

void Index::apply(const Batch& b, const std::string& where) {
  for (const EntityRecord& r : b) apply_record(r, where);
  purge_deleted();
}

void Index::apply(const EntityRecord& r, const std::string& where) {
  apply_record(r, where);
  purge_deleted();
}

// A deleted slot leaves alive at once; its values are taken out of every
// bitmap in one pass for all the slots deleted since the last pass (a delete
// alone would visit every value of every field), before anything else
// touches one of them, before a queryOpSet or a clear, and at the end of
// each apply().
void Index::apply_record(const EntityRecord& r, const std::string& where) {
  counters_.records++;
  if (r.clear) {
    purge_deleted();
    apply_clear(*r.clear);
    return;
  }
  // queryOpSet records are not about their own entity, so the slot check
  // applies only to records that touch it.
  auto slot = [&] {
    const uint32_t s = slot_of(r.entity_id, where);
    if (!deleted_.isEmpty() && deleted_.contains(s)) purge_deleted();
    return s;
  };
  for (const Op& op : r.ops) {
    counters_.ops++;
    switch (op.kind) {
      case OpKind::Set:
      case OpKind::Add:
      case OpKind::Remove: field_op(slot(), op); break;
      case OpKind::Delete: remove_slot(slot()); break;
      case OpKind::Alive: alive_.add(slot()); break;
      case OpKind::QueryOpSet:
        purge_deleted();
        query_op_set(op, r, where);
        break;
    }
  }
  if (r.creates_slot) alive_.add(slot());
}

void Index::purge_deleted() {
  if (deleted_.isEmpty()) return;
  take_out_of_every_field(deleted_);
  deleted_ = Roaring();
}

void Index::take_out_of_every_field(const Roaring& slots) {
  for (auto& [name, field] : fields_) {
    for (size_t i = 0; i < field.values.size();) {
      Roaring& b = field.values.at(i).bitmap;
      b -= slots;
      if (b.isEmpty())
        field.values.erase_at(i);  // the last entry moves to i
      else
        i++;
    }
  }
}

void Index::field_op(uint32_t slot, const Op& op) {
  if (op.kind == OpKind::Remove)
    shrink(op.field, op.value, [slot](Roaring& b) { b.remove(slot); });
  else
    field(op.field).values[op.value].add(slot);
}

template <typename Edit>
void Index::shrink(const std::string& field, const OpValue& value, Edit edit) {
  auto f = fields_.find(field);
  if (f == fields_.end()) return;
  Roaring* b = f->second.values.find(value);
  if (!b) return;
  edit(*b);
  if (b->isEmpty()) f->second.values.erase(value);
}

const Roaring* Index::bitmap(const std::string& field, const OpValue& value) const {
  auto f = fields_.find(field);
  if (f == fields_.end()) return nullptr;
  return f->second.values.find(value);
}

Field& Index::field(const std::string& name) {
  auto it = fields_.find(name);
  return it != fields_.end() ? it->second : fields_[name];
}

void Index::remove_slot(uint32_t slot) {
  alive_.remove(slot);
  deleted_.add(slot);  // its values go at the next purge_deleted()
}

void Index::apply_clear(const Clear& c) {
  counters_.clears++;
  if (!c.delete_slots) {
    for (const std::string& name : c.fields) fields_.erase(name);
    return;
  }
  Roaring gone = c.alive_slots ? alive_ : Roaring();
  for (const std::string& name : c.fields) {
    auto f = fields_.find(name);
    if (f == fields_.end()) continue;
    for (const ValueMap::Entry& e : f->second.values) gone |= e.bitmap;
  }
  if (gone.isEmpty()) return;
  alive_ -= gone;
  take_out_of_every_field(gone);
}

Roaring Index::match(const QueryClause& c) const {
  Roaring out;
  for (const OpValue& value : c.values)
    if (const Roaring* b = bitmap(c.field, value)) out |= *b;
  return out;
}

std::string describe(const EntityRecord& r, const std::string& where) {
  std::string out = where.empty() ? "" : where + ", ";
  if (r.pos.stream == Stream::Slot)
    out += "commit LSN " + std::to_string(r.pos.major) + " op " + std::to_string(r.pos.minor) + ", ";
  else if (r.pos.stream == Stream::Outbox)
    out += "outbox id " + std::to_string(r.pos.major) + ", ";
  else if (r.pos.stream == Stream::Load)
    out += "load " + std::to_string(r.pos.major) + " chunk " + std::to_string(r.pos.minor) + ", ";
  return out + "entity " + std::to_string(r.entity_id);
}

void Index::query_op_set(const Op& op, const EntityRecord& r, const std::string& where) {
  if (!op.has_query) {
    counters_.null_queries++;
    return;
  }
  Query q;
  try {
    q = parse_query(op.query);
  } catch (const Error& e) {
    counters_.bad_queries++;
    problems_.push_back({describe(r, where), e.what()});
    return;
  }
  // The clauses first (usually a few slots), then alive: never copy alive.
  Roaring slots = match(q.clauses.at(0));
  for (size_t i = 1; i < q.clauses.size() && !slots.isEmpty(); i++) slots &= match(q.clauses[i]);
  slots &= alive_;
  if (slots.isEmpty()) return;
  for (const Op& n : op.ops) {
    if (!n.is_field_op()) continue;  // the parser admits only field ops here
    if (n.kind == OpKind::Remove)
      shrink(n.field, n.value, [&slots](Roaring& b) { b -= slots; });
    else
      field(n.field).values[n.value] |= slots;
  }
}

Roaring Index::evaluate(const Filter& f) const {
  switch (f.kind) {
    case Filter::Kind::All: return alive_;
    case Filter::Kind::Clause: return match(f.clause) & alive_;
    case Filter::Kind::Not: return alive_ - evaluate(f.children.at(0));
    case Filter::Kind::And: {
      Roaring out = evaluate(f.children.at(0));
      for (size_t i = 1; i < f.children.size() && !out.isEmpty(); i++) out &= evaluate(f.children[i]);
      return out;
    }
    case Filter::Kind::Or: {
      Roaring out;
      for (const Filter& c : f.children) out |= evaluate(c);
      return out;
    }
  }
  return Roaring();
}

bool Index::has(uint32_t slot, const std::string& field, const OpValue& value) const {
  const Roaring* b = bitmap(field, value);
  return b && b->contains(slot);
}

std::vector<OpValue> Index::values_of(uint32_t slot, const std::string& field) const {
  std::vector<OpValue> out;
  auto f = fields_.find(field);
  if (f == fields_.end()) return out;
  for (const ValueMap::Entry& e : f->second.values)
    if (e.bitmap.contains(slot)) out.push_back(e.value);
  std::sort(out.begin(), out.end());
  return out;
}

void Index::toggle(uint32_t slot, const std::string& field, const OpValue& value) {
  if (has(slot, field, value))
    shrink(field, value, [slot](Roaring& b) { b.remove(slot); });
  else
    this->field(field).values[value].add(slot);
}

uint64_t Index::bitmap_bytes() const {
  uint64_t n = alive_.getSizeInBytes();
  for (const auto& [name, field] : fields_)
    for (const ValueMap::Entry& e : field.values) n += e.bitmap.getSizeInBytes();
  return n;
}

uint64_t Index::value_count() const {
  uint64_t n = 0;
  for (const auto& [name, field] : fields_) n += field.values.size();
  return n;
}

bool Index::operator==(const Index& o) const {
  if (!(alive_ == o.alive_) || fields_.size() != o.fields_.size()) return false;
  for (const auto& [name, field] : fields_) {
    auto other = o.fields_.find(name);
    if (other == o.fields_.end() || other->second.values.size() != field.values.size()) return false;
    for (const ValueMap::Entry& e : field.values) {
      const Roaring* ob = other->second.values.find(e.value);
      if (!ob || !(*ob == e.bitmap)) return false;
    }
  }
  return true;
}

// ---- snapshot file ---------------------------------------------------------
namespace {

constexpr char kMagic[8] = {'B', 'D', 'X', 'I', 'N', 'D', 'E', 'X'};
constexpr uint32_t kVersion = 1;

void put_u8(std::string& out, uint8_t v) {
  out.push_back(static_cast<char>(v));
}
void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; i++) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; i++) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_bytes(std::string& out, const std::string& s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out += s;
}
void put_bitmap(std::string& out, const Roaring& b) {
  size_t n = b.getSizeInBytes(true);
  put_u32(out, static_cast<uint32_t>(n));
  size_t at = out.size();
  out.resize(at + n);
  b.write(&out[at], true);
}

// Bounds-checked reading of the snapshot body.
class Reader {
 public:
  Reader(const std::string& data, size_t end, const std::string& path) : d_(data), end_(end), path_(path) {}

  uint64_t uint(int bytes) {
    need(bytes);
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= uint64_t(static_cast<uint8_t>(d_[at_ + i])) << (8 * i);
    at_ += bytes;
    return v;
  }
  std::string bytes() {
    size_t n = uint(4);
    need(n);
    std::string s = d_.substr(at_, n);
    at_ += n;
    return s;
  }
  Roaring bitmap() {
    size_t n = uint(4);
    need(n);
    if (n == 0) bad("empty bitmap encoding");
    Roaring b;
    try {
      b = Roaring::readSafe(d_.data() + at_, n);
    } catch (const std::runtime_error&) {
      bad("undecodable bitmap");
    }
    if (b.getSizeInBytes(true) != n) bad("bitmap length does not match its encoding");
    at_ += n;
    return b;
  }
  bool done() const { return at_ == end_; }
  [[noreturn]] void bad(const std::string& why) const {
    throw Error(ErrorKind::Corrupt,
                "index snapshot " + path_ + " is damaged: " + why + " at byte " + std::to_string(at_));
  }

 private:
  void need(size_t n) const {
    if (end_ - at_ < n) bad("truncated");
  }
  const std::string& d_;
  size_t end_;
  const std::string& path_;
  size_t at_ = 0;
};

void put_value(std::string& out, const OpValue& v) {
  put_u8(out, static_cast<uint8_t>(v.kind));
  if (v.kind == OpValue::Kind::Int) put_u64(out, static_cast<uint64_t>(v.integer));
  if (v.kind == OpValue::Kind::String || v.kind == OpValue::Kind::Json) put_bytes(out, v.text);
}

OpValue get_value(Reader& r) {
  uint8_t kind = static_cast<uint8_t>(r.uint(1));
  switch (static_cast<OpValue::Kind>(kind)) {
    case OpValue::Kind::Null: return OpValue::null();
    case OpValue::Kind::False: return OpValue::boolean(false);
    case OpValue::Kind::True: return OpValue::boolean(true);
    case OpValue::Kind::Int: return OpValue::int64(static_cast<int64_t>(r.uint(8)));
    case OpValue::Kind::String: return OpValue::string(r.bytes());
    case OpValue::Kind::Json: {
      OpValue v;
      v.kind = OpValue::Kind::Json;
      v.text = r.bytes();
      return v;
    }
  }
  r.bad("unknown value kind " + std::to_string(kind));
}

std::pair<std::string, std::string> split_path(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

void Index::save(const std::string& path, const wal::Cursor& cursor) const {
  std::string out(kMagic, sizeof kMagic);
  put_u32(out, kVersion);
  put_u32(out, 0);  // flags
  put_u64(out, cursor.wal_id);
  put_u64(out, cursor.generation);
  put_u64(out, cursor.offset);
  for (uint64_t c : {counters_.records, counters_.ops, counters_.null_queries, counters_.bad_queries, counters_.batches,
                     counters_.last_batch_seq})
    put_u64(out, c);
  put_bitmap(out, alive_);
  put_u32(out, static_cast<uint32_t>(fields_.size()));
  for (const auto& [name, field] : fields_) {
    put_bytes(out, name);
    put_u32(out, static_cast<uint32_t>(field.values.size()));
    for (const ValueMap::Entry& e : field.values) {
      put_value(out, e.value);
      put_bitmap(out, e.bitmap);
    }
  }
  put_u32(out, crc32c(out.data(), out.size()));
  auto [dir, name] = split_path(path);
  fileio::write_file_atomic(dir, name, out);
}

Index Index::load(const std::string& path, wal::Cursor* cursor) {
  const std::string data = fileio::read_file(path);
  if (data.size() < sizeof kMagic + 4 || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0)
    throw Error(ErrorKind::Corrupt, path + " is not an index snapshot (bad magic)");
  Reader crc_reader(data, data.size(), path);
  size_t body = data.size() - 4;
  uint32_t stored = 0;
  for (int i = 0; i < 4; i++) stored |= uint32_t(static_cast<uint8_t>(data[body + i])) << (8 * i);
  if (crc32c(data.data(), body) != stored)
    throw Error(ErrorKind::Corrupt, "index snapshot " + path + " fails its CRC32C check",
                "The file was damaged after it was written.",
                "Rebuild the index: remove the file and run `bitdex-index apply` from the ops WAL.");
  Reader r(data, body, path);
  r.uint(8);  // magic, checked above
  uint32_t version = static_cast<uint32_t>(r.uint(4));
  if (version != kVersion) r.bad("unsupported version " + std::to_string(version));
  r.uint(4);  // flags
  Index ix;
  wal::Cursor c;
  c.wal_id = r.uint(8);
  c.generation = r.uint(8);
  c.offset = r.uint(8);
  for (uint64_t* counter : {&ix.counters_.records, &ix.counters_.ops, &ix.counters_.null_queries,
                            &ix.counters_.bad_queries, &ix.counters_.batches, &ix.counters_.last_batch_seq})
    *counter = r.uint(8);
  ix.alive_ = r.bitmap();
  uint32_t nfields = static_cast<uint32_t>(r.uint(4));
  for (uint32_t i = 0; i < nfields; i++) {
    Field& f = ix.field(r.bytes());
    uint32_t nvalues = static_cast<uint32_t>(r.uint(4));
    f.values.reserve(std::min<uint32_t>(nvalues, static_cast<uint32_t>(data.size() / 2)));  // not beyond the file
    for (uint32_t k = 0; k < nvalues; k++) {
      OpValue v = get_value(r);
      f.values[v] = r.bitmap();
    }
  }
  if (!r.done()) r.bad("trailing bytes");
  if (cursor) *cursor = c;
  return ix;
}

}  // namespace bitdex::index
