//! Provider presets: where each provider's endpoints are, how the code is exchanged, and
//! how its answer becomes one user (subject, emails, identity data). Every call goes through
//! the SSRF-guarded `outbound` client; errors are internal causes (logged), never shown.

use crate::config::OAuthProviderConfig;
use crate::outbound::Outbound;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{json, Map, Value};

/// How a provider tells who the user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// GitHub's REST API: `/user` and `/user/emails`.
    Github,
    /// GitLab's REST API: `/api/v4/user`.
    Gitlab,
    /// Discord's REST API: `/api/users/@me`.
    Discord,
    /// Facebook's Graph API: `/me`.
    Facebook,
    /// X API v2: `/2/users/me`.
    X,
    /// OpenID Connect: discovery, an `id_token` checked against the provider's JWKS.
    Oidc,
    /// Plain OAuth2 with a userinfo endpoint that answers with OIDC claim names.
    Custom,
}

/// A provider preset.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// How the user is read.
    pub kind: Kind,
    /// Whether we send our own PKCE challenge to the provider.
    pub pkce: bool,
    /// Scopes always asked for.
    pub scopes: &'static str,
    /// Base URL or issuer when `url` is not configured.
    pub url: &'static str,
    /// The issuer names a tenant (`{tenantid}`, Microsoft's multi-tenant authorities): each
    /// id_token's `iss` must be that issuer with its own `tid` filled in.
    pub tenant_issuer: bool,
    /// The token endpoint takes the client's credentials as HTTP Basic (RFC 6749 §2.3.1)
    /// rather than in the form.
    pub basic_auth: bool,
    /// The provider answers with a form POST to the callback (`response_mode=form_post`).
    pub form_post: bool,
}

/// Every preset name, in the order `/settings` lists them.
pub const NAMES: [&str; 11] = [
    "github", "google", "gitlab", "discord", "facebook", "azure", "x", "apple", "keycloak", "oidc",
    "custom",
];

/// The preset of a provider name.
pub fn preset(name: &str) -> Option<Preset> {
    let p = |kind, pkce, scopes, url| Preset {
        kind,
        pkce,
        scopes,
        url,
        tenant_issuer: false,
        basic_auth: false,
        form_post: false,
    };
    Some(match name {
        // GitHub's OAuth apps do not take PKCE everywhere; the client secret protects the code.
        "github" => p(Kind::Github, false, "user:email", "https://github.com"),
        "google" => p(
            Kind::Oidc,
            true,
            "openid email profile",
            "https://accounts.google.com",
        ),
        "gitlab" => p(Kind::Gitlab, true, "read_user", "https://gitlab.com"),
        "discord" => p(Kind::Discord, true, "identify email", "https://discord.com"),
        "facebook" => p(Kind::Facebook, false, "email", "https://www.facebook.com"),
        "azure" => Preset {
            tenant_issuer: true,
            ..p(
                Kind::Oidc,
                true,
                "openid email profile",
                "https://login.microsoftonline.com/common/v2.0",
            )
        },
        // X demands PKCE and Basic client authentication; `tweet.read` is required for any
        // user-context token, `users.email` for the confirmed address.
        "x" => Preset {
            basic_auth: true,
            ..p(
                Kind::X,
                true,
                "users.email tweet.read users.read offline.access",
                "https://x.com",
            )
        },
        // Apple posts the answer (with the user's name, the first time only) to the callback;
        // the client secret is the ES256 JWT its developer console has the app generate.
        "apple" => Preset {
            form_post: true,
            ..p(Kind::Oidc, false, "name email", "https://appleid.apple.com")
        },
        "keycloak" | "oidc" => p(Kind::Oidc, true, "openid email profile", ""),
        "custom" => p(Kind::Custom, true, "", ""),
        _ => return None,
    })
}

/// Where a provider's endpoints are.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Authorization endpoint (the browser goes there).
    pub authorize: String,
    /// Token endpoint.
    pub token: String,
    /// Userinfo / user API endpoint.
    pub userinfo: String,
    /// API base (GitHub: for `/user/emails`).
    pub api: String,
    /// OIDC: the issuer every id_token must name.
    pub issuer: String,
    /// OIDC: the key set.
    pub jwks: String,
}

