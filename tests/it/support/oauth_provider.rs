//! A fake OAuth2 / OpenID Connect provider: a real HTTP server that answers in the shapes of
//! GitHub, GitLab, Discord, Google, Keycloak, a generic OIDC issuer and a custom OAuth2
//! provider, each under its own path prefix on one port:
//!
//! | preset   | `url` / issuer to configure | endpoints                                                  |
//! |----------|-----------------------------|------------------------------------------------------------|
//! | github   | `<base>/github`             | `/login/oauth/authorize`, `/login/oauth/access_token`, `/api/v3/user`, `/api/v3/user/emails` |
//! | gitlab   | `<base>/gitlab`             | `/oauth/authorize`, `/oauth/token`, `/api/v4/user`         |
//! | discord  | `<base>/discord`            | `/api/oauth2/authorize`, `/api/oauth2/token`, `/api/users/@me` |
//! | facebook | `<base>/facebook`           | `/dialog/oauth`, `/oauth/access_token`, `/me` (checks `appsecret_proof`) |
//! | x        | `<base>/x`                  | `/i/oauth2/authorize`, `/2/oauth2/token` (HTTP Basic client auth, PKCE required), `/2/users/me` |
//! | apple    | `<base>/apple`              | discovery, `/auth/authorize` (answers `form_post`: an HTML form with code, state and `user`), `/auth/token`, `/auth/keys` |
//! | azure    | `<base>/azure/common/v2.0`  | discovery (issuer with `{tenantid}`), `/common/oauth2/v2.0/{authorize,token}`, `/common/discovery/v2.0/keys` |
//! | google   | `<base>/google`             | discovery, `/o/oauth2/v2/auth`, `/token`, `/v1/userinfo`, `/oauth2/v3/certs` |
//! | keycloak | `<base>/realms/test`        | discovery, `/protocol/openid-connect/{auth,token,userinfo,certs}` |
//! | oidc     | `<base>/oidc`               | discovery, `/authorize`, `/token`, `/userinfo`, `/jwks`    |
//! | custom   | `<base>/custom`             | `/authorize`, `/token`, `/userinfo` (configured one by one) |
//!
//! `<flavor prefix>/native/id_token?nonce=` answers an id_token as a native SDK hands one to
//! an app (for `signInWithIdToken`). An authorization request with `login_hint=<login>` signs
//! in `hint-<login>` (verified `<login>@example.test`) instead of the test's user, so a client
//! suite that cannot call `set_user` can still bring a second account.
//!
//! It checks what a real provider checks, with its own code: client id and secret, the
//! redirect_uri of the code, single-use codes, the PKCE verifier against the challenge
//! (SHA-256 here, not Fluxbase's function), bearer tokens on the user endpoints. id_tokens are
//! RS256, signed with a fixed test key published in each issuer's JWKS.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The client id Fluxbase must present.
pub const CLIENT_ID: &str = "fluxbase-test-client";
/// The client secret Fluxbase must present.
pub const CLIENT_SECRET: &str = "fluxbase-test-secret";

