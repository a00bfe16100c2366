//! Password hashing (bcrypt) away from the request executor, at the lowest CPU share.
//!
//! bcrypt is pure CPU (~30 ms a verification at cost 10 here), so a sign-in storm keeps every
//! core busy. Lowering the nice value of hashing *threads* does not protect other requests on
//! Linux with autogroup scheduling (the default where processes are not put in CPU cgroups):
//! the scheduler first divides the CPU between sessions, so Postgres, in its own session,
//! competes with Fluxbase's whole session, hashing threads included, at equal weight, and
//! waits up to a scheduler slice on every wake-up. Measured (2-core VM, `wrk -c2` single-row
//! GET, docs/benchmarks.md): two busy threads at nice 19 in Fluxbase's session raise the p99
//! from ~1.5 ms to 14–27 ms; the same threads in a session of their own whose autogroup is at
//! nice 19 leave it at ~3.3 ms.
//!
//! So hashing runs in a child process, the same binary started with [`WORKER_ARG`]: it
//! starts its own session (`setsid`), lowers that session's autogroup to nice 19, and runs
//! one hashing thread per core at nice 19 (which is what counts where autogroup is off).
//! The parent talks to it over its stdin/stdout with small length-prefixed frames; nothing but
//! this process and its child sees the passwords. A worker that dies fails the requests in
//! flight (internal error) and is started again on the next request. Where no worker program
//! is known ([`use_worker_program`] not called: library users, unit tests) or it cannot be
//! started, hashing runs on threads of this process at nice 19 instead.
//!
//! Must not: block an async executor thread (all waiting is on dedicated threads and
//! oneshot channels), or leave the child behind (it exits when its stdin closes, i.e. when
//! this process is gone).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

/// The first argument that makes the binary a hashing worker (`main` checks it before
/// parsing the command line).
pub const WORKER_ARG: &str = "__hash-worker";

/// Nice value of the hashing threads (in the worker, or in this process as the fallback).
pub const HASH_THREAD_NICE: i32 = 19;

/// A frame larger than this is refused (a password is at most 72 bytes to bcrypt, a hash 60;
/// the frame carries both plus a few integers).
const MAX_FRAME: u32 = 64 * 1024;

static WORKER_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Sets the program started as the hashing worker (the `fluxbase` binary). Call once, early;
/// later calls are ignored.
pub fn use_worker_program(path: PathBuf) {
    let _ = WORKER_PROGRAM.set(path);
}

/// What to compute.
pub enum Op {
    /// `bcrypt::hash(password, cost)`.
    Hash { password: String, cost: u32 },
    /// `bcrypt::verify(password, hash)`; `None` verifies against a fixed dummy hash and
    /// answers false, at the same cost, so timing does not tell whether an account exists.
    Verify {
        password: String,
        hash: Option<String>,
    },
}

/// The result.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Hashed(String),
    Verified(bool),
    Failed(String),
}

struct Job {
    op: Op,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// Computes `op` on a hashing worker; `None` when the hashing machinery is gone (never
/// expected) or the worker died with the job in flight.
pub async fn run(op: Op) -> Option<Answer> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    dispatcher().send(Job { op, reply }).ok()?;
    rx.await.ok()
}

/// Computes an operation in this thread.
fn compute(op: Op) -> Answer {
    match op {
        Op::Hash { password, cost } => match bcrypt::hash(password, cost) {
            Ok(h) => Answer::Hashed(h),
            Err(e) => Answer::Failed(e.to_string()),
        },
        Op::Verify { password, hash } => {
            let ok = match hash {
                Some(h) => bcrypt::verify(password, &h).unwrap_or(false),
                None => {
                    let _ = bcrypt::verify(password, dummy_hash());
                    false
                }
            };
            Answer::Verified(ok)
        }
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| bcrypt::hash("not a password", bcrypt::DEFAULT_COST).unwrap_or_default())
}

