//! `/api/v1/webhooks`: create (the secret is shown once), list, get, update, delete, send a
//! test event, list deliveries and redeliver. service_role (or an `admin`-scoped API key
//! with that role) only; every change is audited.

use super::{deliver, new_secret, parse_event, secret_key, QUEUE};
use crate::app::AppState;
use crate::audit::{self, AuditEvent};
use crate::auth::ServiceRole;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Declares the routes.
pub fn configure(reg: &mut Registry) {
    use Access::ServiceRole as S;
    reg.add(
        Method::GET,
        "/api/v1/webhooks",
        "webhooks",
        "List webhooks",
        S,
        list,
    );
    reg.add(
        Method::POST,
        "/api/v1/webhooks",
        "webhooks",
        "Create a webhook (its secret is shown once)",
        S,
        create,
    );
    let one = "/api/v1/webhooks/{id}";
    reg.add(Method::GET, one, "webhooks", "One webhook", S, get);
    reg.add(
        Method::PATCH,
        one,
        "webhooks",
        "Change a webhook",
        S,
        update,
    );
    reg.add(
        Method::DELETE,
        one,
        "webhooks",
        "Delete a webhook (pending deliveries are cancelled)",
        S,
        delete,
    );
    reg.add(
        Method::POST,
        "/api/v1/webhooks/{id}/test",
        "webhooks",
        "Send a signed webhook.test event now and report the answer",
        S,
        test_send,
    );
    reg.add(
        Method::GET,
        "/api/v1/webhooks/{id}/deliveries",
        "webhooks",
        "Deliveries of a webhook, newest first (status, attempts, response)",
        S,
        deliveries,
    );
    reg.add(
        Method::POST,
        "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
        "webhooks",
        "Send a delivery again (same webhook-id)",
        S,
        redeliver,
    );
}

fn db(e: tokio_postgres::Error) -> ApiError {
    ApiError::from_db(&e, true)
}

/// A base above the cap that only shows against the stored value (one of the two given in
/// an update) is a client mistake, not a server error.
fn map_backoff_order(e: tokio_postgres::Error) -> ApiError {
    let order = e
        .as_db_error()
        .is_some_and(|d| d.constraint() == Some("hooks_backoff_order"));
    if order {
        bad("retry.backoff_base_ms must not exceed retry.backoff_cap_ms")
    } else {
        db(e)
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "webhook not found")
}

const COLUMNS: &str = "jsonb_build_object('id', id, 'name', name, 'url', url, 'events', events,
    'headers', headers, 'timeout_ms', timeout_ms, 'max_attempts', max_attempts,
    'retry', jsonb_build_object('max_attempts', max_attempts, 'backoff_base_ms', backoff_base_ms,
                                'backoff_cap_ms', backoff_cap_ms),
    'enabled', enabled, 'created_at', created_at, 'updated_at', updated_at)";

/// Body of create and update.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookBody {
    name: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    headers: Option<serde_json::Map<String, Value>>,
    secret: Option<String>,
    timeout_ms: Option<i32>,
    /// `{max_attempts, backoff_base_ms, backoff_cap_ms}`: attempts before a delivery counts
    /// as failed, and the full-jitter exponential backoff between them.
    retry: Option<RetryBody>,
    enabled: Option<bool>,
}

/// Retry policy of a hook.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    max_attempts: Option<i32>,
    backoff_base_ms: Option<i32>,
    backoff_cap_ms: Option<i32>,
}

