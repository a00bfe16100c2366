//! The durable job queue (schema `jobs`): enqueue in the caller's transaction or standalone,
//! workers that claim with `FOR UPDATE SKIP LOCKED` under a heartbeat-extended lease,
//! retries with exponential backoff and full jitter, dead letters and replay, cron schedules
//! with one advisory-lock leader, metrics and the admin API under `/api/v1/jobs`.
//!
//! Anything that must not be lost (mail, webhook deliveries, workflow steps) goes through
//! here. Must not: run a job twice concurrently (the lease and the `locked_by` guard on every
//! outcome prevent it), or lose one when a worker dies (its lease expires and another worker
//! runs it). Handlers are told their attempt number, so they can be idempotent.

pub mod api;
pub mod builtin;
pub mod cron;
pub mod queue;
pub mod worker;

use crate::config::JobsConfig;
use futures_util::future::BoxFuture;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

pub use api::configure;
pub use queue::{enqueue, enqueue_many, Enqueued, JobSpec};

/// What a handler gets.
#[derive(Clone)]
pub struct JobContext {
    /// Job id.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Payload.
    pub payload: Value,
    /// This attempt (1 on the first run): handlers use it to stay idempotent.
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// The database.
    pub pool: deadpool_postgres::Pool,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Try again later (with the queue's backoff), until the attempts run out.
    Retry(String),
    /// Try again with the handler's own backoff (e.g. a webhook's retry policy), until the
    /// attempts run out.
    RetryWith(String, Backoff),
    /// Never retry: the job goes straight to the dead letters.
    Permanent(String),
}

/// A job handler.
pub type HandlerFn =
    Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<Option<Value>, JobError>> + Send + Sync>;

/// A handler's override of the queue's backoff for one failed attempt; unset fields fall
/// back to the queue's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Backoff base, ms.
    pub base_ms: Option<u64>,
    /// Backoff cap, ms (also caps `delay_ms`).
    pub cap_ms: Option<u64>,
    /// Wait exactly this long (e.g. the peer's `Retry-After`) instead of the jittered curve.
    pub delay_ms: Option<u64>,
}

impl Backoff {
    /// The wait before the attempt after `attempt`, given the queue's base and cap.
    pub fn delay(&self, attempt: i32, base_ms: u64, cap_ms: u64, random: f64) -> u64 {
        let base = self.base_ms.unwrap_or(base_ms).max(1);
        let cap = self.cap_ms.unwrap_or(cap_ms).max(1);
        match self.delay_ms {
            Some(ms) => ms.clamp(1, cap),
            None => queue::backoff_ms(attempt, base, cap, random),
        }
    }
}

/// Retry policy of a queue; unset fields fall back to `jobs.*` config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before dead-lettering.
    pub max_attempts: Option<i32>,
    /// Backoff base, ms.
    pub base_ms: Option<u64>,
    /// Backoff cap, ms.
    pub cap_ms: Option<u64>,
}

/// A policy with every field resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectivePolicy {
    /// Attempts before dead-lettering.
    pub max_attempts: i32,
    /// Backoff base, ms.
    pub base_ms: u64,
    /// Backoff cap, ms.
    pub cap_ms: u64,
}

/// Handlers by queue.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, (HandlerFn, RetryPolicy)>,
}