const TEST_KEY_DER_B64: &str = concat!(
    "MIIEowIBAAKCAQEA67Ov+ED0EoUP2W2S+bYjigJuk+C3YuRqfXTaXx+L9PR9gz/cqbWDdtLB4Byi",
    "dupu/dQRO5G8X9TbokPFucW6TuuDqdWUNgSp39GEv1nNC9FuIKsM8nKWrGFnVfUz4I7WB7FrEB8X",
    "zn0KV77x6GWIJocwEKnIX4r2654fI192M4F1FwjZUJWp/+24SFkZf24NuaY/pSRTTEdjhMnBkMUh",
    "lf1OMAQMJZwis4CRSeB6qCvYpQWgK0u9ViiM6HdYG6rH8bqkXSRRWe48AyWhbjcT2Qk/YHNNCMiV",
    "ppoP5F+4nWVPeEW/L3DV8Urgi4lovNSzmw5hSGxu5oVKp+83E5XUYwIDAQABAoIBABPuMXQMMgHw",
    "Oc3d48QKcGjhbxjsCIsWhiFY+dokoGtfJ88rCEKwHuSzn5c5dKIaOAvDRzhtSKt7I/NNncY+qlQK",
    "utW9QfdrX4iV0+Qbo34GAIpHTHn30eEo/1mXuVeaBw5xedHMKfGDm0CeMcsVQspXO2uSn7yMfff1",
    "z+uSzTuU45bOCh+jcKEkM5ECCTiwQR8rPzp05jIvKf86gC0zqpK8f+LE9z15pneD5O+Y3k3pwnjA",
    "m1uMuyhY63bDVtpnuq2keYuxJjgzExUjwXPNI2KIqhND7OkrsrLRhkQYjlLhusO+6ZSyC55pIJEo",
    "3ciBwnfWgyBOAsiB1fsh6Z5MC1kCgYEA9+FOENaPfkbziI4HR66XAv/7XEPVPwduq810ZnmLp9a/",
    "L8FgWZ9ct97adDryg4esdIjzAIEsUd6EYNfBZ9gtxcsgB1N45/ohWeWVNPkFpFhdYrn70gfimK9j",
    "wYhbKeG5u/HeqgVhdXXYV4qRCdUt+FkK+Nec+MplHwe+Zh1gvN8CgYEA82xB6IFIFFIfhqCTh5+H",
    "BlEv5b/xMfgBvwsINL8u5E0qz6v+cLTNbMdT8RKqP09OXB/+6JWnbs4hji8KF/kGa7Sp1XcusBlK",
    "3Fi3ncTSfscWHTwb+XeH9KBqeOhaPwaQ6DHdTBfsKVGyy0vlCGjhle9iybS+AsQ/pzctiFE+VP0C",
    "gYEAiPywYcnRfx3C1IJ5L3oi5nuE9BZgsPZwiO2AGGmvbk/VVJTvpFfXq52y6GzzPRErkzNj57F7",
    "RrtMOSDDN5pWoWqCBspwlPK8n6uq6517KrnS0g6qRgYpievTm0654slmFaGzRg63L2yy5J4lTWPM",
    "heTflWnCzBM+Ewn6hQBTR80CgYAyi0AELxPwZDz3j1AS0SUQQrtXUUubvItgR8Ikca4i6YMCLAxh",
    "Cqm89IaRf/apvqXeqyYa1Tg24cZF566I28RhiNna4SxolFfe+OznbX7npB8LYvfMDO3F9akmAdj7",
    "TTm5fOEec7ktuzEM1W1xGZX9s/8nMshheq5c4jAqJfRzYQKBgFooZCSNKpe1EOQUI+mQv3OZ1PXn",
    "W6PdfKJiP1DlIDFxMCc2Qi4YwwVIPQVRsDssgexISpJ1Uu10nLR4LYX282X92UIyL5GBUi6SEyD6",
    "+MnUoGp4qb2lfmWQxq6Noy5Ko0bFjR/Po4r9j93WwEMUbQXzuYMYkXOibISBVcM4dLqE",
);
const TEST_KEY_N: &str = concat!(
    "67Ov-ED0EoUP2W2S-bYjigJuk-C3YuRqfXTaXx-",
    "L9PR9gz_cqbWDdtLB4Byidupu_dQRO5G8X9TbokPFucW6TuuDqdWUNgSp39GEv1nNC9FuIKsM8nK",
    "WrGFnVfUz4I7WB7FrEB8Xzn0KV77x6GWIJocwEKnIX4r2654fI192M4F1FwjZUJWp_-",
    "24SFkZf24NuaY_pSRTTEdjhMnBkMUhlf1OMAQMJZwis4CRSeB6qCvYpQWgK0u9ViiM6HdYG6rH8b",
    "qkXSRRWe48AyWhbjcT2Qk_YHNNCMiVppoP5F-4nWVPeEW_L3DV8Urgi4lovNSzmw5hSGxu5oVKp-",
    "83E5XUYw",
);
const TEST_KEY_E: &str = "AQAB";

/// The person who signs in at the provider.
#[derive(Debug, Clone)]
pub struct FakeUser {
    /// Provider user id.
    pub id: String,
    /// Login / username.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Primary address.
    pub email: String,
    /// Whether the provider says the address is verified.
    pub email_verified: bool,
}

impl FakeUser {
    /// A user with a verified address.
    pub fn new(id: &str, login: &str, email: &str) -> FakeUser {
        FakeUser {
            id: id.into(),
            login: login.into(),
            name: format!("{login} Example"),
            email: email.into(),
            email_verified: true,
        }
    }
}

