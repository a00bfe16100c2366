//! The PostgREST-compatible REST engine (`/rest/v1`, `/api/v1/tables`, `/api/v1/rpc`).
//!
//! The engine is a pipeline of named stages (`../shared/ARCHITECTURE.md` §3):
//! `parse` (HTTP inputs → [`parse::ApiRequest`]) → `plan` (names resolved against the schema
//! cache) → `sql` (one statement, JSON built in Postgres) → `execute` (the request
//! transaction) → `render` (status and headers; the body bytes pass through).
//!
//! What it must not do: `parse`, `plan` and `sql` never import actix-web or tokio-postgres,
//! never do IO and never read configuration on their own (they take what they need as
//! arguments), so they stay testable by plain table-driven unit tests; only `execute` talks
//! to Postgres and only the handler touches actix types.

pub mod execute;
pub mod handler;
pub mod openapi;
pub mod parse;
pub mod plan;
pub mod render;
pub mod sql;

pub use handler::configure;

/// An error of the REST surface, in PostgREST's terms (status, code, message, details, hint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestError {
    /// HTTP status.
    pub status: u16,
    /// PGRST code or SQLSTATE.
    pub code: String,
    /// Message.
    pub message: String,
    /// Details.
    pub details: Option<String>,
    /// Hint.
    pub hint: Option<String>,
}

impl RestError {
    /// An error.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        RestError {
            status,
            code: code.to_string(),
            message: message.into(),
            details: None,
            hint: None,
        }
    }

    /// With details.
    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }

    /// With a hint.
    pub fn with_hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

impl From<parse::ParseError> for RestError {
    fn from(e: parse::ParseError) -> Self {
        RestError {
            status: e.status(),
            code: e.code().to_string(),
            message: e.message(),
            details: e.details(),
            hint: e.hint(),
        }
    }
}

impl From<RestError> for crate::error::ApiError {
    fn from(e: RestError) -> Self {
        let mut a = crate::error::ApiError::new(crate::error::ErrorCode::BadRequest, e.message);
        a.status = actix_web::http::StatusCode::from_u16(e.status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
        a.code = e.code;
        a.details = e.details;
        a.hint = e.hint;
        a
    }
}
