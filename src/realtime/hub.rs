//! The hub of one process: which channel members listen on which topic, presence state per
//! topic (this instance's members, plus a replica of the other instances' presences kept
//! from their cluster messages), and fan-out. Messages are serialised once per protocol version and handed to each
//! socket's bounded outbox; a socket whose outbox is full is disconnected (a slow consumer
//! must not grow the server's memory).

use super::protocol::{self, BroadcastBody, Frame, Vsn};
use super::Identity;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;

/// Frames a socket may have queued before it counts as too slow and is closed.
pub const OUTBOX_CAPACITY: usize = 1024;

/// A websocket's own send queue (actix-ws's session), for frames written without a detour
/// through the socket task; `None` once the socket is closing.
pub type DirectSink = Arc<Mutex<Option<actix_ws::Session>>>;

/// The sending side of one websocket.
#[derive(Clone)]
pub struct SocketHandle {
    /// Process-unique socket id.
    pub id: u64,
    /// Protocol version of the socket.
    pub vsn: Vsn,
    /// The socket's outbox, drained by the socket task: where frames wait while the
    /// websocket's own queue is full.
    pub tx: mpsc::Sender<Frame>,
    /// Set when the outbox overflowed; the socket closes itself.
    pub overflowed: Arc<AtomicBool>,
    /// Frames put in the outbox and not yet handed to the websocket (the socket task counts
    /// down after each write). While nonzero, new frames queue behind them, so one
    /// sender's frames keep their order.
    pub pending: Arc<AtomicUsize>,
    /// The websocket's session for direct writes (`None`: outbox only, as in unit tests).
    pub direct: Option<DirectSink>,
    /// Set while the socket task handles one of its client's messages: frames queue behind
    /// the reply it is about to write (its own broadcast with `self`, its presence diff).
    pub busy: Arc<AtomicBool>,
}

impl std::fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketHandle")
            .field("id", &self.id)
            .field("vsn", &self.vsn)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl SocketHandle {
    /// Hands a frame to the websocket: straight into its session's queue when nothing waits
    /// in the outbox and that queue has room (the common case: no task hop), else into the
    /// outbox. A full outbox marks the socket for closing, a closed socket is ignored (it is
    /// going away and its channels are being removed).
    pub fn send(&self, frame: Frame) -> bool {
        if let Some(direct) = &self.direct {
            if self.pending.load(Ordering::Acquire) == 0 && !self.busy.load(Ordering::Acquire) {
                use futures_util::FutureExt;
                let mut guard = lock(direct);
                let Some(session) = guard.as_mut() else {
                    return false;
                };
                // Polled once: it completes at once when the queue has room. Unconstrained:
                // tokio's cooperative budget would otherwise refuse all but the first 128
                // sends of one fan-out.
                let sent = match &frame {
                    Frame::Text(t) => {
                        tokio::task::unconstrained(session.text(t.clone())).now_or_never()
                    }
                    Frame::Binary(b) => {
                        tokio::task::unconstrained(session.binary(b.clone())).now_or_never()
                    }
                };
                match sent {
                    Some(Ok(())) => return true,
                    Some(Err(_)) => return false,
                    None => {}
                }
            }
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                if let mpsc::error::TrySendError::Full(_) = e {
                    self.overflowed.store(true, Ordering::Relaxed);
                }
                false
            }
        }
    }
}

