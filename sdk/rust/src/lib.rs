//! Fluxbase Rust SDK. Empty for now: the server's APIs land first, then this crate
//! grows typed clients for them (REST, Auth, Storage, Realtime).

/// The Fluxbase API version this SDK speaks.
pub const API_VERSION: &str = "v1";
