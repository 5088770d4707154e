//! The coordinator and probes as real processes: `cemwatch serve`, admin commands and tokens,
//! `cemwatch-probe enroll` and `run`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use cemwatch_tests::process::Proc;

use super::paths::{probe_bin, COORDINATOR};

/// A running `cemwatch serve`.
pub(crate) struct Coordinator {
    pub proc: Proc,
    pub quic: SocketAddr,
    pub http: SocketAddr,
}

/// Starts `cemwatch serve --config CONFIG` (its log under `name`) and learns its addresses from
/// its log.
pub(crate) fn start_coordinator(name: &str, config: &Path) -> Coordinator {
    let mut cmd = Command::new(COORDINATOR);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("CEMWATCH_LOG", "info");
    let mut proc = Proc::spawn(name, cmd).expect("spawn coordinator");
    let quic = proc.listening("quic").expect("quic address");
    let http = proc.listening("http").expect("http address");
    Coordinator { proc, quic, http }
}

/// Runs a `cemwatch` admin command; returns (exit code, stdout, stderr).
pub(crate) fn admin(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(COORDINATOR)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("cemwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A single-use token for a probe named `name` with `labels`, valid for `ttl`.
pub(crate) fn token(config: &Path, labels: &str, name: &str, ttl: &str) -> String {
    let (code, out, err) = admin(
        &[
            "token", "create", "--labels", labels, "--name", name, "--ttl", ttl,
        ],
        config,
    );
    assert_eq!(code, 0, "token create: {err}");
    out.trim().to_string()
}

/// `cemwatch-probe enroll` into `state` at `quic`, as it ended.
pub(crate) fn enroll(quic: SocketAddr, token: &str, state: &Path) -> std::process::Output {
    Command::new(probe_bin())
        .args([
            "enroll",
            "--coordinator",
            &quic.to_string(),
            "--token",
            token,
            "--state-dir",
        ])
        .arg(state)
        .args(["--timeout", "10s"])
        .output()
        .expect("enroll")
}

/// Enrols a probe into `state` at `quic`, or fails the test.
pub(crate) fn enroll_ok(quic: SocketAddr, token: &str, state: &Path) {
    let out = enroll(quic, token, state);
    assert!(
        out.status.success(),
        "enroll failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an enrolled probe, reporting to `coordinators` in that order (none: the one it
/// enrolled at).
pub(crate) fn run_probe(
    name: &str,
    state: &Path,
    ca_file: &Path,
    coordinators: &[SocketAddr],
) -> Proc {
    let mut cmd = Command::new(probe_bin());
    cmd.args(["run", "--state-dir"])
        .arg(state)
        .arg("--ca-file")
        .arg(ca_file)
        .env("CEMWATCH_LOG", "info");
    for c in coordinators {
        cmd.args(["--coordinator", &c.to_string()]);
    }
    Proc::spawn(name, cmd).expect("spawn probe")
}

/// Enrols each `(name, labels)` probe at `coordinator` with a fresh token for it (its state
/// under `dir`), as the README does, and runs it trusting `ca_file`.
pub(crate) fn enrolled_probes(
    coordinator: &Coordinator,
    config: &Path,
    dir: &Path,
    ca_file: &Path,
    probes: &[(&str, &str)],
) -> Vec<Proc> {
    probes
        .iter()
        .map(|(name, labels)| {
            let state = dir.join(name);
            enroll_ok(
                coordinator.quic,
                &token(config, labels, name, "10m"),
                &state,
            );
            run_probe(name, &state, ca_file, &[])
        })
        .collect()
}
