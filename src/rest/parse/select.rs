//! The `select` grammar:
//!
//! ```text
//! select  := [item ("," item)*]
//! item    := "*"
//!          | "..." embed
//!          | [alias ":"] "count()" [cast]
//!          | [alias ":"] embed
//!          | [alias ":"] name json* [cast] ["." agg "()" [cast]]
//! embed   := name ("!" hint | "!inner" | "!left")* "(" select ")"
//! json    := ("->" | "->>") (key | ["-"] digits)
//! cast    := "::" type
//! agg     := "sum" | "avg" | "min" | "max" | "count"
//! ```
//!
//! Names are quoted (`"a.b"`) or runs of letters, digits, `_`, `$` and spaces.

use super::ast::{AggregateFn, Embed, Field, JoinType, SelectItem};
use super::error::ParseError;
use super::filter::json_path;
use super::syntax::{identifier, Cursor, Syntax, FIELD_NAME};

/// Parses a `select` value. `max_depth` bounds the nesting of embedded resources.
pub(crate) fn parse_select(value: &str, max_depth: usize) -> Result<Vec<SelectItem>, ParseError> {
    let mut cur = Cursor::new(value);
    let items = select_list(&mut cur, 0, max_depth).and_then(|items| {
        cur.skip_ws();
        if cur.at_end() {
            Ok(items)
        } else {
            Err(cur.error("\",\" or end of input"))
        }
    });
    items.map_err(|e| e.into_error("select parameter", value, value))
}

fn select_list(
    cur: &mut Cursor<'_>,
    depth: usize,
    max_depth: usize,
) -> Result<Vec<SelectItem>, Syntax> {
    let mut items = Vec::new();
    cur.skip_ws();
    // An empty list is valid: `select=` and `rel()` select no columns.
    if cur.at_end() || (depth > 0 && cur.peek() == Some(')')) {
        return Ok(items);
    }
    loop {
        items.push(item(cur, depth, max_depth)?);
        cur.skip_ws();
        if !cur.eat(",") {
            return Ok(items);
        }
    }
}

fn item(cur: &mut Cursor<'_>, depth: usize, max_depth: usize) -> Result<SelectItem, Syntax> {
    cur.skip_ws();
    if cur.eat("*") {
        return Ok(SelectItem::Star);
    }
    if cur.eat("...") {
        let name = identifier(cur, FIELD_NAME)?;
        if cur.peek() != Some('(') && cur.peek() != Some('!') {
            return Err(cur.error("\"!\" or \"(\" after the spread resource"));
        }
        return embed(cur, name, None, true, depth, max_depth).map(SelectItem::Embed);
    }
    let first = identifier(cur, FIELD_NAME)?;
    let (alias, name) = if cur.peek() == Some(':') && !cur.starts_with("::") {
        cur.bump();
        (Some(first), identifier(cur, FIELD_NAME)?)
    } else {
        (None, first)
    };
    if name == "count" && cur.starts_with("()") {
        cur.eat("()");
        let cast = cast(cur)?;
        return Ok(SelectItem::CountAll { alias, cast });
    }
    if matches!(cur.peek(), Some('(' | '!')) {
        return embed(cur, name, alias, false, depth, max_depth).map(SelectItem::Embed);
    }
    let json_path = json_path(cur)?;
    let field_cast = cast(cur)?;
    let mut aggregate = None;
    let mut aggregate_cast = None;
    if cur.eat(".") {
        let f = match cur.keyword(
            &["sum", "avg", "min", "max", "count"],
            "aggregate function (sum, avg, min, max, count)",
        )? {
            "sum" => AggregateFn::Sum,
            "avg" => AggregateFn::Avg,
            "min" => AggregateFn::Min,
            "max" => AggregateFn::Max,
            _ => AggregateFn::Count,
        };
        cur.expect('(')?;
        cur.expect(')')?;
        aggregate = Some(f);
        aggregate_cast = cast(cur)?;
    }
    Ok(SelectItem::Field {
        field: Field { name, json_path },
        alias,
        cast: field_cast,
        aggregate,
        aggregate_cast,
    })
}

