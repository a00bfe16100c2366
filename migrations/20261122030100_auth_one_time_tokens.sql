-- One-time tokens of auth mail (confirmation, magic link, recovery): a link secret and a
-- 6-digit code per send, stored only as SHA-256 hashes (the code hashed with the address).

CREATE TABLE auth.one_time_tokens (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id     uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  token_type  text NOT NULL CHECK (token_type IN ('signup', 'magiclink', 'recovery', 'invite', 'email_change')),
  token_hash  text NOT NULL,
  relates_to  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX one_time_tokens_hash_idx ON auth.one_time_tokens (token_hash);
CREATE INDEX one_time_tokens_user_idx ON auth.one_time_tokens (user_id, token_type);
REVOKE ALL ON auth.one_time_tokens FROM PUBLIC, anon, authenticated;