impl Registry {
    /// Registers the handler of `queue`.
    pub fn register<F, Fut>(&mut self, queue: &str, policy: RetryPolicy, f: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, JobError>> + Send + 'static,
    {
        let f: HandlerFn = Arc::new(move |ctx| Box::pin(f(ctx)));
        self.handlers.insert(queue.to_string(), (f, policy));
    }

    /// Queues with a handler.
    pub fn queues(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// The handler of a queue.
    pub fn get(&self, queue: &str) -> Option<HandlerFn> {
        self.handlers.get(queue).map(|(f, _)| f.clone())
    }

    /// The resolved policy of a queue.
    pub fn policy(&self, queue: &str, cfg: &JobsConfig) -> EffectivePolicy {
        let p = self
            .handlers
            .get(queue)
            .map(|(_, p)| *p)
            .unwrap_or_default();
        EffectivePolicy {
            max_attempts: p
                .max_attempts
                .unwrap_or(i32::try_from(cfg.max_attempts).unwrap_or(i32::MAX))
                .max(1),
            base_ms: p.base_ms.unwrap_or(cfg.backoff_base_ms),
            cap_ms: p.cap_ms.unwrap_or(cfg.backoff_cap_ms),
        }
    }
}

/// Job metrics: runs by outcome, durations, and queue depth/age refreshed at scrape time.
pub struct JobMetrics {
    runs: IntCounterVec,
    duration: HistogramVec,
    depth: IntGaugeVec,
    oldest: prometheus::GaugeVec,
}

impl std::fmt::Debug for JobMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobMetrics")
    }
}

impl JobMetrics {
    /// Creates and registers the collectors.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let runs = IntCounterVec::new(
            Opts::new(
                "fluxbase_jobs_runs_total",
                "Job attempts by queue and outcome (succeeded, retried, dead, lost)",
            ),
            &["queue", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "fluxbase_jobs_duration_seconds",
                "Job handler run time by queue",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
            ]),
            &["queue"],
        )?;
        let depth = IntGaugeVec::new(
            Opts::new("fluxbase_jobs_ready", "Jobs ready to run, by queue"),
            &["queue"],
        )?;
        let oldest = prometheus::GaugeVec::new(
            Opts::new(
                "fluxbase_jobs_oldest_ready_age_seconds",
                "Age of the oldest ready job, by queue",
            ),
            &["queue"],
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(oldest.clone()))?;
        Ok(JobMetrics {
            runs,
            duration,
            depth,
            oldest,
        })
    }

    /// Records one attempt.
    pub fn observe_run(&self, queue: &str, outcome: &str, secs: f64) {
        self.runs.with_label_values(&[queue, outcome]).inc();
        self.duration.with_label_values(&[queue]).observe(secs);
    }

    /// Refreshes depth and age gauges from the database (called on each `/metrics` scrape).
    pub async fn refresh(&self, pool: &deadpool_postgres::Pool) {
        let Ok(c) = pool.get().await else { return };
        if let Ok(stats) = queue::stats(&**c).await {
            self.depth.reset();
            self.oldest.reset();
            for q in stats {
                self.depth
                    .with_label_values(&[q.queue.as_str()])
                    .set(q.ready);
                self.oldest
                    .with_label_values(&[q.queue.as_str()])
                    .set(q.oldest_ready_age_secs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn a_handler_backoff_overrides_the_queue_policy_field_by_field() {
        // No override: the queue's curve (at random = 1.0, the ceiling base * 2^(n-1)).
        assert_eq!(Backoff::default().delay(3, 100, 10_000, 1.0), 400);
        // The handler's base and cap.
        let own = Backoff {
            base_ms: Some(200),
            cap_ms: Some(1_000),
            delay_ms: None,
        };
        assert_eq!(own.delay(1, 100, 10_000, 1.0), 200);
        assert_eq!(own.delay(3, 100, 10_000, 1.0), 800);
        assert_eq!(own.delay(9, 100, 10_000, 1.0), 1_000);
        assert!(own.delay(3, 100, 10_000, 0.25) <= 200);
        // Only a cap: the queue's base under the handler's cap.
        let cap_only = Backoff {
            cap_ms: Some(250),
            ..Backoff::default()
        };
        assert_eq!(cap_only.delay(3, 100, 10_000, 1.0), 250);
        // An exact wait (Retry-After) wins, within the cap, never 0.
        let peer = Backoff {
            delay_ms: Some(3_000),
            ..own
        };
        assert_eq!(peer.delay(1, 100, 10_000, 1.0), 1_000);
        let zero = Backoff {
            delay_ms: Some(0),
            ..Backoff::default()
        };
        assert_eq!(zero.delay(1, 100, 10_000, 1.0), 1);
    }
}
