//! execute (the only IO): runs the statement in the request transaction (role and claims set
//! in the same round trip), checks `max-affected` and single-object cardinality before
//! committing, and honours `tx=rollback`.

use super::parse::{parse_media_type, ApiRequest, MediaType, PlanOption};
use super::render::{check_object, rolls_back, wants_object, Outcome};
use super::sql::Statement;
use super::RestError;
use crate::auth::AuthContext;
use crate::db::tx::{RequestInfo, RequestTx};
use crate::error::ApiError;
use tokio_postgres::types::ToSql;

/// A planned or estimated total (`Prefer: count=planned|estimated`).
#[derive(Debug, Default)]
pub struct Count {
    /// The `EXPLAIN (FORMAT JSON)` whose top `Plan Rows` is the estimate.
    pub explain: Option<Statement>,
    /// `estimated`: the statement's own total counted at most this many + 1 rows; the
    /// estimate is used only beyond it.
    pub exact_up_to: Option<i64>,
}

impl Count {
    /// The total to answer, from the statement's total and the plan rows.
    fn total(&self, exact: Option<i64>, plan: Option<&[tokio_postgres::Row]>) -> Option<i64> {
        let plan = plan.and_then(|rows| rows.first()?.try_get::<_, serde_json::Value>(0).ok());
        self.total_from(exact, plan.as_ref())
    }

    /// [`Count::total`] from the `EXPLAIN (FORMAT JSON)` document itself.
    fn total_from(&self, exact: Option<i64>, plan: Option<&serde_json::Value>) -> Option<i64> {
        let planned = plan.and_then(|v| {
            let n = v.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()?;
            Some(n.max(0.0).round() as i64)
        });
        match (self.exact_up_to, exact) {
            (Some(max), Some(n)) if n <= max => Some(n),
            (Some(_), _) => planned.or(exact),
            (None, _) => planned.or(exact),
        }
    }
}

/// [`outcome`] from the wire client's text columns, moved out of the row (the body is not
/// copied).
fn outcome_text(rows: Vec<crate::db::wire::Row>, n_from_body: bool) -> Result<Outcome, ApiError> {
    let mut row = rows
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("REST statement returned no row"))?;
    // `n` (unless counted from the body), `body`, then `total`, `status`, `headers` when
    // selected (`sql::response_gucs`).
    if n_from_body {
        row.insert(0, None);
    }
    row.resize(5, None);
    let int = |v: Option<String>, i: usize| -> Result<Option<i64>, ApiError> {
        v.map(|v| v.parse::<i64>())
            .transpose()
            .map_err(|e| ApiError::internal(format!("REST statement column {i}: {e}")))
    };
    let body = row[1]
        .take()
        .ok_or_else(|| ApiError::internal("REST statement returned no body"))?;
    Ok(Outcome {
        n: if n_from_body {
            body_count(&body)?
        } else {
            int(row[0].take(), 0)?.unwrap_or(0)
        },
        body,
        total: int(row[2].take(), 2)?,
        status: row[3].take(),
        headers: row[4].take(),
    })
}

/// `n` for a statement whose body is a JSON array (`Statement::n_from_body`).
fn body_count(body: &str) -> Result<i64, ApiError> {
    json_array_len(body)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| ApiError::internal("REST statement's body is not a JSON array"))
}

