//! Prometheus metrics: HTTP requests by route template, method and status, a latency
//! histogram, and database pool gauges read at scrape time. Modules add their own
//! collectors to `Metrics::registry`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Route label for requests no route matched.
pub const UNMATCHED: &str = "<unmatched>";

/// The process's collectors.
pub struct Metrics {
    /// Registry every collector lives in.
    pub registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    rate_limited: IntCounterVec,
    pool_size: IntGauge,
    pool_available: IntGauge,
    pool_waiting: IntGauge,
    pool_max: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers the collectors.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "fluxbase_http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "fluxbase_http_request_duration_seconds",
                "HTTP request latency by route template and method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route", "method"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "fluxbase_rate_limited_total",
                "Requests refused by a rate limit, by route group",
            ),
            &["group"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let gauge = |n: &str, h: &str| IntGauge::new(n, h);
        let pool_size = gauge(
            "fluxbase_db_pool_connections",
            "Open connections in the database pool",
        )?;
        let pool_available = gauge(
            "fluxbase_db_pool_idle",
            "Idle connections in the database pool",
        )?;
        let pool_waiting = gauge(
            "fluxbase_db_pool_waiting",
            "Requests waiting for a database connection",
        )?;
        let pool_max = gauge("fluxbase_db_pool_max", "Largest size of the database pool")?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        for g in [&pool_size, &pool_available, &pool_waiting, &pool_max] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            rate_limited,
            pool_size,
            pool_available,
            pool_waiting,
            pool_max,
        })
    }

    /// Records one finished request.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut buf = itoa_status(status);
        self.http_requests
            .with_label_values(&[route, method, status_str(&mut buf)])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// Counts a rate-limit refusal.
    pub fn observe_rate_limited(&self, group: &str) {
        self.rate_limited.with_label_values(&[group]).inc();
    }

    /// The text exposition, with pool gauges refreshed.
    pub fn render(&self, pool: &deadpool_postgres::Pool) -> Result<String, prometheus::Error> {
        let s = pool.status();
        self.pool_size.set(s.size as i64);
        self.pool_available.set(s.available as i64);
        self.pool_waiting.set(s.waiting as i64);
        self.pool_max.set(s.max_size as i64);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

fn itoa_status(s: u16) -> [u8; 3] {
    let s = s.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

fn status_str(b: &mut [u8; 3]) -> &str {
    // Three ASCII digits are always valid UTF-8.
    std::str::from_utf8(b).unwrap_or("000")
}
