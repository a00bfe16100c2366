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

/// A value of a structured field, kept as recorded (formatted only when read or written).
#[derive(Debug, Clone)]
enum Val {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Val {
    fn to_json(&self) -> Value {
        match self {
            Val::Str(s) => Value::from(s.as_str()),
            Val::I64(v) => Value::from(*v),
            Val::U64(v) => Value::from(*v),
            Val::F64(v) => Value::from(*v),
            Val::Bool(v) => Value::from(*v),
        }
    }
}

/// One event as the ring keeps it: the time as microseconds and the fields unformatted,
/// so recording a line costs one visit of its fields and no timestamp formatting.
struct Stored {
    micros: i64,
    level: tracing::Level,
    target: &'static str,
    message: String,
    fields: Vec<(&'static str, Val)>,
}

impl Stored {
    fn field_str(&self, name: &str) -> Option<&str> {
        self.fields.iter().find_map(|(k, v)| match v {
            Val::Str(s) if *k == name => Some(s.as_str()),
            _ => None,
        })
    }

    fn to_line(&self) -> LogLine {
        let ts = chrono::DateTime::from_timestamp_micros(self.micros)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        LogLine {
            timestamp: ts,
            level: self.level.to_string(),
            target: self.target.to_string(),
            message: self.message.clone(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.to_json()))
                .collect(),
        }
    }
}

fn ring() -> &'static Mutex<VecDeque<Stored>> {
    static RING: OnceLock<Mutex<VecDeque<Stored>>> = OnceLock::new();
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
        .filter(|l| level.is_none_or(|max| l.level <= max))
        .filter(|l| module.is_none_or(|m| l.target.starts_with(m)))
        .filter(|l| request_id.is_none_or(|id| l.field_str("request_id") == Some(id)))
        .take(limit)
        .map(Stored::to_line)
        .collect();
    out.reverse();
    out
}

struct Visitor<'a>(&'a mut Vec<(&'static str, Val)>, &'a mut String);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.1, "{value:?}");
        } else {
            let mut v = String::new();
            let _ = write!(v, "{value:?}");
            self.0.push((field.name(), Val::Str(v)));
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.1.push_str(value);
        } else {
            self.0.push((field.name(), Val::Str(value.to_string())));
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.push((field.name(), Val::I64(value)));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.push((field.name(), Val::U64(value)));
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.push((field.name(), Val::F64(value)));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.push((field.name(), Val::Bool(value)));
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for microseconds since the epoch (proleptic Gregorian,
/// civil-from-days), without a formatter: this runs for every log line.
fn rfc3339_micros(micros: i64, out: &mut Vec<u8>) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    fn put(out: &mut Vec<u8>, v: i64, width: usize) {
        let mut buf = [b'0'; 6];
        let mut v = v.max(0);
        for i in (0..width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }
    put(out, y, 4);
    out.push(b'-');
    put(out, m, 2);
    out.push(b'-');
    put(out, d, 2);
    out.push(b'T');
    put(out, sod / 3600, 2);
    out.push(b':');
    put(out, sod / 60 % 60, 2);
    out.push(b':');
    put(out, sod % 60, 2);
    out.push(b'.');
    put(out, frac, 6);
    out.push(b'Z');
}

/// Appends `s` as a JSON string.
fn json_str(s: &str, out: &mut Vec<u8>) {
    // Writing a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The JSON line of an event, in the shape tracing-subscriber's flattened JSON had:
/// `{"timestamp", "level", "message", <fields>…, "target"}` and a newline.
fn json_line(e: &Stored, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    rfc3339_micros(e.micros, out);
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(e.level.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    json_str(&e.message, out);
    for (k, v) in &e.fields {
        out.push(b',');
        json_str(k, out);
        out.push(b':');
        let _ = match v {
            Val::Str(s) => serde_json::to_writer(&mut *out, s),
            Val::I64(n) => serde_json::to_writer(&mut *out, n),
            Val::U64(n) => serde_json::to_writer(&mut *out, n),
            Val::F64(n) => serde_json::to_writer(&mut *out, n),
            Val::Bool(b) => serde_json::to_writer(&mut *out, b),
        };
    }
    out.extend_from_slice(b",\"target\":");
    json_str(e.target, out);
    out.extend_from_slice(b"}\n");
}

/// The layer that keeps every line in the ring and, in JSON mode, writes it to the log
/// writer: the event's fields are visited once for both.
struct LineLayer {
    json: Option<tracing_appender::non_blocking::NonBlocking>,
}

impl<S: tracing::Subscriber> Layer<S> for LineLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Vec::with_capacity(8);
        let mut message = String::new();
        event.record(&mut Visitor(&mut fields, &mut message));
        let meta = event.metadata();
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let line = Stored {
            micros,
            level: *meta.level(),
            target: meta.target(),
            message,
            fields,
        };
        if let Some(w) = &self.json {
            thread_local! {
                static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            BUF.with(|b| {
                let mut b = b.borrow_mut();
                b.clear();
                json_line(&line, &mut b);
                use std::io::Write;
                let _ = w.clone().write_all(&b);
            });
        }
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
    // JSON lines are written by `LineLayer` (one visit of the fields for the line and the
    // ring); pretty lines by tracing-subscriber's formatter.
    let (pretty, json_writer) = if json {
        (None, Some(writer))
    } else {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(std::io::stderr().is_terminal());
        (Some(fmt), None)
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(pretty)
        .with(LineLayer { json: json_writer })
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_rfc3339_with_micros() {
        for micros in [
            0i64,
            1_795_000_000_123_456,
            951_782_400_000_001,
            4_107_542_399_999_999,
        ] {
            let mut out = Vec::new();
            rfc3339_micros(micros, &mut out);
            let want = chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn json_lines_are_valid_json_in_the_flattened_shape() {
        let e = Stored {
            micros: 1_795_000_000_123_456,
            level: tracing::Level::INFO,
            target: "fluxbase::app",
            message: "say \"hi\"\n".into(),
            fields: vec![
                ("request_id", Val::Str("r-1".into())),
                ("status", Val::U64(200)),
                ("ms", Val::F64(1.5)),
                ("delta", Val::I64(-3)),
                ("ok", Val::Bool(true)),
            ],
        };
        let mut out = Vec::new();
        json_line(&e, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], e.to_line().timestamp);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "say \"hi\"\n");
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["ms"], 1.5);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["target"], "fluxbase::app");
        // Key order as before: timestamp first, target last.
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\"timestamp\":\""), "{text}");
        assert!(text.ends_with(",\"target\":\"fluxbase::app\"}\n"), "{text}");
    }
}
