-- Durable job queue and cron schedules.

CREATE TABLE jobs.jobs (
  id              bigserial PRIMARY KEY,
  queue           text NOT NULL CHECK (queue <> '' AND length(queue) <= 200),
  payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
  status          text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'succeeded', 'dead', 'cancelled')),
  priority        integer NOT NULL DEFAULT 0,
  run_at          timestamptz NOT NULL DEFAULT now(),
  attempts        integer NOT NULL DEFAULT 0,
  -- NULL until a worker claims it: then the queue's policy decides.
  max_attempts    integer CHECK (max_attempts IS NULL OR max_attempts > 0),
  idempotency_key text,
  locked_by       text,
  locked_until    timestamptz,
  last_error      text,
  result          jsonb,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz,
  finished_at     timestamptz
);

-- The claim query walks this index: ready jobs of a queue, highest priority first.
CREATE INDEX jobs_ready_idx ON jobs.jobs (queue, priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX jobs_lease_idx ON jobs.jobs (locked_until) WHERE status = 'running';
CREATE INDEX jobs_finished_idx ON jobs.jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_status_idx ON jobs.jobs (status, queue);
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs.jobs (queue, idempotency_key)
  WHERE idempotency_key IS NOT NULL;

-- Wake idle workers when ready jobs arrive: one NOTIFY per queue per statement, so a bulk
-- enqueue of 10,000 jobs sends one message, not 10,000.
CREATE FUNCTION jobs.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  q text;
BEGIN
  FOR q IN SELECT DISTINCT n.queue FROM new_jobs n WHERE n.run_at <= now() + interval '1 second' LOOP
    PERFORM pg_notify('fluxbase_jobs', q);
  END LOOP;
  RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON jobs.jobs
  REFERENCING NEW TABLE AS new_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION jobs.notify_inserted();

CREATE TABLE jobs.schedules (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE CHECK (name <> ''),
  cron        text NOT NULL,
  timezone    text NOT NULL DEFAULT 'UTC',
  queue       text NOT NULL CHECK (queue <> ''),
  payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
  enabled     boolean NOT NULL DEFAULT true,
  next_run_at timestamptz NOT NULL,
  last_run_at timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due_idx ON jobs.schedules (next_run_at) WHERE enabled;

REVOKE ALL ON ALL TABLES IN SCHEMA jobs FROM PUBLIC;
