//! A lab for one test (a TLS gateway on loopback, its CA and a temp dir) and the coordinator
//! configuration that checks it.

use std::path::PathBuf;

use cemwatch_tests::pki::{Ca, LeafSpec};
use cemwatch_tests::server::TlsServer;

use super::{GW, SMP};

/// A gateway and a directory for one test.
pub(crate) struct Lab {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub gateway: TlsServer,
    pub thumbprint: String,
}

/// A root CA (written to the lab's directory for the probes), a gateway serving a good leaf of
/// it for [`SMP`] and [`GW`].
pub(crate) fn lab() -> Lab {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("Lab Root CA").expect("root");
    let ca_file = root.write_pem(dir.path()).expect("ca");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    let gateway = TlsServer::start(&leaf).expect("gateway");
    Lab {
        thumbprint: leaf.thumbprint(),
        dir,
        ca_file,
        gateway,
    }
}

/// The `[server]` table: QUIC on `quic_port` (0 for any), HTTP on any port, data in `data`,
/// with `extra` lines appended to the table.
pub(crate) fn server_toml(quic_port: u16, extra: &str) -> String {
    format!(
        "[server]\nquic_listen = \"127.0.0.1:{quic_port}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nstale_after = \"30s\"\n{extra}\n"
    )
}

/// A 1-second `[[check]]` named `name` of the lab's gateway.
pub(crate) fn check_toml(name: &str, lab: &Lab) -> String {
    format!(
        "[[check]]\nname = \"{name}\"\nhost = \"{GW}\"\nport = {}\nlegacy_ports = []\nexpect_thumbprint = \"{}\"\nrequire_san = [\"{SMP}\"]\ninterval = \"1s\"\nresolve = [\"{GW}:*:127.0.0.1\"]\n\n",
        lab.gateway.port(),
        lab.thumbprint
    )
}

/// Writes `cemwatch.toml` with one 1-second check and `extra` appended (a `[limits]` table).
pub(crate) fn write_config(lab: &Lab, extra: &str) -> PathBuf {
    let text = format!(
        "{}{}{extra}",
        server_toml(0, ""),
        check_toml("gateway", lab)
    );
    let path = lab.dir.path().join("cemwatch.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A result of the lab's gateway with verdict ok and no TLS facts: what a report carries when
/// the test is about the report, not the check.
pub(crate) fn ok_result() -> cemwatch_shared::CheckResult {
    use cemwatch_shared::model::{DnsResult, DnsSource, Durations, TcpResult, TcpState};
    cemwatch_shared::CheckResult {
        target: cemwatch_shared::Target {
            host: GW.into(),
            port: 8443,
        },
        expectations: cemwatch_shared::Expectations::default(),
        started_at: "2026-11-25T00:00:00Z".into(),
        verdict: cemwatch_shared::Severity::Ok,
        findings: vec![],
        dns: DnsResult {
            host: GW.into(),
            source: DnsSource::Override,
            addresses: vec!["127.0.0.1:8443".into()],
            duration_ms: 0.1,
            error: None,
        },
        tcp: TcpResult {
            state: TcpState::Open,
            address: Some("127.0.0.1:8443".into()),
            duration_ms: 0.1,
            error: None,
        },
        tls: None,
        certificate: None,
        legacy_ports: vec![],
        durations: Durations::default(),
        addresses: vec![],
        skipped_addresses: vec![],
    }
}
