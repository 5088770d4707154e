//! The `cemwatch-probe` command line: arguments are parsed raw by clap, then turned into a
//! validated [`CheckSpec`] and [`CheckContext`] (`check`) or a loaded certificate file
//! (`inspect`); any error says what was wrong and exits 3.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;

use cemwatch_shared::duration::parse_duration;
use cemwatch_shared::model::{DEFAULT_GATEWAY_PORT, DEFAULT_LEGACY_PORTS, DEFAULT_MIN_DAYS_LEFT};
use cemwatch_shared::{Expectations, Target, Thumbprint};

use crate::check::{self, CheckContext, CheckSpec, ResolveOverride, TrustStore};
use crate::inspect::{self, Password};
use crate::render;

/// Exit code for bad input, usage errors and anything that prevented a verdict.
pub const EXIT_UNKNOWN: u8 = 3;

/// cemwatch-probe: check a CEM Internet Gateway from the outside.
#[derive(Debug, Parser)]
#[command(name = "cemwatch-probe", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a gateway once: DNS, TCP, TLS, certificate, thumbprint, legacy ports.
    ///
    /// Exits 0 when everything is right, 1 on a warning, 2 on a failure, 3 on bad input.
    Check(CheckArgs),
    /// Join a coordinator's fleet with a token from `cemwatch token create`.
    ///
    /// Makes the probe's key locally, sends a certificate request with the token, verifies the
    /// coordinator against the CA pin in the token, and stores the client certificate.
    Enroll(EnrollArgs),
    /// Run as a fleet probe: receive the plan, check on schedule, report to the coordinator.
    Run(RunArgs),
    /// Check a certificate file (.pfx/.p12, PEM, DER) against the CEM requirements before it
    /// is imported, and print its thumbprint as the CEM Settings policy wants it.
    ///
    /// Exits 0 when the file is ready to import, 1 on a warning, 2 on a failure, 3 on bad
    /// input (unreadable or damaged file, missing or wrong password).
    Inspect(InspectArgs),
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The agent certificate a check presents when the gateway asks for a client certificate.
#[derive(Debug, Args)]
struct ClientCertArgs {
    /// Present this agent certificate when the gateway asks for a client certificate, and
    /// complete the handshake as a management agent does: a .pfx/.p12 with its private key
    /// (password from --password-env or --password-file), or PEM (or DER) with the key in the
    /// same file or in --client-key. It stays on this machine; reports carry its subject and
    /// thumbprint only. An expired or expiring certificate is reported before it is used; a
    /// gateway that refuses it gives client_cert_rejected.
    #[arg(long, value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert, when the certificate file does not hold it.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// The name of an environment variable holding the --client-cert .pfx password.
    #[arg(
        long,
        value_name = "VAR",
        conflicts_with = "password_file",
        requires = "client_cert"
    )]
    password_env: Option<String>,
    /// A file whose content (less one line ending) is the --client-cert .pfx password.
    #[arg(long, value_name = "PATH", requires = "client_cert")]
    password_file: Option<PathBuf>,
}

impl ClientCertArgs {
    /// Loads the agent certificate, if one is given.
    fn load(&self) -> anyhow::Result<Option<Arc<check::ClientIdentity>>> {
        let Some(path) = &self.client_cert else {
            return Ok(None);
        };
        let password = password(self.password_env.as_deref(), self.password_file.as_deref())?;
        let identity =
            check::ClientIdentity::load(path, self.client_key.as_deref(), password.as_ref())?;
        Ok(Some(Arc::new(identity)))
    }
}

/// Which addresses of the gateway's name are checked.
#[derive(Debug, Args)]
struct AddressArgs {
    /// Check the name's IPv4 addresses (A records), its IPv6 addresses (AAAA), or both.
    #[arg(long, value_name = "any|ipv4|ipv6", default_value = "any", value_parser = parse_family)]
    address_family: cemwatch_shared::AddressFamily,
    /// Check at most this many addresses of the name (all at once); the rest are named as
    /// skipped.
    #[arg(long, value_name = "N", default_value_t = cemwatch_shared::model::DEFAULT_MAX_ADDRESSES, value_parser = parse_max_addresses)]
    max_addresses: usize,
}

fn parse_max_addresses(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of addresses from 1 to 64 (each address checked holds a connection open during the check)"
        )),
    }
}

