//! TUS 1.0.0 resumable uploads at `/upload/resumable`, as Supabase Storage serves them
//! (core, creation, creation-with-upload, termination, expiration), so `tus-js-client` and
//! Uppy work unchanged with Supabase's `metadata` (`bucketName`, `objectName`,
//! `contentType`, `cacheControl`, `metadata`) and `x-upsert`.
//!
//! - **State in the database.** One `storage.tus_uploads` row per upload holds its length,
//!   offset, target and creator, so any instance answers for any upload and a restart loses
//!   nothing. Concurrent writers are settled by compare-and-set on the offset: a PATCH only
//!   counts if the offset is still the one it started from, so nothing is held (no lock, no
//!   pooled connection) while a body streams.
//! - **Bytes staged in the store.** Each accepted PATCH body is one staged object
//!   `tus/<upload>/<offset>-<attempt>` (any size, streamed by `Backend::write_part`), listed
//!   in the row's `parts`. A request that brings the last byte streams the staged parts and
//!   its own body, in order, through `Backend::write_upload` into a fresh upload key (5 MiB
//!   parts, so on S3 no multipart part is ever below the minimum, however small the PATCHes
//!   were), then commits the object row exactly as a plain upload does. A request that
//!   brings everything at once (the usual single-request upload) stages nothing.
//! - **Authorisation as a plain upload.** Creation runs the object row's INSERT (or upsert)
//!   under the caller's role and claims and rolls it back (RLS decides before any byte is
//!   stored), and enforces the bucket's `file_size_limit` on `Upload-Length` and its
//!   `allowed_mime_types` on `contentType`. The final commit inserts the row under the
//!   caller's role in the same transaction as `storage.tus_finish()`, so the object and
//!   the finished state appear together. HEAD, PATCH and DELETE must come from the creator
//!   (same role and `sub`) or service_role, and PATCH and DELETE run the rolled-back
//!   INSERT again (Supabase checks every request but OPTIONS and HEAD).
//! - **Errors** carry the real HTTP status (TUS clients act on it: 409 → HEAD and resume,
//!   404/410 → start over) with Storage's `{statusCode, code, error, message}` body.
//!
//! Must not: hold a body in memory, count bytes of a PATCH that did not fully arrive, or
//! make the object visible before its last byte.

use super::backend::{self, Backend, UploadError};
use super::{paths, storage_db_error, store_error};
use crate::app::AppState;
use crate::auth::jwt::SERVICE_ROLE;
use crate::auth::AuthContext;
use crate::db::tx::{RequestInfo, RequestTx};
use crate::error::{ApiError, ErrorCode};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// The protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions served.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
/// How long an upload may take from its creation (Supabase's default URL expiry, a day).
pub const EXPIRY_HOURS: i64 = 24;
/// Prefix of staged parts in the store.
pub const STAGING_PREFIX: &str = "tus";
const OFFSET_CT: &str = "application/offset+octet-stream";

// The object row statements and the bucket limits: the plain upload's (objects.rs).
use super::objects::{bucket_limits, check_mime, INSERT_SQL, UPSERT_SQL};
const SELECT_SQL: &str = "SELECT id, secret, bucket_id, name, role, owner_id, upsert, \
     upload_length, upload_offset, content_type, cache_control, user_metadata, parts, \
     expires_at, completed_at IS NOT NULL, expires_at <= now() \
     FROM storage.tus_uploads WHERE id = $1";
const INSERT_UPLOAD_SQL: &str = "INSERT INTO storage.tus_uploads \
     (id, secret, bucket_id, name, role, owner_id, upsert, upload_length, content_type, \
      cache_control, user_metadata, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + make_interval(hours => $12)) \
     RETURNING expires_at";
const ADVANCE_SQL: &str = "UPDATE storage.tus_uploads \
     SET upload_offset = upload_offset + $3, parts = parts || $4::text \
     WHERE id = $1 AND upload_offset = $2 AND completed_at IS NULL AND expires_at > now()";

