//! Identity: who is calling, and the GoTrue-compatible service at `/auth/v1`. JWT
//! verification (`jwt`), the `AuthContext` extractor every handler uses, users, sessions and
//! refresh tokens (`service`), mail (`mail`), `fbk_` API keys (`api_keys`) and the routes
//! (`api`), TOTP MFA (`mfa`), OAuth2 / OIDC sign-in (`oauth`), phone sign-in (`phone`) and
//! its texted codes (`sms`).
//!
//! Must not: run SQL for REST/Storage/Realtime requests (they trust a token until `exp`, as
//! Supabase does), or accept a role outside the configured allow-list.

pub mod api;
pub mod api_keys;
pub mod hasher;
pub mod hooks;
pub mod jwt;
pub mod mail;
pub mod mfa;
pub mod oauth;
pub mod phone;
pub mod service;
pub mod sms;

/// Registers the auth job handlers: the mail sender and the SMS sender.
pub fn register_jobs(reg: &mut crate::jobs::Registry, state: &crate::app::AppState) {
    mail::register(reg, &state.config.auth);
    sms::register(reg, &state.config.auth.sms, state.outbound.clone());
}

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use jwt::{Claims, JwtError, JwtKeys, ANON_ROLE, SERVICE_ROLE};
use serde_json::Value;

/// The caller's identity for one request: the Postgres role to switch to and the claims that
/// `auth.uid()`, `auth.role()` and `auth.jwt()` read.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthContext {
    /// Postgres role (`anon`, `authenticated`, `service_role`, or an allowed extra role).
    pub role: String,
    /// JWT claims (`{"role":"anon"}` without a token); shared with the verified-token
    /// cache, so a request does not copy the map.
    pub claims: std::sync::Arc<Claims>,
    /// Whether a token was presented at all.
    pub has_token: bool,
    /// `claims` as JSON text, for `request.jwt.claims` (computed once per distinct token).
    pub claims_json: std::sync::Arc<str>,
}

impl AuthContext {
    /// The identity of a request without credentials.
    pub fn anon() -> Self {
        let mut claims = Claims::new();
        claims.insert("role".into(), Value::from(ANON_ROLE));
        AuthContext {
            role: ANON_ROLE.into(),
            claims: claims.into(),
            has_token: false,
            claims_json: std::sync::Arc::from(r#"{"role":"anon"}"#),
        }
    }

    /// Reads `Authorization: Bearer` (preferred, it carries the user's session) or else
    /// `apikey`. No credentials → anon; bad credentials → 401.
    pub fn from_headers(headers: &HeaderMap, keys: &JwtKeys) -> Result<Self, ApiError> {
        // UTF-8 checks of the bytes (a fast path for ASCII) instead of `HeaderValue::to_str`'s
        // byte-by-byte visible-ASCII loop: a user's token is ~0.6 KB, and that loop cost 11
        // instructions a byte on every request (callgrind, docs/benchmarks.md). Anything not
        // base64url fails verification anyway. The token is borrowed, never copied.
        let token = match headers.get(AUTHORIZATION) {
            Some(v) => {
                let v = std::str::from_utf8(v.as_bytes())
                    .map_err(|_| ApiError::invalid_jwt("Authorization header is not valid text"))?;
                let mut parts = v.splitn(2, ' ');
                let scheme = parts.next().unwrap_or_default();
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(ApiError::invalid_jwt(
                        "Authorization header must use the Bearer scheme",
                    ));
                }
                Some(parts.next().unwrap_or_default().trim())
            }
            None => headers
                .get("apikey")
                .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or_default().trim()),
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(AuthContext::anon());
        };
        if token.starts_with(api_keys::PREFIX) {
            // Resolved with a database lookup by the extractor (`api_keys::resolve`).
            return Err(ApiError::new(
                ErrorCode::InvalidApiKey,
                "API keys are resolved by the request extractor",
            ));
        }
        match keys.verify_cached(token) {
            Ok((claims, role, claims_json)) => Ok(AuthContext {
                role,
                claims,
                has_token: true,
                claims_json,
            }),
            Err(JwtError::RoleNotAllowed(r)) => Err(ApiError::new(
                ErrorCode::RoleNotAllowed,
                format!("JWT role {r:?} is not allowed"),
            )
            .with_header("WWW-Authenticate", "Bearer error=\"invalid_token\"")),
            Err(e) => Err(ApiError::invalid_jwt(e.to_string())),
        }
    }

    /// The service role bypasses RLS and may use admin routes.
    pub fn is_service_role(&self) -> bool {
        self.role == SERVICE_ROLE
    }

    /// Any role but anon (decides 401 vs 403 for permission errors, as PostgREST does).
    pub fn is_authenticated(&self) -> bool {
        self.role != ANON_ROLE
    }

    /// `sub` claim, when present.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// The API key (`fbk_…`) a request presents as `Authorization: Bearer` or else `apikey`, if
/// that credential is one. Looked at as bytes: a JWT is neither validated nor copied here.
fn presented_api_key(req: &HttpRequest) -> Option<String> {
    let h = req.headers();
    let raw = match h.get(AUTHORIZATION) {
        Some(v) => {
            let b = v.as_bytes();
            &b[b.iter().position(|&c| c == b' ')? + 1..]
        }
        None => h.get("apikey")?.as_bytes(),
    }
    .trim_ascii();
    if !raw.starts_with(api_keys::PREFIX.as_bytes()) {
        return None;
    }
    std::str::from_utf8(raw).ok().map(str::to_string)
}

impl FromRequest for AuthContext {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(ctx) = req.extensions().get::<AuthContext>() {
            let ctx = ctx.clone();
            return Box::pin(async move { Ok(ctx) });
        }
        let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
            return Box::pin(async { Err(ApiError::internal("AppState missing").into()) });
        };
        let req = req.clone();
        Box::pin(async move {
            let res = match presented_api_key(&req) {
                Some(key) => api_keys::resolve(&state, &key, req.method(), req.path()).await,
                None => AuthContext::from_headers(req.headers(), &state.jwt),
            };
            if let Ok(ctx) = &res {
                req.extensions_mut().insert(ctx.clone());
            }
            res.map_err(Into::into)
        })
    }
}

/// An `AuthContext` that is the service_role; admin routes take this, so they cannot run
/// without it.
#[derive(Debug, Clone)]
pub struct ServiceRole(pub AuthContext);

impl FromRequest for ServiceRole {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let ctx = AuthContext::from_request(req, payload);
        Box::pin(async move {
            let ctx = ctx.await?;
            if ctx.is_service_role() {
                Ok(ServiceRole(ctx))
            } else {
                Err(ApiError::new(
                    ErrorCode::ServiceRoleRequired,
                    "This route needs the service_role key",
                )
                .into())
            }
        })
    }
}