/// Lowers the calling thread's nice value to `HASH_THREAD_NICE` (a thread's nice value is its
/// own on Linux). Failing only costs the isolation, so it is reported, not fatal.
fn lower_thread_priority() -> Result<(), String> {
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    // The crate maps 0..=99 onto nice 19..=-20: 0 is nice 19.
    ThreadPriorityValue::try_from(0u8)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            thread_priority::set_current_thread_priority(ThreadPriority::Crossplatform(v))
                .map_err(|e| format!("{e:?}"))
        })
}

/// Starts `n` threads named `name-i` at the hashing priority, each taking jobs from `rx` and
/// handing each result to `done`.
fn start_threads<J: Send + 'static>(
    name: &str,
    rx: mpsc::Receiver<J>,
    work: impl Fn(J) + Send + Sync + 'static,
) -> usize {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rx = Arc::new(Mutex::new(rx));
    let work = Arc::new(work);
    let mut started = 0;
    for i in 0..n {
        let rx = rx.clone();
        let work = work.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                if let Err(e) = lower_thread_priority() {
                    tracing::warn!(error = %e, nice = HASH_THREAD_NICE, "password hashing runs at normal priority");
                }
                loop {
                    // The lock is held while waiting, so one idle thread waits on the queue
                    // and the others on the lock; a job frees it at once.
                    let job = match rx.lock() {
                        Ok(q) => q.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => work(job),
                        Err(_) => return,
                    }
                }
            });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::error!(error = %e, "could not start a password-hashing thread"),
        }
    }
    started
}

/// The queue every hashing request goes through: a thread that feeds the worker process, or
/// (no worker program) the local hashing threads.
fn dispatcher() -> &'static mpsc::Sender<Job> {
    static DISPATCH: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    DISPATCH.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let program = WORKER_PROGRAM.get().cloned();
        let spawned = std::thread::Builder::new()
            .name("fluxbase-hash-io".into())
            .spawn(move || feed(program, rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the password-hashing dispatcher");
        }
        tx
    })
}

/// Local hashing threads of this process (the fallback).
fn local_pool() -> &'static mpsc::Sender<Job> {
    static LOCAL: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        start_threads("fluxbase-bcrypt", rx, |job: Job| {
            // A panic ends this job, not the thread: the caller gets an internal error.
            let Job { op, reply } = job;
            if let Ok(a) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compute(op))) {
                let _ = reply.send(a);
            }
        });
        tx
    })
}

type Pending = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Answer>>>>;

/// One running worker process, with the waiters of the jobs it holds (its own map, so the
/// reader of a worker that died can only fail that worker's jobs, never a successor's).
struct Remote {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    alive: Arc<AtomicBool>,
    pending: Pending,
    /// Whether it ever answered (a worker that dies before answering counts as a failed
    /// start, so a binary that cannot be a worker ends in the in-process fallback).
    answered: Arc<AtomicBool>,
}

