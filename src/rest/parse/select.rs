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
