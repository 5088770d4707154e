//! The wire protocol between probes and the coordinator.
//!
//! Frames are length-prefixed: a 4-byte big-endian length, then a postcard payload made of the
//! protocol version (a varint) and one message. Frames have a hard size limit that is checked
//! before anything is read or allocated, and decoding refuses trailing bytes, other versions and
//! anything malformed with a [`WireError`] that says what was wrong. The codec is this module
//! only: the rest of cemwatch never touches postcard.
//!
//! A connection carries one bidirectional stream. The probe speaks first (`Hello`, or `Enroll`
//! on a connection without a client certificate); the coordinator answers with a `Plan` and
//! re-pushes it when its configuration changes. Reports are acknowledged by sequence number
//! once committed; `ProbeNow` asks for a round of checks at once.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::agent_state::AgentCemState;
use crate::model::{CheckResult, Expectations, Target};

/// The protocol version carried by every frame. 2: `Plan` carries `reconnect_spread_ms`.
/// 3: the TLS facts of a report carry the client-certificate request, the agent certificate
/// presented and whether a legacy ClientHello read the certificate (and there are five new
/// finding codes). 4: three finding codes of the revocation stage (`cert_revoked`,
/// `revocation_unreachable`, `revocation_stale`). 5: a result carries each address of the
/// gateway name it checked (`addresses`, `skipped_addresses`) and findings their `address`.
pub const PROTOCOL_VERSION: u16 = 5;
/// The ALPN protocol id of probe ↔ coordinator connections.
pub const ALPN: &[u8] = b"cemwatch/1";
/// The TLS server name probes use for the coordinator: trust is pinned to the coordinator's
/// own CA, so the name is fixed rather than taken from DNS.
pub const SERVER_NAME: &str = "cemwatch-coordinator";
/// The largest frame payload accepted, in bytes.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Labels of a probe, such as `site = "eu-west"` and `vantage = "internet"`.
pub type Labels = BTreeMap<String, String>;

/// Messages from a probe to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// First message on an authenticated connection.
    Hello {
        /// The probe's name; must equal the name in its client certificate.
        probe: String,
        /// The probe's software version.
        agent_version: String,
        /// Labels the probe reports (informational: the coordinator's own record wins).
        labels: Labels,
    },
    /// Results, to be committed then acknowledged.
    Report(Report),
    /// First message on a connection without a client certificate: join the fleet.
    Enroll {
        /// The single-use token from `cemwatch token create`.
        token: String,
        /// The name the probe asks for.
        name: String,
        /// A PKCS#10 certificate signing request for the probe's own key (DER).
        csr_der: Vec<u8>,
        /// The probe's software version.
        agent_version: String,
    },
    /// Ask for a fresh client certificate for the same key before the current one expires.
    Renew {
        /// A PKCS#10 request (DER).
        csr_der: Vec<u8>,
    },
    /// The CEM state of the management agent on the probe's own endpoint, from its log. Sent
    /// on every connection and whenever it changes, only by probes that follow an agent log;
    /// not acknowledged (it is state: the latest one wins). Appended last, so every other
    /// message, and every report already spooled, encodes as before.
    AgentState(AgentCemState),
}

/// A batch of results with a per-probe sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Strictly increasing per probe; `(probe, seq)` identifies a report for deduplication.
    pub seq: u64,
    /// The `ProbeNow` round this report answers, if any.
    pub round: Option<u64>,
    /// The results.
    pub results: Vec<CheckReport>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The check's name in the coordinator's configuration.
    pub check: String,
    /// Unix milliseconds when the probe produced the result.
    pub produced_at_ms: u64,
    /// What the probe saw.
    pub result: CheckResult,
}

/// Messages from the coordinator to a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToProbe {
    /// What to check and how often; replaces any previous plan.
    Plan(Plan),
    /// A report was committed; the probe may delete it from its spool.
    Ack {
        /// The report's sequence number.
        seq: u64,
    },
    /// Run the named checks (all when empty) now and report with this round.
    ProbeNow {
        /// Round id.
        round: u64,
        /// Check names; empty means every planned check.
        checks: Vec<String>,
    },
    /// Enrolment accepted.
    Enrolled {
        /// The name the probe now has.
        name: String,
        /// Its client certificate (DER).
        cert_der: Vec<u8>,
        /// Its labels.
        labels: Labels,
    },
    /// A renewed client certificate (DER).
    Renewed {
        /// The certificate.
        cert_der: Vec<u8>,
    },
    /// The request was refused; the connection closes after this.
    Refused {
        /// Why, and what to do.
        reason: String,
    },
}

