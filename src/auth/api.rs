//! `/auth/v1` (alias `/api/v1/auth`): GoTrue's routes, bodies, status codes and JSON, so
//! `@supabase/auth-js` works unchanged. Errors render in GoTrue's format because the error
//! middleware picks the surface from the path.

use super::mail;
use super::service::{self, db, gotrue, NewUser};
use super::AuthContext;
use crate::app::AppState;
use crate::audit::{self, AuditEvent};
use crate::auth::ServiceRole;
use crate::error::ApiError;
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Declares the auth routes under both prefixes.
pub fn configure(reg: &mut Registry) {
    macro_rules! both {
        ($m:expr, $p:literal, $s:literal, $a:expr, $h:expr) => {
            reg.add($m, concat!("/auth/v1", $p), "auth", $s, $a, $h);
            reg.add($m, concat!("/api/v1/auth", $p), "auth", $s, $a, $h);
        };
    }
    use Access::{Key, Public, ServiceRole as S};
    both!(
        Method::GET,
        "/settings",
        "Public auth settings",
        Public,
        settings
    );
    both!(
        Method::GET,
        "/.well-known/jwks.json",
        "Public signing keys (none while only HS256 is configured)",
        Public,
        jwks
    );
    both!(
        Method::POST,
        "/signup",
        "Sign up with email or phone and password, or anonymously",
        Key,
        signup
    );
    both!(
        Method::POST,
        "/token",
        "Sign in (grant_type=password, pkce or id_token) or refresh (grant_type=refresh_token)",
        Key,
        token
    );
    both!(Method::GET, "/user", "The signed-in user", Key, get_user);
    both!(
        Method::POST,
        "/factors",
        "Enroll an MFA factor (TOTP or phone)",
        Key,
        super::mfa::enroll
    );
    both!(
        Method::POST,
        "/factors/{id}/challenge",
        "Challenge an MFA factor",
        Key,
        super::mfa::challenge
    );
    both!(
        Method::POST,
        "/factors/{id}/verify",
        "Verify an MFA challenge (the session becomes aal2)",
        Key,
        super::mfa::verify
    );
    both!(
        Method::DELETE,
        "/factors/{id}",
        "Unenroll an MFA factor",
        Key,
        super::mfa::unenroll
    );
    both!(
        Method::PUT,
        "/user",
        "Update the signed-in user",
        Key,
        put_user
    );
    both!(
        Method::POST,
        "/logout",
        "Sign out (scope=global|local|others)",
        Key,
        logout
    );
    both!(
        Method::POST,
        "/otp",
        "Send a magic link and code, or a code by SMS (passwordless sign-in)",
        Key,
        otp
    );
    both!(
        Method::POST,
        "/magiclink",
        "Send a magic link (legacy name of /otp)",
        Key,
        otp
    );
    both!(
        Method::POST,
        "/recover",
        "Send a password recovery link and code",
        Key,
        recover
    );
    both!(
        Method::POST,
        "/resend",
        "Send the signup, email change, SMS or phone change confirmation again",
        Key,
        resend
    );
    both!(
        Method::GET,
        "/reauthenticate",
        "Mail the signed-in user a nonce for a password change",
        Key,
        reauthenticate
    );
    both!(Method::POST, "/invite", "Invite a user by email", S, invite);
    both!(
        Method::POST,
        "/admin/generate_link",
        "An email action link and code, without sending mail",
        S,
        generate_link
    );
    both!(
        Method::POST,
        "/verify",
        "Verify a mailed token or code, or a texted code",
        Public,
        verify_post
    );
    both!(
        Method::GET,
        "/verify",
        "Verify a confirmation link (303 to redirect_to)",
        Public,
        verify_get
    );
    both!(
        Method::GET,
        "/user/identities/authorize",
        "Link another provider's identity to the signed-in user (302 to the provider; auth.manual_linking_enabled)",
        Key,
        super::oauth::link::link_identity
    );
    both!(
        Method::DELETE,
        "/user/identities/{id}",
        "Unlink one of the signed-in user's identities (auth.manual_linking_enabled)",
        Key,
        super::oauth::link::unlink_identity
    );
    both!(
        Method::GET,
        "/authorize",
        "Start an OAuth sign-in (302 to the provider)",
        Public,
        super::oauth::authorize
    );
    both!(
        Method::GET,
        "/callback",
        "OAuth provider callback (302 to redirect_to)",
        Public,
        super::oauth::callback
    );
    both!(
        Method::POST,
        "/callback",
        "OAuth provider callback, form_post (302 to redirect_to)",
        Public,
        super::oauth::callback
    );
    both!(
        Method::GET,
        "/admin/users",
        "List users (page, per_page)",
        S,
        admin_list
    );
    both!(
        Method::POST,
        "/admin/users",
        "Create a user",
        S,
        admin_create
    );
    both!(Method::GET, "/admin/users/{id}", "One user", S, admin_get);
    both!(
        Method::PUT,
        "/admin/users/{id}",
        "Update a user",
        S,
        admin_update
    );
    reg.add(
        Method::POST,
        "/api/v1/admin/users/{id}/impersonate",
        "auth",
        "A session for that user (claims say `impersonated`; audited)",
        S,
        impersonate,
    );
    both!(
        Method::DELETE,
        "/admin/users/{id}",
        "Delete a user",
        S,
        admin_delete
    );
}

async fn settings(state: web::Data<AppState>) -> HttpResponse {
    let a = &state.config.auth;
    let mut external = super::oauth::settings_external(&state.config);
    external.insert("email".into(), Value::from(true));
    external.insert("phone".into(), Value::from(a.sms.enabled));
    external.insert(
        "anonymous_users".into(),
        Value::from(a.enable_anonymous_sign_ins),
    );
    HttpResponse::Ok().json(json!({
        "external": external,
        "disable_signup": !a.enable_signup,
        "mailer_autoconfirm": a.mailer_autoconfirm,
        "phone_autoconfirm": a.sms.autoconfirm,
        "sms_provider": a.sms.provider,
        "saml_enabled": false,
        "passkeys_enabled": false,
    }))
}

async fn jwks() -> HttpResponse {
    HttpResponse::Ok().json(json!({"keys": []}))
}

fn audit_ev(req: &HttpRequest, actor: &str, action: &str, target: Option<String>) -> AuditEvent {
    let mut ctx = AuthContext::anon();
    std::sync::Arc::make_mut(&mut ctx.claims).insert("sub".into(), Value::from(actor));
    let mut e = AuditEvent::from_request(req, &ctx, action, target, json!({}));
    e.actor = Some(actor.to_string());
    e.actor_role = None;
    e
}

#[derive(Debug, Deserialize, Default)]
struct SignupBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    #[serde(default)]
    data: Value,
    channel: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

fn normalise_email(e: &str) -> Result<String, ApiError> {
    let e = e.trim().to_lowercase();
    let ok = e.len() <= 255
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'));
    if ok {
        Ok(e)
    } else {
        Err(gotrue(
            400,
            "validation_failed",
            "Unable to validate email address: invalid format",
        ))
    }
}

/// A `password` session for `user`, read afresh in the transaction (it may have just been
/// confirmed or stamped).
pub(super) async fn password_session<C: tokio_postgres::GenericClient>(
    c: &C,
    state: &AppState,
    user: service::User,
) -> Result<Value, ApiError> {
    let user = service::user_by_id(c, user.id).await?.unwrap_or(user);
    service::issue_session(c, &state.config, &state.jwt, &user, "password", None, None).await
}

