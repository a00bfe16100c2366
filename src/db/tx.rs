//! The request transaction: every API request that touches user data runs in one
//! transaction that first switches to the caller's role and publishes the claims.
//!
//! `BEGIN`, the role/claims statement and the first query are pipelined: one round trip.
//! The role is set by its own statement because `set_config('role', …)` inside the query
//! itself would not change the permissions that query runs with.

use crate::auth::AuthContext;
use crate::error::ApiError;
use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

/// The request settings published besides the role and the claims, in the order their
/// values follow the claims in every setup statement.
const OPTIONAL_SETTINGS: [&str; 4] = [
    "request.method",
    "request.path",
    "request.headers",
    "request.cookies",
];

/// Which of [`OPTIONAL_SETTINGS`] a request publishes (bit `i` for setting `i`). Each
/// `set_config` costs Postgres ~5k instructions per request (a quarter of a single-row
/// GET's setup, counted with `bench/pg_ir.sh`), so a setting that no SQL of the database
/// names is not published (`SchemaCache::request_settings`, unless
/// `rest.request_settings_always`). The role and `request.jwt.claims` are always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published(u8);

impl Published {
    /// Every setting.
    pub const ALL: Published = Published(0b1111);

    /// From whether `request.method`, `request.path`, `request.headers` and
    /// `request.cookies` are published.
    pub fn new(method: bool, path: bool, headers: bool, cookies: bool) -> Published {
        Published(method as u8 | (path as u8) << 1 | (headers as u8) << 2 | (cookies as u8) << 3)
    }

    /// Whether `OPTIONAL_SETTINGS[i]` is published.
    pub fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    /// Whether `request.path` is published (`OPTIONAL_SETTINGS[1]`).
    pub fn path(self) -> bool {
        self.has(1)
    }

    /// Whether `request.headers` is published (`OPTIONAL_SETTINGS[2]`).
    pub fn headers(self) -> bool {
        self.has(2)
    }

    /// Whether `request.cookies` is published (`OPTIONAL_SETTINGS[3]`).
    pub fn cookies(self) -> bool {
        self.has(3)
    }
}

impl Default for Published {
    fn default() -> Self {
        Published::ALL
    }
}

/// `, set_config('request.jwt.claims', $first, true)` and the published optional settings
/// with the parameters that follow.
fn push_settings_sql(out: &mut String, published: Published, first: usize) {
    use std::fmt::Write;
    let _ = write!(out, ", set_config('request.jwt.claims', ${first}, true)");
    let mut n = first;
    for (i, name) in OPTIONAL_SETTINGS.iter().enumerate() {
        if published.has(i) {
            n += 1;
            let _ = write!(out, ", set_config('{name}', ${n}, true)");
        }
    }
}

/// The setup statements for one [`Published`] set.
struct SetupSql {
    /// tokio-postgres path: `SELECT set_config('role', $1, true), …` (after a `BEGIN`).
    tokio: String,
    /// The wire client's setup, for writes.
    wire: String,
    /// The same for a read-only request that is not merged (one with an extra statement),
    /// where no `BEGIN READ ONLY` opens the (implicit) transaction: making it read-only is
    /// always allowed, even after it began.
    wire_read_only: String,
}

/// The wire setups set the role for the session (not the transaction) and only when the
/// connection does not already run as it: the next request on the connection usually wants
/// the same role, and a role set per transaction costs Postgres its set, its reset at commit
/// and the scan for reportable settings that follows (~5k of ~180k instructions per
/// single-row GET, counted under callgrind). Every such setup compares `current_user` first,
/// so a role left behind (by the previous request, or by a function that reset or changed
/// the role for the session) is always replaced; a failed transaction reverts the change,
/// which the next comparison sees too. No column comes back (the values would only be sent
/// back).
fn setup_sql(published: Published) -> &'static SetupSql {
    static ALL: std::sync::OnceLock<Vec<SetupSql>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        (0..16u8)
            .map(|bits| {
                let p = Published(bits);
                let mut settings = String::new();
                push_settings_sql(&mut settings, p, 2);
                let wire = |tail: &str| {
                    format!(
                        "SELECT FROM (SELECT CASE WHEN current_user::text IS DISTINCT FROM $1 \
                         THEN set_config('role', $1, false) END{settings}{tail}) _fx_setup"
                    )
                };
                SetupSql {
                    tokio: format!("SELECT set_config('role', $1, true){settings}"),
                    wire: wire(""),
                    wire_read_only: wire(", set_config('transaction_read_only', 'on', true)"),
                }
            })
            .collect()
    });
    &all[usize::from(published.0 & 0b1111)]
}

