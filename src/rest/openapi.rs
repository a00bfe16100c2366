//! `GET /rest/v1/`: the Swagger 2.0 description of one exposed schema, in PostgREST's shape
//! (its `openapi-mode: follow-privileges`): only the relations, methods and functions the
//! caller's role may use appear.
//!
//! Pure: relations, keys and functions come from the schema cache; what the cache does not
//! keep (the caller's privileges, comments, enum labels, `varchar(n)` lengths, the schema's
//! comment) comes in a [`Catalog`] that `execute::openapi_catalog` reads in the request
//! transaction as the caller's role. What must not happen here: IO, or a description of
//! something the caller cannot reach (a relation without privileges is absent, not empty).

use crate::schema::{Column, ForeignKey, Function, SchemaCache, Table};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// What the caller's role may do in the schema, and the metadata the schema cache leaves
/// out. Deserialized from the JSON that `execute::OPENAPI_CATALOG` builds in Postgres.
#[derive(Debug, Default, Deserialize)]
pub struct Catalog {
    /// The schema's comment (`COMMENT ON SCHEMA`): title (first line) and description.
    #[serde(default)]
    pub description: Option<String>,
    /// Relations on which the role has some privilege.
    #[serde(default)]
    pub relations: Vec<RelationAccess>,
    /// Functions the role may execute.
    #[serde(default)]
    pub functions: Vec<FunctionAccess>,
}

/// A relation the role may reach, with what it may do on it.
#[derive(Debug, Default, Deserialize)]
pub struct RelationAccess {
    /// Name.
    pub name: String,
    /// SELECT on the table or on some column.
    pub select: bool,
    /// INSERT on the table or on some column.
    pub insert: bool,
    /// UPDATE on the table or on some column.
    pub update: bool,
    /// DELETE.
    pub delete: bool,
    /// Per-column metadata, in column order.
    #[serde(default)]
    pub columns: Vec<ColumnMeta>,
}

/// What PostgREST reports of a column besides what the schema cache keeps.
#[derive(Debug, Default, Deserialize)]
pub struct ColumnMeta {
    /// Name.
    pub name: String,
    /// `COMMENT ON COLUMN`.
    #[serde(default)]
    pub description: Option<String>,
    /// The type as PostgREST names it: without type modifier, schema-qualified when not a
    /// built-in type, the base type of a domain over a built-in type.
    pub data_type: String,
    /// `character varying(n)` / `character(n)`: n.
    #[serde(default)]
    pub max_length: Option<i64>,
    /// Labels of an enum type, in order.
    #[serde(default)]
    pub enum_values: Vec<String>,
}

/// A function the role may execute (one overload).
#[derive(Debug, Default, Deserialize)]
pub struct FunctionAccess {
    /// Name.
    pub name: String,
    /// Input argument types, as the schema cache spells them (to pick the overload).
    pub args: Vec<String>,
    /// `COMMENT ON FUNCTION`.
    #[serde(default)]
    pub description: Option<String>,
}

/// Where the API is reached (`host`, `basePath`, `schemes`) and whether tokens are
/// described (`securityDefinitions`).
#[derive(Debug, Clone)]
pub struct Server {
    /// `http` or `https`.
    pub scheme: String,
    /// Host, with `:port` when one is explicit.
    pub host: String,
    /// The mount of the REST API (`/rest/v1`, behind `server.public_url`'s path).
    pub base_path: String,
    /// A JWT secret is configured (Fluxbase always has one): emit `securityDefinitions`.
    pub security: bool,
}

impl Server {
    /// From `server.public_url` when it is set, else from the request's scheme and host.
    pub fn new(public_url: &str, req_scheme: &str, req_host: &str, mount: &str) -> Server {
        if let Ok(u) = url::Url::parse(public_url) {
            if let Some(h) = u.host_str() {
                let host = match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                };
                return Server {
                    scheme: u.scheme().to_string(),
                    host,
                    base_path: format!("{}{mount}", u.path().trim_end_matches('/')),
                    security: true,
                };
            }
        }
        Server {
            scheme: if req_scheme == "https" {
                "https"
            } else {
                "http"
            }
            .into(),
            host: req_host.to_string(),
            base_path: mount.to_string(),
            security: true,
        }
    }
}

