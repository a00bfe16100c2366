//! The route registry: every HTTP route is declared here once (method, path template,
//! handler, documentation), and `app.rs` mounts from it, `/openapi.json` is generated from
//! it, and metrics label requests with its templates. A route cannot be mounted without
//! being documented.

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Resource, Responder};
use std::sync::Arc;

/// Who may call a route (documented in OpenAPI; enforced by the handler's extractor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Public,
    /// `apikey`/Bearer token decides the role (anon without one).
    Key,
    /// Only the service_role (`ServiceRole` extractor).
    ServiceRole,
}

type Mount = Arc<dyn Fn(Resource) -> Resource + Send + Sync>;

/// One declared route.
#[derive(Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// actix path template (`/api/v1/jobs/{id}`).
    pub path: &'static str,
    /// OpenAPI tag (module).
    pub tag: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Access rule.
    pub access: Access,
    mount: Mount,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// All routes of the app, in mounting order.
#[derive(Clone, Default)]
pub struct Registry {
    routes: Vec<Route>,
}

impl Registry {
    /// Declares a route.
    pub fn add<F, Args>(
        &mut self,
        method: Method,
        path: &'static str,
        tag: &'static str,
        summary: &'static str,
        access: Access,
        handler: F,
    ) where
        F: Handler<Args> + Send + Sync,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let m = method.clone();
        self.routes.push(Route {
            method,
            path,
            tag,
            summary,
            access,
            mount: Arc::new(move |r: Resource| r.route(web::method(m.clone()).to(handler.clone()))),
        });
    }

    /// The declared routes.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Mounts every route: one actix resource per path (so methods of one path share it and
    /// other methods get a 405), with `default` answering unsupported methods.
    pub fn mount<D, DArgs>(&self, cfg: &mut web::ServiceConfig, method_not_allowed: D)
    where
        D: Handler<DArgs> + Send + Sync,
        DArgs: FromRequest + 'static,
        D::Output: Responder + 'static,
    {
        let mut paths: Vec<&'static str> = Vec::new();
        for r in &self.routes {
            if !paths.contains(&r.path) {
                paths.push(r.path);
            }
        }
        for p in paths {
            let mut res = web::resource(p)
                .app_data(RouteTemplate(p))
                .default_service(web::to(method_not_allowed.clone()));
            for r in self.routes.iter().filter(|r| r.path == p) {
                res = (r.mount)(res);
            }
            cfg.service(res);
        }
    }
}

/// The template of the resource a request matched, kept as resource data so the
/// middleware can label metrics and logs without `HttpRequest::match_pattern`, which walks
/// the router's patterns (regexes) a second time.
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

/// Whether `path` is `prefix` or lies under it (`/auth/v1` covers `/auth/v1/token`, not
/// `/auth/v1x`). Every place that groups requests by path prefix uses this one test; it
/// allocates nothing, since it runs on every request.
pub fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The OpenAPI form of an actix template: `{tail:.*}` → `{tail}`.
pub fn openapi_path(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_param = false;
    let mut skipping = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push(c);
            }
            ':' if in_param => skipping = true,
            '}' if in_param => {
                in_param = false;
                skipping = false;
                out.push(c);
            }
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out
}

/// Names of the `{params}` in a template.
pub fn path_params(template: &str) -> Vec<String> {
    openapi_path(template)
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(n, _)| n.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(under("/auth/v1", "/auth/v1"));
        assert!(under("/auth/v1/token", "/auth/v1"));
        assert!(!under("/auth/v1x", "/auth/v1"));
        assert!(!under("/rest", "/rest/v1"));
    }

    #[test]
    fn templates() {
        assert_eq!(openapi_path("/a/{id}/b/{tail:.*}"), "/a/{id}/b/{tail}");
        assert_eq!(path_params("/a/{id}/b/{tail:.*}"), vec!["id", "tail"]);
        assert!(path_params("/health").is_empty());
    }
}
