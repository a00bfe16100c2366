//! Relationships (pure): foreign keys between exposed tables, plus the ones inferred through
//! views. A view column that is a plain copy of a base table column (`SELECT f.director_id
//! AS dir FROM films f`, through joins, subqueries and other views) stands in for that column,
//! so a foreign key of the base table whose every column a view exposes relates the view too
//! (view → table, table → view and view → view), as PostgREST infers them.
//!
//! Where a view column comes from is read from the view's stored query tree
//! (`pg_rewrite.ev_action`): each output entry of the top-level query carries `resorigtbl` /
//! `resorigcol`, which the parser fills for plain column references (the same origin the wire
//! protocol reports per result column). For a view over a view that origin is the inner
//! view, so origins are followed until a table is reached.

use super::ForeignKey;
use std::collections::HashMap;

/// A foreign key as read from `pg_constraint`, with the facts needed to carry it to views.
#[derive(Debug, Clone)]
pub(super) struct RawForeignKey {
    pub name: String,
    pub from_oid: u32,
    pub from: (String, String),
    pub from_attnums: Vec<i16>,
    pub from_columns: Vec<String>,
    pub to_oid: u32,
    pub to: (String, String),
    pub to_attnums: Vec<i16>,
    pub to_columns: Vec<String>,
    pub one_to_one: bool,
    /// The referencing table is in an exposed schema.
    pub from_exposed: bool,
    /// The referenced table is in an exposed schema.
    pub to_exposed: bool,
}

/// A view (or materialized view) and where its columns come from.
#[derive(Debug, Clone)]
pub(super) struct RawView {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// In an exposed schema (else only read to follow a view of this view).
    pub exposed: bool,
    /// (attnum, name) of its columns.
    pub columns: Vec<(i16, String)>,
    /// (attnum, origin relation, origin attnum) for the columns that are plain copies.
    pub origins: Vec<(i16, u32, i16)>,
}

/// More combinations than this per view and key (a key column exposed under several names
/// in one view) are not all turned into relationships: each would be one more candidate.
const MAX_COMBINATIONS: usize = 8;

/// Views deeper than this are not followed (a stored view cannot reference itself, so this
/// only bounds the work on absurd schemas).
const MAX_DEPTH: usize = 64;

/// The foreign keys the planner sees: those between exposed tables, then those inferred
/// through exposed views.
pub(super) fn relationships(fks: Vec<RawForeignKey>, views: &[RawView]) -> Vec<ForeignKey> {
    let by_oid: HashMap<u32, &RawView> = views.iter().map(|v| (v.oid, v)).collect();
    // (base relation, base attnum) → the exposed view columns that copy it.
    let mut copies: HashMap<(u32, i16), Vec<(&RawView, &str)>> = HashMap::new();
    for v in views.iter().filter(|v| v.exposed) {
        for (attnum, name) in &v.columns {
            if let Some(base) = resolve(&by_oid, v.oid, *attnum) {
                copies.entry(base).or_default().push((v, name.as_str()));
            }
        }
    }
    let mut out = Vec::new();
    let mut derived = Vec::new();
    for fk in fks {
        let mut froms = view_ends(&copies, fk.from_oid, &fk.from_attnums);
        let mut tos = view_ends(&copies, fk.to_oid, &fk.to_attnums);
        if !froms.is_empty() || !tos.is_empty() {
            if fk.from_exposed {
                froms.insert(0, (fk.from.clone(), fk.from_columns.clone()));
            }
            if fk.to_exposed {
                tos.insert(0, (fk.to.clone(), fk.to_columns.clone()));
            }
            for (fi, (from, from_columns)) in froms.iter().enumerate() {
                for (ti, (to, to_columns)) in tos.iter().enumerate() {
                    let base_pair = fi == 0 && ti == 0 && fk.from_exposed && fk.to_exposed;
                    if base_pair {
                        continue;
                    }
                    derived.push(ForeignKey {
                        name: fk.name.clone(),
                        from: from.clone(),
                        from_columns: from_columns.clone(),
                        to: to.clone(),
                        to_columns: to_columns.clone(),
                        one_to_one: fk.one_to_one,
                        via_view: true,
                    });
                }
            }
        }
        if fk.from_exposed && fk.to_exposed {
            out.push(ForeignKey {
                name: fk.name,
                from: fk.from,
                from_columns: fk.from_columns,
                to: fk.to,
                to_columns: fk.to_columns,
                one_to_one: fk.one_to_one,
                via_view: false,
            });
        }
    }
    out.extend(derived);
    out
}

