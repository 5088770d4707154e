//! The domain model of one check: what is checked (target, expectations) and what was seen
//! at each stage (DNS, TCP, TLS, certificate, legacy ports), with the findings and verdict.
//!
//! Timestamps are RFC 3339 strings and durations are milliseconds (`f64`), so that the JSON a
//! person reads and the frames a coordinator stores are the same thing.

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Severity};
use crate::thumbprint::Thumbprint;

/// Default port of the gateway's agent listener in the guide's environment.
pub const DEFAULT_GATEWAY_PORT: u16 = 8443;
/// Default legacy ports tried when the expected port fails.
pub const DEFAULT_LEGACY_PORTS: [u16; 1] = [443];
/// Default warning threshold for certificate expiry, in days (the guide's 30 days).
pub const DEFAULT_MIN_DAYS_LEFT: u32 = 30;

/// What is checked: a host name (or address literal) and the port agents are told to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The gateway's external FQDN, or an IP address literal.
    pub host: String,
    /// The port in the CEM Settings policy.
    pub port: u16,
}

impl Target {
    /// `host:port`, with brackets around IPv6 literals.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What the gateway must look like: the CEM policy and the certificate requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectations {
    /// Thumbprint registered in the CEM Settings policy (SHA-1, or a SHA-256 fingerprint).
    #[serde(default)]
    pub thumbprint: Option<Thumbprint>,
    /// Names the certificate must cover besides the gateway host (e.g. the SMP FQDN).
    #[serde(default)]
    pub required_sans: Vec<String>,
    /// Fewer days left than this is a warning.
    pub min_days_left: u32,
    /// Ports where an unmoved listener may still be answering.
    #[serde(default)]
    pub legacy_ports: Vec<u16>,
}

impl Default for Expectations {
    fn default() -> Self {
        Self {
            thumbprint: None,
            required_sans: Vec::new(),
            min_days_left: DEFAULT_MIN_DAYS_LEFT,
            legacy_ports: DEFAULT_LEGACY_PORTS.to_vec(),
        }
    }
}

/// Where the addresses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsSource {
    /// The system resolver.
    System,
    /// A `--resolve HOST:PORT:ADDR` override.
    Override,
    /// The host was an address literal.
    Literal,
}

/// The DNS stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsResult {
    /// The name that was resolved.
    pub host: String,
    /// Where the answer came from.
    pub source: DnsSource,
    /// Addresses, in the order they are tried.
    pub addresses: Vec<String>,
    /// Time spent, in milliseconds.
    pub duration_ms: f64,
    /// The resolver's error, when nothing was resolved.
    #[serde(default)]
    pub error: Option<String>,
}

/// The outcome of a TCP connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// The handshake completed.
    Open,
    /// The host answered with a reset: nothing listens.
    Refused,
    /// No answer before the timeout: dropped by a firewall.
    Filtered,
    /// An ICMP error: host or network unreachable, or administratively prohibited.
    Unreachable,
    /// Not attempted (DNS failed).
    NotAttempted,
}

impl TcpState {
    /// The `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::Open => "open",
            TcpState::Refused => "refused",
            TcpState::Filtered => "filtered",
            TcpState::Unreachable => "unreachable",
            TcpState::NotAttempted => "not_attempted",
        }
    }
}

/// The TCP stage on one port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpResult {
    /// Overall state: `open` when any address connected, otherwise the first address's state.
    pub state: TcpState,
    /// The address that connected, or the last one tried.
    #[serde(default)]
    pub address: Option<String>,
    /// Time spent, in milliseconds.
    pub duration_ms: f64,
    /// The operating system's error, when not open.
    #[serde(default)]
    pub error: Option<String>,
}

