//! Limits that keep the coordinator serving its fleet when the internet is hostile: a cap on
//! connections, a per-source rate limit on new connections (token bucket), QUIC address
//! validation (Retry) when handshakes come in fast or always, an idle timeout, a frame size
//! limit and a per-probe report rate limit. Each limit is a key of the `[limits]` table with a
//! default that suits a fleet of thousands of probes, and each one counts when it bites.
//!
//! The decisions are plain functions of a clock passed in (`Instant`), so they are tested
//! without sockets; [`Limiter::decide`] and [`Limiter::pace_report`] are the two decisions the QUIC
//! layer asks for (one per incoming connection, one per report) and counts.
//!
//! Sizing that is not configurable, because probe and coordinator must agree on it (see
//! `cemwatch_transport::quic::transport_config`): at most 4 bidirectional streams and no
//! unidirectional stream per connection, and a stream and connection receive window of
//! `MAX_FRAME` + 64 KiB, so one connection never makes the coordinator buffer more than about
//! 1.1 MiB, whatever the peer sends. The first frame of a connection (`Hello` or `Enroll`,
//! before the peer is known) is limited to `cemwatch_transport::protocol::MAX_FIRST_FRAME`.

use std::collections::HashMap;
use std::net::IpAddr;

use std::time::{Duration, Instant};

use crate::config::limits::AddressValidation;
use crate::config::limits::LimitsConfig;
use crate::telemetry::Refusal;

use parking_lot::Mutex;

/// Reports a probe may have waiting for their turn under the report rate limit. A probe keeps
/// at most 64 reports unacknowledged (`cemwatch_transport::protocol::WINDOW`), so only a peer
/// that ignores the protocol gets here; its connection is closed.
pub const MAX_QUEUED_REPORTS: f64 = 256.0;
/// Sources tracked by the per-source rate limit; beyond it, sources whose bucket is full
/// (idle ones) are forgotten.
pub const MAX_TRACKED_SOURCES: usize = 100_000;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: u32) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.last = now;
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant, rate: f64, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (the source has been quiet).
    pub fn is_full(&self, now: Instant, rate: f64, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= f64::from(burst)
    }

    /// Takes a token, going into debt when there is none: returns how long the caller must
    /// wait for its turn, or `None` (and takes nothing) when the debt would exceed
    /// `max_debt` tokens.
    pub fn reserve(
        &mut self,
        now: Instant,
        rate: f64,
        burst: u32,
        max_debt: f64,
    ) -> Option<Duration> {
        self.refill(now, rate, burst);
        let after = self.tokens - 1.0;
        if after < -max_debt {
            return None;
        }
        self.tokens = after;
        if after >= 0.0 {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_secs_f64(-after / rate))
        }
    }
}

/// Counts events over the last second (two one-second buckets, interpolated).
#[derive(Debug, Clone, Copy)]
pub struct RateMeter {
    window_start: Instant,
    current: u64,
    previous: u64,
}

impl RateMeter {
    /// A meter starting now.
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Records one event and returns the estimated rate per second, this event included.
    pub fn record(&mut self, now: Instant) -> f64 {
        let second = Duration::from_secs(1);
        let mut elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= second {
            let windows = elapsed.as_secs();
            self.previous = if windows == 1 { self.current } else { 0 };
            self.current = 0;
            self.window_start += second * u32::try_from(windows).unwrap_or(u32::MAX);
            elapsed = now.saturating_duration_since(self.window_start);
        }
        self.current += 1;
        let weight = 1.0 - elapsed.as_secs_f64();
        self.current as f64 + self.previous as f64 * weight.clamp(0.0, 1.0)
    }
}

/// What to do with a new connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go on with the handshake.
    Accept,
    /// Answer with a QUIC Retry: the client must prove it receives at its address.
    Retry,
    /// Refuse it, for this reason (which the caller counts).
    Refuse(Refusal),
}

#[derive(Debug)]
struct Sources {
    buckets: HashMap<IpAddr, TokenBucket>,
    attempts: RateMeter,
}

