-- Manual identity linking (GoTrue's GET /user/identities/authorize): the state of a linking
-- flow remembers the signed-in user the provider's identity is to be attached to, so the
-- callback links instead of signing in. A deleted user takes its pending flows with it.
ALTER TABLE auth.oauth_states
  ADD COLUMN linking_target_id uuid REFERENCES auth.users (id) ON DELETE CASCADE;
