//! OAuth2 / OIDC sign-in through the whole redirect dance against a real fake provider
//! (support/oauth_provider.rs) for each preset: /authorize → provider → /callback →
//! redirect_to, implicit and PKCE flows, identity linking, and the failure paths (denied
//! consent, bad or replayed state, token endpoint errors, bad id_tokens, unverified email).

use crate::support::oauth_provider::{
    FakeProvider, FakeUser, Mode, AZURE_TENANT, CLIENT_ID, CLIENT_SECRET,
};
use crate::support::TestApp;
use fluxbase::config::{Config, OAuthProviderConfig, Secret};
use serde_json::{json, Value};
use std::collections::HashMap;

const SITE: &str = "http://app.test";

fn provider(url: String) -> OAuthProviderConfig {
    OAuthProviderConfig {
        enabled: true,
        client_id: CLIENT_ID.into(),
        secret: Some(Secret::new(CLIENT_SECRET)),
        url,
        ..Default::default()
    }
}

/// Every preset enabled against the fake; only the fake's address is allowed outbound.
fn configure(c: &mut Config, fake: &FakeProvider) {
    let b = &fake.base;
    c.auth.site_url = SITE.into();
    c.auth.bcrypt_cost = 4;
    c.auth.redirect_allow_list = vec![
        "http://other.test/cb".into(),
        "https://*.preview.test/**".into(),
    ];
    c.outbound.allow_private_networks = vec!["127.0.0.3/32".into()];
    let e = &mut c.auth.external;
    e.github = provider(format!("{b}/github"));
    e.gitlab = provider(format!("{b}/gitlab"));
    e.discord = provider(format!("{b}/discord"));
    e.facebook = provider(format!("{b}/facebook"));
    e.azure = provider(format!("{b}/azure/common/v2.0"));
    e.x = provider(format!("{b}/x"));
    e.apple = provider(format!("{b}/apple"));
    e.google = provider(format!("{b}/google"));
    e.keycloak = provider(format!("{b}/realms/test"));
    e.oidc = provider(format!("{b}/oidc"));
    e.custom = OAuthProviderConfig {
        authorize_url: format!("{b}/custom/authorize"),
        token_url: format!("{b}/custom/token"),
        userinfo_url: format!("{b}/custom/userinfo"),
        ..provider(String::new())
    };
}

async fn setup(tweak: impl FnOnce(&mut Config)) -> (TestApp, FakeProvider) {
    let fake = FakeProvider::start();
    let f = fake.clone();
    let app = TestApp::spawn_with(move |c| {
        configure(c, &f);
        tweak(c);
    })
    .await;
    (app, fake)
}

/// A browser that does not follow redirects: each hop is looked at.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

