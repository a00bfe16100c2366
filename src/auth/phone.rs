//! Phone sign-in as GoTrue does it: sign-up with a phone number and password (a texted
//! confirmation code unless `auth.sms.autoconfirm`), OTP sign-in by SMS (`POST /otp` with
//! `phone`), `POST /verify` with type `sms` or `phone_change`, the phone change of
//! `PUT /user`, and `POST /resend` of both. The routes live in `api`; this module holds their
//! phone halves. Codes are issued, limited and texted by `sms`.

use super::api::audit_user;
use super::service::{self, db, gotrue, NewUser};
use super::sms;
use crate::app::AppState;
use crate::error::ApiError;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;

/// What a phone sign-up asks for.
pub struct Signup {
    /// The number as sent.
    pub phone: String,
    /// Password (required, as in GoTrue).
    pub password: Option<String>,
    /// user_metadata.
    pub data: Value,
    /// `sms` or `whatsapp`.
    pub channel: Option<String>,
    /// A PKCE challenge was sent (GoTrue refuses it for phone sign-ups).
    pub pkce: bool,
    /// An email address was sent as well.
    pub with_email: bool,
}

/// GoTrue's answer to a sign-up for a number that is already confirmed, when no
/// autoconfirm lets it say so: a made-up unconfirmed user, so the answer does not tell
/// whether the number is registered.
fn obfuscated_user(phone: &str, data: &Value) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({
        "id": Uuid::new_v4(), "aud": "authenticated", "role": "", "email": "", "phone": phone,
        "confirmation_sent_at": now, "app_metadata": {"provider": "phone", "providers": ["phone"]},
        "user_metadata": if data.is_object() { data.clone() } else { json!({}) },
        "identities": [], "created_at": now, "updated_at": now, "is_anonymous": false,
    })
}

