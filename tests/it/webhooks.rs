//! Webhooks against a real HTTP receiver on 127.0.0.2: table events from the outbox with
//! retries and one webhook-id per delivery, rollback vs commit-while-down, disable/delete,
//! auth and storage events, the admin API and redelivery. Signatures are verified by the
//! `standardwebhooks` package in `tests/clients/webhooks.test.mjs`, not by our own code.

use crate::support::{eventually, start_runner, TestApp};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    custom: Option<String>,
    body: Value,
}

/// A receiver on 127.0.0.2: answers 500 to the first `fail_first` requests, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

fn receiver(fail_first: usize) -> Receiver {
    receiver_with(fail_first, None)
}

/// A receiver that fails its first `fail_first` requests: 500, or 503 with this
/// `Retry-After` when one is given.
fn receiver_with(fail_first: usize, retry_after: Option<&'static str>) -> Receiver {
    receiver_full(fail_first, retry_after, Duration::ZERO)
}

/// The general receiver: the first `fail_first` requests fail (as `receiver_with`) after
/// waiting `stall` each (longer than a hook's timeout makes them time out).
fn receiver_full(
    fail_first: usize,
    retry_after: Option<&'static str>,
    stall: Duration,
) -> Receiver {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let g = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                let g = g.clone();
                actix_web::App::new().default_service(web::to(
                    move |req: HttpRequest, body: web::Bytes| {
                        let g = g.clone();
                        async move {
                            let h = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .map(|v| v.to_str().unwrap().to_string())
                            };
                            let n = {
                                let mut all = g.lock().unwrap();
                                all.push(Got {
                                    id: h("webhook-id").unwrap_or_default(),
                                    timestamp: h("webhook-timestamp").unwrap_or_default(),
                                    signature: h("webhook-signature").unwrap_or_default(),
                                    custom: h("x-custom"),
                                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                                });
                                all.len()
                            };
                            // Counted on arrival; a failing request stalls after that.
                            if n <= fail_first && !stall.is_zero() {
                                tokio::time::sleep(stall).await;
                            }
                            if n <= fail_first {
                                match retry_after {
                                    Some(ra) => HttpResponse::ServiceUnavailable()
                                        .insert_header(("retry-after", ra))
                                        .body("busy"),
                                    None => HttpResponse::InternalServerError().body("not yet"),
                                }
                            } else {
                                HttpResponse::Ok().body("thanks")
                            }
                        }
                    },
                ))
            })
            .workers(1)
            .bind(("127.0.0.2", 0))
            .unwrap();
            let port = server.addrs()[0].port();
            tx.send(port).unwrap();
            server.run().await.unwrap();
        });
    });
    let port = rx.recv().unwrap();
    Receiver {
        url: format!("http://127.0.0.2:{port}/hook"),
        got,
    }
}

async fn app() -> TestApp {
    let app = TestApp::spawn_with(|c| {
        c.outbound.allow_private_networks = vec!["127.0.0.2/32".into()];
        c.jobs.backoff_base_ms = 50;
        c.jobs.backoff_cap_ms = 200;
        c.jobs.poll_interval_ms = 100;
        c.auth.mailer_autoconfirm = true;
        c.auth.bcrypt_cost = 4;
    })
    .await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, item text, qty int);
             GRANT ALL ON orders TO anon, authenticated, service_role;",
        )
        .await
        .unwrap();
    app
}

fn handlers(app: &TestApp) -> fluxbase::jobs::Registry {
    let mut h = fluxbase::jobs::Registry::default();
    fluxbase::webhooks::register_jobs(&mut h, app.state.outbound.clone());
    h
}

