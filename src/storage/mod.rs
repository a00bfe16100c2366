//! Storage: the Supabase Storage API at `/storage/v1` (alias `/api/v1/storage`), so
//! `@supabase/storage-js` works unchanged. Buckets and object metadata live in
//! `storage.buckets` / `storage.objects` (Supabase's names, so their RLS policies work);
//! bytes live in an `object_store` backend (local directory or S3) under server-chosen keys.
//!
//! Every operation on a user's behalf runs the matching SQL on those tables in a
//! `RequestTx` under the caller's role and claims, so RLS decides, exactly as Supabase does
//! (INSERT to upload, SELECT to read, list and sign, UPDATE to move or upsert, DELETE to
//! remove). Public-bucket reads and signed URLs are the only reads that bypass RLS.
//!
//! Must not: buffer a whole body (uploads and downloads stream), let a user-supplied name
//! reach a store key, make an object row visible before its bytes are complete, or read
//! another module's tables.

pub mod backend;
pub mod buckets;
pub mod janitor;
pub mod local;
pub mod objects;
pub mod paths;
pub mod ranges;
pub mod s3;
pub mod tus;

pub use backend::Backend;
pub use janitor::{ensure_schedules, register_jobs};

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{Access, Registry};
use actix_web::http::Method;

/// The two mounts of the storage API.
pub const PREFIXES: [&str; 2] = ["/storage/v1", "/api/v1/storage"];

/// Declares a route under both prefixes (one handler, two mounts).
macro_rules! route {
    ($reg:expr, $method:ident, $path:literal, $summary:literal, $access:ident, $handler:expr) => {
        $reg.add(
            Method::$method,
            concat!("/storage/v1", $path),
            "storage",
            $summary,
            Access::$access,
            $handler,
        );
        $reg.add(
            Method::$method,
            concat!("/api/v1/storage", $path),
            "storage",
            $summary,
            Access::$access,
            $handler,
        );
    };
}

/// Registers the storage routes. Fixed paths come before parameterised ones: actix tries
/// resources in registration order (`/object/list/{bucket}` before `/object/{bucket}/…`).
pub fn configure(reg: &mut Registry) {
    use buckets as b;
    use objects as o;
    route!(
        reg,
        GET,
        "/bucket",
        "List buckets (RLS on storage.buckets)",
        Key,
        b::list
    );
    route!(reg, POST, "/bucket", "Create a bucket", Key, b::create);
    route!(
        reg,
        POST,
        "/bucket/{id}/empty",
        "Delete every object of a bucket",
        Key,
        b::empty
    );
    route!(reg, GET, "/bucket/{id}", "Get a bucket", Key, b::get);
    route!(reg, PUT, "/bucket/{id}", "Update a bucket", Key, b::update);
    route!(
        reg,
        DELETE,
        "/bucket/{id}",
        "Delete an empty bucket",
        Key,
        b::delete
    );
    route!(
        reg,
        POST,
        "/object/list/{bucket}",
        "List objects and folders under a prefix",
        Key,
        o::list
    );
    route!(
        reg,
        POST,
        "/object/list-v2/{bucket}",
        "List objects (and folders) under a prefix, paged by cursor",
        Key,
        o::list_v2
    );
    route!(
        reg,
        POST,
        "/object/move",
        "Move (rename) an object",
        Key,
        o::move_object
    );
    route!(
        reg,
        POST,
        "/object/copy",
        "Copy an object",
        Key,
        o::copy_object
    );
    route!(
        reg,
        POST,
        "/object/sign/{bucket}",
        "Signed download URLs for many objects",
        Key,
        o::sign_many
    );
    route!(
        reg,
        POST,
        "/object/sign/{bucket}/{name:.*}",
        "A signed download URL",
        Key,
        o::sign
    );
    route!(
        reg,
        GET,
        "/object/sign/{bucket}/{name:.*}",
        "Download through a signed URL",
        Public,
        o::get_signed
    );
    route!(
        reg,
        HEAD,
        "/object/sign/{bucket}/{name:.*}",
        "Headers through a signed URL",
        Public,
        o::get_signed
    );
    route!(
        reg,
        POST,
        "/object/upload/sign/{bucket}/{name:.*}",
        "A signed upload URL",
        Key,
        o::sign_upload
    );
    route!(
        reg,
        PUT,
        "/object/upload/sign/{bucket}/{name:.*}",
        "Upload through a signed URL",
        Public,
        o::upload_signed
    );
    route!(
        reg,
        GET,
        "/object/info/public/{bucket}/{name:.*}",
        "Object info in a public bucket",
        Public,
        o::info_public
    );
    route!(
        reg,
        GET,
        "/object/info/authenticated/{bucket}/{name:.*}",
        "Object info",
        Key,
        o::info
    );
    route!(
        reg,
        GET,
        "/object/info/{bucket}/{name:.*}",
        "Object info",
        Key,
        o::info
    );
    route!(
        reg,
        GET,
        "/object/public/{bucket}/{name:.*}",
        "Download from a public bucket",
        Public,
        o::get_public
    );
    route!(
        reg,
        HEAD,
        "/object/public/{bucket}/{name:.*}",
        "Headers from a public bucket",
        Public,
        o::get_public
    );
    route!(
        reg,
        GET,
        "/object/authenticated/{bucket}/{name:.*}",
        "Download an object",
        Key,
        o::download
    );
    route!(
        reg,
        HEAD,
        "/object/authenticated/{bucket}/{name:.*}",
        "Object headers",
        Key,
        o::download
    );
    route!(
        reg,
        POST,
        "/object/{bucket}/{name:.*}",
        "Upload an object (x-upsert to replace)",
        Key,
        o::upload
    );
    route!(
        reg,
        PUT,
        "/object/{bucket}/{name:.*}",
        "Replace (upsert) an object",
        Key,
        o::update
    );
    route!(
        reg,
        GET,
        "/object/{bucket}/{name:.*}",
        "Download an object",
        Key,
        o::download
    );
    route!(
        reg,
        HEAD,
        "/object/{bucket}/{name:.*}",
        "Object headers (exists)",
        Key,
        o::download
    );
    route!(
        reg,
        DELETE,
        "/object/{bucket}/{name:.*}",
        "Delete an object",
        Key,
        o::delete_one
    );
    route!(
        reg,
        DELETE,
        "/object/{bucket}",
        "Delete many objects ({prefixes})",
        Key,
        o::delete_many
    );
    route!(
        reg,
        OPTIONS,
        "/upload/resumable",
        "TUS: protocol version, extensions, max size",
        Public,
        tus::options
    );
    route!(
        reg,
        POST,
        "/upload/resumable",
        "TUS: create a resumable upload (creation, creation-with-upload)",
        Key,
        tus::create
    );
    route!(
        reg,
        OPTIONS,
        "/upload/resumable/{id}",
        "TUS: protocol version, extensions, max size",
        Public,
        tus::options
    );
    route!(
        reg,
        HEAD,
        "/upload/resumable/{id}",
        "TUS: offset and length of an upload",
        Key,
        tus::head
    );
    route!(
        reg,
        PATCH,
        "/upload/resumable/{id}",
        "TUS: bytes at Upload-Offset",
        Key,
        tus::patch
    );
    route!(
        reg,
        DELETE,
        "/upload/resumable/{id}",
        "TUS: terminate an upload",
        Key,
        tus::terminate
    );
}

