-- One-time tokens for the two halves of a secure email change (one per address) and for
-- reauthentication nonces, besides the kinds of 20261122030100.

ALTER TABLE auth.one_time_tokens DROP CONSTRAINT IF EXISTS one_time_tokens_token_type_check;
ALTER TABLE auth.one_time_tokens ADD CONSTRAINT one_time_tokens_token_type_check
  CHECK (token_type IN ('signup', 'magiclink', 'recovery', 'invite', 'email_change',
                        'email_change_current', 'email_change_new', 'reauthentication'));
