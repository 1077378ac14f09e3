// Tokenizing parser for BitDex filter queries.
#include "bitdex_sync/core/query.hpp"

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex {
namespace {

class QueryParser {
 public:
  static constexpr int kMaxDepth = 200;

  // `filter`: the index's filter syntax (parentheses, OR, NOT) rather than
  // queryOpSet's AND-only queries.
  QueryParser(std::string_view s, bool filter) : s_(s), filter_(filter) {}

  Query parse() {
    Query q;
    for (;;) {
      q.clauses.push_back(clause());
      skip_ws();
      if (pos_ == s_.size()) return q;
      if (word() != "AND") fail("expected AND between clauses");
    }
  }

  Filter parse_filter() {
    skip_ws();
    if (pos_ == s_.size() || (s_.substr(pos_) == "*")) return Filter{};
    Filter f = any_of();
    skip_ws();
    if (pos_ != s_.size()) fail("expected AND, OR or the end");
    return f;
  }

 private:
  // or := and ("OR" and)*;  and := unary ("AND" unary)*;
  // unary := "NOT" unary | "(" or ")" | clause
  Filter any_of() { return chain(Filter::Kind::Or, "OR", &QueryParser::all_of); }
  Filter all_of() { return chain(Filter::Kind::And, "AND", &QueryParser::unary); }

  Filter chain(Filter::Kind kind, const char* keyword, Filter (QueryParser::*operand)()) {
    Filter first = (this->*operand)();
    Filter out{kind, {}, {}};
    out.children.push_back(std::move(first));
    for (;;) {
      skip_ws();
      size_t mark = pos_;
      if (word() != keyword) {
        pos_ = mark;
        break;
      }
      out.children.push_back((this->*operand)());
    }
    return out.children.size() == 1 ? std::move(out.children[0]) : out;
  }

  // Parentheses and NOTs nest by recursion (here, and in evaluating and
  // freeing the tree): bounded, so a hostile filter is an error, not a
  // stack overflow.
  Filter unary() {
    skip_ws();
    if (eat('(')) {
      Nest nest(*this);
      Filter f = any_of();
      skip_ws();
      if (!eat(')')) fail("expected ')'");
      return f;
    }
    size_t mark = pos_;
    if (word() == "NOT") {
      Nest nest(*this);
      Filter f{Filter::Kind::Not, {}, {}};
      f.children.push_back(unary());
      return f;
    }
    pos_ = mark;
    return Filter{Filter::Kind::Clause, clause(), {}};
  }

  QueryClause clause() {
    skip_ws();
    QueryClause c;
    c.field = word();
    if (c.field.empty()) fail("expected a field name");
    skip_ws();
    std::string op = word();
    skip_ws();
    if (op == "eq") {
      c.values.push_back(value());
    } else if (op == "in") {
      if (!eat('[')) fail("expected '[' after in");
      skip_ws();
      if (!eat(']')) {
        for (;;) {
          skip_ws();
          c.values.push_back(value());
          skip_ws();
          if (eat(']')) break;
          if (!eat(',')) fail("expected ',' or ']' in list");
        }
      }
    } else {
      fail("expected eq or in after field \"" + c.field + "\"");
    }
    return c;
  }

  [[noreturn]] void fail(const std::string& what) {
    throw Error(ErrorKind::InvalidInput,
                std::string(filter_ ? "invalid filter \"" : "invalid query \"") + std::string(s_) + "\": " + what +
                    " at offset " + std::to_string(pos_),
                {},
                filter_ ? "Filters combine `field eq value` and `field in [v1, v2]` with AND, OR, NOT and parentheses."
                        : "Queries are clauses joined by AND, each `field eq value` or `field in [v1, v2]`.");
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n')) pos_++;
  }

  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      pos_++;
      return true;
    }
    return false;
  }

  bool word_char(char c) const {
    if (filter_ && (c == '(' || c == ')')) return false;
    return !(c == ' ' || c == '\t' || c == '\n' || c == '[' || c == ']' || c == ',' || c == '"' || c == '\'');
  }

  std::string word() {
    size_t start = pos_;
    while (pos_ < s_.size() && word_char(s_[pos_])) pos_++;
    return std::string(s_.substr(start, pos_ - start));
  }

  OpValue value() {
    if (pos_ < s_.size() && (s_[pos_] == '"' || s_[pos_] == '\'')) {
      char quote = s_[pos_++];
      std::string out;
      for (;;) {
        if (pos_ >= s_.size()) fail("unterminated string");
        char c = s_[pos_++];
        if (c == quote) break;
        if (c == '\\' && pos_ < s_.size()) c = s_[pos_++];
        out += c;
      }
      return OpValue::string(std::move(out));
    }
    std::string w = word();
    if (w.empty()) fail("expected a value");
    if (w == "null") return OpValue::null();
    if (w == "true") return OpValue::boolean(true);
    if (w == "false") return OpValue::boolean(false);
    bool numeric = (w[0] == '-' || (w[0] >= '0' && w[0] <= '9'));
    if (numeric) {
      try {
        json::Value v = json::parse(w);
        if (v.type == json::Type::Number) return OpValue::from_json(v);
      } catch (const Error&) {
        // not a JSON number: fall through to a bare string
      }
    }
    return OpValue::string(std::move(w));
  }

  struct Nest {
    QueryParser& p;
    explicit Nest(QueryParser& parser) : p(parser) {
      if (++p.depth_ > kMaxDepth) p.fail("the filter nests deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    ~Nest() { --p.depth_; }
  };

  int depth_ = 0;
  std::string_view s_;
  bool filter_;
  size_t pos_ = 0;
};

}  // namespace

Query parse_query(std::string_view text) {
  return QueryParser(text, false).parse();
}

Filter parse_filter(std::string_view text) {
  return QueryParser(text, true).parse_filter();
}

}  // namespace bitdex