/// PostgREST's mapping of a SQL type (as [`ColumnMeta::data_type`] names it) to a Swagger
/// type; `None` for json/jsonb (any JSON value).
pub fn swagger_type(t: &str) -> Option<&'static str> {
    match t {
        "character varying" | "character" | "text" => Some("string"),
        "boolean" => Some("boolean"),
        "smallint" | "integer" | "bigint" => Some("integer"),
        "numeric" | "real" | "double precision" => Some("number"),
        "json" | "jsonb" => None,
        _ if t.ends_with("[]") => Some("array"),
        _ => Some("string"),
    }
}

/// `type`, `items` and `format` of a value of SQL type `t`.
fn typed(s: &mut Map<String, Value>, t: &str) {
    if let Some(ty) = swagger_type(t) {
        s.insert("type".into(), ty.into());
    }
    if let Some(elem) = t.strip_suffix("[]") {
        let mut items = Map::new();
        if let Some(ty) = swagger_type(elem) {
            items.insert("type".into(), ty.into());
        }
        s.insert("items".into(), Value::Object(items));
    }
    s.insert("format".into(), t.into());
}

/// A default expression as a JSON value, PostgREST's way: for string-typed columns the
/// literal without its `::type` cast and quotes, as a string; otherwise the expression
/// itself when it is JSON (`0`, `true`, `1.5`). Function calls on non-string columns
/// (`nextval(…)`) have no default in the document.
pub fn default_value(data_type: &str, default: &str) -> Option<Value> {
    let text = if swagger_type(data_type) == Some("string") {
        // `'x'::type`: the cast names the type as `format_type` sees it from the search
        // path (`mood`), not always as `data_type` does (`public.mood`), so any cast of a
        // plain literal is dropped.
        let lit = match default.rfind("'::") {
            Some(i) if default.starts_with('\'') && i > 0 && !default[i + 3..].contains('\'') => {
                &default[1..i]
            }
            _ => default,
        };
        format!("\"{lit}\"")
    } else {
        default.to_string()
    };
    serde_json::from_str(&text).ok()
}

/// The type name without its modifier (`character varying(20)` → `character varying`,
/// `numeric(10,2)[]` → `numeric[]`): the fallback when the catalog lacks a column.
fn without_typmod(t: &str) -> String {
    match (t.find('('), t.find(')')) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &t[..a], &t[b + 1..]),
        _ => t.to_string(),
    }
}

/// A JSON reference to `#/{section}/{name}` (JSON Pointer escaping, then percent-encoding
/// of what a URI fragment may not hold).
fn reference(section: &str, name: &str) -> Value {
    let pointer = name.replace('~', "~0").replace('/', "~1");
    let mut out = format!("#/{section}/");
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    json!({ "$ref": out })
}

/// `/` + the name percent-encoded as one path segment: a `{` or `/` in a relation's name
/// never turns into a template or another path (PostgREST emits the raw name).
fn path_of(prefix: &str, name: &str) -> String {
    let mut out = String::from(prefix);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// First line → summary, the rest (leading newlines dropped) → description.
fn summary_and_description(op: &mut Map<String, Value>, text: Option<&str>) {
    if let Some(t) = text {
        let (sum, rest) = t.split_once('\n').unwrap_or((t, ""));
        op.insert("summary".into(), sum.into());
        let rest = rest.trim_start_matches('\n');
        if !rest.is_empty() {
            op.insert("description".into(), rest.into());
        }
    }
}

/// The single-column foreign key of `col`, tables before views (as PostgREST picks it).
fn foreign_key<'a>(fks: &[&'a ForeignKey], col: &str) -> Option<&'a ForeignKey> {
    let mut candidates = fks
        .iter()
        .filter(|fk| fk.from_columns.len() == 1 && fk.from_columns[0] == col);
    let first = candidates.clone().find(|fk| !fk.via_view);
    first.or_else(|| candidates.next()).copied()
}