/// Audits what a user did (or had done for them), in the request's transaction.
pub(super) async fn audit_user<C: tokio_postgres::GenericClient>(
    c: &C,
    req: &HttpRequest,
    user: Uuid,
    action: &str,
) -> Result<(), ApiError> {
    audit::record(
        c,
        &audit_ev(req, &user.to_string(), action, Some(format!("user:{user}"))),
    )
    .await
    .map_err(db)
}

/// A new password's bcrypt hash, after the policy check.
async fn password_hash(
    state: &AppState,
    password: Option<String>,
) -> Result<Option<String>, ApiError> {
    match password {
        Some(p) => {
            service::check_password(&state.config, &p)?;
            Ok(Some(
                service::hash_password(p, state.config.auth.bcrypt_cost as u32).await?,
            ))
        }
        None => Ok(None),
    }
}

/// Audits an admin change, in the admin request's transaction.
async fn audit_admin<C: tokio_postgres::GenericClient>(
    c: &C,
    req: &HttpRequest,
    admin: &ServiceRole,
    action: &str,
    user: Uuid,
) -> Result<(), ApiError> {
    let mut ev = AuditEvent::from_request(
        req,
        &admin.0,
        action,
        Some(format!("user:{user}")),
        json!({}),
    );
    ev.actor = Some("service_role".into());
    audit::record(c, &ev).await.map_err(db)
}

/// GoTrue's per-endpoint limit `name`: `count` requests per 5 minutes per client IP
/// (`auth.rate_limit.*`), on top of the route group's limit. The service_role is never
/// limited.
fn limit_ip(state: &AppState, req: &HttpRequest, name: &str, count: u64) -> Result<(), ApiError> {
    let ctx = req
        .extensions()
        .get::<AuthContext>()
        .cloned()
        .or_else(|| AuthContext::from_headers(req.headers(), &state.jwt).ok());
    if ctx.is_some_and(|c| c.is_service_role()) {
        return Ok(());
    }
    let ip = state.rate_limits.client_ip(req.headers(), req.peer_addr());
    match state.rate_limits.check_per(name, count, 300, &ip) {
        Ok(_) => Ok(()),
        Err(l) => {
            state.metrics.observe_rate_limited(name);
            let mut e = l.into_error();
            e.message = "Request rate limit reached".into();
            Err(e)
        }
    }
}

fn email_exists() -> ApiError {
    gotrue(
        422,
        "email_exists",
        "A user with this email address has already been registered",
    )
}

async fn signup(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SignupBody>,
) -> Result<HttpResponse, ApiError> {
    let cfg = &state.config;
    limit_ip(
        &state,
        &req,
        "auth.signup",
        cfg.auth.rate_limit.signup_per_5min,
    )?;
    let b = body.into_inner();
    let pkce = mail::Pkce::from_body(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
    )?;
    let anonymous = b.email.is_none() && b.phone.is_none() && b.password.is_none();
    if anonymous && !cfg.auth.enable_anonymous_sign_ins {
        return Err(gotrue(
            422,
            "anonymous_provider_disabled",
            "Anonymous sign-ins are disabled",
        ));
    }
    if !cfg.auth.enable_signup {
        return Err(gotrue(
            422,
            "signup_disabled",
            "Signups not allowed for this instance",
        ));
    }
    if let Some(phone) = b.phone.clone().filter(|p| !p.is_empty()) {
        let s = super::phone::Signup {
            phone,
            password: b.password,
            data: b.data,
            channel: b.channel,
            pkce: pkce.is_some(),
            with_email: b.email.as_deref().is_some_and(|e| !e.is_empty()),
        };
        return super::phone::signup(&state, &req, s).await;
    }
    let mut new = NewUser {
        role: "authenticated".into(),
        user_metadata: b.data.clone(),
        anonymous,
        ..Default::default()
    };
    let mut needs_mail = false;
    if !anonymous {
        let email = normalise_email(b.email.as_deref().unwrap_or_default())?;
        let password = b
            .password
            .ok_or_else(|| gotrue(422, "validation_failed", "Signup requires a valid password"))?;
        service::check_password(cfg, &password)?;
        new.password_hash =
            Some(service::hash_password(password, cfg.auth.bcrypt_cost as u32).await?);
        new.confirmed = cfg.auth.mailer_autoconfirm;
        needs_mail = !new.confirmed;
        new.email = Some(email);
    }
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let user = service::create_user(&*tx, &new).await?;
    audit_user(&*tx, &req, user.id, "auth.user.signup").await?;
    let body = if needs_mail {
        // The confirmation mail goes through the job queue, committed with the user.
        let email = new.email.clone().unwrap_or_default();
        mail::send(
            &*tx,
            &state,
            user.id,
            &email,
            "signup",
            redirect_to(&req).as_deref(),
            pkce.as_ref(),
        )
        .await?;
        service::user_by_id(&*tx, user.id)
            .await?
            .unwrap_or(user)
            .json
    } else {
        tx.execute(
            "UPDATE auth.users SET last_sign_in_at = now() WHERE id = $1",
            &[&user.id],
        )
        .await
        .map_err(db)?;
        let amr = if anonymous { "anonymous" } else { "password" };
        let user = service::user_by_id(&*tx, user.id).await?.unwrap_or(user);
        service::issue_session(&*tx, cfg, &state.jwt, &user, amr, None, None).await?
    };
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(body))
}

/// `redirect_to` is always a query parameter (auth-js sends it so).
fn redirect_to(req: &HttpRequest) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("redirect_to").cloned())
}

