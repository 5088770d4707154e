//! The `cemwatch` command line: `serve`, `token create`, `probe list|revoke`, `demo`.
//! Bad arguments and bad configuration exit 64 (EX_USAGE) with a message saying what to fix.

pub mod client;
#[cfg(feature = "demo")]
pub mod demo;
pub mod status;

use std::ffi::OsString;
#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use cemwatch_shared::duration::parse_duration;
use cemwatch_shared::token::EnrollToken;
use cemwatch_shared::wire::Labels;
use cemwatch_transport::host::{init_logging, shutdown_signal};

use crate::config::{Config, EXIT_CONFIG};
use crate::store;
#[cfg(feature = "demo")]
use demo::{DemoOptions, Scenario};

/// cemwatch: the coordinator of a fleet of cemwatch probes.
/// How `serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "cemwatch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: QUIC for probes, HTTP for metrics and the API.
    Serve(ServeArgs),
    /// Enrolment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The probes of this coordinator.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Coordinator, gateway simulator and probes in one process, on loopback.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// The fleet at a glance: per check the diagnosis, counts, certificates, ports, worst sites.
    ///
    /// Exits 0 when every check is healthy, 1 on a warning, 2 on a failure, 3 on bad input.
    Status(StatusArgs),
    /// Post-change verification: every eligible probe checks now; succeed when a quorum
    /// confirms the expectation (the new thumbprint, the new port).
    ///
    /// Exits 0 when confirmed, 1 when the deadline passes or the dissent makes the quorum
    /// impossible, 3 on bad input.
    Verify(VerifyArgs),
    /// Users of the HTTP surface: hash a password, make a bearer token (for `[[http.user]]`).
    #[command(subcommand)]
    Web(WebCommand),
}

#[derive(Debug, Subcommand)]
enum WebCommand {
    /// Read a password on standard input and print its bcrypt hash for `password_bcrypt`.
    HashPassword(HashPasswordArgs),
    /// Make a random bearer token: the token on standard output, the `[[http.user]]` lines
    /// (with its SHA-256, never the token) on standard error.
    Token(WebTokenArgs),
}

#[derive(Debug, Args)]
struct HashPasswordArgs {
    /// bcrypt cost (each step doubles the time of every verification and of every guess).
    #[arg(long, value_name = "N", default_value_t = 12, value_parser = clap::value_parser!(u32).range(10..=16))]
    cost: u32,
}

#[derive(Debug, Args)]
struct WebTokenArgs {
    /// The user's name in `[[http.user]]`.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Its role: metrics, read or operate.
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    role: crate::model::access::Role,
}

fn parse_role(text: &str) -> Result<crate::model::access::Role, String> {
    match crate::model::access::Role::parse_optional(text)? {
        Some(r) => Ok(r),
        None => Err("a user needs a role: metrics, read or operate".into()),
    }
}

fn web_hash_password(args: HashPasswordArgs) -> Result<u8> {
    use std::io::BufRead as _;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("password (it is echoed; pipe it in to avoid that, e.g. `read -rs P; printf %s \"$P\" | cemwatch web hash-password`):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        eprintln!("cemwatch web hash-password: the password is shorter than 8 characters; choose a longer one");
        return Ok(EXIT_CONFIG);
    }
    // bcrypt looks at the first 72 bytes only.
    if password.len() > 72 {
        eprintln!("cemwatch web hash-password: bcrypt uses only the first 72 bytes of a password; choose one of at most 72");
        return Ok(EXIT_CONFIG);
    }
    let hash = bcrypt::hash(password, args.cost).context("cannot hash the password")?;
    println!("{hash}");
    Ok(0)
}

fn web_token(args: WebTokenArgs) -> Result<u8> {
    use ring::rand::SecureRandom as _;
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    let token = hex::encode(raw);
    let digest = hex::encode(crate::http::auth::token_digest(&token));
    println!("{token}");
    eprintln!(
        "add to the coordinator's configuration (the token itself is shown once, above; keep it in a file with mode 0600 for --credentials-file):\n[[http.user]]\nname = {:?}\nrole = \"{}\"\ntoken_sha256 = \"{digest}\"",
        args.name,
        args.role.as_str()
    );
    Ok(0)
}