impl Remote {
    fn start(program: &PathBuf) -> std::io::Result<Remote> {
        let pending: Pending = Arc::default();
        let mut child = Command::new(program)
            .arg(WORKER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the worker's pipes are missing"));
        };
        let alive = Arc::new(AtomicBool::new(true));
        let answered = Arc::new(AtomicBool::new(false));
        let (alive2, held, answered2) = (alive.clone(), pending.clone(), answered.clone());
        let reader = std::thread::Builder::new()
            .name("fluxbase-hash-rd".into())
            .spawn(move || {
                let mut r = BufReader::new(stdout);
                while let Ok(Some(frame)) = read_frame(&mut r) {
                    let Some((id, answer)) = decode_answer(&frame) else {
                        break;
                    };
                    answered2.store(true, Ordering::SeqCst);
                    let waiter = held.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(w) = waiter {
                        let _ = w.send(answer);
                    }
                }
                // EOF or garbage: the worker is gone (or must be); fail whatever it held.
                if let Ok(mut p) = held.lock() {
                    p.clear();
                }
                alive2.store(false, Ordering::SeqCst);
            });
        if let Err(e) = reader {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Remote {
            child,
            stdin: BufWriter::new(stdin),
            alive,
            pending,
            answered,
        })
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dispatcher loop: keeps one worker process running and writes each job to it.
fn feed(program: Option<PathBuf>, rx: mpsc::Receiver<Job>) {
    let mut remote: Option<Remote> = None;
    let mut next_id: u64 = 0;
    // Consecutive failed starts; past a few the worker is given up for this process.
    let mut failures = 0u32;
    while let Ok(job) = rx.recv() {
        let Some(program) = program.as_ref().filter(|_| failures < 3) else {
            let _ = local_pool().send(job);
            continue;
        };
        if remote
            .as_ref()
            .is_some_and(|r| !r.alive.load(Ordering::SeqCst))
        {
            if let Some(r) = remote.take() {
                if r.answered.load(Ordering::SeqCst) {
                    failures = 0;
                } else {
                    failures += 1;
                }
                tracing::warn!("the password-hashing worker exited; starting another");
                r.stop();
            }
        }
        if failures >= 3 {
            tracing::error!("the password-hashing worker keeps failing; hashing in this process");
            let _ = local_pool().send(job);
            continue;
        }
        if remote.is_none() {
            match Remote::start(program) {
                Ok(r) => remote = Some(r),
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, program = %program.display(), "could not start the password-hashing worker; hashing in this process");
                    let _ = local_pool().send(job);
                    continue;
                }
            }
        }
        let Some(r) = remote.as_mut() else { continue };
        next_id = next_id.wrapping_add(1);
        let Job { op, reply } = job;
        if let Ok(mut p) = r.pending.lock() {
            p.insert(next_id, reply);
        }
        let frame = encode_op(next_id, &op);
        let written = write_frame(&mut r.stdin, &frame).and_then(|_| r.stdin.flush());
        if written.is_err() {
            // The worker is gone: this job fails (its waiter is dropped), the next starts one.
            if let Ok(mut p) = r.pending.lock() {
                p.remove(&next_id);
            }
            r.alive.store(false, Ordering::SeqCst);
        }
    }
    if let Some(r) = remote {
        r.stop();
    }
}

fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)
}

/// The next frame; `Ok(None)` at a clean end of stream.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

// Request: id u64 | kind u8 (0 hash, 1 verify, 2 verify without hash) | cost u32 |
// password length u32 | password | hash (the rest).
fn encode_op(id: u64, op: &Op) -> Vec<u8> {
    let (kind, cost, password, hash) = match op {
        Op::Hash { password, cost } => (0u8, *cost, password, ""),
        Op::Verify {
            password,
            hash: Some(h),
        } => (1, 0, password, h.as_str()),
        Op::Verify {
            password,
            hash: None,
        } => (2, 0, password, ""),
    };
    let mut f = Vec::with_capacity(17 + password.len() + hash.len());
    f.extend_from_slice(&id.to_le_bytes());
    f.push(kind);
    f.extend_from_slice(&cost.to_le_bytes());
    f.extend_from_slice(&(password.len() as u32).to_le_bytes());
    f.extend_from_slice(password.as_bytes());
    f.extend_from_slice(hash.as_bytes());
    f
}

fn decode_op(f: &[u8]) -> Option<(u64, Op)> {
    let id = u64::from_le_bytes(f.get(0..8)?.try_into().ok()?);
    let kind = *f.get(8)?;
    let cost = u32::from_le_bytes(f.get(9..13)?.try_into().ok()?);
    let plen = u32::from_le_bytes(f.get(13..17)?.try_into().ok()?) as usize;
    let password = String::from_utf8(f.get(17..17usize.checked_add(plen)?)?.to_vec()).ok()?;
    let hash = String::from_utf8(f.get(17 + plen..)?.to_vec()).ok()?;
    let op = match kind {
        0 => Op::Hash { password, cost },
        1 => Op::Verify {
            password,
            hash: Some(hash),
        },
        2 => Op::Verify {
            password,
            hash: None,
        },
        _ => return None,
    };
    Some((id, op))
}

