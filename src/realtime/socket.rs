//! One websocket: reads frames, runs the channel events (join, leave, heartbeat, broadcast,
//! presence, access_token) in order, and writes replies and the frames the hub queues for
//! it. A socket is closed when its peer goes quiet for `realtime.heartbeat_timeout_secs`,
//! when its outbox overflows, or when the peer closes it.

use super::hub::{Broadcast, Bucket, IpGuard, Member, PgBinding, SocketHandle};
use super::protocol::{self, BroadcastBody, Frame, Incoming, Vsn};
use super::{hub_key, Identity, Realtime};
use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::AggregatedMessage;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Query of the websocket URL.
#[derive(Debug, serde::Deserialize)]
pub struct ConnectQuery {
    apikey: Option<String>,
    vsn: Option<String>,
}

/// `GET /realtime/v1/websocket`: upgrades to a websocket.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<ConnectQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(rt) = state.realtime.clone() else {
        return Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "realtime is disabled",
        ));
    };
    let vsn = Vsn::parse(query.vsn.as_deref()).ok_or_else(|| {
        ApiError::new(ErrorCode::BadRequest, "unsupported vsn: use 1.0.0 or 2.0.0")
    })?;
    let cfg = &state.config.realtime;
    if rt.hub.metrics.connections.get() as u64 >= cfg.max_connections {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many realtime connections on this instance",
        ));
    }
    let ip = state.rate_limits.client_ip(req.headers(), req.peer_addr());
    let Some(ip_guard) = rt.hub.admit_ip(&ip, cfg.max_connections_per_ip) else {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many realtime connections from this address",
        ));
    };
    // The socket's default identity: the apikey (a JWT or an fbk_ key); channels may
    // present a user token in their join payload.
    let identity = match query.apikey.as_deref().filter(|k| !k.is_empty()) {
        None => Identity::anon(),
        Some(k) if k.starts_with(crate::auth::api_keys::PREFIX) => {
            let ctx = crate::auth::api_keys::resolve(&state, k, req.method(), req.path()).await?;
            Identity::from_auth(&ctx)
        }
        Some(k) => Identity::from_jwt(&state.jwt, k).map_err(ApiError::invalid_jwt)?,
    };
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let max = cfg.max_frame_bytes as usize;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let conn = Connection {
        joins: Bucket::new(cfg.max_joins_per_second),
        messages: Bucket::new(cfg.max_messages_per_second),
        _ip: ip_guard,
        state: state.into_inner(),
        rt,
        vsn,
        identity: Arc::new(identity),
        channels: HashMap::new(),
    };
    actix_web::rt::spawn(conn.run(session, stream));
    Ok(response)
}

struct Connection {
    state: Arc<AppState>,
    rt: Arc<Realtime>,
    vsn: Vsn,
    identity: Arc<Identity>,
    /// Joined channels by topic.
    channels: HashMap<String, Arc<Member>>,
    /// `realtime.max_joins_per_second`.
    joins: Bucket,
    /// `realtime.max_messages_per_second`.
    messages: Bucket,
    /// Counts this socket against `realtime.max_connections_per_ip` until it ends.
    _ip: IpGuard,
}

/// What handling a frame asks the loop to do.
enum Next {
    Continue,
    Close,
}

