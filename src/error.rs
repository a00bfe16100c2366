//! `ApiError`: the one table of error codes, the SQLSTATE → HTTP mapping, and one renderer per
//! surface (PostgREST for REST and every `/api/v1` route, GoTrue for `/auth/v1`, Storage for
//! `/storage/v1`).
//!
//! Handlers return `ApiError`; they never choose a body shape. `ResponseError` renders the
//! PostgREST shape, and the `observe` middleware in `app.rs` (`rerender_error`) re-renders for the Auth and
//! Storage surfaces, because only it sees the request path and headers. Responses are opaque:
//! an internal cause is logged with the request id, never sent.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};
use std::fmt;

/// Every error Fluxbase itself raises. Codes are stable and never reused
/// (`docs/error-codes.md` lists them; a test keeps the two in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// FB000: an unexpected server-side failure (details only in the log).
    Internal,
    /// FB001: no route matches the path.
    RouteNotFound,
    /// FB002: the path exists but not for this method.
    MethodNotAllowed,
    /// FB003: the request body is over `server.body_limit_bytes`.
    PayloadTooLarge,
    /// FB004: the request body or parameters are malformed.
    BadRequest,
    /// FB005: a resource named in the path does not exist.
    NotFound,
    /// FB006: too many requests (rate limit).
    RateLimited,
    /// FB007: the resource is not in a state that allows this.
    Conflict,
    /// FB100: the database cannot be reached.
    DatabaseUnavailable,
    /// FB101: the database is reachable but migrations are not applied.
    NotMigrated,
    /// PGRST301: the JWT is malformed, badly signed or expired.
    InvalidJwt,
    /// FB201: the JWT names a role that is not allowed.
    RoleNotAllowed,
    /// FB202: the route needs the service_role.
    ServiceRoleRequired,
    /// FB203: an `fbk_` API key is unknown, expired or revoked.
    InvalidApiKey,
    /// FB204: the API key lacks the scope the route needs.
    ApiKeyScope,
    /// FB300: the storage bucket does not exist (or is not public on a public route).
    NoSuchBucket,
    /// FB301: the storage object does not exist or RLS hides it.
    NoSuchKey,
    /// FB302: an object name is not acceptable (`..`, backslash, NUL, too long …).
    InvalidKey,
    /// FB303: a bucket name is not acceptable.
    InvalidBucketName,
    /// FB304: the object is larger than the bucket's or the server's upload limit.
    EntityTooLarge,
    /// FB305: the bucket does not accept this content type.
    InvalidMimeType,
    /// FB306: an object already exists at that name.
    KeyAlreadyExists,
    /// FB307: a bucket with that id already exists.
    BucketAlreadyExists,
    /// FB308: the bucket still holds objects.
    BucketNotEmpty,
    /// FB309: RLS refused the storage operation.
    StorageAccessDenied,
    /// FB310: a signed URL's token is malformed, badly signed or expired.
    InvalidSignedToken,
    /// FB311: a signed URL's token was issued for another object.
    InvalidSignature,
    /// FB312: the requested byte range cannot be served.
    InvalidRange,
}

