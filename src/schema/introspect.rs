//! The introspection queries: six statements, each a single pass over the catalogs.

use super::relationships::{self, RawForeignKey, RawView};
use super::{Arg, Column, Function, SchemaCache, Table};
use std::collections::HashMap;

const RELATIONS: &str = "
SELECT n.nspname::text, c.relname::text, c.relkind::text,
       c.relkind IN ('r', 'p') OR (c.relkind IN ('v', 'f') AND pg_relation_is_updatable(c.oid, true) & 8 = 8),
       c.relkind IN ('r', 'p') OR (c.relkind IN ('v', 'f') AND pg_relation_is_updatable(c.oid, true) & 4 = 4),
       c.relkind IN ('r', 'p') OR (c.relkind IN ('v', 'f') AND pg_relation_is_updatable(c.oid, true) & 16 = 16),
       obj_description(c.oid, 'pg_class'),
       coalesce((SELECT array_agg(a.attname::text ORDER BY array_position(con.conkey, a.attnum))
                   FROM pg_constraint con JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)
                  WHERE con.conrelid = c.oid AND con.contype = 'p'), '{}')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname = ANY($1)";

const COLUMNS: &str = "
SELECT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       NOT a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '' OR a.attidentity = 'a'
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname = ANY($1)
 ORDER BY c.oid, a.attnum";

// Foreign keys between exposed tables, and those of tables a view depends on (a view in an
// exposed schema may be over tables of another schema). `one_to_one`: the referencing columns
// are exactly the primary key or a UNIQUE constraint of the referencing table (PostgREST's
// rule: the same column set, not a superset of a unique one).
const FOREIGN_KEYS: &str = "
SELECT con.conname::text, sn.nspname::text, s.relname::text, tn.nspname::text, t.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
               JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
       con.conrelid, con.confrelid, con.conkey, con.confkey,
       EXISTS (SELECT 1 FROM pg_constraint u
                WHERE u.conrelid = con.conrelid AND u.contype IN ('p', 'u')
                  AND u.conkey @> con.conkey AND u.conkey <@ con.conkey),
       sn.nspname = ANY($1), tn.nspname = ANY($1)
  FROM pg_constraint con
  JOIN pg_class s ON s.oid = con.conrelid JOIN pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_class t ON t.oid = con.confrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE con.contype = 'f'
   AND (sn.nspname = ANY($1) OR EXISTS (SELECT 1 FROM pg_depend d
          WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = con.conrelid AND d.classid = 'pg_rewrite'::regclass))
   AND (tn.nspname = ANY($1) OR EXISTS (SELECT 1 FROM pg_depend d
          WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = con.confrelid AND d.classid = 'pg_rewrite'::regclass))
 ORDER BY con.conname";

// The views (and materialized views) of the exposed schemas, and the views they are built on
// (followed through pg_depend, whatever their schema), with their columns and stored query
// tree: `relationships::view_column_origins` reads where each column comes from.
const VIEWS: &str = "
WITH RECURSIVE views(oid) AS (
  SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY($1)
  UNION
  SELECT d.refobjid FROM views v
    JOIN pg_rewrite r ON r.ev_class = v.oid
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> v.oid
    JOIN pg_class c ON c.oid = d.refobjid AND c.relkind IN ('v', 'm')
)
SELECT v.oid, n.nspname::text, c.relname::text, n.nspname = ANY($1),
       ARRAY(SELECT a.attnum FROM pg_attribute a
              WHERE a.attrelid = v.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = v.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       r.ev_action::text
  FROM views v
  JOIN pg_class c ON c.oid = v.oid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_rewrite r ON r.ev_class = v.oid AND r.rulename = '_RETURN'";

// The primary keys (attnums in key order) of the tables views are built on, whatever their
// schema: `relationships::view_primary_keys` gives a view the key of a base table whose key
// columns it copies.
const VIEW_BASE_KEYS: &str = "
SELECT con.conrelid, con.conkey
  FROM pg_constraint con
 WHERE con.contype = 'p'
   AND EXISTS (SELECT 1 FROM pg_depend d
                WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = con.conrelid
                  AND d.classid = 'pg_rewrite'::regclass)";

const FUNCTIONS: &str = "
SELECT n.nspname::text, p.proname::text,
       coalesce(p.proargnames::text[], '{}'),
       ARRAY(SELECT format_type(t, NULL) FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) WITH ORDINALITY u(t, i) ORDER BY i),
       coalesce(p.proargmodes::text[], '{}'),
       p.pronargs::int4, p.pronargdefaults::int4, p.provolatile::text, p.proretset,
       format_type(p.prorettype, NULL), rt.typtype::text = 'c' OR rt.oid = 'record'::regtype,
       rn.nspname::text, rc.relname::text,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = ct.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
              WHERE a.attrelid = ct.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       an.nspname::text, ac.relname::text, NOT p.proretset OR p.prorows = 1
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_type rt ON rt.oid = p.prorettype
  LEFT JOIN pg_class rc ON rc.oid = rt.typrelid AND rc.relkind IN ('r', 'v', 'm', 'f', 'p')
  LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
  LEFT JOIN pg_class ct ON ct.oid = rt.typrelid AND ct.relkind = 'c'
  LEFT JOIN pg_type at ON p.pronargs = 1 AND at.oid = p.proargtypes[0]
  LEFT JOIN pg_class ac ON ac.oid = at.typrelid AND ac.relkind IN ('r', 'v', 'm', 'f', 'p')
  LEFT JOIN pg_namespace an ON an.oid = ac.relnamespace
 WHERE n.nspname = ANY($1) AND p.prokind = 'f'";

