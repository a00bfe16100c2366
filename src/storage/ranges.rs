//! HTTP `Range` and conditional-request rules for downloads (pure).

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) range: the whole object, 200.
    Full,
    /// One satisfiable range `start..end` (end exclusive): 206.
    Part(u64, u64),
    /// Not satisfiable: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Reads a `Range` header. Only single `bytes=` ranges are served; anything else (several
/// ranges, other units, malformed) is ignored and the whole object is sent, as RFC 9110
/// allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last n bytes.
        return match b.parse::<u64>() {
            Ok(0) => RangeAsk::Unsatisfiable,
            Ok(_) if size == 0 => RangeAsk::Unsatisfiable,
            Ok(n) => RangeAsk::Part(size.saturating_sub(n), size),
            Err(_) => RangeAsk::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeAsk::Full;
    };
    let end = if b.is_empty() {
        size
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => (e + 1).min(size),
            _ => return RangeAsk::Full,
        }
    };
    if start >= size {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part(start, end)
    }
}

/// Whether `If-None-Match` matches the object's ETag (weak comparison, `*` matches).
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    let Some(h) = header else { return false };
    let bare = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    let mine = bare(etag);
    h.split(',').any(|t| t.trim() == "*" || bare(t) == mine)
}

/// Whether a conditional GET/HEAD is answered 304 (RFC 9110 §13.2.2): a matching
/// `If-None-Match`; or, only when there is no `If-None-Match`, an `If-Modified-Since` date
/// not older than `modified` (compared in whole seconds, the resolution of `Last-Modified`).
/// An unparsable date is ignored.
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    etag: &str,
    modified: chrono::DateTime<chrono::Utc>,
) -> bool {
    if let Some(inm) = if_none_match {
        return !etag.is_empty() && none_match(Some(inm), etag);
    }
    let Some(since) = if_modified_since.and_then(parse_http_date) else {
        return false;
    };
    modified.timestamp() <= since.timestamp()
}

/// An HTTP date in any of the three forms recipients must accept (IMF-fixdate, RFC 850,
/// asctime), through actix's `HttpDate`.
fn parse_http_date(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t: std::time::SystemTime = s
        .trim()
        .parse::<actix_web::http::header::HttpDate>()
        .ok()?
        .into();
    Some(t.into())
}

/// An HTTP date (`Last-Modified`). The format is parsed once, not on every download.
pub fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::format::{Item, StrftimeItems};
    static FORMAT: std::sync::LazyLock<Vec<Item<'static>>> =
        std::sync::LazyLock::new(|| StrftimeItems::new("%a, %d %b %Y %H:%M:%S GMT").collect());
    t.format_with_items(FORMAT.iter()).to_string()
}

/// `Content-Disposition` for `?download[=name]`: ASCII fallback plus the RFC 5987 form.
pub fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part(5, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part(7, 10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Part(0, 10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Part(8, 10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Full);
    }

    #[test]
    fn etags() {
        assert!(none_match(Some("\"abc\""), "\"abc\""));
        assert!(none_match(Some("W/\"abc\", \"x\""), "\"abc\""));
        assert!(none_match(Some("*"), "\"abc\""));
        assert!(!none_match(Some("\"abd\""), "\"abc\""));
        assert!(!none_match(None, "\"abc\""));
    }

    #[test]
    fn conditional_gets() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-02T09:05:03.75Z")
            .unwrap()
            .to_utc();
        let lm = http_date(t);
        // The object's own Last-Modified (its fraction of a second cut off) is not older.
        assert!(not_modified(None, Some(&lm), "\"e\"", t));
        assert!(not_modified(
            None,
            Some("Mon, 02 Nov 2026 10:00:00 GMT"),
            "\"e\"",
            t
        ));
        assert!(not_modified(
            None,
            Some("Monday, 02-Nov-26 10:00:00 GMT"),
            "",
            t
        ));
        assert!(not_modified(None, Some("Mon Nov  2 10:00:00 2026"), "", t));
        assert!(!not_modified(
            None,
            Some("Mon, 02 Nov 2026 09:05:02 GMT"),
            "\"e\"",
            t
        ));
        assert!(!not_modified(None, Some("yesterday"), "\"e\"", t));
        assert!(!not_modified(None, None, "\"e\"", t));
        // If-None-Match decides alone when present (a mismatch wins over a fresh date).
        assert!(not_modified(Some("\"e\""), None, "\"e\"", t));
        assert!(!not_modified(Some("\"x\""), Some(&lm), "\"e\"", t));
    }

    #[test]
    fn http_dates() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-02T09:05:03.75Z")
            .unwrap()
            .to_utc();
        assert_eq!(http_date(t), "Mon, 02 Nov 2026 09:05:03 GMT");
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            attachment("a b.png"),
            "attachment; filename=\"a b.png\"; filename*=UTF-8''a%20b.png"
        );
        assert!(attachment("é\".txt").starts_with("attachment; filename=\"__.txt\""));
    }
}
