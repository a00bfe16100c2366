//! Builds `AppState` and mounts every module's routes in ONE visible place, with the
//! middleware every request passes: request id, body limit, metrics, access log, error
//! rendering per surface, security headers and CORS.

use crate::auth::jwt::JwtKeys;
use crate::config::Config;
use crate::error::{ApiError, ErrorCode, Surface};
use crate::metrics::{Metrics, UNMATCHED};
use crate::routes::Registry;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use std::sync::Arc;
use std::time::Instant;

/// Shared state of one server process. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Connection pool (as the database owner; requests switch role per transaction).
    pub pool: deadpool_postgres::Pool,
    /// The request hot path's pipelining client (`db::wire`), same database and bounds;
    /// `None` when the connection settings need TLS, which only the main pool speaks.
    pub wire: Option<crate::db::wire::Pool>,
    /// JWT signing/verification keys.
    pub jwt: JwtKeys,
    /// Prometheus collectors.
    pub metrics: Arc<Metrics>,
    /// Versions of the migrations this binary embeds (readiness checks them).
    pub migration_versions: Arc<Vec<String>>,
    /// The route part of the OpenAPI document, rendered once at start-up; `/openapi.json`
    /// merges in the table and RPC paths of the current schema cache.
    pub openapi_json: Arc<String>,
    /// Issue time of the anon/service_role keys (they are deterministic given it).
    pub keys_issued_at: i64,
    /// Whether the database is the managed local Postgres.
    pub managed_database: bool,
    /// Process start.
    pub started_at: Instant,
    /// Connection settings for dedicated (non-pooled) connections: LISTEN, cron leader.
    pub pg_config: tokio_postgres::Config,
    /// The process's one LISTEN connection (schema reloads, realtime, job wake-ups).
    pub listener: crate::db::listen::Listener,
    /// The SSRF-guarded outbound HTTP client.
    pub outbound: crate::outbound::Outbound,
    /// Rate limiters of this process.
    pub rate_limits: Arc<crate::ratelimit::RateLimiters>,
    /// Job metrics.
    pub jobs_metrics: Arc<crate::jobs::JobMetrics>,
    /// The schema cache of the REST engine.
    pub schema: Arc<crate::schema::SchemaHolder>,
    /// Where "now" comes from for schedules (tests inject their own).
    pub clock: Arc<dyn crate::jobs::cron::Clock>,
    /// The realtime service (`None` when `realtime.enabled` is off).
    pub realtime: Option<Arc<crate::realtime::Realtime>>,
    /// The storage byte store (`None` when `storage.enabled` is off).
    pub storage: Option<crate::storage::Backend>,
    /// Trace export (`None` unless `otlp.endpoint` is set).
    pub otlp: Option<Arc<crate::otlp::Tracer>>,
    /// The CORS policy (`server.cors`), applied by `observe`.
    pub cors: Arc<crate::cors::Cors>,
    /// Headers every response gets unless it set them itself (`security_headers`).
    pub security_headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

/// The security headers of every response, added by `observe` when the response does not
/// set them itself: no sniffing, no framing, origin-only referrers, and HSTS when this server
/// terminates TLS (`server.tls.hsts_max_age_secs`). (An actix `DefaultHeaders` layer did
/// this before; one layer less per request.)
pub fn security_headers(cfg: &Config) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = vec![
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ),
    ];
    if cfg.server.tls.enabled() && cfg.server.tls.hsts_max_age_secs > 0 {
        let v = format!(
            "max-age={}; includeSubDomains",
            cfg.server.tls.hsts_max_age_secs
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.push((HeaderName::from_static("strict-transport-security"), v));
        }
    }
    h
}

/// Every route of the server. Modules declare theirs in `configure`.
pub fn registry() -> Registry {
    let mut reg = Registry::default();
    // The busiest surfaces first: the router tries patterns in this order.
    crate::ops::configure(&mut reg);
    crate::rest::configure(&mut reg);
    crate::auth::api::configure(&mut reg);
    crate::realtime::configure(&mut reg);
    crate::jobs::configure(&mut reg);
    crate::audit::configure(&mut reg);
    crate::auth::api_keys::configure(&mut reg);
    crate::storage::configure(&mut reg);
    crate::webhooks::api::configure(&mut reg);
    crate::monitoring::configure(&mut reg);
    reg
}

