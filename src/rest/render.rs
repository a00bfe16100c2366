//! render (pure): status code and headers from the request and the statement's outputs; the
//! body text built by Postgres is passed through untouched.

use super::parse::{Action, ApiRequest, MediaType, ReturnPref, TxEnd};
use super::RestError;

/// What the executor got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Total rows without the range (when counted).
    pub total: Option<i64>,
    /// Rows in the body.
    pub n: i64,
    /// The JSON body.
    pub body: String,
}

/// A rendered response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body (empty for HEAD, 204 and `return=minimal`).
    pub body: String,
}

/// Whether the response must be a single object.
pub fn wants_object(req: &ApiRequest) -> bool {
    matches!(req.accept, MediaType::Object { .. })
}

/// Checks a single-object answer has exactly one row (PGRST116, 406).
pub fn check_object(req: &ApiRequest, o: &Outcome) -> Result<(), RestError> {
    if wants_object(req) && o.n != 1 {
        return Err(RestError::new(
            406,
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
        )
        .with_details(format!("The result contains {} rows", o.n)));
    }
    Ok(())
}

fn content_range(offset: u64, n: i64, total: Option<i64>) -> String {
    let total = total.map(|t| t.to_string()).unwrap_or_else(|| "*".into());
    if n <= 0 {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", offset + n as u64 - 1)
    }
}

/// Renders a successful outcome.
pub fn render(req: &ApiRequest, o: Outcome, scalar_void: bool) -> Result<Rendered, RestError> {
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    let ctype = match req.accept {
        MediaType::Object { .. } => "application/vnd.pgrst.object+json; charset=utf-8",
        _ => "application/json; charset=utf-8",
    };
    let applied: Vec<String> = req
        .preferences
        .recognised
        .iter()
        .filter(|p| {
            p.starts_with("return=")
                || p.starts_with("count=")
                || p.starts_with("tx=")
                || p.starts_with("resolution=")
                || p.starts_with("missing=")
                || p.starts_with("handling=")
                || p.starts_with("max-affected=")
        })
        .cloned()
        .collect();
    if !applied.is_empty() {
        headers.push(("Preference-Applied", applied.join(", ")));
    }
    let representation = req.preferences.return_ == Some(ReturnPref::Representation);
    let (status, body) = match req.action {
        Action::Read { headers_only } | Action::Call { headers_only, .. } if !scalar_void => {
            let offset = req.range.offset;
            if let Some(t) = o.total {
                if offset > 0 && o.n == 0 && offset >= t as u64 {
                    return Err(
                        RestError::new(416, "PGRST103", "Requested range not satisfiable")
                            .with_details(format!(
                                "An offset of {offset} was requested, but there are only {t} rows."
                            )),
                    );
                }
            }
            headers.push(("Content-Range", content_range(offset, o.n, o.total)));
            headers.push(("Content-Type", ctype.into()));
            let partial = o
                .total
                .is_some_and(|t| (o.n as u64 + offset) < t as u64 || offset > 0);
            let status = if partial && req.range_requested {
                206
            } else {
                200
            };
            (status, if headers_only { String::new() } else { o.body })
        }
        Action::Call { .. } => (204, String::new()),
        Action::Insert | Action::SingleUpsert => {
            headers.push(("Content-Range", content_range(0, o.n, None)));
            if representation {
                headers.push(("Content-Type", ctype.into()));
                (201, o.body)
            } else {
                (201, String::new())
            }
        }
        Action::Update | Action::Delete => {
            headers.push(("Content-Range", content_range(0, o.n, None)));
            if representation {
                headers.push(("Content-Type", ctype.into()));
                (200, o.body)
            } else {
                (204, String::new())
            }
        }
        _ => (200, o.body),
    };
    Ok(Rendered {
        status,
        headers,
        body,
    })
}

/// Whether the transaction ends in a rollback (`Prefer: tx=rollback`).
pub fn rolls_back(req: &ApiRequest) -> bool {
    req.preferences.tx == Some(TxEnd::Rollback)
}
