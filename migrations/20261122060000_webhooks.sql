-- Webhooks: subscriptions and their delivery log. Deliveries are written by AFTER triggers
-- in the transaction of the change (the outbox) together with a job in the durable queue,
-- so a committed change is delivered at least once and a rolled-back one never.

CREATE SCHEMA IF NOT EXISTS webhooks;

CREATE TABLE webhooks.hooks (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name         text NOT NULL CHECK (name <> '' AND length(name) <= 200),
  url          text NOT NULL,
  -- 'schema.table:INSERT|UPDATE|DELETE|*' or a named event ('auth.user.created', …).
  events       text[] NOT NULL CHECK (cardinality(events) > 0),
  headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- Standard Webhooks secret ('whsec_' + base64). Kept as is: signing needs it.
  secret       text NOT NULL,
  timeout_ms   integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 100 AND 120000),
  max_attempts integer NOT NULL DEFAULT 8 CHECK (max_attempts BETWEEN 1 AND 50),
  enabled      boolean NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hooks_events_idx ON webhooks.hooks USING gin (events) WHERE enabled;

CREATE TABLE webhooks.deliveries (
  id              bigserial PRIMARY KEY,
  webhook_id      uuid NOT NULL REFERENCES webhooks.hooks (id) ON DELETE CASCADE,
  event           text NOT NULL,
  payload         jsonb NOT NULL,
  status          text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
  attempts        integer NOT NULL DEFAULT 0,
  job_id          bigint,
  response_status integer,
  response_body   text,
  duration_ms     integer,
  last_error      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz
);
CREATE INDEX deliveries_webhook_idx ON webhooks.deliveries (webhook_id, id DESC);
