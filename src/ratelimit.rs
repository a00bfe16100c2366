//! Rate limiting: token buckets (GCRA, from `governor`) keyed by user, API key or client IP,
//! one limiter per route group from config, plus named limiters modules create for their own
//! per-endpoint limits (e.g. Auth's email sends).
//!
//! Buckets live in this process only: each instance counts on its own (docs/config.md says
//! so). Answers carry `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
//! (seconds until the bucket is full again); refusals are 429 with `Retry-After`.
//!
//! Must not: touch the database, or limit the service_role (admin tooling and server-side
//! code use it for bulk work).

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
    /// Requests per minute.
    pub limit: u32,
    /// Requests left in the bucket now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

/// A refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Requests per minute.
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
    per_minute: u32,
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
        if !self.cfg.enabled || per_minute == 0 {
            return Ok(None);
        }
        let per_minute = u32::try_from(per_minute).unwrap_or(u32::MAX);
        let limiter = self.limiter(name, per_minute);
        let period_ms = 60_000u64 / u64::from(per_minute.max(1));
        match limiter.limiter.check_key(&key.to_string()) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                let missing = u64::from(per_minute.saturating_sub(remaining));
                Ok(Some(RateInfo {
                    limit: per_minute,
                    remaining,
                    reset_secs: (missing * period_ms).div_ceil(1000),
                }))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(Limited {
                    limit: per_minute,
                    retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
                })
            }
        }
    }

    fn limiter(&self, name: &str, per_minute: u32) -> Arc<Named> {
        if let Ok(map) = self.named.read() {
            if let Some(l) = map.get(name).filter(|l| l.per_minute == per_minute) {
                return l.clone();
            }
        }
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        let fresh = Arc::new(Named {
            per_minute,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        });
        match self.named.write() {
            Ok(mut map) => map
                .entry(name.to_string())
                .and_modify(|l| {
                    if l.per_minute != per_minute {
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

    /// Whether the client IP comes from `X-Forwarded-For`.
    pub fn trust_forwarded_for(&self) -> bool {
        self.cfg.trust_forwarded_for
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
