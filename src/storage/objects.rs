//! Object routes: upload (raw or multipart, streamed), download (Range, ETag, 304),
//! info, list, move, copy, remove, signed download and upload URLs.

use super::backend::{Backend, UploadError, Written};
use super::ranges::{self, RangeAsk};
use super::{backend, paths, storage_db_error, store_error};
use crate::app::AppState;
use crate::auth::jwt::{Claims, JwtError, SERVICE_ROLE};
use crate::auth::AuthContext;
use crate::db::tx::{RequestInfo, RequestTx};
use crate::error::{ApiError, ErrorCode};
use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

type Res = Result<HttpResponse, ApiError>;
type ObjPath = web::Path<(String, String)>;

/// The object row of an upload (also the TUS finish), under the caller's role.
pub(super) const INSERT_SQL: &str = "INSERT INTO storage.objects \
     (bucket_id, name, owner, owner_id, version, metadata, user_metadata) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
/// `INSERT_SQL` replacing an existing row (`x-upsert`).
pub(super) const UPSERT_SQL: &str = "INSERT INTO storage.objects \
     (bucket_id, name, owner, owner_id, version, metadata, user_metadata) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (bucket_id, name) DO UPDATE SET owner = excluded.owner, \
     owner_id = excluded.owner_id, version = excluded.version, metadata = excluded.metadata, \
     user_metadata = excluded.user_metadata, updated_at = now(), last_accessed_at = now() \
     RETURNING id";
/// What a download needs of an object row: the metadata fields as text (no JSON to parse).
const OBJECT_SQL: &str = "SELECT id, version, metadata->>'size', metadata->>'eTag', \
     metadata->>'mimetype', metadata->>'cacheControl', updated_at FROM storage.objects \
     WHERE bucket_id = $1 AND name = $2";
const PUBLIC_OBJECT_SQL: &str = "SELECT b.public, o.id, o.version, o.metadata->>'size', \
     o.metadata->>'eTag', o.metadata->>'mimetype', o.metadata->>'cacheControl', o.updated_at \
     FROM storage.buckets b LEFT JOIN storage.objects o ON o.bucket_id = b.id AND o.name = $2 \
     WHERE b.id = $1";
/// A bucket's size limit and allowed MIME types.
const BUCKET_LIMITS_SQL: &str =
    "SELECT file_size_limit, allowed_mime_types FROM storage.buckets WHERE id = $1";
const INFO_SQL: &str = "SELECT json_build_object('id', id, 'version', version, 'name', name, \
     'bucket_id', bucket_id, 'created_at', created_at, 'updated_at', updated_at, \
     'last_accessed_at', last_accessed_at, 'size', (metadata->>'size')::bigint, \
     'cache_control', metadata->>'cacheControl', 'content_type', metadata->>'mimetype', \
     'etag', metadata->>'eTag', 'last_modified', metadata->>'lastModified', \
     'metadata', user_metadata)::text FROM storage.objects WHERE bucket_id = $1 AND name = $2";

fn no_such_key() -> ApiError {
    ApiError::new(ErrorCode::NoSuchKey, "Object not found")
}

