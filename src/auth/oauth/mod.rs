//! OAuth2 / OpenID Connect sign-in as GoTrue does it, so `signInWithOAuth` and
//! `exchangeCodeForSession` work unchanged.
//!
//! `GET /authorize` checks `redirect_to` against the allow-list, stores a row in
//! `auth.oauth_states` found by the hash of a random `state` (single use, ten minutes),
//! opens a `flow_state` when the client sent a PKCE challenge, and sends the browser to the
//! provider with our own PKCE challenge (where the preset takes one) and an OIDC nonce.
//! `GET|POST /callback` consumes the state, exchanges the code, reads the user (provider API,
//! or an id_token checked against the provider's JWKS), creates or links the user and its
//! `auth.identities` row, and sends the browser to `redirect_to` with the session in the
//! fragment (implicit flow) or `?code=` (PKCE flow, exchanged at `POST /token?grant_type=pkce`).
//! Failures go to the same place with `error`, `error_code` and `error_description` in the
//! query and the fragment, as GoTrue's `redirectErrors`.
//!
//! Must not: call a provider except through `outbound`, keep a database transaction open
//! during a provider call, or send tokens to a URL the allow-list does not admit.

pub mod id_token;
pub mod link;
pub mod provider;
pub mod redirect;

use super::mail;
use super::service::{self, db, gotrue};
use super::AuthContext;
use crate::app::AppState;
use crate::audit::{self, AuditEvent};
use crate::config::{Config, OAuthProviderConfig};
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use provider::{Kind, Preset, ProviderUser};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// How long a `state` stays good, seconds.
const STATE_TTL_SECS: f64 = 600.0;

/// Query parameters `/authorize` reads itself; the others go on to the provider, as
/// GoTrue forwards them (`access_type`, `prompt`, `login_hint` …).
const OWN_PARAMS: [&str; 7] = [
    "provider",
    "redirect_to",
    "scopes",
    "code_challenge",
    "code_challenge_method",
    "skip_http_redirect",
    "invite_token",
];

/// Parameters of the authorization request we set and a caller must not replace.
const RESERVED_PARAMS: [&str; 8] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// The `external` member of `/settings`: every preset, true when enabled.
pub fn settings_external(cfg: &Config) -> Map<String, Value> {
    cfg.auth
        .external
        .providers()
        .iter()
        .map(|(name, p)| (name.to_string(), Value::from(p.enabled)))
        .collect()
}

fn provider_config<'a>(cfg: &'a Config, name: &str) -> Option<&'a OAuthProviderConfig> {
    cfg.auth
        .external
        .providers()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| c)
}

/// The preset and config of an enabled provider, or GoTrue's error.
fn enabled<'a>(cfg: &'a Config, name: &str) -> Result<(Preset, &'a OAuthProviderConfig), ApiError> {
    let (Some(preset), Some(c)) = (provider::preset(name), provider_config(cfg, name)) else {
        return Err(gotrue(
            400,
            "validation_failed",
            format!("Unsupported provider: Provider {name} could not be found"),
        ));
    };
    if !c.enabled {
        return Err(gotrue(
            400,
            "provider_disabled",
            "Unsupported provider: provider is not enabled",
        ));
    }
    Ok((preset, c))
}

/// Our callback as the provider must see it: configured, else under the public URL, else
/// under the host this request came to (same mount as the request).
fn callback_url(state: &AppState, req: &HttpRequest, c: &OAuthProviderConfig) -> String {
    if !c.redirect_uri.is_empty() {
        return c.redirect_uri.clone();
    }
    let prefix = if req.path().starts_with("/api/v1/auth/") {
        "/api/v1/auth"
    } else {
        "/auth/v1"
    };
    let public = state.config.server.public_url.trim_end_matches('/');
    if !public.is_empty() {
        return format!("{public}{prefix}/callback");
    }
    // The request's own Host header, never X-Forwarded-Host: a forged header must not choose
    // where the provider sends the code. Behind a proxy, set server.public_url.
    let scheme = if state.config.server.tls.enabled() {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}:{}", state.config.server.host, state.config.server.port));
    format!("{scheme}://{host}{prefix}/callback")
}