async fn validate<C: tokio_postgres::GenericClient>(
    client: &C,
    b: &HookBody,
) -> Result<(), ApiError> {
    if let Some(n) = &b.name {
        if n.trim().is_empty() || n.len() > 200 {
            return Err(bad("name must be 1 to 200 characters"));
        }
    }
    if let Some(u) = &b.url {
        let parsed = url::Url::parse(u).map_err(|e| bad(format!("url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(bad("url must be an http(s) URL with a host"));
        }
    }
    if let Some(events) = &b.events {
        if events.is_empty() {
            return Err(bad("events must not be empty"));
        }
        for e in events {
            if let Some((schema, table)) = parse_event(e).map_err(bad)? {
                let exists = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p'))",
                        &[&schema, &table],
                    )
                    .await
                    .map_err(db)?
                    .get::<_, bool>(0);
                if !exists {
                    return Err(bad(format!(
                        "event {e:?}: table {schema}.{table} does not exist"
                    )));
                }
            }
        }
    }
    if let Some(h) = &b.headers {
        for (k, v) in h {
            let name_ok = actix_web::http::header::HeaderName::from_bytes(k.as_bytes()).is_ok();
            let value_ok = v
                .as_str()
                .is_some_and(|v| actix_web::http::header::HeaderValue::from_str(v).is_ok());
            if !name_ok || !value_ok {
                return Err(bad(format!(
                    "header {k:?}: names and values must be valid header text"
                )));
            }
            if k.to_ascii_lowercase().starts_with("webhook-") {
                return Err(bad(format!(
                    "header {k:?}: webhook-* headers are set by the signer"
                )));
            }
        }
    }
    if let Some(s) = &b.secret {
        if secret_key(s).is_none() {
            return Err(bad(
                "secret must be whsec_ followed by base64 of 24 to 64 bytes",
            ));
        }
    }
    if b.timeout_ms.is_some_and(|t| !(100..=120_000).contains(&t)) {
        return Err(bad("timeout_ms must be between 100 and 120000"));
    }
    if b.retry
        .as_ref()
        .and_then(|r| r.max_attempts)
        .is_some_and(|m| !(1..=50).contains(&m))
    {
        return Err(bad("retry.max_attempts must be between 1 and 50"));
    }
    if let Some(r) = &b.retry {
        if r.backoff_base_ms
            .is_some_and(|m| !(1..=3_600_000).contains(&m))
        {
            return Err(bad("retry.backoff_base_ms must be between 1 and 3600000"));
        }
        if r.backoff_cap_ms
            .is_some_and(|m| !(1..=86_400_000).contains(&m))
        {
            return Err(bad("retry.backoff_cap_ms must be between 1 and 86400000"));
        }
        if let (Some(base), Some(cap)) = (r.backoff_base_ms, r.backoff_cap_ms) {
            if base > cap {
                return Err(bad(
                    "retry.backoff_base_ms must not exceed retry.backoff_cap_ms",
                ));
            }
        }
    }
    Ok(())
}

fn audit_event(req: &HttpRequest, admin: &ServiceRole, action: &str, id: Uuid) -> AuditEvent {
    AuditEvent::from_request(
        req,
        &admin.0,
        action,
        Some(format!("webhook:{id}")),
        json!({}),
    )
}

/// Ends a change to the hooks: capture triggers follow the hooks' tables, the change is
/// audited, all in the transaction of the change.
async fn finish(
    tx: deadpool_postgres::Transaction<'_>,
    req: &HttpRequest,
    admin: &ServiceRole,
    action: &str,
    id: Uuid,
) -> Result<(), ApiError> {
    tx.batch_execute("SELECT webhooks.sync_triggers()")
        .await
        .map_err(db)?;
    audit::record(&*tx, &audit_event(req, admin, action, id))
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)
}

