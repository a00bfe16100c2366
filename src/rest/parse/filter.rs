//! Grammars of the filtering side of the query string: filter keys (tree paths), filter
//! values (operators, `in` lists, `is`, full-text search, `any`/`all`), logic trees
//! (`or=(…)`), `order`, and the name lists of `columns` and `on_conflict`.

use super::ast::{
    Direction, EmbedPath, Field, Filter, FtsOp, IsValue, JsonKey, JsonOp, LogicOp, LogicTree,
    NullsOrder, Operation, OrderTarget, OrderTerm, Quantifier, SimpleOp,
};
use super::error::ParseError;
use super::syntax::{identifier, quoted, Cursor, Syntax, FIELD_NAME};

/// What PostgREST says it wanted where an operator is missing.
const OPERATOR: &str = "\"not\" or operator (eq, gt, ...)";

/// Where an operation's value ends: at the end of the parameter, or at the `,`/`)` that
/// closes an item of a logic tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueEnd {
    Input,
    LogicItem,
}

/// A JSON path: any number of `->key`, `->>key`, `->0`, `->-1`.
pub(crate) fn json_path(cur: &mut Cursor<'_>) -> Result<Vec<JsonOp>, Syntax> {
    let mut path = Vec::new();
    loop {
        // `->>` first: `->` is its prefix.
        if cur.eat("->>") {
            path.push(JsonOp::DoubleArrow(json_key(cur)?));
        } else if cur.eat("->") {
            path.push(JsonOp::Arrow(json_key(cur)?));
        } else {
            return Ok(path);
        }
    }
}

/// A JSON key is laxer than a column name (`@type` is a common key); it ends at the grammar's
/// punctuation or at the next arrow.
fn at_json_key_char(cur: &Cursor<'_>) -> bool {
    let rest = cur.rest();
    let mut chars = rest.chars();
    match chars.next() {
        None => false,
        Some(',' | '.' | ':' | '(' | ')' | '!' | '"') => false,
        Some('-') => chars.next() != Some('>'),
        Some(_) => true,
    }
}

fn json_key(cur: &mut Cursor<'_>) -> Result<JsonKey, Syntax> {
    if cur.peek() == Some('"') {
        return Ok(JsonKey::Key(quoted(cur)?));
    }
    let start = cur.pos();
    if cur.peek() == Some('-') {
        // A leading minus only introduces a negative array index.
        cur.bump();
        let digits = cur.pos();
        while matches!(cur.peek(), Some(c) if c.is_ascii_digit()) {
            cur.bump();
        }
        if cur.pos() == digits || at_json_key_char(cur) {
            return Err(cur.error("digit"));
        }
        return cur
            .slice(start, cur.pos())
            .parse()
            .map(JsonKey::Index)
            .map_err(|_| cur.error_at(start, "an index that fits in 64 bits"));
    }
    while at_json_key_char(cur) {
        cur.bump();
    }
    let raw = cur.slice(start, cur.pos()).trim();
    if raw.is_empty() {
        return Err(cur.error_at(start, format!("\"-\", digit or {FIELD_NAME}")));
    }
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = raw.parse() {
            return Ok(JsonKey::Index(i));
        }
    }
    Ok(JsonKey::Key(raw.to_string()))
}

/// A column with an optional JSON path.
pub(crate) fn field(cur: &mut Cursor<'_>) -> Result<Field, Syntax> {
    let name = identifier(cur, FIELD_NAME)?;
    let json_path = json_path(cur)?;
    Ok(Field { name, json_path })
}

/// A filter key: `col`, `data->a->>b`, `rel.col`, `rel.sub."quoted.col"`.
pub(crate) fn parse_tree_path(key: &str) -> Result<(EmbedPath, Field), ParseError> {
    let mut cur = Cursor::new(key);
    tree_path(&mut cur).map_err(|e| e.into_error("tree path", key, key))
}

fn tree_path(cur: &mut Cursor<'_>) -> Result<(EmbedPath, Field), Syntax> {
    let mut path = Vec::new();
    loop {
        let name = identifier(cur, FIELD_NAME)?;
        if cur.eat(".") {
            path.push(name);
            continue;
        }
        let json_path = json_path(cur)?;
        if !cur.at_end() {
            let expecting = if json_path.is_empty() {
                "\"->>\", \"->\", \".\" or end of input"
            } else {
                "\"->>\", \"->\" or end of input"
            };
            return Err(cur.error(expecting));
        }
        return Ok((path, Field { name, json_path }));
    }
}

/// The value of a filter parameter: `[not.]op.value`.
pub(crate) fn parse_filter(field: Field, value: &str) -> Result<Filter, ParseError> {
    let mut cur = Cursor::new(value);
    let (negated, operation) =
        operation(&mut cur, ValueEnd::Input).map_err(|e| e.into_error("filter", value, value))?;
    Ok(Filter {
        field,
        negated,
        operation,
    })
}

