//! The REST routes: thin handlers that feed the pipeline parse → plan → sql → execute → render.

use super::parse::{
    parse_request, Action, ApiRequest, CountPref, MediaType, ParseConfig, Payload, RequestInput,
    ReturnPref,
};
use super::plan::{self, Plan};
use super::render::{self, Rendered};
use super::sql::{self, BodyShape, CountSql, WriteKind};
use super::{execute, RestError};
use crate::app::AppState;
use crate::auth::AuthContext;
use crate::db::tx::RequestInfo;
use crate::error::ApiError;
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

/// Declares the REST routes and their aliases.
pub fn configure(reg: &mut Registry) {
    for m in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PATCH,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        reg.add(
            m.clone(),
            "/rest/v1/{tail:.*}",
            "rest",
            "PostgREST-compatible tables, views and RPC",
            Access::Key,
            rest,
        );
        reg.add(
            m,
            "/api/v1/tables/{schema}/{table}",
            "rest",
            "A table or view of a schema (alias of /rest/v1)",
            Access::Key,
            tables,
        );
    }
    for m in [Method::GET, Method::HEAD, Method::POST] {
        reg.add(
            m,
            "/api/v1/rpc/{function}",
            "rest",
            "Call a function (alias of /rest/v1/rpc)",
            Access::Key,
            rpc,
        );
    }
}

async fn rest(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    ctx: AuthContext,
) -> Result<HttpResponse, ApiError> {
    let segs: Vec<&str> = crate::routes::tail(&req)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    serve(&req, &body, &state, &ctx, &segs, None).await
}

async fn tables(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    ctx: AuthContext,
) -> Result<HttpResponse, ApiError> {
    let (schema, table) = (
        req.match_info().get("schema").unwrap_or(""),
        req.match_info().get("table").unwrap_or(""),
    );
    serve(&req, &body, &state, &ctx, &[table], Some(schema)).await
}

async fn rpc(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    ctx: AuthContext,
) -> Result<HttpResponse, ApiError> {
    let f = req.match_info().get("function").unwrap_or("");
    serve(&req, &body, &state, &ctx, &["rpc", f], None).await
}

