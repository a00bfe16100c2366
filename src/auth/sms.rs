//! Auth SMS: phone numbers as GoTrue keeps them, texted one-time codes (issued and used up
//! like mailed ones: only a hash of the code with the number it went to is stored), the SMS
//! limits (`auth.sms.max_frequency_secs`, `auth.rate_limit.sms_sent_per_hour`), and delivery
//! through the job queue: the SMS job is enqueued in the request's transaction and sent by a
//! worker to the configured provider (`twilio`, `messagebird`, `textlocal`, `vonage`) over
//! the SSRF-guarded outbound client, retried on failure, so a slow provider never holds a
//! request. The `log` provider writes the message to the log instead (development).
//! `twilio_verify` leaves the code to Twilio Verify: the job asks Twilio to send one and a
//! typed code is checked with Twilio (`checked_code`), as GoTrue does. With the
//! `auth.hooks.send_sms` hook, the hook sends instead, synchronously (`enqueue`).
//!
//! Must not: send anything itself from a request, or keep a code in clear outside the job.

use super::service::{db, gotrue};
use crate::app::AppState;
use crate::config::SmsConfig;
use crate::error::ApiError;
use crate::jobs::{self, JobError, JobSpec};
use crate::outbound::{Outbound, OutboundError};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// Queue of outgoing auth SMS.
pub const QUEUE: &str = "auth.sms";

/// Token kind of a code that confirms the user's number (sign-up, OTP sign-in).
pub const CONFIRM: &str = "sms";
/// Token kind of a code that confirms a new number (`users.phone_change`).
pub const PHONE_CHANGE: &str = "phone_change";
/// Token kind of a reauthentication nonce (shared with mailed nonces).
pub const REAUTHENTICATION: &str = "reauthentication";

/// GoTrue's phone format: a leading `+` and spaces removed, then E.164 digits (a country
/// code that does not start with 0, at most 15 digits). Stored and compared in this form.
pub fn normalise(phone: &str) -> Result<String, ApiError> {
    let p = format(phone);
    let ok =
        (2..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0');
    if ok {
        Ok(p)
    } else {
        Err(gotrue(
            400,
            "validation_failed",
            "Invalid phone number format (E.164 required)",
        ))
    }
}

/// `normalise` for an optional number (absent or empty: none).
pub fn normalise_opt(phone: Option<&str>) -> Result<Option<String>, ApiError> {
    phone.filter(|p| !p.is_empty()).map(normalise).transpose()
}

/// The lookup form of a number without validation (GoTrue's password grant does only this).
pub fn format(phone: &str) -> String {
    phone.trim().trim_start_matches('+').replace(' ', "")
}

/// `phone_provider_disabled` (400) with the endpoint's message.
pub fn disabled(message: &str) -> ApiError {
    gotrue(400, "phone_provider_disabled", message)
}

/// Fails with `phone_provider_disabled` unless phone sign-in is on.
pub fn require_enabled(state: &AppState, message: &str) -> Result<(), ApiError> {
    if state.config.auth.sms.enabled {
        Ok(())
    } else {
        Err(disabled(message))
    }
}

/// The message channel of a request: `sms` by default; `whatsapp` only through Twilio, as
/// in GoTrue.
pub fn channel(cfg: &SmsConfig, requested: Option<&str>) -> Result<&'static str, ApiError> {
    match requested.filter(|c| !c.is_empty()).unwrap_or("sms") {
        "sms" => Ok("sms"),
        "whatsapp" if matches!(cfg.provider.as_str(), "twilio" | "twilio_verify") => {
            Ok("whatsapp")
        }
        _ => Err(gotrue(
            400,
            "validation_failed",
            "Invalid channel, supported values are 'sms' or 'whatsapp'. 'whatsapp' is only supported if Twilio or Twilio Verify is used as the provider.",
        )),
    }
}

/// The configured fixed code of a test number (`auth.sms.test_otp`).
fn test_otp(cfg: &SmsConfig, phone: &str) -> Option<String> {
    cfg.test_otp.iter().find_map(|t| {
        let (p, code) = t.split_once(':')?;
        (format(p) == phone).then(|| code.to_string())
    })
}

