//! Stage 1 of the REST pipeline: HTTP inputs → [`ApiRequest`].
//!
//! Pure: it takes the method, the path segments after the mount point, the raw query
//! string, the headers and the body as plain values ([`RequestInput`]) and returns a typed
//! request or a [`ParseError`] carrying PostgREST's error code. It knows the grammar, not the
//! schema: whether `clients` is a table or `id` a column is the planner's question. The only
//! configuration it reads is what it is handed in [`ParseConfig`].

mod ast;
mod body;
mod error;
mod filter;
mod media;
mod prefer;
mod select;
mod syntax;

pub use ast::{
    AggregateFn, Direction, Embed, EmbedPath, Field, Filter, FtsOp, IsValue, JoinType, JsonKey,
    JsonOp, LogicOp, LogicTree, NullsOrder, Operation, OrderTarget, OrderTerm, Quantifier,
    SelectItem, SimpleOp,
};
pub use body::{CsvPayload, JsonKind, JsonPayload, Payload};
pub use error::{ParseError, RangeError};
pub use media::{negotiate, parse_accept, parse_media_type, AcceptItem, MediaType, PlanOption};
pub use prefer::{
    parse_preferences, CountPref, Handling, Missing, ParamsPref, Preferences, Resolution,
    ReturnPref, TxEnd,
};

/// Bounds that keep a hostile query string from costing more than a normal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Longest raw query string accepted, in bytes.
    pub max_query_len: usize,
    /// Deepest nesting of embedded resources in `select`.
    pub max_embed_depth: usize,
    /// Deepest nesting of `and(…)`/`or(…)` in a logic tree.
    pub max_logic_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            // Far above what postgrest-js builds for realistic `in.(…)` lists, far below
            // what would make parsing cost noticeable.
            max_query_len: 32 * 1024,
            max_embed_depth: 16,
            max_logic_depth: 16,
        }
    }
}

/// What the parse stage needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseConfig {
    /// Exposed schemas (`rest.schemas`); the first is the default.
    pub schemas: Vec<String>,
    /// `rest.aggregates`: whether `select` may use aggregate functions.
    pub aggregates: bool,
    /// Parsing bounds.
    pub limits: ParseLimits,
    /// `rest.plan_enabled` (PostgREST's `db-plan-enabled`): `Accept:
    /// application/vnd.pgrst.plan` answers the statement's `EXPLAIN`.
    pub plan: bool,
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig {
            schemas: vec!["public".to_string()],
            aggregates: true,
            limits: ParseLimits::default(),
            plan: false,
        }
    }
}

/// The HTTP-level inputs, free of any web framework type.
#[derive(Debug, Clone, Copy)]
pub struct RequestInput<'a> {
    /// The method as sent (`GET`, …).
    pub method: &'a str,
    /// Decoded path segments after the mount point: `[]` (root), `["todos"]`,
    /// `["rpc", "fn"]`.
    pub path: &'a [&'a str],
    /// The schema named by the path (`/api/v1/tables/{schema}/{table}`); it wins over the
    /// profile headers.
    pub path_schema: Option<&'a str>,
    /// The raw query string, still percent-encoded, without `?`.
    pub query: &'a str,
    /// Headers as (name, value) pairs; names are compared case-insensitively and repeated
    /// headers are all read.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// What the request targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/`: the OpenAPI description of the schema.
    Root,
    /// `/{name}`: a table or view.
    Relation(String),
    /// `/rpc/{name}`: a function.
    Routine(String),
}

/// What the request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// GET/HEAD on a relation.
    Read {
        /// HEAD: headers only.
        headers_only: bool,
    },
    /// POST on a relation.
    Insert,
    /// PATCH on a relation.
    Update,
    /// PUT on a relation: single-row upsert.
    SingleUpsert,
    /// DELETE on a relation.
    Delete,
    /// A function call.
    Call {
        /// GET/HEAD: the function must not write (run READ ONLY).
        read_only: bool,
        /// HEAD: headers only.
        headers_only: bool,
    },
    /// GET/HEAD on the root: the OpenAPI document.
    Schema {
        /// HEAD: headers only.
        headers_only: bool,
    },
    /// OPTIONS.
    Info,
}

