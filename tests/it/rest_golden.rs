//! The golden corpus of `tests/it/rest/golden/`: requests and the answers PostgREST's
//! documentation gives for them (status, a subset of headers, the body), one file per area,
//! run against a real app on a real Postgres with the fixture schema of `fixture.sql`.
//!
//! Each file gets a fresh database; its cases run in order (a write case may be followed by
//! a read that checks it). A case that fails is reported with its name, the doc section it
//! comes from, and the expected and actual answers. A case marked `known_divergence` is run
//! and reported but does not fail the test while it still diverges; once it passes, the
//! marker is stale and the test fails so that the corpus and `docs/compatibility.md` are
//! updated.
//!
//! Case format (JSON):
//! `{"name", "doc", "method", "path", "headers": {..}, "role": "anon"|"service_role"|"authenticated"|"none",
//!   "body": <json> | "body_text": "<raw>",
//!   "expect": {"status", "headers": {name: value|null}, "body", "match"},
//!   "known_divergence": "<why>"}`
//! Body matchers (`match`): `exact` (default: JSON equality), `unordered` (arrays equal as
//! multisets), `keys_only` (`body` is a list of keys; the answer is an object with exactly
//! these keys, or an array of such objects), `subset` (every key of the expected object has
//! that value in the answer; used for error bodies whose message the doc does not fix),
//! `text` (the raw body text), `prefix` (the raw body text starts with `body`; execution
//! plans, whose costs vary), `empty` (no body). Expected headers are compared by value;
//! `content-type` only by its media type (before `;`); `null` means the header is absent.

use crate::support::TestApp;
use serde_json::Value;
use std::fmt::Write as _;

const FIXTURE: &str = include_str!("rest/golden/fixture.sql");

struct Outcome {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

async fn app_for(file: &Value) -> TestApp {
    let cfg = file.get("config").cloned().unwrap_or(Value::Null);
    let app = TestApp::spawn_with(|c| {
        if let Some(m) = cfg.get("max_rows").and_then(Value::as_u64) {
            c.rest.max_rows = m;
        }
        if let Some(p) = cfg.get("plan_enabled").and_then(Value::as_bool) {
            c.rest.plan_enabled = p;
        }
        if let Some(s) = cfg.get("schemas").and_then(Value::as_array) {
            c.rest.schemas = s.iter().map(|v| v.as_str().unwrap().to_string()).collect();
        }
    })
    .await;
    app.db.client().await.batch_execute(FIXTURE).await.unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let s = app.state.schema.get();
        s.table("public", "golden_ready").is_some() && !s.functions("public", "add_them").is_empty()
    })
    .await;
    assert!(ok, "schema cache never saw the golden fixture");
    app
}

async fn send(app: &TestApp, case: &Value) -> Outcome {
    let method = case["method"].as_str().unwrap_or("GET");
    let path = case["path"].as_str().expect("case without path");
    let mut rb = app.http.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        app.url(path),
    );
    match case.get("role").and_then(Value::as_str).unwrap_or("anon") {
        "anon" => rb = rb.header("apikey", app.anon_key()),
        "service_role" => rb = rb.header("apikey", app.service_key()),
        "authenticated" => {
            let t = app.token(serde_json::json!({
                "role": "authenticated",
                "sub": "00000000-0000-4000-8000-000000000001"
            }));
            rb = rb.header("apikey", app.anon_key()).bearer_auth(t);
        }
        "none" => {}
        other => panic!("unknown role {other}"),
    }
    let mut has_type = false;
    if let Some(h) = case.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            has_type |= k.eq_ignore_ascii_case("content-type");
            rb = rb.header(k.as_str(), v.as_str().unwrap());
        }
    }
    if let Some(t) = case.get("body_text").and_then(Value::as_str) {
        rb = rb.body(t.to_string());
    } else if let Some(b) = case.get("body") {
        if !has_type {
            rb = rb.header("Content-Type", "application/json");
        }
        rb = rb.body(b.to_string());
    }
    let r = rb.send().await.unwrap();
    Outcome {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

fn multiset_eq(a: &[Value], b: &[Value]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut left: Vec<&Value> = b.iter().collect();
    for x in a {
        match left.iter().position(|y| *y == x) {
            Some(i) => {
                left.swap_remove(i);
            }
            None => return false,
        }
    }
    true
}

fn keys_are(v: &Value, keys: &[String]) -> bool {
    match v {
        Value::Object(o) => {
            let mut got: Vec<&String> = o.keys().collect();
            got.sort();
            let mut want: Vec<&String> = keys.iter().collect();
            want.sort();
            got == want
        }
        _ => false,
    }
}

/// Why the answer does not match, or `None` when it does.
fn mismatch(expect: &Value, got: &Outcome) -> Option<String> {
    let mut why = String::new();
    if let Some(s) = expect.get("status").and_then(Value::as_u64) {
        if u64::from(got.status) != s {
            let _ = writeln!(why, "status {} (expected {s})", got.status);
        }
    }
    if let Some(h) = expect.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            let actual = got.headers.get(k.as_str()).and_then(|x| x.to_str().ok());
            let ok = match (v.as_str(), actual) {
                (None, None) => true,
                (Some(want), Some(a)) if k.eq_ignore_ascii_case("content-type") => {
                    a.split(';').next().unwrap_or("").trim() == want
                }
                (Some(want), Some(a)) => a == want,
                _ => false,
            };
            if !ok {
                let _ = writeln!(why, "header {k}: {actual:?} (expected {v})");
            }
        }
    }
    let matcher = expect
        .get("match")
        .and_then(Value::as_str)
        .unwrap_or("exact");
    let parsed: Option<Value> = serde_json::from_str(&got.text).ok();
    let body_ok = match (matcher, expect.get("body")) {
        ("empty", _) => got.text.is_empty(),
        ("text", Some(Value::String(t))) => got.text == *t,
        ("prefix", Some(Value::String(t))) => got.text.starts_with(t.as_str()),
        (_, None) => true,
        ("exact", Some(b)) => parsed.as_ref() == Some(b),
        ("unordered", Some(Value::Array(b))) => {
            matches!(&parsed, Some(Value::Array(a)) if multiset_eq(a, b))
        }
        ("keys_only", Some(Value::Array(keys))) => {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect();
            match &parsed {
                Some(Value::Array(rows)) => {
                    !rows.is_empty() && rows.iter().all(|r| keys_are(r, &keys))
                }
                Some(o @ Value::Object(_)) => keys_are(o, &keys),
                _ => false,
            }
        }
        ("subset", Some(Value::Object(want))) => match &parsed {
            Some(Value::Object(o)) => want.iter().all(|(k, v)| o.get(k) == Some(v)),
            _ => false,
        },
        (m, _) => panic!("bad matcher {m}"),
    };
    if !body_ok {
        let _ = writeln!(why, "body does not match ({matcher})");
    }
    (!why.is_empty()).then_some(why)
}

