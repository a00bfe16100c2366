//! The Phoenix channel wire format as supabase/realtime speaks it (pure; no IO).
//!
//! - vsn 1.0.0: text frames holding a JSON object `{join_ref, ref, topic, event, payload}`.
//! - vsn 2.0.0: text frames holding a JSON array `[join_ref, ref, topic, event, payload]`, and
//!   binary frames for user broadcasts: kind 3 (client → server push) and kind 4 (server →
//!   client broadcast), whose layout realtime-js's `serializer.ts` defines.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;

/// The protocol version a socket negotiated with `?vsn=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// JSON object frames.
    V1,
    /// JSON array frames + binary broadcast frames.
    V2,
}

impl Vsn {
    /// `?vsn=` → version; absent means 1.0.0 (Phoenix's default), unknown is refused.
    pub fn parse(v: Option<&str>) -> Option<Vsn> {
        match v {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            _ => None,
        }
    }
}

/// Kind byte of a client → server user broadcast push.
pub const KIND_USER_BROADCAST_PUSH: u8 = 3;
/// Kind byte of a server → client user broadcast.
pub const KIND_USER_BROADCAST: u8 = 4;
/// Payload encodings inside binary broadcast frames.
pub const ENCODING_BINARY: u8 = 0;
/// JSON payload encoding.
pub const ENCODING_JSON: u8 = 1;

/// A user broadcast's payload: JSON, or raw bytes (binary frames with encoding 0).
#[derive(Debug, Clone)]
pub enum BroadcastBody {
    /// JSON text (text frames, or binary frames with encoding 1), passed through as it came:
    /// never re-read as numbers (jsonb prints numerics up to 1e131072 as digits, which an
    /// f64 cannot hold) and serialised once per broadcast.
    Json(Box<RawValue>),
    /// Opaque bytes (binary frames with encoding 0).
    Binary(Bytes),
}

impl PartialEq for BroadcastBody {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (BroadcastBody::Json(a), BroadcastBody::Json(b)) => a.get() == b.get(),
            (BroadcastBody::Binary(a), BroadcastBody::Binary(b)) => a == b,
            _ => false,
        }
    }
}

impl BroadcastBody {
    /// A JSON body from a value.
    pub fn json(v: &Value) -> BroadcastBody {
        BroadcastBody::Json(raw(v))
    }
}

/// A value as JSON text (serialising a `Value` cannot fail: its keys are strings).
pub fn raw(v: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| null())
}

/// JSON `null`.
pub fn null() -> Box<RawValue> {
    Box::default()
}

/// One message from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// `join_ref` (echoed verbatim in replies).
    pub join_ref: Value,
    /// `ref` (echoed verbatim in replies).
    pub msg_ref: Value,
    /// Topic (`realtime:room1`, or `phoenix`).
    pub topic: String,
    /// Event (`phx_join`, `heartbeat`, `broadcast`, …).
    pub event: String,
    /// JSON payload; for binary broadcast pushes `{type, event, meta?}` without the body.
    pub payload: Value,
    /// The body of a binary broadcast push (kind 3).
    pub binary_broadcast: Option<(String, BroadcastBody)>,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON / not the frame shape of the version.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A binary frame of a kind clients may not send.
    #[error("unsupported binary frame kind {0}")]
    Kind(u8),
}

fn malformed(s: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(s.into())
}

fn str_field(v: Value, what: &str) -> Result<String, DecodeError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(malformed(format!("{what} must be a string"))),
    }
}

/// Reads a text frame.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Incoming, DecodeError> {
    let v: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let (join_ref, msg_ref, topic, event, payload) = match (vsn, v) {
        (Vsn::V2, Value::Array(a)) if a.len() == 5 => {
            let mut it = a.into_iter();
            let mut next = || it.next().unwrap_or(Value::Null);
            (next(), next(), next(), next(), next())
        }
        (Vsn::V1, Value::Object(mut o)) => (
            o.remove("join_ref").unwrap_or(Value::Null),
            o.remove("ref").unwrap_or(Value::Null),
            o.remove("topic").unwrap_or(Value::Null),
            o.remove("event").unwrap_or(Value::Null),
            o.remove("payload").unwrap_or(Value::Null),
        ),
        (Vsn::V2, _) => return Err(malformed("expected [join_ref, ref, topic, event, payload]")),
        (Vsn::V1, _) => return Err(malformed("expected {join_ref, ref, topic, event, payload}")),
    };
    Ok(Incoming {
        join_ref,
        msg_ref,
        topic: str_field(topic, "topic")?,
        event: str_field(event, "event")?,
        payload,
        binary_broadcast: None,
    })
}