/// How the provider behaves on the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The user consents; everything works.
    Approve,
    /// The user refuses consent (`error=access_denied` back to the callback).
    Deny,
    /// The token endpoint refuses the code.
    TokenError,
    /// id_tokens carry a broken signature.
    BadSignature,
    /// id_tokens carry another nonce.
    WrongNonce,
    /// id_tokens are for another client.
    WrongAudience,
    /// id_tokens name another issuer (Azure: another tenant than their `tid`).
    WrongIssuer,
    /// id_tokens expired ten minutes ago.
    Expired,
}

/// The tenant of the fake Azure directory.
pub const AZURE_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

#[derive(Debug, Clone)]
struct Grant {
    flavor: String,
    redirect_uri: String,
    challenge: Option<String>,
    nonce: Option<String>,
    user: FakeUser,
}

#[derive(Default)]
struct Inner {
    user: Option<FakeUser>,
    mode: Option<Mode>,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, FakeUser>,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: Vec<HashMap<String, String>>,
    refusals: Vec<String>,
    kid: Option<String>,
    discovery_hits: usize,
    jwks_hits: usize,
}

/// The running fake provider.
#[derive(Clone)]
pub struct FakeProvider {
    /// `http://127.0.0.3:<port>`
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeProvider {
    /// Starts the server on 127.0.0.3 (so a test allows exactly that address).
    pub fn start() -> FakeProvider {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        let port = super::serve_fake("127.0.0.3", move |cfg| {
            cfg.app_data(web::Data::new(shared.clone()))
                .default_service(web::to(handle));
        });
        FakeProvider {
            base: format!("http://127.0.0.3:{port}"),
            inner,
        }
    }

    /// Who signs in next.
    pub fn set_user(&self, u: FakeUser) {
        self.inner.lock().unwrap().user = Some(u);
    }

    /// How the provider behaves from now on.
    pub fn set_mode(&self, m: Mode) {
        self.inner.lock().unwrap().mode = Some(m);
    }

    /// The query of every authorization request so far.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.lock().unwrap().authorize_requests.clone()
    }

    /// The form of every token request so far.
    pub fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.lock().unwrap().token_requests.clone()
    }

    /// Publishes the signing key under a new key id (a key rotation): id_tokens name it and
    /// the key sets list only it.
    pub fn rotate_key(&self, kid: &str) {
        self.inner.lock().unwrap().kid = Some(kid.to_string());
    }

    /// How often discovery documents and key sets were fetched.
    pub fn discovery_and_jwks_hits(&self) -> (usize, usize) {
        let g = self.inner.lock().unwrap();
        (g.discovery_hits, g.jwks_hits)
    }

    /// An id_token as the provider's native SDK hands it to an app (Google Sign-In, Sign in
    /// with Apple …): for the current user, in the current mode, with the nonce the app
    /// gave the SDK and, with `access_token`, its `at_hash`.
    pub fn native_id_token(
        &self,
        flavor: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> String {
        native_id_token(&self.inner, &self.base, flavor, nonce, access_token)
    }

    /// Why the provider refused requests (empty when all were well-formed).
    pub fn refusals(&self) -> Vec<String> {
        self.inner.lock().unwrap().refusals.clone()
    }
}

fn native_id_token(
    inner: &Arc<Mutex<Inner>>,
    base: &str,
    flavor: &str,
    nonce: Option<&str>,
    access_token: Option<&str>,
) -> String {
    let g = inner.lock().unwrap();
    let grant = Grant {
        flavor: flavor.into(),
        redirect_uri: String::new(),
        challenge: None,
        nonce: nonce.map(str::to_string),
        user: g.user.clone().expect("set_user first"),
    };
    let kid = g.kid.clone().unwrap_or_else(|| "test-key".into());
    let mode = g.mode.unwrap_or(Mode::Approve);
    drop(g);
    id_token(flavor, base, &grant, mode, &kid, access_token)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    b64(&bytes)
}

fn form(s: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(s.as_bytes())
        .into_owned()
        .collect()
}

/// The prefix (flavor) of a path and the issuer path of OIDC flavors.
fn split(path: &str) -> (&'static str, String) {
    for (prefix, flavor) in [
        ("/github/", "github"),
        ("/gitlab/", "gitlab"),
        ("/discord/", "discord"),
        ("/facebook/", "facebook"),
        ("/azure/", "azure"),
        ("/x/", "x"),
        ("/apple/", "apple"),
        ("/google/", "google"),
        ("/realms/test/", "keycloak"),
        ("/oidc/", "oidc"),
        ("/custom/", "custom"),
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            return (flavor, rest.to_string());
        }
    }
    ("", String::new())
}

