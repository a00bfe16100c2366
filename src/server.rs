//! Start-up and shutdown orchestration for `serve` and the database-using CLI commands:
//! the managed Postgres (when no URL is configured), waiting for the database, privileges,
//! migrations, the JWT secret, then the HTTP server; on SIGINT/SIGTERM a graceful drain and
//! a clean Postgres stop.

use crate::app::{start_http, AppState};
use crate::auth::jwt::JwtKeys;
use crate::config::Config;
use crate::db;
use crate::embedded_pg::{owner_lock, ClusterOptions, ManagedPg, PgError};
use crate::metrics::Metrics;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A start-up failure and the exit status it maps to.
#[derive(Debug)]
pub struct StartError {
    /// Process exit status (2 for configuration/installation problems the operator must fix).
    pub exit_code: i32,
    /// What went wrong, for the operator.
    pub message: String,
}

impl StartError {
    fn new(exit_code: i32, message: impl Into<String>) -> Self {
        StartError {
            exit_code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<PgError> for StartError {
    fn from(e: PgError) -> Self {
        let code = match e {
            PgError::MissingBinaries(_) => 2,
            _ => 1,
        };
        StartError::new(code, e.to_string())
    }
}

/// The managed cluster options for a config.
pub fn cluster_options(config: &Config) -> ClusterOptions {
    let m = &config.database.managed;
    ClusterOptions {
        pgdata: config.data_dir().join("pg"),
        port: m.port as u16,
        tcp_host: m.listen_tcp.then(|| m.tcp_host.clone()),
        fsync: m.fsync,
        bin_dir: (!m.bin_dir.is_empty()).then(|| m.bin_dir.clone().into()),
        extra_conf: Vec::new(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StartError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StartError::new(1, format!("background task failed: {e}")))
}

/// Everything a running server needs, built from config and a database URL.
pub async fn prepare(
    config: Arc<Config>,
    url: &str,
    managed: bool,
) -> Result<AppState, StartError> {
    let pool = db::create_pool(url, &config.database).map_err(|e| StartError::new(2, e))?;
    db::wait_for_database(
        &pool,
        Duration::from_secs(config.database.startup_retry_secs),
    )
    .await
    .map_err(|e| StartError::new(1, e))?;
    let set = db::migrate::embedded().map_err(|e| StartError::new(1, e.to_string()))?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| StartError::new(1, format!("database: {e}")))?;
    let missing = db::missing_privileges(&client).await.map_err(|e| {
        StartError::new(
            1,
            format!("cannot read the database user's privileges: {e}"),
        )
    })?;
    if !missing.is_empty() {
        return Err(StartError::new(
            2,
            format!(
                "the database user cannot run Fluxbase's migrations:\n  - {}\nUse a superuser, or grant CREATEROLE and make the user own the database.",
                missing.join("\n  - ")
            ),
        ));
    }
    let report = db::migrate::run(&mut client, &set)
        .await
        .map_err(|e| StartError::new(1, e.to_string()))?;
    if !report.applied.is_empty() || !report.replaced.is_empty() {
        tracing::info!(
            applied = report.applied.len(),
            replaced = report.replaced.len(),
            "migrations done"
        );
    }
    let (jwt, keys_issued_at) = jwt_keys(&config, &client).await?;
    drop(client);
    let reg = crate::app::registry();
    let openapi_json = crate::openapi::document(&reg)
        .to_json()
        .map_err(|e| StartError::new(1, format!("cannot render the OpenAPI document: {e}")))?;
    let metrics = Metrics::new().map_err(|e| StartError::new(1, format!("metrics: {e}")))?;
    let jobs_metrics = crate::jobs::JobMetrics::new(&metrics.registry)
        .map_err(|e| StartError::new(1, format!("metrics: {e}")))?;
    let outbound =
        crate::outbound::Outbound::new(&config.outbound).map_err(|e| StartError::new(1, e))?;
    let pg_config = db::pg_config(url).map_err(|e| StartError::new(2, e))?;
    let schema = {
        let c = pool
            .get()
            .await
            .map_err(|e| StartError::new(1, format!("database: {e}")))?;
        crate::schema::load(&c, &config.rest.schemas)
            .await
            .map_err(|e| StartError::new(1, format!("cannot load the schema cache: {e}")))?
    };
    let schema = Arc::new(crate::schema::SchemaHolder::new(schema));
    // One LISTEN connection for the whole process: the schema cache, realtime and the job
    // workers subscribe to it.
    let listener = db::listen::Listener::start(&pg_config);
    tokio::spawn(crate::schema::listener::run(
        pool.clone(),
        schema.clone(),
        config.rest.schemas.clone(),
        listener.subscribe(&[crate::schema::listener::CHANNEL]),
    ));
    let realtime = if config.realtime.enabled {
        let rt = crate::realtime::Realtime::new(pool.clone(), &metrics.registry)
            .map_err(|e| StartError::new(1, format!("metrics: {e}")))?;
        rt.start(&listener);
        Some(Arc::new(rt))
    } else {
        None
    };
    let storage = if config.storage.enabled {
        Some(crate::storage::Backend::from_config(&config).map_err(|e| StartError::new(2, e))?)
    } else {
        None
    };
    let otlp = crate::otlp::Tracer::start(&config.otlp, &metrics.registry)
        .map_err(|e| StartError::new(2, e))?;
    let wire = config.database.wire.then(|| {
        crate::db::wire::Pool::new(
            &pg_config,
            config.database.pool_size as usize,
            Duration::from_secs(config.database.acquire_timeout_secs.max(1)),
        )
    });
    let wire = wire.flatten();
    Ok(AppState {
        cors: Arc::new(crate::cors::Cors::new(&config.server.cors)),
        security_headers: Arc::new(crate::app::security_headers(&config)),
        wire,
        otlp,
        storage,
        schema,
        realtime,
        pg_config,
        listener,
        outbound,
        rate_limits: Arc::new(crate::ratelimit::RateLimiters::new(&config.rate_limits)),
        jobs_metrics: Arc::new(jobs_metrics),
        clock: Arc::new(crate::jobs::cron::SystemClock),
        config,
        pool,
        jwt,
        metrics: Arc::new(metrics),
        migration_versions: Arc::new(set.versioned.iter().map(|m| m.version.clone()).collect()),
        openapi_json: Arc::new(openapi_json),
        keys_issued_at,
        managed_database: managed,
        started_at: Instant::now(),
    })
}

/// The JWT keys and the anon/service_role key issue time. Without `auth.jwt_secret`, the
/// secret is generated once and stored in `fluxbase.settings`, so every instance agrees.
pub async fn jwt_keys(
    config: &Config,
    client: &tokio_postgres::Client,
) -> Result<(JwtKeys, i64), StartError> {
    let dberr =
        |e: tokio_postgres::Error| StartError::new(1, format!("reading fluxbase.settings: {e}"));
    let secret = match config
        .auth
        .jwt_secret
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
    {
        Some(s) => s.to_string(),
        None => db::setting_or_insert(client, "jwt_secret", generate_secret)
            .await
            .map_err(dberr)?,
    };
    let issued_at = db::setting_or_insert(client, "keys_issued_at", || {
        chrono::Utc::now().timestamp().to_string()
    })
    .await
    .map_err(dberr)?
    .parse::<i64>()
    .map_err(|e| {
        StartError::new(
            1,
            format!("fluxbase.settings keys_issued_at is not a number: {e}"),
        )
    })?;
    Ok((
        JwtKeys::new(&secret, config.auth.jwt_leeway_secs, config.allowed_roles()),
        issued_at,
    ))
}

fn generate_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// The anon and service_role keys (for `keys show` and the start-up banner).
pub fn api_keys(jwt: &JwtKeys, issued_at: i64) -> Result<(String, String), StartError> {
    let sign = |role| {
        jwt.api_key(role, issued_at)
            .map_err(|e| StartError::new(1, format!("cannot sign key: {e}")))
    };
    Ok((sign("anon")?, sign("service_role")?))
}

/// `fluxbase serve`: runs until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> Result<(), StartError> {
    let config = Arc::new(config);
    let data_dir = config.data_dir();
    let mut managed: Option<ManagedPg> = None;
    let url = match config.database_url() {
        Some(u) => u.to_string(),
        None => {
            std::fs::create_dir_all(&data_dir).map_err(|e| {
                StartError::new(
                    1,
                    format!("cannot create data dir {}: {e}", data_dir.display()),
                )
            })?;
            if let Some(pid) = owner_lock::live_owner(&data_dir) {
                return Err(StartError::new(
                    1,
                    format!(
                        "data dir {} is in use by another fluxbase (pid {pid})",
                        data_dir.display()
                    ),
                ));
            }
            owner_lock::acquire(&data_dir).map_err(|e| {
                StartError::new(
                    1,
                    format!("cannot write {}/fluxbase.pid: {e}", data_dir.display()),
                )
            })?;
            let opts = cluster_options(&config);
            let pg = blocking(move || {
                let mut pg = ManagedPg::new(opts)?;
                pg.start()?;
                Ok::<_, PgError>(pg)
            })
            .await??;
            let url = pg.url("postgres");
            managed = Some(pg);
            url
        }
    };
    let result = run_server(config.clone(), &url, managed.is_some()).await;
    if let Some(pg) = managed {
        tracing::info!("stopping managed Postgres");
        if let Err(e) = blocking(move || pg.stop()).await? {
            tracing::error!(error = %e, "could not stop managed Postgres");
        }
        owner_lock::release(&data_dir);
    }
    result
}

async fn run_server(config: Arc<Config>, url: &str, managed: bool) -> Result<(), StartError> {
    let state = prepare(config.clone(), url, managed).await?;
    if managed && std::io::stdout().is_terminal() {
        let (anon, service) = api_keys(&state.jwt, state.keys_issued_at)?;
        println!("\n  anon key:         {anon}\n  service_role key: {service}\n  (`fluxbase keys show` prints them again)\n");
    }
    let runner = if config.jobs.enabled {
        Some(start_jobs(&state).await?)
    } else {
        None
    };
    let housekeeping = {
        let rl = state.rate_limits.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                rl.housekeeping();
            }
        })
    };
    let otlp = state.otlp.clone();
    let listener = state.listener.clone();
    let (server, addrs) = start_http(state).map_err(|e| {
        StartError::new(
            1,
            format!(
                "cannot listen on {}:{}: {e}",
                config.server.host, config.server.port
            ),
        )
    })?;
    let scheme = if config.server.tls.enabled() {
        "https"
    } else {
        "http"
    };
    for a in &addrs {
        tracing::info!(addr = %a, "fluxbase listening on {scheme}://{a}");
    }
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        handle.stop(true).await;
    });
    let result = server
        .await
        .map_err(|e| StartError::new(1, format!("server error: {e}")));
    housekeeping.abort();
    if let Some(r) = runner {
        r.shutdown(Duration::from_secs(config.server.shutdown_timeout_secs))
            .await;
    }
    // Before a managed Postgres stops: no "connection lost; reconnecting" at shutdown.
    listener.stop();
    if let Some(t) = otlp {
        t.flush(Duration::from_secs(3)).await;
    }
    result
}

