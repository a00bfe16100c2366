//! OpenTelemetry trace export (optional): one SERVER span per sampled HTTP request and one
//! CLIENT child span per request-transaction statement, sent in batches over OTLP/HTTP
//! (protobuf) to `otlp.endpoint`. W3C `traceparent` on a request continues the caller's
//! trace and its sampled flag decides; other requests are sampled at `otlp.sample_percent`.
//!
//! Off unless `otlp.endpoint` is set; compiled only with the cargo feature `otlp` (on by
//! default; without it the types remain and a configured endpoint is a start-up error).
//! Export never slows a request: spans go through a bounded channel (full = dropped and
//! counted) to one background task that batches and POSTs them.
//!
//! Must not: put bound values, bodies or headers in a span (statements are the SQL text,
//! whose values are always bind parameters), or block a request on the collector.

use crate::config::OtlpConfig;
use prometheus::IntCounter;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A span's kind (OTLP `Span.SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An incoming request.
    Server = 2,
    /// An outgoing call (a database statement).
    Client = 3,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// A finished span, ready to export.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    /// Trace id (16 bytes, not all zero).
    pub trace_id: [u8; 16],
    /// Span id (8 bytes, not all zero).
    pub span_id: [u8; 8],
    /// Parent span id, when the span has one.
    pub parent: Option<[u8; 8]>,
    /// Name (`GET /rest/v1/{table}`, `SELECT`).
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// Start, ns since the epoch.
    pub start_ns: u64,
    /// End, ns since the epoch.
    pub end_ns: u64,
    /// Attributes.
    pub attrs: Vec<(&'static str, Attr)>,
    /// `Some(message)` marks the span as an error.
    pub error: Option<String>,
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A W3C trace context taken from a `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The caller's span id.
    pub parent_id: [u8; 8],
    /// The sampled flag.
    pub sampled: bool,
}

/// Parses `traceparent` (W3C Trace Context): `00-<32 hex>-<16 hex>-<2 hex>`. Versions other
/// than 00 are read by the same prefix rule (a future version may append fields); version
/// `ff`, upper-case hex and all-zero ids are invalid, and an invalid header is ignored.
pub fn parse_traceparent(v: &str) -> Option<TraceParent> {
    let v = v.trim();
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut parts = v.splitn(5, '-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version.len() != 2 || !lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && (rest.is_some() || flags.len() != 2) {
        return None;
    }
    let flags = flags.get(..2)?;
    if trace.len() != 32 || parent.len() != 16 || !lower_hex(trace) || !lower_hex(parent) {
        return None;
    }
    if !lower_hex(flags) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut parent_id = [0u8; 8];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    hex::decode_to_slice(parent, &mut parent_id).ok()?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 1 == 1,
    })
}

/// A random id that is not all zeros (W3C: an all-zero trace or span id is invalid).
fn random_id<const N: usize>() -> [u8; N]
where
    [u8; N]: Default,
    rand::distr::StandardUniform: rand::distr::Distribution<[u8; N]>,
{
    loop {
        let id: [u8; N] = rand::random();
        if id != <[u8; N]>::default() {
            return id;
        }
    }
}

/// Where a request's child spans hang: kept in the request's extensions and copied into
/// `RequestInfo`, so request transactions can add statement spans.
#[derive(Clone)]
pub struct Parent {
    tracer: Arc<Tracer>,
    /// Trace id of the request.
    pub trace_id: [u8; 16],
    /// Span id of the request's SERVER span.
    pub span_id: [u8; 8],
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("trace_id", &hex::encode(self.trace_id))
            .field("span_id", &hex::encode(self.span_id))
            .finish()
    }
}

impl Parent {
    /// Records a statement of the request's transaction as a CLIENT child span that ended
    /// now and took `took`. The statement text is cut at 2,000 bytes.
    pub fn statement(&self, kind: &str, sql: &str, took: Duration) {
        if !self.tracer.db_spans {
            return;
        }
        let end_ns = now_ns();
        let start_ns = end_ns.saturating_sub(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        let mut cut = sql.len().min(2000);
        while !sql.is_char_boundary(cut) {
            cut -= 1;
        }
        let verb = sql
            .split_whitespace()
            .next()
            .unwrap_or("statement")
            .to_ascii_uppercase();
        self.tracer.record(SpanData {
            trace_id: self.trace_id,
            span_id: random_id::<8>(),
            parent: Some(self.span_id),
            name: verb,
            kind: Kind::Client,
            start_ns,
            end_ns,
            attrs: vec![
                ("db.system.name", Attr::Str("postgresql".into())),
                ("db.query.text", Attr::Str(sql[..cut].to_string())),
                ("fluxbase.tx", Attr::Str(kind.to_string())),
            ],
            error: None,
        });
    }
}

/// A request's SERVER span while the request runs.
pub struct RequestSpan {
    /// The context children attach to.
    pub parent: Parent,
    remote_parent: Option<[u8; 8]>,
    start_ns: u64,
}

/// What the access log knows when a request ends.
pub struct RequestEnd<'a> {
    /// Method.
    pub method: &'a str,
    /// Route template (or `<unmatched>`).
    pub route: &'a str,
    /// Path.
    pub path: &'a str,
    /// Status.
    pub status: u16,
    /// Request id.
    pub request_id: &'a str,
    /// Peer IP, when known.
    pub client: Option<String>,
}

impl RequestSpan {
    /// Ends the span and queues it for export.
    pub fn finish(self, end: RequestEnd<'_>) {
        // `{tail:.*}` → `{tail}`: the template as OpenAPI and http.route write it.
        let route = crate::routes::openapi_path(end.route);
        let mut attrs = vec![
            ("http.request.method", Attr::Str(end.method.to_string())),
            ("url.path", Attr::Str(end.path.to_string())),
            ("http.route", Attr::Str(route.clone())),
            (
                "http.response.status_code",
                Attr::Int(i64::from(end.status)),
            ),
            ("fluxbase.request_id", Attr::Str(end.request_id.to_string())),
        ];
        if let Some(c) = end.client {
            attrs.push(("client.address", Attr::Str(c)));
        }
        let tracer = self.parent.tracer.clone();
        tracer.record(SpanData {
            trace_id: self.parent.trace_id,
            span_id: self.parent.span_id,
            parent: self.remote_parent,
            name: format!("{} {route}", end.method),
            kind: Kind::Server,
            start_ns: self.start_ns,
            end_ns: now_ns(),
            attrs,
            // Server spans: 5xx is an error, 4xx is the client's (OpenTelemetry semconv).
            error: (end.status >= 500).then(|| format!("HTTP {}", end.status)),
        });
    }
}

/// The process's span sink (one per `AppState`).
pub struct Tracer {
    tx: tokio::sync::mpsc::Sender<Msg>,
    sample_percent: u64,
    db_spans: bool,
    dropped: IntCounter,
    exported: IntCounter,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracer")
    }
}

// Read only by the exporter, which a build without the `otlp` feature lacks.
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
enum Msg {
    Span(Box<SpanData>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Tracer {
    /// Starts the exporter when `otlp.endpoint` is set (`Ok(None)` when it is not), with its
    /// counters in `registry`. Must run inside the tokio runtime.
    pub fn start(
        cfg: &OtlpConfig,
        registry: &prometheus::Registry,
    ) -> Result<Option<Arc<Tracer>>, String> {
        if cfg.endpoint.trim().is_empty() {
            return Ok(None);
        }
        start_exporter(cfg, registry)
    }

    /// Starts a request's SERVER span, or `None` when the request is not sampled.
    pub fn start_request(self: &Arc<Self>, traceparent: Option<&str>) -> Option<RequestSpan> {
        let remote = traceparent.and_then(parse_traceparent);
        let sampled = match remote {
            Some(p) => p.sampled,
            None => {
                self.sample_percent >= 100
                    || (self.sample_percent > 0
                        && rand::random::<u64>() % 100 < self.sample_percent)
            }
        };
        if !sampled {
            return None;
        }
        Some(RequestSpan {
            parent: Parent {
                tracer: self.clone(),
                trace_id: remote.map_or_else(random_id::<16>, |p| p.trace_id),
                span_id: random_id::<8>(),
            },
            remote_parent: remote.map(|p| p.parent_id),
            start_ns: now_ns(),
        })
    }

    /// Queues a span; drops it (counted) when the queue is full.
    pub fn record(&self, span: SpanData) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.dropped.inc();
        }
    }

    /// Spans dropped because the export queue was full or the exporter gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.exported.get()
    }

    /// Sends what is queued and waits for it (at most `within`); for shutdown and tests.
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}

#[cfg(not(feature = "otlp"))]
fn start_exporter(
    _cfg: &OtlpConfig,
    _registry: &prometheus::Registry,
) -> Result<Option<Arc<Tracer>>, String> {
    Err("otlp.endpoint is set, but this build has no OTLP export (cargo feature `otlp`)".into())
}

#[cfg(feature = "otlp")]
fn start_exporter(
    cfg: &OtlpConfig,
    registry: &prometheus::Registry,
) -> Result<Option<Arc<Tracer>>, String> {
    export::start(cfg, registry)
}

#[cfg(feature = "otlp")]
mod export {
    //! The batch exporter: OTLP/HTTP with protobuf bodies (`ExportTraceServiceRequest`),
    //! encoded by hand (a dozen fields of opentelemetry-proto's trace.proto; no codegen).

    use super::{Attr, Msg, SpanData, Tracer};
    use crate::config::OtlpConfig;
    use prometheus::IntCounter;
    use std::sync::Arc;
    use std::time::Duration;

    /// Spans per request to the collector.
    const BATCH: usize = 512;

    pub(super) fn start(
        cfg: &OtlpConfig,
        registry: &prometheus::Registry,
    ) -> Result<Option<Arc<Tracer>>, String> {
        let base = cfg.endpoint.trim().trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        };
        let parsed = url::Url::parse(&url).map_err(|e| format!("otlp.endpoint: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("otlp.endpoint must be an http(s) URL".into());
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for h in &cfg.headers {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("otlp.headers: {h:?} is not `name: value`"))?;
            let k = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|e| format!("otlp.headers: {e}"))?;
            let v = reqwest::header::HeaderValue::from_str(v.trim())
                .map_err(|e| format!("otlp.headers: {e}"))?;
            headers.insert(k, v);
        }
        // The collector is the operator's own (often on loopback): a plain client, not the
        // SSRF-guarded one that user-supplied URLs go through.
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("otlp: {e}"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.max_queue_spans.clamp(1, 1 << 20) as usize);
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).map_err(|e| format!("otlp metrics: {e}"))?;
            registry
                .register(Box::new(c.clone()))
                .map_err(|e| format!("otlp metrics: {e}"))?;
            Ok::<_, String>(c)
        };
        let exported = counter(
            "fluxbase_otlp_spans_exported_total",
            "Spans the OTLP collector accepted",
        )?;
        let dropped = counter(
            "fluxbase_otlp_spans_dropped_total",
            "Spans dropped: export queue full, or the collector failed three times",
        )?;
        let resource = resource(&cfg.service_name);
        tokio::spawn(run(
            rx,
            client,
            url,
            resource,
            Duration::from_millis(cfg.export_interval_ms.max(10)),
            Counters {
                exported: exported.clone(),
                dropped: dropped.clone(),
            },
        ));
        Ok(Some(Arc::new(Tracer {
            tx,
            sample_percent: cfg.sample_percent.min(100),
            db_spans: cfg.db_spans,
            dropped,
            exported,
        })))
    }

    struct Counters {
        exported: IntCounter,
        dropped: IntCounter,
    }

    async fn run(
        mut rx: tokio::sync::mpsc::Receiver<Msg>,
        client: reqwest::Client,
        url: String,
        resource: Vec<u8>,
        interval: Duration,
        counters: Counters,
    ) {
        let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Msg::Span(s)) => {
                        batch.push(*s);
                        if batch.len() >= BATCH {
                            send(&client, &url, &resource, &mut batch, &counters).await;
                        }
                    }
                    Some(Msg::Flush(done)) => {
                        send(&client, &url, &resource, &mut batch, &counters).await;
                        let _ = done.send(());
                    }
                    None => {
                        send(&client, &url, &resource, &mut batch, &counters).await;
                        return;
                    }
                },
                _ = tick.tick() => send(&client, &url, &resource, &mut batch, &counters).await,
            }
        }
    }

    /// POSTs the batch; retries a retryable failure (connection, 429, 502-504) twice with a
    /// short pause, then drops it with a warning: traces are best-effort.
    async fn send(
        client: &reqwest::Client,
        url: &str,
        resource: &[u8],
        batch: &mut Vec<SpanData>,
        counters: &Counters,
    ) {
        if batch.is_empty() {
            return;
        }
        let body = encode_request(resource, batch);
        let n = batch.len() as u64;
        batch.clear();
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let res = client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    counters.exported.inc_by(n);
                    return;
                }
                Ok(r) => {
                    let s = r.status().as_u16();
                    last = format!("the collector answered {s}");
                    if !matches!(s, 429 | 502..=504) {
                        break;
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        counters.dropped.inc_by(n);
        tracing::warn!(spans = n, error = %last, "OTLP export failed; spans dropped");
    }

    // --- protobuf encoding -------------------------------------------------------------

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        tag(out, field, 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
        tag(out, field, 1);
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
        tag(out, field, 5);
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
        tag(out, field, 0);
        varint(out, v);
    }

    /// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1; int_value = 3 }`.
    fn key_value(out: &mut Vec<u8>, field: u32, key: &str, v: &Attr) {
        let mut any = Vec::new();
        match v {
            Attr::Str(s) => bytes(&mut any, 1, s.as_bytes()),
            // int64 as a varint: two's complement for negatives, as protobuf does.
            Attr::Int(i) => uint(&mut any, 3, *i as u64),
        }
        let mut kv = Vec::new();
        bytes(&mut kv, 1, key.as_bytes());
        bytes(&mut kv, 2, &any);
        bytes(out, field, &kv);
    }

    /// `Resource { repeated KeyValue attributes = 1 }`.
    fn resource(service: &str) -> Vec<u8> {
        let mut r = Vec::new();
        key_value(&mut r, 1, "service.name", &Attr::Str(service.to_string()));
        key_value(
            &mut r,
            1,
            "service.version",
            &Attr::Str(env!("CARGO_PKG_VERSION").to_string()),
        );
        key_value(
            &mut r,
            1,
            "telemetry.sdk.name",
            &Attr::Str("fluxbase".to_string()),
        );
        r
    }

    /// `Span`: trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6, start 7, end 8,
    /// attributes 9, status 15 (`Status { message = 2; code = 3 }`), flags 16.
    fn span(out: &mut Vec<u8>, s: &SpanData) {
        let mut b = Vec::with_capacity(256);
        bytes(&mut b, 1, &s.trace_id);
        bytes(&mut b, 2, &s.span_id);
        if let Some(p) = &s.parent {
            bytes(&mut b, 4, p);
        }
        bytes(&mut b, 5, s.name.as_bytes());
        uint(&mut b, 6, s.kind as u64);
        fixed64(&mut b, 7, s.start_ns);
        fixed64(&mut b, 8, s.end_ns.max(s.start_ns));
        for (k, v) in &s.attrs {
            key_value(&mut b, 9, k, v);
        }
        if let Some(msg) = &s.error {
            let mut st = Vec::new();
            bytes(&mut st, 2, msg.as_bytes());
            uint(&mut st, 3, 2); // STATUS_CODE_ERROR
            bytes(&mut b, 15, &st);
        }
        // Trace flags: sampled (every exported span was sampled).
        fixed32(&mut b, 16, 1);
        bytes(out, 2, &b);
    }

    /// `ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }`,
    /// `ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }`,
    /// `ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2 }`.
    pub(super) fn encode_request(resource: &[u8], spans: &[SpanData]) -> Vec<u8> {
        let mut scope = Vec::new();
        bytes(&mut scope, 1, b"fluxbase");
        bytes(&mut scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
        let mut scope_spans = Vec::with_capacity(spans.len() * 200);
        bytes(&mut scope_spans, 1, &scope);
        for s in spans {
            span(&mut scope_spans, s);
        }
        let mut rs = Vec::with_capacity(scope_spans.len() + resource.len() + 16);
        bytes(&mut rs, 1, resource);
        bytes(&mut rs, 2, &scope_spans);
        let mut req = Vec::with_capacity(rs.len() + 8);
        bytes(&mut req, 1, &rs);
        req
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn varints_and_fields_encode_as_protobuf_does() {
            let mut v = Vec::new();
            varint(&mut v, 300);
            assert_eq!(v, [0xac, 0x02]);
            let mut v = Vec::new();
            uint(&mut v, 6, 2);
            assert_eq!(v, [0x30, 0x02]);
            let mut v = Vec::new();
            fixed64(&mut v, 7, 1);
            assert_eq!(v, [0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
            let mut v = Vec::new();
            key_value(&mut v, 9, "a", &Attr::Int(-1));
            // KeyValue{key "a", value AnyValue{int_value -1 (10-byte varint)}}
            assert_eq!(v[0], 0x4a);
            assert_eq!(&v[2..5], &[0x0a, 0x01, b'a']);
            assert_eq!(v.len(), 2 + 3 + 2 + 11);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_per_w3c() {
        let p =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.parent_id), "00f067aa0ba902b7");
        assert!(p.sampled);
        let p =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!p.sampled);
        // A future version may append fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }
}
