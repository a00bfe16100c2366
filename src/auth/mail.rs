//! Auth mail: one-time tokens (a link secret and a 6-digit code per send, stored hashed),
//! the messages (configurable templates with GoTrue's variables, `templates`), the mail
//! rate limits (`auth.rate_limit.email_*`), and delivery through the job queue:
//! the mail job is enqueued in the request's transaction and sent by a worker over SMTP
//! (lettre), retried on failure, so a slow SMTP server never blocks a request. With the
//! `auth.hooks.send_email` hook, the hook gets GoTrue's event instead, synchronously.

use super::service::{db, gotrue, hash_token, new_secret};
use crate::app::AppState;
use crate::config::SmtpConfig;
use crate::error::ApiError;
use crate::jobs::{self, JobError, JobSpec};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// Queue of outgoing auth mail.
pub const QUEUE: &str = "auth.mail";

/// Kinds of one-time token (and of mail); the verify link's `type` is `link_type(kind)`.
pub const KINDS: [&str; 7] = [
    "signup",
    "invite",
    "magiclink",
    "recovery",
    "email_change_current",
    "email_change_new",
    "reauthentication",
];

mod gotmpl;
pub mod templates;

/// The stored hash of a code sent to an address (an email address or a phone number).
pub(super) fn code_hash(email: &str, code: &str) -> String {
    hash_token(&format!("{}:{code}", email.to_lowercase()))
}

/// A PKCE challenge sent with a request that mails a link: the link then ends in `?code=`.
#[derive(Debug, Clone)]
pub struct Pkce {
    /// `code_challenge`.
    pub challenge: String,
    /// `s256` or `plain`.
    pub method: String,
}

impl Pkce {
    /// From a request body's fields; `None` without a challenge.
    pub fn from_body(
        challenge: Option<&str>,
        method: Option<&str>,
    ) -> Result<Option<Pkce>, ApiError> {
        let Some(challenge) = challenge.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let method = method.unwrap_or("s256").to_ascii_lowercase();
        if !matches!(method.as_str(), "s256" | "plain") || !(43..=128).contains(&challenge.len()) {
            return Err(gotrue(
                400,
                "validation_failed",
                "invalid code_challenge or code_challenge_method",
            ));
        }
        Ok(Some(Pkce {
            challenge: challenge.to_string(),
            method,
        }))
    }

    /// Whether `verifier` answers the challenge.
    pub fn matches(challenge: &str, method: &str, verifier: &str) -> bool {
        use base64::Engine;
        use sha2::Digest;
        match method {
            "plain" => verifier == challenge,
            _ => {
                let d = sha2::Sha256::digest(verifier.as_bytes());
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d) == challenge
            }
        }
    }
}

/// A link secret and a 6-digit code, as issued (only their hashes are stored).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The link secret (`token_hash` of verifyOtp, `token` of the verify link).
    pub secret: String,
    /// The 6-digit code, bound to the address it goes to.
    pub code: String,
}

/// Issues a fresh secret and code of `kind` for `user` at address `to` (older ones of the
/// same kind die) and stamps the user's `*_sent_at`. Reauthentication gets a code only.
pub async fn issue<C: GenericClient>(
    c: &C,
    user: Uuid,
    to: &str,
    kind: &str,
) -> Result<Issued, ApiError> {
    let secret = new_secret();
    let code = {
        use rand::Rng;
        format!("{:06}", rand::rng().random_range(0..1_000_000))
    };
    c.execute(
        "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = $2",
        &[&user, &kind],
    )
    .await
    .map_err(db)?;
    let link_hash = (kind != "reauthentication").then(|| hash_token(&secret));
    c.execute(
        "INSERT INTO auth.one_time_tokens (user_id, token_type, token_hash, relates_to)
         SELECT $1, $2, h, $4 FROM unnest(ARRAY[$3, $5]::text[]) h WHERE h IS NOT NULL",
        &[&user, &kind, &link_hash, &to, &code_hash(to, &code)],
    )
    .await
    .map_err(db)?;
    let stamp = match kind {
        "recovery" => "recovery_sent_at = now()",
        "invite" => "confirmation_sent_at = now(), invited_at = now()",
        "email_change_current" | "email_change_new" => {
            "email_change_sent_at = now(), email_change_confirm_status = 0"
        }
        "reauthentication" => "reauthentication_sent_at = now()",
        _ => "confirmation_sent_at = now()",
    };
    c.execute(
        &format!("UPDATE auth.users SET {stamp} WHERE id = $1"),
        &[&user],
    )
    .await
    .map_err(db)?;
    Ok(Issued { secret, code })
}

/// The 429 of a mail refused by a rate limit.
fn over_email_limit(message: String, retry_after: u64) -> ApiError {
    gotrue(429, "over_email_send_rate_limit", message)
        .with_header("Retry-After", retry_after.to_string())
}

