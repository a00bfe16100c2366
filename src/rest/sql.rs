//! sql (pure): a plan → one statement with bound parameters. The JSON body, the row count
//! and the total (for `count=exact`) are built inside Postgres in that statement.
//!
//! Identifiers go through `quote_ident`; every user value is a `$n::text` parameter cast to
//! the column's type in SQL, so Postgres parses it exactly as PostgREST lets it.

use super::parse::{
    Direction, Field, Filter, FtsOp, IsValue, JsonKey, JsonOp, LogicOp, LogicTree, NullsOrder,
    Operation, Quantifier, SimpleOp,
};
use super::plan::{
    CallPlan, Condition, EmbedPlan, ReadPlan, ResolvedOrder, Selected, Source, WritePlan,
};
use crate::db::push_quoted_ident as push_qi;
use crate::db::quote_ident as qi;

/// A statement: text and its parameters (all text; `None` is NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    /// SQL.
    pub text: String,
    /// Parameters, `$1` first.
    pub params: Vec<Option<String>>,
    /// The statement has no `n` column: its body is a JSON array whose elements the caller
    /// counts (`execute::json_array_len`) — cheaper than `count(*)` in Postgres, which
    /// costs ~6k instructions per statement for its aggregate and output column.
    pub n_from_body: bool,
}

/// Read after a plain write (`write(…, plain: true)`, a write answering nothing but its
/// row count, on the wire client): the response settings the statement (its triggers) may
/// have set. The plain DML's command tag gives the row count, so neither `RETURNING` rows,
/// the CTE around them nor the count aggregate are needed: Postgres instructions per
/// single-row `return=minimal` insert with its setup, callgrind on a backend, 218k → 193k
/// (the reference server's one insert: 89k). Not sent when no SQL of the database names
/// the settings (`SchemaCache::response_settings_unnamed`).
pub const PLAIN_WRITE_SETTINGS: &str =
    "SELECT current_setting('response.status', true), current_setting('response.headers', true)";

/// Every statement answers one row whose first columns are `n` (int8, rows in the body;
/// absent when the caller counts a JSON array body, `Statement::n_from_body`) and `body`
/// (text); `total` (int8, NULL unless counted) follows when counted or when the
/// response settings follow it: `response.status` and `response.headers` as the SQL set
/// them (PostgREST's way for functions to choose a status and headers), read only when
/// `read` (some SQL of the database may set them: `SchemaCache::response_settings_unnamed`
/// is false). Columns not needed are not selected at all: each costs Postgres executor
/// start-up and projection work at every level of the merged read — `NULL` placeholders
/// for `total`, `status` and `headers` cost ~11k instructions per single-row GET
/// (`bench/pg_ir.sh`, single_no_settings vs single_two_columns), the two `current_setting`
/// calls ~2.7k more. The reader takes missing trailing columns as NULL.
fn response_gucs(read: bool) -> &'static str {
    if read {
        concat!(", NULL::int8 AS total", response_settings_columns!())
    } else {
        ""
    }
}

/// The response settings' columns (a macro so that `response_gucs` can `concat!` it).
macro_rules! response_settings_columns {
    () => {
        ", current_setting('response.status', true) AS status, \
         current_setting('response.headers', true) AS headers"
    };
}
use response_settings_columns;

/// The response settings' columns alone, after a counted `total`.
const RESPONSE_SETTINGS_COLUMNS: &str = response_settings_columns!();

/// How the body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape {
    /// A JSON array of rows.
    Array,
    /// The single row as an object (`vnd.pgrst.object+json`); `n` tells whether there was one.
    Object,
    /// No body (`return=minimal`).
    None,
    /// `text/csv`.
    Csv,
    /// A JSON array of rows without their null-valued keys (`nulls=stripped`).
    ArrayStripped,
    /// The single row without its null-valued keys (`object+json;nulls=stripped`).
    ObjectStripped,
}

struct Builder {
    params: Vec<Option<String>>,
}

impl Builder {
    fn bind(&mut self, v: impl Into<String>) -> String {
        let mut p = String::with_capacity(10);
        self.push_bind(&mut p, v);
        p
    }

    /// Binds `v` and writes its `$n::text` onto `out`, cast to `ty` when given
    /// (`CAST($n::text AS ty)`) — or, for a built-in type whose input function runs no SQL
    /// of the database ([`typed_parameter`]), the parameter typed as `ty` itself
    /// (`$n::ty`): Postgres parses the text with the type's input function when binding,
    /// as the reference server's `$1` is, instead of building a text value and
    /// converting it at execution (~3k instructions per single-row GET, `bench/pg_ir.sh`
    /// single_two_columns vs single_typed_parameter). Every parameter is sent as text
    /// either way (the wire client's Bind, [`TextParam`] for tokio-postgres).
    fn push_cast(&mut self, out: &mut String, v: impl Into<String>, ty: Option<&str>) {
        match ty {
            Some(t) if typed_parameter(t) => {
                self.params.push(Some(v.into()));
                push_param_number(out, self.params.len());
                out.push_str("::");
                out.push_str(t);
            }
            Some(t) => {
                out.push_str("CAST(");
                self.push_bind(out, v);
                out.push_str(" AS ");
                out.push_str(t);
                out.push(')');
            }
            None => self.push_bind(out, v),
        }
    }

    /// Binds `v` and writes `$n::text` onto `out` (no `format!`: a bound value is written
    /// for nearly every filter).
    fn push_bind(&mut self, out: &mut String, v: impl Into<String>) {
        self.params.push(Some(v.into()));
        push_param(out, self.params.len());
    }
}

/// `$n::text`.
fn push_param(out: &mut String, n: usize) {
    push_param_number(out, n);
    out.push_str("::text");
}

/// `$n`.
fn push_param_number(out: &mut String, n: usize) {
    out.push('$');
    match u8::try_from(n) {
        Ok(d @ 0..=9) => out.push(char::from(b'0' + d)),
        _ => {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
    }
}

/// Whether a value compared with a column of type `ty` (as the schema cache names it) may
/// be bound as a parameter of that type: built-in types only (written as `format_type`
/// writes them, without a type modifier), whose input functions are Postgres's own. A
/// domain, enum or extension type keeps `CAST($n::text AS ty)`, so that nothing of the
/// database — a domain's CHECK calling a function — runs at bind time, before the
/// request's settings hold; so do the date/time types, whose input depends on `timezone`
/// (`now`, `today`, offsets), which `Prefer: timezone` sets inside the statement.
fn typed_parameter(ty: &str) -> bool {
    matches!(
        ty,
        "integer"
            | "bigint"
            | "smallint"
            | "text"
            | "boolean"
            | "uuid"
            | "numeric"
            | "real"
            | "double precision"
            | "character varying"
            | "jsonb"
    )
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The current row of a level as one value, for a function taking it: `"alias".*`, or,
/// when the rows are records of a CTE (a write's representation), that row cast to the
/// relation's type.
fn row_expr(r: &ReadPlan) -> String {
    if r.row_cast {
        format!(
            "CAST(ROW({}.*) AS {}.{})",
            qi(&r.alias),
            qi(&r.table.schema),
            qi(&r.table.name)
        )
    } else {
        format!("{}.*", qi(&r.alias))
    }
}

/// A field of a level: `"alias"."column"`, or for a computed column the call of its
/// function on the row (`"schema"."fn"("alias".*)`).
fn field_expr(r: &ReadPlan, f: &Field) -> String {
    let mut e = match r.computed.iter().find(|c| c.name == f.name) {
        Some(c) => format!("{}.{}({})", qi(&c.schema), qi(&c.name), row_expr(r)),
        None => {
            let mut e = String::with_capacity(r.alias.len() + f.name.len() + 24);
            push_qi(&mut e, &r.alias);
            e.push('.');
            push_qi(&mut e, &f.name);
            e
        }
    };
    // JSON arrows apply to `to_jsonb(col)`, as PostgREST does: on json and jsonb columns
    // alike, and on composite and array columns (`location->>lat`, `languages->0`).
    if !f.json_path.is_empty() {
        e = format!("to_jsonb({e})");
    }
    for op in &f.json_path {
        let (arrow, key) = match op {
            JsonOp::Arrow(k) => ("->", k),
            JsonOp::DoubleArrow(k) => ("->>", k),
        };
        let k = match key {
            JsonKey::Key(k) => literal(k),
            JsonKey::Index(i) => i.to_string(),
        };
        e = format!("{e}{arrow}{k}");
    }
    e
}

/// The type a bound value is cast to for a filter on `f` whose column is `col_type`.
fn value_type<'a>(f: &Field, col_type: &'a str) -> Option<&'a str> {
    match f.json_path.last() {
        None => Some(col_type),
        Some(JsonOp::DoubleArrow(_)) => None,
        Some(JsonOp::Arrow(_)) => Some("jsonb"),
    }
}

