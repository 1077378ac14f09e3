// Binary op codec. Decoding trusts nothing: every length is checked against
// the bytes left, so a fuzzer can feed it anything.
#include "bitdex_sync/core/ops_codec.hpp"

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::codec {
namespace {

// Zigzag keeps small negative integers short.
inline uint64_t zigzag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t unzigzag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

void put_bytes(std::string& out, const std::string& s) {
  write_bytes(out, s.data(), s.size());
}

void encode_value(std::string& out, const OpValue& v) {
  out += static_cast<char>(v.kind);
  switch (v.kind) {
    case OpValue::Kind::Int: put_varint(out, zigzag(v.integer)); break;
    case OpValue::Kind::String:
    case OpValue::Kind::Json: put_bytes(out, v.text); break;
    default: break;
  }
}

void encode_op(std::string& out, const Op& op) {
  out += static_cast<char>(op.kind);
  if (op.is_field_op()) {
    put_bytes(out, op.field);
    encode_value(out, op.value);
  } else if (op.kind == OpKind::QueryOpSet) {
    out += static_cast<char>(op.has_query ? 1 : 0);
    if (op.has_query) put_bytes(out, op.query);
    encode_ops(out, op.ops);
  }
}

class Decoder {
 public:
  Decoder(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}

  std::vector<Op> ops(int depth) {
    uint64_t n = varint();
    // Every op takes at least one byte: a larger count is corrupt, and checking
    // it first keeps a hostile count from reserving gigabytes.
    if (n > static_cast<uint64_t>(end_ - p_)) fail("op count larger than the payload");
    std::vector<Op> out;
    out.reserve(n);
    for (uint64_t i = 0; i < n; i++) out.push_back(op(depth));
    return out;
  }

  bool done() const { return p_ == end_; }

  Clear clear() {
    const uint8_t flags = byte();
    if (flags & ~(kClearDeleteSlots | kClearAliveSlots)) fail("unknown clear flags");
    Clear c;
    c.delete_slots = (flags & kClearDeleteSlots) != 0;
    c.alive_slots = (flags & kClearAliveSlots) != 0;
    if (c.alive_slots && !c.delete_slots) fail("clear of alive slots without deleting slots");
    c.source = bytes();
    const uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) fail("more fields than bytes");
    for (uint64_t i = 0; i < n; i++) {
      c.fields.push_back(bytes());
      if (c.fields.back().empty()) fail("empty field name");
    }
    if (c.fields.empty() && !c.alive_slots) fail("a clear of nothing");
    return c;
  }

 private:
  [[noreturn]] void fail(const char* what) {
    throw Error(ErrorKind::Corrupt, std::string("malformed op payload: ") + what);
  }

  uint8_t byte() {
    if (p_ >= end_) fail("truncated");
    return *p_++;
  }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      if (shift == 63 && b > 1) fail("varint overflows 64 bits");
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }

  std::string bytes() {
    uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) fail("string longer than the payload");
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }

  OpValue value() {
    OpValue v;
    uint8_t k = byte();
    if (k > static_cast<uint8_t>(OpValue::Kind::Json)) fail("unknown value kind");
    v.kind = static_cast<OpValue::Kind>(k);
    if (v.kind == OpValue::Kind::Int)
      v.integer = unzigzag(varint());
    else if (v.kind == OpValue::Kind::String || v.kind == OpValue::Kind::Json)
      v.text = bytes();
    return v;
  }

  Op op(int depth) {
    Op op;
    uint8_t k = byte();
    if (k < static_cast<uint8_t>(OpKind::Set) || k > static_cast<uint8_t>(OpKind::QueryOpSet)) fail("unknown op kind");
    op.kind = static_cast<OpKind>(k);
    if (depth > 0 && !op.is_field_op()) fail("queryOpSet may nest only set, remove and add");
    if (op.is_field_op()) {
      op.field = bytes();
      if (op.field.empty()) fail("empty field name");
      op.value = value();
    } else if (op.kind == OpKind::QueryOpSet) {
      uint8_t hq = byte();
      if (hq > 1) fail("bad query flag");
      op.has_query = hq == 1;
      if (op.has_query) op.query = bytes();
      op.ops = ops(depth + 1);
    }
    return op;
  }

  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace

void put_varint(std::string& out, uint64_t v) {
  write_varint(out, v);
}

void encode_ops(std::string& out, const std::vector<Op>& ops) {
  put_varint(out, ops.size());
  for (const Op& op : ops) encode_op(out, op);
}

std::vector<Op> decode_ops(const uint8_t* data, size_t len) {
  Decoder d(data, len);
  std::vector<Op> ops = d.ops(0);
  if (!d.done()) throw Error(ErrorKind::Corrupt, "malformed op payload: trailing bytes");
  return ops;
}

void encode_clear(std::string& out, const Clear& c) {
  out += static_cast<char>((c.delete_slots ? kClearDeleteSlots : 0) | (c.alive_slots ? kClearAliveSlots : 0));
  put_bytes(out, c.source);
  put_varint(out, c.fields.size());
  for (const std::string& f : c.fields) put_bytes(out, f);
}

Clear decode_clear(const uint8_t* data, size_t len) {
  Decoder d(data, len);
  Clear c = d.clear();
  if (!d.done()) throw Error(ErrorKind::Corrupt, "malformed clear payload: trailing bytes");
  return c;
}

}  // namespace bitdex::codec