async fn create_hook(app: &TestApp, body: Value) -> Value {
    let res = app
        .http
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(app.service_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

async fn deliveries(app: &TestApp, hook: &str) -> Vec<Value> {
    app.get(&format!("/api/v1/webhooks/{hook}/deliveries"))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for(got: &Arc<Mutex<Vec<Got>>>, n: usize) -> Vec<Got> {
    let ok = eventually(Duration::from_secs(15), || async {
        got.lock().unwrap().len() >= n
    })
    .await;
    let all = got.lock().unwrap().clone();
    assert!(ok, "expected {n} requests, got {}: {all:?}", all.len());
    all
}

#[tokio::test]
async fn table_events_are_delivered_once_per_change_with_retries() {
    let app = app().await;
    let rx = receiver(2);
    let hook = create_hook(
        &app,
        json!({"name": "orders", "url": rx.url, "events": ["public.orders:INSERT", "public.orders:UPDATE"],
               "headers": {"X-Custom": "yes"}, "retry": {"max_attempts": 5}}),
    )
    .await;
    assert!(hook["secret"].as_str().unwrap().starts_with("whsec_"));
    let _runner = start_runner(&app, handlers(&app), false);
    let db = app.db.client().await;
    db.batch_execute("INSERT INTO orders VALUES (1, 'tea', 2)")
        .await
        .unwrap();
    let all = wait_for(&rx.got, 3).await;
    // Two failures then success: three attempts of ONE message (same webhook-id).
    assert!(all
        .iter()
        .all(|g| g.id == all[0].id && g.id.starts_with("msg_")));
    assert!(all
        .iter()
        .all(|g| g.signature.starts_with("v1,") && !g.timestamp.is_empty()));
    assert_eq!(all[0].custom.as_deref(), Some("yes"));
    assert_eq!(
        all[2].body,
        json!({"type": "INSERT", "table": "orders", "schema": "public",
               "record": {"id": 1, "item": "tea", "qty": 2}, "old_record": null})
    );
    let id = hook["id"].as_str().unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        deliveries(&app, id)
            .await
            .first()
            .is_some_and(|d| d["status"] == "succeeded")
    })
    .await;
    assert!(ok);
    let d = &deliveries(&app, id).await[0];
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["response_status"], 200);
    assert_eq!(d["response_body"], "thanks");
    // UPDATE carries old_record; DELETE is not subscribed.
    db.batch_execute("UPDATE orders SET qty = 3 WHERE id = 1; DELETE FROM orders WHERE id = 1")
        .await
        .unwrap();
    let all = wait_for(&rx.got, 4).await;
    assert_eq!(all[3].body["type"], "UPDATE");
    assert_eq!(all[3].body["old_record"]["qty"], 2);
    assert_eq!(all[3].body["record"]["qty"], 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got.lock().unwrap().len(), 4, "DELETE was not subscribed");
}

/// Seconds from now until the delivery's job runs again, once its failed attempt is
/// recorded by the queue (the job is pending again with a future `run_at`).
async fn next_run_in_secs(app: &TestApp, hook: &str) -> f64 {
    let db = app.db.client().await;
    let sql = "SELECT extract(epoch FROM j.run_at - now())::float8
                 FROM webhooks.deliveries d JOIN jobs.jobs j ON j.id = d.job_id
                WHERE d.webhook_id = $1::text::uuid AND j.status = 'pending' AND j.attempts = 1";
    let ok = eventually(Duration::from_secs(10), || async {
        db.query_opt(sql, &[&hook]).await.unwrap().is_some()
    })
    .await;
    assert!(ok, "the job of hook {hook} was not rescheduled");
    db.query_one(sql, &[&hook]).await.unwrap().get(0)
}

