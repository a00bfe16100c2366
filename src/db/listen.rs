//! The process's ONE LISTEN connection (ARCHITECTURE §5), shared by every module that waits
//! for NOTIFY: the schema cache (`pgrst`), realtime (`fluxbase_realtime`) and the job
//! workers (`fluxbase_jobs`).
//!
//! A module subscribes with the channels it wants and gets, in the connection's order, the
//! notifications of those channels and two kinds of news about the connection:
//! [`Event::Listening`] once its channels are listened to (at the first connect and after
//! every reconnect: notifications sent before may have been missed, so the subscriber does
//! its own catch-up — reload, refetch, poll) and [`Event::Lost`] when the connection drops.
//! The connection reconnects with capped exponential backoff and LISTENs again on every
//! channel still wanted; a periodic round trip notices a connection that died silently.
//!
//! The connection's `application_name` is the configured one plus ` listener`, so it can be
//! told apart in `pg_stat_activity`.
//!
//! Must not: run anything but LISTEN/UNLISTEN and the liveness round trip on its connection,
//! or wait on a subscriber (delivery is through unbounded queues; each subscriber drains its
//! own).

use futures_util::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A notification on one of the subscriber's channels.
    Notification {
        /// The channel.
        channel: String,
        /// The payload.
        payload: String,
    },
    /// The subscriber's channels are listened to from now on. Anything sent on them before
    /// may have been missed: catch up. `resumed` is true after a lost connection (a real gap),
    /// false the first time.
    Listening {
        /// The connection had been lost since this subscriber last heard `Listening`.
        resumed: bool,
    },
    /// The connection is lost; notifications are missed until the next `Listening`.
    Lost,
}

/// First wait before reconnecting; doubled per failed attempt up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle connection is checked with a round trip.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A liveness round trip slower than this counts as a lost connection.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// Never told `Listening`.
    Nothing,
    /// Told `Listening` (and not `Lost` since).
    Listening,
    /// Told `Lost` after a `Listening`.
    Lost,
}

struct Sub {
    channels: Vec<String>,
    tx: mpsc::UnboundedSender<Event>,
    told: Told,
}

#[derive(Default)]
struct State {
    subs: HashMap<u64, Sub>,
    next_id: u64,
}

impl State {
    fn wanted(&self) -> BTreeSet<String> {
        self.subs
            .values()
            .flat_map(|s| s.channels.iter().cloned())
            .collect()
    }
}

enum Cmd {
    Subscribe(u64),
    Unsubscribe,
}

struct Inner {
    state: Mutex<State>,
    cmd: mpsc::UnboundedSender<Cmd>,
    connected: AtomicBool,
    stop: watch::Sender<bool>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a notification to every subscriber of its channel (closed ones are dropped at
    /// their `Unsubscribe`).
    fn dispatch(&self, channel: &str, payload: &str) {
        let state = self.state();
        for s in state.subs.values() {
            if s.channels.iter().any(|c| c == channel) {
                let _ = s.tx.send(Event::Notification {
                    channel: channel.to_string(),
                    payload: payload.to_string(),
                });
            }
        }
    }

    /// Tells `Listening` to the subscribers (all, or one) whose channels are all listened
    /// to and who have not been told since the connection came up.
    fn announce(&self, listening: &BTreeSet<String>, only: Option<u64>) {
        let mut state = self.state();
        for (id, s) in state.subs.iter_mut() {
            if only.is_some_and(|o| o != *id) || s.told == Told::Listening {
                continue;
            }
            if s.channels.iter().all(|c| listening.contains(c)) {
                let resumed = s.told == Told::Lost;
                let _ = s.tx.send(Event::Listening { resumed });
                s.told = Told::Listening;
            }
        }
    }

    /// Tells `Lost` to every subscriber that was listening.
    fn lost(&self) {
        let mut state = self.state();
        for s in state.subs.values_mut() {
            if s.told == Told::Listening {
                let _ = s.tx.send(Event::Lost);
                s.told = Told::Lost;
            }
        }
    }
}

/// The shared LISTEN connection of a process. Cheap to clone.
#[derive(Clone)]
pub struct Listener {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// The `application_name` of the listener connection for a pool's settings.
pub fn application_name(pg: &tokio_postgres::Config) -> String {
    format!(
        "{} listener",
        pg.get_application_name().unwrap_or("fluxbase")
    )
}

impl Listener {
    /// Starts the listener task on the current runtime. It connects at once and keeps a
    /// connection (reconnecting with backoff) until [`Listener::stop`] or the runtime ends.
    pub fn start(pg: &tokio_postgres::Config) -> Listener {
        let mut pg = pg.clone();
        pg.application_name(application_name(&pg));
        let (cmd, cmds) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            cmd,
            connected: AtomicBool::new(false),
            stop,
        });
        tokio::spawn(run(inner.clone(), cmds, stopped, pg));
        Listener { inner }
    }

