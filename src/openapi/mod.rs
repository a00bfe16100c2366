//! The API description (`GET /openapi.json`, OpenAPI 3.1) in two parts:
//!
//! - the static part, generated from the route registry at start-up ([`document`]): every
//!   mounted route with its path parameters, tag, summary, security per access rule and
//!   error responses referencing the error body of its surface (`PostgrestError`,
//!   `GoTrueError`, `StorageError`); completed ([`complete`]) with each operation's query
//!   and header parameters, request body and success responses from [`platform`], which
//!   keeps one entry per (method, canonical path) and the component schemas (`Session`,
//!   `User`, `Bucket`, `FileObject`, `Webhook`, `Delivery`, `ApiKey`, `Job`, …);
//! - the schema part, generated from the REST schema cache when the document is requested
//!   ([`render`]): one path per exposed table or view (`/rest/v1/{name}`, and
//!   `/api/v1/tables/{schema}/{name}` for the other exposed schemas) and per function
//!   (`/rest/v1/rpc/{name}`), and one component schema per relation built from its columns.
//!
//! The merged document is cached per (static document, schema cache) identity: the schema
//! cache is replaced as a whole on reload, so a new `Arc` means a new document.
//!
//! Must not: query the database (the cache is the only source of the schema part).

pub mod platform;

use crate::error::Surface;
use crate::routes::{openapi_path, path_params, Access, Registry};
use crate::schema::{Function, SchemaCache, Table};
use actix_web::http::Method;
use actix_web::web::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, Required,
    ResponseBuilder,
};

fn http_method(m: &Method) -> Option<HttpMethod> {
    Some(match *m {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        Method::TRACE => HttpMethod::Trace,
        _ => return None,
    })
}

/// The error body schema of the surface a path belongs to.
fn error_schema(path: &str) -> &'static str {
    match Surface::for_path(path, None) {
        Surface::Rest => "PostgrestError",
        Surface::Auth { .. } => "GoTrueError",
        Surface::Storage => "StorageError",
    }
}

/// Component schemas the registry part refers to, as JSON Schema 2020-12 (the OpenAPI 3.1
/// dialect). Written as JSON and added when the document is completed ([`complete`]):
/// utoipa's schema model cannot hold some of them (`{}` for "any value", `anyOf` without a
/// type), and they are data rather than code.
fn static_schemas() -> Vec<(&'static str, Value)> {
    let opt_str = json!({"type": ["string", "null"]});
    vec![
        (
            "PostgrestError",
            json!({
                "type": "object",
                "description": "PostgREST error body: REST, RPC and every Fluxbase-native /api/v1 route.",
                "properties": {
                    "code": {"type": "string", "description": "PGRSTxxx, a SQLSTATE or an FBxxx code (docs/error-codes.md)"},
                    "message": {"type": "string"},
                    "details": opt_str,
                    "hint": opt_str
                },
                "required": ["code", "message"]
            }),
        ),
        (
            "GoTrueError",
            json!({
                "description": "GoTrue error body: `{code, message}` when the client sends X-Supabase-Api-Version, else the legacy `{code (HTTP status), error_code, msg}`.",
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        "required": ["code", "message"]
                    },
                    {
                        "type": "object",
                        "properties": {
                            "code": {"type": "integer"},
                            "error_code": {"type": "string"},
                            "msg": {"type": "string"}
                        },
                        "required": ["code", "msg"]
                    }
                ]
            }),
        ),
        (
            "StorageError",
            json!({
                "type": "object",
                "description": "Supabase Storage error body; `statusCode` carries the real status (the HTTP status is 400 for most errors, as Supabase Storage answers).",
                "properties": {
                    "statusCode": {"type": "string"},
                    "code": {"type": "string"},
                    "error": {"type": "string"},
                    "message": {"type": "string"}
                },
                "required": ["statusCode", "error", "message"]
            }),
        ),
    ]
}

fn json_error(surface_schema: &str, description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(surface_schema)))
                .build(),
        )
        .build()
}