/// The primary keys PostgREST infers for views: a view whose columns copy every column of a
/// base table's primary key (through renames, joins, subqueries and views of views) has that
/// key, named by its own columns in the key's order. `table_keys` maps a table's oid to its
/// primary key's attnums in key order. With several such base tables (a join), the one whose
/// key column comes first among the view's columns wins; a key column copied under several
/// names is taken under the first.
pub(super) fn view_primary_keys(
    views: &[RawView],
    table_keys: &HashMap<u32, Vec<i16>>,
) -> HashMap<(String, String), Vec<String>> {
    let by_oid: HashMap<u32, &RawView> = views.iter().map(|v| (v.oid, v)).collect();
    let mut out = HashMap::new();
    for v in views.iter().filter(|v| v.exposed) {
        // (base table, base attnum) → the first of this view's columns copying it, in the
        // view's column order.
        let mut columns = v.columns.clone();
        columns.sort_by_key(|(attnum, _)| *attnum);
        let bases: Vec<((u32, i16), &str)> = columns
            .iter()
            .filter_map(|(attnum, name)| {
                resolve(&by_oid, v.oid, *attnum).map(|b| (b, name.as_str()))
            })
            .collect();
        let key = bases.iter().find_map(|((rel, attnum), _)| {
            let pk = table_keys.get(rel).filter(|pk| pk.contains(attnum))?;
            pk.iter()
                .map(|a| {
                    bases
                        .iter()
                        .find(|(b, _)| *b == (*rel, *a))
                        .map(|(_, n)| (*n).to_string())
                })
                .collect::<Option<Vec<String>>>()
        });
        if let Some(key) = key {
            out.insert((v.schema.clone(), v.name.clone()), key);
        }
    }
    out
}

/// The table column a view column copies, following views of views.
fn resolve(views: &HashMap<u32, &RawView>, mut rel: u32, mut attnum: i16) -> Option<(u32, i16)> {
    for _ in 0..MAX_DEPTH {
        let Some(v) = views.get(&rel) else {
            return Some((rel, attnum));
        };
        let &(_, orel, oatt) = v.origins.iter().find(|(a, _, _)| *a == attnum)?;
        rel = orel;
        attnum = oatt;
    }
    None
}

/// For each exposed view exposing every column of a key of `rel`: the view and its columns
/// standing for the key's, in key order (several combinations when a key column is exposed
/// under several names).
fn view_ends(
    copies: &HashMap<(u32, i16), Vec<(&RawView, &str)>>,
    rel: u32,
    attnums: &[i16],
) -> Vec<((String, String), Vec<String>)> {
    let Some(first) = attnums.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    for (v, _) in copies.get(&(rel, *first)).map(Vec::as_slice).unwrap_or(&[]) {
        if seen.contains(&v.oid) {
            continue;
        }
        seen.push(v.oid);
        // Every combination of this view's columns for the key's columns.
        let mut combos: Vec<Vec<String>> = vec![Vec::new()];
        for a in attnums {
            let names: Vec<&str> = copies
                .get(&(rel, *a))
                .map(|c| {
                    c.iter()
                        .filter(|(w, _)| w.oid == v.oid)
                        .map(|(_, n)| *n)
                        .collect()
                })
                .unwrap_or_default();
            let mut next = Vec::new();
            for combo in &combos {
                for n in &names {
                    if next.len() == MAX_COMBINATIONS {
                        break;
                    }
                    let mut c = combo.clone();
                    c.push((*n).to_string());
                    next.push(c);
                }
            }
            combos = next;
        }
        for c in combos {
            out.push(((v.schema.clone(), v.name.clone()), c));
        }
    }
    out
}