    /// Subscribes to `channels` (plain identifiers: they are double-quoted as given). The
    /// first event is `Listening` once they are listened to.
    pub fn subscribe(&self, channels: &[&str]) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.inner.state();
            state.next_id += 1;
            let id = state.next_id;
            state.subs.insert(
                id,
                Sub {
                    channels: channels.iter().map(|c| c.to_string()).collect(),
                    tx,
                    told: Told::Nothing,
                },
            );
            id
        };
        let _ = self.inner.cmd.send(Cmd::Subscribe(id));
        Subscription {
            id,
            rx,
            inner: self.inner.clone(),
        }
    }

    /// Whether the connection is up and listening.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Closes the connection for good (before the database stops, so no reconnect noise).
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
    }
}

/// One subscriber's stream of [`Event`]s. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    rx: mpsc::UnboundedReceiver<Event>,
    inner: Arc<Inner>,
}

impl Subscription {
    /// The next event; `None` once the listener has stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.state().subs.remove(&self.id);
        let _ = self.inner.cmd.send(Cmd::Unsubscribe);
    }
}

fn statements(verb: &str, channels: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    channels
        .into_iter()
        .map(|c| format!("{verb} {}", crate::db::quote_ident(c.as_ref())))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn run(
    inner: Arc<Inner>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut stop: watch::Receiver<bool>,
    pg: tokio_postgres::Config,
) {
    let mut backoff = MIN_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let connected = tokio::select! {
            c = pg.connect(tokio_postgres::NoTls) => c,
            _ = stop.changed() => break,
        };
        match connected {
            Ok((client, mut conn)) => {
                let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<String>();
                // Notifications that arrive before the subscribers are told `Listening` are
                // held until then, so after a gap the news comes before what follows it.
                let (arm, mut armed_rx) = tokio::sync::oneshot::channel::<()>();
                let pump_inner = inner.clone();
                let pump = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    let mut held: Option<Vec<(String, String)>> = Some(Vec::new());
                    let why = loop {
                        tokio::select! {
                            m = messages.next() => match m {
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                    match held.as_mut() {
                                        Some(h) => h.push((n.channel().into(), n.payload().into())),
                                        None => pump_inner.dispatch(n.channel(), n.payload()),
                                    }
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => break e.to_string(),
                                None => break "connection closed".to_string(),
                            },
                            _ = &mut armed_rx, if held.is_some() => {
                                for (c, p) in held.take().unwrap_or_default() {
                                    pump_inner.dispatch(&c, &p);
                                }
                            }
                        }
                    };
                    let _ = gone_tx.send(why);
                });
                let mut listening: BTreeSet<String> = inner.state().wanted();
                let first = statements("LISTEN", &listening);
                let ok = first.is_empty() || client.batch_execute(&first).await.is_ok();
                if ok {
                    if failures > 0 {
                        tracing::info!("database listener reconnected");
                    }
                    backoff = MIN_BACKOFF;
                    failures = 0;
                    inner.connected.store(true, Ordering::Release);
                    inner.announce(&listening, None);
                    let _ = arm.send(());
                    let mut ping = tokio::time::interval(PING_EVERY);
                    ping.reset();
                    let why = loop {
                        tokio::select! {
                            why = &mut gone => break why.unwrap_or_default(),
                            _ = stop.changed() => break String::new(),
                            _ = ping.tick() => {
                                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("")).await {
                                    Ok(Ok(_)) => {}
                                    Ok(Err(e)) => break e.to_string(),
                                    Err(_) => break "no answer to the liveness check".into(),
                                }
                            }
                            cmd = cmds.recv() => {
                                let Some(cmd) = cmd else { break String::new() };
                                let wanted = inner.state().wanted();
                                let r = match cmd {
                                    Cmd::Subscribe(id) => {
                                        let new: Vec<&String> = wanted.difference(&listening).collect();
                                        let r = if new.is_empty() {
                                            Ok(())
                                        } else {
                                            client.batch_execute(&statements("LISTEN", new)).await
                                        };
                                        if r.is_ok() {
                                            listening.extend(wanted.iter().cloned());
                                            inner.announce(&listening, Some(id));
                                        }
                                        r
                                    }
                                    Cmd::Unsubscribe => {
                                        let old: Vec<String> = listening.difference(&wanted).cloned().collect();
                                        if old.is_empty() {
                                            Ok(())
                                        } else {
                                            listening.retain(|c| wanted.contains(c));
                                            client.batch_execute(&statements("UNLISTEN", old)).await
                                        }
                                    }
                                };
                                if let Err(e) = r {
                                    break e.to_string();
                                }
                            }
                        }
                    };
                    inner.connected.store(false, Ordering::Release);
                    inner.lost();
                    if *stop.borrow() {
                        pump.abort();
                        break;
                    }
                    tracing::warn!(error = %why, "database listener connection lost; reconnecting");
                } else {
                    tracing::warn!("database listener: LISTEN failed; reconnecting");
                }
                pump.abort();
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "database listener cannot connect; retrying");
                } else {
                    tracing::debug!(error = %e, "database listener cannot connect");
                }
            }
        }
        failures += 1;
        // Subscriptions made meanwhile are handled at the next connect.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        while cmds.try_recv().is_ok() {}
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    inner.connected.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_channels() {
        assert_eq!(
            statements("LISTEN", ["pgrst", "a\"b"]),
            "LISTEN \"pgrst\"; LISTEN \"a\"\"b\""
        );
        assert_eq!(statements("LISTEN", Vec::<String>::new()), "");
    }

    fn inner() -> (Arc<Inner>, mpsc::UnboundedReceiver<Cmd>) {
        let (cmd, cmds) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        (
            Arc::new(Inner {
                state: Mutex::new(State::default()),
                cmd,
                connected: AtomicBool::new(false),
                stop,
            }),
            cmds,
        )
    }

    #[tokio::test]
    async fn events_follow_the_connection_per_subscriber() {
        let (inner, _cmds) = inner();
        let l = Listener {
            inner: inner.clone(),
        };
        let mut a = l.subscribe(&["x", "y"]);
        let mut b = l.subscribe(&["y"]);
        // Only y is up: b is told, a waits for x.
        let up: BTreeSet<String> = ["y".to_string()].into();
        inner.announce(&up, None);
        assert_eq!(b.try_recv(), Some(Event::Listening { resumed: false }));
        assert_eq!(a.try_recv(), None);
        let up: BTreeSet<String> = ["x".to_string(), "y".to_string()].into();
        inner.announce(&up, None);
        assert_eq!(a.try_recv(), Some(Event::Listening { resumed: false }));
        assert_eq!(b.try_recv(), None, "told once per connection");
        inner.dispatch("y", "1");
        inner.dispatch("x", "2");
        inner.dispatch("z", "3");
        let n = |c: &str, p: &str| Event::Notification {
            channel: c.into(),
            payload: p.into(),
        };
        assert_eq!(a.try_recv(), Some(n("y", "1")));
        assert_eq!(a.try_recv(), Some(n("x", "2")));
        assert_eq!(a.try_recv(), None);
        assert_eq!(b.try_recv(), Some(n("y", "1")));
        assert_eq!(b.try_recv(), None);
        // A gap: both lose and then resume.
        inner.lost();
        inner.announce(&up, None);
        for s in [&mut a, &mut b] {
            assert_eq!(s.try_recv(), Some(Event::Lost));
            assert_eq!(s.try_recv(), Some(Event::Listening { resumed: true }));
        }
        // Dropping unsubscribes: no more deliveries, y is no longer wanted by b.
        drop(b);
        assert_eq!(inner.state().wanted(), up);
        drop(a);
        assert!(inner.state().wanted().is_empty());
    }
}