/// Checks the mail limits: one mail of a kind per address per `email_min_interval_secs`
/// (GoTrue's SMTP_MAX_FREQUENCY; not for invites, as in GoTrue) and
/// `email_sent_per_hour` for the whole instance (GoTrue's RATE_LIMIT_EMAIL_SENT).
fn check_mail_limits(state: &AppState, kind: &str, to: &str) -> Result<(), ApiError> {
    let rl = &state.config.auth.rate_limit;
    if kind != "invite" {
        let every = rl.email_min_interval_secs;
        if let Err(l) = state
            .rate_limits
            .check_per("auth.email", 1, every, &format!("{kind}:{to}"))
        {
            return Err(over_email_limit(
                format!(
                    "For security purposes, you can only request this once every {every} seconds"
                ),
                l.retry_after_secs,
            ));
        }
    }
    per_hour(state, "auth.email_sent", rl.email_sent_per_hour)
        .map_err(|retry| over_email_limit("Email rate limit exceeded".into(), retry))
}

/// One more send of an instance-wide hourly budget (`bucket`, `limit` per hour); the
/// seconds to wait when it is spent.
pub(super) fn per_hour(state: &AppState, bucket: &'static str, limit: u64) -> Result<(), u64> {
    state
        .rate_limits
        .check_per(bucket, limit, 3600, "all")
        .map(|_| ())
        .map_err(|l| {
            state.metrics.observe_rate_limited(bucket);
            l.retry_after_secs
        })
}

/// Issues a fresh secret and code for `user` (older ones of the same kind die) and enqueues
/// the mail to `email` in the same transaction. With `pkce`, a flow is recorded so the
/// link's redirect carries `?code=` instead of the session.
pub async fn send<C: GenericClient>(
    c: &C,
    state: &AppState,
    user: Uuid,
    email: &str,
    kind: &str,
    redirect_to: Option<&str>,
    pkce: Option<&Pkce>,
) -> Result<(), ApiError> {
    check_mail_limits(state, kind, email)?;
    let issued = issue(c, user, email, kind).await?;
    if let Some(p) = pkce {
        c.execute(
            "INSERT INTO auth.flow_state (user_id, code_challenge, code_challenge_method, authentication_method)
             VALUES ($1, $2, $3, $4)",
            &[&user, &p.challenge, &p.method, &link_type(kind)],
        )
        .await
        .map_err(db)?;
    }
    // What the templates may show of the user: current address, pending new one, metadata.
    let row = c
        .query_one(
            "SELECT coalesce(email, ''), nullif(email_change, ''), raw_user_meta_data FROM auth.users WHERE id = $1",
            &[&user],
        )
        .await
        .map_err(db)?;
    let (current, new_email, data): (String, Option<String>, Value) =
        (row.get(0), row.get(1), row.get(2));
    let redirect = redirect_to.unwrap_or(&state.config.auth.site_url);
    if state.config.auth.hooks.send_email.enabled {
        // GoTrue's event; the hook sends (synchronously: its error is the request's).
        let token_hash = if kind == "reauthentication" {
            ""
        } else {
            issued.secret.as_str()
        };
        let data = json!({"token": issued.code, "token_hash": token_hash, "redirect_to": redirect,
            "email_action_type": link_type(kind), "site_url": state.config.auth.site_url,
            "token_new": "", "token_hash_new": ""});
        if super::hooks::send(c, state, "send_email", user, "email_data", data).await? {
            return Ok(());
        }
    }
    let link = if kind == "reauthentication" {
        String::new()
    } else {
        verify_link(state, &issued.secret, link_type(kind), Some(redirect))
    };
    let spec = JobSpec {
        queue: QUEUE.into(),
        payload: json!({"kind": kind, "to": email, "link": link, "token": issued.code,
                        "token_hash": if kind == "reauthentication" { String::new() } else { issued.secret },
                        "site_url": state.config.auth.site_url, "email": current,
                        "new_email": new_email, "redirect_to": redirect, "data": data}),
        ..Default::default()
    };
    jobs::enqueue(c, &spec).await.map_err(db)?;
    Ok(())
}

/// The `type` a verify link of a token kind carries (both halves of an email change are
/// `email_change`, as in GoTrue).
pub fn link_type(kind: &str) -> &str {
    match kind {
        "email_change_current" | "email_change_new" => "email_change",
        k => k,
    }
}