/// One row of the code table.
pub struct CodeInfo {
    /// The `code` field of PostgREST-shaped bodies.
    pub code: &'static str,
    /// HTTP status.
    pub status: u16,
    /// GoTrue's `error_code` for the same condition.
    pub gotrue: &'static str,
    /// Storage's `error` name for the same condition.
    pub storage: &'static str,
    /// What it means (documentation).
    pub meaning: &'static str,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 28] = [
        ErrorCode::Internal,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::RateLimited,
        ErrorCode::Conflict,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::NotMigrated,
        ErrorCode::InvalidJwt,
        ErrorCode::RoleNotAllowed,
        ErrorCode::ServiceRoleRequired,
        ErrorCode::InvalidApiKey,
        ErrorCode::ApiKeyScope,
        ErrorCode::NoSuchBucket,
        ErrorCode::NoSuchKey,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidBucketName,
        ErrorCode::EntityTooLarge,
        ErrorCode::InvalidMimeType,
        ErrorCode::KeyAlreadyExists,
        ErrorCode::BucketAlreadyExists,
        ErrorCode::BucketNotEmpty,
        ErrorCode::StorageAccessDenied,
        ErrorCode::InvalidSignedToken,
        ErrorCode::InvalidSignature,
        ErrorCode::InvalidRange,
    ];

    /// Supabase Storage's legacy `error` field where it differs from the code
    /// (`internal/errors/codes.ts`: `error: 'not_found'` for NoSuchKey and so on).
    pub fn storage_error_name(self) -> Option<&'static str> {
        use ErrorCode::*;
        match self {
            NoSuchBucket => Some("Bucket not found"),
            NoSuchKey => Some("not_found"),
            InvalidBucketName => Some("Invalid Input"),
            EntityTooLarge => Some("Payload too large"),
            InvalidMimeType => Some("invalid_mime_type"),
            KeyAlreadyExists | BucketAlreadyExists => Some("Duplicate"),
            StorageAccessDenied => Some("Unauthorized"),
            InvalidRange => Some("invalid_range"),
            _ => None,
        }
    }

    /// The table row.
    pub fn info(self) -> CodeInfo {
        use ErrorCode::*;
        let (code, status, gotrue, storage, meaning) = match self {
            Internal => (
                "FB000",
                500,
                "unexpected_failure",
                "InternalError",
                "unexpected server-side failure; the cause is logged with the request id",
            ),
            RouteNotFound => (
                "FB001",
                404,
                "not_found",
                "NotFound",
                "no route matches the request path",
            ),
            MethodNotAllowed => (
                "FB002",
                405,
                "method_not_allowed",
                "MethodNotAllowed",
                "the path exists but not for this HTTP method",
            ),
            PayloadTooLarge => (
                "FB003",
                413,
                "request_too_large",
                "EntityTooLarge",
                "request body larger than server.body_limit_bytes",
            ),
            BadRequest => (
                "FB004",
                400,
                "validation_failed",
                "InvalidRequest",
                "malformed body, header or parameter",
            ),
            NotFound => (
                "FB005",
                404,
                "not_found",
                "NotFound",
                "the resource named in the path does not exist",
            ),
            RateLimited => (
                "FB006",
                429,
                "over_request_rate_limit",
                "SlowDown",
                "rate limit exceeded; see Retry-After",
            ),
            Conflict => (
                "FB007",
                409,
                "conflict",
                "InvalidState",
                "the resource is not in a state that allows this change",
            ),
            DatabaseUnavailable => (
                "FB100",
                503,
                "unexpected_failure",
                "DatabaseTimeout",
                "the database cannot be reached; retry later",
            ),
            NotMigrated => (
                "FB101",
                503,
                "unexpected_failure",
                "DatabaseError",
                "the database schema is not migrated yet",
            ),
            InvalidJwt => (
                "PGRST301",
                401,
                "bad_jwt",
                "InvalidJWT",
                "JWT malformed, wrongly signed, or expired",
            ),
            RoleNotAllowed => (
                "FB201",
                401,
                "bad_jwt",
                "InvalidJWT",
                "the JWT's role claim names a role that is not allowed",
            ),
            ServiceRoleRequired => (
                "FB202",
                403,
                "no_authorization",
                "AccessDenied",
                "the route needs the service_role key",
            ),
            InvalidApiKey => (
                "FB203",
                401,
                "bad_jwt",
                "InvalidJWT",
                "the fbk_ API key is unknown, expired or revoked",
            ),
            ApiKeyScope => (
                "FB204",
                403,
                "no_authorization",
                "AccessDenied",
                "the API key lacks the scope this route group needs",
            ),
            NoSuchBucket => (
                "FB300",
                404,
                "not_found",
                "NoSuchBucket",
                "storage bucket not found (or not public on /object/public)",
            ),
            NoSuchKey => (
                "FB301",
                404,
                "not_found",
                "NoSuchKey",
                "storage object not found, or hidden by RLS",
            ),
            InvalidKey => (
                "FB302",
                400,
                "validation_failed",
                "InvalidKey",
                "object name not acceptable (.., backslash, NUL, leading /, over 1024 bytes)",
            ),
            InvalidBucketName => (
                "FB303",
                400,
                "validation_failed",
                "InvalidBucketName",
                "bucket name not acceptable",
            ),
            EntityTooLarge => (
                "FB304",
                413,
                "request_too_large",
                "EntityTooLarge",
                "object larger than the bucket's file_size_limit or storage.file_size_limit_bytes",
            ),
            InvalidMimeType => (
                "FB305",
                415,
                "validation_failed",
                "InvalidMimeType",
                "content type not in the bucket's allowed_mime_types",
            ),
            KeyAlreadyExists => (
                "FB306",
                409,
                "conflict",
                "KeyAlreadyExists",
                "an object already exists at that name (upload without x-upsert, move, copy)",
            ),
            BucketAlreadyExists => (
                "FB307",
                409,
                "conflict",
                "BucketAlreadyExists",
                "a bucket with that id already exists",
            ),
            BucketNotEmpty => (
                "FB308",
                409,
                "conflict",
                "ResourceNotEmpty",
                "the bucket still holds objects; empty it first",
            ),
            StorageAccessDenied => (
                "FB309",
                403,
                "no_authorization",
                "AccessDenied",
                "RLS on storage.objects/storage.buckets refused the operation",
            ),
            InvalidSignedToken => (
                "FB310",
                400,
                "bad_jwt",
                "InvalidJWT",
                "signed URL token malformed, wrongly signed or expired",
            ),
            InvalidSignature => (
                "FB311",
                400,
                "bad_jwt",
                "InvalidSignature",
                "signed URL token issued for another object or operation",
            ),
            InvalidRange => (
                "FB312",
                416,
                "validation_failed",
                "InvalidRange",
                "Range header cannot be satisfied",
            ),
        };
        CodeInfo {
            code,
            status,
            gotrue,
            storage,
            meaning,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// PostgREST-style code: one of ours, a PGRST code, or a SQLSTATE.
    pub code: String,
    /// GoTrue `error_code`.
    pub gotrue_code: &'static str,
    /// Storage `code`.
    pub storage_error: &'static str,
    /// Storage's legacy `error` field when it differs from `code`.
    pub storage_name: Option<&'static str>,
    /// Human message.
    pub message: String,
    /// PostgREST `details`.
    pub details: Option<String>,
    /// PostgREST `hint`.
    pub hint: Option<String>,
    /// Extra response headers (e.g. `WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error from the code table with a specific message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let i = code.info();
        ApiError {
            status: StatusCode::from_u16(i.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: i.code.to_string(),
            gotrue_code: i.gotrue,
            storage_error: i.storage,
            storage_name: code.storage_error_name(),
            message: message.into(),
            details: None,
            hint: None,
            headers: Vec::new(),
        }
    }

    /// An internal failure: `cause` is logged, the client sees a generic message.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(ErrorCode::Internal, "Internal server error")
    }

    /// Adds `details`.
    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }

    /// Adds `hint`.
    pub fn with_hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// A 401 for a bad token, with the `WWW-Authenticate` challenge PostgREST sends.
    pub fn invalid_jwt(message: impl Into<String>) -> Self {
        let message = message.into();
        let challenge = format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            message.replace('"', "'")
        );
        ApiError::new(ErrorCode::InvalidJwt, message).with_header("WWW-Authenticate", challenge)
    }

    /// Maps a database error: SQLSTATE errors keep their code, message, detail and hint
    /// (PostgREST shows them, clients rely on them); connection failures become 503.
    /// `authenticated` picks 403 over 401 for insufficient privilege, as PostgREST does.
    pub fn from_db(e: &tokio_postgres::Error, authenticated: bool) -> Self {
        let Some(db) = e.as_db_error() else {
            // Lost connections are the database's absence; anything else (a row count or
            // type mismatch) is our bug, not an outage.
            let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
            if e.is_closed() || io {
                tracing::warn!(error = %e, "database connection error");
                return ApiError::new(ErrorCode::DatabaseUnavailable, "Database unavailable");
            }
            return ApiError::internal(e);
        };
        Self::from_db_parts(
            db.code().code(),
            db.message(),
            db.detail(),
            db.hint(),
            authenticated,
            &db,
        )
    }

    /// From an error of the hot path's own protocol client (`db::wire`), mapped exactly as
    /// [`ApiError::from_db`] maps tokio-postgres's.
    pub fn from_wire(e: &crate::db::wire::WireError, authenticated: bool) -> Self {
        use crate::db::wire::WireError;
        match e {
            WireError::Db(db) => Self::from_db_parts(
                &db.code,
                &db.message,
                db.detail.as_deref(),
                db.hint.as_deref(),
                authenticated,
                db,
            ),
            WireError::Io(_) | WireError::Timeout => {
                tracing::warn!(error = %e, "database connection error");
                ApiError::new(ErrorCode::DatabaseUnavailable, "Database unavailable")
            }
            WireError::Protocol(_) => ApiError::internal(e),
        }
    }

    fn from_db_parts(
        code: &str,
        message: &str,
        detail: Option<&str>,
        hint: Option<&str>,
        authenticated: bool,
        shown: &dyn std::fmt::Display,
    ) -> Self {
        let status = status_for_sqlstate(code, authenticated);
        if status >= 500 && !code.starts_with("PT") {
            tracing::error!(sqlstate = code, error = %shown, "database error");
        }
        let mut err = ApiError::new(ErrorCode::Internal, message);
        err.status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        err.code = code.to_string();
        err.details = detail.map(str::to_string);
        err.hint = hint.map(str::to_string);
        // A data exception (class 22: a value out of range, a bad format) is the caller's.
        err.gotrue_code = if code.starts_with("22") {
            "validation_failed"
        } else {
            "unexpected_failure"
        };
        err.storage_error = "DatabaseError";
        err
    }

    /// The PostgREST body `{code, details, hint, message}`.
    pub fn postgrest_body(&self) -> Value {
        json!({
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        })
    }

    fn base_response(&self) -> actix_web::HttpResponseBuilder {
        let mut b = HttpResponse::build(self.status);
        for (k, v) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                b.insert_header((*k, v));
            }
        }
        b
    }

    /// Renders for a surface.
    pub fn render(&self, surface: Surface) -> HttpResponse {
        let mut b = self.base_response();
        match surface {
            Surface::Rest => b.json(self.postgrest_body()),
            Surface::Auth { api_version } => match api_version {
                Some(v) => {
                    b.insert_header(("x-sb-error-code", self.gotrue_code));
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        b.insert_header((API_VERSION_HEADER, v));
                    }
                    b.json(json!({"code": self.gotrue_code, "message": self.message}))
                }
                None => b.json(json!({
                    "code": self.status.as_u16(),
                    "error_code": self.gotrue_code,
                    "msg": self.message,
                })),
            },
            Surface::Storage => {
                // Supabase Storage answers every error it raises with HTTP 400 (500 for
                // internal ones) and carries the real status in `statusCode`
                // (`http/error-handler.ts`, `StorageBackendError.userStatusCode`). Route
                // misses and rate limits come from the framework and gateway there, with
                // their real status; so do 5xx here (clients retry on them).
                let s = self.status.as_u16();
                let http = match s {
                    s if s >= 500 || s == 429 => s,
                    404 | 405 if self.code == "FB001" || self.code == "FB002" => s,
                    _ => 400,
                };
                b.status(StatusCode::from_u16(http).unwrap_or(StatusCode::BAD_REQUEST));
                b.json(json!({
                    "statusCode": s.to_string(),
                    "code": self.storage_error,
                    "error": self.storage_name.unwrap_or(self.storage_error),
                    "message": self.message,
                }))
            }
        }
    }
}

