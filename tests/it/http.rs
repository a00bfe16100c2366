//! The HTTP kernel: ops endpoints, errors per surface, request ids, limits, CORS, metrics,
//! OpenAPI coverage, and AuthContext over HTTP.

use crate::support::TestApp;
use serde_json::{json, Value};

#[tokio::test]
async fn health_and_ready() {
    let app = TestApp::spawn().await;
    let r = app.get("/health").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = app.get("/ready").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn unknown_routes_are_json_404_per_surface() {
    let app = TestApp::spawn().await;
    let r = app.get("/nope").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "FB001");
    assert!(b.get("details").is_some() && b.get("hint").is_some(), "{b}");

    let r = app
        .get("/auth/v1/nope")
        .header("X-Supabase-Api-Version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-sb-error-code"], "not_found");
    assert_eq!(r.headers()["x-supabase-api-version"], "2024-01-01");
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        b,
        json!({"code": "not_found", "message": "No route for GET /auth/v1/nope"})
    );

    let r = app.get("/auth/v1/nope").send().await.unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], 404);
    assert_eq!(b["error_code"], "not_found");

    let r = app.get("/storage/v1/nope").send().await.unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["statusCode"], "404");
    assert_eq!(b["error"], "NotFound");

    let r = app.http.post(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB002");

    // /rest/v1 is a scope with its own method dispatch: an undeclared method is still a 405,
    // and a path that only starts with the same letters is not under it.
    let r = app
        .http
        .request(reqwest::Method::TRACE, app.url("/rest/v1/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB002");
    let r = app.get("/rest/v1x/items").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let r = app
        .get("/health")
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r1 = app.get("/health").send().await.unwrap();
    let r2 = app.get("/health").send().await.unwrap();
    let (a, b) = (
        r1.headers()["x-request-id"].clone(),
        r2.headers()["x-request-id"].clone(),
    );
    let id = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4, "{id}");
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn oversized_bodies_get_413_json() {
    let app = TestApp::spawn_with(|c| c.server.body_limit_bytes = 1024).await;
    let r = app
        .http
        .post(app.url("/health"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB003");
}

#[tokio::test]
async fn security_headers_and_cors() {
    let app = TestApp::spawn().await;
    let r = app
        .get("/health")
        .header("Origin", "http://example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://example.test"
    );
    // The API has no CSP (it serves no documents); everything under /admin does.
    assert!(!r.headers().contains_key("content-security-policy"));
    for path in ["/admin", "/admin/", "/admin/assets/app.js"] {
        let r = app.get(path).send().await.unwrap();
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert_eq!(csp, fluxbase::app::ADMIN_CSP, "{path}");
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    }
    let r = app.get("/administrator").send().await.unwrap();
    assert!(!r.headers().contains_key("content-security-policy"));
    let r = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/admin/info"))
        .header("Origin", "http://example.test")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "apikey, authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("access-control-allow-methods"));

    let strict =
        TestApp::spawn_with(|c| c.server.cors.allowed_origins = vec!["http://ok.test".into()])
            .await;
    let r = strict
        .get("/health")
        .header("Origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = strict
        .get("/health")
        .header("Origin", "http://ok.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "http://ok.test");
    // Every response header is exposed to the allowed page, the request id included.
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    // A preflight from another origin is refused; without Origin only Vary is added.
    let r = strict
        .http
        .request(reqwest::Method::OPTIONS, strict.url("/rest/v1/"))
        .header("Origin", "http://evil.test")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = strict.get("/health").send().await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    assert!(!r.headers().contains_key("access-control-expose-headers"));
    assert!(r.headers()["vary"].to_str().unwrap().contains("Origin"));
}

#[tokio::test]
async fn metrics_label_routes_by_template() {
    let app = TestApp::spawn().await;
    app.get("/health").send().await.unwrap();
    app.get("/definitely/not/here").send().await.unwrap();
    let text = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"fluxbase_http_requests_total{method="GET",route="/health",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="<unmatched>",status="404""#),
        "{text}"
    );
    assert!(text.contains("fluxbase_db_pool_max 4"), "{text}");
    assert!(
        text.contains("fluxbase_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn every_mounted_route_is_in_openapi() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reg = fluxbase::app::registry();
    assert!(!reg.routes().is_empty());
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for r in reg.routes() {
        let path = fluxbase::routes::openapi_path(r.path);
        let op = &doc["paths"][&path][r.method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from /openapi.json",
            r.method,
            r.path
        );
        // And it is really mounted: the method answers something other than 404/405.
        let concrete: String = fluxbase::routes::path_params(r.path)
            .iter()
            .fold(path.clone(), |p, name| {
                p.replace(&format!("{{{name}}}"), "1")
            });
        let m = reqwest::Method::from_bytes(r.method.as_str().as_bytes()).unwrap();
        // Redirects are answers too (OAuth callback → site URL); they are not followed.
        let resp = no_redirects
            .request(m, app.url(&concrete))
            .send()
            .await
            .unwrap();
        // Route-level misses are FB001/FB002; a handler's own 404 (no such job) is fine.
        let code = resp
            .json::<Value>()
            .await
            .ok()
            .and_then(|b| b["code"].as_str().map(str::to_string));
        assert!(
            !matches!(code.as_deref(), Some("FB001") | Some("FB002")),
            "{} {} not mounted",
            r.method,
            path
        );
    }
}

#[tokio::test]
async fn admin_route_needs_a_valid_service_role_token() {
    let app = TestApp::spawn().await;
    let path = "/api/v1/admin/info";
    let r = app
        .get(path)
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["database"]["database"], app.db.name.as_str());

    // anon key: authenticated as anon, but not allowed.
    let r = app
        .get(path)
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB202");
    // Bearer wins over apikey (supabase-js sends both).
    let r = app
        .get(path)
        .header("apikey", app.service_key())
        .header("Authorization", format!("Bearer {}", app.anon_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Expired.
    let expired =
        app.token(json!({"role": "service_role", "exp": chrono::Utc::now().timestamp() - 3600}));
    let r = app.get(path).bearer_auth(expired).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "PGRST301");
    assert_eq!(b["message"], "JWT expired");

    // Forged: right claims, wrong secret.
    let other = fluxbase::auth::jwt::JwtKeys::new(
        "some-other-secret-some-other-secret",
        0,
        vec!["service_role".into()],
    );
    let forged = other
        .api_key("service_role", chrono::Utc::now().timestamp())
        .unwrap();
    let r = app.get(path).bearer_auth(forged).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A role outside the allow-list (the connection owner) is refused.
    let owner = app.token(json!({"role": "postgres"}));
    let r = app.get(path).bearer_auth(owner).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB201");

    // Non-Bearer schemes are refused, not ignored.
    let r = app
        .get(path)
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn require_apikey_answers_like_the_supabase_gateway() {
    let app = TestApp::spawn_with(|c| c.auth.require_apikey = true).await;
    let r = app.get("/rest/v1/").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "No API key found in request"})
    );
    let r = app.get("/auth/v1/settings").send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The open auth routes and everything outside the gateway's paths stay open.
    assert_eq!(
        app.get("/auth/v1/.well-known/jwks.json")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
    let r = app
        .get("/auth/v1/settings")
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Off by default (PostgREST's behaviour).
    let open = TestApp::spawn().await;
    assert_eq!(
        open.get("/auth/v1/settings").send().await.unwrap().status(),
        200
    );
}

/// TLS termination with a self-signed certificate (rcgen): HTTPS works, HSTS is sent, plain
/// HTTP on the same port is not served, and bad key files stop the start with a clear error.
#[tokio::test]
async fn tls_termination_with_hsts() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let (c, k) = (
        cert_path.to_str().unwrap().to_string(),
        key_path.to_str().unwrap().to_string(),
    );
    let app = TestApp::spawn_with(|cfg| {
        cfg.server.tls.cert_path = c;
        cfg.server.tls.key_path = k;
        cfg.server.tls.hsts_max_age_secs = 600;
    })
    .await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let res = client
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=600; includeSubDomains"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .is_err());
    // An untrusted certificate is refused by a normal client.
    assert!(reqwest::get(format!("https://127.0.0.1:{port}/health"))
        .await
        .is_err());
    // Without TLS there is no HSTS header.
    let plain = TestApp::spawn().await;
    let res = plain.get("/health").send().await.unwrap();
    assert!(res.headers().get("strict-transport-security").is_none());
    // A missing key file is a start-up error naming the setting.
    let state = plain.state.clone();
    let mut cfg = (*state.config).clone();
    cfg.server.tls.cert_path = cert_path.to_str().unwrap().into();
    cfg.server.tls.key_path = "/nonexistent/key.pem".into();
    let mut broken = state.clone();
    broken.config = std::sync::Arc::new(cfg);
    let err = fluxbase::app::start_http(broken)
        .err()
        .expect("start must fail");
    assert!(err.to_string().contains("server.tls.key_path"), "{err}");
}
