//! Where a sign-in may send the browser back to: `auth.site_url`, any URL under it, and the
//! entries of `auth.redirect_allow_list` (exact URLs, URLs under them, or globs). Anything
//! else falls back to the site URL, as GoTrue does, so tokens never travel to a stranger.

use crate::config::AuthConfig;

/// Longest `redirect_to` considered (globs backtrack; URLs this long are not real ones).
const MAX_URL_LEN: usize = 2048;

/// `redirect_to` when it is allowed, else the site URL.
pub fn checked(cfg: &AuthConfig, redirect_to: Option<&str>) -> String {
    match redirect_to.map(str::trim).filter(|s| !s.is_empty()) {
        Some(r) if allowed(cfg, r) => r.to_string(),
        _ => cfg.site_url.clone(),
    }
}

/// Whether `url` may receive tokens.
pub fn allowed(cfg: &AuthConfig, url: &str) -> bool {
    if url.len() > MAX_URL_LEN {
        return false;
    }
    // An absolute URL without credentials: `https://app@evil.example` is refused even when
    // a careless prefix would admit it.
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return false;
    }
    under(url, &cfg.site_url)
        || cfg.redirect_allow_list.iter().any(|entry| {
            if entry.contains('*') {
                glob(entry.as_bytes(), url.as_bytes())
            } else {
                under(url, entry)
            }
        })
}

/// `url` is `base` or lies under it: the next character after the prefix must end the
/// origin or a path segment (`/`, `?`, `#`), so `https://app.test.evil.example` is not under
/// `https://app.test`.
fn under(url: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return false;
    }
    match url.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', '?', '#']),
        None => false,
    }
}

/// Characters one `*` never crosses: label and segment separators, and everything that
/// would end the host or start another URL part.
const SEPARATORS: &[u8] = b"./?#@:";

/// `*` matches within one host label or path segment, `**` matches anything.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        [b'*', rest @ ..] => {
            for i in 0..=s.len() {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && SEPARATORS.contains(&s[i]) {
                    return false;
                }
            }
            false
        }
        [c, rest @ ..] => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(list: &[&str]) -> AuthConfig {
        AuthConfig {
            site_url: "http://app.test".into(),
            redirect_allow_list: list.iter().map(|s| s.to_string()).collect(),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn site_url_and_paths_under_it() {
        let c = cfg(&[]);
        assert!(allowed(&c, "http://app.test"));
        assert!(allowed(&c, "http://app.test/welcome?x=1#y"));
        assert!(!allowed(&c, "http://app.test.evil.example/"));
        assert!(!allowed(&c, "http://app.test@evil.example/"));
        assert!(!allowed(&c, "https://evil.example/?http://app.test"));
        assert!(!allowed(&c, "not a url"));
        assert_eq!(
            checked(&c, Some("https://evil.example/")),
            "http://app.test"
        );
        assert_eq!(checked(&c, None), "http://app.test");
        assert_eq!(
            checked(&c, Some("http://app.test/cb")),
            "http://app.test/cb"
        );
    }

    #[test]
    fn allow_list_entries_and_globs() {
        let c = cfg(&[
            "https://other.example/cb",
            "https://*.preview.example/**",
            "myapp://callback",
        ]);
        assert!(allowed(&c, "https://other.example/cb"));
        assert!(allowed(&c, "https://other.example/cb/deeper?q=1"));
        assert!(!allowed(&c, "https://other.example/cbx"));
        assert!(allowed(&c, "https://pr-42.preview.example/auth/done"));
        assert!(
            !allowed(&c, "https://a.b.preview.example/x"),
            "* is one label"
        );
        assert!(!allowed(&c, "https://evil.example?.preview.example/x"));
        assert!(!allowed(&c, "https://evil.example#.preview.example/x"));
        assert!(
            !allowed(&c, "https://x@y.preview.example/"),
            "no credentials"
        );
        assert!(allowed(&c, "myapp://callback"));
        assert!(!allowed(&c, "https://evil.example/"));
        let long = format!("https://pr.preview.example/{}", "a".repeat(3000));
        assert!(!allowed(&c, &long));
    }
}
