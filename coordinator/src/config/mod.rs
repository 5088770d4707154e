//! The coordinator's configuration: one TOML file, unknown keys refused, every problem reported
//! with its key and line, all validated before any port is bound. `Config::from_toml` takes a
//! string so tests parse configurations without files.

pub mod http;
pub mod limits;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use cemwatch_shared::duration::parse_duration;
use cemwatch_shared::model::{DEFAULT_GATEWAY_PORT, DEFAULT_LEGACY_PORTS, DEFAULT_MIN_DAYS_LEFT};
use cemwatch_shared::wire::{Labels, PlannedCheck};
use cemwatch_shared::{Expectations, Target, Thumbprint};

use crate::config::limits::{LimitsConfig, RawLimits};

/// Exit code for a bad configuration or bad arguments (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// A duration written as `5s`, `2m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listeners, data directory, lifetimes.
    pub server: ServerConfig,
    /// The checks probes run.
    pub checks: Vec<CheckConfig>,
    /// Diagnosis thresholds.
    pub diagnosis: crate::model::check::Thresholds,
    /// Connection, rate and size limits (the `[limits]` table).
    pub limits: LimitsConfig,
    /// `[http]`: who may use the HTTP surface, over what, within which limits.
    pub http: http::HttpConfig,
    /// `[rounds]`: how often rounds may start, and how many are kept.
    pub rounds: http::RoundsConfig,
    /// `[store]`: how long reports and events are kept, how large the store may grow.
    pub store: store::StoreConfig,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// QUIC listener for probes.
    pub quic_listen: SocketAddr,
    /// HTTP listener for `/metrics`, the API, `/live` and `/ready`.
    pub http_listen: SocketAddr,
    /// Where the CA, the store and the server identity live.
    pub data_dir: PathBuf,
    /// A probe not heard from for this long is stale: its results no longer count.
    pub stale_after: Duration,
    /// Lifetime of probe client certificates (renewed at half-life over the live connection).
    pub probe_cert_ttl: Duration,
    /// Extra DNS names for the coordinator's server certificate.
    pub server_names: Vec<String>,
    /// Most `site` label values in metrics; the rest are summed into `other`.
    pub max_sites: usize,
    /// Export per-probe series (off by default: they grow with the fleet).
    pub per_probe_metrics: bool,
    /// Accept probes enrolled at another coordinator that shares this coordinator's CA (the
    /// same `ca/` files in both data directories), recording each on its first `Hello`: what
    /// makes a probe's ordered coordinator list fail over. Off by default: then only probes
    /// enrolled here are accepted.
    pub trust_shared_ca_probes: bool,
    /// UDP sockets the QUIC listener binds to its port (`SO_REUSEPORT`), each with its own
    /// quinn endpoint; 0 (the default): one per core the process may run on.
    pub quic_sockets: usize,
}

/// One `[[check]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// Unique name (metrics label, API path).
    pub name: String,
    /// Gateway FQDN.
    pub host: String,
    /// Port in the CEM Settings policy.
    pub port: u16,
    /// Ports where an unmoved listener may answer.
    pub legacy_ports: Vec<u16>,
    /// Thumbprint in the CEM Settings policy.
    pub expect_thumbprint: Option<Thumbprint>,
    /// Other names the certificate must cover.
    pub require_san: Vec<String>,
    /// Warning threshold.
    pub min_days_left: u32,
    /// How often each probe runs it.
    pub interval: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// TLS handshake timeout.
    pub handshake_timeout: Duration,
    /// `HOST:PORT:ADDR` DNS overrides.
    pub resolve: Vec<String>,
    /// Label selector: a probe runs the check when all these labels match.
    pub select: Labels,
    /// What the check watches: the agent-facing gateway, or the SMP from the DMZ.
    pub role: crate::model::check::Role,
}