/// The origins of a view's output columns, read from its stored query tree (the text form
/// of `pg_rewrite.ev_action` for its `_RETURN` rule): (attnum, origin relation, origin
/// attnum) for each column that is a plain column reference. Only the `targetList` of the
/// top-level query is read; subqueries, joins and CTEs are already resolved into these
/// origins by Postgres.
///
/// The text is a tree of `{NODE :field value …}` and `(list …)`; inside tokens, the
/// characters `{}()` and white space are escaped with a backslash, so depth can be counted
/// on the raw bytes.
pub(super) fn view_column_origins(ev_action: &str) -> Vec<(i16, u32, i16)> {
    #[derive(Default)]
    struct Entry {
        resno: Option<i16>,
        tbl: Option<u32>,
        col: Option<i16>,
        junk: bool,
    }
    let b = ev_action.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut i = 0usize;
    // The last `:field` seen on the top-level query (depth 2) and on a target entry (depth 4).
    let mut query_key: &str = "";
    let mut entry_key: &str = "";
    let mut in_target_list = false;
    let mut entry: Option<Entry> = None;
    while i < b.len() {
        match b[i] {
            b' ' | b'\n' | b'\t' | b'\r' => i += 1,
            b'(' | b'{' => {
                depth += 1;
                i += 1;
                if depth == 3 && query_key == ":targetList" {
                    in_target_list = true;
                }
                if depth == 4 && in_target_list {
                    entry = Some(Entry::default());
                    entry_key = "";
                }
            }
            b')' | b'}' => {
                i += 1;
                if depth == 4 && in_target_list {
                    if let Some(Entry {
                        resno: Some(r),
                        tbl: Some(t),
                        col: Some(c),
                        junk: false,
                    }) = entry.take()
                    {
                        if t != 0 && c > 0 {
                            out.push((r, t, c));
                        }
                    }
                }
                if depth == 3 && in_target_list {
                    // The top-level target list is complete.
                    return out;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(
                        b[i],
                        b' ' | b'\n' | b'\t' | b'\r' | b'(' | b')' | b'{' | b'}'
                    )
                {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let word = ev_action.get(start..i.min(b.len())).unwrap_or("");
                if depth == 2 {
                    if word.starts_with(':') {
                        query_key = word;
                    }
                } else if depth == 4 && in_target_list {
                    if word.starts_with(':') {
                        entry_key = word;
                    } else if let Some(e) = entry.as_mut() {
                        match entry_key {
                            ":resno" => e.resno = word.parse().ok(),
                            ":resorigtbl" => e.tbl = word.parse().ok(),
                            ":resorigcol" => e.col = word.parse().ok(),
                            ":resjunk" => e.junk = word == "true",
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // `CREATE VIEW vv AS SELECT s.dir, upper(s."my title") FROM (SELECT * FROM v) s` over
    // `v` (oid 16407), as Postgres 15 stores it (abridged where nothing is read).
    const VIEW_OF_VIEW: &str = r#"({QUERY :commandType 1 :querySource 0 :canSetTag true :utilityStmt <> :resultRelation 0 :hasAggs false :cteList <> :rtable ({RANGETBLENTRY :alias {ALIAS :aliasname old :colnames <>} :eref {ALIAS :aliasname old :colnames ("dir" "upper")} :rtekind 0 :relid 16411 :relkind v} {RANGETBLENTRY :alias {ALIAS :aliasname s :colnames <>} :eref {ALIAS :aliasname s :colnames ("id" "my\ title" "dir")} :rtekind 1 :subquery {QUERY :commandType 1 :rtable ({RANGETBLENTRY :alias <> :eref {ALIAS :aliasname v :colnames ("id" "my\ title" "dir")} :rtekind 0 :relid 16407 :relkind v :selectedCols (b 8 9 10)}) :jointree {FROMEXPR :fromlist ({RANGETBLREF :rtindex 1}) :quals <>} :targetList ({TARGETENTRY :expr {VAR :varno 1 :varattno 1 :vartype 23} :resno 1 :resname id :ressortgroupref 0 :resorigtbl 16407 :resorigcol 1 :resjunk false} {TARGETENTRY :expr {VAR :varno 1 :varattno 2 :vartype 25} :resno 2 :resname my\ title :ressortgroupref 0 :resorigtbl 16407 :resorigcol 2 :resjunk false} {TARGETENTRY :expr {VAR :varno 1 :varattno 3 :vartype 23} :resno 3 :resname dir :ressortgroupref 0 :resorigtbl 16407 :resorigcol 3 :resjunk false}) :override 0} :security_barrier false}) :jointree {FROMEXPR :fromlist ({RANGETBLREF :rtindex 3}) :quals <>} :targetList ({TARGETENTRY :expr {VAR :varno 3 :varattno 3 :vartype 23 :location 28} :resno 1 :resname dir :ressortgroupref 0 :resorigtbl 16407 :resorigcol 3 :resjunk false} {TARGETENTRY :expr {FUNCEXPR :funcid 871 :args ({VAR :varno 3 :varattno 2 :vartype 25 :location 41}) :location 35} :resno 2 :resname upper :ressortgroupref 0 :resorigtbl 0 :resorigcol 0 :resjunk false}) :override 0 :onConflict <> :returningList <> :stmt_len 82})"#;

    #[test]
    fn origins_come_from_the_top_level_target_list_only() {
        // The subquery's entries (resno 1..3 of v) are not the view's columns; `upper(…)` is
        // an expression without an origin.
        assert_eq!(view_column_origins(VIEW_OF_VIEW), vec![(1, 16407, 3)]);
    }

    #[test]
    fn escaped_structural_characters_do_not_change_depth() {
        let tree = r#"({QUERY :rtable ({RANGETBLENTRY :eref {ALIAS :aliasname x :colnames ("a\)\}\ b" "c\\")}}) :targetList ({TARGETENTRY :expr {VAR :varno 1} :resno 1 :resname a\)\}\ b :resorigtbl 10 :resorigcol 2 :resjunk false} {TARGETENTRY :expr {VAR :varno 1} :resno 2 :resname c\\ :resorigtbl 10 :resorigcol 1 :resjunk false} {TARGETENTRY :expr {VAR :varno 1} :resno 3 :resname <> :resorigtbl 10 :resorigcol 3 :resjunk true}) :override 0})"#;
        assert_eq!(view_column_origins(tree), vec![(1, 10, 2), (2, 10, 1)]);
    }

    #[test]
    fn garbage_gives_no_origins() {
        assert!(view_column_origins("").is_empty());
        assert!(view_column_origins("(((").is_empty());
        assert!(view_column_origins("<>").is_empty());
        assert!(view_column_origins(")))}} :targetList (").is_empty());
    }

    fn fk(
        name: &str,
        from: (u32, &str, &[(i16, &str)]),
        to: (u32, &str, &[(i16, &str)]),
    ) -> RawForeignKey {
        RawForeignKey {
            name: name.into(),
            from_oid: from.0,
            from: ("public".into(), from.1.into()),
            from_attnums: from.2.iter().map(|c| c.0).collect(),
            from_columns: from.2.iter().map(|c| c.1.to_string()).collect(),
            to_oid: to.0,
            to: ("public".into(), to.1.into()),
            to_attnums: to.2.iter().map(|c| c.0).collect(),
            to_columns: to.2.iter().map(|c| c.1.to_string()).collect(),
            one_to_one: false,
            from_exposed: true,
            to_exposed: true,
        }
    }

    fn view(oid: u32, name: &str, cols: &[(i16, &str, u32, i16)]) -> RawView {
        RawView {
            oid,
            schema: "public".into(),
            name: name.into(),
            exposed: true,
            columns: cols.iter().map(|c| (c.0, c.1.to_string())).collect(),
            origins: cols
                .iter()
                .filter(|c| c.2 != 0)
                .map(|c| (c.0, c.2, c.3))
                .collect(),
        }
    }

    fn summary(fks: &[ForeignKey]) -> Vec<String> {
        fks.iter()
            .map(|f| {
                format!(
                    "{}({})->{}({}){}",
                    f.from.1,
                    f.from_columns.join(","),
                    f.to.1,
                    f.to_columns.join(","),
                    if f.via_view { " view" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn keys_are_carried_through_renamed_view_columns_and_views_of_views() {
        // films(1 id, 2 director_id) → directors(1 id); v = SELECT id, director_id AS dir
        // FROM films; vv = SELECT dir FROM v; dv = SELECT id AS director FROM directors.
        let fks = vec![fk(
            "films_director_id_fkey",
            (1, "films", &[(2, "director_id")]),
            (2, "directors", &[(1, "id")]),
        )];
        let views = vec![
            view(10, "v", &[(1, "id", 1, 1), (2, "dir", 1, 2)]),
            view(11, "vv", &[(1, "dir", 10, 2), (2, "up", 0, 0)]),
            view(12, "dv", &[(1, "director", 2, 1)]),
        ];
        let got = summary(&relationships(fks, &views));
        assert_eq!(got[0], "films(director_id)->directors(id)");
        let mut rest = got[1..].to_vec();
        rest.sort();
        assert_eq!(
            rest,
            vec![
                "films(director_id)->dv(director) view",
                "v(dir)->directors(id) view",
                "v(dir)->dv(director) view",
                "vv(dir)->directors(id) view",
                "vv(dir)->dv(director) view",
            ]
        );
    }

    #[test]
    fn composite_keys_need_every_column_and_duplicates_multiply() {
        let fks = vec![fk(
            "c",
            (1, "a", &[(1, "x"), (2, "y")]),
            (2, "b", &[(1, "p"), (2, "q")]),
        )];
        let views = vec![
            // Only half of the key: no relationship.
            view(10, "half", &[(1, "x", 1, 1)]),
            // y exposed twice: two relationships.
            view(
                11,
                "twice",
                &[(1, "x", 1, 1), (2, "y1", 1, 2), (3, "y2", 1, 2)],
            ),
        ];
        let got = summary(&relationships(fks, &views));
        assert_eq!(
            got,
            vec![
                "a(x,y)->b(p,q)",
                "twice(x,y1)->b(p,q) view",
                "twice(x,y2)->b(p,q) view"
            ]
        );
    }

    #[test]
    fn unexposed_tables_relate_only_through_exposed_views() {
        let mut k = fk(
            "k",
            (1, "films", &[(2, "director_id")]),
            (2, "directors", &[(1, "id")]),
        );
        k.from_exposed = false;
        k.one_to_one = true;
        let mut hidden = view(11, "hidden", &[(1, "dir", 1, 2)]);
        hidden.exposed = false;
        let views = vec![view(10, "v", &[(1, "dir", 1, 2)]), hidden];
        let got = relationships(vec![k], &views);
        assert_eq!(summary(&got), vec!["v(dir)->directors(id) view"]);
        assert!(got[0].one_to_one, "the base key's cardinality is kept");
    }

    #[test]
    fn views_copying_a_whole_primary_key_have_it() {
        // films(id) oid 10, key attnum 1; roles(film_id, actor_id) oid 20, key (2, 1).
        let keys = HashMap::from([(10, vec![1]), (20, vec![2, 1]), (30, vec![1])]);
        let views = vec![
            // Renamed key column.
            view(
                100,
                "movies",
                &[(1, "movie_id", 10, 1), (2, "title", 10, 2)],
            ),
            // A view of that view.
            view(101, "movies2", &[(1, "title", 100, 2), (2, "mid", 100, 1)]),
            // Composite key, reordered; the key order is kept.
            view(
                102,
                "casting",
                &[(1, "a", 20, 1), (2, "f", 20, 2), (3, "x", 0, 0)],
            ),
            // Half of a composite key: no key.
            view(103, "half", &[(1, "f", 20, 2)]),
            // Key behind an expression: no key.
            view(104, "expr", &[(1, "id", 0, 0), (2, "title", 10, 2)]),
            // A join: the first base table whose whole key is exposed, by column order.
            view(
                105,
                "joined",
                &[(1, "t", 10, 2), (2, "other", 30, 1), (3, "fid", 10, 1)],
            ),
            // A key column copied twice: the first name.
            view(106, "twice", &[(1, "b", 10, 1), (2, "a", 10, 1)]),
        ];
        let got = view_primary_keys(&views, &keys);
        let pk = |n: &str| got.get(&("public".to_string(), n.to_string())).cloned();
        assert_eq!(pk("movies"), Some(vec!["movie_id".to_string()]));
        assert_eq!(pk("movies2"), Some(vec!["mid".to_string()]));
        assert_eq!(pk("casting"), Some(vec!["f".to_string(), "a".to_string()]));
        assert_eq!(pk("half"), None);
        assert_eq!(pk("expr"), None);
        assert_eq!(pk("joined"), Some(vec!["other".to_string()]));
        assert_eq!(pk("twice"), Some(vec!["b".to_string()]));
        // Views outside the exposed schemas get nothing.
        let mut hidden = view(107, "hidden", &[(1, "id", 10, 1)]);
        hidden.exposed = false;
        assert!(view_primary_keys(&[hidden], &keys).is_empty());
    }

    #[test]
    fn a_cycle_of_origins_ends() {
        let views = [
            view(10, "a", &[(1, "x", 11, 1)]),
            view(11, "b", &[(1, "x", 10, 1)]),
        ];
        let by_oid: HashMap<u32, &RawView> = views.iter().map(|v| (v.oid, v)).collect();
        assert_eq!(resolve(&by_oid, 10, 1), None);
    }
}
