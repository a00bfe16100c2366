//! The managed local Postgres: used when no `database.url` is configured.
//!
//! Owns finding the system's Postgres binaries, `initdb` on first start, starting and stopping
//! the cluster with `pg_ctl`, and recovering from an orphaned cluster left by a killed
//! fluxbase. It must not touch the database's contents: that is the migration runner's job.
//! The test harness starts its throwaway clusters with this same code.
//!
//! Layout under `<data_dir>/pg`: the cluster itself (PGDATA), its unix socket (unless the path
//! would exceed the kernel's ~107-byte limit, then a short directory under /tmp), and
//! `postgres.log`. `<data_dir>/fluxbase.pid` names the fluxbase process that owns the cluster,
//! so a later start can tell a live owner from an orphan.
//!
//! Functions here block (they run short external commands); async callers use
//! `spawn_blocking`.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Unix socket paths longer than this are refused by the kernel (sun_path is 108 bytes).
const MAX_SOCKET_PATH: usize = 100;
/// The superuser initdb creates; the server connects as it.
pub const SUPERUSER: &str = "postgres";

/// What can go wrong running the managed cluster.
#[derive(Debug)]
pub enum PgError {
    /// No usable Postgres binaries were found.
    MissingBinaries(String),
    /// Another live fluxbase owns this data dir.
    InUse(String),
    /// The data directory cannot be used (permissions, layout).
    DataDir(String),
    /// A Postgres command failed; includes its output.
    Command(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::MissingBinaries(s)
            | PgError::InUse(s)
            | PgError::DataDir(s)
            | PgError::Command(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for PgError {}

/// An unprivileged OS account the cluster runs as when fluxbase runs as root.
#[derive(Debug, Clone)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (initdb and pg_ctl want a HOME).
    pub home: PathBuf,
}

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// PGDATA.
    pub pgdata: PathBuf,
    /// Port: names the socket file and is the TCP port when `tcp_host` is set.
    pub port: u16,
    /// Listen on this TCP address too.
    pub tcp_host: Option<String>,
    /// fsync (off only for throwaway clusters).
    pub fsync: bool,
    /// Directory of initdb/pg_ctl/postgres; `None` searches.
    pub bin_dir: Option<PathBuf>,
    /// Extra `postgresql.conf` lines (the test harness tunes for speed).
    pub extra_conf: Vec<String>,
}

/// A running (or adopted) managed cluster.
#[derive(Debug)]
pub struct ManagedPg {
    opts: ClusterOptions,
    bin_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<OsUser>,
    /// Whether this process started the cluster (and so stops it).
    pub owned: bool,
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
///
/// Order: the configured directory, `PG_BIN`, `PATH`, `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf, PgError> {
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    search_bin_dir(&BinSearch {
        configured: configured.map(Path::to_path_buf),
        pg_bin: std::env::var_os("PG_BIN").map(PathBuf::from),
        path: std::env::var_os("PATH"),
        pg_config,
        lib_root: PathBuf::from("/usr/lib/postgresql"),
    })
}

/// Where `search_bin_dir` looks; split out so tests can describe a machine without Postgres.
#[derive(Debug, Default)]
pub struct BinSearch {
    /// `database.managed.bin_dir`.
    pub configured: Option<PathBuf>,
    /// `PG_BIN`.
    pub pg_bin: Option<PathBuf>,
    /// `PATH`.
    pub path: Option<std::ffi::OsString>,
    /// `pg_config --bindir`.
    pub pg_config: Option<PathBuf>,
    /// Debian's versioned installs (`/usr/lib/postgresql`).
    pub lib_root: PathBuf,
}

/// The first candidate directory that has all three binaries.
pub fn search_bin_dir(s: &BinSearch) -> Result<PathBuf, PgError> {
    let usable = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(s.configured.clone());
    candidates.extend(s.pg_bin.clone());
    if let Some(path) = &s.path {
        for d in std::env::split_paths(path) {
            let initdb = d.join("initdb");
            if initdb.is_file() {
                // Debian links initdb into PATH; postgres itself stays in the versioned dir.
                let real = fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(parent) = real.parent() {
                    candidates.push(parent.to_path_buf());
                }
            }
        }
    }
    candidates.extend(s.pg_config.clone());
    if let Ok(rd) = fs::read_dir(&s.lib_root) {
        let mut versions: Vec<(u32, PathBuf)> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    let mut tried = Vec::new();
    for c in candidates {
        if usable(&c) {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(PgError::MissingBinaries(format!(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres){}.\n\
         Install them (Debian/Ubuntu: `apt-get install postgresql`), point PG_BIN or \
         `database.managed.bin_dir` at their directory, or use an existing server with \
         `database.url` (--database-url / FLUXBASE_DATABASE__URL).",
        if tried.is_empty() {
            String::new()
        } else {
            format!("; looked in {}", tried.join(", "))
        }
    )))
}

/// The account to run Postgres as: `None` when not root (run as ourselves).
///
/// As root, Postgres refuses to run, so the cluster runs as `postgres` (Debian's account) or,
/// when that does not exist, a `fluxbase` system account created here.
pub fn service_user() -> Result<Option<OsUser>, PgError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "fluxbase"] {
        if let Some(u) = lookup_user(name) {
            return Ok(Some(u));
        }
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "fluxbase",
        ])
        .output()
        .map_err(|e| {
            PgError::DataDir(format!(
                "cannot run useradd to create the `fluxbase` OS user: {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(PgError::DataDir(format!(
            "running as root needs an unprivileged OS user for Postgres; `useradd fluxbase` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    lookup_user("fluxbase")
        .map(Some)
        .ok_or_else(|| PgError::DataDir("created OS user `fluxbase` but cannot find it".into()))
}

fn lookup_user(name: &str) -> Option<OsUser> {
    let u = nix::unistd::User::from_name(name).ok()??;
    Some(OsUser {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    })
}

impl ManagedPg {
    /// Prepares (without starting) a cluster handle.
    pub fn new(opts: ClusterOptions) -> Result<Self, PgError> {
        let bin_dir = find_bin_dir(opts.bin_dir.as_deref())?;
        let run_as = service_user()?;
        let pgdata = absolute(&opts.pgdata)?;
        let opts = ClusterOptions { pgdata, ..opts };
        let socket_dir = socket_dir_for(&opts.pgdata, opts.port);
        Ok(ManagedPg {
            opts,
            bin_dir,
            socket_dir,
            run_as,
            owned: false,
        })
    }

    /// PGDATA.
    pub fn pgdata(&self) -> &Path {
        &self.opts.pgdata
    }

    /// Directory holding the unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Connection URL for `db` over the unix socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@{}:{}/{db}",
            pct_encode(&self.socket_dir.to_string_lossy()),
            self.opts.port
        )
    }

    /// Whether a postmaster is running on this PGDATA (per `postmaster.pid`).
    pub fn running_pid(&self) -> Option<i32> {
        postmaster_pid(&self.opts.pgdata)
    }

    /// Initialises the cluster on first use and starts it; an orphaned postmaster (left by a
    /// killed fluxbase) is fast-stopped first so exactly one Postgres runs afterwards.
    pub fn start(&mut self) -> Result<(), PgError> {
        self.prepare_dirs()?;
        if !self.opts.pgdata.join("PG_VERSION").exists() {
            self.initdb()?;
        }
        self.write_conf()?;
        if self.running_pid().is_some() {
            tracing::warn!(
                pgdata = %self.opts.pgdata.display(),
                "found a Postgres left running by an earlier fluxbase; stopping it (fast) before starting"
            );
            self.stop()?;
        }
        let log = self.opts.pgdata.join("postgres.log");
        let started = Instant::now();
        let out = self.run_pg(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "120".as_ref(),
                "-s".as_ref(),
                "-D".as_ref(),
                self.opts.pgdata.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
            ],
        )?;
        if !out.status.success() {
            return Err(PgError::Command(format!(
                "pg_ctl start failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail(&log, 20)
            )));
        }
        self.owned = true;
        tracing::info!(
            pgdata = %self.opts.pgdata.display(),
            socket = %self.socket_dir.display(),
            ms = started.elapsed().as_millis() as u64,
            "managed Postgres started"
        );
        Ok(())
    }

    /// Starts the cluster unless one already runs on this PGDATA (then it is used as is and
    /// left running). For CLI commands that must not disturb a running `serve`.
    pub fn start_or_attach(&mut self) -> Result<(), PgError> {
        if self.running_pid().is_some()
            && self.socket_dir.join(socket_file(self.opts.port)).exists()
        {
            self.owned = false;
            return Ok(());
        }
        self.start()
    }

    /// Fast shutdown: active sessions are disconnected, data is flushed.
    pub fn stop(&self) -> Result<(), PgError> {
        if self.running_pid().is_none() {
            return Ok(());
        }
        let out = self.run_pg(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-s".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-D".as_ref(),
                self.opts.pgdata.as_os_str(),
            ],
        )?;
        if !out.status.success() && self.running_pid().is_some() {
            return Err(PgError::Command(format!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn prepare_dirs(&self) -> Result<(), PgError> {
        let pgdata = &self.opts.pgdata;
        let fresh = !pgdata.exists();
        fs::create_dir_all(pgdata)
            .map_err(|e| PgError::DataDir(format!("cannot create {}: {e}", pgdata.display())))?;
        if fresh || pgdata.join("PG_VERSION").exists() || is_empty_dir(pgdata) {
            self.own(pgdata, 0o700)?;
        }
        if self.socket_dir != *pgdata {
            fs::create_dir_all(&self.socket_dir).map_err(|e| {
                PgError::DataDir(format!("cannot create {}: {e}", self.socket_dir.display()))
            })?;
            self.own(&self.socket_dir, 0o700)?;
        }
        if let Some(u) = &self.run_as {
            check_traversable(pgdata, u)?;
        }
        Ok(())
    }

    fn own(&self, path: &Path, mode: u32) -> Result<(), PgError> {
        if let Some(u) = &self.run_as {
            std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).map_err(|e| {
                PgError::DataDir(format!(
                    "cannot chown {} to {}: {e}",
                    path.display(),
                    u.name
                ))
            })?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| PgError::DataDir(format!("cannot chmod {}: {e}", path.display())))
    }

    /// File holding the superuser's password, for TCP clients (`database.managed.listen_tcp`);
    /// the unix socket needs none. `<data_dir>/pg.password`, readable by its owner only.
    pub fn password_file(&self) -> PathBuf {
        self.opts.pgdata.with_extension("password")
    }

    fn initdb(&self) -> Result<(), PgError> {
        let started = Instant::now();
        let pwfile = self.password_file();
        let password = {
            use rand::Rng;
            let bytes: [u8; 24] = rand::rng().random();
            hex::encode(bytes)
        };
        fs::write(&pwfile, format!("{password}\n"))
            .map_err(|e| PgError::DataDir(format!("cannot write {}: {e}", pwfile.display())))?;
        self.own(&pwfile, 0o600)?;
        let pwarg = format!("--pwfile={}", pwfile.display());
        let out = self.run_pg(
            "initdb",
            &[
                "-D".as_ref(),
                self.opts.pgdata.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                // The socket is 0700: only the cluster's OS user (and root) reach it.
                "--auth-local=trust".as_ref(),
                // TCP (opt-in) never trusts: a local user must not become superuser by
                // connecting to 127.0.0.1. Clients use the password in `password_file()`.
                "--auth-host=scram-sha-256".as_ref(),
                pwarg.as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-locale".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        if !out.status.success() {
            return Err(PgError::Command(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let conf = self.opts.pgdata.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| PgError::DataDir(format!("cannot open {}: {e}", conf.display())))?;
        writeln!(f, "\n# Written by fluxbase on every start; edit fluxbase settings instead.\ninclude_if_exists = 'fluxbase.conf'")
            .map_err(|e| PgError::DataDir(format!("cannot write {}: {e}", conf.display())))?;
        tracing::info!(ms = started.elapsed().as_millis() as u64, "initdb done");
        Ok(())
    }

    fn write_conf(&self) -> Result<(), PgError> {
        let q = |p: &Path| p.to_string_lossy().replace('\'', "''");
        let mut lines = vec![
            format!("port = {}", self.opts.port),
            format!(
                "listen_addresses = '{}'",
                self.opts
                    .tcp_host
                    .as_deref()
                    .unwrap_or("")
                    .replace('\'', "''")
            ),
            format!("unix_socket_directories = '{}'", q(&self.socket_dir)),
            "unix_socket_permissions = 0700".into(),
            format!("fsync = {}", if self.opts.fsync { "on" } else { "off" }),
            "max_connections = 200".into(),
            // Realtime and schema-cache reloads rely on logical decoding being available later.
            "wal_level = logical".into(),
        ];
        if !self.opts.fsync {
            lines.push("synchronous_commit = off".into());
            lines.push("full_page_writes = off".into());
        }
        lines.extend(self.opts.extra_conf.iter().cloned());
        let path = self.opts.pgdata.join("fluxbase.conf");
        fs::write(&path, lines.join("\n") + "\n")
            .map_err(|e| PgError::DataDir(format!("cannot write {}: {e}", path.display())))?;
        self.own(&path, 0o600)
    }

    fn run_pg(
        &self,
        bin: &str,
        args: &[&std::ffi::OsStr],
    ) -> Result<std::process::Output, PgError> {
        let mut cmd = Command::new(self.bin_dir.join(bin));
        cmd.args(args)
            .stdin(Stdio::null())
            // pg_ctl's daemon keeps these open; the log file gets the server's output.
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("PGDATA")
            .env("LC_ALL", "C")
            .current_dir(&self.opts.pgdata);
        if let Some(u) = &self.run_as {
            cmd.uid(u.uid)
                .gid(u.gid)
                .env("HOME", &u.home)
                .env("USER", &u.name);
        }
        // pg_ctl start leaves the postmaster holding our pipes if we wait on output():
        // the -l log file redirect prevents that, so output() returns once pg_ctl exits.
        cmd.output().map_err(|e| {
            PgError::Command(format!(
                "cannot run {}: {e}",
                self.bin_dir.join(bin).display()
            ))
        })
    }

    /// Waits until `postmaster.pid` disappears (after a stop), up to `timeout`.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.running_pid().is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// The pid in `postmaster.pid`, if that process is alive.
pub fn postmaster_pid(pgdata: &Path) -> Option<i32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).ok()?;
    // A reused pid belonging to something else is not our postmaster.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = String::from_utf8_lossy(&cmdline);
    (cmd.contains("postgres") || cmd.contains("postmaster")).then_some(pid)
}

fn socket_file(port: u16) -> String {
    format!(".s.PGSQL.{port}")
}

fn socket_dir_for(pgdata: &Path, port: u16) -> PathBuf {
    let in_data = pgdata.join(socket_file(port));
    if in_data.as_os_str().len() <= MAX_SOCKET_PATH {
        return pgdata.to_path_buf();
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(pgdata.to_string_lossy().as_bytes());
    PathBuf::from(format!("/tmp/fluxbase-{}", &hex::encode(h)[..12]))
}

fn absolute(p: &Path) -> Result<PathBuf, PgError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| PgError::DataDir(format!("cannot read the working directory: {e}")))?;
    // components() drops the `.` segments of `./fluxbase-data`.
    Ok(cwd.join(p).components().collect())
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// The cluster's OS user must be able to reach PGDATA through every parent directory.
fn check_traversable(pgdata: &Path, u: &OsUser) -> Result<(), PgError> {
    let mut blocked = Vec::new();
    for anc in pgdata.ancestors().skip(1) {
        let Ok(md) = fs::metadata(anc) else { continue };
        let mode = md.mode();
        let ok = if md.uid() == u.uid {
            mode & 0o100 != 0
        } else if md.gid() == u.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            blocked.push(anc.display().to_string());
        }
    }
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(PgError::DataDir(format!(
            "the managed Postgres runs as the OS user `{}`, which cannot enter {}; \
             choose a data dir it can reach (--data-dir /var/lib/fluxbase), or allow it \
             with `chmod o+x` on those directories",
            u.name,
            blocked.join(", ")
        )))
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `<data_dir>/fluxbase.pid` lock that tells a live owner from an orphan.
pub mod owner_lock {
    use std::fs;
    use std::path::{Path, PathBuf};

    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("fluxbase.pid")
    }

    /// The pid of a live fluxbase that owns this data dir, other than us.
    pub fn live_owner(data_dir: &Path) -> Option<i32> {
        let pid: i32 = fs::read_to_string(path(data_dir))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if pid == std::process::id() as i32 {
            return None;
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).ok()?;
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        exe.file_name()?
            .to_string_lossy()
            .starts_with("fluxbase")
            .then_some(pid)
    }

    /// Records this process as the owner.
    pub fn acquire(data_dir: &Path) -> std::io::Result<()> {
        fs::write(path(data_dir), std::process::id().to_string())
    }

    /// Removes the record if it is ours.
    pub fn release(data_dir: &Path) {
        if let Ok(t) = fs::read_to_string(path(data_dir)) {
            if t.trim() == std::process::id().to_string() {
                let _ = fs::remove_file(path(data_dir));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_get_a_short_socket_dir() {
        let short = Path::new("/tmp/x/pg");
        assert_eq!(socket_dir_for(short, 5432), short);
        let long = PathBuf::from(format!("/tmp/{}/pg", "a".repeat(120)));
        let d = socket_dir_for(&long, 5432);
        assert!(
            d.to_string_lossy().starts_with("/tmp/fluxbase-"),
            "{}",
            d.display()
        );
        assert_eq!(d, socket_dir_for(&long, 5432), "stable across starts");
    }

    #[test]
    fn missing_binaries_name_the_package_and_the_alternative() {
        let empty = std::env::temp_dir().join(format!("fb-nopg-{}", std::process::id()));
        std::fs::create_dir_all(empty.join("15/bin")).unwrap();
        let e = search_bin_dir(&BinSearch {
            configured: Some(empty.join("nope")),
            path: Some(empty.clone().into_os_string()),
            lib_root: empty.clone(),
            ..Default::default()
        })
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PgError::MissingBinaries(_)));
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("database.url"), "{msg}");
        assert!(msg.contains("15/bin"), "lists where it looked: {msg}");

        // A versioned install with all three binaries is found, newest first.
        for v in ["14", "16"] {
            let d = empty.join(v).join("bin");
            std::fs::create_dir_all(&d).unwrap();
            for b in ["initdb", "pg_ctl", "postgres"] {
                std::fs::write(d.join(b), "").unwrap();
            }
        }
        let found = search_bin_dir(&BinSearch {
            lib_root: empty.clone(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(found, empty.join("16/bin"));
        std::fs::remove_dir_all(&empty).ok();
    }

    #[test]
    fn socket_urls_are_percent_encoded() {
        assert_eq!(pct_encode("/tmp/a b"), "%2Ftmp%2Fa%20b");
    }
}
