//! The TLS stage: a real handshake with rustls whose certificate verifier captures the chain
//! and never aborts. Trust, names and policy are judged afterwards, each by its own finding
//! code; the handshake only has to tell whether the port speaks TLS, what it serves, whether
//! the server proved it holds the key of that certificate, and whether it asked for a client
//! certificate (a CEM Internet Gateway authenticates its agents by theirs).
//!
//! A server that asks for a client certificate is told the agent's certificate when the probe
//! has one ([`ClientIdentity`]); otherwise the probe answers with none, and records the
//! request and the CA names it carried. In TLS 1.3 a server refuses a client certificate
//! after the client's Finished, so when the probe presented one it waits briefly for that
//! refusal ([`CLIENT_AUTH_VERDICT_WAIT`]).
//!
//! What a hostile gateway can cost the probe, by construction: the handshake ends within its
//! timeout whatever the server sends or withholds (silence, a record dribbled a byte at a
//! time), a server's handshake message is at most 64 KiB (rustls refuses more), at most
//! [`MAX_CHAIN_CERTS`] certificates and [`MAX_CHAIN_BYTES`] are kept, at most
//! [`MAX_ACCEPTABLE_CAS`] CA names, the chain builder follows at most `cert::MAX_CHAIN_DEPTH`
//! links, and after the handshake the probe reads nothing but a close-notify (or, having
//! presented a client certificate to a TLS 1.3 server, its verdict on it), for at most
//! [`SHUTDOWN_TIMEOUT`] (or [`CLIENT_AUTH_VERDICT_WAIT`]). A check looks at at most
//! `CheckContext::max_addresses` addresses of the name, concurrently, each with one connect
//! within the connect timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::identity::ClientIdentity;

/// The most certificates the probe keeps from one server; a hostile server cannot make the
/// probe hold more.
pub const MAX_CHAIN_CERTS: usize = 10;
/// The largest total size of the captured chain, in bytes. rustls itself refuses any handshake
/// message over 64 KiB (so a larger chain fails the handshake before it is captured); this
/// bound holds even if that changes.
pub const MAX_CHAIN_BYTES: usize = 256 * 1024;
/// The most CA names kept from a CertificateRequest.
pub const MAX_ACCEPTABLE_CAS: usize = 64;

/// How long the probe waits for the server's close-notify after a completed handshake.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(200);
/// How long the probe, having presented a client certificate in a TLS 1.3 handshake, waits
/// for the server to refuse it (TLS 1.3 servers judge the client's certificate after the
/// client's Finished); bounded by what is left of the handshake timeout.
pub const CLIENT_AUTH_VERDICT_WAIT: Duration = Duration::from_millis(1000);

/// The text of a connection reset before the handshake completed.
pub const RESET_BEFORE_HANDSHAKE: &str = "accepted, then reset before the handshake completed: a load balancer with no healthy backend, an IPS, or a service that rejects the client";
/// The text of a connection closed before the handshake completed.
pub const CLOSED_BEFORE_HANDSHAKE: &str = "accepted, then closed before the handshake completed: a load balancer with no healthy backend, an IPS, or a service that rejects the client";

/// A server's request for a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertRequest {
    /// The CA names it carried (DER `Name`s, at most [`MAX_ACCEPTABLE_CAS`]).
    pub acceptable_cas: Vec<Vec<u8>>,
    /// Whether the probe presented a certificate in answer.
    pub presented: bool,
}

/// What a handshake captured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// Leaf first, then what the server sent after it (bounded).
    pub chain: Vec<Vec<u8>>,
    /// Whether the handshake signature verified with the leaf's key (`None`: not evaluated,
    /// or an algorithm or key size no verifier here supports).
    pub signature_valid: Option<bool>,
    /// Whether the chain was cut at the bounds.
    pub truncated: bool,
    /// The server asked for a client certificate.
    pub client_cert_request: Option<ClientCertRequest>,
    /// The OCSP response the server stapled (at most 64 KiB kept), if any.
    pub ocsp_staple: Vec<u8>,
}

/// Keeps at most [`MAX_CHAIN_CERTS`] certificates and [`MAX_CHAIN_BYTES`] of `certs` in
/// `captured`.
pub(crate) fn keep_chain<'a>(captured: &mut Captured, certs: impl Iterator<Item = &'a [u8]>) {
    let mut total = 0usize;
    captured.chain.clear();
    captured.truncated = false;
    for cert in certs {
        total += cert.len();
        if captured.chain.len() >= MAX_CHAIN_CERTS || total > MAX_CHAIN_BYTES {
            captured.truncated = true;
            break;
        }
        captured.chain.push(cert.to_vec());
    }
}