fn property(t: &Table, c: &Column, meta: Option<&ColumnMeta>, fks: &[&ForeignKey]) -> Value {
    let data_type = meta
        .map(|m| m.data_type.clone())
        .unwrap_or_else(|| without_typmod(&c.type_name));
    let mut s = Map::new();
    typed(&mut s, &data_type);
    if let Some(d) = c
        .default
        .as_deref()
        .and_then(|d| default_value(&data_type, d))
    {
        s.insert("default".into(), d);
    }
    let mut notes = vec![];
    if t.primary_key.contains(&c.name) {
        notes.push("This is a Primary Key.<pk/>".to_string());
    }
    if let Some(fk) = foreign_key(fks, &c.name) {
        let (table, column) = (&fk.to.1, &fk.to_columns[0]);
        notes.push(format!(
            "This is a Foreign Key to `{table}.{column}`.<fk table='{table}' column='{column}'/>"
        ));
    }
    let comment = meta.and_then(|m| m.description.as_deref());
    let description = match (comment, notes.is_empty()) {
        (c, true) => c.map(str::to_string),
        (Some(c), false) => Some(format!("{c}\n\nNote:\n{}", notes.join("\n"))),
        (None, false) => Some(format!("Note:\n{}", notes.join("\n"))),
    };
    if let Some(d) = description {
        s.insert("description".into(), d.into());
    }
    if let Some(m) = meta {
        if let Some(n) = m.max_length {
            s.insert("maxLength".into(), n.into());
        }
        if !m.enum_values.is_empty() {
            s.insert("enum".into(), json!(m.enum_values));
        }
    }
    Value::Object(s)
}

fn definition(t: &Table, access: &RelationAccess, fks: &[&ForeignKey]) -> Value {
    let meta: HashMap<&str, &ColumnMeta> = access
        .columns
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let props: Map<String, Value> = t
        .columns
        .iter()
        .map(|c| {
            let m = meta.get(c.name.as_str()).copied();
            (c.name.clone(), property(t, c, m, fks))
        })
        .collect();
    // As PostgREST: the NOT NULL columns (a row read back always has them).
    let required: Vec<&str> = t
        .columns
        .iter()
        .filter(|c| !c.nullable)
        .map(|c| c.name.as_str())
        .collect();
    let mut d = Map::new();
    d.insert("type".into(), "object".into());
    d.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        d.insert("required".into(), json!(required));
    }
    if let Some(desc) = &t.description {
        d.insert("description".into(), desc.as_str().into());
    }
    Value::Object(d)
}

fn prefer(values: &[&str]) -> Value {
    json!({"name": "Prefer", "description": "Preference", "required": false, "in": "header",
           "type": "string", "enum": values})
}

fn plain(name: &str, description: &str, place: &str) -> Value {
    json!({"name": name, "description": description, "required": false, "in": place,
           "type": "string"})
}

/// The parameters every relation shares.
fn shared_parameters(params: &mut Map<String, Value>) {
    const RETURN: [&str; 3] = ["return=representation", "return=minimal", "return=none"];
    params.insert("preferParams".into(), prefer(&["params=single-object"]));
    params.insert("preferReturn".into(), prefer(&RETURN));
    params.insert("preferCount".into(), prefer(&["count=none"]));
    let mut post = RETURN.to_vec();
    post.extend([
        "resolution=ignore-duplicates",
        "resolution=merge-duplicates",
    ]);
    params.insert("preferPost".into(), prefer(&post));
    params.insert(
        "select".into(),
        plain("select", "Filtering Columns", "query"),
    );
    params.insert(
        "on_conflict".into(),
        plain("on_conflict", "On Conflict", "query"),
    );
    params.insert("order".into(), plain("order", "Ordering", "query"));
    params.insert(
        "range".into(),
        plain("Range", "Limiting and Pagination", "header"),
    );
    let mut unit = plain("Range-Unit", "Limiting and Pagination", "header");
    unit["default"] = "items".into();
    params.insert("rangeUnit".into(), unit);
    params.insert(
        "offset".into(),
        plain("offset", "Limiting and Pagination", "query"),
    );
    params.insert(
        "limit".into(),
        plain("limit", "Limiting and Pagination", "query"),
    );
}

