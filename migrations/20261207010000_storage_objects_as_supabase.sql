-- storage.objects as Supabase Storage has it: last_accessed_at may be NULL (Supabase's column
-- is `timestamptz DEFAULT now()`, without NOT NULL). It is set when a row is written (insert,
-- upsert), not when the object is read, as in Supabase. The BEFORE UPDATE trigger that keeps
-- updated_at current on every UPDATE is in replaceable/storage_functions.sql.
ALTER TABLE storage.objects ALTER COLUMN last_accessed_at DROP NOT NULL;