impl CheckConfig {
    /// Whether a probe with `labels` runs this check.
    pub fn selects(&self, labels: &Labels) -> bool {
        self.select.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The check as a plan entry.
    pub fn planned(&self) -> PlannedCheck {
        PlannedCheck {
            name: self.name.clone(),
            target: Target {
                host: self.host.clone(),
                port: self.port,
            },
            expectations: Expectations {
                thumbprint: self.expect_thumbprint.clone(),
                required_sans: self.require_san.clone(),
                min_days_left: self.min_days_left,
                legacy_ports: self.legacy_ports.clone(),
            },
            interval_ms: self.interval.as_millis() as u64,
            connect_timeout_ms: self.connect_timeout.as_millis() as u64,
            handshake_timeout_ms: self.handshake_timeout.as_millis() as u64,
            resolve: self.resolve.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    #[serde(default, rename = "check")]
    checks: Vec<RawCheck>,
    limits: Option<RawLimits>,
    diagnosis: Option<RawDiagnosis>,
    http: Option<http::RawHttp>,
    rounds: Option<http::RawRounds>,
    store: Option<store::RawStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiagnosis {
    quorum: Option<Spanned<f64>>,
    local_sites_max: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    quic_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    stale_after: Option<HumanDuration>,
    probe_cert_ttl: Option<HumanDuration>,
    #[serde(default)]
    server_names: Vec<String>,
    /// Moved to `limits.max_connections`; still accepted here.
    max_connections: Option<Spanned<usize>>,
    max_sites: Option<usize>,
    per_probe_metrics: Option<bool>,
    trust_shared_ca_probes: Option<bool>,
    quic_sockets: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Spanned<String>,
    host: Spanned<String>,
    port: Option<Spanned<u16>>,
    legacy_ports: Option<Vec<u16>>,
    expect_thumbprint: Option<Thumbprint>,
    #[serde(default)]
    require_san: Vec<String>,
    min_days_left: Option<u32>,
    interval: Option<Spanned<HumanDuration>>,
    connect_timeout: Option<HumanDuration>,
    handshake_timeout: Option<HumanDuration>,
    #[serde(default)]
    resolve: Vec<Spanned<String>>,
    #[serde(default)]
    select: BTreeMap<String, String>,
    #[serde(default)]
    role: crate::model::check::Role,
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem: `FILE:LINE: key: what is wrong and what to do`.
    pub problems: Vec<String>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Where the coordinator listens for probes unless `server.quic_listen` says otherwise.
pub const DEFAULT_QUIC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 4433);
/// Where `/metrics` and the API listen unless `server.http_listen` says otherwise (loopback:
/// nothing is exposed until an operator decides to).
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
/// The most sockets `server.quic_sockets` may ask for.
pub const MAX_QUIC_SOCKETS: usize = 256;
/// The data directory, relative to the configuration file.
pub const DEFAULT_DATA_DIR: &str = "cemwatch-data";
/// A probe not heard from for this long is stale: its results stop counting.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);
/// The lifetime of a probe's client certificate (it renews at half-life).
pub const DEFAULT_PROBE_CERT_TTL: Duration = Duration::from_secs(7 * 86_400);
/// The shortest certificate lifetime accepted (a probe must be able to renew in time).
pub const MIN_PROBE_CERT_TTL: Duration = Duration::from_secs(30);
/// Sites named in metrics before the rest are summed into `other`.
pub const DEFAULT_MAX_SITES: usize = 50;
/// How often a check runs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest check interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The check's TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The check's TLS handshake timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `FILE:LINE` of a span of the configuration text.
pub(crate) type At<'a> = &'a dyn Fn(std::ops::Range<usize>) -> String;

impl RawServer {
    /// The `[server]` table validated; `base` resolves a relative `data_dir`.
    fn validate(self, origin: &str, base: &Path, problems: &mut Vec<String>) -> ServerConfig {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let data_dir = if data_dir.is_relative() {
            base.join(data_dir)
        } else {
            data_dir
        };
        let probe_cert_ttl = self
            .probe_cert_ttl
            .map(|d| d.0)
            .unwrap_or(DEFAULT_PROBE_CERT_TTL);
        if probe_cert_ttl < MIN_PROBE_CERT_TTL {
            problems.push(format!(
                "{origin}: server.probe_cert_ttl: at least 30s (days in production), so probes can renew in time (they renew at half-life)"
            ));
        }
        for name in &self.server_names {
            if name.is_empty() || name.contains(' ') {
                problems.push(format!(
                    "{origin}: server.server_names: {name:?} is not a DNS name"
                ));
            }
        }
        if self.quic_sockets.is_some_and(|n| n > MAX_QUIC_SOCKETS) {
            problems.push(format!(
                "{origin}: server.quic_sockets: at most {MAX_QUIC_SOCKETS} (0: one per core)"
            ));
        }
        ServerConfig {
            quic_listen: self.quic_listen.unwrap_or(DEFAULT_QUIC_LISTEN),
            http_listen: self.http_listen.unwrap_or(DEFAULT_HTTP_LISTEN),
            data_dir,
            stale_after: self.stale_after.map(|d| d.0).unwrap_or(DEFAULT_STALE_AFTER),
            probe_cert_ttl,
            server_names: self.server_names,
            max_sites: self.max_sites.unwrap_or(DEFAULT_MAX_SITES).max(1),
            per_probe_metrics: self.per_probe_metrics.unwrap_or(false),
            trust_shared_ca_probes: self.trust_shared_ca_probes.unwrap_or(false),
            quic_sockets: self.quic_sockets.unwrap_or(0).min(MAX_QUIC_SOCKETS),
        }
    }
}

impl RawDiagnosis {
    /// The `[diagnosis]` thresholds validated: fractions above 0 and at most 1.
    fn validate(self, at: At<'_>, problems: &mut Vec<String>) -> crate::model::check::Thresholds {
        let mut diagnosis = crate::model::check::Thresholds::default();
        for (key, value, slot) in [
            ("quorum", self.quorum, &mut diagnosis.quorum),
            (
                "local_sites_max",
                self.local_sites_max,
                &mut diagnosis.local_sites_max,
            ),
        ] {
            if let Some(v) = value {
                let x = *v.get_ref();
                if x > 0.0 && x <= 1.0 {
                    *slot = x;
                } else {
                    problems.push(format!(
                        "{}: diagnosis.{key}: {x} must be a fraction above 0 and at most 1",
                        at(v.span())
                    ));
                }
            }
        }
        diagnosis
    }
}

impl RawCheck {
    /// The `i`th `[[check]]` validated; `seen` holds the names before it (they must differ).
    fn validate(
        self,
        i: usize,
        seen: &mut HashSet<String>,
        at: At<'_>,
        problems: &mut Vec<String>,
    ) -> CheckConfig {
        let c = self;
        let key = format!("check[{i}]");
        let name = c.name.get_ref().clone();
        if let Err(e) = cemwatch_shared::name::check(&name) {
            problems.push(format!("{}: {key}.name: {e}", at(c.name.span())));
        } else if !seen.insert(name.clone()) {
            problems.push(format!(
                "{}: {key}.name: duplicate check name {name:?}",
                at(c.name.span())
            ));
        }
        let host = c.host.get_ref().trim().trim_end_matches('.').to_string();
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
            problems.push(format!(
                "{}: {key}.host: {:?} is not a host name: give the gateway's external FQDN",
                at(c.host.span()),
                c.host.get_ref()
            ));
        }
        let port = match &c.port {
            Some(p) if *p.get_ref() == 0 => {
                problems.push(format!("{}: {key}.port: 0 is not a port", at(p.span())));
                0
            }
            Some(p) => *p.get_ref(),
            None => DEFAULT_GATEWAY_PORT,
        };
        let interval = c
            .interval
            .as_ref()
            .map(|d| d.get_ref().0)
            .unwrap_or(DEFAULT_INTERVAL);
        if interval < MIN_INTERVAL {
            let span = c.interval.as_ref().map(|d| d.span()).unwrap_or(0..0);
            problems.push(format!("{}: {key}.interval: at least 1s", at(span)));
        }
        for r in &c.resolve {
            if let Err(e) = r
                .get_ref()
                .parse::<cemwatch_shared::model::ResolveOverride>()
            {
                problems.push(format!("{}: {key}.resolve: {e}", at(r.span())));
            }
        }
        CheckConfig {
            name,
            host,
            port,
            legacy_ports: c
                .legacy_ports
                .unwrap_or_else(|| DEFAULT_LEGACY_PORTS.to_vec())
                .into_iter()
                .filter(|p| *p != port)
                .collect(),
            expect_thumbprint: c.expect_thumbprint,
            require_san: c.require_san,
            min_days_left: c.min_days_left.unwrap_or(DEFAULT_MIN_DAYS_LEFT),
            interval,
            connect_timeout: c
                .connect_timeout
                .map(|d| d.0)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            handshake_timeout: c
                .handshake_timeout
                .map(|d| d.0)
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            resolve: c.resolve.into_iter().map(|r| r.into_inner()).collect(),
            select: c.select,
            role: c.role,
        }
    }
}

impl Config {
    /// Parses and validates a configuration, reporting every problem (not the first) as
    /// `FILE:LINE: key: what to do`. `origin` names the file in messages; relative `data_dir`
    /// paths are taken relative to `base`.
    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = match e.span() {
                Some(span) => format!(
                    "{origin}:{}: {}",
                    line_of(text, span.start),
                    e.to_string().trim_end()
                ),
                None => format!("{origin}: {}", e.to_string().trim_end()),
            };
            ConfigError {
                problems: vec![msg],
            }
        })?;
        let mut problems = Vec::new();
        let at = |span: std::ops::Range<usize>| format!("{origin}:{}", line_of(text, span.start));

        let mut server = raw.server.unwrap_or_default();
        let limits = raw.limits.unwrap_or_default().validate(
            server.max_connections.take(),
            &at,
            &mut problems,
        );
        let server = server.validate(origin, base, &mut problems);
        let diagnosis = raw
            .diagnosis
            .map(|d| d.validate(&at, &mut problems))
            .unwrap_or_default();
        let http = raw
            .http
            .unwrap_or_default()
            .validate(base, &at, &mut problems);
        let rounds = raw.rounds.unwrap_or_default().validate(&at, &mut problems);
        let store = raw.store.unwrap_or_default().validate(&at, &mut problems);
        if raw.checks.is_empty() {
            problems.push(format!(
                "{origin}: no [[check]]: add at least one, such as\n  [[check]]\n  name = \"gateway\"\n  host = \"gateway.example.com\"\n  port = 8443"
            ));
        }
        let mut seen = HashSet::new();
        let checks = raw
            .checks
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.validate(i, &mut seen, &at, &mut problems))
            .collect();
        if problems.is_empty() {
            Ok(Self {
                server,
                checks,
                diagnosis,
                limits,
                http,
                rounds,
                store,
            })
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Reads and validates a configuration file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!(
                "{}: cannot read the configuration: {e}",
                path.display()
            )],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &path.display().to_string(), &base)
    }

    /// The checks a probe with `labels` runs, as a plan.
    pub fn plan_for(&self, labels: &Labels) -> Vec<PlannedCheck> {
        self.checks
            .iter()
            .filter(|c| c.selects(labels))
            .map(CheckConfig::planned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
quic_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"
stale_after = "3m"

[[check]]
name = "gateway"
host = "gateway.example.com"
port = 8443
expect_thumbprint = "3a 7f 9c 2b 11 d0 4e 5f 66 a7 b8 c9 d0 e1 f2 a3 b4 c5 d6 e7"
require_san = ["smp.example.net"]
interval = "30s"
select = { vantage = "internet" }

[[check]]
name = "smp-4726"
host = "smp.example.net"
port = 4726
select = { vantage = "dmz" }
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "cemwatch.toml", Path::new("/etc/cemwatch"))
    }

    #[test]
    fn a_good_configuration_parses_with_defaults() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.server.data_dir, PathBuf::from("/etc/cemwatch/data"));
        assert_eq!(c.server.stale_after, Duration::from_secs(180));
        assert_eq!(c.checks.len(), 2);
        assert_eq!(c.checks[0].legacy_ports, vec![443]);
        assert_eq!(c.checks[0].interval, Duration::from_secs(30));
        let internet: Labels = [("vantage".to_string(), "internet".to_string())].into();
        let plan = c.plan_for(&internet);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].name, "gateway");
        assert_eq!(plan[0].target.port, 8443);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = parse(&GOOD.replace("port = 8443", "port = 70000")).unwrap_err();
        assert!(e.problems[0].starts_with("cemwatch.toml:11:"), "{e}");

        let e = parse(&GOOD.replace("interval = \"30s\"", "interval = \"30\"")).unwrap_err();
        assert!(e.to_string().contains("no unit"), "{e}");
        assert!(e.problems[0].starts_with("cemwatch.toml:14:"), "{e}");

        let e = parse(&GOOD.replace("require_san", "require_sans")).unwrap_err();
        assert!(
            e.to_string().contains("require_sans"),
            "unknown keys are refused: {e}"
        );

        let e = parse(&GOOD.replace("3a 7f", "zz 7f")).unwrap_err();
        assert!(e.to_string().contains("invalid character"), "{e}");
        assert!(e.problems[0].starts_with("cemwatch.toml:12:"), "{e}");
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let text = GOOD
            .replace("name = \"smp-4726\"", "name = \"gateway\"")
            .replace(
                "host = \"smp.example.net\"",
                "host = \"smp.example.net\"\nresolve = [\"nonsense\"]",
            );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(e.problems[0].contains("duplicate check name"), "{e}");
        assert!(e.problems[0].starts_with("cemwatch.toml:18:"), "{e}");
        assert!(e.problems[1].contains("check[1].resolve"), "{e}");

        let e = parse("[server]\n").unwrap_err();
        assert!(e.to_string().contains("no [[check]]"), "{e}");
    }

    #[test]
    fn shared_ca_probes_are_refused_unless_asked_for() {
        assert!(!parse(GOOD).expect("valid").server.trust_shared_ca_probes);
        let text = GOOD.replace(
            "stale_after = \"3m\"",
            "stale_after = \"3m\"\ntrust_shared_ca_probes = true",
        );
        assert!(parse(&text).expect("valid").server.trust_shared_ca_probes);
        let e = parse(&text.replace("= true", "= \"yes\"")).unwrap_err();
        assert!(e.problems[0].starts_with("cemwatch.toml:7:"), "{e}");
    }

    #[test]
    fn limits_have_defaults_and_are_checked_with_their_line() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.limits.max_frame_bytes, cemwatch_shared::wire::MAX_FRAME);

        let text = format!(
            "{GOOD}\n[limits]\nmax_connections = 500\nnew_connections_per_second = 2.5\naddress_validation = \"always\"\nidle_timeout = \"2m\"\nreports_per_second = 5\nreport_burst = 80\nreconnects_per_second = 250\n"
        );
        let c = parse(&text).expect("valid");
        assert_eq!(c.limits.reconnects_per_second, 250);
        // 10,000 enrolled probes at 250 per second: 40 s; never under 10 s nor over 10 min.
        assert_eq!(c.limits.reconnect_spread(10_000), Duration::from_secs(40));
        assert_eq!(c.limits.reconnect_spread(3), Duration::from_secs(10));
        assert_eq!(
            c.limits.reconnect_spread(1_000_000),
            Duration::from_secs(600)
        );
        assert_eq!(c.limits.max_connections, 500);
        assert_eq!(c.limits.new_connections_per_second, 2.5);
        assert_eq!(
            c.limits.address_validation,
            crate::config::limits::AddressValidation::Always
        );
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(
            (c.limits.reports_per_second, c.limits.report_burst),
            (5.0, 80)
        );

        // The old place of max_connections still works, but not both at once.
        let old = GOOD.replace(
            "stale_after = \"3m\"",
            "stale_after = \"3m\"\nmax_connections = 42",
        );
        assert_eq!(parse(&old).expect("valid").limits.max_connections, 42);
        let both = format!("{old}\n[limits]\nmax_connections = 43\n");
        let e = parse(&both).unwrap_err();
        assert!(e.problems[0].starts_with("cemwatch.toml:7:"), "{e}");
        assert!(
            e.to_string().contains("moved to limits.max_connections"),
            "{e}"
        );

        let bad = format!(
            "{GOOD}\n[limits]\nmax_frame_bytes = 4194304\nidle_timeout = \"5s\"\nreport_burst = 0\nnew_connections_per_second = -1.0\nreconnects_per_second = 0\n"
        );
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.problems.len(), 5, "{e}");
        let text = e.to_string();
        for key in [
            "limits.max_frame_bytes",
            "limits.idle_timeout",
            "limits.report_burst",
            "limits.new_connections_per_second",
            "limits.reconnects_per_second",
        ] {
            assert!(text.contains(key), "{key}: {e}");
        }
        assert!(
            text.contains("cemwatch.toml:24: limits.max_frame_bytes"),
            "{e}"
        );

        let e = parse(&format!("{GOOD}\n[limits]\nmax_conections = 1\n")).unwrap_err();
        assert!(
            e.to_string().contains("max_conections"),
            "unknown keys are refused: {e}"
        );
        let e = parse(&format!(
            "{GOOD}\n[limits]\naddress_validation = \"sometimes\"\n"
        ))
        .unwrap_err();
        assert!(e.problems[0].starts_with("cemwatch.toml:24:"), "{e}");
    }
}
