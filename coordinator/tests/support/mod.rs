//! Helpers shared by the coordinator's process tests (fleet, fleet view, agent log, auth
//! matrix, flood): a lab (a TLS gateway on loopback and a
//! temp dir), the real `cemwatch` and `cemwatch-probe` binaries, tokens and enrolment, a
//! `/metrics` scraper, raw QUIC clients with any identity, and the store read directly.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cemwatch_shared::wire::{self, ToCoordinator, ToProbe};
use cemwatch_tests::pki::{Ca, LeafSpec};
use cemwatch_tests::process::{http_get, Proc};
use cemwatch_tests::server::TlsServer;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub(crate) const COORDINATOR: &str = env!("CARGO_BIN_EXE_cemwatch");
pub(crate) const GW: &str = "gateway.example.com";
pub(crate) const SMP: &str = "smp.example.net";
pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn probe_bin() -> PathBuf {
    let path = Path::new(COORDINATOR)
        .with_file_name(format!("cemwatch-probe{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it), or `cargo build -p cemwatch-probe` first",
        path.display()
    );
    path
}

/// A gateway and a directory for one test.
pub(crate) struct Lab {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub gateway: TlsServer,
    pub thumbprint: String,
}

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

/// Writes `cemwatch.toml` with one 1-second check and `extra` appended (a `[limits]` table).
pub(crate) fn write_config(lab: &Lab, extra: &str) -> PathBuf {
    let text = format!(
        "[server]\nquic_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nstale_after = \"30s\"\n\n[[check]]\nname = \"gateway\"\nhost = \"{GW}\"\nport = {}\nlegacy_ports = []\nexpect_thumbprint = \"{}\"\nrequire_san = [\"{SMP}\"]\ninterval = \"1s\"\nresolve = [\"{GW}:*:127.0.0.1\"]\n\n{extra}",
        lab.gateway.port(),
        lab.thumbprint
    );
    let path = lab.dir.path().join("cemwatch.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

pub(crate) struct Coordinator {
    pub proc: Proc,
    pub quic: SocketAddr,
    pub http: SocketAddr,
}

pub(crate) fn start_coordinator(config: &Path) -> Coordinator {
    let mut cmd = Command::new(COORDINATOR);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("CEMWATCH_LOG", "info");
    let mut proc = Proc::spawn("coordinator", cmd).expect("spawn coordinator");
    let quic = proc.listening("quic").expect("quic address");
    let http = proc.listening("http").expect("http address");
    Coordinator { proc, quic, http }
}

pub(crate) fn token(config: &Path, labels: &str, name: &str, ttl: &str) -> String {
    let out = Command::new(COORDINATOR)
        .args(["token", "create", "--config"])
        .arg(config)
        .args(["--labels", labels, "--name", name, "--ttl", ttl])
        .output()
        .expect("token create");
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

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

pub(crate) fn enroll_ok(quic: SocketAddr, token: &str, state: &Path) {
    let out = enroll(quic, token, state);
    assert!(
        out.status.success(),
        "enroll failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn run_probe(name: &str, state: &Path, ca_file: &Path) -> Proc {
    let mut cmd = Command::new(probe_bin());
    cmd.args(["run", "--state-dir"])
        .arg(state)
        .arg("--ca-file")
        .arg(ca_file)
        .env("CEMWATCH_LOG", "info");
    Proc::spawn(name, cmd).expect("spawn probe")
}

pub(crate) fn get_json(http: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(http, path).expect("GET");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Value of one series from a `/metrics` scrape (`name{labels}` exactly as rendered).
pub(crate) fn metric(http: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics").expect("scrape");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A client identity: certificate chain and key.
pub(crate) type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The identity `cemwatch-probe enroll` stored in `state`.
pub(crate) fn identity_of(state: &Path) -> Identity {
    use rustls::pki_types::pem::PemObject;
    let cert = std::fs::read(state.join("probe.crt")).expect("cert");
    let key = std::fs::read(state.join("probe.key")).expect("key");
    (
        vec![CertificateDer::from_pem_slice(&cert).expect("pem")],
        PrivateKeyDer::from_pem_slice(&key).expect("key"),
    )
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A QUIC client configuration that accepts any server and presents `identity` (or none).
pub(crate) fn raw_client_config(identity: Option<Identity>) -> quinn::ClientConfig {
    let provider = cemwatch_transport::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut tls = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(cemwatch_transport::quic::transport_config()));
    config
}

/// What the coordinator did with an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handshake failed or the connection was closed; the reason as the client saw it.
    Closed(String),
    /// The coordinator answered `Refused`.
    Refused(String),
    /// The coordinator answered with something else: the attempt got in.
    Accepted(String),
}

/// Connects with `identity`, says `Hello` as `claim`, sends `report` right behind it and
/// reports what the coordinator did.
pub(crate) async fn attempt(
    endpoint: &quinn::Endpoint,
    quic: SocketAddr,
    identity: Option<Identity>,
    claim: &str,
    report: ToCoordinator,
) -> Outcome {
    let connecting =
        match endpoint.connect_with(raw_client_config(identity), quic, wire::SERVER_NAME) {
            Ok(c) => c,
            Err(e) => return Outcome::Closed(e.to_string()),
        };
    let conn = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Outcome::Closed(e.to_string()),
        Err(_) => return Outcome::Closed("handshake timed out".into()),
    };
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = ToCoordinator::Hello {
            probe: claim.to_string(),
            agent_version: "auth-matrix".into(),
            labels: Default::default(),
        };
        cemwatch_transport::frame::write_frame(&mut send, &hello)
            .await
            .map_err(|e| e.to_string())?;
        cemwatch_transport::frame::write_frame(&mut send, &report)
            .await
            .map_err(|e| e.to_string())?;
        cemwatch_transport::frame::read_frame::<ToProbe>(&mut recv)
            .await
            .map_err(|e| e.to_string())
    };
    let outcome = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Err(_) => Outcome::Closed("no answer within 10 s".into()),
        Ok(Err(e)) => Outcome::Closed(conn.close_reason().map(|r| r.to_string()).unwrap_or(e)),
        Ok(Ok(None)) => Outcome::Closed("stream finished".into()),
        Ok(Ok(Some(ToProbe::Refused { reason }))) => Outcome::Refused(reason),
        Ok(Ok(Some(other))) => Outcome::Accepted(format!("{other:?}")),
    };
    conn.close(0u32.into(), b"done");
    outcome
}

/// The coordinator's process RSS in KiB (Linux), from /proc/PID/status.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The store, opened read-only beside the running coordinator.
pub(crate) fn store(lab: &Lab) -> rusqlite::Connection {
    let path = lab.dir.path().join("data").join("cemwatch.sqlite");
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db
}

/// One number from the store.
pub(crate) fn count(db: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> i64 {
    db.query_row(sql, params, |r| r.get(0)).expect("query")
}