/// Content-Security-Policy of everything under `/admin` (the admin SPA): only this origin's
/// scripts, styles, images (and data: URIs), API calls and websockets; no inline script, no
/// plugins, no framing, no foreign form targets.
pub const ADMIN_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// The request id of a request (set by the middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        // A v4 UUID from the thread's RNG: `Uuid::new_v4` asks the kernel (one `getrandom`
        // system call per request).
        .unwrap_or_else(|| {
            uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string()
        })
}

/// The outermost middleware: request id, early body-limit check, error rendering, metrics
/// and the access log.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let span = state.as_ref().and_then(|s| s.otlp.as_ref()).and_then(|t| {
        t.start_request(
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
        )
    });
    if let Some(s) = &span {
        req.extensions_mut().insert(s.parent.clone());
    }
    let limit = state
        .as_ref()
        .map(|s| s.config.server.body_limit_bytes)
        .unwrap_or(u64::MAX);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let rate = match &state {
        Some(s) => rate_check(s, &req).await,
        None => Ok(None),
    };
    let cors = state
        .as_ref()
        .map(|s| s.cors.decide(req.method(), req.headers()));
    let missing_key = state.as_ref().is_some_and(|s| {
        s.config.auth.require_apikey && needs_apikey(req.path()) && !has_apikey(&req)
    });
    let mut res = if let Some(crate::cors::Decision::Preflight(h)) = &cors {
        let (http_req, _) = req.into_parts();
        let mut resp = HttpResponse::Ok().finish();
        for (k, v) in h {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
        ServiceResponse::new(http_req, resp)
    } else if matches!(cors, Some(crate::cors::Decision::Refused)) {
        // A preflight from an origin that is not allowed.
        let (http_req, _) = req.into_parts();
        let err = ApiError::new(
            ErrorCode::BadRequest,
            "Origin is not allowed to make this request",
        );
        let resp = err.render(Surface::for_request(&http_req));
        ServiceResponse::new(http_req, resp)
    } else if missing_key {
        // Supabase's gateway (Kong) answers exactly this, before any service sees the request.
        let (http_req, _) = req.into_parts();
        let resp = HttpResponse::Unauthorized()
            .json(serde_json::json!({"message": "No API key found in request"}));
        ServiceResponse::new(http_req, resp)
    } else if declared.is_some_and(|n| n > limit)
        && !crate::storage::own_body_limit(req.method(), req.path())
    {
        let (http_req, _) = req.into_parts();
        let err = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("Request body is larger than {limit} bytes"),
        );
        let resp = err.render(Surface::for_request(&http_req));
        ServiceResponse::new(http_req, resp)
    } else if let Err(limited) = rate {
        let (http_req, _) = req.into_parts();
        let resp = limited.into_error().render(Surface::for_request(&http_req));
        ServiceResponse::new(http_req, resp)
    } else {
        let res = next.call(req).await?.map_into_boxed_body();
        rerender_error(res)
    };
    if let Ok(Some(info)) = rate {
        let h = res.headers_mut();
        for (k, v) in [
            ("x-ratelimit-limit", info.limit as u64),
            ("x-ratelimit-remaining", info.remaining as u64),
            ("x-ratelimit-reset", info.reset_secs),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from(v));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    if let Some(s) = &state {
        let h = res.headers_mut();
        for (k, v) in s.security_headers.iter() {
            if !h.contains_key(k) {
                h.insert(k.clone(), v.clone());
            }
        }
        match cors {
            Some(crate::cors::Decision::Allowed(origin)) => {
                s.cors.finish(Some(origin), res.headers_mut())
            }
            Some(crate::cors::Decision::Preflight(_)) => {}
            _ => s.cors.finish(None, res.headers_mut()),
        }
    }
    if crate::routes::under(res.request().path(), "/admin") {
        res.headers_mut().insert(
            actix_web::http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(ADMIN_CSP),
        );
    }
    // Borrowed where they can be (the common case: a registered route template): this runs
    // for every request.
    let route: std::borrow::Cow<'static, str> =
        match res.request().app_data::<crate::routes::RouteTemplate>() {
            Some(t) => t.0.into(),
            None => res
                .request()
                .match_pattern()
                .map_or(UNMATCHED.into(), Into::into),
        };
    let method = res.request().method().as_str();
    let status = res.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    if let Some(s) = state.as_ref().filter(|s| s.config.metrics.enabled) {
        s.metrics.observe_http(&route, method, status, secs);
    }
    if let Some(span) = span {
        span.finish(crate::otlp::RequestEnd {
            method,
            route: &route,
            path: res.request().path(),
            status,
            request_id: &id,
            client: res.request().peer_addr().map(|a| a.ip().to_string()),
        });
    }
    let quiet = matches!(&*route, "/health" | "/ready" | "/metrics");
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, %route, path = %res.request().path(), status, ms = secs * 1000.0, "request failed");
    } else if quiet {
        tracing::debug!(request_id = %id, %method, %route, status, ms = secs * 1000.0, "request");
    } else {
        tracing::info!(request_id = %id, %method, %route, status, ms = secs * 1000.0, "request");
    }
    Ok(res)
}