/// Which optional request settings (`request.method`, `request.path`, `request.headers`,
/// `request.cookies`) any SQL of the database names, in any schema: function bodies (the
/// source text; SQL-standard bodies decompiled), RLS policies, views and rules, column
/// defaults, check constraints and trigger conditions. Names are matched case-insensitively,
/// as Postgres matches setting names. A name built at run time (`'request.' || x`) is not
/// seen: `rest.request_settings_always` publishes every setting for such databases. The
/// last column: whether any of it names `response.status` or `response.headers` (when none
/// does, REST statements do not read them back; the same switch reads them always).
const REQUEST_SETTINGS_NAMED: &str = "
WITH src(t) AS (
  SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prolang NOT IN (12, 13)
  UNION ALL
  SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p')
     AND p.prolang = 14 AND p.prosrc = ''
  UNION ALL SELECT pg_get_expr(polqual, polrelid) FROM pg_policy
  UNION ALL SELECT pg_get_expr(polwithcheck, polrelid) FROM pg_policy
  UNION ALL SELECT pg_get_ruledef(r.oid) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
   JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef
  UNION ALL SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c'
  UNION ALL SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal)
SELECT coalesce(bool_or(t ILIKE '%request.method%'), false),
       coalesce(bool_or(t ILIKE '%request.path%'), false),
       coalesce(bool_or(t ILIKE '%request.headers%'), false),
       coalesce(bool_or(t ILIKE '%request.cookies%'), false),
       coalesce(bool_or(t ILIKE '%response.status%' OR t ILIKE '%response.headers%'), false)
  FROM src";