fn no_such_bucket() -> ApiError {
    ApiError::new(ErrorCode::NoSuchBucket, "Bucket not found")
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_true(req: &HttpRequest, name: &str) -> bool {
    header_str(req, name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn checked(bucket: &str, name: &str) -> Result<(), ApiError> {
    paths::bucket(bucket)?;
    paths::object(name)?;
    Ok(())
}

/// The identity a signed upload runs as: service_role (the permission was checked when the
/// URL was signed) with the signer as `sub`, so the row's owner is the signer.
fn signer_ctx(owner: Option<&str>) -> AuthContext {
    let mut claims = Claims::new();
    claims.insert("role".into(), Value::from(SERVICE_ROLE));
    if let Some(o) = owner {
        claims.insert("sub".into(), Value::from(o));
    }
    AuthContext {
        role: SERVICE_ROLE.into(),
        claims_json: Value::Object(claims.clone()).to_string().into(),
        claims: claims.into(),
        has_token: true,
    }
}

// ---------------------------------------------------------------- upload

/// What a bucket accepts: the smaller of its `file_size_limit` and
/// `storage.file_size_limit_bytes`, and its `allowed_mime_types` (`None`: any).
pub(super) struct Limits {
    pub(super) max: u64,
    mimes: Option<Vec<String>>,
}

/// The bucket's limits, read as the database owner (as Supabase reads them as superuser);
/// `NoSuchBucket` when it does not exist.
pub(super) async fn bucket_limits(state: &AppState, bucket: &str) -> Result<Limits, ApiError> {
    let c = state.pool.get().await?;
    let stmt = c
        .prepare_cached(BUCKET_LIMITS_SQL)
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let row = c
        .query_opt(&stmt, &[&bucket])
        .await
        .map_err(|e| ApiError::from_db(&e, true))?
        .ok_or_else(no_such_bucket)?;
    let bucket_max: Option<i64> = row.get(0);
    let mut max = state.config.storage.file_size_limit_bytes;
    if let Some(b) = bucket_max.filter(|b| *b > 0) {
        max = max.min(b as u64);
    }
    Ok(Limits {
        max,
        mimes: row
            .get::<_, Option<Vec<String>>>(1)
            .filter(|m| !m.is_empty()),
    })
}

/// `InvalidMimeType` unless the bucket accepts `mime`.
pub(super) fn check_mime(limits: &Limits, mime: &str) -> Result<(), ApiError> {
    match &limits.mimes {
        Some(allowed) if !paths::mime_allowed(allowed, mime) => Err(ApiError::new(
            ErrorCode::InvalidMimeType,
            format!("mime type {mime} is not supported"),
        )),
        _ => Ok(()),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::EntityTooLarge,
        "The object exceeded the maximum allowed size",
    )
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::TooLarge => too_large(),
        UploadError::Client(m) => bad(format!("Upload interrupted: {m}")),
        UploadError::Store(e) => store_error(e),
    }
}

/// The row an upload writes.
struct NewRow<'a> {
    bucket: &'a str,
    name: &'a str,
    owner: Option<Uuid>,
    owner_id: Option<String>,
    version: String,
    metadata: Value,
    user_metadata: Option<Value>,
}

impl NewRow<'_> {
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

fn new_row<'a>(ctx: &AuthContext, bucket: &'a str, name: &'a str) -> NewRow<'a> {
    let sub = ctx.subject().map(str::to_string);
    NewRow {
        bucket,
        name,
        owner: sub.as_deref().and_then(|s| Uuid::parse_str(s).ok()),
        owner_id: sub,
        version: Uuid::new_v4().to_string(),
        metadata: json!({}),
        user_metadata: None,
    }
}

/// Runs the row's INSERT (or upsert) under RLS and rolls it back: Supabase's `canUpload`,
/// so a caller the policies refuse is told so before sending any byte to the store.
async fn check_write(
    state: &AppState,
    ctx: &AuthContext,
    info: &RequestInfo,
    row: &NewRow<'_>,
    upsert: bool,
) -> Result<(), ApiError> {
    let sql = if upsert { UPSERT_SQL } else { INSERT_SQL };
    let (tx, _) = RequestTx::begin_with(&state.pool, ctx, info, false, sql, &row.params())
        .await
        .map_err(storage_db_error)?;
    tx.rollback().await
}

/// The shared upload path of `POST/PUT /object/…` and signed uploads. Returns the row id.
async fn store_upload(
    state: &AppState,
    req: &HttpRequest,
    ctx: &AuthContext,
    bucket: &str,
    name: &str,
    upsert: bool,
    payload: web::Payload,
) -> Result<Uuid, ApiError> {
    checked(bucket, name)?;
    let be = backend(state)?;
    let limits = bucket_limits(state, bucket).await?;
    let info = RequestInfo::from_request(req);
    let mut row = new_row(ctx, bucket, name);
    let content_type = header_str(req, "content-type").unwrap_or("").to_string();
    let multipart = content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data");
    if !multipart {
        let declared = header_str(req, "content-length").and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max) {
            return Err(too_large());
        }
        check_mime(&limits, &mime_or_default(&content_type))?;
    }
    check_write(state, ctx, &info, &row, upsert).await?;
    let bytes_in = state.metrics.storage_bytes("in");
    let received = if multipart {
        receive_multipart(be, req, payload, &row.version, &limits, &bytes_in).await
    } else {
        let user_metadata = match header_str(req, "x-metadata") {
            Some(b64) => Some(decode_metadata(b64)?),
            None => None,
        };
        let cache = header_str(req, "cache-control")
            .unwrap_or("no-cache")
            .to_string();
        be.write_counted(&row.version, payload, limits.max, Some(&bytes_in))
            .await
            .map_err(upload_error)
            .map(|w| Received {
                written: w,
                mime: mime_or_default(&content_type),
                cache,
                user_metadata,
            })
    };
    let r = match received {
        Ok(r) => r,
        Err(e) => {
            be.discard_upload(&row.version).await;
            return Err(e);
        }
    };
    row.metadata = r.written.metadata(&r.mime, &r.cache);
    row.user_metadata = r.user_metadata;
    commit_row(state, be, ctx, &info, &row, upsert).await
}

/// Commits the row of finished upload data, then moves the bytes into place. The row and
/// the bytes appear together: before the commit nothing is visible; after it a reader
/// finds the bytes at their final key or, until the move, at the upload key.
async fn commit_row(
    state: &AppState,
    be: &Backend,
    ctx: &AuthContext,
    info: &RequestInfo,
    row: &NewRow<'_>,
    upsert: bool,
) -> Result<Uuid, ApiError> {
    let sql = if upsert { UPSERT_SQL } else { INSERT_SQL };
    let done = async {
        let (tx, rows) =
            RequestTx::begin_with(&state.pool, ctx, info, false, sql, &row.params()).await?;
        let id: Uuid = rows.first().ok_or_else(no_such_key)?.get(0);
        tx.commit().await?;
        Ok::<_, ApiError>(id)
    }
    .await;
    match done {
        Ok(id) => {
            if let Err(e) = be.publish(&row.version).await {
                // The row is committed and reads fall back to the upload key; the janitor
                // finishes the move.
                tracing::warn!(error = %e, version = %row.version, "cannot move upload into place");
            }
            Ok(id)
        }
        Err(e) => {
            be.discard_upload(&row.version).await;
            Err(storage_db_error(e))
        }
    }
}

struct Received {
    written: Written,
    mime: String,
    cache: String,
    user_metadata: Option<Value>,
}

fn mime_or_default(ct: &str) -> String {
    if ct.trim().is_empty() {
        "application/octet-stream".into()
    } else {
        ct.trim().to_string()
    }
}

fn decode_metadata(b64: &str) -> Result<Value, ApiError> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad("x-metadata must be base64-encoded JSON"))?;
    parse_metadata(&raw)
}

fn parse_metadata(raw: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(bad("metadata must be a JSON object")),
    }
}

/// `cacheControl` form fields carry seconds (`3600`), headers a full value.
fn cache_value(v: &str) -> String {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        format!("max-age={v}")
    } else if v.is_empty() {
        "no-cache".into()
    } else {
        v.to_string()
    }
}