/// Prepared statements kept per connection before the cache is reset.
pub const STATEMENT_CACHE_MAX: usize = 512;

/// Request facts published to SQL (`current_setting('request.method')` …), as PostgREST does.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// HTTP method.
    pub method: String,
    /// Request path, for `request.path`: empty when that setting is not published.
    pub path: String,
    /// Request headers as a JSON object (lower-case names).
    pub headers_json: String,
    /// Cookies as a JSON object.
    pub cookies_json: String,
    /// The request id (for the slow-query log).
    pub request_id: String,
    /// `log.slow_query_ms` of the app (0 = never log).
    pub slow_query_ms: u64,
    /// The request's trace span, when it is traced (statements become child spans).
    pub trace: Option<crate::otlp::Parent>,
    /// Which optional request settings the setup publishes (the others are left empty here).
    pub published: Published,
    /// `rest.pre_request`'s call (`RestConfig::pre_request_sql`), run after the setup and
    /// before the statement; set by the REST handler only.
    pub pre_request: Option<String>,
}

/// Appends `s` escaped as the inside of a JSON string (RFC 8259: `"`, `\\` and control
/// characters); one pass, no allocation, for the hot path of every request.
fn push_json_escaped(out: &mut String, s: &str) {
    // Header values almost never need escaping (tokens, keys, user agents): check the
    // whole value first with a branch-free fold the compiler vectorises, and copy it as is.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

impl RequestInfo {
    /// Facts from an actix request; header values that are not text are skipped.
    pub fn from_request(req: &actix_web::HttpRequest) -> Self {
        let state = req.app_data::<actix_web::web::Data<crate::app::AppState>>();
        let published = match state {
            Some(s) => s
                .schema
                .get()
                .published_settings(s.config.rest.request_settings_always),
            None => Published::ALL,
        };
        let slow_query_ms = state.map_or(0, |s| s.config.log.slow_query_ms);
        // Written directly (no intermediate `Value`): this runs on every request. Header
        // names are lower-case ASCII; values are JSON-escaped by `push_json_escaped`.
        let mut headers = String::new();
        if published.headers() {
            headers.reserve(256);
            headers.push('{');

            for (k, v) in req.headers() {
                // UTF-8 check rather than `HeaderValue::to_str` (visible ASCII, byte by byte:
                // ~3% of a single-row GET's instructions); control characters are escaped below.
                if let Ok(v) = std::str::from_utf8(v.as_bytes()) {
                    if headers.len() > 1 {
                        headers.push(',');
                    }
                    headers.push('"');
                    headers.push_str(k.as_str());
                    headers.push_str("\":\"");
                    push_json_escaped(&mut headers, v);
                    headers.push('"');
                }
            }
            headers.push('}');
        }
        // Most API calls send no cookie: then nothing is parsed or built (empty means `{}`).
        let cookies_json =
            if published.cookies() && req.headers().contains_key(actix_web::http::header::COOKIE) {
                let mut cookies = serde_json::Map::new();
                if let Ok(jar) = req.cookies() {
                    for c in jar.iter() {
                        cookies.insert(c.name().to_string(), serde_json::Value::from(c.value()));
                    }
                }
                serde_json::Value::Object(cookies).to_string()
            } else {
                String::new()
            };
        use actix_web::HttpMessage;
        let request_id = req
            .extensions()
            .get::<crate::app::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let trace = req.extensions().get::<crate::otlp::Parent>().cloned();
        RequestInfo {
            trace,
            request_id,
            slow_query_ms,
            method: req.method().as_str().to_owned(),
            // Only a published `request.path` reads it (the REST handler replaces it with
            // the path below its prefix).
            path: if published.path() {
                req.path().to_string()
            } else {
                String::new()
            },
            headers_json: headers,
            cookies_json,
            published,
            pre_request: None,
        }
    }
}

/// What `RequestTx::pipelined_wire` got back: the statement's rows and the row count of its
/// command tag, and the rows of the extra statement, if one was sent.
#[derive(Debug, Default)]
pub struct WireOutcome {
    pub rows: Vec<super::wire::Row>,
    pub affected: u64,
    pub extra: Option<Vec<super::wire::Row>>,
}

/// An open request transaction. Commit or roll back explicitly; if dropped open (a panic or
/// a cancelled request), the connection is discarded instead of returned to the pool, so
/// the server rolls the transaction back.
pub struct RequestTx {
    client: Option<Object>,
    authenticated: bool,
}

/// A pooled connection with the request transaction's three statements prepared (cached per
/// connection): `BEGIN` (`READ ONLY` when `read_only`), the role/claims setup and `sql`.
/// The request's connection and its prepared `BEGIN`, setup, pre-request call (when
/// `rest.pre_request` is set) and statement.
type Prepared = (Object, Statement, Statement, Option<Statement>, Statement);

async fn prepared(
    pool: &Pool,
    read_only: bool,
    info: &RequestInfo,
    sql: &str,
    dberr: impl Fn(tokio_postgres::Error) -> ApiError + Copy,
) -> Result<Prepared, ApiError> {
    let client = pool.get().await?;
    // Prepared statements are cached per connection; REST generates many shapes, so the
    // cache is emptied when it grows past a bound instead of growing without one.
    if client.statement_cache.size() > STATEMENT_CACHE_MAX {
        client.statement_cache.clear();
    }
    let begin = client
        .prepare_cached(if read_only {
            "BEGIN READ ONLY"
        } else {
            "BEGIN"
        })
        .await
        .map_err(dberr)?;
    let setup = client
        .prepare_cached(&setup_sql(info.published).tokio)
        .await
        .map_err(dberr)?;
    let pre = match &info.pre_request {
        Some(p) => Some(client.prepare_cached(p).await.map_err(dberr)?),
        None => None,
    };
    let stmt = client.prepare_cached(sql).await.map_err(dberr)?;
    Ok((client, begin, setup, pre, stmt))
}

/// Runs the pre-request call when there is one (polled beside the others: pipelined).
async fn run_pre(client: &Object, pre: Option<&Statement>) -> Result<(), tokio_postgres::Error> {
    match pre {
        Some(p) => client.execute(p, &[]).await.map(drop),
        None => Ok(()),
    }
}

/// The setup statement's values: the role, the claims and the published optional
/// settings (the first `.1` of the array).
fn setup_values<'a>(ctx: &'a AuthContext, info: &'a RequestInfo) -> ([&'a str; 6], usize) {
    let cookies = if info.cookies_json.is_empty() {
        "{}"
    } else {
        info.cookies_json.as_str()
    };
    let optional = [
        info.method.as_str(),
        info.path.as_str(),
        info.headers_json.as_str(),
        cookies,
    ];
    let mut v = [""; 6];
    v[0] = &ctx.role;
    v[1] = &ctx.claims_json;
    let mut n = 2;
    for (i, value) in optional.into_iter().enumerate() {
        if info.published.has(i) {
            v[n] = value;
            n += 1;
        }
    }
    (v, n)
}

