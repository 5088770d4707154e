//! A small HTTP/1.1 client for the coordinator's own JSON API (`status`, `verify`): HTTP or
//! HTTPS to an address the operator gives, GET and POST, no redirects, bounded response size,
//! credentials from a file or the environment (never from the command line, where every user
//! of the machine can read them in the process list). The admin commands need nothing more, and
//! the coordinator stays free of a general HTTP client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use cemwatch_shared::printable::printable;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response accepted.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// The environment variable holding a bearer token for the API.
pub const ENV_TOKEN: &str = "CEMWATCH_API_TOKEN";
/// The environment variable holding the API user's name (with [`ENV_PASSWORD`]).
pub const ENV_USER: &str = "CEMWATCH_API_USER";
/// The environment variable holding the API user's password.
pub const ENV_PASSWORD: &str = "CEMWATCH_API_PASSWORD";

/// How `status` and `verify` reach the API: where, trusting what, as whom.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// `http://HOST:PORT` or `https://HOST:PORT` (a path prefix is allowed).
    pub url: String,
    /// For HTTPS: the CA that issued the listener's certificate (PEM); the platform's roots
    /// otherwise.
    pub ca_file: Option<PathBuf>,
    /// A file holding either `USER:PASSWORD` or a bearer token, on its first line.
    pub credentials_file: Option<PathBuf>,
}

/// Where the API is, and how to speak to it.
#[derive(Clone)]
pub struct Api {
    authority: String,
    host: String,
    prefix: String,
    tls: Option<tokio_rustls::TlsConnector>,
    authorization: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .field("https", &self.tls.is_some())
            .field("credentials", &self.authorization.is_some())
            .finish()
    }
}

/// The `Authorization` header for what a credentials file (or the environment) holds:
/// `USER:PASSWORD` is Basic, anything else a bearer token.
pub fn authorization(secret: &str) -> Result<String> {
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("the credentials are empty: write USER:PASSWORD or a bearer token on the first line");
    }
    if secret.chars().any(|c| c.is_control()) {
        bail!("the credentials hold a control character: write USER:PASSWORD or a bearer token on one line");
    }
    Ok(if secret.contains(':') {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        )
    } else {
        format!("Bearer {secret}")
    })
}

fn read_credentials(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--credentials-file {}: cannot read it (it holds USER:PASSWORD or a bearer token)",
            path.display()
        )
    })?;
    let first = text.lines().next().unwrap_or("");
    authorization(first).with_context(|| format!("--credentials-file {}", path.display()))
}

fn from_env() -> Result<Option<String>> {
    if let Ok(token) = std::env::var(ENV_TOKEN) {
        return authorization(&token).map(Some).context(ENV_TOKEN);
    }
    match (std::env::var(ENV_USER), std::env::var(ENV_PASSWORD)) {
        (Ok(user), Ok(password)) => authorization(&format!("{user}:{password}"))
            .map(Some)
            .context(ENV_USER),
        (Ok(_), Err(_)) => {
            bail!("{ENV_USER} is set but {ENV_PASSWORD} is not: set both, or {ENV_TOKEN}")
        }
        (Err(_), Ok(_)) => {
            bail!("{ENV_PASSWORD} is set but {ENV_USER} is not: set both, or {ENV_TOKEN}")
        }
        _ => Ok(None),
    }
}