/// How to reach the coordinator's HTTP API.
#[derive(Debug, Args)]
struct ApiArgs {
    /// The coordinator's HTTP address (https://HOST:PORT when it serves HTTPS).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9464",
        env = "CEMWATCH_API"
    )]
    api: String,
    /// For HTTPS: the CA certificate (PEM) that issued the coordinator's HTTP certificate
    /// (default: the platform's trusted roots).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A file whose first line is USER:PASSWORD or a bearer token. Without it, credentials
    /// come from CEMWATCH_API_TOKEN, or CEMWATCH_API_USER and CEMWATCH_API_PASSWORD; never
    /// from the command line.
    #[arg(long, value_name = "FILE")]
    credentials_file: Option<PathBuf>,
}

impl ApiArgs {
    fn options(&self) -> client::ApiOptions {
        client::ApiOptions {
            url: self.api.clone(),
            ca_file: self.ca_file.clone(),
            credentials_file: self.credentials_file.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The check to verify (its name in the configuration).
    #[arg(long, value_name = "NAME")]
    check: String,
    /// The thumbprint every probe must now see (SHA-1 as the CEM policy holds it, or SHA-256).
    #[arg(long, value_name = "HEX", value_parser = parse_thumbprint)]
    expect_thumbprint: Option<String>,
    /// The port the check must now use (the CEM policy port).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    expect_port: Option<u16>,
    /// Fraction of eligible probes that must confirm.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.95, value_parser = parse_quorum)]
    quorum: f64,
    /// How long to wait for the answers.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_positive_duration)]
    timeout: Duration,
    #[command(flatten)]
    api: ApiArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

fn parse_thumbprint(text: &str) -> Result<String, String> {
    cemwatch_shared::Thumbprint::parse(text)
        .map(|t| t.to_string())
        .map_err(|e| e.to_string())
}

fn parse_quorum(text: &str) -> Result<f64, String> {
    let q: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number: give a fraction such as 0.95"))?;
    if q > 0.0 && q <= 1.0 {
        Ok(q)
    } else {
        Err(format!(
            "{q} is not a fraction above 0 and at most 1, such as 0.95"
        ))
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Where the store is: a configuration file or a data directory.
#[derive(Debug, Args)]
struct StoreArgs {
    /// The coordinator's configuration (its data_dir is used).
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// The coordinator's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn data_dir(&self) -> Result<PathBuf> {
        match (&self.config, &self.data_dir) {
            (Some(path), _) => Ok(Config::read(path)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .server
                .data_dir),
            (None, Some(dir)) => Ok(dir.clone()),
            (None, None) => bail!("give --config FILE or --data-dir DIR to say which coordinator"),
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a single-use, expiring enrolment token carrying the CA pin.
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
struct TokenCreateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Labels of the probe that enrols with it, such as site=eu-west,vantage=internet.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels, default_value = "")]
    labels: Labels,
    /// Fix the probe's name (otherwise the probe chooses, default its host name).
    #[arg(long, value_name = "NAME", value_parser = parse_probe_name)]
    name: Option<String>,
    /// How long the token stays valid.
    #[arg(long, value_name = "DUR", default_value = "24h", value_parser = parse_positive_duration)]
    ttl: Duration,
    /// The address probes use to reach this coordinator (for the printed command).
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// List the probes.
    List(ProbeListArgs),
    /// Revoke a probe: refused from its next handshake; its live connection is closed.
    Revoke(ProbeRevokeArgs),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
struct ProbeListArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Args)]
struct ProbeRevokeArgs {
    /// The probe's name.
    name: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Record the name as revoked even if this coordinator has never seen the probe: with
    /// coordinators sharing a CA (`trust_shared_ca_probes`), revoke on each of them.
    #[arg(long)]
    even_if_unseen: bool,
}

#[cfg(feature = "demo")]
#[derive(Debug, Args)]
struct DemoArgs {
    /// The simulator's failure mode.
    #[arg(long, value_enum, default_value_t = Scenario::Healthy)]
    scenario: Scenario,
    /// Internet probes (two DMZ probes come on top).
    #[arg(long, value_name = "N", default_value_t = 24)]
    probes: usize,
    /// Check interval.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_positive_duration)]
    interval: Duration,
    /// HTTP listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http_listen: SocketAddr,
    /// Stop after this long [default: run until Ctrl-C].
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    duration: Option<Duration>,
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// Parses `k=v,k=v`.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            format!("label {pair:?} has no '=': write labels as site=eu-west,vantage=internet")
        })?;
        let (k, v) = (k.trim(), v.trim());
        let ok = |s: &str| !s.is_empty() && s.chars().all(cemwatch_shared::name::is_name_char);
        if !ok(k) || !ok(v) {
            return Err(format!(
                "label {pair:?}: names and values are letters, digits, '-', '_' or '.'"
            ));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// Runs the command line and returns the exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // Client commands follow the monitoring-plugin convention (3 = unknown); daemon and admin
    // commands use EX_USAGE.
    let client = args
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|a| a == "status" || a == "verify");
    let usage_code = if client {
        crate::cli::status::EXIT_BAD_INPUT
    } else {
        EXIT_CONFIG
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(usage_code)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (json, level) = match &cli.command {
        Command::Serve(s) => (s.log_format == LogFormat::Json, "info"),
        #[cfg(feature = "demo")]
        Command::Demo(_) => (false, "warn,cemwatch_coordinator::app=info"),
        _ => (false, "warn"),
    };
    init_logging(json, level);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cemwatch: error: {e:#}");
            ExitCode::from(if client {
                crate::cli::status::EXIT_BAD_INPUT
            } else {
                1
            })
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    cemwatch_transport::host::runtime(None).context("cannot start the async runtime")
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Serve(args) => serve(&args.config),
        Command::Token(TokenCommand::Create(args)) => token_create(args),
        Command::Probe(ProbeCommand::List(args)) => probe_list(args),
        Command::Probe(ProbeCommand::Revoke(args)) => probe_revoke(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            let opts = DemoOptions {
                scenario: args.scenario,
                probes: args.probes,
                interval: args.interval,
                http_listen: args.http_listen,
                duration: args.duration,
            };
            runtime()?.block_on(demo::run(opts))?;
            Ok(0)
        }
        Command::Status(args) => runtime()?.block_on(crate::cli::status::status(
            &args.api.options(),
            args.output == Output::Json,
        )),
        Command::Web(WebCommand::HashPassword(args)) => web_hash_password(args),
        Command::Web(WebCommand::Token(args)) => web_token(args),
        Command::Verify(args) => runtime()?.block_on(crate::cli::status::verify(
            crate::cli::status::VerifyOptions {
                api: args.api.options(),
                check: args.check,
                expect_thumbprint: args.expect_thumbprint,
                expect_port: args.expect_port,
                quorum: args.quorum,
                timeout: args.timeout,
                json: args.output == Output::Json,
            },
        )),
    }
}

fn serve(path: &Path) -> Result<u8> {
    let config = match Config::read(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cemwatch: the configuration is not valid, nothing was started:\n{e}");
            return Ok(EXIT_CONFIG);
        }
    };
    runtime()?.block_on(async move {
        let running = crate::app::start(config, Some(path.to_path_buf())).await?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(0)
}

/// `--name`: the name rule every probe name follows (enrolment applies it too).
fn parse_probe_name(text: &str) -> Result<String, String> {
    cemwatch_shared::ProbeName::parse(text)
        .map(|n| n.into_string())
        .map_err(|e| format!("the probe name {e}"))
}

fn token_create(args: TokenCreateArgs) -> Result<u8> {
    if let Some(path) = &args.store.config {
        let config = Config::read(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        if config.server.trust_shared_ca_probes && args.name.is_none() {
            eprintln!(
                "cemwatch token create: {} sets trust_shared_ca_probes: a probe's name is its identity at every coordinator sharing the CA, so a token must fix it; give --name NAME (unique across those coordinators)",
                path.display()
            );
            return Ok(EXIT_CONFIG);
        }
    }
    let data_dir = args.store.data_dir()?;
    let ca_pem = data_dir.join("ca").join("ca.pem");
    if !ca_pem.exists() {
        bail!(
            "{} has no coordinator CA yet: start the coordinator once (`cemwatch serve --config FILE`) so it creates it",
            data_dir.display()
        );
    }
    let ca: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_file(&ca_pem)
            .with_context(|| format!("cannot read {}", ca_pem.display()))?;
    let db = store::open(&data_dir)?;
    let (id, secret) = store::create_token(&db, &args.labels, args.name.as_deref(), args.ttl)?;
    let token = EnrollToken {
        id,
        secret,
        ca_pin: cemwatch_transport::x509::sha256(ca.as_ref()),
    };
    println!("{token}");
    let coordinator = args
        .coordinator
        .unwrap_or_else(|| "COORDINATOR:4433".to_string());
    eprintln!(
        "single use, valid for {}; enrol a probe with:\n  cemwatch-probe enroll --coordinator {coordinator} --token {token} --state-dir /var/lib/cemwatch-probe",
        humanize(args.ttl)
    );
    Ok(0)
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn probe_list(args: ProbeListArgs) -> Result<u8> {
    let db = store::open(&args.store.data_dir()?)?;
    let probes = store::list_probes(&db)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&probes)?),
        Output::Table => {
            println!(
                "{:<24} {:<34} {:<10} {:<20}",
                "NAME", "LABELS", "STATE", "LAST SEEN"
            );
            for p in probes {
                // Labels of a probe adopted from another coordinator are the probe's word.
                use cemwatch_shared::printable::printable;
                let labels: Vec<String> = p
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{}={}", printable(k), printable(v)))
                    .collect();
                let state = if p.revoked_at.is_some() {
                    "revoked"
                } else {
                    "enrolled"
                };
                let seen = p
                    .last_seen
                    .and_then(|ms| time::OffsetDateTime::from_unix_timestamp(ms / 1000).ok())
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<24} {:<34} {:<10} {:<20}",
                    p.name,
                    labels.join(","),
                    state,
                    seen
                );
            }
        }
    }
    Ok(0)
}

