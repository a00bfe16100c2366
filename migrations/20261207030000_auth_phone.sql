-- Phone sign-in: texted codes are one-time tokens too (the code hashed with the number it
-- went to), of two more kinds: `sms` (confirms the number: sign-up and OTP sign-in) and
-- `phone_change` (the new number of a pending change, kept in auth.users.phone_change).

ALTER TABLE auth.one_time_tokens DROP CONSTRAINT IF EXISTS one_time_tokens_token_type_check;
ALTER TABLE auth.one_time_tokens ADD CONSTRAINT one_time_tokens_token_type_check
  CHECK (token_type IN ('signup', 'magiclink', 'recovery', 'invite', 'email_change',
                        'email_change_current', 'email_change_new', 'reauthentication',
                        'sms', 'phone_change'));

CREATE INDEX users_phone_change_idx ON auth.users (phone_change)
  WHERE phone_change IS NOT NULL AND phone_change <> '';
