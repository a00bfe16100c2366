//! The small recursive-descent toolkit every query-string grammar here shares: a cursor over
//! one parameter value and a syntax error that renders the way PostgREST's parser reports
//! failures (`unexpected "x" expecting …` at a 1-based column).

use super::error::ParseError;

/// A failure inside one grammar, before it is tied to the parameter it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Syntax {
    /// Byte offset into the parsed text where the failing token starts.
    pub pos: usize,
    /// The character found there (`None`: end of input).
    pub unexpected: Option<char>,
    /// What would have been accepted.
    pub expecting: String,
}

impl Syntax {
    /// Renders as PostgREST does: `"failed to parse <what> (<shown>)" (line 1, column N)`.
    /// `parsed` is the text the position refers to; it differs from `shown` for logic trees,
    /// whose grammar runs over `or(...)` although only `(...)` was sent as the value (the
    /// column then counts the `or`, as PostgREST's does).
    pub fn into_error(self, what: &str, shown: &str, parsed: &str) -> ParseError {
        let column = parsed
            .get(..self.pos)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        let unexpected = match self.unexpected {
            Some(c) => format!("unexpected {:?}", c.to_string()),
            None => "unexpected end of input".to_string(),
        };
        let details = if self.expecting.is_empty() {
            unexpected
        } else {
            format!("{unexpected} expecting {}", self.expecting)
        };
        ParseError::QueryParam {
            message: format!("\"failed to parse {what} ({shown})\" (line 1, column {column})"),
            details,
        }
    }
}

/// A cursor over one parameter value.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(src: &'a str) -> Self {
        Cursor { src, pos: 0 }
    }

    /// Byte offset of the cursor.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Moves back to an earlier position (used for one-token lookahead only).
    pub fn reset(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// The unparsed rest.
    pub fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    pub fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub fn starts_with(&self, s: &str) -> bool {
        self.rest().starts_with(s)
    }

    /// Consumes `s` if the rest starts with it.
    pub fn eat(&mut self, s: &str) -> bool {
        if self.starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace()) {
            self.bump();
        }
    }

    /// The text between two byte offsets.
    pub fn slice(&self, from: usize, to: usize) -> &'a str {
        self.src.get(from..to).unwrap_or("")
    }

    /// An error at the cursor.
    pub fn error(&self, expecting: impl Into<String>) -> Syntax {
        self.error_at(self.pos, expecting)
    }

    /// An error at an earlier position of this text.
    pub fn error_at(&self, pos: usize, expecting: impl Into<String>) -> Syntax {
        Syntax {
            pos,
            unexpected: self.src.get(pos..).and_then(|s| s.chars().next()),
            expecting: expecting.into(),
        }
    }

    /// Consumes `c` or fails expecting it.
    pub fn expect(&mut self, c: char) -> Result<(), Syntax> {
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!("{:?}", c.to_string())))
        }
    }

    /// Consumes the first of `words` the rest starts with (callers check what follows, so
    /// `desc` in `descc` fails on the second `c`, where PostgREST's parser fails too).
    /// On failure the error points at the token start and, like PostgREST's parser, names
    /// the first character that differs from the first alternative.
    pub fn keyword(
        &mut self,
        words: &[&'static str],
        expecting: &str,
    ) -> Result<&'static str, Syntax> {
        for w in words {
            if self.eat(w) {
                return Ok(w);
            }
        }
        Err(self.mismatch(words.first().copied().unwrap_or(""), expecting))
    }

    /// An error at the cursor naming the first character of the rest that differs from
    /// `word` (what PostgREST's parser reports when its first alternative fails).
    pub fn mismatch(&self, word: &str, expecting: &str) -> Syntax {
        let rest = self.rest();
        let differing = rest
            .chars()
            .zip(word.chars())
            .find(|(a, b)| a != b)
            .map(|(a, _)| a)
            .or_else(|| rest.chars().nth(word.chars().count()));
        Syntax {
            pos: self.pos,
            unexpected: differing,
            expecting: expecting.to_string(),
        }
    }
}

/// A double-quoted token (`"a,b"`): `\"` and `\\` are escapes, any other backslash is kept.
/// The cursor must be on the opening quote.
pub(crate) fn quoted(cur: &mut Cursor<'_>) -> Result<String, Syntax> {
    cur.expect('"')?;
    let mut out = String::new();
    loop {
        match cur.bump() {
            None => return Err(cur.error("\"\\\"\" closing the quoted value")),
            Some('"') => return Ok(out),
            Some('\\') => match cur.peek() {
                Some(c @ ('"' | '\\')) => {
                    cur.bump();
                    out.push(c);
                }
                _ => out.push('\\'),
            },
            Some(c) => out.push(c),
        }
    }
}

