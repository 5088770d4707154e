//! Sample `Agent.log` content in each state, in the guide's wording, for demonstrations and
//! tests elsewhere (the demo gives some probes an agent log to follow). The lines vary their
//! severity and timestamp forms the way agent versions do.

use time::macros::format_description;
use time::OffsetDateTime;

/// Which state the sample leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleState<'a> {
    /// Connected in CEM mode; with the thumbprint the agent validated, when given.
    Connected {
        /// The validated thumbprint as the agent logs it.
        thumbprint: Option<&'a str>,
    },
    /// Repeated SSL handshake errors (the certificate is not trusted).
    HandshakeError,
    /// Repeated connection timeouts (the port is the wrong one).
    ConnectTimeout,
    /// Agent activity, none of it CEM.
    NoCemActivity,
}

/// Log lines that lead to `state` for `gateway:port`, the last one written at `at` (UTC).
pub fn agent_log(state: SampleState<'_>, gateway: &str, port: u16, at: OffsetDateTime) -> String {
    let stamp = |minutes_before: i64| {
        let t = at - time::Duration::minutes(minutes_before);
        t.format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second],[subsecond digits:3]Z"
        ))
        .unwrap_or_default()
    };
    let mut out = format!("{} [INFO] Symantec Management Agent started\n", stamp(10));
    match state {
        SampleState::Connected { thumbprint } => {
            out.push_str(&format!(
                "{} [INFO] CEM mode active. Connected to gateway: {gateway}:{port}\n",
                stamp(0)
            ));
            if let Some(tp) = thumbprint {
                out.push_str(&format!(
                    "{} [INFO] Certificate thumbprint validated: {tp}\n",
                    stamp(0)
                ));
            }
        }
        SampleState::HandshakeError => {
            for minutes in [5, 0] {
                out.push_str(&format!(
                    "{} Error SSL handshake error with {gateway}:{port}: the certificate chain was issued by an authority that is not trusted\n",
                    stamp(minutes)
                ));
            }
        }
        SampleState::ConnectTimeout => {
            for minutes in [2, 1, 0] {
                out.push_str(&format!(
                    "{} WARN  Connection timeout connecting to {gateway}:{port}\n",
                    stamp(minutes)
                ));
            }
        }
        SampleState::NoCemActivity => {
            out.push_str(&format!("{} [INFO] Policy refresh complete\n", stamp(0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agentlog::{AgentLog, AgentLogConfig};
    use cemwatch_shared::{AgentCondition, SinceSource, Thumbprint};
    use time::macros::datetime;

    #[test]
    fn each_sample_leads_to_its_state() {
        let at = datetime!(2025-11-24 12:00:00 UTC);
        let now_ms = 1_764_000_000_000;
        let tp = "3A 7F 9C 2B 11 D0 4E 5F 66 A7 B8 C9 D0 E1 F2 A3 B4 C5 D6 E7";
        let cases = [
            (
                SampleState::Connected {
                    thumbprint: Some(tp),
                },
                AgentCondition::CemConnected {
                    gateway: "gw.example.com".into(),
                    port: Some(8443),
                    thumbprint: Some(Thumbprint::parse(tp).expect("tp")),
                },
            ),
            (
                SampleState::Connected { thumbprint: None },
                AgentCondition::CemConnected {
                    gateway: "gw.example.com".into(),
                    port: Some(8443),
                    thumbprint: None,
                },
            ),
            (
                SampleState::HandshakeError,
                AgentCondition::HandshakeError {
                    gateway: Some("gw.example.com".into()),
                    port: Some(8443),
                    attempts: 2,
                },
            ),
            (
                SampleState::ConnectTimeout,
                AgentCondition::ConnectTimeout {
                    gateway: Some("gw.example.com".into()),
                    port: Some(8443),
                    attempts: 3,
                },
            ),
            (SampleState::NoCemActivity, AgentCondition::NoCemActivity),
        ];
        for (sample, want) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("Agent.log");
            std::fs::write(&path, agent_log(sample, "gw.example.com", 8443, at)).expect("write");
            let mut log = AgentLog::open(AgentLogConfig::new(path), now_ms);
            log.poll(now_ms);
            assert_eq!(log.state().condition, want, "{sample:?}");
            if want != AgentCondition::NoCemActivity {
                assert_eq!(log.state().since_source, SinceSource::Logged, "{sample:?}");
            }
        }
    }
}
