#include "support/history_gen.hpp"

#include <iterator>

namespace bitdex::test {

OpValue HistoryGen::value_a() {
  return pick(0, 3) == 0 ? OpValue::null() : OpValue::int64(pick(1, 3));
}
OpValue HistoryGen::value_b() {
  return OpValue::string(pick(0, 1) ? "x" : "y");
}
OpValue HistoryGen::value_post() {
  return pick(0, 4) == 0 ? OpValue::null() : OpValue::int64(pick(1, 3));
}
OpValue HistoryGen::value_published() {
  return pick(0, 3) == 0 ? OpValue::null() : OpValue::string("2024-01-0" + std::to_string(pick(1, 3)));
}
OpValue HistoryGen::value_availability() {
  return OpValue::string(pick(0, 1) ? "Public" : "Private");
}

EntityRecord HistoryGen::rec(int64_t id, std::vector<Op> ops) {
  EntityRecord r;
  r.entity_id = id;
  r.ops = std::move(ops);
  return r;
}

Batch HistoryGen::insert_image() {
  int64_t id = pick(1, 6);
  if (images_.count(id)) return {};
  Image im{value_a(), value_b(), value_post()};
  images_[id] = im;
  std::vector<Op> ops{Op::set("a", im.a), Op::set("b", im.b), Op::set("postId", im.post)};
  // BitDex V2 puts {"op":"alive"} first; some producers send creates_slot.
  EntityRecord r = rec(id, {});
  if (pick(0, 3) == 0) {
    r.creates_slot = true;
    r.ops = std::move(ops);
  } else {
    r.ops.push_back(Op::alive());
    for (auto& o : ops) r.ops.push_back(std::move(o));
  }
  return {std::move(r)};
}

Batch HistoryGen::update_image() {
  if (images_.empty()) return {};
  auto it = std::next(images_.begin(), pick(0, static_cast<int>(images_.size()) - 1));
  Image& im = it->second;
  std::vector<Op> ops;
  auto change = [&](const char* field, OpValue& cur, OpValue next) {
    if (next == cur) return;  // IS DISTINCT FROM
    ops.push_back(Op::remove(field, cur));
    ops.push_back(Op::set(field, next));
    cur = std::move(next);
  };
  if (pick(0, 1)) change("a", im.a, value_a());
  if (pick(0, 2) == 0) change("b", im.b, value_b());
  if (pick(0, 3) == 0) change("postId", im.post, value_post());
  if (ops.empty()) return {};
  return {rec(it->first, std::move(ops))};
}

Batch HistoryGen::delete_image() {
  if (images_.empty()) return {};
  auto it = std::next(images_.begin(), pick(0, static_cast<int>(images_.size()) - 1));
  int64_t id = it->first;
  images_.erase(it);
  Batch out{rec(id, {Op::del()})};
  if (cascade_) {  // ON DELETE CASCADE: the join rows go too, their triggers fire after
    for (auto t = tags_.begin(); t != tags_.end();) {
      if (t->first == id) {
        out.push_back(rec(id, {Op::remove("tagIds", OpValue::int64(t->second))}));
        t = tags_.erase(t);
      } else {
        ++t;
      }
    }
  }
  return out;
}

Batch HistoryGen::insert_tag() {
  int64_t img = cascade_ && !images_.empty()
                    ? std::next(images_.begin(), pick(0, static_cast<int>(images_.size()) - 1))->first
                    : pick(1, 6);
  int64_t tag = pick(1, 3);
  if (cascade_ && !images_.count(img)) return {};
  if (!tags_.insert({img, tag}).second) return {};
  return {rec(img, {Op::add("tagIds", OpValue::int64(tag))})};
}

Batch HistoryGen::delete_tag() {
  if (tags_.empty()) return {};
  auto it = std::next(tags_.begin(), pick(0, static_cast<int>(tags_.size()) - 1));
  auto [img, tag] = *it;
  tags_.erase(it);
  return {rec(img, {Op::remove("tagIds", OpValue::int64(tag))})};
}

Batch HistoryGen::update_tag() {
  if (tags_.empty()) return {};
  auto it = std::next(tags_.begin(), pick(0, static_cast<int>(tags_.size()) - 1));
  auto [img, tag] = *it;
  int64_t nimg = pick(0, 2) == 0 ? pick(1, 6) : img;
  int64_t ntag = pick(1, 3);
  if (cascade_ && !images_.count(nimg)) return {};
  if ((nimg != img || ntag != tag) && tags_.count({nimg, ntag})) return {};  // key taken
  if (nimg == img && ntag == tag) return {};  // no change of slot or value: nothing captured
  tags_.erase(it);
  tags_.insert({nimg, ntag});
  if (nimg == img)
    return {rec(img, {Op::remove("tagIds", OpValue::int64(tag)), Op::add("tagIds", OpValue::int64(ntag))})};
  return {rec(img, {Op::remove("tagIds", OpValue::int64(tag))}), rec(nimg, {Op::add("tagIds", OpValue::int64(ntag))})};
}

Batch HistoryGen::upsert_post() {
  int64_t id = pick(1, 3);
  std::string query = "postId eq " + std::to_string(id);
  int shape = pick(0, 9);
  if (shape == 0) query = "postId in [" + std::to_string(id) + ", 9]";
  if (shape == 1) query += " AND b eq x";
  std::vector<Op> ops;
  auto it = posts_.find(id);
  if (it == posts_.end()) {
    Post p{value_published(), value_availability()};
    posts_[id] = p;
    ops = {Op::set("publishedAt", p.published), Op::set("availability", p.availability)};
  } else {
    Post& p = it->second;
    OpValue np = value_published(), na = value_availability();
    if (np != p.published) {
      ops.push_back(Op::remove("publishedAt", p.published));
      ops.push_back(Op::set("publishedAt", np));
      p.published = np;
    }
    if (na != p.availability) {
      ops.push_back(Op::remove("availability", p.availability));
      ops.push_back(Op::set("availability", na));
      p.availability = na;
    }
    if (ops.empty()) return {};
  }
  Op q = Op::query_op_set(query, std::move(ops));
  if (shape == 2) q.has_query = false, q.query.clear();  // a null query: the index skips it
  return {rec(id, {std::move(q)})};
}

Batch HistoryGen::next_change() {
  if (!decided_cascade_) {
    cascade_ = pick(0, 1) == 1;
    decided_cascade_ = true;
  }
  if (truncates_ && pick(0, 59) == 0) return truncate();
  switch (pick(0, 11)) {
    case 0:
    case 1:
    case 2: return insert_image();
    case 3:
    case 4:
    case 5: return update_image();
    case 6: return delete_image();
    case 7: return insert_tag();
    case 8: return delete_tag();
    case 9: return update_tag();
    default: return upsert_post();
  }
}

}  // namespace bitdex::test

namespace bitdex::test {

// TRUNCATE of one of the three tables, as the capture's clear record: the
// image table's slots are deleted (on_delete), the tag table's field and the
// post table's fan-out fields are cleared.
Batch HistoryGen::truncate() {
  Clear c;
  switch (pick(0, 2)) {
    case 0:
      c = Clear{true, true, "image", {"a", "b", "postId"}};
      images_.clear();
      if (cascade_) tags_.clear();  // TRUNCATE ... CASCADE: the tag table's own clear follows
      break;
    case 1:
      c = Clear{false, false, "tag.tagIds", {"tagIds"}};
      tags_.clear();
      break;
    default:
      c = Clear{false, false, "post", {"publishedAt", "availability"}};
      posts_.clear();
      break;
  }
  Batch out{EntityRecord::clearing(c)};
  if (c.delete_slots && cascade_) out.push_back(EntityRecord::clearing(Clear{false, false, "tag.tagIds", {"tagIds"}}));
  return out;
}

}  // namespace bitdex::test