impl Action {
    /// Whether the action reads a body.
    pub fn has_body(self) -> bool {
        matches!(
            self,
            Action::Insert
                | Action::Update
                | Action::SingleUpsert
                | Action::Call {
                    read_only: false,
                    ..
                }
        )
    }

    /// Whether the transaction may be READ ONLY.
    pub fn read_only(self) -> bool {
        matches!(
            self,
            Action::Read { .. }
                | Action::Call {
                    read_only: true,
                    ..
                }
                | Action::Schema { .. }
                | Action::Info
        )
    }
}

/// Rows to skip and to return. `limit: None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// Rows skipped.
    pub offset: u64,
    /// Rows returned at most.
    pub limit: Option<u64>,
}

impl Range {
    /// The rows both ranges select (PostgREST intersects the `Range` header with
    /// `limit`/`offset`). An empty intersection is `limit: Some(0)`.
    pub fn intersect(self, other: Range) -> Range {
        let offset = self.offset.max(other.offset);
        let end = |r: Range| r.limit.map(|l| r.offset.saturating_add(l));
        let end = match (end(self), end(other)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Range {
            offset,
            limit: end.map(|e| e.saturating_sub(offset)),
        }
    }

    /// Whether the range is everything (no offset, no limit).
    pub fn is_all(self) -> bool {
        self == Range::default()
    }
}

/// A filter on a resource: `path` names the embedded resource (empty: the top level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFilter {
    /// Embedded resource path.
    pub path: EmbedPath,
    /// The filter.
    pub filter: Filter,
}

/// A logic tree on a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathLogic {
    /// Embedded resource path.
    pub path: EmbedPath,
    /// The tree (its root is always [`LogicTree::Expr`]).
    pub tree: LogicTree,
}

/// An ordering of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathOrder {
    /// Embedded resource path.
    pub path: EmbedPath,
    /// The terms, in priority order.
    pub terms: Vec<OrderTerm>,
}

/// `limit`/`offset` of an embedded resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRange {
    /// Embedded resource path (never empty: the top level is [`ApiRequest::range`]).
    pub path: EmbedPath,
    /// The range.
    pub range: Range,
}

/// A query parameter of a GET/HEAD function call that is either an argument or a filter on
/// the result. PostgREST decides with the function's signature: a parameter named like an
/// argument is an argument. [`ApiRequest::resolve_rpc_params`] does that split once the
/// planner knows the argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcParam {
    /// The parameter name.
    pub name: String,
    /// The value as sent (decoded).
    pub value: String,
    /// The parameter read as a filter; `None` when it does not parse as one (an error only
    /// if the parameter turns out not to be an argument: [`ApiRequest::resolve_rpc_params`]
    /// parses it again for the error then, rather than every argument of every call
    /// building an error message that is thrown away).
    pub filter: Option<PathFilter>,
}

/// The query-string parameters, classified and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParams {
    /// `select` (default `*`).
    pub select: Vec<SelectItem>,
    /// Filters, in query-string order.
    pub filters: Vec<PathFilter>,
    /// `or`/`and`/`not.or`/`not.and` trees.
    pub logic: Vec<PathLogic>,
    /// `order` and `rel.order`.
    pub order: Vec<PathOrder>,
    /// `rel.limit`/`rel.offset`.
    pub ranges: Vec<PathRange>,
    /// `on_conflict`.
    pub on_conflict: Option<Vec<String>>,
    /// `columns`.
    pub columns: Option<Vec<String>>,
    /// GET/HEAD function calls: parameters that are arguments or filters.
    pub rpc_params: Vec<RpcParam>,
    /// GET/HEAD function calls: parameters already known to be arguments, as
    /// (name, value) pairs in query order (repeated names are variadic values).
    pub rpc_args: Vec<(String, String)>,
}