/// A verifier that records the chain and always accepts.
#[derive(Debug)]
struct CapturingVerifier {
    captured: Arc<Mutex<Captured>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl CapturingVerifier {
    fn record_signature(&self, valid: Option<bool>) {
        if let Ok(mut c) = self.captured.lock() {
            // One handshake signs once; should a server sign twice, a failure stays a failure.
            c.signature_valid = match (c.signature_valid, valid) {
                (Some(false), _) => Some(false),
                (_, v) => v,
            };
        }
    }
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.captured.lock() {
            if ocsp_response.len() <= 64 * 1024 {
                c.ocsp_staple = ocsp_response.to_vec();
            }
            keep_chain(
                &mut c,
                std::iter::once(end_entity)
                    .chain(intermediates.iter())
                    .map(|c| c.as_ref()),
            );
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
        self.record_signature(judge_signature(ok, message, cert, dss));
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
        self.record_signature(judge_signature(ok, message, cert, dss));
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

/// Whether a handshake signature proves possession of the leaf's key. rustls' verifier
/// (`verified`) accepts only modern algorithms and RSA keys of 2048 bits or more; a signature
/// it refuses is checked again with ring's legacy algorithms (SHA-1, RSA from 1024 bits), so
/// that an old but honest gateway is not taken for an impostor. `None` when no verifier here
/// can evaluate it (ECDSA with SHA-1, RSA under 1024 bits, DSA, P-521...).
pub(crate) fn judge_signature(
    verified: bool,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Option<bool> {
    if verified {
        return Some(true);
    }
    verify_legacy(message, cert.as_ref(), dss.scheme, dss.signature())
}

/// Verifies `signature` over `message` with the public key of the certificate `cert_der`,
/// allowing legacy algorithms; `None` when the scheme or key cannot be evaluated here.
pub(crate) fn verify_legacy(
    message: &[u8],
    cert_der: &[u8],
    scheme: SignatureScheme,
    signature: &[u8],
) -> Option<bool> {
    use ring::signature as sig;
    let cert = super::cert::parse(cert_der).ok()?;
    let spki = cert.public_key();
    let (algorithm, bits, curve) = super::cert::describe_key(spki);
    let rsa = algorithm == "RSA";
    let alg: &'static dyn sig::VerificationAlgorithm = match scheme {
        _ if rsa && !(1024..=8192).contains(&bits) => return None,
        SignatureScheme::RSA_PKCS1_SHA1 if rsa => {
            &sig::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        SignatureScheme::RSA_PKCS1_SHA256 if rsa => {
            &sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
        }
        SignatureScheme::RSA_PKCS1_SHA384 if rsa && bits >= 2048 => {
            &sig::RSA_PKCS1_2048_8192_SHA384
        }
        SignatureScheme::RSA_PKCS1_SHA512 if rsa => {
            &sig::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY
        }
        SignatureScheme::RSA_PSS_SHA256 if rsa && bits >= 2048 => &sig::RSA_PSS_2048_8192_SHA256,
        SignatureScheme::RSA_PSS_SHA384 if rsa && bits >= 2048 => &sig::RSA_PSS_2048_8192_SHA384,
        SignatureScheme::RSA_PSS_SHA512 if rsa && bits >= 2048 => &sig::RSA_PSS_2048_8192_SHA512,
        SignatureScheme::ECDSA_NISTP256_SHA256 if curve.as_deref() == Some("P-256") => {
            &sig::ECDSA_P256_SHA256_ASN1
        }
        SignatureScheme::ECDSA_NISTP384_SHA384 if curve.as_deref() == Some("P-384") => {
            &sig::ECDSA_P384_SHA384_ASN1
        }
        SignatureScheme::ED25519 if algorithm == "Ed25519" => &sig::ED25519,
        // A scheme of another key type than the certificate's: whoever signed does not hold
        // the certificate's key.
        SignatureScheme::RSA_PKCS1_SHA1
        | SignatureScheme::RSA_PKCS1_SHA256
        | SignatureScheme::RSA_PKCS1_SHA384
        | SignatureScheme::RSA_PKCS1_SHA512
        | SignatureScheme::RSA_PSS_SHA256
        | SignatureScheme::RSA_PSS_SHA384
        | SignatureScheme::RSA_PSS_SHA512
            if !rsa && matches!(algorithm.as_str(), "EC" | "Ed25519") =>
        {
            return Some(false)
        }
        SignatureScheme::ECDSA_NISTP256_SHA256
        | SignatureScheme::ECDSA_NISTP384_SHA384
        | SignatureScheme::ED25519
            if rsa =>
        {
            return Some(false)
        }
        _ => return None,
    };
    Some(
        sig::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
            .verify(message, signature)
            .is_ok(),
    )
}

/// Answers a CertificateRequest with the agent's certificate (when the probe has one) and
/// records the request.
#[derive(Debug)]
struct RecordingResolver {
    captured: Arc<Mutex<Captured>>,
    identity: Option<Arc<CertifiedKey>>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // rustls sends no certificate when the key can sign none of the server's schemes.
        let presented = self
            .identity
            .as_ref()
            .filter(|key| key.key.choose_scheme(sigschemes).is_some());
        if let Ok(mut c) = self.captured.lock() {
            c.client_cert_request = Some(ClientCertRequest {
                acceptable_cas: root_hint_subjects
                    .iter()
                    .take(MAX_ACCEPTABLE_CAS)
                    .map(|dn| dn.to_vec())
                    .collect(),
                presented: presented.is_some(),
            });
        }
        presented.cloned()
    }

    fn has_certs(&self) -> bool {
        // Always "yes": rustls then asks the resolver, which is where the request is seen.
        true
    }
}

/// The outcome of a handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Completed, or why not.
    pub result: Result<Negotiated, Failure>,
    /// What the verifier and the client-certificate resolver captured (may hold a chain even
    /// when the handshake failed later).
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
    /// A TLS 1.3 server's refusal of the client certificate the probe presented, received
    /// right after the handshake.
    pub refused_after: Option<Failure>,
}

/// Why a handshake failed: the kind, for the judgement, and the explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub kind: FailureKind,
    /// What to tell a person.
    pub message: String,
}

/// Kinds of handshake failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server sent a TLS alert.
    Alert(AlertDescription),
    /// No version or cipher suite in common.
    Incompatible,
    /// The connection was reset.
    Reset,
    /// The connection was closed (no alert).
    Closed,
    /// Nothing, or too little, within the timeout.
    Timeout,
    /// The answer is not TLS.
    NotTls,
    /// A handshake message too large.
    TooLarge,
    /// The probe's own configuration.
    Local,
    /// Anything else.
    Other,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Whether this failure may mean that the server offers only what rustls does not (a TLS
    /// version or suite older than TLS 1.2 with ECDHE and AEAD): alerts for no common version
    /// or suite, rustls' own refusal, or the reset or close with which SChannel often answers
    /// a ClientHello it has nothing in common with.
    pub fn may_be_legacy(&self) -> bool {
        match self.kind {
            FailureKind::Alert(a) => matches!(
                a,
                AlertDescription::ProtocolVersion
                    | AlertDescription::HandshakeFailure
                    | AlertDescription::InsufficientSecurity
                    | AlertDescription::IllegalParameter
            ),
            FailureKind::Incompatible | FailureKind::Reset | FailureKind::Closed => true,
            _ => false,
        }
    }
}

/// ring, with the cipher suites offered in the order browsers and Go's crypto/tls offer them
/// (AES-128-GCM first). A gateway that honours the client's order (rustls, nginx with
/// `ssl_prefer_server_ciphers off`) then picks the SHA-256 suite, as it would for any
/// browser, rather than rustls' default first choice AES-256-GCM-SHA384, whose key schedule
/// costs a check more for the same evidence; gateways that impose their own order are
/// unaffected. The suites offered are the same, only their order differs. Built once per
/// process: a check only clones the `Arc`.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(build_provider).clone()
}