/// The TLS stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsResult {
    /// The handshake completed.
    pub completed: bool,
    /// Negotiated protocol version, such as `TLSv1.3`.
    #[serde(default)]
    pub version: Option<String>,
    /// Negotiated cipher suite.
    #[serde(default)]
    pub cipher: Option<String>,
    /// The served chain leads to a trusted root (platform store plus configured CA files).
    pub trusted: bool,
    /// Why the chain is not trusted.
    #[serde(default)]
    pub trust_error: Option<String>,
    /// Subjects of the certificates the server sent, leaf first.
    #[serde(default)]
    pub chain: Vec<String>,
    /// Whether the server's handshake signature verified with its certificate's key
    /// (`None` when it could not be evaluated, for example with a key too small for the
    /// verifier).
    #[serde(default)]
    pub handshake_signature_valid: Option<bool>,
    /// Time spent, in milliseconds.
    pub duration_ms: f64,
    /// The handshake error, when not completed.
    #[serde(default)]
    pub error: Option<String>,
    /// The server asked for a client certificate (a TLS CertificateRequest), as a CEM Internet
    /// Gateway does to authenticate its agents.
    #[serde(default)]
    pub client_certificate_requested: bool,
    /// The distinguished names the server sent in its CertificateRequest: the CAs agents'
    /// certificates must chain to (empty: any, or no request).
    #[serde(default)]
    pub acceptable_client_cas: Vec<String>,
    /// The agent certificate the probe presented (subject and SHA-1 thumbprint), when it
    /// presented one.
    #[serde(default)]
    pub client_certificate: Option<String>,
    /// The certificate was read with a legacy ClientHello (TLS 1.0 to 1.2 with the suites
    /// Windows offers) because no modern handshake could be agreed; that handshake stops after
    /// the server's certificate, so `completed` is false and `version` and `cipher` are what
    /// the server chose.
    #[serde(default)]
    pub legacy_hello: bool,
    /// What the OCSP response the server stapled to the handshake says of its certificate:
    /// `good`, `revoked`, `unknown`, or why it was not taken (`invalid: ...`); `None` when
    /// the server stapled none.
    #[serde(default)]
    pub ocsp_stapled: Option<String>,
}

/// What the served (leaf) certificate is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// SHA-1 of the DER, upper-case hex, no separators: the CEM policy's thumbprint.
    pub thumbprint_sha1: String,
    /// SHA-256 of the DER, upper-case hex.
    pub fingerprint_sha256: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// DNS names in the Subject Alternative Name.
    pub san_dns: Vec<String>,
    /// IP addresses in the Subject Alternative Name.
    #[serde(default)]
    pub san_ip: Vec<String>,
    /// Not valid before (RFC 3339).
    pub not_before: String,
    /// Not valid before, as Unix seconds.
    pub not_before_unix: i64,
    /// Not valid after (RFC 3339).
    pub not_after: String,
    /// Not valid after, as Unix seconds.
    pub not_after_unix: i64,
    /// Whole days left until not-after (negative once expired).
    pub days_left: i64,
    /// `RSA`, `EC`, `Ed25519`, `Ed448`, `DSA` or the OID.
    pub key_algorithm: String,
    /// Key size in bits (RSA modulus, EC curve size).
    pub key_bits: u32,
    /// EC curve name, when the key is EC.
    #[serde(default)]
    pub key_curve: Option<String>,
    /// Signature algorithm, such as `sha256WithRSAEncryption`.
    pub signature_algorithm: String,
    /// Hash of the signature algorithm: `sha256`, `sha1`, `md5`, ...
    pub signature_hash: String,
    /// Extended key usages by name (`serverAuth`, `clientAuth`, ...) or OID; empty when the
    /// extension is absent.
    pub eku: Vec<String>,
    /// Whether the EKU extension is present at all.
    pub eku_present: bool,
    /// Whether the certificate is self-signed (issuer equals subject).
    pub self_signed: bool,
}

/// A legacy port tried because the expected port failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyPortResult {
    /// The port.
    pub port: u16,
    /// TCP outcome on that port.
    pub tcp: TcpState,
    /// The port completed a TLS handshake.
    pub tls_completed: bool,
    /// Thumbprint of the certificate served there.
    #[serde(default)]
    pub thumbprint_sha1: Option<String>,
    /// The certificate served there covers the gateway name.
    pub covers_gateway_name: bool,
    /// The certificate served there is the one in the CEM policy (when the policy is known).
    #[serde(default)]
    pub matches_expected_thumbprint: Option<bool>,
    /// Conclusion: this port is the gateway's listener.
    pub gateway_listener: bool,
}

/// Time spent per stage, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    /// DNS resolution.
    pub dns_ms: f64,
    /// TCP connect on the expected port.
    pub tcp_ms: f64,
    /// TLS handshake on the expected port.
    pub tls_ms: f64,
    /// Legacy ports, all together.
    pub legacy_ms: f64,
    /// The whole check.
    pub total_ms: f64,
}

