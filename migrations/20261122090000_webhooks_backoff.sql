-- Webhooks: a per-hook retry backoff. Before attempt n+1 a failed delivery waits a random
-- time in 0..min(cap, base * 2^(n-1)) ms (full jitter), or what the receiver asked for in
-- `Retry-After`, capped by the same cap. NULL = the job queue's `jobs.backoff_*` setting.
ALTER TABLE webhooks.hooks
  ADD COLUMN backoff_base_ms integer CHECK (backoff_base_ms BETWEEN 1 AND 3600000),
  ADD COLUMN backoff_cap_ms integer CHECK (backoff_cap_ms BETWEEN 1 AND 86400000),
  ADD CONSTRAINT hooks_backoff_order CHECK (backoff_base_ms <= backoff_cap_ms);
