//! Fluxbase: one binary that turns a PostgreSQL database into a complete backend.
//! `../shared/ARCHITECTURE.md` and `docs/architecture.md` describe the layout.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod cors;
pub mod db;
pub mod embedded_pg;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod monitoring;
pub mod openapi;
pub mod ops;
pub mod otlp;
pub mod outbound;
pub mod ratelimit;
pub mod realtime;
pub mod rest;
pub mod routes;
pub mod schema;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod webhooks;
