//! The TLS stage: a real handshake with rustls whose certificate verifier captures the chain
//! and never aborts. Trust, names and policy are judged afterwards, each by its own finding
//! code; the handshake only has to tell whether the port speaks TLS and what it serves.
//!
//! What a hostile gateway can cost the probe, by construction: the handshake ends within its
//! timeout whatever the server sends or withholds (silence, a record dribbled a byte at a
//! time), a server's handshake message is at most 64 KiB (rustls refuses more), at most
//! [`MAX_CHAIN_CERTS`] certificates and [`MAX_CHAIN_BYTES`] are kept, the chain builder follows
//! at most `cert::MAX_CHAIN_DEPTH` links, and after the handshake the probe reads nothing but
//! a close-notify, for at most [`SHUTDOWN_TIMEOUT`]. The TCP stage tries at most
//! `tcp::MAX_ADDRESSES` addresses, each within the connect timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The most certificates the probe keeps from one server; a hostile server cannot make the
/// probe hold more.
pub const MAX_CHAIN_CERTS: usize = 10;
/// The largest total size of the captured chain, in bytes. rustls itself refuses any handshake
/// message over 64 KiB (so a larger chain fails the handshake before it is captured); this
/// bound holds even if that changes.
pub const MAX_CHAIN_BYTES: usize = 256 * 1024;

/// How long the probe waits for the server's close-notify after a completed handshake.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(200);

/// What a handshake captured.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// Leaf first, then what the server sent after it (bounded).
    pub chain: Vec<Vec<u8>>,
    /// Whether the handshake signature verified with the leaf's key (`None`: not evaluated).
    pub signature_valid: Option<bool>,
    /// Whether the chain was cut at the bounds.
    pub truncated: bool,
}

/// A verifier that records the chain and always accepts.
#[derive(Debug)]
struct CapturingVerifier {
    captured: Mutex<Captured>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl CapturingVerifier {
    fn record_signature(&self, ok: bool) {
        if let Ok(mut c) = self.captured.lock() {
            c.signature_valid = Some(ok);
        }
    }
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.captured.lock() {
            let mut total = 0usize;
            c.chain.clear();
            c.truncated = false;
            for cert in std::iter::once(end_entity).chain(intermediates.iter()) {
                total += cert.len();
                if c.chain.len() >= MAX_CHAIN_CERTS || total > MAX_CHAIN_BYTES {
                    c.truncated = true;
                    break;
                }
                c.chain.push(cert.as_ref().to_vec());
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let ok =
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms).is_ok();
        self.record_signature(ok);
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let ok =
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms).is_ok();
        self.record_signature(ok);
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = self.algorithms.supported_schemes();
        // Old gateways may only sign with SHA-1 in TLS 1.2; offer it last so the handshake
        // completes and the certificate can be judged.
        for legacy in [
            SignatureScheme::RSA_PKCS1_SHA1,
            SignatureScheme::ECDSA_SHA1_Legacy,
        ] {
            if !schemes.contains(&legacy) {
                schemes.push(legacy);
            }
        }
        schemes
    }
}

/// The outcome of a handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Completed, or the error explained.
    pub result: Result<Negotiated, String>,
    /// What the verifier captured (may hold a chain even when the handshake failed later).
    pub captured: Captured,
    /// Time spent.
    pub duration: Duration,
}

/// What was negotiated.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// Cipher suite name.
    pub cipher: String,
}

/// ring, with the cipher suites offered in the order browsers and Go's crypto/tls offer them
/// (AES-128-GCM first). A gateway that honours the client's order (rustls, nginx with
/// `ssl_prefer_server_ciphers off`) then picks the SHA-256 suite, as it would for any
/// browser, rather than rustls' default first choice AES-256-GCM-SHA384, whose key schedule
/// costs a check more for the same evidence; gateways that impose their own order are
/// unaffected. The suites offered are the same, only their order differs.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(provider)
}

/// Runs a TLS handshake over `stream`, sending SNI for `host` when it is a DNS name.
pub async fn handshake(stream: TcpStream, host: &str, timeout: Duration) -> Handshake {
    let start = Instant::now();
    let provider = provider();
    let verifier = Arc::new(CapturingVerifier {
        captured: Mutex::new(Captured::default()),
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth()
        });
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            return Handshake {
                result: Err(format!("TLS configuration error: {e}")),
                captured: Captured::default(),
                duration: start.elapsed(),
            }
        }
    };
    // Every check is a full handshake (it must see the certificate), so session tickets are
    // never used: not offering resumption spares the gateway issuing them and the probe
    // decrypting and storing them.
    config.resumption = rustls::client::Resumption::disabled();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = match ServerName::try_from(bare.to_string()) {
        Ok(n) => n,
        Err(_) => {
            return Handshake {
                result: Err(format!("{host:?} is not a valid TLS server name")),
                captured: Captured::default(),
                duration: start.elapsed(),
            }
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let outcome = tokio::time::timeout(timeout, connector.connect(server_name, stream)).await;
    let result = match outcome {
        Ok(Ok(mut tls)) => {
            let (_, conn) = tls.get_ref();
            let version = conn
                .protocol_version()
                .map(|v| match v {
                    rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                    rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            let cipher = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default();
            // Say goodbye properly; a gateway that does not answer is not our problem.
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, tls.shutdown()).await;
            Ok(Negotiated { version, cipher })
        }
        Ok(Err(e)) => Err(explain(&e)),
        Err(_) => Err(format!(
            "the TLS handshake did not finish within {} ms (the port accepted TCP but does not answer TLS)",
            timeout.as_millis()
        )),
    };
    let captured = verifier
        .captured
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    Handshake {
        result,
        captured,
        duration: start.elapsed(),
    }
}

fn explain(error: &std::io::Error) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    const TOO_LARGE: &str = "the server sent a handshake message larger than the 64 KiB a TLS client accepts (a certificate chain far too long?): the probe does not follow it";
    match inner {
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::HandshakePayloadTooLarge
            | rustls::InvalidMessage::MessageTooLarge,
        )) => TOO_LARGE.to_string(),
        Some(rustls::Error::InvalidMessage(m)) => format!(
            "the port answered with something that is not TLS ({m:?}): another service (plain HTTP?) holds the port"
        ),
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the server refused the handshake with the TLS alert {alert:?}")
        }
        Some(rustls::Error::PeerIncompatible(why)) => {
            format!("no TLS version or cipher suite in common with the server ({why:?})")
        }
        Some(other) => format!("TLS error: {other}"),
        None => match error.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "the server closed the connection during the TLS handshake".to_string()
            }
            std::io::ErrorKind::ConnectionReset => {
                "the server reset the connection during the TLS handshake".to_string()
            }
            _ if error.to_string().contains("message buffer full") => TOO_LARGE.to_string(),
            _ => format!("TLS handshake failed: {error}"),
        },
    }
}
