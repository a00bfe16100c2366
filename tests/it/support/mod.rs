//! Test harness: a real Postgres (FLUXBASE_TEST_DATABASE_URL, or a throwaway cluster started
//! with the same code as the managed Postgres), one migrated template database, a fresh
//! clone per test, and helpers to spawn the app or the real binary.

#![allow(dead_code)]

pub mod hook_server;
pub mod oauth_provider;
pub mod s3;
pub mod sms_provider;
pub mod smtp;
pub mod venv;

use fluxbase::app::{start_http, AppState};
use fluxbase::auth::jwt::{Claims, JwtKeys};
use fluxbase::config::{Config, Secret};
use fluxbase::embedded_pg::{ClusterOptions, ManagedPg};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Starts a fake outside service: an actix server on `ip` (a free port), one worker, on its own
/// thread and runtime, its routes and data set by `configure`. Answers the port.
pub fn serve_fake(
    ip: &'static str,
    configure: impl Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new().configure(configure.clone())
            })
            .workers(1)
            .bind((ip, 0))
            .unwrap();
            tx.send(server.addrs()[0].port()).unwrap();
            server.run().await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// The JWT secret every in-process test app uses.
pub const TEST_SECRET: &str = "fluxbase-test-secret-0123456789abcdef";

struct Cluster {
    /// Connection URL template: `{db}` is replaced by the database name.
    url_for: Box<dyn Fn(&str) -> String + Send + Sync>,
    template: String,
    prefix: String,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        // Runs on its own thread: the caller is inside a tokio runtime.
        std::thread::spawn(init_cluster)
            .join()
            .expect("test cluster init panicked")
    })
}

fn init_cluster() -> Cluster {
    let pid = std::process::id();
    let prefix = format!("fbt_{pid}_");
    let url_for: Box<dyn Fn(&str) -> String + Send + Sync> =
        match std::env::var("FLUXBASE_TEST_DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
        {
            Some(base) => Box::new(move |db| url_with_db(&base, db)),
            None => {
                let pg = start_private_cluster("shared");
                let pg = Arc::new(pg);
                Box::new(move |db| pg.url(db))
            }
        };
    let template = format!("{prefix}template");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let admin = connect(&url_for("postgres")).await;
        drop_stale_databases(&admin).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {template}"))
            .await
            .expect("create template db");
        let mut c = connect(&url_for(&template)).await;
        let set = fluxbase::db::migrate::embedded().unwrap();
        fluxbase::db::migrate::run(&mut c, &set)
            .await
            .expect("migrate template");
    });
    Cluster {
        url_for,
        template,
        prefix,
    }
}

/// Databases left by earlier runs against a shared server (their process is gone).
async fn drop_stale_databases(admin: &tokio_postgres::Client) {
    let rows = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'fbt\\_%'",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let name: String = r.get(0);
        let pid: Option<i32> = name.split('_').nth(1).and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// Starts a throwaway cluster in a short temp dir (fsync off) and a reaper process that
/// stops it and removes the directory when this test process exits.
pub fn start_private_cluster(tag: &str) -> ManagedPg {
    let dir = PathBuf::from(format!(
        "/tmp/fbt-{}-{tag}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut pg = ManagedPg::new(ClusterOptions {
        pgdata: dir.join("pg"),
        port: 5432,
        tcp_host: None,
        fsync: false,
        bin_dir: None,
        extra_conf: vec![
            "max_connections = 400".into(),
            "shared_buffers = 32MB".into(),
        ],
    })
    .expect("Postgres binaries (apt-get install postgresql)");
    pg.start().expect("start test cluster");
    spawn_reaper(&dir, &dir.join("pg"));
    pg
}

fn spawn_reaper(dir: &Path, pgdata: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         p=$(head -n1 '{pgdata}/postmaster.pid' 2>/dev/null); [ -n \"$p\" ] && kill -QUIT \"$p\" 2>/dev/null; \
         sleep 1; rm -rf '{dir}'",
        pid = std::process::id(),
        pgdata = pgdata.display(),
        dir = dir.display()
    );
    // Deliberately never waited on: it must outlive this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    let _reaper = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn reaper");
}

/// Replaces the database name of a postgres URL.
pub fn url_with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Connects and drives the connection on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database of one's own.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL (as the superuser).
    pub url: String,
}