async fn create(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    body: web::Json<HookBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let (Some(url), Some(events)) = (&b.url, &b.events) else {
        return Err(bad("url and events are required"));
    };
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    validate(&*tx, &b).await?;
    let secret = b.secret.clone().unwrap_or_else(new_secret);
    let name = b.name.clone().unwrap_or_else(|| url.clone());
    let headers = Value::Object(b.headers.clone().unwrap_or_default());
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO webhooks.hooks (name, url, events, headers, secret, timeout_ms, max_attempts, enabled,
                                             backoff_base_ms, backoff_cap_ms)
                 VALUES ($1, $2, $3, $4, $5, coalesce($6, 10000), coalesce($7, 8), coalesce($8, true),
                         $9, $10)
                 RETURNING id, {COLUMNS}"
            ),
            &[
                &name,
                url,
                events,
                &headers,
                &secret,
                &b.timeout_ms,
                &b.retry.as_ref().and_then(|r| r.max_attempts),
                &b.enabled,
                &b.retry.as_ref().and_then(|r| r.backoff_base_ms),
                &b.retry.as_ref().and_then(|r| r.backoff_cap_ms),
            ],
        )
        .await
        .map_err(map_backoff_order)?;
    let id: Uuid = row.get(0);
    finish(tx, &req, &admin, "webhooks.create", id).await?;
    let mut out: Value = row.get(1);
    out["secret"] = Value::from(secret);
    Ok(HttpResponse::Created().json(out))
}

async fn list(state: web::Data<AppState>, _admin: ServiceRole) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    let row = c
        .query_one(
            &format!(
                "SELECT coalesce(jsonb_agg({COLUMNS} ORDER BY created_at), '[]') FROM webhooks.hooks"
            ),
            &[],
        )
        .await
        .map_err(db)?;
    Ok(HttpResponse::Ok().json(row.get::<_, Value>(0)))
}

async fn get(
    state: web::Data<AppState>,
    _admin: ServiceRole,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    let row = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM webhooks.hooks WHERE id = $1"),
            &[&path.into_inner()],
        )
        .await
        .map_err(db)?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(row.get::<_, Value>(0)))
}

async fn update(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Json<HookBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let b = body.into_inner();
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    validate(&*tx, &b).await?;
    let headers = b.headers.clone().map(Value::Object);
    let row = tx
        .query_opt(
            &format!(
                "UPDATE webhooks.hooks SET name = coalesce($2, name), url = coalesce($3, url),
                    events = coalesce($4, events), headers = coalesce($5, headers),
                    secret = coalesce($6, secret), timeout_ms = coalesce($7, timeout_ms),
                    max_attempts = coalesce($8, max_attempts), enabled = coalesce($9, enabled),
                    backoff_base_ms = coalesce($10, backoff_base_ms),
                    backoff_cap_ms = coalesce($11, backoff_cap_ms), updated_at = now()
                  WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &b.name,
                &b.url,
                &b.events,
                &headers,
                &b.secret,
                &b.timeout_ms,
                &b.retry.as_ref().and_then(|r| r.max_attempts),
                &b.enabled,
                &b.retry.as_ref().and_then(|r| r.backoff_base_ms),
                &b.retry.as_ref().and_then(|r| r.backoff_cap_ms),
            ],
        )
        .await
        .map_err(map_backoff_order)?
        .ok_or_else(not_found)?;
    finish(tx, &req, &admin, "webhooks.update", id).await?;
    Ok(HttpResponse::Ok().json(row.get::<_, Value>(0)))
}

async fn delete(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    // Cancel the queued jobs of its pending deliveries, then delete (deliveries cascade).
    let jobs: Vec<i64> = tx
        .query(
            "SELECT job_id FROM webhooks.deliveries
              WHERE webhook_id = $1 AND status = 'pending' AND job_id IS NOT NULL",
            &[&id],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for j in jobs {
        crate::jobs::queue::cancel(&*tx, j).await.map_err(db)?;
    }
    let n = tx
        .execute("DELETE FROM webhooks.hooks WHERE id = $1", &[&id])
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(not_found());
    }
    finish(tx, &req, &admin, "webhooks.delete", id).await?;
    Ok(HttpResponse::NoContent().finish())
}

