-- The RPC statement before f2fe15e (arguments through json_to_record), statement only.
\set c random(1, 50)
SELECT NULL::int8 AS total, count(*)::int8 AS n, coalesce(json_agg(_fx_t), '[]')::text AS body, current_setting('response.status', true) AS status, current_setting('response.headers', true) AS headers FROM (SELECT "recent_items".* FROM json_to_record(CAST(('{"cat":"' || :c || '"}')::text AS json)) AS _fx_args("cat" integer), LATERAL "public"."recent_items"("cat" => _fx_args."cat") AS "recent_items") _fx_t;
