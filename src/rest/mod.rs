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

/// A Swagger 2.0 description of the exposed schema's relations (`GET /rest/v1/`), as
/// PostgREST serves it: one path per table or view, one definition per row type.
pub fn render_openapi(cache: &crate::schema::SchemaCache, schema: &str) -> String {
    use serde_json::{json, Map, Value};
    let mut paths = Map::new();
    let mut defs = Map::new();
    let mut tables: Vec<&crate::schema::Table> = cache
        .tables
        .values()
        .map(|t| &**t)
        .filter(|t| t.schema == schema)
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tables {
        let mut ops = Map::new();
        ops.insert(
            "get".into(),
            json!({"tags": [t.name], "responses": {"200": {"description": "OK"}}}),
        );
        if t.insertable {
            ops.insert(
                "post".into(),
                json!({"tags": [t.name], "responses": {"201": {"description": "Created"}}}),
            );
        }
        if t.updatable {
            ops.insert(
                "patch".into(),
                json!({"tags": [t.name], "responses": {"204": {"description": "No Content"}}}),
            );
        }
        if t.deletable {
            ops.insert(
                "delete".into(),
                json!({"tags": [t.name], "responses": {"204": {"description": "No Content"}}}),
            );
        }
        paths.insert(format!("/{}", t.name), Value::Object(ops));
        let props: Map<String, Value> = t
            .columns
            .iter()
            .map(|c| (c.name.clone(), json!({"format": c.type_name})))
            .collect();
        let required: Vec<&str> = t
            .columns
            .iter()
            .filter(|c| !c.nullable && c.default.is_none() && !c.generated)
            .map(|c| c.name.as_str())
            .collect();
        defs.insert(
            t.name.clone(),
            json!({"type": "object", "properties": props, "required": required, "description": t.description}),
        );
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Fluxbase REST", "version": env!("CARGO_PKG_VERSION")},
        "basePath": "/",
        "schemes": ["http", "https"],
        "consumes": ["application/json", "text/csv"],
        "produces": ["application/json", "application/vnd.pgrst.object+json", "text/csv"],
        "paths": paths,
        "definitions": defs,
    })
    .to_string()
}
