//! Frame I/O over a quinn stream: a length prefix checked against a limit before anything is
//! allocated, then the postcard payload decoded by `cemwatch_shared::wire`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use cemwatch_shared::wire::{self, WireError, PREFIX_LEN};

/// Why a frame could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The frame itself was bad (size, version, encoding).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Reading failed (connection lost, reset, closed by the peer).
    #[error("read failed: {0}")]
    Read(#[source] quinn::ReadError),
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(#[source] quinn::WriteError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
}

impl TransportError {
    /// The connection error under a failed read or write, when the connection itself ended
    /// (rather than one stream): what the peer closed it with, for example.
    pub fn connection_error(&self) -> Option<&quinn::ConnectionError> {
        match self {
            TransportError::Read(quinn::ReadError::ConnectionLost(e))
            | TransportError::Write(quinn::WriteError::ConnectionLost(e)) => Some(e),
            _ => None,
        }
    }
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<(), TransportError> {
    let bytes = wire::encode(message)?;
    send.write_all(&bytes).await.map_err(TransportError::Write)
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
    match read_prefix(recv, limit).await? {
        None => Ok(None),
        Some(len) => read_payload(recv, len).await.map(Some),
    }
}

/// Reads a frame's length prefix and checks it against `limit` (capped at `MAX_FRAME`): the
/// payload's length, or `None` when the peer finished the stream between frames. A reader that
/// must budget memory does so between this and [`read_payload`].
pub async fn read_prefix(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<Option<usize>, TransportError> {
    let mut prefix = [0u8; PREFIX_LEN];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(TransportError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(TransportError::Read(e)),
    }
    Ok(Some(wire::payload_len_max(prefix, limit)?))
}

/// Reads and decodes a payload of `len` bytes (what [`read_prefix`] returned).
pub async fn read_payload<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<T, TransportError> {
    let payload = read_payload_bytes(recv, len).await?;
    Ok(wire::decode(&payload)?)
}

/// Reads a frame's `len` payload bytes (after [`read_prefix`]) without decoding them, for a
/// reader that keeps the bytes (the coordinator stores a report's results as received).
pub async fn read_payload_bytes(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<Vec<u8>, TransportError> {
    const CHUNK: usize = 64 * 1024;
    let mut payload = Vec::with_capacity(len.min(CHUNK));
    while payload.len() < len {
        let want = (len - payload.len()).min(CHUNK);
        match recv.read_chunk(want, true).await {
            Ok(Some(chunk)) => payload.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(TransportError::Truncated),
            Err(e) => return Err(TransportError::Read(e)),
        }
    }
    Ok(payload)
}
