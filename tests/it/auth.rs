//! GoTrue-compatible auth over HTTP: confirmation mail through the job queue, verify links,
//! refresh-token rotation and reuse detection, bans, logout scopes, error formats, aliases.

use crate::support::{start_runner, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

async fn app(autoconfirm: bool) -> TestApp {
    TestApp::spawn_with(|c| {
        c.auth.mailer_autoconfirm = autoconfirm;
        c.auth.bcrypt_cost = 4;
        c.auth.refresh_token_reuse_interval_secs = 0;
        c.auth.site_url = "http://app.test".into();
    })
    .await
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(path))
        .header("apikey", app.anon_key())
        .header("X-Supabase-Api-Version", "2024-01-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The payload of a JWT (tests read the claims the server issued).
fn jwt_claims(t: &str) -> Value {
    use base64::Engine;
    let p = t.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// An app whose auth mail goes over SMTP to a real sink, with the mail worker running.
async fn mail_app() -> (
    crate::support::smtp::SmtpSink,
    TestApp,
    fluxbase::jobs::worker::RunnerHandle,
) {
    let sink = crate::support::smtp::SmtpSink::start();
    let app = TestApp::spawn_with(|c| {
        c.auth.bcrypt_cost = 4;
        c.auth.site_url = "http://app.test".into();
        c.auth.smtp.host = "127.0.0.1".into();
        c.auth.smtp.port = sink.port as u64;
        c.auth.smtp.tls = "none".into();
        c.auth.smtp.sender = "Fluxbase <auth@fluxbase.test>".into();
    })
    .await;
    let mut reg = fluxbase::jobs::Registry::default();
    fluxbase::auth::register_jobs(&mut reg, &app.state);
    let runner = start_runner(&app, reg, false);
    (sink, app, runner)
}

#[tokio::test]
async fn confirmation_mail_goes_through_the_queue_and_the_link_signs_in() {
    let app = app(false).await;
    let (s, user) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "Grace@Example.test", "password": "hopper1906"}),
    )
    .await;
    assert_eq!(s, 200, "{user}");
    assert_eq!(user["email"], "grace@example.test");
    assert!(
        user.get("access_token").is_none(),
        "no session before confirmation"
    );
    assert_eq!(user["email_confirmed_at"], Value::Null);
    // Not confirmed yet.
    let (s, e) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        json!({"email": "grace@example.test", "password": "hopper1906"}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("email_not_confirmed")));

    // The mail job carries the link; the log mailer delivers it.
    let c = app.db.client().await;
    let payload: Value = c
        .query_one(
            "SELECT payload FROM jobs.jobs WHERE queue = 'auth.mail'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["to"], "grace@example.test");
    let link = payload["link"].as_str().unwrap().to_string();
    let mut reg = fluxbase::jobs::Registry::default();
    fluxbase::auth::register_jobs(&mut reg, &app.state);
    let runner = start_runner(&app, reg, false);
    let id: i64 = c
        .query_one("SELECT id FROM jobs.jobs WHERE queue = 'auth.mail'", &[])
        .await
        .unwrap()
        .get(0);
    crate::support::wait_status(&app, id, "succeeded", Duration::from_secs(10)).await;
    runner.shutdown(Duration::from_secs(1)).await;

    // Only a hash of the token is stored.
    let token = link
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    // Only hashes of the link secret and of the code are stored.
    let stored: Vec<String> = c
        .query("SELECT token_hash FROM auth.one_time_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 2, "a link secret and a code");
    let code = payload["token"].as_str().unwrap();
    assert!(stored
        .iter()
        .all(|h| h.len() == 64 && h != &token && h != code));

    // Opening the link: 303 to the site with the session in the fragment.
    let path = &link[link.find("/auth/v1/verify").unwrap()..];
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("http://app.test#access_token="), "{loc}");
    assert!(loc.contains("&type=signup"), "{loc}");
    // A second use fails, and says so in the fragment.
    let r = no_redirect.get(app.url(path)).send().await.unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains("#error=403&error_code=otp_expired"), "{loc}");
    // Redirects only go to the site URL.
    let evil = path.replace(
        "redirect_to=http%3A%2F%2Fapp.test",
        "redirect_to=https%3A%2F%2Fevil.test",
    );
    let r = no_redirect.get(app.url(&evil)).send().await.unwrap();
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("http://app.test#"));

    let (s, session) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        json!({"email": "grace@example.test", "password": "hopper1906"}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert!(session["user"]["email_confirmed_at"].is_string());
    assert_eq!(
        session["user"]["identities"][0]["identity_data"]["email_verified"],
        true
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_ends_the_session() {
    let app = app(true).await;
    let (_, s1) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "r@example.test", "password": "secret123"}),
    )
    .await;
    let rt1 = s1["refresh_token"].as_str().unwrap().to_string();
    let (st, s2) = post(
        &app,
        "/auth/v1/token?grant_type=refresh_token",
        json!({"refresh_token": rt1}),
    )
    .await;
    assert_eq!(st, 200, "{s2}");
    let rt2 = s2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    assert_eq!(s2["user"]["email"], "r@example.test");
    // Same session id in both access tokens.
    let claims = jwt_claims;
    let c1 = claims(s1["access_token"].as_str().unwrap());
    let c2 = claims(s2["access_token"].as_str().unwrap());
    assert_eq!(c1["session_id"], c2["session_id"]);
    // The session keeps how it was authenticated: refreshed tokens carry the sign-in method.
    assert_eq!(c2["amr"][0]["method"], "password");
    assert_eq!(c2["amr"], c1["amr"]);
    assert_eq!(c1["aud"], "authenticated");
    for k in [
        "iss",
        "sub",
        "exp",
        "iat",
        "email",
        "phone",
        "app_metadata",
        "user_metadata",
        "role",
        "aal",
        "amr",
        "session_id",
        "is_anonymous",
    ] {
        assert!(c1.get(k).is_some(), "claim {k} missing: {c1}");
    }

    // Reusing the rotated token (past the reuse interval) revokes the family.
    let (st, e) = post(
        &app,
        "/auth/v1/token?grant_type=refresh_token",
        json!({"refresh_token": rt1}),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (400, Some("refresh_token_already_used"))
    );
    // The whole family went with the session, including the newest token.
    let (st, e) = post(
        &app,
        "/auth/v1/token?grant_type=refresh_token",
        json!({"refresh_token": rt2}),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (400, Some("refresh_token_not_found")),
        "{e}"
    );
    let r = app
        .get("/auth/v1/user")
        .bearer_auth(s2["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (st, e) = post(
        &app,
        "/auth/v1/token?grant_type=refresh_token",
        json!({"refresh_token": "nope"}),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (400, Some("refresh_token_not_found"))
    );
}

