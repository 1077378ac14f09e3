-- Capture triggers from a config: the ops each source kind emits, read back
-- from a logical slot (message sink) through the bitdex_sync output plugin.
SET client_min_messages = warning;
CREATE TYPE "MediaType" AS ENUM ('image', 'video');
CREATE TABLE "Post" (
  id serial PRIMARY KEY,
  "publishedAt" timestamp(3),
  availability text NOT NULL DEFAULT 'Public'
);
CREATE TABLE "Image" (
  id serial PRIMARY KEY,
  "nsfwLevel" integer NOT NULL DEFAULT 1,
  type "MediaType" NOT NULL DEFAULT 'image',
  "postId" integer,
  minor boolean NOT NULL DEFAULT false,
  "blockedFor" text,
  flags integer NOT NULL DEFAULT 0,
  "scannedAt" timestamp(3),
  "createdAt" timestamp(3) NOT NULL DEFAULT '2024-01-01 00:00:00',
  score numeric
);
CREATE TABLE "TagsOnImage" (
  "imageId" integer NOT NULL,
  "tagId" integer NOT NULL,
  PRIMARY KEY ("imageId", "tagId")
);

SELECT source, action, table_name FROM bitdex_sync.apply_config($$
index: test
sources:
  - table: Image
    slot_field: id
    sets_alive: true
    on_delete: true
    track_fields:
      - nsfwLevel
      - type
      - postId
      - minor
      - blockedFor
      - score
      - "GREATEST({scannedAt}, {createdAt}) as existedAt"
      - "({flags} & (1 << 14)) != 0 as onSite"
  - table: TagsOnImage
    slot_field: imageId
    field: tagIds
    value_field: tagId
  - table: Post
    query: "postId eq {id}"
    track_fields: [publishedAt, availability]
$$) ORDER BY source;

SELECT 'slot' FROM pg_create_logical_replication_slot('capture_test', 'bitdex_sync');

-- INSERT: alive + a set per field (NULLs included, enums as strings, timestamps as to_jsonb gives them).
INSERT INTO "Image" (id, "nsfwLevel", "postId", "scannedAt", score) VALUES (1, 4, 10, '2024-02-01 10:00:00.5', 1.50);
-- UPDATE: remove/set pairs only for the fields that changed.
UPDATE "Image" SET "nsfwLevel" = 8, flags = flags | (1 << 14) WHERE id = 1;
-- UPDATE that changes nothing tracked: no op.
UPDATE "Image" SET flags = flags | 1 WHERE id = 1;
-- NULL to value and back.
UPDATE "Image" SET "blockedFor" = 'tos' WHERE id = 1;
UPDATE "Image" SET "blockedFor" = NULL WHERE id = 1;
-- Join table: INSERT adds, DELETE removes, UPDATE is remove old + add new.
INSERT INTO "TagsOnImage" VALUES (1, 100), (1, 101);
DELETE FROM "TagsOnImage" WHERE "tagId" = 100;
UPDATE "TagsOnImage" SET "tagId" = 102 WHERE "tagId" = 101;
UPDATE "TagsOnImage" SET "imageId" = 2 WHERE "tagId" = 102;
-- Fan-out: one queryOpSet; INSERT sets, UPDATE remove/set pairs, DELETE removes.
INSERT INTO "Post" (id, "publishedAt") VALUES (10, '2024-03-01 00:00:00');
UPDATE "Post" SET "publishedAt" = '2024-03-02 00:00:00' WHERE id = 10;
UPDATE "Post" SET availability = 'Public' WHERE id = 10;
DELETE FROM "Post" WHERE id = 10;
-- DELETE of the image: delete.
DELETE FROM "Image" WHERE id = 1;
-- A rolled-back transaction emits nothing.
BEGIN;
INSERT INTO "Image" (id) VALUES (99);
ROLLBACK;

SELECT data FROM pg_logical_slot_get_changes('capture_test', NULL, NULL);

-- The triggers fire under session_replication_role = replica too (ENABLE ALWAYS).
SET session_replication_role = replica;
INSERT INTO "Image" (id, "nsfwLevel") VALUES (3, 2);
RESET session_replication_role;
SELECT count(*) AS captured_under_replica FROM pg_logical_slot_get_changes('capture_test', NULL, NULL);

-- Fields whose columns an UPDATE did not assign are not even evaluated, but a
-- BEFORE trigger can change columns the statement did not name: then every
-- field is compared, and nothing is lost.
CREATE FUNCTION double_level() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW."nsfwLevel" := NEW."nsfwLevel" * 2; RETURN NEW; END $$;
CREATE TRIGGER a_double_level BEFORE UPDATE ON "Image" FOR EACH ROW EXECUTE FUNCTION double_level();
UPDATE "Image" SET "blockedFor" = 'x' WHERE id = 3;
DROP TRIGGER a_double_level ON "Image";
-- Assigning a tracked column its current value captures nothing.
UPDATE "Image" SET "nsfwLevel" = "nsfwLevel" WHERE id = 3;
SELECT data FROM pg_logical_slot_get_changes('capture_test', NULL, NULL);

SELECT pg_drop_replication_slot('capture_test');