/// Builds the registry part of the document. Its `$ref`s to component schemas resolve once
/// [`complete`] has added them: only the completed document is served.
pub fn document(registry: &Registry) -> OpenApi {
    let mut paths = Paths::new();
    let mut ids = HashSet::new();
    for r in registry.routes() {
        let Some(method) = http_method(&r.method) else {
            continue;
        };
        let path = openapi_path(r.path);
        let mut id = format!(
            "{}_{}",
            r.method.as_str().to_ascii_lowercase(),
            path.trim_matches('/')
                .replace(['/', '{', '}', '.', '-'], "_")
        );
        while !ids.insert(id.clone()) {
            id.push('_');
        }
        let err = error_schema(r.path);
        let mut op = OperationBuilder::new()
            .summary(Some(r.summary))
            .tag(r.tag)
            .operation_id(Some(id))
            .response("4XX", json_error(err, "Client error"))
            .response("5XX", json_error(err, "Server error"));
        for (name, template) in path_params(r.path).into_iter().zip(param_patterns(r.path)) {
            let schema = if template == "\\d+" {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(0))
            } else {
                let s = ObjectBuilder::new().schema_type(Type::String);
                if template == ".*" {
                    s.description(Some("May contain `/`"))
                } else {
                    s.min_length(Some(1))
                }
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(schema))
                    .build(),
            );
        }
        op = match r.access {
            Access::Public => op.security(SecurityRequirement::default()),
            Access::Key => op
                .security(SecurityRequirement::new("apikey", Vec::<String>::new()))
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
                .security(SecurityRequirement::default())
                .description(Some(
                    "The `apikey` header or Bearer token decides the role (anon without one).",
                )),
            Access::ServiceRole => op
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
                .security(SecurityRequirement::new("apikey", Vec::<String>::new()))
                .description(Some("Requires the service_role key.")),
        };
        paths.add_path_operation(path, vec![method], op.build());
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("apikey"))),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Fluxbase")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Fluxbase platform API. The tables, views and functions of the exposed \
                     schemas appear as /rest/v1/{name} and /rest/v1/rpc/{name}, generated from \
                     the current schema cache.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// The regex of each `{param:regex}` of a template (`""` when it has none), in order.
fn param_patterns(template: &str) -> Vec<&str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(p, _)| p))
        .map(|p| p.split_once(':').map(|(_, re)| re).unwrap_or(""))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The schema part.

/// JSON Schema of a value of a Postgres type, as `format_type` spells it. Unknown types
/// (enums, composites, domains) accept any JSON value.
pub fn pg_type_schema(type_name: &str) -> Value {
    if let Some(elem) = type_name.strip_suffix("[]") {
        return json!({"type": "array", "items": nullable(pg_type_schema(elem))});
    }
    // `character varying(20)`, `numeric(10,2)`, `timestamp(3) with time zone`.
    let mut base = String::with_capacity(type_name.len());
    let mut typmod = String::new();
    let mut depth = 0;
    for c in type_name.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth > 0 => typmod.push(c),
            _ => base.push(c),
        }
    }
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let base = base.strip_prefix("pg_catalog.").unwrap_or(&base);
    let described = |mut v: Value| {
        v["description"] = Value::String(type_name.to_string());
        v
    };
    described(match base {
        "smallint" => {
            json!({"type": "integer", "format": "int32", "minimum": -32768, "maximum": 32767})
        }
        "integer" => json!({"type": "integer", "format": "int32"}),
        "bigint" => json!({"type": "integer", "format": "int64"}),
        "oid" | "xid" | "cid" => json!({"type": "integer", "minimum": 0}),
        "real" => json!({"type": "number", "format": "float"}),
        "double precision" => json!({"type": "number", "format": "double"}),
        "numeric" => json!({"type": "number"}),
        "boolean" => json!({"type": "boolean"}),
        "uuid" => json!({"type": "string", "format": "uuid"}),
        "timestamp with time zone" => json!({"type": "string", "format": "date-time"}),
        "date" => json!({"type": "string", "format": "date"}),
        "character varying" | "character" | "bit" | "bit varying" => {
            match typmod.trim().parse::<u64>() {
                Ok(n) if !base.starts_with("bit") => json!({"type": "string", "maxLength": n}),
                _ => json!({"type": "string"}),
            }
        }
        "json" | "jsonb" => json!({}),
        "text"
        | "name"
        | "citext"
        | "bytea"
        | "money"
        | "interval"
        | "inet"
        | "cidr"
        | "macaddr"
        | "macaddr8"
        | "tsvector"
        | "tsquery"
        | "xml"
        | "point"
        | "line"
        | "lseg"
        | "box"
        | "path"
        | "polygon"
        | "circle"
        | "int4range"
        | "int8range"
        | "numrange"
        | "tsrange"
        | "tstzrange"
        | "daterange"
        | "timestamp without time zone"
        | "time without time zone"
        | "time with time zone"
        | "regclass"
        | "regproc"
        | "regtype"
        | "ltree" => json!({"type": "string"}),
        _ => json!({}),
    })
}