/// The message text: `{{ .Code }}` (any inner spacing) replaced by the code.
pub fn render(template: &str, code: &str) -> String {
    let mut out = String::with_capacity(template.len() + code.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) if after[..end].trim() == ".Code" => {
                out.push_str(code);
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The 429 of an SMS refused by a limit.
pub fn over_sms_limit(message: String, retry_after: u64) -> ApiError {
    gotrue(429, "over_sms_send_rate_limit", message)
        .with_header("Retry-After", retry_after.max(1).to_string())
}

/// Issues a fresh code of `kind` for `user`, to `phone` (older codes of that kind die),
/// stamps the user's `*_sent_at` (and, for a phone change, `phone_change`), and enqueues the
/// SMS in the same transaction. GoTrue's limits first: one code per user and purpose per
/// `max_frequency_secs` (kept in the database, so it holds across instances), then
/// `sms_sent_per_hour` for this instance. A test number gets its fixed code and no SMS.
pub async fn send<C: GenericClient>(
    c: &C,
    state: &AppState,
    user: Uuid,
    phone: &str,
    kind: &str,
    channel: &str,
) -> Result<(), ApiError> {
    let cfg = &state.config.auth.sms;
    let sent_col = match kind {
        CONFIRM => "confirmation_sent_at",
        PHONE_CHANGE => "phone_change_sent_at",
        REAUTHENTICATION => "reauthentication_sent_at",
        other => return Err(ApiError::internal(format!("unknown SMS kind {other:?}"))),
    };
    let wait: Option<f64> = c
        .query_one(
            &format!(
                "SELECT extract(epoch FROM {sent_col} + make_interval(secs => $2) - now())::float8
                   FROM auth.users WHERE id = $1"
            ),
            &[&user, &(cfg.max_frequency_secs as f64)],
        )
        .await
        .map_err(db)?
        .get(0);
    if let Some(w) = wait.filter(|w| *w > 0.0) {
        let secs = w.ceil() as u64;
        return Err(over_sms_limit(
            format!("For security purposes, you can only request this after {secs} seconds."),
            secs,
        ));
    }
    check_hourly(state)?;
    let fixed = test_otp(cfg, phone);
    // With Twilio Verify, Twilio makes the code: a marker stands for it, used up once Twilio
    // approves the code the user typed (`checked_code`).
    let code = match &fixed {
        Some(f) => f.clone(),
        None if uses_twilio_verify(state) => VERIFY_MARKER.to_string(),
        None => new_code(cfg.otp_length),
    };
    c.execute(
        "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = $2",
        &[&user, &kind],
    )
    .await
    .map_err(db)?;
    c.execute(
        "INSERT INTO auth.one_time_tokens (user_id, token_type, token_hash, relates_to) VALUES ($1, $2, $3, $4)",
        &[&user, &kind, &super::mail::code_hash(phone, &code), &phone],
    )
    .await
    .map_err(db)?;
    if kind == PHONE_CHANGE {
        c.execute(
            "UPDATE auth.users SET phone_change = $2, phone_change_sent_at = now() WHERE id = $1",
            &[&user, &phone],
        )
        .await
    } else {
        c.execute(
            &format!("UPDATE auth.users SET {sent_col} = now() WHERE id = $1"),
            &[&user],
        )
        .await
    }
    .map_err(db)?;
    if fixed.is_some() {
        return Ok(());
    }
    enqueue(c, state, user, phone, kind, channel, &code).await
}

/// Stands for a code Twilio Verify made (never a typed code: those are digits).
const VERIFY_MARKER: &str = "twilio-verify";

/// Whether codes go through Twilio Verify (no send hook overrides the provider).
fn uses_twilio_verify(state: &AppState) -> bool {
    state.config.auth.sms.provider == "twilio_verify" && !state.config.auth.hooks.send_sms.enabled
}

/// The stored code a typed `code` for `phone` stands for: the code itself, or, with Twilio
/// Verify, the marker once Twilio approves it (`VerificationCheck`). `None`: wrong code.
pub async fn checked_code(
    state: &AppState,
    phone: &str,
    code: &str,
) -> Result<Option<String>, ApiError> {
    let code = code.trim();
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let cfg = &state.config.auth.sms;
    if !uses_twilio_verify(state) || test_otp(cfg, phone).is_some() {
        return Ok(Some(code.to_string()));
    }
    let t = &cfg.twilio_verify;
    let url = format!(
        "{}/v2/Services/{}/VerificationCheck",
        base(&t.api_url, TWILIO_VERIFY_URL),
        t.message_service_sid
    );
    let rb = state
        .outbound
        .request(reqwest::Method::POST, &url)
        .header("Accept", "application/json")
        .basic_auth(&t.account_sid, Some(secret(&t.auth_token)))
        .form(&[("To", format!("+{phone}")), ("Code", code.to_string())]);
    let resp = state.outbound.send(rb).await.map_err(|e| {
        tracing::error!(error = %e, "Twilio Verify check failed");
        gotrue(
            500,
            "unexpected_failure",
            "Error verifying the code with Twilio Verify",
        )
    })?;
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    match resp.status {
        // 404: no pending verification (expired, approved already, or too many attempts).
        200..=299 if v["status"] == "approved" => Ok(Some(VERIFY_MARKER.to_string())),
        200..=299 | 404 => Ok(None),
        s => {
            tracing::error!(status = s, body = %v, "Twilio Verify refused the check");
            Err(gotrue(
                500,
                "unexpected_failure",
                format!(
                    "Error verifying the code with Twilio Verify: {}",
                    v["message"].as_str().unwrap_or_default()
                ),
            ))
        }
    }
}

/// Twilio Verify's API.
const TWILIO_VERIFY_URL: &str = "https://verify.twilio.com";

/// `auth.rate_limit.sms_sent_per_hour` for this instance (GoTrue's `RATE_LIMIT_SMS_SENT`).
pub fn check_hourly(state: &AppState) -> Result<(), ApiError> {
    let limit = state.config.auth.rate_limit.sms_sent_per_hour;
    super::mail::per_hour(state, "auth.sms_sent", limit)
        .map_err(|retry| over_sms_limit("SMS rate limit exceeded".into(), retry))
}

/// A fresh code of `len` digits.
pub fn new_code(len: u64) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Sends the SMS carrying `code` (in `auth.sms.template`) to `phone`, the number of `user`.
/// With `auth.hooks.send_sms`, the hook gets `{user, sms: {otp}}` now, as GoTrue calls it,
/// and its error is the request's. Otherwise the SMS is enqueued in the caller's transaction:
/// it is sent when that commits, and never if it rolls back (with Twilio Verify, the job
/// asks Twilio to send its own code).
pub async fn enqueue<C: GenericClient>(
    c: &C,
    state: &AppState,
    user: Uuid,
    phone: &str,
    kind: &str,
    channel: &str,
    code: &str,
) -> Result<(), ApiError> {
    if super::hooks::send(c, state, "send_sms", user, "sms", json!({ "otp": code })).await? {
        return Ok(());
    }
    let body = if uses_twilio_verify(state) {
        String::new()
    } else {
        render(&state.config.auth.sms.template, code)
    };
    let spec = JobSpec {
        queue: QUEUE.into(),
        payload: json!({"kind": kind, "to": phone, "channel": channel, "body": body}),
        ..Default::default()
    };
    jobs::enqueue(c, &spec).await.map_err(db)?;
    Ok(())
}

/// Uses up a texted code of one of `kinds` sent to `phone`; the user and the kind it was.
/// `None` when wrong or older than `auth.sms.otp_exp`.
pub async fn consume<C: GenericClient>(
    c: &C,
    state: &AppState,
    kinds: &[&str],
    phone: &str,
    code: &str,
) -> Result<Option<(Uuid, String)>, ApiError> {
    let Some(code) = checked_code(state, phone, code).await? else {
        return Ok(None);
    };
    super::mail::consume(
        c,
        kinds,
        None,
        Some((phone, &code)),
        state.config.auth.sms.otp_exp,
    )
    .await
}

/// Registers the SMS sender: the configured provider, through the outbound client.
pub fn register(reg: &mut crate::jobs::Registry, cfg: &SmsConfig, outbound: Outbound) {
    let cfg = std::sync::Arc::new(cfg.clone());
    reg.register(QUEUE, crate::jobs::RetryPolicy::default(), move |ctx| {
        let cfg = cfg.clone();
        let outbound = outbound.clone();
        async move {
            let s = |k: &str| {
                ctx.payload
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let (to, body, channel, kind) = (s("to"), s("body"), s("channel"), s("kind"));
            if cfg.provider == "log" {
                tracing::info!(%to, %kind, %channel, %body, "auth SMS (log sender: auth.sms.provider is log)");
                return Ok(Some(json!({"provider": "log"})));
            }
            let req = build(&cfg, &to, &body, &channel).map_err(JobError::Permanent)?;
            let id = deliver(&outbound, &cfg.provider, req).await?;
            Ok(Some(json!({"provider": cfg.provider, "message_id": id})))
        }
    });
}

/// How a request authenticates at the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderAuth {
    /// HTTP Basic (Twilio).
    Basic(String, String),
    /// An `Authorization` header value (MessageBird's `AccessKey …`).
    Header(String),
    /// Credentials in the form itself (Textlocal, Vonage).
    InForm,
}

/// One provider request: a form POST.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    /// Full URL.
    pub url: String,
    /// Form fields, in order.
    pub form: Vec<(String, String)>,
    /// Authentication.
    pub auth: ProviderAuth,
}

fn base(url: &str, default: &str) -> String {
    if url.is_empty() { default } else { url }
        .trim_end_matches('/')
        .to_string()
}

fn secret(s: &Option<crate::config::Secret>) -> String {
    s.as_ref()
        .map(|s| s.expose().to_string())
        .unwrap_or_default()
}

/// The request the configured provider takes for one message to `to` (digits; providers
/// that want E.164 with `+` get it).
pub fn build(
    cfg: &SmsConfig,
    to: &str,
    body: &str,
    channel: &str,
) -> Result<ProviderRequest, String> {
    let f = |k: &str, v: &str| (k.to_string(), v.to_string());
    if channel != "sms" && !matches!(cfg.provider.as_str(), "twilio" | "twilio_verify") {
        return Err(format!(
            "channel {channel:?} is not supported by {}",
            cfg.provider
        ));
    }
    Ok(match cfg.provider.as_str() {
        "twilio" => {
            let t = &cfg.twilio;
            let (mut receiver, mut sender) = (format!("+{to}"), t.message_service_sid.clone());
            if channel == "whatsapp" {
                receiver = format!("whatsapp:{receiver}");
                sender = format!("whatsapp:{sender}");
            }
            ProviderRequest {
                url: format!(
                    "{}/2010-04-01/Accounts/{}/Messages.json",
                    base(&t.api_url, "https://api.twilio.com"),
                    t.account_sid
                ),
                form: vec![
                    f("To", &receiver),
                    f("Channel", channel),
                    f("From", &sender),
                    f("Body", body),
                ],
                auth: ProviderAuth::Basic(t.account_sid.clone(), secret(&t.auth_token)),
            }
        }
        "twilio_verify" => {
            let t = &cfg.twilio_verify;
            ProviderRequest {
                url: format!(
                    "{}/v2/Services/{}/Verifications",
                    base(&t.api_url, TWILIO_VERIFY_URL),
                    t.message_service_sid
                ),
                form: vec![f("To", &format!("+{to}")), f("Channel", channel)],
                auth: ProviderAuth::Basic(t.account_sid.clone(), secret(&t.auth_token)),
            }
        }
        "messagebird" => {
            let m = &cfg.messagebird;
            ProviderRequest {
                url: format!(
                    "{}/messages",
                    base(&m.api_url, "https://rest.messagebird.com")
                ),
                form: vec![
                    f("originator", &m.originator),
                    f("body", body),
                    f("recipients", to),
                    f("type", "sms"),
                    f("datacoding", "unicode"),
                ],
                auth: ProviderAuth::Header(format!("AccessKey {}", secret(&m.access_key))),
            }
        }
        "textlocal" => {
            let t = &cfg.textlocal;
            ProviderRequest {
                url: format!("{}/send", base(&t.api_url, "https://api.textlocal.in")),
                form: vec![
                    f("sender", &t.sender),
                    f("apikey", &secret(&t.api_key)),
                    f("message", body),
                    f("numbers", to),
                ],
                auth: ProviderAuth::InForm,
            }
        }
        "vonage" => {
            let v = &cfg.vonage;
            let mut form = vec![
                f("from", &v.from),
                f("to", to),
                f("text", body),
                f("api_key", &v.api_key),
                f("api_secret", &secret(&v.api_secret)),
            ];
            if !body.is_ascii() {
                form.push(f("type", "unicode"));
            }
            ProviderRequest {
                url: format!("{}/sms/json", base(&v.api_url, "https://rest.nexmo.com")),
                form,
                auth: ProviderAuth::InForm,
            }
        }
        other => return Err(format!("unknown SMS provider {other:?}")),
    })
}

/// What a provider's answer means: the message id, or whether to try again.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted (with the provider's message id when it gives one).
    Sent(Option<String>),
    /// A passing failure (throttled, unavailable): try again later.
    Retry(String),
    /// Refused for good (credentials, number, content).
    Refused(String),
}