/// Characters of an unquoted identifier (column, relation, alias, hint). PostgREST accepts
/// letters, digits, `_`, `$` and spaces (trimmed at both ends); everything else is grammar.
pub(crate) fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || c == ' '
}

/// An identifier: quoted, or a run of [`is_ident_char`] trimmed of spaces.
pub(crate) fn identifier(cur: &mut Cursor<'_>, expecting: &str) -> Result<String, Syntax> {
    cur.skip_ws();
    if cur.peek() == Some('"') {
        let name = quoted(cur)?;
        cur.skip_ws();
        return Ok(name);
    }
    let start = cur.pos();
    while matches!(cur.peek(), Some(c) if is_ident_char(c)) {
        cur.bump();
    }
    let name = cur.slice(start, cur.pos()).trim();
    if name.is_empty() {
        cur.reset(start);
        return Err(cur.error(expecting));
    }
    Ok(name.to_string())
}

/// What PostgREST says it wanted when a field name is missing.
pub(crate) const FIELD_NAME: &str = "field name (* or [a..z0..9_$])";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_and_escapes() {
        let cases = [
            (r#""a,b""#, Ok("a,b")),
            (r#""Quote:\"""#, Ok("Quote:\"")),
            (r#""Backslash:\\""#, Ok("Backslash:\\")),
            (r#""keep\n""#, Ok("keep\\n")),
            (r#""""#, Ok("")),
            (r#""open"#, Err(5)),
        ];
        for (src, want) in cases {
            let mut c = Cursor::new(src);
            let got = quoted(&mut c).map_err(|e| e.pos);
            assert_eq!(got, want.map(str::to_string), "{src}");
        }
    }

    #[test]
    fn identifiers_trim_spaces_and_accept_unicode() {
        let cases = [
            ("name", "name"),
            (" name ", "name"),
            ("Just A Server Model", "Just A Server Model"),
            ("موارد", "موارد"),
            ("$col_1", "$col_1"),
            ("\"a.dotted.column\"", "a.dotted.column"),
            ("\":arr->ow::cast\"", ":arr->ow::cast"),
        ];
        for (src, want) in cases {
            let mut c = Cursor::new(src);
            assert_eq!(identifier(&mut c, FIELD_NAME).as_deref(), Ok(want), "{src}");
        }
        let mut c = Cursor::new("->x");
        let e = identifier(&mut c, FIELD_NAME).unwrap_err();
        assert_eq!((e.pos, e.unexpected), (0, Some('-')));
    }

    #[test]
    fn keyword_errors_name_the_first_differing_character() {
        let mut c = Cursor::new("ac");
        let e = c.keyword(&["asc", "desc"], "x").unwrap_err();
        assert_eq!((e.pos, e.unexpected), (0, Some('c')));
        let mut c = Cursor::new("nulsfist");
        let e = c.keyword(&["asc", "desc"], "x").unwrap_err();
        assert_eq!(e.unexpected, Some('n'));
        let mut c = Cursor::new("asc.x");
        assert_eq!(c.keyword(&["asc"], "x"), Ok("asc"));
        assert_eq!(c.rest(), ".x");
    }

    #[test]
    fn error_rendering_matches_postgrest() {
        let e = Syntax {
            pos: 3,
            unexpected: Some('c'),
            expecting: "\"asc\", \"desc\", \"nullsfirst\" or \"nullslast\"".into(),
        }
        .into_error("order", "id.ac", "id.ac");
        assert_eq!(
            e,
            ParseError::QueryParam {
                message: "\"failed to parse order (id.ac)\" (line 1, column 4)".into(),
                details:
                    "unexpected \"c\" expecting \"asc\", \"desc\", \"nullsfirst\" or \"nullslast\""
                        .into(),
            }
        );
        let e = Syntax {
            pos: 0,
            unexpected: None,
            expecting: FIELD_NAME.into(),
        }
        .into_error("columns parameter", "", "");
        assert_eq!(
            e.details().as_deref(),
            Some("unexpected end of input expecting field name (* or [a..z0..9_$])")
        );
        assert_eq!(
            e.message(),
            "\"failed to parse columns parameter ()\" (line 1, column 1)"
        );
    }
}
