// The capture spec (capture_spec.hpp): one type for what trigger_gen writes
// and the trigger reads. Round trips without a server, byte for byte against
// specs written before the type existed (trigger names hash these bytes: a
// changed byte would rename every trigger and reload every source).
#include <gtest/gtest.h>

#include "bitdex_sync/core/capture_spec.hpp"
#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/trigger_gen.hpp"

using namespace bitdex;

namespace {

// One source of every kind and option.
const char* kConfig = R"Y(
sources:
  - table: Image
    slot_field: id
    sets_alive: true
    on_delete: true
    track_fields: [nsfwLevel, type, "GREATEST({scannedAt}, {createdAt}) as existedAt"]
    computed_fields:
      - {target: hasMeta, expression: "({flags} & 4) != 0"}
    shared_ops_fields: [nsfwLevel]
  - table: TagsOnImage
    slot_field: imageId
    field: tagIds
    value_field: tagId
    filter: "{tagId} > 0"
    computed_fields:
      - {target: nsfwTags, expression: "{nsfw} = true", value: "{tagId} * 2"}
  - table: Post
    query: "postId eq {id} AND userId eq {userId}"
    track_fields: [publishedAt, availability]
    filter: "{availability} <> 'Private'"
  - table: Model
    query: "modelVersionIds in [{ids}]"
    expression: "SELECT array_agg(v.id) FROM \"ModelVersion\" v WHERE v.\"modelId\" = {id}"
    track_fields: [poi]
    capture: outbox
  - table: Tool
    query: "toolIds in [{ids}]"
    expression: "array_agg(t.id)"
    join: "\"ToolOnImage\" t WHERE t.\"toolId\" = {id}"
    track_fields: [name]
  - table: Collection
    query: "collectionId eq {id}"
    join: "\"CollectionItem\" ci WHERE ci.\"collectionId\" = {id} AND ci.status = 'ACCEPTED'"
    track_fields: [mode]
  - table: Article
    type: fan_out_per_row
    rows_from: {table: ArticleImage, fk: articleId}
    track_fields: [{column: publishedAt, target: articlePublishedAt}]
)Y";

// What trigger_gen::capture_spec wrote for them before CaptureSpec (the
// build of a898bc3), with the Resolved of resolved_for().
const char* kGolden[] = {
    R"S({"v":1,"source":"Image","kind":"direct","sink":"message","slot":"\"id\"","alive":true,"delete":true,"fields":[{"f":"nsfwLevel","sql":"\"nsfwLevel\""},{"f":"type","sql":"\"type\""},{"f":"existedAt","sql":"GREATEST(\"scannedAt\", \"createdAt\")"},{"f":"hasMeta","sql":"(\"flags\" & 4) != 0"}],"fan_in":[{"source":"Post","field":"postId","sql":"SELECT 1 FROM x WHERE y = $1","lock":16385,"fields":["publishedAt","availability"]}],"shared":["nsfwLevel"]})S",
    R"S({"v":1,"source":"TagsOnImage.tagIds","kind":"join","sink":"message","slot":"\"imageId\"","alive":false,"delete":false,"value":{"f":"tagIds","sql":"\"tagId\""},"filter":"\"tagId\" > 0","computed":[{"f":"nsfwTags","cond":"\"nsfw\" = true","sql":"\"tagId\" * 2"}]})S",
    R"S({"v":1,"source":"Post","kind":"fan_out","sink":"message","slot":"\"id\"","alive":false,"delete":false,"fields":[{"f":"publishedAt","sql":"\"publishedAt\""},{"f":"availability","sql":"\"availability\""}],"query":"postId eq {id} AND userId eq {userId}","query_cols":["id","userId"],"fan_in_lock":16400,"filter":"\"availability\" <> 'Private'"})S",
    R"S({"v":1,"source":"Model","kind":"fan_out","sink":"outbox","slot":"\"id\"","alive":false,"delete":false,"fields":[{"f":"poi","sql":"\"poi\""}],"query":"modelVersionIds in [{ids}]","query_cols":[],"ids_sql":"SELECT pg_catalog.to_jsonb((SELECT array_agg(v.id) FROM \"ModelVersion\" v WHERE v.\"modelId\" = $1))","ids_params":["\"id\""]})S",
    R"S({"v":1,"source":"Tool","kind":"fan_out","sink":"message","slot":"\"id\"","alive":false,"delete":false,"fields":[{"f":"name","sql":"\"name\""}],"query":"toolIds in [{ids}]","query_cols":[],"ids_sql":"SELECT pg_catalog.to_jsonb((SELECT array_agg(t.id) FROM \"ToolOnImage\" t WHERE t.\"toolId\" = $1))","ids_params":["\"id\""]})S",
    R"S({"v":1,"source":"Collection","kind":"fan_out","sink":"message","slot":"\"id\"","alive":false,"delete":false,"fields":[{"f":"mode","sql":"\"mode\""}],"query":"collectionId eq {id}","query_cols":["id"],"filter_sql":"SELECT EXISTS (SELECT FROM (SELECT $1 AS \"id\") AS \"Collection\" \"CollectionItem\" ci WHERE ci.\"collectionId\" = \"Collection\".\"id\" AND ci.status = 'ACCEPTED')","filter_params":["\"id\""]})S",
    R"S({"v":1,"source":"Article","kind":"fan_out_per_row","sink":"message","slot":"\"id\"","alive":false,"delete":false,"fields":[{"f":"articlePublishedAt","sql":"\"publishedAt\""}],"rows_sql":"SELECT \"id\" FROM ONLY \"public\".\"ArticleImage\" WHERE \"articleId\" = $1","parent_key":"\"id\""})S",
};

