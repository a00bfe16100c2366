//! Media types: `Accept` negotiation and `Content-Type` of request bodies.

use super::error::ParseError;

/// An `EXPLAIN` option of `application/vnd.pgrst.plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanOption {
    /// `analyze`
    Analyze,
    /// `verbose`
    Verbose,
    /// `settings`
    Settings,
    /// `buffers`
    Buffers,
    /// `wal`
    Wal,
}

/// A media type Fluxbase knows, or the text of one it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json` (also `application/vnd.pgrst.array+json` without `nulls=stripped`).
    Json,
    /// `application/geo+json`
    GeoJson,
    /// `text/csv`
    Csv,
    /// `text/plain`
    TextPlain,
    /// `text/xml`
    TextXml,
    /// `application/octet-stream`
    OctetStream,
    /// `application/openapi+json`
    OpenApi,
    /// `application/x-www-form-urlencoded` (bodies only)
    FormUrlEncoded,
    /// `application/vnd.pgrst.object+json`: exactly one row, as an object.
    Object {
        /// `;nulls=stripped`: keys with null values are left out.
        nulls_stripped: bool,
    },
    /// `application/vnd.pgrst.array+json;nulls=stripped`
    ArrayStripped,
    /// `application/vnd.pgrst.plan[+json|+text]`: the `EXPLAIN` output.
    Plan {
        /// `+json` asks for JSON; the default is text.
        json: bool,
        /// `for="…"`: the media type whose query is explained.
        for_media: Option<String>,
        /// `options=analyze|verbose|…`
        options: Vec<PlanOption>,
    },
    /// `*/*` (and `application/*`).
    Any,
    /// Anything else, lower-cased `type/subtype`.
    Other(String),
}

impl MediaType {
    /// The `Content-Type` value the renderer answers with.
    pub fn mime(&self) -> String {
        match self {
            MediaType::Json | MediaType::Any => "application/json".into(),
            MediaType::GeoJson => "application/geo+json".into(),
            MediaType::Csv => "text/csv".into(),
            MediaType::TextPlain => "text/plain".into(),
            MediaType::TextXml => "text/xml".into(),
            MediaType::OctetStream => "application/octet-stream".into(),
            MediaType::OpenApi => "application/openapi+json".into(),
            MediaType::FormUrlEncoded => "application/x-www-form-urlencoded".into(),
            MediaType::Object { nulls_stripped } => {
                if *nulls_stripped {
                    "application/vnd.pgrst.object+json; nulls=stripped".into()
                } else {
                    "application/vnd.pgrst.object+json".into()
                }
            }
            MediaType::ArrayStripped => "application/vnd.pgrst.array+json; nulls=stripped".into(),
            MediaType::Plan { json, .. } => {
                if *json {
                    "application/vnd.pgrst.plan+json".into()
                } else {
                    "application/vnd.pgrst.plan+text".into()
                }
            }
            MediaType::Other(s) => s.clone(),
        }
    }
}

