//! Load tool of the realtime benchmark (`bench/realtime.sh` builds it in release mode).
//!
//! Opens N websocket clients, either to Fluxbase's `/realtime/v1/websocket` (Phoenix vsn 2
//! frames: join, wait for the ok reply and, for postgres_changes, the `system` "Subscribed to
//! PostgreSQL" push; heartbeat every 20 s) or to the reference (`bench/realtime_ref.rs`: no
//! protocol, it says `ready` once the client is registered). Then it produces numbered events
//! at a fixed rate and counts, per client, which ids arrived:
//!
//! - `changes`: rows inserted into `--table` (`id bigint primary key, sent_at bigint default
//!   clock_timestamp in µs, body text`) by `--insert-conns` tokio-postgres connections,
//!   round robin, pipelined, ids sequential from `max(id) + 1`.
//! - `broadcast`: one more websocket client joined to `realtime:bcast` pushes
//!   `{"type":"broadcast","event":"b","payload":{"id":N,"sent_at":µs}}`; subscribers joined
//!   with `broadcast.self = false`.
//! - `idle`: open and join, print `READY`, hold until SIGTERM/SIGINT or `--hold-secs`.
//!
//! Latency = the receiver's wall clock (µs) − `sent_at` (same machine, same clock). After the
//! last send the tool waits until every expected delivery arrived or `--drain-secs` passed,
//! then prints one `RESULT key=value …` line. CPU time of the processes named in `--cpu`
//! (`name=pid`, `name=pid+` to add its children, live and reaped) and of the tool itself is
//! measured over the window from the first send to the end of the drain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{Parser, ValueEnum};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Changes,
    Broadcast,
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Fluxbase,
    Ref,
}

#[derive(Parser, Debug)]
#[command(about = "Realtime load generator (bench/realtime.sh)")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, value_enum, default_value = "fluxbase")]
    target: Target,
    /// Base URL of the server, e.g. ws://127.0.0.1:18400
    #[arg(long)]
    url: String,
    /// tokio-postgres connection string (key=value) of the database: keys and inserts.
    #[arg(long)]
    pg: String,
    /// Table of the changes mode (and of the idle mode's joins).
    #[arg(long, default_value = "bench_pub")]
    table: String,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    subs: usize,
    /// Events per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20.0)]
    secs: f64,
    /// Each subscriber joins with its own user JWT (role authenticated, random sub).
    #[arg(long)]
    user_tokens: bool,
    /// Connections opened (and joined) at a time.
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
    /// Longest wait for the outstanding deliveries after the last send.
    #[arg(long, default_value_t = 10.0)]
    drain_secs: f64,
    /// Inserting connections (changes mode).
    #[arg(long, default_value_t = 4)]
    insert_conns: usize,
    /// Runtime worker threads of the tool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Idle mode: hold this long at most (SIGTERM ends it sooner).
    #[arg(long, default_value_t = 600.0)]
    hold_secs: f64,
    /// Processes whose CPU time is reported: name=pid or name=pid+ (with children).
    #[arg(long, value_delimiter = ',')]
    cpu: Vec<String>,
    /// Free text copied into the RESULT line (round, scenario).
    #[arg(long, default_value = "-")]
    label: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// State shared by the client tasks.
struct Shared {
    mode: Mode,
    target: Target,
    url: String,
    table: String,
    /// First id of the run (changes: max(id) + 1; broadcast: 0).
    base: AtomicU64,
    /// Ids that can arrive (bitmap size).
    capacity: usize,
    permits: Semaphore,
    ready: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// Id-bearing frames received by all clients (the drain waits on it).
    received: AtomicU64,
    stop: watch::Receiver<bool>,
}

#[derive(Default)]
struct ClientResult {
    /// Latencies in µs.
    lat: Vec<u32>,
    /// Which ids arrived.
    seen: Vec<u64>,
    unique: u64,
    dups: u64,
    /// Ids outside the run's range.
    stray: u64,
    last_recv_us: u64,
    /// The server closed the socket (or it failed) before the end: the reason.
    closed: Option<String>,
    joined: bool,
}

