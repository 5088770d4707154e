//! The CEM state of a managed endpoint's own management agent, as its log tells it.
//!
//! Synthetic checks say whether the gateway *can* work; the agent's log says whether it *does*
//! on that endpoint. A probe running on a managed endpoint follows the agent's `Agent.log` and
//! derives one of four conditions from the guide's search patterns ("CEM mode active.
//! Connected to gateway: HOST:PORT", "Certificate thumbprint validated: …", SSL handshake
//! errors, repeated connection timeouts), with the time the condition began.
//!
//! The type travels in [`crate::wire::ToCoordinator::AgentState`]. It is state, not events:
//! the probe sends it on every connection and whenever it changes, so it needs no spool and no
//! acknowledgement; the coordinator keeps the latest per probe.

use serde::{Deserialize, Serialize};

use crate::thumbprint::Thumbprint;

/// Longest [`AgentCemState::line`] kept, in bytes (the line itself is capped by the probe).
pub const MAX_EVIDENCE_LEN: usize = 512;

/// What the management agent's log says about its CEM connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCemState {
    /// The agent's condition.
    pub condition: AgentCondition,
    /// Unix milliseconds when the condition began.
    pub since_ms: u64,
    /// Where [`Self::since_ms`] comes from.
    pub since_source: SinceSource,
    /// The log line that set the condition (trimmed, at most [`MAX_EVIDENCE_LEN`] bytes); `None`
    /// for [`AgentCondition::NoCemActivity`].
    pub line: Option<String>,
    /// Whether the probe can read the log at all.
    pub log: AgentLogStatus,
}

/// The agent's CEM condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentCondition {
    /// "CEM mode active. Connected to gateway: HOST:PORT".
    CemConnected {
        /// The gateway host the agent connected to.
        gateway: String,
        /// The port, when the line names one.
        port: Option<u16>,
        /// The thumbprint the agent validated, when logged ("Certificate thumbprint validated").
        thumbprint: Option<Thumbprint>,
    },
    /// SSL/TLS handshake errors: the port is right, the certificate trust chain is not (or the
    /// policy thumbprint does not match the served certificate).
    HandshakeError {
        /// The gateway host, when the line names one.
        gateway: Option<String>,
        /// The port, when the line names one.
        port: Option<u16>,
        /// Consecutive handshake errors logged since [`AgentCemState::since_ms`].
        attempts: u32,
    },
    /// Connection timeouts with no progression to a handshake: in the guide, the agent is
    /// sent to a port nothing answers on (policy port ≠ listener port) or a firewall drops it.
    ConnectTimeout {
        /// The host it tried, when the line names one.
        gateway: Option<String>,
        /// The port it tried, when the line names one.
        port: Option<u16>,
        /// Consecutive timeouts logged since [`AgentCemState::since_ms`].
        attempts: u32,
    },
    /// No CEM connection attempt in the log (the agent has not processed the CEM policy yet, or
    /// it is on the LAN).
    NoCemActivity,
}

