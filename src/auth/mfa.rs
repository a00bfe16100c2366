//! MFA as GoTrue serves it, with TOTP (RFC 6238) and phone factors: enroll a factor (TOTP:
//! secret, `otpauth://` URI and an SVG QR code; phone: the number), challenge it (phone: a
//! code texted through `sms`, its hash kept with the challenge), verify a code (the session
//! becomes `aal2` and its tokens say so from then on, refreshed ones too), and unenroll (a
//! verified factor only from an `aal2` session).

use super::api::current;
use super::service::{self, db, gotrue};
use crate::app::AppState;
use crate::auth::AuthContext;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// Seconds per TOTP step.
pub const STEP_SECS: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Seconds a challenge stays valid (GoTrue's default).
pub const CHALLENGE_SECS: i64 = 300;

/// The HOTP value of `counter` (RFC 4226) with `DIGITS` digits.
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    // HMAC takes keys of any length: the error arm cannot happen.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret) else {
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    bin % 10u32.pow(DIGITS)
}

/// Whether `code` is the TOTP of `secret` at `unix_secs`, one step either side allowed
/// (clock drift), as GoTrue accepts.
pub fn totp_ok(secret: &[u8], code: &str, unix_secs: u64) -> bool {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(want) = code.parse::<u32>() else {
        return false;
    };
    let step = unix_secs / STEP_SECS;
    [step.saturating_sub(1), step, step + 1]
        .iter()
        .any(|s| hotp(secret, *s) == want)
}

/// GoTrue's `mfa_factor_name_conflict` (422).
fn name_conflict(friendly: &Option<String>) -> ApiError {
    gotrue(
        422,
        "mfa_factor_name_conflict",
        format!(
            "A factor with the friendly name \"{}\" for this user already exists",
            friendly.clone().unwrap_or_default()
        ),
    )
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

fn unbase32(s: &str) -> Option<Vec<u8>> {
    data_encoding::BASE32_NOPAD.decode(s.as_bytes()).ok()
}

/// Body of `POST /factors`.
#[derive(Debug, Deserialize)]
pub struct EnrollBody {
    factor_type: Option<String>,
    friendly_name: Option<String>,
    issuer: Option<String>,
    phone: Option<String>,
}

fn pct(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `POST /factors`: a new unverified TOTP factor.
pub async fn enroll(
    state: web::Data<AppState>,
    ctx: AuthContext,
    body: web::Json<EnrollBody>,
) -> Result<HttpResponse, ApiError> {
    let (uid, _) = current(&state, &ctx).await?;
    let b = body.into_inner();
    match b.factor_type.as_deref() {
        Some("totp") => {}
        Some("phone") => return enroll_phone(&state, uid, b).await,
        Some("webauthn") => {
            return Err(gotrue(
                422,
                "mfa_factor_type_not_supported",
                "Only totp and phone factors are supported",
            ))
        }
        _ => {
            return Err(gotrue(
                400,
                "validation_failed",
                "factor_type needs to be totp or phone",
            ))
        }
    }
    let secret: [u8; 20] = rand::random();
    let secret_b32 = base32(&secret);
    let issuer = b.issuer.filter(|i| !i.is_empty()).unwrap_or_else(|| {
        url::Url::parse(&state.config.auth.site_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "Fluxbase".into())
    });
    let c = state.pool.get().await?;
    let user = service::user_by_id(&**c, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    let account = user.json["email"]
        .as_str()
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| uid.to_string());
    let friendly = b.friendly_name.filter(|n| !n.is_empty());
    let id: Uuid = c
        .query_opt(
            "INSERT INTO auth.mfa_factors (user_id, friendly_name, factor_type, secret)
             VALUES ($1, $2, 'totp', $3)
             ON CONFLICT DO NOTHING RETURNING id",
            &[&uid, &friendly, &secret_b32],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| name_conflict(&friendly))?
        .get(0);
    let uri = format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}",
        pct(&issuer),
        pct(&account),
        pct(&issuer)
    );
    let qr = qrcode::QrCode::new(uri.as_bytes())
        .map_err(ApiError::internal)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "type": "totp",
        "friendly_name": friendly.unwrap_or_default(),
        "totp": {
            // The SVG itself, as GoTrue answers: auth-js prefixes the data URL.
            "qr_code": qr,
            "secret": secret_b32,
            "uri": uri,
        },
    })))
}