/// Reads a binary frame (vsn 2 only): a kind-3 user broadcast push.
pub fn decode_binary(buf: &[u8]) -> Result<Incoming, DecodeError> {
    let kind = *buf.first().ok_or_else(|| malformed("empty binary frame"))?;
    if kind != KIND_USER_BROADCAST_PUSH {
        return Err(DecodeError::Kind(kind));
    }
    if buf.len() < 7 {
        return Err(malformed("binary frame header is truncated"));
    }
    let lens = [buf[1], buf[2], buf[3], buf[4], buf[5]].map(usize::from);
    let encoding = buf[6];
    let mut at = 7;
    let mut strings = Vec::with_capacity(5);
    for n in lens {
        let s = buf
            .get(at..at + n)
            .ok_or_else(|| malformed("binary frame is shorter than its header says"))?;
        strings.push(
            std::str::from_utf8(s)
                .map_err(|_| malformed("binary frame field is not UTF-8"))?
                .to_string(),
        );
        at += n;
    }
    let body = &buf[at..];
    let [join_ref, msg_ref, topic, event, meta]: [String; 5] = strings
        .try_into()
        .map_err(|_| malformed("binary frame header"))?;
    let body = match encoding {
        ENCODING_JSON => BroadcastBody::Json(
            std::str::from_utf8(body)
                .map_err(|e| malformed(format!("payload: {e}")))
                .and_then(|t| {
                    RawValue::from_string(t.trim().to_string())
                        .map_err(|e| malformed(format!("payload: {e}")))
                })?,
        ),
        ENCODING_BINARY => BroadcastBody::Binary(Bytes::copy_from_slice(body)),
        e => return Err(malformed(format!("unknown payload encoding {e}"))),
    };
    let mut payload = serde_json::json!({"type": "broadcast", "event": event});
    if !meta.is_empty() {
        let m: Value =
            serde_json::from_str(&meta).map_err(|e| malformed(format!("metadata: {e}")))?;
        if let (Value::Object(p), Value::Object(m)) = (&mut payload, m) {
            for (k, v) in m {
                p.entry(k).or_insert(v);
            }
        }
    }
    let opt = |s: String| {
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s)
        }
    };
    Ok(Incoming {
        join_ref: opt(join_ref),
        msg_ref: opt(msg_ref),
        topic,
        event: "broadcast".into(),
        payload,
        binary_broadcast: Some((event, body)),
    })
}

/// A frame to send: text or binary.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame.
    Text(bytestring::ByteString),
    /// A binary frame.
    Binary(Bytes),
}

