//! Workers: per-queue dispatchers that claim with SKIP LOCKED, run handlers with bounded
//! concurrency and a heartbeat-extended lease, record outcomes with backoff or dead letters;
//! a subscription to the process's LISTEN connection (`db::listen`) that wakes idle
//! dispatchers (polling is the fallback, and every slot looks once after a gap); lease recovery
//! for jobs of dead workers; and the cron leader.

use super::cron::{self, Clock};
use super::queue::{self, Claimed, CHANNEL};
use super::{Backoff, JobContext, JobError, JobMetrics, Registry as Handlers};
use crate::config::JobsConfig;
use deadpool_postgres::Pool;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// How a runner runs.
#[derive(Clone)]
pub struct RunnerOptions {
    /// Unique id of this worker process (leases name it).
    pub worker_id: String,
    /// `jobs.*` config.
    pub cfg: JobsConfig,
    /// Where "now" comes from for cron.
    pub clock: Arc<dyn Clock>,
    /// Connection settings for the cron-leader connection (never pooled).
    pub pg_config: tokio_postgres::Config,
    /// The process's LISTEN connection (NOTIFY on `fluxbase_jobs` wakes idle slots).
    pub listener: crate::db::listen::Listener,
    /// Run the cron leader election.
    pub cron: bool,
}

/// A running set of workers.
pub struct RunnerHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    running: Arc<Mutex<HashSet<i64>>>,
    leader: Arc<AtomicBool>,
    pool: Pool,
    worker_id: String,
}

impl RunnerHandle {
    /// Whether this runner currently fires cron schedules.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Ids of the jobs running here now.
    pub fn running(&self) -> Vec<i64> {
        self.running
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Stops claiming, gives running jobs `grace` to finish, then hands the rest back to
    /// the queue without counting the attempt.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(grace, futures_util::future::join_all(tasks))
            .await
            .is_err()
        {
            // Aborting a slot aborts the handler it awaits (AbortOnDrop).
            for a in aborts {
                a.abort();
            }
        }
        let left = self.running();
        if !left.is_empty() {
            if let Ok(c) = self.pool.get().await {
                match queue::release(&**c, &self.worker_id, &left).await {
                    Ok(_) => tracing::info!(
                        jobs = left.len(),
                        "released unfinished jobs back to the queue"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not release unfinished jobs; their leases will expire")
                    }
                }
            }
        }
    }
}

/// Aborts the wrapped task when dropped, so an aborted slot never leaves its handler running.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Shared {
    pool: Pool,
    handlers: Handlers,
    opts: RunnerOptions,
    metrics: Arc<JobMetrics>,
    running: Arc<Mutex<HashSet<i64>>>,
    wake: HashMap<String, Arc<Notify>>,
}

/// Starts dispatchers for every registered queue, the listener, the heartbeat, lease
/// recovery and (optionally) the cron leader.
pub fn start(
    pool: Pool,
    handlers: Handlers,
    opts: RunnerOptions,
    metrics: Arc<JobMetrics>,
) -> RunnerHandle {
    let (tx, rx) = watch::channel(false);
    let running = Arc::new(Mutex::new(HashSet::new()));
    let leader = Arc::new(AtomicBool::new(false));
    let wake: HashMap<String, Arc<Notify>> = handlers
        .queues()
        .map(|q| (q.to_string(), Arc::new(Notify::new())))
        .collect();
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        handlers,
        opts: opts.clone(),
        metrics,
        running: running.clone(),
        wake,
    });
    let mut tasks = Vec::new();
    for q in shared.wake.keys() {
        for _ in 0..shared.opts.cfg.concurrency_for(q) {
            tasks.push(tokio::spawn(slot(shared.clone(), q.clone(), rx.clone())));
        }
    }
    let sub = opts.listener.subscribe(&[CHANNEL]);
    tasks.push(tokio::spawn(listen(shared.clone(), sub, rx.clone())));
    tasks.push(tokio::spawn(heartbeat(shared.clone(), rx.clone())));
    tasks.push(tokio::spawn(recover(shared.clone(), rx.clone())));
    if opts.cron {
        tasks.push(tokio::spawn(lead_cron(
            shared.clone(),
            leader.clone(),
            rx.clone(),
        )));
    }
    RunnerHandle {
        shutdown: tx,
        tasks,
        running,
        leader,
        pool,
        worker_id: opts.worker_id,
    }
}

