-- Fluxbase API keys (`fbk_…`): shown once, stored as SHA-256 hashes, each with a role,
-- scopes from a fixed list, an optional user (becomes `sub`), an expiry and a last-used time.

CREATE TABLE auth.api_keys (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name          text NOT NULL CHECK (name <> ''),
  key_prefix    text NOT NULL,
  key_hash      text NOT NULL UNIQUE,
  role          text NOT NULL,
  scopes        text[] NOT NULL,
  user_id       uuid REFERENCES auth.users (id) ON DELETE CASCADE,
  expires_at    timestamptz,
  last_used_at  timestamptz,
  revoked_at    timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON auth.api_keys FROM PUBLIC, anon, authenticated;
