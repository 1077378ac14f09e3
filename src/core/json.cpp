// Recursive-descent JSON parser with a depth limit (fuzzed), and the writer.
#include "bitdex_sync/core/json.hpp"

#include <cstdio>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex::json {
namespace {

constexpr int kMaxDepth = 256;

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  Value document() {
    Value v;
    skip_ws();
    value(v, 0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected data after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw Error(ErrorKind::InvalidInput, "invalid JSON: " + what + " at byte " + std::to_string(pos_));
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) pos_++;
  }

  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      pos_++;
      return true;
    }
    return false;
  }

  void literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) fail("invalid literal");
    pos_ += word.size();
  }

  void value(Value& out, int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 256 levels");
    if (pos_ >= s_.size()) fail("unexpected end of input");
    char c = s_[pos_];
    switch (c) {
      case 'n':
        literal("null");
        out.type = Type::Null;
        return;
      case 't':
        literal("true");
        out.type = Type::Bool;
        out.boolean = true;
        return;
      case 'f':
        literal("false");
        out.type = Type::Bool;
        out.boolean = false;
        return;
      case '"':
        out.type = Type::String;
        string(out.text);
        return;
      case '[': array(out, depth); return;
      case '{': object(out, depth); return;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) {
          number(out);
          return;
        }
        fail(std::string("unexpected character '") + c + "'");
    }
  }

  void array(Value& out, int depth) {
    out.type = Type::Array;
    pos_++;
    skip_ws();
    if (eat(']')) return;
    for (;;) {
      skip_ws();
      out.items.emplace_back();
      value(out.items.back(), depth + 1);
      skip_ws();
      if (eat(']')) return;
      if (!eat(',')) fail("expected ',' or ']' in array");
    }
  }

  void object(Value& out, int depth) {
    out.type = Type::Object;
    pos_++;
    skip_ws();
    if (eat('}')) return;
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string key in object");
      out.members.emplace_back();
      string(out.members.back().first);
      skip_ws();
      if (!eat(':')) fail("expected ':' after object key");
      skip_ws();
      value(out.members.back().second, depth + 1);
      skip_ws();
      if (eat('}')) return;
      if (!eat(',')) fail("expected ',' or '}' in object");
    }
  }

  void number(Value& out) {
    size_t start = pos_;
    eat('-');
    if (eat('0')) {
    } else if (pos_ < s_.size() && s_[pos_] >= '1' && s_[pos_] <= '9') {
      while (pos_ < s_.size() && isdigit(s_[pos_])) pos_++;
    } else {
      fail("invalid number");
    }
    if (eat('.')) {
      if (!(pos_ < s_.size() && isdigit(s_[pos_]))) fail("invalid number");
      while (pos_ < s_.size() && isdigit(s_[pos_])) pos_++;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      pos_++;
      if (!eat('+')) eat('-');
      if (!(pos_ < s_.size() && isdigit(s_[pos_]))) fail("invalid number");
      while (pos_ < s_.size() && isdigit(s_[pos_])) pos_++;
    }
    out.type = Type::Number;
    out.text.assign(s_.substr(start, pos_ - start));
  }

  static bool isdigit(char c) { return c >= '0' && c <= '9'; }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
      char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        v |= c - 'A' + 10;
      else
        fail("invalid \\u escape");
    }
    return v;
  }

  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  void string(std::string& out) {
    pos_++;  // opening quote
    for (;;) {
      size_t run = pos_;
      while (pos_ < s_.size() && s_[pos_] != '"' && s_[pos_] != '\\' && static_cast<unsigned char>(s_[pos_]) >= 0x20)
        pos_++;
      out.append(s_.data() + run, pos_ - run);
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_];
      if (c == '"') {
        pos_++;
        return;
      }
      if (c != '\\') fail("control character in string");
      pos_++;
      if (pos_ >= s_.size()) fail("unterminated string");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!(eat('\\') && eat('u'))) fail("unpaired surrogate in \\u escape");
            unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired surrogate in \\u escape");
          }
          if (cp == 0) fail("\\u0000 is not allowed (Postgres text cannot hold it)");
          put_utf8(out, cp);
          break;
        }
        default: fail("invalid escape in string");
      }
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

const Value* Value::find(std::string_view key) const {
  for (auto it = members.rbegin(); it != members.rend(); ++it)
    if (it->first == key) return &it->second;
  return nullptr;
}

Value parse(std::string_view text) {
  return Parser(text).document();
}

void write_key(std::string& out, std::string_view k) {
  if (out.back() != '{') out += ',';
  write_string(out, k);
  out += ':';
}

void write_string_member(std::string& out, std::string_view k, std::string_view v) {
  write_key(out, k);
  write_string(out, v);
}

void write_string(std::string& out, std::string_view s) {
  out += '"';
  size_t run = 0;
  for (size_t i = 0; i < s.size(); i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void write(std::string& out, const Value& v) {
  switch (v.type) {
    case Type::Null: out += "null"; break;
    case Type::Bool: out += v.boolean ? "true" : "false"; break;
    case Type::Number: out += v.text; break;
    case Type::String: write_string(out, v.text); break;
    case Type::Array:
      out += '[';
      for (size_t i = 0; i < v.items.size(); i++) {
        if (i) out += ',';
        write(out, v.items[i]);
      }
      out += ']';
      break;
    case Type::Object:
      out += '{';
      for (size_t i = 0; i < v.members.size(); i++) {
        if (i) out += ',';
        write_string(out, v.members[i].first);
        out += ':';
        write(out, v.members[i].second);
      }
      out += '}';
      break;
  }
}

const char* type_name(Type t) {
  switch (t) {
    case Type::Null: return "null";
    case Type::Bool: return "a boolean";
    case Type::Number: return "a number";
    case Type::String: return "a string";
    case Type::Array: return "an array";
    case Type::Object: return "an object";
  }
  return "?";
}

}  // namespace bitdex::json
