-- Realtime: the schema Supabase's SQL conventions expect, the messages table whose RLS
-- policies authorise private channels, and the `supabase_realtime` publication that says
-- which tables send postgres_changes. Functions and triggers live in replaceable/realtime.sql.

CREATE SCHEMA IF NOT EXISTS realtime;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;

-- Policies on this table decide who may join a private channel (SELECT) and send on it
-- (INSERT), with realtime.topic() naming the channel, as in Supabase. Rows are only written
-- inside the authorisation check, which always rolls back.
CREATE TABLE IF NOT EXISTS realtime.messages (
  id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
  topic text NOT NULL,
  extension text NOT NULL,
  payload jsonb,
  event text,
  private boolean DEFAULT false,
  updated_at timestamp without time zone NOT NULL DEFAULT now(),
  inserted_at timestamp without time zone NOT NULL DEFAULT now()
);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON realtime.messages TO anon, authenticated, service_role;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    CREATE PUBLICATION supabase_realtime;
  END IF;
END
$$;