#[tokio::test]
async fn each_hook_retries_on_its_own_backoff_and_honours_retry_after() {
    let app = TestApp::spawn_with(|c| {
        c.outbound.allow_private_networks = vec!["127.0.0.2/32".into()];
        // The queue's own backoff is ten minutes: only a hook's policy can make it quick.
        c.jobs.backoff_base_ms = 600_000;
        c.jobs.backoff_cap_ms = 600_000;
        c.jobs.poll_interval_ms = 100;
    })
    .await;
    let db = app.db.client().await;
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, item text, qty int);
         GRANT ALL ON orders TO anon, authenticated, service_role;",
    )
    .await
    .unwrap();
    let quick_rx = receiver(2);
    let busy_rx = receiver_with(1, Some("30"));
    let capped_rx = receiver_with(1, Some("600"));
    let quick = create_hook(
        &app,
        json!({"url": quick_rx.url, "events": ["public.orders:INSERT"],
               "retry": {"max_attempts": 3, "backoff_base_ms": 1, "backoff_cap_ms": 1}}),
    )
    .await;
    assert_eq!(
        quick["retry"],
        json!({"max_attempts": 3, "backoff_base_ms": 1, "backoff_cap_ms": 1})
    );
    let busy = create_hook(
        &app,
        json!({"url": busy_rx.url, "events": ["public.orders:INSERT"],
               "retry": {"max_attempts": 3, "backoff_cap_ms": 120000}}),
    )
    .await;
    // The unset base stays unset: the queue's applies.
    assert_eq!(busy["retry"]["backoff_base_ms"], Value::Null);
    let capped = create_hook(
        &app,
        json!({"url": capped_rx.url, "events": ["public.orders:INSERT"],
               "retry": {"max_attempts": 3, "backoff_base_ms": 10, "backoff_cap_ms": 5000}}),
    )
    .await;
    let _runner = start_runner(&app, handlers(&app), false);
    db.batch_execute("INSERT INTO orders VALUES (1, 'tea', 2)")
        .await
        .unwrap();
    // Two failures, then success, with 1 ms between attempts (the queue would wait minutes).
    let all = wait_for(&quick_rx.got, 3).await;
    assert!(all.iter().all(|g| g.id == all[0].id));
    let id = quick["id"].as_str().unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        deliveries(&app, id)
            .await
            .first()
            .is_some_and(|d| d["status"] == "succeeded" && d["attempts"] == 3)
    })
    .await;
    assert!(ok, "{:?}", deliveries(&app, id).await);
    // 503 + Retry-After: 30 → the next attempt is scheduled 30 s out (under the 120 s cap).
    wait_for(&busy_rx.got, 1).await;
    let busy_id = busy["id"].as_str().unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        deliveries(&app, busy_id)
            .await
            .first()
            .is_some_and(|d| d["attempts"] == 1 && d["response_status"] == 503)
    })
    .await;
    assert!(ok);
    let wait = next_run_in_secs(&app, busy_id).await;
    assert!((25.0..=30.5).contains(&wait), "next run in {wait} s");
    // Retry-After: 600 is capped by the hook's 5 s cap.
    wait_for(&capped_rx.got, 1).await;
    let capped_id = capped["id"].as_str().unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        deliveries(&app, capped_id)
            .await
            .first()
            .is_some_and(|d| d["attempts"] == 1)
    })
    .await;
    assert!(ok);
    let wait = next_run_in_secs(&app, capped_id).await;
    assert!((3.0..=5.5).contains(&wait), "next run in {wait} s");
    // A base above the cap is refused, also against the stored cap in an update.
    let res = app
        .http
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(app.service_key())
        .json(
            &json!({"url": quick_rx.url, "events": ["public.orders:INSERT"],
                      "retry": {"backoff_base_ms": 10, "backoff_cap_ms": 5}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/webhooks/{capped_id}")))
        .bearer_auth(app.service_key())
        .json(&json!({"retry": {"backoff_base_ms": 9000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body.to_string().contains("backoff_base_ms must not exceed"),
        "{body}"
    );
}

#[tokio::test]
async fn rollback_is_never_sent_and_commits_wait_for_a_worker() {
    let app = app().await;
    let rx = receiver(0);
    let hook = create_hook(&app, json!({"url": rx.url, "events": ["public.orders:*"]})).await;
    let db = app.db.client().await;
    db.batch_execute("BEGIN; INSERT INTO orders VALUES (1, 'ghost', 1); ROLLBACK")
        .await
        .unwrap();
    // Committed while no worker runs (Fluxbase "down"): kept in the outbox.
    db.batch_execute("INSERT INTO orders VALUES (2, 'real', 1)")
        .await
        .unwrap();
    let id = hook["id"].as_str().unwrap();
    let pending = deliveries(&app, id).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["status"], "pending");
    let _runner = start_runner(&app, handlers(&app), false);
    let all = wait_for(&rx.got, 1).await;
    assert_eq!(all[0].body["record"]["item"], "real");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn disabling_stops_and_deleting_cancels() {
    let app = app().await;
    let rx = receiver(0);
    let hook = create_hook(
        &app,
        json!({"url": rx.url, "events": ["public.orders:INSERT"]}),
    )
    .await;
    let id = hook["id"].as_str().unwrap().to_string();
    let db = app.db.client().await;
    db.batch_execute("INSERT INTO orders VALUES (1, 'a', 1)")
        .await
        .unwrap();
    // Disabled before a worker ran: the pending delivery is cancelled, not sent.
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(app.service_key())
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    db.batch_execute("INSERT INTO orders VALUES (2, 'b', 1)")
        .await
        .unwrap();
    let runner = start_runner(&app, handlers(&app), false);
    let ok = eventually(Duration::from_secs(10), || async {
        deliveries(&app, &id)
            .await
            .iter()
            .all(|d| d["status"] == "cancelled")
    })
    .await;
    assert!(ok, "{:?}", deliveries(&app, &id).await);
    assert_eq!(
        deliveries(&app, &id).await.len(),
        1,
        "no delivery is recorded while disabled"
    );
    assert!(rx.got.lock().unwrap().is_empty());
    drop(runner);
    // Deleting cancels the queued job of a pending delivery.
    let hook2 = create_hook(
        &app,
        json!({"url": rx.url, "events": ["public.orders:INSERT"]}),
    )
    .await;
    let id2 = hook2["id"].as_str().unwrap().to_string();
    db.batch_execute("INSERT INTO orders VALUES (3, 'c', 1)")
        .await
        .unwrap();
    let job: i64 = db
        .query_one(
            "SELECT job_id FROM webhooks.deliveries WHERE webhook_id = $1::text::uuid",
            &[&id2],
        )
        .await
        .unwrap()
        .get(0);
    let res = app
        .http
        .delete(app.url(&format!("/api/v1/webhooks/{id2}")))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(crate::support::job(&app, job).await["status"], "cancelled");
    // With no hook left on the table, its capture trigger is gone.
    let mut left: i64 = db
        .query_one("SELECT count(*) FROM pg_trigger WHERE tgname = 'fluxbase_webhooks' AND tgrelid = 'orders'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "the disabled hook still names the table");
    let res = app
        .http
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    left = db
        .query_one("SELECT count(*) FROM pg_trigger WHERE tgname = 'fluxbase_webhooks' AND tgrelid = 'orders'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn auth_events_carry_the_user_but_no_secrets() {
    let app = app().await;
    let rx = receiver(0);
    create_hook(&app, json!({"url": rx.url, "events": ["auth.user.created", "auth.user.signed_in", "auth.user.deleted"]})).await;
    let _runner = start_runner(&app, handlers(&app), false);
    let res = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("apikey", app.anon_key())
        .json(&json!({"email": "hook@example.test", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let user: Value = res.json().await.unwrap();
    let uid = user["user"]["id"].as_str().unwrap().to_string();
    let all = wait_for(&rx.got, 1).await;
    let created = all
        .iter()
        .find(|g| g.body["type"] == "auth.user.created")
        .expect("created");
    assert_eq!(created.body["user"]["email"], "hook@example.test");
    assert!(!created.body.to_string().contains("encrypted_password"));
    assert!(
        !created.body.to_string().contains("$2"),
        "no bcrypt hash anywhere"
    );
    let res = app
        .http
        .post(app.url("/auth/v1/token?grant_type=password"))
        .header("apikey", app.anon_key())
        .json(&json!({"email": "hook@example.test", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .http
        .delete(app.url(&format!("/auth/v1/admin/users/{uid}")))
        .bearer_auth(app.service_key())
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let ok = eventually(Duration::from_secs(10), || async {
        let g = rx.got.lock().unwrap();
        g.iter().any(|g| g.body["type"] == "auth.user.signed_in")
            && g.iter().any(|g| g.body["type"] == "auth.user.deleted")
    })
    .await;
    assert!(ok, "{:?}", rx.got.lock().unwrap());
}

#[tokio::test]
async fn admin_api_validates_hides_secrets_tests_and_redelivers() {
    let app = app().await;
    let rx = receiver(0);
    let post = |body: Value| {
        app.http
            .post(app.url("/api/v1/webhooks"))
            .bearer_auth(app.service_key())
            .json(&body)
            .send()
    };
    for (body, why) in [
        (
            json!({"url": "ftp://x/y", "events": ["public.orders:INSERT"]}),
            "scheme",
        ),
        (json!({"url": rx.url, "events": []}), "no events"),
        (
            json!({"url": rx.url, "events": ["public.nope:INSERT"]}),
            "missing table",
        ),
        (
            json!({"url": rx.url, "events": ["public.orders:TRUNCATE"]}),
            "bad op",
        ),
        (
            json!({"url": rx.url, "events": ["auth.user.exploded"]}),
            "unknown named event",
        ),
        (
            json!({"url": rx.url, "events": ["auth.user.created"], "secret": "short"}),
            "bad secret",
        ),
        (
            json!({"url": rx.url, "events": ["auth.user.created"], "headers": {"webhook-id": "x"}}),
            "reserved header",
        ),
        (
            json!({"url": rx.url, "events": ["auth.user.created"], "nope": 1}),
            "unknown field",
        ),
        (
            json!({"url": rx.url, "events": ["auth.user.created"], "retry": {"max_attempts": 0}}),
            "attempts",
        ),
    ] {
        let res = post(body).await.unwrap();
        assert_eq!(res.status(), 400, "{why}");
        let e: Value = res.json().await.unwrap();
        assert!(e["message"].is_string(), "{why}: {e}");
    }
    let res = app
        .http
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(app.anon_key())
        .json(&json!({"url": rx.url, "events": ["auth.user.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hook = create_hook(
        &app,
        json!({"url": rx.url, "events": ["public.orders:*"], "secret": secret}),
    )
    .await;
    assert_eq!(hook["secret"], secret);
    let id = hook["id"].as_str().unwrap();
    let one: Value = app
        .get(&format!("/api/v1/webhooks/{id}"))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(one.get("secret").is_none(), "the secret is shown once");
    let list: Value = app
        .get("/api/v1/webhooks")
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list[0].get("secret").is_none());
    // Test send: synchronous, recorded.
    let t: Value = app
        .http
        .post(app.url(&format!("/api/v1/webhooks/{id}/test")))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["status"], "succeeded");
    assert_eq!(t["response_status"], 200);
    assert_eq!(wait_for(&rx.got, 1).await[0].body["type"], "webhook.test");
    // Redeliver: same message id again.
    let d = t["id"].as_i64().unwrap();
    let _runner = start_runner(&app, handlers(&app), false);
    let res = app
        .http
        .post(app.url(&format!("/api/v1/webhooks/{id}/deliveries/{d}/redeliver")))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let all = wait_for(&rx.got, 2).await;
    assert_eq!(all[1].id, all[0].id);
    let res = app
        .http
        .post(app.url(&format!(
            "/api/v1/webhooks/{id}/deliveries/999999/redeliver"
        )))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .get("/api/v1/webhooks/00000000-0000-0000-0000-000000000000")
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn private_targets_are_refused_by_the_ssrf_guard() {
    let app = app().await;
    // 127.0.0.3 is loopback and not in the allow-list (only 127.0.0.2 is).
    let hook = create_hook(
        &app,
        json!({"url": "http://127.0.0.3:9/hook", "events": ["public.orders:INSERT"], "retry": {"max_attempts": 1}}),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    let t: Value = app
        .http
        .post(app.url(&format!("/api/v1/webhooks/{id}/test")))
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["status"], "failed");
    assert_eq!(t["response_status"], Value::Null);
    let err = t["error"].as_str().unwrap();
    assert!(err.contains("127.0.0.3"), "{err}");
    // Through the queue too: one attempt, then failed.
    let _runner = start_runner(&app, handlers(&app), false);
    app.db
        .client()
        .await
        .batch_execute("INSERT INTO orders VALUES (1, 'x', 1)")
        .await
        .unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        deliveries(&app, id)
            .await
            .iter()
            .any(|d| d["event"] != "webhook.test" && d["status"] == "failed")
    })
    .await;
    assert!(ok, "{:?}", deliveries(&app, id).await);
}

#[tokio::test]
async fn a_receiver_that_times_out_is_retried() {
    let app = app().await;
    // The first request stalls past the hook's 300 ms timeout, the second answers at once.
    let rx = receiver_full(1, None, Duration::from_secs(3));
    let hook = create_hook(
        &app,
        json!({"url": rx.url, "events": ["public.orders:INSERT"], "timeout_ms": 300,
               "retry": {"max_attempts": 3, "backoff_base_ms": 10, "backoff_cap_ms": 10}}),
    )
    .await;
    let _runner = start_runner(&app, handlers(&app), false);
    app.db
        .client()
        .await
        .batch_execute("INSERT INTO orders VALUES (1, 'slow', 1)")
        .await
        .unwrap();
    let all = wait_for(&rx.got, 2).await;
    assert_eq!(all[0].id, all[1].id, "one message, retried");
    let id = hook["id"].as_str().unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        deliveries(&app, id)
            .await
            .first()
            .is_some_and(|d| d["status"] == "succeeded")
    })
    .await;
    assert!(ok, "{:?}", deliveries(&app, id).await);
    let d = &deliveries(&app, id).await[0];
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["response_status"], 200);
}

#[tokio::test]
async fn a_change_committed_while_the_server_is_down_is_delivered_after_start() {
    let tweak = |c: &mut fluxbase::config::Config| {
        c.outbound.allow_private_networks = vec!["127.0.0.2/32".into()];
        c.jobs.poll_interval_ms = 100;
    };
    let first = TestApp::spawn_with(tweak).await;
    let db = first.db.clone();
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, item text, qty int);
             GRANT ALL ON orders TO anon, authenticated, service_role;",
        )
        .await
        .unwrap();
    let rx = receiver(0);
    create_hook(
        &first,
        json!({"url": rx.url, "events": ["public.orders:INSERT"]}),
    )
    .await;
    let runner = start_runner(&first, handlers(&first), false);
    db.client()
        .await
        .batch_execute("INSERT INTO orders VALUES (1, 'before', 1)")
        .await
        .unwrap();
    wait_for(&rx.got, 1).await;
    // Fluxbase stops: workers, then the server.
    runner.shutdown(Duration::from_secs(5)).await;
    drop(first);
    // A change committed while nothing runs.
    db.client()
        .await
        .batch_execute("INSERT INTO orders VALUES (2, 'while down', 1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.got.lock().unwrap().len(),
        1,
        "nothing is sent while down"
    );
    // A new server on the same database delivers it.
    let second = TestApp::spawn_on(db, tweak).await;
    let _runner = start_runner(&second, handlers(&second), false);
    let all = wait_for(&rx.got, 2).await;
    assert_eq!(all[1].body["record"]["item"], "while down");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got.lock().unwrap().len(), 2, "each change once");
}

#[tokio::test]
async fn payloads_with_huge_numbers_are_delivered_and_listed() {
    let app = app().await;
    let db = app.db.client().await;
    db.batch_execute(
        "CREATE TABLE measures (id int PRIMARY KEY, v numeric);
         GRANT ALL ON measures TO anon, authenticated, service_role;",
    )
    .await
    .unwrap();
    let rx = receiver(0);
    let hook = create_hook(
        &app,
        json!({"url": rx.url, "events": ["public.measures:INSERT"]}),
    )
    .await;
    let _runner = start_runner(&app, handlers(&app), false);
    // numeric prints this in full (309 digits): no f64 reader takes it back.
    db.batch_execute("INSERT INTO measures VALUES (1, -1.7976931348623157e308)")
        .await
        .unwrap();
    // Sent (the test receiver's own f64 reader cannot parse the body, the server's pass-through did).
    wait_for(&rx.got, 1).await;
    let id = hook["id"].as_str().unwrap();
    let list = || async {
        let r = app
            .get(&format!("/api/v1/webhooks/{id}/deliveries"))
            .bearer_auth(app.service_key())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let ok = eventually(Duration::from_secs(10), || async {
        list().await.contains("\"status\": \"succeeded\"")
    })
    .await;
    let text = list().await;
    assert!(ok, "{text}");
    assert!(text.contains("-17976931348623157"), "{text}");
}
