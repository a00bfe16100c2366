//! Keeps the schema cache current: subscribes to `pgrst` on the process's LISTEN connection
//! (`db::listen`) and reloads the cache on `reload schema` (sent by the DDL event trigger, or
//! by hand as in PostgREST), and after every (re)connect of that connection (DDL may have
//! happened while nobody listened). Reloads are coalesced: a burst of DDL causes one reload
//! after it settles.

use super::SchemaHolder;
use crate::db::listen::{Event, Subscription};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;

/// The NOTIFY channel PostgREST uses.
pub const CHANNEL: &str = "pgrst";

/// Reloads the cache now; prepared statements cached per connection are dropped with it,
/// since they may name objects that changed.
pub async fn reload(pool: &Pool, holder: &SchemaHolder, schemas: &[String]) -> Result<(), String> {
    let c = pool.get().await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let cache = super::load(&c, schemas).await.map_err(|e| e.to_string())?;
    let n = cache.tables.len();
    holder.set(cache);
    pool.manager().statement_caches.clear();
    crate::db::wire::invalidate_statements();
    tracing::info!(
        tables = n,
        ms = started.elapsed().as_millis() as u64,
        "schema cache loaded"
    );
    Ok(())
}

/// Runs until the listener stops: reload on notification and after every (re)connect.
pub async fn run(
    pool: Pool,
    holder: Arc<SchemaHolder>,
    schemas: Vec<String>,
    mut sub: Subscription,
) {
    while let Some(ev) = sub.recv().await {
        match ev {
            Event::Lost => continue,
            Event::Notification { payload, .. }
                if !(payload.is_empty() || payload == "reload schema") =>
            {
                continue
            }
            // `Listening`: changes made while we were not listening.
            Event::Listening { .. } | Event::Notification { .. } => {}
        }
        // Coalesce a burst of DDL into one reload.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while sub.try_recv().is_some() {}
        if let Err(e) = reload(&pool, &holder, &schemas).await {
            tracing::warn!(error = %e, "schema reload failed");
        }
    }
}
