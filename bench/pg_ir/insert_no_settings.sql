-- The minimal insert since 8375675: claims-only setup and the plain DML; no response-settings statement (no SQL of the bench database names them).
\set n random(1, 100000)
\startpipeline
SELECT FROM (SELECT CASE WHEN current_user <> 'anon' THEN set_config('role', 'anon', false) END, set_config('request.jwt.claims', '{"exp":2111904424,"iat":1796544424,"iss":"fluxbase","role":"anon"}', true)) _s;
INSERT INTO "public"."events" AS "events" ("kind", "payload") SELECT "kind", "payload" FROM json_populate_recordset(NULL::"public"."events", (SELECT CASE WHEN json_typeof(_fx_b) = 'array' THEN _fx_b ELSE json_build_array(_fx_b) END FROM CAST(('{"kind":"bench","payload":{"n":' || :n || '}}')::text AS json) AS _fx_b)) _fx_p;
\endpipeline
