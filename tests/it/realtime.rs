//! Realtime over real websockets (tokio-tungstenite): the Phoenix protocol in both versions,
//! binary broadcast frames, heartbeats and bad frames, broadcast, presence, postgres_changes
//! (filters, RLS, large rows, enable/disable), private channels, REST and SQL broadcasts,
//! token expiry, fan-out between two instances on one database, the process's one LISTEN
//! connection and its recovery, and numbers past f64 in payloads.

use crate::support::TestApp;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw Phoenix client: sends frames of its version, reads frames with a deadline.
struct Client {
    ws: Ws,
    v2: bool,
    next_ref: u64,
}

/// A decoded frame.
#[derive(Debug, Clone)]
enum In {
    Msg {
        join_ref: Value,
        msg_ref: Value,
        topic: String,
        event: String,
        payload: Value,
    },
    /// kind 4: topic, event, encoding, payload bytes
    Bin(String, String, u8, Vec<u8>),
}

impl In {
    fn event(&self) -> &str {
        match self {
            In::Msg { event, .. } => event,
            In::Bin(..) => "broadcast(bin)",
        }
    }
    fn payload(&self) -> &Value {
        match self {
            In::Msg { payload, .. } => payload,
            In::Bin(..) => &Value::Null,
        }
    }
}

