//! The `[http]` table (who may use the HTTP surface, over what, within which limits) and the
//! `[rounds]` table (how often an operator may make the fleet check at once).
//!
//! ```toml
//! [http]
//! loopback_role = "operate"        # what a client on loopback may do without credentials
//! tls_cert = "http.crt"            # HTTPS for the listener (with tls_key)
//! tls_key = "http.key"
//! client_ca = "operators-ca.crt"   # optional: require a client certificate issued by it
//! client_cert_role = "read"        # what a verified client certificate alone may do
//!
//! [[http.user]]
//! name = "prometheus"
//! role = "metrics"
//! token_sha256 = "…"               # `cemwatch web token` prints a token and this line
//!
//! [[http.user]]
//! name = "prometheus-compose"
//! role = "metrics"
//! token_file = "/run/secrets/prometheus-token"  # or: the token in a file shared with the client
//!
//! [[http.user]]
//! name = "ops"
//! role = "operate"
//! password_bcrypt = "$2b$12$…"     # `cemwatch web hash-password` reads a password, prints this
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{At, HumanDuration};
use crate::model::access::Role;

/// The `[http]` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// What a client on a loopback address may do without credentials (`None`: nothing but
    /// `/live` and `/ready`). Behind a reverse proxy on the same host every request comes from
    /// loopback: set `loopback_role = "none"` there.
    pub loopback_role: Option<Role>,
    /// HTTPS for the listener.
    pub tls: Option<HttpTls>,
    /// The users, each with a role and a hashed password and/or a hashed bearer token.
    pub users: Vec<HttpUser>,
    /// A connection that has not sent a request's whole header within this is closed
    /// (slowloris), and so is a keep-alive connection idle for this long.
    pub header_read_timeout: Duration,
    /// A request not answered within this gets 503.
    pub request_timeout: Duration,
    /// Connections open at once; beyond it new ones are closed at accept.
    pub max_connections: usize,
    /// Requests being answered at once; beyond it a request gets 503 at once.
    pub max_concurrent_requests: usize,
}

/// HTTPS for the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTls {
    /// PEM certificate chain, the listener's certificate first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// When set, every client must present a certificate issued by this CA (PEM).
    pub client_ca: Option<PathBuf>,
    /// What a verified client certificate alone may do (credentials can grant more).
    pub client_cert_role: Option<Role>,
}

/// A user of the HTTP surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUser {
    /// The user name (Basic authentication).
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// bcrypt hash of the password (`$2b$…`).
    pub password_bcrypt: Option<String>,
    /// SHA-256 of the bearer token.
    pub token_sha256: Option<[u8; 32]>,
}

/// Defaults, and the arithmetic behind them, in the README's Security section.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`HttpConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// See [`HttpConfig::max_connections`]: an idle HTTP/1.1 connection costs about 20 KiB here
/// (hyper's read and write buffers, the TLS state when HTTPS), so 256 of them are about 5 MiB.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 256;
/// See [`HttpConfig::max_concurrent_requests`].
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 32;

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            loopback_role: Some(Role::Operate),
            tls: None,
            users: Vec::new(),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

/// The `[http]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    loopback_role: Option<Spanned<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    client_cert_role: Option<Spanned<String>>,
    header_read_timeout: Option<Spanned<HumanDuration>>,
    request_timeout: Option<Spanned<HumanDuration>>,
    max_connections: Option<Spanned<usize>>,
    max_concurrent_requests: Option<Spanned<usize>>,
    #[serde(default, rename = "user")]
    users: Vec<RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    role: Spanned<String>,
    password_bcrypt: Option<Spanned<String>>,
    token_sha256: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
}

/// A bearer token kept in a file (shared with the client that sends it, e.g. Prometheus'
/// `credentials_file` or a Kubernetes Secret): read once per configuration load, only its
/// SHA-256 kept. Between 16 and 4096 visible ASCII characters, surrounding white space ignored.
pub fn read_token_file(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {}: {e}; create it with `cemwatch web token --name NAME --role ROLE > {}` (mode 0600, readable by the coordinator and by the client that sends it)",
            path.display(),
            path.display()
        )
    })?;
    let token = std::str::from_utf8(&text)
        .map(str::trim)
        .map_err(|_| format!("{}: not text; a token is visible ASCII", path.display()))?;
    if token.len() < 16 || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{}: a token is 16 to 4096 visible ASCII characters on one line (this file holds {} bytes); make one with `cemwatch web token`",
            path.display(),
            token.len()
        ));
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    Ok(out)
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_relative() {
        base.join(p)
    } else {
        p
    }
}

