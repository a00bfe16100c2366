\set n random(1, 100000)
INSERT INTO public.events (kind, payload) SELECT _p.kind, _p.payload FROM json_populate_record(NULL::public.events, ('{"kind":"bench","payload":{"n":' || :n || '}}')::text::json) _p;