fn provider_unavailable(name: &str, cause: &str) -> ApiError {
    tracing::warn!(provider = name, error = cause, "OAuth provider unavailable");
    gotrue(
        502,
        "oauth_provider_unavailable",
        format!("The {name} provider could not be reached or answered wrongly"),
    )
}

fn query_map(s: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(s.as_bytes())
        .into_owned()
        .collect()
}

/// `GET /authorize`: 302 to the provider (or `{url}` with `skip_http_redirect=true`).
pub async fn authorize(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let url = start(&state, &req, None).await?;
    Ok(to_provider(&req, url))
}

/// The answer of `/authorize` and of `/user/identities/authorize`: a 302 to the provider, or
/// `{url}` with `skip_http_redirect=true`.
fn to_provider(req: &HttpRequest, url: String) -> HttpResponse {
    let skip = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "skip_http_redirect" && v == "true");
    if skip {
        return HttpResponse::Ok().json(json!({"url": url}));
    }
    HttpResponse::Found()
        .insert_header(("Location", url))
        .finish()
}

/// Opens a redirect flow from the request's query (`provider`, `redirect_to`, `scopes`,
/// PKCE, parameters for the provider) and returns the provider's URL. With `link_to`, the
/// flow attaches the provider's identity to that user instead of signing in (manual
/// linking); everything else is the same flow.
async fn start(
    state: &AppState,
    req: &HttpRequest,
    link_to: Option<Uuid>,
) -> Result<String, ApiError> {
    let q: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let name = get("provider").unwrap_or_default().to_ascii_lowercase();
    let (preset, pcfg) = enabled(&state.config, &name)?;
    let pkce = mail::Pkce::from_body(get("code_challenge"), get("code_challenge_method"))?;
    let redirect_to = redirect::checked(&state.config.auth, get("redirect_to"));
    let ep = provider::endpoints(&state.outbound, &preset, pcfg)
        .await
        .map_err(|e| provider_unavailable(&name, &e))?;
    let callback = callback_url(state, req, pcfg);

    let secret = service::new_secret();
    let verifier = preset.pkce.then(service::new_secret);
    let nonce = (preset.kind == Kind::Oidc).then(service::new_secret);
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    // Abandoned sign-ins leave rows behind; they go here, cheaply (indexed on created_at).
    tx.execute(
        "DELETE FROM auth.oauth_states WHERE created_at < now() - interval '1 hour'",
        &[],
    )
    .await
    .map_err(db)?;
    // Their PKCE flows too (a code, once issued, has its own five minutes).
    tx.execute(
        "DELETE FROM auth.flow_state WHERE authentication_method = 'oauth' AND auth_code_hash IS NULL
            AND created_at < now() - interval '1 hour'",
        &[],
    )
    .await
    .map_err(db)?;
    let flow_id: Option<Uuid> = match &pkce {
        Some(p) => Some(
            tx.query_one(
                "INSERT INTO auth.flow_state (code_challenge, code_challenge_method, authentication_method, provider_type)
                 VALUES ($1, $2, 'oauth', $3) RETURNING id",
                &[&p.challenge, &p.method, &name],
            )
            .await
            .map_err(db)?
            .get(0),
        ),
        None => None,
    };
    tx.execute(
        "INSERT INTO auth.oauth_states (state_hash, provider, redirect_to, callback_url, provider_code_verifier, nonce,
                                        flow_state_id, linking_target_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&service::hash_token(&secret), &name, &redirect_to, &callback, &verifier, &nonce, &flow_id, &link_to],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;

    let mut url = url::Url::parse(&ep.authorize)
        .map_err(|e| provider_unavailable(&name, &format!("authorization endpoint: {e}")))?;
    {
        let mut scopes: Vec<&str> = preset.scopes.split_whitespace().collect();
        for s in get("scopes").unwrap_or_default().split([' ', ',']) {
            if !s.is_empty() && !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let mut qp = url.query_pairs_mut();
        qp.append_pair("client_id", &pcfg.client_id)
            .append_pair("redirect_uri", &callback)
            .append_pair("response_type", "code")
            .append_pair("state", &secret);
        if !scopes.is_empty() {
            qp.append_pair("scope", &scopes.join(" "));
        }
        if let Some(v) = &verifier {
            qp.append_pair("code_challenge", &s256(v))
                .append_pair("code_challenge_method", "S256");
        }
        if let Some(n) = &nonce {
            qp.append_pair("nonce", n);
        }
        if preset.form_post {
            qp.append_pair("response_mode", "form_post");
        }
        for (k, v) in &q {
            let ours = preset.form_post && k == "response_mode";
            if !ours && !OWN_PARAMS.contains(&k.as_str()) && !RESERVED_PARAMS.contains(&k.as_str())
            {
                qp.append_pair(k, v);
            }
        }
    }
    Ok(url.into())
}

fn s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// A failed callback: where it goes and what it says (GoTrue's `error`, `error_code`,
/// `error_description`).
#[derive(Debug)]
struct Fail {
    status: u16,
    error: String,
    code: Option<&'static str>,
    description: String,
}

impl Fail {
    /// From a GoTrue status and code; `error` as GoTrue's `getErrorQueryString`: refusals
    /// of the person (signups off, banned, address to verify first) are `access_denied`
    /// whatever their status, the rest follow `oauthErrorMap`.
    fn new(status: u16, code: &'static str, description: impl Into<String>) -> Fail {
        let error = match (code, status) {
            ("signup_disabled" | "user_banned" | "provider_email_needs_verification", _) => {
                "access_denied"
            }
            (_, 400) => "invalid_request",
            (_, 401) => "unauthorized_client",
            (_, 403) => "access_denied",
            (_, 503) => "temporarily_unavailable",
            _ => "server_error",
        };
        Fail {
            status,
            error: error.into(),
            code: Some(code),
            description: description.into(),
        }
    }

    /// The same failure as a JSON answer (the id_token grant).
    fn into_api(self) -> ApiError {
        let code = self.code.unwrap_or("unexpected_failure");
        gotrue(self.status, code, self.description)
    }

    fn from_api(e: ApiError) -> Fail {
        if e.status.is_server_error() {
            tracing::error!(error = %e.message, "OAuth callback failed");
            return Fail::new(500, "unexpected_failure", "Unexpected failure");
        }
        let code = if e.gotrue_code.is_empty() {
            "unexpected_failure"
        } else {
            e.gotrue_code
        };
        Fail::new(e.status.as_u16(), code, e.message)
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Fail {
        Fail::from_api(e)
    }
}

/// `base` with the error in its query (added to what it has) and in the fragment.
fn error_location(base: &str, f: &Fail) -> String {
    let mut pairs = vec![("error", f.error.as_str())];
    if let Some(c) = f.code {
        pairs.push(("error_code", c));
    }
    pairs.push(("error_description", f.description.as_str()));
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    match url::Url::parse(base) {
        Ok(mut u) => {
            u.query_pairs_mut().extend_pairs(&pairs);
            u.set_fragment(Some(&encoded));
            u.into()
        }
        Err(_) => format!("{base}?{encoded}#{encoded}"),
    }
}

fn found(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("Location", location))
        .finish()
}

/// What `/authorize` stored for the callback.
struct Stored {
    provider: String,
    redirect_to: String,
    callback_url: String,
    verifier: Option<String>,
    nonce: Option<String>,
    flow_state: Option<Uuid>,
    /// Manual linking: the user the identity goes to.
    linking_target: Option<Uuid>,
}

/// `GET|POST /callback`: always a 302, to `redirect_to` (or the site URL while the state is
/// unknown), with the session, a code, or the error.
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let mut params = query_map(req.query_string());
    // Apple and others post the answer as a form (`response_mode=form_post`).
    if req.method() == actix_web::http::Method::POST {
        for (k, v) in url::form_urlencoded::parse(&body).into_owned() {
            params.entry(k).or_insert(v);
        }
    }
    let site = state.config.auth.site_url.clone();
    let Some(raw_state) = params.get("state").filter(|s| !s.is_empty()) else {
        return found(&error_location(
            &site,
            &Fail::new(400, "bad_oauth_callback", "OAuth state parameter missing"),
        ));
    };
    let stored = match consume_state(&state, raw_state).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return found(&error_location(
                &site,
                &Fail::new(
                    400,
                    "bad_oauth_state",
                    "OAuth state is invalid or has expired",
                ),
            ))
        }
        Err(e) => return found(&error_location(&site, &Fail::from_api(e))),
    };
    match finish(&state, &req, &stored, &params).await {
        Ok(location) => found(&location),
        Err(f) => found(&error_location(&stored.redirect_to, &f)),
    }
}