#[derive(Debug, Deserialize, Default)]
struct EmailBody {
    email: Option<String>,
    phone: Option<String>,
    #[serde(default)]
    data: Value,
    create_user: Option<bool>,
    channel: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn otp(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<EmailBody>,
) -> Result<HttpResponse, ApiError> {
    limit_ip(
        &state,
        &req,
        "auth.otp",
        state.config.auth.rate_limit.otp_per_5min,
    )?;
    let b = body.into_inner();
    let pkce = mail::Pkce::from_body(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
    )?;
    let phone = b.phone.clone().filter(|p| !p.is_empty());
    let email = b.email.clone().filter(|e| !e.is_empty());
    if phone.is_some() && email.is_some() {
        return Err(gotrue(
            400,
            "validation_failed",
            "Only an email address or phone number should be provided",
        ));
    }
    if email.is_some() && b.channel.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(gotrue(
            400,
            "validation_failed",
            "Channel should only be specified with Phone OTP",
        ));
    }
    if let Some(phone) = phone {
        return super::phone::otp(
            &state,
            &req,
            &phone,
            b.create_user.unwrap_or(true),
            b.data,
            b.channel.as_deref(),
        )
        .await;
    }
    let email = normalise_email(email.as_deref().unwrap_or_default())?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let (user, kind) = match service::user_by_email(&*tx, &email).await? {
        Some(u) if u.confirmed => (u, "magiclink"),
        Some(u) => (u, "signup"),
        None => {
            if !b.create_user.unwrap_or(true) || !state.config.auth.enable_signup {
                return Err(gotrue(422, "otp_disabled", "Signups not allowed for otp"));
            }
            let new = NewUser {
                email: Some(email.clone()),
                user_metadata: b.data.clone(),
                role: "authenticated".into(),
                ..Default::default()
            };
            (service::create_user(&*tx, &new).await?, "signup")
        }
    };
    mail::send(
        &*tx,
        &state,
        user.id,
        &email,
        kind,
        redirect_to(&req).as_deref(),
        pkce.as_ref(),
    )
    .await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn recover(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<EmailBody>,
) -> Result<HttpResponse, ApiError> {
    limit_ip(
        &state,
        &req,
        "auth.recover",
        state.config.auth.rate_limit.recover_per_5min,
    )?;
    let pkce = mail::Pkce::from_body(
        body.code_challenge.as_deref(),
        body.code_challenge_method.as_deref(),
    )?;
    let email = normalise_email(body.email.as_deref().unwrap_or_default())?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    // The same answer whether or not the address exists: no user enumeration.
    if let Some(user) = service::user_by_email(&*tx, &email).await? {
        mail::send(
            &*tx,
            &state,
            user.id,
            &email,
            "recovery",
            redirect_to(&req).as_deref(),
            pkce.as_ref(),
        )
        .await?;
        audit_user(&*tx, &req, user.id, "auth.recovery.requested").await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn resend(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<EmailBody>,
) -> Result<HttpResponse, ApiError> {
    match body.kind.as_deref() {
        Some("signup") => {}
        Some("email_change") => return resend_email_change(&state, &req, &body).await,
        Some(kind @ ("sms" | "phone_change")) => {
            return super::phone::resend(&state, kind, body.phone.as_deref(), body.email.as_deref())
                .await
        }
        Some(other) => {
            return Err(gotrue(
                400,
                "validation_failed",
                format!("Missing one of these types: signup, email_change, sms, phone_change (got {other:?})"),
            ))
        }
        None => return Err(gotrue(400, "validation_failed", "type is required")),
    }
    let email = normalise_email(body.email.as_deref().unwrap_or_default())?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    if let Some(user) = service::user_by_email(&*tx, &email)
        .await?
        .filter(|u| !u.confirmed)
    {
        mail::send(
            &*tx,
            &state,
            user.id,
            &email,
            "signup",
            redirect_to(&req).as_deref(),
            None,
        )
        .await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
struct GrantQuery {
    grant_type: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct TokenBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    auth_code: Option<String>,
    code_verifier: Option<String>,
    provider: Option<String>,
    id_token: Option<String>,
    access_token: Option<String>,
    nonce: Option<String>,
    client_id: Option<String>,
    issuer: Option<String>,
    #[serde(default)]
    link_identity: bool,
}

async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<GrantQuery>,
    body: web::Json<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    let rl = &state.config.auth.rate_limit;
    if q.grant_type.as_deref() == Some("refresh_token") {
        limit_ip(
            &state,
            &req,
            "auth.token_refresh",
            rl.token_refresh_per_5min,
        )?;
    } else {
        limit_ip(&state, &req, "auth.token", rl.token_per_5min)?;
    }
    match q.grant_type.as_deref() {
        Some("password") => password_grant(&state, &req, body.into_inner()).await,
        Some("refresh_token") => refresh_grant(&state, body.into_inner()).await,
        Some("pkce") => pkce_grant(&state, body.into_inner()).await,
        Some("id_token") => {
            let b = body.into_inner();
            let params = super::oauth::id_token::Params {
                provider: b.provider,
                id_token: b.id_token,
                access_token: b.access_token,
                nonce: b.nonce,
                client_id: b.client_id,
                issuer: b.issuer,
                link_identity: b.link_identity,
            };
            super::oauth::id_token::grant(&state, &req, params).await
        }
        Some(other) => Err(gotrue(
            400,
            "validation_failed",
            format!("unsupported grant_type {other:?}"),
        )),
        None => Err(gotrue(400, "validation_failed", "grant_type is required")),
    }
}

async fn password_grant(
    state: &AppState,
    req: &HttpRequest,
    b: TokenBody,
) -> Result<HttpResponse, ApiError> {
    let invalid = || gotrue(400, "invalid_credentials", "Invalid login credentials");
    let password = b.password.ok_or_else(invalid)?;
    let phone = b
        .phone
        .filter(|p| !p.is_empty() && b.email.as_deref().is_none_or(str::is_empty));
    if phone.is_some() {
        super::sms::require_enabled(state, "Phone logins are disabled")?;
    }
    // Who is signing in: the address, or the number in GoTrue's stored form.
    let (email, provider) = match &phone {
        Some(p) => (super::sms::format(p), "phone"),
        None => (
            b.email
                .map(|e| e.trim().to_lowercase())
                .ok_or_else(invalid)?,
            "email",
        ),
    };
    let mut c = state.pool.get().await?;
    let user = if phone.is_some() {
        service::user_by_phone(&**c, &email).await?
    } else {
        service::user_by_email(&**c, &email).await?
    };
    let ok = service::verify_password(
        password,
        user.as_ref().and_then(|u| u.password_hash.clone()),
    )
    .await?;
    let tx = c.transaction().await.map_err(db)?;
    let user = match (user, ok) {
        (Some(u), true) => u,
        (u, _) => {
            let target = u.map(|u| format!("user:{}", u.id));
            audit::record(&*tx, &audit_ev(req, &email, "auth.sign_in.failed", target))
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Err(invalid());
        }
    };
    if phone.is_some() && !user.phone_confirmed {
        return Err(gotrue(400, "phone_not_confirmed", "Phone not confirmed"));
    }
    if phone.is_none() && !user.confirmed {
        return Err(gotrue(400, "email_not_confirmed", "Email not confirmed"));
    }
    if user.banned_until.is_some_and(|t| t > chrono::Utc::now()) {
        return Err(gotrue(400, "user_banned", "User is banned"));
    }
    tx.execute(
        "UPDATE auth.users SET last_sign_in_at = now() WHERE id = $1",
        &[&user.id],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "UPDATE auth.identities SET last_sign_in_at = now() WHERE user_id = $1 AND provider = $2",
        &[&user.id, &provider],
    )
    .await
    .map_err(db)?;
    let uid = user.id;
    let session = password_session(&*tx, state, user).await?;
    audit_user(&*tx, req, uid, "auth.sign_in").await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(session))
}

async fn pkce_grant(state: &AppState, b: TokenBody) -> Result<HttpResponse, ApiError> {
    let (Some(code), Some(verifier)) = (b.auth_code, b.code_verifier) else {
        return Err(gotrue(
            400,
            "validation_failed",
            "invalid request: both auth code and code verifier should be non-empty",
        ));
    };
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    // A code is good once, for five minutes.
    let row = tx
        .query_opt(
            "DELETE FROM auth.flow_state WHERE auth_code_hash = $1 AND auth_code_issued_at > now() - interval '5 minutes'
             RETURNING user_id, code_challenge, code_challenge_method, authentication_method,
                       provider_access_token, provider_refresh_token",
            &[&service::hash_token(&code)],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| gotrue(404, "flow_state_not_found", "invalid flow state, no valid flow state found"))?;
    let (user_id, challenge, method, auth_method): (Option<Uuid>, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if !mail::Pkce::matches(&challenge, &method, &verifier) {
        tx.commit().await.map_err(db)?;
        return Err(gotrue(
            400,
            "bad_code_verifier",
            "code challenge does not match previously saved code verifier",
        ));
    }
    let user = match user_id {
        Some(id) => service::user_by_id(&*tx, id).await?,
        None => None,
    }
    .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    let amr = match auth_method.as_str() {
        "recovery" => "recovery",
        "oauth" => "oauth",
        _ => "otp",
    };
    let mut session =
        service::issue_session(&*tx, &state.config, &state.jwt, &user, amr, None, None).await?;
    // An OAuth flow hands over the provider's tokens too, as GoTrue's session does.
    for (i, k) in [(4, "provider_token"), (5, "provider_refresh_token")] {
        if let (Some(t), Some(m)) = (row.get::<_, Option<String>>(i), session.as_object_mut()) {
            m.insert(k.into(), Value::from(t));
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(session))
}

/// The refresh grant in ONE statement (prepared once per connection, autocommitted): the
/// token row is locked and read with its session's liveness; when the token may be used
/// (live session, and not rotated — or rotated within the reuse interval) the same statement
/// revokes it, touches the session, inserts the successor and reads the user. Data-modifying
/// CTEs all run, once, whether or not the final SELECT reads them; a concurrent refresh of
/// the same token waits on the row lock and then sees the rotated row.
fn refresh_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH t AS (
               SELECT rt.user_id, rt.session_id, rt.revoked,
                      rt.updated_at > now() - make_interval(secs => $2) AS recent, {alive} AS alive
                 FROM auth.refresh_tokens rt WHERE rt.token_hash = $1 FOR UPDATE OF rt),
             ok AS (SELECT user_id, session_id FROM t WHERE alive AND (NOT revoked OR recent)),
             rev AS (UPDATE auth.refresh_tokens SET revoked = true, updated_at = now()
                      WHERE token_hash = $1 AND NOT revoked AND EXISTS (SELECT 1 FROM ok)),
             s AS (UPDATE auth.sessions SET refreshed_at = now(), updated_at = now()
                    WHERE id = (SELECT session_id FROM ok) RETURNING id, tag, aal, amr),
             r AS (INSERT INTO auth.refresh_tokens (token_hash, user_id, session_id, parent)
                    SELECT $3, ok.user_id, s.id, $1 FROM ok, s)
             SELECT {USER_COLUMNS}, t.session_id AS rt_session, t.revoked AS rt_revoked,
                    t.recent AS rt_recent, t.alive AS rt_alive,
                    s.id AS s_id, s.tag AS s_tag, s.aal AS s_aal, s.amr AS s_amr
               FROM t LEFT JOIN s ON true
               LEFT JOIN auth.users u ON u.id = t.user_id AND u.deleted_at IS NULL",
            alive = service::live_session_sql("rt.session_id", "rt.user_id"),
            USER_COLUMNS = service::USER_COLUMNS,
        )
    })
}

async fn refresh_grant(state: &AppState, b: TokenBody) -> Result<HttpResponse, ApiError> {
    let not_found = || {
        gotrue(
            400,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )
    };
    let token = b
        .refresh_token
        .filter(|t| !t.is_empty())
        .ok_or_else(not_found)?;
    let hash = service::hash_token(&token);
    let refresh = service::new_secret();
    let refresh_hash = service::hash_token(&refresh);
    let c = state.pool.get().await?;
    let stmt = c.prepare_cached(refresh_sql()).await.map_err(db)?;
    let reuse = state.config.auth.refresh_token_reuse_interval_secs as f64;
    let row = c
        .query_opt(&stmt, &[&hash, &reuse, &refresh_hash])
        .await
        .map_err(db)?
        .ok_or_else(not_found)?;
    // The user's columns come first (service::USER_COLUMNS, read by position); the rest by name.
    let session_id: Uuid = row.get("rt_session");
    let (revoked, recent, alive): (bool, bool, bool) = (
        row.get("rt_revoked"),
        row.get("rt_recent"),
        row.get("rt_alive"),
    );
    if revoked && !recent {
        // A rotated token used again: someone else may hold this family. End the session.
        c.execute("DELETE FROM auth.sessions WHERE id = $1", &[&session_id])
            .await
            .map_err(db)?;
        return Err(gotrue(
            400,
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
        ));
    }
    let session_gone = || {
        gotrue(
            403,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        )
    };
    // Not live, or ended between the statement's snapshot and its update: nothing written.
    let Some(id) = row.get::<_, Option<Uuid>>("s_id").filter(|_| alive) else {
        return Err(session_gone());
    };
    if row.get::<_, Option<Uuid>>(0).is_none() {
        return Err(not_found());
    }
    let user = service::user_from_row(&row);
    let issued = service::IssuedSession {
        id,
        tag: row.get("s_tag"),
        aal: row.get("s_aal"),
        amr: row.get("s_amr"),
        refresh,
    };
    let session = service::session_json(&state.config, &state.jwt, &user, "token_refresh", issued)?;
    Ok(HttpResponse::Ok().json(session))
}

/// The signed-in user of a request: a user JWT whose session is still live.
pub(crate) async fn current(state: &AppState, ctx: &AuthContext) -> Result<(Uuid, Uuid), ApiError> {
    let no_auth = || {
        gotrue(
            401,
            "no_authorization",
            "This endpoint requires a valid Bearer token",
        )
    };
    let sub = ctx.subject().ok_or_else(no_auth)?;
    let user: Uuid = sub
        .parse()
        .map_err(|_| gotrue(403, "bad_jwt", "invalid claim: sub claim must be a UUID"))?;
    let session: Uuid = ctx
        .claims
        .get("session_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| gotrue(403, "bad_jwt", "invalid claim: missing session_id claim"))?;
    let c = state.pool.get().await?;
    if !service::session_alive(&**c, session, user).await? {
        return Err(gotrue(
            403,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        ));
    }
    Ok((user, session))
}

async fn get_user(state: web::Data<AppState>, ctx: AuthContext) -> Result<HttpResponse, ApiError> {
    let (uid, _) = current(&state, &ctx).await?;
    let c = state.pool.get().await?;
    let user = service::user_by_id(&**c, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    Ok(HttpResponse::Ok().json(user.json))
}

#[derive(Debug, Deserialize, Default)]
struct UpdateBody {
    email: Option<String>,
    phone: Option<String>,
    channel: Option<String>,
    password: Option<String>,
    data: Option<Value>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn put_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let (uid, session) = current(&state, &ctx).await?;
    let b = body.into_inner();
    let pkce = mail::Pkce::from_body(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
    )?;
    let cfg = &state.config.auth;
    let mut c = state.pool.get().await?;
    let user = service::user_by_id(&**c, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    let current_email = user.json["email"].as_str().unwrap_or_default().to_string();
    let new_email = match b.email.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Some(normalise_email(e)?).filter(|e| *e != current_email),
        None => None,
    };
    if let Some(e) = &new_email {
        if service::user_by_email(&**c, e)
            .await?
            .is_some_and(|other| other.id != uid)
        {
            return Err(email_exists());
        }
    }
    let current_phone = user.json["phone"].as_str().unwrap_or_default().to_string();
    let new_phone = match b.phone.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Some(super::sms::normalise(p)?).filter(|p| *p != current_phone),
        None => None,
    };
    let channel = match &new_phone {
        Some(p) => {
            let ch = super::sms::channel(&cfg.sms, b.channel.as_deref())?;
            super::sms::require_enabled(&state, "Unsupported phone provider")?;
            if service::user_by_phone(&**c, p)
                .await?
                .is_some_and(|other| other.id != uid)
            {
                return Err(service::phone_exists());
            }
            ch
        }
        None => "sms",
    };
    let (stale, aal1_with_mfa): (bool, bool) = c
        .query_opt(
            "SELECT s.created_at < now() - interval '24 hours',
                    s.aal <> 'aal2' AND EXISTS (SELECT 1 FROM auth.mfa_factors f
                                                 WHERE f.user_id = s.user_id AND f.status = 'verified')
               FROM auth.sessions s WHERE s.id = $1",
            &[&session],
        )
        .await
        .map_err(db)?
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((true, false));
    let new_password = b.password.as_deref().is_some_and(|p| !p.is_empty());
    if aal1_with_mfa && (new_password || new_email.is_some() || new_phone.is_some()) {
        return Err(gotrue(
            401,
            "insufficient_aal",
            "AAL2 session is required to update email or password when MFA is enabled.",
        ));
    }
    if user.is_anonymous
        && new_password
        && new_email.is_none()
        && new_phone.is_none()
        && current_email.is_empty()
        && current_phone.is_empty()
    {
        return Err(gotrue(
            422,
            "validation_failed",
            "Updating password of an anonymous user without an email or phone is not allowed",
        ));
    }
    // GoTrue asks for a nonce only when the session is older than a day: a fresh sign-in
    // has just proved the password.
    let mut nonce = None;
    if b.password.is_some() && cfg.secure_password_change && stale {
        nonce = Some(
            b.nonce
                .clone()
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| {
                    gotrue(
                        400,
                        "reauthentication_needed",
                        "Password update requires reauthentication",
                    )
                })?,
        );
    }
    let password_changed = b.password.is_some();
    if new_password
        && user.password_hash.is_some()
        && service::verify_password(
            b.password.clone().unwrap_or_default(),
            user.password_hash.clone(),
        )
        .await?
    {
        return Err(gotrue(
            422,
            "same_password",
            "New password should be different from the old password.",
        ));
    }
    let hash = password_hash(&state, b.password).await?;
    let tx = c.transaction().await.map_err(db)?;
    if let Some(n) = &nonce {
        // The nonce went to the address, or (users without one) texted to the number.
        let (to, expiry, nonce) = if current_email.is_empty() {
            // With Twilio Verify the typed nonce is checked with Twilio first.
            let checked = super::sms::checked_code(&state, &current_phone, n).await?;
            (&current_phone, cfg.sms.otp_exp, checked)
        } else {
            (&current_email, cfg.otp_expiry_secs, Some(n.clone()))
        };
        let valid = match nonce {
            Some(n) => mail::consume_nonce(&*tx, uid, to, &n, expiry).await?,
            None => false,
        };
        if !valid {
            return Err(gotrue(
                422,
                "reauthentication_not_valid",
                "Nonce has expired or is invalid",
            ));
        }
    }
    tx.execute(
        "UPDATE auth.users SET
            raw_user_meta_data = CASE WHEN $2::jsonb IS NULL THEN raw_user_meta_data ELSE raw_user_meta_data || $2::jsonb END,
            encrypted_password = coalesce($3, encrypted_password),
            updated_at = now()
          WHERE id = $1",
        &[&uid, &b.data, &hash],
    )
    .await
    .map_err(db)?;
    if let Some(e) = &new_email {
        if user.is_anonymous && cfg.mailer_autoconfirm {
            // An anonymous user adding an address with autoconfirm on is like a sign-up.
            tx.execute(
                "UPDATE auth.users SET email = $2, email_confirmed_at = now(), updated_at = now() WHERE id = $1",
                &[&uid, e],
            )
            .await
            .map_err(|err| {
                if err.code().is_some_and(|c| c.code() == "23505") {
                    email_exists()
                } else {
                    db(err)
                }
            })?;
            let data = json!({"sub": uid.to_string(), "email": e, "email_verified": true, "phone_verified": false});
            tx.execute(
                "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider) VALUES ($1, $2, $3, 'email')
                 ON CONFLICT (provider_id, provider) DO UPDATE SET identity_data = excluded.identity_data, updated_at = now()",
                &[&uid.to_string(), &uid, &data],
            )
            .await
            .map_err(db)?;
        } else {
            // Permanent users confirm a new address by mail: the new one always, the
            // current one too with secure email change (GoTrue's behaviour).
            let redirect = redirect_to(&req);
            send_email_change(
                &*tx,
                &state,
                uid,
                &current_email,
                e,
                redirect.as_deref(),
                pkce.as_ref(),
            )
            .await?;
        }
    }
    if let Some(p) = &new_phone {
        super::phone::change(&*tx, &state, uid, p, channel).await?;
        audit_user(&*tx, &req, uid, "auth.user.phone_change_requested").await?;
    }
    if password_changed {
        audit_user(&*tx, &req, uid, "auth.user.password_changed").await?;
    }
    if new_email.is_some() {
        audit_user(&*tx, &req, uid, "auth.user.email_change_requested").await?;
    }
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(user.json))
}

