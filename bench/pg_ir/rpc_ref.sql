-- The reference server's RPC statement.
\set c random(1, 50)
SELECT coalesce(json_agg(_r), '[]')::text FROM public.recent_items(:c::int4) _r;
