-- Server-side facts for the admin API and `/ready`, in one call.
CREATE OR REPLACE FUNCTION fluxbase.info() RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'server_version', current_setting('server_version'),
    'database', current_database(),
    'size_bytes', pg_database_size(current_database()),
    'migrations', (SELECT count(*) FROM fluxbase.schema_migrations),
    'last_migration', (SELECT max(version) FROM fluxbase.schema_migrations)
  )
$$;
REVOKE ALL ON FUNCTION fluxbase.info() FROM PUBLIC;
