//! The migration runner: timestamped, immutable migrations embedded in the binary, plus
//! `migrations/replaceable/` (functions, triggers, views) re-applied when their hash changes.
//!
//! Runs under a session advisory lock, so instances starting together never race: the second
//! waits, then finds nothing to do. Each migration runs in its own transaction together with
//! its bookkeeping row, so a failure leaves the database at the previous migration.

use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};
use std::fmt;

#[derive(RustEmbed)]
#[folder = "migrations/"]
struct Embedded;

/// Advisory lock key for migrations ("FLUXMIGR").
const LOCK_KEY: i64 = 0x464c_5558_4d49_4752;

/// One migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// 14-digit timestamp (versioned) or the file stem (replaceable).
    pub version: String,
    /// Descriptive part of the name.
    pub name: String,
    /// The SQL.
    pub sql: String,
    /// SHA-256 of the SQL, hex.
    pub checksum: String,
}

/// The versioned and replaceable migrations to apply, in order.
#[derive(Debug, Clone, Default)]
pub struct MigrationSet {
    /// Applied once each, in version order.
    pub versioned: Vec<Migration>,
    /// Re-applied whenever their checksum changes, in name order, after the versioned ones.
    pub replaceable: Vec<Migration>,
}

/// A migration problem.
#[derive(Debug)]
pub enum MigrateError {
    /// A file name does not follow `YYYYMMDDHHMMSS_module_name.sql`.
    BadName(String),
    /// An applied migration's SQL changed.
    Changed(String),
    /// SQL failed.
    Db(String, tokio_postgres::Error),
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrateError::BadName(n) => write!(f, "migration file {n:?} must be named YYYYMMDDHHMMSS_module_name.sql"),
            MigrateError::Changed(v) => write!(f, "migration {v} was changed after it was applied; migrations are immutable, add a new one"),
            MigrateError::Db(what, e) => match e.as_db_error() {
                Some(d) => write!(f, "{what}: {} ({})", d.message(), d.code().code()),
                None => write!(f, "{what}: {e}"),
            },
        }
    }
}

impl std::error::Error for MigrateError {}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

impl Migration {
    /// A migration from its file name and SQL.
    pub fn versioned(file: &str, sql: &str) -> Result<Migration, MigrateError> {
        let stem = file
            .strip_suffix(".sql")
            .ok_or_else(|| MigrateError::BadName(file.into()))?;
        let (ts, name) = stem
            .split_once('_')
            .ok_or_else(|| MigrateError::BadName(file.into()))?;
        if ts.len() != 14 || !ts.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
            return Err(MigrateError::BadName(file.into()));
        }
        Ok(Migration {
            version: ts.into(),
            name: name.into(),
            sql: sql.into(),
            checksum: checksum(sql),
        })
    }

    /// A replaceable migration.
    pub fn replaceable(file: &str, sql: &str) -> Migration {
        let stem = file.strip_suffix(".sql").unwrap_or(file);
        Migration {
            version: stem.into(),
            name: stem.into(),
            sql: sql.into(),
            checksum: checksum(sql),
        }
    }
}

/// The migrations compiled into this binary.
pub fn embedded() -> Result<MigrationSet, MigrateError> {
    let mut set = MigrationSet::default();
    for path in Embedded::iter().filter(|p| p.ends_with(".sql")) {
        let Some(file) = Embedded::get(&path) else {
            continue;
        };
        let sql = String::from_utf8_lossy(&file.data).into_owned();
        match path.strip_prefix("replaceable/") {
            Some(name) => set.replaceable.push(Migration::replaceable(name, &sql)),
            None => set.versioned.push(Migration::versioned(&path, &sql)?),
        }
    }
    set.versioned.sort_by(|a, b| a.version.cmp(&b.version));
    set.replaceable.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(set)
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Versioned migrations applied by this run.
    pub applied: Vec<String>,
    /// Replaceable migrations (re)applied by this run.
    pub replaced: Vec<String>,
}

const BOOKKEEPING: &str = "
CREATE SCHEMA IF NOT EXISTS fluxbase;
CREATE TABLE IF NOT EXISTS fluxbase.schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS fluxbase.schema_replaceable (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);";