fn operation(cur: &mut Cursor<'_>, end: ValueEnd) -> Result<(bool, Operation), Syntax> {
    let negated = cur.eat("not.");
    let start = cur.pos();
    while matches!(cur.peek(), Some(c) if c.is_ascii_lowercase()) {
        cur.bump();
    }
    let name = cur.slice(start, cur.pos());
    let operation = match name {
        "in" => {
            cur.expect('.')?;
            let list = in_list(cur)?;
            at_value_end(cur, end)?;
            Operation::In(list)
        }
        "is" => {
            cur.expect('.')?;
            let op = is_value(cur)?;
            at_value_end(cur, end)?;
            Operation::Is(op)
        }
        "fts" | "plfts" | "phfts" | "wfts" => {
            let op = match name {
                "fts" => FtsOp::Fts,
                "plfts" => FtsOp::Plain,
                "phfts" => FtsOp::Phrase,
                _ => FtsOp::Websearch,
            };
            let language = if cur.eat("(") {
                let lang_start = cur.pos();
                while matches!(cur.peek(), Some(c) if c.is_alphanumeric() || c == '_') {
                    cur.bump();
                }
                if cur.pos() == lang_start {
                    return Err(cur.error("text search configuration name"));
                }
                let lang = cur.slice(lang_start, cur.pos()).to_string();
                cur.expect(')')?;
                Some(lang)
            } else {
                None
            };
            cur.expect('.')?;
            let value = read_value(cur, end)?;
            Operation::Fts {
                op,
                language,
                value,
            }
        }
        _ => {
            let Some(op) = SimpleOp::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, op)| *op)
            else {
                cur.reset(start);
                return Err(if negated {
                    cur.error("operator (eq, gt, ...)")
                } else {
                    cur.mismatch("not", OPERATOR)
                });
            };
            let quantifier = if op.quantifiable() && cur.eat("(") {
                let q = match cur.keyword(&["any", "all"], "\"any\" or \"all\"")? {
                    "any" => Quantifier::Any,
                    _ => Quantifier::All,
                };
                cur.expect(')')?;
                Some(q)
            } else {
                None
            };
            cur.expect('.')?;
            let mut value = read_value(cur, end)?;
            if matches!(op, SimpleOp::Like | SimpleOp::Ilike) {
                // `*` stands for `%`, which would need percent-encoding in a URL.
                value = value.replace('*', "%");
            }
            match quantifier {
                Some(quantifier) => Operation::Quantified {
                    op,
                    quantifier,
                    value,
                },
                None => Operation::Simple { op, value },
            }
        }
    };
    Ok((negated, operation))
}

fn at_value_end(cur: &mut Cursor<'_>, end: ValueEnd) -> Result<(), Syntax> {
    match end {
        ValueEnd::Input if !cur.at_end() => Err(cur.error("end of input")),
        ValueEnd::LogicItem if !(cur.at_end() || matches!(cur.peek(), Some(',' | ')'))) => {
            Err(cur.error("\",\" or \")\""))
        }
        _ => Ok(()),
    }
}

/// `is.` values are matched case-insensitively (`is.NULL` works as `is.null`).
fn is_value(cur: &mut Cursor<'_>) -> Result<IsValue, Syntax> {
    let start = cur.pos();
    while matches!(cur.peek(), Some(c) if c.is_ascii_alphabetic() || c == '_') {
        cur.bump();
    }
    let word = cur.slice(start, cur.pos()).to_ascii_lowercase();
    let v = match word.as_str() {
        "null" => IsValue::Null,
        "not_null" => IsValue::NotNull,
        "true" => IsValue::True,
        "false" => IsValue::False,
        "unknown" => IsValue::Unknown,
        _ => {
            return Err(cur.error_at(start, "null or trilean value (unknown, true, false)"));
        }
    };
    Ok(v)
}

/// A value: the rest of the parameter, or inside a logic tree a quoted string, a `{…}` array
/// literal, or the text up to the next `,` or `)`.
fn read_value(cur: &mut Cursor<'_>, end: ValueEnd) -> Result<String, Syntax> {
    if end == ValueEnd::Input {
        let v = cur.rest().to_string();
        cur.reset(cur.pos() + v.len());
        return Ok(v);
    }
    if cur.peek() == Some('"') {
        let v = quoted(cur)?;
        at_value_end(cur, end)?;
        return Ok(v);
    }
    let start = cur.pos();
    let mut braces = 0usize;
    while let Some(c) = cur.peek() {
        match c {
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            ',' | ')' if braces == 0 => break,
            _ => {}
        }
        cur.bump();
    }
    Ok(cur.slice(start, cur.pos()).to_string())
}

/// `(a,b,"c,d")`: elements are trimmed unless quoted; `()` and `(  )` are the empty list.
fn in_list(cur: &mut Cursor<'_>) -> Result<Vec<String>, Syntax> {
    cur.expect('(')?;
    let mut items = Vec::new();
    cur.skip_ws();
    if cur.eat(")") {
        return Ok(items);
    }
    loop {
        cur.skip_ws();
        if cur.peek() == Some('"') {
            items.push(quoted(cur)?);
            cur.skip_ws();
        } else {
            let start = cur.pos();
            while let Some(c) = cur.peek() {
                match c {
                    ',' | ')' => break,
                    '"' => return Err(cur.error("\",\" or \")\"")),
                    _ => {
                        cur.bump();
                    }
                }
            }
            items.push(cur.slice(start, cur.pos()).trim().to_string());
        }
        if cur.eat(",") {
            continue;
        }
        if cur.eat(")") {
            return Ok(items);
        }
        return Err(cur.error("\",\" or \")\""));
    }
}