fn issuer_path(flavor: &str) -> &'static str {
    match flavor {
        "google" => "/google",
        "keycloak" => "/realms/test",
        "azure" => "/azure/common/v2.0",
        "apple" => "/apple",
        _ => "/oidc",
    }
}

fn refuse(inner: &Arc<Mutex<Inner>>, status: u16, why: &str) -> HttpResponse {
    inner.lock().unwrap().refusals.push(why.to_string());
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"error": "invalid_request", "error_description": why}))
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    inner: web::Data<Arc<Mutex<Inner>>>,
) -> HttpResponse {
    let inner = inner.get_ref().clone();
    let base = format!("http://{}", req.connection_info().host());
    let (flavor, rest) = split(req.path());
    let q = form(req.query_string());
    match (flavor, rest.as_str()) {
        (_, "login/oauth/authorize")
        | (_, "oauth/authorize")
        | (_, "api/oauth2/authorize")
        | (_, "o/oauth2/v2/auth")
        | (_, "protocol/openid-connect/auth")
        | (_, "dialog/oauth")
        | (_, "common/oauth2/v2.0/authorize")
        | (_, "i/oauth2/authorize")
        | ("apple", "auth/authorize")
        | (_, "authorize") => authorize(&inner, flavor, q),
        (_, "login/oauth/access_token")
        | (_, "oauth/token")
        | (_, "api/oauth2/token")
        | (_, "token")
        | (_, "oauth/access_token")
        | (_, "common/oauth2/v2.0/token")
        | (_, "2/oauth2/token")
        | ("apple", "auth/token")
        | (_, "protocol/openid-connect/token") => {
            let basic = req
                .headers()
                .get("Authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            token(
                &inner,
                flavor,
                &base,
                &String::from_utf8_lossy(&body),
                basic,
            )
        }
        ("google" | "keycloak" | "oidc" | "apple", ".well-known/openid-configuration")
        | ("azure", "common/v2.0/.well-known/openid-configuration") => {
            inner.lock().unwrap().discovery_hits += 1;
            discovery(flavor, &base)
        }
        ("google", "oauth2/v3/certs")
        | ("azure", "common/discovery/v2.0/keys")
        | ("apple", "auth/keys")
        | ("keycloak", "protocol/openid-connect/certs")
        | ("oidc", "jwks") => {
            let kid = {
                let mut g = inner.lock().unwrap();
                g.jwks_hits += 1;
                g.kid.clone().unwrap_or_else(|| "test-key".into())
            };
            jwks(flavor, &kid)
        }
        // What a native SDK on a device would hand the app (for the node suite, which
        // cannot sign tokens itself).
        (_, "native/id_token") => HttpResponse::Ok().body(native_id_token(
            &inner,
            &base,
            flavor,
            q.get("nonce").map(String::as_str),
            None,
        )),
        _ => user_endpoint(&inner, flavor, &rest, &req),
    }
}

