//! Request bodies: JSON (object, array, or anything for single-parameter functions), CSV,
//! `application/x-www-form-urlencoded`, and raw bytes for functions with one unnamed
//! `text`/`xml`/`bytea` parameter.
//!
//! JSON is only validated and scanned for its keys here (values are skipped, never built);
//! the raw text goes to Postgres as one parameter, so rows never take a serde round trip.

use super::error::ParseError;
use super::media::MediaType;
use super::percent_decode;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The top-level shape of a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `{…}`
    Object,
    /// `[…]` with `len` elements.
    Array {
        /// Number of elements.
        len: usize,
    },
    /// A string, number, boolean, null, or an array with a non-object element.
    Other,
}

/// A JSON body, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPayload {
    /// The body text, passed to Postgres as is.
    pub raw: String,
    /// Its shape.
    pub kind: JsonKind,
    /// Keys of the object, or of the first object of an array, in order of appearance.
    pub keys: Vec<String>,
    /// Whether every object of an array has the same set of keys (true for an object).
    pub uniform: bool,
}

/// A CSV body: the header and the rows. An unquoted `NULL` field is SQL NULL (`None`), as
/// in PostgREST and `COPY`; a quoted `"NULL"` stays the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvPayload {
    /// Column names from the first line.
    pub columns: Vec<String>,
    /// One entry per line, each as long as `columns`.
    pub rows: Vec<Vec<Option<String>>>,
}

/// A parsed request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `application/json`
    Json(JsonPayload),
    /// `text/csv`
    Csv(CsvPayload),
    /// `application/x-www-form-urlencoded`: one object of strings.
    Form(Vec<(String, String)>),
    /// `text/plain`, `text/xml`, `application/octet-stream` to a function: its single
    /// unnamed argument.
    Raw {
        /// The body's media type.
        media: MediaType,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// What the payload is for; it decides which media types and shapes are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyUse {
    /// A function call (any JSON shape is passed on; raw bodies are allowed).
    pub rpc: bool,
    /// `columns=` was given: keys need not agree, PostgREST reads only those columns.
    pub columns_given: bool,
}

/// Parses `body` sent with `content_type` (`None`: JSON, PostgREST's default).
pub(crate) fn parse_payload(
    content_type: Option<&MediaType>,
    body: &[u8],
    usage: BodyUse,
) -> Result<Payload, ParseError> {
    let ct = content_type.unwrap_or(&MediaType::Json);
    match ct {
        MediaType::Json | MediaType::Any => parse_json(body, usage).map(Payload::Json),
        MediaType::Csv => parse_csv(utf8(body, "CSV")?).map(Payload::Csv),
        MediaType::FormUrlEncoded => Ok(Payload::Form(parse_form(utf8(body, "form")?))),
        MediaType::TextPlain | MediaType::TextXml | MediaType::OctetStream if usage.rpc => {
            Ok(Payload::Raw {
                media: ct.clone(),
                bytes: body.to_vec(),
            })
        }
        other => Err(ParseError::body(format!(
            "Content-Type not acceptable: {}",
            other.mime()
        ))),
    }
}

fn utf8<'a>(body: &'a [u8], what: &str) -> Result<&'a str, ParseError> {
    std::str::from_utf8(body).map_err(|e| ParseError::InvalidBody {
        message: format!("The {what} body is not valid UTF-8"),
        details: Some(e.to_string()),
    })
}

