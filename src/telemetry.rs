//! Logging setup: pretty lines on a terminal, JSON lines otherwise (or as configured).
//! `RUST_LOG`, when set, overrides `log.level` with a full filter. Every line that passes
//! the filter is also kept in an in-memory ring (`recent`), which
//! `GET /api/v1/monitoring/logs` serves.

use crate::config::LogConfig;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines the ring keeps.
pub const RING_LINES: usize = 2000;

/// One structured log line.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// RFC 3339 time.
    pub timestamp: String,
    /// `ERROR` … `TRACE`.
    pub level: String,
    /// The module (`fluxbase::realtime::changes`).
    pub target: String,
    /// The message.
    pub message: String,
    /// The other fields (`request_id`, `status`, …).
    pub fields: Map<String, Value>,
}

fn ring() -> &'static Mutex<VecDeque<LogLine>> {
    static RING: OnceLock<Mutex<VecDeque<LogLine>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(RING_LINES)))
}

/// The most recent lines, oldest first, filtered; at most `limit`.
pub fn recent(
    level: Option<tracing::Level>,
    module: Option<&str>,
    request_id: Option<&str>,
    limit: usize,
) -> Vec<LogLine> {
    let ring = ring().lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<LogLine> = ring
        .iter()
        .rev()
        .filter(|l| {
            level.is_none_or(|max| l.level.parse::<tracing::Level>().is_ok_and(|lv| lv <= max))
        })
        .filter(|l| module.is_none_or(|m| l.target.starts_with(m)))
        .filter(|l| {
            request_id
                .is_none_or(|id| l.fields.get("request_id").and_then(Value::as_str) == Some(id))
        })
        .take(limit)
        .cloned()
        .collect();
    out.reverse();
    out
}

struct Visitor<'a>(&'a mut Map<String, Value>, &'a mut String);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            *self.1 = v;
        } else {
            self.0.insert(field.name().into(), Value::from(v));
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            *self.1 = value.to_string();
        } else {
            self.0.insert(field.name().into(), Value::from(value));
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

/// The layer that feeds the ring.
struct RingLayer;

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Map::new();
        let mut message = String::new();
        event.record(&mut Visitor(&mut fields, &mut message));
        let meta = event.metadata();
        let line = LogLine {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message,
            fields,
        };
        let mut ring = ring().lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= RING_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    }
}

fn guard_slot() -> &'static Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> {
    static GUARD: OnceLock<Mutex<Option<tracing_appender::non_blocking::WorkerGuard>>> =
        OnceLock::new();
    GUARD.get_or_init(|| Mutex::new(None))
}

/// Writes out every buffered log line; call once, as the process ends (lines logged after it
/// are dropped).
pub fn flush() {
    let guard = guard_slot()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    drop(guard);
}

/// Installs the global subscriber; later calls are ignored (tests build many apps).
pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::new(format!(
                "{level},actix_server=warn,actix_web=warn,tokio_postgres=warn",
                level = cfg.level.to_ascii_lowercase()
            ))
        });
    let json = match cfg.format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    // Lines are formatted on the caller's thread but written by a background thread through
    // a buffer: a request never waits on a write(2) to stderr (one per line before, shared
    // by every worker). Not lossy: when the buffer is full, callers wait rather than drop.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    // The guard flushes when dropped: `flush` drops it at the end of `main`.
    {
        let mut g = guard_slot().lock().unwrap_or_else(|p| p.into_inner());
        if g.is_some() {
            // Already initialised (tests build many apps): keep the first subscriber.
            return;
        }
        *g = Some(guard);
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed()
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(RingLayer)
        .try_init();
}
