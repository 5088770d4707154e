//! The coordinator's handshake capacity, measured: how many reconnections per second it can
//! take, from the CPU time its own handshakes cost on this machine, so that the reconnect
//! spread it gives probes (how long they take to come back after a restart) fits what it can
//! absorb instead of a fixed guess.
//!
//! Every second the meter reads the process's CPU time and the handshakes completed. A second
//! with at least [`BURST`] handshakes is one where handshakes were most of the work (a fleet
//! connecting, a reconnect storm): its CPU per handshake, all of the second's CPU charged to
//! them (an upper bound, so the estimate errs towards a longer, safer spread), is folded into
//! the estimate. The lowest of the recent bursts' figures is kept ([`WINDOWS_KEPT`] of
//! them): a burst that shared the CPU with reports or a round shows a higher cost than the
//! handshakes themselves have.
//!
//! Capacity = cores this process may run on / CPU per handshake × [`STORM_HEADROOM`]. The spread a plan gives is
//! (fleet / capacity) seconds, never shorter than (fleet / `limits.reconnects_per_second`),
//! the operator's upper bound on the rate (20,000 by default), and within the protocol's
//! bounds (10 s to 10 min). Before any burst was seen, one core's worth is assumed
//! ([`UNMEASURED_RECONNECTS_PER_SECOND`]).
//!
//! The arithmetic, for this project's 2-core machine with the coordinator on one core: a full
//! handshake with the session set-up cost 0.66-0.72 ms of CPU on average over the benchmark's
//! connect phase (0.99 ms before a fleet's key bindings shared their commits,
//! `store::writer::bind_all`); the meter keeps its cheapest seconds, about 0.61 ms, which is
//! what the spread of the benchmark's 100,000 run at revision `6e9b811` implies (82 s: 100,000
//! / 82 s = 1,220 a second, three quarters ([`STORM_HEADROOM`]) of about 1,630). Two cores
//! halve the spread. That storm's reconnects cost 0.75 ms each: 1,220 a second of them take
//! 0.92 of the core.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Handshakes in one second for that second to count as a burst.
pub const BURST: u64 = 100;

/// Burst seconds whose figures are kept; the lowest CPU per handshake among them is used.
pub const WINDOWS_KEPT: usize = 32;

/// The share of the measured rate a storm is given. A reconnect in a storm costs more than a
/// handshake of a fleet connecting, where the cost is measured: the restarted process also
/// answers the old connections' packets (stateless resets) and the retransmissions of probes
/// that have not heard back. On this project's machine (20,000 probes, one core) the
/// connect phase measured 0.88 to 1.15 ms per handshake and storms 0.97 to 1.52 ms per
/// reconnect; at the full measured rate a storm overflowed the socket (18,568 datagrams
/// dropped), so storms get three quarters of it.
pub const STORM_HEADROOM: f64 = 0.75;

/// How often the meter samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Handshakes completed and the measured cost per handshake.
#[derive(Debug, Default)]
pub struct HandshakeMeter {
    completed: AtomicU64,
    state: Mutex<MeterState>,
}

#[derive(Debug, Default)]
struct MeterState {
    last: Option<(u64, Duration)>,
    /// CPU per handshake of the recent bursts, in seconds.
    bursts: std::collections::VecDeque<f64>,
}

impl HandshakeMeter {
    /// A handshake completed.
    pub fn completed(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one sample: `cpu` is the process's CPU time now. Returns the CPU per handshake
    /// of this interval when it was a burst.
    pub fn sample(&self, cpu: Duration) -> Option<f64> {
        let done = self.completed.load(Ordering::Relaxed);
        let mut state = self.state.lock();
        let previous = state.last.replace((done, cpu));
        let (done_before, cpu_before) = previous?;
        let handshakes = done.saturating_sub(done_before);
        if handshakes < BURST {
            return None;
        }
        let per = cpu.saturating_sub(cpu_before).as_secs_f64() / handshakes as f64;
        if per <= 0.0 {
            return None;
        }
        if state.bursts.len() == WINDOWS_KEPT {
            state.bursts.pop_front();
        }
        state.bursts.push_back(per);
        Some(per)
    }

    /// The measured CPU per handshake (the lowest of the recent bursts), when one was seen.
    pub fn cost(&self) -> Option<f64> {
        self.state
            .lock()
            .bursts
            .iter()
            .copied()
            .min_by(|a, b| a.total_cmp(b))
    }

    /// Handshakes per second this process can take on `cores` in a storm, when measured:
    /// cores / cost, times [`STORM_HEADROOM`].
    pub fn capacity(&self, cores: usize) -> Option<f64> {
        self.cost()
            .map(|per| cores.max(1) as f64 / per * STORM_HEADROOM)
    }
}

/// The rate a coordinator that has not measured its capacity yet assumes (one core's worth of
/// full handshakes, as measured on this project's machine).
pub const UNMEASURED_RECONNECTS_PER_SECOND: f64 = 1000.0;

/// The reconnect spread for a fleet of `fleet` probes: fleet / rate seconds, where the rate is
/// the measured capacity (or [`UNMEASURED_RECONNECTS_PER_SECOND`] before it is measured),
/// never above `configured_rate` (`limits.reconnects_per_second`, the operator's upper bound),
/// within the protocol's bounds.
pub fn spread(fleet: usize, capacity: Option<f64>, configured_rate: u32) -> Duration {
    let rate = capacity
        .filter(|c| c.is_finite() && *c > 0.0)
        .unwrap_or(UNMEASURED_RECONNECTS_PER_SECOND)
        .min(f64::from(configured_rate.max(1)));
    Duration::from_secs_f64(fleet as f64 / rate).clamp(
        cemwatch_transport::protocol::RECONNECT_SPREAD_MIN,
        cemwatch_transport::protocol::RECONNECT_SPREAD_MAX,
    )
}

/// CPU time this process has used (user and system), from `/proc/self/stat` (Linux; in clock
/// ticks of 10 ms, which over a one-second sample of at least [`BURST`] handshakes is within
/// a few per cent). None elsewhere: the configured rate alone sizes the spread.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    process_cpu_of(&stat)
}

