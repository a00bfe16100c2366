//! The subset of Go's `text/template` that Supabase users write in auth mail templates,
//! parsed once (when the mailer starts, and by `config check`) and evaluated per mail over a
//! JSON value:
//!
//! - `{{ PIPELINE }}` prints a value (HTML-escaped when the caller asks, as `html/template`
//!   does for bodies); a pipeline is a command or commands joined by `|` (the value on the
//!   left becomes the last argument of the function on the right);
//! - operands: `.`, `.Name.key…` (field chains; a missing key is nil: prints empty, is false),
//!   `$` / `$.Name` (the root, inside `range`), `"strings"` with Go escapes, `` `raw` ``,
//!   numbers, `true`, `false`, `nil`, `( PIPELINE )`;
//! - functions: `eq` (true when the first argument equals any other), `ne`, `lt`, `le`, `gt`,
//!   `ge` (numbers with numbers, strings with strings), `and`, `or` (Go's: the first falsy /
//!   truthy argument, else the last), `not`, `len`, `index`;
//! - `{{ if }} … {{ else if }} … {{ else }} … {{ end }}`, `{{ range }} … {{ else }} … {{ end }}`
//!   (over arrays and objects, `.` is the element), trim markers `{{-` / `-}}`, comments
//!   `{{/* … */}}`.
//!
//! Where Go stops a template at run time (comparing a number with a string, `len` of a number)
//! this evaluator answers false / 0 instead, so a mail is never lost to a value's type; every
//! mistake that can be seen without values (syntax, unknown functions or variables, arity)
//! is an error of `parse`.
//!
//! Must not: do IO, panic on any input, or know which variables a mail kind has (the caller
//! passes the allowed root names).

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Print(Expr),
    If {
        branches: Vec<(Expr, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        over: Expr,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A field chain from the root (`$`) or from dot; an empty chain is the value itself.
    Field {
        from_root: bool,
        path: Vec<String>,
    },
    Lit(Value),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
    Len,
    Index,
}

impl Func {
    fn by_name(name: &str) -> Option<Func> {
        Some(match name {
            "eq" => Func::Eq,
            "ne" => Func::Ne,
            "lt" => Func::Lt,
            "le" => Func::Le,
            "gt" => Func::Gt,
            "ge" => Func::Ge,
            "and" => Func::And,
            "or" => Func::Or,
            "not" => Func::Not,
            "len" => Func::Len,
            "index" => Func::Index,
            _ => return None,
        })
    }

    /// Accepted argument counts (min, max).
    fn arity(self) -> (usize, usize) {
        match self {
            Func::Eq => (2, usize::MAX),
            Func::Ne | Func::Lt | Func::Le | Func::Gt | Func::Ge => (2, 2),
            Func::And | Func::Or => (1, usize::MAX),
            Func::Not | Func::Len => (1, 1),
            Func::Index => (1, usize::MAX),
        }
    }
}

/// One `{{ … }}` or the text between them, with trim markers applied.
enum Piece<'a> {
    Text(String),
    Action { body: &'a str, line: usize },
}

/// Splits a template into text and actions; comments vanish, trim markers trim.
fn pieces(src: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    let line_of = |s: &str| src[..src.len() - s.len()].matches('\n').count() + 1;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_left =
            after.starts_with('-') && after[1..].starts_with(|c: char| c.is_ascii_whitespace());
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            out.push(Piece::Text(text.to_string()));
        }
        let line = line_of(after);
        let inner_start = if trim_left { &after[2..] } else { after };
        let end = action_end(inner_start)
            .ok_or_else(|| format!("line {line}: unclosed action (no matching }}}})"))?;
        let mut body = &inner_start[..end];
        trim_next = false;
        if body.ends_with('-')
            && body[..body.len() - 1].ends_with(|c: char| c.is_ascii_whitespace())
        {
            trim_next = true;
            body = &body[..body.len() - 1];
        }
        let body = body.trim();
        if let Some(c) = body.strip_prefix("/*") {
            if !c.ends_with("*/") {
                return Err(format!("line {line}: unclosed comment"));
            }
        } else {
            out.push(Piece::Action { body, line });
        }
        rest = &inner_start[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        out.push(Piece::Text(text.to_string()));
    }
    Ok(out)
}

