//! What the coordinator's process tests share, each helper once:
//!
//! - [`paths`]: the binaries under test and the repository's files;
//! - [`fixtures`]: a lab (a TLS gateway on loopback and a temp dir) and its configuration;
//! - [`processes`]: `cemwatch serve`, admin commands, tokens, `cemwatch-probe enroll` and `run`;
//! - [`http`]: JSON and `/metrics` from the API;
//! - [`quic`]: raw QUIC clients with any identity;
//! - [`store`]: the store and the probes' spools read directly;
//! - [`reporting`]: three real probes and their report latency under a test's load;
//! - [`tools`]: tools that may be missing (skipped with a message, or required in CI);
//! - [`prometheus`]: a real Prometheus on loopback.
//!
//! All tests run as threads of one process: nothing here sets environment variables, installs
//! a global (tracing subscriber, rustls provider) or binds a fixed port. A test that needs the
//! machine to itself (the flood, which measures latency under load) takes [`alone`]; every
//! other process test takes [`shared`], so that none of them runs beside it.

pub(crate) mod fixtures;
pub(crate) mod http;
pub(crate) mod paths;
pub(crate) mod processes;
pub(crate) mod prometheus;
pub(crate) mod quic;
pub(crate) mod reporting;
pub(crate) mod store;
pub(crate) mod tools;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use cemwatch_coordinator::cli::demo::Scenario;

pub(crate) use fixtures::{lab, write_config, Lab};
pub(crate) use http::{get_json, get_json_status, metric, metric_or_zero, scrape, try_get_json};
pub(crate) use paths::{probe_bin, COORDINATOR};
pub(crate) use processes::{
    enroll, enroll_ok, enrolled_probes, run_probe, start_coordinator, token, Coordinator,
};
pub(crate) use quic::{attempt, identity_of, raw_client_config, Identity, Outcome};
pub(crate) use store::{count, rss_kib, store};

/// The gateway's name in the lab's certificates and checks.
pub(crate) const GW: &str = "gateway.example.com";
/// The SMP's name, the other SAN of the lab's certificates.
pub(crate) const SMP: &str = "smp.example.net";
/// Every demo scenario with the diagnosis of the `gateway` check it leads to and the sites
/// that diagnosis names: the one table the fleet-view and the browser tests read.
pub(crate) const SCENARIOS: [(Scenario, &str, &[&str]); 7] = [
    (Scenario::Healthy, "healthy", &[]),
    (
        Scenario::ThumbprintMismatch,
        "cert_problem:thumbprint_mismatch",
        &[],
    ),
    (
        Scenario::ListenerOnLegacyPort,
        "listener_on_legacy_port",
        &[],
    ),
    (Scenario::CertExpiring, "cert_problem:cert_expiring", &[]),
    (
        Scenario::UntrustedRoot,
        "cert_problem:cert_untrusted",
        &["branch-lyon"],
    ),
    (Scenario::SanMissing, "cert_problem:cert_san_missing", &[]),
    (Scenario::GatewayDown, "gateway_down", &[]),
];

/// How long a test waits for something that should happen within seconds.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// One process, many tests: a test that must run alone holds the write side, every other
/// process test the read side.
static MACHINE: RwLock<()> = RwLock::new(());

/// Held by a process test for its whole run: it may run beside other such tests, never beside
/// one that holds [`alone`]. A wrapper, not the bare guard: each async test has its own runtime,
/// so holding it across `.await` blocks no other task.
pub(crate) struct Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>);

/// Held by a test that must have the machine to itself (no other process test runs meanwhile).
pub(crate) struct Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

/// See [`Shared`]. A test that failed while holding [`alone`] does not stop the others.
pub(crate) fn shared() -> Shared {
    Shared(MACHINE.read().unwrap_or_else(|e| e.into_inner()))
}

/// See [`Alone`].
pub(crate) fn alone() -> Alone {
    Alone(MACHINE.write().unwrap_or_else(|e| e.into_inner()))
}
