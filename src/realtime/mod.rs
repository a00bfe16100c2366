//! Realtime: Phoenix channels over WebSockets as supabase/realtime speaks them (vsn 1.0.0 and
//! 2.0.0), with broadcast, presence and postgres_changes fed by LISTEN/NOTIFY.
//!
//! Owns: the socket protocol (`protocol`), per-socket sessions (`socket`), the process's hub
//! of topics and presence (`hub`), the change listener with batched RLS checks (`changes`),
//! the REST broadcast and admin routes (`api`), and the `realtime` schema's functions.
//! Must not: read other modules' tables, or keep state another instance needs (cluster
//! broadcasts travel through Postgres NOTIFY; presence is per instance).

pub mod api;
pub mod changes;
pub mod hub;
pub mod protocol;
pub mod socket;

use crate::app::AppState;
use crate::auth::jwt::JwtKeys;
use crate::routes::{Access, Registry};
use actix_web::http::Method;
use std::sync::Arc;

/// Who a channel member is: the role and claims its RLS checks run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Postgres role.
    pub role: String,
    /// Claims JSON for `request.jwt.claims`.
    pub claims_json: Arc<str>,
    /// `exp` of the token (seconds since the epoch), if it has one.
    pub exp: Option<i64>,
}

impl Identity {
    /// The identity of a connection without a token.
    pub fn anon() -> Self {
        Identity {
            role: crate::auth::jwt::ANON_ROLE.into(),
            claims_json: Arc::from(r#"{"role":"anon"}"#),
            exp: None,
        }
    }

    /// Verifies a JWT (the project's keys; the same rules as every other surface).
    pub fn from_jwt(keys: &JwtKeys, token: &str) -> Result<Self, String> {
        match keys.verify_cached(token) {
            Ok((claims, role, claims_json)) => Ok(Identity {
                role,
                exp: claims.get("exp").and_then(serde_json::Value::as_i64),
                claims_json,
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// From a request's `AuthContext` (REST broadcast, API keys).
    pub fn from_auth(ctx: &crate::auth::AuthContext) -> Self {
        Identity {
            role: ctx.role.clone(),
            exp: ctx.claims.get("exp").and_then(serde_json::Value::as_i64),
            claims_json: ctx.claims_json.clone(),
        }
    }
}

/// The hub key of a topic: private and public channels of one name never mix.
pub fn hub_key(topic: &str, private: bool) -> String {
    if private {
        format!("private:{topic}")
    } else {
        topic.to_string()
    }
}

/// The realtime service of one process.
pub struct Realtime {
    /// Topics, members, presence.
    pub hub: Arc<hub::Hub>,
    /// The change pipeline.
    pub changes: Arc<changes::Changes>,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Realtime")
    }
}

impl Realtime {
    /// Creates the service (collectors registered in `registry`); `start` begins listening.
    pub fn new(
        pool: deadpool_postgres::Pool,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        let hub = Arc::new(hub::Hub::new(hub::HubMetrics::new(registry)?));
        let changes = Arc::new(changes::Changes {
            pool,
            hub: hub.clone(),
            meta: Default::default(),
            listening: Default::default(),
        });
        Ok(Realtime { hub, changes })
    }

    /// Starts the change listener (one LISTEN connection) on the current runtime.
    pub fn start(&self, pg: tokio_postgres::Config) -> tokio::task::JoinHandle<()> {
        tokio::spawn(changes::run(self.changes.clone(), pg))
    }

    /// Sends a broadcast to this instance's members and, through NOTIFY, to the other
    /// instances'. Payloads too large for NOTIFY reach this instance only (logged).
    pub async fn publish(&self, pool: &deadpool_postgres::Pool, b: hub::Broadcast) -> usize {
        let n = self.hub.broadcast(&b);
        let sub = b.topic.strip_prefix("realtime:").unwrap_or(&b.topic);
        let private = b.key.starts_with("private:");
        let mut msg = serde_json::json!({
            "k": "b", "i": self.hub.instance, "topic": sub, "event": b.event,
            "binary": b.binary, "private": private,
        });
        match &b.body {
            protocol::BroadcastBody::Json(v) => msg["payload"] = v.clone(),
            protocol::BroadcastBody::Binary(bytes) => {
                use base64::Engine;
                msg["bin"] = base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into();
            }
        }
        let text = msg.to_string();
        if text.len() > 7900 {
            tracing::warn!(
                topic = %b.topic,
                bytes = text.len(),
                "realtime: broadcast too large for NOTIFY; delivered on this instance only"
            );
            return n;
        }
        let r = match pool.get().await {
            Ok(c) => c
                .execute("SELECT pg_notify($1, $2)", &[&changes::CHANNEL, &text])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "realtime: cluster broadcast failed");
        }
        n
    }
}

/// Declares realtime's routes.
pub fn configure(reg: &mut Registry) {
    for path in ["/realtime/v1/websocket", "/realtime/websocket"] {
        reg.add(
            Method::GET,
            path,
            "realtime",
            "Phoenix websocket (vsn 1.0.0 / 2.0.0): broadcast, presence, postgres_changes",
            Access::Key,
            socket::websocket,
        );
    }
    reg.add(
        Method::POST,
        "/realtime/v1/api/broadcast",
        "realtime",
        "Broadcast messages to channels over HTTP",
        Access::Key,
        api::broadcast,
    );
    reg.add(
        Method::POST,
        "/realtime/v1/api/broadcast/{topic}/events/{event}",
        "realtime",
        "Broadcast one event to a channel (body = payload, JSON or octet-stream)",
        Access::Key,
        api::broadcast_event,
    );
    reg.add(
        Method::GET,
        "/api/v1/realtime/stats",
        "realtime",
        "Connections, channels and message counters of this instance",
        Access::ServiceRole,
        api::stats,
    );
    reg.add(
        Method::GET,
        "/api/v1/realtime/tables",
        "realtime",
        "Tables in the supabase_realtime publication",
        Access::ServiceRole,
        api::list_tables,
    );
    reg.add(
        Method::POST,
        "/api/v1/realtime/tables/{schema}/{table}",
        "realtime",
        "Enable postgres_changes for a table (adds it to supabase_realtime)",
        Access::ServiceRole,
        api::enable_table,
    );
    reg.add(
        Method::DELETE,
        "/api/v1/realtime/tables/{schema}/{table}",
        "realtime",
        "Disable postgres_changes for a table",
        Access::ServiceRole,
        api::disable_table,
    );
}

/// The realtime service of the app (`None` when `realtime.enabled` is off).
pub fn service(state: &AppState) -> Option<&Realtime> {
    state.realtime.as_deref()
}