fn connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("--ca-file {}: cannot read it", path.display()))?
            {
                let cert = cert.with_context(|| {
                    format!("--ca-file {}: not a PEM certificate", path.display())
                })?;
                roots.add(cert).with_context(|| {
                    format!("--ca-file {}: not a usable CA certificate", path.display())
                })?;
            }
            if roots.is_empty() {
                bail!("--ca-file {}: holds no CERTIFICATE block", path.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!("no trusted root certificates on this machine: give the CA of the coordinator's HTTPS certificate with --ca-file");
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(cemwatch_transport::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Api {
    /// Parses `http://host:port[/prefix]` (or `host:port`), with no credentials.
    pub fn parse(url: &str) -> Result<Self> {
        Self::new(&ApiOptions {
            url: url.to_string(),
            ..ApiOptions::default()
        })
    }

    /// The API as `options` describe it; credentials come from `--credentials-file`, else from
    /// the environment ([`ENV_TOKEN`], or [`ENV_USER`] and [`ENV_PASSWORD`]).
    pub fn new(options: &ApiOptions) -> Result<Self> {
        let url = options.url.as_str();
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            (false, url)
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') {
            bail!("--api {url:?}: write it as http://HOST:PORT or https://HOST:PORT, for example http://127.0.0.1:9464");
        }
        let host = match authority.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            None => authority.to_string(),
        };
        if !https && options.ca_file.is_some() {
            bail!("--ca-file is for HTTPS: write the API address as https://HOST:PORT");
        }
        let tls = if https {
            Some(connector(options.ca_file.as_deref())?)
        } else {
            None
        };
        let authorization = match &options.credentials_file {
            Some(path) => Some(read_credentials(path)?),
            None => from_env()?,
        };
        Ok(Self {
            authority: authority.to_string(),
            host,
            prefix: prefix.to_string(),
            tls,
            authorization,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Option<u64>, Vec<u8>)> {
        let stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| anyhow!("no answer from {} within 10 s", self.authority))?
            .with_context(|| format!("cannot reach the coordinator's API at {}://{} (is `cemwatch serve` running, and is --api its http_listen address?)", self.scheme(), self.authority))?;
        let body = body.unwrap_or_default();
        let credentials = self
            .authorization
            .as_deref()
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\naccept: application/json\r\ncontent-type: application/json\r\n{credentials}content-length: {}\r\n\r\n",
            self.prefix,
            self.authority,
            body.len()
        );
        let raw = match &self.tls {
            None => self.exchange(stream, head.as_bytes(), &body).await?,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|_| anyhow!("{}: not a host name or address", self.host))?;
                let stream = tokio::time::timeout(
                    Duration::from_secs(10),
                    connector.connect(name, stream),
                )
                .await
                .map_err(|_| anyhow!("no TLS handshake with {} within 10 s", self.authority))?
                .with_context(|| {
                    format!(
                        "the TLS handshake with https://{} failed (is it HTTPS, and does --ca-file name the CA of its certificate?)",
                        self.authority
                    )
                })?;
                self.exchange(stream, head.as_bytes(), &body).await?
            }
        };
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow!("not an HTTP answer from {}", self.authority))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP answer from {}", self.authority))?;
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        if status == 401 && self.authorization.is_none() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            bail!("{path}: the coordinator asks for credentials ({message}): give --credentials-file FILE (USER:PASSWORD or a token), or set {ENV_TOKEN}, or {ENV_USER} and {ENV_PASSWORD}");
        }
        let retry_after = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse().ok())?
        });
        Ok((status, retry_after, body))
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        head: &[u8],
        body: &[u8],
    ) -> Result<Vec<u8>> {
        stream.write_all(head).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut raw = Vec::new();
        let mut limited = (&mut stream).take(MAX_RESPONSE as u64 + 1);
        match tokio::time::timeout(Duration::from_secs(30), limited.read_to_end(&mut raw)).await {
            Err(_) => bail!("the coordinator did not finish its answer within 30 s"),
            // A TLS peer that closes without close_notify after a complete answer (connection:
            // close) is not an error for a response whose head has arrived.
            Ok(Err(e)) if raw.windows(4).any(|w| w == b"\r\n\r\n") => {
                tracing::debug!(error = %e, "the API connection ended uncleanly after the answer");
            }
            Ok(r) => {
                r?;
            }
        }
        if raw.len() > MAX_RESPONSE {
            bail!(
                "the answer from {} is larger than {MAX_RESPONSE} bytes",
                self.authority
            );
        }
        Ok(raw)
    }

    /// The answer's JSON, every string in it made printable first: names, labels, log lines
    /// and certificate fields come from probes and gateways, and reach a terminal from here.
    fn decode<T: DeserializeOwned>(status: u16, body: &[u8], what: &str) -> Result<T> {
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
            let message = printable(&message);
            bail!("{what}: the coordinator answered {status}: {message}");
        }
        let mut value: serde_json::Value = serde_json::from_slice(body)
            .with_context(|| format!("{what}: the coordinator's answer is not JSON"))?;
        printable_json(&mut value);
        serde_json::from_value(value)
            .with_context(|| format!("{what}: the coordinator's answer is not the expected JSON"))
    }

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (status, _, body) = self.request("GET", path, None).await?;
        Self::decode(status, &body, path)
    }

    /// POST a JSON document and read the JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        match self.try_post(path, body).await? {
            Posted::Done(t) => Ok(t),
            Posted::TooSoon { message, .. } => {
                bail!("{path}: the coordinator answered 429: {message}")
            }
        }
    }

    /// POST a JSON document; a 429 answer is returned with its `Retry-After`, not as an error.
    pub async fn try_post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Posted<T>> {
        let (status, retry_after, answer) = self
            .request("POST", path, Some(serde_json::to_vec(body)?))
            .await?;
        if status == 429 {
            let message = serde_json::from_slice::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&answer).trim().to_string());
            return Ok(Posted::TooSoon {
                retry_after: Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 600)),
                message,
            });
        }
        Self::decode(status, &answer, path).map(Posted::Done)
    }
}

