//! QUIC transport between probes and the coordinator: frame I/O over a quinn stream, the
//! transport settings sized for many small, mostly idle connections, and the probe-side TLS
//! configurations (CA-pinned enrolment, then mutual TLS). The coordinator uses the frame I/O
//! and transport settings from here too, so both ends agree by construction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Serialize;

use cemwatch_shared::wire::{self, WireError, ALPN, PREFIX_LEN};

/// Why a frame could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The frame itself was bad.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Reading failed (connection lost, reset).
    #[error("read failed: {0}")]
    Read(String),
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(String),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<(), TransportError> {
    let bytes = wire::encode(message)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| TransportError::Write(e.to_string()))
}

/// Reads one frame; `Ok(None)` when the peer finished the stream between frames.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<T>, TransportError> {
    read_frame_max(recv, wire::MAX_FRAME).await
}

/// Reads one frame of at most `limit` bytes (capped at `MAX_FRAME`); `Ok(None)` when the peer
/// finished the stream between frames. The length is checked before anything is read, and the
/// payload buffer grows with the bytes that actually arrive (by chunks of at most 64 KiB), so
/// a peer announcing a large frame and sending nothing costs nothing.
pub async fn read_frame_max<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Option<T>, TransportError> {
    const CHUNK: usize = 64 * 1024;
    let mut prefix = [0u8; PREFIX_LEN];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(TransportError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => {
            return Err(TransportError::Read(e.to_string()))
        }
    }
    let len = wire::payload_len_max(prefix, limit)?;
    let mut payload = Vec::with_capacity(len.min(CHUNK));
    while payload.len() < len {
        let want = (len - payload.len()).min(CHUNK);
        match recv.read_chunk(want, true).await {
            Ok(Some(chunk)) => payload.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(TransportError::Truncated),
            Err(e) => return Err(TransportError::Read(e.to_string())),
        }
    }
    Ok(Some(wire::decode(&payload)?))
}

/// Transport settings for probe connections: a few streams, small windows sized to the
/// largest frame, keep-alives under the idle timeout so NAT bindings stay open.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(4u8.into());
    t.max_concurrent_uni_streams(0u8.into());
    let window = (wire::MAX_FRAME as u32 + 64 * 1024).into();
    t.stream_receive_window(window);
    t.receive_window(window);
    t.send_window(2 * wire::MAX_FRAME as u64);
    // A dead peer is noticed within the idle timeout, which bounds how fast a probe fails over
    // after a coordinator crash; keep-alives (a few bytes) keep the connection and NAT alive.
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Transport settings for the coordinator's side of probe connections: the probes' windows,
/// but a probe may open only the one stream the protocol uses (quinn-proto sets up state for
/// every stream a peer may open, whether it is used or not), the coordinator sends no
/// keep-alives of its own (the probes' keep-alives hold the path open; the coordinator's would
/// double the packets of an idle fleet) and does no path-MTU discovery (what it sends, plans and
/// acknowledgements, fits in the initial 1,200 bytes; discovery would cost every connection a
/// few probe packets). It also sends without segmentation offload: what it sends is a packet
/// at a time, and quinn keeps each connection's transmit buffer at the size of its largest
/// batch (measured: 4 KiB less memory per connection).
pub fn server_transport_config() -> quinn::TransportConfig {
    let mut t = transport_config();
    t.max_concurrent_bidi_streams(1u8.into());
    t.keep_alive_interval(None);
    t.mtu_discovery_config(None);
    t.enable_segmentation_offload(false);
    t
}

/// The crypto provider used for coordinator connections: ring, with the TLS 1.3 SHA-256 suites
/// first (AES-128-GCM, ChaCha20-Poly1305, then AES-256-GCM-SHA384 and the rest in ring's order).
/// The default order starts with the SHA-384 suite, whose transcript hash and key schedule cost
/// a handshake more for no gain on a link pinned to one CA; both ends use this provider, so the
/// first suite is the one they agree on.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        _ => 2,
    });
    Arc::new(provider)
}

/// SHA-256 of DER bytes.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// rustls refused it.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// quinn refused it.
    #[error("QUIC configuration: {0}")]
    Quic(String),
}

fn quic_client(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, ConfigError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ConfigError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// Client configuration for enrolment: no client certificate; the server is trusted only if it
/// presents a chain that contains the CA whose SHA-256 is `pin` and is signed by it.
pub fn enrol_client_config(pin: [u8; 32]) -> Result<quinn::ClientConfig, ConfigError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quic_client(tls)
}

/// Client configuration for a probe: trusts only the pinned coordinator CA and presents the
/// probe's certificate.
pub fn mtls_client_config(
    ca_der: &[u8],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ClientConfig, ConfigError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quic_client(tls)
}

/// A client endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(for_addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if for_addr.is_ipv6() {
        "[::]:0".parse().map_err(std::io::Error::other)?
    } else {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    };
    quinn::Endpoint::client(bind)
}

/// Verifies the coordinator during enrolment against the CA pin carried by the token.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256(c.as_ref()) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the coordinator's CA does not match the pin in the enrolment token: this is not the coordinator that issued the token".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
