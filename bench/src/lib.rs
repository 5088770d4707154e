//! cemwatch benchmarks. `cemwatch-bench` simulates a fleet of probes with real QUIC
//! connections and real client certificates against a real `cemwatch serve` process, with a
//! raw-QUIC baseline server in the same run, and measures the probe's footprint beside
//! Prometheus' blackbox_exporter. It prints every figure with the machine and its load; see
//! `BENCHMARKS.md` for what the figures mean and the latest ones. Not part of `cargo test`.

pub mod baseline;
pub mod fleet;
pub mod footprint;
pub mod frames;
pub mod hist;
pub mod procstat;
pub mod provision;
pub mod report;
pub mod sim;
pub mod storepath;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use cemwatch_shared::wire::CheckReport;

/// Command line of `cemwatch-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "cemwatch-bench",
    version,
    about = "Benchmarks cemwatch: a simulated fleet against a real coordinator (with a raw-QUIC baseline in the same run) and the probe's footprint against blackbox_exporter."
)]
pub struct Cli {
    #[command(subcommand)]
    internal: Option<Internal>,
    #[command(flatten)]
    args: BenchArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    cemwatch_shared::duration::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Simulated probes (real QUIC connections, one client certificate each).
    #[arg(long, default_value_t = 10_000)]
    probes: usize,
    /// Client endpoints (UDP sockets) the connections share; 0: one per 1,000 probes.
    #[arg(long, default_value_t = 0)]
    endpoints: usize,
    /// (a) How long to hold the connected fleet before reading memory.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hold: Duration,
    /// (b) How long to report steadily.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    steady: Duration,
    /// (b) Time between one probe's reports.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    interval: Duration,
    /// (c) How long to saturate ingest (after a warm-up).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    saturate: Duration,
    /// (c) Reports in flight per probe.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// (c) Probes that take part (at most all); the rest of the fleet stays connected.
    #[arg(long, default_value_t = 2_000)]
    saturate_probes: usize,
    /// Most time for connecting the fleet, a round or a storm.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    deadline: Duration,
    /// Fleet scenarios to run: letters of a (connect and hold; always), b (steady), c
    /// (saturating ingest), d (ProbeNow round), e (kill -9 and reconnect storm).
    #[arg(long, default_value = "abcde")]
    scenarios: String,
    /// Checks per checker and TLS version in the footprint benchmark.
    #[arg(long, default_value_t = 1_000)]
    checks: usize,
    /// Skip the raw baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Simulated probes keep no TLS session tickets (every reconnect is a full handshake).
    #[arg(long)]
    no_resumption: bool,
    /// Do not pin the servers to CPU 0 and the load generator to CPU 1.
    #[arg(long)]
    no_pin: bool,
    /// Cores the servers under test (coordinator, baseline) are pinned to: CPUs 0 to N-1;
    /// the load generator gets the others (all of them, shared, when none are left). The
    /// footprint's checkers stay on CPU 0.
    #[arg(long, default_value_t = 1)]
    server_cores: usize,
    /// UDP sockets (quinn endpoints) both servers bind to their port (`server.quic_sockets`);
    /// 0: one per core they may run on.
    #[arg(long, default_value_t = 0)]
    quic_sockets: usize,
    /// Skip the fleet benchmark.
    #[arg(long)]
    skip_fleet: bool,
    /// Skip the footprint benchmark.
    #[arg(long)]
    skip_footprint: bool,
    /// Skip the blackbox_exporter comparison when it is not installed, instead of failing.
    #[arg(long)]
    blackbox_optional: bool,
    /// A short run that only proves the benchmarks work (CI): 200 probes, 2 s per scenario,
    /// 50 checks.
    #[arg(long)]
    smoke: bool,
    /// Where `cemwatch` and `cemwatch-probe` are (default: beside this program).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Keep the work directory (store, CA, configurations) and print where it is.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// (internal) The raw baseline server.
    #[command(hide = true)]
    BaselineServer {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        keys_dir: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        fleet: usize,
        #[arg(long, default_value_t = 0)]
        sockets: usize,
        #[arg(long)]
        check: String,
    },
    /// The coordinator's own work per report without QUIC: reading a report frame, then the
    /// store writer's group commit under a saturating load, each timed on its thread's CPU
    /// (BENCHMARKS.md, "The store path").
    StorePath {
        /// Reports in all (each held read in memory before the commit stage: about 1.6 KiB).
        #[arg(long, default_value_t = 500_000)]
        reports: usize,
        /// Connections submitting them.
        #[arg(long, default_value_t = 2_000)]
        probes: usize,
        /// Reports each connection keeps submitted and not yet committed.
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
    },
    /// (internal) Runs the probe's check in a loop and prints its figures as JSON.
    #[command(hide = true)]
    ProbeLoop {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        ca_file: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        no_revocation: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cemwatch-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn git_revision() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.internal {
        Some(Internal::BaselineServer {
            data_dir,
            keys_dir,
            listen,
            fleet,
            sockets,
            check,
        }) => {
            return baseline::run(&baseline::BaselineOptions {
                ca_dir: data_dir,
                keys_dir,
                listen,
                fleet,
                sockets,
                check,
            })
        }
        Some(Internal::ProbeLoop {
            port,
            ca_file,
            count,
            no_revocation,
        }) => {
            let figures = footprint::probe_loop(port, &ca_file, count, !no_revocation)?;
            println!("{}", serde_json::to_string(&figures)?);
            return Ok(());
        }
        Some(Internal::StorePath {
            reports,
            probes,
            in_flight,
        }) => {
            print_header(" store-path", &procstat::machine());
            let work = tempfile::Builder::new()
                .prefix("cemwatch-bench-")
                .tempdir()?;
            let gw = footprint::gateways(work.path())?;
            let results = encode_sample(sample_check(&gw)?)?;
            drop(gw);
            storepath::run(
                &storepath::StorePathOptions {
                    reports,
                    probes,
                    in_flight,
                },
                &results,
                work.path(),
            )?;
            println!(
                "load average at end (1, 5, 15 min): {}",
                procstat::loadavg()
            );
            return Ok(());
        }
        None => {}
    }
    let mut a = cli.args;
    if a.smoke {
        a.probes = a.probes.min(200);
        a.hold = Duration::from_secs(2);
        a.steady = Duration::from_secs(3);
        a.interval = Duration::from_secs(1);
        a.saturate = Duration::from_secs(2);
        a.checks = a.checks.min(50);
        a.deadline = a.deadline.min(Duration::from_secs(90));
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // Read before the load generator pins itself: the machine's cores, not those left to it.
    let machine = procstat::machine();
    let pin = !a.no_pin && taskset_available() && cpus >= 2;
    let server_cores = a.server_cores.clamp(1, cpus);
    // The load generator's CPUs: those the servers do not have, or all when none is left.
    let loadgen_cpus = if server_cores < cpus {
        format!("{server_cores}-{}", cpus - 1)
    } else {
        format!("0-{}", cpus - 1)
    };
    if pin {
        let me = std::process::id().to_string();
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", &loadgen_cpus, &me])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            anyhow::bail!(
                "cannot pin the load generator to CPUs {loadgen_cpus} with taskset (use --no-pin)"
            );
        }
    }
    let bin_dir = match a.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this program")?
            .to_path_buf(),
    };
    print_header("", &machine);
    if pin {
        println!(
            "pinning: servers on CPUs 0-{} (taskset -c; {server_cores} server core{}), checkers on CPU 0, load generator on CPUs {loadgen_cpus}{}",
            server_cores - 1,
            if server_cores == 1 { "" } else { "s" },
            if server_cores >= cpus {
                " (shared with the servers: no core is left for it alone)"
            } else {
                ""
            }
        );
    } else {
        println!("pinning: none");
    }
    let mut incomplete = Vec::new();
    let work = tempfile::Builder::new()
        .prefix("cemwatch-bench-")
        .tempdir()?;
    let gw = footprint::gateways(work.path())?;
    let sample = sample_check(&gw)?;

    if !a.skip_footprint {
        println!("\n== probe footprint: cemwatch-probe beside blackbox_exporter ==");
        footprint::run(
            &footprint::FootprintOptions {
                checks: a.checks,
                pin,
                bin_dir: bin_dir.clone(),
                blackbox_optional: a.blackbox_optional,
            },
            work.path(),
            &gw,
        )?;
    }

    if !a.skip_fleet {
        let results = encode_sample(sample)?;
        println!(
            "\n== fleet: {} simulated probes, real QUIC + mutual TLS, each report {} bytes of results ==",
            report::fmt_count(a.probes as u64),
            results.len()
        );
        let opts = fleet::FleetOptions {
            probes: a.probes,
            endpoints: a.endpoints,
            hold: a.hold,
            steady: a.steady,
            interval: a.interval,
            saturate: a.saturate,
            window: a.window.max(1),
            saturate_probes: a.saturate_probes.max(1),
            deadline: a.deadline,
            baseline: !a.no_baseline,
            resumption: !a.no_resumption,
            pin,
            server_cores: if pin { server_cores } else { cpus },
            quic_sockets: a.quic_sockets,
            coordinator_bin: bin_dir.join("cemwatch"),
            results,
            scenarios: a.scenarios.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let rows = runtime.block_on(fleet::run(&opts, work.path()))?;
        println!(
            "\n== summary ({} probes) ==",
            report::fmt_count(a.probes as u64)
        );
        report::table(&rows);
        println!();
        report::ratios(&rows, a.probes);
        println!();
        report::per_core(&rows, opts.server_cores);
        println!();
        report::targets(&rows, a.probes);
        incomplete = report::incomplete(&rows);
    }
    println!(
        "\nload average at end (1, 5, 15 min): {}",
        procstat::loadavg()
    );
    if a.keep {
        let kept = work.keep();
        println!("work directory kept: {}", kept.display());
    }
    if !incomplete.is_empty() {
        anyhow::bail!("scenarios did not complete: {}", incomplete.join("; "));
    }
    Ok(())
}

/// The first lines of every run: the version and build, the machine (`machine`, read before any
/// pinning), its load. `what` follows the build (a subcommand's name, or nothing).
fn print_header(what: &str, machine: &str) {
    println!(
        "cemwatch-bench {} (revision {}, {} build){what}",
        env!("CARGO_PKG_VERSION"),
        git_revision(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("machine: {machine}");
    println!(
        "load average at start (1, 5, 15 min): {}",
        procstat::loadavg()
    );
}

/// One real check result: the probe's own check against the benchmark's TLS 1.3 server.
fn sample_check(gw: &footprint::Gateways) -> Result<cemwatch_shared::CheckResult> {
    footprint::probe_loop(gw.tls13.port(), &gw.ca_file, 1, true)?
        .sample
        .context("no sample check result")
}

/// A report's results as the simulated probes send them: `sample`, produced now, encoded once.
fn encode_sample(sample: cemwatch_shared::CheckResult) -> Result<Vec<u8>> {
    let produced_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    frames::encode_results(&[CheckReport {
        check: fleet::CHECK.into(),
        produced_at_ms,
        result: sample,
    }])
}
