//! Schema-cache load time for 1,000 tables (REST figure: < 1 s). Starts a throwaway managed
//! cluster (fsync on), creates 1,000 tables of 6 columns, each with a foreign key to the one
//! before and a primary key, plus 200 functions, then times `schema::load` (median of 5).
//!
//! Usage: schema_bench [TABLES]   (default 1000)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fluxbase::embedded_pg::{ClusterOptions, ManagedPg};
use std::time::Instant;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::Builder::new()
        .prefix("fbsb")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut pg = ManagedPg::new(ClusterOptions {
        pgdata: dir.path().join("pg"),
        port: 5432,
        tcp_host: None,
        fsync: true,
        bin_dir: None,
        extra_conf: vec![],
    })
    .unwrap();
    pg.start().unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut ddl = String::from("BEGIN;");
    for i in 0..n {
        let fk = if i == 0 {
            String::new()
        } else {
            format!(", prev_id int REFERENCES t{} (id)", i - 1)
        };
        ddl.push_str(&format!(
            "CREATE TABLE t{i} (id serial PRIMARY KEY, name text NOT NULL, price numeric, tags text[], meta jsonb{fk});"
        ));
    }
    for i in 0..200 {
        ddl.push_str(&format!("CREATE FUNCTION f{i}(a int, b text DEFAULT 'x') RETURNS SETOF t0 LANGUAGE sql STABLE AS 'SELECT * FROM t0';"));
    }
    ddl.push_str("COMMIT;");
    client.batch_execute(&ddl).await.unwrap();
    let schemas = vec!["public".to_string()];
    let mut times = Vec::new();
    let mut tables = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let cache = fluxbase::schema::load(&client, &schemas).await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        tables = cache.tables.len();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "schema_cache_load tables={tables} functions=200 median_ms={:.1} min_ms={:.1} max_ms={:.1} (target < 1000)",
        times[2], times[0], times[4]
    );
    drop(client);
    pg.stop().unwrap();
}
