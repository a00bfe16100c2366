//! The schema cache: tables, views, columns, keys, foreign keys and functions of the exposed
//! schemas, introspected in one round of queries and swapped atomically, so a request never
//! sees a half-built cache. Reloaded on `NOTIFY pgrst, 'reload schema'` (PostgREST's
//! convention), which the DDL event trigger sends when the database user may create one.
//!
//! Must not: be read by anything but the REST planner and OpenAPI (other modules use their
//! own tables through their own code).

mod introspect;
pub mod listener;
mod relationships;

pub use introspect::load;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Name.
    pub name: String,
    /// SQL type as `format_type` spells it (usable in a cast).
    pub type_name: String,
    /// Accepts NULL.
    pub nullable: bool,
    /// Default expression.
    pub default: Option<String>,
    /// Generated (stored) or identity ALWAYS: never written.
    pub generated: bool,
}

/// A table, view, materialized view or foreign table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// `r`, `v`, `m`, `f`, `p`.
    pub kind: char,
    /// INSERT possible (tables, auto-updatable views).
    pub insertable: bool,
    /// UPDATE possible.
    pub updatable: bool,
    /// DELETE possible.
    pub deletable: bool,
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Primary key columns.
    pub primary_key: Vec<String>,
    /// Comment.
    pub description: Option<String>,
}

impl Table {
    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A foreign key (composite keys have several column pairs), between two tables or, inferred
/// through the columns of views (`via_view`), between a view and a table or two views: the
/// view's columns that are plain copies of the key's columns stand in for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// Constraint name.
    pub name: String,
    /// Referencing table (schema, name).
    pub from: (String, String),
    /// Referencing columns.
    pub from_columns: Vec<String>,
    /// Referenced table.
    pub to: (String, String),
    /// Referenced columns.
    pub to_columns: Vec<String>,
    /// The referencing columns are exactly the referencing table's primary key or one of its
    /// `UNIQUE` constraints: at most one referencing row per referenced row (one-to-one).
    pub one_to_one: bool,
    /// Inferred through a view (one end or both is a view over the constraint's table).
    pub via_view: bool,
}

/// A function argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// Name (empty when unnamed).
    pub name: String,
    /// SQL type.
    pub type_name: String,
    /// Has a default, so it may be omitted.
    pub has_default: bool,
    /// VARIADIC.
    pub variadic: bool,
}

/// A function callable over RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Schema.
    pub schema: String,
    /// Name.
    pub name: String,
    /// Input arguments in order.
    pub args: Vec<Arg>,
    /// SETOF / TABLE.
    pub returns_set: bool,
    /// Return type.
    pub return_type: String,
    /// When it returns rows of a table or view: that relation (for select/embedding).
    pub return_relation: Option<(String, String)>,
    /// Returns a composite type (row) rather than a scalar.
    pub returns_composite: bool,
    /// The columns of its rows when they are not a relation's: `RETURNS TABLE (…)`, OUT
    /// arguments, or a standalone composite type (empty otherwise, and for `SETOF record`).
    pub return_columns: Vec<Column>,
    /// `i`mmutable, `s`table or `v`olatile.
    pub volatility: char,
    /// Its one input argument is the row type of this relation (table, view, materialized
    /// view, foreign or partitioned table): a computed column of that relation when it
    /// returns a scalar, a computed relationship when it returns rows of a relation.
    pub row_arg: Option<(String, String)>,
    /// At most one row: not `SETOF`, or `SETOF … ROWS 1` (a to-one computed relationship).
    pub single_row: bool,
}