fn lhs_for(r: &ReadPlan, f: &Field) -> String {
    let e = field_expr(r, f);
    match f.json_path.last() {
        // `json` has no equality; compare as jsonb.
        Some(JsonOp::Arrow(_)) => format!("({e})::jsonb"),
        _ => e,
    }
}

fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

fn filter_sql(b: &mut Builder, r: &ReadPlan, f: &Filter, col_type: &str) -> String {
    let lhs = lhs_for(r, &f.field);
    let ty = value_type(&f.field, col_type);
    let cond = match &f.operation {
        Operation::Simple { op, value } => match op {
            SimpleOp::Like | SimpleOp::Ilike | SimpleOp::Match | SimpleOp::Imatch => {
                format!("({lhs})::text {} {}", op.sql(), b.bind(value.as_str()))
            }
            // The commonest filter (`col=eq.v`): written onto `lhs` itself, no `format!`.
            _ => {
                let mut c = lhs;
                c.push(' ');
                c.push_str(op.sql());
                c.push(' ');
                b.push_cast(&mut c, value.as_str(), ty);
                c
            }
        },
        Operation::Quantified {
            op,
            quantifier,
            value,
        } => {
            let q = match quantifier {
                Quantifier::Any => "ANY",
                Quantifier::All => "ALL",
            };
            match op {
                SimpleOp::Like | SimpleOp::Ilike | SimpleOp::Match | SimpleOp::Imatch => {
                    format!(
                        "({lhs})::text {} {q}(CAST({} AS text[]))",
                        op.sql(),
                        b.bind(value.as_str())
                    )
                }
                _ => {
                    let arr = ty
                        .map(|t| format!("{t}[]"))
                        .unwrap_or_else(|| "text[]".into());
                    format!(
                        "{lhs} {} {q}(CAST({} AS {arr}))",
                        op.sql(),
                        b.bind(value.as_str())
                    )
                }
            }
        }
        Operation::In(items) => {
            if items.is_empty() {
                "false".into()
            } else {
                let arr = ty
                    .map(|t| format!("{t}[]"))
                    .unwrap_or_else(|| "text[]".into());
                format!(
                    "{lhs} = ANY(CAST({} AS {arr}))",
                    b.bind(array_literal(items))
                )
            }
        }
        Operation::Is(v) => format!(
            "{lhs} IS {}",
            match v {
                IsValue::Null => "NULL",
                IsValue::NotNull => "NOT NULL",
                IsValue::True => "TRUE",
                IsValue::False => "FALSE",
                IsValue::Unknown => "UNKNOWN",
            }
        ),
        Operation::Fts {
            op,
            language,
            value,
        } => {
            let func = match op {
                FtsOp::Fts => "to_tsquery",
                FtsOp::Plain => "plainto_tsquery",
                FtsOp::Phrase => "phraseto_tsquery",
                FtsOp::Websearch => "websearch_to_tsquery",
            };
            let (vec_lang, q) = match language {
                Some(l) => {
                    let lp = b.bind(l.as_str());
                    (
                        format!("CAST({lp} AS regconfig), "),
                        format!(
                            "{func}(CAST({lp} AS regconfig), {})",
                            b.bind(value.as_str())
                        ),
                    )
                }
                None => (String::new(), format!("{func}({})", b.bind(value.as_str()))),
            };
            if col_type == "tsvector" && f.field.json_path.is_empty() {
                format!("{lhs} @@ {q}")
            } else {
                format!("to_tsvector({vec_lang}({lhs})::text) @@ {q}")
            }
        }
    };
    if f.negated {
        format!("NOT ({cond})")
    } else {
        cond
    }
}

fn tree_sql(b: &mut Builder, r: &ReadPlan, t: &LogicTree, types: &[(String, String)]) -> String {
    match t {
        LogicTree::Filter(f) => {
            let ty = types
                .iter()
                .find(|(n, _)| n == &f.field.name)
                .map(|(_, t)| t.as_str())
                .unwrap_or("text");
            filter_sql(b, r, f, ty)
        }
        LogicTree::Expr {
            negated,
            op,
            children,
        } => {
            let sep = match op {
                LogicOp::And => " AND ",
                LogicOp::Or => " OR ",
            };
            let inner: Vec<String> = children.iter().map(|c| tree_sql(b, r, c, types)).collect();
            let e = format!("({})", inner.join(sep));
            if *negated {
                format!("NOT {e}")
            } else {
                e
            }
        }
    }
}

fn join_sql(parent: &str, e: &EmbedPlan) -> Vec<String> {
    if let Some(j) = &e.junction {
        let mut conds: Vec<String> = j
            .parent
            .iter()
            .map(|(jc, pc)| format!("_fx_j.{} = {}.{}", qi(jc), qi(parent), qi(pc)))
            .collect();
        conds.extend(
            j.child
                .iter()
                .map(|(jc, cc)| format!("_fx_j.{} = {}.{}", qi(jc), qi(&e.child.alias), qi(cc))),
        );
        return vec![format!(
            "EXISTS (SELECT 1 FROM {}.{} AS _fx_j WHERE {})",
            qi(&j.schema),
            qi(&j.name),
            conds.join(" AND ")
        )];
    }
    e.join
        .iter()
        .map(|(p, c)| {
            format!(
                "{}.{} = {}.{}",
                qi(&e.child.alias),
                qi(c),
                qi(parent),
                qi(p)
            )
        })
        .collect()
}

/// The FROM item of an embedded read and its join conditions with the parent level: the
/// related relation joined on its key columns, or a computed relationship's function
/// called on the parent's row (no join condition: the function relates them).
fn embed_source(parent: &ReadPlan, e: &EmbedPlan) -> (String, Vec<String>) {
    let c = &e.child;
    match &c.source {
        Source::Computed { schema, name, .. } => (
            format!(
                "{}.{}({}) AS {}",
                qi(schema),
                qi(name),
                row_expr(parent),
                qi(&c.alias)
            ),
            Vec::new(),
        ),
        _ => (
            format!(
                "{}.{} AS {}",
                qi(&c.table.schema),
                qi(&c.table.name),
                qi(&c.alias)
            ),
            join_sql(&parent.alias, e),
        ),
    }
}

fn source_sql(b: &mut Builder, r: &ReadPlan) -> String {
    match &r.source {
        Source::Relation(s, n) => {
            // Pushed, not `format!`ed: ~1.1k instructions less per read (callgrind).
            let mut out = String::with_capacity(s.len() + n.len() + r.alias.len() + 12);
            push_qi(&mut out, s);
            out.push('.');
            push_qi(&mut out, n);
            out.push_str(" AS ");
            push_qi(&mut out, &r.alias);
            out
        }
        Source::Computed {
            schema,
            name,
            parent,
        } => format!(
            "{}.{}({}.*) AS {}",
            qi(schema),
            qi(name),
            qi(parent),
            qi(&r.alias)
        ),
        // A set of scalars: its one column is named `pgrst_scalar`.
        Source::Call(call) => format!(
            "{} LATERAL {} AS {}{}",
            args_from(b, call),
            call_expr(call),
            qi(&r.alias),
            if r.scalar { "(pgrst_scalar)" } else { "" }
        ),
    }
}

/// `json_to_record($n) AS _fx_args(...)`, for binding named arguments with their types.
fn args_from(b: &mut Builder, call: &CallPlan) -> String {
    if let (Some(body), Some(arg)) = (&call.whole_body, call.function.args.first()) {
        return format!(
            "(SELECT CAST({} AS {}) AS v) AS _fx_args,",
            b.bind(body.as_str()),
            arg.type_name
        );
    }
    let given: Vec<&crate::schema::Arg> = call
        .function
        .args
        .iter()
        .filter(|a| call.arg_names.contains(&a.name))
        .collect();
    if let Some(values) = call.text_args.as_ref().filter(|v| v.len() == given.len()) {
        if given.is_empty() {
            return String::new();
        }
        let cols: Vec<String> = given
            .iter()
            .zip(values)
            .map(|(a, v)| {
                let mut c = String::with_capacity(a.name.len() + a.type_name.len() + 24);
                b.push_cast(&mut c, v.as_str(), Some(&a.type_name));
                c.push_str(" AS ");
                c.push_str(&qi(&a.name));
                c
            })
            .collect();
        return format!("(SELECT {}) AS _fx_args,", cols.join(", "));
    }
    let cols: Vec<String> = given
        .iter()
        .map(|a| format!("{} {}", qi(&a.name), a.type_name))
        .collect();
    if cols.is_empty() {
        return String::new();
    }
    format!(
        "json_to_record(CAST({} AS json)) AS _fx_args({}),",
        b.bind(call.args_json.as_str()),
        cols.join(", ")
    )
}

