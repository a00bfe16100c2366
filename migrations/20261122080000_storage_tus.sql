-- Storage: TUS resumable uploads (src/storage/tus.rs). One row per upload, so the offset is
-- shared by every instance and survives a restart; the bytes received so far are staged in
-- the object store under `tus/<id>/…` (one staged object per accepted PATCH, listed in
-- `parts` in offset order) and assembled into an object only when the last byte arrived.
-- API roles have no right to this table: the server reads and writes it as the database
-- owner after checking that the caller is the upload's creator; the one write made in the
-- caller's transaction goes through the SECURITY DEFINER storage.tus_finish().
CREATE TABLE storage.tus_uploads (
  id            uuid PRIMARY KEY,
  -- Never leaves the server: storage.tus_finish() demands it, so knowing an upload's id
  -- (it is in its URL) is not enough to mark it finished.
  secret        uuid NOT NULL,
  bucket_id     text NOT NULL,
  name          text NOT NULL,
  -- The creator: the role and `sub` a later HEAD/PATCH/DELETE must present (or service_role).
  role          text NOT NULL,
  owner_id      text,
  upsert        boolean NOT NULL,
  upload_length bigint NOT NULL CHECK (upload_length >= 0),
  upload_offset bigint NOT NULL DEFAULT 0 CHECK (upload_offset BETWEEN 0 AND upload_length),
  content_type  text NOT NULL,
  cache_control text NOT NULL,
  user_metadata jsonb,
  -- Store keys of the accepted parts, in offset order.
  parts         text[] NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  completed_at  timestamptz
);
-- The janitor removes expired uploads (finished or not) and their staged bytes.
CREATE INDEX tus_uploads_expires_idx ON storage.tus_uploads (expires_at);
REVOKE ALL ON storage.tus_uploads FROM PUBLIC;
