\set id random(1, 100000)
\startpipeline
SELECT set_config('role', 'anon', true), set_config('request.jwt.claims', '{"exp":2111904424,"iat":1796544424,"iss":"fluxbase","role":"anon"}', true), set_config('request.method', 'GET', true), set_config('request.path', '/items', true), set_config('request.headers', '{"user-agent":"wrk","host":"127.0.0.1:18500","apikey":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjIxMTE5MDQ0MjQsImlhdCI6MTc5NjU0NDQyNCwiaXNzIjoiZmx1eGJhc2UiLCJyb2xlIjoiYW5vbiJ9.0su2UOj33YNzKw1VyURj998ovQYloZ1uBeXlof1MqRk","accept":"*/*"}', true), set_config('request.cookies', '{}', true), set_config('transaction_read_only', 'on', true);
SELECT NULL::int8 AS total, count(_fx_t)::int8 AS n, coalesce(json_agg(_fx_t), '[]')::text AS body, current_setting('response.status', true) AS status, current_setting('response.headers', true) AS headers FROM (SELECT "items".* FROM "public"."items" AS "items" WHERE "items"."id" = CAST(:id::text AS integer)) _fx_t;
\endpipeline
