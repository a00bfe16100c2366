//! The typed query-string AST: what `select`, filters, logic trees and `order` mean, before
//! any name is checked against the schema (that is the planner's job).
//!
//! Values stay raw text: the SQL stage binds them as parameters and lets Postgres cast them
//! to the column's type, exactly as PostgREST does.

/// A path of embedded resources, outermost first (`clients.projects.id=eq.1` → `["clients",
/// "projects"]`); empty for the top-level resource. Elements are the names as written in the
/// query string (an alias when `select` gave one).
pub type EmbedPath = Vec<String>;

/// One step of a JSON/composite path (`->a`, `->>0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonOp {
    /// `->`: keeps JSON.
    Arrow(JsonKey),
    /// `->>`: extracts text.
    DoubleArrow(JsonKey),
}

impl JsonOp {
    /// The key or index of this step.
    pub fn key(&self) -> &JsonKey {
        match self {
            JsonOp::Arrow(k) | JsonOp::DoubleArrow(k) => k,
        }
    }
}

/// The operand of a JSON arrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonKey {
    /// An object key (`->name`).
    Key(String),
    /// An array index (`->0`, `->-1`): sent to Postgres as an integer so it indexes arrays.
    Index(i64),
}

/// A column reference with an optional JSON path: `data->phones->0->>number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Column (or computed column) name.
    pub name: String,
    /// JSON arrows applied in order.
    pub json_path: Vec<JsonOp>,
}

impl Field {
    /// A plain column.
    pub fn column(name: impl Into<String>) -> Self {
        Field {
            name: name.into(),
            json_path: Vec::new(),
        }
    }

    /// The output name PostgREST gives a selected field without alias: the last JSON key
    /// (`data->>blood_type` → `blood_type`), else the column name.
    pub fn default_label(&self) -> String {
        for op in self.json_path.iter().rev() {
            if let JsonKey::Key(k) = op.key() {
                return k.clone();
            }
        }
        self.name.clone()
    }
}

/// An aggregate function usable in `select` (`amount.sum()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    /// `avg()`
    Avg,
    /// `count()`
    Count,
    /// `max()`
    Max,
    /// `min()`
    Min,
    /// `sum()`
    Sum,
}

impl AggregateFn {
    /// SQL function name (also the default output label).
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateFn::Avg => "avg",
            AggregateFn::Count => "count",
            AggregateFn::Max => "max",
            AggregateFn::Min => "min",
            AggregateFn::Sum => "sum",
        }
    }
}

/// How an embedded resource is joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    /// `!inner`: parents without a match are dropped.
    Inner,
    /// `!left` (the default when none is given).
    Left,
}

/// An embedded resource in `select`: `alias:rel!hint!inner(cols)` or `...rel(cols)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    /// Relation (table, view, function or computed relationship) name.
    pub name: String,
    /// Output key; `None` means `name`.
    pub alias: Option<String>,
    /// Disambiguation hint after `!` (foreign key name, column or junction table).
    pub hint: Option<String>,
    /// `!inner` / `!left`; `None` when not given.
    pub join: Option<JoinType>,
    /// `...rel(cols)`: the columns are spread into the parent object.
    pub spread: bool,
    /// What to select from the embedded resource (may be empty: `rel()`).
    pub select: Vec<SelectItem>,
}

impl Embed {
    /// The name filters and orders use for this embed: the alias when given.
    pub fn label(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// One element of `select`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    /// `*`
    Star,
    /// `alias:col->path::cast.agg()::cast`
    Field {
        /// Column and JSON path.
        field: Field,
        /// Output key (`alias:`).
        alias: Option<String>,
        /// `::type` right after the field (for aggregates: the cast of the input).
        cast: Option<String>,
        /// `.sum()` etc.
        aggregate: Option<AggregateFn>,
        /// `::type` after the aggregate call (cast of the output).
        aggregate_cast: Option<String>,
    },
    /// `count()` without a column (`alias:count()::cast`).
    CountAll {
        /// Output key.
        alias: Option<String>,
        /// `::type` of the result.
        cast: Option<String>,
    },
    /// An embedded resource.
    Embed(Embed),
}

impl SelectItem {
    /// A plain column, as `select=col` gives.
    pub fn column(name: impl Into<String>) -> Self {
        SelectItem::Field {
            field: Field::column(name),
            alias: None,
            cast: None,
            aggregate: None,
            aggregate_cast: None,
        }
    }