#[tokio::test]
async fn bans_logout_scopes_aliases_and_settings() {
    let app = app(true).await;
    let (_, a) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "b@example.test", "password": "secret123"}),
    )
    .await;
    let (_, b) = post(
        &app,
        "/api/v1/auth/token?grant_type=password",
        json!({"email": "b@example.test", "password": "secret123"}),
    )
    .await;
    assert!(
        b["access_token"].is_string(),
        "the /api/v1/auth alias signs in: {b}"
    );
    let user_id = a["user"]["id"].as_str().unwrap().to_string();
    // logout?scope=others keeps the caller's session only.
    let r = app
        .http
        .post(app.url("/auth/v1/logout?scope=others"))
        .bearer_auth(b["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let alive = |t: &Value| {
        let req = app
            .get("/auth/v1/user")
            .bearer_auth(t["access_token"].as_str().unwrap().to_string());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(alive(&a).await, 403);
    assert_eq!(alive(&b).await, 200);
    // A ban ends every session and refuses sign-ins.
    let r = app
        .http
        .put(app.url(&format!("/auth/v1/admin/users/{user_id}")))
        .header("apikey", app.service_key())
        .bearer_auth(app.service_key())
        .json(&json!({"ban_duration": "24h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["banned_until"].is_string());
    assert_eq!(alive(&b).await, 403);
    let (st, e) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        json!({"email": "b@example.test", "password": "secret123"}),
    )
    .await;
    assert_eq!((st, e["code"].as_str()), (400, Some("user_banned")));
    // Admin routes need the service role.
    let r = app
        .get("/auth/v1/admin/users")
        .header("apikey", app.anon_key())
        .bearer_auth(app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Settings and JWKS.
    let s: Value = app
        .get("/auth/v1/settings")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["external"]["email"], true);
    assert_eq!(s["mailer_autoconfirm"], true);
    let k: Value = app
        .get("/auth/v1/.well-known/jwks.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(k, json!({"keys": []}));
    // Sign-ins and admin changes are audited.
    let audit: Value = app
        .get("/api/v1/audit?action=auth.*")
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["auth.user.signup", "auth.sign_in", "auth.admin.user.update"] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    // Bad JSON is a GoTrue-shaped 400.
    let r = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("Content-Type", "application/json")
        .header("X-Supabase-Api-Version", "2024-01-01")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["code"].is_string() && e["message"].is_string(), "{e}");
}

fn code_in(text: &str) -> String {
    let i = text.find("code: ").expect("code in mail") + 6;
    text[i..i + 6].to_string()
}

fn link_in(text: &str) -> String {
    let i = text.find("http").expect("link in mail");
    text[i..].split_whitespace().next().unwrap().to_string()
}

#[tokio::test]
async fn passwordless_and_recovery_mail_over_real_smtp() {
    let (sink, app, runner) = mail_app().await;

    // Magic link / OTP for a new address: a user is created, a mail arrives over SMTP.
    let (s, b) = post(
        &app,
        "/auth/v1/otp",
        json!({"email": "lin@example.test", "data": {"plan": "free"}}),
    )
    .await;
    assert_eq!((s, b), (200, json!({})));
    let mail = sink.wait_for("lin@example.test", 1).await;
    assert!(mail.from.contains("auth@fluxbase.test"), "{}", mail.from);
    assert!(
        mail.data.contains("Subject: Confirm your signup"),
        "{}",
        mail.data
    );
    let text = mail.text();
    let code = code_in(&text);
    // A second request within the minute is refused.
    let (s, e) = post(&app, "/auth/v1/otp", json!({"email": "lin@example.test"})).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (429, Some("over_email_send_rate_limit"))
    );
    // Wrong code, then the right one.
    let (s, e) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "email", "email": "lin@example.test", "token": "000000"}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("otp_expired")), "{e}");
    let (s, session) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "email", "email": "lin@example.test", "token": code}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["user"]["user_metadata"]["plan"], "free");
    assert!(session["user"]["email_confirmed_at"].is_string());
    // Codes are single-use.
    let (s, _) = post(
        &app,
        "/auth/v1/verify",
        json!({"type": "email", "email": "lin@example.test", "token": code}),
    )
    .await;
    assert_eq!(s, 403);

    // Recovery: the link signs in (amr recovery), then the password can be set.
    let (s, b) = post(
        &app,
        "/auth/v1/recover",
        json!({"email": "lin@example.test"}),
    )
    .await;
    assert_eq!((s, b), (200, json!({})));
    let mail = sink.wait_for("lin@example.test", 2).await;
    assert!(mail.data.contains("Subject: Reset your password"));
    let link = link_in(&mail.text());
    let path = &link[link.find("/auth/v1/verify").unwrap()..];
    assert!(path.contains("type=recovery"), "{path}");
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let frag = loc.split_once('#').unwrap().1;
    let access = frag
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .unwrap();
    let r = app
        .http
        .put(app.url("/auth/v1/user"))
        .bearer_auth(access)
        .json(&json!({"password": "brand new pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = post(
        &app,
        "/auth/v1/token?grant_type=password",
        json!({"email": "lin@example.test", "password": "brand new pw"}),
    )
    .await;
    assert_eq!(s, 200);

    // No enumeration: an unknown address gets the same answer and no mail.
    let before = sink.mails().len();
    let (s, b) = post(
        &app,
        "/auth/v1/recover",
        json!({"email": "nobody@example.test"}),
    )
    .await;
    assert_eq!((s, b), (200, json!({})));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.mails().len(), before);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn pkce_magic_link_redirects_with_a_code_that_needs_the_verifier() {
    use base64::Engine;
    use sha2::Digest;
    let (sink, app, runner) = mail_app().await;

    let verifier = "a-very-long-code-verifier-of-more-than-43-characters-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let (s, _) = post(
        &app,
        "/auth/v1/otp?redirect_to=http%3A%2F%2Fapp.test%2Fcallback",
        json!({"email": "pk@example.test", "code_challenge": challenge, "code_challenge_method": "s256"}),
    )
    .await;
    assert_eq!(s, 200);
    let mail = sink.wait_for("pk@example.test", 1).await;
    let link = link_in(&mail.text());
    let path = &link[link.find("/auth/v1/verify").unwrap()..];
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("http://app.test/callback?code="),
        "no tokens in the URL, only a code: {loc}"
    );
    let code = loc.split("code=").nth(1).unwrap().to_string();

    // The wrong verifier burns the code.
    let (s, e) = post(&app, "/auth/v1/token?grant_type=pkce", json!({"auth_code": code, "code_verifier": "wrong-verifier-wrong-verifier-wrong-verifier-00"})).await;
    assert_eq!((s, e["code"].as_str()), (400, Some("bad_code_verifier")));
    let (s, e) = post(
        &app,
        "/auth/v1/token?grant_type=pkce",
        json!({"auth_code": code, "code_verifier": verifier}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (404, Some("flow_state_not_found")),
        "single use"
    );

    // Again, with the right verifier this time.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (s, _) = post(
        &app,
        "/auth/v1/recover",
        json!({"email": "pk@example.test", "code_challenge": challenge, "code_challenge_method": "s256"}),
    )
    .await;
    assert_eq!(s, 200);
    let mail = sink.wait_for("pk@example.test", 2).await;
    let link = link_in(&mail.text());
    let path = &link[link.find("/auth/v1/verify").unwrap()..];
    let r = no_redirect.get(app.url(path)).send().await.unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let code = loc.split("code=").nth(1).unwrap().to_string();
    let (s, session) = post(
        &app,
        "/auth/v1/token?grant_type=pkce",
        json!({"auth_code": code, "code_verifier": verifier}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["user"]["email"], "pk@example.test");
    assert!(session["refresh_token"].is_string());
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn fbk_api_keys_carry_role_scopes_user_and_die_at_once() {
    let app = app(true).await;
    let svc = app.service_key();
    let c = app.db.client().await;
    c.batch_execute(
        "CREATE TABLE notes (id serial primary key, owner uuid, body text);
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON notes USING (owner = auth.uid());
         CREATE TABLE public_items (id int primary key);
         INSERT INTO public_items VALUES (1), (2);
         NOTIFY pgrst, 'reload schema';",
    )
    .await
    .unwrap();
    let (_, signup) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "k@example.test", "password": "secret123"}),
    )
    .await;
    let user_id = signup["user"]["id"].as_str().unwrap().to_string();
    c.execute(
        "INSERT INTO notes (owner, body) VALUES ($1::text::uuid, 'mine'), (gen_random_uuid(), 'theirs')",
        &[&user_id],
    )
    .await
    .unwrap();
    assert!(
        crate::support::eventually(Duration::from_secs(10), || async {
            app.state.schema.get().table("public", "notes").is_some()
        })
        .await
    );

    let create = |body: Value| {
        let req = app
            .http
            .post(app.url("/api/v1/api-keys"))
            .header("apikey", svc.clone())
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, k) = create(json!({"name": "reader", "role": "authenticated", "scopes": ["rest:read"], "user_id": user_id})).await;
    assert_eq!(s, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("fbk_") && key.len() > 40);
    assert_eq!(k["prefix"].as_str().unwrap(), &key[..12]);
    // Stored only as a hash; never listed again.
    let stored: String = c
        .query_one("SELECT key_hash FROM auth.api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(stored, key);
    let listed: Value = app
        .get("/api/v1/api-keys")
        .header("apikey", svc.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed[0].get("key").is_none(), "{listed}");
    assert!(!listed.to_string().contains(&key));

    // As apikey or Bearer; the key's user is `sub`, so RLS sees that user's rows.
    let r = app
        .get("/rest/v1/notes?select=body")
        .header("apikey", key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([{"body": "mine"}]));
    let r = app
        .get("/rest/v1/public_items?select=id")
        .bearer_auth(key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"id": 1}, {"id": 2}])
    );
    // Scopes: no writes, no admin.
    let r = app
        .http
        .post(app.url("/rest/v1/public_items"))
        .header("apikey", key.clone())
        .json(&json!({"id": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB204");
    let r = app
        .get("/api/v1/jobs")
        .header("apikey", key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let used: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one("SELECT last_used_at FROM auth.api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert!(used.is_some());

    // An admin key with the service role reaches admin routes.
    let (_, admin) =
        create(json!({"name": "ops", "role": "service_role", "scopes": ["admin"]})).await;
    let admin_key = admin["key"].as_str().unwrap().to_string();
    let r = app
        .get("/api/v1/jobs")
        .header("apikey", admin_key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Unknown scopes and roles are refused.
    let (s, _) = create(json!({"name": "bad", "scopes": ["everything"]})).await;
    assert_eq!(s, 400);
    let (s, _) = create(json!({"name": "bad", "role": "postgres"})).await;
    assert_eq!(s, 400);

    // Revocation is immediate.
    let id = k["id"].as_str().unwrap();
    let r = app
        .http
        .post(app.url(&format!("/api/v1/api-keys/{id}/revoke")))
        .header("apikey", svc.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .get("/rest/v1/public_items")
        .header("apikey", key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB203");
    // So is expiry.
    let (_, short) = create(
        json!({"name": "short", "scopes": ["rest:read"], "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    let r = app
        .get("/rest/v1/public_items")
        .header("apikey", short["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Management is audited.
    let audit: Value = app
        .get("/api/v1/audit?action=api_keys.*")
        .header("apikey", svc.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"api_keys.create") && actions.contains(&"api_keys.revoke"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn impersonation_gives_a_marked_session_and_is_audited() {
    let app = app(true).await;
    let (_, s) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "imp@example.test", "password": "secret123"}),
    )
    .await;
    let id = s["user"]["id"].as_str().unwrap().to_string();
    let r = app
        .http
        .post(app.url(&format!("/api/v1/admin/users/{id}/impersonate")))
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "service_role only");
    let r = app
        .http
        .post(app.url(&format!("/api/v1/admin/users/{id}/impersonate")))
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session: Value = r.json().await.unwrap();
    let claims = jwt_claims;
    let c = claims(session["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["impersonated"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    assert_eq!(c["amr"][0]["method"], "impersonation");
    let me: Value = app
        .get("/auth/v1/user")
        .bearer_auth(session["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "imp@example.test");
    // Refreshed tokens of that session keep the mark; the user's own sessions do not have it.
    let (_, refreshed) = post(
        &app,
        "/auth/v1/token?grant_type=refresh_token",
        json!({"refresh_token": session["refresh_token"]}),
    )
    .await;
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["impersonated"],
        true
    );
    assert!(claims(s["access_token"].as_str().unwrap())
        .get("impersonated")
        .is_none());
    let audit: Value = app
        .get("/api/v1/audit?action=auth.admin.user.impersonate")
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit[0]["target"], format!("user:{id}"));
}

#[tokio::test]
async fn metadata_numbers_no_reader_can_take_are_refused() {
    // Found by `make fuzz-api`: jsonb prints -1.7976931348623157e308 as 309 digits, which
    // no f64 reader takes back; one such value broke every read of the user.
    let app = app(true).await;
    let huge = serde_json::Number::from_f64(-1.797_693_134_862_315_7e308).unwrap();
    let (s, body) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "n@x.test", "password": "secret-pass-1", "data": {"n": huge.clone()}}),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["code"], "validation_failed", "{body}");
    let (s, session) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "n@x.test", "password": "secret-pass-1", "data": {"ok": 1e300}}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    let token = session["access_token"].as_str().unwrap().to_string();
    let put = |data: Value| {
        app.http
            .put(app.url("/auth/v1/user"))
            .header("apikey", app.anon_key())
            .header("X-Supabase-Api-Version", "2024-01-01")
            .bearer_auth(&token)
            .json(&json!({ "data": data }))
    };
    let r = put(json!({"deep": [1, {"n": huge}]})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Nothing was stored: the user and the admin list still read.
    let r = app
        .get("/auth/v1/user")
        .header("apikey", app.anon_key())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["user_metadata"]["ok"], 1e300);
    assert!(user["user_metadata"].get("deep").is_none());
    let r = app
        .get("/auth/v1/admin/users")
        .header("apikey", app.service_key())
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The database refuses it whatever path writes it.
    let err = app
        .db
        .client()
        .await
        .batch_execute(
            "UPDATE auth.users SET raw_app_meta_data = '{\"x\": 1e400}' WHERE email = 'n@x.test'",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22003");
}

/// An `fbk_` key with `rate_limit_per_minute` is counted per key, on every route, instead of
/// the route group's limit per IP: from one IP it gets its own allowance (more than the
/// group's here), its 429 is in each surface's format with `Retry-After` and `X-RateLimit-*`,
/// and another key from the same IP is not touched by it (keys without a limit of their own
/// count against the group's limit per key). The limit is set on create, shown in list/get,
/// changed or removed by PATCH.
#[tokio::test]
async fn api_keys_with_their_own_rate_limit_are_counted_per_key() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.rest_per_minute = 2;
        c.auth.bcrypt_cost = 4;
    })
    .await;
    let svc = app.service_key();
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int primary key);
             GRANT SELECT ON items TO authenticated;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    assert!(
        crate::support::eventually(Duration::from_secs(10), || async {
            app.state.schema.get().table("public", "items").is_some()
        })
        .await
    );
    let admin = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = app
            .http
            .request(method, app.url(path))
            .header("apikey", svc.clone());
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    use reqwest::Method;
    let (s, limited) = admin(
        Method::POST,
        "/api/v1/api-keys",
        Some(json!({"name": "limited", "scopes": ["rest:read"], "rate_limit_per_minute": 4})),
    )
    .await;
    assert_eq!(s, 201, "{limited}");
    assert_eq!(limited["rate_limit_per_minute"], 4);
    let (s, plain) = admin(
        Method::POST,
        "/api/v1/api-keys",
        Some(json!({"name": "plain", "scopes": ["rest:read"]})),
    )
    .await;
    assert_eq!(s, 201, "{plain}");
    assert_eq!(plain["rate_limit_per_minute"], Value::Null);
    let (s, bad) = admin(
        Method::POST,
        "/api/v1/api-keys",
        Some(json!({"name": "zero", "rate_limit_per_minute": 0})),
    )
    .await;
    assert_eq!((s, bad["code"].as_str()), (400, Some("FB004")), "{bad}");
    let (_, listed) = admin(Method::GET, "/api/v1/api-keys", None).await;
    let limits: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["rate_limit_per_minute"])
        .collect();
    assert_eq!(limits, [&json!(4), &Value::Null]);

    let rest = |key: &str| app.get("/rest/v1/items").header("apikey", key).send();
    let key = limited["key"].as_str().unwrap().to_string();
    for left in [3, 2, 1] {
        let r = rest(&key).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "4");
        assert_eq!(r.headers()["x-ratelimit-remaining"], left.to_string());
    }
    // The same bucket on another route group (auth, with GoTrue's error format).
    let r = app
        .get("/auth/v1/settings")
        .header("apikey", &key)
        .header("X-Supabase-Api-Version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let r = app
        .get("/auth/v1/settings")
        .header("apikey", &key)
        .header("X-Supabase-Api-Version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-ratelimit-limit"], "4");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "over_request_rate_limit"
    );
    let r = rest(&key).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB006");

    // A key without a limit of its own, from the same IP: the REST group's 2 a minute.
    let other = plain["key"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = rest(&other).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "2");
    }
    assert_eq!(rest(&other).await.unwrap().status(), 429);
    // ... counted per key, not per IP: a third key from the same IP still passes.
    let (s, third) = admin(
        Method::POST,
        "/api/v1/api-keys",
        Some(json!({"name": "third", "scopes": ["rest:read"]})),
    )
    .await;
    assert_eq!(s, 201, "{third}");
    let r = rest(third["key"].as_str().unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "1");

    // PATCH: a new limit is a new allowance; null removes it (back to the group's limit).
    let id = limited["id"].as_str().unwrap();
    let (s, k) = admin(
        Method::PATCH,
        &format!("/api/v1/api-keys/{id}"),
        Some(json!({"rate_limit_per_minute": 10})),
    )
    .await;
    assert_eq!((s, &k["rate_limit_per_minute"]), (200, &json!(10)), "{k}");
    let r = rest(&key).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit"], "10");
    let (s, k) = admin(
        Method::PATCH,
        &format!("/api/v1/api-keys/{id}"),
        Some(json!({"name": "renamed"})),
    )
    .await;
    assert_eq!(
        (s, &k["rate_limit_per_minute"]),
        (200, &json!(10)),
        "kept: {k}"
    );
    let (s, k) = admin(
        Method::PATCH,
        &format!("/api/v1/api-keys/{id}"),
        Some(json!({"rate_limit_per_minute": null})),
    )
    .await;
    assert_eq!((s, &k["rate_limit_per_minute"]), (200, &Value::Null), "{k}");
    let (_, k) = admin(Method::GET, &format!("/api/v1/api-keys/{id}"), None).await;
    assert_eq!(k["rate_limit_per_minute"], Value::Null);
    let r = rest(&key).await.unwrap();
    assert_eq!(
        r.headers()["x-ratelimit-limit"],
        "2",
        "the group's limit again"
    );
}

#[tokio::test]
async fn refreshes_within_the_reuse_interval_share_the_session_and_bans_stop_them() {
    let app = TestApp::spawn_with(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.bcrypt_cost = 4;
        c.auth.refresh_token_reuse_interval_secs = 60;
    })
    .await;
    let (_, s1) = post(
        &app,
        "/auth/v1/signup",
        json!({"email": "ri@example.test", "password": "secret123"}),
    )
    .await;
    let uid = s1["user"]["id"].as_str().unwrap().to_string();
    let session = jwt_claims(s1["access_token"].as_str().unwrap())["session_id"].clone();
    let refresh = |t: String| {
        let app = &app;
        async move {
            post(
                app,
                "/auth/v1/token?grant_type=refresh_token",
                json!({"refresh_token": t}),
            )
            .await
        }
    };
    let rt1 = s1["refresh_token"].as_str().unwrap().to_string();
    let (st, s2) = refresh(rt1.clone()).await;
    assert_eq!(st, 200, "{s2}");
    // The rotated token again, within the interval: a new successor in the same session.
    let (st, s3) = refresh(rt1.clone()).await;
    assert_eq!(st, 200, "{s3}");
    assert_ne!(s2["refresh_token"], s3["refresh_token"]);
    for s in [&s2, &s3] {
        assert_eq!(
            jwt_claims(s["access_token"].as_str().unwrap())["session_id"],
            session
        );
        assert_eq!(s["user"]["id"], uid.as_str());
    }
    // Eight concurrent refreshes of one token: all served (they queue on its row lock),
    // each with its own successor, all in the one session.
    let rt2 = s2["refresh_token"].as_str().unwrap().to_string();
    let answers = futures_util::future::join_all((0..8).map(|_| refresh(rt2.clone()))).await;
    let mut tokens = std::collections::HashSet::new();
    for (st, s) in &answers {
        assert_eq!(*st, 200, "{s}");
        assert_eq!(
            jwt_claims(s["access_token"].as_str().unwrap())["session_id"],
            session
        );
        tokens.insert(s["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), 8);
    let db = app.db.client().await;
    let count = |sql: &'static str| {
        let db = &db;
        let sid = session.as_str().unwrap().to_string();
        async move {
            let sid: uuid::Uuid = sid.parse().unwrap();
            db.query_one(sql, &[&sid]).await.unwrap().get::<_, i64>(0)
        }
    };
    const ALL: &str = "SELECT count(*) FROM auth.refresh_tokens WHERE session_id = $1";
    const REVOKED: &str =
        "SELECT count(*) FROM auth.refresh_tokens WHERE session_id = $1 AND revoked";
    // rt1, its two successors, rt2's eight; only rt1 and rt2 were rotated.
    assert_eq!(count(ALL).await, 11);
    assert_eq!(count(REVOKED).await, 2);

    // A session that is no longer live (its user banned behind the API's back, so the
    // session row is still there): 403, and nothing is rotated or issued.
    let uid: uuid::Uuid = uid.parse().unwrap();
    db.execute(
        "UPDATE auth.users SET banned_until = now() + interval '1 day' WHERE id = $1",
        &[&uid],
    )
    .await
    .unwrap();
    let rt3 = s3["refresh_token"].as_str().unwrap().to_string();
    let (st, e) = refresh(rt3).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (403, Some("session_not_found")),
        "{e}"
    );
    assert_eq!(count(ALL).await, 11);
    assert_eq!(count(REVOKED).await, 2);
}