/// Where the `}}` closing an action starts (quoted strings may hold braces); comments end at
/// the first `*/}}`.
fn action_end(s: &str) -> Option<usize> {
    if s.trim_start().starts_with("/*") {
        let close = s.find("*/")?;
        return s[close..].find("}}").map(|i| close + i);
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(bool, Vec<String>),
    Ident(String),
    Lit(Value),
    Open,
    Close,
    Pipe,
}

fn tokens(body: &str, line: usize) -> Result<Vec<Tok>, String> {
    let err = |m: String| format!("line {line}: {m} in {{{{ {body} }}}}");
    let chars: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_end = |mut j: usize| {
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1
            }
            '.' | '$' => {
                let from_root = c == '$';
                let mut path = Vec::new();
                let mut j = i + 1;
                // `$` alone is the root; `$.` and `.` start a chain (`.` alone is dot).
                if !from_root || chars.get(j) == Some(&'.') {
                    if from_root {
                        j += 1;
                    }
                    loop {
                        let e = word_end(j);
                        if e == j {
                            // `.` alone (dot), or `$.` which is not Go.
                            if from_root || !path.is_empty() {
                                return Err(err("a field name is missing after `.`".into()));
                            }
                            break;
                        }
                        path.push(chars[j..e].iter().collect());
                        j = e;
                        if chars.get(j) == Some(&'.') {
                            j += 1;
                        } else {
                            break;
                        }
                    }
                }
                out.push(Tok::Field(from_root, path));
                i = j;
            }
            '"' => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(err("unterminated string".into())),
                        Some('"') => break,
                        Some('\\') => {
                            let e = chars.get(j + 1).copied();
                            s.push(match e {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                Some('\'') => '\'',
                                _ => return Err(err("unsupported escape in string".into())),
                            });
                            j += 2;
                        }
                        Some(c) => {
                            s.push(*c);
                            j += 1;
                        }
                    }
                }
                out.push(Tok::Lit(Value::String(s)));
                i = j + 1;
            }
            '`' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|c| *c == '`')
                    .ok_or_else(|| err("unterminated raw string".into()))?;
                out.push(Tok::Lit(Value::String(
                    chars[i + 1..i + 1 + close].iter().collect(),
                )));
                i += close + 2;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let n = text
                    .parse::<i64>()
                    .ok()
                    .map(Value::from)
                    .or_else(|| {
                        text.parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                            .map(Value::Number)
                    })
                    .ok_or_else(|| err(format!("bad number {text:?}")))?;
                out.push(Tok::Lit(n));
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let e = word_end(i);
                let w: String = chars[i..e].iter().collect();
                out.push(match w.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Null),
                    _ => Tok::Ident(w),
                });
                i = e;
            }
            other => return Err(err(format!("unexpected {other:?}"))),
        }
    }
    Ok(out)
}

/// What a parse checks field chains against.
struct Scope<'a> {
    roots: &'a [&'a str],
    /// Inside `range`, dot is an element whose fields cannot be known.
    in_range: bool,
}

struct ExprParser<'a> {
    toks: Vec<Tok>,
    at: usize,
    line: usize,
    scope: &'a Scope<'a>,
}

