//! plan (pure): an `ApiRequest` + the `SchemaCache` → a plan whose every name is resolved:
//! the relation or function, the columns and their types (for casts of bound values), and
//! the relationship behind each embedded resource. Unknown names are errors here, never
//! silently ignored.

use super::parse::{
    Action, AggregateFn, ApiRequest, Embed, Field, Filter, IsValue, JoinType, JsonKind, LogicTree,
    Missing, Operation, OrderTarget, OrderTerm, ParamsPref, PathRange, Payload, Range, Resolution,
    SelectItem, Target,
};
use super::RestError;
use crate::schema::{Column, ForeignKey, Function, SchemaCache, Table};
use std::sync::Arc;

/// A relation read (table, view, or the rows a function returns).
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// What rows come from.
    pub source: Source,
    /// SQL alias of the source in this (sub)query.
    pub alias: String,
    /// The relation whose columns the rows have.
    pub table: Arc<Table>,
    /// Output columns and embeds.
    pub select: Vec<Selected>,
    /// Conditions on this level.
    pub filters: Vec<Condition>,
    /// Ordering.
    pub order: Vec<ResolvedOrder>,
    /// Offset/limit.
    pub range: Range,
    /// `Prefer: timezone=…` (a valid zone), applied before the rows are rendered. Only on
    /// the top-level read.
    pub timezone: Option<String>,
    /// The computed columns this level uses (in select, filters or order).
    pub computed: Vec<ComputedColumn>,
    /// The rows come from a data-modifying CTE (the representation of a write), whose
    /// rows are records: a function of the row gets them cast to the relation's type.
    pub row_cast: bool,
    /// The rows are single values of a function returning `SETOF` a scalar, in one column
    /// named `pgrst_scalar` (PostgREST's name for it, usable in filters and `order`); the
    /// body is the array of those values, not of row objects.
    pub scalar: bool,
}

/// A computed column (PostgREST's computed field): `schema.name(row)`, a function taking
/// the level's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputedColumn {
    /// The function's (and the field's) name.
    pub name: String,
    /// The function's schema.
    pub schema: String,
}

/// Where rows come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `schema.name`.
    Relation(String, String),
    /// A set-returning function call; the arguments are bound as one JSON object. (Boxed:
    /// a plan carries the function's metadata, much larger than a relation's name.)
    Call(Box<CallPlan>),
    /// A computed relationship: `schema.name(parent row)`, the parent being the embedding
    /// level whose alias is `parent`.
    Computed {
        /// The function's schema.
        schema: String,
        /// The function's name.
        name: String,
        /// The parent level's alias.
        parent: String,
    },
}

/// A function call.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// The function.
    pub function: Function,
    /// Arguments given, by name (values are JSON text of the whole argument object).
    pub arg_names: Vec<String>,
    /// The arguments as a JSON object text.
    pub args_json: String,
    /// The given arguments' values, in the function's argument order, when every one is
    /// text for an argument that is not `json`/`jsonb` nor variadic (query-string and form
    /// arguments): each is then bound as its own parameter and cast to its type, which is
    /// what `json_to_record` would do with a JSON string, without its cost (~29k Postgres
    /// instructions per call, `bench/pg_ir.sh`).
    pub text_args: Option<Vec<String>>,
    /// The function takes one unnamed argument and gets the whole body (`json`, `jsonb`,
    /// `text`, `bytea`, `xml`), as PostgREST does.
    pub whole_body: Option<String>,
    /// `Prefer: timezone=…` (a valid zone), applied before the result is rendered.
    pub timezone: Option<String>,
}

/// One output item.
#[derive(Debug, Clone)]
pub enum Selected {
    /// A column (maybe with JSON path and cast).
    Column {
        /// The expression.
        field: Field,
        /// Output key.
        label: String,
        /// `::type`.
        cast: Option<String>,
    },
    /// Every column (`*`).
    Star,
    /// An embedded resource.
    Embed(Box<EmbedPlan>),
    /// `col.sum()`, `count()`: the other plain columns of the level become GROUP BY keys.
    Aggregate {
        /// The aggregate function.
        func: AggregateFn,
        /// Its input (`None`: `count()` of rows).
        field: Option<Field>,
        /// Cast of the input.
        cast: Option<String>,
        /// Cast of the result.
        result_cast: Option<String>,
        /// Output key.
        label: String,
    },
}

/// How an embedded resource joins its parent.
#[derive(Debug, Clone)]
pub struct EmbedPlan {
    /// Output key.
    pub label: String,
    /// One object (many-to-one) or an array (one-to-many).
    pub to_one: bool,
    /// `!inner`: parents without a match are dropped.
    pub inner: bool,
    /// `...rel()`: columns spread into the parent.
    pub spread: bool,
    /// (parent column, child column) pairs (empty for many-to-many).
    pub join: Vec<(String, String)>,
    /// Many-to-many: the junction table and its column pairs.
    pub junction: Option<Junction>,
    /// The embedded read.
    pub child: ReadPlan,
}

/// A junction table between a parent and an embedded resource.
#[derive(Debug, Clone)]
pub struct Junction {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// (junction column, parent column) pairs.
    pub parent: Vec<(String, String)>,
    /// (junction column, child column) pairs.
    pub child: Vec<(String, String)>,
}

/// A WHERE condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// One filter on a column of this level, with that column's type.
    Filter(Filter, String),
    /// A logic tree (types resolved per leaf).
    Tree(LogicTree, Vec<(String, String)>),
    /// `!inner` embed (or `rel=not.is.null`): a child row must exist.
    Exists(Box<EmbedPlan>),
    /// `rel=is.null`: no child row may exist.
    Absent(Box<EmbedPlan>),
}

/// A resolved order term.
#[derive(Debug, Clone)]
pub struct ResolvedOrder {
    /// The term.
    pub term: OrderTerm,
    /// For `rel(col)`: the to-one embed it sorts by.
    pub via: Option<Box<EmbedPlan>>,
}