fn parse_family(text: &str) -> Result<cemwatch_shared::AddressFamily, String> {
    text.parse()
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// The coordinator's QUIC address.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: String,
    /// The enrolment token (`cwt1.…`). On a shared machine prefer `--token-file` or the
    /// `CEMWATCH_TOKEN` environment variable: other users can read a command line.
    #[arg(
        long,
        value_name = "TOKEN",
        value_parser = parse_token,
        env = "CEMWATCH_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    token: Option<cemwatch_shared::token::EnrollToken>,
    /// A file holding the enrolment token (its first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Where the probe keeps its key, certificate and spool.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// The probe's name in the fleet [default: the host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// How long to wait for the coordinator.
    #[arg(long, value_name = "DUR", default_value = "15s", value_parser = parse_timeout)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The state directory made by `enroll`.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// Coordinators in order of preference (repeatable) [default: the one enrolled with].
    #[arg(long = "coordinator", value_name = "HOST:PORT")]
    coordinators: Vec<String>,
    /// A PEM file of CA certificates to trust for the gateway checks, besides the platform
    /// store (repeatable).
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_file: Vec<PathBuf>,
    /// Use ADDR for HOST:PORT in the checks instead of DNS, before the plan's own overrides, as
    /// curl's --resolve (repeatable; ADDR,ADDR,... for a name with several addresses).
    #[arg(long, value_name = "HOST:PORT:ADDR", value_parser = parse_resolve)]
    resolve: Vec<ResolveOverride>,
    #[command(flatten)]
    addresses: AddressArgs,
    /// Most reports kept while the coordinator is unreachable; the oldest are dropped, and
    /// counted, beyond it.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    spool_max_reports: usize,
    /// Follow the management agent's log on this endpoint and report its CEM state (connected
    /// to which gateway and port, handshake errors, timeouts). `default`, or the flag alone, is
    /// the agent's standard path on Windows
    /// (`%ProgramData%\Symantec\Symantec Agent\Logs\Agent.log`).
    #[arg(
        long,
        value_name = "PATH|default",
        num_args = 0..=1,
        default_missing_value = "default"
    )]
    agent_log: Option<OsString>,
    /// Replace one of the agent log patterns (repeatable): NAME is connected, thumbprint,
    /// handshake_error or connect_timeout; REGEX is matched case-insensitively anywhere in a
    /// line and may name groups `host`, `port` and `thumbprint`.
    #[arg(
        long = "agent-log-pattern",
        value_name = "NAME=REGEX",
        requires = "agent_log"
    )]
    agent_log_pattern: Vec<String>,
    #[command(flatten)]
    client_cert: ClientCertArgs,
    /// Do not fetch the CRLs of the certificate path in the checks (the revocation stage).
    #[arg(long)]
    no_revocation: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The agent log configuration from `run`'s arguments; `local_offset` is the endpoint's UTC
/// offset for log timestamps that carry none.
fn agent_log_config(
    args: &RunArgs,
    local_offset: time::UtcOffset,
) -> anyhow::Result<Option<crate::agentlog::AgentLogConfig>> {
    let Some(arg) = &args.agent_log else {
        return Ok(None);
    };
    let path = crate::agentlog::resolve_path(arg).map_err(anyhow::Error::msg)?;
    let mut config = crate::agentlog::AgentLogConfig::new(path);
    for spec in &args.agent_log_pattern {
        config.patterns.apply_override(spec)?;
    }
    config.local_offset = local_offset;
    Ok(Some(config))
}

fn parse_token(text: &str) -> Result<cemwatch_shared::token::EnrollToken, String> {
    text.parse()
        .map_err(|e: cemwatch_shared::token::TokenError| e.to_string())
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people: one line per stage, then the findings with their remedy.
    Table,
    /// For scripts: the whole result as one JSON document.
    Json,
}