/// Deletes and returns the state row: a state works once, and only within its lifetime.
async fn consume_state(state: &AppState, raw: &str) -> Result<Option<Stored>, ApiError> {
    let c = state.pool.get().await?;
    let row = c
        .query_opt(
            "DELETE FROM auth.oauth_states WHERE state_hash = $1
             RETURNING provider, redirect_to, callback_url, provider_code_verifier, nonce, flow_state_id,
                       created_at > now() - make_interval(secs => $2), linking_target_id",
            &[&service::hash_token(raw), &STATE_TTL_SECS],
        )
        .await
        .map_err(db)?;
    Ok(row.filter(|r| r.get::<_, bool>(6)).map(|r| Stored {
        provider: r.get(0),
        redirect_to: r.get(1),
        callback_url: r.get(2),
        verifier: r.get(3),
        nonce: r.get(4),
        flow_state: r.get(5),
        linking_target: r.get(7),
    }))
}

/// Only RFC 6749 error-code characters of a provider's `error` are passed on.
fn clean_error(e: &str) -> String {
    e.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

async fn finish(
    state: &AppState,
    req: &HttpRequest,
    stored: &Stored,
    params: &HashMap<String, String>,
) -> Result<String, Fail> {
    let name = stored.provider.as_str();
    if let Some(err) = params.get("error").filter(|e| !e.is_empty()) {
        // The user said no, or the provider refused: its words go back to the app.
        let error = clean_error(err);
        return Err(Fail {
            status: 400,
            error: if error.is_empty() {
                "server_error".into()
            } else {
                error
            },
            code: None,
            description: params
                .get("error_description")
                .map(|d| d.chars().take(500).collect())
                .unwrap_or_else(|| "The provider refused the sign-in".into()),
        });
    }
    let code = params
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Fail::new(
                400,
                "bad_oauth_callback",
                "OAuth callback with missing authorization code",
            )
        })?;
    let (preset, pcfg) = enabled(&state.config, name)?;
    let unavailable = |cause: String| {
        tracing::warn!(
            provider = name,
            error = cause,
            "OAuth callback: provider call failed"
        );
        Fail::new(
            500,
            "unexpected_failure",
            "Unable to exchange external code",
        )
    };
    let ep = provider::endpoints(&state.outbound, &preset, pcfg)
        .await
        .map_err(unavailable)?;
    let tokens = provider::exchange(
        &state.outbound,
        &preset,
        &ep,
        pcfg,
        code,
        &stored.callback_url,
        stored.verifier.as_deref(),
    )
    .await
    .map_err(unavailable)?;
    let mut user = provider::fetch_user(
        &state.outbound,
        &preset,
        &ep,
        pcfg,
        &tokens,
        stored.nonce.as_deref(),
    )
    .await
    .map_err(|cause| {
        tracing::warn!(
            provider = name,
            error = cause,
            "OAuth callback: user not read"
        );
        Fail::new(
            500,
            "unexpected_failure",
            "Error getting user profile from external provider",
        )
    })?;
    if preset.form_post {
        add_posted_name(&mut user, params.get("user").map(String::as_str));
    }

    let mut c = state.pool.get().await.map_err(ApiError::from)?;
    let tx = c.transaction().await.map_err(db)?;
    let outcome = match stored.linking_target {
        Some(target) => {
            link::link_to_user(&*tx, state, req, name, &user, target, &stored.redirect_to).await
        }
        None => sign_in(&*tx, state, req, name, &user, &stored.redirect_to).await,
    };
    let uid = match outcome {
        Ok(uid) => uid,
        Err(SignInError::Fail(f)) => return Err(f),
        Err(SignInError::CommitThen(f)) => {
            tx.commit().await.map_err(db)?;
            return Err(f);
        }
        Err(SignInError::NeedsVerification) => {
            // The account (and its confirmation mail) stays; the session waits for the link.
            tx.commit().await.map_err(db)?;
            return Err(Fail::new(
                422,
                "provider_email_needs_verification",
                format!(
                    "Unverified email with {name}. A confirmation email has been sent to your {name} email"
                ),
            ));
        }
    };
    let location = match stored.flow_state {
        Some(flow) => {
            let code = service::new_secret();
            let n = tx
                .execute(
                    "UPDATE auth.flow_state SET user_id = $2, auth_code_hash = $3, auth_code_issued_at = now(),
                            provider_access_token = $4, provider_refresh_token = $5, updated_at = now()
                      WHERE id = $1 AND auth_code_hash IS NULL",
                    &[&flow, &uid, &service::hash_token(&code), &tokens.access, &tokens.refresh],
                )
                .await
                .map_err(db)?;
            if n == 0 {
                return Err(Fail::new(
                    404,
                    "flow_state_not_found",
                    "invalid flow state, no valid flow state found",
                ));
            }
            with_query(&stored.redirect_to, "code", &code)
        }
        None => {
            let user = service::user_by_id(&*tx, uid)
                .await?
                .ok_or_else(|| Fail::new(404, "user_not_found", "User not found"))?;
            let s =
                service::issue_session(&*tx, &state.config, &state.jwt, &user, "oauth", None, None)
                    .await?;
            let mut f = url::form_urlencoded::Serializer::new(String::new());
            f.append_pair(
                "access_token",
                s["access_token"].as_str().unwrap_or_default(),
            )
            .append_pair("expires_at", &s["expires_at"].to_string())
            .append_pair("expires_in", &s["expires_in"].to_string())
            .append_pair("provider_token", &tokens.access);
            if let Some(r) = &tokens.refresh {
                f.append_pair("provider_refresh_token", r);
            }
            f.append_pair(
                "refresh_token",
                s["refresh_token"].as_str().unwrap_or_default(),
            )
            .append_pair("token_type", "bearer");
            let base = stored
                .redirect_to
                .split_once('#')
                .map_or(stored.redirect_to.as_str(), |(b, _)| b);
            format!("{base}#{}", f.finish())
        }
    };
    tx.commit().await.map_err(db)?;
    Ok(location)
}