/// Uses up a reauthentication nonce of `user` (mailed to `email`); false when wrong or
/// expired.
pub async fn consume_nonce<C: GenericClient>(
    c: &C,
    user: Uuid,
    email: &str,
    nonce: &str,
    expiry_secs: u64,
) -> Result<bool, ApiError> {
    let n = c
        .execute(
            "DELETE FROM auth.one_time_tokens
              WHERE user_id = $1 AND token_type = 'reauthentication' AND token_hash = $2
                AND created_at > now() - make_interval(secs => $3)",
            &[
                &user,
                &code_hash(email, nonce.trim()),
                &(expiry_secs as f64),
            ],
        )
        .await
        .map_err(db)?;
    if n > 0 {
        c.execute(
            "UPDATE auth.users SET reauthentication_sent_at = NULL WHERE id = $1",
            &[&user],
        )
        .await
        .map_err(db)?;
    }
    Ok(n > 0)
}

/// The user a link secret (`token_hash`) or an address + code belongs to; the tokens of that
/// kind are used up. `None` when invalid or expired.
pub async fn consume<C: GenericClient>(
    c: &C,
    kinds: &[&str],
    token_hash: Option<&str>,
    email_code: Option<(&str, &str)>,
    expiry_secs: u64,
) -> Result<Option<(Uuid, String)>, ApiError> {
    let hash = match (token_hash, email_code) {
        (Some(s), _) => hash_token(s),
        (None, Some((e, code))) => code_hash(e, code),
        (None, None) => return Ok(None),
    };
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    // The hit, and every token of that user and kind used up with it (link and code alike).
    let row = c
        .query_opt(
            "WITH hit AS (
               SELECT user_id, token_type FROM auth.one_time_tokens
                WHERE token_hash = $1 AND token_type = ANY($2) AND created_at > now() - make_interval(secs => $3)
                LIMIT 1),
             used AS (
               DELETE FROM auth.one_time_tokens t USING hit
                WHERE t.user_id = hit.user_id AND t.token_type = hit.token_type)
             SELECT user_id, token_type FROM hit",
            &[&hash, &kinds, &(expiry_secs as f64)],
        )
        .await
        .map_err(db)?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The `/verify` link of a secret.
pub fn verify_link(state: &AppState, token: &str, kind: &str, redirect: Option<&str>) -> String {
    let base = if state.config.server.public_url.is_empty() {
        format!(
            "http://{}:{}",
            state.config.server.host, state.config.server.port
        )
    } else {
        state
            .config
            .server
            .public_url
            .trim_end_matches('/')
            .to_string()
    };
    let redirect = redirect.unwrap_or(&state.config.auth.site_url);
    format!(
        "{base}/auth/v1/verify?token={token}&type={kind}&redirect_to={}",
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    )
}

/// Registers the mail sender. Without `auth.smtp.host` mail goes to the log, as GoTrue's
/// development mailer does. Templates are read and parsed once, here (config validation has
/// already refused ones that do not parse; a file that broke since keeps the built-in ones).
pub fn register(reg: &mut crate::jobs::Registry, auth: &crate::config::AuthConfig) {
    let smtp = auth.smtp.clone();
    let templates = std::sync::Arc::new(
        templates::Templates::load(&auth.templates).unwrap_or_else(|e| {
            tracing::error!(error = %e, "auth mail templates: using the built-in ones");
            templates::Templates::builtin()
        }),
    );
    reg.register(QUEUE, crate::jobs::RetryPolicy::default(), move |ctx| {
        let smtp = smtp.clone();
        let templates = templates.clone();
        async move {
            let kind = ctx.payload.get("kind").and_then(Value::as_str).unwrap_or("signup").to_string();
            let to = ctx.payload.get("to").and_then(Value::as_str).unwrap_or_default().to_string();
            let mail = templates.render(&kind, &ctx.payload);
            if smtp.host.is_empty() {
                tracing::info!(%to, %kind, subject = %mail.subject, body = %mail.text, "auth mail (log mailer: auth.smtp.host is not set)");
                return Ok(None);
            }
            deliver(&smtp, &to, mail).await.map(|_| None)
        }
    });
}

async fn deliver(smtp: &SmtpConfig, to: &str, mail: templates::Rendered) -> Result<(), JobError> {
    use lettre::message::MultiPart;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let from = smtp
        .sender
        .parse()
        .map_err(|e| JobError::Permanent(format!("auth.smtp.sender: {e}")))?;
    let rcpt = to
        .parse()
        .map_err(|e| JobError::Permanent(format!("recipient {to:?}: {e}")))?;
    let msg = Message::builder()
        .from(from)
        .to(rcpt)
        .subject(mail.subject)
        .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    let builder = match smtp.tls.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
        _ => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &smtp.host,
        )),
    }
    .map_err(|e| JobError::Permanent(format!("auth.smtp: {e}")))?;
    let mut builder = builder
        .port(smtp.port as u16)
        .timeout(Some(std::time::Duration::from_secs(30)));
    if !smtp.username.is_empty() {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            smtp.username.clone(),
            smtp.password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        ));
    }
    builder
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| JobError::Retry(format!("SMTP: {e}")))
}
