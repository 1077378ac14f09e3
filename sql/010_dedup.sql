-- bitdex_sync.dedup: one case per rule (docs/dedup.md).

-- Empty batch.
SELECT jsonb_pretty(bitdex_sync.dedup('[]'));

-- Scalar field updated three times: the FIRST old value's remove, the LAST new value's set.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 1, "ops": [{"op":"remove","field":"nsfwLevel","value":1},{"op":"set","field":"nsfwLevel","value":2}]},
  {"entity_id": 1, "ops": [{"op":"remove","field":"nsfwLevel","value":2},{"op":"set","field":"nsfwLevel","value":4}]},
  {"entity_id": 1, "ops": [{"op":"remove","field":"nsfwLevel","value":4},{"op":"set","field":"nsfwLevel","value":8}]}
]'));

-- Scalar field back to its first value: the intermediate value cancels, one idempotent set stays.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 1, "ops": [{"op":"remove","field":"a","value":"x"},{"op":"set","field":"a","value":"y"}]},
  {"entity_id": 1, "ops": [{"op":"remove","field":"a","value":"y"},{"op":"set","field":"a","value":"x"}]}
]'));

-- add then remove of one value cancels; remove then add keeps the add.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 7, "ops": [{"op":"add","field":"tagIds","value":5}]},
  {"entity_id": 7, "ops": [{"op":"remove","field":"tagIds","value":5}]},
  {"entity_id": 7, "ops": [{"op":"remove","field":"tagIds","value":6}]},
  {"entity_id": 7, "ops": [{"op":"add","field":"tagIds","value":6}]}
]'));

-- INSERT then UPDATE: alive becomes creates_slot, the sets merge.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 2, "ops": [{"op":"alive"},{"op":"set","field":"nsfwLevel","value":1},{"op":"set","field":"type","value":"image"}]},
  {"entity_id": 2, "ops": [{"op":"remove","field":"nsfwLevel","value":1},{"op":"set","field":"nsfwLevel","value":2}]}
]'));

-- A later delete absorbs everything before it.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 3, "ops": [{"op":"alive"},{"op":"set","field":"nsfwLevel","value":1}]},
  {"entity_id": 3, "ops": [{"op":"add","field":"tagIds","value":9}]},
  {"entity_id": 3, "ops": [{"op":"delete"}]}
]'));

-- Delete then re-insert ends alive with the new values (two records, so no
-- record holds both delete and creates_slot).
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 4, "ops": [{"op":"delete"}]},
  {"entity_id": 4, "ops": [{"op":"alive"},{"op":"set","field":"nsfwLevel","value":16}]}
]'));

-- creates_slot given on input is kept.
SELECT jsonb_pretty(bitdex_sync.dedup('[{"entity_id": 5, "ops": [{"op":"set","field":"a","value":1}], "creates_slot": true}]'));

-- Entities keep the order of their first arrival.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 30, "ops": [{"op":"set","field":"a","value":1}]},
  {"entity_id": 10, "ops": [{"op":"set","field":"a","value":1}]},
  {"entity_id": 30, "ops": [{"op":"set","field":"b","value":1}]},
  {"entity_id": 20, "ops": [{"op":"set","field":"a","value":1}]}
]'));

-- queryOpSets of one query merge; nested ops keep the last op per (field, value).
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 5, "ops": [{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"remove","field":"publishedAt","value":null},{"op":"set","field":"publishedAt","value":"2024-01-01T00:00:00"}]}]},
  {"entity_id": 5, "ops": [{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"remove","field":"publishedAt","value":"2024-01-01T00:00:00"},{"op":"set","field":"publishedAt","value":"2024-02-01T00:00:00"}]}]}
]'));