/// The number of elements of the JSON array `text` (as Postgres writes it: `json_agg`,
/// `json_strip_nulls`), counted without parsing the elements: the commas between them at
/// the top level, outside strings. `None` when `text` is not an array. A few instructions
/// per byte, against ~6k for `count(*)` in Postgres for a one-row read.
pub fn json_array_len(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = b.iter().position(|c| !c.is_ascii_whitespace())?;
    if b[i] != b'[' {
        return None;
    }
    i += 1;
    let (mut depth, mut commas, mut empty) = (1usize, 0usize, true);
    while i < b.len() {
        match b[i] {
            b'"' => {
                // To the closing quote: a backslash escapes the byte after it.
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                empty = false;
            }
            b'[' | b'{' => {
                depth += 1;
                empty = false;
            }
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    let rest = &b[i + 1..];
                    return rest
                        .iter()
                        .all(u8::is_ascii_whitespace)
                        .then_some(if empty { 0 } else { commas + 1 });
                }
            }
            b',' if depth == 1 => commas += 1,
            c if !c.is_ascii_whitespace() => empty = false,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The planned count's `EXPLAIN (FORMAT JSON)` from the wire client's text column.
fn plan_text(rows: &[crate::db::wire::Row]) -> Option<Vec<serde_json::Value>> {
    let text = rows.first()?.first()?.as_deref()?;
    serde_json::from_str(text).ok()
}

fn outcome(rows: &[tokio_postgres::Row], n_from_body: bool) -> Result<Outcome, ApiError> {
    let row = rows
        .first()
        .ok_or_else(|| ApiError::internal("REST statement returned no row"))?;
    // `n`, `body`, then `total`, `status`, `headers` when selected (`sql::response_gucs`).
    fn optional<T: for<'a> tokio_postgres::types::FromSql<'a>>(
        row: &tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, ApiError> {
        if i >= row.len() {
            return Ok(None);
        }
        row.try_get(i).map_err(column)
    }
    fn column(e: tokio_postgres::Error) -> ApiError {
        ApiError::internal(format!("REST statement: {e}"))
    }
    // Without an `n` column everything sits one place earlier.
    let at = usize::from(!n_from_body);
    let body: String = row.try_get(at).map_err(column)?;
    Ok(Outcome {
        n: if n_from_body {
            body_count(&body)?
        } else {
            row.try_get(0).map_err(column)?
        },
        body,
        total: optional(row, at + 1)?,
        status: optional(row, at + 2)?,
        headers: optional(row, at + 3)?,
    })
}

/// A statement's parameter for tokio-postgres: its text sent in text format, whatever type
/// Postgres inferred for it — as the wire client sends every parameter — so that a
/// parameter typed by the SQL (`$1::integer`, `sql::typed_parameter`) is read by the
/// type's input function, as on the wire.
#[derive(Debug)]
struct TextParam<'a>(Option<&'a str>);

impl<'a> TextParam<'a> {
    fn all(s: &'a Statement) -> Vec<TextParam<'a>> {
        s.params.iter().map(|p| TextParam(p.as_deref())).collect()
    }

    fn refs<'b>(texts: &'b [TextParam<'a>]) -> Vec<&'b (dyn ToSql + Sync)> {
        texts.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
    }
}

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::IsNull;
        Ok(match self.0 {
            Some(v) => {
                out.extend_from_slice(v.as_bytes());
                IsNull::No
            }
            None => IsNull::Yes,
        })
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    fn encode_format(&self, _: &tokio_postgres::types::Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// How the statement runs: in a read-only transaction or not, and whether it writes.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// `BEGIN READ ONLY` (GET/HEAD, and calls of stable functions).
    pub read_only: bool,
    /// The statement changes rows (max-affected applies).
    pub is_write: bool,
    /// The statement is a plain write (`sql::write(…, plain: true)`): its command tag is the
    /// row count and `sql::PLAIN_WRITE_SETTINGS` follows it. Only set where
    /// [`one_round_trip`] holds and the wire client exists.
    pub plain_write: bool,
    /// Some SQL of the database may set `response.status`/`response.headers`: a plain write
    /// reads them back with `sql::PLAIN_WRITE_SETTINGS` (otherwise the DML goes alone).
    pub response_settings: bool,
}

/// Whether a request runs in one round trip, committed in the pipeline: nothing to decide
/// after seeing the result (reads, and writes and calls that need no rollback on the row
/// count — single object, strict max-affected — and no `tx=rollback`).
pub fn one_round_trip(req: &ApiRequest, is_write: bool) -> bool {
    !(wants_object(req)
        || (is_write && req.preferences.max_affected.is_some() && req.preferences.strict())
        || rolls_back(req))
}

/// Runs one statement for `req`.
pub async fn run(
    state: &crate::app::AppState,
    ctx: &AuthContext,
    info: &RequestInfo,
    req: &ApiRequest,
    stmt: &Statement,
    count: &Count,
    mode: Mode,
) -> Result<Outcome, ApiError> {
    let Mode {
        read_only,
        is_write,
        plain_write,
        response_settings,
    } = mode;
    let texts = TextParam::all(stmt);
    let params = TextParam::refs(&texts);
    let explain_texts = count.explain.as_ref().map(TextParam::all);
    let explain_params = explain_texts.as_deref().map(TextParam::refs);
    let explain = count
        .explain
        .as_ref()
        .zip(explain_params.as_deref())
        .map(|(s, p)| (s.text.as_str(), p));
    // Nothing to decide after seeing the result: reads (nothing to undo), and writes and
    // calls that need no rollback on the row count (single object, strict max-affected)
    // and no `tx=rollback`. Then the whole transaction is one round trip, committed in the
    // pipeline; a planned count's EXPLAIN rides in the same pipeline.
    let decides_after = !one_round_trip(req, is_write);
    let pool = &state.pool;
    if let (true, Some(wire)) = (read_only || !decides_after, state.wire.as_ref()) {
        let extra = count
            .explain
            .as_ref()
            .map(|s| (s.text.as_str(), &s.params[..]));
        if plain_write {
            let done = RequestTx::pipelined_wire(
                wire,
                ctx,
                info,
                read_only,
                &stmt.text,
                &stmt.params,
                response_settings.then_some((super::sql::PLAIN_WRITE_SETTINGS, &[][..])),
            )
            .await?;
            let mut settings = done
                .extra
                .and_then(|rows| rows.into_iter().next())
                .unwrap_or_default();
            settings.resize(2, None);
            return Ok(Outcome {
                total: None,
                n: i64::try_from(done.affected).unwrap_or(i64::MAX),
                body: String::new(),
                status: settings[0].take(),
                headers: settings[1].take(),
            });
        }
        let done =
            RequestTx::pipelined_wire(wire, ctx, info, read_only, &stmt.text, &stmt.params, extra)
                .await?;
        let (rows, plan) = (done.rows, done.extra);
        let mut o = outcome_text(rows, stmt.n_from_body)?;
        if count.explain.is_some() {
            let plan = plan
                .as_deref()
                .and_then(plan_text)
                .map(serde_json::Value::Array);
            o.total = count.total_from(o.total, plan.as_ref());
        }
        check_object(req, &o)?;
        return Ok(o);
    }
    if read_only || !decides_after {
        let (rows, plan) =
            RequestTx::pipelined(pool, ctx, info, read_only, &stmt.text, &params, explain).await?;
        let mut o = outcome(&rows, stmt.n_from_body)?;
        if count.explain.is_some() {
            o.total = count.total(o.total, plan.as_deref());
        }
        check_object(req, &o)?;
        return Ok(o);
    }
    let (tx, rows) = RequestTx::begin_with(pool, ctx, info, read_only, &stmt.text, &params).await?;
    let mut o = outcome(&rows, stmt.n_from_body)?;
    if let Some((text, p)) = explain {
        match tx.query(text, p).await {
            Ok(plan) => o.total = count.total(o.total, Some(&plan)),
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        }
    }
    let check = check_object(req, &o).and_then(|_| match req.preferences.max_affected {
        Some(max) if is_write && req.preferences.strict() && o.n as u64 > max => {
            Err(RestError::new(
                400,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
            )
            .with_details(format!("The query affects {} rows", o.n)))
        }
        _ => Ok(()),
    });
    match check {
        Err(e) => {
            tx.rollback().await?;
            Err(e.into())
        }
        Ok(()) if rolls_back(req) => {
            tx.rollback().await?;
            Ok(o)
        }
        Ok(()) => {
            tx.commit().await?;
            Ok(o)
        }
    }
}

/// `Accept: application/vnd.pgrst.plan[+json|+text]` (with `rest.plan_enabled`): the
/// request's statement is explained, not answered.
#[derive(Debug, Clone)]
pub struct Explain {
    json: bool,
    options: Vec<PlanOption>,
    /// The media type whose statement is explained (`for="…"`, default `application/json`).
    for_media: MediaType,
}

impl Explain {
    /// Takes the plan media type out of `req.accept`, leaving there the media type it is
    /// `for` (so the statement is the one that media type would run).
    pub fn take(req: &mut ApiRequest) -> Option<Explain> {
        let MediaType::Plan {
            json,
            for_media,
            options,
        } = &req.accept
        else {
            return None;
        };
        let for_media = match for_media.as_deref().map(|f| parse_media_type(f).0) {
            None | Some(MediaType::Any) => MediaType::Json,
            Some(m) => m,
        };
        let e = Explain {
            json: *json,
            options: options.clone(),
            for_media: for_media.clone(),
        };
        req.accept = for_media;
        Some(e)
    }

    /// The answer's `Content-Type`, as PostgREST gives it.
    pub fn content_type(&self) -> String {
        format!(
            "application/vnd.pgrst.plan+{}; for=\"{}\"; charset=utf-8",
            if self.json { "json" } else { "text" },
            self.for_media.mime()
        )
    }

    /// `EXPLAIN (FORMAT …, options) statement`.
    fn statement(&self, stmt: &str) -> String {
        let mut opts = vec![if self.json {
            "FORMAT JSON"
        } else {
            "FORMAT TEXT"
        }];
        for o in &self.options {
            let name = match o {
                PlanOption::Analyze => "ANALYZE",
                PlanOption::Verbose => "VERBOSE",
                PlanOption::Settings => "SETTINGS",
                PlanOption::Buffers => "BUFFERS",
                PlanOption::Wal => "WAL",
            };
            if !opts.contains(&name) {
                opts.push(name);
            }
        }
        format!("EXPLAIN ({}) {stmt}", opts.join(", "))
    }

    /// Explains `stmt` in the request transaction (role and claims set as for the request
    /// itself), then rolls the transaction back: with `analyze` the statement really runs,
    /// and a write explained that way must leave nothing behind. Plans are not hot: this
    /// takes the tokio-postgres path whatever `database.wire` says. The body is the plan:
    /// Postgres's JSON document, or its text lines.
    pub async fn run(
        &self,
        pool: &deadpool_postgres::Pool,
        ctx: &AuthContext,
        info: &RequestInfo,
        req: &ApiRequest,
        stmt: &Statement,
    ) -> Result<String, ApiError> {
        let text = self.statement(&stmt.text);
        let texts = TextParam::all(stmt);
        let params = TextParam::refs(&texts);
        let (tx, rows) =
            RequestTx::begin_with(pool, ctx, info, req.action.read_only(), &text, &params).await?;
        tx.rollback().await?;
        let bad = |e: tokio_postgres::Error| ApiError::internal(format!("EXPLAIN output: {e}"));
        if self.json {
            let plan: JsonText = rows
                .first()
                .ok_or_else(|| ApiError::internal("EXPLAIN returned no row"))?
                .try_get(0)
                .map_err(bad)?;
            Ok(plan.0)
        } else {
            let lines = rows
                .iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            Ok(lines.join("\n"))
        }
    }
}

/// A `json` value as Postgres wrote it (the binary format of `json` is its text), so the
/// plan is passed through untouched, key order and indentation included.
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(JsonText(std::str::from_utf8(raw)?.to_string()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSON
    }
}

/// What `GET /rest/v1/` needs beyond the schema cache, as ONE JSON value (see
/// [`super::openapi::Catalog`]). Run as the caller's role, so `has_*_privilege` answer for
/// it (PostgREST's `follow-privileges`); a role without USAGE on the schema sees nothing.
/// `data_type` is PostgREST's: no type modifier, qualified when not a built-in type, the
/// base type of a domain over a built-in one.
const OPENAPI_CATALOG: &str = "
SELECT json_build_object(
  'description', obj_description(n.oid, 'pg_namespace'),
  'relations', coalesce((
    SELECT json_agg(json_build_object(
      'name', c.relname,
      'select', has_table_privilege(c.oid, 'SELECT') OR has_any_column_privilege(c.oid, 'SELECT'),
      'insert', has_table_privilege(c.oid, 'INSERT') OR has_any_column_privilege(c.oid, 'INSERT'),
      'update', has_table_privilege(c.oid, 'UPDATE') OR has_any_column_privilege(c.oid, 'UPDATE'),
      'delete', has_table_privilege(c.oid, 'DELETE'),
      'columns', coalesce((
        SELECT json_agg(json_build_object(
          'name', a.attname,
          'description', col_description(c.oid, a.attnum),
          'data_type', CASE
            WHEN bt.typnamespace = 'pg_catalog'::regnamespace THEN format_type(bt.oid, NULL)
            WHEN bt.typcategory = 'A' AND et.typnamespace = 'pg_catalog'::regnamespace
              THEN format_type(bt.oid, NULL)
            WHEN bt.typcategory = 'A' THEN quote_ident(etn.nspname) || '.' || quote_ident(et.typname) || '[]'
            ELSE quote_ident(btn.nspname) || '.' || quote_ident(bt.typname) END,
          'max_length', CASE WHEN bt.oid IN ('varchar'::regtype, 'bpchar'::regtype)
                              AND coalesce(nullif(t.typtypmod, -1), a.atttypmod) > 4
                             THEN coalesce(nullif(t.typtypmod, -1), a.atttypmod) - 4 END,
          'enum_values', coalesce((SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder)
                                     FROM pg_enum e WHERE e.enumtypid = bt.oid), '[]')
        ) ORDER BY a.attnum)
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        -- A domain over a built-in type is described as that type.
        JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' AND EXISTS (
               SELECT 1 FROM pg_type b WHERE b.oid = t.typbasetype
                  AND b.typnamespace = 'pg_catalog'::regnamespace)
             THEN t.typbasetype ELSE t.oid END
        JOIN pg_namespace btn ON btn.oid = bt.typnamespace
        LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
        LEFT JOIN pg_namespace etn ON etn.oid = et.typnamespace
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]')
    ) ORDER BY c.relname)
    FROM pg_class c
    WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
      AND (has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')
           OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE'))), '[]'),
  'functions', coalesce((
    SELECT json_agg(json_build_object(
      'name', p.proname,
      'args', ARRAY(SELECT format_type(x, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(x, i) ORDER BY i),
      'description', obj_description(p.oid, 'pg_proc')) ORDER BY p.proname)
    FROM pg_proc p
    WHERE p.pronamespace = n.oid AND p.prokind = 'f' AND has_function_privilege(p.oid, 'EXECUTE')), '[]')
)::text
FROM pg_namespace n
WHERE n.nspname = $1 AND has_schema_privilege(n.oid, 'USAGE')";

/// The caller's view of `schema` for the OpenAPI document: one read-only statement in the
/// request transaction (role and claims set as for any request).
pub async fn openapi_catalog(
    pool: &deadpool_postgres::Pool,
    ctx: &AuthContext,
    info: &RequestInfo,
    schema: &str,
) -> Result<super::openapi::Catalog, ApiError> {
    let rows = RequestTx::read_only(pool, ctx, info, OPENAPI_CATALOG, &[&schema]).await?;
    match rows.first() {
        // No USAGE on the schema: nothing is described.
        None => Ok(super::openapi::Catalog::default()),
        Some(r) => {
            let text: String = r.get(0);
            serde_json::from_str(&text)
                .map_err(|e| ApiError::internal(format!("OpenAPI catalog: {e}")))
        }
    }
}

#[cfg(test)]
mod body_count_tests {
    use super::json_array_len;

    #[test]
    fn counts_top_level_elements_only() {
        for (text, n) in [
            ("[]", Some(0)),
            ("  [ ]\n", Some(0)),
            ("[{\"id\":1}]", Some(1)),
            ("[null]", Some(1)),
            ("[1, 2, 3]", Some(3)),
            // `json_agg`'s own separator, and commas and brackets nested or inside strings.
            (
                "[{\"a\":\"x,y]}\",\"b\":[1,2,{\"c\":[3,4]}]}, \n {\"a\":\"\"}]",
                Some(2),
            ),
            // Escaped quotes and a backslash just before a closing quote.
            (r#"["say \"hi\", ok", "c:\\", "[,]"]"#, Some(3)),
            ("[\"\\u005b,\"]", Some(1)),
            // Not an array, or not all of one.
            ("{\"a\":1}", None),
            ("", None),
            ("[1, 2", None),
            ("[\"open]", None),
            ("[1] x", None),
        ] {
            assert_eq!(json_array_len(text), n, "{text}");
        }
    }

    #[test]
    fn agrees_with_a_json_parser() {
        let bodies = [
            r#"[{"id":1,"name":"item 1","tags":["a","b"],"meta":{"k":[1,{"x":"]"}]}}]"#,
            r#"[{"t":"line\nbreak, comma"}, {"t":null}, {"t":"\\\""}]"#,
            r#"[[1,2],[3],[]]"#,
            r#"["", "", ""]"#,
        ];
        for b in bodies {
            let parsed: serde_json::Value = serde_json::from_str(b).unwrap();
            assert_eq!(json_array_len(b), parsed.as_array().map(Vec::len), "{b}");
        }
    }
}
