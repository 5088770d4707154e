//! Fetching what a certificate points to (its issuer's certificate at the AIA caIssuers URL,
//! CRLs at its distribution points, OCSP responders) over plain HTTP from the probe's vantage,
//! as a Windows agent's chain engine does: bounded in time (one deadline for the whole
//! exchange), in size (the body) and in what it follows (no redirects, no HTTPS: a CA publishes
//! over HTTP so that fetching needs no chain of its own). LDAP and file URLs, which internal
//! CAs often publish, cannot be reached from the internet and are reported as such.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response body taken (a CRL of a large CA can be a few MiB; a certificate is a few
/// KiB).
pub const MAX_BODY: usize = 4 << 20;

/// Longest response head taken.
const MAX_HEAD: usize = 16 * 1024;

/// Why a URL could not be fetched, in words for a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `http://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address (without brackets).
    pub host: String,
    /// Port (80 unless given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses `url`; an error says why the probe cannot fetch it (LDAP, file, HTTPS, malformed).
pub fn parse_url(url: &str) -> Result<HttpUrl, FetchError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("ldap://") || lower.starts_with("ldaps://") {
        return Err(FetchError(
            "an LDAP URL, which agents on the internet cannot reach (it is published for the internal network)".into(),
        ));
    }
    if lower.starts_with("file:") {
        return Err(FetchError(
            "a file URL, which only machines of the internal network can open".into(),
        ));
    }
    if lower.starts_with("https://") {
        return Err(FetchError(
            "an HTTPS URL: CAs publish certificates and CRLs over plain HTTP (fetching them must not need a chain of its own); the probe does not follow it".into(),
        ));
    }
    let Some(rest) = url.get(7..).filter(|_| lower.starts_with("http://")) else {
        return Err(FetchError("not an http:// URL".into()));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') || authority.is_empty() {
        return Err(FetchError("a URL without a plain host".into()));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| FetchError("a malformed IPv6 host".into()))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| FetchError(format!("a bad port {p:?}")))?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| FetchError(format!("a bad port {p:?}")))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(FetchError(
            "a path with spaces or control characters".into(),
        ));
    }
    Ok(HttpUrl {
        host,
        port,
        path: path.to_string(),
    })
}

/// GETs `url` within `timeout` (resolution, connection, request and the whole answer); the body
/// of a 200 answer, at most [`MAX_BODY`] bytes. `resolve` maps a host to addresses first (the
/// check's `--resolve` overrides), else the system resolver is asked.
pub async fn get(
    url: &str,
    timeout: Duration,
    resolve: &(dyn Fn(&str, u16) -> Option<Vec<std::net::SocketAddr>> + Sync),
) -> Result<Vec<u8>, FetchError> {
    request(url, None, timeout, resolve).await
}

/// POSTs `body` of `content_type` to `url` (an OCSP request), as [`get`] otherwise.
pub async fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
    resolve: &(dyn Fn(&str, u16) -> Option<Vec<std::net::SocketAddr>> + Sync),
) -> Result<Vec<u8>, FetchError> {
    request(url, Some((content_type, body)), timeout, resolve).await
}