/// A probe's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Increases with every configuration change.
    pub generation: u64,
    /// The checks this probe runs.
    pub checks: Vec<PlannedCheck>,
    /// After a session that held ends (most often the whole fleet's: a coordinator restart),
    /// the probe reconnects at a random moment within this many milliseconds, so that the
    /// fleet returns at the rate the coordinator can take it. The coordinator sizes it to its
    /// fleet; the probe never waits less than its own 10 s. (Absent from plans saved by
    /// earlier probes: 0, the probe's own.)
    #[serde(default)]
    pub reconnect_spread_ms: u64,
}

/// One check in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCheck {
    /// Name of the check in the coordinator's configuration.
    pub name: String,
    /// Gateway and policy port.
    pub target: Target,
    /// Policy thumbprint, required SANs, thresholds, legacy ports.
    pub expectations: Expectations,
    /// How often to run it, in milliseconds.
    pub interval_ms: u64,
    /// TCP connect timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// TLS handshake timeout, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// `HOST:PORT:ADDR` overrides of DNS, as curl's `--resolve`.
    pub resolve: Vec<String>,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A zero-length frame.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another protocol version.
    #[error("protocol version {got} is not supported (this side speaks {PROTOCOL_VERSION}): upgrade the older side")]
    Version {
        /// The version received.
        got: u16,
    },
    /// The payload is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Bytes left after the message.
    #[error("malformed frame: {0} trailing bytes after the message")]
    Trailing(usize),
}

impl WireError {
    /// A short label for metrics (`reason` label values).
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::TooLarge { .. } => "too_large",
            WireError::Empty => "empty",
            WireError::Version { .. } => "version",
            WireError::Malformed(_) | WireError::Trailing(_) => "malformed",
        }
    }
}

/// Encodes a message as a complete frame: length prefix, version, message.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; PREFIX_LEN];
    out = postcard::to_extend(&PROTOCOL_VERSION, out)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    out = postcard::to_extend(message, out).map_err(|e| WireError::Malformed(e.to_string()))?;
    let len = out.len() - PREFIX_LEN;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge {
            len,
            limit: MAX_FRAME,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| WireError::TooLarge {
        len,
        limit: MAX_FRAME,
    })?;
    out[..PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Reads a length prefix and checks it against the limit before anything is allocated.
pub fn payload_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, WireError> {
    payload_len_max(prefix, MAX_FRAME)
}

/// Reads a length prefix and checks it against `limit` (itself capped at [`MAX_FRAME`]), for
/// a receiver that accepts less than the protocol allows.
pub fn payload_len_max(prefix: [u8; PREFIX_LEN], limit: usize) -> Result<usize, WireError> {
    let limit = limit.min(MAX_FRAME);
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(WireError::Empty);
    }
    if len > limit {
        return Err(WireError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Decodes a payload (the bytes after the length prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            len: payload.len(),
            limit: MAX_FRAME,
        });
    }
    let (version, rest): (u16, &[u8]) =
        postcard::take_from_bytes(payload).map_err(|e| WireError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version { got: version });
    }
    let (message, rest): (T, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(message)
}

