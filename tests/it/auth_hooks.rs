//! GoTrue's sending hooks (`auth.hooks.send_sms`, `auth.hooks.send_email`): an HTTP hook (a
//! real fake endpoint that checks the Standard Webhooks signature itself) and a Postgres
//! function hook replace the SMS provider and the mailer, are called within the request, and
//! their errors become the request's, as in GoTrue.

use crate::auth_phone::{call, code_of, post, verify};
use crate::support::hook_server::{Answer, FakeHook, SECRET};
use crate::support::TestApp;
use fluxbase::config::{Config, HookConfig, Secret};
use serde_json::{json, Value};
use std::time::Duration;

fn http_hook(fake: &FakeHook) -> HookConfig {
    HookConfig {
        enabled: true,
        uri: fake.url.clone(),
        secrets: Some(Secret::new(SECRET)),
    }
}

fn pg_hook(function: &str) -> HookConfig {
    HookConfig {
        enabled: true,
        uri: format!("pg-functions://postgres/public/{function}"),
        secrets: None,
    }
}

/// Phone sign-in on (provider `log`: any SMS that escaped the hook would only be logged),
/// outbound calls allowed to the fake hook's address.
async fn hook_app(tweak: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_with(|c| {
        c.auth.bcrypt_cost = 4;
        c.auth.sms.enabled = true;
        c.auth.site_url = "http://app.test".into();
        c.outbound.allow_private_networks = vec!["127.0.0.5/32".into()];
        c.auth.hooks.timeout_secs = 1;
        tweak(c);
    })
    .await
}

