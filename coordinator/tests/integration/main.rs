//! The coordinator's process tests, as one integration binary: real `cemwatch` and
//! `cemwatch-probe` processes, TLS gateways on loopback, demos in-process, the deployment's
//! files and tools. One module per area, every helper once in [`support`].
//!
//! All tests run as threads of this one process, so nothing may be process-wide per test (see
//! `support`). Run one area with a filter: `cargo test -p cemwatch-coordinator --test
//! integration fleet::`; the network lab (ignored, needs root) with `tests/lab/run`.

mod support;

mod agent_log;
mod agents;
mod auth_matrix;
mod delivery_model;
mod deploy;
mod fleet;
mod fleet_view;
mod flood;
mod hostile_probe;
mod http_hammer;
mod http_surface;
mod lab;
mod nodes;
mod pages;
mod real_gateway;
mod unauthenticated;