    /// Whether this item (or anything embedded under it) uses an aggregate.
    pub fn has_aggregate(&self) -> bool {
        match self {
            SelectItem::Star => false,
            SelectItem::Field { aggregate, .. } => aggregate.is_some(),
            SelectItem::CountAll { .. } => true,
            SelectItem::Embed(e) => e.select.iter().any(SelectItem::has_aggregate),
        }
    }
}

/// Comparison operators that take one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimpleOp {
    /// `eq` (`=`)
    Eq,
    /// `neq` (`<>`)
    Neq,
    /// `gt` (`>`)
    Gt,
    /// `gte` (`>=`)
    Gte,
    /// `lt` (`<`)
    Lt,
    /// `lte` (`<=`)
    Lte,
    /// `like` (`*` already replaced by `%`)
    Like,
    /// `ilike` (`*` already replaced by `%`)
    Ilike,
    /// `match` (`~`)
    Match,
    /// `imatch` (`~*`)
    Imatch,
    /// `isdistinct` (`IS DISTINCT FROM`)
    IsDistinct,
    /// `cs` (`@>`)
    Contains,
    /// `cd` (`<@`)
    Contained,
    /// `ov` (`&&`)
    Overlap,
    /// `sl` (`<<`)
    StrictlyLeft,
    /// `sr` (`>>`)
    StrictlyRight,
    /// `nxr` (`&<`)
    NotExtendRight,
    /// `nxl` (`&>`)
    NotExtendLeft,
    /// `adj` (`-|-`)
    Adjacent,
}

impl SimpleOp {
    /// Every operator with its query-string name. Longer names come first where one is a
    /// prefix of another (`gte` before `gt`), so a left-to-right scan picks the right one.
    pub const ALL: [(&'static str, SimpleOp); 19] = [
        ("eq", SimpleOp::Eq),
        ("neq", SimpleOp::Neq),
        ("gte", SimpleOp::Gte),
        ("gt", SimpleOp::Gt),
        ("lte", SimpleOp::Lte),
        ("lt", SimpleOp::Lt),
        ("like", SimpleOp::Like),
        ("ilike", SimpleOp::Ilike),
        ("match", SimpleOp::Match),
        ("imatch", SimpleOp::Imatch),
        ("isdistinct", SimpleOp::IsDistinct),
        ("cs", SimpleOp::Contains),
        ("cd", SimpleOp::Contained),
        ("ov", SimpleOp::Overlap),
        ("sl", SimpleOp::StrictlyLeft),
        ("sr", SimpleOp::StrictlyRight),
        ("nxr", SimpleOp::NotExtendRight),
        ("nxl", SimpleOp::NotExtendLeft),
        ("adj", SimpleOp::Adjacent),
    ];

    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            SimpleOp::Eq => "=",
            SimpleOp::Neq => "<>",
            SimpleOp::Gt => ">",
            SimpleOp::Gte => ">=",
            SimpleOp::Lt => "<",
            SimpleOp::Lte => "<=",
            SimpleOp::Like => "like",
            SimpleOp::Ilike => "ilike",
            SimpleOp::Match => "~",
            SimpleOp::Imatch => "~*",
            SimpleOp::IsDistinct => "is distinct from",
            SimpleOp::Contains => "@>",
            SimpleOp::Contained => "<@",
            SimpleOp::Overlap => "&&",
            SimpleOp::StrictlyLeft => "<<",
            SimpleOp::StrictlyRight => ">>",
            SimpleOp::NotExtendRight => "&<",
            SimpleOp::NotExtendLeft => "&>",
            SimpleOp::Adjacent => "-|-",
        }
    }

    /// Whether `(any)`/`(all)` may follow this operator.
    pub fn quantifiable(self) -> bool {
        matches!(
            self,
            SimpleOp::Eq
                | SimpleOp::Gt
                | SimpleOp::Gte
                | SimpleOp::Lt
                | SimpleOp::Lte
                | SimpleOp::Like
                | SimpleOp::Ilike
                | SimpleOp::Match
                | SimpleOp::Imatch
        )
    }
}

