// Config parsing (YAML and JSON, same keys), validation messages, and the
// generated capture spec, names and DDL.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "bitdex_sync/core/config.hpp"
#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/sha256.hpp"
#include "bitdex_sync/core/trigger_gen.hpp"

using namespace bitdex;
using namespace bitdex::config;

namespace {

const char* kBenchYaml = R"(
index: bench
sources:
  - table: Image
    slot_field: id
    sets_alive: true
    on_delete: true
    track_fields:
      - nsfwLevel
      - type
      - "GREATEST({scannedAt}, {createdAt}) as existedAt"
      - "({flags} & (1 << 14)) != 0 as onSite"
  - table: TagsOnImage
    slot_field: imageId
    field: tagIds
    value_field: tagId
  - table: Post
    query: "postId eq {id}"
    track_fields: [publishedAt, availability]
)";

std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidInput);
    return std::string(e.what()) + " | " + e.hint();
  }
  return "no error";
}

}  // namespace

TEST(Config, ParsesTheBenchConfig) {
  Config c = parse(kBenchYaml);
  EXPECT_EQ(c.index, "bench");
  ASSERT_EQ(c.sources.size(), 3u);
  const Source& img = c.sources[0];
  EXPECT_EQ(img.kind, SourceKind::Direct);
  EXPECT_TRUE(img.sets_alive);
  EXPECT_TRUE(img.on_delete);
  ASSERT_EQ(img.track_fields.size(), 4u);
  EXPECT_EQ(img.track_fields[0].target, "nsfwLevel");
  EXPECT_EQ(img.track_fields[0].expr.render("NEW."), "NEW.\"nsfwLevel\"");
  EXPECT_EQ(img.track_fields[2].target, "existedAt");
  EXPECT_EQ(img.track_fields[2].expr.render(), "GREATEST(\"scannedAt\", \"createdAt\")");
  EXPECT_EQ(img.track_fields[2].expr.columns, (std::vector<std::string>{"scannedAt", "createdAt"}));
  EXPECT_EQ(img.sink, Sink::Message);
  const Source& tags = c.sources[1];
  EXPECT_EQ(tags.kind, SourceKind::Join);
  EXPECT_EQ(tags.name, "TagsOnImage.tagIds");
  EXPECT_EQ(tags.slot_field, "imageId");
  EXPECT_EQ(tags.value_field, "tagId");
  const Source& post = c.sources[2];
  EXPECT_EQ(post.kind, SourceKind::QueryFanOut);
  EXPECT_EQ(post.query->text, "postId eq {id}");
  EXPECT_EQ(post.query->columns, std::vector<std::string>{"id"});
  EXPECT_EQ(post.slot_field, "id");
}

TEST(Config, JsonAndYamlGiveTheSameSources) {
  const char* json_text = R"({"index":"bench","sources":[
    {"table":"Image","slot_field":"id","sets_alive":true,"on_delete":true,
     "track_fields":["nsfwLevel","type","GREATEST({scannedAt}, {createdAt}) as existedAt",
                     "({flags} & (1 << 14)) != 0 as onSite"]},
    {"table":"TagsOnImage","slot_field":"imageId","field":"tagIds","value_field":"tagId"},
    {"table":"Post","query":"postId eq {id}","track_fields":["publishedAt","availability"]}]})";
  Config y = parse(kBenchYaml), j = parse(json_text);
  ASSERT_EQ(y.sources.size(), j.sources.size());
  for (size_t i = 0; i < y.sources.size(); i++)
    EXPECT_EQ(trigger_gen::capture_spec(y.sources[i]), trigger_gen::capture_spec(j.sources[i])) << i;
}

