//! Writes the seed corpus of the fuzz targets (`fuzz/seeds/TARGET/`) from real things: frames
//! of every message, among them a report carrying the result of a real check against a TLS
//! gateway on loopback; certificates from the test PKI (good, expired, EC, client-only, CA,
//! SHA-1 and RSA-1024 from `openssl`); thumbprints as people paste them; coordinator
//! configurations. The seeds are committed; run this again when the wire format or the
//! configuration changes:
//!
//! cargo run -p cemwatch-tests --example fuzz-seeds -- [DIR]   (default: fuzz/seeds)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use cemwatch_probe::check::{run_check, CheckContext, CheckSpec, ResolveOverride, TrustStore};
use cemwatch_shared::wire::{
    self, CheckReport, Plan, PlannedCheck, Report, ToCoordinator, ToProbe, PREFIX_LEN,
};
use cemwatch_shared::{Expectations, Target, Thumbprint};
use cemwatch_tests::pki::{Ca, Eku, KeyKind, LeafSpec};
use cemwatch_tests::server::TlsServer;
use time::{Duration, OffsetDateTime};

const GW: &str = "gateway.example.com";
const SMP: &str = "smp.example.net";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes).with_context(|| format!("cannot write {name}"))
}

fn real_check(root: &Ca) -> Result<cemwatch_shared::CheckResult> {
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW]))?;
    let gateway = TlsServer::start(&leaf)?;
    let mut trust = TrustStore::empty();
    trust.add_der(root.cert_der.clone());
    let mut ctx = CheckContext::new(Arc::new(trust));
    ctx.overrides = vec![format!("{GW}:*:127.0.0.1")
        .parse::<ResolveOverride>()
        .map_err(anyhow::Error::msg)?];
    let spec = CheckSpec {
        target: Target {
            host: GW.into(),
            port: gateway.port(),
        },
        expectations: Expectations {
            thumbprint: Thumbprint::parse(&leaf.thumbprint()).ok(),
            required_sans: vec![SMP.into()],
            ..Expectations::default()
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(run_check(&spec, &ctx)))
}

fn frames(dir: &Path, root: &Ca) -> Result<()> {
    let result = real_check(root)?;
    let mut failing = result.clone();
    failing.verdict = cemwatch_shared::Severity::Fail;
    failing.findings.push(cemwatch_shared::Finding::new(
        cemwatch_shared::FindingCode::ThumbprintMismatch,
        "the served certificate is not the one in the policy",
    ));
    let labels: wire::Labels = [
        ("site".to_string(), "eu-west".to_string()),
        ("vantage".to_string(), "internet".to_string()),
    ]
    .into_iter()
    .collect();
    let to_coordinator = [
        (
            "hello",
            ToCoordinator::Hello {
                probe: "probe-eu-1".into(),
                agent_version: "0.1.0".into(),
                labels: labels.clone(),
            },
        ),
        (
            "report",
            ToCoordinator::Report(Report {
                seq: 42,
                round: Some(7),
                results: vec![
                    CheckReport {
                        check: "gateway".into(),
                        produced_at_ms: 1_795_564_800_000,
                        result: result.clone(),
                    },
                    CheckReport {
                        check: "gateway-old-policy".into(),
                        produced_at_ms: 1_795_564_800_500,
                        result: failing,
                    },
                ],
            }),
        ),
        (
            "report-empty",
            ToCoordinator::Report(Report {
                seq: 1,
                round: None,
                results: vec![],
            }),
        ),
        (
            "enroll",
            ToCoordinator::Enroll {
                token: format!(
                    "cwt1.{}.{}.{}",
                    "a".repeat(16),
                    "b".repeat(32),
                    "c".repeat(64)
                ),
                name: "probe-eu-1".into(),
                csr_der: root.cert_der.clone(),
                agent_version: "0.1.0".into(),
            },
        ),
        (
            "renew",
            ToCoordinator::Renew {
                csr_der: root.cert_der[..200].to_vec(),
            },
        ),
    ];
    let planned = PlannedCheck {
        name: "gateway".into(),
        target: result.target.clone(),
        expectations: result.expectations.clone(),
        interval_ms: 60_000,
        connect_timeout_ms: 5_000,
        handshake_timeout_ms: 10_000,
        resolve: vec![format!("{GW}:*:127.0.0.1")],
    };
    let to_probe = [
        (
            "plan",
            ToProbe::Plan(Plan {
                generation: 3,
                checks: vec![planned],
                reconnect_spread_ms: 100_000,
            }),
        ),
        ("ack", ToProbe::Ack { seq: 42 }),
        (
            "probe-now",
            ToProbe::ProbeNow {
                round: 7,
                checks: vec!["gateway".into()],
            },
        ),
        (
            "enrolled",
            ToProbe::Enrolled {
                name: "probe-eu-1".into(),
                cert_der: root.cert_der.clone(),
                labels,
            },
        ),
        (
            "refused",
            ToProbe::Refused {
                reason: "this token was already used".into(),
            },
        ),
    ];
    let frame_dir = dir.join("frame");
    let stream_dir = dir.join("frame_stream");
    let mut all = Vec::new();
    for (name, m) in &to_coordinator {
        let f = wire::encode(m)?;
        write(
            &frame_dir,
            &format!("to-coordinator-{name}"),
            &f[PREFIX_LEN..],
        )?;
        all.extend_from_slice(&f);
    }
    for (name, m) in &to_probe {
        let f = wire::encode(m)?;
        write(&frame_dir, &format!("to-probe-{name}"), &f[PREFIX_LEN..])?;
    }
    // Streams: one shape byte (how the stream is cut), then frames back to back.
    let mut stream = vec![3u8];
    stream.extend_from_slice(&all);
    write(&stream_dir, "session", &stream)?;
    let mut oversized = vec![0u8, 0x00, 0x10, 0x00, 0x01];
    oversized.extend_from_slice(&all[..64]);
    write(&stream_dir, "oversized-prefix", &oversized)?;
    let mut trailing = vec![1u8];
    let hello = wire::encode(&to_coordinator[0].1)?;
    let len = (hello.len() - PREFIX_LEN + 1) as u32;
    trailing.extend_from_slice(&len.to_be_bytes());
    trailing.extend_from_slice(&hello[PREFIX_LEN..]);
    trailing.push(0);
    write(&stream_dir, "trailing-byte", &trailing)?;
    Ok(())
}