fn authorize(inner: &Arc<Mutex<Inner>>, flavor: &str, q: HashMap<String, String>) -> HttpResponse {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != CLIENT_ID {
        return refuse(inner, 400, "unknown client_id");
    }
    if get("response_type") != "code" || get("state").is_empty() || get("redirect_uri").is_empty() {
        return refuse(
            inner,
            400,
            "authorization request lacks response_type, state or redirect_uri",
        );
    }
    let challenge = q.get("code_challenge").cloned();
    if flavor == "x" && challenge.is_none() {
        return refuse(inner, 400, "X requires PKCE");
    }
    if challenge.is_some() && get("code_challenge_method") != "S256" {
        return refuse(inner, 400, "only S256 challenges");
    }
    let mut g = inner.lock().unwrap();
    g.authorize_requests.push(q.clone());
    let mode = g.mode.unwrap_or(Mode::Approve);
    let mut back = url::Url::parse(&get("redirect_uri")).unwrap();
    if mode == Mode::Deny {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user denied access")
            .append_pair("state", &get("state"));
    } else {
        // `login_hint` picks another account, as a provider's account chooser would:
        // `hint-<login>` with a verified `<login>@example.test`.
        let hinted = q
            .get("login_hint")
            .map(|h| FakeUser::new(&format!("hint-{h}"), h, &format!("{h}@example.test")));
        let Some(user) = hinted.or_else(|| g.user.clone()) else {
            drop(g);
            return refuse(inner, 500, "the test set no user");
        };
        let code = random();
        g.codes.insert(
            code.clone(),
            Grant {
                flavor: flavor.to_string(),
                redirect_uri: get("redirect_uri"),
                challenge,
                nonce: q.get("nonce").cloned(),
                user,
            },
        );
        if get("response_mode") == "form_post" {
            // Apple's answer: a page whose form posts code, state and (first time) the name.
            let user = json!({"name": {"firstName": g.codes[&code].user.login, "lastName": "Example"},
                              "email": g.codes[&code].user.email});
            let esc = |v: &str| {
                v.replace('&', "&amp;")
                    .replace('"', "&quot;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            let mut html = format!(
                "<html><body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">",
                esc(&get("redirect_uri"))
            );
            for (k, v) in [
                ("code", code.clone()),
                ("state", get("state")),
                ("user", user.to_string()),
            ] {
                html.push_str(&format!(
                    "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                    esc(&v)
                ));
            }
            html.push_str("</form></body></html>");
            return HttpResponse::Ok().content_type("text/html").body(html);
        }
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &get("state"));
    }
    HttpResponse::Found()
        .insert_header(("Location", back.as_str()))
        .finish()
}

fn token(
    inner: &Arc<Mutex<Inner>>,
    flavor: &str,
    base: &str,
    body: &str,
    basic: Option<String>,
) -> HttpResponse {
    let f = form(body);
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let mut g = inner.lock().unwrap();
    g.token_requests.push(f.clone());
    let mode = g.mode.unwrap_or(Mode::Approve);
    let invalid_grant = |why: &str| {
        if flavor == "github" {
            // GitHub reports token errors with status 200.
            HttpResponse::Ok().json(json!({"error": "bad_verification_code",
                "error_description": why, "error_uri": "https://docs.github.com/"}))
        } else {
            HttpResponse::BadRequest()
                .json(json!({"error": "invalid_grant", "error_description": why}))
        }
    };
    if mode == Mode::TokenError {
        return invalid_grant("The code passed is incorrect or expired.");
    }
    // X authenticates confidential clients with HTTP Basic only; the others in the form.
    let credentials_ok = if flavor == "x" {
        basic.as_deref() == Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            && !f.contains_key("client_secret")
    } else {
        get("client_secret") == CLIENT_SECRET
    };
    if get("grant_type") != "authorization_code" || get("client_id") != CLIENT_ID || !credentials_ok
    {
        g.refusals
            .push("bad client credentials or grant_type".into());
        return invalid_grant("bad client credentials");
    }
    // Codes work once.
    let Some(grant) = g.codes.remove(&get("code")) else {
        g.refusals.push("unknown or used code".into());
        return invalid_grant("unknown code");
    };
    if grant.flavor != flavor || grant.redirect_uri != get("redirect_uri") {
        g.refusals
            .push("redirect_uri differs from the authorization request".into());
        return invalid_grant("redirect_uri mismatch");
    }
    if let Some(ch) = &grant.challenge {
        if b64(&sha2::Sha256::digest(get("code_verifier").as_bytes())) != *ch {
            g.refusals.push("PKCE verifier does not match".into());
            return invalid_grant("code_verifier mismatch");
        }
    }
    let access = random();
    g.tokens.insert(access.clone(), grant.user.clone());
    drop(g);
    let mut out = json!({"access_token": access, "token_type": "bearer", "expires_in": 3600});
    if flavor == "github" {
        out["scope"] = json!("user:email");
        out["token_type"] = json!("bearer");
    } else {
        out["refresh_token"] = json!(format!("refresh-{}", random()));
    }
    if matches!(flavor, "google" | "keycloak" | "oidc" | "azure" | "apple") {
        let kid = inner
            .lock()
            .unwrap()
            .kid
            .clone()
            .unwrap_or_else(|| "test-key".into());
        out["id_token"] = json!(id_token(flavor, base, &grant, mode, &kid, None));
    }
    HttpResponse::Ok().json(out)
}

