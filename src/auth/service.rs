//! The GoTrue-compatible service's data side: users, identities, sessions and refresh tokens
//! in schema `auth`, the User and Session JSON GoTrue emits, and password hashing.
//!
//! Tokens that grant access are stored only as SHA-256 hashes. Password hashing (bcrypt)
//! runs on dedicated threads, one per core, at a lower scheduling priority, so sign-in storms
//! never occupy the request executor nor starve it of CPU.

use super::hasher;
use super::jwt::{Claims, JwtKeys};
use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

/// A GoTrue error: HTTP status, GoTrue `error_code`, message.
pub fn gotrue(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(ErrorCode::BadRequest, message);
    e.status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    e.gotrue_code = code;
    e.code = code.to_string();
    e
}

pub(crate) fn db(e: tokio_postgres::Error) -> ApiError {
    ApiError::from_db(&e, true)
}

/// SHA-256 hex of a secret.
pub fn hash_token(t: &str) -> String {
    hex::encode(Sha256::digest(t.as_bytes()))
}

/// A random URL-safe secret.
pub fn new_secret() -> String {
    use base64::Engine;
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// bcrypt hash, off the executor, on the low-priority hashing worker (`hasher`).
pub async fn hash_password(password: String, cost: u32) -> Result<String, ApiError> {
    match hasher::run(hasher::Op::Hash { password, cost }).await {
        Some(hasher::Answer::Hashed(h)) => Ok(h),
        Some(hasher::Answer::Failed(e)) => Err(ApiError::internal(e)),
        _ => Err(ApiError::internal("password hashing failed")),
    }
}

/// bcrypt verify, off the executor. A missing hash verifies nothing, at the same cost, so
/// timing does not tell whether the account exists.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    match hasher::run(hasher::Op::Verify { password, hash }).await {
        Some(hasher::Answer::Verified(ok)) => Ok(ok),
        Some(hasher::Answer::Failed(e)) => Err(ApiError::internal(e)),
        _ => Err(ApiError::internal("password hashing failed")),
    }
}

/// Checks the password policy; GoTrue's `weak_password` (422) with reasons otherwise.
pub fn check_password(cfg: &Config, password: &str) -> Result<(), ApiError> {
    if (password.chars().count() as u64) < cfg.auth.password_min_length {
        let mut e = gotrue(
            422,
            "weak_password",
            format!(
                "Password should be at least {} characters.",
                cfg.auth.password_min_length
            ),
        );
        e.details = Some("length".into());
        return Err(e);
    }
    Ok(())
}

/// Columns every user query selects, in `user_json`'s order.
pub const USER_COLUMNS: &str = "u.id, u.aud, u.role, u.email, u.email_confirmed_at, u.phone, u.phone_confirmed_at, \
     u.confirmed_at, u.confirmation_sent_at, u.recovery_sent_at, u.email_change, u.email_change_sent_at, \
     u.last_sign_in_at, u.raw_app_meta_data, u.raw_user_meta_data, u.created_at, u.updated_at, u.banned_until, \
     u.deleted_at, u.is_anonymous, u.invited_at, u.encrypted_password, \
     (SELECT coalesce(jsonb_agg(jsonb_build_object('identity_id', i.id, 'id', i.provider_id, 'user_id', i.user_id, \
        'identity_data', i.identity_data, 'provider', i.provider, 'last_sign_in_at', i.last_sign_in_at, \
        'created_at', i.created_at, 'updated_at', i.updated_at, 'email', i.email) ORDER BY i.created_at), '[]'::jsonb) \
      FROM auth.identities i WHERE i.user_id = u.id), \
     (SELECT jsonb_agg(jsonb_build_object('id', f.id, 'friendly_name', f.friendly_name, \
        'factor_type', f.factor_type, 'status', f.status, 'created_at', f.created_at, \
        'updated_at', f.updated_at, 'phone', coalesce(f.phone, '')) ORDER BY f.created_at) \
      FROM auth.mfa_factors f WHERE f.user_id = u.id), \
     u.phone_change, u.phone_change_sent_at";

