//! The queue's SQL: enqueue (in the caller's transaction or standalone), claim with
//! `FOR UPDATE SKIP LOCKED`, complete, fail with backoff, heartbeat, lease expiry, replay,
//! cancel, listing, stats and pruning. Every statement here is one round trip.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::GenericClient;

/// NOTIFY channel that wakes idle workers; the payload is the queue name.
pub const CHANNEL: &str = "fluxbase_jobs";

/// A job to enqueue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Queue (the job type: one handler per queue).
    pub queue: String,
    /// Handler input.
    #[serde(default)]
    pub payload: Value,
    /// Earliest start; now when absent.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Attempts before dead-lettering; the queue's policy when absent.
    #[serde(default)]
    pub max_attempts: Option<i32>,
    /// A second enqueue with the same key (per queue) returns the first job.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// What `enqueue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The job's id.
    pub id: i64,
    /// False when an existing job with the same idempotency key was returned.
    pub created: bool,
}

/// Checks a spec before it reaches SQL (the table's CHECKs would answer with a 400 too,
/// but with a less helpful message).
pub fn validate(spec: &JobSpec) -> Result<(), String> {
    if spec.queue.trim().is_empty() || spec.queue.len() > 200 {
        return Err("queue must be 1..200 characters".into());
    }
    if spec.max_attempts.is_some_and(|n| n < 1) {
        return Err("max_attempts must be at least 1".into());
    }
    if spec
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 500)
    {
        return Err("idempotency_key must be 1..500 characters".into());
    }
    Ok(())
}

/// Enqueues one job with `client` — pass a transaction to enqueue atomically with the
/// caller's change (the outbox pattern): the job exists only if that change commits.
pub async fn enqueue<C: GenericClient>(
    client: &C,
    spec: &JobSpec,
) -> Result<Enqueued, tokio_postgres::Error> {
    let payload = if spec.payload.is_null() {
        Value::Object(Default::default())
    } else {
        spec.payload.clone()
    };
    let rows = client
        .query(
            "WITH ins AS (
               INSERT INTO jobs.jobs (queue, payload, run_at, priority, max_attempts, idempotency_key)
               VALUES ($1, $2, coalesce($3, now()), $4, $5, $6)
               ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
               RETURNING id)
             SELECT id, true FROM ins
             UNION ALL
             SELECT id, false FROM jobs.jobs
              WHERE $6::text IS NOT NULL AND queue = $1 AND idempotency_key = $6
                AND NOT EXISTS (SELECT 1 FROM ins)",
            &[&spec.queue, &payload, &spec.run_at, &spec.priority, &spec.max_attempts, &spec.idempotency_key],
        )
        .await?;
    if let Some(r) = rows.first() {
        return Ok(Enqueued {
            id: r.get(0),
            created: r.get(1),
        });
    }
    // The conflicting job was committed by another transaction after this statement's
    // snapshot was taken: read it now.
    let r = client
        .query_one(
            "SELECT id FROM jobs.jobs WHERE queue = $1 AND idempotency_key = $2",
            &[&spec.queue, &spec.idempotency_key],
        )
        .await?;
    Ok(Enqueued {
        id: r.get(0),
        created: false,
    })
}

