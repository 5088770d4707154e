//! From recognised lines to the agent's CEM condition, and since when.
//!
//! The last recognised entry decides, in log order:
//!
//! - "Connected to gateway: HOST:PORT" → `cem_connected`. A thumbprint validated just before
//!   (or while connected) is attached to it. Another "connected" line to the same gateway and
//!   port keeps the original `since`.
//! - A handshake error → `handshake_error`; a timeout → `connect_timeout`. Consecutive entries of
//!   the same kind against the same gateway and port count `attempts` and keep the first one's
//!   `since`: the guide's "repeated connection timeouts on the wrong port".
//! - Nothing recognised since following began → `no_cem_activity`, since then.
//!
//! `since` is the line's own timestamp when it has a plausible one (after 2000, and not more
//! than a day ahead of the probe's clock), else the time the probe read it.

use cemwatch_shared::agent_state::MAX_EVIDENCE_LEN;
use cemwatch_shared::{AgentCemState, AgentCondition, AgentLogStatus, SinceSource, Thumbprint};

use super::parse::{EventKind, LineEvent};

/// 2000-01-01T00:00:00Z in Unix milliseconds: older timestamps are misread ones.
const PLAUSIBLE_FROM_MS: u64 = 946_684_800_000;
/// How far ahead of the probe's clock a log timestamp may be (clock skew, time zones).
const FUTURE_SLACK_MS: u64 = 24 * 3600 * 1000;

/// Keeps the agent's condition as lines are recognised.
#[derive(Debug, Clone)]
pub struct Deriver {
    state: AgentCemState,
    pending_thumbprint: Option<Thumbprint>,
}

impl Deriver {
    /// No CEM activity seen yet, since `started_ms`.
    pub fn new(started_ms: u64) -> Self {
        Self {
            state: AgentCemState {
                condition: AgentCondition::NoCemActivity,
                since_ms: started_ms,
                since_source: SinceSource::Read,
                line: None,
                log: AgentLogStatus::Missing,
            },
            pending_thumbprint: None,
        }
    }

    /// Resumes from a saved state.
    pub fn restore(state: AgentCemState, pending_thumbprint: Option<Thumbprint>) -> Self {
        Self {
            state,
            pending_thumbprint,
        }
    }

    /// The current state.
    pub fn state(&self) -> &AgentCemState {
        &self.state
    }

    /// A thumbprint validated and not yet attached to a connection.
    pub fn pending_thumbprint(&self) -> Option<&Thumbprint> {
        self.pending_thumbprint.as_ref()
    }

    /// Records whether the log can be read; returns whether that changed.
    pub fn set_log_status(&mut self, status: AgentLogStatus) -> bool {
        if self.state.log == status {
            return false;
        }
        self.state.log = status;
        true
    }

    /// Applies one recognised line (`line` is its text, `read_ms` when it was read); returns
    /// whether the state changed.
    pub fn apply(&mut self, event: &LineEvent, line: &[u8], read_ms: u64) -> bool {
        match event.kind {
            EventKind::Connected => {
                let Some(host) = event.host.clone() else {
                    return false;
                };
                if let AgentCondition::CemConnected {
                    gateway,
                    port,
                    thumbprint,
                } = &mut self.state.condition
                {
                    let same_port = event.port.is_none() || *port == event.port;
                    if *gateway == host && same_port {
                        // Still connected to the same gateway: the state goes on.
                        return match self.pending_thumbprint.take() {
                            Some(t) if thumbprint.as_ref() != Some(&t) => {
                                *thumbprint = Some(t);
                                true
                            }
                            _ => false,
                        };
                    }
                }
                let condition = AgentCondition::CemConnected {
                    gateway: host,
                    port: event.port,
                    thumbprint: self.pending_thumbprint.take(),
                };
                self.begin(condition, event, line, read_ms);
                true
            }
            EventKind::ThumbprintValidated => {
                let Some(validated) = event.thumbprint.clone() else {
                    return false;
                };
                match &mut self.state.condition {
                    AgentCondition::CemConnected { thumbprint, .. } => {
                        if thumbprint.as_ref() == Some(&validated) {
                            return false;
                        }
                        *thumbprint = Some(validated);
                        true
                    }
                    _ => {
                        // Validated before the "connected" line: attached when it comes.
                        self.pending_thumbprint = Some(validated);
                        false
                    }
                }
            }
            EventKind::HandshakeError | EventKind::ConnectTimeout => {
                self.pending_thumbprint = None;
                let timeout = event.kind == EventKind::ConnectTimeout;
                let compatible =
                    |a: &Option<String>, b: &Option<String>| a.is_none() || b.is_none() || a == b;
                let ports = |a: Option<u16>, b: Option<u16>| a.is_none() || b.is_none() || a == b;
                match &mut self.state.condition {
                    AgentCondition::HandshakeError {
                        gateway,
                        port,
                        attempts,
                    } if !timeout
                        && compatible(gateway, &event.host)
                        && ports(*port, event.port) =>
                    {
                        *attempts = attempts.saturating_add(1);
                        if gateway.is_none() {
                            gateway.clone_from(&event.host);
                        }
                        *port = port.or(event.port);
                        true
                    }
                    AgentCondition::ConnectTimeout {
                        gateway,
                        port,
                        attempts,
                    } if timeout
                        && compatible(gateway, &event.host)
                        && ports(*port, event.port) =>
                    {
                        *attempts = attempts.saturating_add(1);
                        if gateway.is_none() {
                            gateway.clone_from(&event.host);
                        }
                        *port = port.or(event.port);
                        true
                    }
                    _ => {
                        let condition = if timeout {
                            AgentCondition::ConnectTimeout {
                                gateway: event.host.clone(),
                                port: event.port,
                                attempts: 1,
                            }
                        } else {
                            AgentCondition::HandshakeError {
                                gateway: event.host.clone(),
                                port: event.port,
                                attempts: 1,
                            }
                        };
                        self.begin(condition, event, line, read_ms);
                        true
                    }
                }
            }
        }
    }