/// One open websocket of a client IP (see [`Hub::admit_ip`]).
#[derive(Debug)]
pub struct IpGuard {
    ip: String,
    map: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut m = lock(&self.map);
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `rate` per second, bursts up to `rate` (0 = no limit).
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u64) -> Bucket {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: std::time::Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One `postgres_changes` binding of a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct PgBinding {
    /// Server-assigned id (the client routes by it).
    pub id: u64,
    /// `INSERT`, `UPDATE`, `DELETE` or `*`.
    pub event: String,
    /// Schema (`*` = any).
    pub schema: String,
    /// Table; `None` = every table of the schema.
    pub table: Option<String>,
    /// Parsed row filter.
    pub filter: Option<super::changes::Filter>,
}

/// A socket's membership in one topic (a joined channel).
#[derive(Debug)]
pub struct Member {
    /// Process-unique member id.
    pub id: u64,
    /// Where frames go.
    pub socket: SocketHandle,
    /// Full topic as the client names it (`realtime:room1`).
    pub topic: String,
    /// Hub key (`topic`, or `private:` + topic for private channels).
    pub key: String,
    /// The join's `join_ref`.
    pub join_ref: Value,
    /// `broadcast.self`: receive one's own broadcasts.
    pub broadcast_self: bool,
    /// `broadcast.ack`: reply to each broadcast push.
    pub broadcast_ack: bool,
    /// Receives presence messages.
    pub presence_enabled: AtomicBool,
    /// `presence.key` (a random one when the client gave none).
    pub presence_key: String,
    /// postgres_changes bindings.
    pub pg: Vec<PgBinding>,
    /// Who the member is (replaced by `access_token` pushes).
    pub identity: RwLock<Arc<Identity>>,
    /// Private channel: may this member send (RLS INSERT on `realtime.messages`)?
    pub can_write: AtomicBool,
}

impl Member {
    /// The current identity.
    pub fn identity(&self) -> Arc<Identity> {
        match self.identity.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the identity.
    pub fn set_identity(&self, id: Identity) {
        match self.identity.write() {
            Ok(mut g) => *g = Arc::new(id),
            Err(p) => *p.into_inner() = Arc::new(id),
        }
    }
}

#[derive(Debug, Clone)]
struct PresenceEntry {
    member: u64,
    key: String,
    phx_ref: String,
    meta: Value,
}

#[derive(Default)]
struct Topic {
    members: Vec<Arc<Member>>,
    presence: Vec<PresenceEntry>,
}

/// A presence as it travels between instances (`{"key", "ref", "meta"}`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WirePresence {
    /// Presence key.
    pub key: String,
    /// `phx_ref` (unique per track).
    #[serde(rename = "ref")]
    pub phx_ref: String,
    /// The tracked meta.
    #[serde(default)]
    pub meta: Value,
}

impl From<&PresenceEntry> for WirePresence {
    fn from(p: &PresenceEntry) -> Self {
        WirePresence {
            key: p.key.clone(),
            phx_ref: p.phx_ref.clone(),
            meta: p.meta.clone(),
        }
    }
}

impl From<WirePresence> for PresenceEntry {
    fn from(w: WirePresence) -> Self {
        PresenceEntry {
            member: 0,
            key: w.key,
            phx_ref: w.phx_ref,
            meta: w.meta,
        }
    }
}

/// One topic's presences in a cluster message.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WireTopic {
    /// Hub key.
    pub key: String,
    /// Client topic (`realtime:room`).
    pub topic: String,
    /// Presences.
    pub entries: Vec<WirePresence>,
}

/// The other instances' presences of one topic.
#[derive(Default)]
struct RemoteTopic {
    topic: String,
    /// (origin instance, presence).
    entries: Vec<(uuid::Uuid, PresenceEntry)>,
}

/// Another instance's presences are dropped when it has not been heard from for this long
/// (instances with presences send a heartbeat every [`PRESENCE_HEARTBEAT`]).
pub const PRESENCE_TTL: std::time::Duration = std::time::Duration::from_secs(15);
/// How often an instance with presences says it is alive.
pub const PRESENCE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// Counters of the hub (exported at `/metrics` and `/api/v1/realtime/stats`).
#[derive(Debug)]
pub struct HubMetrics {
    /// Open websockets.
    pub connections: prometheus::IntGauge,
    /// Joined channels.
    pub channels: prometheus::IntGauge,
    /// Frames queued to sockets, by kind (broadcast, presence, postgres_changes).
    pub messages: prometheus::IntCounterVec,
    /// Sockets closed because their outbox overflowed.
    pub slow_disconnects: prometheus::IntCounter,
    /// postgres_changes bindings of joined channels.
    pub subscriptions: prometheus::IntGauge,
    /// Messages received from clients, by kind (heartbeat, join, leave, broadcast,
    /// presence, access_token, other, malformed).
    pub received: prometheus::IntCounterVec,
}

impl HubMetrics {
    /// Creates and registers the collectors.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let connections =
            prometheus::IntGauge::new("fluxbase_realtime_connections", "Open realtime websockets")?;
        let channels =
            prometheus::IntGauge::new("fluxbase_realtime_channels", "Joined realtime channels")?;
        let messages = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "fluxbase_realtime_messages_total",
                "Realtime messages queued to sockets, by kind",
            ),
            &["kind"],
        )?;
        let slow_disconnects = prometheus::IntCounter::new(
            "fluxbase_realtime_slow_disconnects_total",
            "Realtime sockets closed because they could not keep up",
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(channels.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        let subscriptions = prometheus::IntGauge::new(
            "fluxbase_realtime_subscriptions",
            "postgres_changes bindings of joined realtime channels",
        )?;
        let received = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "fluxbase_realtime_messages_received_total",
                "Realtime messages received from clients, by kind",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(slow_disconnects.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(received.clone()))?;
        Ok(HubMetrics {
            connections,
            channels,
            messages,
            slow_disconnects,
            subscriptions,
            received,
        })
    }
}

