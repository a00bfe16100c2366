//! The hub of one process: which channel members listen on which topic, presence state per
//! topic, and fan-out. Messages are serialised once per protocol version and handed to each
//! socket's bounded outbox; a socket whose outbox is full is disconnected (a slow consumer
//! must not grow the server's memory).

use super::protocol::{self, BroadcastBody, Frame, Vsn};
use super::Identity;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;

/// Frames a socket may have queued before it counts as too slow and is closed.
pub const OUTBOX_CAPACITY: usize = 1024;

/// The sending side of one websocket.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    /// Process-unique socket id.
    pub id: u64,
    /// Protocol version of the socket.
    pub vsn: Vsn,
    /// The socket's outbox.
    pub tx: mpsc::Sender<Frame>,
    /// Set when the outbox overflowed; the socket closes itself.
    pub overflowed: Arc<AtomicBool>,
}

impl SocketHandle {
    /// Queues a frame; a full outbox marks the socket for closing, a closed one is ignored
    /// (the socket is going away and its channels are being removed).
    pub fn send(&self, frame: Frame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
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
        registry.register(Box::new(slow_disconnects.clone()))?;
        Ok(HubMetrics {
            connections,
            channels,
            messages,
            slow_disconnects,
        })
    }
}

/// Topics, members and presence of this process.
pub struct Hub {
    topics: RwLock<HashMap<String, Mutex<Topic>>>,
    /// Members with postgres_changes bindings (the change listener scans these).
    pg_members: RwLock<HashMap<u64, Arc<Member>>>,
    next_id: AtomicU64,
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
            pg_members: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            instance: uuid::Uuid::new_v4(),
            metrics,
        }
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
            self.pg_members
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(member.id, member.clone());
        }
        self.metrics.channels.inc();
        let key = member.key.clone();
        let add = |t: &mut Topic| {
            t.members.push(member.clone());
            presence_state(&t.presence)
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
        self.pg_members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&member.id);
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
            let diff = diff_payload(&[entry], &old);
            self.send_presence(t, &member.topic, &diff);
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
            }
        });
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
                            let p =
                                json!({"type": "broadcast", "event": b.event, "payload": payload});
                            Frame::Text(
                                protocol::push(m.socket.vsn, &b.topic, "broadcast", &p.to_string())
                                    .into(),
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
            body: BroadcastBody::Json(json!({"n": 1})),
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
            body: BroadcastBody::Json(json!(1)),
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
    fn empty_topics_are_dropped() {
        let h = hub();
        let (a, _ra) = member(&h, "realtime:e", Vsn::V2, true);
        h.join(a.clone());
        assert_eq!(h.topic_count(), 1);
        h.leave(&a);
        assert_eq!(h.topic_count(), 0);
    }
}