async fn read_field(field: &mut actix_multipart::Field, max: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|e| bad(format!("malformed multipart body: {e}")))?;
        if out.len() + chunk.len() > max {
            return Err(bad("multipart field too large"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A storage-js multipart body: `cacheControl`, `metadata` and one file part (the first
/// other field). Only the file part is streamed; the small fields are read in memory.
async fn receive_multipart(
    be: &Backend,
    req: &HttpRequest,
    payload: web::Payload,
    version: &str,
    limits: &Limits,
    bytes_in: &prometheus::IntCounter,
) -> Result<Received, ApiError> {
    let mut mp = actix_multipart::Multipart::new(req.headers(), payload);
    let mut cache = None;
    let mut user_metadata = None;
    let mut file: Option<(Written, String)> = None;
    while let Some(field) = mp.next().await {
        let mut field = field.map_err(|e| bad(format!("malformed multipart body: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "cacheControl" => {
                let v = read_field(&mut field, 1024).await?;
                cache = Some(cache_value(&String::from_utf8_lossy(&v)));
            }
            "metadata" => {
                let v = read_field(&mut field, 64 * 1024).await?;
                user_metadata = Some(parse_metadata(&v)?);
            }
            _ if file.is_none() => {
                let mime = mime_or_default(
                    &field
                        .content_type()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                );
                check_mime(limits, &mime)?;
                let w = be
                    .write_counted(version, &mut field, limits.max, Some(bytes_in))
                    .await
                    .map_err(upload_error)?;
                file = Some((w, mime));
            }
            _ => {
                while let Some(c) = field.next().await {
                    c.map_err(|e| bad(format!("malformed multipart body: {e}")))?;
                }
            }
        }
    }
    let (written, mime) = file.ok_or_else(|| bad("No content provided"))?;
    Ok(Received {
        written,
        mime,
        cache: cache.unwrap_or_else(|| "no-cache".into()),
        user_metadata,
    })
}

/// `POST /object/{bucket}/{name}`: upload; `x-upsert: true` replaces an existing object.
pub async fn upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: ObjPath,
    payload: web::Payload,
) -> Res {
    let (bucket, name) = path.into_inner();
    let upsert = header_true(&req, "x-upsert");
    let id = store_upload(&state, &req, &ctx, &bucket, &name, upsert, payload).await?;
    Ok(HttpResponse::Ok().json(json!({"Id": id, "Key": format!("{bucket}/{name}")})))
}

/// `PUT /object/{bucket}/{name}`: replace (upsert).
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: ObjPath,
    payload: web::Payload,
) -> Res {
    let (bucket, name) = path.into_inner();
    let id = store_upload(&state, &req, &ctx, &bucket, &name, true, payload).await?;
    Ok(HttpResponse::Ok().json(json!({"Id": id, "Key": format!("{bucket}/{name}")})))
}

// ---------------------------------------------------------------- download

struct Found {
    version: Option<String>,
    size: u64,
    etag: String,
    mime: String,
    cache: String,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// An `OBJECT_SQL` row (`PUBLIC_OBJECT_SQL`'s from `offset` 1).
fn found(row: &tokio_postgres::Row, offset: usize) -> Found {
    let text = |i: usize| row.get::<_, Option<String>>(offset + i);
    Found {
        version: row.get(offset + 1),
        size: text(2).and_then(|s| s.parse().ok()).unwrap_or(0),
        etag: text(3).unwrap_or_default(),
        mime: text(4).unwrap_or_else(|| "application/octet-stream".into()),
        cache: text(5).unwrap_or_else(|| "no-cache".into()),
        updated_at: row.get(offset + 6),
    }
}

/// The `download` query parameter: `Some("")` for `?download`.
fn download_name(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "download")
        .map(|(_, v)| v.into_owned())
}

/// Answers a download: 304 on a matching `If-None-Match` (or, without one, an
/// `If-Modified-Since` not older than the object), 206/416 for `Range`, no body for HEAD. The bytes are streamed from the store, except that up to `SMALL_BODY` bytes from
/// the local backend are read in one go and sent as one sized body.
/// Download bodies are counted in `fluxbase_storage_bytes_total{direction="out"}` chunk by
/// chunk as they are handed to the connection, so a range counts what it sent and a
/// client that goes away stops the count.
async fn serve(state: &AppState, req: &HttpRequest, name: &str, obj: Found) -> Res {
    let be = backend(state)?;
    let Found {
        version,
        size,
        etag,
        mime,
        cache,
        updated_at,
    } = obj;
    let version = version.ok_or_else(no_such_key)?;
    let last_modified = ranges::http_date(updated_at);
    let common = |b: &mut actix_web::HttpResponseBuilder| {
        b.insert_header((header::ETAG, etag.clone()))
            .insert_header((header::CACHE_CONTROL, cache.clone()))
            .insert_header((header::LAST_MODIFIED, last_modified.clone()))
            .insert_header((header::ACCEPT_RANGES, "bytes"));
    };
    if ranges::not_modified(
        header_str(req, "if-none-match"),
        header_str(req, "if-modified-since"),
        &etag,
        updated_at,
    ) {
        let mut b = HttpResponse::NotModified();
        common(&mut b);
        return Ok(b.finish());
    }
    let ask = ranges::parse_range(header_str(req, "range"), size);
    let (mut b, range) = match ask {
        RangeAsk::Full => (HttpResponse::Ok(), None),
        RangeAsk::Part(s, e) => {
            let mut b = HttpResponse::PartialContent();
            b.insert_header((header::CONTENT_RANGE, format!("bytes {s}-{}/{size}", e - 1)));
            (b, Some(s..e))
        }
        RangeAsk::Unsatisfiable => {
            return Ok(HttpResponse::RangeNotSatisfiable()
                .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
                .json(json!({
                    "statusCode": "416",
                    "code": "InvalidRange",
                    "error": "invalid_range",
                    "message": "invalid range provided",
                })));
        }
    };
    common(&mut b);
    b.insert_header((header::CONTENT_TYPE, mime));
    if let Some(d) = download_name(req) {
        let file = if d.is_empty() {
            name.rsplit('/').next().unwrap_or(name).to_string()
        } else {
            d
        };
        b.insert_header((header::CONTENT_DISPOSITION, ranges::attachment(&file)));
    }
    let len = range.as_ref().map(|r| r.end - r.start).unwrap_or(size);
    if req.method() == actix_web::http::Method::HEAD {
        let empty = futures_util::stream::empty::<Result<Bytes, actix_web::Error>>();
        return Ok(b.body(SizedStream::new(len, empty)));
    }
    let bytes_out = state.metrics.storage_bytes("out");
    // Small local objects: open + read + close in one blocking task, one sized body.
    if len <= backend::SMALL_BODY {
        let start = range.as_ref().map(|r| r.start).unwrap_or(0);
        if let Some(read) = be.read_small(&version, start..start + len).await {
            return match read {
                Ok(bytes) => Ok(b.body(CountedBytes {
                    bytes: Some(bytes),
                    len,
                    counted: bytes_out,
                })),
                Err(object_store::Error::NotFound { .. }) => Err(no_such_key()),
                Err(e) => Err(store_error(e)),
            };
        }
    }
    let got = match be.open(&version, range).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Err(no_such_key()),
        Err(e) => return Err(store_error(e)),
    };
    let stream = super::backend::body_stream(got)
        .inspect_ok(move |chunk| bytes_out.inc_by(chunk.len() as u64))
        .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()));
    Ok(b.body(SizedStream::new(len, stream)))
}

