//! Figures of a process and of the machine, read from `/proc`: CPU time (user + system, all
//! threads), resident memory now and at its peak, UDP receive-buffer drops, load average.

use std::time::Instant;

use anyhow::{Context, Result};

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
}

impl Sample {
    /// CPU seconds spent since `earlier`.
    pub fn cpu_since(&self, earlier: &Sample) -> f64 {
        (self.cpu_s - earlier.cpu_s).max(0.0)
    }

    /// Share of one core used since `earlier` (1.0 = a whole core).
    pub fn cores_since(&self, earlier: &Sample) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall > 0.0 {
            self.cpu_since(earlier) / wall
        } else {
            0.0
        }
    }

    /// Resident memory in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Clock ticks per second of `/proc/PID/stat` times.
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds (utime + stime) of a process from the text of its `/proc/PID/stat`.
pub fn cpu_from_stat(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Reads a process (`"self"` for this one).
pub fn sample(pid: &str) -> Result<Sample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(Sample {
        at,
        cpu_s: cpu_from_stat(&stat).context("unreadable /proc stat")?,
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// CPU seconds of a process's live threads in nanoseconds' precision: the sum of the first
/// field of `/proc/PID/task/*/schedstat` (time on a CPU, user and system). `None` where the
/// kernel keeps no schedstat. The time of threads that have exited is not in it, so it serves
/// processes that keep their threads, such as the footprint's checkers (the probe's loop runs
/// on one runtime thread; blackbox_exporter's Go runtime keeps its threads); `/proc/PID/stat`,
/// counts every thread but in clock ticks (10 ms): two readings are up to 20 ms apart from the
/// truth, 0.04 ms per check over a block of 500 checks of about 0.3 ms each (13%), where this
/// is exact to the microsecond.
pub fn cpu_precise(pid: &str) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        ns += schedstat_ns(&task.ok()?.path().join("schedstat"))?;
    }
    Some(ns as f64 / 1e9)
}

/// Nanoseconds a thread has run on a CPU: the first field of its `schedstat` file
/// (`/proc/PID/task/TID/schedstat`, `/proc/thread-self/schedstat`). `None` where the kernel
/// keeps no schedstat.
pub fn schedstat_ns(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds between two readings of [`cpu_precise`], or of the ticks of `/proc/PID/stat`
/// where either precise reading is missing.
pub fn cpu_between(before: (&Sample, Option<f64>), after: (&Sample, Option<f64>)) -> f64 {
    match (before.1, after.1) {
        (Some(b), Some(a)) => (a - b).max(0.0),
        _ => after.0.cpu_since(before.0),
    }
}

/// Reads a child process by id.
pub fn sample_pid(pid: u32) -> Result<Sample> {
    sample(&pid.to_string())
}

/// UDP datagrams dropped because a socket's receive buffer was full, machine-wide.
pub fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Datagrams dropped by UDP sockets (`/proc/net/udp`, IPv4), split into those bound to
/// `port` (the server under test) and all others (the load generator's and anything else).
pub fn udp_drops(port: u16) -> (u64, u64) {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return (0, 0);
    };
    let (mut server, mut others) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields
            .get(1)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        let drops: u64 = fields.last().and_then(|d| d.parse().ok()).unwrap_or(0);
        if local_port == Some(port) {
            server += drops;
        } else {
            others += drops;
        }
    }
    (server, others)
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A line describing the machine: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| status_kib(&m, "MemTotal:"))
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{model}, {cores} usable cores (online {online}), {mem} RAM, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_survives_odd_command_names() {
        let stat = "4242 (tokio (worker) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        let cpu = cpu_from_stat(stat).expect("parsed");
        assert!((cpu - 300.0 / clock_ticks()).abs() < 1e-9, "{cpu}");
        assert_eq!(cpu_from_stat("garbage"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let s = sample("self").expect("sample");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