async fn serve(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
    ctx: &AuthContext,
    segs: &[&str],
    path_schema: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    // No token at all: `rest.anon_role` decides (PostgREST's db-anon-role).
    let anon_ctx;
    let ctx = match state.config.rest.anon_role.as_str() {
        _ if ctx.has_token => ctx,
        "" => {
            return Err(RestError::new(401, "PGRST302", "Anonymous access is disabled").into());
        }
        role if role == ctx.role => ctx,
        role => {
            anon_ctx = anonymous_as(role);
            &anon_ctx
        }
    };
    // Borrowed from the request: no copy of any name or value. UTF-8 (an ASCII fast path)
    // rather than `to_str`'s byte-by-byte check, which cost ~11 instructions per byte of
    // every header (a user's token is ~600).
    let hdrs: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            std::str::from_utf8(v.as_bytes())
                .ok()
                .map(|v| (k.as_str(), v))
        })
        .collect();
    let query = req.query_string();
    let input = RequestInput {
        method: req.method().as_str(),
        path: segs,
        path_schema,
        query,
        headers: &hdrs,
        body,
    };
    let cfg = ParseConfig {
        schemas: state.config.rest.schemas.clone(),
        aggregates: state.config.rest.aggregates,
        plan: state.config.rest.plan_enabled,
        ..Default::default()
    };
    let mut api = parse_request(&input, &cfg).map_err(RestError::from)?;
    let cache = state.schema.get();
    if let Action::Info = api.action {
        return Ok(options(&api, &cache));
    }
    if let Action::Schema { .. } = api.action {
        return openapi(req, state, ctx, &api, &cache).await;
    }
    let max_rows = (state.config.rest.max_rows > 0).then_some(state.config.rest.max_rows);
    let plan = plan::plan(&mut api, &cache, max_rows)?;
    // `Accept: application/vnd.pgrst.plan`: the statement for the `for` media type is
    // explained instead of answered.
    let explain = execute::Explain::take(&mut api);
    let shape = |api: &ApiRequest, write: bool| {
        if write && api.preferences.return_ != Some(ReturnPref::Representation) {
            BodyShape::None
        } else {
            match api.accept {
                MediaType::Object {
                    nulls_stripped: true,
                } => BodyShape::ObjectStripped,
                MediaType::Object { .. } => BodyShape::Object,
                MediaType::ArrayStripped => BodyShape::ArrayStripped,
                MediaType::Csv => BodyShape::Csv,
                _ => BodyShape::Array,
            }
        }
    };
    // count=planned: the planner's estimate (an EXPLAIN in the same transaction);
    // count=estimated: exact up to rest.max_rows, the estimate beyond (exact when unlimited).
    let mut count = execute::Count::default();
    let count_sql = |r: &plan::ReadPlan, count: &mut execute::Count| match api.preferences.count {
        None => CountSql::None,
        Some(CountPref::Exact) => CountSql::Exact,
        Some(CountPref::Planned) => {
            count.explain = Some(sql::planned_count(r));
            CountSql::None
        }
        Some(CountPref::Estimated) => match max_rows {
            Some(m) => {
                count.explain = Some(sql::planned_count(r));
                count.exact_up_to = Some(i64::try_from(m).unwrap_or(i64::MAX));
                CountSql::UpTo(m)
            }
            None => CountSql::Exact,
        },
    };
    // A write that answers nothing but its row count, in one round trip on the wire client,
    // is sent as the plain DML (`sql::PLAIN_WRITE_SETTINGS`).
    let plain = match &plan {
        Plan::Insert(w) | Plan::Upsert(w) | Plan::Update(w) | Plan::Delete(w) => {
            state.wire.is_some()
                && shape(&api, true) == BodyShape::None
                && location_pk(&api, w).is_none()
                && w.returning.timezone.is_none()
                && execute::one_round_trip(&api, true)
                && explain.is_none()
        }
        _ => false,
    };
    // `response.status`/`response.headers` are read back only when some SQL of the
    // database names them (`sql::response_gucs`).
    let response = cache.reads_response_settings(state.config.rest.request_settings_always);
    let (stmt, is_write, scalar_void) = match &plan {
        Plan::Read(r) => {
            let c = count_sql(r, &mut count);
            // A function returning one row (not a set) answers that row as an object.
            let one_row =
                matches!(&r.source, plan::Source::Call(call) if !call.function.returns_set);
            let shape = match shape(&api, false) {
                BodyShape::Array if one_row => BodyShape::Object,
                BodyShape::ArrayStripped if one_row => BodyShape::ObjectStripped,
                s => s,
            };
            (sql::read(r, shape, c, response), false, false)
        }
        Plan::CallScalar(c) => (
            sql::call_scalar(c, response),
            false,
            c.function.return_type == "void",
        ),
        Plan::Insert(w) => {
            let kind = if w.on_conflict.is_some() {
                WriteKind::Upsert
            } else {
                WriteKind::Insert
            };
            (
                sql::write(
                    kind,
                    w,
                    body_json(&api),
                    shape(&api, true),
                    location_pk(&api, w),
                    plain,
                    response,
                ),
                true,
                false,
            )
        }
        Plan::Upsert(w) => (
            sql::write(
                WriteKind::Upsert,
                w,
                body_json(&api),
                shape(&api, true),
                None,
                plain,
                response,
            ),
            true,
            false,
        ),
        Plan::Update(w) => (
            sql::write(
                WriteKind::Update,
                w,
                body_json(&api),
                shape(&api, true),
                None,
                plain,
                response,
            ),
            true,
            false,
        ),
        Plan::Delete(w) => (
            sql::write(
                WriteKind::Delete,
                w,
                None,
                shape(&api, true),
                None,
                plain,
                response,
            ),
            true,
            false,
        ),
    };
    let location = match &plan {
        Plan::Insert(w) => location_pk(&api, w).map(|pk| (w.table.name.clone(), pk.to_vec())),
        _ => None,
    };
    let mut info = RequestInfo::from_request(req);
    if info.published.path() {
        info.path = rest_path(req.path(), segs.len());
    }
    info.pre_request = state.config.rest.pre_request_sql();
    if let Some(explain) = explain {
        let body = explain.run(&state.pool, ctx, &info, &api, &stmt).await?;
        return Ok(HttpResponse::Ok()
            .insert_header(("Content-Type", explain.content_type()))
            .body(body));
    }
    let outcome = execute::run(
        state,
        ctx,
        &info,
        &api,
        &stmt,
        &count,
        execute::Mode {
            read_only: api.action.read_only(),
            is_write,
            plain_write: plain,
            response_settings: response,
        },
    )
    .await;
    let outcome = match outcome {
        Ok(o) => o,
        // `RAISE sqlstate 'PGRST'`: the SQL chose the error body, status and headers.
        Err(e) if e.code == "PGRST" => return raised_response(&e),
        Err(e) => return Err(e),
    };
    let mut outcome = outcome;
    // PUT: the statement wrote nothing when the payload's key differs from the URL's.
    if matches!(&plan, Plan::Upsert(w) if w.must_match_filters) && outcome.n == 0 {
        return Err(RestError::new(
            400,
            "PGRST115",
            "Payload values do not match URL in primary key column(s)",
        )
        .into());
    }
    // `return=headers-only` on an insert: `Location: /table?pk=eq.value` of the first row,
    // as PostgREST answers; the statement put the key values in the body.
    let location = location.and_then(|(table, pk)| {
        let vals: Vec<Option<String>> =
            serde_json::from_str(&std::mem::take(&mut outcome.body)).ok()?;
        let mut q = String::new();
        for (c, v) in pk.iter().zip(vals) {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(&location_escape(c));
            q.push_str("=eq.");
            q.push_str(&location_escape(v.as_deref()?));
        }
        Some(format!("/{}{q}", location_escape(&table)))
    });
    // A page shortened by `rest.max_rows` is partial like a requested range (206 when the
    // total is known), as PostgREST restricts its top-level range.
    if max_rows.is_some_and(|m| api.range.limit.is_none_or(|l| l >= m)) {
        api.range_requested = true;
    }
    let total = outcome.total;
    let Rendered {
        status,
        mut headers,
        body,
    } = render::render(&api, outcome, scalar_void).map_err(|e| {
        // An unsatisfiable range still tells the total: `Content-Range: */total`.
        let mut a = ApiError::from(e);
        if let (416, Some(t)) = (a.status.as_u16(), total) {
            a.headers.push(("Content-Range", format!("*/{t}")));
        }
        a
    })?;
    // With several schemas (or one chosen by a profile header or the path), the answer
    // names its schema, as PostgREST does.
    if api.schema_explicit || state.config.rest.schemas.len() > 1 {
        headers.push(("Content-Profile".into(), api.schema.clone()));
    }
    if let Some(l) = location {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("location"))
        {
            headers.push(("Location".into(), l));
        }
    }
    let mut resp = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK),
    );
    for (k, v) in headers {
        resp.insert_header((k, v));
    }
    Ok(resp.body(body))
}