/// A download body read whole, counted in `fluxbase_storage_bytes_total{direction="out"}`
/// when it is handed to the connection (as streamed bodies are, chunk by chunk).
struct CountedBytes {
    bytes: Option<Bytes>,
    len: u64,
    counted: prometheus::IntCounter,
}

impl actix_web::body::MessageBody for CountedBytes {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.len)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        std::task::Poll::Ready(this.bytes.take().filter(|b| !b.is_empty()).map(|b| {
            this.counted.inc_by(b.len() as u64);
            Ok(b)
        }))
    }
}

/// `GET|HEAD /object[/authenticated]/{bucket}/{name}`: under RLS (SELECT).
pub async fn download(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: ObjPath,
) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    backend(&state)?;
    let info = RequestInfo::from_request(&req);
    let rows =
        RequestTx::read_only(&state.pool, &ctx, &info, OBJECT_SQL, &[&bucket, &name]).await?;
    let row = rows.first().ok_or_else(no_such_key)?;
    serve(&state, &req, &name, found(row, 0)).await
}

/// A public bucket's object, read without RLS.
async fn public_object(state: &AppState, bucket: &str, name: &str) -> Result<Found, ApiError> {
    let c = state.pool.get().await?;
    let stmt = c
        .prepare_cached(PUBLIC_OBJECT_SQL)
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let row = c
        .query_opt(&stmt, &[&bucket, &name])
        .await
        .map_err(|e| ApiError::from_db(&e, true))?
        .ok_or_else(no_such_bucket)?;
    if !row.get::<_, bool>(0) {
        return Err(no_such_bucket());
    }
    if row.get::<_, Option<Uuid>>(1).is_none() {
        return Err(no_such_key());
    }
    Ok(found(&row, 1))
}

/// `GET|HEAD /object/public/{bucket}/{name}`: public buckets only, no credentials needed.
pub async fn get_public(state: web::Data<AppState>, req: HttpRequest, path: ObjPath) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    backend(&state)?;
    let obj = public_object(&state, &bucket, &name).await?;
    serve(&state, &req, &name, obj).await
}

/// `GET /object/info[/authenticated]/{bucket}/{name}`: the object's row (RLS SELECT).
pub async fn info(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: ObjPath,
) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    let info = RequestInfo::from_request(&req);
    let rows = RequestTx::read_only(&state.pool, &ctx, &info, INFO_SQL, &[&bucket, &name]).await?;
    let body: String = rows.first().ok_or_else(no_such_key)?.get(0);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// `GET /object/info/public/{bucket}/{name}`.
pub async fn info_public(state: web::Data<AppState>, path: ObjPath) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    public_object(&state, &bucket, &name).await?;
    let c = state.pool.get().await?;
    let stmt = c
        .prepare_cached(INFO_SQL)
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let row = c
        .query_opt(&stmt, &[&bucket, &name])
        .await
        .map_err(|e| ApiError::from_db(&e, true))?
        .ok_or_else(no_such_key)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(row.get::<_, String>(0)))
}

// ---------------------------------------------------------------- list

/// `POST /object/list/{bucket}` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListBody {
    #[serde(default)]
    prefix: String,
    limit: Option<i64>,
    offset: Option<i64>,
    sort_by: Option<SortBy>,
    #[serde(default)]
    search: String,
}

