//! Prometheus metrics: HTTP requests by route template, method and status, a latency
//! histogram, and database pool gauges read at scrape time. Modules add their own
//! collectors to `Metrics::registry`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Database statement latency of request transactions, by kind (`read`, `write`).
fn db_queries() -> &'static HistogramVec {
    static H: std::sync::OnceLock<HistogramVec> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        // The options are constants: construction cannot fail; a fallback keeps it total.
        HistogramVec::new(
            HistogramOpts::new(
                "fluxbase_db_query_duration_seconds",
                "Round trip of request transactions' statements (BEGIN, role setup, query), by kind",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["kind"],
        )
        .unwrap_or_else(|_| {
            HistogramVec::new(HistogramOpts::new("fluxbase_db_query_fallback", "-"), &["kind"])
                .unwrap_or_else(|_| unreachable!("constant histogram options"))
        })
    })
}

/// Records a request statement's latency, and logs it when it is slow: the statement's
/// fingerprint (a hash and the start of its text, which holds no values: they are always
/// bind parameters), the duration and the request id.
/// `slow_ms` is `log.slow_query_ms` (0 = never log).
pub fn observe_query(
    kind: &str,
    sql: &str,
    took: std::time::Duration,
    request_id: &str,
    slow_ms: u64,
) {
    db_queries()
        .with_label_values(&[kind])
        .observe(took.as_secs_f64());
    let slow = slow_ms;
    let ms = took.as_millis() as u64;
    if slow > 0 && ms >= slow {
        use sha2::Digest;
        let hash = hex::encode(&sha2::Sha256::digest(sql.as_bytes())[..8]);
        let mut cut = sql.len().min(200);
        while !sql.is_char_boundary(cut) {
            cut -= 1;
        }
        tracing::warn!(request_id, kind, ms, fingerprint = %hash, statement = &sql[..cut], "slow query");
    }
}

/// Route label for requests no route matched.
pub const UNMATCHED: &str = "<unmatched>";

/// The process's collectors.
pub struct Metrics {
    /// Registry every collector lives in.
    pub registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    rate_limited: IntCounterVec,
    storage_bytes: IntCounterVec,
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
        let storage_bytes = IntCounterVec::new(
            Opts::new(
                "fluxbase_storage_bytes_total",
                "Object bytes through the storage API: in = upload bodies written to the \
                 store, out = download bodies sent (ranges as sent)",
            ),
            &["direction"],
        )?;
        registry.register(Box::new(storage_bytes.clone()))?;
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
        registry.register(Box::new(db_queries().clone()))?;
        for g in [&pool_size, &pool_available, &pool_waiting, &pool_max] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            rate_limited,
            storage_bytes,
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

    /// The storage byte counter of one direction (`in` or `out`), to count a body with
    /// while it streams.
    pub fn storage_bytes(&self, direction: &str) -> prometheus::IntCounter {
        self.storage_bytes.with_label_values(&[direction])
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

impl Metrics {
    /// The same figures as `render`, as JSON for the admin UI:
    /// `[{name, help, type, samples: [{labels, value} | {labels, count, sum}]}]`.
    pub fn snapshot(&self, pool: &deadpool_postgres::Pool) -> serde_json::Value {
        use prometheus::proto::MetricType;
        let s = pool.status();
        self.pool_size.set(s.size as i64);
        self.pool_available.set(s.available as i64);
        self.pool_waiting.set(s.waiting as i64);
        self.pool_max.set(s.max_size as i64);
        let families: Vec<serde_json::Value> = self
            .registry
            .gather()
            .iter()
            .map(|f| {
                let kind = f.get_field_type();
                let samples: Vec<serde_json::Value> = f
                    .get_metric()
                    .iter()
                    .map(|m| {
                        let labels: serde_json::Map<String, serde_json::Value> = m
                            .get_label()
                            .iter()
                            .map(|l| (l.name().to_string(), l.value().into()))
                            .collect();
                        match kind {
                            MetricType::COUNTER => serde_json::json!({"labels": labels, "value": m.get_counter().get_value()}),
                            MetricType::GAUGE => serde_json::json!({"labels": labels, "value": m.get_gauge().get_value()}),
                            MetricType::HISTOGRAM => {
                                let h = m.get_histogram();
                                serde_json::json!({"labels": labels, "count": h.get_sample_count(), "sum": h.get_sample_sum()})
                            }
                            _ => serde_json::json!({"labels": labels}),
                        }
                    })
                    .collect();
                let kind = match kind {
                    MetricType::COUNTER => "counter",
                    MetricType::GAUGE => "gauge",
                    MetricType::HISTOGRAM => "histogram",
                    MetricType::SUMMARY => "summary",
                    MetricType::UNTYPED => "untyped",
                };
                serde_json::json!({"name": f.name(), "help": f.help(), "type": kind, "samples": samples})
            })
            .collect();
        serde_json::Value::Array(families)
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