    fn begin(&mut self, condition: AgentCondition, event: &LineEvent, line: &[u8], read_ms: u64) {
        let (since_ms, since_source) = since(event, read_ms);
        self.state.condition = condition;
        self.state.since_ms = since_ms;
        self.state.since_source = since_source;
        self.state.line = Some(evidence(line));
    }
}

/// When a line's condition began: its own timestamp when plausible, else when it was read.
fn since(event: &LineEvent, read_ms: u64) -> (u64, SinceSource) {
    let logged = event.logged_at.and_then(|at| {
        let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
        (PLAUSIBLE_FROM_MS..=read_ms.saturating_add(FUTURE_SLACK_MS))
            .contains(&ms)
            .then_some(ms)
    });
    match logged {
        Some(ms) => (ms, SinceSource::Logged),
        None => (read_ms, SinceSource::Read),
    }
}

/// The line as text for people: NULs removed, trimmed, at most [`MAX_EVIDENCE_LEN`] bytes.
pub fn evidence(line: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(line)
        .chars()
        .filter(|&c| c != '\0')
        .collect();
    let text = text.trim();
    let mut end = text.len().min(MAX_EVIDENCE_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agentlog::parse::Patterns;
    use time::UtcOffset;

    const TP: &str = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7";
    const READ_MS: u64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

    fn feed(d: &mut Deriver, lines: &[&str]) -> Vec<bool> {
        let patterns = Patterns::default();
        lines
            .iter()
            .filter_map(|l| {
                let event = patterns.parse(l.as_bytes(), UtcOffset::UTC)?;
                Some(d.apply(&event, l.as_bytes(), READ_MS))
            })
            .collect()
    }

    #[test]
    fn starts_with_no_cem_activity_since_following_began() {
        let mut d = Deriver::new(READ_MS);
        assert_eq!(d.state().condition, AgentCondition::NoCemActivity);
        assert_eq!(d.state().since_ms, READ_MS);
        assert_eq!(d.state().since_source, SinceSource::Read);
        feed(&mut d, &["Agent started", "Policy refresh complete"]);
        assert_eq!(d.state().condition.as_str(), "no_cem_activity");
        assert!(d.set_log_status(AgentLogStatus::Following));
        assert!(!d.set_log_status(AgentLogStatus::Following));
    }

    #[test]
    fn connected_with_the_thumbprint_logged_after_or_before() {
        let mut d = Deriver::new(READ_MS);
        feed(
            &mut d,
            &[
                "2025-11-24 12:36:21 [INFO] CEM mode active. Connected to gateway: gateway.example.com:8443",
                &format!("2025-11-24 12:36:22 [INFO] Certificate thumbprint validated: {TP}"),
            ],
        );
        let want = AgentCondition::CemConnected {
            gateway: "gateway.example.com".into(),
            port: Some(8443),
            thumbprint: Some(Thumbprint::parse(TP).expect("tp")),
        };
        assert_eq!(d.state().condition, want);
        assert_eq!(
            d.state().since_ms,
            1_763_987_781_000,
            "12:36:21Z, the connected line"
        );
        assert_eq!(d.state().since_source, SinceSource::Logged);
        assert!(d
            .state()
            .line
            .as_deref()
            .is_some_and(|l| l.contains("Connected to gateway")));

        let mut d = Deriver::new(READ_MS);
        feed(
            &mut d,
            &[
                &format!("[INFO] Certificate thumbprint validated: {TP}"),
                "[INFO] CEM mode active. Connected to gateway: gateway.example.com:8443",
            ],
        );
        assert_eq!(d.state().condition, want);
        assert_eq!(
            d.state().since_source,
            SinceSource::Read,
            "no timestamp in the line"
        );
        assert_eq!(d.state().since_ms, READ_MS);
    }

    #[test]
    fn a_repeated_connection_keeps_its_since() {
        let mut d = Deriver::new(READ_MS);
        let changed = feed(
            &mut d,
            &[
                "2025-11-24 12:00:00 Connected to gateway: gateway.example.com:8443",
                "2025-11-24 13:00:00 Connected to gateway: gateway.example.com:8443",
            ],
        );
        assert_eq!(changed, [true, false]);
        assert_eq!(d.state().since_ms, 1_763_985_600_000, "12:00Z");
        // Another port is another state.
        feed(
            &mut d,
            &["2025-11-24 14:00:00 Connected to gateway: gateway.example.com:443"],
        );
        assert_eq!(d.state().condition.port(), Some(443));
        assert_eq!(d.state().since_ms, 1_763_992_800_000, "14:00Z");
    }

    #[test]
    fn repeated_timeouts_on_the_wrong_port_count_attempts_from_the_first() {
        let mut d = Deriver::new(READ_MS);
        feed(
            &mut d,
            &[
                "2025-11-24 12:00:00 [WARN] Connection timeout connecting to gateway.example.com:443",
                "2025-11-24 12:01:00 [WARN] Connection timeout connecting to gateway.example.com:443",
                "2025-11-24 12:02:00 [WARN] Connect to gateway.example.com port 443 timed out",
            ],
        );
        assert_eq!(
            d.state().condition,
            AgentCondition::ConnectTimeout {
                gateway: Some("gateway.example.com".into()),
                port: Some(443),
                attempts: 3
            }
        );
        assert_eq!(d.state().since_ms, 1_763_985_600_000, "the first timeout");
        // Then the policy is fixed and the agent reaches the gateway on 8443, and its
        // certificate is not trusted.
        feed(
            &mut d,
            &["2025-11-24 12:10:00 [ERROR] SSL handshake error with gateway.example.com:8443"],
        );
        assert_eq!(
            d.state().condition,
            AgentCondition::HandshakeError {
                gateway: Some("gateway.example.com".into()),
                port: Some(8443),
                attempts: 1
            }
        );
        assert_eq!(d.state().since_ms, 1_763_986_200_000);
        feed(&mut d, &["[ERROR] SSL handshake error"]);
        assert!(matches!(
            d.state().condition,
            AgentCondition::HandshakeError { attempts: 2, .. }
        ));
        // A timeout on another port starts over.
        feed(
            &mut d,
            &["[WARN] Connection timeout connecting to gateway.example.com:443"],
        );
        feed(
            &mut d,
            &["[WARN] Connection timeout connecting to gateway.example.com:4443"],
        );
        assert_eq!(
            d.state().condition,
            AgentCondition::ConnectTimeout {
                gateway: Some("gateway.example.com".into()),
                port: Some(4443),
                attempts: 1
            }
        );
    }

    #[test]
    fn an_error_drops_a_validated_thumbprint_not_yet_attached() {
        let mut d = Deriver::new(READ_MS);
        feed(
            &mut d,
            &[
                &format!("Certificate thumbprint validated: {TP}"),
                "SSL handshake error",
                "Connected to gateway: gateway.example.com:8443",
            ],
        );
        assert!(matches!(
            d.state().condition,
            AgentCondition::CemConnected {
                thumbprint: None,
                ..
            }
        ));
    }

    #[test]
    fn implausible_timestamps_fall_back_to_the_read_time() {
        let mut d = Deriver::new(READ_MS);
        feed(
            &mut d,
            &["1999-12-31 23:59:59 Connected to gateway: gw.example.com:8443"],
        );
        assert_eq!(d.state().since_source, SinceSource::Read);
        let mut d = Deriver::new(READ_MS);
        feed(
            &mut d,
            &["2030-01-01 00:00:00 Connected to gateway: gw.example.com:8443"],
        );
        assert_eq!(
            (d.state().since_ms, d.state().since_source),
            (READ_MS, SinceSource::Read)
        );
    }

    #[test]
    fn evidence_is_trimmed_and_capped_on_a_character_boundary() {
        assert_eq!(evidence(b"  [INFO] x \r"), "[INFO] x");
        let long = "é".repeat(400); // 800 bytes
        let e = evidence(long.as_bytes());
        assert!(e.len() <= MAX_EVIDENCE_LEN && e.len() >= MAX_EVIDENCE_LEN - 1);
        assert!(e.chars().all(|c| c == 'é'));
        assert_eq!(evidence(b"a\0b\xff"), "ab\u{fffd}");
    }
}