/// One upload's row.
#[derive(Debug, Clone)]
struct Upload {
    id: Uuid,
    secret: Uuid,
    bucket: String,
    name: String,
    role: String,
    owner_id: Option<String>,
    upsert: bool,
    length: u64,
    offset: u64,
    content_type: String,
    cache_control: String,
    user_metadata: Option<Value>,
    parts: Vec<String>,
    expires_at: chrono::DateTime<chrono::Utc>,
    completed: bool,
    expired: bool,
}

impl Upload {
    fn from_row(r: &tokio_postgres::Row) -> Upload {
        Upload {
            id: r.get(0),
            secret: r.get(1),
            bucket: r.get(2),
            name: r.get(3),
            role: r.get(4),
            owner_id: r.get(5),
            upsert: r.get(6),
            length: r.get::<_, i64>(7).max(0) as u64,
            offset: r.get::<_, i64>(8).max(0) as u64,
            content_type: r.get(9),
            cache_control: r.get(10),
            user_metadata: r.get(11),
            parts: r.get(12),
            expires_at: r.get(13),
            completed: r.get(14),
            expired: r.get(15),
        }
    }

    /// Whether `ctx` may touch this upload: its creator (same role and subject) or
    /// service_role.
    fn allows(&self, ctx: &AuthContext) -> bool {
        ctx.role == SERVICE_ROLE
            || (ctx.role == self.role && ctx.subject() == self.owner_id.as_deref())
    }
}

// ---------------------------------------------------------------- errors and headers

fn with_status(code: ErrorCode, status: StatusCode, msg: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(code, msg);
    e.status = status;
    e
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "Upload not found")
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::EntityTooLarge,
        "The object exceeded the maximum allowed size",
    )
}

fn offset_conflict(have: u64) -> ApiError {
    with_status(
        ErrorCode::Conflict,
        StatusCode::CONFLICT,
        format!("Upload-Offset does not match the upload's offset ({have})"),
    )
    .with_header("Upload-Offset", have.to_string())
}

fn changed_meanwhile() -> ApiError {
    with_status(
        ErrorCode::Conflict,
        StatusCode::CONFLICT,
        "The upload changed while this request ran; HEAD it for its offset",
    )
}

fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A response with the header every TUS answer carries.
fn reply(status: StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header(("Tus-Resumable", TUS_VERSION));
    b
}

/// An error with its real status (TUS clients act on it) and Storage's body.
fn reply_error(e: ApiError) -> HttpResponse {
    let mut b = reply(e.status);
    for (k, v) in &e.headers {
        b.insert_header((*k, v.as_str()));
    }
    if e.status == StatusCode::PRECONDITION_FAILED {
        b.insert_header(("Tus-Version", TUS_VERSION));
    }
    b.json(json!({
        "statusCode": e.status.as_u16().to_string(),
        "code": e.storage_error,
        "error": e.storage_name.unwrap_or(e.storage_error),
        "message": e.message,
    }))
}

fn finish_reply(r: Result<HttpResponse, ApiError>) -> HttpResponse {
    r.unwrap_or_else(reply_error)
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Every request but OPTIONS names the protocol version it speaks.
fn check_version(req: &HttpRequest) -> Result<(), ApiError> {
    match header_str(req, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(with_status(
            ErrorCode::BadRequest,
            StatusCode::PRECONDITION_FAILED,
            "Unsupported TUS version: send Tus-Resumable: 1.0.0",
        )),
    }
}

fn u64_header(req: &HttpRequest, name: &str) -> Result<Option<u64>, ApiError> {
    match header_str(req, name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(format!("{name} must be a non-negative integer"))),
    }
}

fn is_offset_stream(req: &HttpRequest) -> bool {
    header_str(req, "content-type").is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(OFFSET_CT))
    })
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (a key alone has no value).
fn parse_metadata(h: &str) -> Result<std::collections::HashMap<String, String>, ApiError> {
    use base64::Engine;
    let mut out = std::collections::HashMap::new();
    for pair in h.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|_| bad(format!("Upload-Metadata: {k} is not base64")))?;
        let v = String::from_utf8(raw)
            .map_err(|_| bad(format!("Upload-Metadata: {k} is not UTF-8")))?;
        if out.insert(k.to_string(), v).is_some() {
            return Err(bad(format!("Upload-Metadata: {k} given twice")));
        }
    }
    Ok(out)
}