impl RequestTx {
    /// Begins the transaction as `ctx` and runs `sql` in the same round trip.
    pub async fn begin_with(
        pool: &Pool,
        ctx: &AuthContext,
        info: &RequestInfo,
        read_only: bool,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(RequestTx, Vec<Row>), ApiError> {
        let authenticated = ctx.is_authenticated();
        let dberr = |e: tokio_postgres::Error| ApiError::from_db(&e, authenticated);
        let (client, begin, setup, pre, stmt) = prepared(pool, read_only, info, sql, dberr).await?;
        let (values, n) = setup_values(ctx, info);
        let setup_params: Vec<&(dyn ToSql + Sync)> = values[..n]
            .iter()
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        // Polled together, tokio-postgres writes them all before reading: one round trip.
        let started = std::time::Instant::now();
        let (b, s, p, q) = tokio::join!(
            client.execute(&begin, &[]),
            client.execute(&setup, &setup_params),
            run_pre(&client, pre.as_ref()),
            client.query(&stmt, params)
        );
        let took = started.elapsed();
        let kind = if read_only { "read" } else { "write" };
        crate::metrics::observe_query(kind, sql, took, &info.request_id, info.slow_query_ms);
        if let Some(t) = &info.trace {
            t.statement(kind, sql, took);
        }
        let mut tx = RequestTx {
            client: Some(client),
            authenticated,
        };
        if let Err(e) = b.and(s).map(drop).and(p) {
            tx.abort().await;
            return Err(dberr(e));
        }
        match q {
            Ok(rows) => Ok((tx, rows)),
            Err(e) => {
                tx.abort().await;
                Err(dberr(e))
            }
        }
    }

    /// A read-only request in ONE round trip: `BEGIN READ ONLY`, the role/claims setup, the
    /// statement and `COMMIT` are pipelined. Committing a read-only transaction before
    /// looking at its result is safe: it changed nothing.
    pub async fn read_only(
        pool: &Pool,
        ctx: &AuthContext,
        info: &RequestInfo,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ApiError> {
        Self::read_only_with(pool, ctx, info, sql, params, None)
            .await
            .map(|(rows, _)| rows)
    }

    /// `read_only` with a second statement in the same pipeline and snapshot (e.g. the
    /// `EXPLAIN` of a planned count); its rows come back second.
    pub async fn read_only_with(
        pool: &Pool,
        ctx: &AuthContext,
        info: &RequestInfo,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        extra: Option<(&str, &[&(dyn ToSql + Sync)])>,
    ) -> Result<(Vec<Row>, Option<Vec<Row>>), ApiError> {
        Self::pipelined(pool, ctx, info, true, sql, params, extra).await
    }

    /// A whole transaction in ONE round trip: `BEGIN` (`READ ONLY` when `read_only`), the
    /// role/claims setup, the statement, the optional `extra` statement and `COMMIT`,
    /// pipelined. For a write this is only right when nothing has to be decided after seeing
    /// its result (no rollback on a row count, no `tx=rollback`): a statement that fails
    /// aborts the transaction, and the pipelined `COMMIT` then rolls it back, so nothing is
    /// half-written either way. A `COMMIT` that fails (a deferred constraint) is returned
    /// as the error.
    pub async fn pipelined(
        pool: &Pool,
        ctx: &AuthContext,
        info: &RequestInfo,
        read_only: bool,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        extra: Option<(&str, &[&(dyn ToSql + Sync)])>,
    ) -> Result<(Vec<Row>, Option<Vec<Row>>), ApiError> {
        let authenticated = ctx.is_authenticated();
        let dberr = |e: tokio_postgres::Error| ApiError::from_db(&e, authenticated);
        let (client, begin, setup, pre, stmt) = prepared(pool, read_only, info, sql, dberr).await?;
        let extra_stmt = match extra {
            Some((text, p)) => Some((client.prepare_cached(text).await.map_err(dberr)?, p)),
            None => None,
        };
        let commit = client.prepare_cached("COMMIT").await.map_err(dberr)?;
        let (values, n) = setup_values(ctx, info);
        let setup_params: Vec<&(dyn ToSql + Sync)> = values[..n]
            .iter()
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        let started = std::time::Instant::now();
        let (b, s, p, q, x, c) = tokio::join!(
            client.execute(&begin, &[]),
            client.execute(&setup, &setup_params),
            run_pre(&client, pre.as_ref()),
            client.query(&stmt, params),
            async {
                match &extra_stmt {
                    Some((st, p)) => Some(client.query(st, p).await),
                    None => None,
                }
            },
            client.execute(&commit, &[])
        );
        let took = started.elapsed();
        let kind = if read_only { "read" } else { "write" };
        crate::metrics::observe_query(kind, sql, took, &info.request_id, info.slow_query_ms);
        if let Some(t) = &info.trace {
            t.statement(kind, sql, took);
        }
        // A failed statement turns the COMMIT into a rollback; the session is clean either way.
        let first_error = b.err().or(s.err()).or(p.err());
        let x = x.transpose();
        match (first_error, q, x, c) {
            (Some(e), _, _, _) => Err(dberr(e)),
            (None, Err(e), _, _) | (None, Ok(_), Err(e), _) => Err(dberr(e)),
            (None, Ok(_), Ok(_), Err(e)) => {
                drop(Object::take(client));
                Err(dberr(e))
            }
            (None, Ok(rows), Ok(extra_rows), Ok(_)) => Ok((rows, extra_rows)),
        }
    }

    /// [`RequestTx::pipelined`] on the hot path's own protocol client (`db::wire`): the
    /// role/claims setup, the statement and the optional `extra` statement in one pipeline
    /// with ONE `Sync`, so they run as one implicit transaction — no `BEGIN`/`COMMIT`, and
    /// one `ReadyForQuery` instead of four. Same outcomes: a failing statement leaves
    /// nothing behind, a failing commit (a deferred constraint) is the error. Parameters and
    /// result columns are text.
    pub async fn pipelined_wire(
        wire: &super::wire::Pool,
        ctx: &AuthContext,
        info: &RequestInfo,
        read_only: bool,
        sql: &str,
        params: &[Option<String>],
        extra: Option<(&str, &[Option<String>])>,
    ) -> Result<WireOutcome, ApiError> {
        use super::wire::Query;
        let authenticated = ctx.is_authenticated();
        let werr = |e: super::wire::WireError| ApiError::from_wire(&e, authenticated);
        let mut conn = wire.get().await.map_err(werr)?;
        let (values, n) = setup_values(ctx, info);
        let setup = values.map(Some);
        let setup = &setup[..n];
        let params: Vec<Option<&str>> = params.iter().map(Option::as_deref).collect();
        if read_only && extra.is_none() && info.pre_request.is_none() {
            let started = std::time::Instant::now();
            let r = merged_read(&mut conn, &ctx.role, sql, params, setup, info.published).await;
            observe_wire("read", sql, started.elapsed(), info);
            let main = r.map_err(werr)?;
            return Ok(WireOutcome {
                rows: main.rows,
                affected: main.affected,
                extra: None,
            });
        }
        let extra_params: Option<Vec<Option<&str>>> =
            extra.map(|(_, p)| p.iter().map(Option::as_deref).collect());
        let mut queries = Vec::with_capacity(4);
        queries.push(Query {
            sql: if read_only {
                &setup_sql(info.published).wire_read_only
            } else {
                &setup_sql(info.published).wire
            },
            params: setup,
        });
        // `rest.pre_request`: after the setup (role, claims, settings, read-only), before
        // the statement, in the same implicit transaction.
        if let Some(pre) = &info.pre_request {
            queries.push(Query {
                sql: pre,
                params: &[],
            });
        }
        queries.push(Query {
            sql,
            params: &params,
        });
        if let (Some((text, _)), Some(p)) = (extra, extra_params.as_deref()) {
            queries.push(Query {
                sql: text,
                params: p,
            });
        }
        let started = std::time::Instant::now();
        let r = conn.pipeline(&queries).await;
        observe_wire(
            if read_only { "read" } else { "write" },
            sql,
            started.elapsed(),
            info,
        );
        // The setup set the role unless it failed; a statement of this request may still
        // have changed it for the session, which the next read's guard would catch.
        conn.set_role(r.is_ok().then_some(ctx.role.as_str()));
        let before = 1 + usize::from(info.pre_request.is_some());
        let mut results = r.map_err(werr)?.into_iter().skip(before);
        let main = results.next().unwrap_or_default();
        Ok(WireOutcome {
            rows: main.rows,
            affected: main.affected,
            extra: results.next().map(|d| d.rows),
        })
    }

    /// Another statement in the same transaction.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ApiError> {
        let client = self.client()?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| ApiError::from_db(&e, self.authenticated))?;
        client
            .query(&stmt, params)
            .await
            .map_err(|e| ApiError::from_db(&e, self.authenticated))
    }