/// Adds `null` to a schema's types (3.1 spelling); a schema without `type` already
/// accepts null.
fn nullable(mut v: Value) -> Value {
    if let Some(Value::String(t)) = v.get("type").cloned() {
        v["type"] = json!([t, "null"]);
    }
    v
}

fn column_schema(c: &crate::schema::Column) -> Value {
    let mut s = pg_type_schema(&c.type_name);
    if c.nullable {
        s = nullable(s);
    }
    if c.generated {
        s["readOnly"] = Value::Bool(true);
    }
    s
}

/// A relation's row: every column optional (`select` may pick any subset, and embedded
/// resources add keys).
fn row_schema(t: &Table) -> Value {
    let props: Map<String, Value> = t
        .columns
        .iter()
        .map(|c| (c.name.clone(), column_schema(c)))
        .collect();
    let mut s = json!({"type": "object", "properties": props});
    if let Some(d) = &t.description {
        s["description"] = Value::String(d.clone());
    }
    s
}

/// Columns an insert must name (not null, no default, not generated).
fn insert_required(t: &Table) -> Vec<&str> {
    t.columns
        .iter()
        .filter(|c| !c.nullable && c.default.is_none() && !c.generated)
        .map(|c| c.name.as_str())
        .collect()
}

/// Component name for a relation: `schema.name` with characters outside the allowed set
/// (`[A-Za-z0-9._-]`) replaced, made unique.
fn component_name(taken: &mut HashSet<String>, schema: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut n = format!("{}.{}", clean(schema), clean(name));
    let stem = n.clone();
    let mut i = 2;
    while !taken.insert(n.clone()) {
        n = format!("{stem}_{i}");
        i += 1;
    }
    n
}

/// `prefix` + each segment percent-encoded as a URL path segment (so `{`, `}`, `/`, `?`,
/// spaces in a name never change the path's meaning).
fn concrete_path(prefix: &str, segments: &[&str]) -> String {
    let mut u = match url::Url::parse("http://x/") {
        Ok(u) => u,
        Err(_) => return prefix.to_string(),
    };
    if let Ok(mut segs) = u.path_segments_mut() {
        segs.clear().extend(segments);
    }
    format!("{prefix}{}", u.path())
}

