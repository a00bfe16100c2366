//! The one integration test binary: the real app over HTTP against a real Postgres.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod auth;
mod auth_hashing;
mod auth_hooks;
mod auth_mail;
mod auth_oauth;
mod auth_phone;
mod cli;
mod clients;
mod database;
mod http;
mod jobs;
mod monitoring;
mod openapi;
mod otlp;
mod outbound;
mod realtime;
mod rest;
mod rest_golden;
mod rest_tx;
mod storage;
mod storage_tus;
mod webhooks;
