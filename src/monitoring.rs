//! `/api/v1/monitoring`: dependency health with latencies, the Prometheus figures as JSON,
//! and the most recent log lines (the in-memory ring of `telemetry`). service_role only.

use crate::app::AppState;
use crate::auth::ServiceRole;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Declares the routes.
pub fn configure(reg: &mut Registry) {
    reg.add(
        Method::GET,
        "/api/v1/monitoring/health",
        "monitoring",
        "Each dependency (database, storage, SMTP, job queue, realtime) with its latency; 503 when one fails",
        Access::ServiceRole,
        health,
    );
    reg.add(
        Method::GET,
        "/api/v1/monitoring/metrics",
        "monitoring",
        "The /metrics figures as JSON",
        Access::ServiceRole,
        metrics,
    );
    reg.add(
        Method::GET,
        "/api/v1/monitoring/logs",
        "monitoring",
        "Recent structured log lines (filters: level, module, request_id, limit)",
        Access::ServiceRole,
        logs,
    );
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

async fn check_database(state: &AppState) -> Value {
    let t = Instant::now();
    let r = async {
        let c = state.pool.get().await.map_err(|e| e.to_string())?;
        c.simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    match r {
        Ok(()) => json!({"ok": true, "latency_ms": ms(t)}),
        Err(e) => json!({"ok": false, "latency_ms": ms(t), "error": e}),
    }
}

async fn check_queue(state: &AppState) -> Value {
    let t = Instant::now();
    let r = async {
        let c = state.pool.get().await.map_err(|e| e.to_string())?;
        let row = c
            .query_one(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8
                   FROM jobs.jobs WHERE status = 'pending' AND run_at <= now()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((row.get::<_, i64>(0), row.get::<_, f64>(1)))
    }
    .await;
    match r {
        Ok((ready, lag)) => {
            json!({"ok": true, "latency_ms": ms(t), "ready_jobs": ready, "lag_secs": lag})
        }
        Err(e) => json!({"ok": false, "latency_ms": ms(t), "error": e}),
    }
}

async fn check_storage(state: &AppState) -> Value {
    let Some(b) = &state.storage else {
        return json!({"ok": true, "enabled": false});
    };
    let t = Instant::now();
    match b.probe().await {
        Ok(()) => {
            json!({"ok": true, "enabled": true, "backend": state.config.storage.backend, "latency_ms": ms(t)})
        }
        Err(e) => {
            json!({"ok": false, "enabled": true, "backend": state.config.storage.backend, "latency_ms": ms(t), "error": e})
        }
    }
}

/// SMTP: a TCP connect within 3 s (no mail is sent).
async fn check_smtp(state: &AppState) -> Value {
    let smtp = &state.config.auth.smtp;
    if smtp.host.is_empty() {
        return json!({"ok": true, "configured": false});
    }
    let t = Instant::now();
    let addr = format!("{}:{}", smtp.host, smtp.port);
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        Ok(Ok(_)) => json!({"ok": true, "configured": true, "latency_ms": ms(t)}),
        Ok(Err(e)) => {
            json!({"ok": false, "configured": true, "latency_ms": ms(t), "error": e.to_string()})
        }
        Err(_) => {
            json!({"ok": false, "configured": true, "latency_ms": ms(t), "error": "timed out"})
        }
    }
}

fn check_realtime(state: &AppState) -> Value {
    match &state.realtime {
        None => json!({"ok": true, "enabled": false}),
        Some(rt) => {
            let listening = rt
                .changes
                .listening
                .load(std::sync::atomic::Ordering::Acquire);
            json!({"ok": listening, "enabled": true, "listening": listening,
                   "connections": rt.hub.metrics.connections.get()})
        }
    }
}

async fn health(state: web::Data<AppState>, _admin: ServiceRole) -> HttpResponse {
    let (database, queue, storage, smtp) = tokio::join!(
        check_database(&state),
        check_queue(&state),
        check_storage(&state),
        check_smtp(&state)
    );
    let realtime = check_realtime(&state);
    let checks = json!({
        "database": database, "job_queue": queue, "storage": storage, "smtp": smtp, "realtime": realtime,
    });
    let ok = checks
        .as_object()
        .is_some_and(|o| o.values().all(|c| c["ok"] == true));
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started_at.elapsed().as_secs(),
        "checks": checks,
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>, _admin: ServiceRole) -> HttpResponse {
    state.jobs_metrics.refresh(&state.pool).await;
    HttpResponse::Ok().json(json!({"metrics": state.metrics.snapshot(&state.pool)}))
}

/// Filters of the log view.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    level: Option<String>,
    module: Option<String>,
    request_id: Option<String>,
    limit: Option<usize>,
}

async fn logs(_admin: ServiceRole, q: web::Query<LogQuery>) -> Result<HttpResponse, ApiError> {
    let level = match q.level.as_deref() {
        None => None,
        Some(l) => Some(l.parse::<tracing::Level>().map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                "level must be error, warn, info, debug or trace",
            )
        })?),
    };
    let lines = crate::telemetry::recent(
        level,
        q.module.as_deref(),
        q.request_id.as_deref(),
        q.limit
            .unwrap_or(200)
            .clamp(1, crate::telemetry::RING_LINES),
    );
    Ok(HttpResponse::Ok().json(json!({"lines": lines})))
}
