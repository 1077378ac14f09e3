// Op JSON: exact BitDex V2 shapes in and out, unknown keys ignored, unknown
// ops rejected by name.
#include <gtest/gtest.h>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/ops.hpp"

using namespace bitdex;

namespace {

std::string roundtrip(const std::string& in) {
  return batch_to_json(parse_batch(in));
}

std::string error_of(const std::string& in) {
  try {
    parse_batch(in);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidInput);
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(OpsJson, EveryOpShapeRoundTrips) {
  const std::string in =
      R"([{"entity_id":7,"ops":[{"op":"alive"},{"op":"set","field":"nsfwLevel","value":4},)"
      R"({"op":"remove","field":"type","value":"image"},{"op":"add","field":"tagIds","value":-12},)"
      R"({"op":"delete"},{"op":"set","field":"x","value":null},{"op":"set","field":"y","value":true},)"
      R"({"op":"set","field":"z","value":1.50},{"op":"set","field":"big","value":123456789012345678901234},)"
      R"({"op":"set","field":"obj","value":{"a":[1,2]}}],"creates_slot":false},)"
      R"({"entity_id":5,"ops":[{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"set","field":"p","value":"2024-01-01T00:00:00"}]}],"creates_slot":true},)"
      R"({"entity_id":-9223372036854775808,"ops":[{"op":"queryOpSet","query":null,"ops":[]}],"creates_slot":false}])";
  EXPECT_EQ(roundtrip(in), in);
}

TEST(OpsJson, ValueKinds) {
  Batch b = parse_batch(
      R"([{"entity_id":1,"ops":[{"op":"set","field":"a","value":42},{"op":"set","field":"a","value":"42"},)"
      R"({"op":"set","field":"a","value":4.2},{"op":"set","field":"a","value":-0},{"op":"set","field":"a","value":false}]}])");
  const auto& ops = b[0].ops;
  EXPECT_EQ(ops[0].value, OpValue::int64(42));
  EXPECT_EQ(ops[1].value, OpValue::string("42"));
  EXPECT_NE(ops[0].value, ops[1].value);
  EXPECT_EQ(ops[2].value.kind, OpValue::Kind::Json);
  EXPECT_EQ(ops[2].value.text, "4.2");
  EXPECT_EQ(ops[3].value.kind, OpValue::Kind::Json);  // -0 is not a canonical integer
  EXPECT_EQ(ops[4].value, OpValue::boolean(false));
}

TEST(OpsJson, StringsEscapeLikePostgres) {
  std::string in = R"([{"entity_id":1,"ops":[{"op":"set","field":"t","value":"a\"b\\c\n\t\u0001é😀/"}]}])";
  Batch b = parse_batch(in);
  EXPECT_EQ(b[0].ops[0].value.text, "a\"b\\c\n\t\x01\xc3\xa9\xf0\x9f\x98\x80/");
  EXPECT_EQ(
      roundtrip(in),
      R"([{"entity_id":1,"ops":[{"op":"set","field":"t","value":"a\"b\\c\n\t\u0001é😀/"}],"creates_slot":false}])");
  // Surrogate pairs decode to one code point.
  Batch s = parse_batch(R"([{"entity_id":1,"ops":[{"op":"set","field":"t","value":"\ud83d\ude00"}]}])");
  EXPECT_EQ(s[0].ops[0].value.text, "\xf0\x9f\x98\x80");
}

TEST(OpsJson, UnknownKeysIgnored) {
  Batch b = parse_batch(
      R"([{"entity_id":3,"extra":{"x":1},"ops":[{"op":"set","field":"a","value":1,"note":"hi"}],"created_at":"now"}])");
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].ops[0], Op::set("a", OpValue::int64(1)));
}

TEST(OpsJson, AliveAndCreatesSlotBothAccepted) {
  Batch b = parse_batch(R"([{"entity_id":3,"ops":[],"creates_slot":true},{"entity_id":4,"ops":[{"op":"alive"}]}])");
  EXPECT_TRUE(b[0].creates_slot);
  EXPECT_EQ(b[1].ops[0].kind, OpKind::Alive);
}

TEST(OpsJson, UnknownOpRejectedByName) {
  std::string msg = error_of(R"([{"entity_id":1,"ops":[{"op":"set","field":"a","value":1},{"op":"frobnicate"}]}])");
  EXPECT_NE(msg.find("unknown op \"frobnicate\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("record 1, op 2"), std::string::npos) << msg;
}

TEST(OpsJson, ShapeErrors) {
  EXPECT_NE(error_of(R"({"entity_id":1})").find("must be a JSON array"), std::string::npos);
  EXPECT_NE(error_of(R"([{"ops":[]}])").find("missing key \"entity_id\""), std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1.5,"ops":[]}])").find("bigint"), std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":9223372036854775808,"ops":[]}])").find("bigint"), std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1,"ops":{}}])").find("must be an array"), std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1,"ops":[{"op":"set","value":1}]}])").find("missing key \"field\""),
            std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1,"ops":[{"op":"set","field":"a"}]}])").find("missing key \"value\""),
            std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1,"ops":[{"op":"queryOpSet","query":5,"ops":[]}]}])").find("string or null"),
            std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1,"ops":[{"op":"queryOpSet","query":"a eq 1","ops":[{"op":"delete"}]}]}])")
                .find("not allowed inside queryOpSet"),
            std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1,"ops":[],"creates_slot":"yes"}])").find("boolean"), std::string::npos);
  EXPECT_NE(error_of(R"([{"entity_id":1,"ops":[]} trailing])").find("invalid JSON"), std::string::npos);
  EXPECT_NE(error_of("[\"\\u0000\"]").find("\\u0000"), std::string::npos);
}

TEST(Json, RejectsMalformed) {
  for (const char* bad : {"", "[", "{\"a\"}", "[1,]", "01", "1.", "-", "\"\\x\"", "\"abc", "[1 2]", "nul", "{\"a\":1,}",
                          "\"\\ud800\"", "1e"}) {
    EXPECT_THROW(json::parse(bad), Error) << bad;
  }
  std::string deep(300, '[');
  EXPECT_THROW(json::parse(deep), Error);
}
