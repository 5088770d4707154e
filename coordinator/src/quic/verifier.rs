//! Who may connect: mutual TLS against the coordinator CA, then the probe's name (its
//! certificate's common name) must be known and not revoked. Connections without a client
//! certificate are let through the handshake only to enrol. Every refusal is counted by reason.
//!
//! Scale-out: coordinators of one deployment may share one CA (the same `ca/` files in each
//! data directory). With `[server] trust_shared_ca_probes = true`, a probe unknown here but
//! holding a valid certificate of that CA (which only an enrolment at one of them issues) is
//! accepted and recorded on its first `Hello` ([`adopt_on_hello`]), so the probe's ordered
//! coordinator list fails over. Revocation stays per coordinator: revoke on each
//! (`cemwatch probe revoke NAME --even-if-unseen`).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

use crate::registry::Registry;
use crate::telemetry::{Metrics, Refusal};
use cemwatch_transport::x509::common_name;

/// The client certificate verifier of the QUIC endpoint.
#[derive(Debug)]
pub struct ProbeVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Arc<Registry>,
    metrics: Metrics,
}

impl ProbeVerifier {
    /// A verifier trusting `ca_der` only.
    pub fn new(ca_der: &[u8], registry: Arc<Registry>, metrics: Metrics) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der.to_vec()))?;
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            cemwatch_transport::tls::provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::General(format!("the probe verifier: {e}")))?;
        Ok(Self {
            inner,
            registry,
            metrics,
        })
    }

    fn refuse(&self, reason: Refusal, error: Error) -> Error {
        self.metrics.refused(reason);
        tracing::debug!(reason = reason.label(), error = %error, "client certificate refused");
        error
    }
}

impl ClientCertVerifier for ProbeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            let reason = match &e {
                Error::InvalidCertificate(CertificateError::Expired)
                | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                    Refusal::Expired
                }
                Error::InvalidCertificate(CertificateError::UnknownIssuer)
                | Error::InvalidCertificate(CertificateError::BadSignature) => Refusal::UnknownCa,
                _ => Refusal::BadCertificate,
            };
            return Err(self.refuse(reason, e));
        }
        let Some(name) = common_name(end_entity.as_ref()) else {
            return Err(self.refuse(
                Refusal::BadCertificate,
                Error::InvalidCertificate(CertificateError::BadEncoding),
            ));
        };
        let (known, revoked) = {
            let a = self.registry.auth();
            (
                a.known.contains(&name) || a.adopt_unknown,
                a.revoked.contains(&name),
            )
        };
        if revoked {
            return Err(self.refuse(
                Refusal::Revoked,
                Error::InvalidCertificate(CertificateError::Revoked),
            ));
        }
        if !known {
            return Err(self.refuse(
                Refusal::UnknownProbe,
                Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