impl TestDb {
    /// A superuser client on it.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

/// A migrated database cloned from the template.
pub async fn fresh_db() -> TestDb {
    create_db(true).await
}

/// An empty (unmigrated) database.
pub async fn empty_db() -> TestDb {
    create_db(false).await
}

async fn create_db(migrated: bool) -> TestDb {
    let c = cluster();
    let name = format!("{}{}", c.prefix, COUNTER.fetch_add(1, Ordering::SeqCst));
    let admin = connect(&(c.url_for)("postgres")).await;
    let template = if migrated {
        c.template.as_str()
    } else {
        "template0"
    };
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    TestDb {
        url: (c.url_for)(&name),
        name,
    }
}

/// The URL of `db` on the shared test server.
pub fn db_url(db: &str) -> String {
    (cluster().url_for)(db)
}

/// Base configuration of an in-process test app.
pub fn test_config(url: &str) -> Config {
    let mut c = Config::default();
    c.server.port = 0;
    c.server.workers = 1;
    c.database.url = Some(Secret::new(url));
    c.database.pool_size = 4;
    c.database.startup_retry_secs = 10;
    c.auth.jwt_secret = Some(Secret::new(TEST_SECRET));
    c.log.level = "warn".into();
    c
}

/// The app running in this process on 127.0.0.1:<random>.
pub struct TestApp {
    /// `http://127.0.0.1:port`
    pub base: String,
    /// The app's database.
    pub db: TestDb,
    /// The app's state (pool, keys).
    pub state: AppState,
    handle: actix_web::dev::ServerHandle,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl TestApp {
    /// Spawns the app on a fresh migrated database.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with a config tweak.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let db = fresh_db().await;
        Self::spawn_on(db, tweak).await
    }

    /// Spawns on a given database. Everything the app owns (pool connections, listeners)
    /// lives on the server's own runtime, so a test that blocks its thread (waiting for a
    /// child process) cannot stall the server.
    pub async fn spawn_on(db: TestDb, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let mut cfg = test_config(&db.url);
        tweak(&mut cfg);
        // Password hashing in the real worker process, as the binary does.
        fluxbase::auth::hasher::use_worker_program(env!("CARGO_BIN_EXE_fluxbase").into());
        fluxbase::telemetry::init(&cfg.log);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let url = db.url.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let state = match fluxbase::server::prepare(Arc::new(cfg), &url, false).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let (server, addrs) = start_http(state.clone()).expect("bind");
                let _ = tx.send(Ok((state, server.handle(), addrs[0])));
                let _ = server.await;
            });
        });
        let (state, handle, addr) = rx
            .await
            .expect("server thread")
            .unwrap_or_else(|e| panic!("prepare: {e}"));
        TestApp {
            base: format!("http://{addr}"),
            db,
            state,
            handle,
            http: reqwest::Client::new(),
        }
    }

    /// Full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }

    /// The JWT keys of the app.
    pub fn keys(&self) -> &JwtKeys {
        &self.state.jwt
    }

    /// A token with these claims (exp defaults to an hour from now).
    pub fn token(&self, claims: Value) -> String {
        let mut c: Claims = serde_json::from_value(claims).unwrap();
        c.entry("exp")
            .or_insert_with(|| Value::from(chrono::Utc::now().timestamp() + 3600));
        self.keys().sign(&c).unwrap()
    }

    /// The service_role key.
    pub fn service_key(&self) -> String {
        self.keys()
            .api_key("service_role", chrono::Utc::now().timestamp())
            .unwrap()
    }

    /// The anon key.
    pub fn anon_key(&self) -> String {
        self.keys()
            .api_key("anon", chrono::Utc::now().timestamp())
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let h = self.handle.clone();
        std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(h.stop(false));
            }
        });
    }
}

/// Polls `f` until it returns true or the deadline passes (a deadline, not a timing assertion).
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fluxbase"));
    // Tests never inherit the developer's config or variables.
    for (k, _) in std::env::vars() {
        if k.starts_with("FLUXBASE_") {
            c.env_remove(k);
        }
    }
    c.env("FLUXBASE_LOG__FORMAT", "json").stdin(Stdio::null());
    c
}