/// `POST /factors` with `factor_type: phone`: a new unverified factor for that number.
async fn enroll_phone(
    state: &AppState,
    uid: Uuid,
    b: EnrollBody,
) -> Result<HttpResponse, ApiError> {
    if !state.config.auth.sms.mfa_enabled {
        return Err(gotrue(
            422,
            "mfa_phone_enroll_not_enabled",
            "MFA enroll is disabled for Phone",
        ));
    }
    let phone = b
        .phone
        .as_deref()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            gotrue(
                400,
                "validation_failed",
                "Phone number required to enroll Phone factor",
            )
        })
        .and_then(super::sms::normalise)?;
    let friendly = b.friendly_name.filter(|n| !n.is_empty());
    let c = state.pool.get().await?;
    let taken: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM auth.mfa_factors WHERE user_id = $1 AND factor_type = 'phone'
                              AND phone = $2 AND status = 'verified')",
            &[&uid, &phone],
        )
        .await
        .map_err(db)?
        .get(0);
    if taken {
        return Err(gotrue(
            422,
            "mfa_verified_factor_exists",
            "A verified phone factor already exists, unenroll the existing factor to continue",
        ));
    }
    let id: Uuid = c
        .query_opt(
            "INSERT INTO auth.mfa_factors (user_id, friendly_name, factor_type, secret, phone)
             VALUES ($1, $2, 'phone', '', $3)
             ON CONFLICT DO NOTHING RETURNING id",
            &[&uid, &friendly, &phone],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| name_conflict(&friendly))?
        .get(0);
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "type": "phone",
        "friendly_name": friendly.unwrap_or_default(),
        "phone": phone,
    })))
}

/// A factor of the user: TOTP secret (`''` for phone factors), status, type, number, and
/// seconds until another SMS may be sent for it (`auth.sms.max_frequency_secs`).
struct Factor {
    secret: String,
    status: String,
    kind: String,
    phone: Option<String>,
    wait_secs: Option<f64>,
}

async fn own_factor(
    c: &tokio_postgres::Client,
    state: &AppState,
    uid: Uuid,
    fid: Uuid,
) -> Result<Factor, ApiError> {
    c.query_opt(
        "SELECT secret, status, factor_type, phone,
                extract(epoch FROM last_challenged_at + make_interval(secs => $3) - now())::float8
           FROM auth.mfa_factors WHERE id = $1 AND user_id = $2",
        &[
            &fid,
            &uid,
            &(state.config.auth.sms.max_frequency_secs as f64),
        ],
    )
    .await
    .map_err(db)?
    .map(|r| Factor {
        secret: r.get(0),
        status: r.get(1),
        kind: r.get(2),
        phone: r.get(3),
        wait_secs: r.get(4),
    })
    .ok_or_else(|| {
        gotrue(
            404,
            "mfa_factor_not_found",
            format!("Factor not found: {fid}"),
        )
    })
}

fn client_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// `POST /factors/{id}/challenge`.
pub async fn challenge(
    state: web::Data<AppState>,
    ctx: AuthContext,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (uid, _) = current(&state, &ctx).await?;
    let fid = path.into_inner();
    let mut c = state.pool.get().await?;
    let factor = own_factor(&c, &state, uid, fid).await?;
    // A phone factor's challenge texts a code; only its hash is kept with the challenge.
    let (code, phone, channel) = match factor.phone.as_deref().filter(|_| factor.kind == "phone") {
        Some(phone) => {
            if !state.config.auth.sms.mfa_enabled {
                return Err(gotrue(
                    422,
                    "mfa_phone_verify_not_enabled",
                    "MFA verification is disabled for Phone",
                ));
            }
            let requested: Option<String> = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("channel").and_then(Value::as_str).map(str::to_string));
            let channel = super::sms::channel(&state.config.auth.sms, requested.as_deref())?;
            if let Some(w) = factor.wait_secs.filter(|w| *w > 0.0) {
                let secs = w.ceil() as u64;
                return Err(super::sms::over_sms_limit(
                    format!(
                        "For security purposes, you can only request this after {secs} seconds."
                    ),
                    secs,
                ));
            }
            super::sms::check_hourly(&state)?;
            let code = super::sms::new_code(state.config.auth.sms.otp_length);
            (Some(code), Some(phone.to_string()), channel)
        }
        None => (None, None, "sms"),
    };
    let tx = c.transaction().await.map_err(db)?;
    let row = tx
        .query_one(
            "WITH f AS (UPDATE auth.mfa_factors SET last_challenged_at = now() WHERE id = $1)
             INSERT INTO auth.mfa_challenges (factor_id, ip_address, otp_code) VALUES ($1, $2, $3)
             RETURNING id, extract(epoch FROM created_at)::bigint",
            &[
                &fid,
                &client_ip(&req),
                &code.as_deref().map(service::hash_token),
            ],
        )
        .await
        .map_err(db)?;
    if let (Some(code), Some(phone)) = (&code, &phone) {
        super::sms::enqueue(&*tx, &state, uid, phone, "mfa", channel, code).await?;
    }
    tx.commit().await.map_err(db)?;
    let (id, created): (Uuid, i64) = (row.get(0), row.get(1));
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "type": factor.kind,
        "expires_at": created + CHALLENGE_SECS,
    })))
}

/// Body of `POST /factors/{id}/verify`.
#[derive(Debug, Deserialize)]
pub struct VerifyBody {
    challenge_id: Option<Uuid>,
    code: Option<String>,
}

