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