/// Whether a request streams its body under the storage upload limits instead of
/// `server.body_limit_bytes` (object uploads and TUS bodies; JSON bodies stay under the
/// server limit through actix's JSON extractor).
pub fn own_body_limit(method: &Method, path: &str) -> bool {
    let tail = |p: &&str| path.strip_prefix(*p);
    let objects = (method == Method::POST || method == Method::PUT)
        && PREFIXES
            .iter()
            .filter_map(tail)
            .any(|rest| rest.starts_with("/object/"));
    let tus = (method == Method::POST || method == Method::PATCH)
        && PREFIXES
            .iter()
            .filter_map(tail)
            .any(|rest| rest.starts_with("/upload/resumable"));
    objects || tus
}

/// The backend, or 404 when storage is switched off.
fn backend(state: &AppState) -> Result<&Backend, ApiError> {
    state
        .storage
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::RouteNotFound, "Storage is disabled"))
}

/// Ends a write whose statement returned `rows`: none means the row is missing or RLS hides
/// it, so the transaction rolls back and `missing` is the answer; otherwise it commits.
async fn commit_if_found(
    tx: crate::db::tx::RequestTx,
    rows: &[tokio_postgres::Row],
    missing: fn() -> ApiError,
) -> Result<(), ApiError> {
    if rows.is_empty() {
        tx.rollback().await?;
        return Err(missing());
    }
    tx.commit().await.map_err(storage_db_error)
}

/// Supabase Storage's reading of database errors (`DBError.fromDBError`): RLS refusals are
/// AccessDenied, unique violations Duplicate, a missing bucket (foreign key) Bucket not found.
fn storage_db_error(e: ApiError) -> ApiError {
    match e.code.as_str() {
        "42501" => ApiError::new(
            ErrorCode::StorageAccessDenied,
            "new row violates row-level security policy",
        ),
        "23505" => ApiError::new(ErrorCode::KeyAlreadyExists, "The resource already exists"),
        "23503" => ApiError::new(ErrorCode::NoSuchBucket, "Bucket not found"),
        _ => e,
    }
}

fn store_error(e: object_store::Error) -> ApiError {
    ApiError::internal(format!("storage backend: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths_have_their_own_limit() {
        assert!(own_body_limit(&Method::POST, "/storage/v1/object/b/x.png"));
        assert!(own_body_limit(
            &Method::PUT,
            "/api/v1/storage/object/upload/sign/b/x"
        ));
        assert!(!own_body_limit(&Method::GET, "/storage/v1/object/b/x.png"));
        assert!(!own_body_limit(&Method::POST, "/storage/v1/bucket"));
        assert!(!own_body_limit(&Method::POST, "/rest/v1/object/x"));
        assert!(own_body_limit(
            &Method::PATCH,
            "/storage/v1/upload/resumable/0b8e4a4e-5f3c-4f0e-9a55-6f3f3b7d1c2a"
        ));
        assert!(own_body_limit(
            &Method::POST,
            "/api/v1/storage/upload/resumable"
        ));
        assert!(!own_body_limit(&Method::PATCH, "/storage/v1/object/b/x"));
    }

    #[test]
    fn routes_exist_under_both_prefixes() {
        let mut reg = Registry::default();
        configure(&mut reg);
        let paths: Vec<_> = reg.routes().iter().map(|r| r.path).collect();
        for p in &paths {
            if let Some(rest) = p.strip_prefix("/storage/v1") {
                assert!(
                    paths.contains(&format!("/api/v1/storage{rest}").as_str()),
                    "{p}"
                );
            }
        }
        assert_eq!(paths.len() % 2, 0);
    }
}