impl ExprParser<'_> {
    fn err(&self, m: &str) -> String {
        format!("line {}: {m}", self.line)
    }

    /// `cmd | cmd …` up to a `)` or the end.
    fn pipeline(&mut self) -> Result<Expr, String> {
        let mut acc = self.command(None)?;
        while self.toks.get(self.at) == Some(&Tok::Pipe) {
            self.at += 1;
            acc = self.command(Some(acc))?;
        }
        Ok(acc)
    }

    fn command(&mut self, piped: Option<Expr>) -> Result<Expr, String> {
        if let Some(Tok::Ident(name)) = self.toks.get(self.at).cloned() {
            self.at += 1;
            let f = Func::by_name(&name)
                .ok_or_else(|| self.err(&format!("function {name:?} not defined")))?;
            let mut args = Vec::new();
            while let Some(a) = self.operand()? {
                args.push(a);
            }
            args.extend(piped);
            let (min, max) = f.arity();
            if args.len() < min || args.len() > max {
                return Err(self.err(&format!(
                    "wrong number of arguments for {name}: {}",
                    args.len()
                )));
            }
            return Ok(Expr::Call(f, args));
        }
        let first = self
            .operand()?
            .ok_or_else(|| self.err("missing value in the action"))?;
        if piped.is_some() {
            return Err(self.err("only a function can take a piped value"));
        }
        if self.operand()?.is_some() {
            return Err(self.err("a value cannot take arguments"));
        }
        Ok(first)
    }

    fn operand(&mut self) -> Result<Option<Expr>, String> {
        let Some(t) = self.toks.get(self.at).cloned() else {
            return Ok(None);
        };
        let e = match t {
            Tok::Lit(v) => Expr::Lit(v),
            Tok::Field(from_root, path) => {
                let checked = from_root || !self.scope.in_range;
                if let (true, Some(first)) = (checked, path.first()) {
                    if !self.scope.roots.contains(&first.as_str()) {
                        return Err(self.err(&format!(
                            "unknown variable .{first} (known: {})",
                            self.scope
                                .roots
                                .iter()
                                .map(|r| format!(".{r}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                Expr::Field { from_root, path }
            }
            Tok::Open => {
                self.at += 1;
                let inner = self.pipeline()?;
                if self.toks.get(self.at) != Some(&Tok::Close) {
                    return Err(self.err("unclosed ("));
                }
                inner
            }
            Tok::Ident(name) => {
                return Err(self.err(&format!(
                    "function {name:?} must be called in parentheses here"
                )))
            }
            Tok::Close | Tok::Pipe => return Ok(None),
        };
        self.at += 1;
        Ok(Some(e))
    }
}

fn expr(body: &str, line: usize, scope: &Scope) -> Result<Expr, String> {
    let toks = tokens(body, line)?;
    let mut p = ExprParser {
        toks,
        at: 0,
        line,
        scope,
    };
    let e = p.pipeline()?;
    if p.at != p.toks.len() {
        return Err(format!(
            "line {line}: unexpected {:?} in {{{{ {body} }}}}",
            p.toks[p.at]
        ));
    }
    Ok(e)
}

/// What ended a list of nodes.
enum Closer {
    Eof,
    End,
    Else(Option<Expr>),
}

fn keyword<'a>(body: &'a str, word: &str) -> Option<&'a str> {
    let rest = body.strip_prefix(word)?;
    (rest.is_empty() || rest.starts_with(|c: char| c.is_whitespace() || c == '('))
        .then(|| rest.trim())
}

fn nodes(
    ps: &mut std::vec::IntoIter<Piece<'_>>,
    scope: &Scope,
) -> Result<(Vec<Node>, Closer), String> {
    let mut out = Vec::new();
    while let Some(p) = ps.next() {
        let (body, line) = match p {
            Piece::Text(t) => {
                out.push(Node::Text(t));
                continue;
            }
            Piece::Action { body, line } => (body, line),
        };
        if body == "end" {
            return Ok((out, Closer::End));
        }
        if let Some(rest) = keyword(body, "else") {
            if rest.is_empty() {
                return Ok((out, Closer::Else(None)));
            }
            let cond = keyword(rest, "if")
                .ok_or_else(|| format!("line {line}: only `else` and `else if` are supported"))?;
            return Ok((out, Closer::Else(Some(expr(cond, line, scope)?))));
        }
        if let Some(cond) = keyword(body, "if") {
            let mut branches = Vec::new();
            let mut cond = expr(cond, line, scope)?;
            let otherwise = loop {
                let (body, end) = nodes(ps, scope)?;
                branches.push((cond, body));
                match end {
                    Closer::End => break Vec::new(),
                    Closer::Else(Some(c)) => cond = c,
                    Closer::Else(None) => {
                        let (body, end) = nodes(ps, scope)?;
                        if !matches!(end, Closer::End) {
                            return Err(format!("line {line}: `if` without its {{{{ end }}}}"));
                        }
                        break body;
                    }
                    Closer::Eof => {
                        return Err(format!("line {line}: `if` without its {{{{ end }}}}"))
                    }
                }
            };
            out.push(Node::If {
                branches,
                otherwise,
            });
            continue;
        }
        if let Some(over) = keyword(body, "range") {
            if over.contains(":=") {
                return Err(format!("line {line}: range variables are not supported"));
            }
            let over = expr(over, line, scope)?;
            let inner = Scope {
                roots: scope.roots,
                in_range: true,
            };
            let (body, end) = nodes(ps, &inner)?;
            let otherwise = match end {
                Closer::End => Vec::new(),
                Closer::Else(None) => match nodes(ps, scope)? {
                    (b, Closer::End) => b,
                    _ => return Err(format!("line {line}: `range` without its {{{{ end }}}}")),
                },
                _ => return Err(format!("line {line}: `range` without its {{{{ end }}}}")),
            };
            out.push(Node::Range {
                over,
                body,
                otherwise,
            });
            continue;
        }
        for kw in ["with", "define", "template", "block", "break", "continue"] {
            if keyword(body, kw).is_some() {
                return Err(format!("line {line}: `{kw}` is not supported"));
            }
        }
        if body.contains(":=") || body.contains(" = ") {
            return Err(format!("line {line}: template variables are not supported"));
        }
        out.push(Node::Print(expr(body, line, scope)?));
    }
    Ok((out, Closer::Eof))
}

impl Template {
    /// Parses `src`; field chains must start with one of `roots` (`.Name`).
    pub fn parse(src: &str, roots: &[&str]) -> Result<Template, String> {
        let mut ps = pieces(src)?.into_iter();
        let scope = Scope {
            roots,
            in_range: false,
        };
        match nodes(&mut ps, &scope)? {
            (nodes, Closer::Eof) => Ok(Template { nodes }),
            (_, Closer::End) => Err("unexpected {{ end }}".into()),
            (_, Closer::Else(_)) => Err("unexpected {{ else }}".into()),
        }
    }

    /// The text for `root`; printed values go through `escape` (pass the identity for none).
    pub fn render(&self, root: &Value, escape: fn(&str) -> String) -> String {
        let mut out = String::new();
        let cx = Cx { root, escape };
        cx.run(&self.nodes, root, &mut out);
        out
    }
}

struct Cx<'a> {
    root: &'a Value,
    escape: fn(&str) -> String,
}

/// Go's truth: false, 0, nil and empty strings, arrays and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Cx<'_> {
    fn run(&self, nodes: &[Node], dot: &Value, out: &mut String) {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Print(e) => out.push_str(&(self.escape)(&shown(&self.eval(e, dot)))),
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let hit = branches.iter().find(|(c, _)| truthy(&self.eval(c, dot)));
                    self.run(hit.map_or(otherwise, |(_, b)| b), dot, out);
                }
                Node::Range {
                    over,
                    body,
                    otherwise,
                } => {
                    let items: Vec<Value> = match self.eval(over, dot) {
                        Value::Array(a) => a,
                        Value::Object(o) => o.into_iter().map(|(_, v)| v).collect(),
                        _ => Vec::new(),
                    };
                    if items.is_empty() {
                        self.run(otherwise, dot, out);
                    }
                    for item in &items {
                        self.run(body, item, out);
                    }
                }
            }
        }
    }

    fn eval(&self, e: &Expr, dot: &Value) -> Value {
        match e {
            Expr::Lit(v) => v.clone(),
            Expr::Field { from_root, path } => {
                let mut v = if *from_root { self.root } else { dot };
                for key in path {
                    match v.get(key) {
                        Some(next) => v = next,
                        None => return Value::Null,
                    }
                }
                v.clone()
            }
            Expr::Call(f, args) => self.call(*f, args, dot),
        }
    }

    fn call(&self, f: Func, args: &[Expr], dot: &Value) -> Value {
        let arg = |i: usize| self.eval(&args[i], dot);
        let cmp = |want: fn(std::cmp::Ordering) -> bool| {
            Value::Bool(order(&arg(0), &arg(1)).is_some_and(want))
        };
        match f {
            Func::Eq => {
                let first = arg(0);
                Value::Bool((1..args.len()).any(|i| equal(&first, &arg(i))))
            }
            Func::Ne => Value::Bool(!equal(&arg(0), &arg(1))),
            Func::Lt => cmp(|o| o.is_lt()),
            Func::Le => cmp(|o| o.is_le()),
            Func::Gt => cmp(|o| o.is_gt()),
            Func::Ge => cmp(|o| o.is_ge()),
            // Go evaluates `and` / `or` lazily, stopping at the deciding argument.
            Func::And | Func::Or => {
                let want = f == Func::Or;
                let mut last = Value::Null;
                for a in args {
                    last = self.eval(a, dot);
                    if truthy(&last) == want {
                        break;
                    }
                }
                last
            }
            Func::Not => Value::Bool(!truthy(&arg(0))),
            Func::Len => Value::from(match arg(0) {
                Value::String(s) => s.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                _ => 0,
            }),
            Func::Index => {
                let mut v = arg(0);
                for i in 1..args.len() {
                    v = match (&v, arg(i)) {
                        (Value::Object(o), Value::String(k)) => {
                            o.get(&k).cloned().unwrap_or(Value::Null)
                        }
                        (Value::Array(a), Value::Number(n)) => n
                            .as_u64()
                            .and_then(|n| a.get(n as usize))
                            .cloned()
                            .unwrap_or(Value::Null),
                        _ => Value::Null,
                    };
                }
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOTS: &[&str] = &["Email", "Data", "Token", "N"];

    fn run(src: &str, v: &Value) -> String {
        Template::parse(src, ROOTS)
            .unwrap_or_else(|e| panic!("{src:?}: {e}"))
            .render(v, str::to_string)
    }

    fn root() -> Value {
        json!({"Email": "a@x.test", "Token": "123456", "N": 3,
               "Data": {"locale": "de", "name": "Ada", "n": 2, "tags": ["x", "y"], "empty": ""}})
    }

    #[test]
    fn conditionals_pick_one_branch() {
        let t = "{{ if eq .Data.locale \"de\" }}Hallo{{ else if eq .Data.locale \"fr\" \"be\" }}Salut{{ else }}Hello{{ end }} {{ .Data.name }}";
        assert_eq!(run(t, &root()), "Hallo Ada");
        let fr = json!({"Data": {"locale": "be", "name": "Bo"}});
        assert_eq!(run(t, &fr), "Salut Bo");
        let none = json!({"Data": {}});
        assert_eq!(run(t, &none), "Hello ");
        // A missing key is nil: false in `if`, empty when printed, never an error.
        assert_eq!(
            run(
                "{{ if .Data.nope.deeper }}y{{ else }}n{{ end }}[{{ .Data.nope }}]",
                &root()
            ),
            "n[]"
        );
        assert_eq!(
            run("{{ if .Data.empty }}y{{ else }}n{{ end }}", &root()),
            "n"
        );
    }

    #[test]
    fn functions_behave_as_go_ones() {
        let v = root();
        for (src, want) in [
            ("{{ ne .Data.locale \"en\" }}", "true"),
            (
                "{{ lt .Data.n 3 }} {{ le .Data.n 2 }} {{ gt .Data.n 2 }} {{ ge .N 3 }}",
                "true true false true",
            ),
            (
                "{{ lt \"abc\" \"abd\" }} {{ gt .Email \"b\" }}",
                "true false",
            ),
            ("{{ lt .Data.n \"3\" }}", "false"),
            (
                "{{ and .Data.name .Token }}|{{ and .Data.empty .Token }}|",
                "123456||",
            ),
            (
                "{{ or .Data.nope .Data.name }} {{ or .Data.nope false }}",
                "Ada false",
            ),
            ("{{ not .Data.nope }} {{ not .Token }}", "true false"),
            (
                "{{ len .Token }} {{ len .Data.tags }} {{ len .Data.nope }}",
                "6 2 0",
            ),
            (
                "{{ index .Data \"name\" }} {{ index .Data.tags 1 }}",
                "Ada y",
            ),
            (
                "{{ .Data.locale | eq \"de\" }} {{ if and (eq .N 3) (not .Data.nope) }}ok{{ end }}",
                "true ok",
            ),
            (
                "{{ eq .N 3.0 }} {{ eq 1 \"1\" }} {{ eq .Data.nope nil }}",
                "true false true",
            ),
            ("{{ `raw {{ }}` }} {{ \"q\\\"\\n\" }}", "raw {{ }} q\"\n"),
        ] {
            assert_eq!(run(src, &v), want, "{src}");
        }
    }

    #[test]
    fn trim_markers_comments_and_range() {
        let v = root();
        assert_eq!(run("a  \n {{- .Token -}} \n  b", &v), "a123456b");
        assert_eq!(run("a {{/* a comment, }} inside */}} b", &v), "a  b");
        assert_eq!(run("a {{- /* trimmed */ -}} b", &v), "ab");
        assert_eq!(
            run("{{ range .Data.tags }}<{{ . }}>{{ end }}", &v),
            "<x><y>"
        );
        assert_eq!(
            run(
                "{{ range .Data.nope }}x{{ else }}none for {{ .Email }}{{ end }}",
                &v
            ),
            "none for a@x.test"
        );
        assert_eq!(
            run("{{ range .Data.tags }}{{ $.Email }} {{ end }}", &v),
            "a@x.test a@x.test "
        );
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(run("a {{-3}}", &v), "a -3");
    }

    #[test]
    fn mistakes_are_parse_errors() {
        for (src, needle) in [
            ("{{ if .Token }}x", "without its {{ end }}"),
            ("x{{ end }}", "unexpected {{ end }}"),
            ("{{ else }}", "unexpected {{ else }}"),
            ("{{ .Token ", "unclosed action"),
            ("{{ .Nope }}", "unknown variable .Nope"),
            ("{{ upper .Token }}", "function \"upper\" not defined"),
            ("{{ eq .Token }}", "wrong number of arguments for eq"),
            ("{{ not }}", "wrong number of arguments for not"),
            ("{{ \"open }}", "unclosed action"),
            ("{{ 'c' }}", "unexpected '\\''"),
            ("{{ (eq .Token \"1\" }}", "unclosed ("),
            ("{{ .Token .Email }}", "cannot take arguments"),
            ("{{ with .Data }}{{ end }}", "`with` is not supported"),
            ("{{ $x := 1 }}", "variables are not supported"),
            ("{{ /* open }}", "unclosed"),
            ("{{ }}", "missing value"),
            ("line\n{{ if }}{{ end }}", "line 2"),
        ] {
            let e = Template::parse(src, ROOTS).expect_err(src);
            assert!(e.contains(needle), "{src:?}: {e}");
        }
    }
}