fn call_expr(call: &CallPlan) -> String {
    if call.whole_body.is_some() {
        return format!(
            "{}.{}(_fx_args.v)",
            qi(&call.function.schema),
            qi(&call.function.name)
        );
    }
    let args: Vec<String> = call
        .function
        .args
        .iter()
        .filter(|a| call.arg_names.contains(&a.name))
        .map(|a| {
            let v = format!("_fx_args.{}", qi(&a.name));
            // `VARIADIC name := array` (the keyword precedes the named argument).
            let variadic = if a.variadic { "VARIADIC " } else { "" };
            format!("{variadic}{} := {v}", qi(&a.name))
        })
        .collect();
    format!(
        "{}.{}({})",
        qi(&call.function.schema),
        qi(&call.function.name),
        args.join(", ")
    )
}

fn where_sql(b: &mut Builder, r: &ReadPlan, extra: Vec<String>) -> String {
    let mut conds = extra;
    for c in &r.filters {
        conds.push(match c {
            Condition::Filter(f, ty) => filter_sql(b, r, f, ty),
            Condition::Tree(t, types) => tree_sql(b, r, t, types),
            Condition::Exists(e) | Condition::Absent(e) => {
                let (from, join) = embed_source(r, e);
                let w = where_sql(b, &e.child, join);
                let not = if matches!(c, Condition::Absent(_)) {
                    "NOT "
                } else {
                    ""
                };
                format!("{not}EXISTS (SELECT 1 FROM {from}{w})")
            }
        });
    }
    let mut w = String::new();
    for (i, c) in conds.iter().enumerate() {
        w.push_str(if i == 0 { " WHERE " } else { " AND " });
        w.push_str(c);
    }
    w
}

fn order_sql(r: &ReadPlan) -> String {
    let terms: Vec<String> = r.order.iter().map(|o| order_term(r, o)).collect();
    if terms.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", terms.join(", "))
    }
}

fn order_term(r: &ReadPlan, o: &ResolvedOrder) -> String {
    use super::parse::OrderTarget;
    let expr = match (&o.term.target, &o.via) {
        (OrderTarget::Field(f), _) => field_expr(r, f),
        (OrderTarget::Related { field, .. }, Some(e)) => {
            let (from, join) = embed_source(r, e);
            let w = if join.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", join.join(" AND "))
            };
            format!("(SELECT {} FROM {from}{w})", field_expr(&e.child, field))
        }
        (OrderTarget::Related { field, .. }, None) => field_expr(r, field),
    };
    let dir = match o.term.direction {
        Some(Direction::Desc) => " DESC",
        Some(Direction::Asc) => " ASC",
        None => "",
    };
    let nulls = match o.term.nulls {
        Some(NullsOrder::First) => " NULLS FIRST",
        Some(NullsOrder::Last) => " NULLS LAST",
        None => "",
    };
    format!("{expr}{dir}{nulls}")
}

fn range_sql(r: &ReadPlan) -> String {
    let mut s = String::new();
    if let Some(l) = r.range.limit {
        s.push_str(&format!(" LIMIT {l}"));
    }
    if r.range.offset > 0 {
        s.push_str(&format!(" OFFSET {}", r.range.offset));
    }
    s
}

/// One output of a level's select list once its spreads are flattened into it: a column,
/// an embed's JSON, an aggregate, or a value lifted from a spread's lateral join.
struct Out {
    /// The SQL expression at this level (for an aggregate, its input; `*` for `count()`).
    expr: String,
    /// The output key; `None` for `"alias".*` (a star no one needs expanded).
    label: Option<String>,
    /// The aggregate applied at the level the output lands on, with its result cast.
    agg: Option<(super::parse::AggregateFn, Option<String>)>,
    /// `json`: an embed, cast to `jsonb` when it is a grouping key (`json` has no equality).
    json: bool,
}

impl Out {
    fn plain(expr: String, label: &str) -> Out {
        Out {
            expr,
            label: Some(label.to_string()),
            agg: None,
            json: false,
        }
    }
}

/// Every column of a level, one output each (a star that must be named: inside a spread,
/// or as grouping keys).
fn star_outs(r: &ReadPlan) -> Vec<Out> {
    r.table
        .columns
        .iter()
        .map(|c| Out::plain(format!("{}.{}", qi(&r.alias), qi(&c.name)), &c.name))
        .collect()
}

/// The outputs of a level, its spreads flattened in: each spread adds a lateral join to
/// `joins` and lifts its columns (and, from a to-one spread, its aggregates) to this level,
/// as PostgREST 13 does. `name_star`: a star is expanded into its columns.
fn level_outs(b: &mut Builder, r: &ReadPlan, name_star: bool, joins: &mut String) -> Vec<Out> {
    let mut outs = Vec::new();
    for s in &r.select {
        match s {
            Selected::Star if name_star => outs.extend(star_outs(r)),
            Selected::Star => outs.push(Out {
                expr: {
                    let mut e = String::with_capacity(r.alias.len() + 4);
                    push_qi(&mut e, &r.alias);
                    e.push_str(".*");
                    e
                },
                label: None,
                agg: None,
                json: false,
            }),
            Selected::Column { field, label, cast } => {
                let e = field_expr(r, field);
                let e = match cast {
                    Some(c) => format!("CAST({e} AS {c})"),
                    None => e,
                };
                outs.push(Out::plain(e, label));
            }
            Selected::Aggregate {
                func,
                field,
                cast,
                result_cast,
                label,
            } => {
                let expr = match field {
                    Some(f) => {
                        let e = field_expr(r, f);
                        match cast {
                            Some(c) => format!("CAST({e} AS {c})"),
                            None => e,
                        }
                    }
                    None => "*".into(),
                };
                outs.push(Out {
                    expr,
                    label: Some(label.clone()),
                    agg: Some((*func, result_cast.clone())),
                    json: false,
                });
            }
            Selected::Embed(e) if e.spread => outs.extend(spread_outs(b, r, e, joins)),
            Selected::Embed(e) => outs.push(Out {
                expr: embed_sql(b, r, e),
                label: Some(e.label.clone()),
                agg: None,
                json: true,
            }),
        }
    }
    outs
}

/// A spread `...rel(…)`: a `LEFT JOIN LATERAL` (appended to `joins`) whose columns are
/// `_fx_c0`, `_fx_c1`, … and the outputs that read them at the parent level.
///
/// To-one: the related row's outputs as they are (nested spreads flattened the same way);
/// an aggregate's input is selected raw and the aggregate applies at the parent level.
/// To-many: each output becomes the JSON array of its values over the related rows, in
/// the embed's order (`[]` without rows).
fn spread_outs(b: &mut Builder, parent: &ReadPlan, e: &EmbedPlan, joins: &mut String) -> Vec<Out> {
    let c = &e.child;
    let mut inner_joins = String::new();
    let outs = level_outs(b, c, true, &mut inner_joins);
    if outs.is_empty() {
        return outs;
    }
    let (from, join) = embed_source(parent, e);
    let items: Vec<String> = outs
        .iter()
        .enumerate()
        .map(|(k, o)| {
            // `count()` lifted from a to-one spread counts the parents with a related row.
            let expr = if o.expr == "*" { "1" } else { o.expr.as_str() };
            format!("{expr} AS \"_fx_c{k}\"")
        })
        .collect();
    let w = where_sql(b, c, join);
    let mut inner = format!(
        "SELECT {} FROM {from}{inner_joins}{w}{}{}",
        items.join(", "),
        order_sql(c),
        range_sql(c)
    );
    if !e.to_one {
        let arrays: Vec<String> = (0..outs.len())
            .map(|k| format!("coalesce(json_agg(_fx_s.\"_fx_c{k}\"), '[]')::jsonb AS \"_fx_c{k}\""))
            .collect();
        inner = format!("SELECT {} FROM ({inner}) _fx_s", arrays.join(", "));
    }
    let lateral = qi(&c.alias);
    joins.push_str(&format!(
        " LEFT JOIN LATERAL ({inner}) AS {lateral} ON TRUE"
    ));
    outs.into_iter()
        .enumerate()
        .map(|(k, o)| Out {
            expr: format!("{lateral}.\"_fx_c{k}\""),
            label: o.label,
            agg: if e.to_one { o.agg } else { None },
            json: e.to_one && o.json,
        })
        .collect()
}

