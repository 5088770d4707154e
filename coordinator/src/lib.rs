//! `cemwatch-coordinator` is the fleet's view of a CEM gateway: the QUIC server probes report
//! to, the enrolment CA, the embedded store, aggregation, Prometheus metrics, the JSON API and
//! the admin commands (`serve`, `token`, `probe`, `demo`).
//!
//! Probes enrol once with a single-use token that pins this coordinator's CA, then connect with
//! mutual TLS over QUIC. Every report is committed to SQLite before it is acknowledged, so no
//! acknowledged result is lost, even to `kill -9`. Probes on managed endpoints also send the CEM
//! state of the management agent beside them, which the fleet view shows next to the checks.

pub mod agents;
pub mod api;
pub mod auth;
pub mod ca;
pub mod cli;
pub mod client;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod diagnose;
pub mod fleet;
pub mod ingest;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod session_keys;
pub mod status;
pub mod store;