/// Whether a request presents an `apikey`: the header, or for websockets (which cannot set
/// headers from a browser) the `apikey` query parameter, as Supabase's gateway accepts it.
fn has_apikey(req: &ServiceRequest) -> bool {
    req.headers().contains_key("apikey")
        || (crate::routes::under(req.path(), "/realtime")
            && req
                .query_string()
                .split('&')
                .any(|kv| kv.strip_prefix("apikey=").is_some_and(|v| !v.is_empty())))
}

/// Paths behind Supabase's gateway key check (`auth.require_apikey`).
fn needs_apikey(path: &str) -> bool {
    let under = |p: &str| crate::routes::under(path, p);
    if under("/auth/v1") {
        let rest = &path["/auth/v1".len()..];
        return ![
            "/verify",
            "/callback",
            "/authorize",
            "/.well-known/jwks.json",
        ]
        .contains(&rest);
    }
    under("/rest/v1") || under("/realtime")
}

/// Applies the route group's rate limit, or an API key's own. The caller's identity is
/// verified here once and cached for the handler's `AuthContext` extractor.
///
/// An `fbk_` key is looked up here (the extractor reuses the result): a key with a limit of
/// its own is counted per key on every route, instead of the group's limit; other keys count
/// against the group's limit like any other caller (per user, per key, never the
/// service_role). A key that does not resolve counts per IP, and the extractor answers why.
async fn rate_check(
    state: &AppState,
    req: &ServiceRequest,
) -> Result<Option<crate::ratelimit::RateInfo>, crate::ratelimit::Limited> {
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .or_else(|| req.headers().get("apikey"))
        // UTF-8 (an ASCII fast path), not `to_str`'s byte-by-byte check: a user's token is
        // ~600 bytes and this runs on every request.
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(|v| {
            v.trim_start_matches("Bearer ")
                .trim_start_matches("bearer ")
                .trim()
        });
    let api_key = token.filter(|t| t.starts_with(crate::auth::api_keys::PREFIX));
    let group = state.rate_limits.group_for(req.path());
    let mut auth = None;
    if let Some(key) = api_key {
        if let Ok(k) =
            crate::auth::api_keys::resolve_key(state, key, req.method(), req.path()).await
        {
            req.extensions_mut().insert(k.ctx.clone());
            if let Some(n) = k.rate_limit_per_minute {
                // One limiter per distinct limit (a limiter has one quota), keyed by key id.
                let r = state.rate_limits.check(
                    &format!("api_key/{n}"),
                    u64::from(n),
                    &k.id.to_string(),
                );
                if r.is_err() {
                    state.metrics.observe_rate_limited("api_key");
                }
                return r;
            }
            auth = Some(k.ctx);
        }
    }
    let Some((group, per_minute)) = group else {
        return Ok(None);
    };
    if api_key.is_none() {
        auth = crate::auth::AuthContext::from_headers(req.headers(), &state.jwt).ok();
        if let Some(a) = &auth {
            req.extensions_mut().insert(a.clone());
        }
    }
    let ip = state.rate_limits.client_ip(req.headers(), req.peer_addr());
    let Some(key) = crate::ratelimit::caller_key(auth.as_ref(), token, &ip) else {
        return Ok(None);
    };
    let r = state.rate_limits.check(group, per_minute, &key);
    if r.is_err() {
        state.metrics.observe_rate_limited(group);
    }
    r
}

