//! The probe never follows a hostile gateway into unbounded work: against a port that accepts
//! and never answers, one that dribbles a TLS record a byte at a time, a server sending a very
//! long chain and one sending a chain larger than TLS allows, the check ends within its
//! handshake timeout, keeps at most `MAX_CHAIN_CERTS` certificates, and says what happened.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cemwatch_probe::check::tls::{self, MAX_CHAIN_CERTS};
use cemwatch_probe::check::{run_check, CheckContext, CheckSpec, ResolveOverride, TrustStore};
use cemwatch_shared::{Expectations, FindingCode, Target};
use cemwatch_tests::pki::{Ca, KeyKind, LeafSpec};
use cemwatch_tests::server::TlsServer;

const GW: &str = "gateway.example.com";
const TIMEOUT: Duration = Duration::from_millis(1500);
/// Slack for a loaded machine: the check must end within the timeout plus this.
const SLACK: Duration = Duration::from_millis(1500);

/// A TCP peer on loopback that runs `behave` on every connection until dropped.
struct Hostile {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    fn start(behave: fn(std::net::TcpStream, &AtomicBool)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let flag = flag.clone();
                std::thread::spawn(move || behave(stream, &flag));
            }
        });
        Self { addr, stop }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// Accepts and says nothing, holding the connection open.
fn silent(_stream: std::net::TcpStream, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the ClientHello, announces a 16 KiB handshake record and sends it a byte every 50 ms.
fn dribble(mut stream: std::net::TcpStream, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.read(&mut buf);
    if stream
        .write_all(&[0x16, 0x03, 0x03, 0x40, 0x00, 0x02])
        .is_err()
    {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if stream.write_all(&[0x00]).is_err() {
            return;
        }
    }
}

fn spec(port: u16) -> CheckSpec {
    CheckSpec {
        target: Target {
            host: GW.into(),
            port,
        },
        expectations: Expectations {
            legacy_ports: vec![],
            ..Expectations::default()
        },
    }
}

fn context(trust: TrustStore) -> CheckContext {
    let mut ctx = CheckContext::new(Arc::new(trust));
    ctx.overrides = vec![format!("{GW}:*:127.0.0.1")
        .parse::<ResolveOverride>()
        .expect("override")];
    ctx.connect_timeout = TIMEOUT;
    ctx.handshake_timeout = TIMEOUT;
    ctx
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_port_that_accepts_and_never_answers_ends_at_the_handshake_timeout() {
    for (name, behave) in [("silent", silent as fn(_, &_)), ("dribbling", dribble)] {
        let peer = Hostile::start(behave);
        let started = Instant::now();
        let result = rt().block_on(run_check(
            &spec(peer.addr.port()),
            &context(TrustStore::empty()),
        ));
        let took = started.elapsed();
        println!(
            "{name} peer: the check ended after {} ms (handshake timeout {} ms)",
            took.as_millis(),
            TIMEOUT.as_millis()
        );
        assert!(
            took >= TIMEOUT,
            "{name}: ended before the timeout: {took:?}"
        );
        assert!(took < TIMEOUT + SLACK, "{name}: took {took:?}");
        assert!(
            result.has(FindingCode::TlsHandshakeFailed),
            "{name}: {:?}",
            result.findings
        );
        let tls = result.tls.as_ref().expect("tls stage");
        assert!(!tls.completed);
        assert!(
            tls.error
                .as_deref()
                .is_some_and(|e| e.contains("did not finish within 1500 ms")),
            "{name}: {:?}",
            tls.error
        );
        assert!(result.certificate.is_none());
    }
}

#[test]
fn the_command_line_check_against_a_silent_port_exits_2_in_time() {
    let peer = Hostile::start(silent);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cemwatch-probe"))
        .args([
            "check",
            &format!("{GW}:{}", peer.addr.port()),
            "--resolve",
            &format!("{GW}:*:127.0.0.1"),
            "--no-legacy-ports",
            "--handshake-timeout",
            "1s",
            "--output",
            "json",
        ])
        .output()
        .expect("run");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        took < Duration::from_secs(1) + SLACK + Duration::from_secs(1),
        "{took:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json["findings"][0]["code"], "tls_handshake_failed",
        "{json}"
    );
}

#[test]
fn a_very_long_chain_is_cut_at_the_cap() {
    let root = Ca::root("Hostile Root").expect("root");
    let mut spec_leaf = LeafSpec::good(&[GW]);
    spec_leaf.key = KeyKind::EcdsaP256;
    let mut leaf = root.issue(&spec_leaf).expect("leaf");
    // The leaf, then the root 40 times: far more than any real gateway sends.
    leaf.chain = std::iter::once(leaf.chain[0].clone())
        .chain(std::iter::repeat_n(root.cert_der.clone(), 40))
        .collect();
    let sent: usize = leaf.chain.iter().map(Vec::len).sum();
    let server = TlsServer::start(&leaf).expect("server");

    let started = Instant::now();
    let hs = rt().block_on(async {
        let stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        tls::handshake(stream, GW, TIMEOUT, None).await
    });
    println!(
        "long chain: the server sent {} certificates ({sent} bytes); the probe kept {} in {} ms",
        leaf.chain.len(),
        hs.captured.chain.len(),
        started.elapsed().as_millis()
    );
    assert!(hs.result.is_ok(), "{:?}", hs.result);
    assert_eq!(hs.captured.chain.len(), MAX_CHAIN_CERTS);
    assert!(hs.captured.truncated);
    assert_eq!(hs.captured.chain[0], leaf.chain[0], "the leaf is kept");

    // The whole check judges what was kept and finishes normally.
    let mut trust = TrustStore::empty();
    trust.add_der(root.cert_der.clone());
    let result = rt().block_on(run_check(&spec(server.port()), &context(trust)));
    let tls = result.tls.as_ref().expect("tls");
    assert!(tls.completed);
    assert!(tls.trusted, "{:?}", tls.trust_error);
    assert_eq!(tls.chain.len(), MAX_CHAIN_CERTS);
}

#[test]
fn a_chain_larger_than_tls_allows_fails_the_handshake_quickly() {
    let root = Ca::root("Hostile Root").expect("root");
    let mut leaf = root.issue(&LeafSpec::good(&[GW])).expect("leaf");
    // About 100 KiB of certificates: more than a TLS handshake message may hold (64 KiB).
    let copies = 100 * 1024 / root.cert_der.len() + 1;
    leaf.chain = std::iter::once(leaf.chain[0].clone())
        .chain(std::iter::repeat_n(root.cert_der.clone(), copies))
        .collect();
    let server = TlsServer::start(&leaf).expect("server");
    let started = Instant::now();
    let hs = rt().block_on(async {
        let stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        tls::handshake(stream, GW, TIMEOUT, None).await
    });
    let took = started.elapsed();
    println!(
        "oversized chain: {} bytes refused in {} ms: {:?}",
        leaf.chain.iter().map(Vec::len).sum::<usize>(),
        took.as_millis(),
        hs.result.as_ref().err()
    );
    let error = hs.result.expect_err("refused");
    assert!(
        took < TIMEOUT,
        "refused at once, not at the timeout: {took:?}"
    );
    assert!(error.message.contains("larger than the 64 KiB"), "{error}");
    assert!(hs.captured.chain.is_empty());
}