/// A user as loaded.
#[derive(Debug, Clone)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// The User JSON.
    pub json: Value,
    /// bcrypt hash.
    pub password_hash: Option<String>,
    /// Email or phone confirmed (`confirmed_at`).
    pub confirmed: bool,
    /// Phone confirmed (`phone_confirmed_at`).
    pub phone_confirmed: bool,
    /// Banned until (in the future = banned).
    pub banned_until: Option<DateTime<Utc>>,
    /// Role for tokens.
    pub role: String,
    /// Anonymous user.
    pub is_anonymous: bool,
}

fn ts(r: &Row, i: usize) -> Value {
    r.get::<_, Option<DateTime<Utc>>>(i)
        .map(|t| Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
        .unwrap_or(Value::Null)
}

/// A metadata column; a value our JSON reader cannot take (stored before the
/// `auth.fluxbase_check_metadata` trigger refused such numbers) reads as `{}` with a warning
/// instead of failing every read of the user.
fn metadata(r: &tokio_postgres::Row, i: usize) -> Value {
    r.try_get::<_, Value>(i).unwrap_or_else(|e| {
        tracing::warn!(error = %e, column = i, "unreadable user metadata; answered as {{}}");
        json!({})
    })
}

/// The User JSON as GoTrue emits it.
pub fn user_from_row(r: &Row) -> User {
    let id: Uuid = r.get(0);
    let email: Option<String> = r.get(3);
    let phone: Option<String> = r.get(5);
    let role: Option<String> = r.get(2);
    let is_anonymous: bool = r.get(19);
    let json = json!({
        "id": id,
        "aud": r.get::<_, Option<String>>(1).unwrap_or_else(|| "authenticated".into()),
        "role": role.clone().unwrap_or_else(|| "authenticated".into()),
        "email": email.clone().unwrap_or_default(),
        "email_confirmed_at": ts(r, 4),
        "phone": phone.unwrap_or_default(),
        "phone_confirmed_at": ts(r, 6),
        "confirmed_at": ts(r, 7),
        "confirmation_sent_at": ts(r, 8),
        "recovery_sent_at": ts(r, 9),
        "new_email": r.get::<_, Option<String>>(10).filter(|s| !s.is_empty()),
        "email_change_sent_at": ts(r, 11),
        "last_sign_in_at": ts(r, 12),
        "app_metadata": metadata(r, 13),
        "user_metadata": metadata(r, 14),
        "identities": r.get::<_, Value>(22),
        "created_at": ts(r, 15),
        "updated_at": ts(r, 16),
        "banned_until": ts(r, 17),
        "deleted_at": ts(r, 18),
        "is_anonymous": is_anonymous,
        "invited_at": ts(r, 20),
        "factors": r.get::<_, Option<Value>>(23).unwrap_or(Value::Null),
        "new_phone": r.get::<_, Option<String>>(24).filter(|s| !s.is_empty()),
        "phone_change_sent_at": ts(r, 25),
    });
    let mut json = json;
    if let Some(m) = json.as_object_mut() {
        // GoTrue leaves these out when unset.
        for k in [
            "new_email",
            "new_phone",
            "phone_change_sent_at",
            "email_change_sent_at",
            "invited_at",
            "factors",
            "banned_until",
            "deleted_at",
        ] {
            if m.get(k).is_some_and(Value::is_null) {
                m.remove(k);
            }
        }
    }
    User {
        id,
        password_hash: r.get(21),
        confirmed: r.get::<_, Option<DateTime<Utc>>>(7).is_some(),
        phone_confirmed: r.get::<_, Option<DateTime<Utc>>>(6).is_some(),
        banned_until: r.get(17),
        role: role.unwrap_or_else(|| "authenticated".into()),
        is_anonymous,
        json,
    }
}

/// A user by id.
pub async fn user_by_id<C: GenericClient>(c: &C, id: Uuid) -> Result<Option<User>, ApiError> {
    let rows = c
        .query(
            &format!(
                "SELECT {USER_COLUMNS} FROM auth.users u WHERE u.id = $1 AND u.deleted_at IS NULL"
            ),
            &[&id],
        )
        .await
        .map_err(db)?;
    Ok(rows.first().map(user_from_row))
}

/// A user by email (case-insensitive).
pub async fn user_by_email<C: GenericClient>(c: &C, email: &str) -> Result<Option<User>, ApiError> {
    let rows = c
        .query(
            &format!("SELECT {USER_COLUMNS} FROM auth.users u WHERE lower(u.email) = lower($1) AND u.deleted_at IS NULL"),
            &[&email],
        )
        .await
        .map_err(db)?;
    Ok(rows.first().map(user_from_row))
}

/// A user by phone number (as `sms::normalise` stores it).
pub async fn user_by_phone<C: GenericClient>(c: &C, phone: &str) -> Result<Option<User>, ApiError> {
    let rows = c
        .query(
            &format!("SELECT {USER_COLUMNS} FROM auth.users u WHERE u.phone = $1 AND u.deleted_at IS NULL"),
            &[&phone],
        )
        .await
        .map_err(db)?;
    Ok(rows.first().map(user_from_row))
}

/// GoTrue's `phone_exists` (422).
pub fn phone_exists() -> ApiError {
    gotrue(
        422,
        "phone_exists",
        "A user with this phone number has already been registered",
    )
}

/// A write to `auth.users` failed: `phone_exists` when the number is another user's
/// (`users_phone_key`), else the database error.
pub fn phone_taken_or_db(e: tokio_postgres::Error) -> ApiError {
    if e.as_db_error()
        .is_some_and(|d| d.constraint() == Some("users_phone_key"))
    {
        phone_exists()
    } else {
        db(e)
    }
}

/// Creates or updates the `phone` identity of a user (GoTrue keeps one per user, its
/// `identity_data` naming the number and whether it is verified), and lists `phone` among
/// the user's providers.
pub async fn upsert_phone_identity<C: GenericClient>(
    c: &C,
    user: Uuid,
    phone: &str,
    verified: bool,
) -> Result<(), ApiError> {
    let data = json!({"sub": user.to_string(), "phone": phone, "email_verified": false, "phone_verified": verified});
    c.execute(
        "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider) VALUES ($1, $2, $3, 'phone')
         ON CONFLICT (provider_id, provider) DO UPDATE
           SET identity_data = auth.identities.identity_data || excluded.identity_data, updated_at = now()",
        &[&user.to_string(), &user, &data],
    )
    .await
    .map_err(db)?;
    c.execute(
        "UPDATE auth.users SET raw_app_meta_data = raw_app_meta_data
              || jsonb_build_object('providers', coalesce(raw_app_meta_data->'providers', '[]'::jsonb) || '[\"phone\"]'::jsonb)
          WHERE id = $1 AND NOT coalesce(raw_app_meta_data->'providers', '[]'::jsonb) ? 'phone'",
        &[&user],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// What a new user starts with.
#[derive(Debug, Default)]
pub struct NewUser {
    /// Email (lower-cased by the caller).
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// bcrypt hash.
    pub password_hash: Option<String>,
    /// Email confirmed at creation.
    pub confirmed: bool,
    /// Phone confirmed at creation.
    pub phone_confirmed: bool,
    /// user_metadata.
    pub user_metadata: Value,
    /// app_metadata additions.
    pub app_metadata: Value,
    /// Role claim (`authenticated` unless an admin says otherwise).
    pub role: String,
    /// Anonymous.
    pub anonymous: bool,
}

/// Creates a user (and its email identity). `user_already_exists` (422) on a taken email.
pub async fn create_user<C: GenericClient>(c: &C, n: &NewUser) -> Result<User, ApiError> {
    let provider = if n.anonymous {
        "anonymous"
    } else if n.email.is_some() {
        "email"
    } else {
        "phone"
    };
    let providers = if n.anonymous {
        json!([])
    } else if n.email.is_some() && n.phone.is_some() {
        json!(["email", "phone"])
    } else {
        json!([provider])
    };
    let mut app_meta = json!({"provider": provider, "providers": providers});
    if let (Some(m), Some(extra)) = (app_meta.as_object_mut(), n.app_metadata.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    let user_meta = if n.user_metadata.is_null() {
        json!({})
    } else {
        n.user_metadata.clone()
    };
    let row = c
        .query_one(
            "INSERT INTO auth.users (aud, role, email, phone, encrypted_password, email_confirmed_at, raw_app_meta_data,
                                     raw_user_meta_data, is_anonymous, phone_confirmed_at)
             VALUES ('authenticated', $1::text, $2::text, $3::text, $4::text, CASE WHEN $5 AND $2::text IS NOT NULL THEN now() END,
                     $6, $7, $8, CASE WHEN $9 AND $3::text IS NOT NULL THEN now() END)
             RETURNING id",
            &[&n.role, &n.email, &n.phone, &n.password_hash, &n.confirmed, &app_meta, &user_meta, &n.anonymous, &n.phone_confirmed],
        )
        .await
        .map_err(|e| {
            let email_taken = e.code().is_some_and(|c| c.code() == "23505")
                && e.as_db_error()
                    .is_some_and(|d| d.constraint() != Some("users_phone_key"));
            if email_taken {
                gotrue(422, "user_already_exists", "User already registered")
            } else {
                phone_taken_or_db(e)
            }
        })?;
    let id: Uuid = row.get(0);
    if let Some(email) = &n.email {
        let data = json!({"sub": id.to_string(), "email": email, "email_verified": n.confirmed, "phone_verified": false});
        c.execute(
            "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider) VALUES ($1, $2, $3, 'email')",
            &[&id.to_string(), &id, &data],
        )
        .await
        .map_err(db)?;
    }
    if let Some(phone) = &n.phone {
        upsert_phone_identity(c, id, phone, n.phone_confirmed).await?;
    }
    user_by_id(c, id)
        .await?
        .ok_or_else(|| ApiError::internal("created user vanished"))
}

/// The Session JSON, after creating a session (or, with `session`, for an existing one).
pub async fn issue_session<C: GenericClient>(
    c: &C,
    cfg: &Config,
    keys: &JwtKeys,
    user: &User,
    amr_method: &str,
    session: Option<Uuid>,
    parent_hash: Option<&str>,
) -> Result<Value, ApiError> {
    // Impersonated sessions are tagged, so every token of the session (refreshed ones too)
    // says so in its claims. Session row and refresh token in one statement.
    let refresh = new_secret();
    let refresh_hash = hash_token(&refresh);
    let now = Utc::now().timestamp();
    // A new session records how it was authenticated; an existing one (refresh, MFA) keeps
    // its level and methods, so refreshed tokens carry the same aal/amr.
    let first_amr = json!([{"method": amr_method, "timestamp": now}]);
    let row = match session {
        Some(s) => c
            .query_one(
                "WITH s AS (UPDATE auth.sessions SET refreshed_at = now(), updated_at = now() WHERE id = $3 RETURNING id, tag, aal, amr),
                      r AS (INSERT INTO auth.refresh_tokens (token_hash, user_id, session_id, parent)
                            SELECT $1, $2, s.id, $4 FROM s)
                 SELECT id, tag, aal, amr FROM s",
                &[&refresh_hash, &user.id, &s, &parent_hash],
            )
            .await
            .map_err(db)?,
        None => {
            let tag = (amr_method == "impersonation").then_some("impersonated");
            c.query_one(
                "WITH s AS (INSERT INTO auth.sessions (user_id, tag, refreshed_at, amr) VALUES ($2, $3, now(), $5) RETURNING id, tag, aal, amr),
                      r AS (INSERT INTO auth.refresh_tokens (token_hash, user_id, session_id, parent)
                            SELECT $1, $2, s.id, $4 FROM s)
                 SELECT id, tag, aal, amr FROM s",
                &[&refresh_hash, &user.id, &tag, &parent_hash, &first_amr],
            )
            .await
            .map_err(db)?
        }
    };
    let issued = IssuedSession {
        id: row.get(0),
        tag: row.get(1),
        aal: row.get(2),
        amr: row.get(3),
        refresh,
    };
    session_json(cfg, keys, user, amr_method, issued)
}

/// A session row as written for a new access token: what its claims need, and the new
/// refresh token (in clear, for the answer only).
pub struct IssuedSession {
    /// Session id.
    pub id: Uuid,
    /// `impersonated` for sessions made by impersonation.
    pub tag: Option<String>,
    /// Authenticator assurance level of the session.
    pub aal: String,
    /// Authentication methods of the session (`[]` for sessions from before they were kept).
    pub amr: Value,
    /// The new refresh token.
    pub refresh: String,
}

/// The Session JSON with a freshly signed access token for `session` of `user`.
pub fn session_json(
    cfg: &Config,
    keys: &JwtKeys,
    user: &User,
    amr_method: &str,
    session: IssuedSession,
) -> Result<Value, ApiError> {
    let now = Utc::now().timestamp();
    let IssuedSession {
        id: session_id,
        tag,
        aal,
        amr,
        refresh,
    } = session;
    // Sessions from before amr was recorded have none: name the method at hand.
    let amr = if amr.as_array().is_some_and(|a| !a.is_empty()) {
        amr
    } else {
        json!([{"method": amr_method, "timestamp": now}])
    };
    let exp = now + cfg.auth.jwt_expiry_secs as i64;
    let mut claims = Claims::new();
    let iss = if cfg.server.public_url.is_empty() {
        "fluxbase".to_string()
    } else {
        format!("{}/auth/v1", cfg.server.public_url.trim_end_matches('/'))
    };
    claims.insert("iss".into(), Value::from(iss));
    claims.insert("sub".into(), Value::from(user.id.to_string()));
    claims.insert("aud".into(), Value::from("authenticated"));
    claims.insert("exp".into(), Value::from(exp));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("email".into(), user.json["email"].clone());
    claims.insert("phone".into(), user.json["phone"].clone());
    claims.insert("app_metadata".into(), user.json["app_metadata"].clone());
    claims.insert("user_metadata".into(), user.json["user_metadata"].clone());
    claims.insert("role".into(), Value::from(user.role.clone()));
    claims.insert("aal".into(), Value::from(aal));
    claims.insert("amr".into(), amr);
    claims.insert("session_id".into(), Value::from(session_id.to_string()));
    claims.insert("is_anonymous".into(), Value::from(user.is_anonymous));
    if tag.as_deref() == Some("impersonated") {
        claims.insert("impersonated".into(), Value::from(true));
    }
    let access = keys.sign(&claims).map_err(ApiError::internal)?;
    Ok(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": cfg.auth.jwt_expiry_secs,
        "expires_at": exp,
        "refresh_token": refresh,
        "user": user.json,
    }))
}

/// SQL condition: session `session` of user `user` exists, is not past `not_after`, and its
/// user is neither deleted nor banned. The one definition of a live session.
pub fn live_session_sql(session: &str, user: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id
                  WHERE s.id = {session} AND s.user_id = {user} AND u.deleted_at IS NULL
                    AND (u.banned_until IS NULL OR u.banned_until < now())
                    AND (s.not_after IS NULL OR s.not_after > now()))"
    )
}