/// Everything the planner needs, for the exposed schemas.
#[derive(Debug, Clone, Default)]
pub struct SchemaCache {
    /// Tables by (schema, name).
    pub tables: HashMap<(String, String), Arc<Table>>,
    /// Foreign keys between exposed tables.
    pub foreign_keys: Vec<ForeignKey>,
    /// Functions by (schema, name); overloads share a key.
    pub functions: HashMap<(String, String), Vec<Function>>,
    /// Functions whose one argument is a relation's row type, by that relation (computed
    /// columns and computed relationships; see `computed_column`).
    pub computed: HashMap<(String, String), Vec<Function>>,
    /// Which of the optional request settings some SQL of the database names (see
    /// `db::tx::Published`); all of them for a cache that was not loaded from a database.
    pub request_settings: crate::db::tx::Published,
    /// No SQL of the database names `response.status` or `response.headers`, so no
    /// statement can set them and REST statements need not read them back
    /// (`rest::sql::response_gucs`). False (read them) for a cache not loaded from a database.
    pub response_settings_unnamed: bool,
}

impl SchemaCache {
    /// The optional request settings a request publishes: those some SQL of the database
    /// names, or all of them with `rest.request_settings_always` (`always`). Decided here,
    /// beside [`SchemaCache::reads_response_settings`], so the two switches cannot drift.
    pub fn published_settings(&self, always: bool) -> crate::db::tx::Published {
        if always {
            crate::db::tx::Published::ALL
        } else {
            self.request_settings
        }
    }

    /// Whether REST statements read `response.status`/`response.headers` back: when some
    /// SQL of the database names them, or always with `rest.request_settings_always`.
    pub fn reads_response_settings(&self, always: bool) -> bool {
        always || !self.response_settings_unnamed
    }

    /// A relation.
    pub fn table(&self, schema: &str, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    /// PostgREST's computed column ("computed field") `name` of `table`: a function of
    /// `table`'s schema named `name` whose one argument is `table`'s row type and that returns
    /// one value that is not a relation's row (those are computed relationships).
    pub fn computed_column(&self, table: &Table, name: &str) -> Option<&Function> {
        self.computed_of(table)
            .iter()
            .find(|f| f.name == name && !f.returns_set && f.return_relation.is_none())
    }

    /// PostgREST's computed relationship `name` from `table`: a function of `table`'s
    /// schema named `name` whose one argument is `table`'s row type and that returns rows
    /// (`SETOF`, or one) of a relation in the cache.
    pub fn computed_relationship(&self, table: &Table, name: &str) -> Option<&Function> {
        self.computed_of(table).iter().find(|f| {
            f.name == name
                && f.return_relation
                    .as_ref()
                    .is_some_and(|(s, n)| self.table(s, n).is_some())
        })
    }

    /// The functions of `table`'s schema taking `table`'s row.
    fn computed_of(&self, table: &Table) -> &[Function] {
        self.computed
            .get(&(table.schema.clone(), table.name.clone()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Indexes the functions taking one relation's row type (`computed`), from `functions`.
    pub fn index_computed(&mut self) {
        self.computed.clear();
        for f in self.functions.values().flatten() {
            // Only functions of the relation's own schema (PostgREST resolves them on the
            // request's schema).
            match &f.row_arg {
                Some(rel) if rel.0 == f.schema => self
                    .computed
                    .entry(rel.clone())
                    .or_default()
                    .push(f.clone()),
                _ => {}
            }
        }
    }

    /// The overloads of a function.
    pub fn functions(&self, schema: &str, name: &str) -> &[Function] {
        self.functions
            .get(&(schema.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The current cache, replaced as a whole on reload.
#[derive(Debug, Default)]
pub struct SchemaHolder {
    current: RwLock<Arc<SchemaCache>>,
}

impl SchemaHolder {
    /// A holder with an initial cache.
    pub fn new(cache: SchemaCache) -> Self {
        SchemaHolder {
            current: RwLock::new(Arc::new(cache)),
        }
    }

    /// The cache as of now (requests hold this snapshot for their whole life).
    pub fn get(&self) -> Arc<SchemaCache> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Swaps in a new cache.
    pub fn set(&self, cache: SchemaCache) {
        let fresh = Arc::new(cache);
        match self.current.write() {
            Ok(mut g) => *g = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
    }
}