/// Apple sends the user's name only in the first callback, as a posted `user` JSON
/// (`{"name": {"firstName", "lastName"}}`), never in the id_token: it becomes the
/// identity's `name`/`full_name` when the token has none. Unreadable input is ignored.
fn add_posted_name(user: &mut ProviderUser, posted: Option<&str>) {
    let Some(v) = posted.and_then(|p| serde_json::from_str::<Value>(p).ok()) else {
        return;
    };
    let part = |k: &str| {
        v.pointer(&format!("/name/{k}"))
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let full = format!("{} {}", part("firstName"), part("lastName"))
        .trim()
        .chars()
        .take(200)
        .collect::<String>();
    if !full.is_empty() && !user.data.contains_key("name") {
        user.data.insert("name".into(), Value::from(full.clone()));
        user.data.insert("full_name".into(), Value::from(full));
    }
}

/// `url` with one more query pair (and no fragment).
fn with_query(url: &str, k: &str, v: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_fragment(None);
            u.query_pairs_mut().append_pair(k, v);
            u.into()
        }
        Err(_) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{sep}{k}={}",
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        }
    }
}

enum SignInError {
    Fail(Fail),
    /// What was written stays (committed), and the request fails with this: a linked
    /// identity whose address awaits its confirmation mail.
    CommitThen(Fail),
    /// The provider vouches for no address and the account is unconfirmed: a confirmation
    /// mail went out instead of a session.
    NeedsVerification,
}

