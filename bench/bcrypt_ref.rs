//! The bcrypt reference for the sign-in figure: how many bcrypt verifications per second this
//! machine does with the same crate and cost on `nproc` threads, for `SECS` seconds.
//!
//! Usage: bcrypt_ref [COST] [SECS]   (defaults 10, 10)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cost: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let hash = bcrypt::hash("correct horse battery", cost).unwrap();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (hash, done) = (hash.clone(), done.clone());
            std::thread::spawn(move || {
                while Instant::now() < until {
                    assert!(bcrypt::verify("correct horse battery", &hash).unwrap());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    println!(
        "bcrypt_verify_per_s={:.1} cost={cost} threads={threads} secs={secs}",
        done.load(Ordering::Relaxed) as f64 / secs as f64
    );
}