/// Encodes a message as a text frame of the socket's version. `payload` is JSON text
/// (already serialised, so fan-out serialises once).
pub fn encode(
    vsn: Vsn,
    join_ref: &Value,
    msg_ref: &Value,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    let jr = serde_json::to_string(join_ref).unwrap_or_else(|_| "null".into());
    let r = serde_json::to_string(msg_ref).unwrap_or_else(|_| "null".into());
    let t = Value::from(topic).to_string();
    let e = Value::from(event).to_string();
    match vsn {
        Vsn::V2 => format!("[{jr},{r},{t},{e},{payload}]"),
        Vsn::V1 => {
            format!(r#"{{"join_ref":{jr},"ref":{r},"topic":{t},"event":{e},"payload":{payload}}}"#)
        }
    }
}

/// A server push (no ref) as a text frame.
pub fn push(vsn: Vsn, topic: &str, event: &str, payload: &str) -> String {
    encode(vsn, &Value::Null, &Value::Null, topic, event, payload)
}

/// A `phx_reply` to a client message.
pub fn reply(vsn: Vsn, to: &Incoming, status: &str, response: &Value) -> String {
    let payload = serde_json::json!({"status": status, "response": response}).to_string();
    encode(
        vsn,
        &to.join_ref,
        &to.msg_ref,
        &to.topic,
        "phx_reply",
        &payload,
    )
}

/// The error reply to a frame that could not be read (`reason`): addressed with whatever
/// refs and topic can be found in it, else to topic `phoenix` with null refs.
pub fn bad_frame_reply(vsn: Vsn, frame: Option<&str>, reason: &str) -> String {
    let v: Value = frame
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let (jr, r, topic) = match (vsn, &v) {
        (Vsn::V2, Value::Array(a)) => (
            a.first().cloned(),
            a.get(1).cloned(),
            a.get(2).and_then(Value::as_str),
        ),
        (Vsn::V1, Value::Object(o)) => (
            o.get("join_ref").cloned(),
            o.get("ref").cloned(),
            o.get("topic").and_then(Value::as_str),
        ),
        _ => (None, None, None),
    };
    let scalar = |x: Option<Value>| match x {
        Some(v @ (Value::String(_) | Value::Number(_))) => v,
        _ => Value::Null,
    };
    let payload = serde_json::json!({"status": "error", "response": {"reason": reason}});
    encode(
        vsn,
        &scalar(jr),
        &scalar(r),
        topic.unwrap_or("phoenix"),
        "phx_reply",
        &payload.to_string(),
    )
}

/// A kind-4 user broadcast frame (vsn 2). Fields longer than 255 bytes cannot be encoded
/// (realtime-js refuses them on the way in, so they never occur from it).
pub fn encode_user_broadcast(
    topic: &str,
    event: &str,
    meta: &str,
    body: &BroadcastBody,
) -> Option<Bytes> {
    let len = |s: &str| u8::try_from(s.len()).ok();
    let (tl, el, ml) = (len(topic)?, len(event)?, len(meta)?);
    let (encoding, payload): (u8, std::borrow::Cow<'_, [u8]>) = match body {
        BroadcastBody::Json(v) => (ENCODING_JSON, v.get().as_bytes().into()),
        BroadcastBody::Binary(b) => (ENCODING_BINARY, b.as_ref().into()),
    };
    let mut out =
        BytesMut::with_capacity(5 + topic.len() + event.len() + meta.len() + payload.len());
    out.put_u8(KIND_USER_BROADCAST);
    out.put_u8(tl);
    out.put_u8(el);
    out.put_u8(ml);
    out.put_u8(encoding);
    out.put_slice(topic.as_bytes());
    out.put_slice(event.as_bytes());
    out.put_slice(meta.as_bytes());
    out.put_slice(&payload);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vsn_parsing() {
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("1.0.0")), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
    }

    #[test]
    fn decodes_both_text_shapes() {
        let a = decode_text(Vsn::V2, r#"["1","2","realtime:room","phx_join",{"x":1}]"#).unwrap();
        assert_eq!(a.join_ref, json!("1"));
        assert_eq!(a.msg_ref, json!("2"));
        assert_eq!(a.topic, "realtime:room");
        assert_eq!(a.event, "phx_join");
        assert_eq!(a.payload, json!({"x":1}));
        let b = decode_text(
            Vsn::V1,
            r#"{"join_ref":"1","ref":"2","topic":"realtime:room","event":"phx_join","payload":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        // The other version's shape is refused, as are broken frames.
        assert!(decode_text(Vsn::V1, r#"["1","2","t","e",{}]"#).is_err());
        assert!(decode_text(Vsn::V2, r#"{"topic":"t"}"#).is_err());
        assert!(decode_text(Vsn::V2, r#"["1","2",3,"e",{}]"#).is_err());
        assert!(decode_text(Vsn::V2, r#"["1","2","t","e"]"#).is_err());
        assert!(decode_text(Vsn::V2, "not json").is_err());
    }

    fn kind3(
        join_ref: &str,
        r: &str,
        topic: &str,
        event: &str,
        meta: &str,
        enc: u8,
        body: &[u8],
    ) -> Vec<u8> {
        let mut v = vec![
            3,
            join_ref.len() as u8,
            r.len() as u8,
            topic.len() as u8,
            event.len() as u8,
            meta.len() as u8,
            enc,
        ];
        for s in [join_ref, r, topic, event, meta] {
            v.extend_from_slice(s.as_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_kind3_pushes() {
        let f = kind3("1", "5", "realtime:room", "cursor", "", 1, br#"{"x":3}"#);
        let m = decode_binary(&f).unwrap();
        assert_eq!(m.topic, "realtime:room");
        assert_eq!(m.event, "broadcast");
        assert_eq!(m.join_ref, json!("1"));
        assert_eq!(m.msg_ref, json!("5"));
        assert_eq!(m.payload, json!({"type":"broadcast","event":"cursor"}));
        assert_eq!(
            m.binary_broadcast,
            Some(("cursor".into(), BroadcastBody::json(&json!({"x":3}))))
        );
        let f = kind3("", "", "realtime:r", "bin", r#"{"k":1}"#, 0, &[0, 159, 146]);
        let m = decode_binary(&f).unwrap();
        assert_eq!(m.join_ref, Value::Null);
        assert_eq!(m.payload, json!({"type":"broadcast","event":"bin","k":1}));
        assert_eq!(
            m.binary_broadcast,
            Some((
                "bin".into(),
                BroadcastBody::Binary(Bytes::from_static(&[0, 159, 146]))
            ))
        );
    }

    #[test]
    fn refuses_bad_binary_frames() {
        assert!(decode_binary(&[]).is_err());
        assert_eq!(decode_binary(&[4, 0, 0]), Err(DecodeError::Kind(4)));
        assert!(decode_binary(&[3, 1, 1]).is_err());
        // Header promises more bytes than the frame has.
        assert!(decode_binary(&[3, 9, 0, 0, 0, 0, 1, b'a']).is_err());
        let bad_json = kind3("1", "2", "t", "e", "", 1, b"{nope");
        assert!(decode_binary(&bad_json).is_err());
        let bad_enc = kind3("1", "2", "t", "e", "", 7, b"{}");
        assert!(decode_binary(&bad_enc).is_err());
    }

    #[test]
    fn encodes_frames_per_version() {
        let m = decode_text(Vsn::V2, r#"["1","2","realtime:a","phx_join",{}]"#).unwrap();
        let r = reply(Vsn::V2, &m, "ok", &json!({}));
        assert_eq!(
            serde_json::from_str::<Value>(&r).unwrap(),
            json!(["1", "2", "realtime:a", "phx_reply", {"status":"ok","response":{}}])
        );
        let r = reply(Vsn::V1, &m, "ok", &json!({}));
        assert_eq!(
            serde_json::from_str::<Value>(&r).unwrap(),
            json!({"join_ref":"1","ref":"2","topic":"realtime:a","event":"phx_reply","payload":{"status":"ok","response":{}}})
        );
        let p = push(Vsn::V2, "realtime:a\"", "x", "{}");
        assert_eq!(
            serde_json::from_str::<Value>(&p).unwrap(),
            json!([null, null, "realtime:a\"", "x", {}])
        );
    }

    #[test]
    fn bad_frames_get_addressed_error_replies() {
        let r = bad_frame_reply(Vsn::V2, Some(r#"["1","7","realtime:a","x"]"#), "bad");
        assert_eq!(
            serde_json::from_str::<Value>(&r).unwrap(),
            json!(["1", "7", "realtime:a", "phx_reply", {"status":"error","response":{"reason":"bad"}}])
        );
        let r = bad_frame_reply(Vsn::V1, Some("not json"), "bad");
        assert_eq!(
            serde_json::from_str::<Value>(&r).unwrap(),
            json!({"join_ref":null,"ref":null,"topic":"phoenix","event":"phx_reply","payload":{"status":"error","response":{"reason":"bad"}}})
        );
        let r = bad_frame_reply(Vsn::V2, Some(r#"[{"a":1},[],3,"e",{}]"#), "bad");
        assert_eq!(serde_json::from_str::<Value>(&r).unwrap()[2], "phoenix");
    }

    #[test]
    fn encodes_kind4_as_realtime_js_reads_it() {
        let f = encode_user_broadcast(
            "realtime:r",
            "ev",
            "",
            &BroadcastBody::json(&json!({"a":1})),
        )
        .unwrap();
        assert_eq!(&f[..5], &[4, 10, 2, 0, 1]);
        assert_eq!(&f[5..15], b"realtime:r");
        assert_eq!(&f[15..17], b"ev");
        assert_eq!(&f[17..], br#"{"a":1}"#);
        let long = "x".repeat(300);
        assert!(encode_user_broadcast(&long, "e", "", &BroadcastBody::json(&json!(1))).is_none());
    }
}
