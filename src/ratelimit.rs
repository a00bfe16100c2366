//! Rate limiting: token buckets (GCRA, from `governor`) keyed by user, API key or client IP,
//! one limiter per route group from config, plus named limiters modules create for their own
//! per-endpoint limits (e.g. Auth's email sends).
//!
//! Buckets live in this process only: each instance counts on its own (docs/config.md says
//! so). Answers carry `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
//! (seconds until the bucket is full again); refusals are 429 with `Retry-After`.
//!
//! An `fbk_` API key may carry a limit of its own; `rate_check` (src/app.rs) counts such a
//! key in the limiter `api_key/<n>` keyed by its id instead of its route group's.
//!
//! Must not: touch the database, or limit the service_role by the group limits (admin
//! tooling and server-side code use it for bulk work; only a key's own, deliberate limit
//! applies to it).

use crate::auth::AuthContext;
use crate::config::RateLimitsConfig;
use crate::error::{ApiError, ErrorCode};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The outcome of one check, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests per period (a minute for the route groups).
    pub limit: u32,
    /// Requests left in the bucket now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

/// A refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Requests per period (a minute for the route groups).
    pub limit: u32,
    /// Seconds until a request would pass.
    pub retry_after_secs: u64,
}

impl Limited {
    /// The 429 answer.
    pub fn into_error(self) -> ApiError {
        ApiError::new(ErrorCode::RateLimited, "Rate limit exceeded, retry later")
            .with_header("Retry-After", self.retry_after_secs.to_string())
            .with_header("X-RateLimit-Limit", self.limit.to_string())
            .with_header("X-RateLimit-Remaining", "0")
            .with_header("X-RateLimit-Reset", self.retry_after_secs.to_string())
    }
}

struct Named {
    quota: (u32, u64),
    limiter: Keyed,
}

