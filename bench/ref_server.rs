//! The hand-written reference for the REST benchmark (`bench/rest.sh` builds and runs it in
//! release mode).
//!
//! The honest floor for Fluxbase's `/rest/v1`: actix-web with the same number of workers
//! (one per core, actix's default, as Fluxbase's `server.workers: 0`), a deadpool-postgres
//! pool built by `fluxbase::db::create_pool` with Fluxbase's default size, and for each call
//! one FIXED statement, prepared once per connection (`prepare_cached`), whose JSON body is
//! built in Postgres (`json_agg`) and passed through untouched. No request parsing beyond
//! the integers in the path or query, no transaction around the statement, no role switch,
//! no claims, no middleware.
//!
//! | Fluxbase (PostgREST URL)                                        | reference                      |
//! |-----------------------------------------------------------------|--------------------------------|
//! | `GET /rest/v1/items?id=eq.N`                                    | `GET /items/N`                 |
//! | `GET /rest/v1/items?category=eq.C&order=created_at.desc&limit=20` | `GET /items?category=C`      |
//! | `GET /rest/v1/authors?id=eq.N&select=*,books(*)`                | `GET /authors/N`               |
//! | `POST /rest/v1/events` (`Prefer: return=minimal`, JSON object)  | `POST /events` (same body)     |
//! | `GET /rest/v1/rpc/recent_items?cat=C`                           | `GET /rpc/recent_items?cat=C`  |
//! | `GET /health`                                                   | `GET /health`                  |
//!
//! Environment: `DATABASE_URL` (required), `PORT` (default 18090), `HOST` (default 127.0.0.1).

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

/// `items?id=eq.N`: the same shape Fluxbase builds (an array of the matching rows).
const ONE_ITEM: &str = "SELECT coalesce(json_agg(_t), '[]')::text FROM \
     (SELECT i.* FROM public.items AS i WHERE i.id = $1) _t";

/// `items?category=eq.C&order=created_at.desc&limit=20`.
const ITEMS_BY_CATEGORY: &str = "SELECT coalesce(json_agg(_t), '[]')::text FROM \
     (SELECT i.* FROM public.items AS i WHERE i.category = $1 \
      ORDER BY i.created_at DESC LIMIT 20) _t";

/// `authors?id=eq.N&select=*,books(*)`: the books embedded as a JSON array per author.
const AUTHOR_WITH_BOOKS: &str = "SELECT coalesce(json_agg(_t), '[]')::text FROM \
     (SELECT a.*, (SELECT coalesce(json_agg(_e), '[]') FROM \
        (SELECT b.* FROM public.books AS b WHERE b.author_id = a.id) _e) AS books \
      FROM public.authors AS a WHERE a.id = $1) _t";

/// `POST events` with `return=minimal`: the body text goes to Postgres as is.
const INSERT_EVENT: &str = "INSERT INTO public.events (kind, payload) \
     SELECT _p.kind, _p.payload FROM json_populate_record(NULL::public.events, $1::text::json) _p";

/// `rpc/recent_items?cat=C`.
const RECENT_ITEMS: &str = "SELECT coalesce(json_agg(_r), '[]')::text FROM \
     public.recent_items($1::int4) _r";

fn fail(status: StatusCode, msg: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(msg.to_string())
}

/// Runs `sql` (prepared once per connection) and returns the first column of its one row.
async fn json_query(pool: &Pool, sql: &str, params: &[&(dyn ToSql + Sync)]) -> HttpResponse {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let stmt = match client.prepare_cached(sql).await {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match client.query_one(&stmt, params).await {
        Ok(row) => {
            let body: String = row.get(0);
            HttpResponse::Ok()
                .content_type("application/json; charset=utf-8")
                .body(body)
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The integer value of `key` in a query string (`a=1&b=2`), without any decoding.
fn query_int(qs: &str, key: &str) -> Option<i32> {
    qs.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn path_int(req: &HttpRequest) -> Option<i32> {
    req.match_info().get("id")?.parse().ok()
}

async fn one_item(req: HttpRequest, pool: web::Data<Pool>) -> HttpResponse {
    match path_int(&req) {
        Some(id) => json_query(&pool, ONE_ITEM, &[&id]).await,
        None => fail(StatusCode::BAD_REQUEST, "id must be an integer"),
    }
}

async fn items_by_category(req: HttpRequest, pool: web::Data<Pool>) -> HttpResponse {
    match query_int(req.query_string(), "category") {
        Some(c) => json_query(&pool, ITEMS_BY_CATEGORY, &[&c]).await,
        None => fail(StatusCode::BAD_REQUEST, "category must be an integer"),
    }
}

async fn author_with_books(req: HttpRequest, pool: web::Data<Pool>) -> HttpResponse {
    match path_int(&req) {
        Some(id) => json_query(&pool, AUTHOR_WITH_BOOKS, &[&id]).await,
        None => fail(StatusCode::BAD_REQUEST, "id must be an integer"),
    }
}

async fn recent_items(req: HttpRequest, pool: web::Data<Pool>) -> HttpResponse {
    match query_int(req.query_string(), "cat") {
        Some(c) => json_query(&pool, RECENT_ITEMS, &[&c]).await,
        None => fail(StatusCode::BAD_REQUEST, "cat must be an integer"),
    }
}

async fn insert_event(body: web::Bytes, pool: web::Data<Pool>) -> HttpResponse {
    let Ok(text) = std::str::from_utf8(&body) else {
        return fail(StatusCode::BAD_REQUEST, "body is not UTF-8");
    };
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let stmt = match client.prepare_cached(INSERT_EVENT).await {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match client.execute(&stmt, &[&text]).await {
        Ok(_) => HttpResponse::Created().finish(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "DATABASE_URL is not set")
    })?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad PORT {p:?}"))
        })?,
        Err(_) => 18090,
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let cfg = fluxbase::config::DatabaseConfig::default();
    let pool = fluxbase::db::create_pool(&url, &cfg)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // Fail at start, not on the first request, when the database is unreachable.
    drop(
        pool.get()
            .await
            .map_err(|e| std::io::Error::other(format!("database: {e}")))?,
    );
    // One worker per core: actix's default, which Fluxbase keeps with `server.workers: 0`.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "ref_server: http://{host}:{port} workers={workers} pool_size={}",
        cfg.pool_size
    );
    let data = web::Data::new(pool);
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/health", web::get().to(health))
            .route("/items/{id}", web::get().to(one_item))
            .route("/items", web::get().to(items_by_category))
            .route("/authors/{id}", web::get().to(author_with_books))
            .route("/events", web::post().to(insert_event))
            .route("/rpc/recent_items", web::get().to(recent_items))
    })
    .workers(workers)
    .bind((host.as_str(), port))?
    .run()
    .await
}