/// Topics, members and presence of this process.
pub struct Hub {
    topics: RwLock<HashMap<String, Mutex<Topic>>>,
    /// Other instances' presences by hub key (kept even where no local member listens, so
    /// a later joiner gets the whole state).
    remote: Mutex<HashMap<String, RemoteTopic>>,
    /// When each other instance with presences was last heard from.
    peers: Mutex<HashMap<uuid::Uuid, std::time::Instant>>,
    /// Where presence changes go for the other instances (set by the service).
    cluster: std::sync::OnceLock<mpsc::UnboundedSender<String>>,
    /// Members with postgres_changes bindings (the change listener scans these).
    pg_members: RwLock<HashMap<u64, Arc<Member>>>,
    next_id: AtomicU64,
    /// Open websockets per client IP (`realtime.max_connections_per_ip`).
    per_ip: Arc<Mutex<HashMap<String, usize>>>,
    /// This process's id (cluster broadcasts skip their own origin).
    pub instance: uuid::Uuid,
    /// Collectors.
    pub metrics: HubMetrics,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

/// A user broadcast to fan out.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Hub key of the topic.
    pub key: String,
    /// Full client topic (`realtime:room`).
    pub topic: String,
    /// The user event name.
    pub event: String,
    /// The body.
    pub body: BroadcastBody,
    /// Whether it arrived as a binary frame (then vsn 2 sockets get a binary frame too).
    pub binary: bool,
    /// The sending member (excluded unless it asked for `self`).
    pub from: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: HubMetrics) -> Self {
        Hub {
            topics: RwLock::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            cluster: std::sync::OnceLock::new(),
            pg_members: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            per_ip: Arc::default(),
            instance: uuid::Uuid::new_v4(),
            metrics,
        }
    }

    /// Counts a new websocket of `ip` unless it already has `limit` open (0 = no limit);
    /// the guard uncounts it when dropped.
    pub fn admit_ip(&self, ip: &str, limit: u64) -> Option<IpGuard> {
        let mut m = lock(&self.per_ip);
        let n = m.entry(ip.to_string()).or_insert(0);
        if limit > 0 && *n as u64 >= limit {
            if *n == 0 {
                m.remove(ip);
            }
            return None;
        }
        *n += 1;
        Some(IpGuard {
            ip: ip.to_string(),
            map: self.per_ip.clone(),
        })
    }

    /// A fresh process-unique id (sockets, members, bindings).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn with_topic<R>(&self, key: &str, f: impl FnOnce(&mut Topic) -> R) -> Option<R> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.get(key).map(|t| f(&mut lock(t)))
    }

    /// Adds a member; returns the topic's presence state (`presence_state` payload).
    pub fn join(&self, member: Arc<Member>) -> String {
        if !member.pg.is_empty() {
            self.metrics.subscriptions.add(member.pg.len() as i64);
            self.pg_members
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(member.id, member.clone());
        }
        self.metrics.channels.inc();
        let key = member.key.clone();
        let remote_key = key.clone();
        let add = |t: &mut Topic| {
            t.members.push(member.clone());
            let remote = lock(&self.remote);
            match remote.get(&remote_key) {
                Some(r) if !r.entries.is_empty() => {
                    let mut all = t.presence.clone();
                    all.extend(r.entries.iter().map(|(_, p)| p.clone()));
                    presence_state(&all)
                }
                _ => presence_state(&t.presence),
            }
        };
        if let Some(state) = self.with_topic(&key, add) {
            return state;
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let t = topics.entry(key).or_default();
        let mut guard = lock(t);
        add(&mut guard)
    }

    /// Removes a member and its presences (others get the `presence_diff`).
    pub fn leave(&self, member: &Member) {
        let had = self
            .pg_members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&member.id);
        if let Some(m) = had {
            self.metrics.subscriptions.sub(m.pg.len() as i64);
        }
        let emptied = self
            .with_topic(&member.key, |t| {
                let before = t.members.len();
                t.members.retain(|m| m.id != member.id);
                if t.members.len() != before {
                    self.metrics.channels.dec();
                }
                let (gone, kept): (Vec<_>, Vec<_>) =
                    t.presence.drain(..).partition(|p| p.member == member.id);
                t.presence = kept;
                if !gone.is_empty() {
                    let diff = diff_payload(&[], &gone);
                    self.send_presence(t, &member.topic, &diff);
                    self.publish_presence(&member.key, &member.topic, &[], &gone);
                }
                t.members.is_empty()
            })
            .unwrap_or(false);
        if emptied {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            if topics
                .get(&member.key)
                .is_some_and(|t| lock(t).members.is_empty())
            {
                topics.remove(&member.key);
            }
        }
    }

    /// `track`: sets the member's presence meta (replacing its previous one).
    pub fn track(&self, member: &Member, meta: Value) {
        member.presence_enabled.store(true, Ordering::Relaxed);
        self.with_topic(&member.key, |t| {
            let (old, kept): (Vec<_>, Vec<_>) =
                t.presence.drain(..).partition(|p| p.member == member.id);
            t.presence = kept;
            let entry = PresenceEntry {
                member: member.id,
                key: member.presence_key.clone(),
                phx_ref: new_phx_ref(),
                meta,
            };
            t.presence.push(entry.clone());
            let joins = [entry];
            let diff = diff_payload(&joins, &old);
            self.send_presence(t, &member.topic, &diff);
            self.publish_presence(&member.key, &member.topic, &joins, &old);
        });
    }

    /// `untrack`: removes the member's presence.
    pub fn untrack(&self, member: &Member) {
        self.with_topic(&member.key, |t| {
            let (gone, kept): (Vec<_>, Vec<_>) =
                t.presence.drain(..).partition(|p| p.member == member.id);
            t.presence = kept;
            if !gone.is_empty() {
                let diff = diff_payload(&[], &gone);
                self.send_presence(t, &member.topic, &diff);
                self.publish_presence(&member.key, &member.topic, &[], &gone);
            }
        });
    }

    /// Connects the hub to the cluster: presence changes are queued on `tx` as NOTIFY
    /// payloads for the other instances.
    pub fn set_cluster(&self, tx: mpsc::UnboundedSender<String>) {
        let _ = self.cluster.set(tx);
    }

    /// Queues a cluster message (nothing when the hub is not connected to a cluster).
    pub fn to_cluster(&self, msg: String) {
        if let Some(tx) = self.cluster.get() {
            let _ = tx.send(msg);
        }
    }

    fn publish_presence(
        &self,
        key: &str,
        topic: &str,
        joins: &[PresenceEntry],
        leaves: &[PresenceEntry],
    ) {
        if self.cluster.get().is_none() {
            return;
        }
        let wire = |v: &[PresenceEntry]| v.iter().map(WirePresence::from).collect::<Vec<_>>();
        let msg = json!({
            "k": "p", "i": self.instance, "key": key, "topic": topic,
            "joins": wire(joins), "leaves": wire(leaves),
        });
        self.to_cluster(msg.to_string());
    }

    /// Whether this instance tracks any presence (it then sends heartbeats).
    pub fn has_local_presence(&self) -> bool {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.values().any(|t| !lock(t).presence.is_empty())
    }

    /// Every local presence, per topic (the answer to another instance's sync request).
    pub fn local_presence(&self) -> Vec<WireTopic> {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (key, t) in topics.iter() {
            let t = lock(t);
            if let Some(first) = t.members.first() {
                if !t.presence.is_empty() {
                    out.push(WireTopic {
                        key: key.clone(),
                        topic: first.topic.clone(),
                        entries: t.presence.iter().map(WirePresence::from).collect(),
                    });
                }
            }
        }
        out
    }

    /// Notes that `instance` is alive; false when it was not known (new, or expired).
    pub fn peer_seen(&self, instance: uuid::Uuid, now: std::time::Instant) -> bool {
        lock(&self.peers).insert(instance, now).is_some()
    }

    /// Applies another instance's presence diff: joins it did not know yet and leaves of
    /// presences it had are forwarded to local members as a `presence_diff`.
    pub fn remote_diff(
        &self,
        instance: uuid::Uuid,
        key: &str,
        topic: &str,
        joins: Vec<WirePresence>,
        leaves: Vec<WirePresence>,
        now: std::time::Instant,
    ) {
        let _ = self.peer_seen(instance, now);
        let (added, removed) = {
            let mut remote = lock(&self.remote);
            let r = remote.entry(key.to_string()).or_default();
            r.topic = topic.to_string();
            let mut removed = Vec::new();
            for l in leaves {
                if let Some(pos) = r
                    .entries
                    .iter()
                    .position(|(i, p)| *i == instance && p.phx_ref == l.phx_ref)
                {
                    removed.push(r.entries.remove(pos).1);
                }
            }
            let mut added = Vec::new();
            for j in joins {
                if !r
                    .entries
                    .iter()
                    .any(|(i, p)| *i == instance && p.phx_ref == j.phx_ref)
                {
                    let p = PresenceEntry::from(j);
                    r.entries.push((instance, p.clone()));
                    added.push(p);
                }
            }
            if r.entries.is_empty() {
                remote.remove(key);
            }
            (added, removed)
        };
        self.forward_remote(key, topic, &added, &removed);
    }

    /// Replaces everything known of `instance`'s presences with `topics` (its answer to a
    /// sync request), forwarding the differences.
    pub fn remote_full(
        &self,
        instance: uuid::Uuid,
        topics: Vec<WireTopic>,
        now: std::time::Instant,
    ) {
        let _ = self.peer_seen(instance, now);
        let mut diffs: Vec<(String, String, Vec<PresenceEntry>, Vec<PresenceEntry>)> = Vec::new();
        {
            let mut remote = lock(&self.remote);
            let mut incoming: HashMap<String, WireTopic> =
                topics.into_iter().map(|t| (t.key.clone(), t)).collect();
            let keys: Vec<String> = remote.keys().cloned().collect();
            for key in keys {
                let Some(r) = remote.get_mut(&key) else {
                    continue;
                };
                let new = incoming.remove(&key);
                let new_refs: Vec<&str> = new
                    .as_ref()
                    .map(|t| t.entries.iter().map(|e| e.phx_ref.as_str()).collect())
                    .unwrap_or_default();
                let (gone, kept): (Vec<_>, Vec<_>) = r
                    .entries
                    .drain(..)
                    .partition(|(i, p)| *i == instance && !new_refs.contains(&p.phx_ref.as_str()));
                r.entries = kept;
                let mut added = Vec::new();
                if let Some(t) = new {
                    r.topic = t.topic;
                    for e in t.entries {
                        if !r
                            .entries
                            .iter()
                            .any(|(i, p)| *i == instance && p.phx_ref == e.phx_ref)
                        {
                            let p = PresenceEntry::from(e);
                            r.entries.push((instance, p.clone()));
                            added.push(p);
                        }
                    }
                }
                let gone: Vec<PresenceEntry> = gone.into_iter().map(|(_, p)| p).collect();
                if !added.is_empty() || !gone.is_empty() {
                    diffs.push((key.clone(), r.topic.clone(), added, gone));
                }
                if r.entries.is_empty() {
                    remote.remove(&key);
                }
            }
            for (key, t) in incoming {
                if t.entries.is_empty() {
                    continue;
                }
                let entries: Vec<PresenceEntry> =
                    t.entries.into_iter().map(PresenceEntry::from).collect();
                remote.insert(
                    key.clone(),
                    RemoteTopic {
                        topic: t.topic.clone(),
                        entries: entries.iter().map(|p| (instance, p.clone())).collect(),
                    },
                );
                diffs.push((key, t.topic, entries, Vec::new()));
            }
        }
        for (key, topic, added, gone) in diffs {
            self.forward_remote(&key, &topic, &added, &gone);
        }
    }

    /// Drops the presences of instances not heard from within [`PRESENCE_TTL`] (crashed or
    /// cut off), forwarding their leaves.
    pub fn expire_peers(&self, now: std::time::Instant) {
        let dead: Vec<uuid::Uuid> = {
            let mut peers = lock(&self.peers);
            let dead: Vec<uuid::Uuid> = peers
                .iter()
                .filter(|(_, seen)| now.saturating_duration_since(**seen) > PRESENCE_TTL)
                .map(|(i, _)| *i)
                .collect();
            for d in &dead {
                peers.remove(d);
            }
            dead
        };
        if dead.is_empty() {
            return;
        }
        let mut diffs = Vec::new();
        {
            let mut remote = lock(&self.remote);
            remote.retain(|key, r| {
                let (gone, kept): (Vec<_>, Vec<_>) =
                    r.entries.drain(..).partition(|(i, _)| dead.contains(i));
                r.entries = kept;
                if !gone.is_empty() {
                    diffs.push((
                        key.clone(),
                        r.topic.clone(),
                        gone.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
                    ));
                }
                !r.entries.is_empty()
            });
        }
        for (key, topic, gone) in diffs {
            self.forward_remote(&key, &topic, &[], &gone);
        }
    }

    fn forward_remote(
        &self,
        key: &str,
        topic: &str,
        joins: &[PresenceEntry],
        leaves: &[PresenceEntry],
    ) {
        if joins.is_empty() && leaves.is_empty() {
            return;
        }
        let diff = diff_payload(joins, leaves);
        self.with_topic(key, |t| self.send_presence(t, topic, &diff));
    }

    fn send_presence(&self, t: &Topic, topic: &str, diff: &str) {
        let mut frames: [Option<Frame>; 2] = [None, None];
        let mut n = 0;
        for m in &t.members {
            if !m.presence_enabled.load(Ordering::Relaxed) {
                continue;
            }
            let slot = &mut frames[m.socket.vsn as usize];
            let f = slot.get_or_insert_with(|| {
                Frame::Text(protocol::push(m.socket.vsn, topic, "presence_diff", diff).into())
            });
            m.socket.send(f.clone());
            n += 1;
        }
        self.metrics
            .messages
            .with_label_values(&["presence"])
            .inc_by(n);
    }

    /// Fans a user broadcast out to the topic's members. Returns how many got it.
    pub fn broadcast(&self, b: &Broadcast) -> usize {
        let mut text: [Option<Frame>; 2] = [None, None];
        let mut binary: Option<Option<Frame>> = None;
        let mut n = 0;
        self.with_topic(&b.key, |t| {
            for m in &t.members {
                if Some(m.id) == b.from && !m.broadcast_self {
                    continue;
                }
                let frame = if b.binary && m.socket.vsn == Vsn::V2 {
                    binary
                        .get_or_insert_with(|| {
                            protocol::encode_user_broadcast(&b.topic, &b.event, "", &b.body)
                                .map(Frame::Binary)
                        })
                        .clone()
                } else {
                    let BroadcastBody::Json(payload) = &b.body else {
                        // Raw bytes cannot travel in a JSON frame (vsn 1 sockets).
                        continue;
                    };
                    let slot = &mut text[m.socket.vsn as usize];
                    Some(
                        slot.get_or_insert_with(|| {
                            let p = format!(
                                r#"{{"type":"broadcast","event":{},"payload":{}}}"#,
                                Value::from(b.event.as_str()),
                                payload.get()
                            );
                            Frame::Text(
                                protocol::push(m.socket.vsn, &b.topic, "broadcast", &p).into(),
                            )
                        })
                        .clone(),
                    )
                };
                if let Some(f) = frame {
                    if m.socket.send(f) {
                        n += 1;
                    }
                }
            }
        });
        self.metrics
            .messages
            .with_label_values(&["broadcast"])
            .inc_by(n as u64);
        n
    }

    /// Members with postgres_changes bindings (a snapshot).
    pub fn pg_members(&self) -> Vec<Arc<Member>> {
        self.pg_members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Sends every channel with postgres_changes bindings a `system` push
    /// `{extension: "postgres_changes", status: "error", message, channel}` (the shape
    /// realtime-js hands to `channel.on('system', …)`). Returns how many channels got it.
    pub fn postgres_changes_error(&self, message: &str) -> usize {
        let mut n = 0;
        for m in self.pg_members() {
            let sub = m.topic.strip_prefix("realtime:").unwrap_or(&m.topic);
            let p = json!({"extension": "postgres_changes", "status": "error",
                           "message": message, "channel": sub});
            let f = protocol::push(m.socket.vsn, &m.topic, "system", &p.to_string());
            if m.socket.send(Frame::Text(f.into())) {
                n += 1;
            }
        }
        n
    }

    /// Number of topics with members.
    pub fn topic_count(&self) -> usize {
        self.topics.read().map(|t| t.len()).unwrap_or(0)
    }
}