/// Enqueues many jobs of one queue in one statement (bulk producers); returns their ids.
pub async fn enqueue_many<C: GenericClient>(
    client: &C,
    queue: &str,
    payloads: &[Value],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let rows = client
        .query(
            "INSERT INTO jobs.jobs (queue, payload) SELECT $1, p FROM unnest($2::jsonb[]) AS p RETURNING id",
            &[&queue, &payloads],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Id.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Payload.
    pub payload: Value,
    /// This attempt's number (1 for the first run).
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
}

/// Claims up to `limit` ready jobs of `queue` for `worker`, leasing them for `lease_secs`.
pub async fn claim(
    client: &deadpool_postgres::ClientWrapper,
    queue: &str,
    limit: i64,
    worker: &str,
    lease_secs: f64,
    default_max_attempts: i32,
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    let stmt = client
        .prepare_cached(
            "WITH next AS (
               SELECT id FROM jobs.jobs
                WHERE status = 'pending' AND queue = $1 AND run_at <= now()
                ORDER BY priority DESC, run_at, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED)
             UPDATE jobs.jobs j
                SET status = 'running', attempts = j.attempts + 1, locked_by = $3,
                    locked_until = now() + make_interval(secs => $4), started_at = now(), updated_at = now(),
                    max_attempts = coalesce(j.max_attempts, $5)
               FROM next WHERE j.id = next.id
             RETURNING j.id, j.queue, j.payload, j.attempts, j.max_attempts",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[&queue, &limit, &worker, &lease_secs, &default_max_attempts],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            queue: r.get(1),
            payload: r.get(2),
            attempt: r.get(3),
            max_attempts: r.get(4),
        })
        .collect())
}

/// Marks a job done. False when the job is no longer this worker's (its lease expired and
/// another worker took it, or it was cancelled): the result is then dropped.
pub async fn complete(
    client: &deadpool_postgres::ClientWrapper,
    id: i64,
    worker: &str,
    result: Option<&Value>,
) -> Result<bool, tokio_postgres::Error> {
    let stmt = client
        .prepare_cached(
            "UPDATE jobs.jobs SET status = 'succeeded', result = $3, finished_at = now(), updated_at = now(),
                    locked_by = NULL, locked_until = NULL, last_error = NULL
              WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        )
        .await?;
    let n = client.execute(&stmt, &[&id, &worker, &result]).await?;
    Ok(n == 1)
}

/// Records a failed attempt: back to pending after `retry_in_ms`, or dead when `retry_in_ms`
/// is `None`. Returns the new status, or `None` when the job is no longer this worker's.
pub async fn fail(
    client: &deadpool_postgres::ClientWrapper,
    id: i64,
    worker: &str,
    error: &str,
    retry_in_ms: Option<u64>,
) -> Result<Option<String>, tokio_postgres::Error> {
    let retry_ms = retry_in_ms.map(|ms| ms as f64 / 1000.0);
    let error: String = error.chars().take(4000).collect();
    let stmt = client
        .prepare_cached(
            "UPDATE jobs.jobs SET
                    status = CASE WHEN $4::float8 IS NULL THEN 'dead' ELSE 'pending' END,
                    run_at = CASE WHEN $4::float8 IS NULL THEN run_at ELSE now() + make_interval(secs => $4) END,
                    finished_at = CASE WHEN $4::float8 IS NULL THEN now() END,
                    last_error = $3, locked_by = NULL, locked_until = NULL, updated_at = now()
              WHERE id = $1 AND locked_by = $2 AND status = 'running'
              RETURNING status",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&id, &worker, &error, &retry_ms])
        .await?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// Extends the leases of this worker's running jobs.
pub async fn heartbeat<C: GenericClient>(
    client: &C,
    worker: &str,
    ids: &[i64],
    lease_secs: f64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE jobs.jobs SET locked_until = now() + make_interval(secs => $3)
              WHERE id = ANY($2) AND locked_by = $1 AND status = 'running'",
            &[&worker, &ids, &lease_secs],
        )
        .await
}

/// Jobs whose lease expired (their worker died): back to pending (or dead when that was the
/// last attempt), and their queues woken. Returns how many were recovered.
pub async fn recover_expired<C: GenericClient>(client: &C) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "WITH r AS (
               UPDATE jobs.jobs SET
                      status = CASE WHEN attempts >= coalesce(max_attempts, 1) THEN 'dead' ELSE 'pending' END,
                      finished_at = CASE WHEN attempts >= coalesce(max_attempts, 1) THEN now() END,
                      last_error = 'lease expired: the worker stopped without finishing (attempt ' || attempts || ')',
                      locked_by = NULL, locked_until = NULL, run_at = now(), updated_at = now()
                WHERE status = 'running' AND locked_until < now()
                RETURNING queue, status),
             woken AS (
               SELECT pg_notify($1, q) FROM (SELECT DISTINCT queue AS q FROM r WHERE status = 'pending') s)
             SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM woken)",
            &[&CHANNEL],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// On shutdown: hands this worker's unfinished jobs back without counting the attempt.
