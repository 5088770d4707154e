//! The probe's footprint beside Prometheus' blackbox_exporter, in the same run against the
//! same local TLS servers (RSA-2048; one TLS 1.3 only, one TLS 1.2 only): CPU time per check,
//! checks per second and memory of each, as ratios; the idle memory of a real
//! `cemwatch-probe run` agent connected to a coordinator; the probe binary's size.
//!
//! Both checkers run as their own processes pinned to CPU 0 (the TLS servers run in this
//! process on CPU 1) and are measured from `/proc`. The probe side is the library's
//! `run_check` in a loop (`cemwatch-bench probe-loop`: resolve override, TCP, TLS with the
//! chain captured, certificate analysis, trust evaluation against the platform store plus the
//! test CA, triage), as the agent runs it; blackbox_exporter is asked over HTTP keep-alive, as
//! Prometheus asks it, with a `tcp` module with TLS that verifies against the same CA.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use cemwatch_probe::check::{self, CheckContext, CheckSpec, ResolveOverride, TrustStore};
use cemwatch_shared::{Expectations, Severity, Target};
use cemwatch_tests::pki::{Ca, LeafSpec};
use cemwatch_tests::process::{eventually, http_get, Proc};
use cemwatch_tests::server::{free_port, TlsServer, Versions};

use crate::procstat;
use crate::report::fmt_count;

/// The gateway name the local TLS servers serve.
pub const GATEWAY: &str = "gateway.example.com";

/// How the footprint benchmark runs.
#[derive(Debug, Clone)]
pub struct FootprintOptions {
    /// Checks per checker and TLS version.
    pub checks: usize,
    /// Pin the checkers to CPU 0.
    pub pin: bool,
    /// Where `cemwatch` and `cemwatch-probe` are.
    pub bin_dir: PathBuf,
    /// Skip blackbox_exporter when it is not installed (otherwise that is an error).
    pub blackbox_optional: bool,
}

/// What a `probe-loop` child reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoopFigures {
    /// Checks run (after the warm-up).
    pub checks: usize,
    /// Checks whose verdict was ok.
    pub ok: usize,
    /// CPU seconds of the measured checks.
    pub cpu_s: f64,
    /// Wall seconds of the measured checks.
    pub wall_s: f64,
    /// RSS at the end, KiB.
    pub rss_kib: u64,
    /// Peak RSS, KiB.
    pub hwm_kib: u64,
    /// A result, for reports that carry a real check.
    pub sample: Option<cemwatch_shared::CheckResult>,
}

fn spec(port: u16) -> CheckSpec {
    CheckSpec {
        target: Target {
            host: GATEWAY.into(),
            port,
        },
        expectations: Expectations {
            legacy_ports: Vec::new(),
            ..Expectations::default()
        },
    }
}

impl LoopFigures {
    /// Adds another block's figures (the memory figures are the latest and the highest).
    pub fn add(&mut self, other: LoopFigures) {
        self.checks += other.checks;
        self.ok += other.ok;
        self.cpu_s += other.cpu_s;
        self.wall_s += other.wall_s;
        self.rss_kib = other.rss_kib;
        self.hwm_kib = self.hwm_kib.max(other.hwm_kib);
        self.sample = other.sample.or(self.sample.take());
    }
}

/// Blocks the checks of each checker are run in, alternating the checkers, so that a change
/// in the machine's speed during the run (a shared host) weighs on each checker alike.
pub const INTERLEAVED_BLOCKS: usize = 4;

/// Each checker's figures over `checks`, measured in [`INTERLEAVED_BLOCKS`] blocks taken in
/// turn: probe with revocation, probe without, blackbox_exporter (when there is one).
fn measure_interleaved(
    opts: &FootprintOptions,
    port: u16,
    ca_file: &Path,
    blackbox: Option<&Blackbox>,
) -> Result<(LoopFigures, LoopFigures, Option<LoopFigures>)> {
    let blocks = INTERLEAVED_BLOCKS.min(opts.checks.max(1));
    let mut on: Option<LoopFigures> = None;
    let mut off: Option<LoopFigures> = None;
    let mut bb: Option<LoopFigures> = None;
    let merge = |acc: &mut Option<LoopFigures>, f: LoopFigures| match acc {
        Some(a) => a.add(f),
        None => *acc = Some(f),
    };
    for block in 0..blocks {
        // The checks split as evenly as they go: the first blocks take the remainder.
        let n = opts.checks / blocks + usize::from(block < opts.checks % blocks);
        merge(&mut on, measure_probe(opts, port, ca_file, true, n)?);
        merge(&mut off, measure_probe(opts, port, ca_file, false, n)?);
        if let Some(b) = blackbox {
            merge(&mut bb, measure_blackbox(b, port, n)?);
        }
    }
    let missing = || anyhow::anyhow!("no block was measured");
    Ok((on.ok_or_else(missing)?, off.ok_or_else(missing)?, bb))
}