impl Connection {
    async fn run(
        mut self,
        mut session: actix_ws::Session,
        mut stream: actix_ws::AggregatedMessageStream,
    ) {
        let hub = self.rt.hub.clone();
        hub.metrics.connections.inc();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(super::hub::OUTBOX_CAPACITY);
        let direct: super::hub::DirectSink = Arc::new(std::sync::Mutex::new(Some(session.clone())));
        let handle = SocketHandle {
            id: hub.next_id(),
            vsn: self.vsn,
            tx,
            overflowed: Arc::new(AtomicBool::new(false)),
            pending: Arc::default(),
            direct: Some(direct.clone()),
            busy: Arc::default(),
        };
        let timeout = Duration::from_secs(self.state.config.realtime.heartbeat_timeout_secs.max(1));
        let mut last_seen = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut close_reason: Option<actix_ws::CloseReason> = None;
        loop {
            tokio::select! {
                msg = stream.recv() => {
                    let Some(msg) = msg else { break };
                    last_seen = Instant::now();
                    // What this message makes the hub send to this very socket goes after
                    // the reply (through the outbox).
                    handle.busy.store(true, Ordering::Release);
                    let next = match msg {
                        Ok(AggregatedMessage::Text(t)) => {
                            match protocol::decode_text(self.vsn, &t) {
                                Ok(m) => self.handle(&mut session, &handle, m).await,
                                Err(e) => {
                                    tracing::debug!(error = %e, "realtime: bad frame");
                                    hub.metrics.received.with_label_values(&["malformed"]).inc();
                                    let r = protocol::bad_frame_reply(self.vsn, Some(&t), &e.to_string());
                                    self.send(&mut session, r).await
                                }
                            }
                        }
                        Ok(AggregatedMessage::Binary(b)) => {
                            match (self.vsn, protocol::decode_binary(&b)) {
                                (Vsn::V2, Ok(m)) => self.handle(&mut session, &handle, m).await,
                                (_, r) => {
                                    tracing::debug!(ok = r.is_ok(), "realtime: unusable binary frame");
                                    hub.metrics.received.with_label_values(&["malformed"]).inc();
                                    let reason = match r {
                                        Err(e) => e.to_string(),
                                        Ok(_) => "binary frames need vsn 2.0.0".into(),
                                    };
                                    let r = protocol::bad_frame_reply(self.vsn, None, &reason);
                                    self.send(&mut session, r).await
                                }
                            }
                        }
                        Ok(AggregatedMessage::Ping(p)) => {
                            if session.pong(&p).await.is_err() { Next::Close } else { Next::Continue }
                        }
                        Ok(AggregatedMessage::Pong(_)) => Next::Continue,
                        Ok(AggregatedMessage::Close(_)) => Next::Close,
                        Err(e) => {
                            tracing::debug!(error = %e, "realtime: protocol error");
                            close_reason = Some(actix_ws::CloseReason {
                                code: actix_ws::CloseCode::Protocol,
                                description: Some(e.to_string()),
                            });
                            Next::Close
                        }
                    };
                    handle.busy.store(false, Ordering::Release);
                    if matches!(next, Next::Close) {
                        break;
                    }
                }
                // Frames that found the websocket's queue full (or queued behind such).
                Some(frame) = rx.recv() => {
                    let mut next = Some(frame);
                    let mut ok = true;
                    while let Some(frame) = next.take() {
                        let sent = match frame {
                            Frame::Text(t) => session.text(t).await,
                            Frame::Binary(b) => session.binary(b).await,
                        };
                        handle.pending.fetch_sub(1, Ordering::AcqRel);
                        if sent.is_err() {
                            ok = false;
                            break;
                        }
                        next = rx.try_recv().ok();
                    }
                    if !ok {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if handle.overflowed.load(Ordering::Relaxed) {
                        hub.metrics.slow_disconnects.inc();
                        close_reason = Some(actix_ws::CloseReason {
                            code: actix_ws::CloseCode::Again,
                            description: Some("too slow to keep up".into()),
                        });
                        break;
                    }
                    if last_seen.elapsed() > timeout {
                        close_reason = Some(actix_ws::CloseReason {
                            code: actix_ws::CloseCode::Normal,
                            description: Some("heartbeat timeout".into()),
                        });
                        break;
                    }
                    if self.expire_tokens(&mut session).await.is_err() {
                        break;
                    }
                }
            }
        }
        // No more direct writes; the session's queue closes with the last sender.
        direct.lock().unwrap_or_else(|p| p.into_inner()).take();
        for (_, m) in self.channels.drain() {
            hub.leave(&m);
        }
        hub.metrics.connections.dec();
        let _ = session.close(close_reason).await;
    }

    async fn send(&self, session: &mut actix_ws::Session, text: String) -> Next {
        match session.text(text).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close,
        }
    }

