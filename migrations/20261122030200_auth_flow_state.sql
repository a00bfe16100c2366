-- PKCE: a mailed link (or an OAuth callback) ends in `?code=`; the code is exchanged for a
-- session with the verifier whose challenge the client sent first. The code is stored hashed.

CREATE TABLE auth.flow_state (
  id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id                uuid REFERENCES auth.users (id) ON DELETE CASCADE,
  auth_code_hash         text UNIQUE,
  code_challenge         text NOT NULL,
  code_challenge_method  text NOT NULL CHECK (code_challenge_method IN ('s256', 'plain')),
  authentication_method  text NOT NULL,
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now(),
  auth_code_issued_at    timestamptz
);
CREATE INDEX flow_state_user_idx ON auth.flow_state (user_id, authentication_method, created_at DESC);
REVOKE ALL ON auth.flow_state FROM PUBLIC, anon, authenticated;
