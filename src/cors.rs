//! CORS for every route (`server.cors.*`), applied by the outermost middleware
//! (`app::observe`) rather than by a middleware layer of its own.
//!
//! What it answers: a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! from an allowed origin gets 200 with the origin echoed, every method, the requested
//! headers, `Access-Control-Max-Age` and (`allow_credentials`) `Access-Control-Allow-
//! Credentials`; an actual request from an allowed origin gets the origin echoed and every
//! header of the response exposed; a preflight from an origin that is not allowed is refused
//! with 400, and an actual request from one is served without CORS headers (so the browser
//! does not let the page read it; servers that forward an `Origin` keep working), as the
//! actix-cors middleware used before did; a request without `Origin` (not from a browser
//! page) only gets `Vary`, so caches keep answers per origin apart. Why not a CORS middleware crate: the one used before built the
//! exposed-header list (a set of every response header name) on every response, also for
//! requests without `Origin`, where no browser reads it — ~5% of a single-row GET's
//! instructions.
//!
//! Must not: echo an origin that is not allowed, or combine credentials with `*` (the config
//! check refuses that).

use crate::config::CorsConfig;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;

const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";

/// The CORS policy, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    credentials: bool,
    max_age: HeaderValue,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// No `Origin`, or one that is not allowed on an actual request: serve it; only `Vary`
    /// is added.
    NoOrigin,
    /// An allowed origin: serve it, then add the CORS headers with this origin.
    Allowed(HeaderValue),
    /// A preflight from an allowed origin: answered with these headers, no handler runs.
    Preflight(HeaderMap),
    /// A preflight from an origin that is not allowed: refused (400).
    Refused,
}

impl Cors {
    pub fn new(c: &CorsConfig) -> Cors {
        Cors {
            any_origin: c.allowed_origins.iter().any(|o| o == "*"),
            origins: c.allowed_origins.clone(),
            credentials: c.allow_credentials,
            max_age: HeaderValue::from(c.max_age_secs),
        }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || origin
                .to_str()
                .is_ok_and(|o| self.origins.iter().any(|a| a == o))
    }

    /// Decides from the request's method and headers.
    pub fn decide(&self, method: &Method, headers: &HeaderMap) -> Decision {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Decision::NoOrigin;
        };
        let preflight = method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        match (self.allows(origin), preflight) {
            (false, true) => return Decision::Refused,
            (false, false) => return Decision::NoOrigin,
            (true, false) => return Decision::Allowed(origin.clone()),
            (true, true) => {}
        }
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        add_vary(&mut h);
        Decision::Preflight(h)
    }

    /// Adds the response headers of an actual request: `origin` is the allowed origin, or
    /// `None` for a request without one.
    pub fn finish(&self, origin: Option<HeaderValue>, h: &mut HeaderMap) {
        if let Some(origin) = origin {
            // Every header of the response, as the browser may read it (names are unique
            // keys of the map).
            let mut names = String::with_capacity(256);
            for k in h.keys() {
                if !names.is_empty() {
                    names.push_str(", ");
                }
                names.push_str(k.as_str());
            }
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            if let Ok(v) = HeaderValue::from_str(&names) {
                if !names.is_empty() {
                    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
                }
            }
            if self.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        add_vary(h);
    }
}

/// Adds the CORS request headers to `Vary`, after any the response already varies by.
fn add_vary(h: &mut HeaderMap) {
    let v = match h.get(header::VARY).map(|v| v.as_bytes()) {
        Some(old) if !old.is_empty() => {
            let mut b = Vec::with_capacity(old.len() + 2 + VARY.len());
            b.extend_from_slice(old);
            b.extend_from_slice(b", ");
            b.extend_from_slice(VARY.as_bytes());
            HeaderValue::from_bytes(&b).unwrap_or(HeaderValue::from_static(VARY))
        }
        _ => HeaderValue::from_static(VARY),
    };
    h.insert(header::VARY, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    fn cfg(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            max_age_secs: 600,
        })
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn requests_without_origin_only_vary() {
        let c = cfg(&["*"], false);
        assert!(matches!(
            c.decide(&Method::GET, &headers(&[])),
            Decision::NoOrigin
        ));
        let mut h = headers(&[("content-type", "application/json")]);
        c.finish(None, &mut h);
        assert_eq!(h.get("vary").unwrap(), VARY);
        assert!(h.get("access-control-allow-origin").is_none());
        assert!(h.get("access-control-expose-headers").is_none());
        // An existing Vary is kept in front.
        let mut h = headers(&[("vary", "Accept-Encoding")]);
        c.finish(None, &mut h);
        assert_eq!(
            h.get("vary").unwrap(),
            &format!("Accept-Encoding, {VARY}")[..]
        );
    }

    #[test]
    fn allowed_origins_are_echoed_with_every_header_exposed() {
        let c = cfg(&["http://ok.test"], true);
        let d = c.decide(&Method::POST, &headers(&[("origin", "http://ok.test")]));
        let Decision::Allowed(origin) = d else {
            panic!("{d:?}")
        };
        let mut h = headers(&[("content-range", "0-0/*"), ("x-request-id", "r")]);
        c.finish(Some(origin), &mut h);
        assert_eq!(
            h.get("access-control-allow-origin").unwrap(),
            "http://ok.test"
        );
        let exposed = h
            .get("access-control-expose-headers")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(exposed.contains("content-range") && exposed.contains("x-request-id"));
        assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
        // Another origin: served without CORS headers; its preflight is refused.
        assert!(matches!(
            c.decide(&Method::GET, &headers(&[("origin", "http://evil.test")])),
            Decision::NoOrigin
        ));
        assert!(matches!(
            c.decide(
                &Method::OPTIONS,
                &headers(&[
                    ("origin", "http://evil.test"),
                    ("access-control-request-method", "GET")
                ])
            ),
            Decision::Refused
        ));
        // Any origin: echoed, never `*`.
        let any = cfg(&["*"], false);
        let Decision::Allowed(o) =
            any.decide(&Method::GET, &headers(&[("origin", "http://x.test")]))
        else {
            panic!()
        };
        assert_eq!(o, "http://x.test");
    }

    #[test]
    fn preflights_are_answered() {
        let c = cfg(&["*"], false);
        let d = c.decide(
            &Method::OPTIONS,
            &headers(&[
                ("origin", "http://a.test"),
                ("access-control-request-method", "PATCH"),
                (
                    "access-control-request-headers",
                    "apikey, authorization, x-client-info",
                ),
            ]),
        );
        let Decision::Preflight(h) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            h.get("access-control-allow-origin").unwrap(),
            "http://a.test"
        );
        assert!(h
            .get("access-control-allow-methods")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("PATCH"));
        assert_eq!(
            h.get("access-control-allow-headers").unwrap(),
            "apikey, authorization, x-client-info"
        );
        assert_eq!(h.get("access-control-max-age").unwrap(), "600");
        assert!(h.get("access-control-allow-credentials").is_none());
        // OPTIONS without Access-Control-Request-Method is an ordinary request.
        assert!(matches!(
            c.decide(&Method::OPTIONS, &headers(&[("origin", "http://a.test")])),
            Decision::Allowed(_)
        ));
    }
}
