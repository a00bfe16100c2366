-- Storage: buckets and object metadata, with Supabase Storage's table and column names so
-- that RLS policies written for Supabase work unchanged. The bytes live in the configured
-- object store (src/storage/backend.rs); a row points at them through `version`.
CREATE SCHEMA IF NOT EXISTS storage;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;

CREATE TABLE storage.buckets (
  id                 text PRIMARY KEY,
  name               text NOT NULL,
  owner              uuid,
  owner_id           text,
  public             boolean NOT NULL DEFAULT false,
  file_size_limit    bigint,
  allowed_mime_types text[],
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX bname ON storage.buckets (name);

CREATE TABLE storage.objects (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bucket_id        text NOT NULL REFERENCES storage.buckets (id),
  name             text NOT NULL,
  owner            uuid,
  owner_id         text,
  metadata         jsonb,
  user_metadata    jsonb,
  path_tokens      text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
  version          text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  last_accessed_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT objects_bucket_name_key UNIQUE (bucket_id, name)
);
-- Listing a folder is a prefix scan on (bucket_id, name).
CREATE INDEX objects_bucket_name_prefix_idx ON storage.objects (bucket_id, name text_pattern_ops);
-- The janitor asks whether a row still points at a version.
CREATE INDEX objects_version_idx ON storage.objects (version);

-- Byte versions no row points at any more (replaced by an upsert, or deleted). Filled by
-- the trigger in replaceable/storage_functions.sql, emptied by the storage.janitor job,
-- which deletes the bytes after a grace period (readers may still be streaming them).
CREATE TABLE storage.garbage (
  version    text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON storage.garbage FROM PUBLIC;

-- As in Supabase: every API role may touch the tables, RLS decides which rows. With RLS on
-- and no policy, only service_role (BYPASSRLS) gets through until the user writes policies.
GRANT ALL ON storage.buckets, storage.objects TO anon, authenticated, service_role;
ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