fn new_phx_ref() -> String {
    use base64::Engine;
    let bytes: [u8; 12] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn meta_json(p: &PresenceEntry) -> Value {
    let mut meta = match &p.meta {
        Value::Object(o) => o.clone(),
        other => {
            let mut o = serde_json::Map::new();
            o.insert("payload".into(), other.clone());
            o
        }
    };
    meta.insert("phx_ref".into(), Value::from(p.phx_ref.clone()));
    Value::Object(meta)
}

fn group(entries: &[PresenceEntry]) -> Value {
    let mut out = serde_json::Map::new();
    for p in entries {
        let slot = out
            .entry(p.key.clone())
            .or_insert_with(|| json!({"metas": []}));
        if let Some(Value::Array(metas)) = slot.get_mut("metas") {
            metas.push(meta_json(p));
        }
    }
    Value::Object(out)
}

fn presence_state(entries: &[PresenceEntry]) -> String {
    group(entries).to_string()
}

fn diff_payload(joins: &[PresenceEntry], leaves: &[PresenceEntry]) -> String {
    json!({"joins": group(joins), "leaves": group(leaves)}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        Hub::new(HubMetrics::new(&prometheus::Registry::new()).unwrap())
    }

    fn member(
        hub: &Hub,
        topic: &str,
        vsn: Vsn,
        self_: bool,
    ) -> (Arc<Member>, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(8);
        let m = Arc::new(Member {
            id: hub.next_id(),
            socket: SocketHandle {
                id: hub.next_id(),
                vsn,
                tx,
                overflowed: Arc::new(AtomicBool::new(false)),
                pending: Arc::default(),
                direct: None,
                busy: Arc::default(),
            },
            topic: topic.into(),
            key: topic.into(),
            join_ref: json!("1"),
            broadcast_self: self_,
            broadcast_ack: false,
            presence_enabled: AtomicBool::new(true),
            presence_key: format!("k{}", hub.next_id()),
            pg: vec![],
            identity: RwLock::new(Arc::new(Identity::anon())),
            can_write: AtomicBool::new(true),
        });
        (m, rx)
    }

    fn text(f: Frame) -> Value {
        match f {
            Frame::Text(t) => serde_json::from_str(&t).unwrap(),
            Frame::Binary(_) => panic!("binary frame"),
        }
    }

    #[test]
    fn broadcast_respects_self_and_versions() {
        let h = hub();
        let (a, mut ra) = member(&h, "realtime:r", Vsn::V2, false);
        let (b, mut rb) = member(&h, "realtime:r", Vsn::V1, true);
        let (_c, mut rc) = member(&h, "realtime:other", Vsn::V2, true);
        h.join(a.clone());
        h.join(b.clone());
        h.join(_c.clone());
        let mut msg = Broadcast {
            key: "realtime:r".into(),
            topic: "realtime:r".into(),
            event: "ev".into(),
            body: BroadcastBody::json(&json!({"n": 1})),
            binary: false,
            from: Some(a.id),
        };
        assert_eq!(h.broadcast(&msg), 1);
        assert!(ra.try_recv().is_err(), "sender without self gets nothing");
        assert_eq!(
            text(rb.try_recv().unwrap()),
            json!({"join_ref":null,"ref":null,"topic":"realtime:r","event":"broadcast","payload":{"type":"broadcast","event":"ev","payload":{"n":1}}})
        );
        assert!(rc.try_recv().is_err(), "other topics get nothing");
        msg.from = Some(b.id);
        msg.binary = true;
        assert_eq!(h.broadcast(&msg), 2);
        assert!(matches!(ra.try_recv().unwrap(), Frame::Binary(f) if f[0] == 4));
        assert!(matches!(rb.try_recv().unwrap(), Frame::Text(_)));
    }

    #[test]
    fn presence_diffs_and_leave() {
        let h = hub();
        let (a, mut ra) = member(&h, "realtime:p", Vsn::V2, false);
        let (b, mut rb) = member(&h, "realtime:p", Vsn::V2, false);
        assert_eq!(h.join(a.clone()), "{}");
        h.join(b.clone());
        h.track(&a, json!({"user": "ann"}));
        let d = text(rb.try_recv().unwrap());
        assert_eq!(d[3], "presence_diff");
        let joins = &d[4]["joins"][&a.presence_key]["metas"][0];
        assert_eq!(joins["user"], "ann");
        assert!(joins["phx_ref"].is_string());
        let _ = ra.try_recv().unwrap();
        // b joining again sees a's state.
        let (c, _rc) = member(&h, "realtime:p", Vsn::V2, false);
        let state: Value = serde_json::from_str(&h.join(c)).unwrap();
        assert_eq!(state[&a.presence_key]["metas"][0]["user"], "ann");
        // Re-track replaces: the diff leaves the old ref and joins the new one.
        h.track(&a, json!({"user": "ann2"}));
        let d = text(rb.try_recv().unwrap());
        assert_eq!(d[4]["leaves"][&a.presence_key]["metas"][0]["user"], "ann");
        assert_eq!(d[4]["joins"][&a.presence_key]["metas"][0]["user"], "ann2");
        h.leave(&a);
        let d = text(rb.try_recv().unwrap());
        assert_eq!(d[4]["leaves"][&a.presence_key]["metas"][0]["user"], "ann2");
        assert_eq!(d[4]["joins"], json!({}));
    }

    #[test]
    fn full_outbox_marks_the_socket() {
        let h = hub();
        let (a, _ra) = member(&h, "realtime:s", Vsn::V2, true);
        h.join(a.clone());
        let msg = Broadcast {
            key: "realtime:s".into(),
            topic: "realtime:s".into(),
            event: "e".into(),
            body: BroadcastBody::json(&json!(1)),
            binary: false,
            from: None,
        };
        for _ in 0..8 {
            assert_eq!(h.broadcast(&msg), 1);
        }
        assert!(!a.socket.overflowed.load(Ordering::Relaxed));
        assert_eq!(h.broadcast(&msg), 0);
        assert!(a.socket.overflowed.load(Ordering::Relaxed));
    }

    #[test]
    fn remote_presences_diff_sync_and_expire() {
        let h = hub();
        let (a, mut ra) = member(&h, "realtime:p", Vsn::V2, false);
        h.join(a.clone());
        let peer = uuid::Uuid::new_v4();
        let t0 = std::time::Instant::now();
        let w = |k: &str, r: &str| WirePresence {
            key: k.into(),
            phx_ref: r.into(),
            meta: json!({"n": r}),
        };
        // A remote join reaches local members and later joiners' state; a repeat is silent.
        h.remote_diff(
            peer,
            "realtime:p",
            "realtime:p",
            vec![w("bob", "r1")],
            vec![],
            t0,
        );
        let d = text(ra.try_recv().unwrap());
        assert_eq!(d[4]["joins"]["bob"]["metas"][0]["phx_ref"], "r1");
        h.remote_diff(
            peer,
            "realtime:p",
            "realtime:p",
            vec![w("bob", "r1")],
            vec![],
            t0,
        );
        assert!(ra.try_recv().is_err());
        let (b, _rb) = member(&h, "realtime:p", Vsn::V2, false);
        let state: Value = serde_json::from_str(&h.join(b)).unwrap();
        assert_eq!(state["bob"]["metas"][0]["n"], "r1");
        // Remote presences of a topic nobody here has joined are kept for later joiners.
        h.remote_diff(
            peer,
            "realtime:q",
            "realtime:q",
            vec![w("cy", "r2")],
            vec![],
            t0,
        );
        let (c, _rc) = member(&h, "realtime:q", Vsn::V2, false);
        let state: Value = serde_json::from_str(&h.join(c)).unwrap();
        assert_eq!(state["cy"]["metas"][0]["n"], "r2");
        // A full state replaces: r1 left, r3 joined.
        h.remote_full(
            peer,
            vec![WireTopic {
                key: "realtime:p".into(),
                topic: "realtime:p".into(),
                entries: vec![w("bob", "r3")],
            }],
            t0,
        );
        let d = text(ra.try_recv().unwrap());
        assert_eq!(d[4]["leaves"]["bob"]["metas"][0]["phx_ref"], "r1");
        assert_eq!(d[4]["joins"]["bob"]["metas"][0]["phx_ref"], "r3");
        // Silence past the TTL: the peer's presences leave.
        h.expire_peers(t0 + PRESENCE_TTL / 2);
        assert!(ra.try_recv().is_err());
        h.expire_peers(t0 + PRESENCE_TTL * 2);
        let d = text(ra.try_recv().unwrap());
        assert_eq!(d[4]["leaves"]["bob"]["metas"][0]["phx_ref"], "r3");
        let (e, _re) = member(&h, "realtime:q", Vsn::V2, false);
        assert_eq!(h.join(e), "{}");
        // The expired peer counts as unknown again (its next message triggers a resync).
        assert!(!h.peer_seen(peer, t0 + PRESENCE_TTL * 2));
        assert!(h.peer_seen(peer, t0 + PRESENCE_TTL * 2));
    }

    #[test]
    fn ip_limits_and_buckets() {
        let h = hub();
        let a = h.admit_ip("1.2.3.4", 2).unwrap();
        let b = h.admit_ip("1.2.3.4", 2).unwrap();
        assert!(h.admit_ip("1.2.3.4", 2).is_none());
        assert!(h.admit_ip("5.6.7.8", 2).is_some());
        drop(a);
        let _c = h.admit_ip("1.2.3.4", 2).unwrap();
        drop(b);
        assert!(h.admit_ip("1.2.3.4", 0).is_some(), "0 = no limit");
        let t0 = std::time::Instant::now();
        let mut k = Bucket::new(3);
        assert!((0..3).all(|_| k.take(t0)));
        assert!(!k.take(t0));
        assert!(k.take(t0 + std::time::Duration::from_millis(400)));
        assert!(!k.take(t0 + std::time::Duration::from_millis(400)));
        let mut free = Bucket::new(0);
        assert!((0..10_000).all(|_| free.take(t0)));
    }

    #[test]
    fn empty_topics_are_dropped() {
        let h = hub();
        let (a, _ra) = member(&h, "realtime:e", Vsn::V2, true);
        h.join(a.clone());
        assert_eq!(h.topic_count(), 1);
        h.leave(&a);
        assert_eq!(h.topic_count(), 0);
    }
}
