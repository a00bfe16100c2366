//! Password hashing runs in a worker process (src/auth/hasher.rs): the binary started again
//! with `__hash-worker`, in a session of its own whose autogroup has the lowest CPU share,
//! with its hashing threads at nice 19; it is started again when it dies.
//!
//! These tests use a `fluxbase serve` child process, so killing its worker cannot disturb the
//! worker the in-process test apps share.

use crate::support::{cli_key, empty_db, short_tempdir, ServeProcess};
use serde_json::{json, Value};
use std::time::Duration;

/// The pids of processes whose parent is `parent` and whose first argument is the worker's.
fn workers_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the ")" that ends the name: state, ppid, pgrp, session, ... (a process
        // that is just going away may read as empty).
        let Some(end) = stat.rfind(')') else { continue };
        let after: Vec<&str> = stat[end + 2..].split(' ').collect();
        if after.get(1).and_then(|p| p.parse::<u32>().ok()) != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"__hash-worker"[..]) {
            found.push(pid);
        }
    }
    found
}

/// Field `n` (1-based, as proc(5) numbers them) of /proc/PID[/task/TID]/stat.
fn stat_field(path: &str, n: usize) -> i64 {
    let stat = std::fs::read_to_string(path).unwrap();
    let after: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    after[n - 3].parse().unwrap()
}

async fn sign_in(base: &str, anon: &str, password: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/auth/v1/token?grant_type=password"))
        .header("apikey", anon)
        .json(&json!({"email": "hash@example.test", "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn hashing_runs_in_a_low_priority_worker_that_is_restarted() {
    let db = empty_db().await;
    let tmp = short_tempdir();
    // `serve` reads ./fluxbase.yaml: sign-ups need no mail confirmation here.
    std::fs::write(
        tmp.path().join("fluxbase.yaml"),
        "auth:\n  mailer_autoconfirm: true\n",
    )
    .unwrap();
    let mut s = ServeProcess::start(tmp.path(), "hash", &["--database-url", &db.url]);
    s.wait_ready(Duration::from_secs(60)).await;
    let anon = cli_key(&db.url, "anon");
    let http = reqwest::Client::new();

    // No worker before anything needs a hash.
    let server = s.child.id();
    assert!(workers_of(server).is_empty());

    // Sign-up hashes, sign-in verifies: both through the worker.
    let r = http
        .post(format!("{}/auth/v1/signup", s.base))
        .header("apikey", &anon)
        .json(&json!({"email": "hash@example.test", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(sign_in(&s.base, &anon, "correct horse battery").await, 200);
    assert_eq!(sign_in(&s.base, &anon, "wrong horse battery").await, 400);

    let workers = workers_of(server);
    assert_eq!(workers.len(), 1, "one hashing worker: {workers:?}");
    let w = workers[0];
    // A session of its own (session id = its pid) ...
    assert_eq!(stat_field(&format!("/proc/{w}/stat"), 6), w as i64);
    // ... whose autogroup, where the kernel has them, is at nice 19.
    if let Ok(ag) = std::fs::read_to_string(format!("/proc/{w}/autogroup")) {
        assert!(ag.trim_end().ends_with("nice 19"), "{ag}");
    }
    // Its hashing threads are at nice 19 (field 19 of the task's stat).
    let mut hashing_threads = 0;
    for t in std::fs::read_dir(format!("/proc/{w}/task"))
        .unwrap()
        .flatten()
    {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("fluxbase-bcrypt") {
            let nice = stat_field(dir.join("stat").to_str().unwrap(), 19);
            assert_eq!(nice, 19, "{comm}");
            hashing_threads += 1;
        }
    }
    assert!(hashing_threads >= 1, "no hashing thread in the worker");
    // The server's own threads keep the default priority.
    assert_eq!(stat_field(&format!("/proc/{server}/stat"), 19), 0);

    // Killed, it is replaced on the next request, which succeeds.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // A killed process exits when the kernel next runs it, at nice 19 in an autogroup of
    // its own: behind every busy process of a loaded machine (once, with the whole suite
    // and a valgrind run beside it, that took longer than 10 s).
    let gone = crate::support::eventually(Duration::from_secs(30), || async {
        !workers_of(server).contains(&w)
    })
    .await;
    assert!(gone, "the killed worker was not reaped");
    assert_eq!(sign_in(&s.base, &anon, "correct horse battery").await, 200);
    assert_eq!(sign_in(&s.base, &anon, "wrong horse battery").await, 400);
    let again = workers_of(server);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again[0], w);

    // The worker ends with the server.
    let replacement = again[0];
    s.signal(nix::sys::signal::Signal::SIGKILL);
    s.wait_exit(Duration::from_secs(30));
    let ended = crate::support::eventually(Duration::from_secs(10), || async {
        !std::path::Path::new(&format!("/proc/{replacement}")).exists()
            || std::fs::read_to_string(format!("/proc/{replacement}/stat"))
                .ok()
                .and_then(|st| Some(st[st.rfind(')')? + 2..].starts_with('Z')))
                .unwrap_or(true)
    })
    .await;
    assert!(ended, "the worker outlived the server");
}
