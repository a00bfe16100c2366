-- The minimal insert as Fluxbase sends it since this session (fifth): the wire setup (role compared as text, claims), then the DML reading the one object as one record; no response-settings statement.
\set n random(1, 100000)
\startpipeline
SELECT FROM (SELECT CASE WHEN current_user::text IS DISTINCT FROM 'anon' THEN set_config('role', 'anon', false) END, set_config('request.jwt.claims', '{"exp":2111904424,"iat":1796544424,"iss":"fluxbase","role":"anon"}', true)) _fx_setup;
INSERT INTO "public"."events" AS "events" ("kind", "payload") SELECT "kind", "payload" FROM json_populate_record(NULL::"public"."events", CAST(('{"kind":"bench","payload":{"n":' || :n || '}}')::text AS json)) _fx_p;
\endpipeline