/// When to use colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When standard output is a terminal and NO_COLOR is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The gateway's external FQDN (or address), optionally with :PORT, as agents reach it.
    #[arg(value_name = "HOST[:PORT]")]
    target: String,
    /// The port in the CEM Settings policy [default: 8443].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// A legacy port where an unmoved listener may answer (repeatable) [default: 443].
    #[arg(long = "legacy-port", value_name = "N")]
    legacy_port: Vec<u16>,
    /// Do not try legacy ports.
    #[arg(long, conflicts_with = "legacy_port")]
    no_legacy_ports: bool,
    /// Do not fetch the CRLs of the certificate path (the revocation stage: at most 5 s, over
    /// plain HTTP from here, as agents that check revocation do).
    #[arg(long)]
    no_revocation: bool,
    /// The thumbprint registered in the CEM Settings policy (SHA-1, or a SHA-256 fingerprint).
    #[arg(long, value_name = "HEX", value_parser = parse_thumbprint)]
    expect_thumbprint: Option<Thumbprint>,
    /// Another name the certificate must cover, such as the SMP FQDN (repeatable). The gateway
    /// name is always required.
    #[arg(long = "require-san", value_name = "NAME")]
    require_san: Vec<String>,
    /// A PEM file of CA certificates to trust besides the platform store (repeatable).
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_file: Vec<PathBuf>,
    /// Use ADDR for HOST:PORT instead of DNS, as curl's --resolve (repeatable; ADDR,ADDR,...
    /// for a name with several addresses: each is checked).
    #[arg(long, value_name = "HOST:PORT:ADDR", value_parser = parse_resolve)]
    resolve: Vec<ResolveOverride>,
    #[command(flatten)]
    addresses: AddressArgs,
    /// Warn when the certificate has fewer days left than this.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MIN_DAYS_LEFT)]
    min_days_left: u32,
    /// How long to wait for a TCP answer before calling the port filtered.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_timeout)]
    connect_timeout: Duration,
    /// How long the TLS handshake may take.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_timeout)]
    handshake_timeout: Duration,
    #[command(flatten)]
    client_cert: ClientCertArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// When to colour the table.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The certificate file: PKCS#12 (.pfx, .p12), PEM or DER (.cer, .crt); the format is
    /// read from the content, not the extension.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The name of an environment variable holding the .pfx password.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// A file whose content (less one line ending) is the .pfx password.
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
    /// A name the certificate must cover, such as the SMP FQDN (repeatable).
    #[arg(long = "require-san", value_name = "NAME")]
    require_san: Vec<String>,
    /// The gateway's external FQDN, which the certificate must cover.
    #[arg(long, value_name = "NAME")]
    gateway: Option<String>,
    /// The thumbprint registered in the CEM Settings policy (SHA-1, or a SHA-256 fingerprint).
    #[arg(long, value_name = "HEX", value_parser = parse_thumbprint)]
    expect_thumbprint: Option<Thumbprint>,
    /// A PEM file of CA certificates to trust besides the platform store (repeatable).
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_file: Vec<PathBuf>,
    /// Warn when the certificate has fewer days left than this.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MIN_DAYS_LEFT)]
    min_days_left: u32,
    /// Also fetch the CRLs of the file's certificate path from here (over plain HTTP, at most
    /// 5 s), as agents on the internet will: a revoked certificate, or CRLs they cannot reach.
    #[arg(long)]
    revocation: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// When to colour the table.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

fn parse_thumbprint(text: &str) -> Result<Thumbprint, String> {
    Thumbprint::parse(text).map_err(|e| e.to_string())
}

fn parse_resolve(text: &str) -> Result<ResolveOverride, String> {
    text.parse()
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("a timeout must be longer than zero".into());
    }
    Ok(d)
}

/// Splits `HOST[:PORT]`, accepting `[v6]:port`, bare IPv6 and a pasted `https://` URL.
pub fn parse_target(text: &str) -> Result<(String, Option<u16>), String> {
    let mut rest = text.trim();
    for scheme in ["https://", "http://"] {
        if rest.len() >= scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme) {
            rest = &rest[scheme.len()..];
        }
    }
    if let Some(slash) = rest.find('/') {
        rest = &rest[..slash];
    }
    let bad_port = |p: &str| {
        format!("{text:?}: {p:?} is not a port number (1-65535); write HOST or HOST:PORT, for example gateway.example.com:8443")
    };
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        let (host, tail) = after
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: missing ']' after the IPv6 address"))?;
        match tail.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if tail.is_empty() => (host, None),
            None => return Err(format!("{text:?}: unexpected {tail:?} after ']'")),
        }
    } else if rest.matches(':').count() > 1 {
        (rest, None)
    } else if let Some((h, p)) = rest.split_once(':') {
        (h, Some(p))
    } else {
        (rest, None)
    };
    if host.is_empty() {
        return Err(format!(
            "{text:?}: the host is empty; write HOST or HOST:PORT"
        ));
    }
    if host.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{text:?}: a host name cannot contain spaces"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad_port(p)),
            Ok(n) => Some(n),
        },
    };
    Ok((host.trim_end_matches('.').to_string(), port))
}

