//! Keeps the schema cache current: a dedicated connection LISTENs on `pgrst` and reloads
//! the cache on `reload schema` (sent by the DDL event trigger, or by hand as in PostgREST).
//! Reloads are coalesced: a burst of DDL causes one reload after it settles.

use super::SchemaHolder;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
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

/// Runs until the process ends: listen, reload on notification, reconnect with backoff.
pub async fn run(
    pool: Pool,
    holder: Arc<SchemaHolder>,
    schemas: Vec<String>,
    pg: tokio_postgres::Config,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let pump = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                let _ = tx.send(n.payload().to_string());
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(200);
                    // Changes made while we were not listening.
                    let _ = reload(&pool, &holder, &schemas).await;
                    while let Some(msg) = rx.recv().await {
                        if !(msg.is_empty() || msg == "reload schema") {
                            continue;
                        }
                        // Coalesce a burst of DDL into one reload.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        while rx.try_recv().is_ok() {}
                        if let Err(e) = reload(&pool, &holder, &schemas).await {
                            tracing::warn!(error = %e, "schema reload failed");
                        }
                    }
                    tracing::warn!("schema listener connection lost; reconnecting");
                }
                pump.abort();
            }
            Err(e) => tracing::debug!(error = %e, "schema listener cannot connect"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