    /// Commits.
    pub async fn commit(mut self) -> Result<(), ApiError> {
        let r = self.client()?.batch_execute("COMMIT").await;
        self.finish(r)
    }

    /// Rolls back (`Prefer: tx=rollback`, or after an error).
    pub async fn rollback(mut self) -> Result<(), ApiError> {
        let r = self.client()?.batch_execute("ROLLBACK").await;
        self.finish(r)
    }

    fn client(&self) -> Result<&Object, ApiError> {
        self.client
            .as_ref()
            .ok_or_else(|| ApiError::internal("request transaction already finished"))
    }

    fn finish(&mut self, r: Result<(), tokio_postgres::Error>) -> Result<(), ApiError> {
        match r {
            Ok(()) => {
                // Back to the pool, clean.
                self.client.take();
                Ok(())
            }
            Err(e) => {
                if let Some(c) = self.client.take() {
                    drop(Object::take(c));
                }
                Err(ApiError::from_db(&e, self.authenticated))
            }
        }
    }

    async fn abort(&mut self) {
        let r = match &self.client {
            Some(c) => c.batch_execute("ROLLBACK").await,
            None => return,
        };
        let _ = self.finish(r);
    }
}

/// The statement's duration in the metrics, the slow-query log and the trace.
fn observe_wire(kind: &str, sql: &str, took: std::time::Duration, info: &RequestInfo) {
    crate::metrics::observe_query(kind, sql, took, &info.request_id, info.slow_query_ms);
    if let Some(t) = &info.trace {
        t.statement(kind, sql, took);
    }
}

