//! Operational endpoints: liveness, readiness, metrics, the OpenAPI document and the admin
//! info route. Must not do work beyond one cheap query per call.

use crate::app::AppState;
use crate::auth::ServiceRole;
use crate::error::ApiError;
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;

/// Declares this module's routes.
pub fn configure(reg: &mut Registry) {
    reg.add(
        Method::GET,
        "/health",
        "ops",
        "Liveness: the process answers",
        Access::Public,
        health,
    );
    reg.add(
        Method::GET,
        "/ready",
        "ops",
        "Readiness: database reachable and migrated",
        Access::Public,
        ready,
    );
    reg.add(
        Method::GET,
        "/metrics",
        "ops",
        "Prometheus metrics",
        Access::Public,
        metrics,
    );
    reg.add(
        Method::GET,
        "/openapi.json",
        "ops",
        "This API description",
        Access::Public,
        openapi,
    );
    reg.add(
        Method::GET,
        "/api/v1/admin/info",
        "admin",
        "Server, database and migration facts",
        Access::ServiceRole,
        admin_info,
    );
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    crate::db::readiness(&state.pool, &state.migration_versions).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.config.metrics.enabled {
        return Err(ApiError::new(
            crate::error::ErrorCode::RouteNotFound,
            "Metrics are disabled (metrics.enabled)",
        ));
    }
    state.jobs_metrics.refresh(&state.pool).await;
    let body = state
        .metrics
        .render(&state.pool)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}

/// The static part rendered at start-up merged with the REST paths of the current schema
/// cache (rendered once per cache generation, see `openapi::render`).
async fn openapi(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let body = crate::openapi::render(
        &state.openapi_json,
        &state.schema.get(),
        &state.config.rest.schemas,
    )
    .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

async fn admin_info(
    state: web::Data<AppState>,
    _admin: ServiceRole,
) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_one("SELECT fluxbase.info()", &[])
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let db: serde_json::Value = row.get(0);
    Ok(HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started_at.elapsed().as_secs(),
        "managed_database": state.managed_database,
        "database": db,
    })))
}