impl Client {
    async fn connect(app: &TestApp, key: &str, vsn: &str) -> Client {
        let url = format!(
            "{}/realtime/v1/websocket?apikey={key}&vsn={vsn}",
            app.base.replace("http://", "ws://")
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client {
            ws,
            v2: vsn == "2.0.0",
            next_ref: 1,
        }
    }

    async fn push(&mut self, topic: &str, event: &str, payload: Value) -> String {
        let r = self.next_ref.to_string();
        self.next_ref += 1;
        let text = if self.v2 {
            json!([r, r, topic, event, payload]).to_string()
        } else {
            json!({"join_ref": r, "ref": r, "topic": topic, "event": event, "payload": payload})
                .to_string()
        };
        self.ws.send(Message::Text(text.into())).await.unwrap();
        r
    }

    async fn raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next frame within `d`, or None.
    async fn recv_within(&mut self, d: Duration) -> Option<In> {
        loop {
            let m = tokio::time::timeout(d, self.ws.next()).await.ok()??.ok()?;
            match m {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    return Some(if self.v2 {
                        In::Msg {
                            join_ref: v[0].clone(),
                            msg_ref: v[1].clone(),
                            topic: v[2].as_str().unwrap().into(),
                            event: v[3].as_str().unwrap().into(),
                            payload: v[4].clone(),
                        }
                    } else {
                        In::Msg {
                            join_ref: v["join_ref"].clone(),
                            msg_ref: v["ref"].clone(),
                            topic: v["topic"].as_str().unwrap().into(),
                            event: v["event"].as_str().unwrap().into(),
                            payload: v["payload"].clone(),
                        }
                    });
                }
                Message::Binary(b) => {
                    assert_eq!(b[0], 4, "only kind 4 binary frames go to clients");
                    let (tl, el, ml, enc) = (b[1] as usize, b[2] as usize, b[3] as usize, b[4]);
                    let topic = String::from_utf8(b[5..5 + tl].to_vec()).unwrap();
                    let event = String::from_utf8(b[5 + tl..5 + tl + el].to_vec()).unwrap();
                    let body = b[5 + tl + el + ml..].to_vec();
                    return Some(In::Bin(topic, event, enc, body));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    async fn recv(&mut self) -> In {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")
    }

    /// Reads until a frame with this event arrives (skipping others).
    async fn until(&mut self, event: &str) -> In {
        loop {
            let f = self.recv().await;
            if f.event() == event {
                return f;
            }
        }
    }

    /// The reply to `r`.
    async fn reply(&mut self, r: &str) -> Value {
        loop {
            if let In::Msg {
                event,
                msg_ref,
                payload,
                ..
            } = self.recv().await
            {
                if event == "phx_reply" && msg_ref == json!(r) {
                    return payload;
                }
            }
        }
    }

    async fn join(&mut self, topic: &str, config: Value) -> Value {
        self.join_with(topic, json!({"config": config})).await
    }

    async fn join_with(&mut self, topic: &str, payload: Value) -> Value {
        let r = self.push(topic, "phx_join", payload).await;
        self.reply(&r).await
    }

    /// The text of the next text frame containing `needle`, unparsed (frames whose numbers
    /// serde_json cannot read as `f64` included).
    async fn text_until(&mut self, needle: &str) -> String {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(t) = m {
                if t.contains(needle) {
                    return t.to_string();
                }
            }
        }
    }

    /// Asserts nothing but heartbeat replies arrive for a while.
    async fn quiet(&mut self, d: Duration) {
        if let Some(f) = self.recv_within(d).await {
            panic!("expected silence, got {f:?}");
        }
    }
}

fn kind3(join_ref: &str, r: &str, topic: &str, event: &str, enc: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![
        3,
        join_ref.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        enc,
    ];
    for s in [join_ref, r, topic, event] {
        v.extend_from_slice(s.as_bytes());
    }
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn protocol_v2_heartbeat_join_leave_and_bad_frames() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let r = c.push("phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.reply(&r).await, json!({"status": "ok", "response": {}}));
    // Garbage, wrong-shaped frames and a binary frame of a server-only kind each get an
    // error reply (addressed as far as the frame tells) and the socket lives on.
    c.raw(Message::Text("not json".into())).await;
    c.raw(Message::Text(r#"{"topic":"x"}"#.into())).await;
    c.raw(Message::Text(r#"["5","6","realtime:q",7,{}]"#.into()))
        .await;
    c.raw(Message::Binary(vec![4u8, 0, 0, 0, 1].into())).await;
    for want_topic in ["phoenix", "phoenix", "realtime:q", "phoenix"] {
        let In::Msg {
            event,
            topic,
            payload,
            msg_ref,
            ..
        } = c.recv().await
        else {
            panic!("binary frame")
        };
        assert_eq!((event.as_str(), topic.as_str()), ("phx_reply", want_topic));
        assert_eq!(payload["status"], "error", "{payload}");
        assert!(payload["response"]["reason"].is_string(), "{payload}");
        if want_topic == "realtime:q" {
            assert_eq!(msg_ref, json!("6"));
        }
    }
    // Pushes to a topic the socket never joined are refused.
    let r = c
        .push(
            "realtime:nowhere",
            "broadcast",
            json!({"type":"broadcast","event":"e","payload":{}}),
        )
        .await;
    assert_eq!(
        c.reply(&r).await,
        json!({"status":"error","response":{"reason":"unmatched topic"}})
    );
    // Topics outside realtime: are refused at join.
    let reply = c.join("other:room", json!({})).await;
    assert_eq!(reply["status"], "error");
    let reply = c
        .join("realtime:room", json!({"broadcast": {"self": true}}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"ok","response":{"postgres_changes":[]}})
    );
    let r = c.push("realtime:room", "phx_leave", json!({})).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
    let close = c.until("phx_close").await;
    let In::Msg {
        topic, join_ref, ..
    } = close
    else {
        unreachable!()
    };
    assert_eq!(topic, "realtime:room");
    assert!(join_ref.is_string());
    // Still alive after all that.
    let r = c.push("phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
}

#[tokio::test]
async fn protocol_v1_frames_and_unknown_vsn() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, &app.anon_key(), "1.0.0").await;
    let r = c.push("phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.reply(&r).await, json!({"status": "ok", "response": {}}));
    let reply = c
        .join(
            "realtime:v1",
            json!({"broadcast": {"self": true, "ack": true}}),
        )
        .await;
    assert_eq!(reply["status"], "ok");
    let r = c
        .push(
            "realtime:v1",
            "broadcast",
            json!({"type":"broadcast","event":"hi","payload":{"n":1}}),
        )
        .await;
    let mut got_ack = false;
    let mut got_msg = false;
    while !(got_ack && got_msg) {
        match c.recv().await {
            In::Msg { event, msg_ref, .. } if event == "phx_reply" && msg_ref == json!(r) => {
                got_ack = true
            }
            In::Msg { event, payload, .. } if event == "broadcast" => {
                assert_eq!(
                    payload,
                    json!({"type":"broadcast","event":"hi","payload":{"n":1}})
                );
                got_msg = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // An unknown protocol version is refused before the upgrade.
    let url = format!(
        "{}/realtime/v1/websocket?vsn=9.9.9",
        app.base.replace("http://", "ws://")
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // A bad apikey too.
    let url = format!(
        "{}/realtime/v1/websocket?vsn=2.0.0&apikey=nope",
        app.base.replace("http://", "ws://")
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn broadcast_self_ack_and_binary_frames() {
    let app = TestApp::spawn().await;
    let key = app.anon_key();
    let mut a = Client::connect(&app, &key, "2.0.0").await;
    let mut b = Client::connect(&app, &key, "2.0.0").await;
    let mut v1 = Client::connect(&app, &key, "1.0.0").await;
    a.join(
        "realtime:chat",
        json!({"broadcast": {"self": false, "ack": true}}),
    )
    .await;
    b.join("realtime:chat", json!({"broadcast": {"self": true}}))
        .await;
    v1.join("realtime:chat", json!({})).await;
    let r = a
        .push(
            "realtime:chat",
            "broadcast",
            json!({"type":"broadcast","event":"msg","payload":{"text":"hi"}}),
        )
        .await;
    assert_eq!(a.reply(&r).await, json!({"status":"ok","response":{}}));
    let f = b.until("broadcast").await;
    assert_eq!(
        f.payload(),
        &json!({"type":"broadcast","event":"msg","payload":{"text":"hi"}})
    );
    assert_eq!(
        v1.until("broadcast").await.payload()["payload"]["text"],
        "hi"
    );
    // A kind-3 binary push (what realtime-js sends under vsn 2) reaches vsn 2 peers as kind 4
    // and vsn 1 peers as JSON.
    let frame = kind3("1", "99", "realtime:chat", "cursor", 1, br#"{"x":5}"#);
    b.raw(Message::Binary(frame.into())).await;
    match a.recv().await {
        In::Bin(topic, event, enc, body) => {
            assert_eq!(
                (topic.as_str(), event.as_str(), enc),
                ("realtime:chat", "cursor", 1)
            );
            assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap(),
                json!({"x":5})
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // b asked for self: it gets its own binary broadcast back.
    assert!(matches!(b.recv().await, In::Bin(_, e, _, _) if e == "cursor"));
    let f = v1.until("broadcast").await;
    assert_eq!(
        f.payload(),
        &json!({"type":"broadcast","event":"cursor","payload":{"x":5}})
    );
    // Raw binary payloads reach vsn 2 sockets untouched.
    let frame = kind3("1", "100", "realtime:chat", "blob", 0, &[0, 1, 2, 255]);
    b.raw(Message::Binary(frame.into())).await;
    assert!(
        matches!(a.recv().await, In::Bin(_, e, 0, body) if e == "blob" && body == vec![0, 1, 2, 255])
    );
    // a did not ask for self: nothing of its own came back.
    a.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn presence_state_diff_and_disconnect() {
    let app = TestApp::spawn().await;
    let key = app.anon_key();
    let mut a = Client::connect(&app, &key, "2.0.0").await;
    let mut b = Client::connect(&app, &key, "2.0.0").await;
    let cfg = |k: &str| json!({"presence": {"key": k, "enabled": true}});
    a.join("realtime:lobby", cfg("alice")).await;
    assert_eq!(a.until("presence_state").await.payload(), &json!({}));
    b.join("realtime:lobby", cfg("bob")).await;
    b.until("presence_state").await;
    let r = a
        .push(
            "realtime:lobby",
            "presence",
            json!({"type":"presence","event":"track","payload":{"status":"online"}}),
        )
        .await;
    assert_eq!(a.reply(&r).await["status"], "ok");
    let d = b.until("presence_diff").await;
    let metas = &d.payload()["joins"]["alice"]["metas"];
    assert_eq!(metas[0]["status"], "online");
    assert!(metas[0]["phx_ref"].is_string());
    // A later joiner sees alice in its presence_state.
    let mut c = Client::connect(&app, &key, "2.0.0").await;
    c.join("realtime:lobby", cfg("carol")).await;
    let s = c.until("presence_state").await;
    assert_eq!(s.payload()["alice"]["metas"][0]["status"], "online");
    // alice disconnects: the others see her leave.
    drop(a);
    let d = b.until("presence_diff").await;
    assert_eq!(
        d.payload()["leaves"]["alice"]["metas"][0]["status"],
        "online"
    );
    let d = c.until("presence_diff").await;
    assert!(d.payload()["leaves"]["alice"].is_object());
}

const TABLES: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text, qty int, body text);
GRANT ALL ON items TO anon, authenticated, service_role;
CREATE TABLE notes (id int PRIMARY KEY, owner uuid NOT NULL, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON notes FOR SELECT USING (owner = auth.uid());
GRANT ALL ON notes TO anon, authenticated, service_role;
ALTER PUBLICATION supabase_realtime ADD TABLE items, notes;
";

/// Waits until the app's LISTEN connection is up (a deadline, not a timing assertion):
/// changes committed before it would not be delivered.
async fn listening(app: &TestApp) {
    let rt = app.state.realtime.clone().unwrap();
    let up = crate::support::eventually(Duration::from_secs(10), || {
        let rt = rt.clone();
        async move {
            rt.changes
                .listening
                .load(std::sync::atomic::Ordering::Acquire)
        }
    })
    .await;
    assert!(up, "realtime listener never came up");
}

async fn pg_app() -> TestApp {
    let app = TestApp::spawn().await;
    listening(&app).await;
    app.db.client().await.batch_execute(TABLES).await.unwrap();
    app
}

fn change(f: &In) -> &Value {
    &f.payload()["data"]
}

#[tokio::test]
async fn postgres_changes_public_with_filters() {
    let app = pg_app().await;
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let reply = c
        .join(
            "realtime:db",
            json!({"postgres_changes": [
                {"event": "INSERT", "schema": "public", "table": "items", "filter": "qty=gt.5"},
                {"event": "*", "schema": "public", "table": "items"},
                {"event": "DELETE", "schema": "public"}
            ]}),
        )
        .await;
    assert_eq!(reply["status"], "ok");
    let bindings = reply["response"]["postgres_changes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(bindings.len(), 3);
    // Echoed in the client's order, with exactly the fields it sent.
    assert_eq!(bindings[0]["filter"], "qty=gt.5");
    assert_eq!(bindings[1]["event"], "*");
    assert!(bindings[2].get("table").is_none());
    let ids: Vec<u64> = bindings.iter().map(|b| b["id"].as_u64().unwrap()).collect();
    let sys = c.until("system").await;
    assert_eq!(sys.payload()["message"], "Subscribed to PostgreSQL");
    let db = app.db.client().await;
    db.batch_execute("INSERT INTO items VALUES (1, 'few', 2, 'x'), (2, 'many', 10, 'y')")
        .await
        .unwrap();
    let f = c.until("postgres_changes").await;
    assert_eq!(
        f.payload()["ids"],
        json!([ids[1]]),
        "qty 2 fails the filter"
    );
    let d = change(&f);
    assert_eq!(d["type"], "INSERT");
    assert_eq!(d["schema"], "public");
    assert_eq!(d["table"], "items");
    assert_eq!(
        d["record"],
        json!({"id": 1, "name": "few", "qty": 2, "body": "x"})
    );
    assert!(d.get("old_record").is_none());
    assert!(d["commit_timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(d["columns"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "qty", "type": "int4"})));
    let f = c.until("postgres_changes").await;
    let mut got: Vec<u64> = serde_json::from_value(f.payload()["ids"].clone()).unwrap();
    got.sort();
    let mut want = vec![ids[0], ids[1]];
    want.sort();
    assert_eq!(got, want);
    // UPDATE: old_record is the primary key under the default replica identity…
    db.batch_execute("UPDATE items SET name = 'lots' WHERE id = 2")
        .await
        .unwrap();
    let d = change(&c.until("postgres_changes").await).clone();
    assert_eq!(d["type"], "UPDATE");
    assert_eq!(d["record"]["name"], "lots");
    assert_eq!(d["old_record"], json!({"id": 2}));
    // …and the whole row under REPLICA IDENTITY FULL.
    db.batch_execute(
        "ALTER TABLE items REPLICA IDENTITY FULL; UPDATE items SET qty = 11 WHERE id = 2",
    )
    .await
    .unwrap();
    let d = change(&c.until("postgres_changes").await).clone();
    assert_eq!(d["old_record"]["qty"], 10);
    db.batch_execute("DELETE FROM items WHERE id = 1")
        .await
        .unwrap();
    let f = c.until("postgres_changes").await;
    let mut got: Vec<u64> = serde_json::from_value(f.payload()["ids"].clone()).unwrap();
    got.sort();
    let mut want = vec![ids[1], ids[2]];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(change(&f)["old_record"]["name"], "few");
    assert!(change(&f).get("record").is_none());
    // A rolled-back change is never delivered.
    db.batch_execute("BEGIN; INSERT INTO items VALUES (3, 'ghost', 50, ''); ROLLBACK")
        .await
        .unwrap();
    c.quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn postgres_changes_large_rows_are_delivered() {
    let app = pg_app().await;
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    c.join(
        "realtime:big",
        json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "items"}]}),
    )
    .await;
    c.until("system").await;
    let body = "x".repeat(20_000);
    let db = app.db.client().await;
    db.execute("INSERT INTO items VALUES (7, 'big', 1, $1)", &[&body])
        .await
        .unwrap();
    let d = change(&c.until("postgres_changes").await).clone();
    assert_eq!(d["record"]["body"].as_str().unwrap().len(), 20_000);
    assert_eq!(d["errors"], Value::Null);
    db.batch_execute("DELETE FROM items WHERE id = 7")
        .await
        .unwrap();
    let d = change(&c.until("postgres_changes").await).clone();
    assert_eq!(d["old_record"], json!({"id": 7}));
}

#[tokio::test]
async fn postgres_changes_respect_rls_per_subscriber() {
    let app = pg_app().await;
    rls_per_subscriber(&app, "notes").await;
}

/// The same check under a policy written as Supabase recommends, `(SELECT auth.uid())`:
/// Postgres evaluates that subquery once per statement (an InitPlan), so the check must not
/// evaluate several subscribers' claims in one statement there — each user still sees only
/// their own rows.
#[tokio::test]
async fn postgres_changes_respect_rls_with_subquery_policies() {
    let app = pg_app().await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE notes_sq (id int PRIMARY KEY, owner uuid NOT NULL, body text);
             ALTER TABLE notes_sq ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON notes_sq FOR SELECT USING ((SELECT auth.uid()) = owner);
             GRANT ALL ON notes_sq TO anon, authenticated, service_role;
             ALTER PUBLICATION supabase_realtime ADD TABLE notes_sq;",
        )
        .await
        .unwrap();
    rls_per_subscriber(&app, "notes_sq").await;
}

/// Three users each see exactly their rows of `table` (policy: owner is the caller), a
/// subscriber with claims that break the policy and an anonymous one (another role, checked
/// in the same call) see nothing and stop no one, and the service role sees every row in
/// commit order.
async fn rls_per_subscriber(app: &TestApp, table: &str) {
    let topic = format!("realtime:{table}");
    let binding = json!([{"event": "INSERT", "schema": "public", "table": table}]);
    let users: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut clients = Vec::new();
    for u in &users {
        let token = app.token(json!({"sub": u, "role": "authenticated"}));
        let mut c = Client::connect(app, &app.anon_key(), "2.0.0").await;
        let reply = c
            .join_with(
                &topic,
                json!({"config": {"postgres_changes": binding}, "access_token": token}),
            )
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        clients.push(c);
    }
    // A subscriber whose claims break the policy (sub is not a uuid): sees nothing, stops no one.
    let bad = app.token(json!({"sub": "not-a-uuid", "role": "authenticated"}));
    let mut broken = Client::connect(app, &bad, "2.0.0").await;
    broken
        .join(&topic, json!({"postgres_changes": binding}))
        .await;
    let mut anon = Client::connect(app, &app.anon_key(), "2.0.0").await;
    anon.join(&topic, json!({"postgres_changes": binding}))
        .await;
    let mut admin = Client::connect(app, &app.service_key(), "2.0.0").await;
    admin
        .join(&topic, json!({"postgres_changes": binding}))
        .await;
    for c in clients
        .iter_mut()
        .chain([&mut broken, &mut anon, &mut admin])
    {
        c.until("system").await;
    }
    let db = app.db.client().await;
    for (i, owner) in [0usize, 1, 0, 2, 1, 0].iter().enumerate() {
        db.execute(
            &format!("INSERT INTO {table} VALUES ($1, $2::text::uuid, 'n')"),
            &[&(i as i32), &users[*owner]],
        )
        .await
        .unwrap();
    }
    for (u, c) in clients.iter_mut().enumerate() {
        let expected: Vec<i64> = [0usize, 1, 0, 2, 1, 0]
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == u)
            .map(|(i, _)| i as i64)
            .collect();
        let mut seen = Vec::new();
        for _ in 0..expected.len() {
            let d = change(&c.until("postgres_changes").await).clone();
            assert_eq!(d["record"]["owner"], users[u]);
            seen.push(d["record"]["id"].as_i64().unwrap());
        }
        assert_eq!(seen, expected);
        c.quiet(Duration::from_millis(300)).await;
    }
    let mut all = Vec::new();
    for _ in 0..6 {
        all.push(
            change(&admin.until("postgres_changes").await)["record"]["id"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(
        all,
        vec![0, 1, 2, 3, 4, 5],
        "service_role sees every row, in commit order"
    );
    broken.quiet(Duration::from_millis(300)).await;
    anon.quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn join_refuses_unknown_tables_and_missing_privileges() {
    let app = pg_app().await;
    app.db
        .client()
        .await
        .batch_execute("CREATE TABLE secret (id int PRIMARY KEY); REVOKE ALL ON secret FROM anon")
        .await
        .unwrap();
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let r = c
        .join(
            "realtime:x",
            json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "nope"}]}),
        )
        .await;
    assert_eq!(r["status"], "error");
    assert!(r["response"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("Unable to subscribe to changes"));
    let r = c
        .join(
            "realtime:y",
            json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "secret"}]}),
        )
        .await;
    assert_eq!(r["status"], "error");
    let r = c.join("realtime:z", json!({"postgres_changes": [{"event": "TRUNCATE", "schema": "public", "table": "items"}]})).await;
    assert_eq!(r["status"], "error");
    let r = c.join("realtime:w", json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "items", "filter": "id=like.1"}]})).await;
    assert_eq!(r["status"], "error");
}

#[tokio::test]
async fn enable_and_disable_tables_through_the_admin_api() {
    let app = TestApp::spawn().await;
    listening(&app).await;
    let db = app.db.client().await;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO anon")
        .await
        .unwrap();
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    c.join(
        "realtime:t",
        json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "t"}]}),
    )
    .await;
    c.until("system").await;
    db.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    c.quiet(Duration::from_millis(300)).await;
    let auth = format!("Bearer {}", app.service_key());
    let res = app
        .http
        .post(app.url("/api/v1/realtime/tables/public/t"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = app
        .get("/api/v1/realtime/tables")
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!([{"schema": "public", "table": "t", "trigger": true}])
    );
    db.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    assert_eq!(
        change(&c.until("postgres_changes").await)["record"]["id"],
        2
    );
    let res = app
        .http
        .delete(app.url("/api/v1/realtime/tables/public/t"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    db.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    c.quiet(Duration::from_millis(300)).await;
    let res = app
        .http
        .post(app.url("/api/v1/realtime/tables/public/none"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .post(app.url("/api/v1/realtime/tables/public/t"))
        .header("Authorization", format!("Bearer {}", app.anon_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn private_channels_follow_policies_on_realtime_messages() {
    let app = TestApp::spawn().await;
    let db = app.db.client().await;
    db.batch_execute(
        "CREATE POLICY read_own ON realtime.messages FOR SELECT TO authenticated
           USING (realtime.topic() = 'room-' || auth.uid()::text OR realtime.topic() = 'shared');
         CREATE POLICY write_own ON realtime.messages FOR INSERT TO authenticated
           WITH CHECK (realtime.topic() = 'room-' || auth.uid()::text);",
    )
    .await
    .unwrap();
    let user = uuid::Uuid::new_v4().to_string();
    let token = app.token(json!({"sub": user, "role": "authenticated"}));
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let cfg = |t: &str| json!({"config": {"private": true, "broadcast": {"self": true, "ack": true}}, "access_token": t});
    let r = c
        .join_with(&format!("realtime:room-{user}"), cfg(&token))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let other = uuid::Uuid::new_v4();
    let r = c
        .join_with(&format!("realtime:room-{other}"), cfg(&token))
        .await;
    assert_eq!(r["status"], "error");
    assert!(r["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("Unauthorized"));
    // Anonymous callers fail the policies entirely.
    let mut anon = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let r = anon
        .join(&format!("realtime:room-{user}"), json!({"private": true}))
        .await;
    assert_eq!(r["status"], "error");
    // Read-only channel: joining works, sending is refused.
    let r = c.join_with("realtime:shared", cfg(&token)).await;
    assert_eq!(r["status"], "ok");
    let p = c
        .push(
            "realtime:shared",
            "broadcast",
            json!({"type":"broadcast","event":"e","payload":{}}),
        )
        .await;
    assert_eq!(c.reply(&p).await["status"], "error");
    // Own room: sending works and the public channel of the same name hears nothing.
    let mut public = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    public
        .join(&format!("realtime:room-{user}"), json!({}))
        .await;
    let topic = format!("realtime:room-{user}");
    let p = c
        .push(
            &topic,
            "broadcast",
            json!({"type":"broadcast","event":"e","payload":{"n":1}}),
        )
        .await;
    assert_eq!(c.reply(&p).await["status"], "ok");
    assert_eq!(c.until("broadcast").await.payload()["payload"]["n"], 1);
    public.quiet(Duration::from_millis(300)).await;
    // REST broadcast to the private topic: needs the INSERT policy.
    let body = json!({"messages": [{"topic": format!("room-{user}"), "event": "rest", "payload": {"n": 2}, "private": true}]});
    let res = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(c.until("broadcast").await.payload()["payload"]["n"], 2);
    let res = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .bearer_auth(app.anon_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn rest_and_sql_broadcasts_and_two_instances() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(app.db.clone(), |_| {}).await;
    listening(&app).await;
    listening(&other).await;
    let mut here = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let mut there = Client::connect(&other, &other.anon_key(), "1.0.0").await;
    here.join("realtime:news", json!({"broadcast": {"self": true}}))
        .await;
    there.join("realtime:news", json!({})).await;
    // A websocket broadcast on one instance reaches the other through Postgres.
    here.push(
        "realtime:news",
        "broadcast",
        json!({"type":"broadcast","event":"ws","payload":{"from":"here"}}),
    )
    .await;
    assert_eq!(
        there.until("broadcast").await.payload()["payload"]["from"],
        "here"
    );
    assert_eq!(here.until("broadcast").await.payload()["event"], "ws");
    // REST broadcast on the other instance reaches both.
    let body = json!({"messages": [{"topic": "news", "event": "rest", "payload": {"n": 1}}]});
    let res = other
        .http
        .post(other.url("/realtime/v1/api/broadcast"))
        .bearer_auth(other.anon_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(here.until("broadcast").await.payload()["event"], "rest");
    assert_eq!(there.until("broadcast").await.payload()["event"], "rest");
    // realtime.send() from SQL, at commit only.
    let db = app.db.client().await;
    db.batch_execute("BEGIN; SELECT realtime.send('{\"n\": 0}', 'sql', 'news', false); ROLLBACK")
        .await
        .unwrap();
    db.batch_execute("SELECT realtime.send('{\"n\": 3}', 'sql', 'news', false)")
        .await
        .unwrap();
    let f = here.until("broadcast").await;
    assert_eq!(
        f.payload(),
        &json!({"type":"broadcast","event":"sql","payload":{"n":3}})
    );
    assert_eq!(there.until("broadcast").await.payload()["payload"]["n"], 3);
    // Bad REST bodies are client errors.
    let res = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .json(&json!({"nope": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn expired_and_invalid_tokens_close_the_channel() {
    let app = TestApp::spawn().await;
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let user = uuid::Uuid::new_v4().to_string();
    let soon = app.token(
        json!({"sub": user, "role": "authenticated", "exp": chrono::Utc::now().timestamp() + 2}),
    );
    let r = c
        .join_with(
            "realtime:short",
            json!({"config": {}, "access_token": soon}),
        )
        .await;
    assert_eq!(r["status"], "ok");
    let sys = c.until("system").await;
    assert_eq!(sys.payload()["status"], "error");
    assert!(sys.payload()["message"]
        .as_str()
        .unwrap()
        .starts_with("Token has expired"));
    c.until("phx_close").await;
    // An expired token is refused at join.
    let old = app.token(
        json!({"sub": user, "role": "authenticated", "exp": chrono::Utc::now().timestamp() - 100}),
    );
    let r = c
        .join_with("realtime:old", json!({"config": {}, "access_token": old}))
        .await;
    assert_eq!(r["status"], "error");
    // Refreshing with a valid token keeps the channel; a forged one closes it.
    let good = app.token(json!({"sub": user, "role": "authenticated"}));
    let r = c
        .join_with("realtime:long", json!({"config": {}, "access_token": good}))
        .await;
    assert_eq!(r["status"], "ok");
    let fresh = app.token(json!({"sub": user, "role": "authenticated"}));
    c.push(
        "realtime:long",
        "access_token",
        json!({"access_token": fresh}),
    )
    .await;
    let r = c.push("phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
    c.push(
        "realtime:long",
        "access_token",
        json!({"access_token": "forged.token.value"}),
    )
    .await;
    let sys = c.until("system").await;
    assert!(sys.payload()["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JWT"));
    c.until("phx_close").await;
    let p = c
        .push(
            "realtime:long",
            "broadcast",
            json!({"type":"broadcast","event":"e","payload":{}}),
        )
        .await;
    assert_eq!(c.reply(&p).await["response"]["reason"], "unmatched topic");
}

#[tokio::test]
async fn stats_and_require_apikey_on_websockets() {
    let app = TestApp::spawn_with(|c| c.auth.require_apikey = true).await;
    let ws = app.base.replace("http://", "ws://");
    // Without a key the gateway rule refuses the upgrade.
    assert!(
        tokio_tungstenite::connect_async(format!("{ws}/realtime/v1/websocket?vsn=2.0.0"))
            .await
            .is_err()
    );
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE st (id int PRIMARY KEY); GRANT SELECT ON st TO anon;
             ALTER PUBLICATION supabase_realtime ADD TABLE st;",
        )
        .await
        .unwrap();
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    c.join("realtime:s", json!({})).await;
    let r = c
        .join(
            "realtime:t",
            json!({"postgres_changes": [
                {"event": "INSERT", "schema": "public", "table": "st"},
                {"event": "DELETE", "schema": "public", "table": "st"}
            ]}),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    c.raw(Message::Text("nope".into())).await;
    let h = c.push("phoenix", "heartbeat", json!({})).await;
    c.reply(&h).await;
    let stats: Value = app
        .get("/api/v1/realtime/stats")
        .header("apikey", app.service_key())
        .header("Authorization", format!("Bearer {}", app.service_key()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["channels"], 2);
    assert_eq!(stats["subscriptions"], 2, "{stats}");
    assert_eq!(stats["messages_in"]["join"], 2, "{stats}");
    assert_eq!(stats["messages_in"]["heartbeat"], 1, "{stats}");
    assert_eq!(stats["messages_in"]["malformed"], 1, "{stats}");
    // Leaving gives the subscriptions back.
    let r = c.push("realtime:t", "phx_leave", json!({})).await;
    c.reply(&r).await;
    let stats: Value = app
        .get("/api/v1/realtime/stats")
        .header("apikey", app.service_key())
        .header("Authorization", format!("Bearer {}", app.service_key()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["subscriptions"], 0, "{stats}");
    assert_eq!(stats["messages_in"]["leave"], 1, "{stats}");
    let metrics = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("fluxbase_realtime_connections 1"));
    assert!(metrics.contains("fluxbase_realtime_subscriptions 0"));
    assert!(metrics.contains("fluxbase_realtime_messages_received_total{kind=\"join\"} 2"));
}

/// Reads frames until a `presence_diff` satisfying `ok` (others are skipped).
async fn diff_where(c: &mut Client, ok: impl Fn(&Value) -> bool) -> Value {
    loop {
        let d = c.until("presence_diff").await;
        if ok(d.payload()) {
            return d.payload().clone();
        }
    }
}

#[tokio::test]
async fn presence_spans_instances() {
    let app = TestApp::spawn().await;
    let other = TestApp::spawn_on(app.db.clone(), |_| {}).await;
    listening(&app).await;
    listening(&other).await;
    let cfg = |k: &str| json!({"presence": {"key": k, "enabled": true}});
    // bob watches the room on the other instance; alice joins and tracks on the first.
    let mut bob = Client::connect(&other, &other.anon_key(), "2.0.0").await;
    bob.join("realtime:hall", cfg("bob")).await;
    bob.until("presence_state").await;
    let mut alice = Client::connect(&app, &app.anon_key(), "1.0.0").await;
    alice.join("realtime:hall", cfg("alice")).await;
    alice.until("presence_state").await;
    let r = alice
        .push(
            "realtime:hall",
            "presence",
            json!({"type":"presence","event":"track","payload":{"status":"online"}}),
        )
        .await;
    assert_eq!(alice.reply(&r).await["status"], "ok");
    let d = diff_where(&mut bob, |p| p["joins"]["alice"].is_object()).await;
    assert_eq!(d["joins"]["alice"]["metas"][0]["status"], "online");
    let alice_ref = d["joins"]["alice"]["metas"][0]["phx_ref"].clone();
    assert!(alice_ref.is_string());
    // A socket joining on the other instance gets the whole state, alice included.
    let mut carol = Client::connect(&other, &other.anon_key(), "2.0.0").await;
    carol.join("realtime:hall", cfg("carol")).await;
    let s = carol.until("presence_state").await;
    assert_eq!(s.payload()["alice"]["metas"][0]["status"], "online");
    assert_eq!(s.payload()["alice"]["metas"][0]["phx_ref"], alice_ref);
    // bob tracks there: alice sees him here.
    let r = bob
        .push(
            "realtime:hall",
            "presence",
            json!({"type":"presence","event":"track","payload":{"status":"away"}}),
        )
        .await;
    assert_eq!(bob.reply(&r).await["status"], "ok");
    let d = diff_where(&mut alice, |p| p["joins"]["bob"].is_object()).await;
    assert_eq!(d["joins"]["bob"]["metas"][0]["status"], "away");
    // Other topics are untouched: a socket in another room on the first instance sees nobody.
    let mut dave = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    dave.join("realtime:elsewhere", cfg("dave")).await;
    assert_eq!(dave.until("presence_state").await.payload(), &json!({}));
    // An instance started now learns the presences tracked before it listened (it asks the
    // others for their state when its listener comes up).
    let third = TestApp::spawn_on(app.db.clone(), |_| {}).await;
    listening(&third).await;
    let mut eve = Client::connect(&third, &third.anon_key(), "2.0.0").await;
    eve.join("realtime:hall", cfg("eve")).await;
    let mut state = eve.until("presence_state").await.payload().clone();
    // Until the answers arrive, they come as diffs on the joined socket.
    while !(state["alice"].is_object() && state["bob"].is_object()) {
        let d = eve.until("presence_diff").await;
        for (k, v) in d.payload()["joins"].as_object().unwrap() {
            state[k] = v.clone();
        }
    }
    assert_eq!(state["alice"]["metas"][0]["status"], "online");
    assert_eq!(state["bob"]["metas"][0]["status"], "away");
    // alice disconnects: bob and carol (other instance) and eve (third) see her leave.
    drop(alice);
    for c in [&mut bob, &mut carol, &mut eve] {
        let d = diff_where(c, |p| p["leaves"]["alice"].is_object()).await;
        assert_eq!(d["leaves"]["alice"]["metas"][0]["phx_ref"], alice_ref);
    }
    // bob untracks: carol (his instance) and fred (the first instance, joined before) see it;
    // then a joiner on the first instance sees no one left.
    let mut fred = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    fred.join("realtime:hall", cfg("fred")).await;
    let s = fred.until("presence_state").await;
    assert!(s.payload()["bob"].is_object(), "{:?}", s.payload());
    assert!(s.payload().get("alice").is_none(), "{:?}", s.payload());
    let r = bob
        .push(
            "realtime:hall",
            "presence",
            json!({"type":"presence","event":"untrack"}),
        )
        .await;
    assert_eq!(bob.reply(&r).await["status"], "ok");
    diff_where(&mut carol, |p| p["leaves"]["bob"].is_object()).await;
    diff_where(&mut fred, |p| p["leaves"]["bob"].is_object()).await;
    let mut gina = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    gina.join("realtime:hall", cfg("gina")).await;
    assert_eq!(gina.until("presence_state").await.payload(), &json!({}));
}

#[tokio::test]
async fn large_broadcasts_cross_instances() {
    let app = TestApp::spawn().await;
    // A stored message long past its retention: an instance's upkeep deletes it (at start,
    // then once a minute).
    let stale: i64 = app
        .db
        .client()
        .await
        .query_one(
            "INSERT INTO realtime.fluxbase_cluster_messages (payload, created_at) \
             VALUES ('{}', now() - interval '1 hour') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let other = TestApp::spawn_on(app.db.clone(), |_| {}).await;
    listening(&app).await;
    listening(&other).await;
    let mut here = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let mut there = Client::connect(&other, &other.anon_key(), "1.0.0").await;
    here.join("realtime:big", json!({})).await;
    there.join("realtime:big", json!({})).await;
    // 20 KB, well past NOTIFY's 8000 bytes, from a websocket on the first instance.
    let text: String = (0..20_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    here.push(
        "realtime:big",
        "broadcast",
        json!({"type":"broadcast","event":"ws","payload":{"text": text}}),
    )
    .await;
    let f = there.until("broadcast").await;
    assert_eq!(f.payload()["event"], "ws");
    assert_eq!(f.payload()["payload"]["text"], text);
    // From REST on the other instance, and from SQL (realtime.send), both reach the first.
    let body = json!({"messages": [{"topic": "big", "event": "rest", "payload": {"text": text}}]});
    let res = other
        .http
        .post(other.url("/realtime/v1/api/broadcast"))
        .bearer_auth(other.anon_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    for c in [&mut here, &mut there] {
        let f = c.until("broadcast").await;
        assert_eq!(f.payload()["event"], "rest");
        assert_eq!(f.payload()["payload"]["text"], text);
    }
    let db = app.db.client().await;
    db.execute(
        "SELECT realtime.send(jsonb_build_object('text', $1::text), 'sql', 'big', false)",
        &[&text],
    )
    .await
    .unwrap();
    for c in [&mut here, &mut there] {
        let f = c.until("broadcast").await;
        assert_eq!(f.payload()["event"], "sql");
        assert_eq!(f.payload()["payload"]["text"], text);
    }
    // Stored messages are kept for the listeners, not for clients: nobody but the owner
    // may read them.
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM realtime.fluxbase_cluster_messages",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored >= 3, "{stored}");
    let db2 = app.db.clone();
    let cleaned = crate::support::eventually(Duration::from_secs(10), || {
        let db = db2.clone();
        async move {
            db.client()
                .await
                .query_opt(
                    "SELECT 1 FROM realtime.fluxbase_cluster_messages WHERE id = $1",
                    &[&stale],
                )
                .await
                .unwrap()
                .is_none()
        }
    })
    .await;
    assert!(cleaned, "the stale stored message was not deleted");
    let denied = db
        .batch_execute(
            "BEGIN; SET LOCAL ROLE authenticated; \
             SELECT count(*) FROM realtime.fluxbase_cluster_messages; COMMIT",
        )
        .await;
    assert!(denied.is_err());
    let _ = db.batch_execute("ROLLBACK").await;
}

/// The listener connection's rows in `pg_stat_activity` for the app's database, and the
/// other connections whose last statement was a LISTEN (a module with a LISTEN connection
/// of its own runs nothing else on it).
async fn listen_connections(db: &tokio_postgres::Client, app: &TestApp) -> (i64, i64) {
    let name = fluxbase::db::listen::application_name(&app.state.pg_config);
    let r = db
        .query_one(
            "SELECT count(*) FILTER (WHERE application_name = $1), \
                    count(*) FILTER (WHERE application_name <> $1 AND query ~* '^\\s*LISTEN') \
               FROM pg_stat_activity WHERE datname = current_database()",
            &[&name],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// ARCHITECTURE §5: one LISTEN connection per process. The schema cache, realtime and the
/// job workers all wait on it; killed with `pg_terminate_backend`, it comes back for all
/// three: realtime tells each postgres_changes channel of the gap (a `system` error push)
/// and delivers again, the schema cache reloads (a table created during the gap and one
/// created after it are both served), and an idle worker is woken by NOTIFY again.
#[tokio::test]
async fn one_listener_connection_serves_schema_realtime_and_jobs_and_recovers() {
    // Jobs poll every 10 minutes: only a NOTIFY can wake a worker within the deadlines.
    let app = TestApp::spawn_with(|c| c.jobs.poll_interval_ms = 600_000).await;
    listening(&app).await;
    let db = app.db.client().await;
    db.batch_execute(TABLES).await.unwrap();
    let mut reg = fluxbase::jobs::Registry::default();
    reg.register("wake", fluxbase::jobs::RetryPolicy::default(), |_| async {
        Ok(None)
    });
    let runner = crate::support::start_runner(&app, reg, false);
    async fn enqueue(db: &tokio_postgres::Client) -> i64 {
        let spec = fluxbase::jobs::JobSpec {
            queue: "wake".into(),
            payload: json!({}),
            ..Default::default()
        };
        fluxbase::jobs::enqueue(db, &spec).await.unwrap().id
    }
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    c.join(
        "realtime:gap",
        json!({"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "items"}]}),
    )
    .await;
    assert_eq!(c.until("system").await.payload()["status"], "ok");

    // One listener connection serves all three; nothing else LISTENs.
    let mut counts = (0, 0);
    for _ in 0..100 {
        counts = listen_connections(&db, &app).await;
        if counts == (1, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counts,
        (1, 0),
        "(listener connections, other LISTENing connections)"
    );
    // All three are served by it: a change, a reload, a job.
    db.batch_execute("INSERT INTO items VALUES (1, 'a', 1, '')")
        .await
        .unwrap();
    assert_eq!(
        change(&c.until("postgres_changes").await)["record"]["id"],
        1
    );
    let id = enqueue(&db).await;
    crate::support::wait_status(&app, id, "succeeded", Duration::from_secs(10)).await;
    let served = |path: &'static str| {
        let app = &app;
        async move {
            crate::support::eventually(Duration::from_secs(10), || async move {
                app.get(path)
                    .header("apikey", app.anon_key())
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await
        }
    };
    db.batch_execute("CREATE TABLE before_gap (id int); GRANT SELECT ON before_gap TO anon")
        .await
        .unwrap();
    assert!(served("/rest/v1/before_gap").await);

    // Kill it.
    let name = fluxbase::db::listen::application_name(&app.state.pg_config);
    let killed: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE datname = current_database() AND application_name = $1) k",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // Made while it may be down: the reload after the reconnect picks it up.
    db.batch_execute("CREATE TABLE during_gap (id int); GRANT SELECT ON during_gap TO anon")
        .await
        .unwrap();
    // Realtime tells the channel once the listener is back.
    let sys = c.until("system").await;
    assert_eq!(
        sys.payload()["extension"],
        "postgres_changes",
        "{:?}",
        sys.payload()
    );
    assert_eq!(sys.payload()["status"], "error");
    assert_eq!(sys.payload()["channel"], "gap");
    assert!(sys.payload()["message"].as_str().unwrap().len() > 10);
    // Back for all three, on one connection again.
    db.batch_execute("INSERT INTO items VALUES (2, 'b', 1, '')")
        .await
        .unwrap();
    assert_eq!(
        change(&c.until("postgres_changes").await)["record"]["id"],
        2
    );
    let id = enqueue(&db).await;
    crate::support::wait_status(&app, id, "succeeded", Duration::from_secs(10)).await;
    assert!(served("/rest/v1/during_gap").await);
    db.batch_execute("CREATE TABLE after_gap (id int); GRANT SELECT ON after_gap TO anon")
        .await
        .unwrap();
    assert!(served("/rest/v1/after_gap").await);
    assert_eq!(listen_connections(&db, &app).await, (1, 0));
    runner.shutdown(Duration::from_secs(1)).await;
}

/// jsonb prints numerics as all their digits: ±1.8e308 is 309 of them, past what serde_json
/// reads as a number. Such a row is still delivered whole (filters and RLS keys read it),
/// and so are SQL and REST broadcasts carrying one.
#[tokio::test]
async fn payloads_with_numbers_past_f64_are_delivered() {
    let app = pg_app().await;
    let db = app.db.client().await;
    db.batch_execute(
        "CREATE TABLE huge (id numeric PRIMARY KEY, owner uuid, n numeric);
         ALTER TABLE huge ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON huge FOR SELECT USING (auth.uid() = owner);
         GRANT ALL ON huge TO anon, authenticated, service_role;
         ALTER PUBLICATION supabase_realtime ADD TABLE huge;",
    )
    .await
    .unwrap();
    let user = uuid::Uuid::new_v4().to_string();
    let token = app.token(json!({"sub": user, "role": "authenticated"}));
    let mut c = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let reply = c
        .join_with(
            "realtime:huge",
            json!({"config": {"postgres_changes": [
                {"event": "*", "schema": "public", "table": "huge", "filter": "n=gt.1"}
            ]}, "access_token": token}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    c.until("system").await;
    let digits = format!("18{}", "0".repeat(307));
    assert_eq!(digits.len(), 309);
    // The key itself is such a number (the RLS check looks the row up by it), and so is
    // the filtered column.
    db.execute(
        "INSERT INTO huge VALUES (-1.8e308, $1::text::uuid, 1.8e308)",
        &[&user],
    )
    .await
    .unwrap();
    let t = c.text_until("postgres_changes").await;
    assert!(t.contains(&format!(r#""id":-{digits}"#)), "{t}");
    assert!(t.contains(&format!(r#""n":{digits}"#)), "{t}");
    assert!(
        serde_json::from_str::<Value>(&t).is_err(),
        "serde_json reads it after all: this test proves nothing"
    );
    // Broadcasts from SQL and REST carrying one.
    c.join("realtime:nums", json!({})).await;
    db.execute(
        "SELECT realtime.send(jsonb_build_object('v', 1.8e308::numeric), 'sql', 'nums', false)",
        &[],
    )
    .await
    .unwrap();
    let t = c.text_until(r#""sql""#).await;
    // jsonb's own rendering (a space after the colon), passed through as it came.
    assert!(t.contains(&format!(r#""v": {digits}"#)), "{t}");
    let body = format!(
        r#"{{"messages":[{{"topic":"nums","event":"rest","payload":{{"v":-{digits}}}}}]}}"#
    );
    let r = app
        .http
        .post(app.url("/realtime/v1/api/broadcast"))
        .header("apikey", app.service_key())
        .header("authorization", format!("Bearer {}", app.service_key()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t = c.text_until(r#""rest""#).await;
    assert!(t.contains(&format!(r#""v":-{digits}"#)), "{t}");
}

/// The status of a refused websocket upgrade (None when it was accepted).
async fn upgrade_status(app: &TestApp) -> Option<u16> {
    let url = format!(
        "{}/realtime/v1/websocket?apikey={}&vsn=2.0.0",
        app.base.replace("http://", "ws://"),
        app.anon_key()
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Some(r.status().as_u16()),
        Err(e) => panic!("upgrade failed otherwise: {e}"),
    }
}

/// Limits from config: connections per process and per IP (429 before the upgrade),
/// channels per connection, joins and messages per second per connection (error replies;
/// the socket lives on). Pipelined bursts far past a small rate, so the outcome does not
/// depend on timing.
#[tokio::test]
async fn limits_per_process_ip_channels_joins_and_messages() {
    let app = TestApp::spawn_with(|c| {
        c.realtime.max_connections_per_ip = 2;
        c.realtime.max_channels_per_connection = 3;
        c.realtime.max_joins_per_second = 4;
    })
    .await;
    let mut a = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    let b = Client::connect(&app, &app.anon_key(), "2.0.0").await;
    assert_eq!(
        upgrade_status(&app).await,
        Some(429),
        "a third socket from one IP"
    );
    drop(b);
    let freed = crate::support::eventually(Duration::from_secs(10), || async {
        upgrade_status(&app).await.is_none()
    })
    .await;
    assert!(freed, "a closed socket no longer counts against its IP");

    // 20 joins at once against 4 per second (bursts of 4) and 3 channels per connection:
    // three joins, then the channel limit, then the join rate.
    let mut refs = Vec::new();
    for i in 0..20 {
        refs.push(
            a.push(&format!("realtime:j{i}"), "phx_join", json!({"config": {}}))
                .await,
        );
    }
    let mut reasons = Vec::new();
    for r in &refs {
        let reply = a.reply(r).await;
        reasons.push(
            reply["response"]["reason"]
                .as_str()
                .unwrap_or("ok")
                .to_string(),
        );
    }
    assert_eq!(&reasons[..3], ["ok", "ok", "ok"], "{reasons:?}");
    assert!(reasons[3].starts_with("Too many channels"), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "ok").count(), 3);
    assert!(
        reasons.iter().any(|r| r == "Too many joins per second"),
        "{reasons:?}"
    );

    // 50 broadcasts at once against 5 per second.
    let app2 = TestApp::spawn_with(|c| c.realtime.max_messages_per_second = 5).await;
    let mut s = Client::connect(&app2, &app2.anon_key(), "2.0.0").await;
    s.join("realtime:m", json!({"broadcast": {"ack": true}}))
        .await;
    let mut refs = Vec::new();
    for i in 0..50 {
        refs.push(
            s.push(
                "realtime:m",
                "broadcast",
                json!({"type": "broadcast", "event": "e", "payload": {"i": i}}),
            )
            .await,
        );
    }
    let mut refused = 0;
    for r in &refs {
        let reply = s.reply(r).await;
        if reply["status"] == "error" {
            assert_eq!(reply["response"]["reason"], "Too many messages per second");
            refused += 1;
        }
    }
    assert!((1..50).contains(&refused), "{refused} of 50 refused");
    // Heartbeats are not counted, and the socket is still open.
    let r = s.push("phoenix", "heartbeat", json!({})).await;
    assert_eq!(s.reply(&r).await["status"], "ok");

    // Connections per process.
    let app3 = TestApp::spawn_with(|c| c.realtime.max_connections = 1).await;
    let _one = Client::connect(&app3, &app3.anon_key(), "2.0.0").await;
    let counted = crate::support::eventually(Duration::from_secs(10), || async {
        upgrade_status(&app3).await == Some(429)
    })
    .await;
    assert!(counted, "a second socket on a 1-connection instance");
}