/// The state behind the limits: per-source buckets, the attempt rate, per-probe report
/// buckets. Bounded: at most [`MAX_TRACKED_SOURCES`] sources, one bucket per known probe.
#[derive(Debug)]
pub struct Limiter {
    sources: Mutex<Sources>,
    reports: Mutex<HashMap<String, TokenBucket>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Limiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            sources: Mutex::new(Sources {
                buckets: HashMap::new(),
                attempts: RateMeter::new(Instant::now()),
            }),
            reports: Mutex::new(HashMap::new()),
        }
    }

    /// Decides about a new connection attempt from `source`. `validated`: the client proved
    /// its address (it answered a Retry); `may_retry`: a Retry is allowed; `open`: connections
    /// open or in their handshake now.
    pub fn decide(
        &self,
        limits: &LimitsConfig,
        source: IpAddr,
        validated: bool,
        may_retry: bool,
        open: usize,
        now: Instant,
    ) -> Admission {
        if open >= limits.max_connections {
            return Admission::Refuse(Refusal::Limit);
        }
        let mut s = self.sources.lock();
        let rate = s.attempts.record(now);
        if !validated && may_retry {
            let retry = match limits.address_validation {
                AddressValidation::Always => true,
                AddressValidation::Auto => rate > f64::from(limits.retry_above_per_second),
                AddressValidation::Never => false,
            };
            if retry {
                return Admission::Retry;
            }
        }
        let (per_second, burst) = (
            limits.new_connections_per_second,
            limits.new_connections_burst,
        );
        let source = source_key(source);
        if !s.buckets.contains_key(&source) && s.buckets.len() >= MAX_TRACKED_SOURCES {
            s.buckets.retain(|_, b| !b.is_full(now, per_second, burst));
            if s.buckets.len() >= MAX_TRACKED_SOURCES {
                // Every tracked source is busy: this one is not tracked (max_connections
                // still holds).
                return Admission::Accept;
            }
        }
        let bucket = s
            .buckets
            .entry(source)
            .or_insert_with(|| TokenBucket::full(burst, now));
        if bucket.take(now, per_second, burst) {
            Admission::Accept
        } else {
            Admission::Refuse(Refusal::RateLimited)
        }
    }

    /// Sources currently tracked by the per-source limit.
    pub fn tracked_sources(&self) -> usize {
        self.sources.lock().buckets.len()
    }

    /// Paces one report of `probe`: `Ok(delay)` to commit it after `delay` (zero within the
    /// rate), or an error when the probe has more than [`MAX_QUEUED_REPORTS`] waiting, which
    /// a probe following the protocol never has. The caller counts what it decided.
    pub fn pace_report(
        &self,
        probe: &str,
        limits: &LimitsConfig,
        now: Instant,
    ) -> Result<Duration, ReportRateExceeded> {
        let (rate, burst) = (limits.reports_per_second, limits.report_burst);
        let outcome = {
            let mut map = self.reports.lock();
            let bucket = match map.get_mut(probe) {
                Some(b) => b,
                None => map
                    .entry(probe.to_string())
                    .or_insert_with(|| TokenBucket::full(burst, now)),
            };
            bucket.reserve(now, rate, burst, MAX_QUEUED_REPORTS)
        };
        outcome.ok_or(ReportRateExceeded {
            rate,
            queued: MAX_QUEUED_REPORTS as u32,
        })
    }
}

