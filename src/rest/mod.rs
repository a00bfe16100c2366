//! The PostgREST-compatible REST engine (`/rest/v1`, `/api/v1/tables`, `/api/v1/rpc`).
//!
//! The engine is a pipeline of named stages (`../shared/ARCHITECTURE.md` §3):
//! `parse` (HTTP inputs → [`parse::ApiRequest`]) → plan → sql → execute → render.
//!
//! This module owns the request grammar and, as the later stages land, the planner, the SQL
//! builder, the executor and the renderer. What it must not do: `parse`, `plan` and `sql` never
//! import actix-web or tokio-postgres, never do IO and never read configuration on their own
//! (they take what they need as arguments), so they stay testable by plain table-driven unit
//! tests; only `execute` talks to Postgres and only the handler touches actix types.

pub mod parse;