/// Every error leaves in its surface's documented format: ApiErrors are re-rendered for
/// the Auth/Storage surfaces, and actix's own errors (bad JSON, payload too large, bad path
/// parameters) become ApiErrors first.
fn rerender_error(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let Some(err) = res.response().error() else {
        return res;
    };
    let surface = Surface::for_request(res.request());
    let api = match err.as_error::<ApiError>() {
        Some(_) if surface == Surface::Rest => return res,
        Some(api) => api.clone(),
        None => {
            let status = res.status();
            let msg = err.to_string();
            if status == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, msg)
            } else if status.is_client_error() {
                let mut e = ApiError::new(ErrorCode::BadRequest, msg);
                e.status = status;
                e
            } else {
                ApiError::internal(msg)
            }
        }
    };
    let resp = api.render(surface);
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, resp)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::RouteNotFound,
        format!("No route for {} {}", req.method(), req.path()),
    ))
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.path()),
    ))
}

/// Mounts the whole app on an actix `App`.
pub fn configure_app(
    state: web::Data<AppState>,
    reg: Arc<Registry>,
) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.config.server.body_limit_bytes as usize;
        cfg.app_data(state.clone())
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::JsonConfig::default().limit(limit));
        reg.mount(cfg, method_not_allowed);
    }
}

/// Starts the HTTP server on the configured address (port 0 picks one). Signals are left to
/// the caller, which stops the server gracefully and then the managed database.
pub fn start_http(
    state: AppState,
) -> std::io::Result<(actix_web::dev::Server, Vec<std::net::SocketAddr>)> {
    let reg = Arc::new(registry());
    let cfg = state.config.clone();
    let data = web::Data::new(state);
    let mount = configure_app(data, reg);
    let tls = if cfg.server.tls.enabled() {
        Some(tls_config(&cfg.server.tls)?)
    } else {
        None
    };
    let mut server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .configure(mount.clone())
            .default_service(web::to(not_found))
            .wrap(from_fn(observe))
    })
    .disable_signals()
    // No Nagle: a websocket writes small frames one after another, and with Nagle each waits
    // for the ACK of the one before (the peer delays ACKs up to 40 ms). Measured on realtime
    // S1: p50 28 ms / p99 128 ms with it (the reference, with TCP_NODELAY: 16 / 65 ms).
    .tcp_nodelay(true)
    .shutdown_timeout(cfg.server.shutdown_timeout_secs);
    if cfg.server.workers > 0 {
        server = server.workers(cfg.server.workers as usize);
    }
    let addr = (cfg.server.host.as_str(), cfg.server.port as u16);
    let server = match tls {
        Some(t) => server.bind_rustls_0_23(addr, t)?,
        None => server.bind(addr)?,
    };
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

/// The rustls server config from PEM files (ring provider, TLS 1.2 and 1.3, HTTP/1.1).
fn tls_config(cfg: &crate::config::TlsConfig) -> std::io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("server.tls.{what} {path:?}: {e}"),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_path)
        .map_err(|e| bad("cert_path", &cfg.cert_path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("cert_path", &cfg.cert_path, &e))?;
    if certs.is_empty() {
        return Err(bad(
            "cert_path",
            &cfg.cert_path,
            &"no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_path)
        .map_err(|e| bad("key_path", &cfg.key_path, &e))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("cert_path", &cfg.cert_path, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("key_path", &cfg.key_path, &e))
}