/// Whether `hash` is a bcrypt hash this coordinator can check: `$2a$`, `$2b$` or `$2y$`, a
/// two-digit cost from 4 to 31, and 53 characters of salt and hash.
pub fn is_bcrypt_hash(hash: &str) -> bool {
    let b = hash.as_bytes();
    hash.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && b[6] == b'$'
        && hash[4..6]
            .parse::<u32>()
            .is_ok_and(|c| (4..=31).contains(&c))
        && hash[7..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/')
}

impl RawHttp {
    /// The table validated; relative paths are taken from `base`.
    pub(crate) fn validate(
        self,
        base: &Path,
        at: At<'_>,
        problems: &mut Vec<String>,
    ) -> HttpConfig {
        let mut out = HttpConfig::default();
        let role_of = |key: &str, v: &Spanned<String>, problems: &mut Vec<String>| {
            Role::parse_optional(v.get_ref()).unwrap_or_else(|e| {
                problems.push(format!("{}: http.{key}: {e}", at(v.span())));
                None
            })
        };
        if let Some(v) = &self.loopback_role {
            out.loopback_role = role_of("loopback_role", v, problems);
        }
        let client_cert_role = self
            .client_cert_role
            .as_ref()
            .and_then(|v| role_of("client_cert_role", v, problems));
        match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => {
                out.tls = Some(HttpTls {
                    cert: resolve(base, cert),
                    key: resolve(base, key),
                    client_ca: self.client_ca.map(|p| resolve(base, p)),
                    client_cert_role,
                });
            }
            (None, None) => {
                if self.client_ca.is_some() || self.client_cert_role.is_some() {
                    problems.push(format!(
                        "{}: http.client_ca needs HTTPS: set http.tls_cert and http.tls_key too",
                        at(0..0)
                    ));
                }
            }
            _ => problems.push(format!(
                "{}: http.tls_cert and http.tls_key go together: set both for HTTPS, or neither",
                at(0..0)
            )),
        }
        for (key, value, slot) in [
            (
                "header_read_timeout",
                &self.header_read_timeout,
                &mut out.header_read_timeout,
            ),
            (
                "request_timeout",
                &self.request_timeout,
                &mut out.request_timeout,
            ),
        ] {
            if let Some(v) = value {
                let d = v.get_ref().0;
                if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
                    problems.push(format!("{}: http.{key}: from 100ms to 10m", at(v.span())));
                } else {
                    *slot = d;
                }
            }
        }
        for (key, value, slot, max) in [
            (
                "max_connections",
                &self.max_connections,
                &mut out.max_connections,
                65_536,
            ),
            (
                "max_concurrent_requests",
                &self.max_concurrent_requests,
                &mut out.max_concurrent_requests,
                4_096,
            ),
        ] {
            if let Some(v) = value {
                let n = *v.get_ref();
                if n == 0 || n > max {
                    problems.push(format!("{}: http.{key}: from 1 to {max}", at(v.span())));
                } else {
                    *slot = n;
                }
            }
        }
        let mut seen = HashSet::new();
        for (i, u) in self.users.into_iter().enumerate() {
            let key = format!("http.user[{i}]");
            let name = u.name.get_ref().clone();
            if name.is_empty()
                || name.len() > 64
                || name.contains(':')
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                problems.push(format!(
                    "{}: {key}.name: {name:?}: 1 to 64 characters, no colon, space or control character",
                    at(u.name.span())
                ));
            } else if !seen.insert(name.clone()) {
                problems.push(format!(
                    "{}: {key}.name: duplicate user {name:?}",
                    at(u.name.span())
                ));
            }
            let role = match Role::parse_optional(u.role.get_ref()) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    problems.push(format!(
                        "{}: {key}.role: a user needs a role (metrics, read or operate); remove the user instead",
                        at(u.role.span())
                    ));
                    Role::Metrics
                }
                Err(e) => {
                    problems.push(format!("{}: {key}.role: {e}", at(u.role.span())));
                    Role::Metrics
                }
            };
            if let Some(h) = &u.password_bcrypt {
                if !is_bcrypt_hash(h.get_ref()) {
                    problems.push(format!(
                        "{}: {key}.password_bcrypt: not a bcrypt hash ($2b$ followed by a cost and 53 characters); make one with `cemwatch web hash-password`",
                        at(h.span())
                    ));
                }
            }
            let token_sha256 = u.token_sha256.as_ref().and_then(|t| {
                let mut out = [0u8; 32];
                match hex::decode_to_slice(t.get_ref().trim(), &mut out) {
                    Ok(()) => Some(out),
                    Err(_) => {
                        problems.push(format!(
                            "{}: {key}.token_sha256: 64 hexadecimal digits (the SHA-256 of the token); make a token with `cemwatch web token`",
                            at(t.span())
                        ));
                        None
                    }
                }
            });
            let token_sha256 = match (&u.token_file, token_sha256) {
                (Some(f), None) if u.token_sha256.is_none() => {
                    match read_token_file(&resolve(base, f.get_ref().clone())) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            problems.push(format!("{}: {key}.token_file: {e}", at(f.span())));
                            None
                        }
                    }
                }
                (Some(f), _) => {
                    problems.push(format!(
                        "{}: {key}: token_sha256 or token_file, not both",
                        at(f.span())
                    ));
                    None
                }
                (None, t) => t,
            };
            if u.password_bcrypt.is_none() && u.token_sha256.is_none() && u.token_file.is_none() {
                problems.push(format!(
                    "{}: {key}: give password_bcrypt, token_sha256 or token_file (a password and a token may go together)",
                    at(u.name.span())
                ));
            }
            out.users.push(HttpUser {
                name,
                role,
                password_bcrypt: u.password_bcrypt.map(Spanned::into_inner),
                token_sha256,
            });
        }
        out
    }
}