pub async fn release<C: GenericClient>(
    client: &C,
    worker: &str,
    ids: &[i64],
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "WITH r AS (
               UPDATE jobs.jobs SET status = 'pending', attempts = greatest(attempts - 1, 0), locked_by = NULL,
                      locked_until = NULL, run_at = now(), updated_at = now()
                WHERE id = ANY($2) AND locked_by = $1 AND status = 'running'
                RETURNING queue)
             SELECT pg_notify($3, q) FROM (SELECT DISTINCT queue AS q FROM r) s",
            &[&worker, &ids, &CHANNEL],
        )
        .await
}

/// Replays a dead or cancelled job with a fresh set of attempts. `None` when the job does
/// not exist, `Some(false)` when it is not in a replayable state.
pub async fn retry<C: GenericClient>(
    client: &C,
    id: i64,
) -> Result<Option<bool>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH j AS (SELECT id, status FROM jobs.jobs WHERE id = $1 FOR UPDATE),
                  u AS (
               UPDATE jobs.jobs SET status = 'pending', attempts = 0, run_at = now(), finished_at = NULL,
                      updated_at = now(), locked_by = NULL, locked_until = NULL
                WHERE id = $1 AND status IN ('dead', 'cancelled')
                RETURNING queue)
             SELECT (SELECT status FROM j), (SELECT pg_notify($2, queue) IS NOT NULL FROM u)",
            &[&id, &CHANNEL],
        )
        .await?;
    let r = &rows[0];
    let status: Option<String> = r.get(0);
    let replayed: Option<bool> = r.get(1);
    Ok(status.map(|_| replayed.unwrap_or(false)))
}

/// Cancels a pending or running job (a running handler finishes, but its result is
/// dropped). Same answers as `retry`.
pub async fn cancel<C: GenericClient>(
    client: &C,
    id: i64,
) -> Result<Option<bool>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH j AS (SELECT id FROM jobs.jobs WHERE id = $1),
                  u AS (
               UPDATE jobs.jobs SET status = 'cancelled', finished_at = now(), updated_at = now(),
                      locked_by = NULL, locked_until = NULL
                WHERE id = $1 AND status IN ('pending', 'running') RETURNING id)
             SELECT EXISTS (SELECT 1 FROM j), EXISTS (SELECT 1 FROM u)",
            &[&id],
        )
        .await?;
    let (exists, done): (bool, bool) = (rows[0].get(0), rows[0].get(1));
    Ok(exists.then_some(done))
}

/// One job as JSON.
pub async fn get<C: GenericClient>(
    client: &C,
    id: i64,
) -> Result<Option<Value>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT to_jsonb(j) FROM jobs.jobs j WHERE id = $1", &[&id])
        .await?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// Jobs, newest first, as a JSON array text.
pub async fn list<C: GenericClient>(
    client: &C,
    queue: Option<&str>,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<String, tokio_postgres::Error> {
    let r = client
        .query_one(
            "SELECT coalesce(json_agg(to_jsonb(j) ORDER BY j.id DESC), '[]')::text FROM (
               SELECT * FROM jobs.jobs
                WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR status = $2)
                ORDER BY id DESC LIMIT $3 OFFSET $4) j",
            &[&queue, &status, &limit, &offset],
        )
        .await?;
    Ok(r.get(0))
}