    async fn reply(
        &self,
        session: &mut actix_ws::Session,
        to: &Incoming,
        status: &str,
        response: Value,
    ) -> Next {
        self.send(session, protocol::reply(self.vsn, to, status, &response))
            .await
    }

    async fn handle(
        &mut self,
        session: &mut actix_ws::Session,
        handle: &SocketHandle,
        m: Incoming,
    ) -> Next {
        let kind = match (m.topic.as_str(), m.event.as_str()) {
            ("phoenix", "heartbeat") => "heartbeat",
            (_, "phx_join") => "join",
            (_, "phx_leave") => "leave",
            (_, e @ ("broadcast" | "presence" | "access_token")) => e,
            _ => "other",
        };
        self.rt
            .hub
            .metrics
            .received
            .with_label_values(&[kind])
            .inc();
        if m.topic == "phoenix" {
            return if m.event == "heartbeat" {
                self.reply(session, &m, "ok", json!({})).await
            } else {
                Next::Continue
            };
        }
        let now = Instant::now();
        match m.event.as_str() {
            "phx_join" if !self.joins.take(now) => {
                self.reply(
                    session,
                    &m,
                    "error",
                    json!({"reason": "Too many joins per second"}),
                )
                .await
            }
            "phx_join" => self.join(session, handle, m).await,
            _ if !self.messages.take(now) => {
                self.reply(
                    session,
                    &m,
                    "error",
                    json!({"reason": "Too many messages per second"}),
                )
                .await
            }
            _ => {
                let Some(member) = self.channels.get(&m.topic).cloned() else {
                    return self
                        .reply(session, &m, "error", json!({"reason": "unmatched topic"}))
                        .await;
                };
                match m.event.as_str() {
                    "phx_leave" => {
                        self.channels.remove(&m.topic);
                        self.rt.hub.leave(&member);
                        if let Next::Close = self.reply(session, &m, "ok", json!({})).await {
                            return Next::Close;
                        }
                        self.close_channel(session, &member).await
                    }
                    "broadcast" => self.broadcast(session, &member, m).await,
                    "presence" => self.presence(session, &member, m).await,
                    "access_token" => self.access_token(session, &member, m).await,
                    _ => {
                        self.reply(session, &m, "error", json!({"reason": "unknown event"}))
                            .await
                    }
                }
            }
        }
    }

    async fn close_channel(&self, session: &mut actix_ws::Session, member: &Member) -> Next {
        let f = protocol::encode(
            self.vsn,
            &member.join_ref,
            &member.join_ref,
            &member.topic,
            "phx_close",
            "{}",
        );
        self.send(session, f).await
    }

    /// Ends a channel with a `system` error push then `phx_close` (token expiry, lost access).
    async fn shut_channel(
        &mut self,
        session: &mut actix_ws::Session,
        member: &Arc<Member>,
        message: &str,
    ) -> Next {
        self.channels.remove(&member.topic);
        self.rt.hub.leave(member);
        let sub = member
            .topic
            .strip_prefix("realtime:")
            .unwrap_or(&member.topic);
        let p =
            json!({"extension": "system", "status": "error", "message": message, "channel": sub});
        let f = protocol::push(self.vsn, &member.topic, "system", &p.to_string());
        if let Next::Close = self.send(session, f).await {
            return Next::Close;
        }
        self.close_channel(session, member).await
    }

    async fn expire_tokens(&mut self, session: &mut actix_ws::Session) -> Result<(), ()> {
        let now = chrono::Utc::now().timestamp();
        let expired: Vec<Arc<Member>> = self
            .channels
            .values()
            .filter(|m| m.identity().exp.is_some_and(|e| e <= now))
            .cloned()
            .collect();
        for m in expired {
            let ago = now - m.identity().exp.unwrap_or(now);
            let msg = format!("Token has expired {ago} seconds ago");
            if let Next::Close = self.shut_channel(session, &m, &msg).await {
                return Err(());
            }
        }
        Ok(())
    }