/// The `[rounds]` table, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundsConfig {
    /// The least time between the starts of two rounds of one check (a second one sooner gets
    /// 429 with `Retry-After`). Each round makes every eligible probe check the gateway at once.
    pub min_interval: Duration,
    /// Rounds kept in memory (the oldest finished one goes first; a running one is never
    /// evicted).
    pub keep: usize,
}

/// Default of [`RoundsConfig::min_interval`].
pub const DEFAULT_ROUND_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Default of [`RoundsConfig::keep`]: a round keeps about 24 bytes per asked probe plus its
/// answers' names, so 100 rounds of 100,000 probes are about 240 MB at worst; 20 is 48 MB.
pub const DEFAULT_ROUNDS_KEPT: usize = 20;

impl Default for RoundsConfig {
    fn default() -> Self {
        Self {
            min_interval: DEFAULT_ROUND_MIN_INTERVAL,
            keep: DEFAULT_ROUNDS_KEPT,
        }
    }
}

/// The `[rounds]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRounds {
    min_interval: Option<Spanned<HumanDuration>>,
    keep: Option<Spanned<usize>>,
}

impl RawRounds {
    /// The table validated.
    pub(crate) fn validate(self, at: At<'_>, problems: &mut Vec<String>) -> RoundsConfig {
        let mut out = RoundsConfig::default();
        if let Some(v) = self.min_interval {
            out.min_interval = v.get_ref().0;
        }
        if let Some(v) = self.keep {
            if (1..=1000).contains(v.get_ref()) {
                out.keep = *v.get_ref();
            } else {
                problems.push(format!("{}: rounds.keep: from 1 to 1000", at(v.span())));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_are_recognised() {
        assert!(is_bcrypt_hash(
            "$2b$12$KIXQJ1n3mH8G0xQz3z8mUeVwK3yq7m2yq3pN0rJ5cG2uQm1fYb8Gq"
        ));
        assert!(!is_bcrypt_hash("$2b$12$short"));
        assert!(!is_bcrypt_hash(
            "$1$12$KIXQJ1n3mH8G0xQz3z8mUeVwK3yq7m2yq3pN0rJ5cG2uQm1fYb8Gqx"
        ));
        assert!(!is_bcrypt_hash(
            "$2b$99$KIXQJ1n3mH8G0xQz3z8mUeVwK3yq7m2yq3pN0rJ5cG2uQm1fYb8Gq"
        ));
    }
}
