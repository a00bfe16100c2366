-- OAuth2 / OIDC sign-in (GoTrue's /authorize and /callback).
--
-- auth.oauth_states: one row per redirect to a provider, found by the SHA-256 of the random
-- `state` sent along, deleted when the callback uses it (single use), good for ten minutes.
-- It keeps what the callback needs and must not come from the browser: the provider, the
-- checked redirect_to, the redirect_uri given to the provider, our PKCE verifier towards the provider, the OIDC nonce and, for the
-- client's PKCE flow, the flow_state row.
CREATE TABLE auth.oauth_states (
  id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  state_hash              text NOT NULL UNIQUE,
  provider                text NOT NULL,
  redirect_to             text NOT NULL,
  callback_url            text NOT NULL,
  provider_code_verifier  text,
  nonce                   text,
  flow_state_id           uuid REFERENCES auth.flow_state (id) ON DELETE CASCADE,
  created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_states_created_idx ON auth.oauth_states (created_at);
REVOKE ALL ON auth.oauth_states FROM PUBLIC, anon, authenticated;

-- The client's PKCE flow keeps the provider's tokens until the code is exchanged, as GoTrue's
-- flow_state does, so the session answer can carry provider_token/provider_refresh_token.
ALTER TABLE auth.flow_state
  ADD COLUMN provider_type          text,
  ADD COLUMN provider_access_token  text,
  ADD COLUMN provider_refresh_token text;