/// Applies what is pending, under the advisory lock.
pub async fn run(
    client: &mut tokio_postgres::Client,
    set: &MigrationSet,
) -> Result<Report, MigrateError> {
    let db = |what: &str| {
        let what = what.to_string();
        move |e| MigrateError::Db(what, e)
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(db("taking the migration lock"))?;
    let result = run_locked(client, set).await;
    // Released on disconnect too; an error here leaves nothing behind.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn run_locked(
    client: &mut tokio_postgres::Client,
    set: &MigrationSet,
) -> Result<Report, MigrateError> {
    client
        .batch_execute(BOOKKEEPING)
        .await
        .map_err(|e| MigrateError::Db("creating fluxbase.schema_migrations".into(), e))?;
    let applied: std::collections::HashMap<String, String> = client
        .query(
            "SELECT version, checksum FROM fluxbase.schema_migrations",
            &[],
        )
        .await
        .map_err(|e| MigrateError::Db("reading fluxbase.schema_migrations".into(), e))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut report = Report::default();
    for m in &set.versioned {
        if let Some(sum) = applied.get(&m.version) {
            if sum != &m.checksum {
                return Err(MigrateError::Changed(format!("{}_{}", m.version, m.name)));
            }
            continue;
        }
        let label = format!("migration {}_{}", m.version, m.name);
        let tx = client
            .transaction()
            .await
            .map_err(|e| MigrateError::Db(label.clone(), e))?;
        tx.batch_execute(&m.sql)
            .await
            .map_err(|e| MigrateError::Db(label.clone(), e))?;
        tx.execute(
            "INSERT INTO fluxbase.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum],
        )
        .await
        .map_err(|e| MigrateError::Db(label.clone(), e))?;
        tx.commit().await.map_err(|e| MigrateError::Db(label, e))?;
        tracing::info!(version = %m.version, name = %m.name, "applied migration");
        report.applied.push(m.version.clone());
    }
    let current: std::collections::HashMap<String, String> = client
        .query(
            "SELECT name, checksum FROM fluxbase.schema_replaceable",
            &[],
        )
        .await
        .map_err(|e| MigrateError::Db("reading fluxbase.schema_replaceable".into(), e))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for m in &set.replaceable {
        if current.get(&m.name) == Some(&m.checksum) {
            continue;
        }
        let label = format!("replaceable migration {}", m.name);
        let tx = client
            .transaction()
            .await
            .map_err(|e| MigrateError::Db(label.clone(), e))?;
        tx.batch_execute(&m.sql)
            .await
            .map_err(|e| MigrateError::Db(label.clone(), e))?;
        tx.execute(
            "INSERT INTO fluxbase.schema_replaceable (name, checksum) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
            &[&m.name, &m.checksum],
        )
        .await
        .map_err(|e| MigrateError::Db(label.clone(), e))?;
        tx.commit().await.map_err(|e| MigrateError::Db(label, e))?;
        tracing::info!(name = %m.name, "applied replaceable migration");
        report.replaced.push(m.name.clone());
    }
    Ok(report)
}

/// One line of `fluxbase migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// Version (or replaceable name).
    pub version: String,
    /// Name.
    pub name: String,
    /// `applied`, `pending`, or `changed` (applied SQL differs from the binary's).
    pub state: &'static str,
    /// When it was applied.
    pub applied_at: Option<String>,
}

/// Compares the binary's migrations with the database's record.
pub async fn status(
    client: &tokio_postgres::Client,
    set: &MigrationSet,
) -> Result<Vec<StatusLine>, MigrateError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('fluxbase.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| MigrateError::Db("reading migration status".into(), e))?
        .get(0);
    let mut applied = std::collections::HashMap::new();
    let mut replaced = std::collections::HashMap::new();
    if exists {
        for r in client
            .query(
                "SELECT version, checksum, applied_at::text FROM fluxbase.schema_migrations",
                &[],
            )
            .await
            .map_err(|e| MigrateError::Db("reading migration status".into(), e))?
        {
            applied.insert(
                r.get::<_, String>(0),
                (r.get::<_, String>(1), r.get::<_, String>(2)),
            );
        }
        for r in client
            .query(
                "SELECT name, checksum, applied_at::text FROM fluxbase.schema_replaceable",
                &[],
            )
            .await
            .map_err(|e| MigrateError::Db("reading migration status".into(), e))?
        {
            replaced.insert(
                r.get::<_, String>(0),
                (r.get::<_, String>(1), r.get::<_, String>(2)),
            );
        }
    }
    let line = |m: &Migration, rec: Option<&(String, String)>| StatusLine {
        version: m.version.clone(),
        name: m.name.clone(),
        state: match rec {
            None => "pending",
            Some((sum, _)) if sum != &m.checksum => "changed",
            Some(_) => "applied",
        },
        applied_at: rec.map(|(_, at)| at.clone()),
    };
    let mut out: Vec<StatusLine> = set
        .versioned
        .iter()
        .map(|m| line(m, applied.get(&m.version)))
        .collect();
    out.extend(
        set.replaceable
            .iter()
            .map(|m| line(m, replaced.get(&m.name))),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Migration::versioned("20261122000000_base.sql", "").is_ok());
        assert!(Migration::versioned("2026_base.sql", "").is_err());
        assert!(Migration::versioned("20261122000000.sql", "").is_err());
        assert!(Migration::versioned("20261122000000_base.txt", "").is_err());
    }

    #[test]
    fn embedded_migrations_load_in_order() {
        let set = embedded().unwrap();
        assert!(!set.versioned.is_empty());
        let versions: Vec<_> = set.versioned.iter().map(|m| m.version.clone()).collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted, "versions unique and ordered");
    }
}
