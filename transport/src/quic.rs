//! QUIC set-up for probe connections: transport settings sized for many small, mostly idle
//! connections, and the probe's client configurations (CA-pinned enrolment, then mutual TLS).
//! The coordinator takes its server transport settings from here, so both ends agree.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use cemwatch_shared::wire::{self, ALPN};

use crate::tls::{provider, PinnedCaVerifier};

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
    t.keep_alive_interval(Some(KEEP_ALIVE));
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t.ack_frequency_config(Some(ack_frequency()));
    t
}

/// How long a probe's connection may go without a packet from the coordinator before the probe
/// sends a keep-alive (a PING). Half of [`IDLE_TIMEOUT`], the shortest idle timeout either end
/// allows (the coordinator's `limits.idle_timeout` is at least that): a keep-alive that is lost
/// is sent again at the probe's probe timeout, doubling from tens of milliseconds (from 30 ms,
/// 30 × (2⁹ − 1) ms ≈ 15 s), so a lost one has about nine attempts in the 15 s before the
/// connection would time out. 15 s is also under the shortest UDP mapping timeouts NATs are
/// seen to use (30 s; RFC 4787 asks for at least 2 minutes). The cost is the coordinator's: each keep-alive is a datagram in and its
/// acknowledgement a datagram out, 6,667 of each a second at 100,000 idle probes. It was 10 s
/// before (the limits' documentation already said 15): 10,000 of each, and 29% of the
/// benchmark machine's core for 100,000 idle probes (BENCHMARKS.md).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The probe's idle timeout: a connection with no packet from the coordinator for this long is
/// over, and the probe reconnects (the smaller of both ends' idle timeouts applies; the
/// coordinator's `limits.idle_timeout` may not be shorter).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

// A lost keep-alive must have time to be sent again before the connection times out.
const _: () = assert!(2 * KEEP_ALIVE.as_secs() <= IDLE_TIMEOUT.as_secs());

/// Ack-eliciting packets a peer may receive before it must acknowledge at once
/// ([`ack_frequency`]).
pub const ACK_ELICITING_THRESHOLD: u32 = 7;

/// Longest a peer may hold an acknowledgement ([`ack_frequency`]): QUIC's default
/// `max_ack_delay`.
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

/// What each end asks of the other's acknowledgements (the ACK frequency extension, which
/// quinn implements at both ends): acknowledge at once only after more than
/// [`ACK_ELICITING_THRESHOLD`] ack-eliciting packets, otherwise within [`MAX_ACK_DELAY`] or
/// with the next packet sent anyway. Why: the coordinator answers a report with an `Ack` once
/// the report is committed, a few milliseconds later; under RFC 9000's default (acknowledge
/// every second packet at once) the transport's acknowledgement left in a packet of its own
/// before that, and under saturating ingest the coordinator made 0.69 `sendmsg` calls (a
/// datagram each) per report where the raw quinn baseline, answering at once, made 0.55.
/// Held, the acknowledgement rides in the `Ack`'s packet when the `Ack` leaves within the
/// delay. Under saturation the `Ack` waits longer for its session to be polled, and the
/// acknowledgement leaves alone (0.52-0.58 calls per report; BENCHMARKS.md says where they
/// go). quinn caps the delay one end asks for at the larger of the RTT and 25 ms, so a longer
/// one changes nothing on a short path. The same holds the other way for the probe's
/// acknowledgements of the coordinator's `Ack`s and plans, which ride with its next report.
/// Loss recovery allows for the delay (the peer's probe timeout adds `max_ack_delay`), and a
/// packet out of order is still acknowledged at once (quinn's reordering threshold).
pub fn ack_frequency() -> quinn::AckFrequencyConfig {
    let mut config = quinn::AckFrequencyConfig::default();
    config.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    config.max_ack_delay(Some(MAX_ACK_DELAY));
    config
}

/// The connection receive window of a peer the coordinator has not authenticated: unread
/// data it may leave at the coordinator (its first frame, an `Enroll` of about 1 KiB, flows
/// through as it is read).
pub const UNAUTHENTICATED_WINDOW: u32 = 16 * 1024;

/// The receive window of an authenticated session, per stream and per connection: unread data
/// a probe may leave at the coordinator. With every one of 10,000 connections full, 625 MiB.
pub const SESSION_WINDOW: u32 = 64 * 1024;

/// [`SESSION_WINDOW`] as quinn takes it.
pub fn session_window() -> quinn::VarInt {
    quinn::VarInt::from_u32(SESSION_WINDOW)
}

/// Transport settings for the coordinator's side of probe connections: no datagrams, the
/// probes' windows, but a probe may open only the one stream the protocol uses (quinn-proto sets up state for
/// every stream a peer may open, whether it is used or not), the coordinator sends no
/// keep-alives of its own (the probes' keep-alives hold the path open; the coordinator's would
/// double the packets of an idle fleet) and does no path-MTU discovery (what it sends, plans and
/// acknowledgements, fits in the initial 1,200 bytes; discovery would cost every connection a
/// few probe packets). It also sends without segmentation offload: what it sends is a packet
/// at a time, and quinn keeps each connection's transmit buffer at the size of its largest
/// batch (measured: 4 KiB less memory per connection).
pub fn server_transport_config() -> quinn::TransportConfig {
    let mut t = transport_config();
    // Until the coordinator knows the peer holds one of its certificates, a peer without one
    // (enrolment) can make it buffer at most UNAUTHENTICATED_WINDOW of unread data; an
    // authenticated connection is given SESSION_WINDOW ([`session_window`]). Flow control
    // windows bound what waits unread, not a frame's size: a 1 MiB report flows through a
    // 64 KiB window as the coordinator reads it (into the budgets of `quic::session`).
    t.stream_receive_window(SESSION_WINDOW.into());
    t.receive_window(UNAUTHENTICATED_WINDOW.into());
    t.max_concurrent_bidi_streams(1u8.into());
    // The protocol has no datagrams. quinn's default would advertise them and buffer up to
    // 1.25 MB of unread datagrams per connection (nothing reads them); off, a peer that sends one
    // violates the transport parameters and is closed.
    t.datagram_receive_buffer_size(None);
    t.keep_alive_interval(None);
    t.mtu_discovery_config(None);
    t.enable_segmentation_offload(false);
    t
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
    let verifier = Arc::new(PinnedCaVerifier::new(pin, provider.clone()));
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
