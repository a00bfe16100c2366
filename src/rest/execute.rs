//! execute (the only IO): runs the statement in the request transaction (role and claims set
//! in the same round trip), checks `max-affected` and single-object cardinality before
//! committing, and honours `tx=rollback`.

use super::parse::ApiRequest;
use super::render::{check_object, rolls_back, wants_object, Outcome};
use super::sql::Statement;
use super::RestError;
use crate::auth::AuthContext;
use crate::db::tx::{RequestInfo, RequestTx};
use crate::error::ApiError;
use tokio_postgres::types::ToSql;

/// A planned or estimated total (`Prefer: count=planned|estimated`).
#[derive(Debug, Default)]
pub struct Count {
    /// The `EXPLAIN (FORMAT JSON)` whose top `Plan Rows` is the estimate.
    pub explain: Option<Statement>,
    /// `estimated`: the statement's own total counted at most this many + 1 rows; the
    /// estimate is used only beyond it.
    pub exact_up_to: Option<i64>,
}

impl Count {
    /// The total to answer, from the statement's total and the plan rows.
    fn total(&self, exact: Option<i64>, plan: Option<&[tokio_postgres::Row]>) -> Option<i64> {
        let planned = plan.and_then(|rows| {
            let v: serde_json::Value = rows.first()?.try_get(0).ok()?;
            let n = v.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()?;
            Some(n.max(0.0).round() as i64)
        });
        match (self.exact_up_to, exact) {
            (Some(max), Some(n)) if n <= max => Some(n),
            (Some(_), _) => planned.or(exact),
            (None, _) => planned.or(exact),
        }
    }
}

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

/// How the statement runs: in a read-only transaction or not, and whether it writes.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// `BEGIN READ ONLY` (GET/HEAD, and calls of stable functions).
    pub read_only: bool,
    /// The statement changes rows (max-affected applies).
    pub is_write: bool,
}

/// Runs one statement for `req`.
pub async fn run(
    pool: &deadpool_postgres::Pool,
    ctx: &AuthContext,
    info: &RequestInfo,
    req: &ApiRequest,
    stmt: &Statement,
    count: &Count,
    mode: Mode,
) -> Result<Outcome, ApiError> {
    let Mode {
        read_only,
        is_write,
    } = mode;
    fn as_params(s: &Statement) -> Vec<&(dyn ToSql + Sync)> {
        s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
    }
    let params = as_params(stmt);
    let explain_params = count.explain.as_ref().map(as_params);
    let explain = count
        .explain
        .as_ref()
        .zip(explain_params.as_deref())
        .map(|(s, p)| (s.text.as_str(), p));
    // Nothing to decide after seeing the result: reads (nothing to undo), and writes and
    // calls that need no rollback on the row count (single object, strict max-affected)
    // and no `tx=rollback`. Then the whole transaction is one round trip, committed in the
    // pipeline; a planned count's EXPLAIN rides in the same pipeline.
    let decides_after = wants_object(req)
        || (is_write && req.preferences.max_affected.is_some() && req.preferences.strict())
        || rolls_back(req);
    if read_only || !decides_after {
        let (rows, plan) =
            RequestTx::pipelined(pool, ctx, info, read_only, &stmt.text, &params, explain).await?;
        let mut o = outcome(&rows)?;
        if count.explain.is_some() {
            o.total = count.total(o.total, plan.as_deref());
        }
        check_object(req, &o)?;
        return Ok(o);
    }
    let (tx, rows) = RequestTx::begin_with(pool, ctx, info, read_only, &stmt.text, &params).await?;
    let mut o = outcome(&rows)?;
    if let Some((text, p)) = explain {
        match tx.query(text, p).await {
            Ok(plan) => o.total = count.total(o.total, Some(&plan)),
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        }
    }
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