/// Records a pending email change and mails its confirmations: to the new address, and with
/// secure email change to the current one too (each half with its own link and code).
async fn send_email_change<C: tokio_postgres::GenericClient>(
    c: &C,
    state: &AppState,
    uid: Uuid,
    current_email: &str,
    new_email: &str,
    redirect: Option<&str>,
    pkce: Option<&mail::Pkce>,
) -> Result<(), ApiError> {
    c.execute(
        "UPDATE auth.users SET email_change = $2 WHERE id = $1",
        &[&uid, &new_email],
    )
    .await
    .map_err(db)?;
    c.execute(
        "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type IN ('email_change_current', 'email_change_new')",
        &[&uid],
    )
    .await
    .map_err(db)?;
    mail::send(c, state, uid, new_email, "email_change_new", redirect, pkce).await?;
    if state.config.auth.secure_email_change && !current_email.is_empty() {
        mail::send(
            c,
            state,
            uid,
            current_email,
            "email_change_current",
            redirect,
            None,
        )
        .await?;
    }
    Ok(())
}

/// `POST /resend` type `email_change`: the pending change of the user with that (current)
/// address is mailed again; the same empty answer whether or not there is one.
async fn resend_email_change(
    state: &AppState,
    req: &HttpRequest,
    body: &EmailBody,
) -> Result<HttpResponse, ApiError> {
    let email = normalise_email(body.email.as_deref().unwrap_or_default())?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    if let Some(user) = service::user_by_email(&*tx, &email).await? {
        if let Some(new_email) = user.json["new_email"].as_str().map(str::to_string) {
            send_email_change(
                &*tx,
                state,
                user.id,
                &email,
                &new_email,
                redirect_to(req).as_deref(),
                None,
            )
            .await?;
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn reauthenticate(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
) -> Result<HttpResponse, ApiError> {
    let (uid, _) = current(&state, &ctx).await?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    let email = user.json["email"].as_str().unwrap_or_default().to_string();
    let phone = user.json["phone"].as_str().unwrap_or_default().to_string();
    if email.is_empty() && phone.is_empty() {
        return Err(gotrue(
            400,
            "validation_failed",
            "Reauthentication requires the user to have an email or a phone number",
        ));
    }
    // GoTrue prefers the address; a user with only a number gets the nonce by SMS.
    if email.is_empty() {
        if !user.phone_confirmed {
            return Err(gotrue(
                422,
                "phone_not_confirmed",
                "Please verify your phone first.",
            ));
        }
        super::sms::require_enabled(&state, "Unsupported phone provider")?;
        super::sms::send(
            &*tx,
            &state,
            uid,
            &phone,
            super::sms::REAUTHENTICATION,
            "sms",
        )
        .await?;
        audit_user(&*tx, &req, uid, "auth.user.reauthenticate").await?;
        tx.commit().await.map_err(db)?;
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    if !user.confirmed {
        return Err(gotrue(
            422,
            "email_not_confirmed",
            "Please verify your email first.",
        ));
    }
    mail::send(&*tx, &state, uid, &email, "reauthentication", None, None).await?;
    audit_user(&*tx, &req, uid, "auth.user.reauthenticate").await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize, Default)]
struct InviteBody {
    email: Option<String>,
    #[serde(default)]
    data: Value,
}

/// The user an invite (or an invite link) is for: a new one, or one still unconfirmed.
async fn invited_user<C: tokio_postgres::GenericClient>(
    c: &C,
    email: &str,
    data: Value,
) -> Result<service::User, ApiError> {
    match service::user_by_email(c, email).await? {
        Some(u) if u.confirmed => Err(email_exists()),
        Some(u) => Ok(u),
        None => {
            let new = NewUser {
                email: Some(email.to_string()),
                user_metadata: data,
                role: "authenticated".into(),
                ..Default::default()
            };
            service::create_user(c, &new).await
        }
    }
}

async fn invite(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    body: web::Json<InviteBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let email = normalise_email(b.email.as_deref().unwrap_or_default())?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let user = invited_user(&*tx, &email, b.data).await?;
    mail::send(
        &*tx,
        &state,
        user.id,
        &email,
        "invite",
        redirect_to(&req).as_deref(),
        None,
    )
    .await?;
    audit_admin(&*tx, &req, &admin, "auth.admin.user.invite", user.id).await?;
    let user = service::user_by_id(&*tx, user.id).await?.unwrap_or(user);
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(user.json))
}

#[derive(Debug, Deserialize, Default)]
struct GenerateLinkBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    email: Option<String>,
    password: Option<String>,
    new_email: Option<String>,
    data: Option<Value>,
    redirect_to: Option<String>,
}

async fn generate_link(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    body: web::Json<GenerateLinkBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let email = normalise_email(b.email.as_deref().unwrap_or_default())?;
    // GoTrue: the body's redirect_to, else the query's, when allowed; else the site URL.
    let redirect = b
        .redirect_to
        .clone()
        .filter(|r| redirect_ok(&state, r))
        .or_else(|| redirect_to(&req).filter(|r| redirect_ok(&state, r)))
        .unwrap_or_else(|| state.config.auth.site_url.clone());
    let mut kind = b.kind.clone().unwrap_or_default();
    if !matches!(
        kind.as_str(),
        "signup"
            | "invite"
            | "magiclink"
            | "recovery"
            | "email_change_current"
            | "email_change_new"
    ) {
        return Err(gotrue(
            400,
            "validation_failed",
            format!("Invalid email action link type requested: {kind}"),
        ));
    }
    let mut c = state.pool.get().await?;
    let existing = service::user_by_email(&**c, &email).await?;
    let mut password = b.password.clone();
    if existing.is_none() {
        match kind.as_str() {
            // A magic link for an unknown address signs it up (GoTrue).
            "magiclink" => {
                kind = "signup".into();
                password = None;
            }
            "signup" if password.is_none() => {
                return Err(gotrue(
                    422,
                    "validation_failed",
                    "Signup requires a valid password",
                ))
            }
            "recovery" | "email_change_current" | "email_change_new" => {
                return Err(gotrue(
                    404,
                    "user_not_found",
                    "User with this email not found",
                ))
            }
            _ => {}
        }
    }
    if kind == "email_change_current" && !state.config.auth.secure_email_change {
        return Err(gotrue(
            400,
            "validation_failed",
            "Enable secure email change to generate link for current email",
        ));
    }
    let hash = if kind == "signup" && existing.is_none() {
        password_hash(&state, password).await?
    } else {
        None
    };
    let tx = c.transaction().await.map_err(db)?;
    let (uid, to) = match (kind.as_str(), existing) {
        ("signup", Some(u)) if u.confirmed => return Err(email_exists()),
        ("signup", Some(u)) => {
            if let Some(d) = &b.data {
                tx.execute(
                    "UPDATE auth.users SET raw_user_meta_data = raw_user_meta_data || $2, updated_at = now() WHERE id = $1",
                    &[&u.id, d],
                )
                .await
                .map_err(db)?;
            }
            (u.id, email.clone())
        }
        ("signup", None) => {
            let new = NewUser {
                email: Some(email.clone()),
                password_hash: hash,
                user_metadata: b.data.clone().unwrap_or_else(|| json!({})),
                role: "authenticated".into(),
                ..Default::default()
            };
            (service::create_user(&*tx, &new).await?.id, email.clone())
        }
        ("invite", _) => {
            let u = invited_user(&*tx, &email, b.data.clone().unwrap_or_else(|| json!({}))).await?;
            (u.id, email.clone())
        }
        ("email_change_current" | "email_change_new", Some(u)) => {
            let new_email = normalise_email(b.new_email.as_deref().unwrap_or_default())?;
            if service::user_by_email(&*tx, &new_email)
                .await?
                .is_some_and(|other| other.id != u.id)
            {
                return Err(email_exists());
            }
            tx.execute(
                "UPDATE auth.users SET email_change = $2 WHERE id = $1",
                &[&u.id, &new_email],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type IN ('email_change_current', 'email_change_new')",
                &[&u.id],
            )
            .await
            .map_err(db)?;
            let to = if kind == "email_change_new" {
                new_email
            } else {
                email.clone()
            };
            (u.id, to)
        }
        (_, Some(u)) => (u.id, email.clone()),
        (_, None) => {
            return Err(gotrue(
                404,
                "user_not_found",
                "User with this email not found",
            ))
        }
    };
    let issued = mail::issue(&*tx, uid, &to, &kind).await?;
    let link = mail::verify_link(
        &state,
        &issued.secret,
        mail::link_type(&kind),
        Some(&redirect),
    );
    audit_admin(&*tx, &req, &admin, "auth.admin.generate_link", uid).await?;
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    tx.commit().await.map_err(db)?;
    // GoTrue's GenerateLinkResponse: the User's fields plus the link's.
    let mut out = user.json;
    if let Some(m) = out.as_object_mut() {
        m.insert("action_link".into(), Value::from(link));
        m.insert("email_otp".into(), Value::from(issued.code));
        m.insert("hashed_token".into(), Value::from(issued.secret));
        m.insert("verification_type".into(), Value::from(kind));
        m.insert("redirect_to".into(), Value::from(redirect));
    }
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Debug, Deserialize)]
struct ScopeQuery {
    scope: Option<String>,
}