/// `::type`: letters, digits and `_`, optionally followed by `[]` pairs. Kept strict because
/// the SQL stage writes it into the statement (quoted, but a narrow grammar is cheap safety).
fn cast(cur: &mut Cursor<'_>) -> Result<Option<String>, Syntax> {
    if !cur.eat("::") {
        return Ok(None);
    }
    let start = cur.pos();
    while matches!(cur.peek(), Some(c) if c.is_alphanumeric() || c == '_') {
        cur.bump();
    }
    if cur.pos() == start {
        return Err(cur.error("type name"));
    }
    while cur.eat("[]") {}
    Ok(Some(cur.slice(start, cur.pos()).to_string()))
}

fn embed(
    cur: &mut Cursor<'_>,
    name: String,
    alias: Option<String>,
    spread: bool,
    depth: usize,
    max_depth: usize,
) -> Result<Embed, Syntax> {
    let mut hint = None;
    let mut join = None;
    while cur.eat("!") {
        let at = cur.pos();
        let word = identifier(cur, "embed hint or join type (inner, left)")?;
        match word.as_str() {
            "inner" if join.is_none() => join = Some(JoinType::Inner),
            "left" if join.is_none() => join = Some(JoinType::Left),
            _ if hint.is_none() && word != "inner" && word != "left" => hint = Some(word),
            _ => return Err(cur.error_at(at, "\"(\"")),
        }
    }
    if depth + 1 > max_depth {
        return Err(cur.error(format!(
            "embedded resources nested at most {max_depth} levels deep"
        )));
    }
    cur.expect('(')?;
    let select = select_list(cur, depth + 1, max_depth)?;
    cur.skip_ws();
    if !cur.eat(")") {
        return Err(cur.error("\",\" or \")\""));
    }
    Ok(Embed {
        name,
        alias,
        hint,
        join,
        spread,
        select,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::parse::ast::{JsonKey, JsonOp};

    fn sel(s: &str) -> Vec<SelectItem> {
        parse_select(s, 16).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn col(name: &str) -> SelectItem {
        SelectItem::column(name)
    }

    fn field(name: &str, json_path: Vec<JsonOp>) -> Field {
        Field {
            name: name.into(),
            json_path,
        }
    }

    fn item(
        f: Field,
        alias: Option<&str>,
        cast: Option<&str>,
        aggregate: Option<AggregateFn>,
        aggregate_cast: Option<&str>,
    ) -> SelectItem {
        SelectItem::Field {
            field: f,
            alias: alias.map(str::to_string),
            cast: cast.map(str::to_string),
            aggregate,
            aggregate_cast: aggregate_cast.map(str::to_string),
        }
    }

    fn embed(name: &str, select: Vec<SelectItem>) -> Embed {
        Embed {
            name: name.into(),
            alias: None,
            hint: None,
            join: None,
            spread: false,
            select,
        }
    }

    fn key(k: &str) -> JsonKey {
        JsonKey::Key(k.into())
    }

    #[test]
    fn columns_aliases_casts_and_json_paths() {
        let cases: Vec<(&str, Vec<SelectItem>)> =
            vec![
            ("*", vec![SelectItem::Star]),
            ("", vec![]),
            ("  ", vec![]),
            ("id,name", vec![col("id"), col("name")]),
            ("id, name ,  age", vec![col("id"), col("name"), col("age")]),
            (
                "fullName:full_name,birthDate:birth_date",
                vec![
                    item(field("full_name", vec![]), Some("fullName"), None, None, None),
                    item(field("birth_date", vec![]), Some("birthDate"), None, None, None),
                ],
            ),
            (
                "full_name,salary::text",
                vec![
                    col("full_name"),
                    item(field("salary", vec![]), None, Some("text"), None, None),
                ],
            ),
            (
                "s:salary::int[]",
                vec![item(field("salary", vec![]), Some("s"), Some("int[]"), None, None)],
            ),
            (
                "id,json_data->>blood_type,json_data->phones",
                vec![
                    col("id"),
                    item(
                        field("json_data", vec![JsonOp::DoubleArrow(key("blood_type"))]),
                        None,
                        None,
                        None,
                        None,
                    ),
                    item(
                        field("json_data", vec![JsonOp::Arrow(key("phones"))]),
                        None,
                        None,
                        None,
                        None,
                    ),
                ],
            ),
            (
                "json_data->phones->0->>number",
                vec![item(
                    field(
                        "json_data",
                        vec![
                            JsonOp::Arrow(key("phones")),
                            JsonOp::Arrow(JsonKey::Index(0)),
                            JsonOp::DoubleArrow(key("number")),
                        ],
                    ),
                    None,
                    None,
                    None,
                    None,
                )],
            ),
            (
                "primary_language:languages->0,last:arr->-1,k:data->0a",
                vec![
                    item(
                        field("languages", vec![JsonOp::Arrow(JsonKey::Index(0))]),
                        Some("primary_language"),
                        None,
                        None,
                        None,
                    ),
                    item(
                        field("arr", vec![JsonOp::Arrow(JsonKey::Index(-1))]),
                        Some("last"),
                        None,
                        None,
                        None,
                    ),
                    item(
                        field("data", vec![JsonOp::Arrow(key("0a"))]),
                        Some("k"),
                        None,
                        None,
                        None,
                    ),
                ],
            ),
            (
                "data->@type,data->\"a.b\"->>c::int",
                vec![
                    item(
                        field("data", vec![JsonOp::Arrow(key("@type"))]),
                        None,
                        None,
                        None,
                        None,
                    ),
                    item(
                        field(
                            "data",
                            vec![JsonOp::Arrow(key("a.b")), JsonOp::DoubleArrow(key("c"))],
                        ),
                        None,
                        Some("int"),
                        None,
                        None,
                    ),
                ],
            ),
            (
                "\":arr->ow::cast\",\"(inside,parens)\",\"a.dotted.column\",\"  col  w  space  \"",
                vec![
                    col(":arr->ow::cast"),
                    col("(inside,parens)"),
                    col("a.dotted.column"),
                    col("  col  w  space  "),
                ],
            ),
            ("Just A Server Model", vec![col("Just A Server Model")]),
            ("موارد,$x", vec![col("موارد"), col("$x")]),
            // Legacy `count` without parentheses is a column named count.
            ("count", vec![col("count")]),
        ];
        for (s, want) in cases {
            assert_eq!(sel(s), want, "{s}");
        }
    }

    #[test]
    fn aggregates() {
        let cases: Vec<(&str, Vec<SelectItem>)> = vec![
            (
                "amount.sum()",
                vec![item(
                    field("amount", vec![]),
                    None,
                    None,
                    Some(AggregateFn::Sum),
                    None,
                )],
            ),
            (
                "amount.sum(),amount.avg(),order_date",
                vec![
                    item(
                        field("amount", vec![]),
                        None,
                        None,
                        Some(AggregateFn::Sum),
                        None,
                    ),
                    item(
                        field("amount", vec![]),
                        None,
                        None,
                        Some(AggregateFn::Avg),
                        None,
                    ),
                    col("order_date"),
                ],
            ),
            (
                "amount.avg()::int",
                vec![item(
                    field("amount", vec![]),
                    None,
                    None,
                    Some(AggregateFn::Avg),
                    Some("int"),
                )],
            ),
            (
                "order_details->tax_amount::numeric.sum()",
                vec![item(
                    field("order_details", vec![JsonOp::Arrow(key("tax_amount"))]),
                    None,
                    Some("numeric"),
                    Some(AggregateFn::Sum),
                    None,
                )],
            ),
            (
                "total:amount::numeric.max()::text,m:x.min(),c:x.count()",
                vec![
                    item(
                        field("amount", vec![]),
                        Some("total"),
                        Some("numeric"),
                        Some(AggregateFn::Max),
                        Some("text"),
                    ),
                    item(
                        field("x", vec![]),
                        Some("m"),
                        None,
                        Some(AggregateFn::Min),
                        None,
                    ),
                    item(
                        field("x", vec![]),
                        Some("c"),
                        None,
                        Some(AggregateFn::Count),
                        None,
                    ),
                ],
            ),
            (
                "count(),order_date",
                vec![
                    SelectItem::CountAll {
                        alias: None,
                        cast: None,
                    },
                    col("order_date"),
                ],
            ),
            (
                "n:count()::int",
                vec![SelectItem::CountAll {
                    alias: Some("n".into()),
                    cast: Some("int".into()),
                }],
            ),
        ];
        for (s, want) in cases {
            let got = sel(s);
            assert_eq!(got, want, "{s}");
            assert!(got.iter().any(SelectItem::has_aggregate), "{s}");
        }
        assert!(!sel("a,b(c)").iter().any(SelectItem::has_aggregate));
        assert!(sel("a,b(c.sum())").iter().any(SelectItem::has_aggregate));
    }

    #[test]
    fn embeds_hints_joins_and_spreads() {
        let e = |name: &str,
                 alias: Option<&str>,
                 hint: Option<&str>,
                 join: Option<JoinType>,
                 spread: bool,
                 select: Vec<SelectItem>| {
            SelectItem::Embed(Embed {
                name: name.into(),
                alias: alias.map(str::to_string),
                hint: hint.map(str::to_string),
                join,
                spread,
                select,
            })
        };
        let cases: Vec<(&str, Vec<SelectItem>)> = vec![
            (
                "*,clients(*)",
                vec![
                    SelectItem::Star,
                    e("clients", None, None, None, false, vec![SelectItem::Star]),
                ],
            ),
            (
                "id,client:clients(id,name)",
                vec![
                    col("id"),
                    e(
                        "clients",
                        Some("client"),
                        None,
                        None,
                        false,
                        vec![col("id"), col("name")],
                    ),
                ],
            ),
            (
                "clients!client_id(*)",
                vec![e(
                    "clients",
                    None,
                    Some("client_id"),
                    None,
                    false,
                    vec![SelectItem::Star],
                )],
            ),
            (
                "clients!inner(*)",
                vec![e(
                    "clients",
                    None,
                    None,
                    Some(JoinType::Inner),
                    false,
                    vec![SelectItem::Star],
                )],
            ),
            (
                "clients!left(id)",
                vec![e(
                    "clients",
                    None,
                    None,
                    Some(JoinType::Left),
                    false,
                    vec![col("id")],
                )],
            ),
            (
                "c:clients!projects_client_id_fkey!inner(id)",
                vec![e(
                    "clients",
                    Some("c"),
                    Some("projects_client_id_fkey"),
                    Some(JoinType::Inner),
                    false,
                    vec![col("id")],
                )],
            ),
            (
                "clients!inner!fk(id)",
                vec![e(
                    "clients",
                    None,
                    Some("fk"),
                    Some(JoinType::Inner),
                    false,
                    vec![col("id")],
                )],
            ),
            (
                "*,...clients(client_name:name)",
                vec![
                    SelectItem::Star,
                    e(
                        "clients",
                        None,
                        None,
                        None,
                        true,
                        vec![item(
                            field("name", vec![]),
                            Some("client_name"),
                            None,
                            None,
                            None,
                        )],
                    ),
                ],
            ),
            (
                "...clients!fk!inner(name)",
                vec![e(
                    "clients",
                    None,
                    Some("fk"),
                    Some(JoinType::Inner),
                    true,
                    vec![col("name")],
                )],
            ),
            (
                "*,clients()",
                vec![
                    SelectItem::Star,
                    e("clients", None, None, None, false, vec![]),
                ],
            ),
            (
                "id, name, clients ( id , name )",
                vec![
                    col("id"),
                    col("name"),
                    e(
                        "clients",
                        None,
                        None,
                        None,
                        false,
                        vec![col("id"), col("name")],
                    ),
                ],
            ),
            (
                "\"my rel\"(\"a,b\")",
                vec![e("my rel", None, None, None, false, vec![col("a,b")])],
            ),
        ];
        for (s, want) in cases {
            assert_eq!(sel(s), want, "{s}");
        }
    }

    #[test]
    fn nesting_to_depth() {
        let got = sel("id,projects(id,tasks(id,users(name,roles(*))))");
        let want = vec![
            col("id"),
            SelectItem::Embed(embed(
                "projects",
                vec![
                    col("id"),
                    SelectItem::Embed(embed(
                        "tasks",
                        vec![
                            col("id"),
                            SelectItem::Embed(embed(
                                "users",
                                vec![
                                    col("name"),
                                    SelectItem::Embed(embed("roles", vec![SelectItem::Star])),
                                ],
                            )),
                        ],
                    )),
                ],
            )),
        ];
        assert_eq!(got, want);
        assert!(parse_select("a(b(c(*)))", 3).is_ok());
        let e = parse_select("a(b(c(d(*))))", 3).unwrap_err();
        assert_eq!(e.code(), "PGRST100");
        assert_eq!(
            e.message(),
            "\"failed to parse select parameter (a(b(c(d(*)))))\" (line 1, column 8)"
        );
        assert!(e.details().unwrap_or_default().contains("at most 3 levels"));
        // A long flat list is fine; depth is what is bounded.
        let flat: Vec<String> = (0..500).map(|i| format!("c{i}")).collect();
        assert_eq!(sel(&flat.join(",")).len(), 500);
    }

    #[test]
    fn errors_report_position_and_expectation() {
        // (input, column, details)
        let cases = [
            (
                "id,",
                4,
                "unexpected end of input expecting field name (* or [a..z0..9_$])",
            ),
            ("id)", 3, "unexpected \")\" expecting \",\" or end of input"),
            (
                "clients(id",
                11,
                "unexpected end of input expecting \",\" or \")\"",
            ),
            ("data->>--34", 9, "unexpected \"-\" expecting digit"),
            ("data->>-xy-4", 9, "unexpected \"x\" expecting digit"),
            (
                "data->",
                7,
                "unexpected end of input expecting \"-\", digit or field name (* or [a..z0..9_$])",
            ),
            (
                "amount.foo()",
                8,
                "unexpected \"f\" expecting aggregate function (sum, avg, min, max, count)",
            ),
            ("amount.sum", 11, "unexpected end of input expecting \"(\""),
            ("x::", 4, "unexpected end of input expecting type name"),
            (
                "x::in t",
                7,
                "unexpected \"t\" expecting \",\" or end of input",
            ),
            ("a!b!c(*)", 5, "unexpected \"c\" expecting \"(\""),
            ("a!inner!left(*)", 9, "unexpected \"l\" expecting \"(\""),
            (
                "...a:b(*)",
                5,
                "unexpected \":\" expecting \"!\" or \"(\" after the spread resource",
            ),
            (
                "...a",
                5,
                "unexpected end of input expecting \"!\" or \"(\" after the spread resource",
            ),
            (
                "a:*",
                3,
                "unexpected \"*\" expecting field name (* or [a..z0..9_$])",
            ),
            ("a-b", 2, "unexpected \"-\" expecting \",\" or end of input"),
            (
                "\"open",
                6,
                "unexpected end of input expecting \"\\\"\" closing the quoted value",
            ),
        ];
        for (s, column, details) in cases {
            let e = parse_select(s, 16).unwrap_err();
            assert_eq!(
                e,
                ParseError::QueryParam {
                    message: format!(
                        "\"failed to parse select parameter ({s})\" (line 1, column {column})"
                    ),
                    details: details.to_string(),
                },
                "{s}"
            );
        }
    }
}
