//! Name resolution with the system resolver, and curl-style `--resolve HOST:PORT:ADDR`
//! overrides for testing a gateway before (or regardless of) its public DNS.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cemwatch_shared::{DnsResult, DnsSource};

pub use cemwatch_shared::model::ResolveOverride;

/// The addresses of `host` for `port` without asking a resolver: an address literal or an
/// override; `None` when the system resolver must answer.
pub fn without_resolver(
    host: &str,
    port: u16,
    overrides: &[ResolveOverride],
) -> Option<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let wanted = host.trim_end_matches('.').to_ascii_lowercase();
    overrides
        .iter()
        .find(|o| o.host == wanted && o.port.is_none_or(|p| p == port))
        .map(|o| {
            o.addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        })
}

/// Resolves `host` for `port`: address literal, override, or system resolver.
pub async fn resolve(
    host: &str,
    port: u16,
    overrides: &[ResolveOverride],
    timeout: Duration,
) -> (DnsResult, Vec<SocketAddr>) {
    let start = Instant::now();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return finish(
            host,
            DnsSource::Literal,
            vec![SocketAddr::new(ip, port)],
            None,
            start,
        );
    }
    let wanted = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(o) = overrides
        .iter()
        .find(|o| o.host == wanted && o.port.is_none_or(|p| p == port))
    {
        let addrs = o
            .addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
        return finish(host, DnsSource::Override, addrs, None, start);
    }
    let lookup = tokio::net::lookup_host((wanted.as_str(), port));
    let (addrs, error) = match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(iter)) => {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for a in iter {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            let error = addrs
                .is_empty()
                .then(|| "the resolver returned no address".to_string());
            (addrs, error)
        }
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(_) => (
            Vec::new(),
            Some(format!(
                "no answer from the resolver within {} ms",
                timeout.as_millis()
            )),
        ),
    };
    finish(host, DnsSource::System, addrs, error, start)
}

fn finish(
    host: &str,
    source: DnsSource,
    addrs: Vec<SocketAddr>,
    error: Option<String>,
    start: Instant,
) -> (DnsResult, Vec<SocketAddr>) {
    let result = DnsResult {
        host: host.to_string(),
        source,
        addresses: addrs.iter().map(|a| a.ip().to_string()).collect(),
        duration_ms: start.elapsed().as_secs_f64() * 1000.0,
        error,
    };
    (result, addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_form() {
        let o: ResolveOverride = "Gateway.Example.com:8443:127.0.0.1".parse().expect("valid");
        assert_eq!(o.host, "gateway.example.com");
        assert_eq!(o.port, Some(8443));
        assert_eq!(
            o.addresses,
            vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        let v6: ResolveOverride = "gw:*:[::1],127.0.0.2".parse().expect("valid");
        assert_eq!(v6.port, None);
        assert_eq!(v6.addresses.len(), 2);
    }

    #[test]
    fn explains_bad_overrides() {
        for bad in [
            "gw",
            "gw:8443",
            "gw:port:127.0.0.1",
            "gw:8443:not-an-ip",
            ":1:127.0.0.1",
        ] {
            let err = bad.parse::<ResolveOverride>().expect_err(bad);
            assert!(err.contains("HOST:PORT:ADDR"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn overrides_win_over_dns_and_match_the_port() {
        let o: ResolveOverride = "gateway.invalid:8443:127.0.0.9".parse().expect("valid");
        let (r, addrs) = resolve(
            "gateway.invalid",
            8443,
            std::slice::from_ref(&o),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(r.source, DnsSource::Override);
        assert_eq!(
            addrs,
            vec!["127.0.0.9:8443".parse::<SocketAddr>().expect("addr")]
        );
        // Another port is not overridden, and .invalid never resolves (RFC 2606).
        let (r, addrs) = resolve("gateway.invalid", 443, &[o], Duration::from_secs(5)).await;
        assert_eq!(r.source, DnsSource::System);
        assert!(addrs.is_empty());
        assert!(r.error.is_some());
    }

    #[tokio::test]
    async fn literals_need_no_resolver() {
        let (r, addrs) = resolve("[::1]", 8443, &[], Duration::from_secs(1)).await;
        assert_eq!(r.source, DnsSource::Literal);
        assert_eq!(addrs.len(), 1);
    }
}