/// Introspects the exposed schemas.
pub async fn load(
    client: &tokio_postgres::Client,
    schemas: &[String],
) -> Result<SchemaCache, tokio_postgres::Error> {
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&schemas];
    // Six statements in one round trip, in ONE snapshot: run as separate statements they
    // could straddle a DDL commit and yield a cache that has a new function but not the new
    // table created in the same transaction (seen in CI). They are prepared first: a query
    // given as text is prepared (a round trip) before its Bind/Execute is sent, so in the
    // pipeline below they would run after the COMMIT, each in its own snapshot.
    let (rels, cols, fks, views, funcs, keys, named) = tokio::try_join!(
        client.prepare(RELATIONS),
        client.prepare(COLUMNS),
        client.prepare(FOREIGN_KEYS),
        client.prepare(VIEWS),
        client.prepare(FUNCTIONS),
        client.prepare(VIEW_BASE_KEYS),
        client.prepare(REQUEST_SETTINGS_NAMED),
    )?;
    let (begin, rels, cols, fks, views, funcs, keys, named, commit) = tokio::join!(
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        client.query(&rels, &p),
        client.query(&cols, &p),
        client.query(&fks, &p),
        client.query(&views, &p),
        client.query(&funcs, &p),
        client.query(&keys, &[]),
        client.query_one(&named, &[]),
        client.batch_execute("COMMIT"),
    );
    begin?;
    let (rels, cols, fks, views, funcs, keys, named) =
        (rels?, cols?, fks?, views?, funcs?, keys?, named?);
    commit?;
    let mut tables: HashMap<(String, String), Table> = HashMap::with_capacity(rels.len());
    for r in rels {
        let kind: String = r.get(2);
        let key: (String, String) = (r.get(0), r.get(1));
        tables.insert(
            key.clone(),
            Table {
                schema: key.0,
                name: key.1,
                kind: kind.chars().next().unwrap_or('r'),
                insertable: r.get(3),
                updatable: r.get(4),
                deletable: r.get(5),
                columns: Vec::new(),
                primary_key: r.get(7),
                description: r.get(6),
            },
        );
    }
    for r in cols {
        let key: (String, String) = (r.get(0), r.get(1));
        if let Some(t) = tables.get_mut(&key) {
            t.columns.push(Column {
                name: r.get(2),
                type_name: r.get(3),
                nullable: r.get(4),
                default: r.get(5),
                generated: r.get(6),
            });
        }
    }
    let fks: Vec<RawForeignKey> = fks
        .iter()
        .map(|r| RawForeignKey {
            name: r.get(0),
            from: (r.get(1), r.get(2)),
            to: (r.get(3), r.get(4)),
            from_columns: r.get(5),
            to_columns: r.get(6),
            from_oid: r.get(7),
            to_oid: r.get(8),
            from_attnums: r.get(9),
            to_attnums: r.get(10),
            one_to_one: r.get(11),
            from_exposed: r.get(12),
            to_exposed: r.get(13),
        })
        .collect();
    let views: Vec<RawView> = views
        .iter()
        .map(|r| {
            let attnums: Vec<i16> = r.get(4);
            let names: Vec<String> = r.get(5);
            let tree: String = r.get(6);
            RawView {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
                exposed: r.get(3),
                columns: attnums.into_iter().zip(names).collect(),
                origins: relationships::view_column_origins(&tree),
            }
        })
        .collect();
    let table_keys: HashMap<u32, Vec<i16>> = keys.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (key, pk) in relationships::view_primary_keys(&views, &table_keys) {
        if let Some(t) = tables.get_mut(&key) {
            t.primary_key = pk;
        }
    }
    let foreign_keys = relationships::relationships(fks, &views);
    let mut functions: HashMap<(String, String), Vec<Function>> = HashMap::new();
    for r in funcs {
        let names: Vec<String> = r.get(2);
        let types: Vec<String> = r.get(3);
        let modes: Vec<String> = r.get(4);
        let nargs: i32 = r.get(5);
        let ndefaults: i32 = r.get(6);
        // Input arguments: modes i, b, v (no mode array means all are inputs).
        let mut args = Vec::new();
        for (i, ty) in types.iter().enumerate() {
            let mode = modes.get(i).map(String::as_str).unwrap_or("i");
            if !matches!(mode, "i" | "b" | "v") {
                continue;
            }
            args.push(Arg {
                name: names.get(i).cloned().unwrap_or_default(),
                type_name: ty.clone(),
                has_default: false,
                variadic: mode == "v",
            });
        }
        // Defaults belong to the last `pronargdefaults` input arguments.
        let first_default = (nargs - ndefaults).max(0) as usize;
        for (i, a) in args.iter_mut().enumerate() {
            a.has_default = i >= first_default;
        }
        let vol: String = r.get(7);
        let rschema: Option<String> = r.get(11);
        let rname: Option<String> = r.get(12);
        // The columns of the rows it returns when they are not a table's: OUT, INOUT and
        // TABLE arguments, or else the attributes of a standalone composite type.
        let column = |name: &str, ty: &str| Column {
            name: name.to_string(),
            type_name: ty.to_string(),
            nullable: true,
            default: None,
            generated: false,
        };
        let mut return_columns: Vec<Column> = types
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                matches!(
                    modes.get(*i).map(String::as_str).unwrap_or("i"),
                    "o" | "b" | "t"
                )
            })
            .map(|(i, ty)| column(names.get(i).map(String::as_str).unwrap_or(""), ty))
            .collect();
        if return_columns.is_empty() {
            let anames: Vec<String> = r.get(13);
            let atypes: Vec<String> = r.get(14);
            return_columns = anames
                .iter()
                .zip(&atypes)
                .map(|(n, t)| column(n, t))
                .collect();
        }
        // A single OUT argument makes a scalar function, not a row.
        if return_columns.len() == 1 && !r.get::<_, bool>(10) {
            return_columns.clear();
        }
        if return_columns.iter().any(|c| c.name.is_empty()) {
            return_columns.clear();
        }
        let f = Function {
            schema: r.get(0),
            name: r.get(1),
            args,
            returns_set: r.get(8),
            return_type: r.get(9),
            returns_composite: r.get(10),
            return_relation: rschema.zip(rname),
            return_columns,
            volatility: vol.chars().next().unwrap_or('v'),
            row_arg: r
                .get::<_, Option<String>>(15)
                .zip(r.get::<_, Option<String>>(16)),
            single_row: r.get(17),
        };
        functions
            .entry((f.schema.clone(), f.name.clone()))
            .or_default()
            .push(f);
    }
    let mut cache = SchemaCache {
        tables: tables
            .into_iter()
            .map(|(k, t)| (k, std::sync::Arc::new(t)))
            .collect(),
        foreign_keys,
        functions,
        computed: HashMap::new(),
        request_settings: crate::db::tx::Published::new(
            named.get(0),
            named.get(1),
            named.get(2),
            named.get(3),
        ),
        response_settings_unnamed: !named.get::<_, bool>(4),
    };
    cache.index_computed();
    Ok(cache)
}