-- A queryOpSet is a barrier for ops it reads (postId, alive): nothing moves across it.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 1, "ops": [{"op":"remove","field":"postId","value":4},{"op":"set","field":"postId","value":5}]},
  {"entity_id": 5, "ops": [{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"set","field":"publishedAt","value":"2024-03-01T00:00:00"}]}]},
  {"entity_id": 1, "ops": [{"op":"remove","field":"postId","value":5},{"op":"set","field":"postId","value":6}]}
]'));

-- ...but ops that do not touch what it reads or writes merge across it.
SELECT jsonb_pretty(bitdex_sync.dedup('[
  {"entity_id": 1, "ops": [{"op":"remove","field":"nsfwLevel","value":1},{"op":"set","field":"nsfwLevel","value":2}]},
  {"entity_id": 5, "ops": [{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"set","field":"publishedAt","value":"2024-03-01T00:00:00"}]}]},
  {"entity_id": 1, "ops": [{"op":"remove","field":"nsfwLevel","value":2},{"op":"set","field":"nsfwLevel","value":4}]}
]'));

-- query null is kept as it is (the index skips and counts it).
SELECT jsonb_pretty(bitdex_sync.dedup('[{"entity_id": 5, "ops": [{"op":"queryOpSet","query":null,"ops":[]}]}]'));

-- Unknown keys are ignored; values of every JSON kind survive.
SELECT jsonb_pretty(bitdex_sync.dedup('[{"entity_id": 6, "source": "x", "ops": [
  {"op":"set","field":"f","value":1.50,"note":"ignored"},
  {"op":"set","field":"g","value":{"k":[1,2]}},
  {"op":"set","field":"h","value":"tab\there"},
  {"op":"set","field":"i","value":false}]}]'));

-- Errors name what is wrong and where.
SELECT jsonb_pretty(bitdex_sync.dedup('[{"entity_id": 1, "ops": [{"op":"set","field":"a","value":1},{"op":"frobnicate"}]}]'));
SELECT jsonb_pretty(bitdex_sync.dedup('{"entity_id": 1}'));
SELECT jsonb_pretty(bitdex_sync.dedup('[{"entity_id": "one", "ops": []}]'));
SELECT jsonb_pretty(bitdex_sync.dedup('[{"entity_id": 1, "ops": [{"op":"queryOpSet","query":"postId eq 5","ops":[{"op":"delete"}]}]}]'));
SELECT jsonb_pretty(bitdex_sync.dedup('[{"entity_id": 1, "ops": [{"op":"set","value":1}]}]'));
SELECT bitdex_sync.dedup(NULL) IS NULL AS null_in_null_out;
-- Input errors carry SQLSTATE 22023 (invalid_parameter_value).
DO $$
BEGIN
  PERFORM bitdex_sync.dedup('[{"entity_id": 1, "ops": [{"op": "x"}]}]');
EXCEPTION WHEN invalid_parameter_value THEN
  RAISE NOTICE 'sqlstate %: %', SQLSTATE, SQLERRM;
END
$$;

-- Big batches (issue 15, item 11): 100,000 values of one slot are merged in
-- linear time (quadratic before: over a minute); a cancel or statement_timeout
-- stops dedup; more than 16 MB is refused before anything is parsed.
CREATE TEMP TABLE dedup_big AS
  SELECT jsonb_agg(jsonb_build_object('entity_id', 7, 'ops',
           jsonb_build_array(jsonb_build_object('op', 'add', 'field', 'tagIds', 'value', g)))) AS batch
    FROM generate_series(1, 100000) g;
SELECT jsonb_array_length(d) AS records, jsonb_array_length(d -> 0 -> 'ops') AS ops
  FROM (SELECT bitdex_sync.dedup(batch) AS d FROM dedup_big) s;
SET statement_timeout = '10ms';
SELECT bitdex_sync.dedup(batch) IS NOT NULL FROM dedup_big, generate_series(1, 50);
RESET statement_timeout;
SELECT bitdex_sync.dedup(jsonb_agg(jsonb_build_object('entity_id', g, 'ops', '[{"op":"alive"}]'::jsonb)))
  FROM generate_series(1, 400000) g;