fn parse_json(body: &[u8], usage: BodyUse) -> Result<JsonPayload, ParseError> {
    let invalid = |details: String| ParseError::InvalidBody {
        message: "Empty or invalid json".to_string(),
        details: Some(details),
    };
    // An RPC without body is a call without arguments.
    let text = if usage.rpc && body.iter().all(u8::is_ascii_whitespace) {
        "{}"
    } else {
        std::str::from_utf8(body).map_err(|e| invalid(e.to_string()))?
    };
    let shape: Shape = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let payload = match shape {
        Shape::Object(keys) => JsonPayload {
            raw: text.to_string(),
            kind: JsonKind::Object,
            keys,
            uniform: true,
        },
        Shape::Array {
            len,
            keys,
            uniform,
            all_objects: true,
        } => JsonPayload {
            raw: text.to_string(),
            kind: JsonKind::Array { len },
            keys,
            uniform,
        },
        Shape::Array { .. } | Shape::Other => JsonPayload {
            raw: text.to_string(),
            kind: JsonKind::Other,
            keys: Vec::new(),
            uniform: false,
        },
    };
    // Tables take objects with one set of keys (or any keys, with `columns=`); functions
    // may take anything (a single unnamed json parameter), the planner decides.
    if !usage.rpc && (payload.kind == JsonKind::Other || (!payload.uniform && !usage.columns_given))
    {
        return Err(ParseError::body("All object keys must match"));
    }
    Ok(payload)
}

/// What the key scan found.
enum Shape {
    Object(Vec<String>),
    Array {
        len: usize,
        keys: Vec<String>,
        uniform: bool,
        all_objects: bool,
    },
    Other,
}

/// Keys of one object; `None` for a non-object.
struct ObjectKeys(Option<Vec<String>>);

