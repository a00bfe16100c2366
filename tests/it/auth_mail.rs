//! Auth mail beyond sign-up: invitations, admin-generated links, reauthentication nonces,
//! (secure) email change, configurable templates and the per-endpoint rate limits — read
//! from the messages a real SMTP sink received.

use crate::support::smtp::{Mail, SmtpSink};
use crate::support::{start_runner, TestApp};
use fluxbase::config::Config;
use fluxbase::jobs::worker::RunnerHandle;
use serde_json::{json, Value};
use std::time::Duration;

/// An app whose auth mail goes over SMTP to a sink, with the mail worker running.
async fn mail_app(tweak: impl FnOnce(&mut Config)) -> (SmtpSink, TestApp, RunnerHandle) {
    let sink = SmtpSink::start();
    let app = TestApp::spawn_with(|c| {
        c.auth.bcrypt_cost = 4;
        c.auth.site_url = "http://app.test".into();
        c.auth.smtp.host = "127.0.0.1".into();
        c.auth.smtp.port = sink.port as u64;
        c.auth.smtp.tls = "none".into();
        c.auth.smtp.sender = "Fluxbase <auth@fluxbase.test>".into();
        tweak(c);
    })
    .await;
    let mut reg = fluxbase::jobs::Registry::default();
    fluxbase::auth::register_jobs(&mut reg, &app.state);
    let runner = start_runner(&app, reg, false);
    (sink, app, runner)
}

/// A request with a key (and the API version header, so errors come as `{code, message}`).
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = app
        .http
        .request(method, app.url(path))
        .header("apikey", app.anon_key())
        .bearer_auth(key)
        .header("X-Supabase-Api-Version", "2024-01-01");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str, key: &str, body: Value) -> (u16, Value) {
    let (s, _, b) = call(app, reqwest::Method::POST, path, key, Some(body)).await;
    (s, b)
}

fn code_in(text: &str) -> String {
    let i = text.find("code: ").expect("code in mail") + 6;
    text[i..i + 6].to_string()
}

/// The first verify link of a mail's plain-text part.
fn link_in(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.contains("/auth/v1/verify?"))
        .expect("link in mail")
        .to_string()
}

fn subject(m: &Mail) -> String {
    m.data
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string()
}

fn no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The fragment parameters of a 303 from GET /verify.
async fn follow(app: &TestApp, link: &str) -> (String, std::collections::HashMap<String, String>) {
    let path = &link[link.find("/auth/v1/verify").unwrap()..];
    let r = no_redirect().get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 303, "{link}");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let (base, frag) = loc.split_once('#').unwrap_or((&loc, ""));
    let params = url::form_urlencoded::parse(frag.as_bytes())
        .into_owned()
        .collect();
    (base.to_string(), params)
}

