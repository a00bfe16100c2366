-- Per-key rate limits: requests per minute for one `fbk_` key, counted per key on every route
-- instead of the route group's limit per client IP. NULL: no limit of its own.

ALTER TABLE auth.api_keys
  ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0);