impl Default for QueryParams {
    fn default() -> Self {
        QueryParams {
            select: vec![SelectItem::Star],
            filters: Vec::new(),
            logic: Vec::new(),
            order: Vec::new(),
            ranges: Vec::new(),
            on_conflict: None,
            columns: None,
            rpc_params: Vec::new(),
            rpc_args: Vec::new(),
        }
    }
}

/// A parsed request: everything later stages need, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// What to do.
    pub action: Action,
    /// On what.
    pub target: Target,
    /// The schema (from the path, the profile header, or the default).
    pub schema: String,
    /// Whether a profile header or the path chose the schema (the renderer then echoes
    /// `Content-Profile`).
    pub schema_explicit: bool,
    /// Query parameters.
    pub query: QueryParams,
    /// Top-level range: the `Range` header (GET/HEAD) intersected with `limit`/`offset`.
    pub range: Range,
    /// Whether the client asked for a range at all (`Range` header or `limit`/`offset`).
    pub range_requested: bool,
    /// `Prefer`.
    pub preferences: Preferences,
    /// The negotiated response media type.
    pub accept: MediaType,
    /// `Content-Type` of the body, when one was sent.
    pub content_type: Option<MediaType>,
    /// The body, for actions that take one.
    pub payload: Option<Payload>,
}

impl ApiRequest {
    /// Splits [`QueryParams::rpc_params`] into arguments (`is_arg(name)`) and filters.
    /// A non-argument that does not parse as a filter is the error its parse gave.
    pub fn resolve_rpc_params(&mut self, is_arg: impl Fn(&str) -> bool) -> Result<(), ParseError> {
        for p in std::mem::take(&mut self.query.rpc_params) {
            if is_arg(&p.name) {
                self.query.rpc_args.push((p.name, p.value));
            } else {
                let f = match p.filter {
                    Some(f) => f,
                    None => path_filter(&p.name, &p.value)?.0,
                };
                self.query.filters.push(f);
            }
        }
        Ok(())
    }
}

/// A filter parameter `key=value` (`key` may name an embedded resource's column); the flag
/// says whether `key` is a plain name, which on an RPC GET may be an argument instead.
fn path_filter(key: &str, value: &str) -> Result<(PathFilter, bool), ParseError> {
    let (path, field) = filter::parse_tree_path(key)?;
    let ambiguous = path.is_empty() && field.json_path.is_empty();
    let filter = filter::parse_filter(field, value)?;
    Ok((PathFilter { path, filter }, ambiguous))
}

