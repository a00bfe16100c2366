//! The database kernel: request transaction (role, claims, RLS), the migration runner,
//! privilege checks, and recovery when the database goes away.

use crate::support::{self, connect, empty_db, eventually, fresh_db, TestApp};
use fluxbase::auth::AuthContext;
use fluxbase::db::migrate::{self, Migration, MigrationSet};
use fluxbase::db::tx::{RequestInfo, RequestTx};
use serde_json::{json, Value};
use std::time::Duration;

fn ctx(app: &TestApp, claims: Option<Value>) -> AuthContext {
    let mut h = actix_web::http::header::HeaderMap::new();
    if let Some(c) = claims {
        let t = app.token(c);
        h.insert(
            actix_web::http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    AuthContext::from_headers(&h, app.keys()).unwrap()
}

async fn rls_table(app: &TestApp, owner: &str) {
    let c = app.db.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE notes (id serial primary key, owner uuid not null, body text);
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own_notes ON notes FOR SELECT USING (owner = auth.uid());
         INSERT INTO notes (owner, body) VALUES ('{owner}', 'mine'), ('{owner}', 'also mine'),
           ('00000000-0000-0000-0000-000000000000', 'someone else');"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn jwt_selects_role_and_rls_filters_rows() {
    let app = TestApp::spawn_with(|c| c.database.pool_size = 1).await;
    let owner = "6f1e3a52-8a3c-4d8e-9d2a-0a4f4f1b2c3d";
    rls_table(&app, owner).await;
    let info = RequestInfo {
        method: "GET".into(),
        path: "/test".into(),
        headers_json: "{}".into(),
        cookies_json: "{}".into(),
        request_id: "test".into(),
        slow_query_ms: 0,
        trace: None,
        published: Default::default(),
        pre_request: None,
    };
    let sql =
        "SELECT current_user::text, auth.uid()::text, auth.role(), (SELECT count(*) FROM notes),
                      current_setting('request.method'), auth.jwt() ->> 'email'";

    // Anonymous, on the pool's one fresh connection.
    let anon = AuthContext::anon();
    let (tx, rows) = RequestTx::begin_with(&app.state.pool, &anon, &info, true, sql, &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "anon");
    assert_eq!(rows[0].get::<_, Option<String>>(1), None);
    assert_eq!(
        rows[0].get::<_, i64>(3),
        0,
        "anon sees no rows of an RLS table"
    );
    assert_eq!(rows[0].get::<_, String>(4), "GET");

    // The owner, authenticated.
    let user = ctx(
        &app,
        Some(json!({"role": "authenticated", "sub": owner, "email": "o@example.test"})),
    );
    let (tx, rows) = RequestTx::begin_with(&app.state.pool, &user, &info, true, sql, &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "authenticated");
    assert_eq!(rows[0].get::<_, Option<String>>(1).as_deref(), Some(owner));
    assert_eq!(rows[0].get::<_, String>(2), "authenticated");
    assert_eq!(rows[0].get::<_, i64>(3), 2);
    assert_eq!(rows[0].get::<_, String>(5), "o@example.test");

    // service_role bypasses RLS.
    let svc = ctx(&app, Some(json!({"role": "service_role"})));
    let (tx, rows) = RequestTx::begin_with(&app.state.pool, &svc, &info, true, sql, &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(3), 3);

    // Same (only) connection again as anon: nothing leaked from the previous transaction.
    let (tx, rows) = RequestTx::begin_with(&app.state.pool, &anon, &info, true, sql, &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "anon");
    assert_eq!(rows[0].get::<_, i64>(3), 0);
}

#[tokio::test]
async fn failed_and_dropped_transactions_leave_the_pool_clean() {
    let app = TestApp::spawn_with(|c| c.database.pool_size = 1).await;
    let info = RequestInfo::default();
    let anon = AuthContext::anon();
    app.db
        .client()
        .await
        .batch_execute("CREATE TABLE t (x int); GRANT ALL ON t TO anon;")
        .await
        .unwrap();

    // A SQL error maps to the PostgREST status and the connection is usable afterwards.
    let err = RequestTx::begin_with(&app.state.pool, &anon, &info, false, "SELECT 1/0", &[])
        .await
        .err()
        .unwrap();
    assert_eq!(err.code, "22012");
    assert_eq!(err.status, 400);
    let err = RequestTx::begin_with(
        &app.state.pool,
        &anon,
        &info,
        false,
        "SELECT * FROM missing_table",
        &[],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.status, 404);

    // A read-only transaction refuses writes (405 as PostgREST maps 25006).
    let err = RequestTx::begin_with(
        &app.state.pool,
        &anon,
        &info,
        true,
        "INSERT INTO t VALUES (1)",
        &[],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.status, 405);

    // Dropped without commit: the write is rolled back, the next request gets a clean session.
    {
        let (tx, _) = RequestTx::begin_with(
            &app.state.pool,
            &anon,
            &info,
            false,
            "INSERT INTO t VALUES (1)",
            &[],
        )
        .await
        .unwrap();
        drop(tx);
    }
    let (tx, rows) = RequestTx::begin_with(
        &app.state.pool,
        &anon,
        &info,
        true,
        "SELECT (SELECT count(*) FROM t), current_setting('transaction_read_only')",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    assert_eq!(rows[0].get::<_, String>(1), "on");

    // tx=rollback semantics: rolled back writes vanish.
    let (tx, _) = RequestTx::begin_with(
        &app.state.pool,
        &anon,
        &info,
        false,
        "INSERT INTO t VALUES (2)",
        &[],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let c = app.db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

fn set(versioned: &[(&str, &str)], replaceable: &[(&str, &str)]) -> MigrationSet {
    MigrationSet {
        versioned: versioned
            .iter()
            .map(|(f, s)| Migration::versioned(f, s).unwrap())
            .collect(),
        replaceable: replaceable
            .iter()
            .map(|(f, s)| Migration::replaceable(f, s))
            .collect(),
    }
}

#[tokio::test]
async fn migrations_apply_once_and_replaceables_follow_their_hash() {
    let db = empty_db().await;
    let mut c = connect(&db.url).await;
    let v1 = ("20260101000000_t_one.sql", "CREATE TABLE one (x int);");
    let f1 = (
        "f.sql",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
    );
    let r = migrate::run(&mut c, &set(&[v1], &[f1])).await.unwrap();
    assert_eq!((r.applied.len(), r.replaced.len()), (1, 1));
    let r = migrate::run(&mut c, &set(&[v1], &[f1])).await.unwrap();
    assert_eq!(
        (r.applied.len(), r.replaced.len()),
        (0, 0),
        "second run is a no-op"
    );

    let f2 = (
        "f.sql",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2';",
    );
    let v2 = ("20260102000000_t_two.sql", "INSERT INTO one VALUES (1);");
    let r = migrate::run(&mut c, &set(&[v1, v2], &[f2])).await.unwrap();
    assert_eq!(r.applied, vec!["20260102000000"]);
    assert_eq!(r.replaced, vec!["f"]);
    let x: i32 = c.query_one("SELECT f()", &[]).await.unwrap().get(0);
    assert_eq!(x, 2);

    // An applied migration must never change.
    let v1_changed = ("20260101000000_t_one.sql", "CREATE TABLE one (x bigint);");
    let e = migrate::run(&mut c, &set(&[v1_changed, v2], &[f2]))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("changed after it was applied"),
        "{e}"
    );

    // A failing migration leaves nothing half-applied.
    let bad = (
        "20260103000000_t_bad.sql",
        "CREATE TABLE three (x int); SELECT 1/0;",
    );
    assert!(migrate::run(&mut c, &set(&[v1, v2, bad], &[f2]))
        .await
        .is_err());
    let exists: bool = c
        .query_one("SELECT to_regclass('three') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
    let lines = migrate::status(&c, &set(&[v1, v2, bad], &[f2]))
        .await
        .unwrap();
    let states: Vec<_> = lines.iter().map(|l| l.state).collect();
    assert_eq!(states, vec!["applied", "applied", "pending", "applied"]);
}

#[tokio::test]
async fn concurrent_migrations_do_not_race() {
    let db = empty_db().await;
    let set = migrate::embedded().unwrap();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let url = db.url.clone();
        let set = set.clone();
        handles.push(tokio::spawn(async move {
            let mut c = connect(&url).await;
            migrate::run(&mut c, &set).await.map(|r| r.applied.len())
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap().unwrap();
    }
    assert_eq!(
        total,
        set.versioned.len(),
        "each migration applied exactly once"
    );
}

#[tokio::test]
async fn missing_privileges_are_listed() {
    let db = fresh_db().await;
    let admin = db.client().await;
    let role = format!("weak_{}", db.name);
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, db.url, "test URL names the postgres user: {}", db.url);
    let weak = connect(&url).await;
    let missing = fluxbase::db::missing_privileges(&weak).await.unwrap();
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].contains("CREATEROLE"));
    assert!(missing[1].contains("must own database"));

    // The binary refuses with the list and exit status 2.
    let out = support::bin()
        .args(["migrate", "up", "--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CREATEROLE") && err.contains("must own database"),
        "{err}"
    );

    let su = connect(&db.url).await;
    su.batch_execute(&format!(
        "ALTER ROLE {role} CREATEROLE; ALTER DATABASE {} OWNER TO {role}",
        db.name
    ))
    .await
    .unwrap();
    assert!(fluxbase::db::missing_privileges(&weak)
        .await
        .unwrap()
        .is_empty());
}

/// Needs a private cluster: it stops the database under a running server.
#[tokio::test]
async fn ready_follows_the_database_down_and_back() {
    let mut pg = support::start_private_cluster("resilience");
    let db = support::TestDb {
        name: "postgres".into(),
        url: pg.url("postgres"),
    };
    let app = TestApp::spawn_on(db, |c| c.database.acquire_timeout_secs = 1).await;
    let ready = |app: &TestApp| {
        let req = app.get("/ready");
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(ready(&app).await, 200);

    let pg2 = std::thread::spawn(move || {
        pg.stop().unwrap();
        pg
    })
    .join()
    .unwrap();
    pg = pg2;
    assert!(
        eventually(Duration::from_secs(5), || async {
            ready(&app).await == 503
        })
        .await,
        "/ready did not turn 503 within 5 s of the database stopping"
    );
    let r = app.get("/ready").send().await.unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "FB100", "{b}");
    let r = app
        .get("/api/v1/admin/info")
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB100");

    std::thread::spawn(move || {
        pg.start().unwrap();
        pg
    })
    .join()
    .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            ready(&app).await == 200
        })
        .await,
        "/ready did not recover without a restart"
    );
    let r = app
        .get("/api/v1/admin/info")
        .header("apikey", app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `database.managed.listen_tcp`: TCP needs the generated password; the socket needs none.
#[tokio::test]
async fn managed_tcp_listener_requires_the_generated_password() {
    let tmp = support::short_tempdir();
    let port = support::free_port();
    let mut pg = fluxbase::embedded_pg::ManagedPg::new(fluxbase::embedded_pg::ClusterOptions {
        pgdata: tmp.path().join("pg"),
        port,
        tcp_host: Some("127.0.0.1".into()),
        fsync: false,
        bin_dir: None,
        extra_conf: vec![],
    })
    .unwrap();
    let mut pg = std::thread::spawn(move || {
        pg.start().unwrap();
        pg
    })
    .join()
    .unwrap();
    let pw = std::fs::read_to_string(pg.password_file())
        .unwrap()
        .trim()
        .to_string();
    let good = format!("postgresql://postgres:{pw}@127.0.0.1:{port}/postgres");
    let c = connect(&good).await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    let bad = format!("postgresql://postgres:wrong@127.0.0.1:{port}/postgres");
    assert!(tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .is_err());
    let nopw = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    assert!(tokio_postgres::connect(&nopw, tokio_postgres::NoTls)
        .await
        .is_err());
    // The socket still works without one.
    let s = connect(&pg.url("postgres")).await;
    assert_eq!(
        s.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    drop((c, s));
    pg = std::thread::spawn(move || {
        pg.stop().unwrap();
        pg
    })
    .join()
    .unwrap();
    assert!(pg.running_pid().is_none());
}

/// The wire pool hands a worker an idle connection opened on its own thread (whose reactor
/// the socket is registered with) before one opened on another worker's thread, and still
/// serves it another thread's connection when none of its own is idle.
#[test]
fn wire_pool_prefers_connections_opened_on_this_thread() {
    use fluxbase::db::wire::Pool;
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let rt = runtime();
    let db = rt.block_on(empty_db());
    let cfg: tokio_postgres::Config = db.url.parse().unwrap();
    let pool = Pool::new(&cfg, 3, Duration::from_secs(10)).expect("a wire pool");
    // Two connections opened on this thread, held ...
    let (a1, a2) = rt.block_on(async { (pool.get().await.unwrap(), pool.get().await.unwrap()) });
    assert!(a1.opened_here() && a2.opened_here());
    // ... while another thread opens a third (its runtime, and so the reactor its socket is
    // registered with, lives until the end of the test).
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
    let other_pool = pool.clone();
    let other = std::thread::spawn(move || {
        let rt = runtime();
        let b = rt.block_on(other_pool.get()).unwrap();
        assert!(b.opened_here());
        conn_tx.send(b).unwrap();
        let _ = end_rx.recv();
    });
    let b = conn_rx.recv().unwrap();
    assert!(!b.opened_here());
    // Idle, most recently returned last: a1, a2, then the other thread's.
    drop(a1);
    drop(a2);
    drop(b);
    let c = rt.block_on(pool.get()).unwrap();
    assert!(
        c.opened_here(),
        "took the other thread's connection while one of this thread's was idle"
    );
    let d = rt.block_on(pool.get()).unwrap();
    assert!(d.opened_here());
    // Only the other thread's is idle now: served rather than a new one opened.
    let e = rt.block_on(pool.get()).unwrap();
    assert!(!e.opened_here());
    drop((c, d, e));
    end_tx.send(()).unwrap();
    other.join().unwrap();
}
