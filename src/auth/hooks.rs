//! GoTrue's sending hooks (`auth.hooks.send_sms`, `auth.hooks.send_email`, GoTrue's
//! `GOTRUE_HOOK_SEND_SMS_*` / `GOTRUE_HOOK_SEND_EMAIL_*`): when one is enabled it replaces the
//! SMS provider / the SMTP mailer. The hook is either an HTTP(S) endpoint, POSTed the event as
//! JSON and signed as Standard Webhooks with each `v1,whsec_…` secret (through the SSRF-guarded
//! outbound client), or `pg-functions://postgres/<schema>/<function>`, a SQL function called
//! with the event as `jsonb` on the request's own connection and transaction.
//!
//! Hooks are called synchronously, inside the request, as GoTrue calls them: their answer
//! decides the request's. `{"error": {"http_code", "message"}}` from the hook becomes that
//! error (500 when no code); a 429/503 or a timeout is tried again (3 attempts), then
//! `hook_timeout_after_retry` (422) or 500; any other status is a 500 whose message says why,
//! as in GoTrue.
//!
//! Must not: send an event unsigned to an HTTP endpoint, or build SQL from the URI without
//! quoting its identifiers.

use super::service::{db, gotrue};
use crate::app::AppState;
use crate::config::HookConfig;
use crate::error::ApiError;
use crate::outbound::OutboundError;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::GenericClient;

/// Attempts of an HTTP hook that times out or answers 429/503 (GoTrue's).
const ATTEMPTS: usize = 3;

/// A configured hook.
#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    /// An HTTP(S) endpoint and the key bytes of its signing secrets.
    Http {
        /// Where events are POSTed.
        url: String,
        /// One HMAC key per configured secret (each signs every event).
        keys: Vec<Vec<u8>>,
    },
    /// A SQL function `schema.function(jsonb) returns jsonb`.
    Pg {
        /// Its schema.
        schema: String,
        /// Its name.
        function: String,
    },
}

fn plain_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl Hook {
    /// The hook `cfg` describes (`None` when disabled); `name` is the config key (`send_sms`)
    /// errors name.
    pub fn from_config(name: &str, cfg: &HookConfig) -> Result<Option<Hook>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        let uri = cfg.uri.trim();
        if let Some(path) = uri.strip_prefix("pg-functions://") {
            let parts: Vec<&str> = path.split('/').collect();
            return match parts.as_slice() {
                [_db, schema, function] if plain_ident(schema) && plain_ident(function) => {
                    Ok(Some(Hook::Pg {
                        schema: schema.to_string(),
                        function: function.to_string(),
                    }))
                }
                _ => Err(format!(
                    "`auth.hooks.{name}.uri` must be pg-functions://<database>/<schema>/<function> (plain identifiers), got {uri:?}"
                )),
            };
        }
        if !(uri.starts_with("https://") || uri.starts_with("http://"))
            || url::Url::parse(uri).is_err()
        {
            return Err(format!(
                "`auth.hooks.{name}.uri` must be an http(s):// URL or pg-functions://…, got {uri:?}"
            ));
        }
        let secrets = cfg
            .secrets
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let mut keys = Vec::new();
        for s in secrets.split('|').map(str::trim).filter(|s| !s.is_empty()) {
            let key = s
                .strip_prefix("v1,")
                .and_then(crate::webhooks::secret_key)
                .ok_or_else(|| {
                    format!("`auth.hooks.{name}.secrets`: each secret must be v1,whsec_<base64 of 24-64 bytes> (separate several with |)")
                })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(format!(
                "`auth.hooks.{name}.secrets` is required for an HTTP hook (v1,whsec_…)"
            ));
        }
        Ok(Some(Hook::Http {
            url: uri.to_string(),
            keys,
        }))
    }

    /// Calls the hook with `event` and answers its output (`{}` when it answered nothing).
    pub async fn call<C: GenericClient>(
        &self,
        c: &C,
        state: &AppState,
        event: &Value,
    ) -> Result<Value, ApiError> {
        let out = match self {
            Hook::Pg { schema, function } => {
                let sql = format!(
                    "SELECT {}.{}($1::jsonb)::jsonb",
                    crate::db::quote_ident(schema),
                    crate::db::quote_ident(function)
                );
                let row = c.query_one(&sql, &[event]).await.map_err(|e| {
                    tracing::error!(error = %e, hook = %sql, "auth hook function failed");
                    match e.as_db_error() {
                        // A RAISE in the function: its message is the hook's answer, as GoTrue's.
                        Some(d)
                            if d.code() == &tokio_postgres::error::SqlState::RAISE_EXCEPTION =>
                        {
                            gotrue(500, "unexpected_failure", d.message().to_string())
                        }
                        _ => db(e),
                    }
                })?;
                row.get::<_, Option<Value>>(0).unwrap_or(Value::Null)
            }
            Hook::Http { url, keys } => post_event(state, url, keys, event).await?,
        };
        check(&out)?;
        Ok(out)
    }
}

/// Sends through the hook `name` (`send_sms` or `send_email`) when it is enabled, with GoTrue's
/// event `{"user": <the User of uid>, <key>: data}`; `Ok(false)` when that hook is off.
pub async fn send<C: GenericClient>(
    c: &C,
    state: &AppState,
    name: &'static str,
    uid: uuid::Uuid,
    key: &str,
    data: Value,
) -> Result<bool, ApiError> {
    let hooks = &state.config.auth.hooks;
    let cfg = if name == "send_sms" {
        &hooks.send_sms
    } else {
        &hooks.send_email
    };
    // Validated with the config: an error here is a bug, not a client's mistake.
    let Some(hook) = Hook::from_config(name, cfg).map_err(ApiError::internal)? else {
        return Ok(false);
    };
    let user = super::service::user_by_id(c, uid)
        .await?
        .ok_or_else(|| ApiError::internal("the user of a hook event is gone"))?;
    let mut event = serde_json::json!({ "user": user.json });
    event[key] = data;
    hook.call(c, state, &event).await?;
    Ok(true)
}

