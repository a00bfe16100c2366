//! A fake auth hook endpoint (GoTrue's send-SMS / send-email HTTP hooks): a real HTTP server
//! that checks every request's Standard Webhooks signature itself (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.ts.body")>`,
//! computed here with the `hmac` crate, not with Fluxbase's signing code), records the
//! events whose signature holds, and answers as told (`Answer`).

#![allow(dead_code)]

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The signing secret Fluxbase is configured with (GoTrue's `v1,whsec_…` form).
pub const SECRET: &str = "v1,whsec_dGVzdC1ob29rLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm";

/// How the hook answers the next requests.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(u16, Value),
    /// Wait this long, then 200 `{}`.
    Slow(Duration),
}

struct Inner {
    events: Vec<Value>,
    bad_signatures: usize,
    answer: Answer,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeHook {
    /// `http://127.0.0.5:<port>/hook`
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeHook {
    /// Starts the server on 127.0.0.5 (a test allows exactly that address).
    pub fn start() -> FakeHook {
        let inner = Arc::new(Mutex::new(Inner {
            events: Vec::new(),
            bad_signatures: 0,
            answer: Answer::Json(200, serde_json::json!({})),
        }));
        let shared = inner.clone();
        let port = super::serve_fake("127.0.0.5", move |cfg| {
            cfg.app_data(web::Data::new(shared.clone()))
                .route("/hook", web::post().to(handle));
        });
        FakeHook {
            url: format!("http://127.0.0.5:{port}/hook"),
            inner,
        }
    }

    /// How the hook answers from now on.
    pub fn answer(&self, a: Answer) {
        self.inner.lock().unwrap().answer = a;
    }

    /// The events received with a valid signature.
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().unwrap().events.clone()
    }

    /// Requests refused for their signature.
    pub fn bad_signatures(&self) -> usize {
        self.inner.lock().unwrap().bad_signatures
    }
}

/// Whether the headers sign `body` with `SECRET`, per the Standard Webhooks spec.
fn signed(req: &HttpRequest, body: &[u8]) -> bool {
    let h = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, ts, sigs) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let Ok(t) = ts.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t).abs() > 300 || id.is_empty() {
        return false;
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("v1,whsec_"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    sigs.split(' ').any(|s| s == want)
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    inner: web::Data<Arc<Mutex<Inner>>>,
) -> HttpResponse {
    let json_body = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !signed(&req, &body) || !json_body {
        inner.lock().unwrap().bad_signatures += 1;
        return HttpResponse::Unauthorized().json(serde_json::json!({"error": "bad signature"}));
    }
    let answer = {
        let mut g = inner.lock().unwrap();
        g.events
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        g.answer.clone()
    };
    match answer {
        Answer::Json(status, v) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(v)
        }
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            HttpResponse::Ok().json(serde_json::json!({}))
        }
    }
}