/// Sets the session's role when it is not already `$1`, alone: sent before a merged read
/// whenever the connection's role is not known (a new connection, or after a surprise).
const WIRE_ROLE_SQL: &str = "SELECT FROM (SELECT CASE WHEN current_user::text IS DISTINCT FROM $1 \
                             THEN set_config('role', $1, false) END) _fx_role";

/// A read-only request's setup and statement as ONE statement, for the wire client: the
/// request settings and `transaction_read_only` are set by a one-row subquery that the
/// statement is joined to LATERALly, so the planner must run it first (the statement's
/// side reads its `_fx_ok` column) and nothing of the statement — RLS policies, views,
/// functions — runs before the settings hold. Postgres counts ~15k fewer instructions per
/// single-row GET than for a separate setup statement (`bench/pg_ir.sh`).
///
/// The role cannot be set this way: privileges are checked, and RLS policies chosen, for
/// the role the session has when the statement starts. So the connection remembers the
/// role it last set for the session ([`super::wire::Pooled::role`]) and a separate
/// `WIRE_ROLE_SQL` goes first when it does not know; and `_fx_ok` is false when
/// `current_user` is not the request's role after all (a function of an earlier request
/// changed it for the session), so the statement then answers no row and `merged_read`
/// runs it again behind `WIRE_ROLE_SQL`. Its parameters are the statement's `n`, then
/// `setup_values`' (role, claims, published settings).
fn merged_read_sql(main: &str, n: usize, published: Published) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(main.len() + 480);
    s.push_str("SELECT _fx_m.* FROM (SELECT NULL");
    push_settings_sql(&mut s, published, n + 2);
    let _ = write!(
        s,
        ", current_user = ${}::name AND set_config('transaction_read_only', 'on', true) = 'on' \
         AS _fx_ok OFFSET 0) _fx_s, LATERAL (SELECT * FROM (",
        n + 1
    );
    s.push_str(main);
    s.push_str(") _fx_q WHERE _fx_s._fx_ok OFFSET 0) _fx_m");
    s
}