/// The endpoints of a provider: the preset's, the discovery document's (OIDC), then the
/// configured overrides.
pub async fn endpoints(
    out: &Outbound,
    preset: &Preset,
    cfg: &OAuthProviderConfig,
) -> Result<Endpoints, String> {
    let base = if cfg.url.is_empty() {
        preset.url
    } else {
        cfg.url.as_str()
    }
    .trim_end_matches('/')
    .to_string();
    let mut ep = match preset.kind {
        Kind::Github => {
            // github.com's API lives on its own host; GitHub Enterprise under /api/v3.
            let api = if cfg.url.is_empty() {
                "https://api.github.com".to_string()
            } else {
                format!("{base}/api/v3")
            };
            Endpoints {
                authorize: format!("{base}/login/oauth/authorize"),
                token: format!("{base}/login/oauth/access_token"),
                userinfo: format!("{api}/user"),
                api,
                ..Endpoints::default()
            }
        }
        Kind::Gitlab => Endpoints {
            authorize: format!("{base}/oauth/authorize"),
            token: format!("{base}/oauth/token"),
            userinfo: format!("{base}/api/v4/user"),
            api: format!("{base}/api/v4"),
            ..Endpoints::default()
        },
        Kind::Discord => Endpoints {
            authorize: format!("{base}/api/oauth2/authorize"),
            token: format!("{base}/api/oauth2/token"),
            userinfo: format!("{base}/api/users/@me"),
            api: format!("{base}/api"),
            ..Endpoints::default()
        },
        Kind::Facebook => {
            // The dialog lives on www.facebook.com, the rest on the Graph API host.
            let graph = if cfg.url.is_empty() {
                "https://graph.facebook.com".to_string()
            } else {
                base.clone()
            };
            Endpoints {
                authorize: format!("{base}/dialog/oauth"),
                token: format!("{graph}/oauth/access_token"),
                userinfo: format!("{graph}/me?fields=email,first_name,last_name,name,picture"),
                api: graph,
                ..Endpoints::default()
            }
        }
        Kind::X => {
            let api = if cfg.url.is_empty() {
                "https://api.x.com".to_string()
            } else {
                base.clone()
            };
            Endpoints {
                authorize: format!("{base}/i/oauth2/authorize"),
                token: format!("{api}/2/oauth2/token"),
                userinfo: format!(
                    "{api}/2/users/me?user.fields=id,name,username,confirmed_email,profile_image_url"
                ),
                api,
                ..Endpoints::default()
            }
        }
        Kind::Oidc => discover(out, &base, preset.tenant_issuer).await?,
        Kind::Custom => Endpoints::default(),
    };
    for (over, field) in [
        (&cfg.authorize_url, &mut ep.authorize),
        (&cfg.token_url, &mut ep.token),
        (&cfg.userinfo_url, &mut ep.userinfo),
    ] {
        if !over.is_empty() {
            *field = over.clone();
        }
    }
    if ep.authorize.is_empty() || ep.token.is_empty() {
        return Err("the provider has no authorization or token endpoint".into());
    }
    Ok(ep)
}

/// Reads `<issuer>/.well-known/openid-configuration`; its `issuer` must be the configured
/// one (OpenID Connect Discovery §4.3), so a document cannot speak for another issuer.
async fn discover(out: &Outbound, issuer: &str, tenant: bool) -> Result<Endpoints, String> {
    if issuer.is_empty() {
        return Err("no issuer configured".into());
    }
    let d = get_cached(out, &format!("{issuer}/.well-known/openid-configuration")).await?;
    let s = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let named = s("issuer");
    // A multi-tenant authority (Microsoft's `common`) names `{tenantid}` in its issuer; it
    // must still be on the configured host.
    let templated = tenant && named.contains("{tenantid}") && same_origin(&named, issuer);
    if named.trim_end_matches('/') != issuer && !templated {
        return Err(format!(
            "discovery names issuer {named:?}, configured {issuer:?}"
        ));
    }
    let ep = Endpoints {
        authorize: s("authorization_endpoint"),
        token: s("token_endpoint"),
        userinfo: s("userinfo_endpoint"),
        api: String::new(),
        issuer: named,
        jwks: s("jwks_uri"),
    };
    if ep.jwks.is_empty() {
        return Err("discovery has no jwks_uri".into());
    }
    Ok(ep)
}

fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// How long a discovery document or key set is reused.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// Documents kept at most (the cache empties when full; there are a handful of providers).
const CACHE_MAX: usize = 256;

type Cache = std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Value)>>;

/// Discovery documents and key sets change rarely; each sign-in would otherwise cost two
/// more provider calls. Per process, like GoTrue's OIDC cache; a key set without the key an
/// id_token names is fetched again at once (key rotation).
fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

async fn get_cached(out: &Outbound, url: &str) -> Result<Value, String> {
    if let Ok(c) = cache().lock() {
        if let Some((at, v)) = c.get(url) {
            if at.elapsed() < CACHE_TTL {
                return Ok(v.clone());
            }
        }
    }
    let v = get_json(out, url, None, "application/json").await?;
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(url.to_string(), (std::time::Instant::now(), v.clone()));
    }
    Ok(v)
}

fn forget(url: &str) {
    if let Ok(mut c) = cache().lock() {
        c.remove(url);
    }
}

async fn get_json(
    out: &Outbound,
    url: &str,
    bearer: Option<&str>,
    accept: &str,
) -> Result<Value, String> {
    let mut rb = out.request(Method::GET, url).header("Accept", accept);
    if let Some(t) = bearer {
        rb = rb.bearer_auth(t);
    }
    let r = out.send(rb).await.map_err(|e| format!("GET {url}: {e}"))?;
    if !(200..300).contains(&r.status) {
        return Err(format!("GET {url} answered {}", r.status));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

/// What the token endpoint gave.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The provider's access token.
    pub access: String,
    /// Its refresh token, when it issues one.
    pub refresh: Option<String>,
    /// OIDC id_token.
    pub id_token: Option<String>,
}

/// Exchanges the authorization code (RFC 6749 §4.1.3; client credentials in the body).
pub async fn exchange(
    out: &Outbound,
    preset: &Preset,
    ep: &Endpoints,
    cfg: &OAuthProviderConfig,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Result<Tokens, String> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("client_id", &cfg.client_id);
    if let (Some(s), false) = (&cfg.secret, preset.basic_auth) {
        form.append_pair("client_secret", s.expose());
    }
    if let Some(v) = verifier {
        form.append_pair("code_verifier", v);
    }
    let mut rb = out
        .request(Method::POST, &ep.token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .body(form.finish());
    if preset.basic_auth {
        rb = rb.basic_auth(&cfg.client_id, cfg.secret.as_ref().map(|s| s.expose()));
    }
    let r = out
        .send(rb)
        .await
        .map_err(|e| format!("POST {}: {e}", ep.token))?;
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    // GitHub answers 200 with an `error` member; others use 400/401.
    if let Some(err) = body.get("error").and_then(Value::as_str) {
        return Err(format!(
            "token endpoint refused the code: {err} {}",
            body.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ));
    }
    if !(200..300).contains(&r.status) {
        return Err(format!("token endpoint answered {}", r.status));
    }
    let s = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Ok(Tokens {
        access: s("access_token").ok_or("token response without access_token")?,
        refresh: s("refresh_token"),
        id_token: s("id_token"),
    })
}

/// One address the provider reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    /// The address (lower-cased).
    pub email: String,
    /// The provider says its owner proved it.
    pub verified: bool,
    /// The account's primary address.
    pub primary: bool,
}

/// The user as the provider describes them.
#[derive(Debug, Clone)]
pub struct ProviderUser {
    /// The provider's stable id (`provider_id` of the identity).
    pub sub: String,
    /// Addresses, primary first when known.
    pub emails: Vec<Email>,
    /// `identity_data` (GoTrue's claim names).
    pub data: Map<String, Value>,
}

impl ProviderUser {
    /// The address a new account gets: the primary one, else the first.
    pub fn main_email(&self) -> Option<&Email> {
        self.emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| self.emails.first())
    }
}

fn text(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `email_verified` is a boolean, but some providers send the string "true".
fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
        _ => false,
    }
}

/// Builds the user and GoTrue's identity data from the common fields.
struct Profile {
    iss: String,
    sub: Option<String>,
    name: Option<String>,
    user_name: Option<String>,
    avatar: Option<String>,
    emails: Vec<Email>,
}

