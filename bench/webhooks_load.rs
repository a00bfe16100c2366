//! Load tool of the webhooks benchmark (`bench/webhooks.sh` builds it in release mode).
//!
//! Runs a receiver (actix-web on 127.0.0.1, an ephemeral port) that verifies each request's
//! Standard Webhooks signature and answers 200, creates a webhook on `public.<table>:INSERT`
//! pointing at it through `POST /api/v1/webhooks` (with a service_role key signed from the
//! project's secret in `fluxbase.settings`), inserts rows into `--table` (`id bigint primary
//! key, sent_at bigint default clock_timestamp in µs, body text`) and counts which ids the
//! receiver got:
//!
//! - `burst`: `--rows` rows in statements of `--batch` rows (`INSERT … SELECT
//!   generate_series`, one transaction each), back to back on one connection.
//! - `steady`: one row per statement at `--rate` rows/s for `--secs`, pipelined over
//!   `--insert-conns` connections.
//!
//! Latency = the receiver's wall clock (µs) when the request arrives − the row's `sent_at`
//! (same machine, same clock). After the last insert the tool waits until every row was
//! delivered or `--drain-secs` passed, reads the deliveries' final states and attempts from
//! `webhooks.deliveries`, deletes the hook (unless `--keep-hook`) and prints one
//! `RESULT key=value …` line. CPU time of the processes named in `--cpu` (`name=pid`,
//! `name=pid+` to add its children) and of the tool (receiver included) is measured over the
//! window from the first insert to the last delivery (or the end of the drain).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use actix_web::{web, HttpRequest, HttpResponse};
use clap::{Parser, ValueEnum};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Burst,
    Steady,
}

#[derive(Parser, Debug)]
#[command(about = "Webhooks load generator (bench/webhooks.sh)")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Fluxbase's base URL, e.g. http://127.0.0.1:18500
    #[arg(long)]
    api: String,
    /// tokio-postgres connection string (key=value) of the database.
    #[arg(long)]
    pg: String,
    /// Table the hook subscribes to (public schema).
    #[arg(long, default_value = "bench_hook")]
    table: String,
    /// Burst: rows inserted.
    #[arg(long, default_value_t = 5000)]
    rows: u64,
    /// Burst: rows per INSERT statement (one transaction each).
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Steady: rows per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Steady: seconds of inserting.
    #[arg(long, default_value_t = 25.0)]
    secs: f64,
    /// Steady: inserting connections (round robin, pipelined).
    #[arg(long, default_value_t = 2)]
    insert_conns: usize,
    /// Longest wait for the outstanding deliveries after the last insert.
    #[arg(long, default_value_t = 60.0)]
    drain_secs: f64,
    /// Receiver worker threads (actix-web).
    #[arg(long, default_value_t = 1)]
    receiver_workers: usize,
    /// The hook's timeout_ms.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: i32,
    /// Leave the hook in place at the end (by default it is deleted).
    #[arg(long)]
    keep_hook: bool,
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

/// What the receiver saw.
#[derive(Default)]
struct Recv {
    /// First id of the run; `counts[id - base]` = requests for that id.
    base: u64,
    counts: Vec<u32>,
    /// First-arrival latencies in µs.
    lat: Vec<u64>,
    unique: u64,
    dups: u64,
    /// Ids outside the run's range, or bodies without `record.id`.
    stray: u64,
    bad_sig: u64,
    first_recv_us: u64,
    last_recv_us: u64,
}

struct Shared {
    recv: Mutex<Recv>,
    /// The hook's signing key (set once the hook exists).
    key: OnceLock<Vec<u8>>,
    /// Requests received (any).
    requests: AtomicU64,
}

fn verify(key: &[u8], req: &HttpRequest, body: &[u8]) -> bool {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return false;
    };
    let want = fluxbase::webhooks::sign(key, id, ts, body);
    sig.split(' ').any(|s| s == want)
}

async fn hook(sh: web::Data<Arc<Shared>>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let at = now_us();
    sh.requests.fetch_add(1, Ordering::Relaxed);
    let good = sh.key.get().is_some_and(|k| verify(k, &req, &body));
    let rec = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        let r = v.get("record")?;
        Some((r.get("id")?.as_u64()?, r.get("sent_at")?.as_u64()?))
    });
    let mut g = sh.recv.lock().unwrap();
    if !good {
        g.bad_sig += 1;
    }
    match rec {
        Some((id, sent)) if id >= g.base && ((id - g.base) as usize) < g.counts.len() => {
            let i = (id - g.base) as usize;
            g.counts[i] += 1;
            if g.counts[i] == 1 {
                g.unique += 1;
                g.lat.push(at.saturating_sub(sent));
                if g.first_recv_us == 0 {
                    g.first_recv_us = at;
                }
                g.last_recv_us = at;
            } else {
                g.dups += 1;
            }
        }
        _ => g.stray += 1,
    }
    HttpResponse::Ok().body("ok")
}

