//! A real Prometheus on loopback, scraping coordinators.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cemwatch_tests::process::{http_get, Proc};
use serde_json::Value;

use super::http::urlencode;
use super::paths::deploy;

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
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs:\n  - job_name: cemwatch\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
            rules.iter().map(|r| format!("  - '{}'\n", r.display())).collect::<String>(),
            targets.join(", ")
        );
        Self::start_config(binary, &config, None)
    }

    /// Starts `binary` with `config` as its prometheus.yml and, when given, `web_config` as
    /// its `--web.config.file` (TLS, users).
    pub(crate) fn start_config(binary: &Path, config: &str, web_config: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
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
        if let Some(web) = web_config {
            cmd.arg(format!("--web.config.file={}", web.display()));
        }
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
