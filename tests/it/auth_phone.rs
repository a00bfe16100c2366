//! Phone sign-in as GoTrue does it, with the codes read from a real fake SMS provider
//! (tests/it/support/sms_provider.rs) that speaks Twilio's, MessageBird's, Textlocal's and
//! Vonage's HTTP shapes: sign-up and confirmation, OTP sign-in, password sign-in by number,
//! phone change, resend, admin users with numbers, the limits, and delivery through the job
//! queue when the provider is slow or failing.

use crate::support::sms_provider::{FakeSms, Mode, SENDER, TWILIO_FROM};
use crate::support::{start_runner, TestApp};
use fluxbase::config::Config;
use fluxbase::jobs::worker::RunnerHandle;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An app with phone sign-in on, texting through the fake as `provider`, SMS worker running.
async fn phone_app(
    provider: &str,
    tweak: impl FnOnce(&mut Config),
) -> (FakeSms, TestApp, RunnerHandle) {
    let fake = FakeSms::start();
    let f = fake.clone();
    let provider = provider.to_string();
    let app = TestApp::spawn_with(move |c| {
        c.auth.bcrypt_cost = 4;
        c.auth.sms.enabled = true;
        f.configure(&mut c.auth.sms, &provider);
        c.outbound.allow_private_networks = vec!["127.0.0.4/32".into()];
        c.jobs.poll_interval_ms = 100;
        c.jobs.backoff_base_ms = 100;
        c.jobs.backoff_cap_ms = 400;
        tweak(c);
    })
    .await;
    let mut reg = fluxbase::jobs::Registry::default();
    fluxbase::auth::register_jobs(&mut reg, &app.state);
    let runner = start_runner(&app, reg, false);
    (fake, app, runner)
}

/// A request with the anon key (or `bearer`) and the API version header, so errors come as
/// `{code, message}`.
pub(crate) async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = app
        .http
        .request(method, app.url(path))
        .header("apikey", app.anon_key())
        .bearer_auth(bearer.map(str::to_string).unwrap_or_else(|| app.anon_key()))
        .header("X-Supabase-Api-Version", "2024-01-01");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let (s, _, b) = call(app, reqwest::Method::POST, path, None, Some(body)).await;
    (s, b)
}

pub(crate) async fn verify(app: &TestApp, kind: &str, phone: &str, token: &str) -> (u16, Value) {
    post(
        app,
        "/auth/v1/verify",
        json!({"type": kind, "phone": phone, "token": token}),
    )
    .await
}

async fn password_grant(app: &TestApp, phone: &str, password: &str) -> (u16, Value) {
    post(
        app,
        "/auth/v1/token?grant_type=password",
        json!({"phone": phone, "password": password}),
    )
    .await
}

pub(crate) fn code_of(v: &Value) -> Option<&str> {
    v["code"].as_str()
}