async fn logout(
    state: web::Data<AppState>,
    ctx: AuthContext,
    q: web::Query<ScopeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (uid, session) = current(&state, &ctx).await?;
    let c = state.pool.get().await?;
    let sql = match q.scope.as_deref().unwrap_or("global") {
        "global" => "DELETE FROM auth.sessions WHERE user_id = $1 AND $2::uuid IS NOT NULL",
        "local" => "DELETE FROM auth.sessions WHERE user_id = $1 AND id = $2",
        "others" => "DELETE FROM auth.sessions WHERE user_id = $1 AND id <> $2",
        other => {
            return Err(gotrue(
                400,
                "validation_failed",
                format!("scope must be global, local or others, not {other:?}"),
            ))
        }
    };
    c.execute(sql, &[&uid, &session]).await.map_err(db)?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, Default)]
struct VerifyBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    token_hash: Option<String>,
    token: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

/// What a used token yields: a session, or (for a PKCE flow opened by the request that sent
/// the mail, on link clicks) a one-time code to exchange with the verifier.
enum Confirmed {
    Session(Value),
    Code(String),
    /// One half of a secure email change: the other address must confirm too.
    Pending,
}

/// GoTrue's answer to the first half of a secure email change.
const SINGLE_CONFIRMATION: &str =
    "Confirmation link accepted. Please proceed to confirm link sent to the other email";