fn lease_secs(s: &Shared) -> f64 {
    s.opts.cfg.lease_secs.max(2) as f64
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One worker slot of a queue: claim, run, record the outcome and claim the next job in the
/// same round trip, until the queue is drained; then sleep until a NOTIFY or the poll.
/// `concurrency_for(queue)` slots run per queue.
async fn slot(s: Arc<Shared>, queue: String, mut stop: watch::Receiver<bool>) {
    let Some(wake) = s.wake.get(&queue).cloned() else {
        return;
    };
    let poll = Duration::from_millis(s.opts.cfg.poll_interval_ms.max(10));
    let default_max = s.handlers.policy(&queue, &s.opts.cfg).max_attempts;
    let mut next: Option<Claimed> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let job = match next.take() {
            Some(j) => j,
            None => {
                // Subscribe before looking, so a NOTIFY sent while we claim is not missed.
                let notified = wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let claimed = match s.pool.get().await {
                    Ok(c) => queue::claim(
                        &c,
                        &queue,
                        1,
                        &s.opts.worker_id,
                        lease_secs(&s),
                        default_max,
                    )
                    .await
                    .map_err(|e| tracing::warn!(error = %e, %queue, "claiming a job failed"))
                    .ok()
                    .and_then(|mut v| v.pop()),
                    Err(e) => {
                        tracing::debug!(error = %e, "job slot: no database connection");
                        None
                    }
                };
                match claimed {
                    Some(j) => j,
                    None => {
                        tokio::select! {
                            _ = &mut notified => {},
                            _ = tokio::time::sleep(poll) => {},
                            _ = stopped(&mut stop) => return,
                        }
                        continue;
                    }
                }
            }
        };
        let outcome = execute(&s, &job).await;
        let claim_next = (!*stop.borrow()).then_some(default_max);
        next = record(&s, &job, outcome, claim_next).await;
    }
}

/// Runs the handler in its own task: a panic fails the attempt instead of the worker.
async fn execute(
    s: &Arc<Shared>,
    job: &Claimed,
) -> (Result<Option<serde_json::Value>, JobError>, f64) {
    let Some(handler) = s.handlers.get(&job.queue) else {
        return (
            Err(JobError::Retry("no handler for this queue here".into())),
            0.0,
        );
    };
    if let Ok(mut r) = s.running.lock() {
        r.insert(job.id);
    }
    let ctx = JobContext {
        id: job.id,
        queue: job.queue.clone(),
        payload: job.payload.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        pool: s.pool.clone(),
    };
    let started = Instant::now();
    let task = AbortOnDrop(tokio::spawn(handler(ctx)));
    let outcome = match (&mut { task }.0).await {
        Ok(r) => r,
        Err(e) => Err(JobError::Retry(format!("handler panicked: {e}"))),
    };
    if let Ok(mut r) = s.running.lock() {
        r.remove(&job.id);
    }
    (outcome, started.elapsed().as_secs_f64())
}

