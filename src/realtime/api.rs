//! Realtime's HTTP routes: `POST /realtime/v1/api/broadcast` (realtime-js's REST fallback
//! and server-side sends), and the admin routes that list, enable and disable
//! postgres_changes per table and report the hub's counters.

use super::hub::Broadcast;
use super::protocol::BroadcastBody;
use super::{hub_key, Identity};
use crate::app::AppState;
use crate::audit::{self, AuditEvent};
use crate::auth::{AuthContext, ServiceRole};
use crate::error::{ApiError, ErrorCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

fn realtime(state: &AppState) -> Result<std::sync::Arc<super::Realtime>, ApiError> {
    state
        .realtime
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "realtime is disabled"))
}

/// One message of a REST broadcast.
#[derive(Debug, Deserialize)]
pub struct RestMessage {
    topic: String,
    event: String,
    /// Passed through as text (never re-read as numbers).
    #[serde(default)]
    payload: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    private: bool,
}

/// Body of `POST /realtime/v1/api/broadcast`.
#[derive(Debug, Deserialize)]
pub struct RestBroadcast {
    messages: Vec<RestMessage>,
}

/// `POST /realtime/v1/api/broadcast`: 202 once every message is handed to the hub. Private
/// topics need the caller to pass the INSERT policy of `realtime.messages` for the topic.
pub async fn broadcast(
    state: web::Data<AppState>,
    ctx: AuthContext,
    body: web::Json<RestBroadcast>,
) -> Result<HttpResponse, ApiError> {
    let rt = realtime(&state)?;
    let body = body.into_inner();
    if body.messages.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "messages must not be empty",
        ));
    }
    for m in &body.messages {
        if m.topic.is_empty() || m.event.is_empty() {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "each message needs a topic and an event",
            ));
        }
    }
    for m in body.messages {
        // realtime-js sends the sub-topic; accept the full one too.
        let sub = m
            .topic
            .strip_prefix("realtime:")
            .unwrap_or(&m.topic)
            .to_string();
        let topic = format!("realtime:{sub}");
        if m.private {
            authorise_write(&state, &ctx, &topic, &sub).await?;
        }
        rt.publish(Broadcast {
            key: hub_key(&topic, m.private),
            topic,
            event: m.event,
            body: BroadcastBody::Json(m.payload.unwrap_or_else(super::protocol::null)),
            binary: false,
            from: None,
        });
    }
    Ok(HttpResponse::Accepted().finish())
}

/// Query of the per-event broadcast route.
#[derive(Debug, Deserialize)]
pub struct EventQuery {
    #[serde(default)]
    private: bool,
}

/// `POST /realtime/v1/api/broadcast/{topic}/events/{event}` (realtime-js `httpSend`): the body
/// is the payload, JSON or (`application/octet-stream`) raw bytes.
pub async fn broadcast_event(
    state: web::Data<AppState>,
    ctx: AuthContext,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<EventQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let rt = realtime(&state)?;
    let (sub, event) = path.into_inner();
    if sub.is_empty() || event.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "topic and event are required",
        ));
    }
    let binary = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let payload = if binary {
        BroadcastBody::Binary(body)
    } else {
        let text = std::str::from_utf8(&body).map_err(|e| {
            ApiError::new(ErrorCode::BadRequest, format!("payload is not JSON: {e}"))
        })?;
        BroadcastBody::Json(
            serde_json::value::RawValue::from_string(text.trim().to_string()).map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("payload is not JSON: {e}"))
            })?,
        )
    };
    let topic = format!("realtime:{sub}");
    if query.private {
        authorise_write(&state, &ctx, &topic, &sub).await?;
    }
    rt.publish(Broadcast {
        key: hub_key(&topic, query.private),
        topic,
        event,
        body: payload,
        binary,
        from: None,
    });
    Ok(HttpResponse::Accepted().finish())
}

/// A private topic needs the caller to pass the INSERT policy of `realtime.messages`.
async fn authorise_write(
    state: &AppState,
    ctx: &AuthContext,
    topic: &str,
    sub: &str,
) -> Result<(), ApiError> {
    let (_, write) = super::socket::channel_access(state, topic, &Identity::from_auth(ctx))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    if write {
        return Ok(());
    }
    // PostgREST's answer to an RLS refusal: SQLSTATE 42501, 403 (401 for anon).
    let mut err = ApiError::new(
        ErrorCode::ServiceRoleRequired,
        format!("You do not have permissions to write to this Channel topic: {sub}"),
    );
    err.code = "42501".into();
    if !ctx.is_authenticated() {
        err.status = actix_web::http::StatusCode::UNAUTHORIZED;
    }
    Err(err)
}