const DELIVERY: &str = "jsonb_build_object('id', id, 'webhook_id', webhook_id, 'event', event,
    'status', status, 'attempts', attempts, 'response_status', response_status,
    'response_body', response_body, 'duration_ms', duration_ms, 'error', last_error,
    'payload', payload, 'created_at', created_at, 'updated_at', updated_at,
    'delivered_at', delivered_at)";

async fn test_send(
    state: web::Data<AppState>,
    _admin: ServiceRole,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let c = state.pool.get().await?;
    let hook = c
        .query_opt(
            "SELECT url, headers, secret, timeout_ms FROM webhooks.hooks WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db)?
        .ok_or_else(not_found)?;
    let payload = json!({"type": "webhook.test", "webhook_id": id, "sent_at": chrono::Utc::now()});
    let d: i64 = c
        .query_one(
            "INSERT INTO webhooks.deliveries (webhook_id, event, payload) VALUES ($1, 'webhook.test', $2) RETURNING id",
            &[&id, &payload],
        )
        .await
        .map_err(db)?
        .get(0);
    let a = deliver::attempt(
        &state.outbound,
        d,
        &hook.get::<_, String>(0),
        &hook.get::<_, Value>(1),
        &hook.get::<_, String>(2),
        hook.get(3),
        &payload.to_string(),
    )
    .await;
    let status = if a.ok() { "succeeded" } else { "failed" };
    deliver::record(&**c, d, &a, status).await.map_err(db)?;
    let row = c
        .query_one(
            &format!("SELECT {DELIVERY} FROM webhooks.deliveries WHERE id = $1"),
            &[&d],
        )
        .await
        .map_err(db)?;
    Ok(HttpResponse::Ok().json(row.get::<_, Value>(0)))
}

/// Query of the deliveries list.
#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<i64>,
}

async fn deliveries(
    state: web::Data<AppState>,
    _admin: ServiceRole,
    path: web::Path<Uuid>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let c = state.pool.get().await?;
    let exists = c
        .query_opt("SELECT 1 FROM webhooks.hooks WHERE id = $1", &[&id])
        .await
        .map_err(db)?;
    if exists.is_none() {
        return Err(not_found());
    }
    let row = c
        .query_one(
            &format!(
                "SELECT coalesce(jsonb_agg(x ORDER BY (x->>'id')::bigint DESC), '[]')::text FROM (
                   SELECT {DELIVERY} AS x FROM webhooks.deliveries
                    WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2)
                    ORDER BY id DESC LIMIT $3) s"
            ),
            &[&id, &q.status, &limit],
        )
        .await
        .map_err(db)?;
    // Passed through as text: a payload may hold numbers (e.g. ±1.8e308 from a table's
    // numeric column) that jsonb prints in full and an f64 JSON reader would refuse.
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(row.get::<_, String>(0)))
}

async fn redeliver(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    path: web::Path<(Uuid, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (id, d) = path.into_inner();
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let max: Option<i32> = tx
        .query_opt(
            "SELECT h.max_attempts FROM webhooks.deliveries d JOIN webhooks.hooks h ON h.id = d.webhook_id
              WHERE d.id = $1 AND d.webhook_id = $2 AND d.status <> 'pending' FOR UPDATE OF d",
            &[&d, &id],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0));
    let Some(max) = max else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no finished delivery with that id for this webhook",
        ));
    };
    let job = crate::jobs::queue::enqueue(
        &*tx,
        &crate::jobs::JobSpec {
            queue: QUEUE.into(),
            payload: json!({"delivery": d}),
            max_attempts: Some(max),
            ..Default::default()
        },
    )
    .await
    .map_err(db)?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE webhooks.deliveries SET status = 'pending', job_id = $2, updated_at = now()
                  WHERE id = $1 RETURNING {DELIVERY}"
            ),
            &[&d, &job.id],
        )
        .await
        .map_err(db)?;
    audit::record(&*tx, &audit_event(&req, &admin, "webhooks.redeliver", id))
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Accepted().json(row.get::<_, Value>(0)))
}
