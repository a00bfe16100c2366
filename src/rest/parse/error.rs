//! Parse errors: PostgREST's `PGRST1xx` request errors, with the codes, statuses, messages,
//! details and hints PostgREST answers, so clients that branch on `code` keep working.
//!
//! This type carries no actix dependency; the REST handler turns it into `crate::error::ApiError`
//! with [`ParseError::status`], [`ParseError::code`], [`ParseError::message`],
//! [`ParseError::details`] and [`ParseError::hint`].

use std::fmt;

/// Why a `Range` header or `limit`/`offset` pair cannot be served (`PGRST103`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// `limit` is negative.
    NegativeLimit,
    /// `Range: 10-5`: the lower bound is above the upper bound.
    LowerGtUpper,
}

/// A request that cannot be parsed. Every variant maps to one PostgREST error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// `PGRST100` (400): a query-string parameter does not follow the grammar.
    /// `message` is PostgREST's `"failed to parse <what> (<input>)" (line 1, column N)`,
    /// `details` the parser's `unexpected … expecting …`.
    QueryParam {
        /// The PostgREST-shaped message.
        message: String,
        /// What the parser expected at the failing position.
        details: String,
    },
    /// `PGRST100` (414): the query string is longer than `ParseLimits::max_query_len`.
    /// PostgREST has no such limit; 414 is the HTTP status meant for it.
    QueryTooLong {
        /// Bytes received.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// `PGRST101` (405): RPC called with a method other than GET, HEAD or POST.
    InvalidRpcMethod(String),
    /// `PGRST102` (400): the body cannot be read (malformed JSON, ragged CSV, unknown
    /// `Content-Type`, keys that differ between the objects of a bulk insert).
    InvalidBody {
        /// PostgREST's message (`Empty or invalid json`, `All object keys must match`, …).
        message: String,
        /// Where it went wrong, when known.
        details: Option<String>,
    },
    /// `PGRST103` (416): an unsatisfiable `Range` header or a negative `limit`.
    InvalidRange(RangeError),
    /// `PGRST106` (406): `Accept-Profile`/`Content-Profile` names a schema that is not exposed.
    UnacceptableSchema {
        /// The schema asked for.
        schema: String,
        /// The exposed schemas, for the hint.
        exposed: Vec<String>,
    },
    /// `PGRST107` (406): no media type of the `Accept` header can be produced.
    MediaType(Vec<String>),
    /// `PGRST108` (400): a filter, order or limit names an embedded resource that is not in
    /// `select` (or names it by its table while `select` gave it an alias).
    NotEmbedded {
        /// The name used in the query parameter.
        resource: String,
        /// `(name, alias)` when `select` embedded `name` under `alias`.
        alias: Option<(String, String)>,
    },
    /// `PGRST114` (400): `limit`/`offset` on a PUT.
    PutLimitNotAllowed,
    /// `PGRST117` (405): an HTTP method PostgREST does not serve.
    UnsupportedMethod(String),
    /// `PGRST122` (400): unknown or invalid preferences with `Prefer: handling=strict`.
    InvalidPreferences(Vec<String>),
    /// `PGRST123` (400): aggregates in `select` while `rest.aggregates` is off.
    AggregatesNotAllowed,
    /// `PGRST125` (404): the path has more segments than `/{table}` or `/rpc/{fn}`.
    InvalidResourcePath,
}

