-- MFA (TOTP) as GoTrue keeps it: factors per user, challenges per factor, and the
-- authentication methods of each session (`amr`), so refreshed tokens keep their aal/amr.

CREATE TABLE auth.mfa_factors (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id       uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  friendly_name text,
  factor_type   text NOT NULL CHECK (factor_type IN ('totp')),
  status        text NOT NULL DEFAULT 'unverified' CHECK (status IN ('unverified', 'verified')),
  -- Base32 TOTP secret. It must be readable to check codes.
  secret        text NOT NULL,
  last_challenged_at timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mfa_factors_user_idx ON auth.mfa_factors (user_id);
CREATE UNIQUE INDEX mfa_factors_name_idx ON auth.mfa_factors (user_id, friendly_name)
  WHERE friendly_name IS NOT NULL AND friendly_name <> '';

CREATE TABLE auth.mfa_challenges (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  factor_id   uuid NOT NULL REFERENCES auth.mfa_factors (id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  verified_at timestamptz,
  ip_address  inet
);
CREATE INDEX mfa_challenges_factor_idx ON auth.mfa_challenges (factor_id);

ALTER TABLE auth.sessions ADD COLUMN amr jsonb NOT NULL DEFAULT '[]'::jsonb;