/// Runs `count` checks of `127.0.0.1:port` in this process and measures them
/// (`cemwatch-bench probe-loop`).
pub fn probe_loop(
    port: u16,
    ca_file: &Path,
    count: usize,
    revocation: bool,
) -> Result<LoopFigures> {
    let mut trust = TrustStore::platform();
    trust.add_file(ca_file)?;
    let mut ctx = CheckContext::new(Arc::new(trust));
    ctx.revocation = revocation;
    ctx.overrides = vec![format!("{GATEWAY}:{port}:127.0.0.1")
        .parse::<ResolveOverride>()
        .map_err(anyhow::Error::msg)?];
    let spec = spec(port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for _ in 0..count.min(20) {
            check::run_check(&spec, &ctx).await;
        }
        let before = (procstat::sample("self")?, procstat::cpu_precise("self"));
        let mut ok = 0;
        let mut sample = None;
        for _ in 0..count {
            let result = check::run_check(&spec, &ctx).await;
            if result.verdict == Severity::Ok {
                ok += 1;
            }
            sample = Some(result);
        }
        let after = (procstat::sample("self")?, procstat::cpu_precise("self"));
        let cpu_s = procstat::cpu_between((&before.0, before.1), (&after.0, after.1));
        let (before, after) = (before.0, after.0);
        Ok(LoopFigures {
            checks: count,
            ok,
            cpu_s,
            wall_s: after.at.duration_since(before.at).as_secs_f64(),
            rss_kib: after.rss_kib,
            hwm_kib: after.hwm_kib,
            sample,
        })
    })
}

/// The gateways and their PKI.
#[derive(Debug)]
pub struct Gateways {
    /// TLS 1.3 only.
    pub tls13: TlsServer,
    /// TLS 1.2 only.
    pub tls12: TlsServer,
    /// The test root (PEM file).
    pub ca_file: PathBuf,
    /// Serves the root's CRL, which the leaf names as its distribution point (so the
    /// revocation stage has a real CRL to fetch, verify and look into).
    pub crl_server: cemwatch_tests::peers::HttpFiles,
}

/// Starts the two local gateways (RSA-2048 leaf from an RSA-2048 test root, naming the root's
/// CRL, served by python's http.server on loopback).
pub fn gateways(dir: &Path) -> Result<Gateways> {
    let root = Ca::root("Bench Root CA")?;
    let ca_file = root.write_pem(dir)?;
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    std::fs::write(pki.join("root.crl"), root.crl_der()?)?;
    let crl_server = cemwatch_tests::peers::HttpFiles::start(&pki)?;
    let mut spec = LeafSpec::good(&[GATEWAY]);
    spec.crl_url = Some(crl_server.url("root.crl"));
    let leaf = root.issue(&spec)?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(Gateways {
        tls13: TlsServer::start_on(any, &leaf, Versions::Tls13)?,
        tls12: TlsServer::start_on(any, &leaf, Versions::Tls12)?,
        ca_file,
        crl_server,
    })
}