/// Decodes complete frames from a byte stream delivered in arbitrary pieces (used by fuzzing
/// and by tests; the network code reads prefix and payload directly).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any. An error is final: the stream is unusable after it.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Option<Result<T, WireError>> {
        if self.buf.len() < PREFIX_LEN {
            return None;
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&self.buf[..PREFIX_LEN]);
        let len = match payload_len(prefix) {
            Ok(len) => len,
            Err(e) => return Some(Err(e)),
        };
        if self.buf.len() < PREFIX_LEN + len {
            return None;
        }
        let result = decode(&self.buf[PREFIX_LEN..PREFIX_LEN + len]);
        self.buf.drain(..PREFIX_LEN + len);
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ToCoordinator {
        ToCoordinator::Hello {
            probe: "probe-eu-1".into(),
            agent_version: "0.1.0".into(),
            labels: [("site".to_string(), "eu-west".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn round_trips_in_pieces() {
        let a = encode(&hello()).expect("encode");
        let b = encode(&ToCoordinator::Renew {
            csr_der: vec![1, 2, 3],
        })
        .expect("encode");
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for byte in stream {
            d.push(&[byte]);
            while let Some(frame) = d.next_frame::<ToCoordinator>() {
                got.push(frame.expect("decode"));
            }
        }
        assert_eq!(
            got,
            vec![
                hello(),
                ToCoordinator::Renew {
                    csr_der: vec![1, 2, 3]
                }
            ]
        );
    }

    #[test]
    fn refuses_oversized_frames_before_reading_them() {
        let prefix = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            payload_len(prefix),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(payload_len([0; 4]), Err(WireError::Empty));
        let mut d = FrameDecoder::new();
        d.push(&prefix);
        assert!(matches!(
            d.next_frame::<ToProbe>(),
            Some(Err(WireError::TooLarge { .. }))
        ));
    }

    #[test]
    fn refuses_other_versions_garbage_and_trailing_bytes() {
        let mut payload = postcard::to_stdvec(&(PROTOCOL_VERSION + 1)).expect("encode");
        payload.extend(postcard::to_stdvec(&ToProbe::Ack { seq: 1 }).expect("encode"));
        assert_eq!(
            decode::<ToProbe>(&payload),
            Err(WireError::Version {
                got: PROTOCOL_VERSION + 1
            })
        );
        assert_eq!(WireError::Version { got: 2 }.reason(), "version");
        // Frames of protocols 1 (before plans carried the reconnect spread) and 2 (before
        // the TLS facts carried client-certificate requests) are refused with their version,
        // so each side can tell the operator to upgrade the older one.
        for older in 1..PROTOCOL_VERSION {
            let mut old = postcard::to_stdvec(&older).expect("encode");
            old.extend(postcard::to_stdvec(&ToProbe::Ack { seq: 1 }).expect("encode"));
            let e = decode::<ToProbe>(&old).unwrap_err();
            assert_eq!(e, WireError::Version { got: older });
            assert!(e.to_string().contains("upgrade the older side"), "{e}");
        }

        assert!(matches!(
            decode::<ToProbe>(&[PROTOCOL_VERSION as u8, 0xff, 0xff, 0xff]),
            Err(WireError::Malformed(_))
        ));

        let mut frame = encode(&ToProbe::Ack { seq: 7 }).expect("encode");
        frame.push(0);
        assert_eq!(
            decode::<ToProbe>(&frame[PREFIX_LEN..]),
            Err(WireError::Trailing(1))
        );
    }

    #[test]
    fn agent_state_round_trips_and_leaves_older_messages_unchanged() {
        use crate::agent_state::{AgentCondition, AgentLogStatus, SinceSource};
        use crate::Thumbprint;
        // Postcard encodes the variant index first: the messages that existed before
        // `AgentState` keep their index (and so their bytes), `AgentState` comes last.
        let report = encode(&ToCoordinator::Report(Report {
            seq: 5,
            round: None,
            results: vec![],
        }))
        .expect("encode");
        let v = PROTOCOL_VERSION as u8;
        assert_eq!(&report[PREFIX_LEN..], &[v, 1, 5, 0, 0]);
        let renew = encode(&ToCoordinator::Renew { csr_der: vec![9] }).expect("encode");
        assert_eq!(&renew[PREFIX_LEN..], &[v, 3, 1, 9]);

        let states = [
            AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: Some(
                    Thumbprint::parse(
                        "3A 7F 9C 2B 11 D0 4E 5F 66 A7 B8 C9 D0 E1 F2 A3 B4 C5 D6 E7",
                    )
                    .expect("thumbprint"),
                ),
            },
            AgentCondition::HandshakeError {
                gateway: Some("gateway.example.com".into()),
                port: Some(8443),
                attempts: 2,
            },
            AgentCondition::ConnectTimeout {
                gateway: None,
                port: Some(443),
                attempts: 7,
            },
            AgentCondition::NoCemActivity,
        ];
        for (i, condition) in states.into_iter().enumerate() {
            let message = ToCoordinator::AgentState(AgentCemState {
                condition,
                since_ms: 1_767_225_600_000,
                since_source: if i % 2 == 0 {
                    SinceSource::Logged
                } else {
                    SinceSource::Read
                },
                line: (i < 3).then(|| "a log line".to_string()),
                log: match i {
                    0 => AgentLogStatus::Following,
                    1 => AgentLogStatus::Missing,
                    _ => AgentLogStatus::Unreadable {
                        error: "permission denied".into(),
                    },
                },
            });
            let frame = encode(&message).expect("encode");
            assert_eq!(frame[PREFIX_LEN + 1], 4, "AgentState is the fifth variant");
            assert_eq!(
                decode::<ToCoordinator>(&frame[PREFIX_LEN..]).expect("decode"),
                message
            );
        }
    }

    #[test]
    fn refuses_to_encode_what_the_peer_would_refuse() {
        let big = ToCoordinator::Renew {
            csr_der: vec![0; MAX_FRAME],
        };
        assert!(matches!(encode(&big), Err(WireError::TooLarge { .. })));
    }
}