impl Profile {
    fn into_user(self, extra: Map<String, Value>) -> Result<ProviderUser, String> {
        let sub = self.sub.ok_or("the provider named no user id")?;
        let main = self
            .emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| self.emails.first())
            .cloned();
        let mut data = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                data.insert(k.to_string(), v);
            }
        };
        put("iss", Some(json!(self.iss)));
        put("sub", Some(json!(sub)));
        put("provider_id", Some(json!(sub)));
        put("name", self.name.clone().map(Value::from));
        put("full_name", self.name.map(Value::from));
        put("user_name", self.user_name.clone().map(Value::from));
        put("preferred_username", self.user_name.map(Value::from));
        put("avatar_url", self.avatar.clone().map(Value::from));
        put("picture", self.avatar.map(Value::from));
        put("email", main.as_ref().map(|e| json!(e.email)));
        put(
            "email_verified",
            Some(json!(main.as_ref().is_some_and(|e| e.verified))),
        );
        put("phone_verified", Some(json!(false)));
        for (k, v) in extra {
            data.entry(k).or_insert(v);
        }
        Ok(ProviderUser {
            sub,
            emails: self.emails,
            data,
        })
    }
}

fn email_of(addr: Option<String>, verified: bool, primary: bool) -> Vec<Email> {
    addr.map(|e| Email {
        email: e.trim().to_lowercase(),
        verified,
        primary,
    })
    .into_iter()
    .collect()
}