fn id_token(
    flavor: &str,
    base: &str,
    grant: &Grant,
    mode: Mode,
    kid: &str,
    access_token: Option<&str>,
) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let now = chrono::Utc::now().timestamp() - if mode == Mode::Expired { 900 } else { 0 };
    let u = &grant.user;
    let mut claims = json!({
        "iss": format!("{base}{}", issuer_path(flavor)),
        "sub": u.id,
        "aud": if mode == Mode::WrongAudience { "another-client" } else { CLIENT_ID },
        "exp": now + 300,
        "iat": now,
        "name": u.name,
        "preferred_username": u.login,
        "picture": format!("https://img.example/{}.png", u.login),
        "given_name": u.login,
    });
    if flavor == "azure" {
        // Microsoft's v2.0 tokens: the tenant's issuer, `tid`, and `xms_edov` for an address
        // the domain owner verified (`email` alone proves nothing).
        claims["iss"] = json!(format!("{base}/azure/{AZURE_TENANT}/v2.0"));
        claims["tid"] = json!(AZURE_TENANT);
        claims["xms_edov"] = json!(u.email_verified);
        claims["oid"] = json!(u.id);
    }
    if mode == Mode::WrongIssuer {
        claims["iss"] = if flavor == "azure" {
            json!(format!(
                "{base}/azure/00000000-0000-0000-0000-000000000000/v2.0"
            ))
        } else {
            json!("https://issuer.evil.example")
        };
    }
    // Keycloak's default id_token for these scopes leaves the address to userinfo here,
    // so the userinfo path is exercised too.
    if flavor == "azure" {
        claims["email"] = json!(u.email);
    } else if flavor != "keycloak" {
        claims["email"] = json!(u.email);
        // Google has sent email_verified as a string in older tokens; Apple always does.
        claims["email_verified"] = if matches!(flavor, "google" | "apple") {
            json!(u.email_verified.to_string())
        } else {
            json!(u.email_verified)
        };
    }
    if let Some(n) = &grant.nonce {
        claims["nonce"] = json!(if mode == Mode::WrongNonce {
            "another-nonce"
        } else {
            n.as_str()
        });
    }
    if let Some(a) = access_token {
        // OIDC Core §3.1.3.6: the left half of the SHA-256 of the access token.
        claims["at_hash"] = json!(b64(&sha2::Sha256::digest(a.as_bytes())[..16]));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(TEST_KEY_DER_B64)
        .unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let t = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(&der)).unwrap();
    if mode == Mode::BadSignature {
        // The same token with another signature: the key set cannot vouch for it.
        let (head, _) = t.rsplit_once('.').unwrap();
        return format!("{head}.{}", b64(&[7u8; 256]));
    }
    t
}

