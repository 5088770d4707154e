//! The coordinator's HTTP API as a test reads it: JSON documents and `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;

use cemwatch_tests::process::http_get;
use serde_json::Value;

/// GET a JSON document: its status and the document (a failure when the body is not JSON).
pub(crate) fn get_json_status(http: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(http, path).expect("GET");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

/// GET a JSON document that must be there (status 200).
pub(crate) fn get_json(http: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(http, path).expect("GET");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// GET a JSON document, `None` unless it answers 200 with JSON (for polling a coordinator that
/// may be starting or gone).
pub(crate) fn try_get_json(http: SocketAddr, path: &str) -> Option<Value> {
    let (status, body) = http_get(http, path).ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Value of one series in a `/metrics` text (`name{labels}` exactly as rendered), 0 when absent.
fn series_value(body: &str, series: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Value of one series from a `/metrics` scrape (`name{labels}` exactly as rendered), 0 when
/// absent; a failure when the scrape fails.
pub(crate) fn metric(http: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics").expect("scrape");
    series_value(&body, series)
}

/// Like [`metric`], but 0 when the scrape fails too (a coordinator that may be gone).
pub(crate) fn metric_or_zero(http: SocketAddr, series: &str) -> f64 {
    let Ok((_, body)) = http_get(http, "/metrics") else {
        return 0.0;
    };
    series_value(&body, series)
}

/// A `/metrics` scrape (status 200): its text, and `series → value`.
pub(crate) fn scrape(http: SocketAddr) -> (String, HashMap<String, f64>) {
    let (status, body) = http_get(http, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let values = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect();
    (body, values)
}

/// Percent-encodes a query parameter.
pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