/// The key `fluxbase keys show --database-url URL` prints for `role` (`anon` or
/// `service_role`); asserts the command succeeds.
pub fn cli_key(database_url: &str, role: &str) -> String {
    let out = bin()
        .args(["keys", "show", "--database-url", database_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("{role}:");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {role} key in: {text}"))
        .trim()
        .to_string()
}

/// A `fluxbase serve` child process.
pub struct ServeProcess {
    /// The child.
    pub child: Child,
    /// Its base URL.
    pub base: String,
    /// Its log file.
    pub log: PathBuf,
}

impl ServeProcess {
    /// Starts `fluxbase serve` with extra args in `cwd`, logging to `cwd/<name>.log`.
    pub fn start(cwd: &Path, name: &str, args: &[&str]) -> ServeProcess {
        let port = free_port();
        let log = cwd.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = bin()
            .current_dir(cwd)
            .arg("serve")
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn fluxbase serve");
        ServeProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Waits for `/ready` to answer 200; panics with the log if it never does.
    pub async fn wait_ready(&mut self, within: Duration) {
        let url = format!("{}/ready", self.base);
        let ok = eventually(within, || async {
            matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200)
        })
        .await;
        if !ok {
            let status = self.child.try_wait().ok().flatten();
            panic!(
                "{} never became ready (exit: {status:?}); log:\n{}",
                self.base,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }
}

/// Postmaster processes running on `pgdata` (command lines `postgres -D <pgdata>`). A
/// freshly forked backend briefly still shows the postmaster's command line, so only
/// processes whose parent is not such a process count.
pub fn postmasters_on(pgdata: &Path) -> Vec<i32> {
    let needle = pgdata.display().to_string();
    let mut found: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let is_pg = args
            .first()
            .is_some_and(|a| a.ends_with("/postgres") || a == "postgres");
        let on_dir = args
            .windows(2)
            .any(|w| w[0] == "-D" && w[1].trim_end_matches('/') == needle);
        if is_pg && on_dir {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            found.push((pid, ppid));
        }
    }
    let pids: Vec<i32> = found.iter().map(|(p, _)| *p).collect();
    found
        .into_iter()
        .filter(|(_, ppid)| !pids.contains(ppid))
        .map(|(p, _)| p)
        .collect()
}

/// A short temp dir (unix socket paths must stay short), removed on drop.
pub fn short_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("fbt")
        .tempdir_in("/tmp")
        .unwrap();
    // The managed cluster's OS user (as root: postgres) must be able to enter it.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Starts job workers on the app's database with these handlers (cron off unless asked).
pub fn start_runner(
    app: &TestApp,
    handlers: fluxbase::jobs::Registry,
    cron: bool,
) -> fluxbase::jobs::worker::RunnerHandle {
    start_runner_with(app, handlers, cron, app.state.clock.clone())
}

/// Like `start_runner`, with a clock of one's own.
pub fn start_runner_with(
    app: &TestApp,
    handlers: fluxbase::jobs::Registry,
    cron: bool,
    clock: Arc<dyn fluxbase::jobs::cron::Clock>,
) -> fluxbase::jobs::worker::RunnerHandle {
    let opts = fluxbase::jobs::worker::RunnerOptions {
        worker_id: format!("test-{}", uuid::Uuid::new_v4()),
        cfg: app.state.config.jobs.clone(),
        clock,
        pg_config: app.state.pg_config.clone(),
        listener: app.state.listener.clone(),
        cron,
    };
    fluxbase::jobs::worker::start(
        app.state.pool.clone(),
        handlers,
        opts,
        app.state.jobs_metrics.clone(),
    )
}

/// A job's row as JSON.
pub async fn job(app: &TestApp, id: i64) -> Value {
    let c = app.db.client().await;
    c.query_one("SELECT to_jsonb(j) FROM jobs.jobs j WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

/// Waits until the job reaches `status` (a deadline, not a timing assertion).
pub async fn wait_status(app: &TestApp, id: i64, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let j = job(app, id).await;
        if j["status"] == status {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never reached {status}: {j}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