/// Sort order of a listing.
#[derive(Debug, Deserialize)]
pub struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The listing statement for one sort column and order (both from a fixed set, so the
/// statement has 8 shapes; every value is a parameter). Folders are the distinct first
/// segments below the prefix that have more segments; they carry `id: null` and no dates.
fn list_sql(column: &str, desc: bool) -> String {
    let dir = if desc { "DESC" } else { "ASC" };
    let order = if column == "name" {
        format!("name COLLATE \"C\" {dir}")
    } else {
        format!("{column} {dir} NULLS LAST, name COLLATE \"C\" ASC")
    };
    format!(
        "WITH m AS ( \
           SELECT o.id, o.created_at, o.updated_at, o.last_accessed_at, o.metadata, \
                  substr(o.name, $3::int + 1) AS rest \
           FROM storage.objects o WHERE o.bucket_id = $1 AND o.name LIKE $2 ESCAPE '\\'), \
         e AS ( \
           SELECT DISTINCT ON (split_part(rest, '/', 1), position('/' IN rest) > 0) \
                  split_part(rest, '/', 1) AS name, position('/' IN rest) > 0 AS folder, \
                  id, created_at, updated_at, last_accessed_at, metadata \
           FROM m WHERE $4 = '' OR split_part(rest, '/', 1) ILIKE $4 || '%' \
           ORDER BY split_part(rest, '/', 1), position('/' IN rest) > 0, rest), \
         v AS ( \
           SELECT name, CASE WHEN folder THEN NULL ELSE id END AS id, \
                  CASE WHEN folder THEN NULL ELSE updated_at END AS updated_at, \
                  CASE WHEN folder THEN NULL ELSE created_at END AS created_at, \
                  CASE WHEN folder THEN NULL ELSE last_accessed_at END AS last_accessed_at, \
                  CASE WHEN folder THEN NULL ELSE metadata END AS metadata FROM e \
           ORDER BY {order} LIMIT $5 OFFSET $6) \
         SELECT coalesce(json_agg(json_build_object('name', name, 'id', id, \
                'updated_at', updated_at, 'created_at', created_at, \
                'last_accessed_at', last_accessed_at, 'metadata', metadata) ORDER BY {order}), \
                '[]')::text FROM v"
    )
}

/// `POST /object/list/{bucket}`: objects and folders directly under `prefix` (RLS SELECT).
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    bucket: web::Path<String>,
    body: web::Json<ListBody>,
) -> Res {
    let bucket = bucket.into_inner();
    paths::bucket(&bucket)?;
    let b = body.into_inner();
    paths::prefix(&b.prefix)?;
    let mut prefix = b.prefix.clone();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let (column, desc) = match &b.sort_by {
        Some(s) => (
            s.column.clone().unwrap_or_else(|| "name".into()),
            s.order
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case("desc")),
        ),
        None => ("name".into(), false),
    };
    if !["name", "created_at", "updated_at", "last_accessed_at"].contains(&column.as_str()) {
        return Err(bad(format!("cannot sort by {column}")));
    }
    let limit = b.limit.unwrap_or(100).clamp(1, 1000);
    let offset = b.offset.unwrap_or(0).max(0);
    let pattern = format!("{}%", like_escape(&prefix));
    let skip = prefix.chars().count() as i32;
    let sql = list_sql(&column, desc);
    let info = RequestInfo::from_request(&req);
    let rows = RequestTx::read_only(
        &state.pool,
        &ctx,
        &info,
        &sql,
        &[&bucket, &pattern, &skip, &b.search, &limit, &offset],
    )
    .await?;
    let body: String = rows
        .first()
        .map(|r| r.get(0))
        .unwrap_or_else(|| "[]".into());
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// `POST /object/list-v2/{bucket}` body (storage-js `listV2`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListV2Body {
    #[serde(default)]
    prefix: String,
    limit: Option<i64>,
    cursor: Option<String>,
    #[serde(default, rename = "with_delimiter")]
    with_delimiter: bool,
    sort_by: Option<SortBy>,
}

/// Where a `list-v2` page ends: the sort it was listed in and its last entry (full name,
/// and its sort value for timestamp sorts), so the next page starts right after it even
/// when entries are added or removed in between. Opaque to clients (base64url JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct ListCursor {
    /// Sort column: `name`, `created_at` or `updated_at`.
    c: String,
    /// Descending.
    d: bool,
    /// Full name of the last entry (a folder's ends with `/`).
    n: String,
    /// The last entry's sort value (timestamp sorts only), as Postgres printed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
}

impl ListCursor {
    fn encode(&self) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(s: &str) -> Result<ListCursor, ApiError> {
        use base64::Engine;
        let invalid = || bad("Invalid cursor");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| invalid())?;
        let c: ListCursor = serde_json::from_slice(&raw).map_err(|_| invalid())?;
        if !LIST_V2_COLUMNS.contains(&c.c.as_str()) || (c.c != "name" && c.a.is_none()) {
            return Err(invalid());
        }
        Ok(c)
    }
}

/// Sort columns of `list-v2` (Supabase's set).
const LIST_V2_COLUMNS: [&str; 3] = ["name", "created_at", "updated_at"];

