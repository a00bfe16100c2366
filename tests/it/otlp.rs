//! OTLP trace export against a receiver that decodes with opentelemetry-proto's own
//! generated classes (tests/python/otlp_receiver.py): request spans continue the caller's
//! W3C trace, statements are child spans, unsampled requests export nothing, and the
//! resource, headers and counters are right.

use crate::support::{eventually, venv, TestApp};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Receiver {
    port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
    child: Child,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver() -> Receiver {
    let mut child = Command::new(venv::bin("python"))
        .arg(venv::script("otlp_receiver.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port: u16 = first.trim().parse().unwrap_or_else(|_| panic!("{first:?}"));
    let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            l.lock().unwrap().push(serde_json::from_str(&line).unwrap());
        }
    });
    Receiver { port, lines, child }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";
const UNSAMPLED: &str = "0af7651916cd43dd8448eb211c80319c";

#[tokio::test]
async fn sampled_requests_are_exported_as_otlp_spans_with_statement_children() {
    let rx = receiver();
    let app = TestApp::spawn_with(|c| {
        c.otlp.endpoint = format!("http://127.0.0.1:{}", rx.port);
        c.otlp.service_name = "fluxbase-test".into();
        c.otlp.headers = vec!["X-Collector-Key: k1".into()];
        c.otlp.export_interval_ms = 100;
        // Only requests whose caller sampled them.
        c.otlp.sample_percent = 0;
    })
    .await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1);
             GRANT SELECT ON t TO anon; NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.state.schema.get().table("public", "t").is_some()
        })
        .await
    );
    let res = app
        .get("/rest/v1/t?select=id")
        .header("apikey", app.anon_key())
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Not sampled by the caller, nor by the 0 % ratio: nothing is exported.
    for tp in [
        Some(format!("00-{UNSAMPLED}-{CALLER}-00")),
        None,
        Some("garbage".to_string()),
    ] {
        let mut r = app.get("/rest/v1/t").header("apikey", app.anon_key());
        if let Some(tp) = tp {
            r = r.header("traceparent", tp);
        }
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    // A sampled 404 is exported too, and is not an error span (only 5xx are).
    let res = app
        .get("/rest/v1/nope")
        .header("apikey", app.anon_key())
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let tracer = app.state.otlp.clone().expect("the tracer runs");
    tracer.flush(Duration::from_secs(5)).await;
    let lines = rx.lines.clone();
    let ok = eventually(Duration::from_secs(10), || async {
        lines.lock().unwrap().len() >= 3
    })
    .await;
    let spans = lines.lock().unwrap().clone();
    assert!(ok, "{spans:#?}");
    assert!(spans.iter().all(|s| s.get("error").is_none()), "{spans:#?}");
    assert!(
        spans.iter().all(|s| s["trace_id"] == TRACE),
        "only the sampled trace is exported: {spans:#?}"
    );
    let server: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    assert_eq!(server.len(), 2, "{spans:#?}");
    let get = server
        .iter()
        .find(|s| s["attrs"]["http.response.status_code"] == 200)
        .unwrap();
    assert_eq!(get["parent"], CALLER);
    assert_eq!(get["name"], "GET /rest/v1/{tail}");
    assert_eq!(get["attrs"]["http.route"], "/rest/v1/{tail}");
    assert_eq!(get["attrs"]["http.request.method"], "GET");
    assert_eq!(get["attrs"]["url.path"], "/rest/v1/t");
    assert!(get["attrs"]["fluxbase.request_id"].as_str().unwrap().len() > 8);
    assert_eq!(get["status"], 0, "unset on success");
    assert_eq!(get["resource"]["service.name"], "fluxbase-test");
    assert_eq!(get["scope"], "fluxbase");
    assert_eq!(get["content_type"], "application/x-protobuf");
    assert_eq!(get["auth"], "k1");
    assert!(get["end"].as_u64().unwrap() >= get["start"].as_u64().unwrap());
    let missing = server
        .iter()
        .find(|s| s["attrs"]["http.response.status_code"] == 404)
        .unwrap();
    assert_eq!(missing["status"], 0, "a 404 is the client's error");
    // The statement of the GET: a CLIENT child of its server span, inside it in time.
    let children: Vec<&Value> = spans
        .iter()
        .filter(|s| s["kind"] == 3 && s["parent"] == get["span_id"])
        .collect();
    assert_eq!(children.len(), 1, "{spans:#?}");
    let stmt = children[0];
    assert_eq!(stmt["attrs"]["db.system.name"], "postgresql");
    assert_eq!(stmt["attrs"]["fluxbase.tx"], "read");
    assert!(stmt["attrs"]["db.query.text"]
        .as_str()
        .unwrap()
        .contains("\"public\".\"t\""));
    assert!(stmt["start"].as_u64() >= get["start"].as_u64());
    assert!(stmt["end"].as_u64() <= get["end"].as_u64());
    assert_eq!(tracer.dropped(), 0);
    assert!(tracer.exported() >= 3);
    let metrics = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fluxbase_otlp_spans_exported_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_otlp_config_is_refused_at_start() {
    let mut cfg = fluxbase::config::Config::default();
    cfg.otlp.endpoint = "ftp://collector".into();
    cfg.otlp.sample_percent = 101;
    cfg.otlp.headers = vec!["no colon".into()];
    let problems = cfg.validate().join("\n");
    assert!(
        problems.contains("`otlp.endpoint` must be an http(s) URL"),
        "{problems}"
    );
    assert!(problems.contains("`otlp.sample_percent`"), "{problems}");
    assert!(problems.contains("`otlp.headers`"), "{problems}");
}
