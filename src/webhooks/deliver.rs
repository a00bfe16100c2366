//! The delivery job: load the delivery and its hook, sign, POST through the SSRF-guarded
//! client within the hook's timeout, record the attempt, and let the queue retry failures
//! until the hook's `max_attempts`, after the hook's own backoff (or the receiver's
//! `Retry-After`, capped by it).

use super::{secret_key, sign, QUEUE};
use crate::jobs::{Backoff, JobContext, JobError, Registry, RetryPolicy};
use crate::outbound::Outbound;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Response bodies are kept up to this many bytes in the delivery log.
const BODY_KEEP: usize = 2048;

/// Registers the handler of the `webhooks` queue.
pub fn register(reg: &mut Registry, outbound: Outbound) {
    reg.register(QUEUE, RetryPolicy::default(), move |ctx: JobContext| {
        let outbound = outbound.clone();
        async move { run(ctx, outbound).await }
    });
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// The response body (truncated).
    pub body: Option<String>,
    /// Milliseconds the call took.
    pub duration_ms: i32,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The receiver's `Retry-After` in milliseconds (delta-seconds form), when it sent one.
    pub retry_after_ms: Option<u64>,
}

impl Attempt {
    /// A 2xx answer.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends one delivery once (no bookkeeping).
pub async fn attempt(
    outbound: &Outbound,
    delivery_id: i64,
    url: &str,
    headers: &Value,
    secret: &str,
    timeout_ms: i32,
    body: &str,
) -> Attempt {
    let started = Instant::now();
    let Some(key) = secret_key(secret) else {
        return Attempt {
            status: None,
            body: None,
            duration_ms: 0,
            error: Some("the webhook's secret is not valid base64".into()),
            retry_after_ms: None,
        };
    };
    let msg_id = format!("msg_{delivery_id}");
    let ts = chrono::Utc::now().timestamp();
    let mut req = outbound
        .request(reqwest::Method::POST, url)
        .timeout(Duration::from_millis(timeout_ms.max(1) as u64))
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("Fluxbase-Webhooks/", env!("CARGO_PKG_VERSION")),
        );
    if let Value::Object(h) = headers {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
    }
    // Set last, so custom headers cannot replace the signature.
    let req = req
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign(&key, &msg_id, ts, body.as_bytes()),
        )
        .body(body.to_string());
    let res = outbound.send(req).await;
    let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    match res {
        Ok(r) => {
            let mut text = String::from_utf8_lossy(&r.body).into_owned();
            if text.len() > BODY_KEEP {
                let mut cut = BODY_KEEP;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            let error = (!(200..300).contains(&r.status))
                .then(|| format!("the receiver answered {}", r.status));
            let retry_after_ms = r
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|secs| secs.saturating_mul(1000));
            Attempt {
                status: Some(r.status),
                body: Some(text),
                duration_ms,
                error,
                retry_after_ms,
            }
        }
        Err(e) => Attempt {
            status: None,
            body: None,
            duration_ms,
            error: Some(e.to_string()),
            retry_after_ms: None,
        },
    }
}

const LOAD: &str =
    "SELECT d.payload::text, d.status, h.url, h.headers, h.secret, h.timeout_ms, h.enabled,
            h.backoff_base_ms, h.backoff_cap_ms
                      FROM webhooks.deliveries d JOIN webhooks.hooks h ON h.id = d.webhook_id
                     WHERE d.id = $1";

const RECORD: &str = "UPDATE webhooks.deliveries
                SET attempts = attempts + 1, status = $2, response_status = $3, response_body = $4,
                    duration_ms = $5, last_error = $6, updated_at = now(),
                    delivered_at = CASE WHEN $2 = 'succeeded' THEN now() ELSE delivered_at END
              WHERE id = $1";

/// Records an attempt; `final_status` is the delivery's status afterwards.
pub async fn record<C: tokio_postgres::GenericClient>(
    client: &C,
    delivery_id: i64,
    a: &Attempt,
    final_status: &str,
) -> Result<(), tokio_postgres::Error> {
    record_with(client, RECORD, delivery_id, a, final_status).await
}

/// `record` with the statement given (the job passes its connection's cached one).
async fn record_with<C, T>(
    client: &C,
    stmt: &T,
    delivery_id: i64,
    a: &Attempt,
    final_status: &str,
) -> Result<(), tokio_postgres::Error>
where
    C: tokio_postgres::GenericClient,
    T: ?Sized + tokio_postgres::ToStatement + Sync + Send,
{
    let status = a.status.map(i32::from);
    client
        .execute(
            stmt,
            &[
                &delivery_id,
                &final_status,
                &status,
                &a.body,
                &a.duration_ms,
                &a.error,
            ],
        )
        .await
        .map(|_| ())
}

async fn run(ctx: JobContext, outbound: Outbound) -> Result<Option<Value>, JobError> {
    let Some(id) = ctx.payload.get("delivery").and_then(Value::as_i64) else {
        return Err(JobError::Permanent("the job names no delivery".into()));
    };
    let db = |e: tokio_postgres::Error| JobError::Retry(format!("database: {e}"));
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| JobError::Retry(format!("database: {e}")))?;
    // Both statements of every delivery are prepared once per pooled connection: a text
    // query would cost a Parse round trip (and a plan) each time.
    let load = client.prepare_cached(LOAD).await.map_err(db)?;
    let Some(row) = client.query_opt(&load, &[&id]).await.map_err(db)? else {
        // The hook was deleted (its deliveries with it): nothing to send.
        return Ok(Some(json!({"skipped": "deleted"})));
    };
    let (body, status, url, headers, secret, timeout_ms, enabled): (
        String,
        String,
        String,
        Value,
        String,
        i32,
        bool,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    );
    let (base_ms, cap_ms): (Option<i32>, Option<i32>) = (row.get(7), row.get(8));
    if !enabled || status == "cancelled" {
        client
            .execute(
                "UPDATE webhooks.deliveries SET status = 'cancelled', updated_at = now()
                  WHERE id = $1 AND status = 'pending'",
                &[&id],
            )
            .await
            .map_err(db)?;
        return Ok(Some(json!({"skipped": "disabled"})));
    }
    if status == "succeeded" {
        return Ok(Some(json!({"skipped": "already delivered"})));
    }
    let a = attempt(&outbound, id, &url, &headers, &secret, timeout_ms, &body).await;
    let last = ctx.attempt >= ctx.max_attempts;
    let final_status = match (a.ok(), last) {
        (true, _) => "succeeded",
        (false, true) => "failed",
        (false, false) => "pending",
    };
    let rec = client.prepare_cached(RECORD).await.map_err(db)?;
    record_with(&**client, &rec, id, &a, final_status)
        .await
        .map_err(db)?;
    match (a.ok(), last) {
        (true, _) => Ok(Some(json!({"status": a.status}))),
        (false, true) => Err(JobError::Permanent(a.error.unwrap_or_default())),
        (false, false) => {
            // The hook's backoff (unset parts: the queue's), or the receiver's Retry-After
            // within the cap.
            let ms = |v: Option<i32>| v.and_then(|v| u64::try_from(v).ok());
            let backoff = Backoff {
                base_ms: ms(base_ms),
                cap_ms: ms(cap_ms),
                delay_ms: a.retry_after_ms,
            };
            Err(JobError::RetryWith(a.error.unwrap_or_default(), backoff))
        }
    }
}