/// The user and system time of a `/proc/PID/stat` line (fields 14 and 15, counted after the
/// command name, which may hold spaces and parentheses).
fn process_cpu_of(stat: &str) -> Option<Duration> {
    /// USER_HZ, 100 on every Linux build that matters (the kernel's ABI for these fields).
    const TICKS_PER_SECOND: u64 = 100;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // After the name: state (3) ... utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// The cores this process may run on (its CPU affinity and quota), as found the first time
/// it is asked: a change of affinity or quota while the coordinator runs counts from its next
/// start. Asked once per connection (each plan's reconnect spread), and
/// `available_parallelism` reads the cgroup's quota from `/proc` and `/sys` at every call
/// (an open, a stat, reads and a close each time; with a copy of the configuration, the plan
/// was 3.8% of the runtime thread's perf samples in a reconnect storm of 20,000).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst(meter: &HandshakeMeter, handshakes: u64, cpu: &mut Duration, per: Duration) {
        for _ in 0..handshakes {
            meter.completed();
        }
        *cpu += per * handshakes as u32;
    }

    #[test]
    fn the_cost_is_the_lowest_burst_s_and_quiet_seconds_do_not_count() {
        let meter = HandshakeMeter::default();
        let mut cpu = Duration::from_secs(5);
        assert_eq!(
            meter.sample(cpu),
            None,
            "the first sample only sets the start"
        );
        // A quiet second: 10 handshakes among other work.
        burst(&meter, 10, &mut cpu, Duration::from_millis(20));
        assert_eq!(meter.sample(cpu), None);
        assert_eq!(meter.cost(), None);
        assert_eq!(meter.capacity(2), None);
        // A burst at 1 ms each, then one sharing the CPU with reports (1.5 ms each).
        burst(&meter, 500, &mut cpu, Duration::from_millis(1));
        let per = meter.sample(cpu).expect("a burst");
        assert!((per - 0.001).abs() < 1e-9, "{per}");
        burst(&meter, 400, &mut cpu, Duration::from_micros(1500));
        meter.sample(cpu).expect("a burst");
        let cost = meter.cost().expect("measured");
        assert!((cost - 0.001).abs() < 1e-9, "the lowest: {cost}");
        let capacity = meter.capacity(2).expect("measured");
        assert!(
            (capacity - 2000.0 * STORM_HEADROOM).abs() < 1e-6,
            "{capacity}"
        );
        // Old bursts age out.
        for _ in 0..WINDOWS_KEPT {
            burst(&meter, 200, &mut cpu, Duration::from_millis(2));
            meter.sample(cpu).expect("a burst");
        }
        let cost = meter.cost().expect("measured");
        assert!((cost - 0.002).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn the_spread_fits_the_capacity_and_the_configured_rate_is_an_upper_bound() {
        let secs = Duration::from_secs;
        // Measured 500/s: 200 s for 100,000.
        assert_eq!(spread(100_000, Some(500.0), 20_000), secs(200));
        // Measured 4,000/s (four cores): 25 s, unless the operator allows less.
        assert_eq!(spread(100_000, Some(4000.0), 20_000), secs(25));
        assert_eq!(spread(100_000, Some(4000.0), 1_000), secs(100));
        // Not measured: one core's worth.
        assert_eq!(spread(100_000, None, 20_000), secs(100));
        assert_eq!(spread(100_000, Some(f64::NAN), 20_000), secs(100));
        assert_eq!(spread(100_000, Some(0.0), 20_000), secs(100));
        // Within the protocol's bounds.
        assert_eq!(
            spread(10, Some(4000.0), 20_000),
            cemwatch_transport::protocol::RECONNECT_SPREAD_MIN
        );
        assert_eq!(
            spread(10_000_000, Some(100.0), 20_000),
            cemwatch_transport::protocol::RECONNECT_SPREAD_MAX
        );
    }

    #[test]
    fn the_stat_line_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let line =
            "4242 (cemwatch (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 75 0 0 20 0 9 0 1 1 1";
        assert_eq!(process_cpu_of(line), Some(Duration::from_millis(3250)));
        assert_eq!(process_cpu_of("garbage"), None);
        assert_eq!(process_cpu_of("1 (x) S 1 2"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_cpu_time_is_read_and_grows() {
        let before = process_cpu().expect("Linux has /proc/self/stat");
        let mut x = 0u64;
        for i in 0..200_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = process_cpu().expect("cpu");
        assert!(after > before, "{before:?} then {after:?}");
        assert!(cores() >= 1);
    }
}
