-- Schema-cache reloads: DDL sends NOTIFY pgrst, 'reload schema' (PostgREST's convention).
-- Event triggers need a superuser; without one, `NOTIFY pgrst, 'reload schema'` by hand
-- does the same.

CREATE OR REPLACE FUNCTION fluxbase.notify_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('pgrst', 'reload schema');
END
$$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'fluxbase_ddl_end') THEN
    CREATE EVENT TRIGGER fluxbase_ddl_end ON ddl_command_end EXECUTE FUNCTION fluxbase.notify_ddl();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'fluxbase_ddl_drop') THEN
    CREATE EVENT TRIGGER fluxbase_ddl_drop ON sql_drop EXECUTE FUNCTION fluxbase.notify_ddl();
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'no event trigger (needs a superuser): run NOTIFY pgrst, ''reload schema'' after DDL';
END
$$;
