//! `/api/v1/jobs`: enqueue, list, inspect, replay and cancel jobs, queue stats, and cron
//! schedules. service_role only; every change is audited.

use super::cron::{self, ScheduleSpec};
use super::queue::{self, JobSpec};
use crate::app::AppState;
use crate::audit::{self, AuditEvent};
use crate::auth::ServiceRole;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

/// Declares the routes. Fixed paths come before `{id}` so they are matched first.
pub fn configure(reg: &mut Registry) {
    use Access::ServiceRole as S;
    reg.add(
        Method::GET,
        "/api/v1/jobs",
        "jobs",
        "List jobs (filters: queue, status)",
        S,
        list,
    );
    reg.add(
        Method::POST,
        "/api/v1/jobs",
        "jobs",
        "Enqueue a job",
        S,
        create,
    );
    reg.add(
        Method::GET,
        "/api/v1/jobs/stats",
        "jobs",
        "Per-queue counts and age of the oldest ready job",
        S,
        stats,
    );
    reg.add(
        Method::GET,
        "/api/v1/jobs/schedules",
        "jobs",
        "List cron schedules",
        S,
        list_schedules,
    );
    reg.add(
        Method::POST,
        "/api/v1/jobs/schedules",
        "jobs",
        "Create or replace a cron schedule",
        S,
        upsert_schedule,
    );
    reg.add(
        Method::DELETE,
        "/api/v1/jobs/schedules/{name}",
        "jobs",
        "Delete a cron schedule",
        S,
        delete_schedule,
    );
    reg.add(
        Method::GET,
        "/api/v1/jobs/{id:\\d+}",
        "jobs",
        "One job",
        S,
        get,
    );
    reg.add(
        Method::POST,
        "/api/v1/jobs/{id:\\d+}/retry",
        "jobs",
        "Replay a dead or cancelled job",
        S,
        retry,
    );
    reg.add(
        Method::POST,
        "/api/v1/jobs/{id:\\d+}/cancel",
        "jobs",
        "Cancel a pending or running job",
        S,
        cancel,
    );
}

const STATUSES: [&str; 5] = ["pending", "running", "succeeded", "dead", "cancelled"];

fn db(e: tokio_postgres::Error) -> ApiError {
    ApiError::from_db(&e, true)
}

fn json_body(text: String, status: actix_web::http::StatusCode) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(text)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    queue: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    state: web::Data<AppState>,
    _: ServiceRole,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("status must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    let offset = q.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) || offset < 0 {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "limit must be 1..1000 and offset non-negative",
        ));
    }
    let c = state.pool.get().await?;
    let text = queue::list(&**c, q.queue.as_deref(), q.status.as_deref(), limit, offset)
        .await
        .map_err(db)?;
    Ok(json_body(text, actix_web::http::StatusCode::OK))
}

async fn create(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    spec: web::Json<JobSpec>,
) -> Result<HttpResponse, ApiError> {
    queue::validate(&spec).map_err(|m| ApiError::new(ErrorCode::BadRequest, m))?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let done = queue::enqueue(&*tx, &spec).await.map_err(db)?;
    if done.created {
        let ev = AuditEvent::from_request(
            &req,
            &admin.0,
            "jobs.enqueue",
            Some(format!("job:{}", done.id)),
            json!({"queue": spec.queue}),
        );
        audit::record(&*tx, &ev).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    let status = if done.created {
        actix_web::http::StatusCode::CREATED
    } else {
        actix_web::http::StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(done))
}

async fn get(
    state: web::Data<AppState>,
    _: ServiceRole,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    match queue::get(&**c, *id).await.map_err(db)? {
        Some(j) => Ok(HttpResponse::Ok().json(j)),
        None => Err(ApiError::new(ErrorCode::NotFound, format!("No job {id}"))),
    }
}

async fn change(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: i64,
    action: &str,
) -> Result<HttpResponse, ApiError> {
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let outcome = if action == "retry" {
        queue::retry(&*tx, id).await
    } else {
        queue::cancel(&*tx, id).await
    }
    .map_err(db)?;
    match outcome {
        None => Err(ApiError::new(ErrorCode::NotFound, format!("No job {id}"))),
        Some(false) => Err(ApiError::new(
            ErrorCode::Conflict,
            if action == "retry" {
                format!("Job {id} is neither dead nor cancelled")
            } else {
                format!("Job {id} has already finished")
            },
        )),
        Some(true) => {
            let ev = AuditEvent::from_request(
                &req,
                &admin.0,
                &format!("jobs.{action}"),
                Some(format!("job:{id}")),
                json!({}),
            );
            audit::record(&*tx, &ev).await.map_err(db)?;
            let job = queue::get(&*tx, id).await.map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(HttpResponse::Ok().json(job))
        }
    }
}

async fn retry(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    change(state, admin, req, *id, "retry").await
}

async fn cancel(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    change(state, admin, req, *id, "cancel").await
}

async fn stats(state: web::Data<AppState>, _: ServiceRole) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(queue::stats(&**c).await.map_err(db)?))
}

async fn list_schedules(
    state: web::Data<AppState>,
    _: ServiceRole,
) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    let r = c
        .query_one("SELECT coalesce(json_agg(to_jsonb(s) ORDER BY s.name), '[]')::text FROM jobs.schedules s", &[])
        .await
        .map_err(db)?;
    Ok(json_body(r.get(0), actix_web::http::StatusCode::OK))
}

async fn upsert_schedule(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    spec: web::Json<ScheduleSpec>,
) -> Result<HttpResponse, ApiError> {
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let row = cron::upsert(&*tx, &spec, state.clock.now())
        .await
        .map_err(|e| match e {
            cron::UpsertError::Invalid(m) => ApiError::new(ErrorCode::BadRequest, m),
            cron::UpsertError::Db(e) => db(e),
        })?;
    let ev = AuditEvent::from_request(
        &req,
        &admin.0,
        "jobs.schedule.upsert",
        Some(format!("schedule:{}", spec.name)),
        json!({"cron": spec.cron, "timezone": spec.timezone, "queue": spec.queue, "enabled": spec.enabled}),
    );
    audit::record(&*tx, &ev).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(row))
}

async fn delete_schedule(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let n = tx
        .execute("DELETE FROM jobs.schedules WHERE name = $1", &[&*name])
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("No schedule {name:?}"),
        ));
    }
    let ev = AuditEvent::from_request(
        &req,
        &admin.0,
        "jobs.schedule.delete",
        Some(format!("schedule:{name}")),
        json!({}),
    );
    audit::record(&*tx, &ev).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::NoContent().finish())
}