/// Uses a mailed token: `type` signup/invite/email/magiclink/recovery/email_change.
async fn confirm(
    state: &AppState,
    kind: &str,
    token_hash: Option<&str>,
    email_code: Option<(&str, &str)>,
    allow_pkce: bool,
) -> Result<Confirmed, ApiError> {
    // Signup and invite share GoTrue's confirmation token; `email` is any sign-in code.
    let kinds: &[&str] = match kind {
        "signup" | "invite" => &["signup", "invite"],
        "magiclink" => &["magiclink", "signup"],
        "email" => &["magiclink", "signup", "invite"],
        "recovery" => &["recovery"],
        "email_change" => &["email_change_current", "email_change_new"],
        other => {
            return Err(gotrue(
                400,
                "validation_failed",
                format!("verification type {other:?} is not supported yet"),
            ))
        }
    };
    let expired = || gotrue(403, "otp_expired", "Email link is invalid or has expired");
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let (id, used) = mail::consume(
        &*tx,
        kinds,
        token_hash,
        email_code,
        state.config.auth.otp_expiry_secs,
    )
    .await?
    .ok_or_else(expired)?;
    if used.starts_with("email_change_") {
        // The other address's token still waiting: this was the first half.
        let waiting: i64 = tx
            .query_one(
                "SELECT count(*) FROM auth.one_time_tokens WHERE user_id = $1 AND token_type IN ('email_change_current', 'email_change_new')",
                &[&id],
            )
            .await
            .map_err(db)?
            .get(0);
        if waiting > 0 {
            tx.execute(
                "UPDATE auth.users SET email_change_confirm_status = 1, updated_at = now() WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(Confirmed::Pending);
        }
        let changed = tx
            .query_opt(
                "UPDATE auth.users SET email = email_change, email_change = '', email_change_sent_at = NULL,
                        email_change_confirm_status = 0, email_confirmed_at = coalesce(email_confirmed_at, now()),
                        updated_at = now()
                  WHERE id = $1 AND coalesce(email_change, '') <> '' RETURNING email",
                &[&id],
            )
            .await
            .map_err(|e| {
                if e.code().is_some_and(|c| c.code() == "23505") {
                    email_exists()
                } else {
                    db(e)
                }
            })?
            .ok_or_else(expired)?;
        let email: String = changed.get(0);
        tx.execute(
            "UPDATE auth.identities SET identity_data = identity_data || jsonb_build_object('email', $2::text), updated_at = now()
              WHERE user_id = $1 AND provider = 'email'",
            &[&id, &email],
        )
        .await
        .map_err(db)?;
    }
    // Any mailed token proves the address.
    tx.execute(
        "UPDATE auth.users SET email_confirmed_at = coalesce(email_confirmed_at, now()), last_sign_in_at = now(), updated_at = now()
          WHERE id = $1",
        &[&id],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "UPDATE auth.identities SET identity_data = identity_data || '{\"email_verified\": true}', last_sign_in_at = now() WHERE user_id = $1",
        &[&id],
    )
    .await
    .map_err(db)?;
    if allow_pkce {
        let code = service::new_secret();
        let flow = tx
            .query_opt(
                "UPDATE auth.flow_state SET auth_code_hash = $3, auth_code_issued_at = now(), updated_at = now()
                  WHERE id = (SELECT id FROM auth.flow_state
                               WHERE user_id = $1 AND authentication_method = $2 AND auth_code_hash IS NULL
                                 AND created_at > now() - make_interval(secs => $4)
                               ORDER BY created_at DESC LIMIT 1)
                 RETURNING id",
                &[&id, &mail::link_type(&used), &service::hash_token(&code), &(state.config.auth.otp_expiry_secs as f64)],
            )
            .await
            .map_err(db)?;
        if flow.is_some() {
            tx.commit().await.map_err(db)?;
            return Ok(Confirmed::Code(code));
        }
    }
    let user = service::user_by_id(&*tx, id).await?.ok_or_else(expired)?;
    let amr = if used == "recovery" {
        "recovery"
    } else {
        "otp"
    };
    let session =
        service::issue_session(&*tx, &state.config, &state.jwt, &user, amr, None, None).await?;
    tx.commit().await.map_err(db)?;
    Ok(Confirmed::Session(session))
}

async fn verify_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<VerifyBody>,
) -> Result<HttpResponse, ApiError> {
    limit_ip(
        &state,
        &req,
        "auth.verify",
        state.config.auth.rate_limit.verify_per_5min,
    )?;
    let b = body.into_inner();
    let kind = b.kind.clone().unwrap_or_else(|| "signup".into());
    let email = b.email.as_deref().map(|e| e.trim().to_lowercase());
    // A texted code: the number and the code (GoTrue's phone OTP verification).
    if let (Some(phone), None, None, Some(t)) = (
        b.phone.as_deref().filter(|p| !p.is_empty()),
        &email,
        &b.token_hash,
        &b.token,
    ) {
        let session = super::phone::verify(&state, &req, &kind, phone, t).await?;
        return Ok(HttpResponse::Ok().json(session));
    }
    if matches!(kind.as_str(), "sms" | "phone_change") {
        return Err(gotrue(
            400,
            "validation_failed",
            "Verify of type sms or phone_change requires a phone number and a token",
        ));
    }
    // verifyOtp always answers with a session (PKCE codes are for link redirects).
    let confirmed = match (&b.token_hash, &email, &b.token) {
        (Some(h), _, _) => confirm(&state, &kind, Some(h), None, false).await?,
        (None, Some(e), Some(t)) => confirm(&state, &kind, None, Some((e, t)), false).await?,
        _ => {
            return Err(gotrue(
                400,
                "validation_failed",
                "token_hash, or email and token, are required",
            ))
        }
    };
    match confirmed {
        Confirmed::Session(session) => Ok(HttpResponse::Ok().json(session)),
        Confirmed::Pending => {
            Ok(HttpResponse::Ok().json(json!({"msg": SINGLE_CONFIRMATION, "code": "200"})))
        }
        Confirmed::Code(_) => Err(ApiError::internal("verify without PKCE produced a code")),
    }
}