async fn request(
    url: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
    resolve: &(dyn Fn(&str, u16) -> Option<Vec<std::net::SocketAddr>> + Sync),
) -> Result<Vec<u8>, FetchError> {
    let parsed = parse_url(url)?;
    match tokio::time::timeout(timeout, exchange(&parsed, body, resolve)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError(format!(
            "no complete answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

async fn exchange(
    url: &HttpUrl,
    body: Option<(&str, &[u8])>,
    resolve: &(dyn Fn(&str, u16) -> Option<Vec<std::net::SocketAddr>> + Sync),
) -> Result<Vec<u8>, FetchError> {
    let addrs: Vec<std::net::SocketAddr> = match resolve(&url.host, url.port) {
        Some(a) => a,
        None => tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| FetchError(format!("{} does not resolve: {e}", url.host)))?
            .collect(),
    };
    let mut last = FetchError(format!("{} has no address", url.host));
    let mut stream = None;
    for addr in addrs.iter().take(2) {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = FetchError(format!("cannot connect to {addr}: {e}")),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let mut request = match body {
        None => format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cemwatch-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            url.path
        )
        .into_bytes(),
        Some((content_type, data)) => format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cemwatch-probe\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            url.path,
            data.len()
        )
        .into_bytes(),
    };
    if let Some((_, data)) = body {
        request.extend_from_slice(data);
    }
    stream
        .write_all(&request)
        .await
        .map_err(|e| FetchError(format!("cannot send the request: {e}")))?;
    // Read until the server closes, or until the answer is complete by its own framing:
    // some servers (openssl ocsp) keep the connection open after answering.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| FetchError(format!("the answer broke off: {e}")))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_HEAD + MAX_BODY {
            return Err(FetchError(format!(
                "the answer is larger than {} MiB",
                MAX_BODY >> 20
            )));
        }
        if complete(&raw) {
            break;
        }
    }
    parse_response(&raw)
}

/// Whether `raw` holds a whole answer by its framing (Content-Length, or the last chunk).
fn complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

/// The body of a complete HTTP/1.x answer in `raw`; refuses anything but 200, and bodies over
/// [`MAX_BODY`] or cut short.
pub fn parse_response(raw: &[u8]) -> Result<Vec<u8>, FetchError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .filter(|&i| i <= MAX_HEAD)
        .ok_or_else(|| FetchError("not an HTTP answer (no complete head)".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FetchError("not an HTTP answer".into()))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if status != 200 {
        let location = header("location")
            .map(|l| format!(" (to {l}, not followed)"))
            .unwrap_or_default();
        return Err(FetchError(format!(
            "the server answered {}{location}",
            status_line.trim()
        )));
    }
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    if body.len() > MAX_BODY {
        return Err(FetchError(format!(
            "the answer is larger than {} MiB",
            MAX_BODY >> 20
        )));
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() < len {
            return Err(FetchError(format!(
                "the answer was cut short ({} of {len} bytes)",
                body.len()
            )));
        }
        return Ok(body[..len].to_vec());
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| FetchError("a chunked answer cut short".into()))?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| FetchError("a malformed chunked answer".into()))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size || out.len() + size > MAX_BODY {
            return Err(FetchError("a chunked answer cut short or too large".into()));
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_the_unreachable_kinds_named() {
        assert_eq!(
            parse_url("http://pki.example.com/int.crt").expect("url"),
            HttpUrl {
                host: "pki.example.com".into(),
                port: 80,
                path: "/int.crt".into()
            }
        );
        assert_eq!(parse_url("http://[::1]:8080/x").expect("url").port, 8080);
        assert_eq!(parse_url("http://10.0.0.1:81").expect("url").path, "/");
        for (url, says) in [
            ("ldap:///CN=Issuing,CN=AIA?cACertificate", "LDAP"),
            ("file://ca01/CertEnroll/ca.crl", "file URL"),
            ("https://pki.example.com/ca.crl", "HTTPS"),
            ("ftp://x/y", "not an http"),
            ("http://user@host/x", "plain host"),
        ] {
            let e = parse_url(url).expect_err(url);
            assert!(e.0.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn an_answer_is_complete_by_its_length_or_its_last_chunk() {
        assert!(!complete(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nab"));
        assert!(complete(
            b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nabcd"
        ));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"
        ));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        ));
        assert!(!complete(b"HTTP/1.0 200 OK\r\n\r\nuntil the server closes"));
    }

    #[test]
    fn answers_are_taken_only_when_complete_and_200() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").expect("ok"),
            b"abc"
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .expect("chunked"),
            b"abcde"
        );
        let e = parse_response(b"HTTP/1.1 301 Moved\r\nLocation: http://x/y\r\n\r\n")
            .expect_err("redirect");
        assert!(e.0.contains("301") && e.0.contains("not followed"), "{e}");
        let e =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").expect_err("short");
        assert!(e.0.contains("cut short"), "{e}");
        assert!(parse_response(b"garbage").is_err());
    }
}
