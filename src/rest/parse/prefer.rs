//! The `Prefer` header (RFC 7240) with PostgREST's preferences.
//!
//! Several `Prefer` headers and comma-separated lists are read as one list. The first
//! occurrence of a preference wins (RFC 7240 §2); later ones are ignored. Unknown tokens and
//! invalid values are kept in [`Preferences::invalid`]: `handling=strict` turns them into
//! `PGRST122`, `handling=lenient` (the default) ignores them.

use super::error::ParseError;

/// `return=`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPref {
    /// `return=minimal`: no body.
    Minimal,
    /// `return=headers-only`: no body, but `Location`.
    HeadersOnly,
    /// `return=representation`: the affected rows.
    Representation,
}

/// `count=`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountPref {
    /// `count=exact`: `count(*)`.
    Exact,
    /// `count=planned`: the planner's estimate.
    Planned,
    /// `count=estimated`: exact up to `max_rows`, planned beyond.
    Estimated,
}

/// `resolution=` (upsert on conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// `resolution=merge-duplicates`: `ON CONFLICT DO UPDATE`.
    MergeDuplicates,
    /// `resolution=ignore-duplicates`: `ON CONFLICT DO NOTHING`.
    IgnoreDuplicates,
}

/// `missing=`: what columns absent from a payload get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// `missing=default`: the column default.
    Default,
    /// `missing=null`: NULL (PostgREST's behaviour without the preference).
    Null,
}

/// `handling=`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// `handling=strict`: invalid preferences are an error.
    Strict,
    /// `handling=lenient`: invalid preferences are ignored.
    Lenient,
}

/// `tx=`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxEnd {
    /// `tx=commit`
    Commit,
    /// `tx=rollback`: run everything, then roll back.
    Rollback,
}

/// `params=` (RPC body handling, PostgREST ≤ 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamsPref {
    /// `params=single-object`: the whole JSON body is the function's one argument.
    SingleObject,
    /// `params=multiple-objects`: a JSON array calls the function once per element.
    MultipleObjects,
}

/// Everything the `Prefer` headers asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preferences {
    /// `return=`
    pub return_: Option<ReturnPref>,
    /// `count=`
    pub count: Option<CountPref>,
    /// `resolution=`
    pub resolution: Option<Resolution>,
    /// `missing=`
    pub missing: Option<Missing>,
    /// `handling=`
    pub handling: Option<Handling>,
    /// `tx=`
    pub tx: Option<TxEnd>,
    /// `max-affected=N`
    pub max_affected: Option<u64>,
    /// `params=`
    pub params: Option<ParamsPref>,
    /// `timezone=`: kept as sent; whether Postgres knows it is checked where the
    /// timezone list is (`pg_timezone_names`), not here.
    pub timezone: Option<String>,
    /// The recognised tokens, normalised (`count=exact`), in the order given: the renderer
    /// echoes those it honoured in `Preference-Applied`.
    pub recognised: Vec<String>,
    /// Unknown tokens and invalid values, as sent.
    pub invalid: Vec<String>,
}

impl Preferences {
    /// Whether `handling=strict` was asked for.
    pub fn strict(&self) -> bool {
        self.handling == Some(Handling::Strict)
    }
}

/// Parses every `Prefer` header value. With `handling=strict`, any unknown or invalid token
/// is `PGRST122`.
pub fn parse_preferences<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Preferences, ParseError> {
    let mut p = Preferences::default();
    for token in values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (token, ""),
        };
        let recognised = match key {
            "return" => set(
                &mut p.return_,
                match value {
                    "minimal" => Some(ReturnPref::Minimal),
                    "headers-only" => Some(ReturnPref::HeadersOnly),
                    "representation" => Some(ReturnPref::Representation),
                    _ => None,
                },
            ),
            "count" => set(
                &mut p.count,
                match value {
                    "exact" => Some(CountPref::Exact),
                    "planned" => Some(CountPref::Planned),
                    "estimated" => Some(CountPref::Estimated),
                    _ => None,
                },
            ),
            "resolution" => set(
                &mut p.resolution,
                match value {
                    "merge-duplicates" => Some(Resolution::MergeDuplicates),
                    "ignore-duplicates" => Some(Resolution::IgnoreDuplicates),
                    _ => None,
                },
            ),
            "missing" => set(
                &mut p.missing,
                match value {
                    "default" => Some(Missing::Default),
                    "null" => Some(Missing::Null),
                    _ => None,
                },
            ),
            "handling" => set(
                &mut p.handling,
                match value {
                    "strict" => Some(Handling::Strict),
                    "lenient" => Some(Handling::Lenient),
                    _ => None,
                },
            ),
            "tx" => set(
                &mut p.tx,
                match value {
                    "commit" => Some(TxEnd::Commit),
                    "rollback" => Some(TxEnd::Rollback),
                    _ => None,
                },
            ),
            "max-affected" => set(
                &mut p.max_affected,
                // Digits only: `+5` or ` 5` are not what a client meant to send.
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    value.parse().ok()
                } else {
                    None
                },
            ),
            "params" => set(
                &mut p.params,
                match value {
                    "single-object" => Some(ParamsPref::SingleObject),
                    "multiple-objects" => Some(ParamsPref::MultipleObjects),
                    _ => None,
                },
            ),
            "timezone" => set(
                &mut p.timezone,
                (!value.is_empty()).then(|| value.to_string()),
            ),
            _ => Outcome::Invalid,
        };
        match recognised {
            Outcome::Recognised => p.recognised.push(format!("{key}={value}")),
            Outcome::Invalid => p.invalid.push(token.to_string()),
            Outcome::Repeated => {}
        }
    }
    if p.strict() && !p.invalid.is_empty() {
        return Err(ParseError::InvalidPreferences(p.invalid));
    }
    Ok(p)
}

