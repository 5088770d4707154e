//! The protocol's numbers that both ends must agree on, in one place: the application close
//! codes (a typed enum both sides match, never the reason text), the window of unacknowledged
//! reports, the reconnect-spread bounds and the first-frame limit.

use std::time::Duration;

/// How many reports a probe keeps unacknowledged at most. The coordinator sizes its per-probe
/// report queue from it: only a peer that does not follow the protocol exceeds it.
pub const WINDOW: usize = 64;

/// The least time a probe spreads its reconnect over after a session that held.
pub const RECONNECT_SPREAD_MIN: Duration = Duration::from_secs(10);
/// The longest spread a plan may ask for (and the coordinator computes).
pub const RECONNECT_SPREAD_MAX: Duration = Duration::from_secs(600);

/// The time within which to reconnect after a session that held, given the last plan's spread
/// in milliseconds, clamped to [`RECONNECT_SPREAD_MIN`]..=[`RECONNECT_SPREAD_MAX`] (0, as in
/// plans saved before protocol version 2, gives the minimum).
pub fn reconnect_spread(plan_ms: u64) -> Duration {
    Duration::from_millis(plan_ms).clamp(RECONNECT_SPREAD_MIN, RECONNECT_SPREAD_MAX)
}

/// The largest first frame of a connection (before the peer is known: `Hello` or `Enroll`).
pub const MAX_FIRST_FRAME: usize = 64 * 1024;

/// Application close codes of a probe connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Normal close (a probe shutting down, a coordinator draining).
    Done = 0,
    /// A malformed frame.
    Protocol = 1,
    /// Refused by a limit or the peer's behaviour (a report flood, busy, a wrong first frame).
    Refused = 2,
    /// Replaced by a newer connection of the same probe.
    Replaced = 3,
    /// A well-formed message this end does not take in a session (a peer newer than this end,
    /// or a message out of place).
    UnsupportedMessage = 4,
    /// The probe's certificate is refused after the handshake (revoked, removed, expired): what
    /// a resumed TLS session, which skips the certificate verifier, learns after `Hello`.
    CertificateRefused = 5,
}

impl CloseCode {
    /// Every code.
    pub const ALL: [CloseCode; 6] = [
        CloseCode::Done,
        CloseCode::Protocol,
        CloseCode::Refused,
        CloseCode::Replaced,
        CloseCode::UnsupportedMessage,
        CloseCode::CertificateRefused,
    ];

    /// The code on the wire.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The code a peer closed with, when it is one of ours.
    pub fn from_varint(code: quinn::VarInt) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.varint()) == u64::from(code))
    }
}

/// TLS alerts a server sends when it refuses the client's certificate (RFC 8446 §6.2).
const CERTIFICATE_ALERTS: [(u8, &str); 8] = [
    (42, "bad_certificate"),
    (43, "unsupported_certificate"),
    (44, "certificate_revoked"),
    (45, "certificate_expired"),
    (46, "certificate_unknown"),
    (48, "unknown_ca"),
    (49, "access_denied"),
    (116, "certificate_required"),
];

/// Why a connection ended, as far as it concerns what the operator must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed with one of our codes, and this reason text (for people).
    Closed(CloseCode, String),
    /// The peer refused our certificate in the TLS handshake with this alert.
    CertificateAlert(&'static str),
    /// Our own TLS stack refused the peer's certificate with this alert.
    PeerCertificateRejected(&'static str),
    /// Anything else: lost, timed out, reset, closed with a code that is not ours.
    Other,
}

/// Classifies a connection error by its codes (QUIC carries a TLS alert as the crypto error
/// 0x100 + alert).
pub fn ended(e: &quinn::ConnectionError) -> Ended {
    let alert = |code: quinn::TransportErrorCode| {
        let code = u64::from(code);
        (0x100..0x200).contains(&code).then(|| {
            let alert = (code - 0x100) as u8;
            CERTIFICATE_ALERTS
                .iter()
                .find(|(n, _)| *n == alert)
                .map(|(_, name)| *name)
        })?
    };
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            match CloseCode::from_varint(close.error_code) {
                Some(code) => {
                    Ended::Closed(code, String::from_utf8_lossy(&close.reason).into_owned())
                }
                None => Ended::Other,
            }
        }
        quinn::ConnectionError::ConnectionClosed(close) => match alert(close.error_code) {
            Some(name) => Ended::CertificateAlert(name),
            None => Ended::Other,
        },
        quinn::ConnectionError::TransportError(t) => match alert(t.code) {
            Some(name) => Ended::PeerCertificateRejected(name),
            None => Ended::Other,
        },
        _ => Ended::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip_and_unknown_codes_are_not_ours() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_varint(c.varint()), Some(c));
        }
        assert_eq!(CloseCode::from_varint(quinn::VarInt::from_u32(99)), None);
    }

    #[test]
    fn an_application_close_is_classified_by_its_code() {
        let e = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: CloseCode::CertificateRefused.varint(),
            reason: "probe \"p1\" was revoked".into(),
        });
        assert_eq!(
            ended(&e),
            Ended::Closed(
                CloseCode::CertificateRefused,
                "probe \"p1\" was revoked".into()
            )
        );
        let other = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(77),
            reason: "certificate refused".into(),
        });
        assert_eq!(ended(&other), Ended::Other, "text alone means nothing");
        assert_eq!(ended(&quinn::ConnectionError::TimedOut), Ended::Other);
    }

    #[test]
    fn the_spread_is_clamped() {
        assert_eq!(reconnect_spread(0), RECONNECT_SPREAD_MIN);
        assert_eq!(reconnect_spread(100_000), Duration::from_secs(100));
        assert_eq!(reconnect_spread(u64::MAX), RECONNECT_SPREAD_MAX);
    }
}
