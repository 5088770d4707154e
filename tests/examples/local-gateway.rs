//! Starts a local CEM gateway simulator on loopback (a TLS server with a split-domain SAN
//! certificate from its own test CA) in one of the guide's states, then runs
//! `cemwatch-probe check` against it exactly as an administrator would, and prints the table.
//!
//! cargo run -p cemwatch-tests --example local-gateway -- [SCENARIO]
//!
//! Scenarios: healthy (default), thumbprint-mismatch, listener-on-legacy-port, untrusted-root,
//! san-missing, cert-expiring, sha1-signature, all.

use std::process::ExitCode;

use anyhow::{bail, Result};
use cemwatch_tests::pki::{Ca, LeafSpec};
use cemwatch_tests::server::{free_port, TlsServer};
use time::{Duration, OffsetDateTime};

const GW: &str = "gateway.example.com";
const SMP: &str = "smp.example.net";
const SCENARIOS: [&str; 7] = [
    "healthy",
    "thumbprint-mismatch",
    "listener-on-legacy-port",
    "untrusted-root",
    "san-missing",
    "cert-expiring",
    "sha1-signature",
];

fn scenario(name: &str) -> Result<u8> {
    let dir = tempfile::tempdir()?;
    let root = Ca::root("Example Internal Root CA")?;
    let ca_file = root.write_pem(dir.path())?.display().to_string();
    let good = root.issue(&LeafSpec::good(&[SMP, GW]))?;
    let mut policy_thumbprint = good.thumbprint();
    let mut expected_port = None;
    let served = match name {
        "healthy" => good,
        "thumbprint-mismatch" => {
            // The certificate was renewed; the policy still names the old one.
            policy_thumbprint = root.issue(&LeafSpec::good(&[SMP, GW]))?.thumbprint();
            good
        }
        "listener-on-legacy-port" => {
            expected_port = Some(free_port()?);
            good
        }
        "untrusted-root" => {
            Ca::root("Unknown Internal Root CA")?.issue(&LeafSpec::good(&[SMP, GW]))?
        }
        "san-missing" => root.issue(&LeafSpec::good(&[GW]))?,
        "cert-expiring" => {
            let mut spec = LeafSpec::good(&[SMP, GW]);
            spec.not_after = OffsetDateTime::now_utc() + Duration::days(12);
            root.issue(&spec)?
        }
        "sha1-signature" => root.issue_legacy(&[SMP, GW], "sha1", 2048)?,
        other => bail!(
            "unknown scenario {other:?}; choose one of: {}, all",
            SCENARIOS.join(", ")
        ),
    };
    if name != "healthy" && name != "thumbprint-mismatch" && name != "listener-on-legacy-port" {
        policy_thumbprint = served.thumbprint();
    }
    let server = TlsServer::start(&served)?;
    let port = expected_port.unwrap_or(server.port());
    let target = format!("{GW}:{port}");
    let resolve = format!("{GW}:*:127.0.0.1");
    let legacy = server.port().to_string();
    let args = [
        "cemwatch-probe",
        "check",
        &target,
        "--resolve",
        &resolve,
        "--ca-file",
        &ca_file,
        "--require-san",
        SMP,
        "--expect-thumbprint",
        &policy_thumbprint,
        "--legacy-port",
        &legacy,
    ];
    println!(
        "\n### scenario {name}: cemwatch-probe {}\n",
        args[1..].join(" ")
    );
    let code = cemwatch_probe::cli::main_with_args(args);
    Ok(if code == ExitCode::SUCCESS { 0 } else { 1 })
}

fn main() -> ExitCode {
    let wanted = std::env::args().nth(1).unwrap_or_else(|| "healthy".into());
    let names: Vec<&str> = if wanted == "all" {
        SCENARIOS.to_vec()
    } else {
        vec![wanted.as_str()]
    };
    let mut failed = 0;
    for name in names {
        match scenario(name) {
            Ok(code) => failed |= code,
            Err(e) => {
                eprintln!("local-gateway: {e:#}");
                return ExitCode::from(3);
            }
        }
    }
    ExitCode::from(failed)
}
