//! The SSRF-guarded outbound client against a real HTTP server on 127.0.0.2 (allowed
//! explicitly), plus rate limits and the audit API over HTTP.

use crate::support::TestApp;
use actix_web::{web, HttpResponse};
use fluxbase::config::OutboundConfig;
use fluxbase::outbound::{Lookup, Outbound, OutboundError};
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;

/// Serves on 127.0.0.2:<random>; returns its port.
fn target_server() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = actix_web::HttpServer::new(|| {
                actix_web::App::new()
                    .route(
                        "/ok",
                        web::get().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route(
                        "/to-loopback/{port}",
                        web::get().to(|p: web::Path<u16>| async move {
                            HttpResponse::Found()
                                .insert_header(("Location", format!("http://127.0.0.1:{p}/ok")))
                                .finish()
                        }),
                    )
                    .route(
                        "/to-ftp",
                        web::get().to(|| async {
                            HttpResponse::Found()
                                .insert_header(("Location", "ftp://127.0.0.2/x"))
                                .finish()
                        }),
                    )
                    .route(
                        "/to-ok",
                        web::get().to(|| async {
                            HttpResponse::Found()
                                .insert_header(("Location", "/ok"))
                                .finish()
                        }),
                    )
                    .route(
                        "/loop",
                        web::get().to(|| async {
                            HttpResponse::Found()
                                .insert_header(("Location", "/loop"))
                                .finish()
                        }),
                    )
                    .route(
                        "/big",
                        web::get()
                            .to(|| async { HttpResponse::Ok().body(vec![b'x'; 2 * 1024 * 1024]) }),
                    )
            })
            .workers(1)
            .bind(("127.0.0.2", 0))
            .unwrap();
            tx.send(server.addrs()[0].port()).unwrap();
            server.run().await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Resolves `internal.test` to a private address, everything else to 127.0.0.2.
struct FakeDns;

impl Lookup for FakeDns {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(match host.as_str() {
                "internal.test" => vec!["10.20.30.40".parse().unwrap()],
                "mixed.test" => vec!["192.168.1.9".parse().unwrap(), "127.0.0.2".parse().unwrap()],
                _ => vec!["127.0.0.2".parse().unwrap()],
            })
        })
    }
}

fn cfg() -> OutboundConfig {
    OutboundConfig {
        allow_private_networks: vec!["127.0.0.2/32".into()],
        max_response_bytes: 1024 * 1024,
        max_redirects: 3,
        timeout_secs: 5,
        ..Default::default()
    }
}

async fn get(client: &Outbound, url: &str) -> Result<(u16, String), OutboundError> {
    let r = client
        .send(client.request(reqwest::Method::GET, url))
        .await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

#[tokio::test]
async fn ssrf_guard_refuses_internal_destinations() {
    let port = target_server();
    let client = Outbound::new(&cfg()).unwrap();
    let base = format!("http://127.0.0.2:{port}");

    assert_eq!(
        get(&client, &format!("{base}/ok")).await.unwrap(),
        (200, "ok".into())
    );
    assert_eq!(
        get(&client, &format!("{base}/to-ok")).await.unwrap(),
        (200, "ok".into()),
        "safe redirects are followed"
    );

    // IP literals outside the allow-list: refused before any connection.
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]/".to_string(),
        "http://0.0.0.0/".to_string(),
        "http://[::ffff:127.0.0.1]/".to_string(),
    ] {
        assert!(
            matches!(get(&client, &url).await, Err(OutboundError::Blocked(_))),
            "{url}"
        );
    }
    // A DNS name resolving to loopback is refused at connect time.
    let e = get(&client, &format!("http://localhost:{port}/ok"))
        .await
        .unwrap_err();
    assert!(matches!(e, OutboundError::Blocked(_)), "{e:?}");

    // Redirects are checked again: to 127.0.0.1, to another scheme, and past the limit.
    let e = get(&client, &format!("{base}/to-loopback/{port}"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OutboundError::Redirect(m) if m.contains("internal")),
        "{e:?}"
    );
    let e = get(&client, &format!("{base}/to-ftp")).await.unwrap_err();
    assert!(matches!(e, OutboundError::Redirect(_)), "{e:?}");
    let e = get(&client, &format!("{base}/loop")).await.unwrap_err();
    assert!(
        matches!(&e, OutboundError::Redirect(m) if m.contains("redirects")),
        "{e:?}"
    );

    // Size cap.
    let e = get(&client, &format!("{base}/big")).await.unwrap_err();
    assert_eq!(e, OutboundError::TooLarge(1024 * 1024));

    // Non-http schemes.
    assert!(matches!(
        get(&client, "file:///etc/passwd").await,
        Err(OutboundError::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused() {
    let port = target_server();
    let client = Outbound::with_lookup(&cfg(), Arc::new(FakeDns)).unwrap();
    // Never dialled: the resolver drops 10.20.30.40 before any connection exists.
    let e = get(&client, &format!("http://internal.test:{port}/ok"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OutboundError::Blocked(m) if m.contains("internal.test")),
        "{e:?}"
    );
    // Only the allowed address of a mixed answer is dialled.
    assert_eq!(
        get(&client, &format!("http://mixed.test:{port}/ok"))
            .await
            .unwrap(),
        (200, "ok".into())
    );
    assert_eq!(
        get(&client, &format!("http://anything.test:{port}/ok"))
            .await
            .unwrap()
            .0,
        200
    );

    // Without the allow-list, even 127.0.0.2 is refused.
    let strict = Outbound::with_lookup(&OutboundConfig::default(), Arc::new(FakeDns)).unwrap();
    assert!(matches!(
        get(&strict, &format!("http://anything.test:{port}/ok")).await,
        Err(OutboundError::Blocked(_))
    ));
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let app = TestApp::spawn_with(|c| c.rate_limits.api_per_minute = 2).await;
    let anon = app.anon_key();
    let call = || {
        app.get("/api/v1/audit")
            .header("apikey", anon.clone())
            .send()
    };
    let r1 = call().await.unwrap();
    assert_eq!(
        r1.status(),
        403,
        "counted even when refused later for other reasons"
    );
    assert_eq!(r1.headers()["x-ratelimit-limit"], "2");
    assert_eq!(r1.headers()["x-ratelimit-remaining"], "1");
    let r2 = call().await.unwrap();
    assert_eq!(r2.headers()["x-ratelimit-remaining"], "0");
    let r3 = call().await.unwrap();
    assert_eq!(r3.status(), 429);
    let retry: u64 = r3.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r3.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(r3.json::<Value>().await.unwrap()["code"], "FB006");

    // Another caller (a user) has its own bucket; the service_role is never limited.
    let user = app.token(
        serde_json::json!({"role": "authenticated", "sub": "5b1c2a52-0000-4000-8000-000000000001"}),
    );
    let r = app
        .get("/api/v1/audit")
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for _ in 0..5 {
        let r = app
            .get("/api/v1/audit")
            .header("apikey", app.service_key())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.headers().contains_key("x-ratelimit-limit"));
    }
    // Unlimited groups carry no headers.
    let r = app.get("/health").send().await.unwrap();
    assert!(!r.headers().contains_key("x-ratelimit-limit"));
    let text = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"fluxbase_rate_limited_total{group="api"} 1"#),
        "{text}"
    );
}
