-- The single-row GET's statement alone as Fluxbase builds it since this session (response settings NULL), without any setup: single_no_settings minus this is what the merged setup costs.
\set id random(1, 100000)
SELECT NULL::int8 AS total, count(*)::int8 AS n, coalesce(json_agg(_fx_t), '[]')::text AS body, NULL::text AS status, NULL::text AS headers FROM (SELECT "items".* FROM "public"."items" AS "items" WHERE "items"."id" = CAST(:id::text AS integer)) _fx_t;
