//! Fluxbase API keys: `fbk_` + 43 random characters, shown once at creation and stored as a
//! SHA-256 hash. Each key has a role (the Postgres role requests switch to), scopes from a
//! fixed list checked per route group, an optional user whose id becomes `sub`, and an
//! optional expiry, and an optional rate limit of its own (requests per minute, counted per
//! key by the rate-limit middleware instead of per client IP). Keys are looked up on every
//! use (an indexed read), so a revoked or expired key is refused at once on every instance.

use super::service::{db, hash_token, new_secret};
use super::{AuthContext, ServiceRole};
use crate::app::AppState;
use crate::audit::{self, AuditEvent};
use crate::error::{ApiError, ErrorCode};
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Prefix of every Fluxbase API key.
pub const PREFIX: &str = "fbk_";

/// Every scope a key may hold.
pub const SCOPES: [&str; 6] = [
    "rest:read",
    "rest:write",
    "storage:read",
    "storage:write",
    "realtime",
    "admin",
];

/// The scope a request needs from an API key; `None` for routes open to any key (auth's
/// own user routes, health).
pub fn required_scope(method: &Method, path: &str) -> Option<&'static str> {
    let under = |p: &str| crate::routes::under(path, p);
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if under("/rest/v1") || under("/api/v1/tables") || under("/api/v1/rpc") {
        Some(if read { "rest:read" } else { "rest:write" })
    } else if under("/storage/v1") || under("/api/v1/storage") {
        Some(if read {
            "storage:read"
        } else {
            "storage:write"
        })
    } else if under("/realtime/v1") || under("/realtime") {
        Some("realtime")
    } else if under("/auth/v1/admin") || under("/api/v1/auth/admin") {
        Some("admin")
    } else if under("/auth/v1") || under("/api/v1/auth") {
        None
    } else if under("/api/v1") {
        Some("admin")
    } else {
        None
    }
}

fn invalid() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidApiKey,
        "API key is invalid, expired or revoked",
    )
    .with_header("WWW-Authenticate", "Bearer error=\"invalid_token\"")
}

/// A key resolved to its caller.
#[derive(Debug, Clone)]
pub struct ResolvedKey {
    /// The caller's identity.
    pub ctx: AuthContext,
    /// The key's id.
    pub id: Uuid,
    /// The key's own limit, requests per minute.
    pub rate_limit_per_minute: Option<u32>,
}

/// Resolves a key to the caller's identity, checking the scope `req` needs.
pub async fn resolve(
    state: &AppState,
    key: &str,
    method: &Method,
    path: &str,
) -> Result<AuthContext, ApiError> {
    resolve_key(state, key, method, path).await.map(|r| r.ctx)
}

