//! What a new connection is: its certificate and first frame decide between enrolment, a
//! session, and a refusal (sent as a frame, then a close code the probe matches).

use std::sync::Arc;

use std::time::Duration;

use cemwatch_shared::wire::{Labels, ToCoordinator};
use cemwatch_transport::frame::read_frame_max;
use cemwatch_transport::protocol::CloseCode;

use crate::quic::enrol::enrol;
use crate::quic::error::{QuicError, Result};
use crate::quic::live::Hub;
use crate::quic::refusal::{refuse, refuse_with, reject_frame};
use crate::quic::session::Accepted;
use crate::store;
use crate::telemetry::Refusal;
use cemwatch_transport::x509::name_and_expiry;
use rustls::pki_types::CertificateDer;

/// How long a peer without a client certificate has to open its stream and send its first
/// frame (an `Enroll` is about 1 KiB, sent right after the handshake).
pub const UNAUTHENTICATED_DEADLINE: Duration = Duration::from_secs(3);

/// Counts a connection without a client certificate while it lives.
struct UnauthenticatedGuard<'a> {
    hub: &'a Hub,
    /// Such connections open, this one included, when it entered.
    count: usize,
}

impl<'a> UnauthenticatedGuard<'a> {
    fn enter(hub: &'a Hub) -> Self {
        let count = hub
            .unauthenticated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        Self { hub, count }
    }
}