impl From<ApiError> for SignInError {
    fn from(e: ApiError) -> Self {
        SignInError::Fail(Fail::from_api(e))
    }
}

impl From<Fail> for SignInError {
    fn from(f: Fail) -> Self {
        SignInError::Fail(f)
    }
}

/// An auth event the user did themselves (there is no caller's context yet at sign-in).
fn audit_event(req: &HttpRequest, user: Uuid, action: &str, details: Value) -> AuditEvent {
    let mut ctx = AuthContext::anon();
    std::sync::Arc::make_mut(&mut ctx.claims).insert("sub".into(), Value::from(user.to_string()));
    let mut e = AuditEvent::from_request(req, &ctx, action, Some(format!("user:{user}")), details);
    e.actor = Some(user.to_string());
    e.actor_role = None;
    e
}

/// Finds, links or creates the user of a provider identity (GoTrue's automatic linking):
/// a known identity signs its user in; otherwise an address the provider verified links to
/// the account that has it; otherwise a new account. Returns the user id.
async fn sign_in<C: GenericClient>(
    c: &C,
    state: &AppState,
    req: &HttpRequest,
    provider: &str,
    pu: &ProviderUser,
    redirect_to: &str,
) -> Result<Uuid, SignInError> {
    let cfg = &state.config.auth;
    let data = Value::Object(pu.data.clone());
    let verified: Vec<String> = pu
        .emails
        .iter()
        .filter(|e| e.verified || cfg.mailer_autoconfirm)
        .map(|e| e.email.clone())
        .collect();
    let main = pu.main_email();
    let existing: Option<Uuid> = c
        .query_opt(
            "UPDATE auth.identities SET identity_data = $3, last_sign_in_at = now(), updated_at = now()
              WHERE provider = $1 AND provider_id = $2 RETURNING user_id",
            &[&provider, &pu.sub, &data],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0));
    let mut created = false;
    let uid = match existing {
        Some(uid) => {
            c.execute(
                "UPDATE auth.users SET raw_user_meta_data = coalesce(raw_user_meta_data, '{}') || $2, updated_at = now()
                  WHERE id = $1",
                &[&uid, &data],
            )
            .await
            .map_err(db)?;
            uid
        }
        None => {
            let linked = c
                .query(
                    "SELECT id FROM auth.users WHERE lower(email) = ANY($1) AND deleted_at IS NULL AND NOT is_sso_user
                      ORDER BY created_at LIMIT 2",
                    &[&verified],
                )
                .await
                .map_err(db)?;
            let uid = match linked.as_slice() {
                [one] => {
                    let uid: Uuid = one.get(0);
                    // An unconfirmed password account now meets the address's proven owner:
                    // whoever set that password never proved the address, so it goes (GoTrue
                    // removes unconfirmed credentials the same way).
                    c.execute(
                        "UPDATE auth.users SET encrypted_password = NULL, updated_at = now()
                          WHERE id = $1 AND email_confirmed_at IS NULL",
                        &[&uid],
                    )
                    .await
                    .map_err(db)?;
                    uid
                }
                [] => {
                    if !cfg.enable_signup {
                        return Err(Fail::new(
                            422,
                            "signup_disabled",
                            "Signups not allowed for this instance",
                        )
                        .into());
                    }
                    let app_meta = json!({"provider": provider, "providers": [provider]});
                    let email = main.map(|e| e.email.clone());
                    let row = c
                        .query_one(
                            "INSERT INTO auth.users (aud, role, email, raw_app_meta_data, raw_user_meta_data, is_anonymous)
                             VALUES ('authenticated', 'authenticated', $1::text, $2, $3, false) RETURNING id",
                            &[&email, &app_meta, &data],
                        )
                        .await
                        .map_err(|e| {
                            if e.code().is_some_and(|c| c.code() == "23505") {
                                SignInError::Fail(Fail::new(
                                    422,
                                    "email_exists",
                                    "A user with this email address has already been registered",
                                ))
                            } else {
                                SignInError::from(db(e))
                            }
                        })?;
                    created = true;
                    row.get(0)
                }
                _ => {
                    return Err(Fail::new(
                        500,
                        "unexpected_failure",
                        "Multiple accounts with the same email address",
                    )
                    .into())
                }
            };
            c.execute(
                "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
                 VALUES ($1, $2, $3, $4, now())",
                &[&pu.sub, &uid, &data, &provider],
            )
            .await
            .map_err(db)?;
            uid
        }
    };
    let user = service::user_by_id(c, uid)
        .await?
        .ok_or_else(|| Fail::new(404, "user_not_found", "User not found"))?;
    if user.banned_until.is_some_and(|t| t > chrono::Utc::now()) {
        return Err(Fail::new(403, "user_banned", "User is banned").into());
    }
    refresh_providers(c, uid).await?;
    if !user.confirmed {
        let proven = main.is_some_and(|e| e.verified) || cfg.mailer_autoconfirm;
        match (proven, main) {
            (true, _) => {
                c.execute(
                    "UPDATE auth.users SET email_confirmed_at = now() WHERE id = $1 AND email_confirmed_at IS NULL",
                    &[&uid],
                )
                .await
                .map_err(db)?;
            }
            (false, Some(e)) => {
                mail::send(c, state, uid, &e.email, "signup", Some(redirect_to), None).await?;
                return Err(SignInError::NeedsVerification);
            }
            (false, None) => {
                return Err(Fail::new(
                    500,
                    "unexpected_failure",
                    "Error getting user email from external provider",
                )
                .into())
            }
        }
    }
    c.execute(
        "UPDATE auth.users SET last_sign_in_at = now() WHERE id = $1",
        &[&uid],
    )
    .await
    .map_err(db)?;
    let action = if created {
        "auth.user.signup"
    } else {
        "auth.sign_in"
    };
    audit::record(
        c,
        &audit_event(req, uid, action, json!({"provider": provider})),
    )
    .await
    .map_err(db)?;
    Ok(uid)
}