/// Runs `probe-loop` as a pinned child process.
pub fn measure_probe(
    opts: &FootprintOptions,
    port: u16,
    ca_file: &Path,
    revocation: bool,
    checks: usize,
) -> Result<LoopFigures> {
    let exe = std::env::current_exe()?;
    let mut cmd = if opts.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .arg("probe-loop")
        .args(["--port", &port.to_string(), "--count", &checks.to_string()])
        .arg("--ca-file")
        .arg(ca_file)
        .args((!revocation).then_some("--no-revocation"))
        .output()
        .context("probe-loop")?;
    if !out.status.success() {
        bail!(
            "probe-loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("probe-loop printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// A blackbox_exporter process with a `tcp_tls` module.
#[derive(Debug)]
pub struct Blackbox {
    proc: Proc,
    addr: SocketAddr,
    /// Its version line.
    pub version: String,
}

/// The blackbox_exporter binary, if installed.
pub fn blackbox_binary() -> Option<PathBuf> {
    [
        "/usr/bin/prometheus-blackbox-exporter",
        "/usr/local/bin/blackbox_exporter",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Starts blackbox_exporter with a `tcp_tls` module trusting `ca_file`.
pub fn start_blackbox(
    opts: &FootprintOptions,
    bin: &Path,
    dir: &Path,
    ca_file: &Path,
) -> Result<Blackbox> {
    let config = dir.join("blackbox.yml");
    std::fs::write(
        &config,
        format!(
            "modules:\n  tcp_tls:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      tls: true\n      tls_config:\n        ca_file: {}\n        server_name: {GATEWAY}\n",
            ca_file.display()
        ),
    )?;
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            all.lines().next().unwrap_or_default().to_string()
        })
        .unwrap_or_default();
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cmd = if opts.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={addr}"));
    let proc = Proc::spawn("blackbox_exporter", cmd)?;
    eventually(
        "blackbox_exporter to listen",
        Duration::from_secs(15),
        || http_get(addr, "/metrics").ok().filter(|(s, _)| *s == 200),
    )
    .with_context(|| format!("blackbox_exporter did not start:\n{}", proc.log()))?;
    Ok(Blackbox {
        proc,
        addr,
        version,
    })
}

/// One HTTP/1.1 keep-alive connection.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    fn connect(addr: SocketAddr) -> Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    fn get(&mut self, path: &str) -> Result<(u16, String)> {
        write!(self.writer, "GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n")?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status")?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
                let mut chunk = vec![0u8; n + 2];
                self.reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            let n = length.context("neither content-length nor chunked")?;
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Figures of blackbox_exporter over `checks` probes of `port`.
pub fn measure_blackbox(bb: &Blackbox, port: u16, checks: usize) -> Result<LoopFigures> {
    let mut http = KeepAlive::connect(bb.addr)?;
    let path = format!("/probe?module=tcp_tls&target=127.0.0.1:{port}");
    for _ in 0..checks.min(20) {
        http.get(&path)?;
    }
    let pid = bb.proc.pid();
    let before = (
        procstat::sample_pid(pid)?,
        procstat::cpu_precise(&pid.to_string()),
    );
    let mut ok = 0;
    for _ in 0..checks {
        let (status, body) = http.get(&path)?;
        if status == 200 && body.lines().any(|l| l.trim() == "probe_success 1") {
            ok += 1;
        }
    }
    let after = (
        procstat::sample_pid(pid)?,
        procstat::cpu_precise(&pid.to_string()),
    );
    let cpu_s = procstat::cpu_between((&before.0, before.1), (&after.0, after.1));
    let (before, after) = (before.0, after.0);
    Ok(LoopFigures {
        checks,
        ok,
        cpu_s,
        wall_s: after.at.duration_since(before.at).as_secs_f64(),
        rss_kib: after.rss_kib,
        hwm_kib: after.hwm_kib,
        sample: None,
    })
}

/// Idle memory of a real agent: `cemwatch serve`, `cemwatch token create`,
/// `cemwatch-probe enroll`, `cemwatch-probe run` against the TLS 1.3 gateway; returns
/// (RSS KiB after it connected and reported, peak RSS KiB).
pub fn agent_rss(
    opts: &FootprintOptions,
    dir: &Path,
    gateway_port: u16,
    ca_file: &Path,
) -> Result<(u64, u64)> {
    let coordinator = opts.bin_dir.join("cemwatch");
    let probe = opts.bin_dir.join("cemwatch-probe");
    let config = dir.join("agent-cemwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nquic_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"agent-data\"\n\n[[check]]\nname = \"gateway\"\nhost = \"{GATEWAY}\"\nport = {gateway_port}\nlegacy_ports = []\ninterval = \"5s\"\nresolve = [\"{GATEWAY}:*:127.0.0.1\"]\n"
        ),
    )?;
    let mut cmd = Command::new(&coordinator);
    cmd.args(["serve", "--config"]).arg(&config);
    let mut serve = Proc::spawn("coordinator", cmd)?;
    let quic = serve.listening("quic")?;
    let http = serve.listening("http")?;
    let out = Command::new(&coordinator)
        .args(["token", "create", "--config"])
        .arg(&config)
        .args([
            "--labels",
            "site=bench,vantage=internet",
            "--name",
            "footprint",
        ])
        .output()?;
    if !out.status.success() {
        bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let state = dir.join("probe-state");
    let out = Command::new(&probe)
        .args([
            "enroll",
            "--coordinator",
            &quic.to_string(),
            "--token",
            &token,
            "--state-dir",
        ])
        .arg(&state)
        .output()?;
    if !out.status.success() {
        bail!("enroll: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut cmd = Command::new(&probe);
    cmd.args(["run", "--state-dir"])
        .arg(&state)
        .arg("--ca-file")
        .arg(ca_file);
    let agent = Proc::spawn("probe", cmd)?;
    eventually("the agent's first report", Duration::from_secs(30), || {
        let (_, body) = http_get(http, "/api/v1/probes").ok()?;
        (body.contains("\"state\":\"connected\"") && body.contains("\"verdict\"")).then_some(())
    })
    .with_context(|| format!("the agent did not report:\n{}", agent.log()))?;
    // A few check intervals, connected and idle between checks.
    let mut rss = 0;
    let mut hwm = 0;
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let s = procstat::sample_pid(agent.pid())?;
        rss = rss.max(s.rss_kib);
        hwm = s.hwm_kib;
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(agent);
    serve.terminate(Duration::from_secs(5));
    Ok((rss, hwm))
}

/// Runs the footprint benchmark and prints its figures.
pub fn run(opts: &FootprintOptions, dir: &Path, gw: &Gateways) -> Result<()> {
    let probe_bin = opts.bin_dir.join("cemwatch-probe");
    let size = std::fs::metadata(&probe_bin)
        .with_context(|| format!("{} is missing: build it first", probe_bin.display()))?
        .len();
    println!(
        "  probe binary {}: {} bytes ({:.1} MiB)",
        probe_bin.display(),
        fmt_count(size),
        size as f64 / 1024.0 / 1024.0
    );
    let bb_bin = blackbox_binary();
    let blackbox = match (&bb_bin, opts.blackbox_optional) {
        (Some(bin), _) => Some(start_blackbox(opts, bin, dir, &gw.ca_file)?),
        (None, true) => {
            println!("  blackbox_exporter is not installed: SKIPPED the comparison (apt-get install prometheus-blackbox-exporter)");
            None
        }
        (None, false) => bail!("blackbox_exporter is not installed: apt-get install prometheus-blackbox-exporter (or pass --blackbox-optional)"),
    };
    let idle_bb = match &blackbox {
        Some(bb) => {
            let s = procstat::sample_pid(bb.proc.pid())?;
            println!("  {} (idle RSS {:.1} MiB)", bb.version, s.rss_mib());
            Some(s)
        }
        None => None,
    };
    println!(
        "  {} checks per checker and TLS version, each checker pinned to CPU 0, sequential, in {} blocks taken in turn",
        fmt_count(opts.checks as u64),
        INTERLEAVED_BLOCKS.min(opts.checks.max(1))
    );
    println!("  | TLS | checker | CPU ms/check | checks/s | RSS MiB | peak RSS MiB | ok |");
    println!("  |---|---|---:|---:|---:|---:|---:|");
    for (label, server) in [("1.3", &gw.tls13), ("1.2", &gw.tls12)] {
        let (p, off, bb) =
            measure_interleaved(opts, server.port(), &gw.ca_file, blackbox.as_ref())?;
        let line = |who: &str, f: &LoopFigures| {
            println!(
                "  | {label} | {who} | {:.3} | {:.0} | {:.1} | {:.1} | {}/{} |",
                f.cpu_s * 1000.0 / f.checks.max(1) as f64,
                f.checks as f64 / f.wall_s.max(1e-9),
                f.rss_kib as f64 / 1024.0,
                f.hwm_kib as f64 / 1024.0,
                f.ok,
                f.checks
            )
        };
        line(
            "cemwatch-probe (run_check, revocation on: one CRL fetched and verified)",
            &p,
        );
        line("cemwatch-probe (run_check, --no-revocation)", &off);
        let per = |f: &LoopFigures| f.cpu_s * 1000.0 / f.checks.max(1) as f64;
        println!(
            "  |   | revocation stage | {:.3} ms/check ({:.2} of the check) | | | | |",
            per(&p) - per(&off),
            (per(&p) - per(&off)) / per(&p).max(1e-12)
        );
        if let Some(b) = bb {
            line("blackbox_exporter", &b);
            // blackbox_exporter checks no revocation: the like-for-like ratio is without it.
            let p = &off;
            let per = |f: &LoopFigures| f.cpu_s / f.checks.max(1) as f64;
            println!(
                "  |   | ratio probe (--no-revocation) / blackbox | {:.2} (target at most 0.30) | {:.2} | {:.2} | {:.2} | |",
                per(p) / per(&b).max(1e-12),
                (p.checks as f64 / p.wall_s.max(1e-9)) / (b.checks as f64 / b.wall_s.max(1e-9)).max(1e-12),
                p.rss_kib as f64 / b.rss_kib.max(1) as f64,
                p.hwm_kib as f64 / b.hwm_kib.max(1) as f64,
            );
        }
    }
    if let (Some(_), Some(idle)) = (&blackbox, idle_bb) {
        println!("  blackbox_exporter idle RSS {:.1} MiB", idle.rss_mib());
    }
    let (rss, hwm) = agent_rss(opts, dir, gw.tls13.port(), &gw.ca_file)?;
    println!(
        "  agent `cemwatch-probe run`, enrolled, connected over QUIC, checking every 5 s: RSS {:.1} MiB (peak {:.1} MiB); target under 10 MiB{}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        if let Some(idle) = idle_bb {
            format!("; blackbox_exporter idle {:.1} MiB, ratio {:.2}", idle.rss_mib(), rss as f64 / idle.rss_kib.max(1) as f64)
        } else {
            String::new()
        }
    );
    Ok(())
}
