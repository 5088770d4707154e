//! Turning a peer away: the refusal frame with its reason, then the close code the probe matches
//! (a refused certificate and a refused rate are told apart by code, never by text); and the
//! close of a connection that sent a bad frame. Each is counted by its typed reason.

use std::time::Duration;

use cemwatch_shared::wire::ToProbe;
use cemwatch_transport::frame::{write_frame, TransportError};
use cemwatch_transport::protocol::CloseCode;

use crate::quic::error::{QuicError, Result};
use crate::quic::live::Hub;
use crate::telemetry::Refusal;

pub(super) fn reject_frame(hub: &Hub, conn: &quinn::Connection, e: &TransportError) {
    let reason = match e {
        TransportError::Wire(w) => w.reason(),
        TransportError::Truncated => "malformed",
        _ => return,
    };
    hub.metrics.frame_rejected(reason);
    tracing::info!(remote = %conn.remote_address(), error = %e, "closing a connection that sent a bad frame");
    conn.close(
        CloseCode::Protocol.varint(),
        format!("bad frame: {e}").as_bytes(),
    );
}

pub(super) async fn refuse(
    hub: &Hub,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    metric: Refusal,
    reason: String,
) -> Result<()> {
    refuse_with(hub, conn, send, CloseCode::Refused, metric, reason).await
}

/// Sends `Refused` with the reason, waits (bounded) until the peer has it, then closes with
/// `code`, by which the probe tells a refused certificate from a refused rate.
pub(super) async fn refuse_with(
    hub: &Hub,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    code: CloseCode,
    metric: Refusal,
    reason: String,
) -> Result<()> {
    hub.metrics.refused(metric);
    let _ = write_frame(
        send,
        &ToProbe::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    let _ = send.finish();
    // `stopped` completes once the peer acknowledged the whole stream (or the connection
    // ended): closing earlier would discard the frame.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    conn.close(code.varint(), reason.as_bytes());
    Err(QuicError::Refused(reason))
}
