//! A fake SMS provider: a real HTTP server that takes messages in the request shapes of
//! Twilio, MessageBird, Textlocal and Vonage and answers in each one's response shapes, each
//! under its own path prefix on one port (configure `api_url` as `<base>/<provider>`):
//!
//! | provider    | endpoint                                        | credentials checked                     |
//! |-------------|-------------------------------------------------|-----------------------------------------|
//! | twilio      | `POST /twilio/2010-04-01/Accounts/{sid}/Messages.json` | HTTP Basic `sid:token`, the SID in the path |
//! | messagebird | `POST /messagebird/messages`                    | `Authorization: AccessKey <key>`        |
//! | textlocal   | `POST /textlocal/send`                          | form `apikey`                           |
//! | vonage      | `POST /vonage/sms/json`                         | form `api_key` and `api_secret`         |
//! | twilio_verify | `POST /twilio_verify/v2/Services/{VA sid}/Verifications`, `…/VerificationCheck` | HTTP Basic `sid:token`, the service SID in the path |
//!
//! Twilio Verify makes its own 6-digit code per number (recorded as a message "Your
//! verification code is …"); `VerificationCheck` answers `approved` for that code (and forgets
//! it), `pending` for a wrong one, and 404 when no verification is pending, as Twilio does.
//!
//! Every accepted message is recorded; a test reads it (and the code in it) with `wait_for`,
//! and a client suite with `GET /messages?to=<digits>`, which answers the recorded messages as
//! JSON. Bad credentials or a malformed request get the provider's own error answer and are
//! listed in `refusals`. A `Mode` makes the provider fail with 500 (then recover) or answer
//! slowly.

#![allow(dead_code)]

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Twilio account SID Fluxbase must use.
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Twilio auth token.
pub const TWILIO_TOKEN: &str = "twilio-test-token";
/// Twilio messaging service SID (`From`).
pub const TWILIO_FROM: &str = "MG0123456789abcdef0123456789abcdef";
/// MessageBird access key.
pub const MESSAGEBIRD_KEY: &str = "messagebird-test-key";
/// Textlocal API key.
pub const TEXTLOCAL_KEY: &str = "textlocal-test-key";
/// Vonage API key.
pub const VONAGE_KEY: &str = "vonage-key";
/// Vonage API secret.
pub const VONAGE_SECRET: &str = "vonage-secret";
/// Twilio Verify service SID.
pub const TWILIO_VERIFY_SID: &str = "VA0123456789abcdef0123456789abcdef";
/// The sender name configured for the providers that take one.
pub const SENDER: &str = "Fluxbase";

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Sms {
    /// Which provider API took it.
    pub provider: String,
    /// The recipient as the provider received it (`+15550100`, `whatsapp:+1…`, digits).
    pub to: String,
    /// The sender field.
    pub from: String,
    /// The text.
    pub body: String,
    /// Every form field.
    pub form: HashMap<String, String>,
}

impl Sms {
    /// The recipient's digits.
    pub fn digits(&self) -> String {
        self.to.chars().filter(char::is_ascii_digit).collect()
    }

    /// The first run of 6 or more digits in the text: the code.
    pub fn code(&self) -> String {
        self.body
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() >= 6)
            .expect("a code in the SMS")
            .to_string()
    }
}

/// How the provider behaves on the next messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accept every well-formed, authenticated message.
    Accept,
    /// Answer the next `n` messages with 500, then accept.
    Fail(usize),
    /// Wait this long before answering (and accept).
    Slow(Duration),
}