fn certificates(dir: &Path, root: &Ca) -> Result<()> {
    let dir = dir.join("cert");
    let intermediate = root.intermediate("Example Issuing CA")?;
    let now = OffsetDateTime::now_utc();
    let good = intermediate.issue(&LeafSpec::good(&[GW, SMP]))?;
    write(&dir, "leaf-good", good.der())?;
    write(&dir, "ca-root", &root.cert_der)?;
    write(&dir, "ca-intermediate", &intermediate.cert_der)?;
    let mut expired = LeafSpec::good(&[GW]);
    expired.not_before = now - Duration::days(400);
    expired.not_after = now - Duration::days(30);
    write(&dir, "leaf-expired", root.issue(&expired)?.der())?;
    let mut ec = LeafSpec::good(&[GW, "192.0.2.10"]);
    ec.key = KeyKind::EcdsaP256;
    ec.eku = Eku::Absent;
    write(&dir, "leaf-ec-no-eku", root.issue(&ec)?.der())?;
    let mut client = LeafSpec::good(&["probe-eu-1"]);
    client.eku = Eku::ClientOnly;
    write(&dir, "leaf-client", root.issue(&client)?.der())?;
    // Legacy certificates modern libraries refuse to make (needs the openssl command).
    match root.issue_legacy(&[GW], "sha1", 1024) {
        Ok(legacy) => write(&dir, "leaf-sha1-rsa1024", legacy.der())?,
        Err(e) => eprintln!("skipping the legacy certificate seed (needs openssl): {e:#}"),
    }
    Ok(())
}

fn thumbprints(dir: &Path) -> Result<()> {
    let dir = dir.join("thumbprint");
    let seeds: [(&str, &str); 7] = [
        ("windows", "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7"),
        (
            "dialog",
            "\u{200E}3a 7f 9c 2b 11 d0 4e 5f 66 a7 b8 c9 d0 e1 f2 a3 b4 c5 d6 e7",
        ),
        (
            "openssl",
            "3A:7F:9C:2B:11:D0:4E:5F:66:A7:B8:C9:D0:E1:F2:A3:B4:C5:D6:E7",
        ),
        (
            "sha256",
            "8439B279D41FCC47FA435157090DAC3CF5CA7C7414E90249F8CEBF51FB370E8E",
        ),
        (
            "bom-and-newline",
            "\u{FEFF}3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7\u{200F}\n",
        ),
        ("too-short", "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6"),
        ("prefixed", "sha1=3A7F9C2B11D04E5F"),
    ];
    for (name, text) in seeds {
        write(&dir, name, text.as_bytes())?;
    }
    Ok(())
}

fn configs(dir: &Path) -> Result<()> {
    let dir = dir.join("config");
    let full = r#"[server]
quic_listen = "0.0.0.0:4433"
http_listen = "127.0.0.1:9464"
data_dir = "/var/lib/cemwatch"
stale_after = "5m"
probe_cert_ttl = "7d"
server_names = ["cemwatch.example.com"]

[limits]
max_connections = 10000
new_connections_per_second = 10
new_connections_burst = 100
address_validation = "auto"
retry_above_per_second = 200
idle_timeout = "60s"
max_frame_bytes = 1048576
reports_per_second = 20
report_burst = 200

[[check]]
name = "gateway"
host = "gateway.example.com"
port = 8443
legacy_ports = [443]
expect_thumbprint = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7"
require_san = ["smp.example.net"]
min_days_left = 30
interval = "60s"
connect_timeout = "5s"
handshake_timeout = "10s"
resolve = ["gateway.example.com:8443:203.0.113.10"]

[[check]]
name = "smp-agent-site"
host = "smp.example.net"
port = 4726
select = { vantage = "dmz" }
"#;
    write(&dir, "full", full.as_bytes())?;
    write(
        &dir,
        "minimal",
        b"[[check]]\nname = \"gateway\"\nhost = \"gateway.example.com\"\n",
    )?;
    write(
        &dir,
        "errors",
        b"[server]\nmax_connections = 5\n[limits]\nmax_connections = 0\nidle_timeout = \"1s\"\n[[check]]\nname = \"bad name\"\nhost = \"\"\nport = 0\ninterval = \"0s\"\nresolve = [\"x\"]\n",
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds"));
    let root = Ca::root("Example Internal Root CA")?;
    frames(&dir, &root)?;
    certificates(&dir, &root)?;
    thumbprints(&dir)?;
    configs(&dir)?;
    let shown = dir.canonicalize().unwrap_or(dir);
    println!("fuzz seeds written to {}", shown.display());
    Ok(())
}
