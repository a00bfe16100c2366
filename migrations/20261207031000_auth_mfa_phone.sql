-- MFA phone factors (GoTrue's `factor_type: phone`): the factor keeps its number (a phone
-- factor has no TOTP secret: '' there), and a challenge keeps the hash of the code texted
-- for it.

ALTER TABLE auth.mfa_factors DROP CONSTRAINT IF EXISTS mfa_factors_factor_type_check;
ALTER TABLE auth.mfa_factors ADD CONSTRAINT mfa_factors_factor_type_check
  CHECK (factor_type IN ('totp', 'phone'));
ALTER TABLE auth.mfa_factors ADD COLUMN phone text;
ALTER TABLE auth.mfa_factors ADD CONSTRAINT mfa_factors_phone_check
  CHECK ((factor_type = 'phone') = (phone IS NOT NULL));
-- One verified phone factor per number and user.
CREATE UNIQUE INDEX mfa_factors_verified_phone_idx ON auth.mfa_factors (user_id, phone)
  WHERE factor_type = 'phone' AND status = 'verified';

ALTER TABLE auth.mfa_challenges ADD COLUMN otp_code text;
