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

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

use cemwatch_shared::wire::Labels;

use crate::ingest::Hub;
use crate::metrics::Metrics;
use crate::store;
use cemwatch_transport::x509::common_name;

/// Names of known and revoked probes, shared with the verifier.
#[derive(Debug, Default)]
pub struct AuthState {
    /// Probes that enrolled.
    pub known: HashSet<String>,
    /// Probes that were revoked.
    pub revoked: HashSet<String>,
    /// Accept unknown probes with a valid certificate of this CA (`trust_shared_ca_probes`).
    pub adopt_unknown: bool,
}

impl AuthState {
    /// Whether probe `name`, whose certificate expires at `not_after` (Unix seconds), may hold a
    /// session at `now` (Unix seconds). The verifier decides this during a full handshake; a
    /// resumed session skips the verifier, so the session code asks again. The error is the
    /// `connections_refused_total` reason and a message for the probe.
    pub fn recheck(
        &self,
        name: &str,
        not_after: i64,
        now: i64,
    ) -> Result<(), (&'static str, String)> {
        if self.revoked.contains(name) {
            return Err((
                "revoked",
                format!("certificate refused: probe {name:?} was revoked"),
            ));
        }
        if !self.known.contains(name) && !self.adopt_unknown {
            return Err((
                "unknown_probe",
                format!("certificate refused: probe {name:?} is not enrolled here"),
            ));
        }
        if not_after < now {
            return Err((
                "expired",
                format!("certificate refused: the certificate of probe {name:?} has expired"),
            ));
        }
        Ok(())
    }
}

/// The client certificate verifier of the QUIC endpoint.
#[derive(Debug)]
pub struct ProbeVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    auth: Arc<RwLock<AuthState>>,
    metrics: Metrics,
}

impl ProbeVerifier {
    /// A verifier trusting `ca_der` only.
    pub fn new(
        ca_der: &[u8],
        auth: Arc<RwLock<AuthState>>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der.to_vec()))?;
        let inner = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            cemwatch_transport::tls::provider(),
        )
        .allow_unauthenticated()
        .build()?;
        Ok(Self {
            inner,
            auth,
            metrics,
        })
    }

    fn refuse(&self, reason: &str, error: Error) -> Error {
        self.metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
        tracing::debug!(reason, error = %error, "client certificate refused");
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
                | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => "expired",
                Error::InvalidCertificate(CertificateError::UnknownIssuer)
                | Error::InvalidCertificate(CertificateError::BadSignature) => "unknown_ca",
                _ => "bad_certificate",
            };
            return Err(self.refuse(reason, e));
        }
        let Some(name) = common_name(end_entity.as_ref()) else {
            return Err(self.refuse(
                "bad_certificate",
                Error::InvalidCertificate(CertificateError::BadEncoding),
            ));
        };
        let (known, revoked) = match self.auth.read() {
            Ok(a) => (
                a.known.contains(&name) || a.adopt_unknown,
                a.revoked.contains(&name),
            ),
            Err(_) => (false, false),
        };
        if revoked {
            return Err(self.refuse(
                "revoked",
                Error::InvalidCertificate(CertificateError::Revoked),
            ));
        }
        if !known {
            return Err(self.refuse(
                "unknown_probe",
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

/// Records a probe that enrolled at another coordinator sharing this CA on its first `Hello`
/// here (the verifier let it through because `trust_shared_ca_probes` is on), with the labels
/// it reports and its certificate's serial and expiry. Does nothing for a known probe.
pub async fn adopt_on_hello(
    hub: &Hub,
    conn: &quinn::Connection,
    name: &str,
    labels: &Labels,
    agent_version: &str,
) -> anyhow::Result<()> {
    let (known, adopt) = hub
        .auth
        .read()
        .map(|a| (a.known.contains(name), a.adopt_unknown))
        .map_err(|_| anyhow::anyhow!("auth lock poisoned"))?;
    if known {
        return Ok(());
    }
    if !adopt {
        anyhow::bail!("probe {name:?} is not enrolled here (trust_shared_ca_probes is off)");
    }
    let (serial, not_after) = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| {
            let cert = cemwatch_transport::x509::parse(chain.first()?.as_ref()).ok()?;
            Some((
                hex::encode_upper(cert.raw_serial()),
                cert.validity().not_after.timestamp(),
            ))
        })
        .ok_or_else(|| anyhow::anyhow!("probe {name:?} presented no readable certificate"))?;
    let (n, l, v) = (name.to_string(), labels.clone(), agent_version.to_string());
    let recorded = hub
        .writer
        .exec(move |db| store::adopt(db, &n, &l, &v, &serial, not_after))
        .await?;
    if let Ok(mut a) = hub.auth.write() {
        a.known.insert(name.to_string());
    }
    if let Ok(mut fleet) = hub.fleet.write() {
        let view = fleet.probes.entry(name.to_string()).or_default();
        view.labels = labels.clone();
        view.last_seen_ms = store::now_ms();
    }
    if recorded {
        tracing::info!(
            probe = name,
            ?labels,
            "probe enrolled at another coordinator sharing this CA: recorded on its first Hello"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_session_is_refused_once_revoked_removed_or_expired() {
        let mut auth = AuthState::default();
        auth.known.insert("p1".into());
        assert_eq!(auth.recheck("p1", 2_000, 1_000), Ok(()));
        assert_eq!(
            auth.recheck("p1", 999, 1_000).map_err(|e| e.0),
            Err("expired")
        );
        assert_eq!(
            auth.recheck("p2", 2_000, 1_000).map_err(|e| e.0),
            Err("unknown_probe")
        );
        auth.revoked.insert("p1".into());
        assert_eq!(
            auth.recheck("p1", 2_000, 1_000).map_err(|e| e.0),
            Err("revoked")
        );
        // A coordinator sharing its CA adopts unknown probes on their first Hello.
        auth.adopt_unknown = true;
        assert_eq!(auth.recheck("p2", 2_000, 1_000), Ok(()));
        assert_eq!(
            auth.recheck("p2", 999, 1_000).map_err(|e| e.0),
            Err("expired")
        );
    }
}
