//! hoopbot holds risky commands until the right people approve that exact command, then has a
//! connection agent run it once and returns the result. See `docs/architecture.md`.

pub mod agent;
pub mod app;
pub mod audit;
pub mod changes;
pub mod cli;
pub mod client;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod display;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod expiring;
pub mod http;
pub mod retry;
pub mod sentences;
pub mod service;
pub mod slack;
pub mod store;
pub mod table;
pub mod token;
pub mod view;
pub mod web;
pub mod webhook;

/// Installs the process-wide TLS crypto provider. Our HTTP client and database drivers would
/// otherwise each pick one, and rustls refuses to guess between two.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