/// A write.
#[derive(Debug, Clone)]
pub struct WritePlan {
    /// The target relation.
    pub table: Arc<Table>,
    /// Columns written (insert/update).
    pub columns: Vec<String>,
    /// Conflict target for upserts.
    pub on_conflict: Option<Vec<String>>,
    /// Upsert: update the other columns (`merge-duplicates`) or skip (`ignore-duplicates`).
    pub merge: Option<bool>,
    /// WHERE (update/delete).
    pub filters: Vec<Condition>,
    /// What to return (for `return=representation`).
    pub returning: ReadPlan,
    /// `Prefer: missing=default` on an insert: a column absent from a row of the payload
    /// gets its default instead of NULL.
    pub missing_default: bool,
    /// PUT: the payload's rows must match the URL's `eq` filters on the primary key (a
    /// row that does not is not written, and the handler answers `PGRST115`).
    pub must_match_filters: bool,
}

/// The plan of a request.
#[derive(Debug, Clone)]
pub enum Plan {
    /// GET/HEAD on a relation, or a set-returning function.
    Read(ReadPlan),
    /// A function returning one value (scalar or row).
    CallScalar(CallPlan),
    /// POST.
    Insert(WritePlan),
    /// PATCH.
    Update(WritePlan),
    /// PUT.
    Upsert(WritePlan),
    /// DELETE.
    Delete(WritePlan),
}

fn not_found(schema: &str, name: &str) -> RestError {
    RestError::new(
        404,
        "PGRST205",
        format!("Could not find the table '{schema}.{name}' in the schema cache"),
    )
}

fn no_column(table: &Table, col: &str) -> RestError {
    RestError::new(
        400,
        "42703",
        format!("column {}.{} does not exist", table.name, col),
    )
}

/// Builds the plan.
pub fn plan(
    req: &mut ApiRequest,
    cache: &SchemaCache,
    max_rows: Option<u64>,
) -> Result<Plan, RestError> {
    let schema = req.schema.clone();
    match (&req.target, req.action) {
        (Target::Relation(name), action) => {
            let table = cache
                .table(&schema, name)
                .ok_or_else(|| not_found(&schema, name))?
                .clone();
            let mut counter = 0usize;
            let read = read_plan(
                cache,
                Source::Relation(table.schema.clone(), table.name.clone()),
                table.clone(),
                &req.query.select,
                req,
                &[],
                &mut counter,
            )?;
            let mut read = read;
            read.range = cap(req.range, max_rows);
            read.timezone = timezone(req);
            match action {
                Action::Read { .. } => Ok(Plan::Read(read)),
                Action::Insert | Action::SingleUpsert => {
                    if !table.insertable {
                        return Err(RestError::new(
                            405,
                            "FB008",
                            format!("{} does not accept inserts", table.name),
                        ));
                    }
                    if action == Action::SingleUpsert {
                        check_put(req, &table)?;
                    }
                    let columns = payload_columns(req, &table)?;
                    // POST upserts only with `Prefer: resolution=…`; PUT always does.
                    let upsert =
                        action == Action::SingleUpsert || req.preferences.resolution.is_some();
                    let merge = if action == Action::SingleUpsert {
                        Some(true)
                    } else {
                        req.preferences
                            .resolution
                            .map(|r| r == Resolution::MergeDuplicates)
                    };
                    let on_conflict = if upsert {
                        let target = req
                            .query
                            .on_conflict
                            .clone()
                            .unwrap_or_else(|| table.primary_key.clone());
                        if target.is_empty() {
                            return Err(RestError::new(
                                400,
                                "PGRST103",
                                "An upsert needs a primary key or on_conflict",
                            ));
                        }
                        for c in &target {
                            table.column(c).ok_or_else(|| no_column(&table, c))?;
                        }
                        Some(target)
                    } else {
                        None
                    };
                    let w = WritePlan {
                        filters: read.filters.clone(),
                        table,
                        columns,
                        on_conflict,
                        merge,
                        returning: read,
                        missing_default: req.preferences.missing == Some(Missing::Default),
                        must_match_filters: action == Action::SingleUpsert,
                    };
                    Ok(if action == Action::SingleUpsert {
                        Plan::Upsert(w)
                    } else {
                        Plan::Insert(w)
                    })
                }
                Action::Update => {
                    if !table.updatable {
                        return Err(RestError::new(
                            405,
                            "FB008",
                            format!("{} does not accept updates", table.name),
                        ));
                    }
                    let columns = payload_columns(req, &table)?;
                    // `limit`/`offset` restrict the rows changed (never `rest.max_rows`).
                    read.range = req.range;
                    Ok(Plan::Update(WritePlan {
                        filters: read.filters.clone(),
                        table,
                        columns,
                        on_conflict: None,
                        merge: None,
                        returning: read,
                        missing_default: false,
                        must_match_filters: false,
                    }))
                }
                Action::Delete => {
                    if !table.deletable {
                        return Err(RestError::new(
                            405,
                            "FB008",
                            format!("{} does not accept deletes", table.name),
                        ));
                    }
                    read.range = req.range;
                    Ok(Plan::Delete(WritePlan {
                        filters: read.filters.clone(),
                        table,
                        columns: Vec::new(),
                        on_conflict: None,
                        merge: None,
                        returning: read,
                        missing_default: false,
                        must_match_filters: false,
                    }))
                }
                _ => Err(RestError::new(405, "PGRST117", "Unsupported HTTP method")),
            }
        }
        (Target::Routine(name), Action::Call { read_only, .. }) => {
            let name = name.clone();
            let overloads = cache.functions(&schema, &name);
            // One unnamed argument of a body type: it receives the whole body.
            let single = overloads.iter().find(|f| {
                f.args.len() == 1
                    && f.args[0].name.is_empty()
                    && matches!(
                        f.args[0].type_name.as_str(),
                        "json" | "jsonb" | "text" | "bytea" | "xml"
                    )
            });
            // `Prefer: params=single-object`: the whole JSON body is the one `json`/`jsonb`
            // argument, whatever its name.
            let single = if req.preferences.params == Some(ParamsPref::SingleObject) {
                overloads
                    .iter()
                    .find(|f| {
                        f.args.len() == 1
                            && matches!(f.args[0].type_name.as_str(), "json" | "jsonb")
                    })
                    .or(single)
            } else {
                single
            };
            if let (Some(f), Some(raw)) = (single, raw_body(req)) {
                if !read_only || f.volatility != 'v' {
                    return Ok(Plan::CallScalar(CallPlan {
                        function: f.clone(),
                        arg_names: Vec::new(),
                        args_json: String::new(),
                        text_args: None,
                        whole_body: Some(raw),
                        timezone: timezone(req),
                    }));
                }
            }
            let given: Vec<String> = arg_names(req)?;
            // GET/HEAD: a parameter that is no argument of an overload is a filter on its
            // result, when it reads as one.
            let f = pick_function(overloads, &given).or_else(|| {
                if req.payload.is_some() {
                    return None;
                }
                overloads
                    .iter()
                    .filter(|f| {
                        let args: Vec<String> = given
                            .iter()
                            .filter(|g| f.args.iter().any(|a| &a.name == *g))
                            .cloned()
                            .collect();
                        req.query
                            .rpc_params
                            .iter()
                            .filter(|p| !args.contains(&p.name))
                            .all(|p| p.filter.is_some())
                            && pick_function(std::slice::from_ref(*f), &args).is_some()
                    })
                    .min_by_key(|f| f.args.len())
            });
            let given: Vec<String> = match f {
                Some(f) => given
                    .into_iter()
                    .filter(|g| f.args.iter().any(|a| &a.name == g))
                    .collect(),
                None => given,
            };
            let f = f.ok_or_else(|| {
                RestError::new(
                    404,
                    "PGRST202",
                    format!(
                        "Could not find the function {schema}.{name}({}) in the schema cache",
                        given.join(", ")
                    ),
                )
            })?;
            if read_only && f.volatility == 'v' {
                return Err(RestError::new(
                    405,
                    "PGRST101",
                    "Cannot execute a volatile function with GET or HEAD; use POST",
                ));
            }
            let names: Vec<String> = f.args.iter().map(|a| a.name.clone()).collect();
            req.resolve_rpc_params(|n| names.iter().any(|a| a == n))
                .map_err(RestError::from)?;
            let call = CallPlan {
                function: f.clone(),
                text_args: text_args(req, f, &given),
                arg_names: given,
                args_json: args_json(req, f)?,
                whole_body: None,
                timezone: timezone(req),
            };
            // Rows of a table or view type (a set, or one row) go through the read planner:
            // `select`, filters, order and embedding apply; one row is answered as an object.
            // Rows of `RETURNS TABLE (…)`, OUT arguments or a composite type: the same,
            // over a relation made of those columns (no keys, so no embedding from them).
            // `SETOF` a scalar: rows of one column, `pgrst_scalar`, as PostgREST reads them
            // (filters, `order`, `limit`/`offset` and counts apply; `select` does not shape
            // the body, which stays an array of values).
            let scalar_set = f.return_relation.is_none()
                && f.returns_set
                && !f.returns_composite
                && f.return_type != "void";
            let row_type = match &f.return_relation {
                Some(_) => None,
                None if scalar_set => Some(Arc::new(Table {
                    schema: f.schema.clone(),
                    name: f.name.clone(),
                    kind: 'c',
                    insertable: false,
                    updatable: false,
                    deletable: false,
                    columns: vec![Column {
                        name: "pgrst_scalar".into(),
                        type_name: f.return_type.clone(),
                        nullable: true,
                        default: None,
                        generated: false,
                    }],
                    primary_key: Vec::new(),
                    description: None,
                })),
                None if f.returns_composite && !f.return_columns.is_empty() => {
                    Some(Arc::new(Table {
                        schema: f.schema.clone(),
                        name: f.name.clone(),
                        kind: 'c',
                        insertable: false,
                        updatable: false,
                        deletable: false,
                        columns: f.return_columns.clone(),
                        primary_key: Vec::new(),
                        description: None,
                    }))
                }
                None => None,
            };
            match (&f.return_relation, row_type) {
                (None, Some(table)) => {
                    let mut counter = 0usize;
                    let select = if scalar_set {
                        Vec::new()
                    } else {
                        req.query.select.clone()
                    };
                    let mut read = read_plan(
                        cache,
                        Source::Call(Box::new(call)),
                        table,
                        &select,
                        req,
                        &[],
                        &mut counter,
                    )?;
                    read.range = cap(req.range, max_rows);
                    read.timezone = timezone(req);
                    read.scalar = scalar_set;
                    Ok(Plan::Read(read))
                }
                (Some((rs, rn)), _) => {
                    let table = cache
                        .table(rs, rn)
                        .ok_or_else(|| not_found(rs, rn))?
                        .clone();
                    let mut counter = 0usize;
                    let select = req.query.select.clone();
                    let mut read = read_plan(
                        cache,
                        Source::Call(Box::new(call)),
                        table,
                        &select,
                        req,
                        &[],
                        &mut counter,
                    )?;
                    read.range = cap(req.range, max_rows);
                    read.timezone = timezone(req);
                    Ok(Plan::Read(read))
                }
                _ => Ok(Plan::CallScalar(call)),
            }
        }
        _ => Err(RestError::new(
            405,
            "PGRST117",
            "Unsupported HTTP method for this path",
        )),
    }
}