impl Drop for UnauthenticatedGuard<'_> {
    fn drop(&mut self) {
        self.hub
            .unauthenticated
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Decides what a new connection is. A probe whose `Hello` is accepted comes back as the
/// session to run: the caller awaits it after this future has ended, so that the state of the
/// handshake (its frame, its certificate checks, enrolment) is not kept in every session's task
/// for as long as the connection lives. Enrolments and refusals end here (`Ok(None)`).
pub(super) async fn handle(hub: &Arc<Hub>, conn: quinn::Connection) -> Result<Option<Accepted>> {
    let identity = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().and_then(|c| name_and_expiry(c.as_ref())));
    // A peer with one of our certificates gets the session's window and 10 s for its first
    // frame; one without (enrolment) keeps the small window, must send its frame within
    // UNAUTHENTICATED_DEADLINE, and is one of at most `max_unauthenticated`.
    let _unauthenticated = match identity {
        Some(_) => {
            conn.set_receive_window(cemwatch_transport::quic::session_window());
            None
        }
        None => {
            let cap = hub.config.borrow().limits.max_unauthenticated;
            let guard = UnauthenticatedGuard::enter(hub);
            if guard.count > cap {
                hub.metrics.refused(Refusal::Unauthenticated);
                conn.close(
                    CloseCode::Refused.varint(),
                    b"too many enrolments at once; retry later",
                );
                return Err(QuicError::Timeout("too many unauthenticated connections"));
            }
            Some(guard)
        }
    };
    let deadline = if identity.is_some() {
        Duration::from_secs(10)
    } else {
        UNAUTHENTICATED_DEADLINE
    };
    let first = tokio::time::timeout(deadline, async {
        let (send, mut recv) = conn.accept_bi().await?;
        let first = read_frame_max::<ToCoordinator>(
            &mut recv,
            cemwatch_transport::protocol::MAX_FIRST_FRAME,
        )
        .await;
        Ok::<_, QuicError>((send, recv, first))
    })
    .await;
    let (mut send, recv, first) = match first {
        Err(_) => {
            if identity.is_none() {
                hub.metrics.refused(Refusal::FirstFrameTimeout);
                conn.close(CloseCode::Protocol.varint(), b"no first frame in time");
            }
            return Err(QuicError::Timeout("no stream and first frame in time"));
        }
        Ok(r) => r?,
    };
    let first = match first {
        Err(e) => {
            reject_frame(hub, &conn, &e);
            return Err(e.into());
        }
        Ok(None) => return Ok(None),
        Ok(Some(frame)) => frame,
    };
    match (identity, first) {
        (
            None,
            ToCoordinator::Enroll {
                token,
                name,
                csr_der,
                agent_version,
            },
        ) => {
            // Boxed: a connection's task is as large as its largest state, and enrolment, done
            // once per probe, would otherwise size the task of every session.
            Box::pin(enrol(
                hub,
                &conn,
                &mut send,
                &token,
                &name,
                &csr_der,
                &agent_version,
            ))
            .await
            .map(|()| None)
        }
        (
            Some((name, not_after)),
            ToCoordinator::Hello {
                probe,
                agent_version,
                labels,
            },
        ) => {
            // A resumed TLS session skips the certificate verifier (the certificate comes from
            // the session ticket), so revocation, removal and expiry are checked here again.
            let refusal = hub
                .registry
                .auth()
                .recheck(&name, not_after, store::now_ms() / 1000);
            if let Err(refused) = refusal {
                return Box::pin(refuse_with(
                    hub,
                    &conn,
                    &mut send,
                    CloseCode::CertificateRefused,
                    refused.reason(),
                    refused.to_string(),
                ))
                .await
                .map(|()| None);
            }
            if probe != name {
                return Box::pin(refuse(
                    hub,
                    &conn,
                    &mut send,
                    Refusal::IdentityMismatch,
                    format!("this connection's certificate is for {name:?}, not {probe:?}"),
                ))
                .await
                .map(|()| None);
            }
            let key = conn
                .peer_identity()
                .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
                .and_then(|chain| cemwatch_transport::x509::key_sha256(chain.first()?.as_ref()));
            let Some(key) = key else {
                return Box::pin(refuse(
                    hub,
                    &conn,
                    &mut send,
                    Refusal::BadCertificate,
                    "the client certificate cannot be read".into(),
                ))
                .await
                .map(|()| None);
            };
            if !hub.registry.bind_key(&name, key, false).await? {
                tracing::warn!(probe = %name, remote = %conn.remote_address(), "a certificate for this probe's name with another key: refused (an enrolment under its name elsewhere?)");
                return Box::pin(refuse(
                    hub,
                    &conn,
                    &mut send,
                    Refusal::KeyMismatch,
                    format!("this certificate's key is not the one probe {name:?} enrolled with; probe names must be unique across coordinators sharing a CA"),
                ))
                .await
                .map(|()| None);
            }
            Box::pin(crate::quic::adopt_on_hello(
                hub,
                &conn,
                &name,
                &labels,
                &agent_version,
            ))
            .await?;
            Ok(Some(Accepted {
                conn,
                send,
                recv,
                name,
                agent_version,
            }))
        }
        (None, _) => Box::pin(refuse(
            hub,
            &conn,
            &mut send,
            Refusal::NoCertificate,
            "no client certificate: enrol first with `cemwatch-probe enroll`".into(),
        ))
        .await
        .map(|()| None),
        (Some((name, _)), _) => {
            hub.metrics.frame_rejected("unexpected");
            Box::pin(refuse(
                hub,
                &conn,
                &mut send,
                Refusal::BadCertificate,
                format!("probe {name:?} must start with Hello"),
            ))
            .await
            .map(|()| None)
        }
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
) -> Result<()> {
    let (known, adopt) = {
        let auth = hub.registry.auth();
        (auth.known.contains(name), auth.adopt_unknown)
    };
    if known {
        return Ok(());
    }
    if !adopt {
        return Err(QuicError::Refused(format!(
            "probe {name:?} is not enrolled here (trust_shared_ca_probes is off)"
        )));
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
        .ok_or_else(|| {
            QuicError::Refused(format!("probe {name:?} presented no readable certificate"))
        })?;
    // The labels and version of an adopted probe are its own word: kept printable, so that
    // nothing it sends can repaint an operator's terminal or a page.
    use cemwatch_shared::printable::printable;
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (printable(k).into_owned(), printable(v).into_owned()))
        .collect();
    let agent_version = printable(agent_version);
    let recorded = hub
        .registry
        .adopt(name, &labels, &agent_version, serial, not_after)
        .await?;
    if recorded {
        tracing::info!(
            probe = name,
            ?labels,
            "probe enrolled at another coordinator sharing this CA: recorded on its first Hello"
        );
    }
    Ok(())
}