/// `app_metadata.providers` lists the providers of the user's identities, as GoTrue keeps
/// it; `provider` stays unless none of the identities has it any more (an anonymous user who
/// linked one, an unlinked first provider), then it is the first of them (GoTrue's newer
/// releases always take the first).
async fn refresh_providers<C: GenericClient>(c: &C, uid: Uuid) -> Result<(), ApiError> {
    c.execute(
        "WITH p AS (SELECT coalesce(jsonb_agg(DISTINCT i.provider ORDER BY i.provider), '[]') AS list
                      FROM auth.identities i WHERE i.user_id = $1)
         UPDATE auth.users u SET raw_app_meta_data = coalesce(u.raw_app_meta_data, '{}')
                || jsonb_build_object('providers', p.list)
                || CASE WHEN jsonb_array_length(p.list) > 0
                         AND NOT p.list ? coalesce(u.raw_app_meta_data ->> 'provider', '')
                        THEN jsonb_build_object('provider', p.list -> 0) ELSE '{}' END
           FROM p WHERE u.id = $1",
        &[&uid],
    )
    .await
    .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_go_in_query_and_fragment() {
        let f = Fail::new(400, "bad_oauth_state", "OAuth state is invalid");
        let loc = error_location("http://app.test/cb?keep=1", &f);
        assert_eq!(
            loc,
            "http://app.test/cb?keep=1&error=invalid_request&error_code=bad_oauth_state&error_description=OAuth+state+is+invalid#error=invalid_request&error_code=bad_oauth_state&error_description=OAuth+state+is+invalid"
        );
        assert_eq!(Fail::new(403, "x", "").error, "access_denied");
        // GoTrue's statuses (422) with its `error` for refusals of the person.
        for code in ["signup_disabled", "provider_email_needs_verification"] {
            assert_eq!(Fail::new(422, code, "").error, "access_denied");
            assert_eq!(Fail::new(422, code, "").into_api().status.as_u16(), 422);
        }
        assert_eq!(Fail::new(429, "x", "").error, "server_error");
        assert_eq!(clean_error("access_denied<script>"), "access_deniedscript");
        assert_eq!(
            with_query("http://app.test/cb?a=1#frag", "code", "c d"),
            "http://app.test/cb?a=1&code=c+d"
        );
    }
}
