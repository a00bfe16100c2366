//! Realtime: Phoenix channels over WebSockets as supabase/realtime speaks them (vsn 1.0.0 and
//! 2.0.0), with broadcast, presence and postgres_changes fed by LISTEN/NOTIFY.
//!
//! Owns: the socket protocol (`protocol`), per-socket sessions (`socket`), the process's hub
//! of topics and presence (`hub`), the change listener with batched RLS checks (`changes`),
//! the REST broadcast and admin routes (`api`), and the `realtime` schema's functions.
//! Must not: read other modules' tables, or keep state another instance needs (broadcasts
//! and presence changes travel between instances through Postgres NOTIFY; messages too large
//! for NOTIFY through `realtime.fluxbase_cluster_messages`).

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
    cluster_tx: tokio::sync::mpsc::UnboundedSender<String>,
    cluster_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
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
        let (cluster_tx, cluster_rx) = tokio::sync::mpsc::unbounded_channel();
        hub.set_cluster(cluster_tx.clone());
        Ok(Realtime {
            hub,
            changes,
            cluster_tx,
            cluster_rx: std::sync::Mutex::new(Some(cluster_rx)),
        })
    }

    /// Starts the change pipeline (a subscription to the process's LISTEN connection) and
    /// the cluster-broadcast sender on the current runtime.
    pub fn start(&self, listener: &crate::db::listen::Listener) -> tokio::task::JoinHandle<()> {
        let rx = self
            .cluster_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(cluster_sender(self.changes.pool.clone(), rx));
            tokio::spawn(cluster_upkeep(self.changes.pool.clone(), self.hub.clone()));
        }
        let sub = listener.subscribe(&[changes::CHANNEL, crate::schema::listener::CHANNEL]);
        tokio::spawn(changes::run(self.changes.clone(), sub))
    }

    /// Sends a broadcast to this instance's members at once and queues it for the other
    /// instances (NOTIFY, sent by a background task so no socket waits on the database;
    /// payloads too large for NOTIFY travel through `realtime.fluxbase_cluster_messages`).
    /// Returns how many local members got it.
    pub fn publish(&self, b: hub::Broadcast) -> usize {
        let n = self.hub.broadcast(&b);
        let bin = match &b.body {
            protocol::BroadcastBody::Json(_) => None,
            protocol::BroadcastBody::Binary(bytes) => {
                use base64::Engine;
                Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        };
        let msg = ClusterOut {
            k: "b",
            i: self.hub.instance,
            topic: b.topic.strip_prefix("realtime:").unwrap_or(&b.topic),
            event: &b.event,
            binary: b.binary,
            private: b.key.starts_with("private:"),
            payload: match &b.body {
                protocol::BroadcastBody::Json(v) => Some(v),
                protocol::BroadcastBody::Binary(_) => None,
            },
            bin,
        };
        match serde_json::to_string(&msg) {
            Ok(text) => {
                let _ = self.cluster_tx.send(text);
            }
            Err(e) => tracing::warn!(error = %e, "realtime: cluster broadcast not encodable"),
        }
        n
    }
}

/// A broadcast as it travels to the other instances (read back as
/// [`changes::ClusterBroadcast`]); the JSON payload is passed through as text.
#[derive(serde::Serialize)]
struct ClusterOut<'a> {
    k: &'static str,
    i: uuid::Uuid,
    topic: &'a str,
    event: &'a str,
    binary: bool,
    private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bin: Option<String>,
}

/// The largest NOTIFY payload sent as such (Postgres refuses 8000 bytes and more); larger
/// cluster messages are stored and their id is sent.
pub const NOTIFY_MAX: usize = 7900;

/// Sends queued cluster messages: everything queued at a time goes out pipelined on one
/// connection (one round trip), so a burst of broadcasts costs a few round trips, not one
/// each, and never holds up the sockets that made them. Messages over [`NOTIFY_MAX`] go
/// through `realtime.fluxbase_notify`, which stores them and NOTIFYs their id.
async fn cluster_sender(
    pool: deadpool_postgres::Pool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut batch: Vec<String> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let r = async {
            let c = pool.get().await.map_err(|e| e.to_string())?;
            let stmt = c
                .prepare_cached("SELECT pg_notify($1, $2)")
                .await
                .map_err(|e| e.to_string())?;
            let stored = c
                .prepare_cached("SELECT realtime.fluxbase_notify($1)")
                .await
                .map_err(|e| e.to_string())?;
            type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
            let params: Vec<(bool, Vec<Param<'_>>)> = batch
                .iter()
                .map(|m| -> (bool, Vec<Param<'_>>) {
                    if m.len() > NOTIFY_MAX {
                        (true, vec![m])
                    } else {
                        (false, vec![&changes::CHANNEL, m])
                    }
                })
                .collect();
            let sends = params
                .iter()
                .map(|(big, p)| c.execute(if *big { &stored } else { &stmt }, p.as_slice()));
            futures_util::future::try_join_all(sends)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, lost = batch.len(), "realtime: cluster broadcast failed");
        }
        batch.clear();
    }
}

/// How long a stored cluster message is kept: every listener reads it within its run, well
/// before (a listener that lags this far behind has bigger problems); short, so that a
/// stream of large broadcasts does not pile up in the table.
pub const STORED_MESSAGE_RETENTION_SECS: f64 = 120.0;

/// Presence heartbeats and expiry, and the cleanup of stored cluster messages: every
/// [`hub::PRESENCE_HEARTBEAT`], an instance with presences says it is alive and presences
/// of instances silent for [`hub::PRESENCE_TTL`] are dropped; every minute, stored messages
/// older than [`STORED_MESSAGE_RETENTION_SECS`] are deleted.
async fn cluster_upkeep(pool: deadpool_postgres::Pool, hub: Arc<hub::Hub>) {
    let mut tick = tokio::time::interval(hub::PRESENCE_HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if hub.has_local_presence() {
            hub.to_cluster(serde_json::json!({"k": "h", "i": hub.instance}).to_string());
        }
        hub.expire_peers(std::time::Instant::now());
        // At start, then once a minute.
        n += 1;
        if n % 12 == 1 {
            let r = async {
                let c = pool.get().await.map_err(|e| e.to_string())?;
                c.execute(
                    "DELETE FROM realtime.fluxbase_cluster_messages \
                      WHERE created_at < now() - make_interval(secs => $1)",
                    &[&STORED_MESSAGE_RETENTION_SECS],
                )
                .await
                .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "realtime: cleanup of stored cluster messages failed");
            }
        }
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
