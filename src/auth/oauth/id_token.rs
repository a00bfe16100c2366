//! `POST /token?grant_type=id_token` (supabase-js `signInWithIdToken`): a native app signed
//! in with the provider's own SDK (Sign in with Apple, Google Sign-In, MSAL …) and hands us
//! the provider's id_token. It is checked like the redirect flow's (the provider's JWKS,
//! issuer, our client id as audience, expiry), then GoTrue's own rules: the nonce the app
//! gave the provider is the SHA-256 hex of the one it sends here, `at_hash` binds an
//! `access_token` when both are present. The user is found, linked or created exactly as
//! in the callback (`sign_in`), and the answer is a Session with amr `oauth`, as GoTrue
//! records it. With `link_identity: true` and a user's access token, the identity is linked
//! to that user instead (`link::link_to_user`) and the Session is a new one of that user.
//!
//! Must not: accept a provider that is not an enabled OpenID Connect preset, or compare a
//! raw nonce with the token's claim (anyone holding the token can read that claim; only
//! its preimage proves the app that asked for the token is the one sending it).

use super::provider::{self, IdTokenError, Kind, Preset};
use super::{link, provider_unavailable, sign_in, Fail, SignInError};
use crate::app::AppState;
use crate::auth::api::current;
use crate::auth::service::{self, db, gotrue};
use crate::auth::AuthContext;
use crate::config::{Config, OAuthProviderConfig};
use crate::error::ApiError;
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use serde_json::Value;

/// The body of the grant, as GoTrue's `IdTokenGrantParams`.
#[derive(Debug, Default, Clone)]
pub struct Params {
    /// Provider name (`google`, `apple`, `azure`, `keycloak`, `oidc`).
    pub provider: Option<String>,
    /// The provider's id_token.
    pub id_token: Option<String>,
    /// The provider's access token issued with it (checked against `at_hash`).
    pub access_token: Option<String>,
    /// The raw nonce whose SHA-256 hex the app gave the provider.
    pub nonce: Option<String>,
    /// With `issuer`, names the provider when `provider` is absent (GoTrue's older form).
    pub client_id: Option<String>,
    /// The provider's issuer.
    pub issuer: Option<String>,
    /// Link the identity to the signed-in user (the request's bearer) instead of signing in
    /// (supabase-js `linkIdentity({provider, token})`).
    pub link_identity: bool,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn not_allowed(name: &str) -> ApiError {
    gotrue(
        400,
        "validation_failed",
        format!("Custom OIDC provider {name:?} not allowed"),
    )
}

/// The issuer a preset's tokens name (the configured `url`, else the preset's).
fn issuer_of(preset: &Preset, c: &OAuthProviderConfig) -> String {
    let base = if c.url.is_empty() { preset.url } else { &c.url };
    base.trim_end_matches('/').to_string()
}

/// The provider of the request: by name, else by issuer (as GoTrue, only an enabled
/// OpenID Connect preset whose issuer is the given one).
fn resolve<'a>(
    cfg: &'a Config,
    p: &Params,
) -> Result<(String, Preset, &'a OAuthProviderConfig), ApiError> {
    let name = match some(&p.provider) {
        Some(n) => n.to_ascii_lowercase(),
        None => {
            let iss = some(&p.issuer).unwrap_or_default().trim_end_matches('/');
            provider::NAMES
                .iter()
                .find(|n| {
                    let preset = provider::preset(n);
                    let conf = super::provider_config(cfg, n);
                    matches!((preset, conf), (Some(pr), Some(c)) if pr.kind == Kind::Oidc && issuer_of(&pr, c) == iss)
                })
                .map(|n| n.to_string())
                .ok_or_else(|| not_allowed(""))?
        }
    };
    let (Some(preset), Some(c)) = (provider::preset(&name), super::provider_config(cfg, &name))
    else {
        return Err(not_allowed(&name));
    };
    if preset.kind != Kind::Oidc {
        return Err(not_allowed(&name));
    }
    if !c.enabled {
        return Err(gotrue(
            400,
            "provider_disabled",
            format!(
                "Provider (issuer {:?}) is not enabled",
                issuer_of(&preset, c)
            ),
        ));
    }
    Ok((name, preset, c))
}

fn bad(message: &str) -> ApiError {
    gotrue(400, "invalid_credentials", message)
}

/// Whether `at_hash` is the left half of the access token's digest (OIDC Core §3.1.3.6),
/// with the hash of the token's own algorithm.
fn at_hash_matches(alg: jsonwebtoken::Algorithm, access: &str, at_hash: &str) -> bool {
    use base64::Engine;
    use jsonwebtoken::Algorithm as A;
    use sha2::Digest;
    let digest: Vec<u8> = match alg {
        A::RS384 | A::PS384 | A::ES384 => sha2::Sha384::digest(access).to_vec(),
        A::RS512 | A::PS512 => sha2::Sha512::digest(access).to_vec(),
        _ => sha2::Sha256::digest(access).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]) == at_hash
}