/// PostgREST's PUT rules: the top-level filters are exactly one `eq` per primary key column
/// (no other filter, no logic tree), else 405 `PGRST105`. (`limit`/`offset` are refused by
/// the parser, `PGRST114`.)
fn check_put(req: &ApiRequest, table: &Table) -> Result<(), RestError> {
    use super::parse::SimpleOp;
    let invalid = || {
        RestError::new(
            405,
            "PGRST105",
            "Filters must include all and only primary key columns with 'eq' operators",
        )
    };
    if table.primary_key.is_empty() || req.query.logic.iter().any(|l| l.path.is_empty()) {
        return Err(invalid());
    }
    let mut seen: Vec<&str> = Vec::new();
    for pf in req.query.filters.iter().filter(|f| f.path.is_empty()) {
        let f = &pf.filter;
        let is_eq = matches!(
            f.operation,
            Operation::Simple {
                op: SimpleOp::Eq,
                ..
            }
        );
        if f.negated
            || !is_eq
            || !f.field.json_path.is_empty()
            || !table.primary_key.contains(&f.field.name)
            || seen.contains(&f.field.name.as_str())
        {
            return Err(invalid());
        }
        seen.push(&f.field.name);
    }
    if seen.len() != table.primary_key.len() {
        return Err(invalid());
    }
    Ok(())
}

fn cap(range: Range, max_rows: Option<u64>) -> Range {
    match max_rows {
        Some(m) => Range {
            offset: range.offset,
            limit: Some(range.limit.map_or(m, |l| l.min(m))),
        },
        None => range,
    }
}