TEST(Config, AllTrackFieldFormsAndOtherKeys) {
  Config c = parse(R"(
index: t
capture: outbox
triggers:
  - table: public.Image
    track_fields:
      - nsfwLevel
      - "lower({name}) as nameLower"
      - {column: type, target: mediaType}
      - {column: type, target: typeText, expression: "{type}::text"}
      - {target: big, expression: "{width} * {height} > 1000000"}
    computed_fields:
      - {target: hasMeta, expression: "({flags} & 4) = 0"}
    on_delete: delete_slot
    capture: message
    dependsOn: [Post]
  - table: ImageResource
    slot_field: imageId
    field: modelVersionIds
    value_field: modelVersionId
    filter: "{detected} = true"
    computed_fields:
      - {target: modelVersionIdsManual, expression: "{detected} = false", value: modelVersionId}
)");
  const Source& s = c.sources[0];
  EXPECT_EQ(c.sink, Sink::Outbox);
  EXPECT_EQ(s.sink, Sink::Message);  // per-source capture wins
  EXPECT_EQ(split_table(s.table), (std::pair<std::string, std::string>{"public", "Image"}));
  EXPECT_EQ(s.track_fields[1].target, "nameLower");
  EXPECT_EQ(s.track_fields[2].target, "mediaType");
  EXPECT_EQ(s.track_fields[2].expr.render(), "\"type\"");
  EXPECT_EQ(s.track_fields[3].expr.render(), "\"type\"::text");
  EXPECT_EQ(s.track_fields[4].target, "big");
  EXPECT_TRUE(s.on_delete);
  EXPECT_EQ(s.depends_on, std::vector<std::string>{"Post"});
  const Source& r = c.sources[1];
  EXPECT_EQ(r.sink, Sink::Outbox);
  EXPECT_EQ(r.filter->render("NEW."), "NEW.\"detected\" = true");
  ASSERT_EQ(r.computed_fields.size(), 1u);
  EXPECT_EQ(r.computed_fields[0].value->render(), "\"modelVersionId\"");
}

