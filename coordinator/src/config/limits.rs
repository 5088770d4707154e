//! The `[limits]` table: raw as written, validated into [`LimitsConfig`] (every problem
//! reported with its line), with a default that suits a fleet of thousands of probes.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use cemwatch_shared::wire::MAX_FRAME;
use cemwatch_transport::protocol::{RECONNECT_SPREAD_MAX, RECONNECT_SPREAD_MIN};
use cemwatch_transport::quic::{IDLE_TIMEOUT, KEEP_ALIVE};

use crate::config::HumanDuration;

/// The smallest `max_frame_bytes` accepted: a report with a few results must fit.
pub const MIN_FRAME_LIMIT: usize = 64 * 1024;

/// When to ask a client to prove its address with a QUIC Retry before any handshake work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressValidation {
    /// Only while new connection attempts (all sources together) exceed
    /// `retry_above_per_second`.
    Auto,
    /// Every new connection: costs every probe one round trip per connection.
    Always,
    /// Never.
    Never,
}

/// The `[limits]` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Connections open or in their handshake at once; beyond it new ones are refused.
    pub max_connections: usize,
    /// New connections per second allowed from one source IP address (token refill rate).
    pub new_connections_per_second: f64,
    /// New connections one source IP address may open at once (bucket size).
    pub new_connections_burst: u32,
    /// When to validate client addresses with a QUIC Retry.
    pub address_validation: AddressValidation,
    /// In `auto` mode, the rate of new connection attempts (per second, all sources) above
    /// which every attempt must first prove its address.
    pub retry_above_per_second: u32,
    /// A connection with no packet for this long is closed (probes send keep-alives every
    /// [`KEEP_ALIVE`]; at least [`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// The largest frame a probe may send, in bytes (at most the protocol's `MAX_FRAME`).
    pub max_frame_bytes: usize,
    /// Reports per second one probe may send, sustained.
    pub reports_per_second: f64,
    /// Reports one probe may send at once (a reconnecting probe sends up to 64 spooled ones).
    pub report_burst: u32,
    /// The most reconnections per second the coordinator asks for after it restarts: probes
    /// spread their return over (fleet / rate) seconds, at least 10 s and at most 10 min, where
    /// the rate is the coordinator's measured handshake capacity
    /// ([`crate::quic::capacity`]), never above this.
    pub reconnects_per_second: u32,
    /// Connections without a client certificate (enrolments) open at once, past their
    /// handshake; beyond it one is closed at once. They also count in `max_connections`.
    pub max_unauthenticated: usize,
}

/// Default of [`LimitsConfig::max_unauthenticated`]: enrolments are rare (one per new probe)
/// and take one round trip, so 64 at once serve a mass roll-out, while 64 × the unauthenticated
/// window (80 KiB) is 5 MiB at worst.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 64;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            new_connections_per_second: 10.0,
            new_connections_burst: 100,
            address_validation: AddressValidation::Auto,
            retry_above_per_second: 200,
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: MAX_FRAME,
            reports_per_second: 20.0,
            report_burst: 200,
            reconnects_per_second: 20_000,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
        }
    }
}

/// The `[limits]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    max_connections: Option<Spanned<usize>>,
    new_connections_per_second: Option<Spanned<f64>>,
    new_connections_burst: Option<Spanned<u32>>,
    address_validation: Option<AddressValidation>,
    retry_above_per_second: Option<Spanned<u32>>,
    idle_timeout: Option<Spanned<HumanDuration>>,
    max_frame_bytes: Option<Spanned<usize>>,
    reports_per_second: Option<Spanned<f64>>,
    report_burst: Option<Spanned<u32>>,
    reconnects_per_second: Option<Spanned<u32>>,
    max_unauthenticated: Option<Spanned<u32>>,
}