/// Reads the user with the tokens the code bought.
pub async fn fetch_user(
    out: &Outbound,
    preset: &Preset,
    ep: &Endpoints,
    cfg: &OAuthProviderConfig,
    tokens: &Tokens,
    nonce: Option<&str>,
) -> Result<ProviderUser, String> {
    let tok = tokens.access.as_str();
    match preset.kind {
        Kind::Github => {
            let accept = "application/vnd.github+json";
            let u = get_json(out, &ep.userinfo, Some(tok), accept).await?;
            let list = get_json(out, &format!("{}/user/emails", ep.api), Some(tok), accept).await?;
            let mut emails: Vec<Email> = list
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| {
                            Some(Email {
                                email: text(e, "email")?.to_lowercase(),
                                verified: truthy(e.get("verified")),
                                primary: truthy(e.get("primary")),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            emails.sort_by_key(|e| !e.primary);
            Profile {
                iss: ep.api.clone(),
                sub: text(&u, "id"),
                name: text(&u, "name"),
                user_name: text(&u, "login"),
                avatar: text(&u, "avatar_url"),
                emails,
            }
            .into_user(Map::new())
        }
        Kind::Gitlab => {
            let u = get_json(out, &ep.userinfo, Some(tok), "application/json").await?;
            // GitLab only reports addresses its users confirmed as `confirmed_at`.
            let verified = u.get("confirmed_at").is_some_and(|v| !v.is_null());
            Profile {
                iss: ep.api.clone(),
                sub: text(&u, "id"),
                name: text(&u, "name"),
                user_name: text(&u, "username"),
                avatar: text(&u, "avatar_url"),
                emails: email_of(text(&u, "email"), verified, true),
            }
            .into_user(Map::new())
        }
        Kind::Discord => {
            let u = get_json(out, &ep.userinfo, Some(tok), "application/json").await?;
            let id = text(&u, "id");
            let avatar = match (&id, text(&u, "avatar")) {
                (Some(id), Some(hash)) => {
                    let ext = if hash.starts_with("a_") { "gif" } else { "png" };
                    Some(format!(
                        "https://cdn.discordapp.com/avatars/{id}/{hash}.{ext}"
                    ))
                }
                _ => None,
            };
            Profile {
                iss: ep.api.clone(),
                sub: id,
                name: text(&u, "global_name").or_else(|| text(&u, "username")),
                user_name: text(&u, "username"),
                avatar,
                emails: email_of(text(&u, "email"), truthy(u.get("verified")), true),
            }
            .into_user(Map::new())
        }
        Kind::Facebook => {
            let mut url = url::Url::parse(&ep.userinfo).map_err(|e| e.to_string())?;
            // appsecret_proof: apps that require it refuse calls without it.
            if let Some(secret) = &cfg.secret {
                use hmac::Mac;
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
                        .map_err(|e| e.to_string())?;
                mac.update(tok.as_bytes());
                url.query_pairs_mut()
                    .append_pair("appsecret_proof", &hex::encode(mac.finalize().into_bytes()));
            }
            let u = get_json(out, url.as_str(), Some(tok), "application/json").await?;
            Profile {
                iss: ep.api.clone(),
                sub: text(&u, "id"),
                name: text(&u, "name"),
                user_name: None,
                avatar: u
                    .pointer("/picture/data/url")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                // The Graph API only reports addresses their owner confirmed (GoTrue treats
                // them as verified too).
                emails: email_of(text(&u, "email"), true, true),
            }
            .into_user(Map::new())
        }
        Kind::X => {
            let r = get_json(out, &ep.userinfo, Some(tok), "application/json").await?;
            let u = r.get("data").cloned().unwrap_or(Value::Null);
            Profile {
                iss: ep.api.clone(),
                sub: text(&u, "id"),
                name: text(&u, "name"),
                user_name: text(&u, "username"),
                avatar: text(&u, "profile_image_url"),
                // X returns only a confirmed address, and only with `users.email`.
                emails: email_of(text(&u, "confirmed_email"), true, true),
            }
            .into_user(Map::new())
        }
        Kind::Custom => {
            let u = get_json(out, &ep.userinfo, Some(tok), "application/json").await?;
            oidc_profile(ep.userinfo.clone(), &u)
        }
        Kind::Oidc => {
            let id_token = tokens
                .id_token
                .as_deref()
                .ok_or("the token response has no id_token")?;
            let claims = verify_id_token(out, ep, &cfg.client_id, id_token, nonce)
                .await
                .map_err(|e| e.to_string())?;
            oidc_user(out, preset, ep, claims, Some(tok)).await
        }
    }
}

/// The user of verified id_token claims, read as the preset reads them. Where the token
/// leaves the address out and an access token is at hand, userinfo supplies it.
pub async fn oidc_user(
    out: &Outbound,
    preset: &Preset,
    ep: &Endpoints,
    claims: Map<String, Value>,
    access_token: Option<&str>,
) -> Result<ProviderUser, String> {
    let mut claims = Value::Object(claims);
    if preset.tenant_issuer {
        // Microsoft vouches for an address only with `xms_edov` (the domain owner
        // verified it); `email` alone may be any string a tenant admin typed.
        let edov = truthy(claims.get("xms_edov"));
        claims["email_verified"] = Value::Bool(edov);
    }
    // Some providers leave the address out of the id_token; userinfo has it.
    if let Some(tok) = access_token.filter(|_| text(&claims, "email").is_none()) {
        if !ep.userinfo.is_empty() {
            let info = get_json(out, &ep.userinfo, Some(tok), "application/json").await?;
            if text(&info, "sub") != text(&claims, "sub") {
                return Err("userinfo names another subject than the id_token".into());
            }
            if let (Some(c), Some(i)) = (claims.as_object_mut(), info.as_object()) {
                for (k, v) in i {
                    c.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    let iss = text(&claims, "iss").unwrap_or_else(|| ep.issuer.clone());
    oidc_profile(iss, &claims)
}

/// A user from OIDC claims (an id_token or a userinfo answer).
fn oidc_profile(iss: String, c: &Value) -> Result<ProviderUser, String> {
    let mut extra = Map::new();
    for k in ["given_name", "family_name", "locale", "hd"] {
        if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
            extra.insert(k.to_string(), v.clone());
        }
    }
    Profile {
        iss,
        sub: text(c, "sub"),
        name: text(c, "name"),
        user_name: text(c, "preferred_username"),
        avatar: text(c, "picture"),
        emails: email_of(text(c, "email"), truthy(c.get("email_verified")), true),
    }
    .into_user(extra)
}

/// Asymmetric algorithms an id_token may use; HMAC and `none` never (algorithm confusion).
const ID_TOKEN_ALGS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Why an id_token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    /// The provider's key set could not be read (the provider's fault, not the token's).
    Keys(String),
    /// Not a good token of this provider: format, algorithm, key, signature, issuer,
    /// expiry, required claims, nonce.
    Invalid(String),
    /// A good token of this provider, for another client (`aud`).
    Audience,
}

impl std::fmt::Display for IdTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdTokenError::Keys(e) | IdTokenError::Invalid(e) => f.write_str(e),
            IdTokenError::Audience => f.write_str("id_token rejected: InvalidAudience"),
        }
    }
}

/// Checks an id_token: signature by a key of the provider's JWKS, `iss`, `aud` (our client
/// id), `exp`, and the nonce we sent (compared as is; `None` leaves it to the caller).
pub async fn verify_id_token(
    out: &Outbound,
    ep: &Endpoints,
    client_id: &str,
    token: &str,
    nonce: Option<&str>,
) -> Result<Map<String, Value>, IdTokenError> {
    use IdTokenError::{Invalid, Keys};
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| Invalid(format!("id_token: {e}")))?;
    if !ID_TOKEN_ALGS.contains(&header.alg) {
        return Err(Invalid(format!(
            "id_token algorithm {:?} refused",
            header.alg
        )));
    }
    // Keys this library cannot read (other key types, encryption keys) are skipped.
    let pick = |set: &Value| -> Option<Jwk> {
        let keys: Vec<Jwk> = set
            .get("keys")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|k| serde_json::from_value(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        match &header.kid {
            Some(kid) => keys
                .into_iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid.as_str())),
            None if keys.len() == 1 => keys.into_iter().next(),
            None => None,
        }
    };
    let jwk = match pick(&get_cached(out, &ep.jwks).await.map_err(Keys)?) {
        Some(k) => k,
        None => {
            // A key the cached set does not have: the provider may have rotated its keys.
            forget(&ep.jwks);
            pick(&get_cached(out, &ep.jwks).await.map_err(Keys)?).ok_or_else(|| {
                Invalid("no key of the provider's JWKS matches the id_token".into())
            })?
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| Keys(format!("JWKS key: {e}")))?;
    let mut v = Validation::new(header.alg);
    let templated = ep.issuer.contains("{tenantid}");
    if !templated {
        v.set_issuer(&[&ep.issuer]);
    }
    v.set_audience(&[client_id]);
    v.leeway = 60;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
        if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidAudience {
            IdTokenError::Audience
        } else {
            Invalid(format!("id_token rejected: {e}"))
        }
    })?;
    if templated {
        let tid = data
            .claims
            .get("tid")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
            .ok_or_else(|| Invalid("id_token has no valid tid".into()))?;
        let expected = ep.issuer.replace("{tenantid}", tid);
        if data.claims.get("iss").and_then(Value::as_str) != Some(expected.as_str()) {
            return Err(Invalid("id_token issuer does not match its tenant".into()));
        }
    }
    if let Some(n) = nonce {
        if data.claims.get("nonce").and_then(Value::as_str) != Some(n) {
            return Err(Invalid("id_token nonce does not match".into()));
        }
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_preset() {
        for n in NAMES {
            assert!(preset(n).is_some(), "{n}");
        }
        assert!(preset("myspace").is_none());
    }

    #[test]
    fn identity_data_uses_gotrue_names() {
        let u = oidc_profile(
            "https://idp.test".into(),
            &json!({"sub": "abc", "email": "Ann@Example.test", "email_verified": "true",
                    "name": "Ann", "picture": "https://img", "preferred_username": "ann",
                    "given_name": "Ann"}),
        )
        .unwrap();
        assert_eq!(u.sub, "abc");
        assert_eq!(
            u.main_email(),
            Some(&Email {
                email: "ann@example.test".into(),
                verified: true,
                primary: true
            })
        );
        let d = Value::Object(u.data);
        for (k, v) in [
            ("iss", "https://idp.test"),
            ("provider_id", "abc"),
            ("full_name", "Ann"),
            ("avatar_url", "https://img"),
            ("user_name", "ann"),
            ("email", "ann@example.test"),
            ("given_name", "Ann"),
        ] {
            assert_eq!(d[k], v, "{k}");
        }
        assert_eq!(d["email_verified"], true);
        assert!(oidc_profile("x".into(), &json!({"email": "a@b.c"})).is_err());
    }
}