fn ref_to(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Query parameters that PostgREST reserves; a column of that name cannot be filtered by
/// its bare name.
const RESERVED: &[&str] = &[
    "select",
    "order",
    "limit",
    "offset",
    "on_conflict",
    "columns",
    "and",
    "or",
    "not",
];

fn query_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn filter_params(t: &Table) -> Vec<Value> {
    t.columns
        .iter()
        .filter(|c| !RESERVED.contains(&c.name.as_str()))
        .map(|c| {
            query_param(
                &c.name,
                json!({"type": "string"}),
                &format!(
                    "Filter on `{}` ({}): `operator.value`, e.g. `eq.1`, `in.(1,2)`, `is.null`",
                    c.name, c.type_name
                ),
            )
        })
        .collect()
}

fn prefer_param() -> Value {
    json!({
        "name": "Prefer", "in": "header", "required": false,
        "schema": {"type": "string"},
        "description": "PostgREST preferences: return=minimal|headers-only|representation, count=exact|planned|estimated, resolution=merge-duplicates|ignore-duplicates, missing=default, tx=commit|rollback"
    })
}

fn responses(success: BTreeMap<&str, Value>) -> Value {
    let mut r: Map<String, Value> = success
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let err = json!({"description": "Error", "content": {"application/json": {"schema": ref_to("PostgrestError")}}});
    r.insert("4XX".into(), err.clone());
    r.insert("5XX".into(), err);
    Value::Object(r)
}

fn key_security() -> Value {
    json!([{"apikey": []}, {"bearer": []}, {}])
}

fn rows_content(row: &Value) -> Value {
    json!({
        "application/json": {"schema": {"type": "array", "items": row}},
        "application/vnd.pgrst.object+json": {"schema": row},
        "text/csv": {"schema": {"type": "string"}}
    })
}

/// The operations of one relation.
fn table_item(t: &Table, comp: &str, tag: &str, op_prefix: &str) -> Value {
    let row = ref_to(comp);
    let filters = filter_params(t);
    let select = query_param(
        "select",
        json!({"type": "string"}),
        "Columns and embedded resources, e.g. `id,name,books(*)`",
    );
    let mut get_params = vec![
        select.clone(),
        query_param(
            "order",
            json!({"type": "string"}),
            "e.g. `name.asc,id.desc.nullslast`",
        ),
        query_param(
            "limit",
            json!({"type": "integer", "minimum": 0}),
            "At most this many rows",
        ),
        query_param(
            "offset",
            json!({"type": "integer", "minimum": 0}),
            "Skip this many rows",
        ),
    ];
    get_params.extend(filters.iter().cloned());
    get_params.push(prefer_param());
    let read_ok = json!({"description": "Rows", "content": rows_content(&row)});
    let write_ok = json!({"description": "Affected rows (with Prefer: return=representation)", "content": rows_content(&row)});
    let mut item = Map::new();
    let summary = |verb: &str| format!("{verb} {}.{}", t.schema, t.name);
    item.insert(
        "get".into(),
        json!({
            "tags": [tag], "summary": summary("Read rows of"),
            "operationId": format!("{op_prefix}_get"),
            "parameters": get_params, "security": key_security(),
            "responses": responses(BTreeMap::from([("200", read_ok.clone()), ("206", read_ok)])),
        }),
    );
    if t.insertable {
        let required = insert_required(t);
        let one = json!({"allOf": [row, {"type": "object", "required": required}]});
        let mut params = vec![
            select.clone(),
            query_param(
                "columns",
                json!({"type": "string"}),
                "Columns to take from the body, e.g. `name,born`",
            ),
            query_param(
                "on_conflict",
                json!({"type": "string"}),
                "Unique columns for an upsert",
            ),
        ];
        params.push(prefer_param());
        item.insert(
            "post".into(),
            json!({
                "tags": [tag], "summary": summary("Insert into"),
                "operationId": format!("{op_prefix}_post"),
                "parameters": params, "security": key_security(),
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "anyOf": [one, {"type": "array", "items": one}]
                }}}},
                // 201 either way: an empty body by default (return=minimal), the rows with
                // return=representation; OpenAPI cannot tie content to a header, so the
                // 201 declares none rather than a content type it often lacks.
                "responses": responses(BTreeMap::from([
                    ("201", json!({"description": "Created; the rows with Prefer: return=representation (application/json)"})),
                    ("200", write_ok.clone()),
                ])),
            }),
        );
    }
    if t.updatable {
        let mut params = vec![select.clone()];
        params.extend(filters.iter().cloned());
        params.push(prefer_param());
        item.insert(
            "patch".into(),
            json!({
                "tags": [tag], "summary": summary("Update rows of"),
                "operationId": format!("{op_prefix}_patch"),
                "parameters": params, "security": key_security(),
                "requestBody": {"required": true, "content": {"application/json": {"schema": row}}},
                "responses": responses(BTreeMap::from([
                    ("200", write_ok.clone()),
                    ("204", json!({"description": "Done"})),
                ])),
            }),
        );
    }
    if t.deletable {
        let mut params = vec![select];
        params.extend(filters);
        params.push(prefer_param());
        item.insert(
            "delete".into(),
            json!({
                "tags": [tag], "summary": summary("Delete rows of"),
                "operationId": format!("{op_prefix}_delete"),
                "parameters": params, "security": key_security(),
                "responses": responses(BTreeMap::from([
                    ("200", write_ok),
                    ("204", json!({"description": "Done"})),
                ])),
            }),
        );
    }
    Value::Object(item)
}