/// The result of one check of one target from one vantage point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What was checked.
    pub target: Target,
    /// What was expected.
    pub expectations: Expectations,
    /// When the check started (RFC 3339).
    pub started_at: String,
    /// The worst severity among the findings.
    pub verdict: Severity,
    /// What is wrong, most explanatory first.
    pub findings: Vec<Finding>,
    /// DNS stage.
    pub dns: DnsResult,
    /// TCP stage on the expected port.
    pub tcp: TcpResult,
    /// TLS stage, when TCP connected.
    #[serde(default)]
    pub tls: Option<TlsResult>,
    /// The served certificate, when the handshake produced one.
    #[serde(default)]
    pub certificate: Option<CertificateInfo>,
    /// Legacy ports tried because the expected port failed.
    #[serde(default)]
    pub legacy_ports: Vec<LegacyPortResult>,
    /// Time spent per stage.
    pub durations: Durations,
    /// What each address of the name answered, in the order DNS gave them (the top-level
    /// `tcp`, `tls`, `certificate` and `legacy_ports` are the first address's, so scripts
    /// written for one address keep working); empty when nothing resolved.
    #[serde(default)]
    pub addresses: Vec<AddressResult>,
    /// Addresses of the name that were not checked, and why (the address family asked for,
    /// or past the cap on addresses checked).
    #[serde(default)]
    pub skipped_addresses: Vec<SkippedAddress>,
}

/// What one address of the gateway's name answered: the stages a single-address check has,
/// with that address's findings and verdict. A gateway name with several A/AAAA records (several
/// Internet Gateway nodes, load balancer members, IPv4 beside IPv6) has one per address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressResult {
    /// The IP address, as text.
    pub address: String,
    /// The worst severity of this address's findings.
    pub verdict: Severity,
    /// What is wrong at this address.
    pub findings: Vec<Finding>,
    /// TCP stage on the expected port.
    pub tcp: TcpResult,
    /// TLS stage, when TCP connected.
    #[serde(default)]
    pub tls: Option<TlsResult>,
    /// The certificate this address serves.
    #[serde(default)]
    pub certificate: Option<CertificateInfo>,
    /// Legacy ports tried at this address because the expected port failed there.
    #[serde(default)]
    pub legacy_ports: Vec<LegacyPortResult>,
    /// Time spent per stage at this address (`dns_ms` is the name's, shared).
    pub durations: Durations,
}

impl AddressResult {
    /// Whether a finding with this code is present at this address.
    pub fn has(&self, code: crate::finding::FindingCode) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }

    /// What makes two addresses answer alike: the findings (their codes, severities and
    /// messages with the address itself taken out), the TCP outcome and the certificate.
    pub fn same_answer(&self, other: &AddressResult) -> bool {
        let keys = |a: &AddressResult| {
            let mut k: Vec<(crate::finding::FindingCode, Severity, String)> = a
                .findings
                .iter()
                .map(|f| (f.code, f.severity, a.without_address(&f.message)))
                .collect();
            k.sort();
            k
        };
        self.tcp.state == other.tcp.state
            && self.certificate.as_ref().map(|c| &c.fingerprint_sha256)
                == other.certificate.as_ref().map(|c| &c.fingerprint_sha256)
            && keys(self) == keys(other)
    }

    /// `text` with this address (as `ADDR`, `ADDR:PORT` or `[ADDR]:PORT`) replaced by `ADDRESS`,
    /// so that messages naming their own address compare equal across addresses.
    pub fn without_address(&self, text: &str) -> String {
        let bracketed = format!("[{}]", self.address);
        text.replace(&bracketed, "ADDRESS")
            .replace(&self.address, "ADDRESS")
    }
}

/// An address of the name that was not checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedAddress {
    /// The IP address, as text.
    pub address: String,
    /// Why it was not checked.
    pub reason: String,
}

/// Which addresses of a name to check: `--address-family any|ipv4|ipv6`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressFamily {
    /// IPv4 and IPv6 addresses.
    #[default]
    Any,
    /// A records only.
    Ipv4,
    /// AAAA records only.
    Ipv6,
}

impl AddressFamily {
    /// Whether `ip` is of this family.
    pub fn admits(self, ip: &IpAddr) -> bool {
        match self {
            AddressFamily::Any => true,
            AddressFamily::Ipv4 => ip.is_ipv4(),
            AddressFamily::Ipv6 => ip.is_ipv6(),
        }
    }