    async fn join(
        &mut self,
        session: &mut actix_ws::Session,
        handle: &SocketHandle,
        m: Incoming,
    ) -> Next {
        if !m.topic.starts_with("realtime:") {
            return self
                .reply(session, &m, "error", json!({"reason": "unmatched topic"}))
                .await;
        }
        let max = self.state.config.realtime.max_channels_per_connection as usize;
        if !self.channels.contains_key(&m.topic) && self.channels.len() >= max {
            return self
                .reply(
                    session,
                    &m,
                    "error",
                    json!({"reason": format!("Too many channels: at most {max} per connection")}),
                )
                .await;
        }
        // A second join of the same topic replaces the first, as Phoenix does.
        if let Some(old) = self.channels.remove(&m.topic) {
            self.rt.hub.leave(&old);
        }
        match self.prepare_member(handle, &m).await {
            Ok((member, bindings)) => {
                let state = self.rt.hub.join(member.clone());
                self.channels.insert(m.topic.clone(), member.clone());
                let response = if bindings.is_empty() {
                    json!({"postgres_changes": []})
                } else {
                    json!({"postgres_changes": bindings})
                };
                if let Next::Close = self.reply(session, &m, "ok", response).await {
                    return Next::Close;
                }
                let sub = m.topic.strip_prefix("realtime:").unwrap_or(&m.topic);
                if !member.pg.is_empty() {
                    let p = json!({"extension": "postgres_changes", "status": "ok",
                                   "message": "Subscribed to PostgreSQL", "channel": sub});
                    let f = protocol::push(self.vsn, &m.topic, "system", &p.to_string());
                    if let Next::Close = self.send(session, f).await {
                        return Next::Close;
                    }
                }
                if member.presence_enabled.load(Ordering::Relaxed) {
                    let f = protocol::push(self.vsn, &m.topic, "presence_state", &state);
                    return self.send(session, f).await;
                }
                Next::Continue
            }
            Err(reason) => {
                self.reply(session, &m, "error", json!({"reason": reason}))
                    .await
            }
        }
    }

