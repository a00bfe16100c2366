//! Auth mail: one-time tokens (a link secret and a 6-digit code per send, stored hashed),
//! the messages (GoTrue's template variables: `{{ .ConfirmationURL }}`, `{{ .Token }}`,
//! `{{ .TokenHash }}`, `{{ .Email }}`, `{{ .SiteURL }}`), and delivery through the job queue:
//! the mail job is enqueued in the request's transaction and sent by a worker over SMTP
//! (lettre), retried on failure, so a slow SMTP server never blocks a request.

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

/// Kinds of mail (also the `type` of the verify link).
pub const KINDS: [&str; 3] = ["signup", "magiclink", "recovery"];

fn code_hash(email: &str, code: &str) -> String {
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

/// Issues a fresh secret and code for `user` (older ones of the same kind die) and enqueues
/// the mail in the same transaction. With `pkce`, a flow is recorded so the link's redirect
/// carries `?code=` instead of the session.
pub async fn send<C: GenericClient>(
    c: &C,
    state: &AppState,
    user: Uuid,
    email: &str,
    kind: &str,
    redirect_to: Option<&str>,
    pkce: Option<&Pkce>,
) -> Result<(), ApiError> {
    // One mail per address per minute (GoTrue's `over_email_send_rate_limit`).
    if state
        .rate_limits
        .check("auth.email", 1, &format!("{kind}:{email}"))
        .is_err()
    {
        return Err(gotrue(
            429,
            "over_email_send_rate_limit",
            "For security purposes, you can only request this once every 60 seconds",
        ));
    }
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
    c.execute(
        "INSERT INTO auth.one_time_tokens (user_id, token_type, token_hash, relates_to) VALUES ($1, $2, $3, $4), ($1, $2, $5, $4)",
        &[&user, &kind, &hash_token(&secret), &email, &code_hash(email, &code)],
    )
    .await
    .map_err(db)?;
    let column = if kind == "recovery" {
        "recovery_sent_at"
    } else {
        "confirmation_sent_at"
    };
    c.execute(
        &format!("UPDATE auth.users SET {column} = now() WHERE id = $1"),
        &[&user],
    )
    .await
    .map_err(db)?;
    if let Some(p) = pkce {
        c.execute(
            "INSERT INTO auth.flow_state (user_id, code_challenge, code_challenge_method, authentication_method)
             VALUES ($1, $2, $3, $4)",
            &[&user, &p.challenge, &p.method, &kind],
        )
        .await
        .map_err(db)?;
    }
    let link = verify_link(state, &secret, kind, redirect_to);
    let spec = JobSpec {
        queue: QUEUE.into(),
        payload: json!({"kind": kind, "to": email, "link": link, "token": code, "token_hash": secret,
                        "site_url": state.config.auth.site_url}),
        ..Default::default()
    };
    jobs::enqueue(c, &spec).await.map_err(db)?;
    Ok(())
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

fn verify_link(state: &AppState, token: &str, kind: &str, redirect: Option<&str>) -> String {
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

/// Subject and text body of a kind of mail, with GoTrue's template variables filled in.
pub fn render(kind: &str, p: &Value) -> (String, String) {
    let (subject, template) = match kind {
        "recovery" => (
            "Reset your password",
            "Follow this link to reset the password for {{ .Email }}:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
        "magiclink" => (
            "Your sign-in link",
            "Follow this link to sign in:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
        _ => (
            "Confirm your signup",
            "Follow this link to confirm {{ .Email }}:\n\n{{ .ConfirmationURL }}\n\nOr enter this code: {{ .Token }}\n",
        ),
    };
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let body = template
        .replace("{{ .ConfirmationURL }}", &s("link"))
        .replace("{{ .Token }}", &s("token"))
        .replace("{{ .TokenHash }}", &s("token_hash"))
        .replace("{{ .Email }}", &s("to"))
        .replace("{{ .SiteURL }}", &s("site_url"));
    (subject.to_string(), body)
}

/// Registers the mail sender. Without `auth.smtp.host` mail goes to the log, as GoTrue's
/// development mailer does.
pub fn register(reg: &mut crate::jobs::Registry, smtp: SmtpConfig) {
    reg.register(QUEUE, crate::jobs::RetryPolicy::default(), move |ctx| {
        let smtp = smtp.clone();
        async move {
            let kind = ctx.payload.get("kind").and_then(Value::as_str).unwrap_or("signup").to_string();
            let to = ctx.payload.get("to").and_then(Value::as_str).unwrap_or_default().to_string();
            let (subject, body) = render(&kind, &ctx.payload);
            if smtp.host.is_empty() {
                tracing::info!(%to, %kind, %subject, body = %body, "auth mail (log mailer: auth.smtp.host is not set)");
                return Ok(None);
            }
            deliver(&smtp, &to, &subject, body).await.map(|_| None)
        }
    });
}

async fn deliver(smtp: &SmtpConfig, to: &str, subject: &str, body: String) -> Result<(), JobError> {
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
        .subject(subject)
        .body(body)
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