/// The answer to `RAISE sqlstate 'PGRST' USING message = '{"code", "message", "details",
/// "hint"}', detail = '{"status", "headers": {…}}'`, as PostgREST gives it: that body, that
/// status (default 400) and those headers. A message or detail that is not such JSON is 400
/// `PGRST121`.
fn raised_response(e: &ApiError) -> Result<HttpResponse, ApiError> {
    use serde_json::{Map, Value};
    let bad = || -> ApiError {
        RestError::new(
            400,
            "PGRST121",
            "Could not parse JSON in the RAISE SQLSTATE 'PGRST' error",
        )
        .with_details(format!(
            "Invalid JSON value for MESSAGE: '{}'; for DETAIL: '{}'",
            e.message,
            e.details.as_deref().unwrap_or("")
        ))
        .into()
    };
    let body: Map<String, Value> = serde_json::from_str(&e.message).map_err(|_| bad())?;
    let meta: Map<String, Value> = match e.details.as_deref() {
        None | Some("") => Map::new(),
        Some(d) => serde_json::from_str(d).map_err(|_| bad())?,
    };
    let status = match meta.get("status") {
        None => 400,
        Some(s) => s
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..600).contains(n))
            .ok_or_else(bad)?,
    };
    let field = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
    let out = serde_json::json!({
        "code": field("code"),
        "message": field("message"),
        "details": field("details"),
        "hint": field("hint"),
    });
    let mut resp =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).map_err(|_| bad())?);
    resp.content_type("application/json; charset=utf-8");
    if let Some(h) = meta.get("headers") {
        let h = h.as_object().ok_or_else(bad)?;
        for (k, v) in h {
            let v = v.as_str().ok_or_else(bad)?;
            let name =
                actix_web::http::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?;
            let value = actix_web::http::header::HeaderValue::from_str(v).map_err(|_| bad())?;
            resp.insert_header((name, value));
        }
    }
    Ok(resp.body(out.to_string()))
}