impl RawLimits {
    /// Validates the table. `legacy_max_connections` is `server.max_connections`, the key's
    /// old place, still accepted; `at` turns a span into `FILE:LINE`; every problem is added
    /// to `problems`.
    pub(crate) fn validate(
        self,
        legacy_max_connections: Option<Spanned<usize>>,
        at: &dyn Fn(std::ops::Range<usize>) -> String,
        problems: &mut Vec<String>,
    ) -> LimitsConfig {
        let d = LimitsConfig::default();
        let max_connections = match (self.max_connections, legacy_max_connections) {
            (Some(new), Some(old)) => {
                problems.push(format!(
                    "{}: server.max_connections: moved to limits.max_connections, which is also set: keep only limits.max_connections",
                    at(old.span())
                ));
                new
            }
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => Spanned::new(0..0, d.max_connections),
        };
        if *max_connections.get_ref() == 0 {
            problems.push(format!(
                "{}: limits.max_connections: at least 1",
                at(max_connections.span())
            ));
        }
        let rate =
            |value: Option<Spanned<f64>>, key: &str, default: f64, problems: &mut Vec<String>| {
                match value {
                    Some(v) if !(v.get_ref().is_finite() && *v.get_ref() > 0.0) => {
                        problems.push(format!(
                            "{}: limits.{key}: a positive number, such as {default}",
                            at(v.span())
                        ));
                        default
                    }
                    Some(v) => *v.get_ref(),
                    None => default,
                }
            };
        let count =
            |value: Option<Spanned<u32>>, key: &str, default: u32, problems: &mut Vec<String>| {
                match value {
                    Some(v) if *v.get_ref() == 0 => {
                        problems.push(format!(
                            "{}: limits.{key}: at least 1, such as {default}",
                            at(v.span())
                        ));
                        default
                    }
                    Some(v) => *v.get_ref(),
                    None => default,
                }
            };
        let new_connections_per_second = rate(
            self.new_connections_per_second,
            "new_connections_per_second",
            d.new_connections_per_second,
            problems,
        );
        let new_connections_burst = count(
            self.new_connections_burst,
            "new_connections_burst",
            d.new_connections_burst,
            problems,
        );
        let retry_above_per_second = count(
            self.retry_above_per_second,
            "retry_above_per_second",
            d.retry_above_per_second,
            problems,
        );
        let reports_per_second = rate(
            self.reports_per_second,
            "reports_per_second",
            d.reports_per_second,
            problems,
        );
        let report_burst = count(self.report_burst, "report_burst", d.report_burst, problems);
        let reconnects_per_second = count(
            self.reconnects_per_second,
            "reconnects_per_second",
            d.reconnects_per_second,
            problems,
        );
        let max_unauthenticated = count(
            self.max_unauthenticated,
            "max_unauthenticated",
            d.max_unauthenticated as u32,
            problems,
        ) as usize;
        let idle_timeout = match self.idle_timeout {
            Some(v) => {
                let t = v.get_ref().0;
                // No shorter than the probe's own, which leaves a lost keep-alive time to be
                // sent again.
                let (floor, keep_alive) = (IDLE_TIMEOUT.as_secs(), KEEP_ALIVE.as_secs());
                if t < IDLE_TIMEOUT || t > Duration::from_secs(3600) {
                    problems.push(format!(
                        "{}: limits.idle_timeout: between {floor}s and 1h (probes send a keep-alive every {keep_alive} s)",
                        at(v.span())
                    ));
                }
                t
            }
            None => d.idle_timeout,
        };
        let max_frame_bytes = match self.max_frame_bytes {
            Some(v) => {
                let n = *v.get_ref();
                if !(MIN_FRAME_LIMIT..=MAX_FRAME).contains(&n) {
                    problems.push(format!(
                        "{}: limits.max_frame_bytes: between {MIN_FRAME_LIMIT} and {MAX_FRAME} (the protocol's limit)",
                        at(v.span())
                    ));
                }
                n
            }
            None => d.max_frame_bytes,
        };
        LimitsConfig {
            max_connections: *max_connections.get_ref(),
            new_connections_per_second,
            new_connections_burst,
            address_validation: self.address_validation.unwrap_or(d.address_validation),
            retry_above_per_second,
            idle_timeout,
            max_frame_bytes,
            reports_per_second,
            report_burst,
            reconnects_per_second,
            max_unauthenticated,
        }
    }
}

impl LimitsConfig {
    /// The reconnect spread to give probes when `connected` are connected.
    pub fn reconnect_spread(&self, connected: usize) -> Duration {
        let secs = connected as f64 / f64::from(self.reconnects_per_second.max(1));
        Duration::from_secs_f64(secs).clamp(RECONNECT_SPREAD_MIN, RECONNECT_SPREAD_MAX)
    }
}