    /// Validates a join and builds the member (no hub changes yet).
    async fn prepare_member(
        &self,
        handle: &SocketHandle,
        m: &Incoming,
    ) -> Result<(Arc<Member>, Vec<Value>), String> {
        let p = &m.payload;
        let config = p.get("config").cloned().unwrap_or(json!({}));
        let identity = match p.get("access_token").and_then(Value::as_str) {
            // Opaque publishable/secret keys are not user tokens; realtime-js never sends
            // them, other clients might.
            Some(t) if !t.is_empty() && !t.starts_with("sb_") => Arc::new(
                Identity::from_jwt(&self.state.jwt, t).map_err(|e| format!("Invalid JWT: {e}"))?,
            ),
            _ => self.identity.clone(),
        };
        if identity
            .exp
            .is_some_and(|e| e <= chrono::Utc::now().timestamp())
        {
            return Err("Token has expired".into());
        }
        let private = config
            .get("private")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut can_write = true;
        if private {
            let (read, write) = channel_access(&self.state, &m.topic, &identity).await?;
            if !read {
                return Err(format!(
                    "Unauthorized: You do not have permissions to read from this Channel topic: {}",
                    m.topic.strip_prefix("realtime:").unwrap_or(&m.topic)
                ));
            }
            can_write = write;
        }
        let flag = |path: [&str; 2]| {
            config
                .get(path[0])
                .and_then(|c| c.get(path[1]))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let presence_key = config
            .get("presence")
            .and_then(|c| c.get("key"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut pg = Vec::new();
        let mut echoed = Vec::new();
        if let Some(list) = config.get("postgres_changes").and_then(Value::as_array) {
            for b in list {
                let (binding, echo) = self.binding(b, &identity).await?;
                pg.push(binding);
                echoed.push(echo);
            }
        }
        let member = Arc::new(Member {
            id: self.rt.hub.next_id(),
            socket: handle.clone(),
            topic: m.topic.clone(),
            key: hub_key(&m.topic, private),
            join_ref: if m.join_ref.is_null() {
                m.msg_ref.clone()
            } else {
                m.join_ref.clone()
            },
            broadcast_self: flag(["broadcast", "self"]),
            broadcast_ack: flag(["broadcast", "ack"]),
            presence_enabled: AtomicBool::new(flag(["presence", "enabled"])),
            presence_key,
            pg,
            identity: RwLock::new(identity),
            can_write: AtomicBool::new(can_write),
        });
        Ok((member, echoed))
    }

    /// One postgres_changes binding: validated against the database, echoed back with its id
    /// exactly as the client sent it (realtime-js compares them field by field).
    async fn binding(&self, b: &Value, identity: &Identity) -> Result<(PgBinding, Value), String> {
        let s = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
        let event_raw = s("event").unwrap_or_else(|| "*".into());
        let event = event_raw.to_ascii_uppercase();
        if !["*", "INSERT", "UPDATE", "DELETE"].contains(&event.as_str()) {
            return Err(format!("invalid postgres_changes event {event_raw:?}"));
        }
        let schema = s("schema").ok_or("postgres_changes bindings need a schema")?;
        let table = s("table");
        let filter_raw = s("filter");
        let filter = match filter_raw.as_deref().filter(|f| !f.is_empty()) {
            Some(f) => Some(super::changes::Filter::parse(f)?),
            None => None,
        };
        let unable = || {
            format!(
                "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [schema: {schema}, table: {}, filters: [{}]]",
                table.as_deref().unwrap_or("*"),
                filter_raw.as_deref().unwrap_or("")
            )
        };
        check_binding(&self.state, &schema, table.as_deref(), &identity.role)
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "realtime: binding refused");
                unable()
            })?;
        let id = binding_id(&event, &schema, table.as_deref(), filter_raw.as_deref());
        let mut echo = serde_json::Map::new();
        echo.insert("id".into(), id.into());
        echo.insert("event".into(), event_raw.into());
        echo.insert("schema".into(), schema.clone().into());
        if let Some(t) = &table {
            echo.insert("table".into(), t.clone().into());
        }
        if let Some(f) = &filter_raw {
            echo.insert("filter".into(), f.clone().into());
        }
        Ok((
            PgBinding {
                id,
                event,
                schema,
                table,
                filter,
            },
            Value::Object(echo),
        ))
    }

    async fn broadcast(
        &mut self,
        session: &mut actix_ws::Session,
        member: &Arc<Member>,
        m: Incoming,
    ) -> Next {
        if !member.can_write.load(Ordering::Relaxed) {
            return if member.broadcast_ack {
                self.reply(session, &m, "error", json!({"reason": "Unauthorized: You do not have permissions to write to this Channel topic"}))
                    .await
            } else {
                Next::Continue
            };
        }
        let (event, body, binary) = match m.binary_broadcast.clone() {
            Some((event, body)) => (event, body, true),
            None => {
                let event = m
                    .payload
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let body = m.payload.get("payload").cloned().unwrap_or(json!({}));
                (event, BroadcastBody::json(&body), false)
            }
        };
        self.rt.publish(Broadcast {
            key: member.key.clone(),
            topic: member.topic.clone(),
            event,
            body,
            binary,
            from: Some(member.id),
        });
        if member.broadcast_ack {
            return self.reply(session, &m, "ok", json!({})).await;
        }
        Next::Continue
    }

    async fn presence(
        &mut self,
        session: &mut actix_ws::Session,
        member: &Arc<Member>,
        m: Incoming,
    ) -> Next {
        match m.payload.get("event").and_then(Value::as_str) {
            Some("track") => {
                let meta = m.payload.get("payload").cloned().unwrap_or(json!({}));
                self.rt.hub.track(member, meta);
                self.reply(session, &m, "ok", json!({})).await
            }
            Some("untrack") => {
                self.rt.hub.untrack(member);
                self.reply(session, &m, "ok", json!({})).await
            }
            _ => {
                self.reply(
                    session,
                    &m,
                    "error",
                    json!({"reason": "presence event must be track or untrack"}),
                )
                .await
            }
        }
    }

