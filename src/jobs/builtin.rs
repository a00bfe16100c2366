//! Built-in queues: `fluxbase.noop` (does nothing: health checks, benchmarks),
//! `fluxbase.sql` (runs SQL on a schedule, like pg_cron) and `fluxbase.maintenance`
//! (prunes finished jobs and old audit entries; scheduled hourly at start-up).

use super::cron::{self, ScheduleSpec};
use super::{JobContext, JobError, Registry, RetryPolicy};
use crate::config::Config;
use serde_json::{json, Value};

/// Queue of the SQL job.
pub const SQL: &str = "fluxbase.sql";
/// Queue of the no-op job.
pub const NOOP: &str = "fluxbase.noop";
/// Queue of the maintenance job.
pub const MAINTENANCE: &str = "fluxbase.maintenance";

/// Registers the built-in handlers.
pub fn register(reg: &mut Registry, config: &Config) {
    reg.register(NOOP, RetryPolicy::default(), |_ctx| async { Ok(None) });
    reg.register(SQL, RetryPolicy::default(), run_sql);
    let (keep, keep_dead, keep_audit) = (
        config.jobs.retention_days,
        config.jobs.dead_retention_days,
        config.audit.retention_days,
    );
    reg.register(
        MAINTENANCE,
        RetryPolicy {
            max_attempts: Some(3),
            ..Default::default()
        },
        move |ctx| async move {
            let c = ctx
                .pool
                .get()
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            let jobs = super::queue::prune(&**c, keep, keep_dead)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            let audit = crate::audit::prune(&**c, keep_audit)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            Ok(Some(json!({"jobs_pruned": jobs, "audit_pruned": audit})))
        },
    );
}

/// `fluxbase.sql`: payload `{"sql": "...", "timeout_ms": 60000}`. Runs in one transaction as
/// the database owner, with `fluxbase.job_id` and `fluxbase.job_attempt` set so the SQL can
/// be idempotent. Syntax, undefined-object and data errors are not retried.
async fn run_sql(ctx: JobContext) -> Result<Option<Value>, JobError> {
    let Some(sql) = ctx
        .payload
        .get("sql")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(JobError::Permanent(
            "payload must be {\"sql\": \"...\"}".into(),
        ));
    };
    let timeout_ms = ctx
        .payload
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .unwrap_or(60_000);
    let mut c = ctx
        .pool
        .get()
        .await
        .map_err(|e| JobError::Retry(e.to_string()))?;
    let tx = c
        .transaction()
        .await
        .map_err(|e| JobError::Retry(e.to_string()))?;
    let classify = |e: tokio_postgres::Error| match e.code().map(|c| c.code().to_string()) {
        Some(code) if code.starts_with("42") || code.starts_with("22") => {
            JobError::Permanent(e.to_string())
        }
        _ => JobError::Retry(
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string()),
        ),
    };
    tx.execute(
        "SELECT set_config('statement_timeout', $1, true), set_config('fluxbase.job_id', $2, true),
                set_config('fluxbase.job_attempt', $3, true)",
        &[
            &timeout_ms.to_string(),
            &ctx.id.to_string(),
            &ctx.attempt.to_string(),
        ],
    )
    .await
    .map_err(classify)?;
    tx.batch_execute(&sql).await.map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    Ok(None)
}

/// Makes sure the hourly maintenance schedule exists (idempotent; every instance may call it).
pub async fn ensure_schedules(client: &tokio_postgres::Client) -> Result<(), String> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM jobs.schedules WHERE name = $1)",
            &[&MAINTENANCE],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if exists {
        return Ok(());
    }
    let spec = ScheduleSpec {
        name: MAINTENANCE.into(),
        cron: "17 * * * *".into(),
        timezone: "UTC".into(),
        queue: MAINTENANCE.into(),
        payload: json!({}),
        enabled: true,
    };
    cron::upsert(client, &spec, chrono::Utc::now())
        .await
        .map(|_| ())
        .map_err(|e| match e {
            cron::UpsertError::Invalid(m) => m,
            cron::UpsertError::Db(e) => e.to_string(),
        })
}