fn describe(got: &Outcome) -> String {
    let mut hs: Vec<String> = got
        .headers
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "content-type"
                    | "content-range"
                    | "preference-applied"
                    | "location"
                    | "content-profile"
                    | "content-location"
            )
        })
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
        .collect();
    hs.sort();
    format!(
        "  actual:   {} {{{}}} {}",
        got.status,
        hs.join(", "),
        got.text
    )
}

async fn run(name: &str, src: &str) {
    let file: Value = serde_json::from_str(src).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    let app = app_for(&file).await;
    let cases = file["cases"].as_array().expect("cases");
    let (mut passed, mut failures, mut known, mut stale) = (0, Vec::new(), Vec::new(), Vec::new());
    for case in cases {
        let cname = case["name"].as_str().expect("case name");
        let got = send(&app, case).await;
        let verdict = mismatch(&case["expect"], &got);
        let divergence = case.get("known_divergence").and_then(Value::as_str);
        let report = |why: &str| {
            format!(
                "{name}::{cname} ({})\n  request:  {} {}\n  expected: {}\n{}\n  {}",
                case["doc"].as_str().unwrap_or("?"),
                case["method"].as_str().unwrap_or("GET"),
                case["path"].as_str().unwrap_or(""),
                case["expect"],
                describe(&got),
                why.trim_end().replace('\n', "\n  ")
            )
        };
        match (verdict, divergence) {
            (None, None) => passed += 1,
            (None, Some(_)) => stale.push(report("passes: remove known_divergence")),
            (Some(why), None) => failures.push(report(&why)),
            (Some(why), Some(d)) => {
                known.push(format!("{}\n  known divergence: {d}", report(&why)))
            }
        }
    }
    eprintln!(
        "golden {name}: {} cases, {passed} pass, {} known divergences, {} fail, {} stale",
        cases.len(),
        known.len(),
        failures.len(),
        stale.len()
    );
    for k in &known {
        eprintln!("KNOWN DIVERGENCE {k}\n");
    }
    let bad: Vec<String> = failures.into_iter().chain(stale).collect();
    assert!(
        bad.is_empty(),
        "{} golden case(s) failed:\n\n{}",
        bad.len(),
        bad.join("\n\n")
    );
}

macro_rules! golden {
    ($($test:ident => $file:literal),* $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            run($file, include_str!(concat!("rest/golden/", $file))).await;
        }
    )*};
}

golden! {
    filters => "filters.json",
    select => "select.json",
    embedding => "embedding.json",
    ranges => "ranges.json",
    writes => "writes.json",
    rpc => "rpc.json",
    prefer => "prefer.json",
    media => "media.json",
    errors => "errors.json",
    limits => "limits.json",
    plan => "plan.json",
}
