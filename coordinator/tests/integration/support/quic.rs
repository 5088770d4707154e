//! Raw QUIC clients: any identity (or none), any claim, a frame behind the `Hello`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cemwatch_shared::wire::{self, ToCoordinator, ToProbe};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
