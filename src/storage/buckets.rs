//! Bucket routes, under RLS on `storage.buckets` (with no policy only service_role passes,
//! as in Supabase).

use super::{paths, storage_db_error};
use crate::app::AppState;
use crate::auth::AuthContext;
use crate::db::tx::{RequestInfo, RequestTx};
use crate::error::{ApiError, ErrorCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

type Res = Result<HttpResponse, ApiError>;

const BUCKET_JSON: &str = "json_build_object('id', id, 'name', name, 'owner', \
     coalesce(owner_id, owner::text, ''), 'public', public, 'file_size_limit', file_size_limit, \
     'allowed_mime_types', allowed_mime_types, 'created_at', created_at, 'updated_at', updated_at)";

fn no_such_bucket() -> ApiError {
    ApiError::new(ErrorCode::NoSuchBucket, "Bucket not found")
}

/// `file_size_limit` as storage-js sends it: a number of bytes or a string such as `20MB`.
pub fn parse_size(v: &Value) -> Result<Option<i64>, ApiError> {
    let err = || {
        ApiError::new(
            ErrorCode::BadRequest,
            "Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B",
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().filter(|n| *n >= 0).map(Some).ok_or_else(err),
        Value::String(s) => {
            let s = s.trim().to_ascii_uppercase();
            let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &s[digits.len()..];
            let n: f64 = digits.trim().parse().map_err(|_| err())?;
            let mult = match unit {
                "" | "B" => 1.0,
                "KB" => 1024.0,
                "MB" => 1024.0 * 1024.0,
                "GB" => 1024.0 * 1024.0 * 1024.0,
                _ => return Err(err()),
            };
            if n < 0.0 {
                return Err(err());
            }
            Ok(Some((n * mult) as i64))
        }
        _ => Err(err()),
    }
}

/// `POST /bucket` and `PUT /bucket/{id}` body.
#[derive(Debug, Deserialize)]
pub struct BucketBody {
    id: Option<String>,
    name: Option<String>,
    public: Option<bool>,
    #[serde(default)]
    file_size_limit: Value,
    allowed_mime_types: Option<Vec<String>>,
}

/// `GET /bucket?limit=&offset=&search=`: the buckets RLS lets the caller see.
pub async fn list(state: web::Data<AppState>, req: HttpRequest, ctx: AuthContext) -> Res {
    let q: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
    let limit: i64 = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let offset: i64 = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let search = q.get("search").cloned().unwrap_or_default();
    let sql = format!(
        "SELECT coalesce(json_agg(b ORDER BY b->>'name'), '[]')::text FROM ( \
           SELECT {BUCKET_JSON}::jsonb AS b FROM storage.buckets \
           WHERE $1 = '' OR name ILIKE '%' || $1 || '%' ORDER BY name LIMIT $2 OFFSET $3) s"
    );
    let info = RequestInfo::from_request(&req);
    let rows = RequestTx::read_only(
        &state.pool,
        &ctx,
        &info,
        &sql,
        &[&search, &limit.clamp(0, 10_000), &offset.max(0)],
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

/// `GET /bucket/{id}`.
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    id: web::Path<String>,
) -> Res {
    let info = RequestInfo::from_request(&req);
    let sql = format!("SELECT {BUCKET_JSON}::text FROM storage.buckets WHERE id = $1");
    let rows = RequestTx::read_only(&state.pool, &ctx, &info, &sql, &[&id.as_str()]).await?;
    let body: String = rows.first().ok_or_else(no_such_bucket)?.get(0);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// `POST /bucket` → `{name}` (RLS INSERT).
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    body: web::Json<BucketBody>,
) -> Res {
    let b = body.into_inner();
    let id =
        b.id.clone()
            .or_else(|| b.name.clone())
            .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "body must have a name"))?;
    paths::bucket(&id)?;
    let name = b.name.clone().unwrap_or_else(|| id.clone());
    paths::bucket(&name)?;
    let limit = parse_size(&b.file_size_limit)?;
    let sub = ctx.subject().map(str::to_string);
    let owner = sub.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
    let info = RequestInfo::from_request(&req);
    let public = b.public.unwrap_or(false);
    let (tx, _) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "INSERT INTO storage.buckets (id, name, owner, owner_id, public, file_size_limit, \
         allowed_mime_types) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id,
            &name,
            &owner,
            &sub,
            &public,
            &limit,
            &b.allowed_mime_types,
        ],
    )
    .await
    .map_err(|e| match e.code.as_str() {
        "23505" => ApiError::new(
            ErrorCode::BucketAlreadyExists,
            "The resource already exists",
        ),
        _ => storage_db_error(e),
    })?;
    tx.commit().await.map_err(storage_db_error)?;
    Ok(HttpResponse::Ok().json(json!({"name": id})))
}