/// The result schema of a function.
fn result_schema(f: &Function, comps: &BTreeMap<(String, String), String>) -> Value {
    let one = match &f.return_relation {
        Some(rel) => match comps.get(rel) {
            Some(c) => ref_to(c),
            None => json!({"type": "object"}),
        },
        None if f.returns_composite => json!({"type": "object"}),
        None if f.return_type == "void" => json!({}),
        None => nullable(pg_type_schema(&f.return_type)),
    };
    if f.returns_set {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

/// The operations of one function (all overloads of a name share the path).
fn rpc_item(
    name: &str,
    overloads: &[Function],
    comps: &BTreeMap<(String, String), String>,
) -> Value {
    let named = |f: &Function| f.args.iter().all(|a| !a.name.is_empty());
    let arg_schema = |a: &crate::schema::Arg| nullable(pg_type_schema(&a.type_name));
    let bodies: Vec<Value> = overloads
        .iter()
        .filter(|f| named(f))
        .map(|f| {
            let props: Map<String, Value> = f
                .args
                .iter()
                .map(|a| (a.name.clone(), arg_schema(a)))
                .collect();
            let required: Vec<&str> = f
                .args
                .iter()
                .filter(|a| !a.has_default)
                .map(|a| a.name.as_str())
                .collect();
            json!({"type": "object", "properties": props, "required": required})
        })
        .collect();
    let body = match bodies.len() {
        0 => json!({"type": "object"}),
        1 => bodies.into_iter().next().unwrap_or_default(),
        _ => json!({"anyOf": bodies}),
    };
    let results: Vec<Value> = overloads.iter().map(|f| result_schema(f, comps)).collect();
    let result = if results.iter().all(|r| *r == results[0]) {
        results[0].clone()
    } else {
        json!({"anyOf": results})
    };
    let ok = json!({"description": "The function's result", "content": {"application/json": {"schema": result}}});
    let done = json!({"description": "Done (return=minimal or a void function)"});
    let tag = "rpc";
    let id = op_id("rpc", name);
    let mut item = Map::new();
    item.insert(
        "post".into(),
        json!({
            "tags": [tag], "summary": format!("Call {}.{}", overloads[0].schema, name),
            "operationId": format!("{id}_post"),
            "parameters": [prefer_param()], "security": key_security(),
            "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
            "responses": responses(BTreeMap::from([("200", ok.clone()), ("204", done.clone())])),
        }),
    );
    // GET only calls functions that cannot write (PostgREST runs it READ ONLY).
    if overloads.iter().all(|f| f.volatility != 'v') {
        let single = overloads.len() == 1;
        let mut seen = HashSet::new();
        let params: Vec<Value> = overloads
            .iter()
            .filter(|f| named(f))
            .flat_map(|f| f.args.iter())
            .filter(|a| seen.insert(a.name.clone()))
            .map(|a| {
                let mut p = query_param(&a.name, arg_schema(a), &a.type_name);
                p["required"] = Value::Bool(single && !a.has_default);
                p
            })
            .collect();
        item.insert(
            "get".into(),
            json!({
                "tags": [tag], "summary": format!("Call {}.{} (read-only)", overloads[0].schema, name),
                "operationId": format!("{id}_get"),
                "parameters": params, "security": key_security(),
                "responses": responses(BTreeMap::from([("200", ok), ("204", done)])),
            }),
        );
    }
    Value::Object(item)
}

fn op_id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{clean}")
}

/// Adds each registry operation's parameters, request body and success responses from
/// [`platform`] (keyed by method and canonical path). An operation without an entry keeps a
/// bare `2XX` (the unit test `platform::tests::every_route_is_described` forbids that).
fn describe_registry(doc: &mut Value) {
    let idx = platform::index();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let canon = platform::canonical(path);
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let upper = method.to_ascii_uppercase();
            let spec = idx
                .iter()
                .find(|((m, p), _)| *m == upper && *p == canon)
                .map(|(_, s)| s);
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut out = Map::new();
            match spec {
                Some(spec) => {
                    for (code, r) in &spec.responses {
                        out.insert(code.to_string(), r.clone());
                    }
                    if spec.any_status {
                        out.insert(
                            "default".into(),
                            json!({"description": "Any status a function sets through `response.status`"}),
                        );
                    }
                    if let Some(b) = &spec.request {
                        op.insert("requestBody".into(), b.clone());
                    }
                    if !spec.params.is_empty() {
                        let params = op.entry("parameters").or_insert_with(|| json!([]));
                        if let Some(a) = params.as_array_mut() {
                            a.extend(spec.params.iter().cloned());
                        }
                    }
                }
                None => {
                    out.insert("2XX".into(), json!({"description": "Success"}));
                }
            }
            // The surface's error ranges; a specific code of the entry (416, 503) wins. An
            // answer to HEAD has no body, errors included.
            let head = upper == "HEAD";
            for (k, mut v) in responses {
                if head {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("content");
                    }
                }
                out.entry(k).or_insert(v);
            }
            op.insert("responses".into(), Value::Object(out));
        }
    }
}