/// What a POST came to.
#[derive(Debug)]
pub enum Posted<T> {
    /// The answer.
    Done(T),
    /// 429: ask again after `retry_after`.
    TooSoon {
        /// From `Retry-After`.
        retry_after: Duration,
        /// The coordinator's explanation.
        message: String,
    },
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("malformed chunked answer"))?;
        let size = std::str::from_utf8(&body[..line_end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            bail!("truncated chunked answer");
        }
        out.extend_from_slice(&body[..size]);
        body = body[size..].strip_prefix(b"\r\n").unwrap_or(&body[size..]);
    }
}

/// Every string in a JSON document (keys included) made [`printable`].
pub fn printable_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    use std::borrow::Cow;
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = printable(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(printable_json),
        Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|k| matches!(printable(k), Cow::Owned(_)))
                .cloned()
                .collect();
            for k in dirty {
                let k: String = k;
                if let Some(v) = map.remove(&k) {
                    map.insert(printable(&k).into_owned(), v);
                }
            }
            map.values_mut().for_each(printable_json);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_addresses() {
        assert!(Api::parse("http://127.0.0.1:9464").is_ok());
        assert_eq!(Api::parse("http://h:1/base/").expect("ok").prefix, "/base");
        assert!(Api::parse("127.0.0.1:9464").is_ok());
        assert!(Api::new(&ApiOptions {
            url: "http://h:1".into(),
            ca_file: Some("ca.pem".into()),
            ..ApiOptions::default()
        })
        .unwrap_err()
        .to_string()
        .contains("https://"));
        assert!(Api::parse("http://localhost")
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
    }

    #[test]
    fn credentials_are_basic_with_a_colon_and_bearer_without() {
        assert_eq!(
            authorization("ops:s3cret\n").expect("ok"),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("ops:s3cret")
            )
        );
        assert_eq!(authorization("abc123").expect("ok"), "Bearer abc123");
        assert!(authorization("").is_err());
        assert!(authorization("a\u{7}b").is_err());
    }

    #[test]
    fn every_string_of_an_answer_is_made_printable() {
        let mut v = serde_json::json!({
            "name\x1b]0;owned\x07": ["ok", "\x1b[31mred", {"cn": "CN=gw\r\nfake line"}],
            "n": 3
        });
        printable_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"name]0;owned": ["ok", "[31mred", {"cn": "CN=gwfake line"}], "n": 3})
        );
        let clean: Vec<String> =
            Api::decode(200, br#"["\u001b[2Jprobe-1"]"#, "/api/v1/x").expect("decoded");
        assert_eq!(clean, vec!["[2Jprobe-1".to_string()]);
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").expect("ok"),
            b"abcde"
        );
        assert!(dechunk(b"9\r\nabc").is_err());
    }
}
