//! Cron schedules: a cron expression in an IANA time zone enqueues a job each time it fires.
//!
//! DST follows Vixie cron: a local time skipped by a spring-forward gap fires once, right
//! after the gap; a local time repeated by a fall-back overlap fires once, at its first
//! occurrence. Exactly one instance fires schedules: the holder of an advisory lock; each
//! firing also carries an idempotency key (schedule + instant), so even two leaders for a
//! moment could not enqueue a firing twice. Time comes from a `Clock`, so tests cross a DST
//! change without waiting.

use super::queue::{self, JobSpec};
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde_json::Value;
use tokio_postgres::GenericClient;

/// Advisory lock key of the cron leader ("FLUXCRON").
pub const LEADER_LOCK: i64 = 0x464c_5558_4352_4f4e;

/// The source of "now".
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A parsed schedule expression.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a 5-field (minutes) or 6-field (seconds first) expression and a time zone.
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, String> {
        let tz: Tz = timezone.parse().map_err(|_| {
            format!("unknown time zone {timezone:?} (use an IANA name like Europe/Berlin)")
        })?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
        Ok(Schedule { cron, tz })
    }

    /// The first firing strictly after `after`.
    ///
    /// The expression is matched against wall-clock times; each matching wall-clock time
    /// maps to one instant: the earlier one when the time is repeated (fall back), the end
    /// of the gap when it does not exist (spring forward). Walking wall-clock times in order
    /// gives non-decreasing instants, so the first instant past `after` is the answer.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Start an hour before the local time so a repeated hour's second pass is seen as
        // already fired (its instants map before `after`).
        let local = after.with_timezone(&self.tz).naive_local() - Duration::hours(1);
        let mut cursor = Utc.from_utc_datetime(&local);
        for _ in 0..100_000 {
            let next = self.cron.find_next_occurrence(&cursor, false).ok()?;
            let instant = self.instant_of(next.naive_utc())?;
            if instant > after {
                return Some(instant);
            }
            cursor = next;
        }
        None
    }

    fn instant_of(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => {
                // In a gap: the first wall-clock minute that exists is the end of the gap.
                let mut w = wall;
                for _ in 0..(24 * 60) {
                    w += Duration::minutes(1);
                    if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                        self.tz.from_local_datetime(&w)
                    {
                        let t = t.with_timezone(&Utc);
                        // Transitions fall on whole minutes: drop the seconds carried over.
                        return Some(t - Duration::seconds(t.timestamp().rem_euclid(60)));
                    }
                }
                None
            }
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique name (upsert key).
    pub name: String,
    /// Cron expression (5 or 6 fields).
    pub cron: String,
    /// IANA time zone; UTC when absent.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Queue of the jobs it enqueues.
    pub queue: String,
    /// Payload of those jobs.
    #[serde(default)]
    pub payload: Value,
    /// Fires only when enabled.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// Creates or replaces a schedule; the next firing is computed from `now`.
pub async fn upsert<C: GenericClient>(
    client: &C,
    spec: &ScheduleSpec,
    now: DateTime<Utc>,
) -> Result<Value, UpsertError> {
    if spec.name.trim().is_empty() || spec.queue.trim().is_empty() {
        return Err(UpsertError::Invalid(
            "name and queue must not be empty".into(),
        ));
    }
    let sched = Schedule::parse(&spec.cron, &spec.timezone).map_err(UpsertError::Invalid)?;
    let next = sched
        .next_after(now)
        .ok_or_else(|| UpsertError::Invalid(format!("{:?} never fires", spec.cron)))?;
    let payload = if spec.payload.is_null() {
        Value::Object(Default::default())
    } else {
        spec.payload.clone()
    };
    let row = client
        .query_one(
            "INSERT INTO jobs.schedules (name, cron, timezone, queue, payload, enabled, next_run_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
                    queue = excluded.queue, payload = excluded.payload, enabled = excluded.enabled,
                    next_run_at = excluded.next_run_at, updated_at = now()
             RETURNING to_jsonb(jobs.schedules.*)",
            &[&spec.name, &spec.cron, &spec.timezone, &spec.queue, &payload, &spec.enabled, &next],
        )
        .await
        .map_err(UpsertError::Db)?;
    Ok(row.get(0))
}

/// Why a schedule was refused.
#[derive(Debug)]
pub enum UpsertError {
    /// Bad expression, zone or fields.
    Invalid(String),
    /// Database failure.
    Db(tokio_postgres::Error),
}

/// Fires every due schedule at `now`, in one transaction on `client`: enqueues a job per
/// due firing (one firing per schedule per tick: missed firings while nobody led are not
/// replayed one by one) and moves `next_run_at` past `now`. Returns the jobs enqueued.
pub async fn tick(
    client: &mut tokio_postgres::Client,
    now: DateTime<Utc>,
) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let due = tx
        .query(
            "SELECT id, name, cron, timezone, queue, payload, next_run_at FROM jobs.schedules
              WHERE enabled AND next_run_at <= $1 ORDER BY next_run_at FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await?;
    let mut fired = 0;
    for r in &due {
        let (id, name, expr, tz): (i64, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (queue_name, payload, at): (String, Value, DateTime<Utc>) =
            (r.get(4), r.get(5), r.get(6));
        let spec = JobSpec {
            queue: queue_name,
            payload,
            idempotency_key: Some(format!("schedule:{id}:{}", at.timestamp())),
            ..Default::default()
        };
        if queue::enqueue(&tx, &spec).await?.created {
            fired += 1;
        }
        let next = Schedule::parse(&expr, &tz)
            .ok()
            .and_then(|s| s.next_after(now.max(at)));
        match next {
            Some(next) => {
                tx.execute(
                    "UPDATE jobs.schedules SET last_run_at = $2, next_run_at = $3, updated_at = now() WHERE id = $1",
                    &[&id, &at, &next],
                )
                .await?;
            }
            None => {
                tracing::warn!(schedule = %name, "schedule never fires again; disabling it");
                tx.execute(
                    "UPDATE jobs.schedules SET last_run_at = $2, enabled = false, updated_at = now() WHERE id = $1",
                    &[&id, &at],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn plain_schedules() {
        let s = Schedule::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T10:07:00Z")),
            Some(at("2026-01-01T10:15:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01T10:15:00Z")),
            Some(at("2026-01-01T10:30:00Z"))
        );
        let s = Schedule::parse("30 9 * * 1", "Europe/Berlin").unwrap();
        // Monday 2026-01-05 09:30 CET = 08:30 UTC.
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-05T08:30:00Z"))
        );
        let s = Schedule::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:01Z")),
            Some(at("2026-01-01T00:00:02Z"))
        );
        assert!(Schedule::parse("61 * * * *", "UTC").is_err());
        assert!(Schedule::parse("* * * * *", "Mars/Olympus").is_err());
    }

    #[test]
    fn spring_forward_gap_fires_once_after_the_gap() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC). 02:30 does not exist.
        let s = Schedule::parse("30 2 * * *", "America/New_York").unwrap();
        let fire = s.next_after(at("2026-03-08T06:00:00Z")).unwrap();
        assert_eq!(
            fire,
            at("2026-03-08T07:00:00Z"),
            "runs at the end of the gap"
        );
        // Then the next day at 02:30 EDT = 06:30 UTC, with no second run on the 8th.
        assert_eq!(s.next_after(fire), Some(at("2026-03-09T06:30:00Z")));
        // Every 15 minutes through the gap: 01:45 EST, then one run at the gap's end, then 03:15.
        let s = Schedule::parse("*/15 * * * *", "America/New_York").unwrap();
        let a = s.next_after(at("2026-03-08T06:40:00Z")).unwrap();
        assert_eq!(a, at("2026-03-08T06:45:00Z"));
        let b = s.next_after(a).unwrap();
        assert_eq!(
            b,
            at("2026-03-08T07:00:00Z"),
            "02:00..02:45 collapse into one run at 03:00"
        );
        let c = s.next_after(b).unwrap();
        assert_eq!(c, at("2026-03-08T07:15:00Z"));
    }

    #[test]
    fn fall_back_overlap_fires_once() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice
        // (05:30 UTC and 06:30 UTC).
        let s = Schedule::parse("30 1 * * *", "America/New_York").unwrap();
        let first = s.next_after(at("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(first, at("2026-11-01T05:30:00Z"));
        let next = s.next_after(first).unwrap();
        assert_eq!(
            next,
            at("2026-11-02T06:30:00Z"),
            "no second run at the repeated 01:30"
        );
        // Asked from inside the repeated hour, it still does not fire again that day.
        assert_eq!(
            s.next_after(at("2026-11-01T06:10:00Z")),
            Some(at("2026-11-02T06:30:00Z"))
        );
    }
}
