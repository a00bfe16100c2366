//! A real S3-compatible server for the tests: moto's server mode (`moto_server`, pinned in
//! tests/python/requirements.txt, installed into .venv-tests by tests/python/venv.sh).
//! Started once per test process on a free port, on first use; a reaper process stops it
//! when this process exits. Each test takes a bucket of its own (`new_bucket`), so no test
//! shares objects with another.
//!
//! ```ignore
//! let s3 = support::s3::server();
//! let bucket = s3.new_bucket().await;
//! let app = TestApp::spawn_with(|c| s3.configure(c, &bucket)).await;
//! ```

use fluxbase::config::{Config, Secret};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running S3 server and the credentials it is spoken to with.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    /// Region every bucket is created in.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// A bucket created at start, for users that need just one (shared: prefer `new_bucket`).
    pub bucket: String,
    /// moto's log file (kept until this process exits).
    pub log: PathBuf,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();
static BUCKETS: AtomicUsize = AtomicUsize::new(0);

/// The process's S3 server, started on first use. Panics (never skips) when it cannot start.
pub fn server() -> &'static S3Server {
    SERVER.get_or_init(|| {
        // Its own thread: the caller may be inside a tokio runtime, and start() blocks.
        std::thread::spawn(start)
            .join()
            .expect("S3 test server start panicked")
    })
}

fn start() -> S3Server {
    let bin = super::venv::bin("moto_server");
    let dir = PathBuf::from(format!("/tmp/fbt-{}-moto", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("moto.log");
    let out = std::fs::File::create(&log).unwrap();
    let port = super::free_port();
    // Deliberately not waited on here: the reaper below ends it when this process exits.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    spawn_reaper(child.id(), &dir);
    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        access_key_id: "fluxbase-test".into(),
        secret_access_key: "fluxbase-test-secret".into(),
        bucket: "fluxbase-test".into(),
        log,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // ListBuckets answers once the server is up.
        loop {
            if let Ok(r) = http.get(&server.endpoint).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moto_server never answered on {}; log:\n{}",
                server.endpoint,
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.create_bucket(&server.bucket).await;
    });
    server
}

/// Stops moto (and removes its directory) once this test process is gone.
fn spawn_reaper(moto_pid: u32, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill {moto_pid} 2>/dev/null; \
         sleep 1; kill -9 {moto_pid} 2>/dev/null; rm -rf '{dir}'",
        pid = std::process::id(),
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
        .expect("spawn moto reaper");
}

impl S3Server {
    /// Creates `name` (CreateBucket, path-style). moto does not check signatures unless
    /// told to, so the harness's own bucket creation goes unsigned.
    pub async fn create_bucket(&self, name: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateBucket {name}: {e}"));
        assert!(
            r.status().is_success(),
            "CreateBucket {name}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }

    /// A new, empty bucket of one's own.
    pub async fn new_bucket(&self) -> String {
        let name = format!(
            "fbt-{}-{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::SeqCst)
        );
        self.create_bucket(&name).await;
        name
    }

    /// Points `cfg` at this server: `storage.backend = s3` on `bucket`, with every
    /// `storage.s3.*` key the backend reads.
    pub fn configure(&self, cfg: &mut Config, bucket: &str) {
        cfg.storage.backend = "s3".into();
        cfg.storage.s3.bucket = bucket.into();
        cfg.storage.s3.endpoint = self.endpoint.clone();
        cfg.storage.s3.region = self.region.clone();
        cfg.storage.s3.force_path_style = true;
        cfg.storage.s3.access_key_id = self.access_key_id.clone();
        cfg.storage.s3.secret_access_key = Some(Secret::new(&self.secret_access_key));
    }

    /// A client of `bucket` of the tests' own, to look at keys behind the server's back.
    pub fn store(&self, bucket: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .build()
            .expect("S3 test client")
    }
}
