-- The job queue's SQL API, for triggers that enqueue in the transaction of a change (the
-- outbox pattern). Same effect as `jobs::enqueue` in Rust; the statement-level trigger on
-- jobs.jobs wakes the workers at commit.
CREATE OR REPLACE FUNCTION jobs.enqueue(p_queue text, p_payload jsonb,
                                        p_max_attempts integer DEFAULT NULL,
                                        p_run_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE sql AS $$
  INSERT INTO jobs.jobs (queue, payload, max_attempts, run_at)
  VALUES (p_queue, p_payload, p_max_attempts, p_run_at)
  RETURNING id
$$;