/// A level's select list, the lateral joins of its spreads (to follow its FROM item) and,
/// when it aggregates, its `GROUP BY`: every other output (columns, embeds, spread
/// columns) is a grouping key, named by position, as PostgREST groups by them.
fn select_parts(b: &mut Builder, r: &ReadPlan) -> (String, String, String) {
    let mut joins = String::new();
    let mut outs = level_outs(b, r, false, &mut joins);
    let grouping = outs.iter().any(|o| o.agg.is_some());
    if grouping && outs.iter().any(|o| o.label.is_none()) {
        outs = outs
            .into_iter()
            .flat_map(|o| match o.label {
                None => star_outs(r),
                Some(_) => vec![o],
            })
            .collect();
    }
    // Written into one string (this runs for every level of every read).
    let mut list = String::with_capacity(outs.len() * 24);
    let mut group = String::new();
    for (i, o) in outs.into_iter().enumerate() {
        if i > 0 {
            list.push_str(", ");
        }
        match o.agg {
            Some((func, cast)) => {
                if cast.is_some() {
                    list.push_str("CAST(");
                }
                list.push_str(func.as_str());
                list.push('(');
                list.push_str(&o.expr);
                list.push(')');
                if let Some(c) = &cast {
                    list.push_str(" AS ");
                    list.push_str(c);
                    list.push(')');
                }
            }
            None => {
                if grouping {
                    group.push_str(if group.is_empty() { " GROUP BY " } else { ", " });
                    group.push_str(&(i + 1).to_string());
                }
                if grouping && o.json {
                    list.push('(');
                    list.push_str(&o.expr);
                    list.push_str(")::jsonb");
                } else {
                    list.push_str(&o.expr);
                }
            }
        }
        if let Some(l) = &o.label {
            list.push_str(" AS ");
            push_qi(&mut list, l);
        }
    }
    // `select=` with only embeds spread away, or `rel()`: an empty object per row.
    if list.is_empty() {
        list.push_str("NULL::int AS \"_fx_none\"");
    }
    (list, joins, group)
}

fn embed_sql(b: &mut Builder, parent: &ReadPlan, e: &EmbedPlan) -> String {
    let (from, join) = embed_source(parent, e);
    let inner = subquery(b, &e.child, from, join);
    if e.to_one {
        format!("(SELECT row_to_json(_fx_e) FROM ({inner}) _fx_e)")
    } else {
        format!("(SELECT coalesce(json_agg(_fx_e), '[]') FROM ({inner}) _fx_e)")
    }
}

fn subquery(b: &mut Builder, r: &ReadPlan, from: String, extra_where: Vec<String>) -> String {
    let (list, joins, group) = select_parts(b, r);
    let w = where_sql(b, r, extra_where);
    let (order, range) = (order_sql(r), range_sql(r));
    let mut out = String::with_capacity(
        16 + list.len()
            + from.len()
            + joins.len()
            + w.len()
            + group.len()
            + order.len()
            + range.len(),
    );
    for part in [
        "SELECT ", &list, " FROM ", &from, &joins, &w, &group, &order, &range,
    ] {
        out.push_str(part);
    }
    out
}

/// CSV from each row's JSON, so column order and labels match the JSON body: a header line
/// from the first row's keys, then one line per row, fields quoted per RFC 4180.
const CSV_BODY: &str = r#"coalesce((SELECT string_agg(CASE WHEN k.key ~ '[",\r\n]' THEN '"' || replace(k.key, '"', '""') || '"' ELSE k.key END, ',') FROM json_each_text(json_agg(row_to_json(_fx_t)) -> 0) AS k) || E'\n' || string_agg((SELECT string_agg(CASE WHEN v.value IS NULL THEN '' WHEN v.value ~ '[",\r\n]' THEN '"' || replace(v.value, '"', '""') || '"' ELSE v.value END, ',') FROM json_each_text(row_to_json(_fx_t)) AS v), E'\n'), '')"#;

fn body_sql(shape: BodyShape) -> &'static str {
    match shape {
        BodyShape::Array => "coalesce(json_agg(_fx_t), '[]')::text",
        BodyShape::Object => "coalesce((json_agg(_fx_t) -> 0)::text, '')",
        BodyShape::None => "''::text",
        BodyShape::Csv => CSV_BODY,
        BodyShape::ArrayStripped => {
            "coalesce(json_agg(json_strip_nulls(row_to_json(_fx_t))), '[]')::text"
        }
        BodyShape::ObjectStripped => {
            "coalesce((json_agg(json_strip_nulls(row_to_json(_fx_t))) -> 0)::text, '')"
        }
    }
}

/// How a read counts the rows without its range (`Prefer: count=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountSql {
    /// No total.
    None,
    /// `count(*)` of every matching row.
    Exact,
    /// `count(*)` of at most this many + 1 rows (`count=estimated`: beyond it, the planner's
    /// estimate from `planned_count` is used).
    UpTo(u64),
}

/// `Prefer: timezone`: a condition whose uncorrelated subquery (an InitPlan, run once
/// before any row of its level is projected) sets `timezone` for the rest of the
/// transaction, so every `timestamptz` in the body is rendered in that zone.
fn timezone_guard(b: &mut Builder, tz: Option<&str>) -> Option<String> {
    tz.map(|tz| {
        format!(
            "(SELECT set_config('timezone', {}, true)) IS NOT NULL",
            b.bind(tz)
        )
    })
}

/// A read: rows, their count, and (when asked) the total without the range.
pub fn read(r: &ReadPlan, shape: BodyShape, count: CountSql, response: bool) -> Statement {
    let gucs = response_gucs(response);
    let mut b = Builder { params: Vec::new() };
    let guard = timezone_guard(&mut b, r.timezone.as_deref());
    let from = source_sql(&mut b, r);
    let inner = subquery(&mut b, r, from, guard.into_iter().collect());
    let total = match count {
        CountSql::None => None,
        CountSql::Exact => {
            let from = source_sql(&mut b, r);
            let w = where_sql(&mut b, r, Vec::new());
            Some(format!("(SELECT count(*) FROM {from}{w})"))
        }
        CountSql::UpTo(n) => {
            let from = source_sql(&mut b, r);
            let w = where_sql(&mut b, r, Vec::new());
            Some(format!(
                "(SELECT count(*) FROM (SELECT 1 FROM {from}{w} LIMIT {}) _fx_c)",
                n.saturating_add(1)
            ))
        }
    };
    // A set of scalars is answered as the array of its values (CSV keeps the
    // `pgrst_scalar` column, as PostgREST's does).
    let body = match (r.scalar, shape) {
        (true, BodyShape::Array | BodyShape::ArrayStripped) => {
            "coalesce(json_agg(_fx_t.pgrst_scalar), '[]')::text"
        }
        (true, BodyShape::Object | BodyShape::ObjectStripped) => {
            "coalesce((json_agg(_fx_t.pgrst_scalar) -> 0)::text, '')"
        }
        _ => body_sql(shape),
    };
    // A JSON array's elements are counted by the caller; the single object (whose row
    // count decides 406), CSV and an empty body keep `count(*)`.
    let n_from_body = matches!(shape, BodyShape::Array | BodyShape::ArrayStripped);
    let total_len = total.as_ref().map_or(0, |t| t.len() + 16);
    let mut text = String::with_capacity(inner.len() + body.len() + gucs.len() + total_len + 64);
    text.push_str(if n_from_body {
        "SELECT "
    } else {
        "SELECT count(*)::int8 AS n, "
    });
    text.push_str(body);
    text.push_str(" AS body");
    match &total {
        Some(t) => {
            text.push_str(", ");
            text.push_str(t);
            text.push_str(" AS total");
            if response {
                text.push_str(RESPONSE_SETTINGS_COLUMNS);
            }
        }
        None => text.push_str(gucs),
    }
    text.push_str(" FROM (");
    text.push_str(&inner);
    text.push_str(") _fx_t");
    Statement {
        text,
        params: b.params,
        n_from_body,
    }
}

/// `count=planned`: the planner's row estimate for the rows without the range, as
/// PostgREST takes it (`Plan Rows` of the top node of `EXPLAIN (FORMAT JSON)`); run in the
/// read's transaction. Its one row holds the plan as `json`.
pub fn planned_count(r: &ReadPlan) -> Statement {
    let mut b = Builder { params: Vec::new() };
    let from = source_sql(&mut b, r);
    let w = where_sql(&mut b, r, Vec::new());
    Statement {
        text: format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {from}{w}"),
        params: b.params,
        n_from_body: false,
    }
}