fn payload_columns(req: &ApiRequest, table: &Table) -> Result<Vec<String>, RestError> {
    let cols: Vec<String> = match (&req.query.columns, &req.payload) {
        (Some(c), _) => c.clone(),
        (None, Some(Payload::Json(j))) => j.keys.clone(),
        (None, Some(Payload::Csv(c))) => c.columns.clone(),
        (None, Some(Payload::Form(pairs))) => pairs.iter().map(|(k, _)| k.clone()).collect(),
        _ => Vec::new(),
    };
    for c in &cols {
        if table.column(c).is_none() {
            return Err(RestError::new(
                400,
                "PGRST204",
                format!(
                    "Could not find the '{c}' column of '{}' in the schema cache",
                    table.name
                ),
            ));
        }
    }
    Ok(cols)
}

fn arg_names(req: &ApiRequest) -> Result<Vec<String>, RestError> {
    Ok(match &req.payload {
        Some(Payload::Json(j)) if j.kind == JsonKind::Object => j.keys.clone(),
        // A JSON array of objects (PostgREST 12 dropped `params=multiple-objects`): the
        // function is called once, with the first object's arguments; every object must
        // have the same keys, and anything but objects is refused, as PostgREST does.
        Some(Payload::Json(j)) if matches!(j.kind, JsonKind::Array { .. }) => {
            if !j.uniform {
                return Err(all_keys_must_match());
            }
            j.keys.clone()
        }
        Some(Payload::Json(j))
            if j.kind == JsonKind::Other && j.raw.trim_start().starts_with('[') =>
        {
            return Err(all_keys_must_match());
        }
        Some(Payload::Form(pairs)) => pairs.iter().map(|(k, _)| k.clone()).collect(),
        Some(_) => Vec::new(),
        None => req
            .query
            .rpc_params
            .iter()
            .map(|p| p.name.clone())
            .collect(),
    })
}

/// The request body as text, for a function taking the whole body.
fn raw_body(req: &ApiRequest) -> Option<String> {
    match &req.payload {
        Some(Payload::Json(j)) => Some(j.raw.clone()),
        Some(Payload::Raw { bytes, .. }) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// PostgREST's answer to a body whose objects do not share their keys (400 `PGRST102`).
fn all_keys_must_match() -> RestError {
    RestError::new(400, "PGRST102", "All object keys must match")
}

/// See [`CallPlan::text_args`]. A name given twice keeps its last value, as `args_json`.
fn text_args(req: &ApiRequest, f: &Function, given: &[String]) -> Option<Vec<String>> {
    let pairs: &[(String, String)] = match &req.payload {
        None => &req.query.rpc_args,
        Some(Payload::Form(pairs)) => pairs,
        Some(_) => return None,
    };
    f.args
        .iter()
        .filter(|a| given.contains(&a.name))
        .map(|a| {
            if a.variadic || a.type_name.starts_with("json") {
                return None;
            }
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == &a.name)
                .map(|(_, v)| v.clone())
        })
        .collect()
}

fn args_json(req: &ApiRequest, f: &Function) -> Result<String, RestError> {
    Ok(match &req.payload {
        Some(Payload::Json(j)) if j.kind == JsonKind::Object => j.raw.clone(),
        // The first object of an array (`[]` calls with no arguments).
        Some(Payload::Json(j)) if matches!(j.kind, JsonKind::Array { .. }) => {
            match serde_json::from_str::<Vec<serde_json::Value>>(&j.raw) {
                Ok(mut rows) if !rows.is_empty() => rows.swap_remove(0).to_string(),
                Ok(_) => "{}".into(),
                Err(_) => return Err(all_keys_must_match()),
            }
        }
        Some(Payload::Form(pairs)) => {
            let m: serde_json::Map<String, serde_json::Value> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect();
            serde_json::Value::Object(m).to_string()
        }
        Some(_) => "{}".into(),
        None => {
            // GET: a variadic argument collects every value given for it (`?v=1&v=2`).
            let mut m = serde_json::Map::new();
            for (k, v) in &req.query.rpc_args {
                let variadic = f.args.iter().any(|a| a.variadic && &a.name == k);
                let v = serde_json::Value::from(v.clone());
                if variadic {
                    match m
                        .entry(k.clone())
                        .or_insert_with(|| serde_json::Value::Array(Vec::new()))
                    {
                        serde_json::Value::Array(a) => a.push(v),
                        other => *other = v,
                    }
                } else {
                    m.insert(k.clone(), v);
                }
            }
            serde_json::Value::Object(m).to_string()
        }
    })
}

/// The overload whose required arguments are all given and that has every given one.
fn pick_function<'a>(overloads: &'a [Function], given: &[String]) -> Option<&'a Function> {
    let mut fits = overloads.iter().filter(|f| {
        given.iter().all(|g| f.args.iter().any(|a| &a.name == g))
            && f.args
                .iter()
                .all(|a| a.has_default || given.contains(&a.name))
    });
    let first = fits.next()?;
    // Several fits: the one with the fewest arguments, as PostgREST prefers.
    Some(fits.fold(first, |best, f| {
        if f.args.len() < best.args.len() {
            f
        } else {
            best
        }
    }))
}

fn range_for(req: &ApiRequest, path: &[String]) -> Range {
    req.query
        .ranges
        .iter()
        .find(|r: &&PathRange| r.path == path)
        .map(|r| r.range)
        .unwrap_or_default()
}