impl AgentCondition {
    /// The stable `snake_case` name (metrics `state` label, API, tests).
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentCondition::CemConnected { .. } => "cem_connected",
            AgentCondition::HandshakeError { .. } => "handshake_error",
            AgentCondition::ConnectTimeout { .. } => "connect_timeout",
            AgentCondition::NoCemActivity => "no_cem_activity",
        }
    }

    /// Every name [`Self::as_str`] returns, for metrics that want a series per state.
    pub const NAMES: [&'static str; 4] = [
        "cem_connected",
        "handshake_error",
        "connect_timeout",
        "no_cem_activity",
    ];

    /// The port the agent connected to or tried, when known.
    pub fn port(&self) -> Option<u16> {
        match self {
            AgentCondition::CemConnected { port, .. }
            | AgentCondition::HandshakeError { port, .. }
            | AgentCondition::ConnectTimeout { port, .. } => *port,
            AgentCondition::NoCemActivity => None,
        }
    }

    /// The gateway host the agent connected to or tried, when logged.
    pub fn gateway(&self) -> Option<&str> {
        match self {
            AgentCondition::CemConnected { gateway, .. } => Some(gateway.as_str()),
            AgentCondition::HandshakeError { gateway, .. }
            | AgentCondition::ConnectTimeout { gateway, .. } => gateway.as_deref(),
            AgentCondition::NoCemActivity => None,
        }
    }

    /// The thumbprint the agent logged as validated.
    pub fn validated_thumbprint(&self) -> Option<&Thumbprint> {
        match self {
            AgentCondition::CemConnected { thumbprint, .. } => thumbprint.as_ref(),
            _ => None,
        }
    }

    /// Consecutive attempts, for the conditions that count them.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            AgentCondition::HandshakeError { attempts, .. }
            | AgentCondition::ConnectTimeout { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

/// Longest gateway host kept from a state (a DNS name has at most 253 characters).
pub const MAX_GATEWAY_LEN: usize = 253;

/// Cuts `text` to `max` bytes (on a character boundary) and drops its control characters
/// (escape sequences, bells, carriage returns; a tab becomes a space): what a probe sends ends up on an operator's
/// terminal and in a page, where those would repaint or hide what is shown.
fn truncate(text: &mut String, max: usize) {
    if let std::borrow::Cow::Owned(clean) = crate::printable::printable(text) {
        *text = clean;
    }
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

impl AgentCemState {
    /// The state bounded before it is kept, as it came from the network: control characters
    /// dropped, the evidence line and the error cut to [`MAX_EVIDENCE_LEN`], the gateway host to
    /// [`MAX_GATEWAY_LEN`] (a
    /// well-behaved probe already keeps to them).
    pub fn bounded(mut self) -> Self {
        if let Some(line) = self.line.as_mut() {
            truncate(line, MAX_EVIDENCE_LEN);
        }
        if let AgentLogStatus::Unreadable { error } = &mut self.log {
            truncate(error, MAX_EVIDENCE_LEN);
        }
        match &mut self.condition {
            AgentCondition::CemConnected { gateway, .. } => truncate(gateway, MAX_GATEWAY_LEN),
            AgentCondition::HandshakeError {
                gateway: Some(gateway),
                ..
            }
            | AgentCondition::ConnectTimeout {
                gateway: Some(gateway),
                ..
            } => truncate(gateway, MAX_GATEWAY_LEN),
            _ => {}
        }
        self
    }
}

/// Where a `since` time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinceSource {
    /// The timestamp written on the log line.
    Logged,
    /// The time the probe read the line (the line had no timestamp it could read), or began
    /// following the log (for [`AgentCondition::NoCemActivity`]).
    Read,
}

/// Whether the probe can read the agent's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentLogStatus {
    /// The log is being followed.
    Following,
    /// The log does not exist (yet): the agent is not installed or has not logged yet.
    Missing,
    /// The log exists but cannot be read.
    Unreadable {
        /// The operating system's error.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_the_network_are_dropped() {
        let state = AgentCemState {
            condition: AgentCondition::CemConnected {
                gateway: "gw\u{1b}[2J.example.com".into(),
                port: Some(8443),
                thumbprint: None,
            },
            since_ms: 0,
            since_source: SinceSource::Read,
            line: Some("Connected\r\u{1b}[31mto gateway\u{7}".into()),
            log: AgentLogStatus::Unreadable {
                error: "denied\u{1b}]0;title\u{7}".into(),
            },
        }
        .bounded();
        assert_eq!(state.condition.gateway(), Some("gw[2J.example.com"));
        assert_eq!(state.line.as_deref(), Some("Connected[31mto gateway"));
        assert_eq!(
            state.log,
            AgentLogStatus::Unreadable {
                error: "denied]0;title".into()
            }
        );
    }

    #[test]
    fn names_are_stable_and_listed() {
        let all = [
            AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: None,
            },
            AgentCondition::HandshakeError {
                gateway: None,
                port: None,
                attempts: 1,
            },
            AgentCondition::ConnectTimeout {
                gateway: None,
                port: Some(443),
                attempts: 3,
            },
            AgentCondition::NoCemActivity,
        ];
        let names: Vec<&str> = all.iter().map(AgentCondition::as_str).collect();
        assert_eq!(names, AgentCondition::NAMES);
        assert_eq!(all[0].port(), Some(8443));
        assert_eq!(all[2].port(), Some(443));
        assert_eq!(all[3].port(), None);
    }

    #[test]
    fn json_is_readable() {
        let state = AgentCemState {
            condition: AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: Some(
                    Thumbprint::parse("3a7f9c2b11d04e5f66a7b8c9d0e1f2a3b4c5d6e7").expect("tp"),
                ),
            },
            since_ms: 1_700_000_000_000,
            since_source: SinceSource::Logged,
            line: Some("CEM mode active".into()),
            log: AgentLogStatus::Following,
        };
        let json = serde_json::to_value(&state).expect("json");
        assert_eq!(
            json["condition"]["cem_connected"]["thumbprint"],
            "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7"
        );
        assert_eq!(json["since_source"], "logged");
        assert_eq!(json["log"], "following");
        let back: AgentCemState = serde_json::from_value(json).expect("back");
        assert_eq!(back, state);
    }
}