/// A write, returning what `returning` selects from the affected rows.
pub fn write(
    kind: WriteKind,
    w: &WritePlan,
    body_json: Option<String>,
    shape: BodyShape,
    location: Option<&[String]>,
    plain: bool,
    response: bool,
) -> Statement {
    let gucs = response_gucs(response);
    let mut b = Builder { params: Vec::new() };
    let target = format!(
        "{}.{} AS {}",
        qi(&w.table.schema),
        qi(&w.table.name),
        qi(&w.returning.alias)
    );
    let rowtype = format!("{}.{}", qi(&w.table.schema), qi(&w.table.name));
    let cols: Vec<String> = w.columns.iter().map(|c| qi(c)).collect();
    let alias = qi(&w.returning.alias);
    let dml = match kind {
        WriteKind::Insert | WriteKind::Upsert => {
            // Compared without parsing: stops at the first byte that differs.
            let empty_array = body_json.as_deref().is_some_and(|j| {
                j.bytes()
                    .filter(|c| !c.is_ascii_whitespace())
                    .eq(b"[]".iter().copied())
            });
            if empty_array {
                // `[]` inserts nothing, as PostgREST does (`{}` inserts one row of defaults).
                format!("SELECT {alias}.* FROM {target} WHERE false")
            } else if cols.is_empty() {
                format!("INSERT INTO {target} DEFAULT VALUES RETURNING {alias}.*")
            } else {
                let object = body_json
                    .as_deref()
                    .is_some_and(|j| j.trim_start().starts_with('{'));
                let p = b.bind(body_json.unwrap_or_else(|| "[]".into()));
                let conflict = match (&w.on_conflict, w.merge) {
                    (Some(keys), Some(true)) => {
                        let keys_q: Vec<String> = keys.iter().map(|k| qi(k)).collect();
                        let sets: Vec<String> = w
                            .columns
                            .iter()
                            .filter(|c| !keys.contains(c))
                            .map(|c| format!("{} = EXCLUDED.{}", qi(c), qi(c)))
                            .collect();
                        if sets.is_empty() {
                            format!(" ON CONFLICT ({}) DO NOTHING", keys_q.join(", "))
                        } else {
                            format!(
                                " ON CONFLICT ({}) DO UPDATE SET {}",
                                keys_q.join(", "),
                                sets.join(", ")
                            )
                        }
                    }
                    (Some(keys), _) => {
                        let keys_q: Vec<String> = keys.iter().map(|k| qi(k)).collect();
                        format!(" ON CONFLICT ({}) DO NOTHING", keys_q.join(", "))
                    }
                    (None, _) => String::new(),
                };
                // A single object (the body was validated: `{` starts an object) is read as
                // one record; anything else as an array of them, a lone value wrapped. The
                // wrap re-builds the JSON text: 18.5k of 145k Postgres instructions for a
                // single-row insert (`bench/pg_ir.sh`, insert_record vs insert_no_settings).
                let rows = || {
                    format!(
                        "(SELECT CASE WHEN json_typeof(_fx_b) = 'array' THEN _fx_b ELSE json_build_array(_fx_b) END \
                          FROM CAST({p} AS json) AS _fx_b)"
                    )
                };
                // PUT: only a row matching the URL's key filters is written.
                let matching = if w.must_match_filters {
                    let mut r = w.returning.clone();
                    r.alias = "_fx_p".into();
                    where_sql(&mut b, &r, Vec::new())
                } else {
                    String::new()
                };
                // A column without a default expression may still be an identity column: its
                // sequence (`pg_get_serial_sequence`) gives the next value; for any other
                // column that is NULL, and `nextval(NULL)` is NULL.
                let table_lit = literal(&rowtype);
                let defaults: Vec<Option<String>> = w
                    .columns
                    .iter()
                    .map(|c| {
                        let col = w.table.column(c).filter(|_| w.missing_default)?;
                        match &col.default {
                            Some(d) => Some(d.clone()),
                            None if !col.generated => Some(format!(
                                "nextval(pg_get_serial_sequence({table_lit}, {})::regclass)",
                                literal(c)
                            )),
                            None => None,
                        }
                    })
                    .collect();
                if defaults.iter().any(Option::is_some) {
                    // `missing=default`: per row, a key absent from the object (not one set to
                    // null) takes the column default, evaluated per row (sequences advance).
                    // The default is catalog text (pg_get_expr), cast to the column's type so
                    // the CASE has one type.
                    let exprs: Vec<String> = w
                        .columns
                        .iter()
                        .zip(&defaults)
                        .map(|(c, d)| match d {
                            Some(d) => {
                                let ty = w
                                    .table
                                    .column(c)
                                    .map(|col| col.type_name.as_str())
                                    .unwrap_or("text");
                                format!(
                                    "CASE WHEN _fx_e.j -> {k} IS NOT NULL THEN _fx_p.{q} ELSE CAST(({d}) AS {ty}) END",
                                    k = literal(c),
                                    q = qi(c)
                                )
                            }
                            None => format!("_fx_p.{}", qi(c)),
                        })
                        .collect();
                    let elements = if object {
                        format!("(SELECT CAST({p} AS json)) AS _fx_e(j)")
                    } else {
                        format!("json_array_elements({}) AS _fx_e(j)", rows())
                    };
                    format!(
                        "INSERT INTO {target} ({c}) SELECT {e} FROM {elements}, \
                         LATERAL json_populate_record(NULL::{rowtype}, _fx_e.j) _fx_p{matching}{conflict} RETURNING {alias}.*",
                        c = cols.join(", "),
                        e = exprs.join(", ")
                    )
                } else {
                    let source = if object {
                        format!("json_populate_record(NULL::{rowtype}, CAST({p} AS json))")
                    } else {
                        format!("json_populate_recordset(NULL::{rowtype}, {})", rows())
                    };
                    format!(
                        "INSERT INTO {target} ({c}) SELECT {c} FROM {source} _fx_p{matching}{conflict} RETURNING {alias}.*",
                        c = cols.join(", ")
                    )
                }
            }
        }
        WriteKind::Update => {
            let sets: Vec<String> = w
                .columns
                .iter()
                .map(|c| format!("{} = _fx_p.{}", qi(c), qi(c)))
                .collect();
            if sets.is_empty() {
                // No column to set (`{}`, `[]`): nothing is updated, as PostgREST does. Bind
                // nothing either: a bound parameter the text never uses fails the statement.
                format!("SELECT {alias}.* FROM {target} WHERE false")
            } else {
                let p = b.bind(body_json.unwrap_or_else(|| "{}".into()));
                let wh = write_where(&mut b, w, &target);
                format!(
                    "UPDATE {target} SET {} FROM (SELECT * FROM json_populate_record(NULL::{rowtype}, CAST({p} AS json))) _fx_p{wh} RETURNING {alias}.*",
                    sets.join(", ")
                )
            }
        }
        WriteKind::Delete => {
            let wh = write_where(&mut b, w, &target);
            format!("DELETE FROM {target}{wh} RETURNING {alias}.*")
        }
    };
    if plain {
        // The DML alone (see `PLAIN_WRITE_SETTINGS`): its command tag counts the rows.
        let text = match dml.strip_suffix(&format!(" RETURNING {alias}.*")) {
            Some(t) => t.to_string(),
            None => dml,
        };
        return Statement {
            text,
            params: b.params,
            n_from_body: false,
        };
    }
    // The returned representation reads the affected rows under the same alias, so
    // embeds and select lists work as on reads.
    let mut ret = w.returning.clone();
    ret.source = Source::Relation(String::new(), String::new());
    ret.filters.clear();
    ret.order.clear();
    ret.range = Default::default();
    ret.row_cast = true;
    let (list, joins, group) = select_parts(&mut b, &ret);
    let body = match location {
        // `return=headers-only` on an insert: the body carries the primary key of the first
        // row (a JSON array of text) for the `Location` header.
        Some(pk) if !pk.is_empty() => {
            let vals: Vec<String> = pk
                .iter()
                .map(|c| format!("{alias}.{}::text", qi(c)))
                .collect();
            format!(
                "coalesce((SELECT json_build_array({})::text FROM _fx_rows AS {alias} LIMIT 1), '')",
                vals.join(", ")
            )
        }
        _ => body_sql(shape).to_string(),
    };
    let guard = timezone_guard(&mut b, w.returning.timezone.as_deref())
        .map(|g| format!(" WHERE {g}"))
        .unwrap_or_default();
    let text = format!(
        "WITH _fx_rows AS ({dml}) SELECT count(*)::int8 AS n, {body} AS body{gucs} \
         FROM (SELECT {list} FROM _fx_rows AS {alias}{joins}{guard}{group}) _fx_t"
    );
    Statement {
        text,
        params: b.params,
        n_from_body: false,
    }
}