/// GoTrue's API version header; auth-js always sends it.
pub const API_VERSION_HEADER: &str = "X-Supabase-Api-Version";

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        self.render(Surface::Rest)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "cannot get a database connection");
        ApiError::new(ErrorCode::DatabaseUnavailable, "Database unavailable")
    }
}

/// Which body shape an error takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Surface {
    /// PostgREST `{code, details, hint, message}`: REST and all `/api/v1` routes.
    Rest,
    /// GoTrue: new shape when the client sent an API version, else the legacy one.
    Auth {
        /// The `X-Supabase-Api-Version` the client sent.
        api_version: Option<String>,
    },
    /// Supabase Storage `{statusCode, code, error, message}`.
    Storage,
}

impl Surface {
    /// The surface a request path belongs to.
    pub fn for_path(path: &str, api_version: Option<&str>) -> Surface {
        let under = |p: &str| crate::routes::under(path, p);
        if under("/auth/v1") || under("/api/v1/auth") {
            Surface::Auth {
                api_version: api_version.map(str::to_string),
            }
        } else if under("/storage/v1") || under("/api/v1/storage") {
            Surface::Storage
        } else {
            Surface::Rest
        }
    }

    /// The surface of a request.
    pub fn for_request(req: &actix_web::HttpRequest) -> Surface {
        let v = req
            .headers()
            .get(API_VERSION_HEADER)
            .and_then(|v| v.to_str().ok());
        Surface::for_path(req.path(), v)
    }
}

