-- auth.users metadata: refuse numbers beyond ±1e308. jsonb keeps any decimal exactly and
-- prints it in full (1.7976931348623157e308 becomes 309 digits), which no f64 reader —
-- the server's own JSON, most clients' — can read back: one such value in a user's metadata
-- made every read of that user (and the admin user list) fail. Found by `make fuzz-api`.
CREATE OR REPLACE FUNCTION auth.fluxbase_check_metadata() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF jsonb_path_exists(NEW.raw_user_meta_data,
       'lax $.** ? (@.type() == "number" && (@ > 1e308 || @ < -1e308))')
     OR jsonb_path_exists(NEW.raw_app_meta_data,
       'lax $.** ? (@.type() == "number" && (@ > 1e308 || @ < -1e308))') THEN
    RAISE EXCEPTION 'metadata numbers must lie between -1e308 and 1e308'
      USING ERRCODE = '22003';
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER fluxbase_check_metadata
  BEFORE INSERT OR UPDATE OF raw_user_meta_data, raw_app_meta_data ON auth.users
  FOR EACH ROW EXECUTE FUNCTION auth.fluxbase_check_metadata();
