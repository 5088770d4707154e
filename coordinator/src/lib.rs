//! `cemwatch-coordinator` is the fleet's view of a CEM gateway: the QUIC server probes report
//! to, the enrolment CA, the embedded store, aggregation and diagnosis, Prometheus metrics, the
//! JSON API and the admin commands (`serve`, `token`, `probe`, `status`, `verify`, `demo`).
//!
//! Probes enrol once with a single-use token that pins this coordinator's CA, then connect with
//! mutual TLS over QUIC. Every report is committed to SQLite before it is acknowledged, so no
//! acknowledged result is lost, even to `kill -9`. Probes on managed endpoints also send the CEM
//! state of the management agent beside them, which the fleet view shows next to the checks.
//!
//! The modules are layers (ARCHITECTURE.md at the repository root): `model` at the bottom, then
//! `config`, `analysis`, `admission`, `store`, `telemetry`, `registry`, then `quic` and `http`,
//! `app` and `cli` on top; none imports one above it.

pub mod admission;
pub mod analysis;
pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod model;
pub mod quic;
pub mod registry;
pub mod store;
pub mod telemetry;