impl ParseError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        use ParseError::*;
        match self {
            QueryParam { .. } => 400,
            QueryTooLong { .. } => 414,
            InvalidRpcMethod(_) => 405,
            InvalidBody { .. } => 400,
            InvalidRange(_) => 416,
            UnacceptableSchema { .. } => 406,
            MediaType(_) => 406,
            NotEmbedded { .. } => 400,
            PutLimitNotAllowed => 400,
            UnsupportedMethod(_) => 405,
            InvalidPreferences(_) => 400,
            AggregatesNotAllowed => 400,
            InvalidResourcePath => 404,
        }
    }

    /// PostgREST error code (`code` of the JSON body).
    pub fn code(&self) -> &'static str {
        use ParseError::*;
        match self {
            QueryParam { .. } | QueryTooLong { .. } => "PGRST100",
            InvalidRpcMethod(_) => "PGRST101",
            InvalidBody { .. } => "PGRST102",
            InvalidRange(_) => "PGRST103",
            UnacceptableSchema { .. } => "PGRST106",
            MediaType(_) => "PGRST107",
            NotEmbedded { .. } => "PGRST108",
            PutLimitNotAllowed => "PGRST114",
            UnsupportedMethod(_) => "PGRST117",
            InvalidPreferences(_) => "PGRST122",
            AggregatesNotAllowed => "PGRST123",
            InvalidResourcePath => "PGRST125",
        }
    }

    /// `message` of the JSON body.
    pub fn message(&self) -> String {
        use ParseError::*;
        match self {
            QueryParam { message, .. } => message.clone(),
            QueryTooLong { len, max } => {
                format!("The query string is {len} bytes long; at most {max} are allowed")
            }
            InvalidRpcMethod(m) => format!("Cannot use the {m} method on RPC"),
            InvalidBody { message, .. } => message.clone(),
            InvalidRange(_) => "Requested range not satisfiable".to_string(),
            UnacceptableSchema { schema, .. } => format!("Invalid schema: {schema}"),
            MediaType(types) => format!(
                "None of these media types are available: {}",
                types.join(", ")
            ),
            NotEmbedded { resource, .. } => {
                format!("'{resource}' is not an embedded resource in this request")
            }
            PutLimitNotAllowed => {
                "limit/offset querystring parameters are not allowed for PUT".to_string()
            }
            UnsupportedMethod(m) => format!("Unsupported HTTP method: {m}"),
            InvalidPreferences(_) => "Invalid preferences given with handling=strict".to_string(),
            AggregatesNotAllowed => "Use of aggregate functions is not allowed".to_string(),
            InvalidResourcePath => "Invalid path specified in request URL".to_string(),
        }
    }

    /// `details` of the JSON body.
    pub fn details(&self) -> Option<String> {
        use ParseError::*;
        match self {
            QueryParam { details, .. } => Some(details.clone()),
            InvalidBody { details, .. } => details.clone(),
            InvalidRange(RangeError::NegativeLimit) => {
                Some("Limit should be greater than or equal to zero.".to_string())
            }
            InvalidRange(RangeError::LowerGtUpper) => Some(
                "The lower boundary must be lower than or equal to the upper boundary in the Range header."
                    .to_string(),
            ),
            NotEmbedded { alias: Some(_), .. } => {
                Some("Target names are not allowed in filters if they have an alias".to_string())
            }
            InvalidPreferences(p) => Some(format!("Invalid preferences: {}", p.join(", "))),
            _ => None,
        }
    }

    /// `hint` of the JSON body.
    pub fn hint(&self) -> Option<String> {
        use ParseError::*;
        match self {
            UnacceptableSchema { exposed, .. } => Some(format!(
                "Only the following schemas are exposed: {}",
                exposed.join(", ")
            )),
            NotEmbedded {
                resource,
                alias: None,
            } => Some(format!(
                "Verify that '{resource}' is included in the 'select' query parameter."
            )),
            NotEmbedded {
                alias: Some((name, alias)),
                ..
            } => Some(format!(
                "Change '{name}' to '{alias}' in filters, orders or limits."
            )),
            _ => None,
        }
    }

    /// `PGRST102` with a message and no details.
    pub(crate) fn body(message: impl Into<String>) -> Self {
        ParseError::InvalidBody {
            message: message.into(),
            details: None,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// (error, code, status, message, details, hint)
    type Case = (
        ParseError,
        &'static str,
        u16,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn codes_statuses_and_texts() {
        let cases: Vec<Case> = vec![
            (
                ParseError::InvalidRpcMethod("PUT".into()),
                "PGRST101",
                405,
                "Cannot use the PUT method on RPC",
                None,
                None,
            ),
            (
                ParseError::InvalidRange(RangeError::NegativeLimit),
                "PGRST103",
                416,
                "Requested range not satisfiable",
                Some("Limit should be greater than or equal to zero."),
                None,
            ),
            (
                ParseError::UnacceptableSchema {
                    schema: "x".into(),
                    exposed: vec!["public".into(), "api".into()],
                },
                "PGRST106",
                406,
                "Invalid schema: x",
                None,
                Some("Only the following schemas are exposed: public, api"),
            ),
            (
                ParseError::MediaType(vec!["text/xml".into(), "image/png".into()]),
                "PGRST107",
                406,
                "None of these media types are available: text/xml, image/png",
                None,
                None,
            ),
            (
                ParseError::NotEmbedded {
                    resource: "clients".into(),
                    alias: None,
                },
                "PGRST108",
                400,
                "'clients' is not an embedded resource in this request",
                None,
                Some("Verify that 'clients' is included in the 'select' query parameter."),
            ),
            (
                ParseError::NotEmbedded {
                    resource: "clients".into(),
                    alias: Some(("clients".into(), "c".into())),
                },
                "PGRST108",
                400,
                "'clients' is not an embedded resource in this request",
                Some("Target names are not allowed in filters if they have an alias"),
                Some("Change 'clients' to 'c' in filters, orders or limits."),
            ),
            (
                ParseError::InvalidPreferences(vec!["foo".into(), "bar".into()]),
                "PGRST122",
                400,
                "Invalid preferences given with handling=strict",
                Some("Invalid preferences: foo, bar"),
                None,
            ),
            (
                ParseError::UnsupportedMethod("TRACE".into()),
                "PGRST117",
                405,
                "Unsupported HTTP method: TRACE",
                None,
                None,
            ),
            (
                ParseError::InvalidResourcePath,
                "PGRST125",
                404,
                "Invalid path specified in request URL",
                None,
                None,
            ),
            (
                ParseError::PutLimitNotAllowed,
                "PGRST114",
                400,
                "limit/offset querystring parameters are not allowed for PUT",
                None,
                None,
            ),
            (
                ParseError::AggregatesNotAllowed,
                "PGRST123",
                400,
                "Use of aggregate functions is not allowed",
                None,
                None,
            ),
        ];
        for (e, code, status, message, details, hint) in cases {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.message(), message, "{e:?}");
            assert_eq!(e.details().as_deref(), details, "{e:?}");
            assert_eq!(e.hint().as_deref(), hint, "{e:?}");
        }
    }
}
