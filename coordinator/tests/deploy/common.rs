//! What the deployment tests share: where things are, tools that may be missing (skipped with
//! a message, or required in CI), and the coordinator and probes as real processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cemwatch_tests::process::{http_get, Proc};
use serde_json::Value;

/// The coordinator binary under test.
pub(crate) const COORDINATOR: &str = env!("CARGO_BIN_EXE_cemwatch");

/// The workspace root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the coordinator crate lives in the workspace")
        .to_path_buf()
}

/// `deploy/`.
pub(crate) fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// A file's text, or a failure naming it.
pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The probe binary, built by `cargo test --workspace`.
pub(crate) fn probe_bin() -> PathBuf {
    let path = Path::new(COORDINATOR)
        .with_file_name(format!("cemwatch-probe{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it), or `cargo build -p cemwatch-probe` first",
        path.display()
    );
    path
}

/// `name` on the PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The first of `vars` set to 1: then a missing tool fails the test instead of skipping it.
fn required_by(vars: &[&str]) -> Option<String> {
    vars.iter()
        .find(|v| std::env::var_os(v).is_some_and(|x| x == "1"))
        .map(|v| v.to_string())
}

/// Environment variables that make Prometheus tests mandatory (`.ci/run` sets them).
pub(crate) const REQUIRE_PROMETHEUS: &[&str] =
    &["CEMWATCH_REQUIRE_PROMETHEUS", "CEMWATCH_REQUIRE_NETNS"];
/// Environment variables that make `systemd-analyze` mandatory (`.ci/run` sets one).
pub(crate) const REQUIRE_SYSTEMD: &[&str] = &["CEMWATCH_REQUIRE_SYSTEMD", "CEMWATCH_REQUIRE_NETNS"];

/// A tool for `test`: its path, or `None` after saying clearly that the test skips (how to
/// get the tool); panics instead when one of `required` is set to 1.
pub(crate) fn tool(name: &str, test: &str, required: &[&str], install: &str) -> Option<PathBuf> {
    if let Some(path) = which(name) {
        return Some(path);
    }
    match required_by(required) {
        Some(var) => panic!("{test}: {var}=1 but `{name}` is not installed ({install})"),
        None => {
            eprintln!(
                "SKIPPED {test}: `{name}` is not installed ({install}); set {} to make this a failure",
                required
                    .iter()
                    .map(|v| format!("{v}=1"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
            None
        }
    }
}

/// A running `cemwatch serve`.
pub(crate) struct Coordinator {
    pub proc: Proc,
    pub quic: SocketAddr,
    pub http: SocketAddr,
}

/// Starts `cemwatch serve --config CONFIG` and learns its addresses from its log.
pub(crate) fn start_coordinator(name: &str, config: &Path) -> Coordinator {
    let mut cmd = Command::new(COORDINATOR);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("CEMWATCH_LOG", "info");
    let mut proc = Proc::spawn(name, cmd).expect("spawn coordinator");
    let quic = proc.listening("quic").expect("quic address");
    let http = proc.listening("http").expect("http address");
    Coordinator { proc, quic, http }
}

/// Runs a `cemwatch` admin command; returns (exit code, stdout, stderr).
pub(crate) fn admin(args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(COORDINATOR)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("cemwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A single-use token for a probe named `name` with `labels`.
pub(crate) fn token(config: &Path, labels: &str, name: &str) -> String {
    let (code, out, err) = admin(
        &[
            "token", "create", "--labels", labels, "--name", name, "--ttl", "1h",
        ],
        config,
    );
    assert_eq!(code, 0, "token create: {err}");
    out.trim().to_string()
}

/// Enrols a probe into `state` at `quic`.
pub(crate) fn enroll_ok(quic: SocketAddr, token: &str, state: &Path) {
    let out = Command::new(probe_bin())
        .args([
            "enroll",
            "--coordinator",
            &quic.to_string(),
            "--token",
            token,
            "--state-dir",
        ])
        .arg(state)
        .args(["--timeout", "10s"])
        .output()
        .expect("enroll");
    assert!(
        out.status.success(),
        "enroll failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an enrolled probe reporting to `coordinators` in that order.
pub(crate) fn run_probe(
    name: &str,
    state: &Path,
    ca_file: &Path,
    coordinators: &[SocketAddr],
) -> Proc {
    let mut cmd = Command::new(probe_bin());
    cmd.args(["run", "--state-dir"])
        .arg(state)
        .arg("--ca-file")
        .arg(ca_file)
        .env("CEMWATCH_LOG", "info");
    for c in coordinators {
        cmd.args(["--coordinator", &c.to_string()]);
    }
    Proc::spawn(name, cmd).expect("spawn probe")
}

/// GET a JSON document.
pub(crate) fn get_json(http: SocketAddr, path: &str) -> Option<Value> {
    let (status, body) = http_get(http, path).ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Value of one series in a `/metrics` scrape (`name{labels}` exactly as rendered), 0 when absent.
pub(crate) fn metric(http: SocketAddr, series: &str) -> f64 {
    let Ok((_, body)) = http_get(http, "/metrics") else {
        return 0.0;
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Percent-encodes a query parameter.
pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus on loopback.
pub(crate) struct Prometheus {
    _proc: Proc,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `targets` every second, evaluating the fleet recording rules
    /// of deploy/prometheus every second.
    pub(crate) fn start(binary: &Path, targets: &[SocketAddr]) -> Self {
        Self::start_with_rules(
            binary,
            targets,
            &[deploy().join("prometheus").join("cemwatch-fleet.rules.yml")],
        )
    }

    /// Starts `binary` scraping `targets` every second with the given rule files.
    pub(crate) fn start_with_rules(
        binary: &Path,
        targets: &[SocketAddr],
        rules: &[PathBuf],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs:\n  - job_name: cemwatch\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
            rules.iter().map(|r| format!("  - '{}'\n", r.display())).collect::<String>(),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write");
        // Prometheus cannot listen on port 0: take a port that was free a moment ago.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path());
        let mut proc = Proc::spawn("prometheus", cmd).expect("spawn prometheus");
        proc.wait_for(
            "Server is ready to receive web requests",
            std::time::Duration::from_secs(60),
        )
        .expect("prometheus ready");
        Self {
            _proc: proc,
            addr,
            _dir: dir,
        }
    }

    /// An instant query: each series' labels and value.
    pub(crate) fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let Ok((200, body)) = http_get(self.addr, &path) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect()
    }

    /// A query whose answer is one number (`None` while it has no series).
    pub(crate) fn scalar(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        (r.len() == 1).then(|| r[0].1)
    }

    /// The value of `promql` per scraped coordinator (its `instance` label).
    pub(crate) fn per_instance(&self, promql: &str) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .query(promql)
            .into_iter()
            .map(|(m, v)| (m["instance"].as_str().unwrap_or("").to_string(), v))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