/// Runs the command line and returns the process exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_UNKNOWN)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let json_logs = matches!(&cli.command, Command::Run(r) if r.log_format == LogFormat::Json);
    let default_level = if matches!(cli.command, Command::Check(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(json_logs, default_level);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cemwatch-probe: error: {e:#}");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
}

use cemwatch_transport::host::{init_logging, shutdown_signal};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    cemwatch_transport::host::runtime(Some(2)).context("cannot start the async runtime")
}

fn run_enroll(args: EnrollArgs) -> anyhow::Result<u8> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(crate::agent::enroll::default_name);
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}: cannot read it", path.display()))?;
            let line = text.lines().next().unwrap_or("").trim();
            parse_token(line)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?
        }
        (None, None) => anyhow::bail!(
            "no enrolment token: give --token-file FILE, set CEMWATCH_TOKEN, or --token TOKEN"
        ),
    };
    let identity = runtime()?.block_on(crate::agent::enroll::enroll(
        &args.coordinator,
        &token,
        &name,
        &args.state_dir,
        args.timeout,
    ))?;
    let labels: Vec<String> = identity
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "enrolled as {} ({}) with {}; state in {}\nstart it with: cemwatch-probe run --state-dir {}",
        identity.name,
        if labels.is_empty() { "no labels".to_string() } else { labels.join(", ") },
        args.coordinator,
        args.state_dir.display(),
        args.state_dir.display()
    );
    Ok(0)
}

fn run_agent(args: RunArgs) -> anyhow::Result<u8> {
    // Read while the process has one thread: on Unix the local offset is only available then.
    let local_offset = time::UtcOffset::current_local_offset();
    let agent_log = agent_log_config(&args, local_offset.unwrap_or(time::UtcOffset::UTC))?;
    let trust = trust_store(&args.ca_file)?;
    let client_identity = args.client_cert.load()?;
    let mut config = crate::agent::AgentConfig::new(args.state_dir.clone(), Arc::new(trust));
    config.client_identity = client_identity;
    config.revocation = !args.no_revocation;
    config.coordinators = args.coordinators.clone();
    config.overrides = args.resolve.clone();
    config.address_family = args.addresses.address_family;
    config.max_addresses = args.addresses.max_addresses;
    config.spool_limits.max_reports = args.spool_max_reports.max(1);
    if agent_log.is_some() && local_offset.is_err() {
        tracing::warn!("cannot tell this system's UTC offset: agent log timestamps without one are read as UTC");
    }
    config.agent_log = agent_log;
    let rt = runtime()?;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        crate::agent::run(config, stop_rx).await
    })?;
    Ok(0)
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Check(args) => run_check(args),
        Command::Enroll(args) => run_enroll(args),
        Command::Run(args) => run_agent(args),
        Command::Inspect(args) => run_inspect(args),
    }
}

fn trust_store(ca_files: &[PathBuf]) -> anyhow::Result<TrustStore> {
    let mut trust = TrustStore::platform();
    for path in ca_files {
        trust
            .add_file(path)
            .with_context(|| format!("--ca-file {}", path.display()))?;
    }
    Ok(trust)
}

fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => cemwatch_transport::host::colour(),
    }
}

/// The .pfx password from `--password-env` or `--password-file`; errors name the option, never
/// the password.
fn password(
    password_env: Option<&str>,
    password_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<Password>> {
    if let Some(var) = password_env {
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            anyhow::bail!(
                "--password-env {var:?} is not an environment variable name: give the NAME of a variable that holds the password, such as PFX_PASSWORD"
            );
        }
        // Someone may type the password itself where the variable's name goes: echo the
        // name only when it looks like one (upper case, digits, underscores), as env vars do.
        let conventional = var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        let name = if conventional { var } else { "PFX_PASSWORD" };
        return match std::env::var(var) {
            Ok(value) => Ok(Some(Password::new(value))),
            Err(std::env::VarError::NotPresent) if conventional => anyhow::bail!(
                "--password-env {var}: the environment variable {var} is not set: set it to the .pfx password (for example `read -rs {var} && export {var}`), or give --password-file PATH"
            ),
            Err(std::env::VarError::NotPresent) => anyhow::bail!(
                "--password-env: no environment variable of that name is set; --password-env takes the NAME of a variable that holds the password, not the password: `read -rs {name} && export {name}`, then --password-env {name}"
            ),
            Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!(
                "--password-env: the environment variable is not valid UTF-8: set it to the .pfx password as text"
            ),
        };
    }
    if let Some(path) = password_file {
        let bytes = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "--password-file {}: cannot read it ({e}): give a file that holds the .pfx password",
                path.display()
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "--password-file {}: the file is not UTF-8 text: write the .pfx password into it as text",
                path.display()
            )
        })?;
        return Ok(Some(Password::from_file_content(&text)));
    }
    Ok(None)
}