/// `POST /factors/{id}/verify`: a correct code makes the session aal2 and returns new tokens.
pub async fn verify(
    state: web::Data<AppState>,
    ctx: AuthContext,
    path: web::Path<Uuid>,
    body: web::Json<VerifyBody>,
) -> Result<HttpResponse, ApiError> {
    let (uid, session) = current(&state, &ctx).await?;
    let fid = path.into_inner();
    let b = body.into_inner();
    let (Some(cid), Some(code)) = (b.challenge_id, b.code) else {
        return Err(gotrue(
            400,
            "validation_failed",
            "challenge_id and code are required",
        ));
    };
    let mut c = state.pool.get().await?;
    let factor = own_factor(&c, &state, uid, fid).await?;
    let tx = c.transaction().await.map_err(db)?;
    // The challenge is consumed in this transaction whatever the outcome of a correct code;
    // locked so two verifications of one challenge cannot both pass.
    let ch = tx
        .query_opt(
            "SELECT created_at > now() - make_interval(secs => $3), otp_code FROM auth.mfa_challenges
              WHERE id = $1 AND factor_id = $2 AND verified_at IS NULL FOR UPDATE",
            &[&cid, &fid, &(CHALLENGE_SECS as f64)],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| {
            gotrue(
                404,
                "mfa_challenge_not_found",
                format!("Challenge not found: {cid}"),
            )
        })?;
    if !ch.get::<_, bool>(0) {
        tx.execute("DELETE FROM auth.mfa_challenges WHERE id = $1", &[&cid])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        return Err(gotrue(
            422,
            "mfa_challenge_expired",
            format!("MFA challenge {cid} has expired, verify against another challenge or create a new challenge."),
        ));
    }
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let method = if factor.kind == "phone" {
        if !state.config.auth.sms.mfa_enabled {
            return Err(gotrue(
                422,
                "mfa_phone_verify_not_enabled",
                "MFA verification is disabled for Phone",
            ));
        }
        let want: Option<String> = ch.get(1);
        let got = service::hash_token(code.trim());
        if !want.is_some_and(|w| constant_time_eq(w.as_bytes(), got.as_bytes())) {
            return Err(gotrue(
                422,
                "mfa_verification_failed",
                "Invalid MFA Phone code entered",
            ));
        }
        "mfa/phone"
    } else {
        let key = unbase32(&factor.secret)
            .ok_or_else(|| ApiError::internal("stored TOTP secret is not base32"))?;
        if !totp_ok(&key, code.trim(), now) {
            return Err(gotrue(
                422,
                "mfa_verification_failed",
                "Invalid TOTP code entered",
            ));
        }
        "totp"
    };
    let amr = json!([{"method": method, "timestamp": now}]);
    tx.execute(
        "WITH ch AS (UPDATE auth.mfa_challenges SET verified_at = now() WHERE id = $1),
              f AS (UPDATE auth.mfa_factors SET status = 'verified', updated_at = now() WHERE id = $2)
         UPDATE auth.sessions SET aal = 'aal2', factor_id = $2, amr = $4 || amr, updated_at = now()
          WHERE id = $3",
        &[&cid, &fid, &session, &amr],
    )
    .await
    .map_err(db)?;
    let user = service::user_by_id(&*tx, uid)
        .await?
        .ok_or_else(|| gotrue(404, "user_not_found", "User not found"))?;
    let out = service::issue_session(
        &*tx,
        &state.config,
        &state.jwt,
        &user,
        method,
        Some(session),
        None,
    )
    .await?;
    tx.commit().await.map_err(db)?;
    Ok(HttpResponse::Ok().json(out))
}

/// `DELETE /factors/{id}`: a verified factor needs an aal2 session to go.
pub async fn unenroll(
    state: web::Data<AppState>,
    ctx: AuthContext,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (uid, _) = current(&state, &ctx).await?;
    let fid = path.into_inner();
    let c = state.pool.get().await?;
    let status = own_factor(&c, &state, uid, fid).await?.status;
    let aal = ctx
        .claims
        .get("aal")
        .and_then(Value::as_str)
        .unwrap_or("aal1");
    if status == "verified" && aal != "aal2" {
        return Err(gotrue(
            403,
            "insufficient_aal",
            "AAL2 required to unenroll verified factor",
        ));
    }
    c.execute("DELETE FROM auth.mfa_factors WHERE id = $1", &[&fid])
        .await
        .map_err(db)?;
    Ok(HttpResponse::Ok().json(json!({"id": fid})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B (SHA-1 seed "12345678901234567890"), 6 low digits of the 8.
        let seed = b"12345678901234567890";
        for (t, code8) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
        ] {
            assert_eq!(hotp(seed, t / STEP_SECS), code8 % 1_000_000, "t = {t}");
        }
    }

    #[test]
    fn window_and_format() {
        let seed = b"12345678901234567890";
        let t = 1234567890u64;
        let code = format!("{:06}", hotp(seed, t / STEP_SECS));
        assert!(totp_ok(seed, &code, t));
        assert!(totp_ok(seed, &code, t + STEP_SECS), "one step late is fine");
        assert!(
            totp_ok(seed, &code, t - STEP_SECS),
            "one step early is fine"
        );
        assert!(!totp_ok(seed, &code, t + 3 * STEP_SECS));
        assert!(!totp_ok(seed, "12345", t));
        assert!(!totp_ok(seed, "12345a", t));
        assert_eq!(unbase32(&base32(seed)).unwrap(), seed);
    }
}