/// The WHERE of an update or delete. With `limit`/`offset` (PostgREST's limited
/// update/delete), the rows are the first ones of the filtered set in the requested `order`,
/// picked by `ctid` in a subquery (Postgres has no `UPDATE … LIMIT`); the subquery reuses
/// the target's alias, which shadows the outer one inside it.
fn write_where(b: &mut Builder, w: &WritePlan, target: &str) -> String {
    let r = &w.returning;
    if r.range.limit.is_none() && r.range.offset == 0 {
        return where_sql(b, r, Vec::new());
    }
    let alias = qi(&r.alias);
    let inner = where_sql(b, r, Vec::new());
    format!(
        " WHERE {alias}.ctid = ANY(ARRAY(SELECT {alias}.ctid FROM {target}{inner}{}{}))",
        order_sql(r),
        range_sql(r)
    )
}

/// Kinds of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// POST
    Insert,
    /// PUT, or POST with `resolution=…`
    Upsert,
    /// PATCH
    Update,
    /// DELETE
    Delete,
}

/// A call of a function returning one value (or a set of scalars / untyped rows).
pub fn call_scalar(call: &CallPlan, response: bool) -> Statement {
    let gucs = response_gucs(response);
    let mut b = Builder { params: Vec::new() };
    let f = &call.function;
    let from_args = args_from(&mut b, call).trim_end_matches(',').to_string();
    let from = if from_args.is_empty() {
        String::new()
    } else {
        format!(" FROM {from_args}")
    };
    let expr = call_expr(call);
    let text = if f.returns_set {
        if f.returns_composite {
            let src = if from.is_empty() {
                format!(" FROM {expr} _fx_r")
            } else {
                format!("{from}, LATERAL {expr} _fx_r")
            };
            format!("SELECT count(*)::int8 AS n, coalesce(json_agg(_fx_r), '[]')::text AS body{gucs}{src}")
        } else {
            let src = if from.is_empty() {
                format!(" FROM {expr} _fx_r(v)")
            } else {
                format!("{from}, LATERAL {expr} _fx_r(v)")
            };
            format!("SELECT count(*)::int8 AS n, coalesce(json_agg(_fx_r.v), '[]')::text AS body{gucs}{src}")
        }
    } else if f.returns_composite {
        let src = if from.is_empty() {
            format!(" FROM {expr} _fx_r")
        } else {
            format!("{from}, LATERAL {expr} _fx_r")
        };
        format!("SELECT 1::int8 AS n, row_to_json(_fx_r)::text AS body{gucs}{src}")
    } else {
        format!("SELECT 1::int8 AS n, coalesce(to_json({expr})::text, 'null') AS body{gucs}{from}")
    };
    let text = match timezone_guard(&mut b, call.timezone.as_deref()) {
        Some(g) => format!("{text} WHERE {g}"),
        None => text,
    };
    Statement {
        text,
        params: b.params,
        n_from_body: false,
    }
}