fn run_inspect(args: InspectArgs) -> anyhow::Result<u8> {
    let password = password(args.password_env.as_deref(), args.password_file.as_deref())?;
    let trust = trust_store(&args.ca_file)?;
    let shown = args.file.display().to_string();
    let bytes = inspect::read_file(&args.file)?;
    let contents = inspect::load(&shown, &bytes, password.as_ref())?;
    drop(password);
    let expectations = Expectations {
        thumbprint: args.expect_thumbprint.clone(),
        required_sans: args.require_san.clone(),
        min_days_left: args.min_days_left,
        legacy_ports: Vec::new(),
    };
    let gateway = args
        .gateway
        .as_deref()
        .map(|g| g.trim().trim_end_matches('.'))
        .filter(|g| !g.is_empty());
    let now = OffsetDateTime::now_utc();
    let mut result = inspect::inspect(&shown, &contents, &trust, gateway, &expectations, now)?;
    if args.revocation && !result.path_der.is_empty() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let checked = runtime.block_on(check::revocation::check(
            &result.path_der,
            now,
            &|_: &str, _: u16| None,
        ));
        result.add_findings(check::triage::revocation_findings(&checked));
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &result).context("cannot write JSON")?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            out.write_all(render::inspect_table(&result, use_color(args.color)).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(result.verdict.exit_code())
}

fn run_check(args: CheckArgs) -> anyhow::Result<u8> {
    let (host, embedded_port) = parse_target(&args.target).map_err(anyhow::Error::msg)?;
    let port = match (embedded_port, args.port) {
        (Some(a), Some(b)) if a != b => anyhow::bail!(
            "the port is given twice and differs ({} in {:?}, {b} in --port): give it once",
            a,
            args.target
        ),
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => DEFAULT_GATEWAY_PORT,
    };
    if args.port == Some(0) {
        anyhow::bail!(
            "--port 0 is not a port: give the port in the CEM Settings policy, such as 8443"
        );
    }
    let legacy_ports = if args.no_legacy_ports {
        Vec::new()
    } else if args.legacy_port.is_empty() {
        DEFAULT_LEGACY_PORTS.to_vec()
    } else {
        args.legacy_port.clone()
    };
    let trust = trust_store(&args.ca_file)?;
    let client_identity = args.client_cert.load()?;
    let spec = CheckSpec {
        target: Target { host, port },
        expectations: Expectations {
            thumbprint: args.expect_thumbprint.clone(),
            required_sans: args.require_san.clone(),
            min_days_left: args.min_days_left,
            legacy_ports,
        },
    };
    let mut ctx = CheckContext::new(Arc::new(trust));
    ctx.overrides = args.resolve.clone();
    ctx.address_family = args.addresses.address_family;
    ctx.max_addresses = args.addresses.max_addresses;
    ctx.connect_timeout = args.connect_timeout;
    ctx.handshake_timeout = args.handshake_timeout;
    ctx.client_identity = client_identity;
    ctx.revocation = !args.no_revocation;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(check::run_check(&spec, &ctx));

    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &result).context("cannot write JSON")?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            out.write_all(render::table(&result, use_color(args.color)).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(result.verdict.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_in_every_form_people_write() {
        let ok = |t: &str| parse_target(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(
            ok("gateway.example.com"),
            ("gateway.example.com".into(), None)
        );
        assert_eq!(
            ok("gateway.example.com:8443"),
            ("gateway.example.com".into(), Some(8443))
        );
        assert_eq!(
            ok("gateway.example.com."),
            ("gateway.example.com".into(), None)
        );
        assert_eq!(
            ok("https://gateway.example.com:8443/"),
            ("gateway.example.com".into(), Some(8443))
        );
        assert_eq!(ok("[::1]:8443"), ("::1".into(), Some(8443)));
        assert_eq!(ok("[::1]"), ("::1".into(), None));
        assert_eq!(ok("2001:db8::1"), ("2001:db8::1".into(), None));
        assert_eq!(ok("127.0.0.1:443"), ("127.0.0.1".into(), Some(443)));
    }

    #[test]
    fn bad_targets_say_what_to_write() {
        for bad in ["", ":8443", "gw:http", "gw:0", "gw:70000", "[::1", "gw x:1"] {
            let e = parse_target(bad).expect_err(bad);
            assert!(!e.is_empty());
        }
        assert!(parse_target("gw:70000").unwrap_err().contains("HOST:PORT"));
    }
}
