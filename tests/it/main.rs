//! The one integration test binary: the real app over HTTP against a real Postgres.

mod support;

mod cli;
mod database;
mod http;