/// The value of `or`/`and`/`not.or`/`not.and` (`op` is that key without the embed path).
/// The grammar runs over `op` + `value`, so error columns count `op` as PostgREST's do.
pub(crate) fn parse_logic_tree(
    op: &str,
    value: &str,
    max_depth: usize,
) -> Result<LogicTree, ParseError> {
    let full = format!("{op}{value}");
    let mut cur = Cursor::new(&full);
    let tree = logic_expr(&mut cur, 1, max_depth).and_then(|t| {
        cur.skip_ws();
        if cur.at_end() {
            Ok(t)
        } else {
            Err(cur.error("end of input"))
        }
    });
    tree.map_err(|e| e.into_error("logic tree", value, &full))
}

fn logic_expr(cur: &mut Cursor<'_>, depth: usize, max_depth: usize) -> Result<LogicTree, Syntax> {
    let negated = cur.eat("not.");
    let op = match cur.keyword(&["and", "or"], "\"and\" or \"or\"")? {
        "and" => LogicOp::And,
        _ => LogicOp::Or,
    };
    if depth > max_depth {
        return Err(cur.error(format!(
            "logic trees nested at most {max_depth} levels deep"
        )));
    }
    cur.skip_ws();
    cur.expect('(')?;
    let mut children = Vec::new();
    loop {
        cur.skip_ws();
        children.push(logic_item(cur, depth, max_depth)?);
        cur.skip_ws();
        if cur.eat(",") {
            continue;
        }
        if cur.eat(")") {
            return Ok(LogicTree::Expr {
                negated,
                op,
                children,
            });
        }
        return Err(cur.error("\",\" or \")\""));
    }
}

fn logic_item(cur: &mut Cursor<'_>, depth: usize, max_depth: usize) -> Result<LogicTree, Syntax> {
    let rest = cur.rest();
    let rest = rest.strip_prefix("not.").unwrap_or(rest);
    if rest.starts_with("and(") || rest.starts_with("or(") {
        return logic_expr(cur, depth + 1, max_depth);
    }
    let field = field(cur)?;
    cur.expect('.')?;
    let (negated, operation) = operation(cur, ValueEnd::LogicItem)?;
    Ok(LogicTree::Filter(Filter {
        field,
        negated,
        operation,
    }))
}

const DIRECTIONS: &str = "\"asc\", \"desc\", \"nullsfirst\" or \"nullslast\"";
const NULLS: &str = "\"nullsfirst\" or \"nullslast\"";

/// `order=col.desc.nullslast,data->>k,rel(col).asc`.
pub(crate) fn parse_order(value: &str) -> Result<Vec<OrderTerm>, ParseError> {
    let mut cur = Cursor::new(value);
    order_terms(&mut cur).map_err(|e| e.into_error("order", value, value))
}

fn order_terms(cur: &mut Cursor<'_>) -> Result<Vec<OrderTerm>, Syntax> {
    let mut terms = Vec::new();
    loop {
        let name = identifier(cur, FIELD_NAME)?;
        let target = if cur.eat("(") {
            let field = field(cur)?;
            cur.expect(')')?;
            OrderTarget::Related {
                relation: name,
                field,
            }
        } else {
            OrderTarget::Field(Field {
                name,
                json_path: json_path(cur)?,
            })
        };
        let mut direction = None;
        let mut nulls = None;
        if cur.eat(".") {
            match cur.keyword(&["asc", "desc", "nullsfirst", "nullslast"], DIRECTIONS)? {
                "asc" => direction = Some(Direction::Asc),
                "desc" => direction = Some(Direction::Desc),
                "nullsfirst" => nulls = Some(NullsOrder::First),
                _ => nulls = Some(NullsOrder::Last),
            }
            if direction.is_some() && cur.eat(".") {
                nulls = Some(match cur.keyword(&["nullsfirst", "nullslast"], NULLS)? {
                    "nullsfirst" => NullsOrder::First,
                    _ => NullsOrder::Last,
                });
            }
        }
        terms.push(OrderTerm {
            target,
            direction,
            nulls,
        });
        cur.skip_ws();
        if cur.eat(",") {
            continue;
        }
        if cur.at_end() {
            return Ok(terms);
        }
        let expecting = if nulls.is_none() {
            "delimiter (.), \",\" or end of input"
        } else {
            "\",\" or end of input"
        };
        return Err(cur.error(expecting));
    }
}

/// `columns=a,b` / `on_conflict=a,b`.
pub(crate) fn parse_name_list(what: &str, value: &str) -> Result<Vec<String>, ParseError> {
    let mut cur = Cursor::new(value);
    name_list(&mut cur).map_err(|e| e.into_error(what, value, value))
}

