//! Webhooks: subscriptions (`webhooks.hooks`), the outbox written by AFTER triggers in the
//! transaction of each change (`webhooks.emit`, `migrations/replaceable/webhooks.sql`), and
//! signed delivery through the durable job queue (queue `webhooks`) over the SSRF-guarded
//! client, with a delivery log and redelivery.
//!
//! Signatures follow the Standard Webhooks spec: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`, the
//! secret being `whsec_` + base64 of the key bytes.
//!
//! Must not: deliver a change that was rolled back (the outbox shares its transaction), or
//! lose a committed one (the job queue retries until `max_attempts`).

pub mod api;
pub mod deliver;

use base64::Engine;
use hmac::{Hmac, Mac};

/// The job queue deliveries run on.
pub const QUEUE: &str = "webhooks";

/// Named (non-table) events a hook may subscribe to.
pub const NAMED_EVENTS: [&str; 6] = [
    "auth.user.created",
    "auth.user.deleted",
    "auth.user.signed_in",
    "storage.object.created",
    "storage.object.updated",
    "storage.object.deleted",
];

/// Registers the delivery handler.
pub fn register_jobs(reg: &mut crate::jobs::Registry, outbound: crate::outbound::Outbound) {
    deliver::register(reg, outbound);
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The key bytes of a secret (`whsec_` prefix optional), if it is valid: base64 of 24 to 64
/// bytes.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// `v1,<signature>` of one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // new_from_slice accepts keys of any length for HMAC; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Whether `event` is a valid subscription: a named event, or `schema.table:OP` with OP one
/// of INSERT, UPDATE, DELETE, `*`. Returns the `(schema, table)` of table events.
pub fn parse_event(event: &str) -> Result<Option<(String, String)>, String> {
    if NAMED_EVENTS.contains(&event) {
        return Ok(None);
    }
    let Some((target, op)) = event.split_once(':') else {
        return Err(format!(
            "unknown event {event:?}: use schema.table:INSERT|UPDATE|DELETE|* or one of {}",
            NAMED_EVENTS.join(", ")
        ));
    };
    if !["INSERT", "UPDATE", "DELETE", "*"].contains(&op) {
        return Err(format!(
            "event {event:?}: the operation must be INSERT, UPDATE, DELETE or *"
        ));
    }
    let Some((schema, table)) = target.split_once('.') else {
        return Err(format!("event {event:?}: name the table as schema.table"));
    };
    if schema.is_empty() || table.is_empty() {
        return Err(format!("event {event:?}: name the table as schema.table"));
    }
    if (schema, table) == ("auth", "users") || (schema, table) == ("storage", "objects") {
        return Err(format!(
            "event {event:?}: subscribe to the auth.user.* / storage.object.* events instead"
        ));
    }
    Ok(Some((schema.to_string(), table.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_per_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert!(secret_key("whsec_short").is_none());
        assert!(secret_key("not base64 !!").is_none());
    }

    #[test]
    fn events() {
        assert_eq!(parse_event("auth.user.created"), Ok(None));
        assert_eq!(
            parse_event("public.orders:INSERT"),
            Ok(Some(("public".into(), "orders".into())))
        );
        assert!(parse_event("public.orders:*").is_ok());
        assert!(parse_event("public.orders:TRUNCATE").is_err());
        assert!(parse_event("orders:INSERT").is_err());
        assert!(parse_event("auth.users:INSERT").is_err());
        assert!(parse_event("auth.user.exploded").is_err());
    }
}