/// Finds `{"id":N` and then `"sent_at":M` in a frame (the record's first column is `id`;
/// a broadcast payload is `{"id":N,"sent_at":M}` in either key order).
fn parse_ids(s: &str) -> Option<(u64, u64)> {
    let b = s.as_bytes();
    let i = s.find("{\"id\":")? + 6;
    let id = digits(&b[i..])?;
    let j = s.find("\"sent_at\":")? + 10;
    let sent = digits(&b[j..])?;
    Some((id, sent))
}

fn digits(b: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    let mut any = false;
    for &c in b {
        if c.is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(n)
}

fn join_frame(topic: &str, config: serde_json::Value, token: Option<&str>) -> String {
    let mut payload = serde_json::json!({ "config": config });
    if let Some(t) = token {
        payload["access_token"] = t.into();
    }
    serde_json::json!(["1", "1", topic, "phx_join", payload]).to_string()
}

fn changes_config(table: &str) -> serde_json::Value {
    serde_json::json!({
        "broadcast": {"self": false},
        "presence": {"enabled": false},
        "postgres_changes": [{"event": "INSERT", "schema": "public", "table": table}]
    })
}

fn bcast_config() -> serde_json::Value {
    serde_json::json!({"broadcast": {"self": false}, "presence": {"enabled": false}})
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> Result<Ws, String> {
    // 16 KiB read buffers (tungstenite's default is 128 KiB, 640 MB for 5,000 clients).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024);
    let fut = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect: timeout".into()),
    }
}

/// Opens and (Fluxbase) joins; returns the socket once it is ready to receive.
async fn setup(sh: &Shared, token: Option<&str>) -> Result<Ws, String> {
    let mut ws = open(&sh.url).await?;
    let (frame, want_system) = match (sh.target, sh.mode) {
        (Target::Ref, _) => (None, false),
        (Target::Fluxbase, Mode::Broadcast) => (
            Some(join_frame("realtime:bcast", bcast_config(), token)),
            false,
        ),
        (Target::Fluxbase, _) => (
            Some(join_frame(
                "realtime:bench",
                changes_config(&sh.table),
                token,
            )),
            true,
        ),
    };
    if let Some(f) = frame {
        ws.send(Message::Text(f.into()))
            .await
            .map_err(|e| format!("send join: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut replied, mut subscribed) = (sh.target == Target::Ref, !want_system);
    while !(replied && subscribed) {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return Err("join: no reply within 60 s".into()),
            Ok(None) => return Err("join: socket closed".into()),
            Ok(Some(Err(e))) => return Err(format!("join: {e}")),
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(t) = m else {
            if let Message::Close(c) = m {
                return Err(format!("join: closed by the server: {c:?}"));
            }
            continue;
        };
        let t = t.as_str();
        match sh.target {
            Target::Ref => {
                if t == "ready" {
                    replied = true;
                }
            }
            Target::Fluxbase => {
                if t.contains("\"phx_reply\"") {
                    if t.contains("\"status\":\"ok\"") {
                        replied = true;
                    } else {
                        return Err(format!("join refused: {t}"));
                    }
                } else if t.contains("\"system\"") {
                    if t.contains("Subscribed to PostgreSQL") {
                        subscribed = true;
                    } else {
                        return Err(format!("join: system message {t}"));
                    }
                }
            }
        }
    }
    Ok(ws)
}

async fn client(sh: Arc<Shared>, token: Option<String>) -> ClientResult {
    let mut res = ClientResult::default();
    let ws = {
        let _permit = sh.permits.acquire().await;
        setup(&sh, token.as_deref()).await
    };
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            sh.failed.fetch_add(1, Ordering::Relaxed);
            let mut g = sh.first_error.lock().unwrap_or_else(|p| p.into_inner());
            g.get_or_insert(e);
            return res;
        }
    };
    res.joined = true;
    sh.ready.fetch_add(1, Ordering::Relaxed);
    if sh.mode != Mode::Idle {
        res.seen = vec![0u64; sh.capacity.div_ceil(64)];
        res.lat = Vec::with_capacity(sh.capacity);
    }
    let mut stop = sh.stop.clone();
    // Heartbeats every 20 s (Fluxbase closes sockets quiet for 60 s), spread over clients.
    let jitter = Duration::from_millis(rand_ms(20_000));
    let mut hb = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(20) + jitter,
        Duration::from_secs(20),
    );
    let heartbeat = r#"[null,"h","phoenix","heartbeat",{}]"#;
    loop {
        tokio::select! {
            m = ws.next() => {
                match m {
                    Some(Ok(Message::Text(t))) => {
                        let Some((id, sent)) = parse_ids(t.as_str()) else { continue };
                        let now = now_us();
                        sh.received.fetch_add(1, Ordering::Relaxed);
                        res.last_recv_us = now;
                        let base = sh.base.load(Ordering::Relaxed);
                        let idx = id.wrapping_sub(base) as usize;
                        if id < base || idx >= sh.capacity {
                            res.stray += 1;
                            continue;
                        }
                        let (w, bit) = (idx / 64, 1u64 << (idx % 64));
                        if res.seen[w] & bit != 0 {
                            res.dups += 1;
                            continue;
                        }
                        res.seen[w] |= bit;
                        res.unique += 1;
                        res.lat.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                    }
                    Some(Ok(Message::Close(c))) => {
                        res.closed = Some(format!("closed by the server: {c:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        res.closed = Some(format!("socket error: {e}"));
                        break;
                    }
                    None => {
                        res.closed = Some("socket ended".into());
                        break;
                    }
                }
            }
            _ = hb.tick(), if sh.target == Target::Fluxbase => {
                if let Err(e) = ws.send(Message::Text(heartbeat.into())).await {
                    res.closed = Some(format!("heartbeat send: {e}"));
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    if res.closed.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    res
}

fn name(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

fn rand_ms(max: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % max as u128) as u64
}

/// utime + stime (+ reaped children's, + live children's when `children`) in clock ticks.
fn proc_ticks(pid: u32, children: bool) -> u64 {
    fn fields(pid: &str) -> Option<Vec<u64>> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        // After the comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
        Some(
            rest.split_whitespace()
                .enumerate()
                .map(|(i, f)| if i == 0 { 0 } else { f.parse().unwrap_or(0) })
                .collect(),
        )
    }
    let Some(f) = fields(&pid.to_string()) else {
        return 0;
    };
    let mut t = f[11] + f[12];
    if children {
        t += f[13] + f[14];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(n) = name.to_str() else { continue };
                if !n.bytes().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                if let Some(c) = fields(n) {
                    if c.get(1) == Some(&(pid as u64)) {
                        t += c[11] + c[12];
                    }
                }
            }
        }
    }
    t
}

struct CpuProbe {
    names: Vec<(String, u32, bool)>,
}

impl CpuProbe {
    fn parse(specs: &[String]) -> CpuProbe {
        let mut names = vec![("tool".to_string(), std::process::id(), false)];
        for s in specs {
            if let Some((n, p)) = s.split_once('=') {
                let children = p.ends_with('+');
                if let Ok(pid) = p.trim_end_matches('+').parse() {
                    names.push((n.to_string(), pid, children));
                }
            }
        }
        CpuProbe { names }
    }
    fn sample(&self) -> Vec<u64> {
        self.names
            .iter()
            .map(|(_, pid, ch)| proc_ticks(*pid, *ch))
            .collect()
    }
    /// `cpu_<name>_pct=…` over `secs` (100 = one core busy).
    fn report(&self, a: &[u64], b: &[u64], secs: f64) -> String {
        let tck = 100.0; // USER_HZ on Linux
        self.names
            .iter()
            .zip(a.iter().zip(b))
            .map(|((n, _, _), (x, y))| {
                format!(
                    " cpu_{n}_pct={:.1}",
                    (y.saturating_sub(*x)) as f64 / tck / secs * 100.0
                )
            })
            .collect()
    }
}

async fn pg_connect(conn: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("postgres: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection: {e}");
        }
    });
    Ok(client)
}

/// The anon key and, when asked, one user token per subscriber, signed with the project's
/// secret from `fluxbase.settings` exactly as the server derives them.
async fn keys(pg: &tokio_postgres::Client, users: usize) -> Result<(String, Vec<String>), String> {
    let get = |k: &'static str| async move {
        pg.query_one("SELECT value FROM fluxbase.settings WHERE key = $1", &[&k])
            .await
            .map(|r| r.get::<_, String>(0))
            .map_err(|e| format!("fluxbase.settings {k}: {e}"))
    };
    let secret = get("jwt_secret").await?;
    let issued: i64 = get("keys_issued_at")
        .await?
        .parse()
        .map_err(|e| format!("keys_issued_at: {e}"))?;
    let roles = vec!["anon".into(), "authenticated".into(), "service_role".into()];
    let k = fluxbase::auth::jwt::JwtKeys::new(&secret, 0, roles);
    let anon = k.api_key("anon", issued).map_err(|e| e.to_string())?;
    let now = (now_us() / 1_000_000) as i64;
    let mut tokens = Vec::with_capacity(users);
    for _ in 0..users {
        let mut c = fluxbase::auth::jwt::Claims::new();
        c.insert("sub".into(), uuid::Uuid::new_v4().to_string().into());
        c.insert("role".into(), "authenticated".into());
        c.insert("aud".into(), "authenticated".into());
        c.insert("iat".into(), now.into());
        c.insert("exp".into(), (now + 3 * 3600).into());
        tokens.push(k.sign(&c).map_err(|e| e.to_string())?);
    }
    Ok((anon, tokens))
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn run(args: Args) -> Result<(), String> {
    let pg = pg_connect(&args.pg).await?;
    let (anon, tokens) = keys(
        &pg,
        if args.user_tokens && args.target == Target::Fluxbase {
            args.subs
        } else {
            0
        },
    )
    .await?;
    let url = match args.target {
        Target::Fluxbase => format!(
            "{}/realtime/v1/websocket?apikey={anon}&vsn=2.0.0",
            args.url.trim_end_matches('/')
        ),
        Target::Ref => format!("{}/", args.url.trim_end_matches('/')),
    };
    let n_events = (args.rate * args.secs).round().max(1.0) as u64;
    let base = match args.mode {
        Mode::Changes => {
            let q = format!(
                "SELECT coalesce(max(id), 0) + 1 FROM public.{}",
                args.table.replace('"', "")
            );
            pg.query_one(q.as_str(), &[])
                .await
                .map_err(|e| format!("max(id): {e}"))?
                .get::<_, i64>(0) as u64
        }
        _ => 1,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let sh = Arc::new(Shared {
        mode: args.mode,
        target: args.target,
        url: url.clone(),
        table: args.table.clone(),
        base: AtomicU64::new(base),
        capacity: n_events as usize,
        permits: Semaphore::new(args.connect_concurrency.max(1)),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        received: AtomicU64::new(0),
        stop: stop_rx,
    });
    let t_setup = Instant::now();
    let mut handles = Vec::with_capacity(args.subs);
    for i in 0..args.subs {
        let token = tokens.get(i).cloned();
        handles.push(tokio::spawn(client(sh.clone(), token)));
    }
    let setup_deadline = Instant::now() + Duration::from_secs(300);
    while sh.ready.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed) < args.subs {
        if Instant::now() > setup_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = sh.ready.load(Ordering::Relaxed);
    let failed = sh.failed.load(Ordering::Relaxed);
    let setup_s = t_setup.elapsed().as_secs_f64();
    let first_error = sh
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(e) = &first_error {
        eprintln!("NOTE {failed} clients failed to join; first error: {e}");
    }
    let probe = CpuProbe::parse(&args.cpu);

    if args.mode == Mode::Idle {
        println!(
            "READY target={} subs={} ready={ready} join_failed={failed} setup_s={setup_s:.1}",
            name(args.target),
            args.subs
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = tokio::time::sleep(Duration::from_secs_f64(args.hold_secs)) => {}
        }
        let _ = stop_tx.send(true);
        let mut closed = 0;
        let mut reason = None;
        for h in handles {
            if let Ok(r) = h.await {
                if let Some(c) = r.closed {
                    closed += 1;
                    reason.get_or_insert(c);
                }
            }
        }
        println!(
            "RESULT mode=idle target={} label={} subs={} ready={ready} join_failed={failed} closed_early={closed}",
            name(args.target), args.label, args.subs
        );
        if let Some(r) = reason {
            eprintln!("NOTE first early close: {r}");
        }
        return Ok(());
    }

    // Let the last joins settle (the server registers a member before replying).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = probe.sample();
    let t0 = Instant::now();
    // The producer runs on its own thread and runtime, so the receivers' work never delays
    // its ticks.
    let (produced, release) = spawn_producer(Produce {
        mode: args.mode,
        pg: args.pg.clone(),
        table: args.table.clone(),
        url: url.clone(),
        base,
        n: n_events,
        rate: args.rate,
        conns: args.insert_conns.max(1),
    });
    let p = produced
        .await
        .map_err(|_| "the producer thread died".to_string())??;
    let Produced {
        first_send_us,
        last_send_us,
        sent,
        send_errors,
        first_error: first_send_error,
    } = p;
    let send_s = t0.elapsed().as_secs_f64();
    let actual_rate = if last_send_us > first_send_us {
        (n_events.saturating_sub(1)) as f64 / ((last_send_us - first_send_us) as f64 / 1e6)
    } else {
        0.0
    };
    let expected = sent * args.subs as u64;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_secs);
    while sh.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window_s = t0.elapsed().as_secs_f64();
    let cpu1 = probe.sample();
    let _ = stop_tx.send(true);
    let _ = release.send(());

    let mut lat: Vec<u32> = Vec::with_capacity(expected as usize);
    let (mut unique, mut dups, mut stray, mut closed, mut last_recv) = (0u64, 0u64, 0u64, 0, 0u64);
    let mut close_reason: Option<String> = None;
    let mut short_clients = 0usize; // joined clients that missed at least one event
    for h in handles {
        let Ok(r) = h.await else { continue };
        unique += r.unique;
        dups += r.dups;
        stray += r.stray;
        last_recv = last_recv.max(r.last_recv_us);
        if r.joined && r.unique < sent {
            short_clients += 1;
        }
        if let Some(c) = r.closed {
            closed += 1;
            close_reason.get_or_insert(c);
        }
        lat.extend_from_slice(&r.lat);
    }
    lat.sort_unstable();
    let delivered_pct = if expected > 0 {
        unique as f64 / expected as f64 * 100.0
    } else {
        0.0
    };
    let span_s = if last_recv > first_send_us {
        (last_recv - first_send_us) as f64 / 1e6
    } else {
        f64::NAN
    };
    let max_ms = lat.last().map_or(f64::NAN, |v| *v as f64 / 1000.0);
    println!(
        "RESULT mode={} target={} label={} subs={} ready={ready} join_failed={failed} setup_s={setup_s:.1} \
         rate={} actual_rate={actual_rate:.2} secs={} send_s={send_s:.2} sent={sent} send_errors={send_errors} \
         expected={expected} received={unique} delivered_pct={delivered_pct:.3} deliveries_per_s={:.0} \
         p50_ms={:.2} p95_ms={:.2} p99_ms={:.2} max_ms={max_ms:.2} dups={dups} stray={stray} \
         short_clients={short_clients} closed_early={closed} window_s={window_s:.2}{}",
        name(args.mode),
        name(args.target),
        args.label,
        args.subs,
        args.rate,
        args.secs,
        unique as f64 / span_s,
        pct(&lat, 50.0),
        pct(&lat, 95.0),
        pct(&lat, 99.0),
        probe.report(&cpu0, &cpu1, window_s),
    );
    if let Some(e) = first_send_error {
        eprintln!("NOTE first send error: {e}");
    }
    if let Some(r) = close_reason {
        eprintln!("NOTE {closed} sockets closed before the end; first: {r}");
    }
    Ok(())
}

/// What the producer does.
struct Produce {
    mode: Mode,
    pg: String,
    table: String,
    url: String,
    base: u64,
    n: u64,
    rate: f64,
    conns: usize,
}

/// What it did.
#[derive(Default)]
struct Produced {
    first_send_us: u64,
    last_send_us: u64,
    sent: u64,
    send_errors: u64,
    first_error: Option<String>,
}

type ProduceResult = Result<Produced, String>;

/// Starts the producer on its own thread (a current-thread runtime). It reports when done,
/// and keeps its connections (the broadcast sender's socket) until `release` is signalled.
fn spawn_producer(
    p: Produce,
) -> (
    tokio::sync::oneshot::Receiver<ProduceResult>,
    std::sync::mpsc::Sender<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut keep = None;
            let r = produce(p, &mut keep).await;
            let _ = tx.send(r);
            loop {
                if !matches!(
                    release_rx.try_recv(),
                    Err(std::sync::mpsc::TryRecvError::Empty)
                ) {
                    break;
                }
                match keep.as_mut() {
                    Some(ws) => {
                        if let Ok(None | Some(Err(_))) =
                            tokio::time::timeout(Duration::from_millis(50), ws.next()).await
                        {
                            keep = None;
                        }
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    });
    (rx, release_tx)
}

async fn produce(p: Produce, keep: &mut Option<Ws>) -> ProduceResult {
    let mut out = Produced::default();
    let period = Duration::from_secs_f64(1.0 / p.rate);
    match p.mode {
        Mode::Changes => {
            let mut conns = Vec::new();
            for _ in 0..p.conns {
                conns.push(pg_connect(&p.pg).await?);
            }
            let sql = format!(
                "INSERT INTO public.{} (id, body) VALUES ($1, $2)",
                p.table.replace('"', "")
            );
            let mut stmts = Vec::new();
            for c in &conns {
                stmts.push(c.prepare(&sql).await.map_err(|e| format!("prepare: {e}"))?);
            }
            let body = "realtime benchmark row: a short text body of a typical size";
            let mut inflight = FuturesUnordered::new();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick(), if i < p.n => {
                        let k = (i as usize) % conns.len();
                        let (c, st) = (&conns[k], &stmts[k]);
                        let id = (p.base + i) as i64;
                        let now = now_us();
                        if i == 0 { out.first_send_us = now; }
                        out.last_send_us = now;
                        i += 1;
                        inflight.push(async move { c.execute(st, &[&id, &body]).await });
                    }
                    Some(r) = inflight.next() => {
                        match r {
                            Ok(_) => out.sent += 1,
                            Err(e) => {
                                out.send_errors += 1;
                                out.first_error.get_or_insert(e.to_string());
                            }
                        }
                    }
                    else => break,
                }
            }
        }
        Mode::Broadcast => {
            let mut ws = open(&p.url).await?;
            ws.send(Message::Text(
                join_frame("realtime:bcast", bcast_config(), None).into(),
            ))
            .await
            .map_err(|e| e.to_string())?;
            // The sender's join reply; then send.
            loop {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("phx_reply") => break,
                    Ok(Some(Ok(_))) => {}
                    other => return Err(format!("sender join: {other:?}")),
                }
            }
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0..p.n {
                tick.tick().await;
                let now = now_us();
                if i == 0 {
                    out.first_send_us = now;
                }
                out.last_send_us = now;
                let f = format!(
                    r#"["1","{r}","realtime:bcast","broadcast",{{"type":"broadcast","event":"b","payload":{{"id":{id},"sent_at":{now}}}}}]"#,
                    r = i + 2,
                    id = p.base + i,
                );
                match ws.send(Message::Text(f.into())).await {
                    Ok(()) => out.sent += 1,
                    Err(e) => {
                        out.send_errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            // Kept open through the drain (its socket is not measured).
            *keep = Some(ws);
        }
        Mode::Idle => {}
    }
    Ok(out)
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
