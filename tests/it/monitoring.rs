//! Monitoring endpoints: dependency health, metrics as JSON (and in Prometheus text after
//! traffic), the log ring with its filters, and the slow-query log.

use crate::support::TestApp;
use serde_json::Value;

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app
        .get(path)
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn health_lists_every_dependency_and_degrades() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let app = TestApp::spawn_with(|c| c.storage.local_path = root).await;
    // Realtime counts as healthy once its LISTEN connection is up (a deadline, not a timing).
    let rt = app.state.realtime.clone().unwrap();
    crate::support::eventually(std::time::Duration::from_secs(10), || {
        let rt = rt.clone();
        async move {
            rt.changes
                .listening
                .load(std::sync::atomic::Ordering::Acquire)
        }
    })
    .await;
    let (status, h) = get(&app, "/api/v1/monitoring/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok");
    for dep in ["database", "job_queue", "storage", "smtp", "realtime"] {
        assert_eq!(h["checks"][dep]["ok"], true, "{dep}: {h}");
    }
    assert!(h["checks"]["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(h["checks"]["storage"]["backend"], "local");
    assert_eq!(h["checks"]["smtp"]["configured"], false);
    assert!(h["checks"]["job_queue"]["lag_secs"].is_number());
    // An SMTP server that does not answer makes the instance degraded (503).
    let port = crate::support::free_port();
    let bad = TestApp::spawn_with(|c| {
        c.auth.smtp.host = "127.0.0.1".into();
        c.auth.smtp.port = port as u64;
    })
    .await;
    let (status, h) = get(&bad, "/api/v1/monitoring/health").await;
    assert_eq!(status, 503);
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["checks"]["smtp"]["ok"], false);
    assert_eq!(h["checks"]["database"]["ok"], true);
    // service_role only.
    let res = app
        .get("/api/v1/monitoring/health")
        .bearer_auth(app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn metrics_json_and_text_after_traffic() {
    let app = TestApp::spawn().await;
    app.db
        .client()
        .await
        .batch_execute("CREATE TABLE t (id int); NOTIFY pgrst, 'reload schema';")
        .await
        .unwrap();
    crate::support::eventually(std::time::Duration::from_secs(10), || async {
        app.state.schema.get().table("public", "t").is_some()
    })
    .await;
    for _ in 0..3 {
        let res = app
            .get("/rest/v1/t")
            .bearer_auth(app.service_key())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let (status, m) = get(&app, "/api/v1/monitoring/metrics").await;
    assert_eq!(status, 200);
    let families = m["metrics"].as_array().unwrap();
    let find = |n: &str| {
        families
            .iter()
            .find(|f| f["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    let http = find("fluxbase_http_requests_total");
    assert!(http["samples"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["labels"]["route"]
            .as_str()
            .unwrap()
            .starts_with("/rest/v1/")
            && s["value"].as_f64().unwrap() >= 3.0));
    let q = find("fluxbase_db_query_duration_seconds");
    assert!(q["samples"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["labels"]["kind"] == "read" && s["count"].as_u64().unwrap() >= 3));
    find("fluxbase_realtime_connections");
    find("fluxbase_db_pool_connections");
    let text = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "fluxbase_http_request_duration_seconds",
        "fluxbase_db_query_duration_seconds",
        "fluxbase_realtime_connections",
        "fluxbase_db_pool_connections",
    ] {
        assert!(text.contains(name), "{name} not in /metrics");
    }
}

#[tokio::test]
async fn logs_ring_filters_and_slow_queries() {
    let app = TestApp::spawn_with(|c| c.log.slow_query_ms = 1).await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION slow() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(0.05)';
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    crate::support::eventually(std::time::Duration::from_secs(10), || async {
        !app.state
            .schema
            .get()
            .functions("public", "slow")
            .is_empty()
    })
    .await;
    let res = app
        .http
        .post(app.url("/rest/v1/rpc/slow"))
        .header("x-request-id", "slow-req-1")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, l) = get(
        &app,
        "/api/v1/monitoring/logs?request_id=slow-req-1&level=warn",
    )
    .await;
    assert_eq!(status, 200);
    let lines = l["lines"].as_array().unwrap();
    let slow = lines
        .iter()
        .find(|x| x["message"] == "slow query")
        .unwrap_or_else(|| panic!("{l}"));
    assert_eq!(slow["level"], "WARN");
    assert_eq!(slow["target"], "fluxbase::metrics");
    assert!(slow["fields"]["ms"].as_u64().unwrap() >= 40);
    assert!(slow["fields"]["statement"]
        .as_str()
        .unwrap()
        .contains("slow"));
    assert_eq!(slow["fields"]["fingerprint"].as_str().unwrap().len(), 16);
    let (_, none) = get(
        &app,
        "/api/v1/monitoring/logs?request_id=slow-req-1&level=error",
    )
    .await;
    assert!(none["lines"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["level"] == "ERROR"));
    let (_, m) = get(
        &app,
        "/api/v1/monitoring/logs?module=fluxbase::metrics&limit=1",
    )
    .await;
    assert!(m["lines"].as_array().unwrap().len() <= 1);
    let res = app
        .get("/api/v1/monitoring/logs?level=loud")
        .bearer_auth(app.service_key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}