enum Outcome {
    Recognised,
    Invalid,
    Repeated,
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) -> Outcome {
    match value {
        None => Outcome::Invalid,
        Some(_) if slot.is_some() => Outcome::Repeated,
        Some(v) => {
            *slot = Some(v);
            Outcome::Recognised
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(values: &[&str]) -> Result<Preferences, ParseError> {
        parse_preferences(values.iter().copied())
    }

    #[test]
    fn every_preference_and_value() {
        let p = prefs(&[
            "return=representation, count=exact, resolution=merge-duplicates, missing=default",
            "handling=lenient,tx=rollback, max-affected=5, params=single-object, timezone=America/Los_Angeles",
        ])
        .unwrap();
        assert_eq!(p.return_, Some(ReturnPref::Representation));
        assert_eq!(p.count, Some(CountPref::Exact));
        assert_eq!(p.resolution, Some(Resolution::MergeDuplicates));
        assert_eq!(p.missing, Some(Missing::Default));
        assert_eq!(p.handling, Some(Handling::Lenient));
        assert_eq!(p.tx, Some(TxEnd::Rollback));
        assert_eq!(p.max_affected, Some(5));
        assert_eq!(p.params, Some(ParamsPref::SingleObject));
        assert_eq!(p.timezone.as_deref(), Some("America/Los_Angeles"));
        assert_eq!(
            p.recognised,
            vec![
                "return=representation",
                "count=exact",
                "resolution=merge-duplicates",
                "missing=default",
                "handling=lenient",
                "tx=rollback",
                "max-affected=5",
                "params=single-object",
                "timezone=America/Los_Angeles",
            ]
        );
        assert!(p.invalid.is_empty());
    }

    type Check = fn(&Preferences) -> bool;

    #[test]
    fn single_values_table() {
        let cases: &[(&str, Check)] = &[
            ("return=minimal", |p| p.return_ == Some(ReturnPref::Minimal)),
            ("return=headers-only", |p| {
                p.return_ == Some(ReturnPref::HeadersOnly)
            }),
            ("count=planned", |p| p.count == Some(CountPref::Planned)),
            ("count=estimated", |p| p.count == Some(CountPref::Estimated)),
            ("resolution=ignore-duplicates", |p| {
                p.resolution == Some(Resolution::IgnoreDuplicates)
            }),
            ("missing=null", |p| p.missing == Some(Missing::Null)),
            ("handling=strict", |p| p.strict()),
            ("tx=commit", |p| p.tx == Some(TxEnd::Commit)),
            ("max-affected=0", |p| p.max_affected == Some(0)),
            ("params=multiple-objects", |p| {
                p.params == Some(ParamsPref::MultipleObjects)
            }),
        ];
        for (h, check) in cases {
            let p = prefs(&[h]).unwrap();
            assert!(check(&p), "{h}: {p:?}");
            assert_eq!(p.recognised, vec![h.to_string()]);
        }
    }

    #[test]
    fn first_occurrence_wins_and_repeats_are_not_invalid() {
        let p = prefs(&[
            "return=minimal",
            "return=representation, count=exact,count=planned",
        ])
        .unwrap();
        assert_eq!(p.return_, Some(ReturnPref::Minimal));
        assert_eq!(p.count, Some(CountPref::Exact));
        assert_eq!(p.recognised, vec!["return=minimal", "count=exact"]);
        assert!(p.invalid.is_empty());
    }

    #[test]
    fn lenient_keeps_invalid_tokens_aside() {
        let p = prefs(&["foo, return=everything, max-affected=-1, max-affected=x, bar=1, count"])
            .unwrap();
        assert_eq!(
            p.invalid,
            vec![
                "foo",
                "return=everything",
                "max-affected=-1",
                "max-affected=x",
                "bar=1",
                "count"
            ]
        );
        assert!(p.recognised.is_empty());
        let p = prefs(&["handling=lenient, foo, bar"]).unwrap();
        assert_eq!(p.invalid, vec!["foo", "bar"]);
    }

    #[test]
    fn strict_rejects_invalid_tokens_in_order() {
        let e = prefs(&["handling=strict, foo, bar"]).unwrap_err();
        assert_eq!(
            e,
            ParseError::InvalidPreferences(vec!["foo".into(), "bar".into()])
        );
        assert_eq!(
            e.details().as_deref(),
            Some("Invalid preferences: foo, bar")
        );
        // Strict applies to tokens before it as well, and across headers.
        let e = prefs(&["anything", "handling=strict"]).unwrap_err();
        assert_eq!(e, ParseError::InvalidPreferences(vec!["anything".into()]));
        let e = prefs(&["return=representation, handling=strict, tx=maybe"]).unwrap_err();
        assert_eq!(e, ParseError::InvalidPreferences(vec!["tx=maybe".into()]));
        assert!(prefs(&["handling=strict, return=minimal"]).is_ok());
    }

    #[test]
    fn empty_tokens_and_whitespace_are_ignored() {
        let p = prefs(&[" return = minimal ,, ", ""]).unwrap();
        assert_eq!(p.return_, Some(ReturnPref::Minimal));
        assert!(p.invalid.is_empty());
        assert_eq!(prefs(&[]).unwrap(), Preferences::default());
    }
}