fn build_provider() -> Arc<CryptoProvider> {
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

/// Runs a TLS handshake over `stream`, sending SNI for `host` when it is a DNS name, and
/// presenting `identity` when the server asks for a client certificate.
pub async fn handshake(
    stream: TcpStream,
    host: &str,
    timeout: Duration,
    identity: Option<&ClientIdentity>,
) -> Handshake {
    let start = Instant::now();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let local_failure = |message: String| Handshake {
        result: Err(Failure::new(FailureKind::Local, message)),
        captured: Captured::default(),
        duration: start.elapsed(),
    };
    let provider = provider();
    let verifier = Arc::new(CapturingVerifier {
        captured: captured.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let resolver = Arc::new(RecordingResolver {
        captured: captured.clone(),
        identity: identity.map(ClientIdentity::certified_key),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_cert_resolver(resolver)
        });
    let mut config = match config {
        Ok(c) => c,
        Err(e) => return local_failure(format!("TLS configuration error: {e}")),
    };
    // Every check is a full handshake (it must see the certificate), so session tickets are
    // never used: not offering resumption spares the gateway issuing them and the probe
    // decrypting and storing them.
    config.resumption = rustls::client::Resumption::disabled();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = match ServerName::try_from(bare.to_string()) {
        Ok(n) => n,
        Err(_) => return local_failure(format!("{host:?} is not a valid TLS server name")),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let outcome = tokio::time::timeout(timeout, connector.connect(server_name, stream)).await;
    let result = match outcome {
        Ok(Ok(mut tls)) => {
            let (_, conn) = tls.get_ref();
            let tls13 = conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
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
            let presented = captured
                .lock()
                .ok()
                .and_then(|c| c.client_cert_request.as_ref().map(|r| r.presented))
                .unwrap_or(false);
            let mut refused_after = None;
            if tls13 && presented {
                // A TLS 1.3 server judges the client certificate after the client's Finished
                // and refuses it with an alert; wait for that, or for anything else (a ticket
                // is processed by rustls and not returned; data or a close ends the wait).
                let wait = CLIENT_AUTH_VERDICT_WAIT.min(timeout.saturating_sub(start.elapsed()));
                let mut buf = [0u8; 512];
                // One read: rustls consumes tickets itself, so it returns only on data, a
                // close, an alert or the end of the wait.
                if let Ok(Err(e)) = tokio::time::timeout(wait, tls.read(&mut buf)).await {
                    let failure = explain(&e);
                    if matches!(
                        failure.kind,
                        FailureKind::Alert(_) | FailureKind::Reset | FailureKind::Closed
                    ) {
                        refused_after = Some(failure);
                    }
                }
            }
            // Say goodbye properly; a gateway that does not answer is not our problem.
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, tls.shutdown()).await;
            Ok(Negotiated {
                version,
                cipher,
                refused_after,
            })
        }
        Ok(Err(e)) => Err(explain(&e)),
        Err(_) => Err(Failure::new(
            FailureKind::Timeout,
            format!(
                "the TLS handshake did not finish within {} ms (the port accepted TCP but does not answer TLS)",
                timeout.as_millis()
            ),
        )),
    };
    let captured = captured.lock().map(|c| c.clone()).unwrap_or_default();
    Handshake {
        result,
        captured,
        duration: start.elapsed(),
    }
}

/// The name of an alert as the TLS specifications write it (`handshake_failure`).
pub fn alert_name(alert: AlertDescription) -> String {
    alert_name_of(u8::from(alert))
}

/// The name of the alert numbered `n` (RFC 5246, RFC 8446 and the IANA registry).
pub fn alert_name_of(n: u8) -> String {
    let name = match n {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        121 => "encrypted_client_hello_required",
        other => return format!("alert {other}"),
    };
    name.to_string()
}

fn explain(error: &std::io::Error) -> Failure {
    use FailureKind as K;
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    const TOO_LARGE: &str = "the server sent a handshake message larger than the 64 KiB a TLS client accepts (a certificate chain far too long?): the probe does not follow it";
    match inner {
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::HandshakePayloadTooLarge
            | rustls::InvalidMessage::MessageTooLarge,
        )) => Failure::new(K::TooLarge, TOO_LARGE),
        Some(rustls::Error::InvalidMessage(m)) => Failure::new(
            K::NotTls,
            format!(
                "the port answered with something that is not TLS ({m:?}): another service (plain HTTP?) holds the port"
            ),
        ),
        Some(rustls::Error::AlertReceived(alert)) => Failure::new(
            K::Alert(*alert),
            format!(
                "the server refused the handshake with the TLS alert {}",
                alert_name(*alert)
            ),
        ),
        Some(rustls::Error::PeerIncompatible(why)) => Failure::new(
            K::Incompatible,
            format!("no TLS version or cipher suite in common with the server ({why:?})"),
        ),
        Some(other) => Failure::new(K::Other, format!("TLS error: {other}")),
        None => match error.kind() {
            std::io::ErrorKind::UnexpectedEof => Failure::new(K::Closed, CLOSED_BEFORE_HANDSHAKE),
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => Failure::new(K::Reset, RESET_BEFORE_HANDSHAKE),
            _ if error.to_string().contains("message buffer full") => {
                Failure::new(K::TooLarge, TOO_LARGE)
            }
            _ => Failure::new(K::Other, format!("TLS handshake failed: {error}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_written_as_the_rfcs_write_them() {
        assert_eq!(
            alert_name(AlertDescription::HandshakeFailure),
            "handshake_failure"
        );
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(alert_name(AlertDescription::Unknown(200)), "alert 200");
        // Every alert rustls knows has its name here.
        for n in 0..=255u8 {
            if !matches!(AlertDescription::from(n), AlertDescription::Unknown(_)) {
                assert!(!alert_name_of(n).starts_with("alert "), "alert {n}");
            }
        }
    }

    #[test]
    fn resets_and_closes_before_the_handshake_are_told_so() {
        let reset = explain(&std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(reset.kind, FailureKind::Reset);
        assert!(reset
            .message
            .starts_with("accepted, then reset before the handshake completed"));
        let closed = explain(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(closed.kind, FailureKind::Closed);
        assert!(closed.may_be_legacy());
        let timeout = Failure::new(FailureKind::Timeout, "slow");
        assert!(!timeout.may_be_legacy());
    }
}