    /// The option's value: `any`, `ipv4` or `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressFamily::Any => "any",
            AddressFamily::Ipv4 => "ipv4",
            AddressFamily::Ipv6 => "ipv6",
        }
    }
}

impl FromStr for AddressFamily {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "any" => Ok(AddressFamily::Any),
            "ipv4" | "4" | "inet" => Ok(AddressFamily::Ipv4),
            "ipv6" | "6" | "inet6" => Ok(AddressFamily::Ipv6),
            _ => Err(format!(
                "{text:?} is not an address family: write any, ipv4 or ipv6"
            )),
        }
    }
}

/// The most addresses of one name a check looks at by default (`--max-addresses`); the rest
/// are named as skipped. Each address costs at most one connect timeout and one handshake
/// timeout, all addresses concurrently, so the cap bounds the sockets a check opens, not its
/// time.
pub const DEFAULT_MAX_ADDRESSES: usize = 8;

impl CheckResult {
    /// Whether every address checked answered alike (see [`AddressResult::same_answer`]):
    /// then one block describes them all.
    pub fn addresses_agree(&self) -> bool {
        self.addresses
            .split_first()
            .is_none_or(|(first, rest)| rest.iter().all(|a| a.same_answer(first)))
    }

    /// Whether a finding with this code is present.
    pub fn has(&self, code: crate::finding::FindingCode) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_brackets_ipv6() {
        let v4 = Target {
            host: "gateway.example.com".into(),
            port: 8443,
        };
        assert_eq!(v4.authority(), "gateway.example.com:8443");
        let v6 = Target {
            host: "::1".into(),
            port: 443,
        };
        assert_eq!(v6.authority(), "[::1]:443");
    }

    #[test]
    fn tls_facts_of_older_probes_still_decode() {
        // A TLS stage as probes wrote it before client-certificate requests were recorded.
        let json = r#"{"completed":true,"version":"TLSv1.3","cipher":"TLS13_AES_128_GCM_SHA256",
            "trusted":true,"chain":["CN=gateway.example.com"],"duration_ms":3.5}"#;
        let tls: TlsResult = serde_json::from_str(json).expect("older TLS facts decode");
        assert!(tls.completed);
        assert!(!tls.client_certificate_requested);
        assert!(tls.acceptable_client_cas.is_empty());
        assert_eq!(tls.client_certificate, None);
        assert!(!tls.legacy_hello);
    }

    #[test]
    fn default_expectations_follow_the_guide() {
        let e = Expectations::default();
        assert_eq!(e.min_days_left, 30);
        assert_eq!(e.legacy_ports, vec![443]);
        assert!(e.thumbprint.is_none());
    }
}

/// A `HOST:PORT:ADDR[,ADDR...]` override, as curl's `--resolve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOverride {
    /// Host name the override applies to (case-insensitive).
    pub host: String,
    /// Port it applies to; `None` for `*` (any port).
    pub port: Option<u16>,
    /// Addresses to use instead of DNS.
    pub addresses: Vec<IpAddr>,
}

impl FromStr for ResolveOverride {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "write it as HOST:PORT:ADDR, for example gateway.example.com:8443:203.0.113.10 (IPv6 as [2001:db8::1])";
        let (host, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("--resolve {text:?} has no port: {usage}"))?;
        let (port, addrs) = rest
            .split_once(':')
            .ok_or_else(|| format!("--resolve {text:?} has no address: {usage}"))?;
        if host.is_empty() {
            return Err(format!("--resolve {text:?} has an empty host: {usage}"));
        }
        let port = if port == "*" {
            None
        } else {
            Some(port.parse::<u16>().map_err(|_| {
                format!("--resolve {text:?}: {port:?} is not a port number: {usage}")
            })?)
        };
        let mut addresses = Vec::new();
        for addr in addrs.split(',') {
            let bare = addr.trim().trim_start_matches('[').trim_end_matches(']');
            let ip = bare.parse::<IpAddr>().map_err(|_| {
                format!("--resolve {text:?}: {addr:?} is not an IP address: {usage}")
            })?;
            addresses.push(ip);
        }
        Ok(Self {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            addresses,
        })
    }
}