fn pairs(s: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(s.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The hops of one sign-in: where /authorize sent the browser, and where the callback did.
struct Hops {
    to_provider: url::Url,
    back: url::Url,
}

impl Hops {
    fn fragment(&self) -> HashMap<String, String> {
        pairs(self.back.fragment())
    }
    fn query(&self) -> HashMap<String, String> {
        pairs(self.back.query())
    }
}

/// Browser: /authorize → provider → /callback → final Location (not fetched).
async fn sign_in(app: &TestApp, query: &str) -> Hops {
    let b = browser();
    let r = b
        .get(app.url(&format!("/auth/v1/authorize?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let to_provider = url::Url::parse(&location(&r)).unwrap();
    let r = b.get(to_provider.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 302, "provider: {}", r.text().await.unwrap());
    let callback = location(&r);
    assert!(
        callback.starts_with(&app.url("/auth/v1/callback?")),
        "{callback}"
    );
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302);
    Hops {
        to_provider,
        back: url::Url::parse(&location(&r)).unwrap(),
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

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

async fn get_user(app: &TestApp, access: &str) -> Value {
    let r = app
        .get("/auth/v1/user")
        .header("apikey", app.anon_key())
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// One preset, implicit flow, a new user: the session arrives in the fragment and describes
/// the provider's user; the identity, last_sign_in_at, amr and the audit log say so.
async fn implicit_flow_creates_the_user(
    name: &str,
    fake_user: FakeUser,
) -> (TestApp, FakeProvider, Value) {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(fake_user.clone());
    let hops = sign_in(
        &app,
        &format!(
            "provider={name}&redirect_to={}",
            enc("http://app.test/welcome")
        ),
    )
    .await;
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
    assert!(
        hops.to_provider.as_str().starts_with(&fake.base),
        "{}",
        hops.to_provider
    );
    assert_eq!(pairs(hops.to_provider.query())["client_id"], CLIENT_ID);
    assert_eq!(
        hops.back.as_str().split('#').next().unwrap(),
        "http://app.test/welcome"
    );
    let f = hops.fragment();
    assert!(!f.contains_key("error"), "{f:?}");
    assert_eq!(f["token_type"], "bearer");
    assert!(!f["provider_token"].is_empty());
    assert!(!f["refresh_token"].is_empty());
    assert!(f["expires_in"].parse::<i64>().unwrap() > 0);
    let claims = jwt_claims(&f["access_token"]);
    assert_eq!(claims["amr"][0]["method"], "oauth");
    assert_eq!(claims["email"], fake_user.email);
    assert_eq!(claims["app_metadata"]["provider"], name);

    let user = get_user(&app, &f["access_token"]).await;
    assert_eq!(user["email"], fake_user.email);
    assert!(user["email_confirmed_at"].is_string(), "{user}");
    assert!(user["last_sign_in_at"].is_string());
    assert_eq!(user["app_metadata"]["providers"], json!([name]));
    let ids = user["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{user}");
    let id = &ids[0];
    assert_eq!(id["provider"], name);
    assert_eq!(
        id["id"], fake_user.id,
        "provider_id is the provider's user id"
    );
    assert_eq!(id["identity_data"]["sub"], fake_user.id);
    assert_eq!(id["identity_data"]["email"], fake_user.email);
    assert_eq!(id["identity_data"]["email_verified"], true);
    assert!(id["last_sign_in_at"].is_string());
    assert_eq!(user["user_metadata"]["email"], fake_user.email);

    let c = app.db.client().await;
    let audit: Vec<(String, Value)> = c
        .query(
            "SELECT action, details FROM fluxbase.audit_log WHERE actor = $1 ORDER BY id",
            &[&user["id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        audit,
        vec![("auth.user.signup".to_string(), json!({"provider": name}))]
    );
    (app, fake, user)
}

#[tokio::test]
async fn github_signs_in_with_the_primary_verified_email() {
    let (app, fake, user) = implicit_flow_creates_the_user(
        "github",
        FakeUser::new("4242", "octo", "octo@example.test"),
    )
    .await;
    let data = &user["identities"][0]["identity_data"];
    assert_eq!(data["user_name"], "octo");
    assert_eq!(data["name"], "octo Example");
    assert_eq!(data["avatar_url"], "https://avatars.example/u/4242");
    // GitHub takes no PKCE from us; the authorization request says what it asks for.
    let a = &fake.authorize_requests()[0];
    assert_eq!(a["scope"], "user:email");
    assert!(!a.contains_key("code_challenge"));
    assert!(a["redirect_uri"].ends_with("/auth/v1/callback"));
    // Signing in again: same user, same identity, one more audit entry.
    let hops = sign_in(&app, "provider=github").await;
    let f = hops.fragment();
    assert_eq!(
        hops.back.as_str().split('#').next().unwrap(),
        "http://app.test/"
    );
    let again = get_user(&app, &f["access_token"]).await;
    assert_eq!(again["id"], user["id"]);
    assert_eq!(again["identities"].as_array().unwrap().len(), 1);
    let n: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM fluxbase.audit_log WHERE action = 'auth.sign_in' AND details->>'provider' = 'github'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn google_via_oidc_checks_the_id_token() {
    let (_app, fake, user) = implicit_flow_creates_the_user(
        "google",
        FakeUser::new("1098765", "gwen", "gwen@example.test"),
    )
    .await;
    let a = &fake.authorize_requests()[0];
    assert_eq!(a["scope"], "openid email profile");
    assert_eq!(
        a["code_challenge_method"], "S256",
        "our PKCE towards Google"
    );
    assert!(!a["nonce"].is_empty());
    assert!(fake.token_requests()[0].contains_key("code_verifier"));
    let data = &user["identities"][0]["identity_data"];
    assert_eq!(data["iss"], format!("{}/google", fake.base));
    assert_eq!(data["picture"], "https://img.example/gwen.png");
}

#[tokio::test]
async fn keycloak_reads_the_address_from_userinfo() {
    let (_app, fake, user) = implicit_flow_creates_the_user(
        "keycloak",
        FakeUser::new("f3b0c8a2-kc", "kim", "kim@example.test"),
    )
    .await;
    assert!(fake.authorize_requests()[0]["nonce"].len() > 20);
    assert_eq!(
        user["identities"][0]["identity_data"]["iss"],
        format!("{}/realms/test", fake.base)
    );
}

#[tokio::test]
async fn discovery_and_keys_are_cached_and_refetched_on_rotation() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new("rot-1", "rot", "rot@example.test"));
    for _ in 0..3 {
        let f = sign_in(&app, "provider=oidc").await.fragment();
        assert!(f.contains_key("access_token"), "{f:?}");
    }
    assert_eq!(
        fake.discovery_and_jwks_hits(),
        (1, 1),
        "one fetch each for three sign-ins"
    );
    // The provider rotates its key: the cached set lacks the new kid, so it is fetched again.
    fake.rotate_key("test-key-2");
    let f = sign_in(&app, "provider=oidc").await.fragment();
    assert!(f.contains_key("access_token"), "{f:?}");
    assert_eq!(fake.discovery_and_jwks_hits(), (1, 2));
}

#[tokio::test]
async fn generic_oidc_signs_in() {
    let (_app, _fake, user) = implicit_flow_creates_the_user(
        "oidc",
        FakeUser::new("oidc-sub-1", "olga", "olga@example.test"),
    )
    .await;
    assert_eq!(
        user["identities"][0]["identity_data"]["preferred_username"],
        "olga"
    );
}

#[tokio::test]
async fn gitlab_signs_in() {
    let (_app, fake, user) =
        implicit_flow_creates_the_user("gitlab", FakeUser::new("777", "gil", "gil@example.test"))
            .await;
    assert_eq!(fake.authorize_requests()[0]["scope"], "read_user");
    assert_eq!(user["identities"][0]["identity_data"]["user_name"], "gil");
}

#[tokio::test]
async fn discord_signs_in() {
    let (_app, _fake, user) = implicit_flow_creates_the_user(
        "discord",
        FakeUser::new("80351110224678912", "dee", "dee@example.test"),
    )
    .await;
    assert_eq!(
        user["identities"][0]["identity_data"]["avatar_url"],
        "https://cdn.discordapp.com/avatars/80351110224678912/8342729096ea3675442027381ff50dfe.png"
    );
}

#[tokio::test]
async fn facebook_signs_in_with_appsecret_proof() {
    let (_app, fake, user) = implicit_flow_creates_the_user(
        "facebook",
        FakeUser::new("10158", "fay", "fay@example.test"),
    )
    .await;
    assert_eq!(fake.authorize_requests()[0]["scope"], "email");
    assert_eq!(
        user["identities"][0]["identity_data"]["avatar_url"],
        "https://platform-lookaside.example/10158.jpg"
    );
}

#[tokio::test]
async fn azure_checks_the_tenant_issuer_and_xms_edov() {
    let (app, fake, user) = implicit_flow_creates_the_user(
        "azure",
        FakeUser::new(
            "00000000-0000-0000-66f3-3332eca7ea81",
            "ada",
            "ada@contoso.example",
        ),
    )
    .await;
    assert_eq!(
        user["identities"][0]["identity_data"]["iss"],
        format!("{}/azure/{AZURE_TENANT}/v2.0", fake.base)
    );
    // Without xms_edov the address is not vouched for: no linking, a confirmation mail.
    let mut u = FakeUser::new("azure-2", "bob", "bob@contoso.example");
    u.email_verified = false;
    fake.set_user(u);
    let q = sign_in(&app, "provider=azure").await.query();
    assert_eq!(q["error_code"], "provider_email_needs_verification");
}

#[tokio::test]
async fn x_signs_in_with_pkce_and_basic_client_auth() {
    let (app, fake, user) = implicit_flow_creates_the_user(
        "x",
        FakeUser::new("2244994945", "xena", "xena@example.test"),
    )
    .await;
    let a = &fake.authorize_requests()[0];
    assert_eq!(
        a["scope"],
        "users.email tweet.read users.read offline.access"
    );
    assert_eq!(a["code_challenge_method"], "S256");
    assert!(
        !fake.token_requests()[0].contains_key("client_secret"),
        "Basic only"
    );
    assert_eq!(user["identities"][0]["identity_data"]["user_name"], "xena");
    // An account without a confirmed address cannot sign up (X sent none).
    let mut u = FakeUser::new("2244994946", "nomail", "nomail@example.test");
    u.email_verified = false;
    fake.set_user(u);
    let q = sign_in(&app, "provider=x").await.query();
    assert_eq!(
        q["error_description"],
        "Error getting user email from external provider"
    );
    let n: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing half-created");
}

/// The hidden inputs and the action of the fake's form_post page.
fn posted_form(html: &str) -> (String, Vec<(String, String)>) {
    let unescape = |v: &str| {
        v.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let end = start + tag[start..].find('"').unwrap();
        unescape(&tag[start..end])
    };
    let form = &html[html.find("<form").unwrap()..];
    let action = attr(&form[..form.find('>').unwrap()], "action");
    let inputs = form
        .split("<input")
        .skip(1)
        .map(|t| (attr(t, "name"), attr(t, "value")))
        .collect();
    (action, inputs)
}

#[tokio::test]
async fn apple_answers_with_form_post_and_names_the_user_once() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new(
        "001234.abcdef.0042",
        "apl",
        "apl@privaterelay.example",
    ));
    let b = browser();
    let r = b
        .get(app.url("/auth/v1/authorize?provider=apple&redirect_to=http%3A%2F%2Fapp.test%2Fa"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = url::Url::parse(&location(&r)).unwrap();
    let q = pairs(to.query());
    assert_eq!(q["response_mode"], "form_post");
    assert_eq!(q["scope"], "name email");
    assert!(!q["nonce"].is_empty());
    let page = b.get(to.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let (action, inputs) = posted_form(&page.text().await.unwrap());
    assert_eq!(action, app.url("/auth/v1/callback"));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&inputs)
        .finish();
    let r = b
        .post(&action)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let back = url::Url::parse(&location(&r)).unwrap();
    assert_eq!(back.path(), "/a");
    let f = pairs(back.fragment());
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
    let user = get_user(&app, &f["access_token"]).await;
    let id = &user["identities"][0];
    assert_eq!(id["provider"], "apple");
    assert_eq!(id["identity_data"]["full_name"], "apl Example");
    assert_eq!(id["identity_data"]["email_verified"], true);
    assert_eq!(user["email"], "apl@privaterelay.example");
    assert!(user["email_confirmed_at"].is_string());
}

#[tokio::test]
async fn custom_oauth2_signs_in() {
    let (_app, fake, _user) =
        implicit_flow_creates_the_user("custom", FakeUser::new("31337", "cus", "cus@example.test"))
            .await;
    // Extra scopes from the client go to the provider.
    assert!(fake.token_requests()[0].contains_key("code_verifier"));
}

#[tokio::test]
async fn pkce_flow_returns_a_code_exchanged_once() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new("sub-pkce", "pat", "pat@example.test"));
    let verifier = "a-verifier-long-enough-to-be-valid-0123456789-abcdefghij";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
    };
    let hops = sign_in(
        &app,
        &format!(
            "provider=oidc&redirect_to={}&code_challenge={challenge}&code_challenge_method=s256&scopes=offline_access&prompt=consent",
            enc("http://other.test/cb?x=1")
        ),
    )
    .await;
    // Extra scopes and unknown parameters go on to the provider.
    let a = &fake.authorize_requests()[0];
    assert_eq!(a["scope"], "openid email profile offline_access");
    assert_eq!(a["prompt"], "consent");
    assert_ne!(
        a["code_challenge"], challenge,
        "the provider gets our own challenge"
    );
    assert!(hops.back.fragment().is_none());
    assert!(hops
        .back
        .as_str()
        .starts_with("http://other.test/cb?x=1&code="));
    let code = hops.query()["code"].clone();

    let exchange = |code: String, verifier: &str| {
        let body = json!({"auth_code": code, "code_verifier": verifier});
        app.http
            .post(app.url("/auth/v1/token?grant_type=pkce"))
            .header("apikey", app.anon_key())
            .header("X-Supabase-Api-Version", "2024-01-01")
            .json(&body)
            .send()
    };
    let r = exchange(
        code.clone(),
        "not-the-verifier-but-long-enough-0123456789-abcdefgh",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "bad_code_verifier"
    );

    // A wrong verifier burns the code (single use), so sign in again.
    let hops = sign_in(
        &app,
        &format!("provider=oidc&code_challenge={challenge}&code_challenge_method=s256"),
    )
    .await;
    let code = hops.query()["code"].clone();
    let r = exchange(code.clone(), verifier).await.unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert!(s["provider_token"].is_string(), "{s}");
    assert!(s["provider_refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("refresh-"));
    assert_eq!(
        jwt_claims(s["access_token"].as_str().unwrap())["amr"][0]["method"],
        "oauth"
    );
    assert_eq!(s["user"]["identities"][0]["provider"], "oidc");
    let r = exchange(code, verifier).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "flow_state_not_found"
    );
}

#[tokio::test]
async fn verified_email_links_to_the_existing_account() {
    let (app, fake) = setup(|c| c.auth.mailer_autoconfirm = true).await;
    let r = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("apikey", app.anon_key())
        .json(&json!({"email": "lin@example.test", "password": "hunter22"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let existing: Value = r.json().await.unwrap();
    let uid = existing["user"]["id"].clone();

    fake.set_user(FakeUser::new("99", "lin", "LIN@example.test"));
    let f = sign_in(&app, "provider=github").await.fragment();
    let user = get_user(&app, &f["access_token"]).await;
    assert_eq!(user["id"], uid, "linked, not a second account");
    let providers: Vec<&str> = user["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["email", "github"]);
    assert_eq!(
        user["app_metadata"]["providers"],
        json!(["email", "github"])
    );
    assert_eq!(user["app_metadata"]["provider"], "email");
    // The password still works.
    let r = app
        .http
        .post(app.url("/auth/v1/token?grant_type=password"))
        .header("apikey", app.anon_key())
        .json(&json!({"email": "lin@example.test", "password": "hunter22"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A second provider with the same verified address links too.
    fake.set_user(FakeUser::new("lin-oidc", "lin", "lin@example.test"));
    let f = sign_in(&app, "provider=oidc").await.fragment();
    let user = get_user(&app, &f["access_token"]).await;
    assert_eq!(user["id"], uid);
    assert_eq!(user["identities"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn unverified_email_gets_a_confirmation_mail_not_a_session() {
    let (app, fake) = setup(|_| {}).await;
    let mut u = FakeUser::new("55", "una", "una@example.test");
    u.email_verified = false;
    fake.set_user(u);
    let hops = sign_in(
        &app,
        &format!(
            "provider=gitlab&redirect_to={}",
            enc("http://app.test/after")
        ),
    )
    .await;
    let q = hops.query();
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["error_code"], "provider_email_needs_verification");
    assert!(q["error_description"].contains("Unverified email with gitlab"));
    assert_eq!(
        hops.fragment()["error_code"],
        "provider_email_needs_verification"
    );
    assert!(hops.back.as_str().starts_with("http://app.test/after?"));
    let c = app.db.client().await;
    let row = c
        .query_one(
            "SELECT u.email_confirmed_at IS NULL, i.provider FROM auth.users u JOIN auth.identities i ON i.user_id = u.id
              WHERE u.email = 'una@example.test'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, String>(1)),
        (true, "gitlab".to_string())
    );
    let mail: Value = c
        .query_one(
            "SELECT payload FROM jobs.jobs WHERE queue = 'auth.mail'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mail["to"], "una@example.test");
    let n: i64 = c
        .query_one("SELECT count(*) FROM auth.sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn unverified_email_never_links_to_someone_elses_account() {
    let (app, fake) = setup(|c| c.auth.mailer_autoconfirm = false).await;
    let c = app.db.client().await;
    c.execute(
        "INSERT INTO auth.users (aud, role, email, email_confirmed_at, raw_app_meta_data) VALUES
           ('authenticated', 'authenticated', 'victim@example.test', now(), '{\"provider\":\"email\",\"providers\":[\"email\"]}')",
        &[],
    )
    .await
    .unwrap();
    let mut u = FakeUser::new("66", "mallory", "victim@example.test");
    u.email_verified = false;
    fake.set_user(u);
    let q = sign_in(&app, "provider=oidc").await.query();
    assert_eq!(q["error_code"], "email_exists", "{q:?}");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM auth.identities WHERE provider = 'oidc'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn denied_consent_goes_back_with_the_providers_error() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new("1", "d", "d@example.test"));
    fake.set_mode(Mode::Deny);
    let hops = sign_in(
        &app,
        &format!("provider=github&redirect_to={}", enc("http://app.test/x")),
    )
    .await;
    assert!(hops.back.as_str().starts_with("http://app.test/x?"));
    let q = hops.query();
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["error_description"], "The user denied access");
    assert_eq!(hops.fragment()["error"], "access_denied");
}

#[tokio::test]
async fn token_endpoint_errors_redirect_with_server_error() {
    for name in ["github", "oidc"] {
        let (app, fake) = setup(|_| {}).await;
        fake.set_user(FakeUser::new("1", "t", "t@example.test"));
        fake.set_mode(Mode::TokenError);
        let q = sign_in(&app, &format!("provider={name}")).await.query();
        assert_eq!(q["error"], "server_error", "{name}");
        assert_eq!(q["error_code"], "unexpected_failure");
        assert_eq!(q["error_description"], "Unable to exchange external code");
    }
}

#[tokio::test]
async fn bad_id_tokens_are_refused() {
    for (provider, mode) in [
        ("google", Mode::BadSignature),
        ("google", Mode::WrongNonce),
        ("google", Mode::WrongAudience),
        ("google", Mode::WrongIssuer),
        ("azure", Mode::WrongIssuer),
        ("keycloak", Mode::BadSignature),
    ] {
        let (app, fake) = setup(|_| {}).await;
        fake.set_user(FakeUser::new("1", "b", "b@example.test"));
        fake.set_mode(mode);
        let q = sign_in(&app, &format!("provider={provider}")).await.query();
        assert_eq!(q["error"], "server_error", "{mode:?}");
        assert_eq!(
            q["error_description"],
            "Error getting user profile from external provider"
        );
        let n: i64 = app
            .db
            .client()
            .await
            .query_one("SELECT count(*) FROM auth.users", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{provider} {mode:?}");
    }
}

#[tokio::test]
async fn state_is_checked_single_use_and_expiring() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new("1", "s", "s@example.test"));
    let b = browser();
    let bad = |q: HashMap<String, String>, code: &str| {
        assert_eq!(q.get("error_code").map(String::as_str), Some(code), "{q:?}");
    };
    // A state we never issued.
    let r = b
        .get(app.url("/auth/v1/callback?code=x&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(&location(&r)).unwrap();
    assert_eq!(
        loc.host_str(),
        Some("app.test"),
        "unknown state: the site URL"
    );
    bad(pairs(loc.query()), "bad_oauth_state");
    assert_eq!(pairs(loc.query())["error"], "invalid_request");
    // No state at all.
    let r = b
        .get(app.url("/auth/v1/callback?code=x"))
        .send()
        .await
        .unwrap();
    bad(
        pairs(url::Url::parse(&location(&r)).unwrap().query()),
        "bad_oauth_callback",
    );

    // A real state used twice: the replay is refused.
    let r = b
        .get(app.url("/auth/v1/authorize?provider=github"))
        .send()
        .await
        .unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    let callback = location(&r);
    let first = b.get(&callback).send().await.unwrap();
    assert!(
        pairs(url::Url::parse(&location(&first)).unwrap().fragment()).contains_key("access_token")
    );
    let replay = b.get(&callback).send().await.unwrap();
    bad(
        pairs(url::Url::parse(&location(&replay)).unwrap().query()),
        "bad_oauth_state",
    );

    // An expired state.
    let r = b
        .get(app.url("/auth/v1/authorize?provider=github"))
        .send()
        .await
        .unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    let callback = location(&r);
    app.db
        .client()
        .await
        .execute(
            "UPDATE auth.oauth_states SET created_at = now() - interval '11 minutes'",
            &[],
        )
        .await
        .unwrap();
    let late = b.get(&callback).send().await.unwrap();
    bad(
        pairs(url::Url::parse(&location(&late)).unwrap().query()),
        "bad_oauth_state",
    );

    // A callback with the state but no code.
    let r = b
        .get(app.url("/auth/v1/authorize?provider=github&redirect_to=http%3A%2F%2Fapp.test%2Fz"))
        .send()
        .await
        .unwrap();
    let state = pairs(url::Url::parse(&location(&r)).unwrap().query())["state"].clone();
    let r = b
        .get(app.url(&format!("/auth/v1/callback?state={}", enc(&state))))
        .send()
        .await
        .unwrap();
    let loc = url::Url::parse(&location(&r)).unwrap();
    assert_eq!(loc.path(), "/z", "a known state: back to its redirect_to");
    bad(pairs(loc.query()), "bad_oauth_callback");
}

#[tokio::test]
async fn callback_accepts_form_post() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new("fp", "fp", "fp@example.test"));
    let b = browser();
    let r = b
        .get(app.url("/auth/v1/authorize?provider=oidc"))
        .send()
        .await
        .unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    let callback = url::Url::parse(&location(&r)).unwrap();
    let r = b
        .post(app.url("/auth/v1/callback"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(callback.query().unwrap().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let f = pairs(url::Url::parse(&location(&r)).unwrap().fragment());
    assert!(f.contains_key("access_token"), "{f:?}");
}

#[tokio::test]
async fn authorize_refuses_bad_requests_and_guards_redirect_to() {
    let (app, fake) = setup(|c| c.auth.external.discord.enabled = false).await;
    fake.set_user(FakeUser::new("r", "r", "r@example.test"));
    let b = browser();
    let get = |q: &str| {
        b.get(app.url(&format!("/auth/v1/authorize?{q}")))
            .header("X-Supabase-Api-Version", "2024-01-01")
            .send()
    };
    for (q, status, code) in [
        ("provider=myspace", 400, "validation_failed"),
        ("", 400, "validation_failed"),
        ("provider=discord", 400, "provider_disabled"),
        ("provider=github&code_challenge=short", 400, "validation_failed"),
        (
            "provider=github&code_challenge=0123456789012345678901234567890123456789abc&code_challenge_method=md5",
            400,
            "validation_failed",
        ),
    ] {
        let r = get(q).await.unwrap();
        assert_eq!(r.status(), status, "{q}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], code, "{q}");
    }
    // skip_http_redirect answers with the URL instead of a redirect.
    let r = get("provider=github&skip_http_redirect=true")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = r.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with(&format!("{}/github/login/oauth/authorize?", fake.base)));

    // redirect_to outside the site and the allow-list ends at the site URL; allowed ones stay.
    for (asked, lands) in [
        ("https://evil.example/steal", "http://app.test/"),
        ("http://app.test.evil.example/", "http://app.test/"),
        ("http://other.test/cb/deeper", "http://other.test/cb/deeper"),
        (
            "https://pr-7.preview.test/done",
            "https://pr-7.preview.test/done",
        ),
    ] {
        let hops = sign_in(&app, &format!("provider=github&redirect_to={}", enc(asked))).await;
        let mut landed = hops.back.clone();
        landed.set_fragment(None);
        assert_eq!(landed.as_str(), lands, "{asked}");
        assert!(hops.fragment().contains_key("access_token"));
    }

    // The callback URL given to the provider comes from the request's own Host, never from
    // forwarding headers a client can forge; the alias mount keeps its prefix.
    for (path, callback) in [
        ("/auth/v1/authorize", "/auth/v1/callback"),
        ("/api/v1/auth/authorize", "/api/v1/auth/callback"),
    ] {
        let r = b
            .get(app.url(&format!("{path}?provider=github")))
            .header("X-Forwarded-Host", "evil.example")
            .header("X-Forwarded-Proto", "https")
            .header("Forwarded", "host=evil.example;proto=https")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let to = url::Url::parse(&location(&r)).unwrap();
        assert_eq!(pairs(to.query())["redirect_uri"], app.url(callback));
    }
}

#[tokio::test]
async fn banned_users_get_an_error() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new("bn", "bn", "bn@example.test"));
    let f = sign_in(&app, "provider=github").await.fragment();
    let uid = get_user(&app, &f["access_token"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.db
        .client()
        .await
        .execute(
            "UPDATE auth.users SET banned_until = now() + interval '1 day' WHERE id = $1::text::uuid",
            &[&uid],
        )
        .await
        .unwrap();
    let q = sign_in(&app, "provider=github").await.query();
    assert_eq!(q["error_code"], "user_banned");
    assert_eq!(q["error"], "access_denied");
}

#[tokio::test]
async fn provider_calls_go_through_the_ssrf_guard() {
    // Without the fake's address on the allow-list, discovery is refused.
    let (app, _fake) = setup(|c| c.outbound.allow_private_networks.clear()).await;
    let r = app
        .get("/auth/v1/authorize?provider=oidc")
        .header("X-Supabase-Api-Version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "oauth_provider_unavailable"
    );
    // GitHub needs no discovery: the redirect works, the token exchange is refused.
    let b = browser();
    let r = b
        .get(app.url("/auth/v1/authorize?provider=github"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = url::Url::parse(&location(&r)).unwrap();
    let state = pairs(to.query())["state"].clone();
    let r = b
        .get(app.url(&format!("/auth/v1/callback?code=abc&state={}", enc(&state))))
        .send()
        .await
        .unwrap();
    let q = pairs(url::Url::parse(&location(&r)).unwrap().query());
    assert_eq!(q["error_description"], "Unable to exchange external code");
}

#[tokio::test]
async fn settings_list_enabled_providers() {
    let (app, _fake) = setup(|c| c.auth.external.discord.enabled = false).await;
    let s: Value = app
        .get("/auth/v1/settings")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e = &s["external"];
    for p in [
        "github", "google", "gitlab", "facebook", "azure", "x", "apple", "keycloak", "oidc",
        "custom", "email",
    ] {
        assert_eq!(e[p], true, "{p}: {s}");
    }
    assert_eq!(e["discord"], false);
    assert_eq!(e["phone"], false);
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// `POST /auth/v1/token?grant_type=id_token` with the newer error shape.
async fn id_token_grant(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app
        .http
        .post(app.url("/auth/v1/token?grant_type=id_token"))
        .header("apikey", app.anon_key())
        .header("X-Supabase-Api-Version", "2024-01-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// signInWithIdToken: a native SDK's id_token (nonce = SHA-256 hex of the app's raw nonce)
/// becomes a Session; the user, identity and amr are those of the redirect flow, a second
/// sign-in finds the same user, and the issuer alone (GoTrue's older form) names the provider.
#[tokio::test]
async fn id_token_grant_signs_in_with_a_native_token() {
    let (app, fake) = setup(|_| {}).await;
    fake.set_user(FakeUser::new("g-native-1", "nat", "Nat@example.test"));
    let raw = "raw-nonce-of-the-app";
    let token = fake.native_id_token("google", Some(&sha256_hex(raw)), None);
    let (status, s) = id_token_grant(
        &app,
        json!({"provider": "google", "id_token": token, "nonce": raw}),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["token_type"], "bearer");
    assert!(s["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(s["expires_at"].as_i64().unwrap() > 0);
    assert_eq!(s["user"]["email"], "nat@example.test");
    assert!(s["user"]["email_confirmed_at"].is_string(), "{s}");
    assert!(
        s.get("provider_token").is_none(),
        "GoTrue hands back no provider token here"
    );
    let claims = jwt_claims(s["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"][0]["method"], "oauth");
    assert_eq!(claims["app_metadata"]["provider"], "google");
    let user = get_user(&app, s["access_token"].as_str().unwrap()).await;
    let ids = user["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{user}");
    assert_eq!(ids[0]["provider"], "google");
    assert_eq!(ids[0]["identity_data"]["sub"], "g-native-1");
    assert_eq!(
        ids[0]["identity_data"]["iss"],
        format!("{}/google", fake.base)
    );
    assert!(fake.token_requests().is_empty(), "no code exchange");

    // Again, without a nonce on either side, through the issuer instead of the name, and
    // with an access token whose at_hash the token carries: the same user.
    let token = fake.native_id_token("google", None, Some("provider-access-1"));
    let (status, s2) = id_token_grant(
        &app,
        json!({"id_token": token, "client_id": CLIENT_ID, "issuer": format!("{}/google", fake.base),
               "access_token": "provider-access-1"}),
    )
    .await;
    assert_eq!(status, 200, "{s2}");
    assert_eq!(s2["user"]["id"], s["user"]["id"]);
    let c = app.db.client().await;
    let audit: Vec<String> = c
        .query(
            "SELECT action FROM fluxbase.audit_log WHERE action LIKE 'auth.%' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, ["auth.user.signup", "auth.sign_in"]);
}

/// Every check that can refuse a token does, with GoTrue's messages: signature, audience,
/// expiry, issuer, nonce (mismatch, or on one side only), at_hash, and the requests that
/// name no usable provider.
#[tokio::test]
async fn id_token_grant_refuses_bad_tokens_and_providers() {
    let (app, fake) = setup(|c| {
        c.auth.external.keycloak.enabled = false;
    })
    .await;
    fake.set_user(FakeUser::new("g-bad", "bad", "bad@example.test"));
    let nonce = sha256_hex("n1");
    let mut cases: Vec<(&str, Value, u16, &str, &str)> = Vec::new();
    for (mode, message) in [
        (Mode::BadSignature, "Bad ID token"),
        (Mode::WrongAudience, "Unacceptable audience in id_token"),
        (Mode::Expired, "Bad ID token"),
        (Mode::WrongIssuer, "Bad ID token"),
        (Mode::WrongNonce, "Nonces mismatch"),
    ] {
        fake.set_mode(mode);
        let t = fake.native_id_token("oidc", Some(&nonce), None);
        let (status, body) = id_token_grant(
            &app,
            json!({"provider": "oidc", "id_token": t, "nonce": "n1"}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str(), body["message"].as_str()),
            (400, Some("invalid_credentials"), Some(message)),
            "{mode:?}: {body}"
        );
    }
    fake.set_mode(Mode::Approve);
    let with_nonce = fake.native_id_token("oidc", Some(&nonce), None);
    let without_nonce = fake.native_id_token("oidc", None, None);
    let with_at_hash = fake.native_id_token("oidc", None, Some("the-access-token"));
    let both = "Passed nonce and nonce in id_token should either both exist or not.";
    let disabled = format!(
        "Provider (issuer {:?}) is not enabled",
        format!("{}/realms/test", fake.base)
    );
    cases.extend([
        // The raw nonce's hash must be the claim; the claim itself is no proof.
        (
            "hash as nonce",
            json!({"provider": "oidc", "id_token": with_nonce, "nonce": nonce}),
            400,
            "invalid_credentials",
            "Nonces mismatch",
        ),
        (
            "nonce missing",
            json!({"provider": "oidc", "id_token": with_nonce}),
            400,
            "invalid_credentials",
            both,
        ),
        (
            "nonce extra",
            json!({"provider": "oidc", "id_token": without_nonce, "nonce": "n1"}),
            400,
            "invalid_credentials",
            both,
        ),
        (
            "at_hash",
            json!({"provider": "oidc", "id_token": with_at_hash, "access_token": "another"}),
            400,
            "invalid_credentials",
            "Bad ID token",
        ),
        (
            "garbage",
            json!({"provider": "oidc", "id_token": "not.a.jwt"}),
            400,
            "invalid_credentials",
            "Bad ID token",
        ),
        (
            "no token",
            json!({"provider": "oidc"}),
            400,
            "validation_failed",
            "id_token required",
        ),
        (
            "no provider",
            json!({"id_token": without_nonce}),
            400,
            "validation_failed",
            "provider or client_id and issuer required",
        ),
        (
            "unknown issuer",
            json!({"id_token": without_nonce, "client_id": CLIENT_ID, "issuer": "https://issuer.evil.example"}),
            400,
            "validation_failed",
            "Custom OIDC provider \"\" not allowed",
        ),
        (
            "not OIDC",
            json!({"provider": "github", "id_token": without_nonce}),
            400,
            "validation_failed",
            "Custom OIDC provider \"github\" not allowed",
        ),
        (
            "unknown",
            json!({"provider": "myspace", "id_token": without_nonce}),
            400,
            "validation_failed",
            "Custom OIDC provider \"myspace\" not allowed",
        ),
        (
            "disabled",
            json!({"provider": "keycloak", "id_token": without_nonce}),
            400,
            "provider_disabled",
            &disabled,
        ),
    ]);
    for (what, body, status, code, message) in cases {
        let (s, b) = id_token_grant(&app, body).await;
        assert_eq!(
            (s, b["code"].as_str(), b["message"].as_str()),
            (status, Some(code), Some(message)),
            "{what}: {b}"
        );
    }
    let c = app.db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM auth.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no refused token made a user");
    // The same token with the right nonce and access token passes.
    let (s, b) = id_token_grant(
        &app,
        json!({"provider": "oidc", "id_token": with_at_hash, "access_token": "the-access-token"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = id_token_grant(
        &app,
        json!({"provider": "oidc", "id_token": with_nonce, "nonce": "n1"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// The rules of the callback hold here too: a verified address links to its account, an
/// unverified one gets a confirmation mail (422), banned users and disabled signups are
/// refused; Azure's tenant issuer is checked with the token's `tid`.
#[tokio::test]
async fn id_token_grant_links_and_refuses_like_the_callback() {
    let (app, fake) = setup(|c| c.auth.mailer_autoconfirm = true).await;
    let r = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("apikey", app.anon_key())
        .json(&json!({"email": "lia@example.test", "password": "hunter22"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let existing: Value = r.json().await.unwrap();
    fake.set_user(FakeUser::new("apple-lia", "lia", "lia@example.test"));
    let t = fake.native_id_token("apple", None, None);
    let (s, b) = id_token_grant(&app, json!({"provider": "apple", "id_token": t})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user"]["id"], existing["user"]["id"], "linked");
    assert_eq!(
        b["user"]["app_metadata"]["providers"],
        json!(["apple", "email"])
    );

    // Azure: the address counts as verified only with xms_edov; the tenant issuer is checked.
    fake.set_user(FakeUser::new("az-1", "azi", "azi@example.test"));
    let t = fake.native_id_token("azure", None, None);
    let (s, b) = id_token_grant(&app, json!({"provider": "azure", "id_token": t})).await;
    assert_eq!(s, 200, "{b}");
    fake.set_mode(Mode::WrongIssuer);
    let t = fake.native_id_token("azure", None, None);
    let (s, b) = id_token_grant(&app, json!({"provider": "azure", "id_token": t})).await;
    assert_eq!((s, b["message"].as_str()), (400, Some("Bad ID token")));
    fake.set_mode(Mode::Approve);

    // Banned.
    app.db
        .client()
        .await
        .execute(
            "UPDATE auth.users SET banned_until = now() + interval '1 day' WHERE email = 'lia@example.test'",
            &[],
        )
        .await
        .unwrap();
    fake.set_user(FakeUser::new("apple-lia", "lia", "lia@example.test"));
    let t = fake.native_id_token("apple", None, None);
    let (s, b) = id_token_grant(&app, json!({"provider": "apple", "id_token": t})).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("user_banned")), "{b}");

    // Unverified address, no autoconfirm: the account waits for its confirmation mail.
    let (app, fake) = setup(|_| {}).await;
    let mut u = FakeUser::new("g-unv", "unv", "unv@example.test");
    u.email_verified = false;
    fake.set_user(u);
    let t = fake.native_id_token("google", None, None);
    let (s, b) = id_token_grant(&app, json!({"provider": "google", "id_token": t})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("provider_email_needs_verification")),
        "{b}"
    );
    let c = app.db.client().await;
    let mails: i64 = c
        .query_one(
            "SELECT count(*) FROM jobs.jobs WHERE queue = 'auth.mail' AND payload->>'to' = 'unv@example.test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mails, 1);
    let sessions: i64 = c
        .query_one("SELECT count(*) FROM auth.sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0);

    // Signups off: a new identity is refused.
    let (app, fake) = setup(|c| c.auth.enable_signup = false).await;
    fake.set_user(FakeUser::new("g-new", "new", "new@example.test"));
    let t = fake.native_id_token("google", None, None);
    let (s, b) = id_token_grant(&app, json!({"provider": "google", "id_token": t})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("signup_disabled")),
        "{b}"
    );
}

// ---------------------------------------------------------------------------------------
// Manual linking: GET /user/identities/authorize, grant_type=id_token with link_identity,
// DELETE /user/identities/{id}.

/// Signs up (autoconfirm) and returns the session.
async fn signup(app: &TestApp, email: &str) -> Value {
    let r = app
        .http
        .post(app.url("/auth/v1/signup"))
        .header("apikey", app.anon_key())
        .json(&json!({"email": email, "password": "hunter22"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert!(s["access_token"].is_string(), "{s}");
    s
}

fn bearer(s: &Value) -> String {
    s["access_token"].as_str().unwrap().to_string()
}

/// The signed-in user's browser: `linkIdentity` (skip_http_redirect) → provider → callback.
async fn link(app: &TestApp, access: &str, query: &str) -> Hops {
    let r = app
        .get(&format!(
            "/auth/v1/user/identities/authorize?{query}&skip_http_redirect=true"
        ))
        .header("apikey", app.anon_key())
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let to_provider =
        url::Url::parse(r.json::<Value>().await.unwrap()["url"].as_str().unwrap()).unwrap();
    let b = browser();
    let r = b.get(to_provider.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 302, "provider: {}", r.text().await.unwrap());
    let callback = location(&r);
    assert!(
        callback.starts_with(&app.url("/auth/v1/callback?")),
        "{callback}"
    );
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302);
    Hops {
        to_provider,
        back: url::Url::parse(&location(&r)).unwrap(),
    }
}

/// `DELETE /auth/v1/user/identities/{id}` in the newer error shape.
async fn unlink(app: &TestApp, access: &str, id: &str) -> (u16, Value) {
    let r = app
        .http
        .delete(app.url(&format!("/auth/v1/user/identities/{id}")))
        .header("apikey", app.anon_key())
        .header("X-Supabase-Api-Version", "2024-01-01")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn providers_of(user: &Value) -> Vec<String> {
    user["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["provider"].as_str().unwrap().to_string())
        .collect()
}

fn identity_id(user: &Value, provider: &str) -> String {
    user["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} identity: {user}"))["identity_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn audit_actions(app: &TestApp, like: &str) -> Vec<(String, Value)> {
    app.db
        .client()
        .await
        .query(
            "SELECT action, details FROM fluxbase.audit_log WHERE action LIKE $1 ORDER BY id",
            &[&like],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Off by default (GoTrue's default): both routes answer 404 `manual_linking_disabled` to a
/// signed-in user; without a user token they answer 401 first, as GoTrue authenticates
/// before it looks at the setting.
#[tokio::test]
async fn manual_linking_is_off_by_default() {
    let (app, _fake) = setup(|c| c.auth.mailer_autoconfirm = true).await;
    let s = signup(&app, "off@example.test").await;
    let r = app
        .get("/auth/v1/user/identities/authorize?provider=github&skip_http_redirect=true")
        .header("apikey", app.anon_key())
        .header("X-Supabase-Api-Version", "2024-01-01")
        .bearer_auth(bearer(&s))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["code"].as_str(), b["message"].as_str()),
        (
            Some("manual_linking_disabled"),
            Some("Manual linking is disabled")
        )
    );
    let id = identity_id(&s["user"], "email");
    let (status, b) = unlink(&app, &bearer(&s), &id).await;
    assert_eq!(
        (status, b["code"].as_str()),
        (404, Some("manual_linking_disabled"))
    );
    let (status, b) = unlink(&app, &app.anon_key(), &id).await;
    assert_eq!(
        (status, b["code"].as_str()),
        (401, Some("no_authorization"))
    );
    let n: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM auth.oauth_states", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no flow was opened");
}

/// linkIdentity through the redirect flow: the provider's identity (another address, so no
/// automatic linking could do it) joins the signed-in user, and the browser comes back with
/// a new session of that user (implicit: fragment; PKCE: a code). An identity that is
/// already someone's is refused with `identity_already_exists` and nothing changes.
#[tokio::test]
async fn link_identity_attaches_the_identity_to_the_signed_in_user() {
    let (app, fake) = setup(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.manual_linking_enabled = true;
    })
    .await;
    let a = signup(&app, "ann@example.test").await;
    let uid = a["user"]["id"].as_str().unwrap().to_string();
    fake.set_user(FakeUser::new("1001", "annie", "annie@elsewhere.test"));

    // Without skip_http_redirect: a 302 to the provider.
    let r = browser()
        .get(app.url("/auth/v1/user/identities/authorize?provider=github"))
        .header("apikey", app.anon_key())
        .bearer_auth(bearer(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with(&fake.base), "{}", location(&r));

    let hops = link(
        &app,
        &bearer(&a),
        &format!(
            "provider=github&redirect_to={}",
            enc("http://app.test/linked")
        ),
    )
    .await;
    assert!(hops.to_provider.as_str().starts_with(&fake.base));
    assert_eq!(
        hops.back.as_str().split('#').next().unwrap(),
        "http://app.test/linked"
    );
    let f = hops.fragment();
    assert!(!f.contains_key("error"), "{f:?}");
    let claims = jwt_claims(&f["access_token"]);
    assert_eq!(claims["sub"], uid.as_str(), "a session of the linking user");
    assert_eq!(claims["amr"][0]["method"], "oauth");
    assert_ne!(
        claims["session_id"],
        jwt_claims(&bearer(&a))["session_id"],
        "a new session"
    );
    let user = get_user(&app, &f["access_token"]).await;
    assert_eq!(user["id"], uid.as_str());
    assert_eq!(providers_of(&user), ["email", "github"]);
    assert_eq!(user["email"], "ann@example.test", "the address stays");
    assert_eq!(
        user["app_metadata"]["providers"],
        json!(["email", "github"])
    );
    assert_eq!(user["app_metadata"]["provider"], "email");
    let gh = &user["identities"][1];
    assert_eq!(gh["identity_data"]["email"], "annie@elsewhere.test");
    assert_eq!(gh["id"], "1001");
    let audit = audit_actions(&app, "auth.identity.%").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].0, "auth.identity.link");
    assert_eq!(audit[0].1["provider"], "github");
    assert_eq!(audit[0].1["provider_id"], "1001");
    // The earlier session still works.
    get_user(&app, &bearer(&a)).await;

    // The same identity again: already linked (to this user).
    let q = link(&app, &bearer(&a), "provider=github").await.query();
    assert_eq!(q["error_code"], "identity_already_exists", "{q:?}");
    assert_eq!(q["error_description"], "Identity is already linked");

    // Someone else's identity: refused, and it stays where it is.
    let b = signup(&app, "bob@example.test").await;
    let hops = link(&app, &bearer(&b), "provider=github").await;
    let q = hops.query();
    assert_eq!(q["error_code"], "identity_already_exists", "{q:?}");
    assert_eq!(
        q["error_description"],
        "Identity is already linked to another user"
    );
    assert!(!hops.fragment().contains_key("access_token"));
    let owner: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT user_id::text FROM auth.identities WHERE provider = 'github'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, uid);

    // PKCE: the code is exchanged for a session of the linking user.
    fake.set_user(FakeUser::new("oidc-bob", "bobby", "bobby@elsewhere.test"));
    let verifier = "link-verifier-long-enough-to-be-valid-0123456789-abcdefgh";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
    };
    let hops = link(
        &app,
        &bearer(&b),
        &format!("provider=oidc&code_challenge={challenge}&code_challenge_method=s256"),
    )
    .await;
    let code = hops.query()["code"].clone();
    let r = app
        .http
        .post(app.url("/auth/v1/token?grant_type=pkce"))
        .header("apikey", app.anon_key())
        .json(&json!({"auth_code": code, "code_verifier": verifier}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["user"]["id"], b["user"]["id"]);
    assert_eq!(providers_of(&s["user"]), ["email", "oidc"]);
    assert!(s["provider_token"].is_string(), "{s}");

    // A user token is needed to start; an expired or signed-out session cannot.
    let r = app
        .get("/auth/v1/user/identities/authorize?provider=github")
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .post(app.url("/auth/v1/logout"))
        .header("apikey", app.anon_key())
        .bearer_auth(bearer(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .get("/auth/v1/user/identities/authorize?provider=github")
        .header("apikey", app.anon_key())
        .bearer_auth(bearer(&b))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "session_not_found");
}

/// An anonymous user who links a provider with a verified address takes that address and
/// becomes a permanent, confirmed user; with an unverified address the identity is linked
/// but a confirmation mail goes out instead of a session; an address that belongs to another
/// account is refused (`email_exists`) and nothing is linked.
#[tokio::test]
async fn anonymous_users_become_permanent_by_linking() {
    let (app, fake) = setup(|c| c.auth.manual_linking_enabled = true).await;
    let anon_signup = || async {
        let r = app
            .http
            .post(app.url("/auth/v1/signup"))
            .header("apikey", app.anon_key())
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let s = anon_signup().await;
    assert_eq!(s["user"]["is_anonymous"], true);
    fake.set_user(FakeUser::new("1002", "anon", "Anon@Example.test"));
    let f = link(&app, &bearer(&s), "provider=github").await.fragment();
    assert!(!f.contains_key("error"), "{f:?}");
    let claims = jwt_claims(&f["access_token"]);
    assert_eq!(claims["sub"], s["user"]["id"]);
    assert_eq!(claims["is_anonymous"], false);
    let user = get_user(&app, &f["access_token"]).await;
    assert_eq!(user["email"], "anon@example.test");
    assert!(user["email_confirmed_at"].is_string(), "{user}");
    assert_eq!(user["is_anonymous"], false);
    assert_eq!(user["user_metadata"]["email_verified"], true);
    assert_eq!(user["app_metadata"]["provider"], "github");
    assert_eq!(user["app_metadata"]["providers"], json!(["github"]));

    // Unverified: linked, address set but unconfirmed, a mail, no session.
    let s = anon_signup().await;
    let mut u = FakeUser::new("gl-anon", "unv", "unv@example.test");
    u.email_verified = false;
    fake.set_user(u);
    let hops = link(&app, &bearer(&s), "provider=gitlab").await;
    let q = hops.query();
    assert_eq!(q["error_code"], "email_not_confirmed", "{q:?}");
    assert_eq!(q["error"], "server_error");
    assert!(q["error_description"].contains("Unverified email with gitlab"));
    assert!(!hops.fragment().contains_key("access_token"));
    let c = app.db.client().await;
    let row = c
        .query_one(
            "SELECT u.email, u.email_confirmed_at IS NULL, u.is_anonymous,
                    (SELECT count(*) FROM auth.identities i WHERE i.user_id = u.id AND i.provider = 'gitlab'),
                    (SELECT count(*) FROM jobs.jobs j WHERE j.queue = 'auth.mail' AND j.payload->>'to' = u.email)
               FROM auth.users u WHERE u.id = $1::text::uuid",
            &[&s["user"]["id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("unv@example.test")
    );
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2), "still anonymous until confirmed");
    assert_eq!(row.get::<_, i64>(3), 1);
    assert_eq!(row.get::<_, i64>(4), 1);

    // Another account's address: nothing linked.
    let s = anon_signup().await;
    fake.set_user(FakeUser::new("oidc-taken", "taken", "anon@example.test"));
    let q = link(&app, &bearer(&s), "provider=oidc").await.query();
    assert_eq!(q["error_code"], "email_exists", "{q:?}");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM auth.identities WHERE provider = 'oidc'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// unlinkIdentity: only the user's own identities, never the last one; when the address was
/// the unlinked identity's, the user takes a remaining identity's (still confirmed when its
/// provider verified it); an address another account has blocks the unlink. Audited.
#[tokio::test]
async fn unlink_identity_keeps_one_and_moves_the_address() {
    let (app, fake) = setup(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.manual_linking_enabled = true;
    })
    .await;
    let a = signup(&app, "una@example.test").await;
    fake.set_user(FakeUser::new("1003", "una", "una@github.test"));
    let f = link(&app, &bearer(&a), "provider=github").await.fragment();
    let access = f["access_token"].clone();
    let user = get_user(&app, &access).await;
    assert_eq!(providers_of(&user), ["email", "github"]);

    let other = signup(&app, "other@example.test").await;
    let foreign = identity_id(&other["user"], "email");
    for (id, status, code) in [
        ("not-a-uuid", 404, "validation_failed"),
        (
            "00000000-0000-0000-0000-000000000000",
            422,
            "identity_not_found",
        ),
        (foreign.as_str(), 422, "identity_not_found"),
    ] {
        let (s, b) = unlink(&app, &access, id).await;
        assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{id}: {b}");
    }
    // The other user keeps its identity.
    assert_eq!(
        providers_of(&get_user(&app, &bearer(&other)).await),
        ["email"]
    );

    // Unlinking the email identity: the address moves to GitHub's, still confirmed.
    let (s, b) = unlink(&app, &access, &identity_id(&user, "email")).await;
    assert_eq!((s, &b), (200, &json!({})));
    let user = get_user(&app, &access).await;
    assert_eq!(providers_of(&user), ["github"]);
    assert_eq!(user["email"], "una@github.test");
    assert!(user["email_confirmed_at"].is_string(), "{user}");
    assert_eq!(user["app_metadata"]["providers"], json!(["github"]));
    assert_eq!(user["app_metadata"]["provider"], "github");
    let r = app
        .http
        .post(app.url("/auth/v1/token?grant_type=password"))
        .header("apikey", app.anon_key())
        .json(&json!({"email": "una@example.test", "password": "hunter22"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the old address signs in no more");

    // The last identity stays.
    let (s, b) = unlink(&app, &access, &identity_id(&user, "github")).await;
    assert_eq!(
        (s, b["code"].as_str(), b["message"].as_str()),
        (
            422,
            Some("single_identity_not_deletable"),
            Some("User must have at least 1 identity after unlinking")
        )
    );
    let audit = audit_actions(&app, "auth.identity.unlink").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].1["provider"], "email");
    assert_eq!(audit[0].1["identity_id"], identity_id(&a["user"], "email"));

    // Email conflict: the remaining identity's address is another account's.
    let c = signup(&app, "cat@example.test").await;
    fake.set_user(FakeUser::new("1004", "cat", "dog@example.test"));
    let f = link(&app, &bearer(&c), "provider=github").await.fragment();
    let access = f["access_token"].clone();
    signup(&app, "dog@example.test").await;
    let user = get_user(&app, &access).await;
    let (s, b) = unlink(&app, &access, &identity_id(&user, "email")).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("email_conflict_identity_not_deletable")),
        "{b}"
    );
    let user = get_user(&app, &access).await;
    assert_eq!(providers_of(&user), ["email", "github"], "nothing changed");
    assert_eq!(user["email"], "cat@example.test");
    // Unlinking GitHub instead keeps the address (it is the email identity's).
    let (s, _) = unlink(&app, &access, &identity_id(&user, "github")).await;
    assert_eq!(s, 200);
    let user = get_user(&app, &access).await;
    assert_eq!(user["email"], "cat@example.test");
    assert_eq!(user["app_metadata"]["providers"], json!(["email"]));
}

/// linkIdentity({provider, token}): `grant_type=id_token` with `link_identity` links the
/// token's identity to the bearer's user and answers a new session of that user; it needs a
/// user token, refuses an identity that is anyone's, and (as in GoTrue) does not depend on
/// `manual_linking_enabled`.
#[tokio::test]
async fn id_token_grant_links_to_the_signed_in_user() {
    let (app, fake) = setup(|c| c.auth.mailer_autoconfirm = true).await;
    let a = signup(&app, "ida@example.test").await;
    fake.set_user(FakeUser::new("g-ida", "ida", "ida@google.test"));
    let token = fake.native_id_token("google", None, None);
    let grant = |auth: Option<String>, token: String| {
        let mut r = app
            .http
            .post(app.url("/auth/v1/token?grant_type=id_token"))
            .header("apikey", app.anon_key())
            .header("X-Supabase-Api-Version", "2024-01-01")
            .json(&json!({"provider": "google", "id_token": token, "link_identity": true}));
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = grant(None, token.clone()).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            400,
            Some("Linking requires a valid user access token in Authorization")
        )
    );
    let (s, b) = grant(Some(app.anon_key()), token.clone()).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("no_authorization")));

    let (s, b) = grant(Some(bearer(&a)), token.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user"]["id"], a["user"]["id"]);
    assert_eq!(providers_of(&b["user"]), ["email", "google"]);
    assert_eq!(b["user"]["email"], "ida@example.test");
    let claims = jwt_claims(b["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], a["user"]["id"]);
    assert_eq!(claims["amr"][0]["method"], "oauth");
    assert_ne!(claims["session_id"], jwt_claims(&bearer(&a))["session_id"]);

    let (s, b) = grant(Some(bearer(&a)), token.clone()).await;
    assert_eq!(
        (s, b["code"].as_str(), b["message"].as_str()),
        (
            422,
            Some("identity_already_exists"),
            Some("Identity is already linked")
        )
    );
    let other = signup(&app, "ido@example.test").await;
    let (s, b) = grant(Some(bearer(&other)), token).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (422, Some("Identity is already linked to another user"))
    );
    // Without link_identity the same token signs its (linked) user in.
    let (s, b) = id_token_grant(
        &app,
        json!({"provider": "google", "id_token": fake.native_id_token("google", None, None)}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user"]["id"], a["user"]["id"]);
}