/// The error a hook's output carries, as GoTrue reads it: `error.message` set means an
/// error, `error.http_code` its status (500 when absent).
fn check(out: &Value) -> Result<(), ApiError> {
    let Some(e) = out.get("error") else {
        return Ok(());
    };
    let message = e.get("message").and_then(Value::as_str).unwrap_or_default();
    if message.is_empty() {
        return Ok(());
    }
    let status = e
        .get("http_code")
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c))
        .unwrap_or(500) as u16;
    let code = if status == 500 {
        "unexpected_failure"
    } else {
        "unknown"
    };
    Err(gotrue(status, code, message.to_string()))
}

async fn post_event(
    state: &AppState,
    url: &str,
    keys: &[Vec<u8>],
    event: &Value,
) -> Result<Value, ApiError> {
    let body = serde_json::to_vec(event).map_err(ApiError::internal)?;
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let timeout = Duration::from_secs(state.config.auth.hooks.timeout_secs.max(1));
    let unavailable = || {
        gotrue(
            500,
            "unexpected_failure",
            "Service currently unavailable due to hook",
        )
    };
    for attempt in 1..=ATTEMPTS {
        let ts = chrono::Utc::now().timestamp();
        let signature = keys
            .iter()
            .map(|k| crate::webhooks::sign(k, &id, ts, &body))
            .collect::<Vec<_>>()
            .join(" ");
        let rb = state
            .outbound
            .request(reqwest::Method::POST, url)
            .timeout(timeout)
            .header("Content-Type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.clone());
        let resp = match state.outbound.send(rb).await {
            Ok(r) => r,
            Err(OutboundError::Timeout) => {
                tracing::warn!(%url, attempt, "auth hook timed out");
                if attempt == ATTEMPTS {
                    return Err(gotrue(
                        422,
                        "hook_timeout_after_retry",
                        format!(
                            "Failed to reach hook within maximum time of {} seconds",
                            timeout.as_secs() * ATTEMPTS as u64
                        ),
                    ));
                }
                continue;
            }
            Err(e) => {
                tracing::error!(%url, error = %e, "auth hook unreachable");
                return Err(gotrue(500, "unexpected_failure", "Failed to reach hook"));
            }
        };
        let out: Value = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body).unwrap_or(Value::Null)
        };
        match resp.status {
            200 | 202 | 204 => {
                let json = resp
                    .headers
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim_start().starts_with("application/json"));
                if !resp.body.is_empty() && !json {
                    return Err(gotrue(
                        500,
                        "hook_payload_invalid_content_type",
                        "Invalid JSON response. Received content-type: not application/json",
                    ));
                }
                return Ok(if out.is_null() {
                    Value::Object(Default::default())
                } else {
                    out
                });
            }
            429 | 503 => {
                check(&out)?;
                if attempt == ATTEMPTS {
                    return Err(unavailable());
                }
                let wait = resp
                    .headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .unwrap_or(2)
                    .min(2);
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            status => {
                check(&out)?;
                return Err(gotrue(
                    500,
                    "unexpected_failure",
                    match status {
                        400 => "Invalid payload sent to hook".to_string(),
                        401 => "Hook requires authorization token".to_string(),
                        s => format!("Unexpected status code returned from hook: {s}"),
                    },
                ));
            }
        }
    }
    Err(unavailable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cfg(uri: &str, secrets: Option<&str>) -> HookConfig {
        HookConfig {
            enabled: true,
            uri: uri.into(),
            secrets: secrets.map(Secret::new),
        }
    }

    #[test]
    fn uris_and_secrets_are_checked() {
        assert_eq!(
            Hook::from_config("send_sms", &HookConfig::default()).unwrap(),
            None
        );
        assert_eq!(
            Hook::from_config(
                "send_sms",
                &cfg("pg-functions://postgres/public/send_sms", None)
            )
            .unwrap(),
            Some(Hook::Pg {
                schema: "public".into(),
                function: "send_sms".into()
            })
        );
        let s = "v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let h = Hook::from_config(
            "send_email",
            &cfg("https://h.test/hook", Some(&format!("{s}|{s}"))),
        )
        .unwrap();
        assert!(matches!(h, Some(Hook::Http { keys, .. }) if keys.len() == 2));
        for (uri, secrets, needle) in [
            (
                "pg-functions://postgres/public",
                None,
                "pg-functions://<database>",
            ),
            (
                "pg-functions://postgres/pub;lic/f",
                None,
                "plain identifiers",
            ),
            ("ftp://h.test/x", Some(s), "http(s)://"),
            ("https://h.test/x", None, "is required"),
            (
                "https://h.test/x",
                Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                "v1,whsec_",
            ),
        ] {
            let e = Hook::from_config("send_sms", &cfg(uri, secrets)).unwrap_err();
            assert!(
                e.contains(needle) && e.contains("auth.hooks.send_sms"),
                "{uri}: {e}"
            );
        }
    }

    #[test]
    fn hook_errors_are_read_as_gotrue_reads_them() {
        assert!(check(&serde_json::json!({})).is_ok());
        assert!(check(&serde_json::json!({"error": {"http_code": 400}})).is_ok());
        let e = check(&serde_json::json!({"error": {"http_code": 429, "message": "slow down"}}))
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.message.as_str()), (429, "slow down"));
        let e = check(&serde_json::json!({"error": {"message": "no"}})).unwrap_err();
        assert_eq!(e.status.as_u16(), 500);
    }
}