fn discovery(flavor: &str, base: &str) -> HttpResponse {
    let iss = if flavor == "azure" {
        format!("{base}/azure/{{tenantid}}/v2.0")
    } else {
        format!("{base}{}", issuer_path(flavor))
    };
    if flavor == "azure" {
        let common = format!("{base}/azure/common");
        return HttpResponse::Ok().json(json!({
            "issuer": iss,
            "authorization_endpoint": format!("{common}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{common}/oauth2/v2.0/token"),
            "userinfo_endpoint": format!("{base}/azure/oidc/userinfo"),
            "jwks_uri": format!("{common}/discovery/v2.0/keys"),
            "response_types_supported": ["code", "id_token", "code id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }));
    }
    let (auth, token, userinfo, jwks) = match flavor {
        "google" => (
            "o/oauth2/v2/auth",
            "token",
            "v1/userinfo",
            "oauth2/v3/certs",
        ),
        "keycloak" => (
            "protocol/openid-connect/auth",
            "protocol/openid-connect/token",
            "protocol/openid-connect/userinfo",
            "protocol/openid-connect/certs",
        ),
        "apple" => ("auth/authorize", "auth/token", "", "auth/keys"),
        _ => ("authorize", "token", "userinfo", "jwks"),
    };
    let mut doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/{auth}"),
        "token_endpoint": format!("{iss}/{token}"),
        "userinfo_endpoint": format!("{iss}/{userinfo}"),
        "jwks_uri": format!("{iss}/{jwks}"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    });
    if userinfo.is_empty() {
        // Apple has no userinfo endpoint.
        doc.as_object_mut().unwrap().remove("userinfo_endpoint");
        doc["response_modes_supported"] = json!(["query", "fragment", "form_post"]);
    }
    HttpResponse::Ok().json(doc)
}

fn jwks(flavor: &str, kid: &str) -> HttpResponse {
    let mut keys = vec![
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                               "n": TEST_KEY_N, "e": TEST_KEY_E}),
    ];
    if flavor == "keycloak" {
        // Keycloak publishes its encryption key beside the signing key.
        keys.push(
            json!({"kty": "RSA", "kid": "enc-key", "use": "enc", "alg": "RSA-OAEP",
                         "n": TEST_KEY_N, "e": TEST_KEY_E}),
        );
    }
    HttpResponse::Ok().json(json!({"keys": keys}))
}

fn user_endpoint(
    inner: &Arc<Mutex<Inner>>,
    flavor: &str,
    rest: &str,
    req: &HttpRequest,
) -> HttpResponse {
    let bearer = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let user = inner.lock().unwrap().tokens.get(&bearer).cloned();
    let known = matches!(
        (flavor, rest),
        ("github", "api/v3/user")
            | ("github", "api/v3/user/emails")
            | ("gitlab", "api/v4/user")
            | ("discord", "api/users/@me")
            | ("facebook", "me")
            | ("x", "2/users/me")
            | ("azure", "oidc/userinfo")
            | ("google", "v1/userinfo")
            | ("keycloak", "protocol/openid-connect/userinfo")
            | ("oidc", "userinfo")
            | ("custom", "userinfo")
    );
    if !known {
        return refuse(inner, 404, &format!("no route {}", req.path()));
    }
    let Some(u) = user else {
        return refuse(inner, 401, "missing or unknown bearer token");
    };
    if flavor == "facebook" {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
        mac.update(bearer.as_bytes());
        let proof = hex::encode(mac.finalize().into_bytes());
        let q = form(req.query_string());
        if q.get("appsecret_proof") != Some(&proof) {
            return refuse(inner, 400, "appsecret_proof missing or wrong");
        }
    }
    let body = match (flavor, rest) {
        ("github", "api/v3/user") => json!({
            "login": u.login, "id": u.id.parse::<i64>().unwrap_or(1), "node_id": "MDQ6VXNlcjE=",
            "avatar_url": format!("https://avatars.example/u/{}", u.id), "type": "User",
            "name": u.name, "email": null,
        }),
        ("github", _) => json!([
            {"email": format!("old-{}", u.email), "primary": false, "verified": false, "visibility": null},
            {"email": u.email, "primary": true, "verified": u.email_verified, "visibility": "public"},
        ]),
        ("gitlab", _) => json!({
            "id": u.id.parse::<i64>().unwrap_or(1), "username": u.login, "name": u.name,
            "state": "active", "avatar_url": format!("https://gitlab.example/uploads/{}.png", u.login),
            "email": u.email,
            "confirmed_at": if u.email_verified { json!("2024-01-02T03:04:05.000Z") } else { Value::Null },
        }),
        ("discord", _) => json!({
            "id": u.id, "username": u.login, "discriminator": "0", "global_name": u.name,
            "avatar": "8342729096ea3675442027381ff50dfe", "email": u.email, "verified": u.email_verified,
            "mfa_enabled": false, "locale": "en-US",
        }),
        ("x", _) => {
            let mut d = json!({"id": u.id, "name": u.name, "username": u.login,
                "profile_image_url": format!("https://pbs.twimg.example/{}_normal.jpg", u.login)});
            // X sends only a confirmed address, and only with the users.email scope.
            if u.email_verified {
                d["confirmed_email"] = json!(u.email);
            }
            json!({"data": d})
        }
        ("facebook", _) => json!({
            "id": u.id, "name": u.name, "email": u.email, "first_name": u.login, "last_name": "Example",
            "picture": {"data": {"height": 50, "is_silhouette": false, "width": 50,
                                 "url": format!("https://platform-lookaside.example/{}.jpg", u.id)}},
        }),
        _ => json!({
            "sub": if flavor == "custom" { json!(u.id.parse::<i64>().unwrap_or(1)) } else { json!(u.id) },
            "email": u.email, "email_verified": u.email_verified, "name": u.name,
            "preferred_username": u.login, "picture": format!("https://img.example/{}.png", u.login),
        }),
    };
    HttpResponse::Ok().json(body)
}
