\set id random(1, 100000)
SELECT NULL::int8 AS total, count(_fx_t)::int8 AS n, coalesce(json_agg(_fx_t), '[]')::text AS body, current_setting('response.status', true) AS status, current_setting('response.headers', true) AS headers FROM (SELECT "items".* FROM "public"."items" AS "items" WHERE "items"."id" = CAST(:id::text AS integer)) _fx_t;
