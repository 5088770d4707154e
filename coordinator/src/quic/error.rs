//! The QUIC layer's one error type: why a connection or session ended on the coordinator's
//! side. These end up in the coordinator's log (at `debug` when a peer caused them); what the
//! peer is told is its close code and reason, set where the decision is made.

use cemwatch_transport::frame::TransportError;

use crate::quic::ca::CaError;
use crate::store::StoreError;

/// Why a connection or session ended.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// A frame could not be read or written.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The connection failed or the peer closed it.
    #[error("the connection ended: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error("cannot send: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer did not do its part in time.
    #[error("{0}")]
    Timeout(&'static str),
    /// The coordinator refused the peer (the reason was sent to it).
    #[error("refused: {0}")]
    Refused(String),
    /// The peer sent a well-formed frame out of place.
    #[error("{0}")]
    Protocol(String),
    /// A probe flooded reports far beyond its rate limit (its connection was closed).
    #[error(transparent)]
    ReportRate(#[from] crate::admission::ReportRateExceeded),
    /// The store failed: a report or an enrolment was not kept (nothing was acknowledged).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA could not issue a certificate.
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// A QUIC-layer result.
pub(crate) type Result<T, E = QuicError> = std::result::Result<T, E>;