/// Completes a parsed registry document: the static component schemas and the registry
/// operations' descriptions, then the schema part (relations and functions of `schemas`;
/// the first is the default one `/rest/v1` serves).
pub fn complete(doc: &mut Value, cache: &SchemaCache, schemas: &[String]) {
    let comps_obj = doc["components"]
        .as_object_mut()
        .map(|c| c.entry("schemas").or_insert_with(|| json!({})));
    if let Some(Value::Object(m)) = comps_obj {
        for (name, schema) in static_schemas().into_iter().chain(platform::schemas()) {
            m.insert(name.to_string(), schema);
        }
    }
    describe_registry(doc);
    let Some(default) = schemas.first() else {
        return;
    };
    let mut tables: Vec<&Table> = cache
        .tables
        .values()
        .map(|t| &**t)
        .filter(|t| schemas.contains(&t.schema))
        .collect();
    tables.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let mut taken: HashSet<String> = doc["components"]["schemas"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut comps = BTreeMap::new();
    let mut new_schemas = Map::new();
    let mut new_paths = Map::new();
    let mut ids: HashSet<String> = HashSet::new();
    for t in &tables {
        let comp = component_name(&mut taken, &t.schema, &t.name);
        new_schemas.insert(comp.clone(), row_schema(t));
        comps.insert((t.schema.clone(), t.name.clone()), comp.clone());
        let (path, tag) = if &t.schema == default {
            (concrete_path("/rest/v1", &[&t.name]), "rest")
        } else {
            (
                concrete_path("/api/v1/tables", &[&t.schema, &t.name]),
                "rest",
            )
        };
        let mut id = op_id("table", &format!("{}_{}", t.schema, t.name));
        while !ids.insert(id.clone()) {
            id.push('_');
        }
        new_paths.insert(path, table_item(t, &comp, tag, &id));
    }
    let mut fns: Vec<(&String, &Vec<Function>)> = cache
        .functions
        .iter()
        .filter(|((s, _), f)| s == default && !f.is_empty())
        .map(|((_, n), f)| (n, f))
        .collect();
    fns.sort_by(|a, b| a.0.cmp(b.0));
    for (name, overloads) in fns {
        let path = concrete_path("/rest/v1/rpc", &[name]);
        let mut item = rpc_item(name, overloads, &comps);
        let mut id = op_id("rpc", name);
        while !ids.insert(id.clone()) {
            id.push('_');
        }
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            let suffix = op["operationId"]
                .as_str()
                .and_then(|s| s.rsplit('_').next())
                .unwrap_or("op")
                .to_string();
            op["operationId"] = Value::String(format!("{id}_{suffix}"));
        }
        new_paths.insert(path, item);
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (k, v) in new_paths {
            // A concrete name never equals a registry template (those contain `{`), but
            // should one ever do, the registry's route wins.
            paths.entry(k).or_insert(v);
        }
    }
    if let Some(s) = doc
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .and_then(Value::as_object_mut)
    {
        s.extend(new_schemas);
    }
}

