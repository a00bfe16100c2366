\set id random(1, 100000)
SELECT coalesce(json_agg(_t), '[]')::text FROM (SELECT i.* FROM public.items AS i WHERE i.id = :id) _t;
