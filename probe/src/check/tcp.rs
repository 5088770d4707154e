//! TCP connect with the outcome told apart the way a network engineer reads it: `open`,
//! `refused` (a reset in answer to the SYN: the host answered, nothing listens), `filtered`
//! (silence until the timeout: a firewall drops it) and `unreachable` (an ICMP error from a
//! router or firewall).
//!
//! A connection that is accepted and reset at once (a load balancer with no healthy backend,
//! an IPS) can be reset before `connect` returns: the operating system then reports a reset
//! (`ECONNRESET`), not a refusal (`ECONNREFUSED`, which is the answer to a SYN). That is `open`:
//! TCP connected, and the TLS stage reports the reset.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use cemwatch_shared::{TcpResult, TcpState};

/// Classifies a connect error. A reset (not a refusal) means the handshake completed and the
/// peer reset the connection right after accepting it: `open`.
pub fn classify(error: &io::Error) -> TcpState {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => TcpState::Refused,
        io::ErrorKind::ConnectionReset => TcpState::Open,
        io::ErrorKind::TimedOut => TcpState::Filtered,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => TcpState::Unreachable,
        _ => match error.raw_os_error() {
            // EHOSTUNREACH, ENETUNREACH, EACCES/EPERM (ICMP admin-prohibited or a local
            // firewall reject) on Unix; WSAEHOSTUNREACH, WSAENETUNREACH on Windows.
            Some(113) | Some(101) | Some(13) | Some(1) | Some(10065) | Some(10051) => {
                TcpState::Unreachable
            }
            Some(10061) => TcpState::Refused,
            // WSAECONNRESET: accepted, then reset.
            Some(10054) => TcpState::Open,
            Some(10060) => TcpState::Filtered,
            _ => TcpState::Unreachable,
        },
    }
}

/// The error text of a connection accepted then reset before `connect` returned.
pub const RESET_AFTER_ACCEPT: &str = "accepted, then reset at once";

/// Connects to one address (a check connects to each address of the name on its own, see
/// `check::run_check`). Returns the stage result and the open stream, if any. A connection
/// accepted then reset before `connect` returned is `open` with no stream, its error
/// [`RESET_AFTER_ACCEPT`].
pub async fn connect(addr: SocketAddr, timeout: Duration) -> (TcpResult, Option<TcpStream>) {
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
    let (state, stream, error) = match outcome {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            (TcpState::Open, Some(stream), None)
        }
        Ok(Err(e)) if classify(&e) == TcpState::Open => (
            TcpState::Open,
            None,
            Some(format!("{RESET_AFTER_ACCEPT} ({e})")),
        ),
        Ok(Err(e)) => (classify(&e), None, Some(e.to_string())),
        Err(_) => (
            TcpState::Filtered,
            None,
            Some(format!("no answer within {} ms", timeout.as_millis())),
        ),
    };
    let result = TcpResult {
        state,
        address: Some(addr.to_string()),
        duration_ms: start.elapsed().as_secs_f64() * 1000.0,
        error,
    };
    (result, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_and_refused_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        let (r, stream) = connect(open, Duration::from_secs(2)).await;
        assert_eq!(r.state, TcpState::Open);
        assert!(stream.is_some());

        // A port just released: nothing listens there any more.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let (r, stream) = connect(closed, Duration::from_secs(2)).await;
        assert_eq!(r.state, TcpState::Refused, "{r:?}");
        assert!(stream.is_none());
        assert!(r.error.is_some());
    }

    #[test]
    fn classifies_os_errors() {
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            TcpState::Refused
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::TimedOut)),
            TcpState::Filtered
        );
        // A reset is not a refusal: the connection was accepted first.
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::ConnectionReset)),
            TcpState::Open
        );
        assert_eq!(
            classify(&io::Error::from_raw_os_error(10054)),
            TcpState::Open
        );
        assert_eq!(
            classify(&io::Error::from_raw_os_error(113)),
            TcpState::Unreachable
        );
    }
}