/// `PUT /bucket/{id}`: changes only the fields sent (RLS UPDATE).
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    id: web::Path<String>,
    body: web::Json<BucketBody>,
) -> Res {
    let b = body.into_inner();
    let limit = parse_size(&b.file_size_limit)?;
    let set_limit = !b.file_size_limit.is_null();
    let info = RequestInfo::from_request(&req);
    let (tx, rows) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "UPDATE storage.buckets SET public = coalesce($2, public), \
         file_size_limit = CASE WHEN $3 THEN $4 ELSE file_size_limit END, \
         allowed_mime_types = CASE WHEN $5 THEN $6 ELSE allowed_mime_types END, \
         updated_at = now() WHERE id = $1 RETURNING id",
        &[
            &id.as_str(),
            &b.public,
            &set_limit,
            &limit,
            &b.allowed_mime_types.is_some(),
            &b.allowed_mime_types,
        ],
    )
    .await
    .map_err(storage_db_error)?;
    super::commit_if_found(tx, &rows, no_such_bucket).await?;
    Ok(HttpResponse::Ok().json(json!({"message": "Successfully updated"})))
}

/// `DELETE /bucket/{id}`: only an empty bucket (RLS DELETE).
pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    id: web::Path<String>,
) -> Res {
    let info = RequestInfo::from_request(&req);
    let (tx, rows) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "SELECT id, EXISTS (SELECT 1 FROM storage.objects WHERE bucket_id = $1) \
         FROM storage.buckets WHERE id = $1 FOR UPDATE",
        &[&id.as_str()],
    )
    .await
    .map_err(storage_db_error)?;
    let Some(row) = rows.first() else {
        tx.rollback().await?;
        return Err(no_such_bucket());
    };
    if row.get::<_, bool>(1) {
        tx.rollback().await?;
        return Err(ApiError::new(
            ErrorCode::BucketNotEmpty,
            "The bucket you tried to delete is not empty",
        ));
    }
    let gone = tx
        .query(
            "DELETE FROM storage.buckets WHERE id = $1 RETURNING id",
            &[&id.as_str()],
        )
        .await;
    match gone {
        Ok(r) if !r.is_empty() => {}
        Ok(_) => {
            tx.rollback().await?;
            return Err(no_such_bucket());
        }
        Err(e) => {
            let _ = tx.rollback().await;
            // Objects the caller cannot see still hold the bucket (foreign key).
            return Err(match e.code.as_str() {
                "23503" => ApiError::new(
                    ErrorCode::BucketNotEmpty,
                    "The bucket you tried to delete is not empty",
                ),
                _ => storage_db_error(e),
            });
        }
    }
    tx.commit().await.map_err(storage_db_error)?;
    Ok(HttpResponse::Ok().json(json!({"message": "Successfully deleted"})))
}

/// `POST /bucket/{id}/empty`: deletes every object the caller may delete (RLS on both
/// tables); their bytes go with the janitor.
pub async fn empty(
    state: web::Data<AppState>,
    req: HttpRequest,
    ctx: AuthContext,
    id: web::Path<String>,
) -> Res {
    let info = RequestInfo::from_request(&req);
    let (tx, rows) = RequestTx::begin_with(
        &state.pool,
        &ctx,
        &info,
        false,
        "SELECT id FROM storage.buckets WHERE id = $1",
        &[&id.as_str()],
    )
    .await
    .map_err(storage_db_error)?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Err(no_such_bucket());
    }
    if let Err(e) = tx
        .query(
            "DELETE FROM storage.objects WHERE bucket_id = $1",
            &[&id.as_str()],
        )
        .await
    {
        let _ = tx.rollback().await;
        return Err(storage_db_error(e));
    }
    tx.commit().await.map_err(storage_db_error)?;
    Ok(HttpResponse::Ok().json(json!({"message": "Successfully emptied"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&json!(100)).unwrap(), Some(100));
        assert_eq!(parse_size(&json!("20MB")).unwrap(), Some(20 * 1024 * 1024));
        assert_eq!(parse_size(&json!("30kb")).unwrap(), Some(30 * 1024));
        assert_eq!(parse_size(&json!("3B")).unwrap(), Some(3));
        assert_eq!(parse_size(&Value::Null).unwrap(), None);
        assert!(parse_size(&json!("20XB")).is_err());
        assert!(parse_size(&json!(-1)).is_err());
    }
}