struct Inner {
    messages: Vec<Sms>,
    mode: Mode,
    attempts: usize,
    refusals: Vec<String>,
    /// Twilio Verify: the pending code per `To`.
    pending: HashMap<String, String>,
    /// Twilio Verify checks: (`To`, `Code`, approved).
    checks: Vec<(String, String, bool)>,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeSms {
    /// `http://127.0.0.4:<port>`
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSms {
    /// Starts the server on 127.0.0.4 (a test allows exactly that address).
    pub fn start() -> FakeSms {
        let inner = Arc::new(Mutex::new(Inner {
            messages: Vec::new(),
            mode: Mode::Accept,
            attempts: 0,
            refusals: Vec::new(),
            pending: HashMap::new(),
            checks: Vec::new(),
        }));
        let shared = inner.clone();
        let port = super::serve_fake("127.0.0.4", move |cfg| {
            cfg.app_data(web::Data::new(shared.clone()))
                .default_service(web::to(handle));
        });
        FakeSms {
            base: format!("http://127.0.0.4:{port}"),
            inner,
        }
    }

    /// Points `cfg` at this fake as `provider`, with the credentials it checks.
    pub fn configure(&self, cfg: &mut fluxbase::config::SmsConfig, provider: &str) {
        use fluxbase::config::Secret;
        cfg.provider = provider.into();
        let url = format!("{}/{provider}", self.base);
        match provider {
            "twilio" => {
                cfg.twilio.account_sid = TWILIO_SID.into();
                cfg.twilio.auth_token = Some(Secret::new(TWILIO_TOKEN));
                cfg.twilio.message_service_sid = TWILIO_FROM.into();
                cfg.twilio.api_url = url;
            }
            "messagebird" => {
                cfg.messagebird.access_key = Some(Secret::new(MESSAGEBIRD_KEY));
                cfg.messagebird.originator = SENDER.into();
                cfg.messagebird.api_url = url;
            }
            "textlocal" => {
                cfg.textlocal.api_key = Some(Secret::new(TEXTLOCAL_KEY));
                cfg.textlocal.sender = SENDER.into();
                cfg.textlocal.api_url = url;
            }
            "twilio_verify" => {
                cfg.twilio_verify.account_sid = TWILIO_SID.into();
                cfg.twilio_verify.auth_token = Some(Secret::new(TWILIO_TOKEN));
                cfg.twilio_verify.message_service_sid = TWILIO_VERIFY_SID.into();
                cfg.twilio_verify.api_url = url;
            }
            "vonage" => {
                cfg.vonage.api_key = VONAGE_KEY.into();
                cfg.vonage.api_secret = Some(Secret::new(VONAGE_SECRET));
                cfg.vonage.from = SENDER.into();
                cfg.vonage.api_url = url;
            }
            other => panic!("no fake for {other}"),
        }
    }

    /// How the provider behaves from now on.
    pub fn set_mode(&self, m: Mode) {
        self.inner.lock().unwrap().mode = m;
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<Sms> {
        self.inner.lock().unwrap().messages.clone()
    }

    /// Requests that reached an endpoint (accepted, refused or failed on purpose).
    pub fn attempts(&self) -> usize {
        self.inner.lock().unwrap().attempts
    }

    /// Twilio Verify checks so far: (`To`, `Code`, approved).
    pub fn checks(&self) -> Vec<(String, String, bool)> {
        self.inner.lock().unwrap().checks.clone()
    }

    /// Why requests were refused (empty when all were well-formed and authenticated).
    pub fn refusals(&self) -> Vec<String> {
        self.inner.lock().unwrap().refusals.clone()
    }

    /// Waits for the `n`-th message (1-based) to the number with these digits.
    pub async fn wait_for(&self, digits: &str, n: usize) -> Sms {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found: Vec<Sms> = self
                .messages()
                .into_iter()
                .filter(|m| m.digits() == digits)
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no SMS #{n} to {digits}; have {:?}; refusals {:?}",
                self.messages(),
                self.refusals()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn form_of(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn basic(req: &HttpRequest) -> Option<(String, String)> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(h.strip_prefix("Basic ")?)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    inner: web::Data<Arc<Mutex<Inner>>>,
) -> HttpResponse {
    let path = req.path().to_string();
    if req.method() == actix_web::http::Method::GET && path == "/messages" {
        let q: HashMap<String, String> = form_of(req.query_string().as_bytes());
        let list: Vec<Value> = inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| q.get("to").is_none_or(|t| *t == m.digits()))
            .map(|m| json!({"provider": m.provider, "to": m.to, "body": m.body, "code": m.code()}))
            .collect();
        return HttpResponse::Ok().json(list);
    }
    let provider = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let form = form_of(&body);
    let mode = {
        let mut g = inner.lock().unwrap();
        g.attempts += 1;
        let m = g.mode;
        if let Mode::Fail(n) = m {
            g.mode = if n > 1 {
                Mode::Fail(n - 1)
            } else {
                Mode::Accept
            };
        }
        m
    };
    match mode {
        Mode::Fail(_) => {
            return HttpResponse::InternalServerError()
                .json(json!({"message": "temporarily unavailable"}))
        }
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Accept => {}
    }
    let refuse = |why: String, resp: HttpResponse| {
        inner
            .lock()
            .unwrap()
            .refusals
            .push(format!("{provider}: {why}"));
        resp
    };
    let f = |k: &str| form.get(k).cloned().unwrap_or_default();
    if provider == "twilio_verify" {
        return verify(&req, &path, &form, &inner).await;
    }
    let (to, from, text) = match provider.as_str() {
        "twilio" => {
            let want = format!("/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json");
            if path != want || basic(&req) != Some((TWILIO_SID.into(), TWILIO_TOKEN.into())) {
                return refuse(
                    format!("bad path or credentials on {path}"),
                    HttpResponse::Unauthorized().json(
                        json!({"code": 20003, "message": "Authentication Error - invalid username",
                        "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}),
                    ),
                );
            }
            let to = f("To");
            let number = to.trim_start_matches("whatsapp:");
            let whatsapp = to.starts_with("whatsapp:");
            if !number.starts_with('+')
                || f("Body").is_empty()
                || whatsapp != f("From").starts_with("whatsapp:")
            {
                return refuse(
                    format!("bad message {form:?}"),
                    HttpResponse::BadRequest().json(json!({"code": 21211, "message": format!("The 'To' number {to} is not a valid phone number."),
                        "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})),
                );
            }
            (to, f("From"), f("Body"))
        }
        "messagebird" => {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            if path != "/messagebird/messages" || auth != format!("AccessKey {MESSAGEBIRD_KEY}") {
                return refuse(
                    format!("bad path or credentials on {path}"),
                    HttpResponse::Unauthorized().json(json!({"errors": [{"code": 2,
                        "description": "Request not allowed (incorrect access_key)", "parameter": "access_key"}]})),
                );
            }
            if f("recipients").is_empty()
                || f("body").is_empty()
                || f("originator").is_empty()
                || f("type") != "sms"
            {
                return refuse(
                    format!("bad message {form:?}"),
                    HttpResponse::UnprocessableEntity().json(json!({"errors": [{"code": 9,
                        "description": "no (correct) recipients found", "parameter": "recipients"}]})),
                );
            }
            (f("recipients"), f("originator"), f("body"))
        }
        "textlocal" => {
            if path != "/textlocal/send" || f("apikey") != TEXTLOCAL_KEY {
                return refuse(
                    format!("bad path or credentials on {path}"),
                    HttpResponse::Ok().json(json!({"errors": [{"code": 3, "message": "Invalid login details"}], "status": "failure"})),
                );
            }
            if f("numbers").is_empty() || f("message").is_empty() || f("sender").is_empty() {
                return refuse(
                    format!("bad message {form:?}"),
                    HttpResponse::Ok().json(json!({"errors": [{"code": 4, "message": "No recipients specified"}], "status": "failure"})),
                );
            }
            (f("numbers"), f("sender"), f("message"))
        }
        "vonage" => {
            if path != "/vonage/sms/json"
                || f("api_key") != VONAGE_KEY
                || f("api_secret") != VONAGE_SECRET
            {
                return refuse(
                    format!("bad path or credentials on {path}"),
                    HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]})),
                );
            }
            if f("to").is_empty() || f("text").is_empty() || f("from").is_empty() {
                return refuse(
                    format!("bad message {form:?}"),
                    HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"status": "2", "error-text": "Missing to param"}]})),
                );
            }
            (f("to"), f("from"), f("text"))
        }
        _ => return HttpResponse::NotFound().finish(),
    };
    let n = {
        let mut g = inner.lock().unwrap();
        g.messages.push(Sms {
            provider: provider.clone(),
            to: to.clone(),
            from: from.clone(),
            body: text.clone(),
            form: form.clone(),
        });
        g.messages.len()
    };
    let id = format!("{provider}-msg-{n}");
    match provider.as_str() {
        "twilio" => HttpResponse::Created().json(json!({"sid": format!("SM{n:032}"), "status": "queued", "to": to, "from": from,
            "body": text, "error_code": null, "error_message": null, "account_sid": TWILIO_SID})),
        "messagebird" => HttpResponse::Created().json(json!({"id": id, "originator": from, "body": text, "type": "sms",
            "recipients": {"totalCount": 1, "totalSentCount": 1, "totalDeliveredCount": 0, "totalDeliveryFailedCount": 0,
                "items": [{"recipient": to.parse::<u64>().unwrap_or(0), "status": "sent"}]}})),
        "textlocal" => HttpResponse::Ok().json(json!({"balance": 1162, "batch_id": 123456789, "cost": 1, "num_messages": 1,
            "message": {"num_parts": 1, "sender": from, "content": text},
            "messages": [{"id": n, "recipient": to.parse::<u64>().unwrap_or(0)}], "status": "success"})),
        _ => HttpResponse::Ok().json(json!({"message-count": "1", "messages": [{"to": to, "message-id": id, "status": "0",
            "remaining-balance": "3.14159265", "message-price": "0.03330000", "network": "12345"}]})),
    }
}