/// Supabase's reading of `cacheControl`: seconds become `max-age=N`, anything else
/// `no-cache`.
fn cache_control(v: Option<&str>) -> String {
    match v.map(str::trim) {
        Some(s)
            if !s.is_empty()
                && s.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            format!("max-age={s}")
        }
        _ => "no-cache".into(),
    }
}

fn part_key(id: Uuid, offset: u64) -> String {
    format!("{STAGING_PREFIX}/{id}/{offset:020}-{}", Uuid::new_v4())
}

/// The upload URL under the mount the client used.
fn location(req: &HttpRequest, id: Uuid) -> String {
    let prefix = super::PREFIXES
        .iter()
        .find(|p| req.path().starts_with(*p))
        .copied()
        .unwrap_or(super::PREFIXES[0]);
    let ci = req.connection_info();
    format!(
        "{}://{}{prefix}/upload/resumable/{id}",
        ci.scheme(),
        ci.host()
    )
}

// ---------------------------------------------------------------- store side

/// The staged parts' bytes, in order. A failing read sets `failed`, so the caller can tell
/// a store failure from a client that went away.
fn staged_stream(
    be: &Backend,
    keys: Vec<String>,
    failed: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, String>> + 'static {
    let store = be.store().clone();
    futures_util::stream::iter(keys)
        .then(move |k| {
            let store = store.clone();
            async move { store.get(&Path::from(k)).await }
        })
        .map(|got| match got {
            Ok(got) => backend::body_stream(got),
            Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .map(move |r| {
            r.map_err(|e| {
                failed.store(true, Ordering::Release);
                format!("staged part: {e}")
            })
        })
}

async fn delete_key(be: &Backend, key: &str) {
    match be.store().delete(&Path::from(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(error = %e, key, "cannot delete staged TUS part"),
    }
}

/// Deletes everything staged for `id` (parts of failed attempts included). Returns how
/// many objects went.
pub async fn delete_staged(be: &Backend, id: Uuid) -> Result<u64, object_store::Error> {
    let prefix = Path::from(format!("{STAGING_PREFIX}/{id}"));
    let keys: Vec<Path> = {
        let mut list = be.store().list(Some(&prefix));
        let mut keys = Vec::new();
        while let Some(meta) = list.next().await {
            keys.push(meta?.location);
        }
        keys
    };
    let mut n = 0;
    for k in keys {
        match be.store().delete(&k).await {
            Ok(()) => n += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Staged objects older than `before` whose upload has no row any more (terminated or
/// expired while a request was still writing, or a crash between the two deletes).
pub async fn orphaned_staging(
    c: &tokio_postgres::Client,
    be: &Backend,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Path>, String> {
    let prefix = Path::from(STAGING_PREFIX);
    let mut found: Vec<(Uuid, Path)> = Vec::new();
    let mut list = be.store().list(Some(&prefix));
    while let Some(meta) = list.next().await {
        let meta = meta.map_err(|e| e.to_string())?;
        if meta.last_modified >= before {
            continue;
        }
        let id = meta
            .location
            .parts()
            .nth(1)
            .and_then(|p| Uuid::parse_str(p.as_ref()).ok());
        match id {
            Some(id) => found.push((id, meta.location)),
            // Nothing the server writes looks like this; leave it to an operator.
            None => tracing::warn!(key = %meta.location, "unexpected key under tus/"),
        }
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
    let live: std::collections::HashSet<Uuid> = c
        .query(
            "SELECT id FROM storage.tus_uploads WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(found
        .into_iter()
        .filter(|(id, _)| !live.contains(id))
        .map(|(_, p)| p)
        .collect())
}

/// Deletes one store key (the janitor's orphan sweep).
pub async fn delete_path(be: &Backend, key: &Path) -> Result<(), object_store::Error> {
    match be.store().delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- database side

async fn load(state: &AppState, id: &str) -> Result<Upload, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let c = state.pool.get().await?;
    let row = c
        .query_opt(SELECT_SQL, &[&id])
        .await
        .map_err(|e| ApiError::from_db(&e, true))?
        .ok_or_else(not_found)?;
    Ok(Upload::from_row(&row))
}

/// Supabase's `canUpload`, which it runs on every TUS request but OPTIONS and HEAD: the
/// object row's INSERT (or upsert) under the caller's role and claims, rolled back. So a
/// policy change, or a token whose claims changed, stops an upload at its next request,
/// before any more bytes are stored.
async fn can_upload(
    state: &AppState,
    req: &HttpRequest,
    ctx: &AuthContext,
    up: &Upload,
) -> Result<(), ApiError> {
    let info = RequestInfo::from_request(req);
    let probe = RowParams::of(up, Uuid::new_v4().to_string(), json!({}));
    let sql = if up.upsert { UPSERT_SQL } else { INSERT_SQL };
    let (tx, _) = RequestTx::begin_with(&state.pool, ctx, &info, false, sql, &probe.params())
        .await
        .map_err(storage_db_error)?;
    tx.rollback().await
}

/// Loads an upload the caller may touch and that is still open to it.
async fn load_for(state: &AppState, ctx: &AuthContext, id: &str) -> Result<Upload, ApiError> {
    let up = load(state, id).await?;
    if !up.allows(ctx) {
        return Err(ApiError::new(
            ErrorCode::StorageAccessDenied,
            "The upload belongs to another user",
        ));
    }
    if up.expired {
        return Err(with_status(
            ErrorCode::NotFound,
            StatusCode::GONE,
            "The upload expired",
        ));
    }
    Ok(up)
}

/// The object row's parameters: bucket, name, owner, owner_id, version, metadata,
/// user_metadata.
struct RowParams {
    bucket: String,
    name: String,
    owner: Option<Uuid>,
    owner_id: Option<String>,
    version: String,
    metadata: Value,
    user_metadata: Option<Value>,
}

impl RowParams {
    fn of(up: &Upload, version: String, metadata: Value) -> RowParams {
        RowParams {
            bucket: up.bucket.clone(),
            name: up.name.clone(),
            owner: up.owner_id.as_deref().and_then(|s| Uuid::parse_str(s).ok()),
            owner_id: up.owner_id.clone(),
            version,
            metadata,
            user_metadata: up.user_metadata.clone(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.bucket,
            &self.name,
            &self.owner,
            &self.owner_id,
            &self.version,
            &self.metadata,
            &self.user_metadata,
        ]
    }
}

// ---------------------------------------------------------------- receiving bytes

/// Takes the bytes of one request at the upload's current offset. Returns the new offset.
///
/// A request whose declared length is exactly what is missing is the last one: the staged
/// parts and its body stream into the object and the row commits. Any other body is staged
/// as one part and counted by compare-and-set on the offset; if it happens to complete the
/// upload (a chunked body), the object is assembled from the parts.
async fn receive<S, E>(
    state: &AppState,
    be: &Backend,
    req: &HttpRequest,
    ctx: &AuthContext,
    up: &Upload,
    body: S,
) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + 'static,
    E: std::fmt::Display + 'static,
{
    let remaining = up.length - up.offset;
    let declared = u64_header(req, "content-length")?;
    if declared.is_some_and(|n| n > remaining) {
        return Err(too_large());
    }
    // The request's own body counts in `fluxbase_storage_bytes_total{direction="in"}` as it
    // goes to the store (staged, or straight into the object); staged parts read back to
    // assemble the object were counted when they arrived.
    let bytes_in = state.metrics.storage_bytes("in");
    if declared == Some(remaining) {
        let failed = Arc::new(AtomicBool::new(false));
        let body = body
            .inspect_ok(move |c| bytes_in.inc_by(c.len() as u64))
            .map_err(|e| e.to_string());
        let all = staged_stream(be, up.parts.clone(), failed.clone()).chain(body);
        finish(state, be, req, ctx, up, all, &failed).await?;
        return Ok(up.length);
    }
    let key = part_key(up.id, up.offset);
    let n = match be.write_part(&key, body, remaining, &bytes_in).await {
        Ok(n) => n,
        Err(e) => {
            delete_key(be, &key).await;
            return Err(match e {
                UploadError::TooLarge => too_large(),
                UploadError::Client(m) => bad(format!("Upload interrupted: {m}")),
                UploadError::Store(e) => store_error(e),
            });
        }
    };
    if n == 0 {
        return Ok(up.offset);
    }
    if up.offset + n == up.length {
        let mut parts = up.parts.clone();
        parts.push(key.clone());
        let failed = Arc::new(AtomicBool::new(false));
        let all = staged_stream(be, parts, failed.clone());
        if let Err(e) = finish(state, be, req, ctx, up, all, &failed).await {
            delete_key(be, &key).await;
            return Err(e);
        }
        return Ok(up.length);
    }
    let advanced = async {
        let c = state.pool.get().await?;
        c.execute(
            ADVANCE_SQL,
            &[&up.id, &(up.offset as i64), &(n as i64), &key],
        )
        .await
        .map_err(|e| ApiError::from_db(&e, true))
    }
    .await;
    match advanced {
        Ok(1) => Ok(up.offset + n),
        Ok(_) => {
            delete_key(be, &key).await;
            Err(changed_meanwhile())
        }
        Err(e) => {
            delete_key(be, &key).await;
            Err(e)
        }
    }
}

/// Writes the whole object from `all` (exactly `Upload-Length` bytes) under a fresh
/// version, then commits its row under the caller's role together with
/// `storage.tus_finish()`, then moves the bytes into place and drops the staged parts.
async fn finish<S>(
    state: &AppState,
    be: &Backend,
    req: &HttpRequest,
    ctx: &AuthContext,
    up: &Upload,
    all: S,
    store_failed: &AtomicBool,
) -> Result<(), ApiError>
where
    S: Stream<Item = Result<Bytes, String>>,
{
    let version = Uuid::new_v4().to_string();
    let written = match be.write_upload(&version, all, up.length).await {
        Ok(w) if w.size == up.length => w,
        Ok(w) => {
            be.discard_upload(&version).await;
            return Err(ApiError::internal(format!(
                "TUS upload {} assembled {} of {} bytes",
                up.id, w.size, up.length
            )));
        }
        Err(e) => {
            be.discard_upload(&version).await;
            return Err(match e {
                UploadError::TooLarge => too_large(),
                UploadError::Client(m) if store_failed.load(Ordering::Acquire) => {
                    ApiError::internal(m)
                }
                UploadError::Client(m) => bad(format!("Upload interrupted: {m}")),
                UploadError::Store(e) => store_error(e),
            });
        }
    };
    let metadata = written.metadata(&up.content_type, &up.cache_control);
    let row = RowParams::of(up, version.clone(), metadata);
    let info = RequestInfo::from_request(req);
    let sql = if up.upsert { UPSERT_SQL } else { INSERT_SQL };
    let committed = async {
        let (tx, rows) =
            RequestTx::begin_with(&state.pool, ctx, &info, false, sql, &row.params()).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Err(ApiError::new(ErrorCode::NoSuchKey, "Object not found"));
        }
        let done = tx
            .query(
                "SELECT storage.tus_finish($1, $2, $3)",
                &[&up.id, &up.secret, &(up.offset as i64)],
            )
            .await?;
        if !done.first().is_some_and(|r| r.get::<_, bool>(0)) {
            tx.rollback().await?;
            return Err(changed_meanwhile());
        }
        tx.commit().await
    }
    .await;
    if let Err(e) = committed {
        be.discard_upload(&version).await;
        return Err(storage_db_error(e));
    }
    if let Err(e) = be.publish(&version).await {
        // The row is committed and reads fall back to the upload key; the janitor
        // finishes the move.
        tracing::warn!(error = %e, version, "cannot move upload into place");
    }
    if let Err(e) = delete_staged(be, up.id).await {
        // The janitor removes them when the upload expires.
        tracing::warn!(error = %e, upload = %up.id, "cannot delete staged TUS parts");
    }
    Ok(())
}

// ---------------------------------------------------------------- handlers

/// `OPTIONS /upload/resumable[/{id}]`: what this server speaks.
pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    reply(StatusCode::NO_CONTENT)
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", TUS_EXTENSIONS))
        .insert_header((
            "Tus-Max-Size",
            state.config.storage.file_size_limit_bytes.to_string(),
        ))
        .finish()
}

/// `POST /upload/resumable`: creates an upload (creation), with its first bytes when the
/// body is `application/offset+octet-stream` (creation-with-upload).
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    payload: web::Payload,
) -> HttpResponse {
    finish_reply(create_inner(&state, &req, &ctx, payload).await)
}

async fn create_inner(
    state: &AppState,
    req: &HttpRequest,
    ctx: &AuthContext,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_version(req)?;
    let be = super::backend(state)?;
    if header_str(req, "upload-defer-length").is_some() {
        return Err(bad("Upload-Defer-Length is not supported"));
    }
    let length =
        u64_header(req, "upload-length")?.ok_or_else(|| bad("Upload-Length header is required"))?;
    let meta = parse_metadata(header_str(req, "upload-metadata").unwrap_or(""))?;
    let bucket = meta
        .get("bucketName")
        .ok_or_else(|| bad("Upload-Metadata must name bucketName"))?;
    let name = meta
        .get("objectName")
        .ok_or_else(|| bad("Upload-Metadata must name objectName"))?;
    paths::bucket(bucket)?;
    paths::object(name)?;
    let content_type = meta
        .get("contentType")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or("application/octet-stream")
        .to_string();
    let user_metadata = match meta.get("metadata") {
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => return Err(bad("metadata must be a JSON object")),
        },
        None => None,
    };
    let limits = bucket_limits(state, bucket).await?;
    if length > limits.max {
        return Err(too_large());
    }
    check_mime(&limits, &content_type)?;
    let upsert = header_str(req, "x-upsert").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut up = Upload {
        id: Uuid::new_v4(),
        secret: Uuid::new_v4(),
        bucket: bucket.clone(),
        name: name.clone(),
        role: ctx.role.clone(),
        owner_id: ctx.subject().map(str::to_string),
        upsert,
        length,
        offset: 0,
        content_type,
        cache_control: cache_control(meta.get("cacheControl").map(String::as_str)),
        user_metadata,
        parts: Vec::new(),
        expires_at: chrono::Utc::now(),
        completed: false,
        expired: false,
    };
    can_upload(state, req, ctx, &up).await?;
    {
        let c = state.pool.get().await?;
        let row = c
            .query_one(
                INSERT_UPLOAD_SQL,
                &[
                    &up.id,
                    &up.secret,
                    &up.bucket,
                    &up.name,
                    &up.role,
                    &up.owner_id,
                    &up.upsert,
                    &(length as i64),
                    &up.content_type,
                    &up.cache_control,
                    &up.user_metadata,
                    &(EXPIRY_HOURS as i32),
                ],
            )
            .await
            .map_err(|e| ApiError::from_db(&e, true))?;
        up.expires_at = row.get(0);
    }
    let mut offset = None;
    if length == 0 {
        let failed = AtomicBool::new(false);
        finish(
            state,
            be,
            req,
            ctx,
            &up,
            futures_util::stream::empty::<Result<Bytes, String>>(),
            &failed,
        )
        .await?;
        offset = Some(0);
    } else if is_offset_stream(req) {
        offset = Some(receive(state, be, req, ctx, &up, payload).await?);
    }
    let mut b = reply(StatusCode::CREATED);
    b.insert_header(("Location", location(req, up.id)))
        .insert_header(("Upload-Expires", http_date(up.expires_at)));
    if let Some(o) = offset {
        b.insert_header(("Upload-Offset", o.to_string()));
        if o == length {
            b.insert_header(("Tus-Complete", "1"));
        }
    }
    Ok(b.finish())
}

/// `HEAD /upload/resumable/{id}`: the upload's offset and length.
pub async fn head(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    id: web::Path<String>,
) -> HttpResponse {
    let r: Result<HttpResponse, ApiError> = async {
        check_version(&req)?;
        super::backend(&state)?;
        let up = load_for(&state, &ctx, &id).await?;
        Ok(reply(StatusCode::OK)
            .insert_header(("Upload-Offset", up.offset.to_string()))
            .insert_header(("Upload-Length", up.length.to_string()))
            .insert_header(("Upload-Expires", http_date(up.expires_at)))
            .insert_header(("Cache-Control", "no-store"))
            .finish())
    }
    .await;
    // HEAD answers carry no body; the status and headers say it all.
    match r {
        Ok(resp) => resp,
        Err(e) => {
            let mut b = reply(e.status);
            b.insert_header(("Cache-Control", "no-store"));
            for (k, v) in &e.headers {
                b.insert_header((*k, v.as_str()));
            }
            if e.status == StatusCode::PRECONDITION_FAILED {
                b.insert_header(("Tus-Version", TUS_VERSION));
            }
            b.finish()
        }
    }
}

/// `PATCH /upload/resumable/{id}`: bytes at `Upload-Offset`.
pub async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let r = async {
        check_version(&req)?;
        if !is_offset_stream(&req) {
            return Err(with_status(
                ErrorCode::BadRequest,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type must be {OFFSET_CT}"),
            ));
        }
        let offset = u64_header(&req, "upload-offset")?
            .ok_or_else(|| bad("Upload-Offset header is required"))?;
        let be = super::backend(&state)?;
        let up = load_for(&state, &ctx, &id).await?;
        if offset != up.offset {
            return Err(offset_conflict(up.offset));
        }
        let new_offset = if up.completed {
            // Only an empty PATCH at the end can reach here: it changes nothing.
            if u64_header(&req, "content-length")?.unwrap_or(0) > 0 {
                return Err(too_large());
            }
            up.offset
        } else {
            can_upload(&state, &req, &ctx, &up).await?;
            receive(&state, be, &req, &ctx, &up, payload).await?
        };
        let mut b = reply(StatusCode::NO_CONTENT);
        b.insert_header(("Upload-Offset", new_offset.to_string()))
            .insert_header(("Upload-Expires", http_date(up.expires_at)));
        if new_offset == up.length {
            b.insert_header(("Tus-Complete", "1"));
        }
        Ok(b.finish())
    }
    .await;
    finish_reply(r)
}

/// `DELETE /upload/resumable/{id}`: terminates an unfinished upload and drops its bytes.
pub async fn terminate(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    id: web::Path<String>,
) -> HttpResponse {
    let r = async {
        check_version(&req)?;
        let be = super::backend(&state)?;
        let up = load_for(&state, &ctx, &id).await?;
        if up.completed {
            return Err(bad("Cannot terminate an already completed upload"));
        }
        can_upload(&state, &req, &ctx, &up).await?;
        let c = state.pool.get().await?;
        let n = c
            .execute(
                "DELETE FROM storage.tus_uploads WHERE id = $1 AND completed_at IS NULL",
                &[&up.id],
            )
            .await
            .map_err(|e| ApiError::from_db(&e, true))?;
        drop(c);
        if n == 0 {
            // Finished or terminated by another request meanwhile.
            return Err(changed_meanwhile());
        }
        if let Err(e) = delete_staged(be, up.id).await {
            // No row points at them any more: the janitor's orphan sweep removes them.
            tracing::warn!(error = %e, upload = %up.id, "cannot delete staged TUS parts");
        }
        Ok(reply(StatusCode::NO_CONTENT).finish())
    }
    .await;
    finish_reply(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        let m = parse_metadata("bucketName YnVja2V0, objectName YS9iLnR4dA==,empty").unwrap();
        assert_eq!(m["bucketName"], "bucket");
        assert_eq!(m["objectName"], "a/b.txt");
        assert_eq!(m["empty"], "");
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
        assert!(parse_metadata("").unwrap().is_empty());
    }

    #[test]
    fn cache_control_as_supabase() {
        assert_eq!(cache_control(Some("3600")), "max-age=3600");
        assert_eq!(cache_control(Some("public")), "no-cache");
        assert_eq!(cache_control(None), "no-cache");
    }

    #[test]
    fn part_keys_sort_by_offset() {
        let id = Uuid::new_v4();
        let a = part_key(id, 9);
        let b = part_key(id, 10);
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with(&format!("tus/{id}/")));
    }
}
