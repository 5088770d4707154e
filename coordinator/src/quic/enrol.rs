//! Enrolment: a single-use token, a name by the name rule, a certificate from the probe's
//! request, all recorded in one transaction through the registry.

use std::sync::Arc;

use std::time::Duration;

use cemwatch_shared::token::EnrollToken;
use cemwatch_shared::wire::ToProbe;
use cemwatch_shared::ProbeName;
use cemwatch_transport::frame::write_frame;

use crate::quic::error::Result;
use crate::quic::live::Hub;
use crate::quic::refusal::refuse;
use crate::store::TokenRefusal;
use crate::telemetry::{Enrolment, Refusal};

#[allow(clippy::too_many_arguments)]
pub(super) async fn enrol(
    hub: &Arc<Hub>,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    token: &str,
    requested: &str,
    csr_der: &[u8],
    agent_version: &str,
) -> Result<()> {
    let token: EnrollToken = match token.parse() {
        Ok(t) => t,
        Err(e) => {
            hub.metrics.enrolment(Enrolment::TokenMalformed);
            return refuse(hub, conn, send, Refusal::EnrolmentRefused, e.to_string()).await;
        }
    };
    if token.ca_pin != hub.ca.pin() {
        hub.metrics.enrolment(Enrolment::TokenUnknown);
        return refuse(
            hub,
            conn,
            send,
            Refusal::EnrolmentRefused,
            "this token was issued by another coordinator".into(),
        )
        .await;
    }
    let requested = match ProbeName::parse(requested) {
        Ok(name) => name.into_string(),
        Err(e) => {
            hub.metrics.enrolment(Enrolment::BadName);
            return refuse(
                hub,
                conn,
                send,
                Refusal::EnrolmentRefused,
                format!("probe name {e}"),
            )
            .await;
        }
    };
    let ca = hub.ca.clone();
    let ttl = hub.config.borrow().server.probe_cert_ttl;
    let csr = csr_der.to_vec();
    let outcome = hub
        .registry
        .enrol(
            token.id.clone(),
            token.secret.clone(),
            requested,
            agent_version.to_string(),
            move |name| {
                let cert = ca.issue_client(&csr, name, ttl)?;
                let (serial, not_after) = (cert.serial.clone(), cert.not_after);
                Ok::<_, crate::quic::ca::CaError>((cert, serial, not_after))
            },
        )
        .await;
    match outcome {
        Ok(Ok((grant, cert))) => {
            // The probe is its key from now on: a certificate for its name with another key
            // (an enrolment under the same name elsewhere) will be refused here.
            if let Some(key) = cemwatch_transport::x509::key_sha256(&cert.der) {
                hub.registry.bind_key(&grant.name, key, true).await?;
            }
            hub.metrics.enrolment(Enrolment::Enrolled);
            tracing::info!(probe = %grant.name, "probe enrolled");
            write_frame(
                send,
                &ToProbe::Enrolled {
                    name: grant.name,
                    cert_der: cert.der,
                    labels: grant.labels,
                },
            )
            .await?;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            Ok(())
        }
        Ok(Err(refusal)) => {
            hub.metrics.enrolment(match refusal {
                TokenRefusal::Unknown => Enrolment::TokenUnknown,
                TokenRefusal::Used => Enrolment::TokenUsed,
                TokenRefusal::Expired => Enrolment::TokenExpired,
                TokenRefusal::NameTaken(_) => Enrolment::NameTaken,
            });
            refuse(
                hub,
                conn,
                send,
                Refusal::EnrolmentRefused,
                refusal.to_string(),
            )
            .await
        }
        Err(e) => {
            hub.metrics.enrolment(Enrolment::Error);
            // The details (paths, SQLite's words) are for the operator's log, not for a peer
            // that has not proven anything yet.
            tracing::error!(error = %e, "enrolment failed on the coordinator");
            refuse(
                hub,
                conn,
                send,
                Refusal::EnrolmentRefused,
                "enrolment failed on the coordinator (its log says why): try again later, or ask its operator".into(),
            )
            .await
        }
    }
}