/// Decodes `%XX` escapes (and `+` as space when `plus_as_space`); invalid escapes are kept
/// as sent and invalid UTF-8 is replaced, so decoding never fails.
pub(crate) fn percent_decode(s: &str, plus_as_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    if !s.contains(['%', '+']) {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let decoded = bytes
                    .get(i + 1)
                    .and_then(|&h| hex(h))
                    .zip(bytes.get(i + 2).and_then(|&l| hex(l)));
                if let Some((h, l)) = decoded {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a raw query string into decoded (key, value) pairs, in order.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn header_values<'a>(
    headers: &'a [(&'a str, &'a str)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn header<'a>(headers: &'a [(&'a str, &'a str)], name: &'a str) -> Option<&'a str> {
    header_values(headers, name).next()
}

/// What a query-string key means.
enum KeyKind<'k> {
    Select,
    Columns,
    OnConflict,
    Order(&'k str),
    Limit(&'k str),
    Offset(&'k str),
    /// (embed path prefix, `or`/`and`/`not.or`/`not.and`)
    Logic(&'k str, &'k str),
    Filter,
}

/// Classifies a key. Reserved words count only unquoted, as the last component; the
/// returned prefix is the embed path before them (without the trailing dot).
fn classify(key: &str) -> KeyKind<'_> {
    match key {
        "select" => return KeyKind::Select,
        "columns" => return KeyKind::Columns,
        "on_conflict" => return KeyKind::OnConflict,
        _ => {}
    }
    for op in ["not.or", "not.and", "or", "and"] {
        if key == op {
            return KeyKind::Logic("", op);
        }
        // `not.*` comes first in the list, so `a.not.or` is `not.or` on `a`, never `or` on
        // `a.not`.
        if let Some(prefix) = key.strip_suffix(op).and_then(|p| p.strip_suffix('.')) {
            return KeyKind::Logic(prefix, op);
        }
    }
    for word in ["order", "limit", "offset"] {
        let prefix = if key == word {
            Some("")
        } else {
            key.strip_suffix(word).and_then(|p| p.strip_suffix('.'))
        };
        if let Some(prefix) = prefix {
            return match word {
                "order" => KeyKind::Order(prefix),
                "limit" => KeyKind::Limit(prefix),
                _ => KeyKind::Offset(prefix),
            };
        }
    }
    KeyKind::Filter
}

/// `a.b` (an embed path before a reserved word) → `["a", "b"]`.
fn embed_path(prefix: &str, key: &str) -> Result<EmbedPath, ParseError> {
    if prefix.is_empty() {
        return Ok(Vec::new());
    }
    let (mut path, last) = filter::parse_tree_path(prefix)?;
    if !last.json_path.is_empty() {
        return Err(syntax::Cursor::new(key)
            .error_at(0, "an embedded resource path")
            .into_error("tree path", key, key));
    }
    path.push(last.name);
    Ok(path)
}

/// `limit`/`offset` values: decimal integers; a negative limit is PostgREST's `PGRST103`.
fn parse_count(what: &str, value: &str, negative_is_range_error: bool) -> Result<u64, ParseError> {
    let digits = value.strip_prefix('-');
    let body = digits.unwrap_or(value);
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        if digits.is_some() {
            if negative_is_range_error {
                return Err(ParseError::InvalidRange(RangeError::NegativeLimit));
            }
        } else if let Ok(n) = value.parse::<u64>() {
            return Ok(n);
        }
    }
    let cur = syntax::Cursor::new(value);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(cur
            .error_at(0, "an integer that fits in 64 bits")
            .into_error(&format!("{what} parameter"), value, value));
    }
    let bad = value
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map(|(i, _)| i)
        .unwrap_or(0);
    Err(cur
        .error_at(bad, "digit")
        .into_error(&format!("{what} parameter"), value, value))
}

/// Parses the `Range` header (`0-9`, `10-`, optionally `items=0-9`). Anything else is
/// ignored, as PostgREST does; `10-5` is `PGRST103`.
fn parse_range_header(value: &str) -> Result<Option<Range>, ParseError> {
    let v = value.trim();
    let v = v.strip_prefix("items=").unwrap_or(v);
    let Some((lo, hi)) = v.split_once('-') else {
        return Ok(None);
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(lo) || !(hi.is_empty() || digits(hi)) {
        return Ok(None);
    }
    let Ok(lo) = lo.parse::<u64>() else {
        return Ok(None);
    };
    if hi.is_empty() {
        return Ok(Some(Range {
            offset: lo,
            limit: None,
        }));
    }
    let Ok(hi) = hi.parse::<u64>() else {
        return Ok(None);
    };
    if lo > hi {
        return Err(ParseError::InvalidRange(RangeError::LowerGtUpper));
    }
    Ok(Some(Range {
        offset: lo,
        limit: Some(hi - lo + 1),
    }))
}

fn parse_target(path: &[&str]) -> Result<Target, ParseError> {
    // One trailing slash is harmless (`/todos/`); any other empty segment is not.
    let path = match path.split_last() {
        Some((&"", rest)) => rest,
        _ => path,
    };
    match path {
        [] => Ok(Target::Root),
        ["rpc", name] if !name.is_empty() => Ok(Target::Routine((*name).to_string())),
        [name] if !name.is_empty() => Ok(Target::Relation((*name).to_string())),
        _ => Err(ParseError::InvalidResourcePath),
    }
}

fn parse_action(method: &str, target: &Target) -> Result<Action, ParseError> {
    let head = method == "HEAD";
    Ok(match (method, target) {
        ("OPTIONS", _) => Action::Info,
        ("GET" | "HEAD", Target::Root) => Action::Schema { headers_only: head },
        ("GET" | "HEAD", Target::Relation(_)) => Action::Read { headers_only: head },
        ("POST", Target::Relation(_)) => Action::Insert,
        ("PATCH", Target::Relation(_)) => Action::Update,
        ("PUT", Target::Relation(_)) => Action::SingleUpsert,
        ("DELETE", Target::Relation(_)) => Action::Delete,
        ("GET" | "HEAD", Target::Routine(_)) => Action::Call {
            read_only: true,
            headers_only: head,
        },
        ("POST", Target::Routine(_)) => Action::Call {
            read_only: false,
            headers_only: false,
        },
        ("PATCH" | "PUT" | "DELETE", Target::Routine(_)) => {
            return Err(ParseError::InvalidRpcMethod(method.to_string()))
        }
        _ => return Err(ParseError::UnsupportedMethod(method.to_string())),
    })
}

fn parse_schema(
    input: &RequestInput<'_>,
    config: &ParseConfig,
) -> Result<(String, bool), ParseError> {
    let profile = match input.method {
        "GET" | "HEAD" => "accept-profile",
        _ => "content-profile",
    };
    let asked = input
        .path_schema
        .or_else(|| header(input.headers, profile))
        .map(str::trim);
    let default = config
        .schemas
        .first()
        .map(String::as_str)
        .unwrap_or("public");
    match asked {
        None => Ok((default.to_string(), false)),
        Some(s) if config.schemas.iter().any(|x| x == s) => Ok((s.to_string(), true)),
        Some(s) => Err(ParseError::UnacceptableSchema {
            schema: s.to_string(),
            exposed: config.schemas.clone(),
        }),
    }
}

/// The media types each action can answer with. `application/vnd.pgrst.plan` is not
/// offered: PostgREST answers it only with `db-plan-enabled` (off by default) and Fluxbase
/// does not run `EXPLAIN` for requests yet, so it is refused (406 `PGRST107`) as PostgREST's
/// default configuration refuses it, rather than answered with rows under another label.
fn offers(action: Action) -> (fn(&MediaType) -> bool, MediaType) {
    fn rows(m: &MediaType) -> bool {
        matches!(
            m,
            MediaType::Json
                | MediaType::GeoJson
                | MediaType::Csv
                | MediaType::Object { .. }
                | MediaType::ArrayStripped
                | MediaType::TextPlain
                | MediaType::TextXml
                | MediaType::OctetStream
        )
    }
    fn mutation(m: &MediaType) -> bool {
        matches!(
            m,
            MediaType::Json
                | MediaType::GeoJson
                | MediaType::Csv
                | MediaType::Object { .. }
                | MediaType::ArrayStripped
        )
    }
    fn spec(m: &MediaType) -> bool {
        matches!(m, MediaType::OpenApi | MediaType::Json)
    }
    fn anything(_: &MediaType) -> bool {
        true
    }
    match action {
        Action::Read { .. } | Action::Call { .. } => (rows, MediaType::Json),
        Action::Insert | Action::Update | Action::SingleUpsert | Action::Delete => {
            (mutation, MediaType::Json)
        }
        Action::Schema { .. } => (spec, MediaType::OpenApi),
        Action::Info => (anything, MediaType::Json),
    }
}

/// Checks that every embed path used by filters, orders and limits names an embedded
/// resource of `select` (PostgREST's `PGRST108`).
fn check_embedded(q: &QueryParams) -> Result<(), ParseError> {
    fn find<'s>(items: &'s [SelectItem], name: &str) -> Result<&'s [SelectItem], ParseError> {
        let embeds = || {
            items.iter().filter_map(|i| match i {
                SelectItem::Embed(e) => Some(e),
                _ => None,
            })
        };
        if let Some(e) = embeds().find(|e| e.label() == name) {
            return Ok(&e.select);
        }
        Err(ParseError::NotEmbedded {
            resource: name.to_string(),
            alias: embeds()
                .find(|e| e.name == name)
                .and_then(|e| e.alias.clone().map(|a| (e.name.clone(), a))),
        })
    }
    fn walk<'s>(select: &'s [SelectItem], path: &[String]) -> Result<&'s [SelectItem], ParseError> {
        let mut level = select;
        for name in path {
            level = find(level, name)?;
        }
        Ok(level)
    }
    let paths = q
        .filters
        .iter()
        .map(|f| &f.path)
        .chain(q.logic.iter().map(|l| &l.path))
        .chain(q.ranges.iter().map(|r| &r.path));
    for path in paths {
        walk(&q.select, path)?;
    }
    for o in &q.order {
        let level = walk(&q.select, &o.path)?;
        for t in &o.terms {
            if let OrderTarget::Related { relation, .. } = &t.target {
                find(level, relation)?;
            }
        }
    }
    Ok(())
}

