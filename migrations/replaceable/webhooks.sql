-- Webhook capture (re-applied when this file changes).

-- Records one delivery per enabled hook subscribed to any of `names`, each with its job, in
-- the caller's transaction. SECURITY DEFINER: the writer of the change (anon, a user) may
-- neither read the hooks nor write the queue.
CREATE OR REPLACE FUNCTION webhooks.emit(names text[], payload jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  h record;
  d bigint;
  j bigint;
  n integer := 0;
BEGIN
  FOR h IN SELECT id, max_attempts FROM webhooks.hooks WHERE enabled AND events && names LOOP
    d := nextval('webhooks.deliveries_id_seq');
    j := jobs.enqueue('webhooks', jsonb_build_object('delivery', d), h.max_attempts);
    INSERT INTO webhooks.deliveries (id, webhook_id, event, payload, job_id)
    VALUES (d, h.id, names[1], payload, j);
    n := n + 1;
  END LOOP;
  RETURN n;
END
$$;
REVOKE ALL ON FUNCTION webhooks.emit(text[], jsonb) FROM PUBLIC;

-- Row trigger of tables some hook subscribes to: Supabase's database-webhook payload.
CREATE OR REPLACE FUNCTION webhooks.capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  base text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
  new_row jsonb;
  old_row jsonb;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhooks.hooks
                  WHERE enabled AND events && ARRAY[base || ':' || TG_OP, base || ':*']) THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); END IF;
  IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); END IF;
  PERFORM webhooks.emit(ARRAY[base || ':' || TG_OP, base || ':*'],
    jsonb_build_object('type', TG_OP, 'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA,
                       'record', new_row, 'old_record', old_row));
  RETURN NULL;
END
$$;

-- Auth events from auth.users: created, deleted (hard or soft), signed in. The payload
-- never carries the password hash or tokens.
CREATE OR REPLACE FUNCTION webhooks.capture_auth() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  u auth.users;
  ev text;
BEGIN
  IF TG_OP = 'INSERT' THEN
    u := NEW; ev := 'auth.user.created';
  ELSIF TG_OP = 'DELETE' THEN
    u := OLD; ev := 'auth.user.deleted';
  ELSIF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
    u := NEW; ev := 'auth.user.deleted';
  ELSIF NEW.last_sign_in_at IS DISTINCT FROM OLD.last_sign_in_at AND NEW.last_sign_in_at IS NOT NULL THEN
    u := NEW; ev := 'auth.user.signed_in';
  ELSE
    RETURN NULL;
  END IF;
  PERFORM webhooks.emit(ARRAY[ev], jsonb_build_object('type', ev, 'user', jsonb_build_object(
    'id', u.id, 'email', u.email, 'phone', u.phone, 'role', u.role,
    'app_metadata', u.raw_app_meta_data, 'user_metadata', u.raw_user_meta_data,
    'is_anonymous', u.is_anonymous, 'created_at', u.created_at,
    'last_sign_in_at', u.last_sign_in_at)));
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS fluxbase_webhooks ON auth.users;
CREATE TRIGGER fluxbase_webhooks AFTER INSERT OR UPDATE OF last_sign_in_at, deleted_at OR DELETE
  ON auth.users FOR EACH ROW EXECUTE FUNCTION webhooks.capture_auth();

-- Attaches the capture trigger to every table a hook names and removes it from the others.
-- Run by the webhooks API in the transaction that changes the hooks.
CREATE OR REPLACE FUNCTION webhooks.sync_triggers() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT DISTINCT c.oid, n.nspname, c.relname
      FROM webhooks.hooks h
     CROSS JOIN LATERAL unnest(h.events) e
      JOIN pg_catalog.pg_namespace n ON n.nspname = split_part(split_part(e, ':', 1), '.', 1)
      JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
                                AND c.relname = substr(split_part(e, ':', 1), length(n.nspname) + 2)
     WHERE position(':' IN e) > 0 AND c.relkind IN ('r', 'p')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                        WHERE t.tgrelid = c.oid AND t.tgname = 'fluxbase_webhooks')
  LOOP
    EXECUTE format('CREATE TRIGGER fluxbase_webhooks AFTER INSERT OR UPDATE OR DELETE ON %I.%I '
                   'FOR EACH ROW EXECUTE FUNCTION webhooks.capture()', r.nspname, r.relname);
  END LOOP;
  FOR r IN
    SELECT n.nspname, c.relname
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE t.tgname = 'fluxbase_webhooks'
       AND NOT (n.nspname = 'auth' AND c.relname = 'users')
       AND NOT (n.nspname = 'storage' AND c.relname = 'objects')
       AND NOT EXISTS (SELECT 1 FROM webhooks.hooks h CROSS JOIN LATERAL unnest(h.events) e
                        WHERE split_part(e, ':', 1) = n.nspname || '.' || c.relname)
  LOOP
    EXECUTE format('DROP TRIGGER fluxbase_webhooks ON %I.%I', r.nspname, r.relname);
  END LOOP;
END
$$;

-- Storage events from storage.objects (the storage module's own NOTIFY is not durable; this
-- outbox is).
CREATE OR REPLACE FUNCTION webhooks.capture_storage() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r storage.objects;
  ev text := 'storage.object.' || CASE TG_OP WHEN 'INSERT' THEN 'created'
                                             WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhooks.hooks WHERE enabled AND events && ARRAY[ev]) THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
  PERFORM webhooks.emit(ARRAY[ev], jsonb_build_object('type', ev, 'object', jsonb_build_object(
    'id', r.id, 'bucket_id', r.bucket_id, 'name', r.name, 'owner_id', r.owner_id,
    'size', r.metadata -> 'size', 'mimetype', r.metadata -> 'mimetype',
    'created_at', r.created_at, 'updated_at', r.updated_at),
    'old_name', CASE WHEN TG_OP = 'UPDATE' AND OLD.name IS DISTINCT FROM NEW.name THEN OLD.name END));
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS fluxbase_webhooks ON storage.objects;
CREATE TRIGGER fluxbase_webhooks AFTER INSERT OR UPDATE OR DELETE
  ON storage.objects FOR EACH ROW EXECUTE FUNCTION webhooks.capture_storage();