/// Reads a provider's answer (each in its own response shape).
pub fn outcome(provider: &str, status: u16, body: &[u8]) -> Outcome {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if status == 429 || status >= 500 {
        return Outcome::Retry(format!("{provider} answered {status}"));
    }
    match provider {
        "twilio" => {
            if !(200..300).contains(&status) {
                return Outcome::Refused(format!(
                    "twilio {status}: {} More information: {}",
                    text("message").unwrap_or_default(),
                    text("more_info").unwrap_or_default()
                ));
            }
            match text("status").as_deref() {
                Some("failed" | "undelivered") => Outcome::Refused(format!(
                    "twilio error: {} {}",
                    text("error_message").unwrap_or_default(),
                    v.get("error_code")
                        .map(Value::to_string)
                        .unwrap_or_default()
                )),
                _ => Outcome::Sent(text("sid")),
            }
        }
        "twilio_verify" => {
            if !(200..300).contains(&status) {
                return Outcome::Refused(format!(
                    "twilio verify {status}: {} More information: {}",
                    text("message").unwrap_or_default(),
                    text("more_info").unwrap_or_default()
                ));
            }
            Outcome::Sent(text("sid"))
        }
        "messagebird" => {
            if !(200..300).contains(&status) {
                let d = v["errors"][0]["description"].as_str().unwrap_or_default();
                return Outcome::Refused(format!("messagebird {status}: {d}"));
            }
            if v["recipients"]["totalSentCount"].as_i64().unwrap_or(0) == 0 {
                return Outcome::Refused("messagebird error: total sent count is 0".into());
            }
            Outcome::Sent(text("id"))
        }
        "textlocal" => {
            if text("status").as_deref() == Some("success")
                && v["errors"].as_array().is_none_or(Vec::is_empty)
            {
                let id = match &v["messages"][0]["id"] {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                return Outcome::Sent(id);
            }
            Outcome::Refused(format!(
                "textlocal error: {} (code: {})",
                v["errors"][0]["message"]
                    .as_str()
                    .unwrap_or("Internal Error"),
                v["errors"][0]["code"]
            ))
        }
        "vonage" => {
            let m = &v["messages"][0];
            match m["status"].as_str() {
                Some("0") => Outcome::Sent(m["message-id"].as_str().map(str::to_string)),
                // 1 = throttled: the one status Vonage means to be retried.
                Some("1") => Outcome::Retry("vonage: throttled (status 1)".into()),
                Some(s) => Outcome::Refused(format!(
                    "vonage error: {} (status: {s})",
                    m["error-text"].as_str().unwrap_or_default()
                )),
                None => Outcome::Refused("vonage error: Internal Error".into()),
            }
        }
        other => Outcome::Refused(format!("unknown SMS provider {other:?}")),
    }
}

async fn deliver(
    outbound: &Outbound,
    provider: &str,
    req: ProviderRequest,
) -> Result<Option<String>, JobError> {
    let mut rb = outbound
        .request(reqwest::Method::POST, &req.url)
        .header("Accept", "application/json")
        .form(&req.form);
    rb = match &req.auth {
        ProviderAuth::Basic(u, p) => rb.basic_auth(u, Some(p)),
        ProviderAuth::Header(h) => rb.header("Authorization", h),
        ProviderAuth::InForm => rb,
    };
    let resp = outbound.send(rb).await.map_err(|e| match e {
        OutboundError::InvalidUrl(_) | OutboundError::Blocked(_) | OutboundError::Redirect(_) => {
            JobError::Permanent(format!("{provider}: {e}"))
        }
        _ => JobError::Retry(format!("{provider}: {e}")),
    })?;
    match outcome(provider, resp.status, &resp.body) {
        Outcome::Sent(id) => Ok(id),
        Outcome::Retry(m) => Err(JobError::Retry(m)),
        Outcome::Refused(m) => Err(JobError::Permanent(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_as_gotrue_does() {
        assert_eq!(normalise("+1 555 0100 200").unwrap(), "15550100200");
        assert_eq!(normalise("4915112345678").unwrap(), "4915112345678");
        for bad in [
            "",
            "+",
            "0123456",
            "1-555-0100",
            "+1 (555) 0100",
            "1234567890123456",
            "abc",
        ] {
            let e = normalise(bad).unwrap_err();
            assert_eq!(e.gotrue_code, "validation_failed", "{bad:?}");
        }
    }

    #[test]
    fn template_takes_the_code() {
        assert_eq!(
            render("Your code is {{ .Code }}", "123456"),
            "Your code is 123456"
        );
        assert_eq!(
            render("{{.Code}} / {{ .Other }} {{", "1"),
            "1 / {{ .Other }} {{"
        );
    }

    #[test]
    fn twilio_verify_requests_and_answers() {
        let mut cfg = SmsConfig {
            provider: "twilio_verify".into(),
            ..Default::default()
        };
        cfg.twilio_verify.account_sid = "AC1".into();
        cfg.twilio_verify.auth_token = Some(crate::config::Secret::new("tok"));
        cfg.twilio_verify.message_service_sid = "VA1".into();
        let r = build(&cfg, "15550100", "", "whatsapp").unwrap();
        assert_eq!(
            r.url,
            "https://verify.twilio.com/v2/Services/VA1/Verifications"
        );
        assert_eq!(
            r.form,
            vec![
                ("To".to_string(), "+15550100".to_string()),
                ("Channel".to_string(), "whatsapp".to_string())
            ]
        );
        assert_eq!(r.auth, ProviderAuth::Basic("AC1".into(), "tok".into()));
        assert_eq!(channel(&cfg, Some("whatsapp")).unwrap(), "whatsapp");
        assert_eq!(
            outcome("twilio_verify", 201, br#"{"sid":"VE1","status":"pending"}"#),
            Outcome::Sent(Some("VE1".into()))
        );
        assert!(matches!(
            outcome("twilio_verify", 400, br#"{"code":60200,"message":"Invalid parameter"}"#),
            Outcome::Refused(m) if m.contains("Invalid parameter")
        ));
    }

    #[test]
    fn whatsapp_only_through_twilio() {
        let mut cfg = SmsConfig::default();
        assert_eq!(channel(&cfg, None).unwrap(), "sms");
        assert!(channel(&cfg, Some("whatsapp")).is_err());
        assert!(channel(&cfg, Some("fax")).is_err());
        cfg.provider = "twilio".into();
        assert_eq!(channel(&cfg, Some("whatsapp")).unwrap(), "whatsapp");
    }

    #[test]
    fn provider_answers_are_read_in_their_shapes() {
        assert_eq!(
            outcome("twilio", 201, br#"{"sid":"SM1","status":"queued"}"#),
            Outcome::Sent(Some("SM1".into()))
        );
        assert!(matches!(
            outcome("twilio", 400, br#"{"code":21211,"message":"bad To"}"#),
            Outcome::Refused(_)
        ));
        assert!(matches!(outcome("twilio", 503, b""), Outcome::Retry(_)));
        assert!(matches!(
            outcome(
                "messagebird",
                201,
                br#"{"id":"m","recipients":{"totalSentCount":0}}"#
            ),
            Outcome::Refused(_)
        ));
        assert_eq!(
            outcome(
                "textlocal",
                200,
                br#"{"status":"success","messages":[{"id":42}]}"#
            ),
            Outcome::Sent(Some("42".into()))
        );
        assert!(matches!(
            outcome(
                "vonage",
                200,
                br#"{"messages":[{"status":"1","error-text":"Throttled"}]}"#
            ),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            outcome(
                "vonage",
                200,
                br#"{"messages":[{"status":"4","error-text":"Bad Credentials"}]}"#
            ),
            Outcome::Refused(_)
        ));
    }
}
