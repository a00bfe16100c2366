//! The shared audit log (`fluxbase.audit_log`): who did what to which target, from where.
//!
//! Modules write through `record`, inside their own transaction when they have one, so an
//! audited change and its entry commit together. Admins read `GET /api/v1/audit`. Old
//! entries are pruned by the maintenance job (`audit.retention_days`).
//!
//! Must not: store secrets or tokens in `details`.

use crate::app::{AppState, RequestId};
use crate::auth::{AuthContext, ServiceRole};
use crate::error::{ApiError, ErrorCode};
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use tokio_postgres::GenericClient;

/// Declares the audit routes.
pub fn configure(reg: &mut Registry) {
    reg.add(
        Method::GET,
        "/api/v1/audit",
        "audit",
        "Audit log entries, newest first",
        Access::ServiceRole,
        list,
    );
}

/// One audit entry.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    /// Who: a user id, a role, or a system component (`system:jobs`).
    pub actor: Option<String>,
    /// The actor's role.
    pub actor_role: Option<String>,
    /// What: a dotted verb (`jobs.retry`, `auth.sign_in`).
    pub action: String,
    /// On what (`job:42`, `user:<id>`).
    pub target: Option<String>,
    /// Client IP.
    pub ip: Option<IpAddr>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Anything else worth keeping (never secrets).
    pub details: Value,
}

impl AuditEvent {
    /// An event for an HTTP request by `ctx`.
    pub fn from_request(
        req: &HttpRequest,
        ctx: &AuthContext,
        action: &str,
        target: Option<String>,
        details: Value,
    ) -> Self {
        AuditEvent {
            actor: Some(
                ctx.subject()
                    .map(str::to_string)
                    .unwrap_or_else(|| ctx.role.clone()),
            ),
            actor_role: Some(ctx.role.clone()),
            action: action.to_string(),
            target,
            ip: req.peer_addr().map(|a| a.ip()),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
            request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
            details,
        }
    }
}

/// Writes an entry with `client` (a transaction, to commit it with the change it records).
pub async fn record<C: GenericClient>(
    client: &C,
    e: &AuditEvent,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO fluxbase.audit_log (actor, actor_role, action, target, ip, user_agent, request_id, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&e.actor, &e.actor_role, &e.action, &e.target, &e.ip, &e.user_agent, &e.request_id, &e.details],
        )
        .await
        .map(|_| ())
}

/// Deletes entries older than `days`; returns how many.
pub async fn prune<C: GenericClient>(client: &C, days: u64) -> Result<u64, tokio_postgres::Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    client
        .execute(
            "DELETE FROM fluxbase.audit_log WHERE at < now() - make_interval(days => $1)",
            &[&days],
        )
        .await
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    state: web::Data<AppState>,
    _admin: ServiceRole,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) || q.offset.is_some_and(|o| o < 0) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "limit must be 1..1000 and offset non-negative",
        ));
    }
    let client = state.pool.get().await?;
    // `action` may end in `*` to match a prefix (`jobs.*`).
    let action_like = q.action.as_ref().map(|a| match a.strip_suffix('*') {
        Some(prefix) => format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_")),
        None => a.replace('%', "\\%").replace('_', "\\_"),
    });
    let row = client
        .query_one(
            "SELECT coalesce(json_agg(e ORDER BY e.at DESC, e.id DESC), '[]')::text FROM (
               SELECT id, at, actor, actor_role, action, target, host(ip) AS ip, user_agent, request_id, details
               FROM fluxbase.audit_log
               WHERE ($1::text IS NULL OR action LIKE $1)
                 AND ($2::text IS NULL OR actor = $2)
                 AND ($3::text IS NULL OR target = $3)
                 AND ($4::timestamptz IS NULL OR at >= $4)
                 AND ($5::timestamptz IS NULL OR at < $5)
               ORDER BY at DESC, id DESC
               LIMIT $6 OFFSET $7) e",
            &[&action_like, &q.actor, &q.target, &q.since, &q.until, &limit, &q.offset.unwrap_or(0)],
        )
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let body: String = row.get(0);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}