/// Parses one media type (`type/subtype; k=v; …`). The `q` parameter is returned apart.
pub fn parse_media_type(raw: &str) -> (MediaType, f32) {
    let mut parts = raw.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut q = 1.0f32;
    let mut params: Vec<(String, String)> = Vec::new();
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_matches('"').to_string();
            if k == "q" {
                // An unreadable q-value counts as 1, the value of an absent one.
                q = v
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(1.0);
            } else {
                params.push((k, v));
            }
        }
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let stripped = param("nulls") == Some("stripped");
    let media = match essence.as_str() {
        "application/json" => MediaType::Json,
        "application/geo+json" => MediaType::GeoJson,
        "text/csv" => MediaType::Csv,
        "text/plain" => MediaType::TextPlain,
        "text/xml" => MediaType::TextXml,
        "application/octet-stream" => MediaType::OctetStream,
        "application/openapi+json" => MediaType::OpenApi,
        "application/x-www-form-urlencoded" => MediaType::FormUrlEncoded,
        "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => MediaType::Object {
            nulls_stripped: stripped,
        },
        "application/vnd.pgrst.array+json" | "application/vnd.pgrst.array" => {
            if stripped {
                MediaType::ArrayStripped
            } else {
                MediaType::Json
            }
        }
        "application/vnd.pgrst.plan"
        | "application/vnd.pgrst.plan+text"
        | "application/vnd.pgrst.plan+json" => MediaType::Plan {
            json: essence.ends_with("+json"),
            for_media: param("for").map(str::to_string),
            options: param("options")
                .map(|o| {
                    o.split('|')
                        .filter_map(|o| match o.trim() {
                            "analyze" => Some(PlanOption::Analyze),
                            "verbose" => Some(PlanOption::Verbose),
                            "settings" => Some(PlanOption::Settings),
                            "buffers" => Some(PlanOption::Buffers),
                            "wal" => Some(PlanOption::Wal),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        "*/*" | "application/*" => MediaType::Any,
        _ => MediaType::Other(essence),
    };
    (media, q)
}

/// One element of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptItem {
    /// What it names.
    pub media: MediaType,
    /// Its q-value.
    pub q: f32,
    /// The element as sent without its q-value (for the `PGRST107` message).
    pub text: String,
}

/// Parses `Accept` values into items ordered by preference (higher q first, then header
/// order). `q=0` items are kept (they mean "not acceptable", RFC 9110) so that an `Accept`
/// made only of them is refused rather than read as absent.
pub fn parse_accept<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<AcceptItem> {
    let mut items: Vec<AcceptItem> = values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (media, q) = parse_media_type(s);
            // Without parameters (`application/json`, the usual case) the text is `s`.
            let text = if !s.contains(';') {
                s.to_string()
            } else {
                s.split(';')
                    .map(str::trim)
                    .filter(|p| !p.to_ascii_lowercase().starts_with("q="))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            AcceptItem { media, q, text }
        })
        .collect();
    // Stable, so equal q-values keep the client's order.
    items.sort_by(|a, b| b.q.total_cmp(&a.q));
    items
}

/// Picks the first acceptable media type `offers` allows; `*/*` (or no `Accept` at all)
/// gives `default`. Nothing acceptable is `PGRST107`.
pub fn negotiate(
    items: &[AcceptItem],
    offers: impl Fn(&MediaType) -> bool,
    default: MediaType,
) -> Result<MediaType, ParseError> {
    if items.is_empty() {
        return Ok(default);
    }
    for item in items.iter().filter(|i| i.q > 0.0) {
        if item.media == MediaType::Any {
            return Ok(default);
        }
        if offers(&item.media) {
            return Ok(item.media.clone());
        }
    }
    Err(ParseError::MediaType(
        items.iter().map(|i| i.text.clone()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &MediaType) -> bool {
        true
    }

    fn json_csv(m: &MediaType) -> bool {
        matches!(m, MediaType::Json | MediaType::Csv)
    }

    #[test]
    fn media_types_table() {
        let cases = [
            ("application/json", MediaType::Json),
            ("application/json; charset=utf-8", MediaType::Json),
            ("APPLICATION/JSON", MediaType::Json),
            ("application/geo+json", MediaType::GeoJson),
            ("text/csv", MediaType::Csv),
            ("text/csv; version=1", MediaType::Csv),
            ("text/plain", MediaType::TextPlain),
            ("text/xml", MediaType::TextXml),
            ("application/octet-stream", MediaType::OctetStream),
            ("application/openapi+json", MediaType::OpenApi),
            (
                "application/x-www-form-urlencoded",
                MediaType::FormUrlEncoded,
            ),
            (
                "application/vnd.pgrst.object+json",
                MediaType::Object {
                    nulls_stripped: false,
                },
            ),
            (
                "application/vnd.pgrst.object",
                MediaType::Object {
                    nulls_stripped: false,
                },
            ),
            (
                "application/vnd.pgrst.object+json;nulls=stripped",
                MediaType::Object {
                    nulls_stripped: true,
                },
            ),
            (
                "application/vnd.pgrst.array+json;nulls=stripped",
                MediaType::ArrayStripped,
            ),
            ("application/vnd.pgrst.array+json", MediaType::Json),
            (
                "application/vnd.pgrst.plan",
                MediaType::Plan {
                    json: false,
                    for_media: None,
                    options: vec![],
                },
            ),
            (
                "application/vnd.pgrst.plan+json; for=\"application/json\"; options=analyze|verbose|buffers",
                MediaType::Plan {
                    json: true,
                    for_media: Some("application/json".into()),
                    options: vec![PlanOption::Analyze, PlanOption::Verbose, PlanOption::Buffers],
                },
            ),
            (
                "application/vnd.pgrst.plan+text; options=settings|wal",
                MediaType::Plan {
                    json: false,
                    for_media: None,
                    options: vec![PlanOption::Settings, PlanOption::Wal],
                },
            ),
            ("*/*", MediaType::Any),
            ("application/*", MediaType::Any),
            ("text/unknowntype", MediaType::Other("text/unknowntype".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_media_type(raw).0, want, "{raw}");
        }
    }

    #[test]
    fn q_values_order_the_items() {
        let items = parse_accept([
            "text/csv;q=0.5, application/json;q=0.9",
            "application/geo+json",
        ]);
        let order: Vec<_> = items.iter().map(|i| i.media.clone()).collect();
        assert_eq!(
            order,
            vec![MediaType::GeoJson, MediaType::Json, MediaType::Csv]
        );
        assert_eq!(items[2].text, "text/csv");
        // q=0 means "not acceptable"; a garbage q counts as 1.
        let items = parse_accept(["application/json;q=0, text/csv;q=abc"]);
        assert_eq!(items[0].media, MediaType::Csv);
        assert_eq!(items[1].q, 0.0);
        assert_eq!(negotiate(&items, all, MediaType::Json), Ok(MediaType::Csv));
        let items = parse_accept(["application/json;q=0"]);
        assert!(negotiate(&items, all, MediaType::Json).is_err());
        let items = parse_accept(["*/*;q=0"]);
        assert!(negotiate(&items, all, MediaType::Json).is_err());
    }

    #[test]
    fn negotiation() {
        let pick = |accept: &str| negotiate(&parse_accept([accept]), json_csv, MediaType::Json);
        assert_eq!(pick(""), Ok(MediaType::Json));
        assert_eq!(pick("*/*"), Ok(MediaType::Json));
        assert_eq!(pick("text/csv"), Ok(MediaType::Csv));
        assert_eq!(pick("text/unknowntype, */*"), Ok(MediaType::Json));
        assert_eq!(pick("text/csv, */*"), Ok(MediaType::Csv));
        assert_eq!(pick("text/csv, application/json"), Ok(MediaType::Csv));
        assert_eq!(
            pick("text/csv;q=0.1, application/json"),
            Ok(MediaType::Json)
        );
        assert_eq!(pick("text/unknowntype, text/csv"), Ok(MediaType::Csv));
        let e = pick("text/unknowntype").unwrap_err();
        assert_eq!(e.code(), "PGRST107");
        assert_eq!(e.status(), 406);
        assert_eq!(
            e.message(),
            "None of these media types are available: text/unknowntype"
        );
        let e = pick("text/xml, image/png;q=0.5").unwrap_err();
        assert_eq!(
            e.message(),
            "None of these media types are available: text/xml, image/png"
        );
        assert_eq!(
            negotiate(&parse_accept(["text/xml"]), all, MediaType::Json),
            Ok(MediaType::TextXml)
        );
    }

    #[test]
    fn mime_round_trip() {
        for m in [
            MediaType::Json,
            MediaType::GeoJson,
            MediaType::Csv,
            MediaType::Object {
                nulls_stripped: true,
            },
            MediaType::ArrayStripped,
        ] {
            assert_eq!(parse_media_type(&m.mime()).0, m);
        }
    }
}