/// `resolve`, with the key's id and rate limit (for the rate-limit middleware).
pub async fn resolve_key(
    state: &AppState,
    key: &str,
    method: &Method,
    path: &str,
) -> Result<ResolvedKey, ApiError> {
    let c = state.pool.get().await?;
    let row = c
        .query_opt(
            "SELECT id, role, scopes, user_id, last_used_at < now() - interval '1 minute' OR last_used_at IS NULL,
                    rate_limit_per_minute
               FROM auth.api_keys
              WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
            &[&hash_token(key)],
        )
        .await
        .map_err(db)?
        .ok_or_else(invalid)?;
    let (id, role, scopes, user, stale): (Uuid, String, Vec<String>, Option<Uuid>, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let rate_limit_per_minute = row
        .get::<_, Option<i32>>(5)
        .and_then(|n| u32::try_from(n).ok());
    if !state.config.allowed_roles().contains(&role) {
        return Err(invalid());
    }
    if let Some(needed) = required_scope(method, path) {
        if !scopes.iter().any(|s| s == needed) {
            return Err(ApiError::new(
                ErrorCode::ApiKeyScope,
                format!("This API key lacks the {needed:?} scope"),
            ));
        }
    }
    if stale {
        // At most one write a minute per key, not one per request.
        c.execute(
            "UPDATE auth.api_keys SET last_used_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db)?;
    }
    let mut claims = super::jwt::Claims::new();
    claims.insert("iss".into(), Value::from("fluxbase"));
    claims.insert("role".into(), Value::from(role.clone()));
    claims.insert("api_key_id".into(), Value::from(id.to_string()));
    claims.insert("scopes".into(), json!(scopes));
    if let Some(u) = user {
        claims.insert("sub".into(), Value::from(u.to_string()));
    }
    let claims_json = Value::Object(claims.clone()).to_string();
    Ok(ResolvedKey {
        ctx: AuthContext {
            role,
            claims: claims.into(),
            has_token: true,
            claims_json: claims_json.into(),
        },
        id,
        rate_limit_per_minute,
    })
}

/// Declares the key management routes.
pub fn configure(reg: &mut Registry) {
    use Access::ServiceRole as S;
    reg.add(
        Method::GET,
        "/api/v1/api-keys",
        "api-keys",
        "List API keys (never the keys themselves)",
        S,
        list,
    );
    reg.add(
        Method::POST,
        "/api/v1/api-keys",
        "api-keys",
        "Create an API key (shown once)",
        S,
        create,
    );
    reg.add(
        Method::GET,
        "/api/v1/api-keys/{id}",
        "api-keys",
        "One API key",
        S,
        get,
    );
    reg.add(
        Method::PATCH,
        "/api/v1/api-keys/{id}",
        "api-keys",
        "Rename, rescope, re-expire or re-limit an API key",
        S,
        update,
    );
    reg.add(
        Method::DELETE,
        "/api/v1/api-keys/{id}",
        "api-keys",
        "Delete an API key",
        S,
        delete,
    );
    reg.add(
        Method::POST,
        "/api/v1/api-keys/{id}/revoke",
        "api-keys",
        "Revoke an API key",
        S,
        revoke,
    );
}

const COLUMNS: &str = "jsonb_build_object('id', id, 'name', name, 'prefix', key_prefix, 'role', role, 'scopes', scopes,
     'user_id', user_id, 'expires_at', expires_at, 'last_used_at', last_used_at, 'revoked_at', revoked_at,
     'rate_limit_per_minute', rate_limit_per_minute, 'created_at', created_at, 'updated_at', updated_at)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: Option<String>,
    role: Option<String>,
    scopes: Option<Vec<String>>,
    user_id: Option<Uuid>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Absent: unchanged (none on create); `null`: no limit of its own.
    #[serde(default, deserialize_with = "present")]
    rate_limit_per_minute: Option<Option<i64>>,
}

/// A field that is present (`Some`), possibly `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Most requests per minute a key may be given (the column is an `integer`).
const MAX_RATE_LIMIT: i64 = 1_000_000;

impl KeyBody {
    /// The limit to store (`None`: none).
    fn rate_limit(&self) -> Option<i32> {
        self.rate_limit_per_minute
            .flatten()
            .and_then(|n| i32::try_from(n).ok())
    }
}

fn check(state: &AppState, b: &KeyBody) -> Result<(), ApiError> {
    if let Some(s) = &b.scopes {
        if let Some(bad) = s.iter().find(|s| !SCOPES.contains(&s.as_str())) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("unknown scope {bad:?}; scopes are {}", SCOPES.join(", ")),
            ));
        }
    }
    if let Some(r) = &b.role {
        if !state.config.allowed_roles().contains(r) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("role {r:?} is not allowed"),
            ));
        }
    }
    if let Some(Some(n)) = b.rate_limit_per_minute {
        if !(1..=MAX_RATE_LIMIT).contains(&n) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("rate_limit_per_minute must be between 1 and {MAX_RATE_LIMIT}, or null for none"),
            ));
        }
    }
    if b.name.as_ref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "name must not be empty",
        ));
    }
    Ok(())
}

async fn audit_key<C: tokio_postgres::GenericClient>(
    c: &C,
    req: &HttpRequest,
    admin: &ServiceRole,
    action: &str,
    id: Uuid,
) -> Result<(), ApiError> {
    let ev = AuditEvent::from_request(
        req,
        &admin.0,
        action,
        Some(format!("api_key:{id}")),
        json!({}),
    );
    audit::record(c, &ev).await.map_err(db)
}