/// The `list-v2` statement for one sort (3 columns × 2 orders; every value a parameter).
/// `$1` bucket, `$2` LIKE pattern of the prefix, `$3` prefix length (characters), `$4`
/// with_delimiter, `$5` cursor name ('' = first page), `$6` cursor sort value (text), `$7`
/// page size, `$8` the path level the prefix ends in (for `key`). With the delimiter, the
/// objects below the next `/` after the prefix collapse into one folder entry (`f/sub/`);
/// folders have no timestamps and sort as the earliest. One row: the page as JSON, plus
/// its last entry for the cursor; `limit + 1` entries are read to tell whether more follow.
fn list_v2_sql(column: &str, desc: bool) -> String {
    let (dir, cmp) = if desc { ("DESC", "<") } else { ("ASC", ">") };
    let (order, after) = if column == "name" {
        (
            format!("entry COLLATE \"C\" {dir}"),
            format!("entry COLLATE \"C\" {cmp} $5"),
        )
    } else {
        (
            format!("sv {dir}, entry COLLATE \"C\" {dir}"),
            format!(
                "(sv {cmp} $6::text::timestamptz \
                 OR (sv = $6::text::timestamptz AND entry COLLATE \"C\" {cmp} $5))"
            ),
        )
    };
    // Name sorts carry no sort value; `$6` (NULL then) still needs a type.
    let sort_value = if column == "name" {
        "$6::text::timestamptz".to_string()
    } else {
        format!("CASE WHEN folder THEN '-infinity'::timestamptz ELSE {column} END")
    };
    format!(
        "WITH m AS ( \
           SELECT o.id, o.name, o.created_at, o.updated_at, o.last_accessed_at, o.metadata, \
                  CASE WHEN $4 THEN strpos(substr(o.name, $3::int + 1), '/') ELSE 0 END AS cut \
           FROM storage.objects o WHERE o.bucket_id = $1 AND o.name LIKE $2 ESCAPE '\\'), \
         e AS ( \
           SELECT DISTINCT ON (entry) entry, folder, id, created_at, updated_at, \
                  last_accessed_at, metadata \
           FROM (SELECT CASE WHEN cut > 0 THEN left(name, $3::int + cut) ELSE name END AS entry, \
                        cut > 0 AS folder, id, created_at, updated_at, last_accessed_at, metadata \
                 FROM m) x \
           ORDER BY entry), \
         s AS (SELECT *, {sort_value} AS sv FROM e), \
         v AS ( \
           SELECT *, row_number() OVER (ORDER BY {order}) AS rn FROM s \
           WHERE $5 = '' OR {after} \
           ORDER BY {order} LIMIT $7::bigint + 1), \
         p AS (SELECT * FROM v WHERE rn <= $7::bigint) \
         SELECT json_build_object( \
           'hasNext', (SELECT count(*) FROM v) > $7::bigint, \
           'folders', coalesce((SELECT json_agg(json_build_object( \
                'key', split_part(entry, '/', $8::int), 'name', entry) ORDER BY rn) \
              FROM p WHERE folder), '[]'), \
           'objects', coalesce((SELECT json_agg(jsonb_build_object( \
                'id', id, 'name', entry, 'updated_at', updated_at, 'created_at', created_at, \
                'last_accessed_at', last_accessed_at, 'metadata', metadata) \
                || CASE WHEN $4 THEN jsonb_build_object('key', split_part(entry, '/', $8::int)) \
                   ELSE '{{}}'::jsonb END ORDER BY rn) \
              FROM p WHERE NOT folder), '[]'), \
           'last', (SELECT json_build_object('n', entry, 'a', sv::text) FROM p \
                    ORDER BY rn DESC LIMIT 1))::text"
    )
}

/// `POST /object/list-v2/{bucket}` `{prefix, limit, cursor, with_delimiter, sortBy}` →
/// `{hasNext, nextCursor?, folders: [{key, name}], objects: [...]}` (RLS SELECT), paged by
/// cursor: names are full paths; with `with_delimiter` the entries directly under the
/// prefix, folders apart.
pub async fn list_v2(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    bucket: web::Path<String>,
    body: web::Json<ListV2Body>,
) -> Res {
    let bucket = bucket.into_inner();
    paths::bucket(&bucket)?;
    let b = body.into_inner();
    paths::prefix(&b.prefix)?;
    let limit = match b.limit {
        None => 1000,
        Some(n) if n >= 1 => n.min(1000),
        Some(_) => return Err(bad("limit must be at least 1")),
    };
    let cursor = b
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(ListCursor::decode)
        .transpose()?;
    // A cursor keeps the sort it was made with (as Supabase: the cursor's sort wins).
    let (column, desc) = match (&cursor, &b.sort_by) {
        (Some(c), _) => (c.c.clone(), c.d),
        (None, Some(s)) => (
            s.column.clone().unwrap_or_else(|| "name".into()),
            s.order
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case("desc")),
        ),
        (None, None) => ("name".into(), false),
    };
    if !LIST_V2_COLUMNS.contains(&column.as_str()) {
        return Err(bad(format!("cannot sort by {column}")));
    }
    let pattern = format!("{}%", like_escape(&b.prefix));
    let prefix_len = b.prefix.chars().count() as i32;
    let level = b.prefix.matches('/').count() as i32 + 1;
    let (after_name, after_value) = match &cursor {
        Some(c) => (c.n.clone(), c.a.clone()),
        None => (String::new(), None),
    };
    let sql = list_v2_sql(&column, desc);
    let info = RequestInfo::from_request(&req);
    let rows = RequestTx::read_only(
        &state.pool,
        &ctx,
        &info,
        &sql,
        &[
            &bucket,
            &pattern,
            &prefix_len,
            &b.with_delimiter,
            &after_name,
            &after_value,
            &limit,
            &level,
        ],
    )
    .await?;
    let text: String = rows
        .first()
        .map(|r| r.get(0))
        .ok_or_else(|| ApiError::internal("list-v2 returned no row"))?;
    let mut page: Value = serde_json::from_str(&text).map_err(ApiError::internal)?;
    let last = page.as_object_mut().and_then(|o| o.remove("last"));
    if page["hasNext"] == Value::Bool(true) {
        if let Some(last) = last {
            let next = ListCursor {
                c: column,
                d: desc,
                n: last["n"].as_str().unwrap_or_default().to_string(),
                a: last["a"].as_str().map(str::to_string),
            };
            page["nextCursor"] = Value::from(next.encode());
            page["nextCursorKey"] = Value::from(next.n);
        }
    }
    Ok(HttpResponse::Ok().json(page))
}

// ---------------------------------------------------------------- move, copy, remove

/// `POST /object/move` and `/object/copy` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveBody {
    bucket_id: String,
    source_key: String,
    destination_key: String,
    destination_bucket: Option<String>,
}

impl MoveBody {
    fn checked(&self) -> Result<(&str, &str, &str, &str), ApiError> {
        let dest_bucket = self
            .destination_bucket
            .as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or(&self.bucket_id);
        checked(&self.bucket_id, &self.source_key)?;
        checked(dest_bucket, &self.destination_key)?;
        Ok((
            &self.bucket_id,
            &self.source_key,
            dest_bucket,
            &self.destination_key,
        ))
    }
}