/// Every limiter of the process.
pub struct RateLimiters {
    cfg: RateLimitsConfig,
    named: RwLock<HashMap<String, Arc<Named>>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiters")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl RateLimiters {
    /// Limiters for a config.
    pub fn new(cfg: &RateLimitsConfig) -> Self {
        RateLimiters {
            cfg: cfg.clone(),
            named: RwLock::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Checks `key` against the limiter `name` allowing `per_minute` requests per minute
    /// (burst of the same size). `per_minute == 0` or disabled limits always pass.
    pub fn check(
        &self,
        name: &str,
        per_minute: u64,
        key: &str,
    ) -> Result<Option<RateInfo>, Limited> {
        self.check_per(name, per_minute, 60, key)
    }

    /// Checks `key` against the limiter `name` allowing `count` requests per `period_secs`
    /// (burst of the same size, refilled evenly). `count == 0`, `period_secs == 0` or
    /// disabled limits always pass.
    pub fn check_per(
        &self,
        name: &str,
        count: u64,
        period_secs: u64,
        key: &str,
    ) -> Result<Option<RateInfo>, Limited> {
        if !self.cfg.enabled || count == 0 || period_secs == 0 {
            return Ok(None);
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let limiter = self.limiter(name, count, period_secs);
        let period_ms = period_secs.saturating_mul(1000) / u64::from(count.max(1));
        match limiter.limiter.check_key(&key.to_string()) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                let missing = u64::from(count.saturating_sub(remaining));
                Ok(Some(RateInfo {
                    limit: count,
                    remaining,
                    reset_secs: (missing * period_ms).div_ceil(1000),
                }))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(Limited {
                    limit: count,
                    retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
                })
            }
        }
    }

    fn limiter(&self, name: &str, count: u32, period_secs: u64) -> Arc<Named> {
        let want = (count, period_secs);
        if let Ok(map) = self.named.read() {
            if let Some(l) = map.get(name).filter(|l| l.quota == want) {
                return l.clone();
            }
        }
        // One cell every period/count, bursting to count: `count` per `period_secs`.
        let per_cell = std::time::Duration::from_millis(
            (period_secs.saturating_mul(1000) / u64::from(count.max(1))).max(1),
        );
        let burst = NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(per_cell)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        let fresh = Arc::new(Named {
            quota: want,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        });
        match self.named.write() {
            Ok(mut map) => map
                .entry(name.to_string())
                .and_modify(|l| {
                    if l.quota != want {
                        *l = fresh.clone();
                    }
                })
                .or_insert(fresh)
                .clone(),
            Err(_) => fresh,
        }
    }

    /// Forgets keys whose buckets are full again (call periodically to bound memory).
    pub fn housekeeping(&self) {
        if let Ok(map) = self.named.read() {
            for l in map.values() {
                l.limiter.retain_recent();
                l.limiter.shrink_to_fit();
            }
        }
    }

    /// The route group of a path and its per-minute limit; `None` for unlimited paths.
    pub fn group_for(&self, path: &str) -> Option<(&'static str, u64)> {
        let under = |p: &str| crate::routes::under(path, p);
        let (name, n) = if under("/auth/v1") || under("/api/v1/auth") {
            ("auth", self.cfg.auth_per_minute)
        } else if under("/rest/v1") || under("/api/v1/tables") || under("/api/v1/rpc") {
            ("rest", self.cfg.rest_per_minute)
        } else if under("/storage/v1") || under("/api/v1/storage") {
            ("storage", self.cfg.storage_per_minute)
        } else if under("/api/v1") {
            ("api", self.cfg.api_per_minute)
        } else {
            return None;
        };
        (n > 0).then_some((name, n))
    }

    /// The client IP of a request: the first `X-Forwarded-For` entry when trusted, else the
    /// peer address.
    pub fn client_ip(
        &self,
        headers: &actix_web::http::header::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> String {
        let forwarded = self
            .cfg
            .trust_forwarded_for
            .then(|| headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string());
        forwarded
            .or_else(|| peer.map(|a| a.ip().to_string()))
            .unwrap_or_default()
    }
}

/// The bucket key of a caller: the user (JWT `sub`), else a non-anonymous API key, else
/// the IP. Anonymous callers are keyed by IP even when they send the anon key: every user
/// of an app shares that key. `None` means "not limited" (the service_role).
pub fn caller_key(auth: Option<&AuthContext>, token: Option<&str>, ip: &str) -> Option<String> {
    use sha2::Digest;
    match auth {
        Some(a) if a.is_service_role() => None,
        Some(a) if a.subject().is_some() => {
            Some(format!("user:{}", a.subject().unwrap_or_default()))
        }
        Some(a) if a.is_authenticated() && token.is_some_and(|t| !t.is_empty()) => {
            let h = sha2::Sha256::digest(token.unwrap_or_default().as_bytes());
            Some(format!("key:{}", hex::encode(&h[..12])))
        }
        _ => Some(format!("ip:{ip}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RateLimitsConfig {
        RateLimitsConfig {
            api_per_minute: 3,
            ..Default::default()
        }
    }

    #[test]
    fn buckets_refuse_after_the_burst_and_keys_are_separate() {
        let rl = RateLimiters::new(&cfg());
        for left in [2, 1, 0] {
            let info = rl.check("api", 3, "ip:1").unwrap().unwrap();
            assert_eq!(info.remaining, left);
            assert_eq!(info.limit, 3);
        }
        let refused = rl.check("api", 3, "ip:1").unwrap_err();
        assert!(
            refused.retry_after_secs >= 1 && refused.retry_after_secs <= 20,
            "{refused:?}"
        );
        assert!(
            rl.check("api", 3, "ip:2").is_ok(),
            "another key has its own bucket"
        );
        assert_eq!(rl.check("api", 0, "ip:1"), Ok(None), "0 = unlimited");
    }

    #[test]
    fn longer_periods_refill_evenly() {
        let rl = RateLimiters::new(&cfg());
        // 2 per hour: a burst of two, then the next one in half an hour.
        assert!(rl.check_per("auth.email_sent", 2, 3600, "all").is_ok());
        let info = rl
            .check_per("auth.email_sent", 2, 3600, "all")
            .unwrap()
            .unwrap();
        assert_eq!((info.limit, info.remaining), (2, 0));
        let refused = rl.check_per("auth.email_sent", 2, 3600, "all").unwrap_err();
        assert!(
            (1700..=1800).contains(&refused.retry_after_secs),
            "{refused:?}"
        );
        // The same name with another quota starts afresh.
        assert!(rl.check_per("auth.email_sent", 3, 3600, "all").is_ok());
        assert_eq!(
            rl.check_per("x", 5, 0, "k"),
            Ok(None),
            "no period = unlimited"
        );
    }

    #[test]
    fn groups_and_keys() {
        let rl = RateLimiters::new(&cfg());
        assert_eq!(rl.group_for("/api/v1/jobs"), Some(("api", 3)));
        assert_eq!(rl.group_for("/auth/v1/token"), Some(("auth", 360)));
        assert_eq!(rl.group_for("/rest/v1/t"), None, "0 means unlimited");
        assert_eq!(rl.group_for("/health"), None);
        let anon = AuthContext::anon();
        assert_eq!(
            caller_key(Some(&anon), None, "1.2.3.4").unwrap(),
            "ip:1.2.3.4"
        );
        assert_eq!(
            caller_key(Some(&anon), Some("anon-key"), "1.2.3.4").unwrap(),
            "ip:1.2.3.4"
        );
        let mut robot = AuthContext::anon();
        robot.role = "authenticated".into();
        assert!(caller_key(Some(&robot), Some("tok"), "1.2.3.4")
            .unwrap()
            .starts_with("key:"));
    }
}