#[tokio::test]
async fn a_phone_signup_is_confirmed_by_the_texted_code_then_signs_in_with_its_password() {
    let (fake, app, _runner) = phone_app("twilio", |_| {}).await;
    let (_, _, settings) = call(&app, reqwest::Method::GET, "/auth/v1/settings", None, None).await;
    assert_eq!(settings["external"]["phone"], true, "{settings}");
    assert_eq!(settings["sms_provider"], "twilio");
    assert_eq!(settings["phone_autoconfirm"], false);

    let (s, user) = post(
        &app,
        "/auth/v1/signup",
        json!({"phone": "+1 555 0100 001", "password": "lovelace1815", "data": {"name": "Ada"}}),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    assert!(
        user.get("access_token").is_none(),
        "no session before the code: {user}"
    );
    assert_eq!(
        user["phone"], "15550100001",
        "stored as GoTrue does: digits, no +"
    );
    assert_eq!(user["phone_confirmed_at"], Value::Null);
    assert!(user["confirmation_sent_at"].is_string(), "{user}");
    assert_eq!(user["app_metadata"]["provider"], "phone");
    assert_eq!(user["identities"][0]["provider"], "phone");
    assert_eq!(
        user["identities"][0]["identity_data"]["phone_verified"],
        false
    );

    // Twilio's request shape: E.164 with +, the messaging service as From, Basic auth.
    let sms = fake.wait_for("15550100001", 1).await;
    assert_eq!(sms.provider, "twilio");
    assert_eq!(sms.to, "+15550100001");
    assert_eq!(sms.from, TWILIO_FROM);
    assert_eq!(sms.form["Channel"], "sms");
    assert!(sms.body.starts_with("Your code is "), "{}", sms.body);
    let code = sms.code();
    assert_eq!(code.len(), 6);

    let (s, e) = password_grant(&app, "+15550100001", "lovelace1815").await;
    assert_eq!((s, code_of(&e)), (400, Some("phone_not_confirmed")), "{e}");

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (s, e) = verify(&app, "sms", "+15550100001", wrong).await;
    assert_eq!((s, code_of(&e)), (403, Some("otp_expired")), "{e}");

    let (s, session) = verify(&app, "sms", "+1 555 0100 001", &code).await;
    assert_eq!(s, 200, "{session}");
    assert!(session["access_token"].is_string());
    assert!(
        session["user"]["phone_confirmed_at"].is_string(),
        "{session}"
    );
    assert_eq!(
        session["user"]["identities"][0]["identity_data"]["phone_verified"],
        true
    );
    // The code is used up.
    let (s, e) = verify(&app, "sms", "+15550100001", &code).await;
    assert_eq!((s, code_of(&e)), (403, Some("otp_expired")), "{e}");

    let (s, session) = password_grant(&app, "+15550100001", "lovelace1815").await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["user"]["phone"], "15550100001");
    let (s, e) = password_grant(&app, "+15550100001", "wrong-password").await;
    assert_eq!((s, code_of(&e)), (400, Some("invalid_credentials")), "{e}");

    // Signing up a confirmed number again does not tell that it is registered.
    let (s, again) = post(
        &app,
        "/auth/v1/signup",
        json!({"phone": "+15550100001", "password": "another-pass"}),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert!(again.get("access_token").is_none());
    assert_ne!(again["id"], session["user"]["id"]);
    assert_eq!(fake.messages().len(), 1, "no SMS for a registered number");
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test]
async fn each_sms_provider_is_spoken_in_its_own_request_and_response_shapes() {
    for (i, provider) in ["twilio", "messagebird", "textlocal", "vonage"]
        .iter()
        .enumerate()
    {
        let (fake, app, _runner) = phone_app(provider, |_| {}).await;
        let number = format!("4915100000{i:02}");
        let (s, b) = post(&app, "/auth/v1/otp", json!({"phone": format!("+{number}")})).await;
        assert_eq!((s, &b), (200, &json!({})), "{provider}");
        let sms = fake.wait_for(&number, 1).await;
        assert_eq!(sms.provider, *provider);
        match *provider {
            "twilio" => assert_eq!(sms.to, format!("+{number}")),
            "messagebird" => {
                assert_eq!(
                    (sms.to.as_str(), sms.from.as_str()),
                    (number.as_str(), SENDER)
                );
                assert_eq!(sms.form["datacoding"], "unicode");
            }
            "textlocal" | "vonage" => {
                assert_eq!(
                    (sms.to.as_str(), sms.from.as_str()),
                    (number.as_str(), SENDER)
                )
            }
            _ => unreachable!(),
        }
        // The job records the provider's message id, read from its own answer.
        let c = app.db.client().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let result = loop {
            let r: Option<Value> = c
                .query_one("SELECT result FROM jobs.jobs WHERE queue = 'auth.sms'", &[])
                .await
                .unwrap()
                .get(0);
            if let Some(r) = r {
                break r;
            }
            assert!(Instant::now() < deadline, "{provider}: job never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(result["provider"], *provider);
        assert!(result["message_id"].is_string(), "{provider}: {result}");
        // An unknown number was signed up by the OTP; the code confirms and signs it in.
        let (s, session) = verify(&app, "sms", &number, &sms.code()).await;
        assert_eq!(s, 200, "{provider}: {session}");
        assert!(session["user"]["phone_confirmed_at"].is_string());
        assert_eq!(session["user"]["phone"], number);
        assert!(
            fake.refusals().is_empty(),
            "{provider}: {:?}",
            fake.refusals()
        );
    }
}

#[tokio::test]
async fn otp_requests_are_checked_as_gotrue_checks_them() {
    let (fake, app, _runner) = phone_app("twilio", |_| {}).await;
    let (s, e) = post(
        &app,
        "/auth/v1/otp",
        json!({"phone": "+15550100101", "create_user": false}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (422, Some("otp_disabled")), "{e}");
    for bad in ["12ab", "+0123", "", "+1 (555) 0100"] {
        let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": bad, "email": null})).await;
        if bad.is_empty() {
            // No number and no address: an email OTP without an address.
            assert_eq!(s, 400, "{e}");
            continue;
        }
        assert_eq!(
            (s, code_of(&e)),
            (400, Some("validation_failed")),
            "{bad}: {e}"
        );
    }
    let (s, e) = post(
        &app,
        "/auth/v1/otp",
        json!({"phone": "+15550100101", "email": "x@example.test"}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (400, Some("validation_failed")), "{e}");
    let (s, e) = post(
        &app,
        "/auth/v1/otp",
        json!({"phone": "+15550100101", "channel": "carrier-pigeon"}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (400, Some("validation_failed")), "{e}");

    // WhatsApp goes through Twilio with both ends prefixed.
    let (s, _) = post(
        &app,
        "/auth/v1/otp",
        json!({"phone": "+15550100101", "channel": "whatsapp"}),
    )
    .await;
    assert_eq!(s, 200);
    let sms = fake.wait_for("15550100101", 1).await;
    assert_eq!(sms.to, "whatsapp:+15550100101");
    assert_eq!(sms.from, format!("whatsapp:{TWILIO_FROM}"));
    assert_eq!(sms.form["Channel"], "whatsapp");
    // The user exists now: create_user false still sends.
    let (s, e) = verify(&app, "sms", "15550100101", &sms.code()).await;
    assert_eq!(s, 200, "{e}");

    // Other providers carry SMS only.
    let (_fake2, app2, _r2) = phone_app("vonage", |_| {}).await;
    let (s, e) = post(
        &app2,
        "/auth/v1/otp",
        json!({"phone": "+15550100102", "channel": "whatsapp"}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (400, Some("validation_failed")), "{e}");
}

#[tokio::test]
async fn codes_expire_and_sends_are_limited_per_number_and_per_hour() {
    let (fake, app, _runner) = phone_app("textlocal", |c| {
        c.auth.sms.otp_exp = 1;
        c.auth.sms.otp_length = 8;
        c.auth.sms.template = "Fluxbase: {{ .Code }} is your code".into();
        c.auth.rate_limit.sms_sent_per_hour = 3;
    })
    .await;
    let (s, _) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100201"})).await;
    assert_eq!(s, 200);
    let sms = fake.wait_for("15550100201", 1).await;
    assert!(sms.body.starts_with("Fluxbase: "), "{}", sms.body);
    assert_eq!(sms.code().len(), 8, "auth.sms.otp_length");

    // Another code for the same number within max_frequency_secs (60).
    let (s, h, e) = call(
        &app,
        reqwest::Method::POST,
        "/auth/v1/otp",
        None,
        Some(json!({"phone": "+15550100201"})),
    )
    .await;
    assert_eq!(
        (s, code_of(&e)),
        (429, Some("over_sms_send_rate_limit")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("For security purposes, you can only request this after"),
        "{e}"
    );
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    // auth.sms.otp_exp is 1 second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, e) = verify(&app, "sms", "15550100201", &sms.code()).await;
    assert_eq!((s, code_of(&e)), (403, Some("otp_expired")), "{e}");

    // Three SMS per hour for the instance: the fourth is refused.
    for n in 2..=3 {
        let (s, e) = post(
            &app,
            "/auth/v1/otp",
            json!({"phone": format!("+1555010020{n}")}),
        )
        .await;
        assert_eq!(s, 200, "{e}");
    }
    let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100209"})).await;
    assert_eq!(
        (s, code_of(&e)),
        (429, Some("over_sms_send_rate_limit")),
        "{e}"
    );
    assert_eq!(e["message"], "SMS rate limit exceeded");
}

async fn email_user(app: &TestApp, email: &str) -> Value {
    let (s, session) = post(
        app,
        "/auth/v1/signup",
        json!({"email": email, "password": "hopper1906"}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    session
}

#[tokio::test]
async fn a_phone_change_takes_effect_with_the_code_sent_to_the_new_number() {
    let (fake, app, _runner) = phone_app("vonage", |c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.sms.max_frequency_secs = 0;
    })
    .await;
    let session = email_user(&app, "grace@example.test").await;
    let token = session["access_token"].as_str().unwrap();
    let (s, _, user) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user",
        Some(token),
        Some(json!({"phone": "+4915100000301"})),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    assert_eq!(user["phone"], "", "unchanged until confirmed");
    assert_eq!(user["new_phone"], "4915100000301");
    assert!(user["phone_change_sent_at"].is_string(), "{user}");
    let first = fake.wait_for("4915100000301", 1).await;

    // Resend, for the user named by the address; the first code dies.
    let (s, b) = post(
        &app,
        "/auth/v1/resend",
        json!({"type": "phone_change", "email": "grace@example.test"}),
    )
    .await;
    assert_eq!((s, &b), (200, &json!({})));
    let second = fake.wait_for("4915100000301", 2).await;
    if first.code() != second.code() {
        let (s, e) = verify(&app, "phone_change", "4915100000301", &first.code()).await;
        assert_eq!((s, code_of(&e)), (403, Some("otp_expired")), "{e}");
    }
    let (s, session) = verify(&app, "phone_change", "+4915100000301", &second.code()).await;
    assert_eq!(s, 200, "{session}");
    let u = &session["user"];
    assert_eq!(u["phone"], "4915100000301");
    assert!(u["phone_confirmed_at"].is_string());
    assert!(u.get("new_phone").is_none(), "{u}");
    assert!(u.get("phone_change_sent_at").is_none(), "{u}");
    assert!(
        u["identities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["provider"] == "phone"
                && i["identity_data"]["phone"] == "4915100000301"
                && i["identity_data"]["phone_verified"] == true),
        "{u}"
    );
    assert_eq!(u["app_metadata"]["providers"], json!(["email", "phone"]));
    // Now a password sign-in by number works too.
    let (s, e) = password_grant(&app, "+4915100000301", "hopper1906").await;
    assert_eq!(s, 200, "{e}");

    // The number is taken for everyone else.
    let other = email_user(&app, "ada@example.test").await;
    let (s, _, e) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user",
        other["access_token"].as_str(),
        Some(json!({"phone": "4915100000301"})),
    )
    .await;
    assert_eq!((s, code_of(&e)), (422, Some("phone_exists")), "{e}");
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test]
async fn admins_create_and_update_users_with_numbers() {
    let (fake, app, _runner) = phone_app("messagebird", |_| {}).await;
    let key = app.service_key();
    let admin = |m: reqwest::Method, path: &str, body: Value| {
        let key = key.clone();
        let app = &app;
        let path = path.to_string();
        async move {
            let (s, _, b) = call(app, m, &path, Some(&key), Some(body)).await;
            (s, b)
        }
    };
    let (s, u) = admin(
        reqwest::Method::POST,
        "/auth/v1/admin/users",
        json!({"phone": "+15550100401", "password": "turing1912", "phone_confirm": true}),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["phone"], "15550100401");
    assert!(u["phone_confirmed_at"].is_string());
    assert_eq!(u["identities"][0]["provider"], "phone");
    let (s, e) = password_grant(&app, "15550100401", "turing1912").await;
    assert_eq!(s, 200, "{e}");
    let (s, e) = admin(
        reqwest::Method::POST,
        "/auth/v1/admin/users",
        json!({"phone": "15550100401", "password": "x-turing1912"}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (422, Some("phone_exists")), "{e}");

    // Without phone_confirm the number must still be confirmed by a code.
    let (s, u2) = admin(
        reqwest::Method::POST,
        "/auth/v1/admin/users",
        json!({"phone": "+15550100402", "email": "both@example.test", "password": "hopper1906"}),
    )
    .await;
    assert_eq!(s, 200, "{u2}");
    assert_eq!(u2["app_metadata"]["providers"], json!(["email", "phone"]));
    let (s, e) = password_grant(&app, "15550100402", "hopper1906").await;
    assert_eq!((s, code_of(&e)), (400, Some("phone_not_confirmed")), "{e}");
    let (s, b) = post(
        &app,
        "/auth/v1/resend",
        json!({"type": "sms", "phone": "+15550100402"}),
    )
    .await;
    assert_eq!((s, &b), (200, &json!({})));
    let sms = fake.wait_for("15550100402", 1).await;
    let (s, e) = verify(&app, "sms", "15550100402", &sms.code()).await;
    assert_eq!(s, 200, "{e}");
    // A confirmed number gets no second confirmation.
    let (s, _) = post(
        &app,
        "/auth/v1/resend",
        json!({"type": "sms", "phone": "+15550100402"}),
    )
    .await;
    assert_eq!(s, 200);

    // An admin moves a number; the taken one is refused.
    let id = u2["id"].as_str().unwrap();
    let (s, e) = admin(
        reqwest::Method::PUT,
        &format!("/auth/v1/admin/users/{id}"),
        json!({"phone": "15550100401"}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (422, Some("phone_exists")), "{e}");
    let (s, u) = admin(
        reqwest::Method::PUT,
        &format!("/auth/v1/admin/users/{id}"),
        json!({"phone": "+15550100403", "phone_confirm": true}),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["phone"], "15550100403");
    let (s, e) = password_grant(&app, "15550100403", "hopper1906").await;
    assert_eq!(s, 200, "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.messages().len(), 1, "{:?}", fake.messages());
}

#[tokio::test]
async fn phone_sign_in_is_off_until_enabled() {
    let app = TestApp::spawn_with(|c| c.auth.bcrypt_cost = 4).await;
    let (_, _, settings) = call(&app, reqwest::Method::GET, "/auth/v1/settings", None, None).await;
    assert_eq!(settings["external"]["phone"], false, "{settings}");
    assert_eq!(settings["sms_provider"], "log");
    for (path, body) in [
        (
            "/auth/v1/signup",
            json!({"phone": "+15550100501", "password": "lovelace1815"}),
        ),
        ("/auth/v1/otp", json!({"phone": "+15550100501"})),
        (
            "/auth/v1/token?grant_type=password",
            json!({"phone": "+15550100501", "password": "lovelace1815"}),
        ),
    ] {
        let (s, e) = post(&app, path, body).await;
        assert_eq!(
            (s, code_of(&e)),
            (400, Some("phone_provider_disabled")),
            "{path}: {e}"
        );
    }
}

#[tokio::test]
async fn autoconfirm_answers_phone_signups_with_a_session_and_changes_numbers_at_once() {
    let (fake, app, _runner) = phone_app("twilio", |c| c.auth.sms.autoconfirm = true).await;
    let (_, _, settings) = call(&app, reqwest::Method::GET, "/auth/v1/settings", None, None).await;
    assert_eq!(settings["phone_autoconfirm"], true);
    let (s, session) = post(
        &app,
        "/auth/v1/signup",
        json!({"phone": "+15550100601", "password": "lovelace1815"}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert!(session["access_token"].is_string(), "{session}");
    assert!(session["user"]["phone_confirmed_at"].is_string());
    let (s, e) = post(
        &app,
        "/auth/v1/signup",
        json!({"phone": "+15550100601", "password": "lovelace1815"}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (422, Some("user_already_exists")), "{e}");
    let (s, _, u) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user",
        session["access_token"].as_str(),
        Some(json!({"phone": "+15550100602"})),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["phone"], "15550100602");
    let (s, e) = password_grant(&app, "+15550100602", "lovelace1815").await;
    assert_eq!(s, 200, "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.messages().is_empty(), "{:?}", fake.messages());
}

#[tokio::test]
async fn test_numbers_get_their_fixed_code_and_no_sms() {
    let (fake, app, _runner) = phone_app("twilio", |c| {
        c.auth.sms.test_otp = vec!["+15550100999:424242".into()];
    })
    .await;
    let (s, _) = post(&app, "/auth/v1/otp", json!({"phone": "+1 555 0100 999"})).await;
    assert_eq!(s, 200);
    let (s, session) = verify(&app, "sms", "15550100999", "424242").await;
    assert_eq!(s, 200, "{session}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.messages().is_empty());
    assert_eq!(fake.attempts(), 0);
}

#[tokio::test]
async fn a_slow_or_failing_provider_never_holds_a_request_and_is_retried() {
    let (fake, app, _runner) = phone_app("twilio", |_| {}).await;
    // Slow: the request answers at once; the SMS arrives when the provider is done.
    fake.set_mode(Mode::Slow(Duration::from_secs(3)));
    let t = Instant::now();
    let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100701"})).await;
    assert_eq!(s, 200, "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    fake.wait_for("15550100701", 1).await;

    // Failing twice with 500: the queue tries again and the third attempt delivers.
    fake.set_mode(Mode::Fail(2));
    let before = fake.attempts();
    let t = Instant::now();
    let (s, e) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100702"})).await;
    assert_eq!(s, 200, "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let sms = fake.wait_for("15550100702", 1).await;
    assert_eq!(fake.attempts() - before, 3);
    let (s, e) = verify(&app, "sms", "15550100702", &sms.code()).await;
    assert_eq!(s, 200, "{e}");
}

#[tokio::test]
async fn a_provider_refusal_is_not_retried_and_the_provider_is_reached_only_through_the_guard() {
    // Wrong credentials: the provider's refusal dead-letters the job at once.
    let (fake, app, _runner) = phone_app("messagebird", |c| {
        c.auth.sms.messagebird.access_key = Some(fluxbase::config::Secret::new("wrong"));
    })
    .await;
    let (s, _) = post(&app, "/auth/v1/otp", json!({"phone": "+15550100801"})).await;
    assert_eq!(s, 200);
    let c = app.db.client().await;
    let id: i64 = c
        .query_one("SELECT id FROM jobs.jobs WHERE queue = 'auth.sms'", &[])
        .await
        .unwrap()
        .get(0);
    let job = crate::support::wait_status(&app, id, "dead", Duration::from_secs(10)).await;
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("incorrect access_key"),
        "{job}"
    );
    assert_eq!(fake.refusals().len(), 1);

    // Without the loopback allowance the outbound guard refuses the provider's address.
    let fake2 = FakeSms::start();
    let f2 = fake2.clone();
    let app2 = TestApp::spawn_with(move |c| {
        c.auth.sms.enabled = true;
        f2.configure(&mut c.auth.sms, "vonage");
        c.jobs.poll_interval_ms = 100;
    })
    .await;
    let mut reg = fluxbase::jobs::Registry::default();
    fluxbase::auth::register_jobs(&mut reg, &app2.state);
    let _r2 = start_runner(&app2, reg, false);
    let (s, _) = post(&app2, "/auth/v1/otp", json!({"phone": "+15550100802"})).await;
    assert_eq!(s, 200);
    let c2 = app2.db.client().await;
    let id: i64 = c2
        .query_one("SELECT id FROM jobs.jobs WHERE queue = 'auth.sms'", &[])
        .await
        .unwrap()
        .get(0);
    let job = crate::support::wait_status(&app2, id, "dead", Duration::from_secs(10)).await;
    assert!(
        job["last_error"].as_str().unwrap().contains("not allowed"),
        "{job}"
    );
    assert_eq!(fake2.attempts(), 0);
}

#[tokio::test]
async fn the_log_sender_completes_the_job_and_phone_users_reauthenticate_by_sms() {
    let app = TestApp::spawn_with(|c| {
        c.auth.bcrypt_cost = 4;
        c.auth.sms.enabled = true;
        c.auth.sms.autoconfirm = true;
        c.jobs.poll_interval_ms = 100;
    })
    .await;
    let mut reg = fluxbase::jobs::Registry::default();
    fluxbase::auth::register_jobs(&mut reg, &app.state);
    let _runner = start_runner(&app, reg, false);
    let (s, session) = post(
        &app,
        "/auth/v1/signup",
        json!({"phone": "+15550100901", "password": "lovelace1815"}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    let (s, _, b) = call(
        &app,
        reqwest::Method::GET,
        "/auth/v1/reauthenticate",
        session["access_token"].as_str(),
        None,
    )
    .await;
    assert_eq!((s, &b), (200, &json!({})));
    let c = app.db.client().await;
    let row = c
        .query_one(
            "SELECT id, payload FROM jobs.jobs WHERE queue = 'auth.sms'",
            &[],
        )
        .await
        .unwrap();
    let (id, payload): (i64, Value) = (row.get(0), row.get(1));
    assert_eq!(payload["kind"], "reauthentication");
    assert_eq!(payload["to"], "15550100901");
    let job = crate::support::wait_status(&app, id, "succeeded", Duration::from_secs(10)).await;
    assert_eq!(job["result"]["provider"], "log", "{job}");
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn mfa_phone_factors_text_their_challenges_and_make_the_session_aal2() {
    let (fake, app, _runner) = phone_app("twilio", |c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.sms.mfa_enabled = true;
    })
    .await;
    let session = email_user(&app, "mfa@example.test").await;
    let token = session["access_token"].as_str().unwrap().to_string();
    let authed = |m: reqwest::Method, path: String, body: Value| {
        let (app, token) = (&app, token.clone());
        async move {
            let (s, _, b) = call(app, m, &path, Some(&token), Some(body)).await;
            (s, b)
        }
    };
    let (s, f) = authed(
        reqwest::Method::POST,
        "/auth/v1/factors".into(),
        json!({"factor_type": "phone", "phone": "+1 555 0101 001", "friendly_name": "my phone"}),
    )
    .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        (f["type"].as_str(), f["phone"].as_str()),
        (Some("phone"), Some("15550101001"))
    );
    let fid = f["id"].as_str().unwrap().to_string();
    let (s, e) = authed(
        reqwest::Method::POST,
        "/auth/v1/factors".into(),
        json!({"factor_type": "phone"}),
    )
    .await;
    assert_eq!((s, code_of(&e)), (400, Some("validation_failed")), "{e}");

    let (s, ch) = authed(
        reqwest::Method::POST,
        format!("/auth/v1/factors/{fid}/challenge"),
        json!({"channel": "sms"}),
    )
    .await;
    assert_eq!(s, 200, "{ch}");
    assert_eq!(ch["type"], "phone");
    assert!(ch["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    let cid = ch["id"].as_str().unwrap().to_string();
    let sms = fake.wait_for("15550101001", 1).await;
    assert_eq!(sms.to, "+15550101001");
    // Another challenge within max_frequency_secs.
    let (s, e) = authed(
        reqwest::Method::POST,
        format!("/auth/v1/factors/{fid}/challenge"),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, code_of(&e)),
        (429, Some("over_sms_send_rate_limit")),
        "{e}"
    );

    let wrong = if sms.code() == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (s, e) = authed(
        reqwest::Method::POST,
        format!("/auth/v1/factors/{fid}/verify"),
        json!({"challenge_id": cid, "code": wrong}),
    )
    .await;
    assert_eq!(
        (s, code_of(&e)),
        (422, Some("mfa_verification_failed")),
        "{e}"
    );
    let (s, aal2) = authed(
        reqwest::Method::POST,
        format!("/auth/v1/factors/{fid}/verify"),
        json!({"challenge_id": cid, "code": sms.code()}),
    )
    .await;
    assert_eq!(s, 200, "{aal2}");
    let c = claims(aal2["access_token"].as_str().unwrap());
    assert_eq!(c["aal"], "aal2", "{c}");
    assert_eq!(c["amr"][0]["method"], "mfa/phone", "{c}");
    let factors = &aal2["user"]["factors"];
    assert_eq!(factors[0]["factor_type"], "phone", "{factors}");
    assert_eq!(factors[0]["status"], "verified");
    assert_eq!(factors[0]["phone"], "15550101001");

    // One verified factor per number.
    let (s, e) = authed(
        reqwest::Method::POST,
        "/auth/v1/factors".into(),
        json!({"factor_type": "phone", "phone": "15550101001", "friendly_name": "again"}),
    )
    .await;
    assert_eq!(
        (s, code_of(&e)),
        (422, Some("mfa_verified_factor_exists")),
        "{e}"
    );

    // Off: enroll is refused.
    let app2 = TestApp::spawn_with(|c| {
        c.auth.bcrypt_cost = 4;
        c.auth.mailer_autoconfirm = true;
    })
    .await;
    let s2 = email_user(&app2, "nomfa@example.test").await;
    let (s, _, e) = call(
        &app2,
        reqwest::Method::POST,
        "/auth/v1/factors",
        s2["access_token"].as_str(),
        Some(json!({"factor_type": "phone", "phone": "+15550101002"})),
    )
    .await;
    assert_eq!(
        (s, code_of(&e)),
        (422, Some("mfa_phone_enroll_not_enabled")),
        "{e}"
    );
}

#[tokio::test]
async fn twilio_verify_sends_and_checks_the_code_instead_of_storing_one() {
    use crate::support::sms_provider::TWILIO_VERIFY_SID;
    let (fake, app, _runner) = phone_app("twilio_verify", |_| {}).await;
    let (_, _, settings) = call(&app, reqwest::Method::GET, "/auth/v1/settings", None, None).await;
    assert_eq!(settings["sms_provider"], "twilio_verify");

    // Send: Verify's Verifications endpoint with To (E.164) and Channel; Twilio makes the code.
    let (s, body) = post(&app, "/auth/v1/otp", json!({"phone": "+1 555 0100 301"})).await;
    assert_eq!(s, 200, "{body}");
    let sms = fake.wait_for("15550100301", 1).await;
    assert_eq!(sms.provider, "twilio_verify");
    assert_eq!(sms.to, "+15550100301");
    assert_eq!(sms.from, TWILIO_VERIFY_SID);
    assert_eq!(sms.form["Channel"], "sms");
    assert!(!sms.form.contains_key("Body"), "Verify writes its own text");
    let code = sms.code();
    // Fluxbase keeps no code of its own: only the marker that a verification is pending.
    let c = app.db.client().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM auth.one_time_tokens WHERE relates_to = '15550100301' AND token_type = 'sms'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // A wrong code: checked with Twilio (pending), refused as GoTrue refuses it.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (s, e) = verify(&app, "sms", "+15550100301", wrong).await;
    assert_eq!((s, code_of(&e)), (403, Some("otp_expired")), "{e}");
    // A non-numeric code never reaches Twilio.
    let (s, e) = verify(&app, "sms", "+15550100301", "twilio-verify").await;
    assert_eq!((s, code_of(&e)), (403, Some("otp_expired")), "{e}");
    assert_eq!(
        fake.checks(),
        vec![("+15550100301".to_string(), wrong.to_string(), false)]
    );

    // The right code: Twilio approves, the user is confirmed and signed in.
    let (s, session) = verify(&app, "sms", "+15550100301", &code).await;
    assert_eq!(s, 200, "{session}");
    assert!(session["access_token"].is_string());
    assert!(
        session["user"]["phone_confirmed_at"].is_string(),
        "{session}"
    );
    assert!(
        fake.checks().last().unwrap().2,
        "the right code is approved"
    );
    // Used up at Twilio (404) and here.
    let (s, e) = verify(&app, "sms", "+15550100301", &code).await;
    assert_eq!((s, code_of(&e)), (403, Some("otp_expired")), "{e}");
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());

    // WhatsApp goes through Verify too.
    let (s, body) = post(
        &app,
        "/auth/v1/otp",
        json!({"phone": "+15550100302", "channel": "whatsapp"}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        fake.wait_for("15550100302", 1).await.form["Channel"],
        "whatsapp"
    );
}