trigger_gen::Resolved resolved_for(const config::Source& s, size_t i) {
  trigger_gen::Resolved r;
  if (s.kind == config::SourceKind::RowFanOut) r.child_table = "\"public\".\"ArticleImage\"";
  if (i == 0)
    r.fan_ins.push_back({"Post", "postId", "SELECT 1 FROM x WHERE y = $1", 16385, {"publishedAt", "availability"}});
  if (i == 2) r.fan_in_lock = 16400;
  if (i == 5) r.join_filter_columns = {"id"};
  return r;
}

}  // namespace

TEST(CaptureSpec, WriterKeepsTheRecordedBytes) {
  const config::Config c = config::parse(kConfig);
  ASSERT_EQ(c.sources.size(), std::size(kGolden));
  for (size_t i = 0; i < c.sources.size(); i++)
    EXPECT_EQ(trigger_gen::capture_spec(c.sources[i], resolved_for(c.sources[i], i)), kGolden[i]) << i;
}

TEST(CaptureSpec, RoundTripsByteForByteAndFieldForField) {
  const config::Config c = config::parse(kConfig);
  for (size_t i = 0; i < std::size(kGolden); i++) {
    const spec::CaptureSpec read = spec::read(std::string_view(kGolden[i]));
    EXPECT_EQ(spec::write(read), kGolden[i]) << i;
    const spec::CaptureSpec made = trigger_gen::spec_of(c.sources[i], resolved_for(c.sources[i], i));
    EXPECT_TRUE(read == made) << i;
    EXPECT_TRUE(spec::read(spec::write(made)) == made) << i;
  }
}

TEST(CaptureSpec, ReadsEveryPart) {
  const spec::CaptureSpec image = spec::read(std::string_view(kGolden[0]));
  EXPECT_EQ(image.kind, config::SourceKind::Direct);
  EXPECT_TRUE(image.alive && image.on_delete);
  ASSERT_EQ(image.fields.size(), 4u);
  EXPECT_EQ(image.fields[3].target, "hasMeta");
  ASSERT_EQ(image.fan_ins.size(), 1u);
  EXPECT_EQ(image.fan_ins[0].lock, 16385u);
  EXPECT_EQ(image.shared, std::vector<std::string>{"nsfwLevel"});
  const spec::CaptureSpec tags = spec::read(std::string_view(kGolden[1]));
  EXPECT_EQ(tags.kind, config::SourceKind::Join);
  EXPECT_EQ(tags.value.target, "tagIds");
  ASSERT_EQ(tags.computed.size(), 1u);
  EXPECT_EQ(tags.computed[0].cond, "\"nsfw\" = true");
  const spec::CaptureSpec model = spec::read(std::string_view(kGolden[3]));
  EXPECT_EQ(model.sink, config::Sink::Outbox);
  EXPECT_TRUE(model.ids_sql.has_value());
  const spec::CaptureSpec collection = spec::read(std::string_view(kGolden[5]));
  EXPECT_TRUE(collection.filter_sql.has_value());
  EXPECT_FALSE(collection.filter.has_value());
  EXPECT_EQ(spec::read(std::string_view(kGolden[6])).parent_key, "\"id\"");
}