/// PostgREST's SQLSTATE → HTTP status table.
pub fn status_for_sqlstate(code: &str, authenticated: bool) -> u16 {
    // PTxyz raises a custom status (PostgREST convention for RAISE ... USING ERRCODE = 'PT402').
    if let Some(s) = code.strip_prefix("PT") {
        if let Ok(n) = s.parse::<u16>() {
            if (100..600).contains(&n) {
                return n;
            }
        }
    }
    match code {
        "23503" | "23505" => 409,
        "25006" => 405,
        "P0001" => 400,
        "42883" | "42P01" => 404,
        "42P17" => 500,
        "42501" => {
            if authenticated {
                403
            } else {
                401
            }
        }
        "53400" => 500,
        _ => match &code[..code.len().min(2)] {
            "08" | "53" => 503,
            "0L" | "0P" | "28" => 403,
            "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
            | "HV" | "P0" | "XX" => 500,
            _ => 400,
        },
    }
}

/// Standard content type of every JSON error.
pub fn is_json(resp: &HttpResponse) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table() {
        for (code, auth, want) in [
            ("23505", false, 409),
            ("23503", true, 409),
            ("42P01", false, 404),
            ("42501", false, 401),
            ("42501", true, 403),
            ("08006", false, 503),
            ("53300", false, 503),
            ("P0001", false, 400),
            ("PT418", false, 418),
            ("22P02", false, 400),
            ("XX000", false, 500),
            ("28P01", false, 403),
        ] {
            assert_eq!(status_for_sqlstate(code, auth), want, "{code}");
        }
    }

    #[test]
    fn surfaces_from_paths() {
        assert_eq!(
            Surface::for_path("/auth/v1/token", None),
            Surface::Auth { api_version: None }
        );
        assert_eq!(
            Surface::for_path("/api/v1/storage/bucket", None),
            Surface::Storage
        );
        assert_eq!(Surface::for_path("/authx", None), Surface::Rest);
        assert_eq!(Surface::for_path("/rest/v1/t", None), Surface::Rest);
    }

    #[test]
    fn codes_are_unique_and_documented() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/error-codes.md"))
                .unwrap();
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            let i = c.info();
            assert!(seen.insert(i.code), "duplicate {}", i.code);
            assert!(
                docs.contains(&format!("`{}`", i.code)),
                "docs/error-codes.md lacks {}",
                i.code
            );
        }
    }

    #[test]
    fn renderers() {
        let e = ApiError::new(ErrorCode::NotFound, "no such thing");
        let r = e.render(Surface::Storage);
        // Supabase Storage: HTTP 400, the real status in the body's statusCode.
        assert_eq!(r.status(), 400);
        let r = ApiError::new(ErrorCode::RouteNotFound, "no route").render(Surface::Storage);
        assert_eq!(r.status(), 404);
        let r = e.render(Surface::Auth {
            api_version: Some("2024-01-01".into()),
        });
        assert_eq!(r.headers().get("x-sb-error-code").unwrap(), "not_found");
        assert!(is_json(&r));
    }
}