/// Records an attempt's outcome and, when `claim_next` is set, claims the queue's next job
/// in the same round trip (the two statements are pipelined on one connection).
async fn record(
    s: &Arc<Shared>,
    job: &Claimed,
    (outcome, secs): (Result<Option<serde_json::Value>, JobError>, f64),
    claim_next: Option<i32>,
) -> Option<Claimed> {
    let worker = &s.opts.worker_id;
    let Ok(client) = s.pool.get().await else {
        tracing::warn!(
            job = job.id,
            "cannot record the job's outcome: no database connection; its lease will expire and it runs again"
        );
        return None;
    };
    let policy = s.handlers.policy(&job.queue, &s.opts.cfg);
    let outcome_fut = async {
        match outcome {
            Ok(result) => match queue::complete(&client, job.id, worker, result.as_ref()).await {
                Ok(true) => "succeeded",
                Ok(false) => "lost",
                Err(e) => {
                    tracing::warn!(job = job.id, error = %e, "could not mark job succeeded");
                    "lost"
                }
            },
            Err(err) => {
                let (msg, retry, backoff) = match &err {
                    JobError::Retry(m) => (
                        m.as_str(),
                        job.attempt < job.max_attempts,
                        Backoff::default(),
                    ),
                    JobError::RetryWith(m, b) => (m.as_str(), job.attempt < job.max_attempts, *b),
                    JobError::Permanent(m) => (m.as_str(), false, Backoff::default()),
                };
                let delay = retry.then(|| {
                    backoff.delay(
                        job.attempt,
                        policy.base_ms,
                        policy.cap_ms,
                        rand::random::<f64>(),
                    )
                });
                match queue::fail(&client, job.id, worker, msg, delay).await {
                    Ok(Some(st)) if st == "dead" => {
                        tracing::warn!(job = job.id, queue = %job.queue, attempt = job.attempt, error = %msg, "job dead-lettered");
                        "dead"
                    }
                    Ok(Some(_)) => {
                        tracing::info!(job = job.id, queue = %job.queue, attempt = job.attempt, retry_in_ms = delay.unwrap_or(0), error = %msg, "job failed; will retry");
                        "retried"
                    }
                    Ok(None) => "lost",
                    Err(e) => {
                        tracing::warn!(job = job.id, error = %e, "could not record job failure");
                        "lost"
                    }
                }
            }
        }
    };
    let claim_fut = async {
        let max = claim_next?;
        queue::claim(&client, &job.queue, 1, worker, lease_secs(s), max)
            .await
            .ok()
            .and_then(|mut v| v.pop())
    };
    let (label, next) = tokio::join!(outcome_fut, claim_fut);
    s.metrics.observe_run(&job.queue, label, secs);
    next
}

/// Wakes the idle slots of a queue on its NOTIFY, and every slot whenever the LISTEN
/// connection (re)starts listening or is lost (jobs enqueued meanwhile sent their NOTIFY to
/// nobody: look now, then poll until it is back).
async fn listen(
    s: Arc<Shared>,
    mut sub: crate::db::listen::Subscription,
    mut stop: watch::Receiver<bool>,
) {
    use crate::db::listen::Event;
    loop {
        tokio::select! {
            ev = sub.recv() => match ev {
                Some(Event::Notification { payload, .. }) => {
                    if let Some(n) = s.wake.get(&payload) {
                        n.notify_waiters();
                    }
                }
                Some(Event::Listening { .. }) => wake_all(&s),
                Some(Event::Lost) => {
                    tracing::warn!("job notifications lost; polling until the listener is back");
                    wake_all(&s);
                }
                None => return,
            },
            _ = stopped(&mut stop) => return,
        }
    }
}

fn wake_all(s: &Shared) {
    for n in s.wake.values() {
        n.notify_waiters();
    }
}

async fn heartbeat(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs_f64(lease_secs(&s) / 3.0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stopped(&mut stop) => return,
        }
        let ids: Vec<i64> = s
            .running
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            continue;
        }
        if let Ok(c) = s.pool.get().await {
            if let Err(e) = queue::heartbeat(&**c, &s.opts.worker_id, &ids, lease_secs(&s)).await {
                tracing::warn!(error = %e, "job heartbeat failed");
            }
        }
    }
}

async fn recover(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs_f64((lease_secs(&s) / 2.0).max(1.0));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stopped(&mut stop) => return,
        }
        if let Ok(c) = s.pool.get().await {
            match queue::recover_expired(&**c).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    jobs = n,
                    "recovered jobs whose worker stopped without finishing"
                ),
                Err(e) => tracing::debug!(error = %e, "lease recovery failed"),
            }
        }
    }
}

async fn lead_cron(s: Arc<Shared>, leader: Arc<AtomicBool>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        if let Ok((mut client, conn)) = s.opts.pg_config.connect(tokio_postgres::NoTls).await {
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let got: bool = match client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&cron::LEADER_LOCK])
                .await
            {
                Ok(r) => r.get(0),
                Err(_) => false,
            };
            if got {
                leader.store(true, Ordering::SeqCst);
                tracing::info!("this instance fires cron schedules");
                loop {
                    match cron::tick(&mut client, s.opts.clock.now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(jobs = n, "cron fired"),
                        Err(e) => {
                            tracing::warn!(error = %e, "cron tick failed; giving up leadership");
                            break;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {},
                        _ = stopped(&mut stop) => { leader.store(false, Ordering::SeqCst); driver.abort(); return; }
                    }
                }
                leader.store(false, Ordering::SeqCst);
            }
            driver.abort();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {},
            _ = stopped(&mut stop) => return,
        }
    }
}