fn read_plan(
    cache: &SchemaCache,
    source: Source,
    table: Arc<Table>,
    select: &[SelectItem],
    req: &ApiRequest,
    path: &[String],
    counter: &mut usize,
) -> Result<ReadPlan, RestError> {
    *counter += 1;
    let alias = if path.is_empty() {
        table.name.clone()
    } else {
        format!("{}_{}", table.name, counter)
    };
    let mut out = Vec::new();
    let items: Vec<SelectItem> = if select.is_empty() {
        vec![SelectItem::Star]
    } else {
        select.to_vec()
    };
    let mut embeds: Vec<(String, EmbedPlan)> = Vec::new();
    let mut computed: Vec<ComputedColumn> = Vec::new();
    for item in &items {
        match item {
            SelectItem::Star => out.push(Selected::Star),
            SelectItem::Field {
                field,
                alias: label,
                cast,
                aggregate,
                aggregate_cast,
            } => {
                field_type(cache, &table, &field.name, &mut computed)?;
                check_cast(cast.as_deref())?;
                check_cast(aggregate_cast.as_deref())?;
                match aggregate {
                    Some(func) => out.push(Selected::Aggregate {
                        func: *func,
                        field: Some(field.clone()),
                        cast: cast.clone(),
                        result_cast: aggregate_cast.clone(),
                        label: label.clone().unwrap_or_else(|| func.as_str().to_string()),
                    }),
                    None => out.push(Selected::Column {
                        label: label.clone().unwrap_or_else(|| field.default_label()),
                        field: field.clone(),
                        cast: cast.clone(),
                    }),
                }
            }
            SelectItem::CountAll { alias: label, cast } => {
                check_cast(cast.as_deref())?;
                out.push(Selected::Aggregate {
                    func: AggregateFn::Count,
                    field: None,
                    cast: None,
                    result_cast: cast.clone(),
                    label: label.clone().unwrap_or_else(|| "count".into()),
                });
            }
            SelectItem::Embed(e) => {
                let mut child_path = path.to_vec();
                child_path.push(e.label().to_string());
                let plan = embed_plan(cache, &table, &alias, e, req, &child_path, counter)?;
                embeds.push((e.label().to_string(), plan.clone()));
                out.push(Selected::Embed(Box::new(plan)));
            }
        }
    }
    let mut filters = Vec::new();
    for pf in req.query.filters.iter().filter(|f| f.path == path) {
        let f = &pf.filter;
        // `rel=is.null` / `rel=not.is.null` on an embedded resource: rows without / with a
        // related row (that passes the embed's own filters), as PostgREST filters them.
        let embed = table
            .column(&f.field.name)
            .is_none()
            .then(|| embeds.iter().find(|(l, _)| *l == f.field.name))
            .flatten();
        if let Some((_, e)) = embed {
            let present = match (&f.operation, f.negated) {
                (Operation::Is(IsValue::Null), negated) if f.field.json_path.is_empty() => negated,
                (Operation::Is(IsValue::NotNull), negated) if f.field.json_path.is_empty() => {
                    !negated
                }
                _ => {
                    return Err(RestError::new(
                        400,
                        "PGRST120",
                        "Bad operator on the embedded resource",
                    )
                    .with_details(
                        "Only is null or not is null filters are allowed on embedded resources",
                    ))
                }
            };
            filters.push(if present {
                Condition::Exists(Box::new(e.clone()))
            } else {
                Condition::Absent(Box::new(e.clone()))
            });
            continue;
        }
        let ty = field_type(cache, &table, &f.field.name, &mut computed)?;
        filters.push(Condition::Filter(f.clone(), ty));
    }
    for pl in req.query.logic.iter().filter(|l| l.path == path) {
        let mut types = Vec::new();
        collect_types(cache, &pl.tree, &table, &mut types, &mut computed)?;
        filters.push(Condition::Tree(pl.tree.clone(), types));
    }
    for (_, e) in embeds.iter().filter(|(_, e)| e.inner) {
        filters.push(Condition::Exists(Box::new(e.clone())));
    }
    let mut order = Vec::new();
    for po in req.query.order.iter().filter(|o| o.path == path) {
        for term in &po.terms {
            match &term.target {
                OrderTarget::Field(f) => {
                    field_type(cache, &table, &f.name, &mut computed)?;
                    order.push(ResolvedOrder {
                        term: term.clone(),
                        via: None,
                    });
                }
                OrderTarget::Related { relation, field } => {
                    let (_, e) = embeds.iter().find(|(l, _)| l == relation).ok_or_else(|| {
                        RestError::new(
                            400,
                            "PGRST108",
                            format!("'{relation}' is not an embedded resource in this request"),
                        )
                    })?;
                    if !e.to_one {
                        return Err(RestError::new(
                            400,
                            "PGRST118",
                            format!("A related order on '{relation}' is not possible: it is not a to-one relationship"),
                        ));
                    }
                    let mut e = e.clone();
                    let child_table = e.child.table.clone();
                    field_type(cache, &child_table, &field.name, &mut e.child.computed)?;
                    order.push(ResolvedOrder {
                        term: term.clone(),
                        via: Some(Box::new(e)),
                    });
                }
            }
        }
    }
    Ok(ReadPlan {
        source,
        alias,
        table,
        select: out,
        filters,
        order,
        range: if path.is_empty() {
            Range::default()
        } else {
            range_for(req, path)
        },
        timezone: None,
        computed,
        row_cast: false,
        scalar: false,
    })
}

/// The type of the field `name` of a level over `table`: its column's, else the return
/// type of its computed column (recorded in `computed` for the SQL builder). A real column
/// wins over a function of the same name, as in Postgres' attribute notation.
fn field_type(
    cache: &SchemaCache,
    table: &Table,
    name: &str,
    computed: &mut Vec<ComputedColumn>,
) -> Result<String, RestError> {
    if let Some(c) = table.column(name) {
        return Ok(c.type_name.clone());
    }
    // A function's own row type (`RETURNS TABLE`, OUT arguments) is no relation.
    let f = (table.kind != 'c')
        .then(|| cache.computed_column(table, name))
        .flatten()
        .ok_or_else(|| no_column(table, name))?;
    if !computed.iter().any(|c| c.name == f.name) {
        computed.push(ComputedColumn {
            name: f.name.clone(),
            schema: f.schema.clone(),
        });
    }
    Ok(f.return_type.clone())
}

/// `Prefer: timezone=…` when it names a zone of the IANA database (PostgREST checks
/// `pg_timezone_names`); anything else is ignored, as PostgREST does.
pub fn timezone(req: &ApiRequest) -> Option<String> {
    req.preferences
        .timezone
        .as_deref()
        .filter(|t| t.parse::<chrono_tz::Tz>().is_ok())
        .map(str::to_string)
}

fn collect_types(
    cache: &SchemaCache,
    tree: &LogicTree,
    table: &Table,
    out: &mut Vec<(String, String)>,
    computed: &mut Vec<ComputedColumn>,
) -> Result<(), RestError> {
    match tree {
        LogicTree::Filter(f) => {
            let ty = field_type(cache, table, &f.field.name, computed)?;
            out.push((f.field.name.clone(), ty));
        }
        LogicTree::Expr { children, .. } => {
            for c in children {
                collect_types(cache, c, table, out, computed)?;
            }
        }
    }
    Ok(())
}