fn name_list(cur: &mut Cursor<'_>) -> Result<Vec<String>, Syntax> {
    let mut names = Vec::new();
    loop {
        names.push(identifier(cur, FIELD_NAME)?);
        if cur.eat(",") {
            continue;
        }
        if cur.at_end() {
            return Ok(names);
        }
        return Err(cur.error("\",\" or end of input"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(value: &str) -> (bool, Operation) {
        let f =
            parse_filter(Field::column("c"), value).unwrap_or_else(|e| panic!("{value}: {e:?}"));
        (f.negated, f.operation)
    }

    fn simple(op: SimpleOp, value: &str) -> Operation {
        Operation::Simple {
            op,
            value: value.into(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_simple_operator() {
        let cases = [
            ("eq.1", simple(SimpleOp::Eq, "1")),
            ("neq.1", simple(SimpleOp::Neq, "1")),
            ("gt.1", simple(SimpleOp::Gt, "1")),
            ("gte.1", simple(SimpleOp::Gte, "1")),
            ("lt.1", simple(SimpleOp::Lt, "1")),
            ("lte.1", simple(SimpleOp::Lte, "1")),
            ("like.*91*", simple(SimpleOp::Like, "%91%")),
            ("ilike.a*b*", simple(SimpleOp::Ilike, "a%b%")),
            ("match.^a.*$", simple(SimpleOp::Match, "^a.*$")),
            ("imatch.^A*", simple(SimpleOp::Imatch, "^A*")),
            ("isdistinct.x", simple(SimpleOp::IsDistinct, "x")),
            (
                "cs.{example, new}",
                simple(SimpleOp::Contains, "{example, new}"),
            ),
            ("cd.{1,2,3}", simple(SimpleOp::Contained, "{1,2,3}")),
            (
                "ov.[2017-01-01,2017-06-30]",
                simple(SimpleOp::Overlap, "[2017-01-01,2017-06-30]"),
            ),
            ("ov.{1,3}", simple(SimpleOp::Overlap, "{1,3}")),
            ("sl.(1,10)", simple(SimpleOp::StrictlyLeft, "(1,10)")),
            ("sr.(1,10)", simple(SimpleOp::StrictlyRight, "(1,10)")),
            ("nxr.(1,10)", simple(SimpleOp::NotExtendRight, "(1,10)")),
            ("nxl.(1,10)", simple(SimpleOp::NotExtendLeft, "(1,10)")),
            ("adj.(1,10)", simple(SimpleOp::Adjacent, "(1,10)")),
            // The value is everything after the operator, dots and all.
            ("eq.A.png", simple(SimpleOp::Eq, "A.png")),
            ("eq.", simple(SimpleOp::Eq, "")),
            ("eq.not.x", simple(SimpleOp::Eq, "not.x")),
            ("eq.a,b)(", simple(SimpleOp::Eq, "a,b)(")),
            // `*` is only a wildcard for like/ilike.
            ("eq.*", simple(SimpleOp::Eq, "*")),
            ("match.a*", simple(SimpleOp::Match, "a*")),
        ];
        for (value, want) in cases {
            assert_eq!(op(value), (false, want.clone()), "{value}");
            assert_eq!(op(&format!("not.{value}")), (true, want), "not.{value}");
        }
        for (name, o) in SimpleOp::ALL {
            assert_eq!(op(&format!("{name}.v")).1, simple(o, "v"), "{name}");
            assert!(!o.sql().is_empty());
        }
    }

    #[test]
    fn in_lists_and_quoting() {
        let cases: &[(&str, &[&str])] = &[
            ("in.(1,2,3)", &["1", "2", "3"]),
            ("in.()", &[]),
            ("in.(    )", &[]),
            ("in.( ,3,4)", &["", "3", "4"]),
            ("in.(a)", &["a"]),
            ("in.(\"Hebdon, John\")", &["Hebdon, John"]),
            (
                "in.(\"Hebdon, John\",\"Williams, Mary\",\"Smith, Joseph\")",
                &["Hebdon, John", "Williams, Mary", "Smith, Joseph"],
            ),
            (
                "in.(David White,\"Hebdon, John\")",
                &["David White", "Hebdon, John"],
            ),
            ("in.(\"Double O Seven(007)\")", &["Double O Seven(007)"]),
            (
                "in.(\"Quote:\\\"\",\"Backslash:\\\\\")",
                &["Quote:\"", "Backslash:\\"],
            ),
            ("in.( a , \"b\" ,c )", &["a", "b", "c"]),
            ("in.(A.png,B.png)", &["A.png", "B.png"]),
            ("in.(\"\")", &[""]),
        ];
        for (value, want) in cases {
            assert_eq!(op(value), (false, Operation::In(strings(want))), "{value}");
        }
        assert_eq!(op("not.in.(1)"), (true, Operation::In(strings(&["1"]))));
        let errors = [
            (
                "in.(\"\"Hebdon, John\")",
                7,
                "unexpected \"H\" expecting \",\" or \")\"",
            ),
            (
                "in.(\"Hebdon, John\"\"Mary)",
                19,
                "unexpected \"\\\"\" expecting \",\" or \")\"",
            ),
            (
                "in.(Williams\"Hebdon, John\")",
                13,
                "unexpected \"\\\"\" expecting \",\" or \")\"",
            ),
            (
                "in.(1,2",
                8,
                "unexpected end of input expecting \",\" or \")\"",
            ),
            ("in.(1)x", 7, "unexpected \"x\" expecting end of input"),
            ("in.1,2", 4, "unexpected \"1\" expecting \"(\""),
            ("in(1,2)", 3, "unexpected \"(\" expecting \".\""),
        ];
        for (value, column, details) in errors {
            let e = parse_filter(Field::column("c"), value).unwrap_err();
            assert_eq!(
                e,
                ParseError::QueryParam {
                    message: format!(
                        "\"failed to parse filter ({value})\" (line 1, column {column})"
                    ),
                    details: details.into(),
                },
                "{value}"
            );
        }
    }

    #[test]
    fn is_values() {
        let cases = [
            ("is.null", IsValue::Null),
            ("is.NULL", IsValue::Null),
            ("is.not_null", IsValue::NotNull),
            ("is.true", IsValue::True),
            ("is.TRUE", IsValue::True),
            ("is.false", IsValue::False),
            ("is.unknown", IsValue::Unknown),
        ];
        for (value, want) in cases {
            assert_eq!(op(value), (false, Operation::Is(want)), "{value}");
        }
        assert_eq!(op("not.is.null"), (true, Operation::Is(IsValue::Null)));
        for (value, column, details) in [
            (
                "is.foo",
                4,
                "unexpected \"f\" expecting null or trilean value (unknown, true, false)",
            ),
            (
                "is.",
                4,
                "unexpected end of input expecting null or trilean value (unknown, true, false)",
            ),
            (
                "is.nullx1",
                4,
                "unexpected \"n\" expecting null or trilean value (unknown, true, false)",
            ),
            ("is.null1", 8, "unexpected \"1\" expecting end of input"),
            ("is.null.x", 8, "unexpected \".\" expecting end of input"),
        ] {
            let e = parse_filter(Field::column("c"), value).unwrap_err();
            assert_eq!(
                e.message(),
                format!("\"failed to parse filter ({value})\" (line 1, column {column})"),
                "{value}"
            );
            assert_eq!(e.details().as_deref(), Some(details), "{value}");
        }
    }

    #[test]
    fn full_text_search() {
        let fts = |op, language: Option<&str>, value: &str| Operation::Fts {
            op,
            language: language.map(str::to_string),
            value: value.into(),
        };
        let cases = [
            ("fts.Beckett", fts(FtsOp::Fts, None, "Beckett")),
            (
                "fts(french).amusant",
                fts(FtsOp::Fts, Some("french"), "amusant"),
            ),
            (
                "plfts.The Fat Cats",
                fts(FtsOp::Plain, None, "The Fat Cats"),
            ),
            (
                "phfts(english).The Fat Cats",
                fts(FtsOp::Phrase, Some("english"), "The Fat Cats"),
            ),
            (
                "wfts(french).amusant",
                fts(FtsOp::Websearch, Some("french"), "amusant"),
            ),
            ("wfts.\"a b\" -c", fts(FtsOp::Websearch, None, "\"a b\" -c")),
        ];
        for (value, want) in cases {
            assert_eq!(op(value), (false, want.clone()), "{value}");
            assert_eq!(op(&format!("not.{value}")), (true, want), "{value}");
        }
        assert_eq!(FtsOp::Websearch.function(), "websearch_to_tsquery");
        for value in ["fts().x", "fts(english.x", "fts(english)x"] {
            assert_eq!(
                parse_filter(Field::column("c"), value).unwrap_err().code(),
                "PGRST100"
            );
        }
    }

    #[test]
    fn any_all_modifiers() {
        let q = |op, quantifier, value: &str| Operation::Quantified {
            op,
            quantifier,
            value: value.into(),
        };
        let cases = [
            ("eq(any).{1,2}", q(SimpleOp::Eq, Quantifier::Any, "{1,2}")),
            ("eq(all).{1}", q(SimpleOp::Eq, Quantifier::All, "{1}")),
            (
                "like(all).{*a*,*b}",
                q(SimpleOp::Like, Quantifier::All, "{%a%,%b}"),
            ),
            (
                "ilike(any).{x*}",
                q(SimpleOp::Ilike, Quantifier::Any, "{x%}"),
            ),
            ("gt(any).{1,5}", q(SimpleOp::Gt, Quantifier::Any, "{1,5}")),
            ("gte(all).{1}", q(SimpleOp::Gte, Quantifier::All, "{1}")),
            ("lt(any).{1}", q(SimpleOp::Lt, Quantifier::Any, "{1}")),
            ("lte(any).{1}", q(SimpleOp::Lte, Quantifier::Any, "{1}")),
            (
                "match(any).{^a,^b}",
                q(SimpleOp::Match, Quantifier::Any, "{^a,^b}"),
            ),
            (
                "imatch(all).{a}",
                q(SimpleOp::Imatch, Quantifier::All, "{a}"),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(op(value), (false, want.clone()), "{value}");
            assert_eq!(op(&format!("not.{value}")), (true, want), "{value}");
        }
        for (value, details) in [
            ("neq(any).{1}", "unexpected \"(\" expecting \".\""),
            ("cs(any).{1}", "unexpected \"(\" expecting \".\""),
            (
                "eq(some).{1}",
                "unexpected \"s\" expecting \"any\" or \"all\"",
            ),
            ("eq(any.{1}", "unexpected \".\" expecting \")\""),
        ] {
            let e = parse_filter(Field::column("c"), value).unwrap_err();
            assert_eq!(e.details().as_deref(), Some(details), "{value}");
        }
    }

    #[test]
    fn unknown_operators_are_errors_never_equality() {
        // (value, column, details) — the first two are PostgREST's own answers.
        let cases = [
            (
                "0",
                1,
                "unexpected \"0\" expecting \"not\" or operator (eq, gt, ...)",
            ),
            (
                "rsvp",
                1,
                "unexpected \"r\" expecting \"not\" or operator (eq, gt, ...)",
            ),
            (
                "",
                1,
                "unexpected end of input expecting \"not\" or operator (eq, gt, ...)",
            ),
            (
                "equals.1",
                1,
                "unexpected \"e\" expecting \"not\" or operator (eq, gt, ...)",
            ),
            (
                "EQ.1",
                1,
                "unexpected \"E\" expecting \"not\" or operator (eq, gt, ...)",
            ),
            (
                "not.foo.1",
                5,
                "unexpected \"f\" expecting operator (eq, gt, ...)",
            ),
            (
                "not.",
                5,
                "unexpected end of input expecting operator (eq, gt, ...)",
            ),
            (
                "nox.1",
                1,
                "unexpected \"x\" expecting \"not\" or operator (eq, gt, ...)",
            ),
            ("eq", 3, "unexpected end of input expecting \".\""),
            ("eq1", 3, "unexpected \"1\" expecting \".\""),
            (
                "not.not.eq.1",
                5,
                "unexpected \"n\" expecting operator (eq, gt, ...)",
            ),
        ];
        for (value, column, details) in cases {
            let e = parse_filter(Field::column("c"), value).unwrap_err();
            assert_eq!(
                e,
                ParseError::QueryParam {
                    message: format!(
                        "\"failed to parse filter ({value})\" (line 1, column {column})"
                    ),
                    details: details.into(),
                },
                "{value}"
            );
        }
    }

    #[test]
    fn tree_paths() {
        let k = |s: &str| JsonKey::Key(s.into());
        let cases: Vec<(&str, Vec<&str>, Field)> = vec![
            ("id", vec![], Field::column("id")),
            ("Unit Price", vec![], Field::column("Unit Price")),
            (
                "\"information.cpe\"",
                vec![],
                Field::column("information.cpe"),
            ),
            ("\"*id*\"", vec![], Field::column("*id*")),
            ("clients.id", vec!["clients"], Field::column("id")),
            ("a.b.c", vec!["a", "b"], Field::column("c")),
            ("\"a.b\".c", vec!["a.b"], Field::column("c")),
            (
                "json_data->>blood_type",
                vec![],
                Field {
                    name: "json_data".into(),
                    json_path: vec![JsonOp::DoubleArrow(k("blood_type"))],
                },
            ),
            (
                "clients.data->a->>0",
                vec!["clients"],
                Field {
                    name: "data".into(),
                    json_path: vec![
                        JsonOp::Arrow(k("a")),
                        JsonOp::DoubleArrow(JsonKey::Index(0)),
                    ],
                },
            ),
            (
                "data_json->@type",
                vec![],
                Field {
                    name: "data_json".into(),
                    json_path: vec![JsonOp::Arrow(k("@type"))],
                },
            ),
            (
                "data->first-name",
                vec![],
                Field {
                    name: "data".into(),
                    json_path: vec![JsonOp::Arrow(k("first-name"))],
                },
            ),
        ];
        for (key, path, field) in cases {
            let want: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            assert_eq!(parse_tree_path(key), Ok((want, field)), "{key}");
        }
        for (key, column) in [("a..b", 3), ("a->", 4), ("", 1), ("a->x.b", 5), ("a(b)", 2)] {
            let e = parse_tree_path(key).unwrap_err();
            assert_eq!(
                e.message(),
                format!("\"failed to parse tree path ({key})\" (line 1, column {column})"),
                "{key}"
            );
        }
    }

    fn leaf(name: &str, negated: bool, operation: Operation) -> LogicTree {
        LogicTree::Filter(Filter {
            field: Field::column(name),
            negated,
            operation,
        })
    }

    fn expr(negated: bool, op: LogicOp, children: Vec<LogicTree>) -> LogicTree {
        LogicTree::Expr {
            negated,
            op,
            children,
        }
    }

    #[test]
    fn logic_trees() {
        let cases: Vec<(&str, &str, LogicTree)> = vec![
            (
                "or",
                "(age.lt.18,age.gt.21)",
                expr(
                    false,
                    LogicOp::Or,
                    vec![
                        leaf("age", false, simple(SimpleOp::Lt, "18")),
                        leaf("age", false, simple(SimpleOp::Gt, "21")),
                    ],
                ),
            ),
            (
                "or",
                "( age.lt.18 , age.gt.21 )",
                expr(
                    false,
                    LogicOp::Or,
                    vec![
                        leaf("age", false, simple(SimpleOp::Lt, "18 ")),
                        leaf("age", false, simple(SimpleOp::Gt, "21 ")),
                    ],
                ),
            ),
            (
                "or",
                "(age.eq.14,not.and(age.gte.11,age.lte.17))",
                expr(
                    false,
                    LogicOp::Or,
                    vec![
                        leaf("age", false, simple(SimpleOp::Eq, "14")),
                        expr(
                            true,
                            LogicOp::And,
                            vec![
                                leaf("age", false, simple(SimpleOp::Gte, "11")),
                                leaf("age", false, simple(SimpleOp::Lte, "17")),
                            ],
                        ),
                    ],
                ),
            ),
            (
                "and",
                "(grade.gte.90,student.is.true,or(age.gte.14,age.is.null))",
                expr(
                    false,
                    LogicOp::And,
                    vec![
                        leaf("grade", false, simple(SimpleOp::Gte, "90")),
                        leaf("student", false, Operation::Is(IsValue::True)),
                        expr(
                            false,
                            LogicOp::Or,
                            vec![
                                leaf("age", false, simple(SimpleOp::Gte, "14")),
                                leaf("age", false, Operation::Is(IsValue::Null)),
                            ],
                        ),
                    ],
                ),
            ),
            (
                "not.and",
                "(a.gte.0,a.lte.100)",
                expr(
                    true,
                    LogicOp::And,
                    vec![
                        leaf("a", false, simple(SimpleOp::Gte, "0")),
                        leaf("a", false, simple(SimpleOp::Lte, "100")),
                    ],
                ),
            ),
            (
                "or",
                "(name.eq.\"hello, (world)\",tags.cs.{a,b},id.in.(1,\"2,3\"),d.not.is.null,t.fts(english).cat,n.like.*z*,x.eq(any).{1,2})",
                expr(
                    false,
                    LogicOp::Or,
                    vec![
                        leaf("name", false, simple(SimpleOp::Eq, "hello, (world)")),
                        leaf("tags", false, simple(SimpleOp::Contains, "{a,b}")),
                        leaf("id", false, Operation::In(strings(&["1", "2,3"]))),
                        leaf("d", true, Operation::Is(IsValue::Null)),
                        leaf(
                            "t",
                            false,
                            Operation::Fts {
                                op: FtsOp::Fts,
                                language: Some("english".into()),
                                value: "cat".into(),
                            },
                        ),
                        leaf("n", false, simple(SimpleOp::Like, "%z%")),
                        leaf(
                            "x",
                            false,
                            Operation::Quantified {
                                op: SimpleOp::Eq,
                                quantifier: Quantifier::Any,
                                value: "{1,2}".into(),
                            },
                        ),
                    ],
                ),
            ),
            (
                "or",
                "(data->>a.eq.1,or.eq.2,not.eq.3)",
                expr(
                    false,
                    LogicOp::Or,
                    vec![
                        LogicTree::Filter(Filter {
                            field: Field {
                                name: "data".into(),
                                json_path: vec![JsonOp::DoubleArrow(JsonKey::Key("a".into()))],
                            },
                            negated: false,
                            operation: simple(SimpleOp::Eq, "1"),
                        }),
                        // Columns may be called like the connectives.
                        leaf("or", false, simple(SimpleOp::Eq, "2")),
                        leaf("not", false, simple(SimpleOp::Eq, "3")),
                    ],
                ),
            ),
            (
                "or",
                "(a.eq.)",
                expr(false, LogicOp::Or, vec![leaf("a", false, simple(SimpleOp::Eq, ""))]),
            ),
        ];
        for (op, value, want) in cases {
            assert_eq!(parse_logic_tree(op, value, 16), Ok(want), "{op}={value}");
        }
    }

    #[test]
    fn logic_tree_errors_count_the_connective_in_columns() {
        let cases = [
            // PostgREST's answers for these two, byte for byte.
            (
                "or",
                "eq.(nombre_producto.ilike.%dede%,codigo_producto.ilike.%dede%)",
                3,
                "unexpected \"e\" expecting \"(\"",
            ),
            (
                "or",
                "(name.ilike.%israel%,fec_committee_id.ilike.%israel%,candidates.name.ilike.%israel%)",
                67,
                "unexpected \"a\" expecting \"not\" or operator (eq, gt, ...)",
            ),
            ("or", "()", 4, "unexpected \")\" expecting field name (* or [a..z0..9_$])"),
            ("or", "(a.eq.1", 10, "unexpected end of input expecting \",\" or \")\""),
            ("or", "(a.eq.1)x", 11, "unexpected \"x\" expecting end of input"),
            ("and", "(a.eq.1,)", 12, "unexpected \")\" expecting field name (* or [a..z0..9_$])"),
            ("not.or", "(a.in.(1)x)", 16, "unexpected \"x\" expecting \",\" or \")\""),
            ("or", "(a.eq.\"x\"y)", 12, "unexpected \"y\" expecting \",\" or \")\""),
            (
                "or",
                "(name.ilike.%raju, electrician%)",
                33,
                "unexpected \"%\" expecting \".\"",
            ),
            ("or", "(a.foo.1)", 6, "unexpected \"f\" expecting \"not\" or operator (eq, gt, ...)"),
            ("or", "(a)", 5, "unexpected \")\" expecting \".\""),
        ];
        for (op, value, column, details) in cases {
            let e = parse_logic_tree(op, value, 16).unwrap_err();
            assert_eq!(
                e,
                ParseError::QueryParam {
                    message: format!(
                        "\"failed to parse logic tree ({value})\" (line 1, column {column})"
                    ),
                    details: details.into(),
                },
                "{op}={value}"
            );
        }
    }

    #[test]
    fn logic_depth_is_bounded() {
        assert!(parse_logic_tree("or", "(and(or(a.eq.1)))", 3).is_ok());
        let e = parse_logic_tree("or", "(and(or(and(a.eq.1))))", 3).unwrap_err();
        assert_eq!(e.code(), "PGRST100");
        assert!(
            e.details().unwrap_or_default().contains("at most 3 levels"),
            "{e:?}"
        );
        let deep = format!("{}a.eq.1{}", "or(".repeat(40), ")".repeat(40));
        assert!(parse_logic_tree("or", &format!("({deep})"), 16).is_err());
    }

    #[test]
    fn order_terms() {
        let t = |target: OrderTarget, direction, nulls| OrderTerm {
            target,
            direction,
            nulls,
        };
        let f = |n: &str| OrderTarget::Field(Field::column(n));
        let cases = vec![
            ("age", vec![t(f("age"), None, None)]),
            (
                "age.desc,height.asc",
                vec![
                    t(f("age"), Some(Direction::Desc), None),
                    t(f("height"), Some(Direction::Asc), None),
                ],
            ),
            (
                "age.nullsfirst",
                vec![t(f("age"), None, Some(NullsOrder::First))],
            ),
            (
                "age.desc.nullslast,other",
                vec![
                    t(f("age"), Some(Direction::Desc), Some(NullsOrder::Last)),
                    t(f("other"), None, None),
                ],
            ),
            (
                "json_col->key.desc,arr->0",
                vec![
                    t(
                        OrderTarget::Field(Field {
                            name: "json_col".into(),
                            json_path: vec![JsonOp::Arrow(JsonKey::Key("key".into()))],
                        }),
                        Some(Direction::Desc),
                        None,
                    ),
                    t(
                        OrderTarget::Field(Field {
                            name: "arr".into(),
                            json_path: vec![JsonOp::Arrow(JsonKey::Index(0))],
                        }),
                        None,
                        None,
                    ),
                ],
            ),
            (
                "clients(name).desc.nullsfirst",
                vec![t(
                    OrderTarget::Related {
                        relation: "clients".into(),
                        field: Field::column("name"),
                    },
                    Some(Direction::Desc),
                    Some(NullsOrder::First),
                )],
            ),
            (
                "\"my col\".asc, \"a.b\"",
                vec![
                    t(f("my col"), Some(Direction::Asc), None),
                    t(f("a.b"), None, None),
                ],
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_order(value), Ok(want), "{value}");
        }
    }

    #[test]
    fn order_errors_match_postgrest() {
        // Every case is PostgREST's own test expectation (details quoting aside).
        let cases = [
            (
                "id.ac",
                4,
                "unexpected \"c\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\"",
            ),
            (
                "id.descc",
                8,
                "unexpected \"c\" expecting delimiter (.), \",\" or end of input",
            ),
            (
                "id.nulsfist",
                4,
                "unexpected \"n\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\"",
            ),
            (
                "id.nullslasttt",
                13,
                "unexpected \"t\" expecting \",\" or end of input",
            ),
            (
                "id.smth34",
                4,
                "unexpected \"s\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\"",
            ),
            (
                "id.asc.nlsfst",
                8,
                "unexpected \"l\" expecting \"nullsfirst\" or \"nullslast\"",
            ),
            (
                "id.asc.nullslasttt",
                17,
                "unexpected \"t\" expecting \",\" or end of input",
            ),
            (
                "id.asc.smth34",
                8,
                "unexpected \"s\" expecting \"nullsfirst\" or \"nullslast\"",
            ),
            (
                "",
                1,
                "unexpected end of input expecting field name (* or [a..z0..9_$])",
            ),
            (
                "id,",
                4,
                "unexpected end of input expecting field name (* or [a..z0..9_$])",
            ),
            ("rel(name", 9, "unexpected end of input expecting \")\""),
            (
                "id.nullsfirst.desc",
                14,
                "unexpected \".\" expecting \",\" or end of input",
            ),
        ];
        for (value, column, details) in cases {
            let e = parse_order(value).unwrap_err();
            assert_eq!(
                e,
                ParseError::QueryParam {
                    message: format!(
                        "\"failed to parse order ({value})\" (line 1, column {column})"
                    ),
                    details: details.into(),
                },
                "{value}"
            );
        }
    }

    #[test]
    fn name_lists() {
        assert_eq!(
            parse_name_list("columns parameter", "source,publication_date, figure"),
            Ok(strings(&["source", "publication_date", "figure"]))
        );
        assert_eq!(
            parse_name_list("on_conflict parameter", "\"a,b\",c"),
            Ok(strings(&["a,b", "c"]))
        );
        // PostgREST's exact answer for `?columns=`.
        assert_eq!(
            parse_name_list("columns parameter", ""),
            Err(ParseError::QueryParam {
                message: "\"failed to parse columns parameter ()\" (line 1, column 1)".into(),
                details: "unexpected end of input expecting field name (* or [a..z0..9_$])".into(),
            })
        );
        assert!(parse_name_list("columns parameter", "a,,b").is_err());
        assert!(parse_name_list("columns parameter", "a;b").is_err());
    }
}