async fn create(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    body: web::Json<KeyBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    check(&state, &b)?;
    let name = b
        .name
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "name is required"))?;
    let key = format!("{PREFIX}{}", new_secret());
    let role = b.role.clone().unwrap_or_else(|| "authenticated".into());
    let scopes = b.scopes.clone().unwrap_or_else(|| vec!["rest:read".into()]);
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO auth.api_keys (name, key_prefix, key_hash, role, scopes, user_id, expires_at, rate_limit_per_minute)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id, {COLUMNS}"
            ),
            &[&name, &&key[..12], &hash_token(&key), &role, &scopes, &b.user_id, &b.expires_at, &b.rate_limit()],
        )
        .await
        .map_err(db)?;
    let id: Uuid = row.get(0);
    audit_key(&*tx, &req, &admin, "api_keys.create", id).await?;
    tx.commit().await.map_err(db)?;
    let mut out: Value = row.get(1);
    out["key"] = Value::from(key);
    Ok(HttpResponse::Created().json(out))
}

async fn list(state: web::Data<AppState>, _: ServiceRole) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    let row = c
        .query_one(
            &format!("SELECT coalesce(jsonb_agg({COLUMNS} ORDER BY created_at), '[]') FROM auth.api_keys"),
            &[],
        )
        .await
        .map_err(db)?;
    Ok(HttpResponse::Ok().json(row.get::<_, Value>(0)))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(ErrorCode::NotFound, "No such API key"))
}

async fn get(
    state: web::Data<AppState>,
    _: ServiceRole,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    let row = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM auth.api_keys WHERE id = $1"),
            &[&parse_id(&id)?],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "No such API key"))?;
    Ok(HttpResponse::Ok().json(row.get::<_, Value>(0)))
}

async fn update(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<KeyBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    check(&state, &b)?;
    if b.role.is_some() || b.user_id.is_some() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "role and user_id are fixed at creation; create a new key",
        ));
    }
    let id = parse_id(&id)?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE auth.api_keys SET name = coalesce($2, name), scopes = coalesce($3, scopes),
                        expires_at = coalesce($4, expires_at),
                        rate_limit_per_minute = CASE WHEN $5 THEN $6 ELSE rate_limit_per_minute END,
                        updated_at = now()
                  WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &b.name,
                &b.scopes,
                &b.expires_at,
                &b.rate_limit_per_minute.is_some(),
                &b.rate_limit(),
            ],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "No such API key"))?;
    audit_key(&*tx, &req, &admin, "api_keys.update", id).await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(row.get::<_, Value>(0)))
}

async fn change(
    state: &AppState,
    admin: &ServiceRole,
    req: &HttpRequest,
    id: &str,
    sql: &str,
    action: &str,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(id)?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    if tx.execute(sql, &[&id]).await.map_err(db)? == 0 {
        return Err(ApiError::new(ErrorCode::NotFound, "No such API key"));
    }
    audit_key(&*tx, req, admin, action, id).await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn delete(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change(
        &state,
        &admin,
        &req,
        &id,
        "DELETE FROM auth.api_keys WHERE id = $1",
        "api_keys.delete",
    )
    .await
}

async fn revoke(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change(
        &state,
        &admin,
        &req,
        &id,
        "UPDATE auth.api_keys SET revoked_at = coalesce(revoked_at, now()), updated_at = now() WHERE id = $1",
        "api_keys.revoke",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_route_group() {
        assert_eq!(
            required_scope(&Method::GET, "/rest/v1/items"),
            Some("rest:read")
        );
        assert_eq!(
            required_scope(&Method::POST, "/rest/v1/rpc/f"),
            Some("rest:write")
        );
        assert_eq!(
            required_scope(&Method::PUT, "/storage/v1/object/b/x"),
            Some("storage:write")
        );
        assert_eq!(required_scope(&Method::GET, "/api/v1/jobs"), Some("admin"));
        assert_eq!(
            required_scope(&Method::GET, "/auth/v1/admin/users"),
            Some("admin")
        );
        assert_eq!(required_scope(&Method::GET, "/auth/v1/user"), None);
        assert_eq!(required_scope(&Method::GET, "/health"), None);
    }
}