/// Casts end up in SQL text: only type names made of identifier characters are allowed.
pub fn check_cast(cast: Option<&str>) -> Result<(), RestError> {
    match cast {
        Some(c)
            if c.is_empty()
                || !c.chars().all(|ch| {
                    ch.is_ascii_alphanumeric() || matches!(ch, '_' | ' ' | '[' | ']' | '.')
                }) =>
        {
            Err(RestError::new(
                400,
                "PGRST100",
                format!("invalid cast type {c:?}"),
            ))
        }
        _ => Ok(()),
    }
}

/// The relationship behind an embedded resource, resolved.
#[derive(Debug, Clone)]
struct Relationship {
    /// The embedded relation.
    target: Arc<Table>,
    /// An object (many-to-one, one-to-one) or an array.
    to_one: bool,
    /// (parent column, child column) pairs (empty for many-to-many).
    join: Vec<(String, String)>,
    /// Many-to-many: the junction.
    junction: Option<Junction>,
}

fn no_relationship(parent: &Table, name: &str) -> RestError {
    RestError::new(
        400,
        "PGRST200",
        format!(
            "Could not find a relationship between '{}' and '{name}' in the schema cache",
            parent.name
        ),
    )
}

/// PostgREST's `findRel`: the relationship between `parent` and the embedded `name`, chosen
/// by `hint`.
///
/// A foreign key gives two relationships, one per direction: from the referencing relation
/// (many-to-one, or one-to-one when the key is unique) and from the referenced one
/// (one-to-many, or one-to-one). The name is the other relation's name or, when that
/// relation is a table, the constraint's name or the parent's (single) key column
/// (`projects?select=client_id(*)`). A hint is the constraint's name or a key column
/// (either side).
///
/// A self-referencing key (`employees.supervisor_id → employees.id`) relates a table to
/// itself in both directions, so the name alone cannot choose: the table's name gives the
/// one-to-many side (`employees?select=supervisees:employees(*)`, the rows whose key points
/// at this row), the key column gives the many-to-one side
/// (`employees?select=supervisor:supervisor_id(*)`), and a hint (the key column, or here
/// also the constraint) chooses among several one-to-many sides
/// (`organizations?select=auditees:organizations!auditor_id(*)`).
///
/// Without a direct relationship, a table with a foreign key to each side is a junction
/// (many-to-many); a hint may name it or one of its keys.
fn find_relationship(
    cache: &SchemaCache,
    parent: &Table,
    name: &str,
    hint: Option<&str>,
) -> Result<Relationship, RestError> {
    let pkey = (parent.schema.clone(), parent.name.clone());
    let is_view = |key: &(String, String)| {
        cache
            .tables
            .get(key)
            .is_some_and(|t| matches!(t.kind, 'v' | 'm'))
    };
    let single = |cols: &[String], n: &str| cols.len() == 1 && cols[0] == n;
    // (foreign key, parent holds the key)
    let mut direct: Vec<(&ForeignKey, bool)> = Vec::new();
    for fk in &cache.foreign_keys {
        for forward in [true, false] {
            let (origin, target, ocols, tcols) = if forward {
                (&fk.from, &fk.to, &fk.from_columns, &fk.to_columns)
            } else {
                (&fk.to, &fk.from, &fk.to_columns, &fk.from_columns)
            };
            if *origin != pkey || target.0 != parent.schema {
                continue;
            }
            let found = if fk.from == fk.to {
                match hint {
                    None => {
                        (!forward && target.1 == name)
                            || (forward && single(&fk.from_columns, name))
                    }
                    Some(h) => {
                        !forward
                            && target.1 == name
                            && (single(&fk.from_columns, h) || fk.name == h)
                    }
                }
            } else {
                match hint {
                    None => {
                        target.1 == name
                            || (!is_view(target) && (fk.name == name || single(ocols, name)))
                    }
                    Some(h) => {
                        target.1 == name
                            && (fk.name == h
                                || ocols.iter().any(|c| c == h)
                                || tcols.iter().any(|c| c == h))
                    }
                }
            };
            if found {
                direct.push((fk, forward));
            }
        }
    }
    match direct.len() {
        0 => {}
        1 => {
            let (fk, forward) = direct[0];
            let tkey = if forward { &fk.to } else { &fk.from };
            let target = cache
                .table(&tkey.0, &tkey.1)
                .ok_or_else(|| no_relationship(parent, name))?
                .clone();
            let join = if forward {
                fk.from_columns
                    .iter()
                    .cloned()
                    .zip(fk.to_columns.iter().cloned())
                    .collect()
            } else {
                fk.to_columns
                    .iter()
                    .cloned()
                    .zip(fk.from_columns.iter().cloned())
                    .collect()
            };
            return Ok(Relationship {
                target,
                to_one: forward || fk.one_to_one,
                join,
                junction: None,
            });
        }
        _ => {
            let names: Vec<String> = direct.iter().map(|(f, _)| f.name.clone()).collect();
            return Err(RestError::new(
                300,
                "PGRST201",
                format!("Could not embed because more than one relationship was found for '{}' and '{name}'", parent.name),
            )
            .with_details(names.join(", "))
            .with_hint(format!("Try changing '{name}' to one of: {}", names.iter().map(|n| format!("'{name}!{n}'")).collect::<Vec<_>>().join(", "))));
        }
    }
    let target = cache.table(&parent.schema, name).ok_or_else(|| {
        no_relationship(parent, name)
        .with_hint(format!("Verify that '{}' and '{name}' exist in the schema '{}' and that there is a foreign key relationship between them.", parent.name, parent.schema))
    })?;
    let tkey = (target.schema.clone(), target.name.clone());
    // Many-to-many: a junction table (not a view) with a foreign key to each side.
    let mut via: Vec<Junction> = Vec::new();
    for a in cache
        .foreign_keys
        .iter()
        .filter(|f| f.to == pkey && !f.via_view)
    {
        for b in cache
            .foreign_keys
            .iter()
            .filter(|f| f.to == tkey && f.from == a.from && f.name != a.name && !f.via_view)
        {
            let jname = &a.from.1;
            if hint.is_some_and(|h| h != jname && h != a.name && h != b.name) {
                continue;
            }
            via.push(Junction {
                schema: a.from.0.clone(),
                name: jname.clone(),
                parent: a
                    .from_columns
                    .iter()
                    .cloned()
                    .zip(a.to_columns.iter().cloned())
                    .collect(),
                child: b
                    .from_columns
                    .iter()
                    .cloned()
                    .zip(b.to_columns.iter().cloned())
                    .collect(),
            });
        }
    }
    if via.len() > 1 {
        let names: Vec<String> = via.iter().map(|j| j.name.clone()).collect();
        return Err(RestError::new(
            300,
            "PGRST201",
            format!(
                "Could not embed because more than one relationship was found for '{}' and '{name}'",
                parent.name
            ),
        )
        .with_details(names.join(", ")));
    }
    match via.pop() {
        Some(j) => Ok(Relationship {
            target: target.clone(),
            to_one: false,
            join: Vec::new(),
            junction: Some(j),
        }),
        None => Err(no_relationship(parent, name)),
    }
}