/// `POST /signup` with `phone`.
pub async fn signup(
    state: &AppState,
    req: &HttpRequest,
    s: Signup,
) -> Result<HttpResponse, ApiError> {
    let cfg = &state.config.auth;
    let password = s
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| gotrue(400, "validation_failed", "Signup requires a valid password"))?;
    service::check_password(&state.config, &password)?;
    if s.with_email {
        return Err(gotrue(
            400,
            "validation_failed",
            "Only an email address or phone number should be provided on signup.",
        ));
    }
    let channel = sms::channel(&cfg.sms, s.channel.as_deref())?;
    if s.pkce {
        return Err(gotrue(
            400,
            "validation_failed",
            "PKCE not supported for phone signups",
        ));
    }
    sms::require_enabled(state, "Phone signups are disabled")?;
    let phone = sms::normalise(&s.phone)?;
    let existing = {
        let c = state.pool.get().await?;
        service::user_by_phone(&**c, &phone).await?
    };
    if let Some(u) = &existing {
        if u.phone_confirmed {
            if cfg.mailer_autoconfirm || cfg.sms.autoconfirm {
                return Err(gotrue(
                    422,
                    "user_already_exists",
                    "User already registered",
                ));
            }
            return Ok(HttpResponse::Ok().json(obfuscated_user(&phone, &s.data)));
        }
    }
    // Hashing runs before the transaction (it is slow); an unconfirmed user who signs up
    // again keeps the first password, as GoTrue does: the claim is not proven yet.
    let hash = match existing {
        Some(_) => None,
        None => Some(service::hash_password(password, cfg.bcrypt_cost as u32).await?),
    };
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let user = match existing {
        Some(u) => u,
        None => {
            let new = NewUser {
                phone: Some(phone.clone()),
                password_hash: hash,
                phone_confirmed: cfg.sms.autoconfirm,
                user_metadata: s.data,
                role: "authenticated".into(),
                ..Default::default()
            };
            let u = service::create_user(&*tx, &new).await?;
            audit_user(&*tx, req, u.id, "auth.user.signup").await?;
            u
        }
    };
    let body = if user.phone_confirmed {
        tx.execute(
            "UPDATE auth.users SET last_sign_in_at = now() WHERE id = $1",
            &[&user.id],
        )
        .await
        .map_err(db)?;
        super::api::password_session(&*tx, state, user).await?
    } else {
        sms::send(&*tx, state, user.id, &phone, sms::CONFIRM, channel).await?;
        service::user_by_id(&*tx, user.id)
            .await?
            .unwrap_or(user)
            .json
    };
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /otp` with `phone`: a code by SMS. An unknown (or unconfirmed) number is signed up
/// first, unless `create_user` is false; the code then confirms it.
pub async fn otp(
    state: &AppState,
    req: &HttpRequest,
    phone: &str,
    create_user: bool,
    data: Value,
    channel: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let cfg = &state.config.auth;
    let phone = sms::normalise(phone)?;
    let mut c = state.pool.get().await?;
    let existing = service::user_by_phone(&**c, &phone).await?;
    if existing.is_none() && !create_user {
        return Err(gotrue(422, "otp_disabled", "Signups not allowed for otp"));
    }
    sms::require_enabled(state, "Unsupported phone provider")?;
    let channel = sms::channel(&cfg.sms, channel)?;
    let tx = c.transaction().await.map_err(db)?;
    let user = match existing {
        Some(u) => u,
        None => {
            if !cfg.enable_signup {
                return Err(gotrue(
                    422,
                    "signup_disabled",
                    "Signups not allowed for this instance",
                ));
            }
            // GoTrue signs such a number up with a random password; none at all is the same
            // to every sign-in path and costs no hashing.
            let new = NewUser {
                phone: Some(phone.clone()),
                phone_confirmed: cfg.sms.autoconfirm,
                user_metadata: data,
                role: "authenticated".into(),
                ..Default::default()
            };
            let u = service::create_user(&*tx, &new).await?;
            audit_user(&*tx, req, u.id, "auth.user.signup").await?;
            u
        }
    };
    // A banned user gets the code too and is refused at `/verify`, as in GoTrue.
    sms::send(&*tx, state, user.id, &phone, sms::CONFIRM, channel).await?;
    audit_user(&*tx, req, user.id, "auth.otp.requested").await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

fn invalid_code() -> ApiError {
    gotrue(403, "otp_expired", "Token has expired or is invalid")
}

/// `POST /verify` with `phone` and `token`, type `sms` (confirms the number and signs in) or
/// `phone_change` (the pending new number becomes the user's). A session either way.
pub async fn verify(
    state: &AppState,
    req: &HttpRequest,
    kind: &str,
    phone: &str,
    token: &str,
) -> Result<Value, ApiError> {
    if !matches!(kind, "sms" | "phone_change") {
        return Err(gotrue(
            400,
            "validation_failed",
            "Only an email address or phone number should be provided on verify",
        ));
    }
    let phone = sms::normalise(phone)?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let (uid, used) = sms::consume(&*tx, state, &[kind], &phone, token)
        .await?
        .ok_or_else(invalid_code)?;
    let changed = if used == sms::PHONE_CHANGE {
        tx.execute(
            "UPDATE auth.users SET phone = phone_change, phone_change = '', phone_change_token = '',
                    phone_change_sent_at = NULL, phone_confirmed_at = now(), is_anonymous = false,
                    last_sign_in_at = now(), updated_at = now()
              WHERE id = $1 AND phone_change = $2 AND deleted_at IS NULL",
            &[&uid, &phone],
        )
        .await
        .map_err(service::phone_taken_or_db)?
    } else {
        tx.execute(
            "UPDATE auth.users SET phone_confirmed_at = coalesce(phone_confirmed_at, now()), is_anonymous = false,
                    last_sign_in_at = now(), updated_at = now()
              WHERE id = $1 AND phone = $2 AND deleted_at IS NULL",
            &[&uid, &phone],
        )
        .await
        .map_err(db)?
    };
    // The number moved on since the code was sent: the code proves nothing now.
    if changed == 0 {
        return Err(invalid_code());
    }
    service::upsert_phone_identity(&*tx, uid, &phone, true).await?;
    tx.execute(
        "UPDATE auth.identities SET last_sign_in_at = now() WHERE user_id = $1 AND provider = 'phone'",
        &[&uid],
    )
    .await
    .map_err(db)?;
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(invalid_code)?;
    if user.banned_until.is_some_and(|t| t > chrono::Utc::now()) {
        return Err(gotrue(403, "user_banned", "User is banned"));
    }
    let action = if used == sms::PHONE_CHANGE {
        "auth.user.phone_changed"
    } else {
        "auth.sign_in"
    };
    audit_user(&*tx, req, uid, action).await?;
    let session =
        service::issue_session(&*tx, &state.config, &state.jwt, &user, "otp", None, None).await?;
    tx.commit().await.map_err(db)?;
    Ok(session)
}

/// The phone half of `PUT /user`: a new number is confirmed by a code texted to it (or set
/// at once with `auth.sms.autoconfirm`). In the request's transaction.
pub async fn change<C: tokio_postgres::GenericClient>(
    c: &C,
    state: &AppState,
    uid: Uuid,
    phone: &str,
    channel: &str,
) -> Result<(), ApiError> {
    if state.config.auth.sms.autoconfirm {
        c.execute(
            "UPDATE auth.users SET phone = $2, phone_confirmed_at = now(), phone_change = '',
                    phone_change_sent_at = NULL, is_anonymous = false, updated_at = now()
              WHERE id = $1",
            &[&uid, &phone],
        )
        .await
        .map_err(service::phone_taken_or_db)?;
        return service::upsert_phone_identity(c, uid, phone, true).await;
    }
    sms::send(c, state, uid, phone, sms::PHONE_CHANGE, channel).await
}

/// `POST /resend` type `sms` (the confirmation code of an unconfirmed number) or
/// `phone_change` (the code of the pending new number, the user named by the current number
/// or address). The same empty answer whether or not there was anything to send.
pub async fn resend(
    state: &AppState,
    kind: &str,
    phone: Option<&str>,
    email: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let (phone, email) = (
        phone.filter(|p| !p.is_empty()),
        email.filter(|e| !e.is_empty()),
    );
    if phone.is_some() && email.is_some() {
        return Err(gotrue(
            400,
            "validation_failed",
            "Only an email address or phone number should be provided.",
        ));
    }
    if kind == "sms" && phone.is_none() {
        return Err(gotrue(
            400,
            "validation_failed",
            "Type provided requires a phone number",
        ));
    }
    let mut c = state.pool.get().await?;
    let user = match (phone, email) {
        (Some(p), _) => {
            sms::require_enabled(state, "Phone logins are disabled")?;
            service::user_by_phone(&**c, &sms::normalise(p)?).await?
        }
        (None, Some(e)) => service::user_by_email(&**c, &e.trim().to_lowercase()).await?,
        (None, None) => {
            return Err(gotrue(
                400,
                "validation_failed",
                "Missing email address or phone number",
            ))
        }
    };
    let Some(user) = user else {
        return Ok(HttpResponse::Ok().json(json!({})));
    };
    let (to, kind) = if kind == "sms" {
        if user.phone_confirmed {
            return Ok(HttpResponse::Ok().json(json!({})));
        }
        (
            user.json["phone"].as_str().unwrap_or_default().to_string(),
            sms::CONFIRM,
        )
    } else {
        match user.json["new_phone"].as_str() {
            Some(p) => (p.to_string(), sms::PHONE_CHANGE),
            None => return Ok(HttpResponse::Ok().json(json!({}))),
        }
    };
    let tx = c.transaction().await.map_err(db)?;
    sms::send(&*tx, state, user.id, &to, kind, "sms").await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}