/// The grant: a Session for the id_token's user.
pub async fn grant(
    state: &AppState,
    req: &HttpRequest,
    p: Params,
) -> Result<HttpResponse, ApiError> {
    let Some(token) = some(&p.id_token) else {
        return Err(gotrue(400, "validation_failed", "id_token required"));
    };
    if some(&p.provider).is_none() && (some(&p.client_id).is_none() || some(&p.issuer).is_none()) {
        return Err(gotrue(
            400,
            "validation_failed",
            "provider or client_id and issuer required",
        ));
    }
    // GoTrue checks the linking user before the provider and the token.
    let link_to = if p.link_identity {
        if req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .is_none()
        {
            return Err(gotrue(
                400,
                "validation_failed",
                "Linking requires a valid user access token in Authorization",
            ));
        }
        // The extractor's errors are ApiErrors (bad token, unknown API key).
        let ctx = AuthContext::extract(req).await.map_err(|e| {
            e.as_error::<ApiError>()
                .cloned()
                .unwrap_or_else(|| ApiError::internal(e.to_string()))
        })?;
        Some(current(state, &ctx).await?.0)
    } else {
        None
    };
    let (name, preset, pcfg) = resolve(&state.config, &p)?;
    let ep = provider::endpoints(&state.outbound, &preset, pcfg)
        .await
        .map_err(|e| provider_unavailable(&name, &e))?;
    let claims = provider::verify_id_token(&state.outbound, &ep, &pcfg.client_id, token, None)
        .await
        .map_err(|e| match e {
            IdTokenError::Keys(cause) => provider_unavailable(&name, &cause),
            IdTokenError::Audience => bad("Unacceptable audience in id_token"),
            IdTokenError::Invalid(cause) => {
                tracing::info!(provider = %name, error = %cause, "id_token grant refused");
                bad("Bad ID token")
            }
        })?;
    let claim = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    // GoTrue: both or neither, and the token's nonce is the SHA-256 hex of the given one.
    match (claim("nonce"), some(&p.nonce)) {
        (None, None) => {}
        (Some(expected), Some(given)) => {
            if service::hash_token(given) != expected {
                return Err(bad("Nonces mismatch"));
            }
        }
        _ => {
            return Err(bad(
                "Passed nonce and nonce in id_token should either both exist or not.",
            ))
        }
    }
    let access = some(&p.access_token);
    if let (Some(access), Some(at_hash)) = (access, claim("at_hash")) {
        let alg = jsonwebtoken::decode_header(token)
            .map(|h| h.alg)
            .map_err(|_| bad("Bad ID token"))?;
        if !at_hash_matches(alg, access, at_hash) {
            tracing::info!(provider = %name, "id_token grant refused: at_hash does not match");
            return Err(bad("Bad ID token"));
        }
    }
    let user = provider::oidc_user(&state.outbound, &preset, &ep, claims, access)
        .await
        .map_err(|cause| {
            tracing::warn!(provider = %name, error = %cause, "id_token grant: user not read");
            gotrue(
                500,
                "unexpected_failure",
                "Error getting user profile from external provider",
            )
        })?;

    let redirect_to = super::redirect::checked(&state.config.auth, None);
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let outcome = match link_to {
        Some(target) => {
            link::link_to_user(&*tx, state, req, &name, &user, target, &redirect_to).await
        }
        None => sign_in(&*tx, state, req, &name, &user, &redirect_to).await,
    };
    let uid = match outcome {
        Ok(uid) => uid,
        Err(SignInError::Fail(f)) => return Err(f.into_api()),
        Err(SignInError::CommitThen(f)) => {
            tx.commit().await.map_err(db)?;
            return Err(f.into_api());
        }
        Err(SignInError::NeedsVerification) => {
            // The account and its confirmation mail stay, as GoTrue commits them.
            tx.commit().await.map_err(db)?;
            return Err(Fail::new(
                422,
                "provider_email_needs_verification",
                format!(
                    "Unverified email with {name}. A confirmation email has been sent to your {name} email"
                ),
            )
            .into_api());
        }
    };
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    let session =
        service::issue_session(&*tx, &state.config, &state.jwt, &user, "oauth", None, None).await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_digest() {
        // OIDC Core's example (Appendix A.3): access token → at_hash, RS256.
        assert!(at_hash_matches(
            jsonwebtoken::Algorithm::RS256,
            "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
            "77QmUPtjPfzWtF2AnpK9RQ"
        ));
        assert!(!at_hash_matches(
            jsonwebtoken::Algorithm::RS256,
            "another",
            "77QmUPtjPfzWtF2AnpK9RQ"
        ));
    }
}