/// The address a source's bucket is kept under: an IPv4 address itself, an IPv6 address's /64
/// (and an IPv4-mapped IPv6 address as the IPv4 address). One IPv6 host is routinely given a
/// whole /64, so keyed by address one attacker would be 2^64 sources, each with a full burst.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A probe sent reports far beyond its rate limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("report rate limit exceeded: more than {queued} reports waiting at {rate} per second; a probe keeps at most 64 unacknowledged")]
pub struct ReportRateExceeded {
    /// The configured rate.
    pub rate: f64,
    /// The queue bound.
    pub queued: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let limiter = Limiter::new();
        let limits = LimitsConfig {
            new_connections_per_second: 2.0,
            new_connections_burst: 5,
            address_validation: AddressValidation::Never,
            ..LimitsConfig::default()
        };
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let decide = |ip, t| limiter.decide(&limits, ip, false, true, 0, t);
        for _ in 0..5 {
            assert_eq!(decide(a, t0), Admission::Accept);
        }
        assert_eq!(decide(a, t0), Admission::Refuse(Refusal::RateLimited));
        assert_eq!(
            decide(b, t0),
            Admission::Accept,
            "other sources are not affected"
        );
        // Half a second later one token (2 per second) is back, and only one.
        assert_eq!(decide(a, at(t0, 500)), Admission::Accept);
        assert_eq!(
            decide(a, at(t0, 500)),
            Admission::Refuse(Refusal::RateLimited)
        );
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_ipv4_mapped_addresses_are_their_ipv4() {
        let limiter = Limiter::new();
        let limits = LimitsConfig {
            new_connections_per_second: 0.001,
            new_connections_burst: 3,
            address_validation: AddressValidation::Never,
            ..LimitsConfig::default()
        };
        let t0 = Instant::now();
        let decide = |ip: &str| {
            let ip: IpAddr = ip.parse().expect("ip");
            limiter.decide(&limits, ip, false, true, 0, t0)
        };
        // Three addresses of one /64 spend the one burst of three; a fourth is refused.
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            assert_eq!(decide(host), Admission::Accept, "{host}");
        }
        assert_eq!(
            decide("2001:db8:1:2:dead:beef::1"),
            Admission::Refuse(Refusal::RateLimited),
            "the same /64"
        );
        assert_eq!(decide("2001:db8:1:3::1"), Admission::Accept, "the next /64");
        assert_eq!(limiter.tracked_sources(), 2);
        for _ in 0..3 {
            assert_eq!(decide("192.0.2.7"), Admission::Accept);
        }
        assert_eq!(
            decide("::ffff:192.0.2.7"),
            Admission::Refuse(Refusal::RateLimited),
            "an IPv4-mapped address is its IPv4 address"
        );
    }

    #[test]
    fn max_connections_refuses_first() {
        let limiter = Limiter::new();
        let limits = LimitsConfig {
            max_connections: 3,
            ..LimitsConfig::default()
        };
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let now = Instant::now();
        assert_eq!(
            limiter.decide(&limits, ip, true, false, 2, now),
            Admission::Accept
        );
        assert_eq!(
            limiter.decide(&limits, ip, true, false, 3, now),
            Admission::Refuse(Refusal::Limit)
        );
    }

    #[test]
    fn retry_when_attempts_come_fast_or_always() {
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        let limiter = Limiter::new();
        let auto = LimitsConfig {
            retry_above_per_second: 10,
            new_connections_burst: 1000,
            ..LimitsConfig::default()
        };
        let mut decisions = Vec::new();
        for i in 0..20 {
            decisions.push(limiter.decide(&auto, ip, false, true, 0, at(t0, i * 10)));
        }
        assert!(
            decisions[..10].iter().all(|d| *d == Admission::Accept),
            "{decisions:?}"
        );
        assert!(
            decisions[10..].iter().all(|d| *d == Admission::Retry),
            "{decisions:?}"
        );
        // A validated address is not asked again, whatever the rate.
        assert_eq!(
            limiter.decide(&auto, ip, true, false, 0, at(t0, 200)),
            Admission::Accept
        );
        // Two quiet seconds later the rate has fallen: no more retries.
        assert_eq!(
            limiter.decide(&auto, ip, false, true, 0, at(t0, 2500)),
            Admission::Accept
        );

        let always = LimitsConfig {
            address_validation: AddressValidation::Always,
            ..LimitsConfig::default()
        };
        let fresh = Limiter::new();
        assert_eq!(
            fresh.decide(&always, ip, false, true, 0, t0),
            Admission::Retry
        );
        assert_eq!(
            fresh.decide(&always, ip, true, false, 0, t0),
            Admission::Accept
        );
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let limiter = Limiter::new();
        let limits = LimitsConfig {
            address_validation: AddressValidation::Never,
            new_connections_per_second: 1000.0,
            new_connections_burst: 1,
            ..LimitsConfig::default()
        };
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            limiter.decide(&limits, ip, true, false, 0, t0);
        }
        assert!(limiter.tracked_sources() <= MAX_TRACKED_SOURCES);
        // Once the buckets refilled, the table is swept for new sources.
        let later = at(t0, 10);
        limiter.decide(
            &limits,
            "198.51.100.1".parse().expect("ip"),
            true,
            false,
            0,
            later,
        );
        assert!(
            limiter.tracked_sources() < 10,
            "{}",
            limiter.tracked_sources()
        );
    }

    #[test]
    fn reports_are_delayed_beyond_the_burst_and_a_flood_is_refused() {
        let limiter = Limiter::new();
        let limits = LimitsConfig {
            reports_per_second: 10.0,
            report_burst: 5,
            ..LimitsConfig::default()
        };
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.pace_report("p1", &limits, t0), Ok(Duration::ZERO));
        }
        let delay = limiter.pace_report("p1", &limits, t0).expect("queued");
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(
            limiter.pace_report("p2", &limits, t0),
            Ok(Duration::ZERO),
            "probes have their own buckets"
        );
        let mut refused = 0;
        for _ in 0..300 {
            if limiter.pace_report("p1", &limits, t0).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 300 - (MAX_QUEUED_REPORTS as usize - 1));
    }

    #[test]
    fn the_rate_meter_follows_the_last_second() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        let mut last = 0.0;
        for i in 0..100 {
            last = m.record(at(t0, i * 5));
        }
        assert!((last - 100.0).abs() < 1e-9, "{last}");
        // Half-way into the next second, half the previous second still counts.
        let r = m.record(at(t0, 1500));
        assert!((r - 51.0).abs() < 1.0, "{r}");
        // After a long silence, nothing of the past counts.
        assert!((m.record(at(t0, 10_000)) - 1.0).abs() < 1.0);
    }
}
