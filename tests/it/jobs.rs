//! The job queue: retries and backoff, dead letters and replay, idempotency, the outbox,
//! lease expiry after a killed worker process, NOTIFY wake-ups, cron leadership and DST,
//! and the admin API.

use crate::support::{
    self, bin, eventually, job, short_tempdir, start_runner, wait_status, TestApp,
};
use chrono::{DateTime, Utc};
use fluxbase::jobs::{self, cron, JobError, JobSpec, Registry, RetryPolicy};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn enqueue(app: &TestApp, spec: JobSpec) -> i64 {
    let c = app.db.client().await;
    jobs::enqueue(&c, &spec).await.unwrap().id
}

fn spec(queue: &str, payload: Value) -> JobSpec {
    JobSpec {
        queue: queue.into(),
        payload,
        ..Default::default()
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: Some(3),
        base_ms: Some(20),
        cap_ms: Some(50),
    }
}

#[tokio::test]
async fn retries_then_succeeds_and_handlers_see_their_attempt() {
    let app = TestApp::spawn().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reg = Registry::default();
    let s = seen.clone();
    reg.register("flaky", fast(), move |ctx| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(ctx.attempt);
            if ctx.attempt < 3 {
                Err(JobError::Retry(format!("boom {}", ctx.attempt)))
            } else {
                Ok(Some(
                    json!({"done_on": ctx.attempt, "payload": ctx.payload}),
                ))
            }
        }
    });
    let runner = start_runner(&app, reg, false);
    let id = enqueue(&app, spec("flaky", json!({"x": 1}))).await;
    let j = wait_status(&app, id, "succeeded", Duration::from_secs(15)).await;
    assert_eq!(j["attempts"], 3);
    assert_eq!(j["max_attempts"], 3);
    assert_eq!(j["result"], json!({"done_on": 3, "payload": {"x": 1}}));
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn dead_letters_permanent_errors_and_replay() {
    let app = TestApp::spawn().await;
    let broken = Arc::new(AtomicBool::new(true));
    let mut reg = Registry::default();
    let b = broken.clone();
    reg.register("fragile", fast(), move |_| {
        let b = b.clone();
        async move {
            if b.load(Ordering::SeqCst) {
                Err(JobError::Retry("still broken".into()))
            } else {
                Ok(None)
            }
        }
    });
    reg.register("hopeless", fast(), |_| async {
        Err(JobError::Permanent("bad input".into()))
    });
    let runner = start_runner(&app, reg, false);

    let dead = enqueue(&app, spec("fragile", json!({}))).await;
    let j = wait_status(&app, dead, "dead", Duration::from_secs(15)).await;
    assert_eq!(j["attempts"], 3, "all attempts used: {j}");
    assert_eq!(j["last_error"], "still broken");

    let perm = enqueue(&app, spec("hopeless", json!({}))).await;
    let j = wait_status(&app, perm, "dead", Duration::from_secs(10)).await;
    assert_eq!(j["attempts"], 1, "permanent errors are not retried");

    // Replay through the API once the cause is fixed: a fresh set of attempts.
    broken.store(false, Ordering::SeqCst);
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{dead}/retry")))
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j = wait_status(&app, dead, "succeeded", Duration::from_secs(10)).await;
    assert_eq!(j["attempts"], 1);
    // Replaying something that is not dead is a conflict.
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{dead}/retry")))
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB007");
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn backoff_delays_the_next_attempt_within_bounds() {
    let app = TestApp::spawn().await;
    let mut reg = Registry::default();
    let policy = RetryPolicy {
        max_attempts: Some(5),
        base_ms: Some(60_000),
        cap_ms: Some(120_000),
    };
    reg.register("slow-retry", policy, |_| async {
        Err(JobError::Retry("nope".into()))
    });
    let runner = start_runner(&app, reg, false);
    let id = enqueue(&app, spec("slow-retry", json!({}))).await;
    let c = app.db.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let delay_ms: f64 = loop {
        let r = c
            .query_one(
                "SELECT status, attempts, extract(epoch FROM run_at - updated_at)::float8 * 1000 FROM jobs.jobs WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let (st, att): (String, i32) = (r.get(0), r.get(1));
        if st == "pending" && att == 1 {
            break r.get(2);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "first attempt never failed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Full jitter over a 60 s ceiling after the first attempt: somewhere in [0, 60 s].
    assert!((0.0..=60_001.0).contains(&delay_ms), "delay {delay_ms} ms");
    assert_eq!(
        job(&app, id).await["attempts"],
        1,
        "not retried before its time"
    );
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn idempotency_keys_and_the_outbox() {
    let app = TestApp::spawn().await;
    let mut c = app.db.client().await;
    let keyed = JobSpec {
        idempotency_key: Some("order-42".into()),
        ..spec("mail", json!({"to": "a@example.test"}))
    };
    let a = jobs::enqueue(&c, &keyed).await.unwrap();
    let b = jobs::enqueue(&c, &keyed).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.id, b.id);
    // Same key on another queue is another job.
    let other = jobs::enqueue(
        &c,
        &JobSpec {
            queue: "sms".into(),
            ..keyed.clone()
        },
    )
    .await
    .unwrap();
    assert_ne!(other.id, a.id);

    // Outbox: the job exists only if the caller's transaction commits.
    let tx = c.transaction().await.unwrap();
    let rolled = jobs::enqueue(&tx, &spec("mail", json!({"n": 1})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let kept = jobs::enqueue(&tx, &spec("mail", json!({"n": 2})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM jobs.jobs WHERE id = ANY($1)",
            &[&vec![rolled.id, kept.id]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Over HTTP: 201 then 200 with the same id.
    let body = json!({"queue": "mail", "payload": {}, "idempotency_key": "http-1"});
    let r1 = app
        .http
        .post(app.url("/api/v1/jobs"))
        .header("apikey", app.service_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r1.status(), 201);
    let r2 = app
        .http
        .post(app.url("/api/v1/jobs"))
        .header("apikey", app.service_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status(), 200);
    let (j1, j2): (Value, Value) = (r1.json().await.unwrap(), r2.json().await.unwrap());
    assert_eq!(j1["id"], j2["id"]);
    assert_eq!(j2["created"], false);

    // Bulk enqueue in one statement.
    let payloads: Vec<Value> = (0..500).map(|i| json!({"i": i})).collect();
    let ids = jobs::enqueue_many(&c, "bulk", &payloads).await.unwrap();
    assert_eq!(ids.len(), 500);
}

#[tokio::test]
async fn notify_wakes_an_idle_worker_without_polling() {
    // Polling every 60 s: only the NOTIFY can start the job within the deadline.
    let app = TestApp::spawn_with(|c| c.jobs.poll_interval_ms = 60_000).await;
    let mut reg = Registry::default();
    reg.register("wake", RetryPolicy::default(), |_| async { Ok(None) });
    let runner = start_runner(&app, reg, false);
    // Let the dispatcher go idle and the listener subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = enqueue(&app, spec("wake", json!({}))).await;
    wait_status(&app, id, "succeeded", Duration::from_secs(5)).await;
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_killed_worker_process_loses_nothing() {
    let app = TestApp::spawn().await;
    let c = app.db.client().await;
    c.batch_execute("CREATE TABLE attempts_log (attempt int, at timestamptz default now())")
        .await
        .unwrap();
    // First attempt hangs (the worker gets killed meanwhile); later attempts finish at once.
    let sql = "INSERT INTO attempts_log (attempt) VALUES (current_setting('fluxbase.job_attempt')::int);
               SELECT pg_sleep(CASE WHEN current_setting('fluxbase.job_attempt')::int = 1 THEN 60 ELSE 0 END);";
    let id = enqueue(&app, spec("fluxbase.sql", json!({"sql": sql}))).await;

    let tmp = short_tempdir();
    let log = tmp.path().join("worker.log");
    let mut worker = bin()
        .current_dir(tmp.path())
        .args(["worker", "--database-url", &app.db.url])
        .env("FLUXBASE_JOBS__LEASE_SECS", "2")
        .env("FLUXBASE_JOBS__CRON_ENABLED", "false")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(tmp.path().join("worker.err")).unwrap())
        .spawn()
        .unwrap();
    let j = wait_status(&app, id, "running", Duration::from_secs(30)).await;
    assert_eq!(j["attempts"], 1);
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();

    // Another worker (in-process) picks it up once the lease expires.
    let mut reg = Registry::default();
    jobs::builtin::register(&mut reg, &app.state.config);
    let app2 = TestApp::spawn_on(app.db.clone(), |c| c.jobs.lease_secs = 2).await;
    let runner = start_runner(&app2, reg, false);
    let j = wait_status(&app, id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(j["attempts"], 2, "{j}");
    // The killed attempt never committed; the second one saw attempt = 2.
    let rows: Vec<i32> = c
        .query("SELECT attempt FROM attempts_log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![2]);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn exactly_one_cron_leader_among_two_instances() {
    let app = TestApp::spawn().await;
    let c = app.db.client().await;
    let now = Utc::now();
    let every_second = cron::ScheduleSpec {
        name: "tick".into(),
        cron: "* * * * * *".into(),
        timezone: "UTC".into(),
        queue: "ticks".into(),
        payload: json!({}),
        enabled: true,
    };
    cron::upsert(&c, &every_second, now).await.unwrap();
    let a = start_runner(&app, Registry::default(), true);
    let b = start_runner(&app, Registry::default(), true);
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.is_leader() || b.is_leader()
        })
        .await,
        "nobody leads"
    );
    for _ in 0..30 {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM jobs.jobs WHERE queue = 'ticks'", &[])
        .await
        .unwrap()
        .get(0);
    let distinct: i64 = c
        .query_one(
            "SELECT count(DISTINCT idempotency_key) FROM jobs.jobs WHERE queue = 'ticks'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n >= 2, "the schedule fired ({n})");
    assert_eq!(n, distinct, "no firing enqueued twice");

    // When the leader goes away, the other takes over.
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    leader.shutdown(Duration::from_secs(1)).await;
    assert!(
        eventually(Duration::from_secs(10), || async { follower.is_leader() }).await,
        "no failover"
    );
    follower.shutdown(Duration::from_secs(1)).await;
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn fired(c: &tokio_postgres::Client, queue: &str) -> i64 {
    c.query_one("SELECT count(*) FROM jobs.jobs WHERE queue = $1", &[&queue])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn cron_crosses_dst_changes_with_an_injected_clock() {
    let app = TestApp::spawn().await;
    let mut c = app.db.client().await;
    let gap = cron::ScheduleSpec {
        name: "gap".into(),
        cron: "30 2 * * *".into(),
        timezone: "America/New_York".into(),
        queue: "gap".into(),
        payload: json!({}),
        enabled: true,
    };
    let s = cron::upsert(&c, &gap, at("2026-03-07T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        s["next_run_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at("2026-03-08T07:00:00Z")
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-03-08T06:59:00Z"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-03-08T07:00:01Z"))
            .await
            .unwrap(),
        1,
        "skipped 02:30 runs once after the gap"
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-03-08T07:30:00Z"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-03-08T23:00:00Z"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-03-09T06:30:00Z"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(fired(&c, "gap").await, 2);
    c.execute("DELETE FROM jobs.schedules WHERE name = 'gap'", &[])
        .await
        .unwrap();

    let overlap = cron::ScheduleSpec {
        name: "overlap".into(),
        cron: "30 1 * * *".into(),
        queue: "overlap".into(),
        ..gap.clone()
    };
    cron::upsert(&c, &overlap, at("2026-10-31T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        cron::tick(&mut c, at("2026-11-01T05:30:00Z"))
            .await
            .unwrap(),
        1,
        "first 01:30 (EDT)"
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-11-01T06:30:00Z"))
            .await
            .unwrap(),
        0,
        "repeated 01:30 (EST) does not run"
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-11-02T06:30:00Z"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(fired(&c, "overlap").await, 2);

    // A leader that was away for days fires once, not once per missed day.
    assert_eq!(
        cron::tick(&mut c, at("2026-11-09T12:00:00Z"))
            .await
            .unwrap(),
        1,
        "one catch-up"
    );
    assert_eq!(
        cron::tick(&mut c, at("2026-11-09T12:00:01Z"))
            .await
            .unwrap(),
        0
    );
}

/// A runner whose clock the test moves: schedules fire when the injected time says so.
#[tokio::test]
async fn runner_fires_on_the_injected_clock() {
    struct Manual(std::sync::Mutex<DateTime<Utc>>);
    impl cron::Clock for Manual {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }
    let app = TestApp::spawn().await;
    let c = app.db.client().await;
    let clock = Arc::new(Manual(std::sync::Mutex::new(at("2026-03-08T06:00:00Z"))));
    let spec = cron::ScheduleSpec {
        name: "nightly".into(),
        cron: "30 2 * * *".into(),
        timezone: "America/New_York".into(),
        queue: "nightly".into(),
        payload: json!({"k": 1}),
        enabled: true,
    };
    cron::upsert(&c, &spec, at("2026-03-08T06:00:00Z"))
        .await
        .unwrap();
    let runner = support::start_runner_with(&app, Registry::default(), true, clock.clone());
    assert!(eventually(Duration::from_secs(10), || async { runner.is_leader() }).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fired(&c, "nightly").await,
        0,
        "not due yet on the injected clock"
    );
    *clock.0.lock().unwrap() = at("2026-03-08T07:00:05Z");
    assert!(
        eventually(Duration::from_secs(5), || async {
            fired(&c, "nightly").await == 1
        })
        .await
    );
    let p: Value = c
        .query_one("SELECT payload FROM jobs.jobs WHERE queue = 'nightly'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(p, json!({"k": 1}));
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn admin_api_lists_inspects_cancels_and_audits() {
    let app = TestApp::spawn().await;
    let key = app.service_key();
    let get = |path: &str| app.http.get(app.url(path)).header("apikey", key.clone());
    let post = |path: &str| app.http.post(app.url(path)).header("apikey", key.clone());

    let a = enqueue(&app, spec("q1", json!({"a": 1}))).await;
    let b = enqueue(&app, spec("q2", json!({"b": 1}))).await;
    let list: Value = get("/api/v1/jobs?queue=q1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], a);
    let r = get("/api/v1/jobs?status=bogus").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let one: Value = get(&format!("/api/v1/jobs/{b}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["payload"], json!({"b": 1}));
    assert_eq!(
        get("/api/v1/jobs/999999").send().await.unwrap().status(),
        404
    );

    let r = post(&format!("/api/v1/jobs/{a}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    assert_eq!(
        post(&format!("/api/v1/jobs/{a}/cancel"))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );

    let stats: Value = get("/api/v1/jobs/stats")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let q1 = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["queue"] == "q1")
        .unwrap();
    assert_eq!(q1["cancelled"], 1);
    let q2 = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["queue"] == "q2")
        .unwrap();
    assert_eq!(q2["ready"], 1);

    // Schedules: validation, upsert, list, delete.
    let bad = post("/api/v1/jobs/schedules")
        .json(&json!({"name": "x", "cron": "99 * * * *", "queue": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = post("/api/v1/jobs/schedules")
        .json(&json!({"name": "x", "cron": "* * * * *", "timezone": "Nowhere/Town", "queue": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let ok = post("/api/v1/jobs/schedules")
        .json(&json!({"name": "nightly-sql", "cron": "0 3 * * *", "timezone": "Europe/Paris", "queue": "fluxbase.sql", "payload": {"sql": "SELECT 1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let s: Value = ok.json().await.unwrap();
    assert_eq!(s["timezone"], "Europe/Paris");
    let all: Value = get("/api/v1/jobs/schedules")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "nightly-sql"));
    let del = app
        .http
        .delete(app.url("/api/v1/jobs/schedules/nightly-sql"))
        .header("apikey", key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let del = app
        .http
        .delete(app.url("/api/v1/jobs/schedules/nightly-sql"))
        .header("apikey", key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404);

    // Not for anyone else.
    let r = app
        .get("/api/v1/jobs")
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Every change was audited.
    let audit: Value = get("/api/v1/audit?action=jobs.*")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"jobs.cancel"), "{actions:?}");
    assert!(actions.contains(&"jobs.schedule.upsert"), "{actions:?}");
    assert!(actions.contains(&"jobs.schedule.delete"), "{actions:?}");
    let cancel = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "jobs.cancel")
        .unwrap();
    assert_eq!(cancel["target"], format!("job:{a}"));
    assert_eq!(cancel["actor_role"], "service_role");
    assert_eq!(cancel["ip"], "127.0.0.1");
    let none: Value = get("/api/v1/audit?action=auth.*")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn job_metrics_are_exported() {
    let app = TestApp::spawn().await;
    let mut reg = Registry::default();
    let n = Arc::new(AtomicI32::new(0));
    let n2 = n.clone();
    reg.register("counted", RetryPolicy::default(), move |_| {
        n2.fetch_add(1, Ordering::SeqCst);
        async { Ok(None) }
    });
    let runner = start_runner(&app, reg, false);
    let id = enqueue(&app, spec("counted", json!({}))).await;
    wait_status(&app, id, "succeeded", Duration::from_secs(10)).await;
    enqueue(&app, spec("nobody-handles-this", json!({}))).await;
    let text = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"fluxbase_jobs_runs_total{outcome="succeeded",queue="counted"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"fluxbase_jobs_ready{queue="nobody-handles-this"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("fluxbase_jobs_oldest_ready_age_seconds"),
        "{text}"
    );
    assert_eq!(n.load(Ordering::SeqCst), 1);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn maintenance_prunes_by_age_and_keeps_recent_and_pending_jobs() {
    let app = TestApp::spawn_with(|c| {
        c.jobs.retention_days = 7;
        c.jobs.dead_retention_days = 30;
        c.audit.retention_days = 90;
    })
    .await;
    let c = app.db.client().await;
    c.batch_execute(
        "INSERT INTO jobs.jobs (queue, status, finished_at) VALUES
           ('old', 'succeeded', now() - interval '8 days'),
           ('old', 'cancelled', now() - interval '8 days'),
           ('old', 'dead', now() - interval '8 days'),
           ('old', 'dead', now() - interval '31 days'),
           ('old', 'succeeded', now() - interval '1 day');
         INSERT INTO jobs.jobs (queue, status, created_at) VALUES ('old', 'pending', now() - interval '100 days');
         INSERT INTO fluxbase.audit_log (action, at) VALUES ('x.old', now() - interval '91 days'), ('x.new', now());",
    )
    .await
    .unwrap();
    let mut reg = Registry::default();
    jobs::builtin::register(&mut reg, &app.state.config);
    let runner = start_runner(&app, reg, false);
    let id = enqueue(&app, spec(jobs::builtin::MAINTENANCE, json!({}))).await;
    let j = wait_status(&app, id, "succeeded", Duration::from_secs(10)).await;
    assert_eq!(
        j["result"],
        json!({"jobs_pruned": 3, "audit_pruned": 1}),
        "{j}"
    );
    let left: Vec<(String, String)> = c
        .query(
            "SELECT status, queue FROM jobs.jobs WHERE queue = 'old' ORDER BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let statuses: Vec<&str> = left.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        vec!["dead", "pending", "succeeded"],
        "recent dead letter, pending and recent done stay"
    );
    let audit: Vec<String> = c
        .query(
            "SELECT action FROM fluxbase.audit_log WHERE action LIKE 'x.%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, vec!["x.new"]);
    // The hourly schedule is installed at start-up (idempotently).
    jobs::builtin::ensure_schedules(&c).await.unwrap();
    jobs::builtin::ensure_schedules(&c).await.unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM jobs.schedules WHERE name = 'fluxbase.maintenance'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    runner.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sql_jobs_run_sql_and_do_not_retry_syntax_errors() {
    let app = TestApp::spawn().await;
    let c = app.db.client().await;
    c.batch_execute("CREATE TABLE ticks (job bigint, attempt int)")
        .await
        .unwrap();
    let mut reg = Registry::default();
    jobs::builtin::register(&mut reg, &app.state.config);
    let runner = start_runner(&app, reg, false);
    let ok = enqueue(
        &app,
        spec(
            jobs::builtin::SQL,
            json!({"sql": "INSERT INTO ticks SELECT current_setting('fluxbase.job_id')::bigint, current_setting('fluxbase.job_attempt')::int"}),
        ),
    )
    .await;
    wait_status(&app, ok, "succeeded", Duration::from_secs(10)).await;
    let row = c
        .query_one("SELECT job, attempt FROM ticks", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (ok, 1));
    let bad = enqueue(&app, spec(jobs::builtin::SQL, json!({"sql": "SELEC 1"}))).await;
    let j = wait_status(&app, bad, "dead", Duration::from_secs(10)).await;
    assert_eq!(j["attempts"], 1, "a syntax error is permanent");
    let missing = enqueue(&app, spec(jobs::builtin::SQL, json!({"nope": 1}))).await;
    wait_status(&app, missing, "dead", Duration::from_secs(10)).await;
    runner.shutdown(Duration::from_secs(1)).await;
}