TEST(Config, ErrorsNameTheSourceAndKey) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  const Case cases[] = {
      {"sources: [{table: Image, track_fieldz: [a]}]", "source 1 (table \"Image\"): unknown key \"track_fieldz\""},
      {"sources: [{track_fields: [a]}]", "source 1: missing key \"table\""},
      {"sources: [{table: Image, track_fields: [a]}, {table: Image, track_fields: [b]}]",
       "source 2 (table \"Image\"): duplicate source \"Image\""},
      {"sources: [{table: Post, query: \"postId eq {id}\", query_source: x, track_fields: [a]}]",
       "\"query_source\" is not supported"},
      {"sources: [{table: Post, type: fan_out_per_row, field: tagIds, rows_from: {table: Image, fk: postId}}]",
       "mixes the keys of different source kinds"},
      {"sources: [{table: Post, rows_from: {table: Image, fk: postId}, track_fields: [a]}]",
       "\"rows_from\" needs \"type: fan_out_per_row\""},
      {"sources: [{table: Post, type: fan_out_per_row, track_fields: [a]}]", "needs \"rows_from\""},
      {"sources: [{table: Post, query: \"postId in [{ids}]\", track_fields: [a]}]", "needs \"expression\""},
      {"sources: [{table: Image, filter: \"{x} > 1\", track_fields: [a]}]",
       "\"filter\" does not apply to a direct source"},
      {"sources: [{table: Image, track_fields: [\"{a} + 1\"]}]", "is neither a column name nor"},
      {"sources: [{table: Image, track_fields: [\"{a + 1 as x\"]}]", "unbalanced '{'"},
      {"sources: [{table: Image, track_fields: [a, \"{b} as a\"]}]", "field \"a\" is defined twice"},
      {"sources: [{table: Image, sets_alive: maybe, track_fields: [a]}]", "\"sets_alive\" must be true or false"},
      {"sources: [{table: Image, track_fields: [a], capture: kafka}]", "\"capture\" must be \"message\" or \"outbox\""},
      {"sources: [{table: Image}]", "a direct source needs at least one of"},
      {"sources: [{table: a.b.c, track_fields: [x]}]", "bad table name"},
      {"sources: [{table: Image, track_fields: [a], shared_ops_fields: [b]}]", "does not define"},
      {"index: x", "missing key \"sources\""},
      {"sources: []\ntriggers: []", "one key only"},
      {"sources: [{table: T, field: f, value_field: v, track_fields: [a]}]", "\"track_fields\" does not apply"},
      {"sources: [{table: T, track_fields: [a], computed_fields: [{target: c, expression: x, value: y}]}]",
       "applies to join sources only"},
      {"sources: [ {table: x", "invalid YAML"},
      {"{\"sources\": [}", "invalid JSON"},
  };
  for (const Case& c : cases) EXPECT_NE(error_of(c.yaml).find(c.expect), std::string::npos) << error_of(c.yaml);
  EXPECT_NE(error_of("sources: [{table: Image, bogus: 1, track_fields: [a]}]").find("Known keys here:"),
            std::string::npos);
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(TriggerGen, SpecNamesAndDdl) {
  Config c = parse(kBenchYaml);
  const std::string table = "\"public\".\"Image\"";
  std::string spec = trigger_gen::capture_spec(c.sources[0]);
  EXPECT_EQ(spec,
            R"x({"v":1,"source":"Image","kind":"direct","sink":"message","slot":"\"id\"","alive":true,"delete":true,)x"
            R"x("fields":[{"f":"nsfwLevel","sql":"\"nsfwLevel\""},{"f":"type","sql":"\"type\""},)x"
            R"x({"f":"existedAt","sql":"GREATEST(\"scannedAt\", \"createdAt\")"},)x"
            R"x({"f":"onSite","sql":"(\"flags\" & (1 << 14)) != 0"}]})x");
  std::string name = trigger_gen::trigger_name(table, c.sources[0]);
  EXPECT_EQ(name.rfind("bitdex_image_", 0), 0u);
  EXPECT_EQ(name.size(), std::string("bitdex_image_").size() + 8);
  // Stable: same input, same name; any change of definition, a new one.
  EXPECT_EQ(trigger_gen::trigger_name(table, parse(kBenchYaml).sources[0]), name);
  Source changed = c.sources[0];
  changed.on_delete = false;
  EXPECT_NE(trigger_gen::trigger_name(table, changed), name);
  EXPECT_NE(trigger_gen::trigger_name("\"other\".\"Image\"", c.sources[0]), name);
  std::string ddl = trigger_gen::create_sql(table, c.sources[0]);
  // No argument: the trigger finds its spec recorded under its OID.
  EXPECT_NE(ddl.find("AFTER INSERT OR UPDATE OR DELETE ON \"public\".\"Image\" FOR EACH ROW EXECUTE FUNCTION "
                     "bitdex_sync.capture();"),
            std::string::npos)
      << ddl;
  EXPECT_NE(ddl.find("ENABLE ALWAYS TRIGGER \"" + name + "\""), std::string::npos);
  EXPECT_EQ(trigger_gen::trigger_events(changed), "AFTER INSERT OR UPDATE");
  // Join and fan-out specs.
  EXPECT_EQ(trigger_gen::capture_spec(c.sources[1]),
            R"x({"v":1,"source":"TagsOnImage.tagIds","kind":"join","sink":"message","slot":"\"imageId\"",)x"
            R"x("alive":false,"delete":false,"value":{"f":"tagIds","sql":"\"tagId\""},"computed":[]})x");
  EXPECT_NE(trigger_gen::capture_spec(c.sources[2]).find(R"x("query":"postId eq {id}","query_cols":["id"])x"),
            std::string::npos);
  EXPECT_EQ(
      trigger_gen::trigger_name("\"public\".\"TagsOnImage\"", c.sources[1]).rfind("bitdex_tagsonimage_tagids_", 0), 0u);
  // A quote in a name stays inside its JSON string, and the DDL carries no spec.
  Source evil = c.sources[0];
  evil.track_fields[0].target = "x\"}); DROP TABLE t; --";
  EXPECT_EQ(json::parse(trigger_gen::capture_spec(evil)).find("fields")->items[0].find("f")->text,
            evil.track_fields[0].target);
  EXPECT_EQ(trigger_gen::create_sql(table, evil).find("DROP TABLE"), std::string::npos);
}