/// `POST /object/move`: a metadata change under RLS (UPDATE); the bytes stay where they are.
pub async fn move_object(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    body: web::Json<MoveBody>,
) -> Res {
    let (from_b, from_n, to_b, to_n) = body.checked()?;
    let info = RequestInfo::from_request(&req);
    let (tx, rows) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "UPDATE storage.objects SET bucket_id = $3, name = $4, updated_at = now() \
         WHERE bucket_id = $1 AND name = $2 RETURNING id",
        &[&from_b, &from_n, &to_b, &to_n],
    )
    .await
    .map_err(storage_db_error)?;
    super::commit_if_found(tx, &rows, no_such_key).await?;
    Ok(HttpResponse::Ok().json(json!({"message": "Successfully moved"})))
}

/// `POST /object/copy`: reads the source (RLS SELECT), copies its bytes to a new version
/// and inserts the destination row (RLS INSERT; `x-upsert` to replace).
pub async fn copy_object(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    body: web::Json<MoveBody>,
) -> Res {
    let (from_b, from_n, to_b, to_n) = body.checked()?;
    let be = backend(&state)?;
    let upsert = header_true(&req, "x-upsert");
    let info = RequestInfo::from_request(&req);
    let (tx, rows) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "SELECT version, metadata, user_metadata FROM storage.objects \
         WHERE bucket_id = $1 AND name = $2",
        &[&from_b, &from_n],
    )
    .await?;
    let Some(src) = rows.first() else {
        tx.rollback().await?;
        return Err(no_such_key());
    };
    let src_version: Option<String> = src.get(0);
    let Some(src_version) = src_version else {
        tx.rollback().await?;
        return Err(no_such_key());
    };
    let mut row = new_row(&ctx, to_b, to_n);
    row.metadata = src.get::<_, Option<Value>>(1).unwrap_or_else(|| json!({}));
    row.user_metadata = src.get(2);
    if let Err(e) = be.copy_to_upload(&src_version, &row.version).await {
        tx.rollback().await?;
        return Err(match e {
            object_store::Error::NotFound { .. } => no_such_key(),
            e => store_error(e),
        });
    }
    let sql = if upsert { UPSERT_SQL } else { INSERT_SQL };
    let inserted = tx.query(sql, &row.params()).await;
    let id: Uuid = match inserted {
        Ok(r) if !r.is_empty() => r[0].get(0),
        Ok(_) => {
            let _ = tx.rollback().await;
            be.discard_upload(&row.version).await;
            return Err(no_such_key());
        }
        Err(e) => {
            let _ = tx.rollback().await;
            be.discard_upload(&row.version).await;
            return Err(storage_db_error(e));
        }
    };
    if let Err(e) = tx.commit().await {
        be.discard_upload(&row.version).await;
        return Err(storage_db_error(e));
    }
    if let Err(e) = be.publish(&row.version).await {
        tracing::warn!(error = %e, version = %row.version, "cannot move copy into place");
    }
    Ok(HttpResponse::Ok().json(json!({"Id": id, "Key": format!("{to_b}/{to_n}")})))
}

/// `DELETE /object/{bucket}` body.
#[derive(Debug, Deserialize)]
pub struct RemoveBody {
    prefixes: Vec<String>,
}

/// `DELETE /object/{bucket}` `{prefixes}`: the deleted rows (RLS DELETE). Their bytes are
/// removed by the janitor after `storage.cleanup_after_minutes` (readers may be streaming).
pub async fn delete_many(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    bucket: web::Path<String>,
    body: web::Json<RemoveBody>,
) -> Res {
    let bucket = bucket.into_inner();
    paths::bucket(&bucket)?;
    let names = body.into_inner().prefixes;
    if names.is_empty() || names.len() > 1000 {
        return Err(bad("prefixes must hold 1 to 1000 names"));
    }
    for n in &names {
        paths::object(n)?;
    }
    let info = RequestInfo::from_request(&req);
    let (tx, rows) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2) \
         RETURNING json_build_object('bucket_id', bucket_id, 'name', name, 'id', id, \
         'owner', owner, 'owner_id', owner_id, 'version', version, 'created_at', created_at, \
         'updated_at', updated_at, 'last_accessed_at', last_accessed_at, \
         'metadata', metadata, 'user_metadata', user_metadata)",
        &[&bucket, &names],
    )
    .await
    .map_err(storage_db_error)?;
    tx.commit().await.map_err(storage_db_error)?;
    let out: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
    Ok(HttpResponse::Ok().json(out))
}

/// `DELETE /object/{bucket}/{name}`.
pub async fn delete_one(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: ObjPath,
) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    let info = RequestInfo::from_request(&req);
    let (tx, rows) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = $2 RETURNING id",
        &[&bucket, &name],
    )
    .await
    .map_err(storage_db_error)?;
    super::commit_if_found(tx, &rows, no_such_key).await?;
    Ok(HttpResponse::Ok().json(json!({"message": "Successfully deleted"})))
}

// ---------------------------------------------------------------- signed URLs

/// `POST /object/sign/…` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignBody {
    expires_in: Option<i64>,
    paths: Option<Vec<String>>,
}

/// Private claim telling upload tokens from download tokens, so neither opens the other.
const OP_CLAIM: &str = "fluxbase_storage_op";

fn sign_token(
    state: &AppState,
    url: &str,
    expires_in: i64,
    extra: &[(&str, Value)],
) -> Result<String, ApiError> {
    let now = chrono::Utc::now().timestamp();
    let mut c = Claims::new();
    c.insert("url".into(), Value::from(url));
    c.insert("iat".into(), Value::from(now));
    c.insert("exp".into(), Value::from(now + expires_in));
    for (k, v) in extra {
        c.insert((*k).into(), v.clone());
    }
    state.jwt.sign(&c).map_err(ApiError::internal)
}

