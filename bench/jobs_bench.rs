//! Job queue benchmark (`bench/jobs.sh` builds and runs it in release mode).
//!
//! Measures, on a throwaway managed cluster with fsync ON:
//! 1. no-op jobs completed per second by a Fluxbase runner with 2 workers, against pgbench
//!    running the same claim + complete SQL with 2 clients (prepared statements), in
//!    interleaved rounds A B A B …;
//! 2. enqueue of 10,000 jobs in one transaction (row by row through `enqueue`, and in one
//!    statement through `enqueue_many`);
//! 3. latency from sending an autocommitted enqueue to the start of the job's handler, with an idle
//!    worker whose polling interval (10 s) is far above the figures, so only NOTIFY counts.
//!
//! Usage: jobs_bench [ROUNDS] [JOBS_PER_ROUND]   (defaults 5 and 5000)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fluxbase::config::JobsConfig;
use fluxbase::embedded_pg::{ClusterOptions, ManagedPg};
use fluxbase::jobs::{self, worker, JobSpec, Registry, RetryPolicy};
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PGBENCH_SCRIPT: &str = r#"WITH next AS (SELECT id FROM jobs.jobs WHERE status = 'pending' AND queue = 'bench.pg' AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE jobs.jobs j SET status = 'running', attempts = j.attempts + 1, locked_by = 'pgbench', locked_until = now() + make_interval(secs => 30), started_at = now(), updated_at = now(), max_attempts = coalesce(j.max_attempts, 5) FROM next WHERE j.id = next.id RETURNING j.id AS job_id \gset
UPDATE jobs.jobs SET status = 'succeeded', result = NULL, finished_at = now(), updated_at = now(), locked_by = NULL, locked_until = NULL, last_error = NULL WHERE id = :job_id AND locked_by = 'pgbench' AND status = 'running';
"#;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn fill(pool: &deadpool_postgres::Pool, queue: &str, n: usize) {
    let c = pool.get().await.unwrap();
    c.execute("DELETE FROM jobs.jobs", &[]).await.unwrap();
    let payloads: Vec<serde_json::Value> = (0..n).map(|i| json!({"i": i})).collect();
    jobs::enqueue_many(&**c, queue, &payloads).await.unwrap();
    c.batch_execute("VACUUM ANALYZE jobs.jobs").await.unwrap();
}

async fn done(pool: &deadpool_postgres::Pool, queue: &str) -> i64 {
    let c = pool.get().await.unwrap();
    c.query_one(
        "SELECT count(*) FROM jobs.jobs WHERE queue = $1 AND status = 'succeeded'",
        &[&queue],
    )
    .await
    .unwrap()
    .get(0)
}

fn runner_opts(pg: &tokio_postgres::Config, poll_ms: u64) -> worker::RunnerOptions {
    worker::RunnerOptions {
        worker_id: format!("bench-{}", uuid::Uuid::new_v4()),
        cfg: JobsConfig {
            concurrency: 2,
            poll_interval_ms: poll_ms,
            ..Default::default()
        },
        clock: Arc::new(jobs::cron::SystemClock),
        pg_config: pg.clone(),
        listener: fluxbase::db::listen::Listener::start(pg),
        cron: false,
    }
}

async fn fluxbase_round(
    pool: &deadpool_postgres::Pool,
    pg: &tokio_postgres::Config,
    n: usize,
    metrics: Arc<jobs::JobMetrics>,
) -> f64 {
    fill(pool, "fluxbase.noop", n).await;
    // Counting in the handler keeps the bench's own polling off the database until the
    // last job ran; then the DB must show every job succeeded.
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let all_ran = Arc::new(tokio::sync::Notify::new());
    let mut reg = Registry::default();
    let (r2, a2) = (ran.clone(), all_ran.clone());
    reg.register("fluxbase.noop", RetryPolicy::default(), move |_| {
        if r2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n {
            a2.notify_one();
        }
        async { Ok(None) }
    });
    let started = Instant::now();
    let runner = worker::start(pool.clone(), reg, runner_opts(pg, 1000), metrics);
    all_ran.notified().await;
    while done(pool, "fluxbase.noop").await < n as i64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    runner.shutdown(Duration::from_secs(1)).await;
    n as f64 / secs
}

async fn pgbench_round(
    pool: &deadpool_postgres::Pool,
    pgbench: &str,
    socket: &str,
    n: usize,
    script: &std::path::Path,
) -> f64 {
    fill(pool, "bench.pg", n).await;
    let out = Command::new(pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            "2",
            "-j",
            "2",
            "-t",
            &(n / 2).to_string(),
            "-h",
            socket,
            "-U",
            "postgres",
            "-f",
        ])
        .arg(script)
        .arg("postgres")
        .output()
        .expect("run pgbench");
    assert!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        done(pool, "bench.pg").await,
        n as i64,
        "pgbench completed every job"
    );
    // "tps = 1234.5 (without initial connection time)"
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .expect("pgbench tps")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let dir = tempfile::Builder::new()
        .prefix("fbjb")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut pg = ManagedPg::new(ClusterOptions {
        pgdata: dir.path().join("pg"),
        port: 5432,
        tcp_host: None,
        fsync: true,
        bin_dir: None,
        extra_conf: vec!["max_connections = 100".into()],
    })
    .unwrap();
    pg.start().unwrap();
    let url = pg.url("postgres");
    let result = std::panic::AssertUnwindSafe(run(&pg, &url, rounds, n));
    let outcome = futures_util::FutureExt::catch_unwind(result).await;
    pg.stop().unwrap();
    if outcome.is_err() {
        std::process::exit(1);
    }
}