/// `(any)` / `(all)` after an operator: compare against every element of an array literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// `op ANY(array)`
    Any,
    /// `op ALL(array)`
    All,
}

/// The right side of `is`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    /// `is.null`
    Null,
    /// `is.not_null`
    NotNull,
    /// `is.true`
    True,
    /// `is.false`
    False,
    /// `is.unknown`
    Unknown,
}

/// Full-text search operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtsOp {
    /// `fts`: `to_tsquery`
    Fts,
    /// `plfts`: `plainto_tsquery`
    Plain,
    /// `phfts`: `phraseto_tsquery`
    Phrase,
    /// `wfts`: `websearch_to_tsquery`
    Websearch,
}

impl FtsOp {
    /// The Postgres function building the query.
    pub fn function(self) -> &'static str {
        match self {
            FtsOp::Fts => "to_tsquery",
            FtsOp::Plain => "plainto_tsquery",
            FtsOp::Phrase => "phraseto_tsquery",
            FtsOp::Websearch => "websearch_to_tsquery",
        }
    }
}

/// What a filter does to its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `op.value`; for `cs`/`cd`/`ov`/… the value is an array or range literal kept raw.
    Simple {
        /// The operator.
        op: SimpleOp,
        /// The value as sent (with `*` → `%` for `like`/`ilike`).
        value: String,
    },
    /// `op(any).{a,b}` / `op(all).{a,b}`; `value` is the raw array literal.
    Quantified {
        /// The operator.
        op: SimpleOp,
        /// `any` or `all`.
        quantifier: Quantifier,
        /// The array literal as sent (with `*` → `%` for `like`/`ilike`).
        value: String,
    },
    /// `in.(a,b,"c,d")`, parsed into its elements.
    In(Vec<String>),
    /// `is.null` etc.
    Is(IsValue),
    /// `fts(lang).query` and friends.
    Fts {
        /// Which `*_to_tsquery`.
        op: FtsOp,
        /// Text search configuration (`english`).
        language: Option<String>,
        /// The query text.
        value: String,
    },
}

/// One filter: `field=not.op.value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The filtered column (with JSON path).
    pub field: Field,
    /// `not.` prefix.
    pub negated: bool,
    /// The operation.
    pub operation: Operation,
}

/// A boolean combination from `or=(…)`, `and=(…)`, `not.or=(…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicTree {
    /// `and(…)` / `or(…)`, possibly negated.
    Expr {
        /// `not.` prefix.
        negated: bool,
        /// `and` or `or`.
        op: LogicOp,
        /// At least one child.
        children: Vec<LogicTree>,
    },
    /// A leaf filter.
    Filter(Filter),
}

/// The connective of a [`LogicTree::Expr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicOp {
    /// `and`
    And,
    /// `or`
    Or,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `asc`
    Asc,
    /// `desc`
    Desc,
}

/// Placement of nulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullsOrder {
    /// `nullsfirst`
    First,
    /// `nullslast`
    Last,
}

/// What an order term sorts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderTarget {
    /// A column of the resource itself (with JSON path).
    Field(Field),
    /// `rel(col)`: a column of a to-one embedded resource.
    Related {
        /// The embedded resource (name or alias as in `select`).
        relation: String,
        /// Its column.
        field: Field,
    },
}

/// One element of `order=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    /// What to sort by.
    pub target: OrderTarget,
    /// `None`: Postgres' default (ascending).
    pub direction: Option<Direction>,
    /// `None`: Postgres' default for the direction.
    pub nulls: Option<NullsOrder>,
}
