#include <gtest/gtest.h>

#include <random>

#include "bitdex_sync/core/crc32c.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/query.hpp"

namespace bitdex {
uint32_t crc32c_portable(uint32_t crc, const void* data, size_t len);
}

using namespace bitdex;

TEST(Query, ParsesBitDexSyntax) {
  Query q = parse_query("postId eq 5 AND type in [image, \"vid eo\", 3, null] AND ok eq true");
  ASSERT_EQ(q.clauses.size(), 3u);
  EXPECT_EQ(q.clauses[0].field, "postId");
  EXPECT_EQ(q.clauses[0].values, std::vector<OpValue>{OpValue::int64(5)});
  EXPECT_EQ(q.clauses[1].values, (std::vector<OpValue>{OpValue::string("image"), OpValue::string("vid eo"),
                                                       OpValue::int64(3), OpValue::null()}));
  EXPECT_EQ(q.clauses[2].values, std::vector<OpValue>{OpValue::boolean(true)});
  EXPECT_EQ(parse_query("x in []").clauses[0].values.size(), 0u);
  EXPECT_EQ(parse_query("x eq -1.5").clauses[0].values[0].text, "-1.5");
}

TEST(Query, RejectsMalformed) {
  for (const char* bad : {"", "postId", "postId eq", "postId gt 5", "a eq 1 OR b eq 2", "a in [1, 2", "a eq 1 AND",
                          "a in [[1, 2]]", "a eq 'open"}) {
    EXPECT_THROW(parse_query(bad), Error) << bad;
  }
}

TEST(Crc32c, KnownVectorAndBothPathsAgree) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  std::mt19937_64 rng(1);
  std::string data(5000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t len : {0, 1, 7, 8, 9, 63, 64, 65, 4999, 5000}) {
    EXPECT_EQ(crc32c(data.data(), len), crc32c_portable(0, data.data(), len)) << len;
    // Extending in two steps equals one step.
    EXPECT_EQ(crc32c_extend(crc32c(data.data(), len / 2), data.data() + len / 2, len - len / 2),
              crc32c(data.data(), len));
  }
}
