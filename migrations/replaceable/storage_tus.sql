-- TUS resumable uploads (re-applied when this file changes); table in
-- 20261122080000_storage_tus.sql.

-- Marks an upload finished, in the caller's transaction that inserts its object row, so the
-- row and the finished state commit together. Only if the upload still stands at `expected`
-- bytes (nobody finished, advanced or terminated it meanwhile) and `secret` matches.
-- SECURITY DEFINER: the caller's role has no right to storage.tus_uploads.
CREATE OR REPLACE FUNCTION storage.tus_finish(upload uuid, secret uuid, expected bigint)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH done AS (
    UPDATE storage.tus_uploads t
       SET upload_offset = t.upload_length, completed_at = now(), parts = '{}'
     WHERE t.id = tus_finish.upload AND t.secret = tus_finish.secret
       AND t.upload_offset = tus_finish.expected AND t.completed_at IS NULL
       AND t.expires_at > now()
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM done)
$$;
REVOKE ALL ON FUNCTION storage.tus_finish(uuid, uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION storage.tus_finish(uuid, uuid, bigint) TO anon, authenticated, service_role;