fn collect_keys<'de, A: MapAccess<'de>>(mut map: A) -> Result<Vec<String>, A::Error> {
    let mut keys: Vec<String> = Vec::new();
    while let Some(k) = map.next_key::<String>()? {
        map.next_value::<IgnoredAny>()?;
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    Ok(keys)
}

fn sorted(keys: &[String]) -> Vec<&str> {
    let mut s: Vec<&str> = keys.iter().map(String::as_str).collect();
    s.sort_unstable();
    s
}

impl<'de> Deserialize<'de> for ObjectKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ObjectKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ObjectKeys, A::Error> {
                collect_keys(map).map(|k| ObjectKeys(Some(k)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ObjectKeys, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ObjectKeys(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ObjectKeys, E> {
                Ok(ObjectKeys(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ObjectKeys, E> {
                Ok(ObjectKeys(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ObjectKeys, E> {
                Ok(ObjectKeys(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ObjectKeys, E> {
                Ok(ObjectKeys(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<ObjectKeys, E> {
                Ok(ObjectKeys(None))
            }
            fn visit_unit<E>(self) -> Result<ObjectKeys, E> {
                Ok(ObjectKeys(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
                collect_keys(map).map(Shape::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut len = 0usize;
                let mut first: Option<Vec<String>> = None;
                let mut uniform = true;
                let mut all_objects = true;
                while let Some(ObjectKeys(keys)) = seq.next_element::<ObjectKeys>()? {
                    len += 1;
                    match (keys, &first) {
                        (None, _) => all_objects = false,
                        (Some(k), None) => first = Some(k),
                        (Some(k), Some(f)) => {
                            if uniform && sorted(&k) != sorted(f) {
                                uniform = false;
                            }
                        }
                    }
                }
                Ok(Shape::Array {
                    len,
                    keys: first.unwrap_or_default(),
                    uniform,
                    all_objects,
                })
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// RFC 4180 CSV with a header line: `,` separators, `"` quoting with `""` escapes, LF or
/// CRLF line ends, blank lines skipped.
pub(crate) fn parse_csv(text: &str) -> Result<CsvPayload, ParseError> {
    let mut records: Vec<Vec<Option<String>>> = Vec::new();
    let mut record: Vec<Option<String>> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    // Whether the current record has any content (blank lines are not records).
    let mut started = false;
    let finish_field = |field: &mut String, quoted: &mut bool, record: &mut Vec<Option<String>>| {
        let value = std::mem::take(field);
        record.push(if !*quoted && value == "NULL" {
            None
        } else {
            Some(value)
        });
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '"' if field.is_empty() && !quoted => {
                quoted = true;
                started = true;
                loop {
                    match chars.next() {
                        None => {
                            return Err(ParseError::InvalidBody {
                                message: "Invalid CSV".to_string(),
                                details: Some(format!("unterminated quoted field on line {line}")),
                            })
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c)
                        }
                    }
                }
                if !matches!(chars.peek(), None | Some(',' | '\n' | '\r')) {
                    return Err(ParseError::InvalidBody {
                        message: "Invalid CSV".to_string(),
                        details: Some(format!(
                            "unexpected character after a closing quote on line {line}"
                        )),
                    });
                }
            }
            ',' => {
                started = true;
                finish_field(&mut field, &mut quoted, &mut record);
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if started {
                    finish_field(&mut field, &mut quoted, &mut record);
                    records.push(std::mem::take(&mut record));
                }
                started = false;
                line += 1;
            }
            c => {
                started = true;
                field.push(c);
            }
        }
    }
    if started {
        finish_field(&mut field, &mut quoted, &mut record);
        records.push(record);
    }
    let mut records = records.into_iter();
    let Some(header) = records.next() else {
        return Err(ParseError::InvalidBody {
            message: "Invalid CSV".to_string(),
            details: Some("the body has no header line".to_string()),
        });
    };
    let columns: Vec<String> = header.into_iter().map(Option::unwrap_or_default).collect();
    let rows: Vec<Vec<Option<String>>> = records.collect();
    if rows.iter().any(|r| r.len() != columns.len()) {
        return Err(ParseError::body(
            "All lines must have same number of fields",
        ));
    }
    Ok(CsvPayload { columns, rows })
}

/// `a=1&b=x+y`: pairs in order, `+` as space, percent-decoded.
pub(crate) fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: BodyUse = BodyUse {
        rpc: false,
        columns_given: false,
    };
    const RPC: BodyUse = BodyUse {
        rpc: true,
        columns_given: false,
    };

    fn json(body: &str, usage: BodyUse) -> Result<JsonPayload, ParseError> {
        match parse_payload(None, body.as_bytes(), usage)? {
            Payload::Json(j) => Ok(j),
            other => panic!("not json: {other:?}"),
        }
    }

    #[test]
    fn json_objects_and_arrays() {
        let j = json(r#"{"a":1,"b":{"x":[1,2]},"a":3}"#, TABLE).unwrap();
        assert_eq!(j.kind, JsonKind::Object);
        assert_eq!(j.keys, vec!["a", "b"]);
        assert_eq!(j.raw, r#"{"a":1,"b":{"x":[1,2]},"a":3}"#);
        let j = json(r#"[{"a":1,"b":2},{"b":3,"a":4}]"#, TABLE).unwrap();
        assert_eq!(j.kind, JsonKind::Array { len: 2 });
        assert_eq!(j.keys, vec!["a", "b"]);
        assert!(j.uniform);
        let j = json("[]", TABLE).unwrap();
        assert_eq!(j.kind, JsonKind::Array { len: 0 });
        assert!(j.keys.is_empty());
    }

    #[test]
    fn table_bodies_need_uniform_objects() {
        let cases = [
            r#"[{"a":1},{"b":2}]"#,
            r#"[{"a":1},{"a":1,"b":2}]"#,
            r#"[{"a":1}, 2]"#,
            r#""{\"a\": 1}""#,
            "1",
            "null",
        ];
        for body in cases {
            let e = json(body, TABLE).unwrap_err();
            assert_eq!(e.code(), "PGRST102", "{body}");
            assert_eq!(e.message(), "All object keys must match", "{body}");
        }
        // With `columns=`, keys may differ (PostgREST only reads those columns).
        let usage = BodyUse {
            rpc: false,
            columns_given: true,
        };
        let j = json(r#"[{"a":1},{"b":2}]"#, usage).unwrap();
        assert!(!j.uniform);
    }

    #[test]
    fn malformed_json_is_pgrst102_with_position() {
        for body in ["", "{", r#"{"a":}"#, "[1,]", "{\"a\":1} x", "nul"] {
            let e = json(body, TABLE).unwrap_err();
            assert_eq!(e.code(), "PGRST102", "{body:?}");
            assert_eq!(e.status(), 400);
            assert_eq!(e.message(), "Empty or invalid json", "{body:?}");
            assert!(e.details().is_some_and(|d| d.contains("line 1")), "{e:?}");
        }
        let e = parse_payload(None, &[0xff, 0xfe], TABLE).unwrap_err();
        assert_eq!(e.message(), "Empty or invalid json");
    }

    #[test]
    fn rpc_bodies_take_any_json_and_empty_means_no_arguments() {
        let j = json("", RPC).unwrap();
        assert_eq!((j.raw.as_str(), j.kind), ("{}", JsonKind::Object));
        let j = json("  \n", RPC).unwrap();
        assert_eq!(j.raw, "{}");
        assert_eq!(json("42", RPC).unwrap().kind, JsonKind::Other);
        assert_eq!(json("[1,2]", RPC).unwrap().kind, JsonKind::Other);
        assert_eq!(
            json(r#"[{"a":1},{"b":1}]"#, RPC).unwrap().kind,
            JsonKind::Array { len: 2 }
        );
        assert!(json("{", RPC).is_err());
    }

    #[test]
    fn csv_bodies() {
        let c = parse_csv("name,age,height\nJ Doe,62,70\r\nJonas,10,55\n").unwrap();
        assert_eq!(c.columns, vec!["name", "age", "height"]);
        assert_eq!(
            c.rows,
            vec![
                vec![Some("J Doe".into()), Some("62".into()), Some("70".into())],
                vec![Some("Jonas".into()), Some("10".into()), Some("55".into())],
            ]
        );
        let c = parse_csv("a,b,c\n\"x, \"\"y\"\"\nz\",,NULL\n\"NULL\",\"\",v").unwrap();
        assert_eq!(
            c.rows,
            vec![
                vec![Some("x, \"y\"\nz".into()), Some(String::new()), None],
                vec![Some("NULL".into()), Some(String::new()), Some("v".into())],
            ]
        );
        // Header only: no rows. Blank lines are skipped.
        let c = parse_csv("a,b\n\n").unwrap();
        assert!(c.rows.is_empty());
        let c = parse_csv("a\n1\n\n2\n").unwrap();
        assert_eq!(c.rows.len(), 2);
    }

    #[test]
    fn csv_errors() {
        let e = parse_csv("a,b\n1,2,3\n").unwrap_err();
        assert_eq!(e.code(), "PGRST102");
        assert_eq!(e.message(), "All lines must have same number of fields");
        let e = parse_csv("a,b\n1\n").unwrap_err();
        assert_eq!(e.message(), "All lines must have same number of fields");
        let e = parse_csv("a\n\"open\n").unwrap_err();
        assert_eq!(e.message(), "Invalid CSV");
        let e = parse_csv("a\n\"x\"y\n").unwrap_err();
        assert_eq!(e.message(), "Invalid CSV");
        let e = parse_csv("").unwrap_err();
        assert_eq!(e.code(), "PGRST102");
    }

    #[test]
    fn form_bodies() {
        let ct = MediaType::FormUrlEncoded;
        let p = parse_payload(Some(&ct), b"name=John+Doe&age=50&x=%C3%A9&flag&", TABLE).unwrap();
        assert_eq!(
            p,
            Payload::Form(vec![
                ("name".into(), "John Doe".into()),
                ("age".into(), "50".into()),
                ("x".into(), "é".into()),
                ("flag".into(), String::new()),
            ])
        );
    }

    #[test]
    fn raw_bodies_only_for_functions() {
        for ct in [
            MediaType::TextPlain,
            MediaType::TextXml,
            MediaType::OctetStream,
        ] {
            let p = parse_payload(Some(&ct), b"\x00hello", RPC).unwrap();
            assert_eq!(
                p,
                Payload::Raw {
                    media: ct.clone(),
                    bytes: b"\x00hello".to_vec()
                }
            );
            let e = parse_payload(Some(&ct), b"hello", TABLE).unwrap_err();
            assert_eq!(e.code(), "PGRST102");
            assert_eq!(
                e.message(),
                format!("Content-Type not acceptable: {}", ct.mime())
            );
        }
        let e = parse_payload(
            Some(&MediaType::Other("application/x-custom".into())),
            b"{}",
            RPC,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "Content-Type not acceptable: application/x-custom"
        );
    }
}
