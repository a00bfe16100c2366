//! Manual identity linking, as GoTrue's `identity.go` (supabase-js `linkIdentity`,
//! `unlinkIdentity`), behind `auth.manual_linking_enabled`:
//!
//! - `GET /user/identities/authorize` starts the redirect flow of `/authorize` (the same code,
//!   `super::start`) with the signed-in user stored in the flow's state; the callback then
//!   attaches the provider's identity to that user ([`link_to_user`]) instead of signing in,
//!   and sends the browser back with a new session of that user (fragment or `?code=`).
//! - `POST /token?grant_type=id_token` with `link_identity: true` links the id_token's identity
//!   the same way (`super::id_token`; GoTrue does not gate it on manual linking).
//! - `DELETE /user/identities/{id}` removes one of the user's identities when another remains,
//!   and moves the user's address to a remaining identity's when it was the removed one's.
//!
//! Must not: link an identity that belongs to anyone already (no silent move between
//! accounts), or leave a user without identities. Concurrent links and unlinks of one user
//! are serialised by locking the user's row first.

use super::provider::ProviderUser;
use super::{audit_event, refresh_providers, Fail, SignInError};
use crate::app::AppState;
use crate::audit;
use crate::auth::api::current;
use crate::auth::mail;
use crate::auth::service::{db, gotrue};
use crate::auth::AuthContext;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// GoTrue's `requireManualLinkingEnabled`, checked after the user is known (as there).
fn manual_linking(state: &AppState) -> Result<(), ApiError> {
    if state.config.auth.manual_linking_enabled {
        Ok(())
    } else {
        Err(gotrue(
            404,
            "manual_linking_disabled",
            "Manual linking is disabled",
        ))
    }
}

/// `GET /user/identities/authorize`: `/authorize` for the signed-in user.
pub async fn link_identity(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
) -> Result<HttpResponse, ApiError> {
    let (uid, _) = current(&state, &ctx).await?;
    manual_linking(&state)?;
    let url = super::start(&state, &req, Some(uid)).await?;
    Ok(super::to_provider(&req, url))
}

/// Attaches the provider's identity to `target` (GoTrue's `linkIdentityToUser`): refused with
/// `identity_already_exists` when the identity is anyone's already. A user without an address
/// (an anonymous one) takes the identity's; a verified one (or any, under
/// `mailer_autoconfirm`) confirms the account and makes it permanent, an unverified one gets
/// a confirmation mail and the identity stays linked, but the request fails with
/// `email_not_confirmed` (`SignInError::CommitThen`).
pub(super) async fn link_to_user<C: GenericClient>(
    c: &C,
    state: &AppState,
    req: &HttpRequest,
    provider: &str,
    pu: &ProviderUser,
    target: Uuid,
    redirect_to: &str,
) -> Result<Uuid, SignInError> {
    let cfg = &state.config.auth;
    let Some(user) = c
        .query_opt(
            "SELECT coalesce(email, ''), coalesce(banned_until > now(), false)
               FROM auth.users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            &[&target],
        )
        .await
        .map_err(db)?
    else {
        return Err(Fail::new(422, "user_not_found", "Linking target user not found").into());
    };
    let (email, banned): (String, bool) = (user.get(0), user.get(1));
    let already = |owner: Uuid| {
        let message = if owner == target {
            "Identity is already linked"
        } else {
            "Identity is already linked to another user"
        };
        SignInError::Fail(Fail::new(422, "identity_already_exists", message))
    };
    if let Some(owner) = c
        .query_opt(
            "SELECT user_id FROM auth.identities WHERE provider = $1 AND provider_id = $2",
            &[&provider, &pu.sub],
        )
        .await
        .map_err(db)?
    {
        return Err(already(owner.get(0)));
    }
    if banned {
        return Err(Fail::new(403, "user_banned", "User is banned").into());
    }
    let data = Value::Object(pu.data.clone());
    let identity: Uuid = c
        .query_one(
            "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at)
             VALUES ($1, $2, $3, $4, now()) RETURNING id",
            &[&pu.sub, &target, &data, &provider],
        )
        .await
        .map_err(|e| {
            // Linked by someone else between the look-up and the insert.
            if e.code().is_some_and(|c| c.code() == "23505") {
                SignInError::Fail(Fail::new(
                    422,
                    "identity_already_exists",
                    "Identity is already linked to another user",
                ))
            } else {
                SignInError::from(db(e))
            }
        })?
        .get(0);
    audit::record(
        c,
        &audit_event(
            req,
            target,
            "auth.identity.link",
            json!({"provider": provider, "identity_id": identity, "provider_id": pu.sub}),
        ),
    )
    .await
    .map_err(db)?;
    if email.is_empty() {
        if !email_from_identities(c, target, cfg.mailer_autoconfirm).await? {
            return Err(Fail::new(
                400,
                "email_exists",
                "A user with this email address has already been registered",
            )
            .into());
        }
        if let Some(main) = pu.main_email() {
            if main.verified || cfg.mailer_autoconfirm {
                c.execute(
                    "UPDATE auth.users SET email_confirmed_at = coalesce(email_confirmed_at, now()), is_anonymous = false,
                            raw_user_meta_data = raw_user_meta_data || '{\"email_verified\": true}', updated_at = now()
                      WHERE id = $1",
                    &[&target],
                )
                .await
                .map_err(db)?;
            } else {
                refresh_providers(c, target).await?;
                mail::send(
                    c,
                    state,
                    target,
                    &main.email,
                    "signup",
                    Some(redirect_to),
                    None,
                )
                .await?;
                return Err(SignInError::CommitThen(Fail::new(
                    422,
                    "email_not_confirmed",
                    format!(
                        "Unverified email with {provider}. A confirmation email has been sent to your {provider} email"
                    ),
                )));
            }
        }
    }
    refresh_providers(c, target).await?;
    Ok(target)
}