/// Whether a level has aggregates that a spread lifts to its parent: its own, and those of
/// the to-one spreads inside it (PostgREST hoists them up to the first level that is not a
/// spread).
fn lifts_aggregates(r: &ReadPlan) -> bool {
    r.select.iter().any(|s| match s {
        Selected::Aggregate { .. } => true,
        Selected::Embed(e) => e.spread && e.to_one && lifts_aggregates(&e.child),
        _ => false,
    })
}

/// A to-many spread turns each of its columns into an array of the related rows' values;
/// PostgREST 13 has no meaning for an aggregate there and refuses it (400 `PGRST127`).
fn check_to_many_spread(child: &ReadPlan) -> Result<(), RestError> {
    if lifts_aggregates(child) {
        return Err(
            RestError::new(400, "PGRST127", "Feature not implemented").with_details(
                "Aggregates are not implemented for one-to-many or many-to-many spreads.",
            ),
        );
    }
    Ok(())
}

/// Plans an embedded resource: its relationship to `parent`, then its own read.
///
/// A computed relationship (a function of the parent's schema named like the embed, taking
/// the parent's row and returning rows of a relation) comes first: it overrides a foreign
/// key relationship of the same name, and a hint does not apply to it (PostgREST's
/// `findRel` matches computed relationships by the function's name alone, and its schema
/// cache drops the foreign keys to a relation named like the function).
fn embed_plan(
    cache: &SchemaCache,
    parent: &Table,
    parent_alias: &str,
    e: &Embed,
    req: &ApiRequest,
    path: &[String],
    counter: &mut usize,
) -> Result<EmbedPlan, RestError> {
    let computed = (parent.kind != 'c')
        .then(|| cache.computed_relationship(parent, &e.name))
        .flatten();
    if let Some(f) = computed {
        let target = f
            .return_relation
            .as_ref()
            .and_then(|(s, n)| cache.table(s, n))
            .ok_or_else(|| no_relationship(parent, &e.name))?
            .clone();
        let child = read_plan(
            cache,
            Source::Computed {
                schema: f.schema.clone(),
                name: f.name.clone(),
                parent: parent_alias.to_string(),
            },
            target,
            &e.select,
            req,
            path,
            counter,
        )?;
        if e.spread && !f.single_row {
            check_to_many_spread(&child)?;
        }
        return Ok(EmbedPlan {
            label: e.label().to_string(),
            to_one: f.single_row,
            inner: e.join == Some(JoinType::Inner),
            spread: e.spread,
            join: Vec::new(),
            junction: None,
            child,
        });
    }
    let rel = find_relationship(cache, parent, &e.name, e.hint.as_deref())?;
    let child = read_plan(
        cache,
        Source::Relation(rel.target.schema.clone(), rel.target.name.clone()),
        rel.target.clone(),
        &e.select,
        req,
        path,
        counter,
    )?;
    if e.spread && !rel.to_one {
        check_to_many_spread(&child)?;
    }
    Ok(EmbedPlan {
        label: e.label().to_string(),
        to_one: rel.to_one,
        inner: e.join == Some(JoinType::Inner),
        spread: e.spread,
        join: rel.join,
        junction: rel.junction,
        child,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;

    fn table(name: &str, kind: char, cols: &[&str]) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            kind,
            insertable: true,
            updatable: true,
            deletable: true,
            columns: cols
                .iter()
                .map(|c| Column {
                    name: (*c).into(),
                    type_name: "integer".into(),
                    nullable: true,
                    default: None,
                    generated: false,
                })
                .collect(),
            primary_key: vec!["id".into()],
            description: None,
        }
    }

    fn fk(name: &str, from: (&str, &str), to: (&str, &str), one_to_one: bool) -> ForeignKey {
        ForeignKey {
            name: name.into(),
            from: ("public".into(), from.0.into()),
            from_columns: vec![from.1.into()],
            to: ("public".into(), to.0.into()),
            to_columns: vec![to.1.into()],
            one_to_one,
            via_view: false,
        }
    }

    /// employees (self-referencing supervisor_id), organizations (two self-referencing
    /// keys), films → directors, posters (UNIQUE film_id) → films, a view over films and a
    /// view that copies the key of posters.
    fn cache() -> SchemaCache {
        let mut c = SchemaCache::default();
        for t in [
            table("employees", 'r', &["id", "supervisor_id"]),
            table("organizations", 'r', &["id", "auditor", "referee"]),
            table("directors", 'r', &["id"]),
            table("films", 'r', &["id", "director_id"]),
            table("posters", 'r', &["id", "film_id"]),
            table("films_view", 'v', &["id", "dir"]),
        ] {
            c.tables
                .insert((t.schema.clone(), t.name.clone()), Arc::new(t));
        }
        c.foreign_keys = vec![
            fk(
                "employees_supervisor_id_fkey",
                ("employees", "supervisor_id"),
                ("employees", "id"),
                false,
            ),
            fk(
                "org_auditor",
                ("organizations", "auditor"),
                ("organizations", "id"),
                false,
            ),
            fk(
                "org_referee",
                ("organizations", "referee"),
                ("organizations", "id"),
                false,
            ),
            fk(
                "films_director_id_fkey",
                ("films", "director_id"),
                ("directors", "id"),
                false,
            ),
            fk(
                "posters_film_id_fkey",
                ("posters", "film_id"),
                ("films", "id"),
                true,
            ),
            ForeignKey {
                via_view: true,
                ..fk(
                    "films_director_id_fkey",
                    ("films_view", "dir"),
                    ("directors", "id"),
                    false,
                )
            },
        ];
        c
    }

    /// (target, to_one, join)
    type Found = (String, bool, Vec<(String, String)>);

    /// The relationship found, or the error's status and code.
    fn rel(parent: &str, name: &str, hint: Option<&str>) -> Result<Found, String> {
        let c = cache();
        let p = c.table("public", parent).unwrap().clone();
        find_relationship(&c, &p, name, hint)
            .map(|r| (r.target.name.clone(), r.to_one, r.join))
            .map_err(|e| format!("{} {}", e.status, e.code))
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    }

    #[test]
    fn self_reference_table_name_gives_the_children() {
        assert_eq!(
            rel("employees", "employees", None),
            Ok(("employees".into(), false, pairs(&[("id", "supervisor_id")])))
        );
        assert_eq!(
            rel("employees", "employees", Some("supervisor_id")),
            Ok(("employees".into(), false, pairs(&[("id", "supervisor_id")])))
        );
        assert_eq!(
            rel(
                "employees",
                "employees",
                Some("employees_supervisor_id_fkey")
            ),
            Ok(("employees".into(), false, pairs(&[("id", "supervisor_id")])))
        );
    }

    #[test]
    fn self_reference_key_column_gives_the_parent() {
        assert_eq!(
            rel("employees", "supervisor_id", None),
            Ok(("employees".into(), true, pairs(&[("supervisor_id", "id")])))
        );
        // A hint naming the referenced column is no self-reference hint.
        assert_eq!(
            rel("employees", "employees", Some("id")).unwrap_err(),
            "400 PGRST200"
        );
    }

    #[test]
    fn several_self_references_need_a_hint() {
        assert_eq!(
            rel("organizations", "organizations", None).unwrap_err(),
            "300 PGRST201"
        );
        assert_eq!(
            rel("organizations", "organizations", Some("auditor")),
            Ok(("organizations".into(), false, pairs(&[("id", "auditor")])))
        );
        assert_eq!(
            rel("organizations", "referee", None),
            Ok(("organizations".into(), true, pairs(&[("referee", "id")])))
        );
    }

    #[test]
    fn column_and_constraint_as_target_on_tables() {
        assert_eq!(
            rel("films", "director_id", None),
            Ok(("directors".into(), true, pairs(&[("director_id", "id")])))
        );
        assert_eq!(
            rel("films", "films_director_id_fkey", None),
            Ok(("directors".into(), true, pairs(&[("director_id", "id")])))
        );
        // From directors the constraint name reaches films, but not the view (PostgREST
        // only accepts a view by its name).
        assert_eq!(
            rel("directors", "films_director_id_fkey", None),
            Ok(("films".into(), false, pairs(&[("id", "director_id")])))
        );
    }

    #[test]
    fn unique_keys_are_one_to_one_both_ways() {
        assert_eq!(
            rel("films", "posters", None),
            Ok(("posters".into(), true, pairs(&[("id", "film_id")])))
        );
        assert_eq!(
            rel("posters", "films", None),
            Ok(("films".into(), true, pairs(&[("film_id", "id")])))
        );
        assert_eq!(
            rel("directors", "films", None),
            Ok(("films".into(), false, pairs(&[("id", "director_id")])))
        );
    }

    #[test]
    fn views_relate_through_inferred_keys() {
        assert_eq!(
            rel("films_view", "directors", None),
            Ok(("directors".into(), true, pairs(&[("dir", "id")])))
        );
        assert_eq!(
            rel("directors", "films_view", None),
            Ok(("films_view".into(), false, pairs(&[("id", "dir")])))
        );
        assert_eq!(
            rel("films_view", "posters", None).unwrap_err(),
            "400 PGRST200"
        );
    }

    fn scalar_fn(schema: &str, name: &str, arg: &str) -> Function {
        Function {
            schema: schema.into(),
            name: name.into(),
            args: Vec::new(),
            returns_set: false,
            return_type: "text".into(),
            return_relation: None,
            returns_composite: false,
            return_columns: Vec::new(),
            volatility: 's',
            row_arg: Some(("public".into(), arg.into())),
            single_row: true,
        }
    }

    #[test]
    fn computed_columns_resolve_after_real_columns() {
        let mut c = cache();
        for f in [
            scalar_fn("public", "label", "films"),
            // Same name as a real column: the column wins.
            scalar_fn("public", "director_id", "films"),
            // Another schema's function of the same row type is not a computed column.
            scalar_fn("other", "elsewhere", "films"),
        ] {
            c.functions
                .entry((f.schema.clone(), f.name.clone()))
                .or_default()
                .push(f);
        }
        c.index_computed();
        let films = c.table("public", "films").unwrap().clone();
        let mut used = Vec::new();
        assert_eq!(field_type(&c, &films, "label", &mut used).unwrap(), "text");
        assert_eq!(
            field_type(&c, &films, "director_id", &mut used).unwrap(),
            "integer"
        );
        assert_eq!(
            field_type(&c, &films, "elsewhere", &mut used)
                .unwrap_err()
                .code,
            "42703"
        );
        field_type(&c, &films, "label", &mut used).unwrap();
        assert_eq!(
            used,
            vec![ComputedColumn {
                name: "label".into(),
                schema: "public".into()
            }]
        );
        // A function's own row type (`RETURNS TABLE`) has no computed columns.
        let fake = Table {
            kind: 'c',
            ..(*films).clone()
        };
        assert!(field_type(&c, &fake, "label", &mut Vec::new()).is_err());
    }

    #[test]
    fn aggregates_in_to_many_spreads_are_refused() {
        use crate::rest::parse::{parse_request, ParseConfig, RequestInput};
        let c = cache();
        let try_plan = |query: &str| {
            let input = RequestInput {
                method: "GET",
                path: &["directors"],
                path_schema: None,
                query,
                headers: &[],
                body: b"",
            };
            let mut req = parse_request(&input, &ParseConfig::default()).unwrap();
            plan(&mut req, &c, None).map(|_| ())
        };
        for q in [
            "select=...films(count())",
            "select=id,...films(id.sum())",
            "select=...films(...posters(id.max()))",
        ] {
            let e = try_plan(q).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (400, "PGRST127"), "{q}");
        }
        for q in [
            "select=...films(id,...posters(id))",
            "select=id,films(count())",
            "select=...films(id,posters(count()))",
        ] {
            assert!(try_plan(q).is_ok(), "{q}");
        }
    }
}
