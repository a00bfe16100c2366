//! The `storage.janitor` job: removes upload data no row points at (interrupted uploads,
//! failed commits, a process killed mid-upload), finishes moves a crash interrupted, and
//! deletes the bytes of replaced or deleted objects, each after
//! `storage.cleanup_after_minutes`; removes expired TUS uploads (row and staged parts),
//! staged parts whose upload row is gone, the local store's own staging files a killed
//! process left, and (S3) the multipart uploads a killed process left unfinished. Runs from
//! cron every five minutes; every step is idempotent, so overlapping runs are harmless.

use super::{tus, Backend};
use crate::app::AppState;
use crate::jobs::cron::{self, ScheduleSpec};
use crate::jobs::{JobError, Registry, RetryPolicy};
use serde_json::{json, Value};

/// Queue (and schedule name) of the janitor.
pub const JANITOR: &str = "storage.janitor";

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Upload data of rows that never committed, deleted.
    pub uploads_removed: u64,
    /// Upload data of committed rows, moved into place.
    pub uploads_published: u64,
    /// Bytes of replaced or deleted versions, deleted.
    pub garbage_removed: u64,
    /// TUS uploads past their expiry (finished or not), removed with their staged parts.
    pub tus_expired: u64,
    /// Staged TUS parts deleted (of expired uploads, or whose upload row is gone).
    pub tus_parts_removed: u64,
    /// The local store's own staging files left by a killed process, deleted.
    pub staging_removed: u64,
    /// S3 multipart uploads of a killed process, aborted.
    pub multipart_aborted: u64,
}

/// One sweep over data older than `older_than`.
pub async fn sweep(
    pool: &deadpool_postgres::Pool,
    be: &Backend,
    older_than: std::time::Duration,
) -> Result<Sweep, String> {
    let mut out = Sweep::default();
    let age = chrono::Duration::from_std(older_than).map_err(|e| e.to_string())?;
    let cutoff = chrono::Utc::now() - age;
    let mut c = pool.get().await.map_err(|e| e.to_string())?;
    for version in be.stale_uploads(cutoff).await.map_err(|e| e.to_string())? {
        let live: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM storage.objects WHERE version = $1)",
                &[&version],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if live {
            be.publish(&version).await.map_err(|e| e.to_string())?;
            out.uploads_published += 1;
        } else {
            be.discard_upload(&version).await;
            out.uploads_removed += 1;
        }
    }
    out.staging_removed = be
        .remove_stale_staging(cutoff)
        .await
        .map_err(|e| e.to_string())?;
    out.multipart_aborted = be
        .abort_stale_multipart(cutoff)
        .await
        .map_err(|e| e.to_string())?;
    let secs = older_than.as_secs_f64();
    let tx = c.transaction().await.map_err(|e| e.to_string())?;
    let rows = tx
        .query(
            "SELECT g.version FROM storage.garbage g \
             WHERE g.created_at < now() - make_interval(secs => $1) \
               AND NOT EXISTS (SELECT 1 FROM storage.objects o WHERE o.version = g.version) \
             ORDER BY g.created_at LIMIT 1000 FOR UPDATE SKIP LOCKED",
            &[&secs],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut done: Vec<String> = Vec::new();
    for r in rows {
        let v: String = r.get(0);
        be.delete(&v).await.map_err(|e| e.to_string())?;
        done.push(v);
    }
    tx.execute(
        "DELETE FROM storage.garbage WHERE version = ANY($1)",
        &[&done],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    out.garbage_removed = done.len() as u64;
    sweep_tus(&c, be, cutoff, &mut out).await?;
    Ok(out)
}

/// Expired TUS uploads: staged bytes first, then the row (a crash in between leaves the
/// row, and the next sweep does it again). Then staged parts older than the cutoff whose
/// upload row no longer exists (a PATCH still writing while its upload was terminated).
async fn sweep_tus(
    c: &tokio_postgres::Client,
    be: &Backend,
    cutoff: chrono::DateTime<chrono::Utc>,
    out: &mut Sweep,
) -> Result<(), String> {
    let expired = c
        .query(
            "SELECT id FROM storage.tus_uploads WHERE expires_at <= now() \
             ORDER BY expires_at LIMIT 1000",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    for r in expired {
        let id: uuid::Uuid = r.get(0);
        out.tus_parts_removed += tus::delete_staged(be, id)
            .await
            .map_err(|e| e.to_string())?;
        c.execute(
            "DELETE FROM storage.tus_uploads WHERE id = $1 AND expires_at <= now()",
            &[&id],
        )
        .await
        .map_err(|e| e.to_string())?;
        out.tus_expired += 1;
    }
    for key in tus::orphaned_staging(c, be, cutoff).await? {
        tus::delete_path(be, &key)
            .await
            .map_err(|e| e.to_string())?;
        out.tus_parts_removed += 1;
    }
    Ok(())
}

/// Registers the janitor's handler (when storage is on).
pub fn register_jobs(reg: &mut Registry, state: &AppState) {
    let Some(be) = state.storage.clone() else {
        return;
    };
    let after = std::time::Duration::from_secs(state.config.storage.cleanup_after_minutes * 60);
    reg.register(
        JANITOR,
        RetryPolicy {
            max_attempts: Some(3),
            ..Default::default()
        },
        move |ctx| {
            let be = be.clone();
            async move {
                let s = sweep(&ctx.pool, &be, after)
                    .await
                    .map_err(JobError::Retry)?;
                Ok(Some(json!({
                    "uploads_removed": s.uploads_removed,
                    "uploads_published": s.uploads_published,
                    "garbage_removed": s.garbage_removed,
                    "tus_expired": s.tus_expired,
                    "tus_parts_removed": s.tus_parts_removed,
                    "staging_removed": s.staging_removed,
                    "multipart_aborted": s.multipart_aborted,
                })))
            }
        },
    );
}

/// Creates the janitor's schedule (every five minutes) unless it exists; an operator's
/// change to it is kept.
pub async fn ensure_schedules(
    client: &tokio_postgres::Client,
    state: &AppState,
) -> Result<(), String> {
    if state.storage.is_none() {
        return Ok(());
    }
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM jobs.schedules WHERE name = $1)",
            &[&JANITOR],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if exists {
        return Ok(());
    }
    let spec = ScheduleSpec {
        name: JANITOR.into(),
        cron: "*/5 * * * *".into(),
        timezone: "UTC".into(),
        queue: JANITOR.into(),
        payload: Value::Object(Default::default()),
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
