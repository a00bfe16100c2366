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
    /// `response.status` as SQL set it.
    pub status: Option<String>,
    /// `response.headers` as SQL set it (a JSON array of one-key objects).
    pub headers: Option<String>,
}

/// A rendered response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
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
    use std::fmt::Write;
    // Written into one string (not `format!` twice): this runs for every read.
    let mut out = String::with_capacity(24);
    if n <= 0 {
        out.push('*');
    } else {
        let _ = write!(out, "{offset}-{}", offset + n as u64 - 1);
    }
    out.push('/');
    match total {
        Some(t) => {
            let _ = write!(out, "{t}");
        }
        None => out.push('*'),
    }
    out
}

/// Renders a successful outcome.
pub fn render(req: &ApiRequest, o: Outcome, scalar_void: bool) -> Result<Rendered, RestError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let ctype = match req.accept {
        MediaType::Object {
            nulls_stripped: true,
        } => "application/vnd.pgrst.object+json; nulls=stripped; charset=utf-8",
        MediaType::Object { .. } => "application/vnd.pgrst.object+json; charset=utf-8",
        MediaType::ArrayStripped => {
            "application/vnd.pgrst.array+json; nulls=stripped; charset=utf-8"
        }
        MediaType::Csv => "text/csv; charset=utf-8",
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
                || (p.starts_with("timezone=") && super::plan::timezone(req).is_some())
        })
        .cloned()
        .collect();
    if !applied.is_empty() {
        headers.push(("Preference-Applied".into(), applied.join(", ")));
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
            headers.push(("Content-Range".into(), content_range(offset, o.n, o.total)));
            headers.push(("Content-Type".into(), ctype.into()));
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
        // PUT answers like an update: 200 with the row, else 204 (PostgREST).
        Action::SingleUpsert => {
            headers.push(("Content-Range".into(), content_range(0, o.n, None)));
            if representation {
                headers.push(("Content-Type".into(), ctype.into()));
                (200, o.body)
            } else {
                (204, String::new())
            }
        }
        Action::Insert => {
            headers.push(("Content-Range".into(), content_range(0, o.n, None)));
            if representation {
                headers.push(("Content-Type".into(), ctype.into()));
                (201, o.body)
            } else {
                (201, String::new())
            }
        }
        Action::Update | Action::Delete => {
            headers.push(("Content-Range".into(), content_range(0, o.n, None)));
            if representation {
                headers.push(("Content-Type".into(), ctype.into()));
                (200, o.body)
            } else {
                (204, String::new())
            }
        }
        _ => (200, o.body),
    };
    let (status, headers) = apply_response_gucs(status, headers, &o.status, &o.headers)?;
    Ok(Rendered {
        status,
        headers,
        body,
    })
}

/// `response.status` overrides the status; `response.headers` (`[{"Name": "value"}, …]`)
/// adds or replaces headers. Bad values are the function author's bug: a 500 (PGRST111/112).
fn apply_response_gucs(
    status: u16,
    mut headers: Vec<(String, String)>,
    gstatus: &Option<String>,
    gheaders: &Option<String>,
) -> Result<(u16, Vec<(String, String)>), RestError> {
    let status = match gstatus.as_deref().filter(|s| !s.is_empty()) {
        None => status,
        Some(s) => match s.trim().parse::<u16>() {
            Ok(n) if (100..600).contains(&n) => n,
            _ => {
                return Err(RestError::new(500, "PGRST112", "Invalid response.status")
                    .with_details(format!("{s:?} is not a valid HTTP status code")))
            }
        },
    };
    if let Some(h) = gheaders.as_deref().filter(|h| !h.is_empty()) {
        let invalid = || {
            RestError::new(500, "PGRST111", "Invalid response.headers")
                .with_details("response.headers must be a JSON array of one-key objects of strings")
        };
        let arr: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(h).map_err(|_| invalid())?;
        for obj in arr {
            for (k, v) in obj {
                let v = v.as_str().ok_or_else(invalid)?.to_string();
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
    }
    Ok((status, headers))
}

/// Whether the transaction ends in a rollback (`Prefer: tx=rollback`).
pub fn rolls_back(req: &ApiRequest) -> bool {
    req.preferences.tx == Some(TxEnd::Rollback)
}