TEST(TriggerGen, SpecExpressionsInTheOrderTheTriggerReadsThem) {
  Config c = parse(R"y(
sources:
  - table: Image
    track_fields: [nsfwLevel, "{a} + 1 as b"]
  - table: TagsOnImage
    slot_field: imageId
    field: tagIds
    value_field: tagId
    filter: "{ok}"
    computed_fields:
      - {target: autoIds, expression: "{auto}", value: "{tagId} * 2"}
  - table: Model
    query: "ids in [{ids}] AND n eq {nsfw}"
    expression: "SELECT 1 WHERE {id} = {kind}"
    filter: "{live}"
    track_fields: [poi]
  - {table: Post, type: fan_out_per_row, rows_from: {table: Image, fk: postId, parent_key: pk}, track_fields: [at]}
)y");
  auto exprs = [&](size_t i) {
    return trigger_gen::spec_expressions(
        json::parse(trigger_gen::capture_spec(c.sources[i], {"\"public\".\"Image\"", {}, 0, {}})));
  };
  EXPECT_EQ(exprs(0), (std::vector<std::string>{"\"id\"", "\"nsfwLevel\"", "\"a\" + 1"}));
  EXPECT_EQ(exprs(1), (std::vector<std::string>{"\"imageId\"", "\"tagId\"", "\"tagId\" * 2", "\"auto\"", "\"ok\""}));
  EXPECT_EQ(exprs(2), (std::vector<std::string>{"\"id\"", "\"poi\"", "\"nsfw\"", "\"id\"", "\"kind\"", "\"live\""}));
  EXPECT_EQ(exprs(3), (std::vector<std::string>{"\"id\"", "\"at\"", "\"pk\""}));
  EXPECT_THROW(trigger_gen::spec_expressions(json::parse(R"({"kind":"direct","slot":"x"})")), Error);
}

TEST(TriggerGen, UnsupportedKeysAreRejectedNotIgnored) {
  Config c = parse(R"(
sources:
  - {table: Post, type: fan_out_per_row, rows_from: {table: Image, fk: postId}, track_fields: [publishedAt]}
)");
  for (const Source& s : c.sources) EXPECT_THROW(trigger_gen::create_sql("\"public\".\"T\"", s), Error) << s.name;
}

TEST(Config, JoinIsTheFromClauseOfTheExpression) {
  Config c = parse(R"y(
sources:
  - table: Model
    query: "postId in [{ids}]"
    expression: "array_agg(p.id)"
    join: "Post p JOIN ModelVersion v ON v.id = p.versionId WHERE v.modelId = {id} AND p.kind = {kind}"
    track_fields: [poi]
)y");
  const Source& s = c.sources.at(0);
  ASSERT_TRUE(s.expression.has_value());
  EXPECT_EQ(s.expression->text,
            "SELECT array_agg(p.id) FROM Post p JOIN ModelVersion v ON v.id = p.versionId WHERE v.modelId = {id} AND "
            "p.kind = {kind}");
  EXPECT_EQ(s.expression->columns, (std::vector<std::string>{"id", "kind"}));

  for (const char* whole : {"SELECT 1", "  select 1", "Select\n1"})
    EXPECT_THROW(parse(std::string("sources: [{table: M, query: \"a in [{ids}]\", expression: \"") + whole +
                       "\", join: \"x\", track_fields: [poi]}]"),
                 Error)
        << whole;
  // A value that merely starts with the letters is fine.
  EXPECT_NO_THROW(parse(
      R"y(sources: [{table: M, query: "a in [{ids}]", expression: "selected_ids(x.id)", join: "x", track_fields: [poi]}])y"));
}