/// Runs a read-only `sql` as [`merged_read_sql`] on `conn`, with `WIRE_ROLE_SQL` first
/// when the connection's role is not known to be `role`. When it was believed known and
/// turns out not to be — the guard answered no row, or privileges were refused (42501:
/// checked before the guard runs, so possibly for the wrong role) — the read runs again
/// behind `WIRE_ROLE_SQL`. Reads change nothing, so running one twice is harmless.
async fn merged_read(
    conn: &mut super::wire::Pooled,
    role: &str,
    sql: &str,
    mut params: Vec<Option<&str>>,
    setup: &[Option<&str>],
    published: Published,
) -> Result<super::wire::Done, super::wire::WireError> {
    use super::wire::{Query, WireError};
    let merged = merged_read_sql(sql, params.len(), published);
    params.extend_from_slice(setup);
    let role_params = [Some(role)];
    let mut known = conn.role() == Some(role);
    loop {
        let read = Query {
            sql: &merged,
            params: &params,
        };
        let r = if known {
            conn.pipeline(std::slice::from_ref(&read)).await
        } else {
            let set_role = Query {
                sql: WIRE_ROLE_SQL,
                params: &role_params,
            };
            conn.pipeline(&[set_role, read]).await
        };
        match r {
            Ok(mut done) => {
                let main = done.pop().unwrap_or_default();
                if main.rows.is_empty() && known {
                    conn.set_role(None);
                    known = false;
                    continue;
                }
                conn.set_role((!main.rows.is_empty()).then_some(role));
                return Ok(main);
            }
            Err(WireError::Db(e)) if known && e.code == "42501" => {
                conn.set_role(None);
                known = false;
            }
            Err(e) => {
                conn.set_role(None);
                return Err(e);
            }
        }
    }
}