#[derive(Debug, Deserialize)]
struct VerifyQuery {
    token: String,
    #[serde(rename = "type")]
    kind: String,
    redirect_to: Option<String>,
}

async fn verify_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<VerifyQuery>,
) -> Result<HttpResponse, ApiError> {
    limit_ip(
        &state,
        &req,
        "auth.verify",
        state.config.auth.rate_limit.verify_per_5min,
    )?;
    let redirect = q
        .redirect_to
        .clone()
        .unwrap_or_else(|| state.config.auth.site_url.clone());
    // Only the site URL (and paths under it) or an allow-listed URL may receive tokens.
    let redirect = if redirect_ok(&state, &redirect) {
        redirect
    } else {
        state.config.auth.site_url.clone()
    };
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let fragment = match confirm(&state, &q.kind, Some(&q.token), None, true).await {
        Ok(Confirmed::Code(code)) => {
            let sep = if redirect.contains('?') { '&' } else { '?' };
            return Ok(HttpResponse::SeeOther()
                .insert_header(("Location", format!("{redirect}{sep}code={code}")))
                .finish());
        }
        Ok(Confirmed::Pending) => format!("message={}", enc(SINGLE_CONFIRMATION)),
        Ok(Confirmed::Session(s)) => format!(
            "access_token={}&expires_at={}&expires_in={}&refresh_token={}&token_type=bearer&type={}",
            s["access_token"].as_str().unwrap_or_default(),
            s["expires_at"],
            s["expires_in"],
            s["refresh_token"].as_str().unwrap_or_default(),
            enc(&q.kind)
        ),
        Err(e) => format!("error={}&error_code={}&error_description={}", e.status.as_u16(), e.gotrue_code, enc(&e.message)),
    };
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", format!("{redirect}#{fragment}")))
        .finish())
}

/// Whether a link may send tokens to `url`: the site URL, under it, or in
/// `auth.redirect_allow_list` (GoTrue's rule for every redirect it makes).
fn redirect_ok(state: &AppState, url: &str) -> bool {
    under_site(url, &state.config.auth.site_url)
        || super::oauth::redirect::allowed(&state.config.auth, url)
}