fn relation_item(
    t: &Table,
    access: &RelationAccess,
    params: &mut Map<String, Value>,
) -> Map<String, Value> {
    let meta: HashMap<&str, &ColumnMeta> = access
        .columns
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let mut filters = Vec::with_capacity(t.columns.len());
    for c in &t.columns {
        let key = format!("rowFilter.{}.{}", t.name, c.name);
        let m = meta.get(c.name.as_str()).copied();
        let mut p = json!({"name": c.name, "required": false, "in": "query", "type": "string"});
        if let Some(d) = m.and_then(|m| m.description.as_deref()) {
            p["description"] = d.into();
        }
        p["format"] = m
            .map(|m| m.data_type.clone())
            .unwrap_or_else(|| without_typmod(&c.type_name))
            .into();
        filters.push(reference("parameters", &key));
        params.insert(key, p);
    }
    let body_key = format!("body.{}", t.name);
    params.insert(
        body_key.clone(),
        json!({"name": t.name, "description": t.name, "required": false, "in": "body",
               "schema": reference("definitions", &t.name)}),
    );
    let refs = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| reference("parameters", n))
            .collect::<Vec<_>>()
    };
    let op = |parameters: Vec<Value>, responses: Value| {
        let mut o = Map::new();
        o.insert("tags".into(), json!([t.name]));
        summary_and_description(&mut o, t.description.as_deref());
        o.insert("parameters".into(), Value::Array(parameters));
        o.insert("responses".into(), responses);
        Value::Object(o)
    };
    let mut item = Map::new();
    if access.select {
        let mut p = filters.clone();
        p.extend(refs(&[
            "select",
            "order",
            "range",
            "rangeUnit",
            "offset",
            "limit",
            "preferCount",
        ]));
        item.insert(
            "get".into(),
            op(
                p,
                json!({
                    "200": {"description": "OK", "schema": {"type": "array",
                            "items": reference("definitions", &t.name)}},
                    "206": {"description": "Partial Content"}
                }),
            ),
        );
    }
    if t.insertable && access.insert {
        item.insert(
            "post".into(),
            op(
                refs(&[&body_key, "select", "preferPost"]),
                json!({"201": {"description": "Created"}}),
            ),
        );
    }
    if t.updatable && access.update {
        let mut p = filters.clone();
        p.extend(refs(&[&body_key, "preferReturn"]));
        item.insert(
            "patch".into(),
            op(p, json!({"204": {"description": "No Content"}})),
        );
    }
    if t.deletable && access.delete {
        let mut p = filters;
        p.extend(refs(&["preferReturn"]));
        item.insert(
            "delete".into(),
            op(p, json!({"204": {"description": "No Content"}})),
        );
    }
    item
}

/// Callable over RPC (PostgREST's rule): every input argument named, or one unnamed
/// argument of a body type that receives the whole request body.
fn callable(f: &Function) -> bool {
    (f.args.iter().all(|a| !a.name.is_empty()) || whole_body(f).is_some())
        && f.return_type != "trigger"
        && f.return_type != "event_trigger"
}

/// The type of the single unnamed argument that takes the whole body, if that is `f`.
fn whole_body(f: &Function) -> Option<&str> {
    match f.args.as_slice() {
        [a] if a.name.is_empty()
            && matches!(
                a.type_name.as_str(),
                "json" | "jsonb" | "text" | "bytea" | "xml"
            ) =>
        {
            Some(a.type_name.as_str())
        }
        _ => None,
    }
}

fn rpc_item(f: &Function, description: Option<&str>) -> Map<String, Value> {
    let base = || {
        let mut o = Map::new();
        o.insert("tags".into(), json!([format!("(rpc) {}", f.name)]));
        summary_and_description(&mut o, description);
        o.insert(
            "produces".into(),
            json!([
                "application/json",
                "application/vnd.pgrst.object+json;nulls=stripped",
                "application/vnd.pgrst.object+json"
            ]),
        );
        o.insert("responses".into(), json!({"200": {"description": "OK"}}));
        o
    };
    let mut props = Map::new();
    let mut required = vec![];
    for a in &f.args {
        let mut s = Map::new();
        typed(&mut s, &a.type_name);
        props.insert(a.name.clone(), Value::Object(s));
        if !a.has_default {
            required.push(a.name.as_str());
        }
    }
    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    if let Some(d) = description {
        schema.insert("description".into(), d.into());
    }
    // One unnamed argument: the body is its value, not an object of named arguments; it
    // cannot be given in a query string.
    if let Some(t) = whole_body(f) {
        let mut body = Map::new();
        typed(&mut body, t);
        if let Some(d) = description {
            body.insert("description".into(), d.into());
        }
        let mut post = base();
        post.insert(
            "parameters".into(),
            json!([{"name": "args", "required": true, "in": "body", "schema": body}]),
        );
        let mut item = Map::new();
        item.insert("post".into(), Value::Object(post));
        return item;
    }
    let mut post = base();
    post.insert(
        "parameters".into(),
        json!([
            {"name": "args", "required": true, "in": "body", "schema": schema},
            reference("parameters", "preferParams")
        ]),
    );
    let mut item = Map::new();
    item.insert("post".into(), Value::Object(post));
    if f.volatility != 'v' {
        let params: Vec<Value> = f
            .args
            .iter()
            .map(|a| {
                let mut p = Map::new();
                p.insert("name".into(), a.name.as_str().into());
                p.insert("required".into(), (!a.has_default).into());
                p.insert("in".into(), "query".into());
                match a.type_name.strip_suffix("[]") {
                    // `?v=1&v=2` for a VARIADIC argument.
                    Some(elem) if a.variadic => {
                        let mut items = Map::new();
                        items.insert("type".into(), swagger_type(elem).unwrap_or("string").into());
                        items.insert("format".into(), elem.into());
                        p.insert("type".into(), "array".into());
                        p.insert("collectionFormat".into(), "multi".into());
                        p.insert("items".into(), Value::Object(items));
                    }
                    // Arrays go as `{a,b}` and JSON as text: strings in a query.
                    _ => {
                        let ty = match swagger_type(&a.type_name) {
                            Some("array") | None => "string",
                            Some(t) => t,
                        };
                        p.insert("type".into(), ty.into());
                        p.insert("format".into(), a.type_name.as_str().into());
                    }
                }
                Value::Object(p)
            })
            .collect();
        let mut get = base();
        get.insert("parameters".into(), Value::Array(params));
        item.insert("get".into(), Value::Object(get));
    }
    item
}

