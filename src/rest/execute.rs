//! execute (the only IO): runs the statement in the request transaction (role and claims set
//! in the same round trip), checks `max-affected` and single-object cardinality before
//! committing, and honours `tx=rollback`.

use super::parse::ApiRequest;
use super::render::{check_object, rolls_back, Outcome};
use super::sql::Statement;
use super::RestError;
use crate::auth::AuthContext;
use crate::db::tx::{RequestInfo, RequestTx};
use crate::error::ApiError;
use tokio_postgres::types::ToSql;

fn outcome(rows: &[tokio_postgres::Row]) -> Result<Outcome, ApiError> {
    let row = rows
        .first()
        .ok_or_else(|| ApiError::internal("REST statement returned no row"))?;
    Ok(Outcome {
        total: row.get(0),
        n: row.get(1),
        body: row.get(2),
        status: row.get(3),
        headers: row.get(4),
    })
}

/// Runs one statement for `req`.
pub async fn run(
    pool: &deadpool_postgres::Pool,
    ctx: &AuthContext,
    info: &RequestInfo,
    req: &ApiRequest,
    stmt: &Statement,
    read_only: bool,
    is_write: bool,
) -> Result<Outcome, ApiError> {
    let params: Vec<&(dyn ToSql + Sync)> = stmt
        .params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect();
    if read_only && !is_write {
        // Reads: one round trip, committed in the pipeline (nothing to undo).
        let rows = RequestTx::read_only(pool, ctx, info, &stmt.text, &params).await?;
        let o = outcome(&rows)?;
        check_object(req, &o)?;
        return Ok(o);
    }
    let (tx, rows) = RequestTx::begin_with(pool, ctx, info, read_only, &stmt.text, &params).await?;
    let o = outcome(&rows)?;
    let check = check_object(req, &o).and_then(|_| match req.preferences.max_affected {
        Some(max) if is_write && req.preferences.strict() && o.n as u64 > max => {
            Err(RestError::new(
                400,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
            )
            .with_details(format!("The query affects {} rows", o.n)))
        }
        _ => Ok(()),
    });
    match check {
        Err(e) => {
            tx.rollback().await?;
            Err(e.into())
        }
        Ok(()) if rolls_back(req) => {
            tx.rollback().await?;
            Ok(o)
        }
        Ok(()) => {
            tx.commit().await?;
            Ok(o)
        }
    }
}