fn probe_revoke(args: ProbeRevokeArgs) -> Result<u8> {
    let db = store::open(&args.store.data_dir()?)?;
    if args.even_if_unseen {
        store::revoke_unseen(&db, &args.name)?;
        println!("revoked {}: refused here from its next handshake, whether or not this coordinator has seen it; revoke it on every coordinator that shares the CA", args.name);
        return Ok(0);
    }
    if store::revoke(&db, &args.name)? {
        println!("revoked {}: refused from its next handshake; a running coordinator closes its connection within a second", args.name);
        Ok(0)
    } else {
        eprintln!(
            "cemwatch: no probe named {:?}; see `cemwatch probe list` (a probe enrolled at another coordinator sharing this CA: add --even-if-unseen)",
            args.name
        );
        Ok(EXIT_CONFIG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_create_applies_the_probe_name_rule() {
        let parse = |name: &str| {
            Cli::try_parse_from([
                "cemwatch",
                "token",
                "create",
                "--data-dir",
                "/tmp/x",
                "--name",
                name,
            ])
        };
        let err = parse("laptop 1")
            .expect_err("a space is refused")
            .to_string();
        assert!(err.contains("must be 1-64 letters"), "{err}");
        assert!(parse(&"x".repeat(65)).is_err(), "too long");
        assert!(parse("laptop-1.eu_west").is_ok());
    }

    #[test]
    fn labels_parse_and_explain() {
        let l = parse_labels("site=eu-west, vantage=internet").expect("valid");
        assert_eq!(l.get("site").map(String::as_str), Some("eu-west"));
        assert!(parse_labels("site").unwrap_err().contains("no '='"));
        assert!(parse_labels("si te=x").is_err());
        assert!(parse_labels("").expect("empty is fine").is_empty());
    }
}