async fn run(pg: &ManagedPg, url: &str, rounds: usize, n: usize) {
    let pool = fluxbase::db::create_pool(
        url,
        &fluxbase::config::DatabaseConfig {
            pool_size: 8,
            ..Default::default()
        },
    )
    .unwrap();
    {
        let mut c = pool.get().await.unwrap();
        let set = fluxbase::db::migrate::embedded().unwrap();
        fluxbase::db::migrate::run(&mut c, &set).await.unwrap();
    }
    let pgc = fluxbase::db::pg_config(url).unwrap();
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(jobs::JobMetrics::new(&registry).unwrap());
    let script = pg.pgdata().parent().unwrap().join("claim_complete.sql");
    std::fs::write(&script, PGBENCH_SCRIPT).unwrap();
    let pgbench = fluxbase::embedded_pg::find_bin_dir(None)
        .unwrap()
        .join("pgbench");
    let pgbench = pgbench.to_string_lossy().to_string();
    let socket = pg.socket_dir().to_string_lossy().to_string();

    println!("jobs_bench: {rounds} interleaved rounds of {n} no-op jobs, 2 workers vs pgbench -c 2 -M prepared; fsync on");
    // Warm-up (excluded): caches, prepared statements.
    fluxbase_round(&pool, &pgc, n.min(1000), metrics.clone()).await;
    pgbench_round(&pool, &pgbench, &socket, n.min(1000), &script).await;
    let (mut fx, mut pb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=rounds {
        let a = fluxbase_round(&pool, &pgc, n, metrics.clone()).await;
        let b = pgbench_round(&pool, &pgbench, &socket, n, &script).await;
        println!(
            "round={r} fluxbase_jobs_per_s={a:.0} pgbench_jobs_per_s={b:.0} ratio={:.3}",
            a / b
        );
        fx.push(a);
        pb.push(b);
        ratio.push(a / b);
    }
    let (fmin, fmax) = (
        fx.iter().cloned().fold(f64::MAX, f64::min),
        fx.iter().cloned().fold(0.0, f64::max),
    );
    let (pmin, pmax) = (
        pb.iter().cloned().fold(f64::MAX, f64::min),
        pb.iter().cloned().fold(0.0, f64::max),
    );
    let (rmin, rmax) = (
        ratio.iter().cloned().fold(f64::MAX, f64::min),
        ratio.iter().cloned().fold(0.0, f64::max),
    );
    println!(
        "summary throughput fluxbase median={:.0} [{fmin:.0}..{fmax:.0}] jobs/s",
        median(&mut fx)
    );
    println!(
        "summary throughput pgbench  median={:.0} [{pmin:.0}..{pmax:.0}] jobs/s",
        median(&mut pb)
    );
    println!(
        "summary ratio fluxbase/pgbench median={:.3} [{rmin:.3}..{rmax:.3}] (target >= 0.7)",
        median(&mut ratio)
    );

    // Enqueue 10,000 in one transaction.
    let (mut one, mut bulk) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut c = pool.get().await.unwrap();
        c.execute("DELETE FROM jobs.jobs", &[]).await.unwrap();
        let tx = c.transaction().await.unwrap();
        let t = Instant::now();
        for i in 0..10_000 {
            jobs::enqueue(
                &*tx,
                &JobSpec {
                    queue: "bench.enqueue".into(),
                    payload: json!({"i": i}),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        one.push(10_000.0 / t.elapsed().as_secs_f64());
        c.execute("DELETE FROM jobs.jobs", &[]).await.unwrap();
        let payloads: Vec<serde_json::Value> = (0..10_000).map(|i| json!({"i": i})).collect();
        let tx = c.transaction().await.unwrap();
        let t = Instant::now();
        jobs::enqueue_many(&*tx, "bench.enqueue", &payloads)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        bulk.push(10_000.0 / t.elapsed().as_secs_f64());
    }
    println!("summary enqueue_10k_one_tx row_by_row median={:.0} jobs/s; enqueue_many median={:.0} jobs/s", median(&mut one), median(&mut bulk));

    // Commit -> handler start latency with an idle worker (polling every 10 s).
    {
        let c = pool.get().await.unwrap();
        c.execute("DELETE FROM jobs.jobs", &[]).await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut reg = Registry::default();
    reg.register("bench.latency", RetryPolicy::default(), move |_| {
        let _ = tx.send(Instant::now());
        async { Ok(None) }
    });
    let runner = worker::start(
        pool.clone(),
        reg,
        runner_opts(&pgc, 10_000),
        metrics.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    let c = pool.get().await.unwrap();
    for i in 0..200 {
        // Idle between samples so every job finds the worker waiting.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Measured from before the INSERT is sent: an upper bound that includes the commit.
        let committed = Instant::now();
        jobs::enqueue(
            &**c,
            &JobSpec {
                queue: "bench.latency".into(),
                payload: json!({"i": i}),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let started = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        lat.push(started.saturating_duration_since(committed).as_secs_f64() * 1000.0);
    }
    runner.shutdown(Duration::from_secs(1)).await;
    println!(
        "summary commit_to_start_ms p50={:.2} p95={:.2} p99={:.2} max={:.2} n=200 (target p50 < 20)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.95),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
}