// BitDex's shape: "join" without "expression", with "filter" over the join,
// decides whether a row counts; the row stands in as a derived table under
// the table's own name, with the columns the join reads as parameters.
TEST(Config, JoinWithoutExpressionFiltersTheRowThroughTheJoin) {
  Config c = parse(R"y(
sources:
  - table: ModelVersion
    type: fan_out
    query: "modelVersionIds eq {id}"
    join: 'INNER JOIN "Model" ON "Model".id = "ModelVersion"."modelId" AND "Model".owner = {ownerId}'
    filter: '"Model".type = ''Checkpoint'''
    track_fields: [baseModel]
)y");
  const Source& s = c.sources.at(0);
  ASSERT_TRUE(trigger_gen::has_join_filter(s));
  EXPECT_FALSE(s.expression.has_value());
  EXPECT_EQ(trigger_gen::join_filter_sql(s, {"modelId", "ownerId"}),
            R"(SELECT EXISTS (SELECT FROM (SELECT $1 AS "modelId", $2 AS "ownerId") AS "ModelVersion" INNER JOIN )"
            R"("Model" ON "Model".id = "ModelVersion"."modelId" AND "Model".owner = "ModelVersion"."ownerId" )"
            R"(WHERE ("Model".type = 'Checkpoint')))");
  trigger_gen::Resolved r;
  r.join_filter_columns = {"modelId", "ownerId"};
  const json::Value spec = json::parse(trigger_gen::capture_spec(s, r));
  EXPECT_EQ(spec.find("filter"), nullptr);  // the filter is the join query's, not an expression over the row
  ASSERT_NE(spec.find("filter_sql"), nullptr);
  EXPECT_EQ(trigger_gen::spec_expressions(spec),
            (std::vector<std::string>{R"("id")", R"("baseModel")", R"("id")", R"("modelId")", R"("ownerId")"}));
  // Another filter is another definition: its fields are cleared and reloaded.
  Config other = parse(R"y(
sources:
  - {table: ModelVersion, query: "modelVersionIds eq {id}", join: 'INNER JOIN "Model" ON "Model".id = "ModelVersion"."modelId"', track_fields: [baseModel]}
)y");
  trigger_gen::Resolved r2;
  r2.join_filter_columns = {"modelId"};
  const json::Value other_spec = json::parse(trigger_gen::capture_spec(other.sources.at(0), r2));
  EXPECT_EQ(trigger_gen::fields_to_clear(spec, 1, &other_spec, 1), (std::vector<std::string>{"baseModel"}));
  // With "expression", "join" stays the expression's FROM clause.
  Config with_expr = parse(
      R"y(sources: [{table: M, query: "a in [{ids}]", expression: "array_agg(x.id)", join: "x", track_fields: [poi]}])y");
  EXPECT_FALSE(trigger_gen::has_join_filter(with_expr.sources.at(0)));
}

// Every source example in docs/config.md ("Every key by example") parses and
// generates a trigger.
TEST(Config, DocumentedExamplesParse) {
  std::ifstream in("docs/config.md");
  ASSERT_TRUE(in) << "run from the repository root";
  std::stringstream all;
  all << in.rdbuf();
  const std::string doc = all.str();
  size_t section = doc.find("### Every key by example");
  ASSERT_NE(section, std::string::npos);
  size_t open = doc.find("```yaml\n# table", section);
  ASSERT_NE(open, std::string::npos);
  open += 8;
  const std::string block = doc.substr(open, doc.find("```", open) - open);
  std::vector<std::string> items;
  std::istringstream lines(block);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("- ", 0) == 0) items.emplace_back();
    if (!items.empty() && line.rfind("#", 0) != 0) items.back() += line + "\n";
  }
  ASSERT_GE(items.size(), 6u);
  for (const std::string& item : items) {
    SCOPED_TRACE(item);
    Config c = parse("sources:\n" + item);
    ASSERT_EQ(c.sources.size(), 1u);
    trigger_gen::Resolved r;
    if (c.sources[0].rows_from) r.child_table = "\"public\".\"Image\"";
    EXPECT_NO_THROW(trigger_gen::create_sql("\"public\".\"T\"", c.sources[0], r));
  }
}