/// Golden SQL: request → statement text and parameters, with a hand-made schema cache and
/// no database. A change here is a change of the SQL every request of that shape runs.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::rest::parse::{parse_request, ParseConfig, RequestInput};
    use crate::rest::plan::{plan, Plan};
    use crate::schema::{Column, ForeignKey, Function, SchemaCache, Table};

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            type_name: ty.into(),
            nullable: true,
            default: None,
            generated: false,
        }
    }

    fn table(name: &str, cols: Vec<Column>) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            kind: 'r',
            insertable: true,
            updatable: true,
            deletable: true,
            columns: cols,
            primary_key: vec!["id".into()],
            description: None,
        }
    }

    fn cache() -> SchemaCache {
        let mut c = SchemaCache::default();
        for t in [
            table("authors", vec![col("id", "integer"), col("name", "text")]),
            table(
                "books",
                vec![
                    col("id", "integer"),
                    col("title", "text"),
                    col("author_id", "integer"),
                    col("meta", "jsonb"),
                ],
            ),
        ] {
            c.tables
                .insert((t.schema.clone(), t.name.clone()), std::sync::Arc::new(t));
        }
        c.foreign_keys.push(ForeignKey {
            name: "books_author_id_fkey".into(),
            from: ("public".into(), "books".into()),
            from_columns: vec!["author_id".into()],
            to: ("public".into(), "authors".into()),
            to_columns: vec!["id".into()],
            one_to_one: false,
            via_view: false,
        });
        // A computed column of books and a to-many computed relationship from authors to
        // books.
        add_fns(
            &mut c,
            vec![
                row_fn("title_upper", "books", "text", None, false),
                row_fn("author_books", "authors", "books", Some("books"), false),
            ],
        );
        c
    }

    fn add_fns(c: &mut SchemaCache, fns: Vec<Function>) {
        for f in fns {
            c.functions
                .entry((f.schema.clone(), f.name.clone()))
                .or_default()
                .push(f);
        }
        c.index_computed();
    }

    /// The cache with `authors(books) RETURNS SETOF authors ROWS 1`, which overrides the
    /// foreign key relationship of the same name.
    fn overriding_cache() -> SchemaCache {
        let mut c = cache();
        add_fns(
            &mut c,
            vec![row_fn("authors", "books", "authors", Some("authors"), true)],
        );
        c
    }

    /// `name(arg) RETURNS ret` (`SETOF rel`, `ROWS 1` when `single`).
    fn row_fn(name: &str, arg: &str, ret: &str, rel: Option<&str>, single: bool) -> Function {
        Function {
            schema: "public".into(),
            name: name.into(),
            args: vec![crate::schema::Arg {
                name: String::new(),
                type_name: arg.into(),
                has_default: false,
                variadic: false,
            }],
            returns_set: rel.is_some(),
            return_type: ret.into(),
            return_relation: rel.map(|r| ("public".into(), r.into())),
            returns_composite: rel.is_some(),
            return_columns: Vec::new(),
            volatility: 's',
            row_arg: Some(("public".into(), arg.into())),
            single_row: rel.is_none() || single,
        }
    }

    fn stmt(
        method: &str,
        path: &[&str],
        query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Statement {
        stmt_in(&cache(), method, path, query, headers, body)
    }

    /// The plan of a request against `cache`.
    fn plan_in(
        cache: &SchemaCache,
        method: &str,
        path: &[&str],
        query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Plan {
        let input = RequestInput {
            method,
            path,
            path_schema: None,
            query,
            headers,
            body: body.as_bytes(),
        };
        let mut req = parse_request(&input, &ParseConfig::default()).unwrap();
        plan(&mut req, cache, None).unwrap()
    }

    fn stmt_in(
        cache: &SchemaCache,
        method: &str,
        path: &[&str],
        query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Statement {
        let response = !cache.response_settings_unnamed;
        match plan_in(cache, method, path, query, headers, body) {
            Plan::Read(r) => read(&r, BodyShape::Array, CountSql::None, response),
            Plan::Insert(w) => write(
                WriteKind::Insert,
                &w,
                Some(body.into()),
                BodyShape::None,
                None,
                false,
                response,
            ),
            Plan::Update(w) => write(
                WriteKind::Update,
                &w,
                Some(body.into()),
                BodyShape::None,
                None,
                false,
                response,
            ),
            Plan::Delete(w) => write(
                WriteKind::Delete,
                &w,
                None,
                BodyShape::None,
                None,
                false,
                response,
            ),
            Plan::Upsert(w) => write(
                WriteKind::Upsert,
                &w,
                Some(body.into()),
                BodyShape::None,
                None,
                false,
                response,
            ),
            other => panic!("unexpected plan {other:?}"),
        }
    }

    const TAIL: &str = ", NULL::int8 AS total, current_setting('response.status', true) AS status, current_setting('response.headers', true) AS headers";

    /// A JSON array's rows are counted by the caller; the single object (its row count
    /// decides 406) and CSV keep `count(*)`.
    #[test]
    fn only_array_bodies_leave_n_to_the_caller() {
        let c = cache();
        let Plan::Read(r) = plan_in(&c, "GET", &["books"], "select=id&id=eq.1", &[], "") else {
            panic!("a read")
        };
        for (shape, from_body) in [
            (BodyShape::Array, true),
            (BodyShape::ArrayStripped, true),
            (BodyShape::Object, false),
            (BodyShape::ObjectStripped, false),
            (BodyShape::Csv, false),
        ] {
            let s = read(&r, shape, CountSql::None, false);
            assert_eq!(s.n_from_body, from_body, "{shape:?}");
            assert_eq!(
                s.text.starts_with("SELECT count(*)::int8 AS n, "),
                !from_body,
                "{shape:?}: {}",
                s.text
            );
        }
    }

    #[test]
    fn rpc_get_arguments_of_built_in_types_are_typed_parameters() {
        let mut c = cache();
        c.response_settings_unnamed = true;
        let arg = |name: &str, ty: &str| crate::schema::Arg {
            name: name.into(),
            type_name: ty.into(),
            has_default: false,
            variadic: false,
        };
        add_fns(
            &mut c,
            vec![Function {
                schema: "public".into(),
                name: "scaled".into(),
                args: vec![
                    arg("n", "integer"),
                    arg("m", "public.mood"),
                    arg("d", "date"),
                ],
                returns_set: false,
                return_type: "integer".into(),
                return_relation: None,
                returns_composite: false,
                return_columns: Vec::new(),
                volatility: 's',
                row_arg: None,
                single_row: true,
            }],
        );
        let Plan::CallScalar(call) = plan_in(
            &c,
            "GET",
            &["rpc", "scaled"],
            "n=2&m=happy&d=today",
            &[],
            "",
        ) else {
            panic!("a scalar call")
        };
        let s = call_scalar(&call, false);
        // A built-in type is the parameter's own type; a user type (which may be a domain
        // whose CHECK calls SQL) and a date/time type (whose input depends on `timezone`)
        // are converted at execution.
        assert_eq!(
            s.text,
            "SELECT 1::int8 AS n, coalesce(to_json(\"public\".\"scaled\"(\"n\" := _fx_args.\"n\", \
             \"m\" := _fx_args.\"m\", \"d\" := _fx_args.\"d\"))::text, 'null') AS body FROM (\
             SELECT $1::integer AS \"n\", CAST($2::text AS public.mood) AS \"m\", \
             CAST($3::text AS date) AS \"d\") AS _fx_args"
        );
        assert_eq!(
            s.params,
            vec![Some("2".into()), Some("happy".into()), Some("today".into())]
        );
    }

    #[test]
    fn filtered_ordered_page() {
        let s = stmt(
            "GET",
            &["books"],
            "select=id,title&title=ilike.*gods*&author_id=in.(1,2)&order=id.desc&limit=20",
            &[],
            "",
        );
        assert_eq!(
            s.text,
            format!(
                "SELECT coalesce(json_agg(_fx_t), '[]')::text AS body{TAIL} FROM (\
                 SELECT \"books\".\"id\" AS \"id\", \"books\".\"title\" AS \"title\" FROM \"public\".\"books\" AS \"books\" \
                 WHERE (\"books\".\"title\")::text ilike $1::text AND \"books\".\"author_id\" = ANY(CAST($2::text AS integer[])) \
                 ORDER BY \"books\".\"id\" DESC LIMIT 20) _fx_t"
            )
        );
        assert_eq!(
            s.params,
            vec![Some("%gods%".into()), Some("{\"1\",\"2\"}".into())]
        );
    }

    #[test]
    fn response_settings_unnamed_are_not_read() {
        let mut c = cache();
        c.response_settings_unnamed = true;
        let s = stmt_in(&c, "GET", &["books"], "select=id&id=eq.1", &[], "");
        assert_eq!(
            s.text,
            "SELECT coalesce(json_agg(_fx_t), '[]')::text AS body FROM (\
             SELECT \"books\".\"id\" AS \"id\" FROM \"public\".\"books\" AS \"books\" \
             WHERE \"books\".\"id\" = $1::integer) _fx_t"
        );
        let w = stmt_in(&c, "PATCH", &["books"], "id=eq.1", &[], r#"{"title":"x"}"#);
        assert!(!w.text.contains("current_setting"), "{}", w.text);
        assert!(!w.text.contains("AS status"), "{}", w.text);
        assert!(w.text.contains(" AS body FROM "), "{}", w.text);
        c.response_settings_unnamed = false;
        let w = stmt_in(&c, "PATCH", &["books"], "id=eq.1", &[], r#"{"title":"x"}"#);
        assert!(w.text.contains(TAIL), "{}", w.text);
    }

    #[test]
    fn json_paths_and_embeds() {
        let s = stmt(
            "GET",
            &["books"],
            "select=title,meta->>lang,authors(name)&meta->>lang=eq.en",
            &[],
            "",
        );
        assert_eq!(
            s.text,
            format!(
                "SELECT coalesce(json_agg(_fx_t), '[]')::text AS body{TAIL} FROM (\
                 SELECT \"books\".\"title\" AS \"title\", to_jsonb(\"books\".\"meta\")->>'lang' AS \"lang\", \
                 (SELECT row_to_json(_fx_e) FROM (SELECT \"authors_2\".\"name\" AS \"name\" FROM \"public\".\"authors\" AS \"authors_2\" \
                 WHERE \"authors_2\".\"id\" = \"books\".\"author_id\") _fx_e) AS \"authors\" \
                 FROM \"public\".\"books\" AS \"books\" WHERE to_jsonb(\"books\".\"meta\")->>'lang' = $1::text) _fx_t"
            )
        );
        let s = stmt(
            "GET",
            &["authors"],
            "select=name,books(title)&books.order=title&books.limit=2",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "(SELECT coalesce(json_agg(_fx_e), '[]') FROM (SELECT \"books_2\".\"title\" AS \"title\" FROM \"public\".\"books\" AS \"books_2\" \
                 WHERE \"books_2\".\"author_id\" = \"authors\".\"id\" ORDER BY \"books_2\".\"title\" LIMIT 2) _fx_e) AS \"books\""
            ),
            "{}",
            s.text
        );
    }

    #[test]
    fn values_are_always_parameters() {
        let evil = "1'; DROP TABLE books; --";
        let q = format!("id=eq.{}", evil.replace(' ', "%20").replace(';', "%3B"));
        let s = stmt("GET", &["books"], &q, &[], "");
        assert!(!s.text.contains("DROP"), "{}", s.text);
        assert_eq!(s.params, vec![Some(evil.into())]);
    }

    #[test]
    fn writes() {
        let s = stmt(
            "POST",
            &["authors"],
            "",
            &[("content-type", "application/json")],
            r#" {"name":"x"}"#,
        );
        // One object: one record, no array built around it.
        assert!(
            s.text.starts_with(
                "WITH _fx_rows AS (INSERT INTO \"public\".\"authors\" AS \"authors\" (\"name\") SELECT \"name\" FROM json_populate_record(NULL::\"public\".\"authors\", CAST($1::text AS json)) _fx_p RETURNING"
            ),
            "{}",
            s.text
        );
        assert_eq!(s.params, vec![Some(r#" {"name":"x"}"#.into())]);
        let s = stmt(
            "POST",
            &["authors"],
            "",
            &[("content-type", "application/json")],
            r#"[{"name":"x"}]"#,
        );
        assert!(
            s.text.starts_with(
                "WITH _fx_rows AS (INSERT INTO \"public\".\"authors\" AS \"authors\" (\"name\") SELECT \"name\" FROM json_populate_recordset(NULL::\"public\".\"authors\", (SELECT CASE WHEN json_typeof(_fx_b)"
            ),
            "{}",
            s.text
        );
        let s = stmt(
            "PATCH",
            &["authors"],
            "id=eq.3",
            &[("content-type", "application/json")],
            r#"{"name":"y"}"#,
        );
        assert!(
            s.text.contains(
                "UPDATE \"public\".\"authors\" AS \"authors\" SET \"name\" = _fx_p.\"name\""
            ),
            "{}",
            s.text
        );
        assert!(
            s.text
                .contains("WHERE \"authors\".\"id\" = $2::integer RETURNING \"authors\".*"),
            "{}",
            s.text
        );
        let s = stmt("DELETE", &["authors"], "id=eq.3", &[], "");
        assert!(s.text.contains("DELETE FROM \"public\".\"authors\" AS \"authors\" WHERE \"authors\".\"id\" = $1::integer RETURNING"), "{}", s.text);
    }

    #[test]
    fn limited_writes_pick_rows_by_ctid_in_order() {
        let s = stmt(
            "DELETE",
            &["authors"],
            "id=gt.3&order=id.desc&limit=2&offset=1",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "DELETE FROM \"public\".\"authors\" AS \"authors\" WHERE \"authors\".ctid = ANY(ARRAY(\
                 SELECT \"authors\".ctid FROM \"public\".\"authors\" AS \"authors\" \
                 WHERE \"authors\".\"id\" > $1::integer ORDER BY \"authors\".\"id\" DESC LIMIT 2 OFFSET 1)) RETURNING"
            ),
            "{}",
            s.text
        );
        let s = stmt(
            "PATCH",
            &["authors"],
            "order=id&limit=1",
            &[("content-type", "application/json")],
            r#"{"name":"y"}"#,
        );
        assert!(
            s.text.contains(
                "_fx_p WHERE \"authors\".ctid = ANY(ARRAY(SELECT \"authors\".ctid FROM \"public\".\"authors\" AS \"authors\" ORDER BY \"authors\".\"id\" LIMIT 1)) RETURNING"
            ),
            "{}",
            s.text
        );
    }

    #[test]
    fn put_writes_only_rows_matching_the_url() {
        let s = stmt(
            "PUT",
            &["authors"],
            "id=eq.3",
            &[("content-type", "application/json")],
            r#"{"id":3,"name":"y"}"#,
        );
        assert!(
            s.text.contains(
                "_fx_p WHERE \"_fx_p\".\"id\" = $2::integer ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
            ),
            "{}",
            s.text
        );
    }

    #[test]
    fn computed_columns_are_calls_on_the_row() {
        let s = stmt(
            "GET",
            &["books"],
            "select=id,big:title_upper::varchar&title_upper=like.A*&or=(title_upper.eq.B,id.eq.1)&order=title_upper.desc",
            &[],
            "",
        );
        assert_eq!(
            s.text,
            format!(
                "SELECT coalesce(json_agg(_fx_t), '[]')::text AS body{TAIL} FROM (\
                 SELECT \"books\".\"id\" AS \"id\", CAST(\"public\".\"title_upper\"(\"books\".*) AS varchar) AS \"big\" \
                 FROM \"public\".\"books\" AS \"books\" \
                 WHERE (\"public\".\"title_upper\"(\"books\".*))::text like $1::text \
                 AND (\"public\".\"title_upper\"(\"books\".*) = $2::text OR \"books\".\"id\" = $3::integer) \
                 ORDER BY \"public\".\"title_upper\"(\"books\".*) DESC) _fx_t"
            )
        );
        assert_eq!(
            s.params,
            vec![Some("A%".into()), Some("B".into()), Some("1".into())]
        );
        // `*` is the real columns only.
        let s = stmt("GET", &["books"], "select=*", &[], "");
        assert!(!s.text.contains("title_upper"), "{}", s.text);
    }

    #[test]
    fn computed_relationships_call_the_function_on_the_parent_row() {
        let s = stmt(
            "GET",
            &["authors"],
            "select=name,author_books(title,title_upper)&author_books.order=title_upper",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "(SELECT coalesce(json_agg(_fx_e), '[]') FROM (SELECT \"books_2\".\"title\" AS \"title\", \
                 \"public\".\"title_upper\"(\"books_2\".*) AS \"title_upper\" \
                 FROM \"public\".\"author_books\"(\"authors\".*) AS \"books_2\" \
                 ORDER BY \"public\".\"title_upper\"(\"books_2\".*)) _fx_e) AS \"author_books\""
            ),
            "{}",
            s.text
        );
        // `authors(books)` overrides the foreign key of the same name (to-one: ROWS 1)…
        let c = overriding_cache();
        let s = stmt_in(
            &c,
            "GET",
            &["books"],
            "select=title,authors!inner(name)",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "(SELECT row_to_json(_fx_e) FROM (SELECT \"authors_2\".\"name\" AS \"name\" \
                 FROM \"public\".\"authors\"(\"books\".*) AS \"authors_2\") _fx_e) AS \"authors\""
            ),
            "{}",
            s.text
        );
        assert!(
            s.text.contains(
                "WHERE EXISTS (SELECT 1 FROM \"public\".\"authors\"(\"books\".*) AS \"authors_2\")"
            ),
            "{}",
            s.text
        );
        // …even with a hint, which does not apply to it; the key's column still names
        // the foreign key.
        let s = stmt_in(
            &c,
            "GET",
            &["books"],
            "select=title,authors!books_author_id_fkey(name)",
            &[],
            "",
        );
        assert!(
            s.text
                .contains("FROM \"public\".\"authors\"(\"books\".*) AS \"authors_2\""),
            "{}",
            s.text
        );
        let s = stmt_in(
            &c,
            "GET",
            &["books"],
            "select=title,author_id(name)",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "FROM \"public\".\"authors\" AS \"authors_2\" WHERE \"authors_2\".\"id\" = \"books\".\"author_id\""
            ),
            "{}",
            s.text
        );
    }

    #[test]
    fn a_written_row_is_cast_to_its_type_for_functions_of_it() {
        let s = stmt_in(
            &overriding_cache(),
            "POST",
            &["books"],
            "select=id,title_upper,authors(name)",
            &[("content-type", "application/json")],
            r#"{"title":"x"}"#,
        );
        assert!(
            s.text.contains(
                "SELECT \"books\".\"id\" AS \"id\", \"public\".\"title_upper\"(CAST(ROW(\"books\".*) AS \"public\".\"books\")) AS \"title_upper\", \
                 (SELECT row_to_json(_fx_e) FROM (SELECT \"authors_2\".\"name\" AS \"name\" \
                 FROM \"public\".\"authors\"(CAST(ROW(\"books\".*) AS \"public\".\"books\")) AS \"authors_2\") _fx_e) AS \"authors\" \
                 FROM _fx_rows AS \"books\""
            ),
            "{}",
            s.text
        );
    }

    #[test]
    fn spreads_are_lateral_joins_lifted_into_the_parent() {
        // To-one: the related row's outputs, read by the parent from the lateral join.
        let s = stmt(
            "GET",
            &["books"],
            "select=title,...authors(who:name)",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "SELECT \"books\".\"title\" AS \"title\", \"authors_2\".\"_fx_c0\" AS \"who\" \
                 FROM \"public\".\"books\" AS \"books\" LEFT JOIN LATERAL (SELECT \"authors_2\".\"name\" AS \"_fx_c0\" \
                 FROM \"public\".\"authors\" AS \"authors_2\" WHERE \"authors_2\".\"id\" = \"books\".\"author_id\") \
                 AS \"authors_2\" ON TRUE) _fx_t"
            ),
            "{}",
            s.text
        );
        // To-many: one JSON array per output, in the embed's order.
        let s = stmt(
            "GET",
            &["authors"],
            "select=name,...books(*)&books.order=id",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "LEFT JOIN LATERAL (SELECT coalesce(json_agg(_fx_s.\"_fx_c0\"), '[]')::jsonb AS \"_fx_c0\", \
                 coalesce(json_agg(_fx_s.\"_fx_c1\"), '[]')::jsonb AS \"_fx_c1\", \
                 coalesce(json_agg(_fx_s.\"_fx_c2\"), '[]')::jsonb AS \"_fx_c2\", \
                 coalesce(json_agg(_fx_s.\"_fx_c3\"), '[]')::jsonb AS \"_fx_c3\" \
                 FROM (SELECT \"books_2\".\"id\" AS \"_fx_c0\", \"books_2\".\"title\" AS \"_fx_c1\", \
                 \"books_2\".\"author_id\" AS \"_fx_c2\", \"books_2\".\"meta\" AS \"_fx_c3\" \
                 FROM \"public\".\"books\" AS \"books_2\" WHERE \"books_2\".\"author_id\" = \"authors\".\"id\" \
                 ORDER BY \"books_2\".\"id\") _fx_s) AS \"books_2\" ON TRUE"
            ),
            "{}",
            s.text
        );
        assert!(
            s.text.contains("\"books_2\".\"_fx_c1\" AS \"title\""),
            "{}",
            s.text
        );
        // An aggregate in a to-one spread applies at the parent level.
        let s = stmt(
            "GET",
            &["books"],
            "select=title,...authors(n:count(),id.max())",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "SELECT \"books\".\"title\" AS \"title\", count(\"authors_2\".\"_fx_c0\") AS \"n\", \
                 max(\"authors_2\".\"_fx_c1\") AS \"max\" FROM \"public\".\"books\" AS \"books\" \
                 LEFT JOIN LATERAL (SELECT 1 AS \"_fx_c0\", \"authors_2\".\"id\" AS \"_fx_c1\""
            ),
            "{}",
            s.text
        );
        assert!(s.text.contains("ON TRUE GROUP BY 1) _fx_t"), "{}", s.text);
    }

    #[test]
    fn an_embed_beside_an_aggregate_is_a_grouping_key() {
        let s = stmt(
            "GET",
            &["books"],
            "select=count(),authors(name),title",
            &[],
            "",
        );
        assert!(
            s.text.contains(
                "SELECT count(*) AS \"count\", ((SELECT row_to_json(_fx_e) FROM (SELECT \"authors_2\".\"name\" AS \"name\" \
                 FROM \"public\".\"authors\" AS \"authors_2\" WHERE \"authors_2\".\"id\" = \"books\".\"author_id\") _fx_e))::jsonb \
                 AS \"authors\", \"books\".\"title\" AS \"title\" FROM \"public\".\"books\" AS \"books\" GROUP BY 2, 3"
            ),
            "{}",
            s.text
        );
        // `*` beside an aggregate is expanded: each column is a key.
        let s = stmt("GET", &["authors"], "select=*,count()", &[], "");
        assert!(
            s.text.contains(
                "SELECT \"authors\".\"id\" AS \"id\", \"authors\".\"name\" AS \"name\", count(*) AS \"count\" \
                 FROM \"public\".\"authors\" AS \"authors\" GROUP BY 1, 2"
            ),
            "{}",
            s.text
        );
    }
}