/// Parses a request. See the module documentation.
pub fn parse_request(
    input: &RequestInput<'_>,
    config: &ParseConfig,
) -> Result<ApiRequest, ParseError> {
    let limits = config.limits;
    if input.query.len() > limits.max_query_len {
        return Err(ParseError::QueryTooLong {
            len: input.query.len(),
            max: limits.max_query_len,
        });
    }
    let target = parse_target(input.path)?;
    let action = parse_action(input.method, &target)?;
    let (schema, schema_explicit) = parse_schema(input, config)?;
    let preferences = parse_preferences(header_values(input.headers, "prefer"))?;

    let rpc_get = matches!(
        action,
        Action::Call {
            read_only: true,
            ..
        }
    );
    let mut q = QueryParams::default();
    let mut select_seen = false;
    let mut root_limit: Option<u64> = None;
    let mut root_offset: Option<u64> = None;
    let mut embedded_ranges: Vec<(EmbedPath, Option<u64>, Option<u64>)> = Vec::new();
    for (key, value) in query_pairs(input.query) {
        match classify(&key) {
            KeyKind::Select => {
                // The first `select` wins, as in PostgREST.
                if !select_seen {
                    q.select = select::parse_select(&value, limits.max_embed_depth)?;
                    select_seen = true;
                }
            }
            KeyKind::Columns => {
                if q.columns.is_none() {
                    q.columns = Some(filter::parse_name_list("columns parameter", &value)?);
                }
            }
            KeyKind::OnConflict => {
                if q.on_conflict.is_none() {
                    q.on_conflict = Some(filter::parse_name_list("on_conflict parameter", &value)?);
                }
            }
            KeyKind::Order(prefix) => {
                let path = embed_path(prefix, &key)?;
                let terms = filter::parse_order(&value)?;
                q.order.push(PathOrder { path, terms });
            }
            KeyKind::Limit(prefix) => {
                let n = parse_count("limit", &value, true)?;
                if prefix.is_empty() {
                    root_limit.get_or_insert(n);
                } else {
                    let path = embed_path(prefix, &key)?;
                    range_slot(&mut embedded_ranges, path).1.get_or_insert(n);
                }
            }
            KeyKind::Offset(prefix) => {
                let n = parse_count("offset", &value, false)?;
                if prefix.is_empty() {
                    root_offset.get_or_insert(n);
                } else {
                    let path = embed_path(prefix, &key)?;
                    range_slot(&mut embedded_ranges, path).2.get_or_insert(n);
                }
            }
            KeyKind::Logic(prefix, op) => {
                let path = embed_path(prefix, &key)?;
                let tree = filter::parse_logic_tree(op, &value, limits.max_logic_depth)?;
                q.logic.push(PathLogic { path, tree });
            }
            KeyKind::Filter => {
                let parsed = path_filter(&key, &value);
                if rpc_get {
                    // Until the planner knows the signature, a simple name may be an
                    // argument; anything else can only be a filter.
                    match parsed {
                        Ok((filter, false)) => q.filters.push(filter),
                        Ok((filter, true)) => q.rpc_params.push(RpcParam {
                            name: key,
                            value,
                            filter: Some(filter),
                        }),
                        Err(_) => q.rpc_params.push(RpcParam {
                            name: key,
                            value,
                            filter: None,
                        }),
                    }
                } else {
                    q.filters.push(parsed?.0);
                }
            }
        }
    }
    q.ranges = embedded_ranges
        .into_iter()
        .map(|(path, limit, offset)| PathRange {
            path,
            range: Range {
                offset: offset.unwrap_or(0),
                limit,
            },
        })
        .collect();

    if !config.aggregates && q.select.iter().any(SelectItem::has_aggregate) {
        return Err(ParseError::AggregatesNotAllowed);
    }
    check_embedded(&q)?;

    let param_range = Range {
        offset: root_offset.unwrap_or(0),
        limit: root_limit,
    };
    let mut range = param_range;
    let mut range_requested = root_limit.is_some() || root_offset.is_some();
    if matches!(action, Action::SingleUpsert) && range_requested {
        return Err(ParseError::PutLimitNotAllowed);
    }
    // The Range header only applies to reads (PostgREST ignores it elsewhere).
    if matches!(
        action,
        Action::Read { .. }
            | Action::Call {
                read_only: true,
                ..
            }
    ) {
        let unit_ok = header(input.headers, "range-unit")
            .is_none_or(|u| u.trim().eq_ignore_ascii_case("items"));
        if let (Some(h), true) = (header(input.headers, "range"), unit_ok) {
            if let Some(r) = parse_range_header(h)? {
                range = r.intersect(param_range);
                range_requested = true;
            }
        }
    }

    let accept_items = parse_accept(header_values(input.headers, "accept"));
    let (offered, default) = offers(action);
    // The plan media type, when enabled, explains any request on a relation or function;
    // the media type it is `for` must be one the request could be answered with.
    let plan_ok = config.plan && !matches!(action, Action::Schema { .. } | Action::Info);
    let accept = negotiate(
        &accept_items,
        |m| match m {
            MediaType::Plan { for_media, .. } => {
                plan_ok
                    && for_media.as_deref().is_none_or(|f| {
                        let (f, _) = parse_media_type(f);
                        f == MediaType::Any || offered(&f)
                    })
            }
            m => offered(m),
        },
        default,
    )?;

    let content_type = header(input.headers, "content-type")
        .filter(|v| !v.trim().is_empty())
        .map(|v| parse_media_type(v).0);
    let payload = if action.has_body() {
        let rpc = matches!(target, Target::Routine(_));
        Some(body::parse_payload(
            content_type.as_ref(),
            input.body,
            body::BodyUse {
                rpc,
                columns_given: q.columns.is_some(),
            },
        )?)
    } else {
        None
    };

    Ok(ApiRequest {
        action,
        target,
        schema,
        schema_explicit,
        query: q,
        range,
        range_requested,
        preferences,
        accept,
        content_type,
        payload,
    })
}

fn range_slot(
    slots: &mut Vec<(EmbedPath, Option<u64>, Option<u64>)>,
    path: EmbedPath,
) -> &mut (EmbedPath, Option<u64>, Option<u64>) {
    let i = match slots.iter().position(|s| s.0 == path) {
        Some(i) => i,
        None => {
            slots.push((path, None, None));
            slots.len() - 1
        }
    };
    &mut slots[i]
}

#[cfg(test)]
mod tests;