/// GoTrue's `UpdateUserEmailFromIdentities`: when the user's address is none of its
/// identities' any more, it becomes the best remaining one's (verified by its provider, then
/// unverified, then none; oldest first) that no other account has. Pending links, codes and
/// changes were issued for the old address and go; an address its provider did not verify
/// (outside `mailer_autoconfirm`) is not confirmed. `false` when every candidate address is
/// another account's.
async fn email_from_identities<C: GenericClient>(
    c: &C,
    uid: Uuid,
    autoconfirm: bool,
) -> Result<bool, ApiError> {
    let current: String = c
        .query_one(
            "SELECT lower(coalesce(email, '')) FROM auth.users WHERE id = $1",
            &[&uid],
        )
        .await
        .map_err(db)?
        .get(0);
    let candidates: Vec<(String, bool)> = c
        .query(
            "SELECT coalesce(i.email, ''), v
               FROM auth.identities i,
                    LATERAL (SELECT lower(coalesce(i.identity_data ->> 'email_verified', '')) IN ('true', '1') AS v) x
              WHERE i.user_id = $1
              ORDER BY CASE WHEN coalesce(i.email, '') = '' THEN 2 WHEN v THEN 0 ELSE 1 END,
                       i.created_at, i.id::text",
            &[&uid],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if candidates.iter().any(|(e, _)| *e == current) {
        return Ok(true);
    }
    for (email, verified) in candidates {
        let taken = !email.is_empty()
            && c.query_opt(
                "SELECT 1 FROM auth.users WHERE lower(email) = $1 AND NOT is_sso_user AND id <> $2",
                &[&email, &uid],
            )
            .await
            .map_err(db)?
            .is_some();
        if taken {
            continue;
        }
        let confirmed = !email.is_empty() && (verified || autoconfirm);
        let updated = c
            .execute(
                "UPDATE auth.users SET email = NULLIF($2, ''),
                        confirmation_token = NULL, confirmation_sent_at = NULL, recovery_token = NULL,
                        recovery_sent_at = NULL, email_change = NULL, email_change_token_new = NULL,
                        email_change_token_current = NULL, email_change_sent_at = NULL,
                        email_change_confirm_status = 0, phone_change = '', phone_change_token = '',
                        phone_change_sent_at = NULL, reauthentication_token = '', reauthentication_sent_at = NULL,
                        email_confirmed_at = CASE WHEN $3 THEN email_confirmed_at END,
                        raw_user_meta_data = CASE WHEN $3 THEN raw_user_meta_data
                                                  ELSE raw_user_meta_data || '{\"email_verified\": false}' END,
                        updated_at = now()
                  WHERE id = $1",
                &[&uid, &email, &confirmed],
            )
            .await;
        match updated {
            Ok(_) => {}
            // Another account took the address meanwhile (or a deleted one keeps it).
            Err(e) if e.code().is_some_and(|c| c.code() == "23505") => return Ok(false),
            Err(e) => return Err(db(e)),
        }
        c.execute(
            "DELETE FROM auth.one_time_tokens WHERE user_id = $1",
            &[&uid],
        )
        .await
        .map_err(db)?;
        return Ok(true);
    }
    Ok(false)
}

/// `DELETE /user/identities/{id}`: `{}` once the identity is gone.
pub async fn unlink_identity(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (uid, _) = current(&state, &ctx).await?;
    manual_linking(&state)?;
    let id: Uuid = path
        .trim()
        .parse()
        .map_err(|_| gotrue(404, "validation_failed", "identity_id must be an UUID"))?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    // Two unlinks at once must not both see two identities and leave none.
    tx.execute("SELECT 1 FROM auth.users WHERE id = $1 FOR UPDATE", &[&uid])
        .await
        .map_err(db)?;
    let identities = tx
        .query(
            "SELECT id, provider, provider_id FROM auth.identities WHERE user_id = $1",
            &[&uid],
        )
        .await
        .map_err(db)?;
    if identities.len() <= 1 {
        return Err(gotrue(
            422,
            "single_identity_not_deletable",
            "User must have at least 1 identity after unlinking",
        ));
    }
    let Some(gone) = identities.iter().find(|r| r.get::<_, Uuid>(0) == id) else {
        return Err(gotrue(422, "identity_not_found", "Identity doesn't exist"));
    };
    let (provider, provider_id): (String, String) = (gone.get(1), gone.get(2));
    audit::record(
        &*tx,
        &audit_event(
            &req,
            uid,
            "auth.identity.unlink",
            json!({"identity_id": id, "provider": provider, "provider_id": provider_id}),
        ),
    )
    .await
    .map_err(db)?;
    tx.execute("DELETE FROM auth.identities WHERE id = $1", &[&id])
        .await
        .map_err(db)?;
    if provider == "phone" {
        tx.execute(
            "UPDATE auth.users SET phone = NULL, phone_confirmed_at = NULL, updated_at = now() WHERE id = $1",
            &[&uid],
        )
        .await
        .map_err(db)?;
    } else if !email_from_identities(&*tx, uid, state.config.auth.mailer_autoconfirm).await? {
        return Err(gotrue(
            422,
            "email_conflict_identity_not_deletable",
            "Unable to unlink identity due to email conflict",
        ));
    }
    refresh_providers(&*tx, uid).await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}