TEST(TriggerGen, SharedOpsFieldHelpers) {
  Config c = parse(R"x(
sources:
  - {table: Image, track_fields: ["extract(epoch from {sortAt})::bigint as sortAtUnix", level], shared_ops_fields: [sortAtUnix]}
)x");
  const Source& s = c.sources[0];
  EXPECT_EQ(trigger_gen::helper_name(s, "sortAtUnix"), "bitdex_image_sortatunix_ops");
  EXPECT_EQ(
      trigger_gen::helper_sql("\"public\".\"Image\"", "public", s, "sortAtUnix"),
      "CREATE OR REPLACE FUNCTION \"public\".\"bitdex_image_sortatunix_ops\"(_row \"public\".\"Image\") RETURNS jsonb "
      "LANGUAGE sql STABLE RETURN pg_catalog.jsonb_build_array("
      "pg_catalog.jsonb_build_object('op', 'set', 'field', 'sortAtUnix', 'value', bitdex_sync.op_value("
      "extract(epoch from _row.\"sortAt\")::bigint)));\n");
  // Adding a shared field changes the definition, hence the trigger name.
  Source without = s;
  without.shared_ops_fields.clear();
  EXPECT_NE(trigger_gen::trigger_name("\"public\".\"Image\"", s),
            trigger_gen::trigger_name("\"public\".\"Image\"", without));
}

TEST(TriggerGen, FanOutPerRowAndExpressionSpecs) {
  Config c = parse(R"x(
sources:
  - {table: Post, type: fan_out_per_row, rows_from: {table: Image, fk: postId}, track_fields: [publishedAt]}
  - table: Model
    query: "modelVersionIds in [{ids}] AND nsfw eq {nsfw}"
    expression: "SELECT array_agg(id) FROM \"ModelVersion\" WHERE \"modelId\" = {id} AND kind = {kind}"
    track_fields: [poi]
)x");
  trigger_gen::Resolved r{"\"public\".\"Image\"", {}, 0, {}};
  EXPECT_EQ(trigger_gen::rows_sql(c.sources[0], r),
            "SELECT \"id\" FROM ONLY \"public\".\"Image\" WHERE \"postId\" = $1");
  std::string spec = trigger_gen::capture_spec(c.sources[0], r);
  EXPECT_NE(spec.find(R"x("kind":"fan_out_per_row")x"), std::string::npos) << spec;
  EXPECT_NE(spec.find(R"x("parent_key":"\"id\"")x"), std::string::npos) << spec;
  EXPECT_EQ(trigger_gen::trigger_events(c.sources[0]), "AFTER INSERT OR UPDATE OR DELETE");
  // A different child table is a different definition, hence a different name.
  EXPECT_NE(trigger_gen::trigger_name("\"public\".\"Post\"", c.sources[0], r),
            trigger_gen::trigger_name("\"public\".\"Post\"", c.sources[0],
                                      trigger_gen::Resolved{"\"x\".\"Image\"", {}, 0, {}}));
  EXPECT_EQ(
      trigger_gen::ids_sql(c.sources[1]),
      "SELECT pg_catalog.to_jsonb((SELECT array_agg(id) FROM \"ModelVersion\" WHERE \"modelId\" = $1 AND kind = $2))");
  std::string mspec = trigger_gen::capture_spec(c.sources[1]);
  EXPECT_NE(mspec.find(R"x("query_cols":["nsfw"])x"), std::string::npos) << mspec;
  EXPECT_NE(mspec.find(R"x("ids_params":["\"id\"","\"kind\""])x"), std::string::npos) << mspec;
  EXPECT_NO_THROW(trigger_gen::create_sql("\"public\".\"Model\"", c.sources[1]));
}

// Hostile configs (issue 17, items 7-9): refused with the limit or the key
// named, never expanded, cut or half-applied.
TEST(Config, HostileShapesAreRefused) {
  // Nine levels of aliases to lists of nine: 9^9 values if expanded.
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 9; i++) {
    bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int j = 0; j < 9; j++) bomb += std::string(j ? ", " : "") + "*a" + std::to_string(i - 1);
    bomb += "]\n";
  }
  bomb += "sources: [{table: Image, track_fields: [a]}]\n";
  EXPECT_NE(error_of(bomb).find("more than 100000 values"), std::string::npos) << error_of(bomb);

  std::string deep = "sources: [{table: Image, track_fields: [a]}]\nindex: ";
  for (int i = 0; i < 40; i++) deep += "[";
  for (int i = 0; i < 40; i++) deep += "]";
  EXPECT_NE(error_of(deep).find("nested deeper than 32 levels"), std::string::npos) << error_of(deep);

  std::string big = "sources: [{table: Image, track_fields: [a]}]\n#" + std::string(1 << 20, 'x') + "\n";
  EXPECT_NE(error_of(big).find("more than 1048576 (1 MiB)"), std::string::npos) << error_of(big);

  const std::pair<const char*, const char*> cases[] = {
      // Duplicate keys: the first list of sources would be dropped silently.
      {"sources: [{table: A, track_fields: [a]}]\nsources: [{table: B, track_fields: [b]}]\n",
       "the config (line 1): duplicate key \"sources\""},
      {"sources:\n  - table: A\n    table: B\n    track_fields: [a]\n", "sources[1] (line 2): duplicate key \"table\""},
      {R"({"sources": [{"table": "A", "track_fields": ["a"]}], "sources": []})",
       "the config: duplicate key \"sources\""},
      {R"({"sources": [{"table": "A", "track_fields": ["a"], "track_fields": ["b"]}]})",
       "sources[1]: duplicate key \"track_fields\""},
      // NUL: PostgreSQL text cannot hold it; a name would be cut there.
      {"sources: [{table: \"Im\\0age\", track_fields: [a]}]", "sources[1].table (line 1): contains a NUL character"},
      {R"({"sources": [{"table": "Image", "track_fields": ["a\u0000b"]}]})", "\\u0000 is not allowed"},
      {"sources: [{table: Image, \"track\\0fields\": [a]}]", "sources[1].<key> (line 1): contains a NUL character"},
  };
  for (const auto& [text, expect] : cases)
    EXPECT_NE(error_of(text).find(expect), std::string::npos) << text << "\n -> " << error_of(text);
}