/// The identity of a request without a token under `rest.anon_role`.
/// `request.path` as PostgREST sets it: the path below the REST root (`/rpc/f`, `/films`), as
/// sent (still percent-encoded), whichever mount (`/rest/v1`, `/api/v1/…`) was used. `segs`
/// path segments make the resource.
fn rest_path(full: &str, segs: usize) -> String {
    // The last `segs` non-empty segments, each after one '/' (no intermediate Vec or
    // `format!`: this runs for every REST request).
    let mut parts: Vec<&str> = full
        .rsplit('/')
        .filter(|s| !s.is_empty())
        .take(segs)
        .collect();
    parts.reverse();
    let mut out = String::with_capacity(full.len() + 1);
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn anonymous_as(role: &str) -> AuthContext {
    let mut claims = crate::auth::jwt::Claims::new();
    claims.insert("role".into(), serde_json::Value::from(role));
    let json = serde_json::Value::Object(claims.clone()).to_string();
    AuthContext {
        role: role.to_string(),
        claims: claims.into(),
        has_token: false,
        claims_json: std::sync::Arc::from(json.as_str()),
    }
}

/// The primary key to put in `Location`: inserts with `return=headers-only` into a table
/// that has one.
fn location_pk<'a>(api: &ApiRequest, w: &'a plan::WritePlan) -> Option<&'a [String]> {
    (api.preferences.return_ == Some(ReturnPref::HeadersOnly) && !w.table.primary_key.is_empty())
        .then_some(w.table.primary_key.as_slice())
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a name or value in
/// `Location`'s query string).
fn location_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The write payload as JSON text (CSV rows and form fields become objects of strings).
fn body_json(api: &ApiRequest) -> Option<String> {
    match &api.payload {
        Some(Payload::Json(j)) => Some(j.raw.clone()),
        Some(Payload::Csv(c)) => {
            let rows: Vec<serde_json::Value> = c
                .rows
                .iter()
                .map(|r| {
                    serde_json::Value::Object(
                        c.columns
                            .iter()
                            .zip(r.iter())
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v.clone()
                                        .map(serde_json::Value::from)
                                        .unwrap_or(serde_json::Value::Null),
                                )
                            })
                            .collect(),
                    )
                })
                .collect();
            Some(serde_json::Value::Array(rows).to_string())
        }
        Some(Payload::Form(pairs)) => Some(
            serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                    .collect(),
            )
            .to_string(),
        ),
        _ => None,
    }
}

/// `OPTIONS`: the methods a relation (or function) accepts, in `Allow`, as PostgREST answers.
/// (CORS preflights never get here: the CORS middleware answers them.)
/// `GET /rest/v1/`: the Swagger 2.0 document of the schema, as the caller's role sees it.
async fn openapi(
    req: &HttpRequest,
    state: &AppState,
    ctx: &AuthContext,
    api: &ApiRequest,
    cache: &crate::schema::SchemaCache,
) -> Result<HttpResponse, ApiError> {
    let info = RequestInfo::from_request(req);
    let catalog = execute::openapi_catalog(&state.pool, ctx, &info, &api.schema).await?;
    let conn = req.connection_info();
    let server = super::openapi::Server::new(
        &state.config.server.public_url,
        conn.scheme(),
        conn.host(),
        "/rest/v1",
    );
    Ok(HttpResponse::Ok()
        .content_type("application/openapi+json; charset=utf-8")
        .body(super::openapi::render(
            cache,
            &api.schema,
            &catalog,
            &server,
        )))
}

fn options(api: &ApiRequest, cache: &crate::schema::SchemaCache) -> HttpResponse {
    use super::parse::Target;
    let allow = match &api.target {
        Target::Relation(name) => match cache.table(&api.schema, name) {
            Some(t) => {
                let mut m = vec!["OPTIONS", "GET", "HEAD"];
                if t.insertable {
                    m.push("POST");
                    m.push("PUT");
                }
                if t.updatable {
                    m.push("PATCH");
                }
                if t.deletable {
                    m.push("DELETE");
                }
                m.join(",")
            }
            None => "OPTIONS,GET,HEAD".into(),
        },
        Target::Routine(_) => "OPTIONS,GET,HEAD,POST".into(),
        Target::Root => "OPTIONS,GET,HEAD".into(),
    };
    HttpResponse::Ok().insert_header(("Allow", allow)).finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn location_values_are_percent_encoded() {
        assert_eq!(
            super::location_escape("a b&c=d/é~_-."),
            "a%20b%26c%3Dd%2F%C3%A9~_-."
        );
        assert_eq!(super::location_escape("42"), "42");
    }

    #[test]
    fn request_path_is_below_the_rest_root() {
        assert_eq!(super::rest_path("/rest/v1/rpc/f", 2), "/rpc/f");
        assert_eq!(super::rest_path("/api/v1/rpc/f", 2), "/rpc/f");
        assert_eq!(super::rest_path("/api/v1/tables/public/films", 1), "/films");
        assert_eq!(super::rest_path("/rest/v1/caf%C3%A9", 1), "/caf%C3%A9");
        assert_eq!(super::rest_path("/rest/v1/", 0), "/");
    }
}
