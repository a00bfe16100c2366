//! The route registry: every HTTP route is declared here once (method, path template,
//! handler, documentation), and `app.rs` mounts from it, `/openapi.json` is generated from
//! it, and metrics label requests with its templates. A route cannot be mounted without
//! being documented.

use actix_web::dev::{
    fn_factory, fn_service, Service, ServiceFactory, ServiceRequest, ServiceResponse,
};
use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Resource, Responder};
use std::rc::Rc;
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

/// Builds the actix route (method guard + handler) of a declared route; called once per
/// worker when the app is mounted.
type MakeRoute = Arc<dyn Fn() -> actix_web::Route + Send + Sync>;

/// The suffix of a template that takes the whole rest of the path (`/rest/v1/{tail:.*}`).
/// Such a template with a static prefix is mounted as a scope on that prefix: actix matches
/// a static prefix by string comparison, while a dynamic pattern runs a regex with captures
/// on every request (~11k instructions per REST request in a callgrind profile).
const TAIL: &str = "/{tail:.*}";

/// The static prefix of a tail template (`/rest/v1` of `/rest/v1/{tail:.*}`), if it has one.
fn static_tail_prefix(template: &str) -> Option<&str> {
    template
        .strip_suffix(TAIL)
        .filter(|p| !p.is_empty() && !p.contains('{'))
}

/// The part of the path a tail route matched: the `tail` capture, or what a tail scope left
/// unprocessed, without its leading `/`.
pub fn tail(req: &actix_web::HttpRequest) -> &str {
    let info = req.match_info();
    match info.get("tail") {
        Some(t) => t,
        None => info.unprocessed().trim_start_matches('/'),
    }
}

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
    make: MakeRoute,
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
            make: Arc::new(move || web::method(m.clone()).to(handler.clone())),
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
            let routes = self.routes.iter().filter(|r| r.path == p);
            if let Some(prefix) = static_tail_prefix(p) {
                let makers: Vec<MakeRoute> = routes.map(|r| r.make.clone()).collect();
                cfg.service(
                    web::scope(prefix)
                        .app_data(RouteTemplate(p))
                        .default_service(by_method(makers, method_not_allowed.clone())),
                );
                continue;
            }
            let mut res: Resource = web::resource(p)
                .app_data(RouteTemplate(p))
                .default_service(web::to(method_not_allowed.clone()));
            for r in routes {
                res = res.route((r.make)());
            }
            cfg.service(res);
        }
    }
}

/// A service that hands a request to the first route whose guards (the method) accept it,
/// else to `fallback`: what an actix `Resource` does, for a scope's default service.
fn by_method<D, DArgs>(
    makers: Vec<MakeRoute>,
    fallback: D,
) -> impl ServiceFactory<
    ServiceRequest,
    Config = (),
    Response = ServiceResponse,
    Error = actix_web::Error,
    InitError = (),
> + 'static
where
    D: Handler<DArgs> + Send + Sync,
    DArgs: FromRequest + 'static,
    D::Output: Responder + 'static,
{
    fn_factory(move || {
        let routes: Vec<actix_web::Route> = makers.iter().map(|m| m()).collect();
        let fallback = web::to(fallback.clone());
        async move {
            let mut services = Vec::with_capacity(routes.len());
            for r in &routes {
                services.push(r.new_service(()).await?);
            }
            let fallback = Rc::new(fallback.new_service(()).await?);
            let services = Rc::new(services);
            Ok(fn_service(move |mut req: ServiceRequest| {
                let services = services.clone();
                let fallback = fallback.clone();
                async move {
                    match services.iter().find(|s| s.check(&mut req)) {
                        Some(s) => s.call(req).await,
                        None => fallback.call(req).await,
                    }
                }
            }))
        }
    })
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
