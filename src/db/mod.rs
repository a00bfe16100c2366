//! Database access: the pool, the migration runner, the request transaction, identifier
//! quoting and the small `fluxbase.settings` store.
//!
//! Must not: build SQL from user values (every value is a bind parameter; identifiers go
//! through `quote_ident`), or keep per-process state another instance needs.

pub mod listen;
pub mod migrate;
pub mod tx;
pub mod wire;

use crate::config::DatabaseConfig;
use crate::error::{ApiError, ErrorCode};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

pub use deadpool_postgres::{Object as PooledClient, Pool as PgPool};

/// Parses a database URL into connection settings.
pub fn pg_config(url: &str) -> Result<tokio_postgres::Config, String> {
    let mut pg =
        tokio_postgres::Config::from_str(url).map_err(|e| format!("invalid database URL: {e}"))?;
    if pg.get_application_name().is_none() {
        pg.application_name("fluxbase");
    }
    Ok(pg)
}

/// Builds the connection pool (no connection is opened yet).
pub fn create_pool(url: &str, cfg: &DatabaseConfig) -> Result<Pool, String> {
    let mut pg = pg_config(url)?;
    let timeout = Duration::from_secs(cfg.acquire_timeout_secs.max(1));
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(timeout);
    }
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // Fast: a closed connection is noticed without a query on every checkout.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(cfg.pool_size as usize)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| format!("cannot build the database pool: {e}"))
}

/// Waits for the database to answer, retrying with backoff for up to `total`; logs each
/// failure so an operator sees why start-up waits.
pub async fn wait_for_database(pool: &Pool, total: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let err = match pool.get().await {
            Ok(c) => match c.simple_query("SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if started.elapsed() + delay > total {
            return Err(format!(
                "database not reachable after {}s: {err}",
                started.elapsed().as_secs()
            ));
        }
        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database not reachable yet; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Quotes an identifier for SQL text: the only way identifiers enter statements.
pub fn quote_ident(s: &str) -> String {
    // Built by hand (no `format!`, no second allocation): it runs many times per request.
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted_ident(&mut out, s);
    out
}

/// [`quote_ident`] written onto `out` (no allocation of its own: the REST engine quotes
/// several identifiers into each statement).
pub fn push_quoted_ident(out: &mut String, s: &str) {
    out.push('"');
    if s.contains('"') {
        out.push_str(&s.replace('"', "\"\""));
    } else {
        out.push_str(s);
    }
    out.push('"');
}

/// Quotes a string literal for SQL text built by the server itself (never for user values,
/// which are always bind parameters). `standard_conforming_strings` is on in every
/// supported Postgres, so doubling quotes is the whole escape; NUL cannot occur in a
/// Postgres identifier, which is all this quotes.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What the configured database user lacks to run Fluxbase, if anything.
pub async fn missing_privileges(
    client: &tokio_postgres::Client,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT r.rolsuper, r.rolcreaterole, d.datdba = r.oid AS owner, current_user::text, current_database()::text
             FROM pg_roles r, pg_database d
             WHERE r.rolname = current_user AND d.datname = current_database()",
            &[],
        )
        .await?;
    let (sup, createrole, owner): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let (user, db): (String, String) = (row.get(3), row.get(4));
    let mut missing = Vec::new();
    if !sup {
        if !createrole {
            missing.push(format!(
                "role {user:?} needs CREATEROLE (to create anon, authenticated, service_role)"
            ));
        }
        if !owner {
            missing.push(format!(
                "role {user:?} must own database {db:?} (to create schemas and event triggers)"
            ));
        }
    }
    Ok(missing)
}

/// Reads a value from `fluxbase.settings`, storing `generate()` first if absent. Safe when
/// several instances start together: all of them read the value that won the insert.
pub async fn setting_or_insert(
    client: &tokio_postgres::Client,
    key: &str,
    generate: impl FnOnce() -> String,
) -> Result<String, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO fluxbase.settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &generate()],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT value FROM fluxbase.settings WHERE key = $1",
            &[&key],
        )
        .await?;
    Ok(row.get(0))
}

/// `/ready`: the database answers and every embedded migration is applied.
pub async fn readiness(pool: &Pool, versions: &[String]) -> Result<(), ApiError> {
    let check = async {
        let client = pool.get().await?;
        let row = client
            .query_one(
                "SELECT CASE WHEN to_regclass('fluxbase.schema_migrations') IS NULL THEN 0
                        ELSE (SELECT count(*) FROM fluxbase.schema_migrations WHERE version = ANY($1)) END",
                &[&versions],
            )
            .await
            .map_err(|e| ApiError::from_db(&e, true))?;
        let applied: i64 = row.get(0);
        if applied as usize == versions.len() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::NotMigrated,
                format!("{} of {} migrations applied", applied, versions.len()),
            ))
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            ErrorCode::DatabaseUnavailable,
            "Database did not answer in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a"), "\"a\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