struct Rendered {
    base: Arc<String>,
    cache: Arc<SchemaCache>,
    body: Bytes,
}

static LAST: Mutex<Option<Rendered>> = Mutex::new(None);

/// The full document for a static part and a schema cache snapshot, rendered once per
/// (static part, cache) pair: holding both `Arc`s keeps their addresses from being reused,
/// so pointer identity is a sound key.
pub fn render(
    base: &Arc<String>,
    cache: &Arc<SchemaCache>,
    schemas: &[String],
) -> Result<Bytes, serde_json::Error> {
    let hit = |last: &Option<Rendered>| {
        last.as_ref()
            .filter(|r| Arc::ptr_eq(&r.base, base) && Arc::ptr_eq(&r.cache, cache))
            .map(|r| r.body.clone())
    };
    if let Some(b) = hit(&LAST.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(b);
    }
    let mut doc: Value = serde_json::from_str(base)?;
    complete(&mut doc, cache, schemas);
    let body = Bytes::from(serde_json::to_vec(&doc)?);
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(Rendered {
        base: base.clone(),
        cache: cache.clone(),
        body: body.clone(),
    });
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves() {
        let base = Arc::new(document(&crate::app::registry()).to_json().unwrap());
        let body = render(&base, &Arc::new(SchemaCache::default()), &["public".into()]).unwrap();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.contains(&"#/components/schemas/StorageError"));
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(doc["components"]["schemas"][name].is_object(), "{r}");
        }
    }

    #[test]
    fn type_mapping() {
        assert_eq!(pg_type_schema("integer")["type"], "integer");
        assert_eq!(pg_type_schema("bigint")["format"], "int64");
        assert_eq!(pg_type_schema("numeric(10,2)")["type"], "number");
        assert_eq!(pg_type_schema("character varying(20)")["maxLength"], 20);
        assert_eq!(
            pg_type_schema("timestamp(3) with time zone")["format"],
            "date-time"
        );
        assert_eq!(pg_type_schema("uuid")["format"], "uuid");
        let arr = pg_type_schema("text[]");
        assert_eq!(arr["type"], "array");
        assert_eq!(arr["items"]["type"], json!(["string", "null"]));
        assert!(pg_type_schema("jsonb").get("type").is_none());
        assert!(pg_type_schema("mood").get("type").is_none());
        assert_eq!(
            nullable(pg_type_schema("boolean"))["type"],
            json!(["boolean", "null"])
        );
    }

    #[test]
    fn names_are_encoded() {
        assert_eq!(concrete_path("/rest/v1", &["todos"]), "/rest/v1/todos");
        assert_eq!(
            concrete_path("/rest/v1", &["a b{c}/d"]),
            "/rest/v1/a%20b%7Bc%7D%2Fd"
        );
        let mut taken = HashSet::new();
        assert_eq!(component_name(&mut taken, "public", "a b"), "public.a_b");
        assert_eq!(component_name(&mut taken, "public", "a_b"), "public.a_b_2");
    }

    #[test]
    fn templates_params() {
        assert_eq!(
            param_patterns("/a/{id:\\d+}/{x}/{tail:.*}"),
            vec!["\\d+", "", ".*"]
        );
    }
}
