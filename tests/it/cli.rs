//! The real binary: managed Postgres lifecycle (first start, reuse, SIGTERM, kill -9),
//! config validation exit codes, and two instances on one database.

use crate::support::{self, bin, empty_db, postmasters_on, short_tempdir, ServeProcess};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;

fn keys(data_dir: &std::path::Path) -> String {
    let out = bin()
        .args(["keys", "show", "--data-dir"])
        .arg(data_dir)
        .current_dir(data_dir.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn managed_postgres_lifecycle() {
    let tmp = short_tempdir();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let pgdata = data.join("pg");

    // First start: initdb, migrations, serve.
    let mut s = ServeProcess::start(tmp.path(), "first", &["--data-dir", data_s]);
    s.wait_ready(Duration::from_secs(90)).await;
    assert_eq!(
        reqwest::get(format!("{}/health", s.base))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(postmasters_on(&pgdata).len(), 1);
    // `keys show` attaches to the running cluster without disturbing it.
    let k1 = keys(&data);
    assert!(k1.contains("anon:") && k1.contains("service_role:"), "{k1}");
    assert_eq!(
        reqwest::get(format!("{}/ready", s.base))
            .await
            .unwrap()
            .status(),
        200
    );

    // SIGTERM: clean exit, Postgres stopped.
    s.signal(Signal::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(60));
    assert!(
        st.success(),
        "exit {st:?}: {}",
        std::fs::read_to_string(&s.log).unwrap()
    );
    assert!(
        postmasters_on(&pgdata).is_empty(),
        "Postgres still running after SIGTERM"
    );
    assert!(!pgdata.join("postmaster.pid").exists());

    // Second start reuses the data: same generated secret, so the same keys.
    let mut s = ServeProcess::start(tmp.path(), "second", &["--data-dir", data_s]);
    s.wait_ready(Duration::from_secs(60)).await;
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        !log.contains("initdb done"),
        "second start must not initdb:\n{log}"
    );
    assert_eq!(keys(&data), k1);

    // kill -9 leaves an orphaned Postgres; the next start takes over and exactly one runs.
    s.signal(Signal::SIGKILL);
    s.wait_exit(Duration::from_secs(10));
    assert_eq!(
        postmasters_on(&pgdata).len(),
        1,
        "orphan expected after kill -9"
    );
    let mut s = ServeProcess::start(tmp.path(), "third", &["--data-dir", data_s]);
    s.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(
        postmasters_on(&pgdata).len(),
        1,
        "exactly one Postgres after restart"
    );
    let b: Value = reqwest::get(format!("{}/ready", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["status"], "ready");

    // A second serve on the same live data dir is refused, and leaves the first alone.
    let mut dup = ServeProcess::start(tmp.path(), "dup", &["--data-dir", data_s]);
    let st = dup.wait_exit(Duration::from_secs(30));
    assert!(!st.success());
    assert!(std::fs::read_to_string(&dup.log)
        .unwrap()
        .contains("in use by another fluxbase"));
    assert_eq!(
        reqwest::get(format!("{}/ready", s.base))
            .await
            .unwrap()
            .status(),
        200
    );

    s.signal(Signal::SIGINT);
    assert!(s.wait_exit(Duration::from_secs(60)).success());
    assert!(postmasters_on(&pgdata).is_empty());
}

#[test]
fn invalid_config_lists_every_problem_and_exits_2() {
    let tmp = short_tempdir();
    let f = tmp.path().join("bad.yaml");
    std::fs::write(
        &f,
        "server:\n  port: 70000\n  workers: many\nlog:\n  level: loud\nmystery: 1\n",
    )
    .unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.workers"), "{err}");

    // Type problems fixed, value problems remain: all of them at once.
    std::fs::write(&f, "server:\n  port: 70000\nlog:\n  level: loud\n").unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&f)
        .env("FLUXBASE_DATABASE__POOL_SIZE", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["server.port", "log.level", "database.pool_size"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }

    // serve refuses the same way, before touching anything.
    let out = bin()
        .args(["serve", "--config"])
        .arg(&f)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("fluxbase-data").exists());

    // Nested env overrides and lists are accepted; unknown keys only warn.
    std::fs::write(&f, "server:\n  port: 8081\nmystery: 1\n").unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&f)
        .env("FLUXBASE_STORAGE__S3__REGION", "eu-west-1")
        .env("FLUXBASE_REST__SCHEMAS", "public,api")
        .env(
            "FLUXBASE_SERVER__CORS__ALLOWED_ORIGINS",
            "http://a.test,http://b.test",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("mystery"));
}

#[test]
fn version_flag() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn two_instances_on_one_database_url() {
    let db = empty_db().await;
    let tmp = short_tempdir();
    let mut a = ServeProcess::start(tmp.path(), "a", &["--database-url", &db.url]);
    let mut b = ServeProcess::start(tmp.path(), "b", &["--database-url", &db.url]);
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;
    for p in [&a, &b] {
        let log = std::fs::read_to_string(&p.log).unwrap();
        assert!(!log.to_lowercase().contains("error"), "{log}");
    }
    // Both verify the key `keys show` prints: they agree on the generated secret.
    let service = support::cli_key(&db.url, "service_role");
    for p in [&a, &b] {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/admin/info", p.base))
            .header("apikey", &service)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", p.base);
    }
    let c = support::connect(&db.url).await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM fluxbase.settings WHERE key = 'jwt_secret'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn unreachable_database_at_start_retries_then_fails_clearly() {
    let tmp = short_tempdir();
    let port = support::free_port();
    let started = std::time::Instant::now();
    let out = bin()
        .current_dir(tmp.path())
        .args(["serve", "--port", &support::free_port().to_string()])
        .args([
            "--database-url",
            &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        ])
        .env("FLUXBASE_DATABASE__STARTUP_RETRY_SECS", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retrying"), "retries are logged:\n{err}");
    assert!(err.contains("database not reachable after"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it retried for a while"
    );
}