/// `url` is the site URL or lies under it: the next character after the prefix must end the
/// origin (`/`, `?`, `#`), so `https://app.test.evil.example` is not under `https://app.test`.
fn under_site(url: &str, site: &str) -> bool {
    let site = site.trim_end_matches('/');
    match url.strip_prefix(site) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', '?', '#']),
        None => false,
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn admin_list(
    state: web::Data<AppState>,
    _: ServiceRole,
    req: HttpRequest,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = q.page.unwrap_or(1).max(1);
    let per_page = q.per_page.unwrap_or(50).clamp(1, 1000);
    let c = state.pool.get().await?;
    let total: i64 = c
        .query_one(
            "SELECT count(*) FROM auth.users WHERE deleted_at IS NULL",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let rows = c
        .query(
            &format!(
                "SELECT {} FROM auth.users u WHERE u.deleted_at IS NULL ORDER BY u.created_at, u.id LIMIT $1 OFFSET $2",
                service::USER_COLUMNS
            ),
            &[&per_page, &(page - 1).saturating_mul(per_page)],
        )
        .await
        .map_err(db)?;
    let users: Vec<Value> = rows
        .iter()
        .map(|r| service::user_from_row(r).json)
        .collect();
    let last = ((total + per_page - 1) / per_page).max(1);
    let path = req.path();
    let mut links = Vec::new();
    if page < last {
        links.push(format!(
            "<{path}?page={}&per_page={per_page}>; rel=\"next\"",
            page + 1
        ));
    }
    links.push(format!(
        "<{path}?page={last}&per_page={per_page}>; rel=\"last\""
    ));
    Ok(HttpResponse::Ok()
        .insert_header(("X-Total-Count", total.to_string()))
        .insert_header(("Link", links.join(", ")))
        .json(json!({"users": users, "aud": "authenticated"})))
}

#[derive(Debug, Deserialize, Default)]
struct AdminUserBody {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    email_confirm: Option<bool>,
    phone_confirm: Option<bool>,
    user_metadata: Option<Value>,
    app_metadata: Option<Value>,
    role: Option<String>,
    ban_duration: Option<String>,
}

async fn admin_create(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    body: web::Json<AdminUserBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let email = b
        .email
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(normalise_email)
        .transpose()?;
    let phone = super::sms::normalise_opt(b.phone.as_deref())?;
    if let Some(p) = &phone {
        let c = state.pool.get().await?;
        if service::user_by_phone(&**c, p).await?.is_some() {
            return Err(service::phone_exists());
        }
    }
    let hash = password_hash(&state, b.password).await?;
    let role = b.role.unwrap_or_else(|| "authenticated".into());
    if !state.config.allowed_roles().contains(&role) {
        return Err(gotrue(
            400,
            "validation_failed",
            format!("role {role:?} is not allowed"),
        ));
    }
    let new = NewUser {
        email,
        phone,
        password_hash: hash,
        confirmed: b.email_confirm.unwrap_or(false),
        phone_confirmed: b.phone_confirm.unwrap_or(false),
        user_metadata: b.user_metadata.unwrap_or_else(|| json!({})),
        app_metadata: b.app_metadata.unwrap_or_else(|| json!({})),
        role,
        ..Default::default()
    };
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let user = service::create_user(&*tx, &new).await?;
    audit_admin(&*tx, &req, &admin, "auth.admin.user.create", user.id).await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(user.json))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| gotrue(404, "user_not_found", "User not found"))
}

async fn admin_get(
    state: web::Data<AppState>,
    _: ServiceRole,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = state.pool.get().await?;
    let user = service::user_by_id(&**c, parse_id(&id)?)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    Ok(HttpResponse::Ok().json(user.json))
}

fn ban_until(d: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    if d == "none" {
        return Ok(None);
    }
    let bad = || {
        gotrue(
            400,
            "validation_failed",
            "ban_duration must be `none` or a duration like 24h, 30m",
        )
    };
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(bad()),
    };
    Ok(Some(chrono::Utc::now() + chrono::Duration::seconds(secs)))
}

async fn admin_update(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<AdminUserBody>,
) -> Result<HttpResponse, ApiError> {
    let uid = parse_id(&id)?;
    let b = body.into_inner();
    let email = b.email.as_deref().map(normalise_email).transpose()?;
    let phone = super::sms::normalise_opt(b.phone.as_deref())?;
    let hash = password_hash(&state, b.password).await?;
    let (set_ban, ban) = match b.ban_duration.as_deref() {
        Some(d) => (true, ban_until(d)?),
        None => (false, None),
    };
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let n = tx
        .execute(
            "UPDATE auth.users SET
                email = coalesce($2, email),
                encrypted_password = coalesce($3, encrypted_password),
                email_confirmed_at = CASE WHEN $4::bool IS TRUE THEN coalesce(email_confirmed_at, now()) ELSE email_confirmed_at END,
                raw_user_meta_data = CASE WHEN $5::jsonb IS NULL THEN raw_user_meta_data ELSE raw_user_meta_data || $5 END,
                raw_app_meta_data = CASE WHEN $6::jsonb IS NULL THEN raw_app_meta_data ELSE raw_app_meta_data || $6 END,
                role = coalesce($7, role),
                banned_until = CASE WHEN $8 THEN $9 ELSE banned_until END,
                phone = coalesce($10, phone),
                phone_confirmed_at = CASE WHEN $11::bool IS TRUE THEN coalesce(phone_confirmed_at, now()) ELSE phone_confirmed_at END,
                updated_at = now()
              WHERE id = $1 AND deleted_at IS NULL",
            &[&uid, &email, &hash, &b.email_confirm, &b.user_metadata, &b.app_metadata, &b.role, &set_ban, &ban,
              &phone, &b.phone_confirm],
        )
        .await
        .map_err(service::phone_taken_or_db)?;
    if n == 0 {
        return Err(gotrue(404, "user_not_found", "User not found"));
    }
    if phone.is_some() || b.phone_confirm == Some(true) {
        if let Some(u) = service::user_by_id(&*tx, uid).await? {
            if let Some(p) = u.json["phone"].as_str().filter(|p| !p.is_empty()) {
                service::upsert_phone_identity(&*tx, uid, p, u.phone_confirmed).await?;
            }
        }
    }
    if ban.is_some() {
        // A ban ends every session at once.
        tx.execute("DELETE FROM auth.sessions WHERE user_id = $1", &[&uid])
            .await
            .map_err(db)?;
    }
    audit_admin(&*tx, &req, &admin, "auth.admin.user.update", uid).await?;
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(user.json))
}

async fn admin_delete(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = parse_id(&id)?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let n = tx
        .execute("DELETE FROM auth.users WHERE id = $1", &[&uid])
        .await
        .map_err(db)?;
    if n == 0 {
        return Err(gotrue(404, "user_not_found", "User not found"));
    }
    audit_admin(&*tx, &req, &admin, "auth.admin.user.delete", uid).await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn impersonate(
    state: web::Data<AppState>,
    admin: ServiceRole,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uid = parse_id(&id)?;
    let mut c = state.pool.get().await?;
    let tx = c.transaction().await.map_err(db)?;
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    let session = service::issue_session(
        &*tx,
        &state.config,
        &state.jwt,
        &user,
        "impersonation",
        None,
        None,
    )
    .await?;
    audit_admin(&*tx, &req, &admin, "auth.admin.user.impersonate", uid).await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(session))
}

#[cfg(test)]
mod tests {
    #[test]
    fn redirects_stay_on_the_site() {
        use super::under_site;
        assert!(under_site("http://app.test", "http://app.test"));
        assert!(under_site(
            "http://app.test/welcome?x=1",
            "http://app.test/"
        ));
        assert!(!under_site(
            "http://app.test.evil.example/",
            "http://app.test"
        ));
        assert!(!under_site(
            "http://app.test@evil.example/",
            "http://app.test"
        ));
        assert!(!under_site(
            "https://evil.example/?http://app.test",
            "http://app.test"
        ));
    }
}