impl Drop for RequestTx {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // Still inside a transaction: never hand it to the next request.
            drop(Object::take(c));
        }
    }
}

#[cfg(test)]
mod setup_sql_tests {
    use super::*;

    #[test]
    fn named_accessors_match_the_settings_order() {
        assert_eq!(OPTIONAL_SETTINGS[1], "request.path");
        assert!(Published::new(false, true, false, false).path());
        assert!(!Published::new(true, false, true, true).path());
        assert_eq!(OPTIONAL_SETTINGS[2], "request.headers");
        assert_eq!(OPTIONAL_SETTINGS[3], "request.cookies");
        let h = Published::new(false, false, true, false);
        assert!(h.headers() && !h.cookies());
        let c = Published::new(false, false, false, true);
        assert!(c.cookies() && !c.headers());
    }

    #[test]
    fn setups_number_only_the_published_settings() {
        let p = Published::new(false, true, false, true);
        assert_eq!(
            setup_sql(p).tokio,
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
             set_config('request.path', $3, true), set_config('request.cookies', $4, true)"
        );
        assert!(setup_sql(Published::new(false, false, false, false))
            .wire_read_only
            .ends_with(
                "set_config('request.jwt.claims', $2, true), \
                 set_config('transaction_read_only', 'on', true)) _fx_setup"
            ));
        assert_eq!(
            merged_read_sql("SELECT $1", 1, Published::new(true, false, false, false)),
            "SELECT _fx_m.* FROM (SELECT NULL, set_config('request.jwt.claims', $3, true), \
             set_config('request.method', $4, true), current_user = $2::name AND \
             set_config('transaction_read_only', 'on', true) = 'on' AS _fx_ok OFFSET 0) _fx_s, \
             LATERAL (SELECT * FROM (SELECT $1) _fx_q WHERE _fx_s._fx_ok OFFSET 0) _fx_m"
        );
        let info = RequestInfo {
            method: "GET".into(),
            path: "/t".into(),
            headers_json: "{}".into(),
            published: Published::new(true, false, false, true),
            ..Default::default()
        };
        let ctx = AuthContext::anon();
        let (v, n) = setup_values(&ctx, &info);
        assert_eq!(&v[..n], &[&*ctx.role, &*ctx.claims_json, "GET", "{}"]);
    }
}

#[cfg(test)]
mod escape_tests {
    #[test]
    fn header_values_escape_as_serde_json_does() {
        for s in [
            "",
            "plain value",
            "a\"b\\c",
            "tab\tnew\nline\rret",
            "ctl\u{1}\u{1f}end",
            "unicode é ✓ \u{7f}",
            "Bearer eyJ.abc-_=",
        ] {
            let mut out = String::from("\"");
            super::push_json_escaped(&mut out, s);
            out.push('"');
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}