    async fn access_token(
        &mut self,
        session: &mut actix_ws::Session,
        member: &Arc<Member>,
        m: Incoming,
    ) -> Next {
        let Some(token) = m.payload.get("access_token").and_then(Value::as_str) else {
            return Next::Continue;
        };
        if token.starts_with("sb_") {
            return Next::Continue;
        }
        let identity = match Identity::from_jwt(&self.state.jwt, token) {
            Ok(i) => i,
            Err(e) => {
                let msg = if e.to_lowercase().contains("expired") {
                    "Token has expired 0 seconds ago".to_string()
                } else {
                    format!("Invalid JWT: {e}")
                };
                return self.shut_channel(session, member, &msg).await;
            }
        };
        if member.key.starts_with("private:") {
            match channel_access(&self.state, &member.topic, &identity).await {
                Ok((true, write)) => member.can_write.store(write, Ordering::Relaxed),
                Ok((false, _)) => {
                    let msg =
                        "Unauthorized: You do not have permissions to read from this Channel topic";
                    return self.shut_channel(session, member, msg).await;
                }
                Err(e) => return self.shut_channel(session, member, &e).await,
            }
        }
        member.set_identity(identity);
        Next::Continue
    }
}

/// A binding's id: a hash of what it selects, as Supabase derives it, so identical
/// subscriptions share an id and the change pipeline can send one frame to all of them.
/// 32 bits keep it a safe JavaScript integer.
pub fn binding_id(event: &str, schema: &str, table: Option<&str>, filter: Option<&str>) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [event, schema, table.unwrap_or("*"), filter.unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

/// May this identity read from (join) and write to (send on) a private topic? Decided by
/// the RLS policies on `realtime.messages`, in a transaction that is rolled back.
pub async fn channel_access(
    state: &AppState,
    topic: &str,
    identity: &Identity,
) -> Result<(bool, bool), String> {
    if identity.role == crate::auth::jwt::SERVICE_ROLE {
        return Ok((true, true));
    }
    let sub = topic.strip_prefix("realtime:").unwrap_or(topic);
    let fail = |e: String| {
        tracing::warn!(error = %e, "realtime: channel authorisation failed");
        "Unauthorized: could not check channel permissions".to_string()
    };
    let client = state.pool.get().await.map_err(|e| fail(e.to_string()))?;
    let stmt = client
        .prepare_cached("SELECT realtime.fluxbase_channel_access($1, $2, $3)")
        .await
        .map_err(|e| fail(e.to_string()))?;
    let claims: &str = &identity.claims_json;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&sub, &identity.role, &claims];
    let (b, q, r) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.query_one(&stmt, &params),
        client.batch_execute("ROLLBACK")
    );
    b.map_err(|e| fail(e.to_string()))?;
    r.map_err(|e| fail(e.to_string()))?;
    let v: Vec<bool> = q.map_err(|e| fail(e.to_string()))?.get(0);
    Ok((
        v.first().copied().unwrap_or(false),
        v.get(1).copied().unwrap_or(false),
    ))
}

/// A binding's schema/table must exist and the role must be allowed to SELECT from it.
async fn check_binding(
    state: &AppState,
    schema: &str,
    table: Option<&str>,
    role: &str,
) -> Result<(), String> {
    let client = state.pool.get().await.map_err(|e| e.to_string())?;
    let row = match table.filter(|t| *t != "*") {
        Some(t) => client
            .query_opt(
                "SELECT has_table_privilege($3, c.oid, 'SELECT') FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &t, &role],
            )
            .await,
        None if schema == "*" => return Ok(()),
        None => client
            .query_opt(
                "SELECT has_schema_privilege($2, n.oid, 'USAGE') FROM pg_catalog.pg_namespace n WHERE n.nspname = $1",
                &[&schema, &role],
            )
            .await,
    }
    .map_err(|e| e.to_string())?;
    match row.map(|r| r.get::<_, bool>(0)) {
        Some(true) => Ok(()),
        Some(false) => Err(format!(
            "role {role} may not read {schema}.{}",
            table.unwrap_or("*")
        )),
        None => Err(format!("{schema}.{} does not exist", table.unwrap_or("*"))),
    }
}
