// The index's value dictionary against std::map under random adds, erases
// (by value and by position) and lookups, with values chosen to collide:
// small integers, strings, NULL, booleans.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "bitdex_sync/index/value_map.hpp"

using namespace bitdex;
using bitdex::index::ValueMap;

namespace {

OpValue random_value(std::mt19937_64& rng, int range) {
  switch (rng() % 6) {
    case 0: return OpValue::null();
    case 1: return OpValue::boolean(rng() % 2);
    case 2: return OpValue::string("s" + std::to_string(rng() % range));
    default: return OpValue::int64(static_cast<int64_t>(rng() % range) - range / 4);
  }
}

void expect_same(const ValueMap& m, const std::map<OpValue, Roaring>& want) {
  ASSERT_EQ(m.size(), want.size());
  for (const auto& [value, bitmap] : want) {
    const Roaring* have = m.find(value);
    ASSERT_NE(have, nullptr);
    ASSERT_TRUE(*have == bitmap);
  }
  std::map<OpValue, Roaring> seen;
  for (const ValueMap::Entry& e : m) ASSERT_TRUE(seen.emplace(e.value, e.bitmap).second) << "a value twice";
}

TEST(ValueMap, AgreesWithStdMap) {
  for (int range : {4, 50, 3000}) {
    std::mt19937_64 rng(static_cast<uint64_t>(range));
    ValueMap m;
    std::map<OpValue, Roaring> want;
    for (int step = 0; step < 20000; step++) {
      OpValue v = random_value(rng, range);
      uint32_t slot = static_cast<uint32_t>(rng() % 64);
      switch (rng() % 5) {
        case 0:
        case 1:
          m[v].add(slot);
          want[v].add(slot);
          break;
        case 2:
          m.erase(v);
          want.erase(v);
          break;
        case 3:
          if (m.empty()) break;
          {
            size_t at = rng() % m.size();
            want.erase(m.at(at).value);
            m.erase_at(at);
          }
          break;
        default: {
          const Roaring* have = m.find(v);
          auto it = want.find(v);
          ASSERT_EQ(have != nullptr, it != want.end());
          if (have) {
            ASSERT_TRUE(*have == it->second);
          }
        }
      }
      if (step % 997 == 0) expect_same(m, want);
    }
    expect_same(m, want);
    // Erase everything: the table must stay consistent down to empty.
    while (!want.empty()) {
      m.erase(want.begin()->first);
      want.erase(want.begin());
      ASSERT_EQ(m.size(), want.size());
    }
    EXPECT_EQ(m.find(OpValue::null()), nullptr);
  }
}

}  // namespace