/// Whether the session named by an access token still exists.
pub async fn session_alive<C: GenericClient>(
    c: &C,
    session: Uuid,
    user: Uuid,
) -> Result<bool, ApiError> {
    Ok(c.query_opt(
        &format!("SELECT 1 WHERE {}", live_session_sql("$1", "$2")),
        &[&session, &user],
    )
    .await
    .map_err(db)?
    .is_some())
}

#[cfg(test)]
mod hash_thread_tests {
    // No worker program is set in unit tests, so this covers the in-process fallback; the
    // worker process is covered by tests/it/auth_hashing.rs.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_on_threads_at_the_lower_priority() {
        let h = super::hash_password("correct horse".into(), 4)
            .await
            .unwrap();
        assert!(
            super::verify_password("correct horse".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!super::verify_password("wrong".into(), Some(h))
            .await
            .unwrap());
        assert!(!super::verify_password("wrong".into(), None).await.unwrap());
        // Every hashing thread (comm is cut to 15 bytes) has nice HASH_THREAD_NICE: field 19
        // of /proc/self/task/TID/stat, counted after the ")" that ends the name.
        let mut seen = 0;
        for t in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = t.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if !comm.starts_with("fluxbase-bcrypt") {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let nice: i32 = after.split(' ').nth(16).unwrap().parse().unwrap();
            assert_eq!(nice, super::hasher::HASH_THREAD_NICE, "{comm}: {stat}");
            seen += 1;
        }
        assert!(seen >= 1, "no hashing thread found");
    }
}