// The order the trigger consumes the analysed trees in.
TEST(CaptureSpec, ExpressionsInTheTriggersOrder) {
  EXPECT_EQ(
      spec::expressions(spec::read(std::string_view(kGolden[1]))),
      (std::vector<std::string>{"\"imageId\"", "\"tagId\"", "\"tagId\" * 2", "\"nsfw\" = true", "\"tagId\" > 0"}));
  EXPECT_EQ(spec::expressions(spec::read(std::string_view(kGolden[2]))),
            (std::vector<std::string>{"\"id\"", "\"publishedAt\"", "\"availability\"", "\"id\"", "\"userId\"",
                                      "\"availability\" <> 'Private'"}));
  EXPECT_EQ(spec::expressions(spec::read(std::string_view(kGolden[6]))),
            (std::vector<std::string>{"\"id\"", "\"publishedAt\"", "\"id\""}));
}

TEST(CaptureSpec, RefusesWhatItCannotCompile) {
  auto kind_of_error = [](const char* text) {
    try {
      spec::read(std::string_view(text));
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::Internal;
  };
  EXPECT_EQ(kind_of_error(R"({"v":1,"sink":"message","slot":"id","fields":[]})"), ErrorKind::InvalidInput);  // no kind
  EXPECT_EQ(kind_of_error(R"({"v":1,"kind":"sideways","sink":"message","slot":"id","fields":[]})"),
            ErrorKind::NotSupported);
  EXPECT_EQ(kind_of_error(R"({"v":1,"kind":"direct","sink":"message","slot":"id","fields":{}})"),
            ErrorKind::InvalidInput);
  EXPECT_EQ(kind_of_error(R"({"v":1,"kind":"join","sink":"message","slot":"id"})"), ErrorKind::InvalidInput);
  EXPECT_EQ(kind_of_error(R"({"v":1,"kind":"fan_out_per_row","sink":"message","slot":"id","fields":[]})"),
            ErrorKind::InvalidInput);  // no rows_sql
  EXPECT_EQ(kind_of_error(R"([1,2])"), ErrorKind::InvalidInput);
  // Numbers: whole, in range, or refused (never a std:: exception, never wrapped).
  const std::string fan_in = R"({"v":1,"kind":"direct","sink":"message","slot":"id","fields":[],"fan_in":[)"
                             R"({"source":"p","field":"f","sql":"s","fields":[],"lock":)";
  for (const char* bad : {"-1", "1.5", "1e3", "4294967296", "99999999999999999999999"})
    EXPECT_EQ(kind_of_error((fan_in + bad + "}]}").c_str()), ErrorKind::InvalidInput) << bad;
  EXPECT_EQ(spec::read(std::string_view(fan_in + "4294967295}]}")).fan_ins[0].lock, 4294967295u);
  EXPECT_EQ(kind_of_error(R"({"v":2,"kind":"direct","sink":"message","slot":"id","fields":[]})"),
            ErrorKind::NotSupported);
  EXPECT_EQ(kind_of_error(R"({"v":1e9,"kind":"direct","sink":"message","slot":"id","fields":[]})"),
            ErrorKind::InvalidInput);
  EXPECT_EQ(kind_of_error(R"({"v":1,"kind":"direct","sink":"message","slot":"id","fields":[{"f":1,"sql":"x"}]})"),
            ErrorKind::InvalidInput);
}