/// Verifies a signed-URL token for `bucket/name` and `op` (`None` = download).
fn verify_token(
    state: &AppState,
    token: Option<String>,
    bucket: &str,
    name: &str,
    op: Option<&str>,
) -> Result<Claims, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidSignedToken,
            "Missing token query parameter",
        )
    })?;
    let (claims, _) = state.jwt.verify(&token).map_err(|e| {
        let msg = match e {
            JwtError::Expired => "jwt expired".to_string(),
            other => other.to_string(),
        };
        ApiError::new(ErrorCode::InvalidSignedToken, msg)
    })?;
    let url_ok = claims.get("url").and_then(Value::as_str) == Some(&format!("{bucket}/{name}"));
    let op_ok = claims.get(OP_CLAIM).and_then(Value::as_str) == op;
    if !url_ok || !op_ok {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            "Invalid signature",
        ));
    }
    Ok(claims)
}

fn token_param(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

fn expires(b: &SignBody) -> Result<i64, ApiError> {
    match b.expires_in {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(bad("expiresIn must be a positive number of seconds")),
    }
}

/// `POST /object/sign/{bucket}/{name}` `{expiresIn}` → `{signedURL}` (RLS SELECT decides).
pub async fn sign(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: ObjPath,
    body: web::Json<SignBody>,
) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    let exp = expires(&body)?;
    let info = RequestInfo::from_request(&req);
    let rows = RequestTx::read_only(
        &state.pool,
        &ctx,
        &info,
        "SELECT 1 FROM storage.objects WHERE bucket_id = $1 AND name = $2",
        &[&bucket, &name],
    )
    .await?;
    if rows.is_empty() {
        return Err(no_such_key());
    }
    let token = sign_token(&state, &format!("{bucket}/{name}"), exp, &[])?;
    Ok(HttpResponse::Ok()
        .json(json!({"signedURL": format!("/object/sign/{bucket}/{name}?token={token}")})))
}

/// `POST /object/sign/{bucket}` `{expiresIn, paths}` → `[{error, path, signedURL}]`.
pub async fn sign_many(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    bucket: web::Path<String>,
    body: web::Json<SignBody>,
) -> Res {
    let bucket = bucket.into_inner();
    paths::bucket(&bucket)?;
    let exp = expires(&body)?;
    let names = body.paths.clone().unwrap_or_default();
    if names.is_empty() || names.len() > 1000 {
        return Err(bad("paths must hold 1 to 1000 names"));
    }
    let info = RequestInfo::from_request(&req);
    let rows = RequestTx::read_only(
        &state.pool,
        &ctx,
        &info,
        "SELECT name FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2)",
        &[&bucket, &names],
    )
    .await?;
    let seen: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut out = Vec::with_capacity(names.len());
    for n in &names {
        if seen.contains(n) {
            let token = sign_token(&state, &format!("{bucket}/{n}"), exp, &[])?;
            out.push(json!({"error": null, "path": n,
                "signedURL": format!("/object/sign/{bucket}/{n}?token={token}")}));
        } else {
            out.push(
                json!({"error": "Either the object does not exist or you do not have access to it",
                "path": n, "signedURL": null}),
            );
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// `GET|HEAD /object/sign/{bucket}/{name}?token=`: no credentials; the token decides.
pub async fn get_signed(state: web::Data<AppState>, req: HttpRequest, path: ObjPath) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    verify_token(&state, token_param(&req), &bucket, &name, None)?;
    backend(&state)?;
    let c = state.pool.get().await?;
    let stmt = c
        .prepare_cached(OBJECT_SQL)
        .await
        .map_err(|e| ApiError::from_db(&e, true))?;
    let row = c
        .query_opt(&stmt, &[&bucket, &name])
        .await
        .map_err(|e| ApiError::from_db(&e, true))?
        .ok_or_else(no_such_key)?;
    drop(c);
    serve(&state, &req, &name, found(&row, 0)).await
}

/// `POST /object/upload/sign/{bucket}/{name}` → `{url, token}`. The caller's INSERT (or,
/// with `x-upsert`, upsert) permission is checked now, as Supabase does.
pub async fn sign_upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    path: ObjPath,
) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    bucket_limits(&state, &bucket).await?;
    let upsert = header_true(&req, "x-upsert");
    let info = RequestInfo::from_request(&req);
    check_write(&state, &ctx, &info, &new_row(&ctx, &bucket, &name), upsert).await?;
    let mut extra = vec![
        (OP_CLAIM, Value::from("upload")),
        ("upsert", Value::from(upsert)),
    ];
    if let Some(sub) = ctx.subject() {
        extra.push(("owner", Value::from(sub)));
    }
    let exp = state.config.storage.signed_upload_expiry_secs as i64;
    let token = sign_token(&state, &format!("{bucket}/{name}"), exp, &extra)?;
    Ok(HttpResponse::Ok().json(json!({
        "url": format!("/object/upload/sign/{bucket}/{name}?token={token}"),
        "token": token,
    })))
}

/// `PUT /object/upload/sign/{bucket}/{name}?token=`: the upload, as the signer.
pub async fn upload_signed(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: ObjPath,
    payload: web::Payload,
) -> Res {
    let (bucket, name) = path.into_inner();
    checked(&bucket, &name)?;
    let claims = verify_token(&state, token_param(&req), &bucket, &name, Some("upload"))?;
    let upsert = claims
        .get("upsert")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ctx = signer_ctx(claims.get("owner").and_then(Value::as_str));
    let id = store_upload(&state, &req, &ctx, &bucket, &name, upsert, payload).await?;
    Ok(HttpResponse::Ok().json(json!({"Id": id, "Key": format!("{bucket}/{name}")})))
}