async fn signed_up(app: &TestApp, email: &str, password: &str) -> Value {
    let (s, session) = post(
        app,
        "/auth/v1/signup",
        &app.anon_key(),
        json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert!(session["access_token"].is_string(), "{session}");
    session
}

#[tokio::test]
async fn invites_arrive_in_the_configured_template_and_the_link_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("invite.html");
    std::fs::write(
        &file,
        "<p>Hi {{ .Data.name }} ({{.Email}}), join {{ .SiteURL }}: <a href=\"{{ .ConfirmationURL }}\">accept</a>, code {{ .Token }}, then {{ .RedirectTo }}</p>",
    )
    .unwrap();
    let path = file.to_string_lossy().into_owned();
    let (sink, app, runner) = mail_app(|c| {
        c.auth.templates.invite.subject = "Welcome to {{ .SiteURL }}".into();
        c.auth.templates.invite.content_path = path;
    })
    .await;
    let svc = app.service_key();

    // service_role only.
    let (s, _) = post(
        &app,
        "/auth/v1/invite",
        &app.anon_key(),
        json!({"email": "ada@example.test"}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, user) = post(
        &app,
        "/auth/v1/invite?redirect_to=http%3A%2F%2Fapp.test%2Fwelcome",
        &svc,
        json!({"email": "Ada@Example.test", "data": {"name": "Ada <Byron>"}}),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    assert_eq!(user["email"], "ada@example.test");
    assert!(user["invited_at"].is_string(), "{user}");
    assert!(user["confirmation_sent_at"].is_string(), "{user}");
    assert_eq!(user["email_confirmed_at"], Value::Null);
    assert_eq!(user["user_metadata"]["name"], "Ada <Byron>");

    let mail = sink.wait_for("ada@example.test", 1).await;
    assert_eq!(subject(&mail), "Welcome to http://app.test");
    let text = mail.text();
    assert!(
        text.contains("Content-Type: text/html") && text.contains("Content-Type: text/plain"),
        "{}",
        mail.data
    );
    // The configured HTML, values escaped; the link's `&` as `&amp;` inside the href.
    assert!(
        text.contains(
            "<p>Hi Ada &lt;Byron&gt; (ada@example.test), join http://app.test: <a href=\"http://"
        ),
        "{text}"
    );
    assert!(text.contains("&amp;type=invite&amp;redirect_to="), "{text}");
    assert!(text.contains("then http://app.test/welcome</p>"), "{text}");
    let code = code_in(&text);
    assert!(text.contains(&format!("code {code}, then")), "{text}");
    let link = link_in(&text);
    assert!(link.contains("type=invite"), "{link}");

    // The link confirms the address and signs in, back to redirect_to with type=invite.
    let (base, frag) = follow(&app, &link).await;
    assert_eq!(base, "http://app.test/welcome");
    assert_eq!(
        frag.get("type").map(String::as_str),
        Some("invite"),
        "{frag:?}"
    );
    let access = frag["access_token"].clone();
    let (s, _, me) = call(&app, reqwest::Method::GET, "/auth/v1/user", &access, None).await;
    assert_eq!(s, 200);
    assert!(me["email_confirmed_at"].is_string(), "{me}");
    // The invited user sets a password with that session.
    let (s, _, _) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user",
        &access,
        Some(json!({"password": "chosen by ada"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        &app.anon_key(),
        json!({"email": "ada@example.test", "password": "chosen by ada"}),
    )
    .await;
    assert_eq!(s, 200);
    // A confirmed address cannot be invited again.
    let (s, e) = post(
        &app,
        "/auth/v1/invite",
        &svc,
        json!({"email": "ada@example.test"}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("email_exists")), "{e}");
    // Audited as the admin's act.
    let c = app.db.client().await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM fluxbase.audit_log WHERE action = 'auth.admin.user.invite'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn generated_links_verify_without_any_mail_being_sent() {
    let (sink, app, runner) = mail_app(|c| {
        c.auth.redirect_allow_list = vec!["https://mobile.example/callback".into()];
    })
    .await;
    let svc = app.service_key();
    let gen = |body: Value| {
        let app = &app;
        let svc = svc.clone();
        async move { post(app, "/auth/v1/admin/generate_link", &svc, body).await }
    };
    let (s, _) = post(
        &app,
        "/auth/v1/admin/generate_link",
        &app.anon_key(),
        json!({"type": "signup", "email": "x@example.test", "password": "secret123"}),
    )
    .await;
    assert_eq!(s, 403, "service_role only");

    // signup: creates the user; the hashed token verifies through POST /verify.
    let (s, g) = gen(
        json!({"type": "signup", "email": "sig@example.test", "password": "secret123",
                             "data": {"src": "link"}, "redirect_to": "http://app.test/done"}),
    )
    .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["email"], "sig@example.test");
    assert_eq!(g["user_metadata"]["src"], "link");
    assert_eq!(g["verification_type"], "signup");
    assert_eq!(g["redirect_to"], "http://app.test/done");
    assert!(g["email_otp"].as_str().unwrap().len() == 6);
    let hashed = g["hashed_token"].as_str().unwrap().to_string();
    let action = g["action_link"].as_str().unwrap();
    assert!(
        action.contains(&format!(
            "/auth/v1/verify?token={hashed}&type=signup&redirect_to=http%3A%2F%2Fapp.test%2Fdone"
        )),
        "{action}"
    );
    let (s, session) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "signup", "token_hash": hashed}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert!(session["user"]["email_confirmed_at"].is_string());
    // Used up.
    let (s, e) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "signup", "token_hash": hashed}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("otp_expired")));
    // A confirmed address: no signup link.
    let (s, e) =
        gen(json!({"type": "signup", "email": "sig@example.test", "password": "secret123"})).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("email_exists")));

    // magiclink: the code verifies with the address; an unknown address becomes a signup.
    let (s, g) = gen(json!({"type": "magiclink", "email": "sig@example.test"})).await;
    assert_eq!(
        (s, g["verification_type"].as_str()),
        (200, Some("magiclink")),
        "{g}"
    );
    assert_eq!(
        g["redirect_to"], "http://app.test",
        "the site URL by default"
    );
    let (s, session) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "magiclink", "email": "sig@example.test", "token": g["email_otp"]}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["user"]["email"], "sig@example.test");
    let (s, g) = gen(json!({"type": "magiclink", "email": "fresh@example.test"})).await;
    assert_eq!(
        (s, g["verification_type"].as_str()),
        (200, Some("signup")),
        "{g}"
    );
    assert_eq!(g["email_confirmed_at"], Value::Null);

    // recovery and email change need an existing user.
    let (s, e) = gen(json!({"type": "recovery", "email": "nobody@example.test"})).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("user_not_found")));
    let (s, g) = gen(json!({"type": "recovery", "email": "sig@example.test"})).await;
    assert_eq!(s, 200);
    let (_, frag) = follow(&app, g["action_link"].as_str().unwrap()).await;
    assert_eq!(
        frag.get("type").map(String::as_str),
        Some("recovery"),
        "{frag:?}"
    );
    assert!(frag.contains_key("access_token"), "{frag:?}");

    // invite: the link confirms and signs in.
    let (s, g) =
        gen(json!({"type": "invite", "email": "inv@example.test", "data": {"team": "red"}})).await;
    assert_eq!(s, 200, "{g}");
    assert!(g["invited_at"].is_string());
    let (_, frag) = follow(&app, g["action_link"].as_str().unwrap()).await;
    assert_eq!(
        frag.get("type").map(String::as_str),
        Some("invite"),
        "{frag:?}"
    );

    // email_change_new: the new address's code completes the change.
    let (s, g) = gen(
        json!({"type": "email_change_new", "email": "sig@example.test",
                             "new_email": "sig2@example.test"}),
    )
    .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["new_email"], "sig2@example.test");
    assert!(g["action_link"]
        .as_str()
        .unwrap()
        .contains("type=email_change"));
    let (s, session) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "email_change", "email": "sig2@example.test", "token": g["email_otp"]}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["user"]["email"], "sig2@example.test");
    assert!(session["user"].get("new_email").is_none(), "{session}");
    let (s, e) = gen(
        json!({"type": "email_change_new", "email": "sig2@example.test",
                             "new_email": "inv@example.test"}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("email_exists")));
    // redirect_to: the site, under it, or the allow-list; anything else falls back.
    let (_, g) = gen(json!({"type": "recovery", "email": "sig2@example.test",
                             "redirect_to": "https://mobile.example/callback"}))
    .await;
    assert_eq!(g["redirect_to"], "https://mobile.example/callback");
    let (base, _) = follow(&app, g["action_link"].as_str().unwrap()).await;
    assert_eq!(base, "https://mobile.example/callback");
    let (_, g) = gen(json!({"type": "recovery", "email": "sig2@example.test",
                             "redirect_to": "https://evil.example/"}))
    .await;
    assert_eq!(g["redirect_to"], "http://app.test");
    let (s, e) = gen(json!({"type": "bogus", "email": "sig2@example.test"})).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("validation_failed")));

    // Nothing of that went out by mail (the worker runs: it would have delivered).
    let (s, _) = post(
        &app,
        "/auth/v1/recover",
        &app.anon_key(),
        json!({"email": "sig2@example.test"}),
    )
    .await;
    assert_eq!(s, 200);
    sink.wait_for("sig2@example.test", 1).await;
    assert_eq!(sink.mails().len(), 1, "{:?}", sink.mails());
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn password_change_on_an_old_session_needs_the_mailed_nonce() {
    let (sink, app, runner) = mail_app(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.secure_password_change = true;
    })
    .await;
    let session = signed_up(&app, "re@example.test", "first pass").await;
    let access = session["access_token"].as_str().unwrap().to_string();
    let put = |body: Value| {
        let app = &app;
        let access = access.clone();
        async move {
            let (s, _, b) = call(
                app,
                reqwest::Method::PUT,
                "/auth/v1/user",
                &access,
                Some(body),
            )
            .await;
            (s, b)
        }
    };
    let (s, e) = put(json!({"password": "first pass"})).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("same_password")), "{e}");
    // A session from the last 24 hours changes the password without a nonce (GoTrue).
    let (s, b) = put(json!({"password": "second pass"})).await;
    assert_eq!(s, 200, "{b}");
    let c = app.db.client().await;
    c.execute(
        "UPDATE auth.sessions SET created_at = now() - interval '25 hours'",
        &[],
    )
    .await
    .unwrap();
    let (s, e) = put(json!({"password": "third pass"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("reauthentication_needed")),
        "{e}"
    );
    let (s, e) = put(json!({"password": "third pass", "nonce": "123456"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (422, Some("reauthentication_not_valid")),
        "{e}"
    );

    let (s, _, b) = call(
        &app,
        reqwest::Method::GET,
        "/auth/v1/reauthenticate",
        &access,
        None,
    )
    .await;
    assert_eq!((s, b), (200, json!({})));
    let mail = sink.wait_for("re@example.test", 1).await;
    assert_eq!(subject(&mail), "Confirm reauthentication");
    let nonce = code_in(&mail.text());
    // One nonce mail a minute.
    let (s, h, e) = call(
        &app,
        reqwest::Method::GET,
        "/auth/v1/reauthenticate",
        &access,
        None,
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (429, Some("over_email_send_rate_limit")),
        "{e}"
    );
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    // Stored hashed only.
    let stored: Vec<String> = c
        .query(
            "SELECT token_hash FROM auth.one_time_tokens WHERE token_type = 'reauthentication'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(&nonce));

    let (s, b) = put(json!({"password": "third pass", "nonce": nonce})).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        &app.anon_key(),
        json!({"email": "re@example.test", "password": "third pass"}),
    )
    .await;
    assert_eq!(s, 200);
    // A nonce is good once.
    let (s, e) = put(json!({"password": "fourth pass", "nonce": nonce})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (422, Some("reauthentication_not_valid"))
    );
    // With a verified MFA factor, an aal1 session changes neither password nor email.
    c.execute(
        "INSERT INTO auth.mfa_factors (user_id, friendly_name, factor_type, status, secret)
         SELECT id, 'phone', 'totp', 'verified', 'JBSWY3DPEHPK3PXP' FROM auth.users WHERE email = 're@example.test'",
        &[],
    )
    .await
    .unwrap();
    let (s, e) = put(json!({"password": "fifth pass", "nonce": "000000"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("insufficient_aal")),
        "{e}"
    );
    let (s, e) = put(json!({"email": "re2@example.test"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (401, Some("insufficient_aal")),
        "{e}"
    );
    let (s, b) = put(json!({"data": {"still": "fine"}})).await;
    assert_eq!(
        (s, &b["user_metadata"]["still"]),
        (200, &json!("fine")),
        "{b}"
    );
    // Without a session: 401.
    let (s, _, _) = call(
        &app,
        reqwest::Method::GET,
        "/auth/v1/reauthenticate",
        &app.anon_key(),
        None,
    )
    .await;
    assert_eq!(s, 401);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn secure_email_change_completes_after_both_addresses_confirm() {
    let (sink, app, runner) = mail_app(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.rate_limit.email_min_interval_secs = 0;
    })
    .await;
    let session = signed_up(&app, "old@example.test", "secret123").await;
    signed_up(&app, "taken@example.test", "secret123").await;
    let access = session["access_token"].as_str().unwrap().to_string();
    let (s, _, e) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user",
        &access,
        Some(json!({"email": "Taken@example.test"})),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("email_exists")), "{e}");

    let (s, _, user) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user?redirect_to=http%3A%2F%2Fapp.test%2Fsettings",
        &access,
        Some(json!({"email": "New@example.test"})),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    assert_eq!(
        user["email"], "old@example.test",
        "unchanged until confirmed"
    );
    assert_eq!(user["new_email"], "new@example.test");
    assert!(user["email_change_sent_at"].is_string(), "{user}");

    let first_to_new = sink.wait_for("new@example.test", 1).await;
    sink.wait_for("old@example.test", 1).await;
    // Resent (POST /resend type email_change, by the current address): fresh links and
    // codes for both halves; the first ones are dead.
    let (s, b) = post(
        &app,
        "/auth/v1/resend?redirect_to=http%3A%2F%2Fapp.test%2Fsettings",
        &app.anon_key(),
        json!({"type": "email_change", "email": "old@example.test"}),
    )
    .await;
    assert_eq!((s, b), (200, json!({})));
    let to_new = sink.wait_for("new@example.test", 2).await;
    let to_old = sink.wait_for("old@example.test", 2).await;
    let (s, e) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "email_change", "email": "new@example.test", "token": code_in(&first_to_new.text())}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("otp_expired")), "{e}");
    for m in [&to_new, &to_old] {
        assert_eq!(subject(m), "Confirm email change");
        assert!(
            m.text()
                .contains("from old@example.test to new@example.test"),
            "{}",
            m.text()
        );
    }
    // The new address's link: accepted, the other one still needed.
    let (base, frag) = follow(&app, &link_in(&to_new.text())).await;
    assert_eq!(base, "http://app.test/settings");
    assert_eq!(
        frag.get("message").map(String::as_str),
        Some("Confirmation link accepted. Please proceed to confirm link sent to the other email"),
        "{frag:?}"
    );
    let (_, _, me) = call(&app, reqwest::Method::GET, "/auth/v1/user", &access, None).await;
    assert_eq!(me["email"], "old@example.test");
    // The current address's code completes it.
    let (s, done) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "email_change", "email": "old@example.test", "token": code_in(&to_old.text())}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["user"]["email"], "new@example.test");
    assert!(done["user"].get("new_email").is_none(), "{done}");
    assert_eq!(
        done["user"]["identities"][0]["identity_data"]["email"],
        "new@example.test"
    );
    let (s, _) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        &app.anon_key(),
        json!({"email": "new@example.test", "password": "secret123"}),
    )
    .await;
    assert_eq!(s, 200);
    // Another change: the first half through POST /verify answers GoTrue's message.
    let access = done["access_token"].as_str().unwrap().to_string();
    let (s, _, _) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user",
        &access,
        Some(json!({"email": "third@example.test"})),
    )
    .await;
    assert_eq!(s, 200);
    let to_third = sink.wait_for("third@example.test", 1).await;
    let (s, e) = post(
        &app,
        "/auth/v1/resend",
        &app.anon_key(),
        json!({"type": "email_change", "email": "nobody@example.test"}),
    )
    .await;
    assert_eq!((s, e), (200, json!({})), "no enumeration");
    let (s, half) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "email_change", "email": "third@example.test", "token": code_in(&to_third.text())}),
    )
    .await;
    assert_eq!(
        (s, half),
        (
            200,
            json!({"msg": "Confirmation link accepted. Please proceed to confirm link sent to the other email", "code": "200"})
        )
    );
    runner.shutdown(Duration::from_secs(1)).await;

    // Without secure email change, the new address alone confirms (one mail).
    let (sink, app, runner) = mail_app(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.secure_email_change = false;
    })
    .await;
    let session = signed_up(&app, "one@example.test", "secret123").await;
    let access = session["access_token"].as_str().unwrap().to_string();
    let (s, _, _) = call(
        &app,
        reqwest::Method::PUT,
        "/auth/v1/user",
        &access,
        Some(json!({"email": "two@example.test"})),
    )
    .await;
    assert_eq!(s, 200);
    let mail = sink.wait_for("two@example.test", 1).await;
    let (s, done) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "email_change", "email": "two@example.test", "token": code_in(&mail.text())}),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["user"]["email"], "two@example.test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sink.mails()
            .iter()
            .all(|m| !m.to.iter().any(|t| t.contains("one@"))),
        "no mail to the old address"
    );
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn per_endpoint_limits_answer_429_with_gotrue_codes() {
    let (sink, app, runner) = mail_app(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.rate_limit.signup_per_5min = 2;
        c.auth.rate_limit.verify_per_5min = 1;
        c.auth.rate_limit.token_per_5min = 3;
        c.auth.rate_limit.email_sent_per_hour = 1;
    })
    .await;
    signed_up(&app, "a@example.test", "secret123").await;
    signed_up(&app, "b@example.test", "secret123").await;
    let r = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("apikey", app.anon_key())
        .header("X-Supabase-Api-Version", "2024-01-01")
        .json(&json!({"email": "c@example.test", "password": "secret123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=150).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-sb-error-code"], "over_request_rate_limit");
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "over_request_rate_limit"
    );
    // The alias shares the bucket; the service_role is never limited.
    let (s, _) = post(
        &app,
        "/api/v1/auth/signup",
        &app.anon_key(),
        json!({"email": "c@example.test", "password": "secret123"}),
    )
    .await;
    assert_eq!(s, 429);
    let (s, _) = post(
        &app,
        "/auth/v1/signup",
        &app.service_key(),
        json!({"email": "c@example.test", "password": "secret123"}),
    )
    .await;
    assert_eq!(s, 200);

    // verify: one per 5 minutes here.
    let (s, _) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "signup", "token_hash": "nope"}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, e) = post(
        &app,
        "/auth/v1/verify",
        &app.anon_key(),
        json!({"type": "signup", "token_hash": "nope"}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (429, Some("over_request_rate_limit"))
    );
    let r = no_redirect()
        .get(app.url("/auth/v1/verify?token=nope&type=signup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);

    // Password sign-ins: three, then 429 (refreshes have their own bucket).
    for _ in 0..3 {
        let (s, _) = post(
            &app,
            "/auth/v1/token?grant_type=password",
            &app.anon_key(),
            json!({"email": "a@example.test", "password": "wrong"}),
        )
        .await;
        assert_eq!(s, 400);
    }
    let (s, e) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        &app.anon_key(),
        json!({"email": "a@example.test", "password": "secret123"}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (429, Some("over_request_rate_limit"))
    );
    let (s, _) = post(
        &app,
        "/auth/v1/token?grant_type=refresh_token",
        &app.anon_key(),
        json!({"refresh_token": "nope"}),
    )
    .await;
    assert_eq!(s, 400, "refresh is not a sign-in");

    // Mail: one per hour for the whole instance, whatever the address.
    let (s, _) = post(
        &app,
        "/auth/v1/recover",
        &app.anon_key(),
        json!({"email": "a@example.test"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, e) = post(
        &app,
        "/auth/v1/recover",
        &app.anon_key(),
        json!({"email": "b@example.test"}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (429, Some("over_email_send_rate_limit")),
        "{e}"
    );
    assert_eq!(e["message"], "Email rate limit exceeded");
    sink.wait_for("a@example.test", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.mails().len(), 1);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn conditional_templates_pick_the_branch_of_the_users_locale() {
    let (sink, app, _runner) = mail_app(|c| {
        c.auth.templates.magic_link.subject =
            "{{ if eq .Data.locale \"de\" \"at\" }}Dein Anmeldelink{{ else }}Your sign-in link{{ end }}"
                .into();
        c.auth.templates.magic_link.content = "{{/* locale switch */}}\n\
             {{- if eq .Data.locale \"de\" \"at\" -}}\n<p>Hallo {{ .Data.name }}, Code {{ .Token }}</p>\n\
             {{- else if and .Data.locale (ne .Data.locale \"en\") -}}\n<p>[{{ .Data.locale }}] code {{ .Token }}</p>\n\
             {{- else -}}\n<p>Hello {{ or .Data.name \"there\" }}, code {{ .Token }}</p>\n{{- end }}"
            .into();
    })
    .await;
    let svc = app.service_key();
    for (email, data) in [
        ("de@example.test", json!({"locale": "at", "name": "Jo <J>"})),
        ("fr@example.test", json!({"locale": "fr"})),
        ("en@example.test", json!({})),
    ] {
        let (s, u) = post(
            &app,
            "/auth/v1/admin/users",
            &svc,
            json!({"email": email, "password": "lovelace1815", "email_confirm": true, "user_metadata": data}),
        )
        .await;
        assert_eq!(s, 200, "{u}");
        let (s, b) = post(
            &app,
            "/auth/v1/otp",
            &app.anon_key(),
            json!({"email": email}),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let de = sink.wait_for("de@example.test", 1).await;
    assert_eq!(subject(&de), "Dein Anmeldelink");
    let text = de.text();
    let code = code_in(&text);
    // Trim markers leave exactly the chosen line; values stay HTML-escaped.
    assert!(
        text.contains(&format!("<p>Hallo Jo &lt;J&gt;, Code {code}</p>")),
        "{text}"
    );
    assert!(!text.contains("Hello") && !text.contains("{{"), "{text}");
    let fr = sink.wait_for("fr@example.test", 1).await;
    assert_eq!(subject(&fr), "Your sign-in link");
    assert!(fr.text().contains("<p>[fr] code "), "{}", fr.text());
    let en = sink.wait_for("en@example.test", 1).await;
    assert!(en.text().contains("<p>Hello there, code "), "{}", en.text());
}