async fn queued(app: &TestApp, queue: &str) -> i64 {
    app.db
        .client()
        .await
        .query_one("SELECT count(*) FROM jobs.jobs WHERE queue = $1", &[&queue])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn an_http_send_sms_hook_gets_the_signed_code_and_its_errors_reach_the_client() {
    let fake = FakeHook::start();
    let app = hook_app(|c| c.auth.hooks.send_sms = http_hook(&fake)).await;

    let (s, body) = post(&app, "/auth/v1/otp", json!({"phone": "+1 555 0100 401"})).await;
    assert_eq!(s, 200, "{body}");
    let events = fake.events();
    assert_eq!(events.len(), 1, "called once, within the request");
    let e = &events[0];
    assert_eq!(e["user"]["phone"], "15550100401", "{e}");
    assert!(
        e["user"]["id"].is_string() && e["user"]["aud"] == "authenticated",
        "{e}"
    );
    let otp = e["sms"]["otp"].as_str().unwrap().to_string();
    assert_eq!(otp.len(), 6);
    assert_eq!(
        queued(&app, "auth.sms").await,
        0,
        "the hook replaces the provider"
    );
    let (s, session) = verify(&app, "sms", "+15550100401", &otp).await;
    assert_eq!(s, 200, "{session}");
    assert!(session["access_token"].is_string());

    // The hook's own error is the client's, status and message.
    fake.answer(Answer::Json(
        200,
        json!({"error": {"http_code": 429, "message": "Too many texts to this number"}}),
    ));
    let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100402"})).await;
    assert_eq!(s, 429, "{e}");
    assert_eq!(e["message"], "Too many texts to this number");
    // The request rolled back: no user was made for the number.
    let (s, _, users) = call(
        &app,
        reqwest::Method::GET,
        "/auth/v1/admin/users",
        Some(&app.service_key()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");

    // Any other failing status is GoTrue's 500 saying why.
    fake.answer(Answer::Json(500, json!({"oops": true})));
    let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100403"})).await;
    assert_eq!((s, code_of(&e)), (500, Some("unexpected_failure")), "{e}");
    assert_eq!(
        e["message"],
        "Unexpected status code returned from hook: 500"
    );

    // A hook slower than auth.hooks.timeout_secs is tried 3 times, then hook_timeout_after_retry.
    fake.answer(Answer::Slow(Duration::from_millis(1500)));
    let before = fake.events().len();
    let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100404"})).await;
    assert_eq!(
        (s, code_of(&e)),
        (422, Some("hook_timeout_after_retry")),
        "{e}"
    );
    assert_eq!(fake.events().len(), before + 3);
    assert_eq!(fake.bad_signatures(), 0, "every request was signed");
}

#[tokio::test]
async fn an_http_send_email_hook_gets_gotrue_email_data_instead_of_smtp() {
    let fake = FakeHook::start();
    let app = hook_app(|c| c.auth.hooks.send_email = http_hook(&fake)).await;

    let (s, user) = post(
        &app,
        "/auth/v1/signup?redirect_to=http://app.test/welcome",
        json!({"email": "ada@hook.test", "password": "lovelace1815"}),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    let events = fake.events();
    assert_eq!(events.len(), 1);
    let d = &events[0]["email_data"];
    assert_eq!(events[0]["user"]["email"], "ada@hook.test");
    assert_eq!(d["email_action_type"], "signup", "{d}");
    assert_eq!(d["site_url"], "http://app.test");
    assert_eq!(d["redirect_to"], "http://app.test/welcome");
    assert_eq!(d["token"].as_str().unwrap().len(), 6, "{d}");
    assert_eq!(
        (d["token_new"].as_str(), d["token_hash_new"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(queued(&app, "auth.mail").await, 0, "the hook replaces SMTP");
    // token_hash verifies as verifyOtp({token_hash, type}).
    let (s, session) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "signup", "token_hash": d["token_hash"]}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert!(session["user"]["email_confirmed_at"].is_string());

    // Recovery: the 6-digit token verifies with the address.
    let (s, _) = post(&app, "/auth/v1/recover", json!({"email": "ada@hook.test"})).await;
    assert_eq!(s, 200);
    let d = fake.events()[1]["email_data"].clone();
    assert_eq!(d["email_action_type"], "recovery");
    let (s, session) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "recovery", "email": "ada@hook.test", "token": d["token"]}),
    )
    .await;
    assert_eq!(s, 200, "{session}");

    // A hook refusing with a client error code: that code and message.
    fake.answer(Answer::Json(
        200,
        json!({"error": {"http_code": 400, "message": "Domain not allowed"}}),
    ));
    let (s, e) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "bob@hook.test", "password": "lovelace1815"}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["message"], "Domain not allowed");
    assert_eq!(fake.bad_signatures(), 0);
}

#[tokio::test]
async fn postgres_function_hooks_send_sms_and_mail() {
    let app = hook_app(|c| {
        c.auth.hooks.send_sms = pg_hook("send_sms_hook");
        c.auth.hooks.send_email = pg_hook("send_email_hook");
    })
    .await;
    let db = app.db.client().await;
    db.batch_execute(
        "CREATE TABLE public.hook_events (id serial PRIMARY KEY, event jsonb NOT NULL);
         CREATE FUNCTION public.send_sms_hook(event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
         BEGIN
           IF event->'user'->>'phone' = '15550100499' THEN
             RETURN jsonb_build_object('error', jsonb_build_object('http_code', 400, 'message', 'Number blocked'));
           END IF;
           INSERT INTO public.hook_events (event) VALUES (event);
           RETURN '{}'::jsonb;
         END $$;
         CREATE FUNCTION public.send_email_hook(event jsonb) RETURNS jsonb LANGUAGE sql AS $$
           INSERT INTO public.hook_events (event) VALUES (event) RETURNING '{}'::jsonb
         $$;",
    )
    .await
    .unwrap();
    let last = |db: tokio_postgres::Client| async move {
        let v: Value = db
            .query_one(
                "SELECT event FROM public.hook_events ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (db, v)
    };

    let (s, body) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100410"})).await;
    assert_eq!(s, 200, "{body}");
    let (db, event) = last(db).await;
    assert_eq!(event["user"]["phone"], "15550100410");
    let otp = event["sms"]["otp"].as_str().unwrap().to_string();
    let (s, session) = verify(&app, "sms", "+15550100410", &otp).await;
    assert_eq!(s, 200, "{session}");

    let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100499"})).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["message"], "Number blocked");

    let (s, _) = post(&app, "/auth/v1/otp", json!({"email": "cy@hook.test"})).await;
    assert_eq!(s, 200);
    let (_db, event) = last(db).await;
    assert_eq!(event["user"]["email"], "cy@hook.test");
    let d = &event["email_data"];
    assert!(
        matches!(
            d["email_action_type"].as_str(),
            Some("signup" | "magiclink")
        ),
        "{d}"
    );
    let (s, session) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "email", "email": "cy@hook.test", "token": d["token"]}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(
        queued(&app, "auth.sms").await + queued(&app, "auth.mail").await,
        0
    );
}

#[test]
fn malformed_hook_and_template_config_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fluxbase.yaml");
    std::fs::write(
        &f,
        "auth:\n  hooks:\n    send_sms:\n      enabled: true\n      uri: https://hook.test/sms\n  templates:\n    invite:\n      content: \"{{ if .Data.x }}open\"\n",
    )
    .unwrap();
    let out = crate::support::bin()
        .args(["config", "check", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("auth.hooks.send_sms.secrets"), "{text}");
    assert!(
        text.contains("auth.templates.invite.content") && text.contains("without its {{ end }}"),
        "{text}"
    );
}