/// `GET /api/v1/realtime/stats`.
pub async fn stats(
    state: web::Data<AppState>,
    _admin: ServiceRole,
) -> Result<HttpResponse, ApiError> {
    let rt = realtime(&state)?;
    let m = &rt.hub.metrics;
    let by_kind = |k: &str| m.messages.with_label_values(&[k]).get();
    let received = |k: &str| m.received.with_label_values(&[k]).get();
    Ok(HttpResponse::Ok().json(json!({
        "connections": m.connections.get(),
        "channels": m.channels.get(),
        "topics": rt.hub.topic_count(),
        "subscriptions": m.subscriptions.get(),
        // Out: frames queued to sockets.
        "messages": {
            "broadcast": by_kind("broadcast"),
            "presence": by_kind("presence"),
            "postgres_changes": by_kind("postgres_changes"),
        },
        "messages_in": {
            "heartbeat": received("heartbeat"),
            "join": received("join"),
            "leave": received("leave"),
            "broadcast": received("broadcast"),
            "presence": received("presence"),
            "access_token": received("access_token"),
            "other": received("other"),
            "malformed": received("malformed"),
        },
        "slow_disconnects": m.slow_disconnects.get(),
    })))
}

/// `GET /api/v1/realtime/tables`.
pub async fn list_tables(
    state: web::Data<AppState>,
    _admin: ServiceRole,
) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    let rows = c
        .query(
            "SELECT p.schemaname::text, p.tablename::text, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t \
                             WHERE t.tgrelid = format('%I.%I', p.schemaname, p.tablename)::regclass \
                               AND t.tgname = 'fluxbase_realtime') \
               FROM pg_catalog.pg_publication_tables p \
              WHERE p.pubname = 'supabase_realtime' ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| json!({"schema": r.get::<_, String>(0), "table": r.get::<_, String>(1), "trigger": r.get::<_, bool>(2)}))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn set_table(
    state: &AppState,
    admin: &ServiceRole,
    req: &HttpRequest,
    schema: &str,
    table: &str,
    enable: bool,
) -> Result<HttpResponse, ApiError> {
    let mut c = state.pool.get().await?;
    let tx = c
        .transaction()
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let exists = tx
        .query_opt(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables \
                             WHERE pubname = 'supabase_realtime' AND schemaname = $1 AND tablename = $2) \
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &table],
        )
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let Some(row) = exists else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("table {schema}.{table} does not exist"),
        ));
    };
    let published: bool = row.get(0);
    let target = format!(
        "{}.{}",
        crate::db::quote_ident(schema),
        crate::db::quote_ident(table)
    );
    if enable && !published {
        tx.batch_execute(&format!(
            "ALTER PUBLICATION supabase_realtime ADD TABLE {target}"
        ))
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    } else if !enable && published {
        tx.batch_execute(&format!(
            "ALTER PUBLICATION supabase_realtime DROP TABLE {target}"
        ))
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    }
    tx.batch_execute("SELECT realtime.fluxbase_sync()")
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let ev = AuditEvent::from_request(
        req,
        &admin.0,
        if enable {
            "realtime.enable_table"
        } else {
            "realtime.disable_table"
        },
        Some(format!("table:{schema}.{table}")),
        json!({}),
    );
    audit::record(&*tx, &ev)
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    tx.commit().await.map_err(|e| ApiError::from_db(&e, true))?;
    Ok(HttpResponse::Ok().json(json!({"schema": schema, "table": table, "enabled": enable})))
}

/// `POST /api/v1/realtime/tables/{schema}/{table}`.
pub async fn enable_table(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (schema, table) = path.into_inner();
    set_table(&state, &admin, &req, &schema, &table, true).await
}

/// `DELETE /api/v1/realtime/tables/{schema}/{table}`.
pub async fn disable_table(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (schema, table) = path.into_inner();
    set_table(&state, &admin, &req, &schema, &table, false).await
}