TEST(Config, DeepYamlNestingIsAnErrorNotACrash) {
  std::string deep = "sources: ";
  for (int i = 0; i < 100000; i++) deep += "[";
  EXPECT_NE(error_of(deep), "no error");
}

// The fan-in: "F eq {col}" with F a plain column of exactly one direct
// source makes that source's rows the children; its query reads the
// parent's fields by the child's value, through the fan-out's filter.
TEST(TriggerGen, FanInOfAnEqQueryOverAPlainColumn) {
  Config c = parse(R"y(
sources:
  - {table: Image, track_fields: [postId, "lower({name}) as n"], sets_alive: true}
  - {table: Post, query: "postId eq {id}", filter: "{status} = 'published'", track_fields: [publishedAt]}
  - {table: Model, query: "n eq {name}", track_fields: [poi]}
  - {table: Tag, query: "postId in [{ids}]", expression: "SELECT 1", track_fields: [x]}
)y");
  const auto f = trigger_gen::fan_in_of(c, c.sources[1]);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->child, 0u);
  EXPECT_EQ(f->field, "postId");
  EXPECT_EQ(f->child_column, "postId");
  EXPECT_EQ(f->parent_column, "id");
  EXPECT_EQ(
      trigger_gen::fan_in_sql(c.sources[1], *f, R"("public"."Post")", true),
      R"(SELECT p."publishedAt" FROM ONLY "public"."Post" AS p WHERE p."id" = $1 AND (p."status" = 'published'))");
  EXPECT_FALSE(trigger_gen::fan_in_of(c, c.sources[2]));  // "n" is an expression, not a plain column
  EXPECT_FALSE(trigger_gen::fan_in_of(c, c.sources[3]));  // {ids} from an expression
  // A child's spec that differs in its fan-ins only needs no reload.
  trigger_gen::Resolved with, without;
  with.fan_ins.push_back({"Post", "postId", "SELECT 1", 42, {"publishedAt"}});
  EXPECT_TRUE(trigger_gen::same_but_fan_ins(trigger_gen::capture_spec(c.sources[0], with),
                                            trigger_gen::capture_spec(c.sources[0], without)));
  EXPECT_NE(trigger_gen::capture_spec(c.sources[0], with), trigger_gen::capture_spec(c.sources[0], without));
  EXPECT_FALSE(trigger_gen::same_but_fan_ins(trigger_gen::capture_spec(c.sources[0], with), ""));
}
