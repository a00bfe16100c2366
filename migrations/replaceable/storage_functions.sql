-- Storage helper functions with Supabase's names and results, for RLS policies:
--   storage.foldername('a/b/c.png') = {a,b}, storage.filename(..) = 'c.png',
--   storage.extension(..) = 'png'.
CREATE OR REPLACE FUNCTION storage.foldername(name text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE _parts text[];
BEGIN
  _parts := string_to_array(name, '/');
  RETURN _parts[1:array_length(_parts, 1) - 1];
END
$$;

CREATE OR REPLACE FUNCTION storage.filename(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE _parts text[];
BEGIN
  _parts := string_to_array(name, '/');
  RETURN _parts[array_length(_parts, 1)];
END
$$;

CREATE OR REPLACE FUNCTION storage.extension(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE _parts text[]; _filename text;
BEGIN
  _parts := string_to_array(name, '/');
  _filename := _parts[array_length(_parts, 1)];
  RETURN reverse(split_part(reverse(_filename), '.', 1));
END
$$;

GRANT EXECUTE ON FUNCTION storage.foldername(text), storage.filename(text), storage.extension(text)
  TO anon, authenticated, service_role;

-- Object events: the hook point for later modules (webhooks). One NOTIFY on channel
-- `fluxbase_events` per changed row, delivered on commit:
--   {"type": "storage.object.created|updated|deleted", "bucket_id", "name", "id",
--    "version", "old_name"?, "old_bucket_id"?, "size"?, "mimetype"?, "at"}
-- Metadata beyond size and mime type is left out so a payload stays far below NOTIFY's
-- 8000-byte limit (names are at most 1024 bytes). The same trigger records byte versions
-- no row references any more in storage.garbage. SECURITY DEFINER: the caller's role
-- (anon, authenticated) has no right to storage.garbage.
CREATE OR REPLACE FUNCTION storage.objects_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  r storage.objects;
  ev jsonb;
BEGIN
  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
  ev := jsonb_build_object(
    'type', 'storage.object.' || CASE TG_OP WHEN 'INSERT' THEN 'created'
                                            WHEN 'UPDATE' THEN 'updated'
                                            ELSE 'deleted' END,
    'id', r.id, 'bucket_id', r.bucket_id, 'name', r.name, 'version', r.version,
    'size', r.metadata -> 'size', 'mimetype', r.metadata -> 'mimetype',
    'at', to_jsonb(now()));
  IF TG_OP = 'UPDATE' AND (OLD.name IS DISTINCT FROM NEW.name OR OLD.bucket_id IS DISTINCT FROM NEW.bucket_id) THEN
    ev := ev || jsonb_build_object('old_name', OLD.name, 'old_bucket_id', OLD.bucket_id);
  END IF;
  PERFORM pg_notify('fluxbase_events', ev::text);
  IF TG_OP <> 'INSERT' AND OLD.version IS NOT NULL
     AND (TG_OP = 'DELETE' OR OLD.version IS DISTINCT FROM NEW.version) THEN
    INSERT INTO storage.garbage (version) VALUES (OLD.version) ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS objects_changed ON storage.objects;
CREATE TRIGGER objects_changed AFTER INSERT OR UPDATE OR DELETE ON storage.objects
  FOR EACH ROW EXECUTE FUNCTION storage.objects_changed();

-- updated_at follows every UPDATE of a row, as Supabase's `update_objects_updated_at` trigger
-- does (a policy-driven UPDATE, or one made in SQL, counts as a change too).
CREATE OR REPLACE FUNCTION storage.update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at = now();
  RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS update_objects_updated_at ON storage.objects;
CREATE TRIGGER update_objects_updated_at BEFORE UPDATE ON storage.objects
  FOR EACH ROW EXECUTE FUNCTION storage.update_updated_at_column();