/// Twilio Verify's two endpoints.
async fn verify(
    req: &HttpRequest,
    path: &str,
    form: &HashMap<String, String>,
    inner: &Mutex<Inner>,
) -> HttpResponse {
    let f = |k: &str| form.get(k).cloned().unwrap_or_default();
    let prefix = format!("/twilio_verify/v2/Services/{TWILIO_VERIFY_SID}/");
    let mut g = inner.lock().unwrap();
    let Some(op) = path.strip_prefix(&prefix) else {
        g.refusals.push(format!("twilio_verify: bad path {path}"));
        return HttpResponse::NotFound().json(json!({"code": 20404, "status": 404,
            "message": format!("The requested resource {path} was not found"),
            "more_info": "https://www.twilio.com/docs/errors/20404"}));
    };
    if basic(req) != Some((TWILIO_SID.into(), TWILIO_TOKEN.into())) {
        g.refusals.push("twilio_verify: bad credentials".into());
        return HttpResponse::Unauthorized().json(json!({"code": 20003, "status": 401,
            "message": "Authentication Error - invalid username",
            "more_info": "https://www.twilio.com/docs/errors/20003"}));
    }
    let to = f("To");
    if !to.starts_with('+') || to.len() < 3 {
        g.refusals.push(format!("twilio_verify: bad To {to:?}"));
        return HttpResponse::BadRequest().json(json!({"code": 60200, "status": 400,
            "message": "Invalid parameter `To`", "more_info": "https://www.twilio.com/docs/errors/60200"}));
    }
    match op {
        "Verifications" => {
            let channel = f("Channel");
            if !["sms", "whatsapp", "call"].contains(&channel.as_str()) {
                g.refusals
                    .push(format!("twilio_verify: bad Channel {channel:?}"));
                return HttpResponse::BadRequest().json(json!({"code": 60200, "status": 400,
                    "message": "Invalid parameter `Channel`"}));
            }
            let code = format!("{:06}", rand::random::<u32>() % 1_000_000);
            g.pending.insert(to.clone(), code.clone());
            g.messages.push(Sms {
                provider: "twilio_verify".into(),
                to: to.clone(),
                from: TWILIO_VERIFY_SID.into(),
                body: format!("Your verification code is: {code}"),
                form: form.clone(),
            });
            let n = g.messages.len();
            HttpResponse::Created().json(json!({"sid": format!("VE{n:032}"), "service_sid": TWILIO_VERIFY_SID,
                "account_sid": TWILIO_SID, "to": to, "channel": channel, "status": "pending", "valid": false}))
        }
        "VerificationCheck" => {
            let code = f("Code");
            let Some(want) = g.pending.get(&to).cloned() else {
                g.checks.push((to, code, false));
                return HttpResponse::NotFound().json(json!({"code": 20404, "status": 404,
                    "message": format!("The requested resource /Services/{TWILIO_VERIFY_SID}/VerificationCheck was not found"),
                    "more_info": "https://www.twilio.com/docs/errors/20404"}));
            };
            let approved = want == code;
            if approved {
                g.pending.remove(&to);
            }
            g.checks.push((to.clone(), code, approved));
            HttpResponse::Ok().json(
                json!({"sid": "VE0", "service_sid": TWILIO_VERIFY_SID, "to": to,
                "status": if approved { "approved" } else { "pending" }, "valid": approved}),
            )
        }
        other => HttpResponse::NotFound().json(json!({"code": 20404, "status": 404,
            "message": format!("The requested resource {other} was not found")})),
    }
}