/// The document for `schema`, as the role whose privileges `catalog` holds sees it.
pub fn render(cache: &SchemaCache, schema: &str, catalog: &Catalog, server: &Server) -> String {
    let mut paths = Map::new();
    let mut defs = Map::new();
    let mut params = Map::new();
    shared_parameters(&mut params);
    paths.insert(
        "/".into(),
        json!({"get": {
            "tags": ["Introspection"],
            "summary": "OpenAPI description (this document)",
            "produces": ["application/openapi+json", "application/json"],
            "responses": {"200": {"description": "OK"}}
        }}),
    );
    let mut fks_by_table: HashMap<&str, Vec<&ForeignKey>> = HashMap::new();
    for fk in &cache.foreign_keys {
        if fk.from.0 == schema {
            fks_by_table.entry(fk.from.1.as_str()).or_default().push(fk);
        }
    }
    let mut relations: Vec<(&Table, &RelationAccess)> = catalog
        .relations
        .iter()
        .filter_map(|a| Some((&**cache.table(schema, &a.name)?, a)))
        .collect();
    relations.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    for (t, access) in relations {
        let fks = fks_by_table
            .get(t.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        defs.insert(t.name.clone(), definition(t, access, fks));
        let item = relation_item(t, access, &mut params);
        if !item.is_empty() {
            paths.insert(path_of("/", &t.name), Value::Object(item));
        }
    }
    let mut functions: Vec<(&Function, Option<&str>)> = vec![];
    for a in &catalog.functions {
        let overload = cache
            .functions(schema, &a.name)
            .iter()
            .find(|f| f.args.iter().map(|x| &x.type_name).eq(a.args.iter()));
        if let Some(f) = overload.filter(|f| callable(f)) {
            functions.push((f, a.description.as_deref()));
        }
    }
    // Overloads share a path: the one with the fewest arguments is described, as the
    // first in (name, arity) order.
    let key = |f: &Function| {
        let types: Vec<&str> = f.args.iter().map(|a| a.type_name.as_str()).collect();
        (f.name.clone(), f.args.len(), types.join(","))
    };
    functions.sort_by_cached_key(|(f, _)| key(f));
    for (f, description) in functions {
        let key = path_of("/rpc/", &f.name);
        if !paths.contains_key(&key) {
            paths.insert(key, Value::Object(rpc_item(f, description)));
        }
    }
    let (title, description) = match catalog.description.as_deref() {
        Some(d) => {
            let (t, rest) = d.split_once('\n').unwrap_or((d, ""));
            (t.to_string(), rest.trim_start_matches('\n').to_string())
        }
        None => (
            "Fluxbase REST API".to_string(),
            "This is a dynamic API generated by Fluxbase (PostgREST-compatible)".to_string(),
        ),
    };
    let media = json!([
        "application/json",
        "application/vnd.pgrst.object+json;nulls=stripped",
        "application/vnd.pgrst.object+json",
        "text/csv"
    ]);
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"title": title, "description": description,
                 "version": env!("CARGO_PKG_VERSION")},
        "externalDocs": {"description": "PostgREST Documentation",
                         "url": "https://postgrest.org/en/v12/references/api.html"},
        "host": server.host,
        "basePath": server.base_path,
        "schemes": [server.scheme],
        "consumes": media,
        "produces": media,
        "paths": paths,
        "definitions": defs,
        "parameters": params,
    });
    if server.security {
        doc["securityDefinitions"] = json!({"JWT": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "Add the token prepending \"Bearer \" (without quotes) to it"
        }});
        doc["security"] = json!([{"JWT": []}]);
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_as_postgrest_maps_them() {
        for (t, want) in [
            ("character varying", Some("string")),
            ("text", Some("string")),
            ("uuid", Some("string")),
            ("timestamp with time zone", Some("string")),
            ("public.mood", Some("string")),
            ("boolean", Some("boolean")),
            ("smallint", Some("integer")),
            ("bigint", Some("integer")),
            ("numeric", Some("number")),
            ("double precision", Some("number")),
            ("json", None),
            ("jsonb", None),
            ("text[]", Some("array")),
        ] {
            assert_eq!(swagger_type(t), want, "{t}");
        }
        let mut s = Map::new();
        typed(&mut s, "integer[]");
        assert_eq!(
            Value::Object(s),
            json!({"type": "array", "items": {"type": "integer"}, "format": "integer[]"})
        );
        let mut s = Map::new();
        typed(&mut s, "jsonb[]");
        assert_eq!(
            Value::Object(s),
            json!({"type": "array", "items": {}, "format": "jsonb[]"})
        );
    }

    #[test]
    fn defaults_parse_as_postgrest_parses_them() {
        assert_eq!(default_value("text", "'hello'::text"), Some(json!("hello")));
        assert_eq!(
            default_value("character varying", "'x'::character varying"),
            Some(json!("x"))
        );
        assert_eq!(
            default_value("timestamp with time zone", "now()"),
            Some(json!("now()"))
        );
        assert_eq!(default_value("integer", "0"), Some(json!(0)));
        assert_eq!(default_value("boolean", "true"), Some(json!(true)));
        assert_eq!(default_value("numeric", "1.5"), Some(json!(1.5)));
        assert_eq!(
            default_value("integer", "nextval('t_id_seq'::regclass)"),
            None
        );
        assert_eq!(default_value("text[]", "'{}'::text[]"), None);
        assert_eq!(
            default_value("public.mood", "'happy'::mood"),
            Some(json!("happy"))
        );
        // A quote inside is not JSON once wrapped: no default rather than a wrong one.
        assert_eq!(default_value("text", "'say \"hi\"'::text"), None);
    }

    #[test]
    fn references_and_paths_are_escaped() {
        assert_eq!(
            reference("parameters", "rowFilter.books.id"),
            json!({"$ref": "#/parameters/rowFilter.books.id"})
        );
        assert_eq!(
            reference("definitions", "odd {name}/x~"),
            json!({"$ref": "#/definitions/odd%20%7Bname%7D~1x~0"})
        );
        assert_eq!(path_of("/", "odd {name}"), "/odd%20%7Bname%7D");
        assert_eq!(path_of("/rpc/", "add"), "/rpc/add");
        assert_eq!(without_typmod("character varying(20)"), "character varying");
        assert_eq!(without_typmod("numeric(10,2)[]"), "numeric[]");
    }

    #[test]
    fn the_server_comes_from_public_url_or_the_request() {
        let s = Server::new("https://api.example.com/base/", "http", "x:1", "/rest/v1");
        assert_eq!(
            (s.scheme.as_str(), s.host.as_str(), s.base_path.as_str()),
            ("https", "api.example.com", "/base/rest/v1")
        );
        let s = Server::new("http://h:8080", "http", "x:1", "/rest/v1");
        assert_eq!(
            (s.host.as_str(), s.base_path.as_str()),
            ("h:8080", "/rest/v1")
        );
        let s = Server::new("", "http", "127.0.0.1:9000", "/rest/v1");
        assert_eq!(
            (s.scheme.as_str(), s.host.as_str(), s.base_path.as_str()),
            ("http", "127.0.0.1:9000", "/rest/v1")
        );
    }
}