/// Per-queue figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueStats {
    /// Queue.
    pub queue: String,
    /// Ready or delayed jobs.
    pub pending: i64,
    /// Of those, ready now.
    pub ready: i64,
    /// Leased by a worker.
    pub running: i64,
    /// Done.
    pub succeeded: i64,
    /// Dead letters.
    pub dead: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Seconds the oldest ready job has waited.
    pub oldest_ready_age_secs: f64,
}

/// Figures per queue.
pub async fn stats<C: GenericClient>(client: &C) -> Result<Vec<QueueStats>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT queue,
                    count(*) FILTER (WHERE status = 'pending'),
                    count(*) FILTER (WHERE status = 'pending' AND run_at <= now()),
                    count(*) FILTER (WHERE status = 'running'),
                    count(*) FILTER (WHERE status = 'succeeded'),
                    count(*) FILTER (WHERE status = 'dead'),
                    count(*) FILTER (WHERE status = 'cancelled'),
                    coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'pending' AND run_at <= now())), 0)::float8
               FROM jobs.jobs GROUP BY queue ORDER BY queue",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QueueStats {
            queue: r.get(0),
            pending: r.get(1),
            ready: r.get(2),
            running: r.get(3),
            succeeded: r.get(4),
            dead: r.get(5),
            cancelled: r.get(6),
            oldest_ready_age_secs: r.get(7),
        })
        .collect())
}

/// Deletes finished jobs past their retention, in batches so no statement holds locks long.
pub async fn prune<C: GenericClient>(
    client: &C,
    retention_days: u64,
    dead_retention_days: u64,
) -> Result<u64, tokio_postgres::Error> {
    let (keep, keep_dead) = (
        i32::try_from(retention_days).unwrap_or(i32::MAX),
        i32::try_from(dead_retention_days).unwrap_or(i32::MAX),
    );
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM jobs.jobs WHERE id IN (
                   SELECT id FROM jobs.jobs
                    WHERE (status IN ('succeeded', 'cancelled') AND finished_at < now() - make_interval(days => $1))
                       OR (status = 'dead' AND finished_at < now() - make_interval(days => $2))
                    LIMIT 5000)",
                &[&keep, &keep_dead],
            )
            .await?;
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}

/// Backoff before attempt `attempt + 1`: full jitter over an exponential ceiling,
/// `random(0, min(cap, base * 2^(attempt-1)))`, at least 1 ms.
pub fn backoff_ms(attempt: i32, base_ms: u64, cap_ms: u64, random: f64) -> u64 {
    let exp = attempt.saturating_sub(1).clamp(0, 62) as u32;
    let ceiling = base_ms
        .saturating_mul(1u64 << exp.min(40))
        .min(cap_ms)
        .max(1);
    ((ceiling as f64) * random.clamp(0.0, 1.0)).round().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        assert_eq!(backoff_ms(1, 1000, 60_000, 1.0), 1000);
        assert_eq!(backoff_ms(2, 1000, 60_000, 1.0), 2000);
        assert_eq!(backoff_ms(3, 1000, 60_000, 1.0), 4000);
        assert_eq!(backoff_ms(30, 1000, 60_000, 1.0), 60_000, "capped");
        assert_eq!(backoff_ms(1000, 1000, 60_000, 1.0), 60_000, "no overflow");
        assert_eq!(
            backoff_ms(3, 1000, 60_000, 0.0),
            1,
            "full jitter reaches the floor"
        );
        for i in 0..100 {
            let r = i as f64 / 100.0;
            let d = backoff_ms(4, 1000, 60_000, r);
            assert!((1..=8000).contains(&d), "{d}");
        }
    }

    #[test]
    fn specs_are_checked() {
        assert!(validate(&JobSpec {
            queue: "q".into(),
            ..Default::default()
        })
        .is_ok());
        assert!(validate(&JobSpec::default()).is_err());
        assert!(validate(&JobSpec {
            queue: "q".into(),
            max_attempts: Some(0),
            ..Default::default()
        })
        .is_err());
    }
}
