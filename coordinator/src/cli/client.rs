//! A small HTTP/1.1 client for the coordinator's own JSON API (`status`, `verify`): plain HTTP
//! to an address the operator gives, GET and POST, no redirects, bounded response size. The
//! admin commands need nothing more, and the coordinator stays free of a general HTTP client.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response accepted.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Where the API is: `http://HOST:PORT` (a path prefix is allowed).
#[derive(Debug, Clone)]
pub struct Api {
    authority: String,
    prefix: String,
}

impl Api {
    /// Parses `http://host:port[/prefix]` (or `host:port`).
    pub fn parse(url: &str) -> Result<Self> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            bail!("{url}: the coordinator's API is plain HTTP on a local or internal address; use http://");
        } else {
            url
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') {
            bail!("--api {url:?}: write it as http://HOST:PORT, for example http://127.0.0.1:9464");
        }
        Ok(Self {
            authority: authority.to_string(),
            prefix: prefix.to_string(),
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&self.authority))
            .await
            .map_err(|_| anyhow!("no answer from {} within 10 s", self.authority))?
            .with_context(|| format!("cannot reach the coordinator's API at http://{} (is `cemwatch serve` running, and is --api its http_listen address?)", self.authority))?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\naccept: application/json\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.prefix,
            self.authority,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut raw = Vec::new();
        let mut limited = (&mut stream).take(MAX_RESPONSE as u64 + 1);
        tokio::time::timeout(Duration::from_secs(30), limited.read_to_end(&mut raw))
            .await
            .map_err(|_| anyhow!("the coordinator did not finish its answer within 30 s"))??;
        if raw.len() > MAX_RESPONSE {
            bail!(
                "the answer from {} is larger than {MAX_RESPONSE} bytes",
                self.authority
            );
        }
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
        Ok((status, body))
    }

    fn decode<T: DeserializeOwned>(status: u16, body: &[u8], what: &str) -> Result<T> {
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
            bail!("{what}: the coordinator answered {status}: {message}");
        }
        serde_json::from_slice(body)
            .with_context(|| format!("{what}: the coordinator's answer is not the expected JSON"))
    }

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (status, body) = self.request("GET", path, None).await?;
        Self::decode(status, &body, path)
    }

    /// POST a JSON document and read the JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let (status, answer) = self
            .request("POST", path, Some(serde_json::to_vec(body)?))
            .await?;
        Self::decode(status, &answer, path)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_addresses() {
        assert!(Api::parse("http://127.0.0.1:9464").is_ok());
        assert_eq!(Api::parse("http://h:1/base/").expect("ok").prefix, "/base");
        assert!(Api::parse("127.0.0.1:9464").is_ok());
        assert!(Api::parse("https://h:1")
            .unwrap_err()
            .to_string()
            .contains("http://"));
        assert!(Api::parse("http://localhost")
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
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