/// Starts the job workers (built-in queues) and the cron leader for a prepared state.
pub async fn start_jobs(state: &AppState) -> Result<crate::jobs::worker::RunnerHandle, StartError> {
    let client = state
        .pool
        .get()
        .await
        .map_err(|e| StartError::new(1, format!("database: {e}")))?;
    crate::jobs::builtin::ensure_schedules(&client)
        .await
        .map_err(|e| StartError::new(1, format!("cannot create built-in schedules: {e}")))?;
    crate::storage::ensure_schedules(&client, state)
        .await
        .map_err(|e| StartError::new(1, format!("cannot create storage schedules: {e}")))?;
    drop(client);
    let mut handlers = crate::jobs::Registry::default();
    crate::jobs::builtin::register(&mut handlers, &state.config);
    crate::auth::register_jobs(&mut handlers, state);
    crate::webhooks::register_jobs(&mut handlers, state.outbound.clone());
    crate::storage::register_jobs(&mut handlers, state);
    let opts = crate::jobs::worker::RunnerOptions {
        worker_id: format!(
            "{}:{}:{}",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        cfg: state.config.jobs.clone(),
        clock: state.clock.clone(),
        pg_config: state.pg_config.clone(),
        listener: state.listener.clone(),
        cron: state.config.jobs.cron_enabled,
    };
    Ok(crate::jobs::worker::start(
        state.pool.clone(),
        handlers,
        opts,
        state.jobs_metrics.clone(),
    ))
}

/// `fluxbase worker`: job workers and the cron leader without the HTTP server, for scaling
/// job throughput separately. Needs `database.url` (a managed cluster belongs to `serve`).
pub async fn worker(config: Config) -> Result<(), StartError> {
    let Some(url) = config.database_url().map(str::to_string) else {
        return Err(StartError::new(
            2,
            "`fluxbase worker` needs database.url (--database-url): the managed Postgres belongs to `serve`",
        ));
    };
    let config = Arc::new(config);
    let state = prepare(config.clone(), &url, false).await?;
    let runner = start_jobs(&state).await?;
    tracing::info!("fluxbase worker running");
    shutdown_signal().await;
    tracing::info!("worker shutting down: finishing running jobs");
    runner
        .shutdown(Duration::from_secs(config.server.shutdown_timeout_secs))
        .await;
    state.listener.stop();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Runs `f` with a database client for a CLI command. Without a URL, the managed cluster is
/// used: attached to when running (a live `serve` is never disturbed), else started for the
/// command and stopped afterwards.
pub async fn with_client<T>(
    config: &Config,
    f: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, StartError>,
) -> Result<T, StartError> {
    let mut managed = None;
    let url = match config.database_url() {
        Some(u) => u.to_string(),
        None => {
            let opts = cluster_options(config);
            let pg = blocking(move || {
                let mut pg = ManagedPg::new(opts)?;
                pg.start_or_attach()?;
                Ok::<_, PgError>(pg)
            })
            .await??;
            let url = pg.url("postgres");
            managed = Some(pg);
            url
        }
    };
    let result = async {
        let pool = db::create_pool(&url, &config.database).map_err(|e| StartError::new(2, e))?;
        db::wait_for_database(
            &pool,
            Duration::from_secs(config.database.startup_retry_secs),
        )
        .await
        .map_err(|e| StartError::new(1, e))?;
        let mut obj = pool
            .get()
            .await
            .map_err(|e| StartError::new(1, e.to_string()))?;
        let client: &mut tokio_postgres::Client = &mut obj;
        f(client).await
    }
    .await;
    if let Some(pg) = managed.filter(|pg| pg.owned) {
        if let Err(e) = blocking(move || pg.stop()).await? {
            tracing::error!(error = %e, "could not stop managed Postgres");
        }
    }
    result
}

/// `fluxbase migrate up`.
pub async fn migrate_up(client: &mut tokio_postgres::Client) -> Result<(), StartError> {
    let missing = db::missing_privileges(client)
        .await
        .map_err(|e| StartError::new(1, e.to_string()))?;
    if !missing.is_empty() {
        return Err(StartError::new(
            2,
            format!("the database user lacks: {}", missing.join("; ")),
        ));
    }
    let set = db::migrate::embedded().map_err(|e| StartError::new(1, e.to_string()))?;
    let r = db::migrate::run(client, &set)
        .await
        .map_err(|e| StartError::new(1, e.to_string()))?;
    println!(
        "applied {} migration(s), {} replaceable",
        r.applied.len(),
        r.replaced.len()
    );
    Ok(())
}

/// `fluxbase migrate status`: prints one line per migration; fails when one is pending or changed.
pub async fn migrate_status(client: &mut tokio_postgres::Client) -> Result<(), StartError> {
    let set = db::migrate::embedded().map_err(|e| StartError::new(1, e.to_string()))?;
    let lines = db::migrate::status(client, &set)
        .await
        .map_err(|e| StartError::new(1, e.to_string()))?;
    for l in &lines {
        println!(
            "{:<8} {:<16} {:<32} {}",
            l.state,
            l.version,
            l.name,
            l.applied_at.as_deref().unwrap_or("-")
        );
    }
    let pending = lines.iter().filter(|l| l.state != "applied").count();
    if pending > 0 {
        return Err(StartError::new(
            1,
            format!("{pending} migration(s) not applied"),
        ));
    }
    Ok(())
}

/// `fluxbase keys show`: needs a migrated database (it holds the generated secret).
pub async fn show_keys(
    config: &Config,
    client: &mut tokio_postgres::Client,
) -> Result<(String, String), StartError> {
    let set = db::migrate::embedded().map_err(|e| StartError::new(1, e.to_string()))?;
    db::migrate::run(client, &set)
        .await
        .map_err(|e| StartError::new(1, e.to_string()))?;
    let (jwt, issued) = jwt_keys(config, client).await?;
    api_keys(&jwt, issued)
}