// Answer: id u64 | kind u8 (0 false, 1 true, 2 hashed, 3 failed) | text (the rest).
fn encode_answer(id: u64, a: &Answer) -> Vec<u8> {
    let (kind, text) = match a {
        Answer::Verified(false) => (0u8, ""),
        Answer::Verified(true) => (1, ""),
        Answer::Hashed(h) => (2, h.as_str()),
        Answer::Failed(e) => (3, e.as_str()),
    };
    let mut f = Vec::with_capacity(9 + text.len());
    f.extend_from_slice(&id.to_le_bytes());
    f.push(kind);
    f.extend_from_slice(text.as_bytes());
    f
}

fn decode_answer(f: &[u8]) -> Option<(u64, Answer)> {
    let id = u64::from_le_bytes(f.get(0..8)?.try_into().ok()?);
    let text = String::from_utf8(f.get(9..)?.to_vec()).ok()?;
    let a = match *f.get(8)? {
        0 => Answer::Verified(false),
        1 => Answer::Verified(true),
        2 => Answer::Hashed(text),
        3 => Answer::Failed(text),
        _ => return None,
    };
    Some((id, a))
}

/// The worker process: `fluxbase __hash-worker`. Reads jobs from stdin until it closes,
/// answers on stdout. Returns the process's exit status.
pub fn worker_main() -> std::process::ExitCode {
    // Its own session, so its own autogroup, whose share is then lowered. Both are best
    // effort: without them the threads' nice value is all that is left.
    let _ = nix::unistd::setsid();
    let _ = std::fs::write("/proc/self/autogroup", "19");
    let out = Arc::new(Mutex::new(BufWriter::new(std::io::stdout())));
    let (tx, rx) = mpsc::channel::<(u64, Op)>();
    let out2 = out.clone();
    let started = start_threads("fluxbase-bcrypt", rx, move |(id, op)| {
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compute(op)))
            .unwrap_or_else(|_| Answer::Failed("password hashing panicked".into()));
        let frame = encode_answer(id, &answer);
        let mut w = match out2.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if write_frame(&mut *w, &frame)
            .and_then(|_| w.flush())
            .is_err()
        {
            // The parent is gone.
            std::process::exit(0);
        }
    });
    if started == 0 {
        return std::process::ExitCode::FAILURE;
    }
    let mut stdin = BufReader::new(std::io::stdin());
    loop {
        match read_frame(&mut stdin) {
            Ok(Some(frame)) => match decode_op(&frame) {
                Some(job) => {
                    if tx.send(job).is_err() {
                        return std::process::ExitCode::FAILURE;
                    }
                }
                None => return std::process::ExitCode::FAILURE,
            },
            // The parent closed the pipe (it exited): stop, whatever is in flight.
            Ok(None) => std::process::exit(0),
            Err(_) => return std::process::ExitCode::FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for op in [
            Op::Hash {
                password: "pässword".into(),
                cost: 4,
            },
            Op::Verify {
                password: "x".into(),
                hash: Some("$2b$04$abc".into()),
            },
            Op::Verify {
                password: String::new(),
                hash: None,
            },
        ] {
            let f = encode_op(7, &op);
            let (id, back) = decode_op(&f).unwrap();
            assert_eq!(id, 7);
            assert_eq!(encode_op(7, &back), f);
        }
        for a in [
            Answer::Verified(true),
            Answer::Verified(false),
            Answer::Hashed("$2b$".into()),
            Answer::Failed("no".into()),
        ] {
            let (id, back) = decode_answer(&encode_answer(u64::MAX, &a)).unwrap();
            assert_eq!((id, back), (u64::MAX, a));
        }
        // Truncated or unknown frames are refused, not misread.
        assert!(decode_op(&[1, 2, 3]).is_none());
        let whole = encode_op(
            1,
            &Op::Hash {
                password: "abc".into(),
                cost: 4,
            },
        );
        assert!(decode_op(&whole[..18]).is_none());
        let mut unknown = whole.clone();
        unknown[8] = 9;
        assert!(decode_op(&unknown).is_none());
        assert!(decode_answer(&[0; 8]).is_none());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused() {
        let mut b = Vec::new();
        b.extend_from_slice(&(MAX_FRAME + 1).to_le_bytes());
        assert!(read_frame(&mut &b[..]).is_err());
        assert!(read_frame(&mut &[][..]).unwrap().is_none());
    }
}