/// Starts the receiver on its own thread; returns its port.
fn receiver(sh: Arc<Shared>, workers: usize) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let data = web::Data::new(sh);
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(1 << 20))
                    .default_service(web::to(hook))
            })
            .workers(workers.max(1))
            .backlog(4096)
            .max_connections(100_000)
            .bind(("127.0.0.1", 0))
            .expect("bind the receiver");
            tx.send(server.addrs()[0].port()).unwrap();
            server.run().await.expect("receiver");
        });
    });
    rx.recv().expect("receiver port")
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

/// The service_role key, signed with the project's secret exactly as the server derives it.
async fn service_key(pg: &tokio_postgres::Client) -> Result<String, String> {
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
    k.api_key("service_role", issued).map_err(|e| e.to_string())
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// What the inserts did.
#[derive(Default)]
struct Produced {
    first_send_us: u64,
    last_send_us: u64,
    /// When the last insert returned (committed).
    done_us: u64,
    sent: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn produce(args: &Args, base: u64, n: u64) -> Result<Produced, String> {
    let mut out = Produced::default();
    let table = args.table.replace('"', "");
    let body = "webhooks benchmark row: a short text body of a typical size";
    match args.mode {
        Mode::Burst => {
            let c = pg_connect(&args.pg).await?;
            let sql = format!(
                "INSERT INTO public.\"{table}\" (id, body)
                 SELECT g, $3 FROM generate_series($1::bigint, $2::bigint) g"
            );
            let st = c.prepare(&sql).await.map_err(|e| format!("prepare: {e}"))?;
            out.first_send_us = now_us();
            let mut i = 0;
            while i < n {
                let k = args.batch.max(1).min(n - i);
                let (lo, hi) = ((base + i) as i64, (base + i + k - 1) as i64);
                out.last_send_us = now_us();
                match c.execute(&st, &[&lo, &hi, &body]).await {
                    Ok(m) => out.sent += m,
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
                i += k;
            }
            out.done_us = now_us();
        }
        Mode::Steady => {
            let mut conns = Vec::new();
            let mut stmts = Vec::new();
            let sql = format!("INSERT INTO public.\"{table}\" (id, body) VALUES ($1, $2)");
            for _ in 0..args.insert_conns.max(1) {
                let c = pg_connect(&args.pg).await?;
                stmts.push(c.prepare(&sql).await.map_err(|e| format!("prepare: {e}"))?);
                conns.push(c);
            }
            let period = Duration::from_secs_f64(1.0 / args.rate);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut inflight = FuturesUnordered::new();
            let mut i = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick(), if i < n => {
                        let k = (i as usize) % conns.len();
                        let (c, st) = (&conns[k], &stmts[k]);
                        let id = (base + i) as i64;
                        let now = now_us();
                        if i == 0 { out.first_send_us = now; }
                        out.last_send_us = now;
                        i += 1;
                        inflight.push(async move { c.execute(st, &[&id, &body]).await });
                    }
                    Some(r) = inflight.next() => match r {
                        Ok(_) => out.sent += 1,
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(e.to_string());
                        }
                    },
                    else => break,
                }
            }
            out.done_us = now_us();
        }
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), String> {
    let pg = pg_connect(&args.pg).await?;
    let key = service_key(&pg).await?;
    let table = args.table.replace('"', "");
    let n = match args.mode {
        Mode::Burst => args.rows,
        Mode::Steady => (args.rate * args.secs).round() as u64,
    };
    let base: i64 = pg
        .query_one(
            &format!("SELECT coalesce(max(id), 0) + 1 FROM public.\"{table}\""),
            &[],
        )
        .await
        .map_err(|e| format!("max(id): {e}"))?
        .get(0);
    let base = base as u64;
    let sh = Arc::new(Shared {
        recv: Mutex::new(Recv {
            base,
            counts: vec![0; n as usize],
            lat: Vec::with_capacity(n as usize),
            ..Recv::default()
        }),
        key: OnceLock::new(),
        requests: AtomicU64::new(0),
    });
    let port = receiver(sh.clone(), args.receiver_workers);

    // The hook, through the API.
    let http = reqwest::Client::new();
    let api = args.api.trim_end_matches('/');
    let res = http
        .post(format!("{api}/api/v1/webhooks"))
        .header("apikey", &key)
        .bearer_auth(&key)
        .json(&json!({
            "name": format!("bench {}", args.label),
            "url": format!("http://127.0.0.1:{port}/hook"),
            "events": [format!("public.{table}:INSERT")],
            "timeout_ms": args.timeout_ms,
            "retry": {"max_attempts": 5},
        }))
        .send()
        .await
        .map_err(|e| format!("create the hook: {e}"))?;
    let status = res.status();
    let hook: Value = res.json().await.map_err(|e| format!("hook JSON: {e}"))?;
    if status.as_u16() != 201 {
        return Err(format!("create the hook: HTTP {status}: {hook}"));
    }
    let hook_id = hook["id"].as_str().unwrap_or_default().to_string();
    let secret = hook["secret"].as_str().unwrap_or_default();
    let k = fluxbase::webhooks::secret_key(secret).ok_or("the hook's secret is not base64")?;
    let _ = sh.key.set(k);
    eprintln!("hook {hook_id} -> 127.0.0.1:{port}; {n} rows from id {base}");

    let probe = CpuProbe::parse(&args.cpu);
    let cpu0 = probe.sample();
    let t0 = Instant::now();
    let prod = produce(&args, base, n).await?;
    let insert_s = (prod.done_us.saturating_sub(prod.first_send_us)) as f64 / 1e6;
    // Drain: until every row was delivered or the deadline.
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain_secs);
    loop {
        if sh.recv.lock().unwrap().unique >= prod.sent || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu1 = probe.sample();
    let window_s = t0.elapsed().as_secs_f64();
    // Late duplicates (a retry racing a success) would show up within a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The server's own record of the deliveries.
    let states: Vec<(String, i64, i64)> = pg
        .query(
            "SELECT status, count(*), coalesce(sum(attempts), 0)::bigint FROM webhooks.deliveries
              WHERE webhook_id = $1::text::uuid GROUP BY 1 ORDER BY 1",
            &[&hook_id],
        )
        .await
        .map_err(|e| format!("deliveries: {e}"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let retried: i64 = pg
        .query_one(
            "SELECT count(*) FROM webhooks.deliveries WHERE webhook_id = $1::text::uuid AND attempts > 1",
            &[&hook_id],
        )
        .await
        .map_err(|e| format!("deliveries: {e}"))?
        .get(0);
    if !args.keep_hook {
        let r = http
            .delete(format!("{api}/api/v1/webhooks/{hook_id}"))
            .header("apikey", &key)
            .bearer_auth(&key)
            .send()
            .await
            .map_err(|e| format!("delete the hook: {e}"))?;
        if !r.status().is_success() {
            eprintln!("NOTE deleting the hook answered HTTP {}", r.status());
        }
    }

    let mut g = sh.recv.lock().unwrap();
    let requests = sh.requests.load(Ordering::Relaxed);
    let missing = prod.sent.saturating_sub(g.unique);
    let mut lat = std::mem::take(&mut g.lat);
    lat.sort_unstable();
    // Throughput: rows / (first insert sent -> last delivery received), the whole pipeline;
    // and the delivery rate from the first to the last delivery alone.
    let e2e_s = (g.last_recv_us.saturating_sub(prod.first_send_us)) as f64 / 1e6;
    let recv_s = (g.last_recv_us.saturating_sub(g.first_recv_us)) as f64 / 1e6;
    let per_s = |k: u64, s: f64| if s > 0.0 { k as f64 / s } else { f64::NAN };
    let actual_rate = per_s(
        prod.sent.saturating_sub(1),
        (prod.last_send_us.saturating_sub(prod.first_send_us)) as f64 / 1e6,
    );
    let states_s: String = states
        .iter()
        .map(|(s, c, a)| format!("{s}:{c}/{a}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "RESULT mode={} label={} rows={} sent={} insert_errors={} received={} missing={} dups={} stray={} bad_sig={} requests={} \
         insert_s={:.3} e2e_s={:.3} deliveries_per_s={:.1} recv_span_s={:.3} recv_rate={:.1} actual_rate={:.1} \
         p50_ms={:.2} p95_ms={:.2} p99_ms={:.2} max_ms={:.2} retried={} states={}{}",
        format!("{:?}", args.mode).to_lowercase(),
        args.label,
        n,
        prod.sent,
        prod.errors,
        g.unique,
        missing,
        g.dups,
        g.stray,
        g.bad_sig,
        requests,
        insert_s,
        e2e_s,
        per_s(g.unique, e2e_s),
        recv_s,
        per_s(g.unique.saturating_sub(1), recv_s),
        actual_rate,
        pct(&lat, 50.0),
        pct(&lat, 95.0),
        pct(&lat, 99.0),
        lat.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
        retried,
        if states_s.is_empty() { "-".into() } else { states_s },
        probe.report(&cpu0, &cpu1, window_s),
    );
    if let Some(e) = prod.first_error {
        println!("NOTE first insert error: {e}");
    }
    if missing > 0 {
        let first: Vec<u64> = g
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == 0)
            .take(10)
            .map(|(i, _)| g.base + i as u64)
            .collect();
        println!("NOTE {missing} rows not delivered within the drain; first ids: {first:?}");
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
