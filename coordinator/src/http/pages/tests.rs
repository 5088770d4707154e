//! The pages driven in-process (`oneshot`) over a real store: every page, its errors, what it
//! shows a reader and an operator, the round form, the demo's switch, and that nothing on a
//! page points anywhere but this origin.

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::http::{header, HeaderMap, StatusCode};

use cemwatch_shared::{FindingCode, Severity, TcpState};

use super::*;
use crate::analysis::fleet::Fleet;
use crate::http::tests::{fixture_fleet, Fixture};
use crate::model::latest::Latest;

const SERVED: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn latest(verdict: Severity, codes: &[FindingCode]) -> Latest {
    Latest {
        seq: 1,
        round: None,
        produced_at_ms: now_ms(),
        verdict,
        codes: codes.to_vec(),
        thumbprint: Some(SERVED.into()),
        not_after: Some(now_ms() / 1000 + 40 * 86_400),
        tcp_ms: 1.5,
        tls_ms: 4.0,
        port: 8443,
        tcp_state: TcpState::Open,
        tls_completed: true,
        legacy: vec![],
        nodes: vec![],
    }
}

/// Six probes at three sites; every one sees a certificate that is not the policy's.
fn failing(fleet: &mut Fleet) {
    fleet.probes.clear();
    for (i, site) in ["lyon", "lyon", "paris", "paris", "oslo", "oslo"]
        .iter()
        .enumerate()
    {
        let v = fleet.probes.entry(format!("{site}-{i}")).or_default();
        std::sync::Arc::make_mut(&mut v.labels).insert("site".into(), site.to_string());
        std::sync::Arc::make_mut(&mut v.labels).insert("vantage".into(), "internet".into());
        v.connected = true;
        v.last_seen_ms = now_ms();
        v.agent_version = Some("0.1.0".into());
        v.latest.insert(
            "gateway".into(),
            latest(Severity::Fail, &[FindingCode::ThumbprintMismatch]),
        );
    }
}

const POLICY: &str = "[[check]]\nname = \"other\"\nhost = \"other.example.com\"\nport = 443\nexpect_thumbprint = \"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\"\n";

async fn send(
    fx: &Fixture,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let from = SocketAddr::from(([127, 0, 0, 1], 40000));
    crate::http::tests::exchange(fx, from, method, uri, headers, body).await
}

async fn page(fx: &Fixture, uri: &str) -> (StatusCode, HeaderMap, String) {
    send(fx, "GET", uri, &[("host", "127.0.0.1:9464")], "").await
}

/// Every `href`, `src` and `action` of a page.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\"", "action=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// What every page must be: HTML in English with a heading, sent with a same-origin policy, and
/// linking nowhere but this origin.
fn assert_page(status: StatusCode, headers: &HeaderMap, body: &str, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    let csp = headers
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        body.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{body}"
    );
    assert!(body.contains("<h1>"), "{body}");
    for link in links(body) {
        assert!(
            link.starts_with('/') && !link.starts_with("//"),
            "a page links only to this origin: {link}"
        );
    }
}

#[tokio::test]
async fn the_fleet_page_shows_each_check_s_diagnosis_remedy_and_counts() {
    let fx = fixture_fleet(POLICY, &["p1"], failing);
    let (status, headers, body) = page(&fx, "/").await;
    assert_page(status, &headers, &body, StatusCode::OK);
    let summary = crate::http::handlers::summary(&fx.state.hub);
    let gateway = summary
        .checks
        .iter()
        .find(|c| c.check == "gateway")
        .expect("gateway");
    assert_eq!(gateway.verdicts.fail, 6);
    assert!(
        body.contains(&format!("data-diagnosis=\"{}\"", gateway.diagnosis)),
        "{body}"
    );
    assert!(
        body.contains(&maud::html! { (gateway.detail.remedy) }.into_string()),
        "the remedy in the guide's words: {body}"
    );
    assert!(body.contains("data-verdicts=\"0 0 6\""), "{body}");
    assert!(body.contains("data-probes=\"6 0 0\""), "{body}");
    assert!(
        body.contains("lyon 2 fail/0 warn of 2"),
        "worst sites: {body}"
    );
    assert!(body.contains("policy 8443 · listener 8443"), "{body}");
    assert!(body.contains("<svg class=\"timeline\""), "{body}");
    assert!(body.contains("now 0 ok, 0 warn, 6 fail"), "{body}");
    assert!(body.contains("FAIL"), "the verdict is a word too: {body}");
    // The check without results says so.
    assert!(body.contains("data-diagnosis=\"no_data\""), "{body}");
}

#[tokio::test]
async fn probe_supplied_text_is_escaped_and_stripped_of_control_characters() {
    let fx = fixture_fleet("", &["p1"], |fleet| {
        failing(fleet);
        let v = fleet.probes.get_mut("lyon-0").expect("probe");
        v.agent_version = Some("<script>alert(1)</script>\u{7}\u{1b}[31m".into());
    });
    for uri in ["/probes", "/probes/lyon-0"] {
        let (status, headers, body) = page(&fx, uri).await;
        assert_page(status, &headers, &body, StatusCode::OK);
        assert!(!body.contains("<script>alert"), "{uri}: {body}");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;[31m"),
            "{uri}: {body}"
        );
        assert!(!body.contains('\u{7}') && !body.contains('\u{1b}'), "{uri}");
    }
}

/// Four probes seeing two nodes of the name; the second still serves another certificate.
fn two_nodes(fleet: &mut Fleet) {
    use crate::model::latest::NodeObservation;
    fleet.probes.clear();
    for i in 0..4 {
        let v = fleet.probes.entry(format!("p{i}")).or_default();
        std::sync::Arc::make_mut(&mut v.labels).insert("site".into(), "lyon".into());
        v.connected = true;
        v.last_seen_ms = now_ms();
        let mut l = latest(Severity::Fail, &[FindingCode::ThumbprintMismatch]);
        let node = |address: &str, thumbprint: &str, codes: &[FindingCode]| NodeObservation {
            address: address.into(),
            verdict: if codes.is_empty() {
                Severity::Ok
            } else {
                Severity::Fail
            },
            codes: codes.to_vec(),
            thumbprint: Some(thumbprint.into()),
            not_after: Some(now_ms() / 1000 + 40 * 86_400),
            issuer: Some("CN=Root".into()),
            tcp_state: TcpState::Open,
            tls_completed: true,
        };
        l.nodes = vec![
            node("192.0.2.1", SERVED, &[]),
            node(
                "192.0.2.2",
                "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
                &[FindingCode::ThumbprintMismatch],
            ),
        ];
        v.latest.insert("gateway".into(), l);
    }
}

#[tokio::test]
async fn the_check_page_has_a_row_per_gateway_node_when_the_name_has_several() {
    let fx = fixture_fleet(POLICY, &["p1"], two_nodes);
    let (status, headers, body) = page(&fx, "/checks/gateway").await;
    assert_page(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("Per gateway node"), "{body}");
    let row = body
        .split("<tr>")
        .find(|r| r.contains("<th scope=\"row\">192.0.2.2</th>"))
        .unwrap_or_else(|| panic!("no row for 192.0.2.2: {body}"));
    assert!(
        row.contains("CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"),
        "{row}"
    );
    assert!(row.contains("thumbprint_mismatch (4)"), "{row}");
    assert!(body.contains("node_problem"), "{body}");
    // A name with one address: no node table.
    let fx = fixture_fleet(POLICY, &["p1"], failing);
    let (_, _, body) = page(&fx, "/checks/gateway").await;
    assert!(!body.contains("Per gateway node"), "{body}");
}

#[tokio::test]
async fn the_check_page_filters_and_sorts_its_probes_and_refuses_bad_filters() {
    let fx = fixture_fleet("", &["p1"], |fleet| {
        failing(fleet);
        let v = fleet.probes.get_mut("oslo-4").expect("probe");
        v.latest.insert("gateway".into(), latest(Severity::Ok, &[]));
    });
    let (status, headers, body) = page(&fx, "/checks/gateway").await;
    assert_page(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("data-shown=\"6\""), "{body}");
    assert!(body.contains("<svg class=\"grid\""), "site grid: {body}");
    assert!(body.contains("oslo: 1 ok, 0 warn, 1 fail"), "{body}");
    assert!(
        body.contains("seen by 6 of 6 probes"),
        "certificate share: {body}"
    );
    assert!(
        body.contains("<label for=\"f-verdict\">"),
        "labelled filters: {body}"
    );

    let (_, _, body) = page(&fx, "/checks/gateway?verdict=fail&site=oslo").await;
    assert!(body.contains("data-shown=\"1\""), "{body}");
    assert!(
        body.contains("/probes/oslo-5") && !body.contains("/probes/oslo-4\""),
        "{body}"
    );
    assert!(
        body.contains("aria-sort=\"ascending\"><a href=\"/checks/gateway?sort=probe&amp;verdict=fail&amp;site=oslo\""),
        "{body}"
    );
    let (_, _, body) = page(&fx, "/checks/gateway?code=thumbprint_mismatch&sort=verdict").await;
    assert!(body.contains("aria-sort=\"descending\"><a href=\"/checks/gateway?sort=verdict&amp;code=thumbprint_mismatch\""), "{body}");
    assert!(body.contains("data-shown=\"5\""), "{body}");
    let (_, _, body) = page(&fx, "/checks/gateway?verdict=&code=&site=&sort=").await;
    assert!(
        body.contains("data-shown=\"6\""),
        "empty fields filter nothing: {body}"
    );

    for (uri, says) in [
        ("/checks/gateway?verdict=red", "use ok, warn or fail"),
        ("/checks/gateway?code=nope", "is not a finding code"),
        ("/checks/gateway?sort=colour", "use one of probe, site"),
        ("/checks/gateway?colour=red", "unknown field"),
    ] {
        let (status, headers, body) = page(&fx, uri).await;
        assert_page(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(body.contains(says), "{uri}: {body}");
        assert!(
            body.contains("<a href=\"/\">Back to the fleet</a>"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn unknown_checks_probes_rounds_and_pages_are_404_pages_that_link_back() {
    let fx = fixture_fleet("", &["p1"], failing);
    for (uri, says, back) in [
        (
            "/checks/nope",
            "no check named &quot;nope&quot;; the configured checks are: gateway",
            "/",
        ),
        ("/probes/nope", "no probe named &quot;nope&quot;", "/probes"),
        ("/rounds/12", "no round 12", "/"),
        ("/nothing/here", "there is no page at /nothing/here", "/"),
        ("/assets/evil.js", "no asset named", "/"),
    ] {
        let (status, headers, body) = page(&fx, uri).await;
        assert_page(status, &headers, &body, StatusCode::NOT_FOUND);
        assert!(body.contains(says), "{uri}: {body}");
        assert!(
            body.contains(&format!("<a href=\"{back}\">Back to")),
            "{uri}: {body}"
        );
    }
    let (status, _, body) = page(&fx, "/rounds/twelve").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("is not a round number"), "{body}");
    let (status, headers, body) = page(&fx, "/api/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "the API answers JSON: {body}"
    );
}

#[tokio::test]
async fn the_probe_pages_show_state_contact_labels_version_results_and_findings() {
    let fx = fixture_fleet("", &["p1"], failing);
    let (status, headers, body) = page(&fx, "/probes").await;
    assert_page(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("data-count=\"6\""), "{body}");
    assert!(body.contains("site=lyon vantage=internet"), "{body}");
    let (status, headers, body) = page(&fx, "/probes/paris-2").await;
    assert_page(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("connected"), "{body}");
    assert!(body.contains("0.1.0"), "{body}");
    assert!(
        body.contains(FindingCode::ThumbprintMismatch.title()),
        "{body}"
    );
    let remedy = maud::html! { (FindingCode::ThumbprintMismatch.remedy()) }.into_string();
    assert!(body.contains(&remedy), "{body}");
    assert!(body.contains("does not report the CEM state"), "{body}");

    // Paged by name, as the API's list is.
    let (_, _, body) = page(&fx, "/probes?limit=2").await;
    assert!(body.contains("2 on this page"), "{body}");
    assert!(
        body.contains("href=\"/probes?after=lyon-1&amp;limit=2\""),
        "{body}"
    );
    let (_, _, body) = page(&fx, "/probes?after=lyon-1&limit=2").await;
    assert!(
        body.contains("/probes/oslo-4\"") && body.contains("/probes/oslo-5\""),
        "{body}"
    );
    assert!(!body.contains("/probes/lyon-0\""), "{body}");
    let (_, _, body) = page(&fx, "/probes?after=paris-3").await;
    assert!(!body.contains("rel=\"next\""), "the last page: {body}");
    let (status, _, body) = page(&fx, "/probes?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("limit: 0 is out of range"), "{body}");
}

#[tokio::test]
async fn assets_are_served_here_with_their_types() {
    let fx = fixture_fleet("", &["p1"], |_| {});
    let (status, headers, body) = page(&fx, "/assets/cemwatch.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(body, CSS);
    let (status, headers, body) = page(&fx, "/assets/cemwatch.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/javascript")));
    assert!(
        !body.contains("http"),
        "the script loads nothing from elsewhere"
    );
}

#[tokio::test]
async fn a_reader_is_shown_the_verify_command_and_an_operator_the_round_form() {
    let reader = fixture_fleet("[http]\nloopback_role = \"read\"\n", &["p1"], failing);
    let (_, _, body) = page(&reader, "/").await;
    assert!(
        body.contains("cemwatch verify --api http://127.0.0.1:9464 --check gateway"),
        "{body}"
    );
    assert!(!body.contains("action=\"/api/v1/rounds\""), "{body}");
    let (status, _, _) = send(
        &reader,
        "POST",
        "/api/v1/rounds",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://127.0.0.1:9464"),
            ("host", "127.0.0.1:9464"),
        ],
        "check=gateway",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the form needs operate, as the API does"
    );

    let operator = fixture_fleet("", &["p1"], failing);
    let (_, _, body) = page(&operator, "/").await;
    assert!(body.contains("action=\"/api/v1/rounds\""), "{body}");
    assert!(body.contains("<label for=\"tp-gateway\">"), "{body}");
    assert!(!body.contains("cemwatch verify --api"), "{body}");
}

#[tokio::test]
async fn the_round_form_starts_a_round_from_this_origin_only() {
    let fx = fixture_fleet("", &["p1"], failing);
    let form =
        |origin: Option<&'static str>, fetch_site: Option<&'static str>, body: &'static str| {
            let fx = &fx;
            async move {
                let mut headers = vec![
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("host", "127.0.0.1:9464"),
                ];
                if let Some(o) = origin {
                    headers.push(("origin", o));
                }
                if let Some(s) = fetch_site {
                    headers.push(("sec-fetch-site", s));
                }
                send(fx, "POST", "/api/v1/rounds", &headers, body).await
            }
        };
    let (status, _, body) = form(Some("https://evil.example"), None, "check=gateway").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("another site"), "{body}");
    let (status, _, _) = form(None, Some("cross-site"), "check=gateway").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = form(None, None, "check=gateway").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no Origin: refused");
    let (status, _, body) = form(
        Some("http://127.0.0.1:9464"),
        None,
        "check=gateway&expect_port=http",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("expect_port: &quot;http&quot; is not a port"),
        "{body}"
    );
    let (status, _, body) = form(Some("http://127.0.0.1:9464"), None, "check=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("the configured checks are: gateway"),
        "{body}"
    );

    let (status, headers, body) = form(
        Some("http://127.0.0.1:9464"),
        Some("same-origin"),
        "check=gateway&expect_thumbprint=&expect_port=8443",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(location.starts_with("/rounds/"), "{location}");
    let (status, headers, body) = page(&fx, &location).await;
    assert_page(status, &headers, &body, StatusCode::OK);
    assert!(body.contains("on port 8443"), "{body}");
    assert!(body.contains("<progress id=\"progress\""), "{body}");
    // The same round, as the API tells it.
    let id = location.trim_start_matches("/rounds/");
    let (status, _, json) = page(&fx, &format!("/api/v1/rounds/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json.contains("\"expect_port\":8443"), "{json}");
    // A second one at once: too soon, said on a page with Retry-After.
    let (status, headers, body) = form(Some("http://127.0.0.1:9464"), None, "check=gateway").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.get(header::RETRY_AFTER).is_some());
}

#[derive(Debug, Default)]
struct FakeDemo {
    switched: Mutex<Vec<String>>,
}

impl DemoControl for FakeDemo {
    fn scenarios(&self) -> Vec<(String, String)> {
        vec![
            ("healthy".into(), "everything right".into()),
            ("gateway-down".into(), "nothing answers".into()),
        ]
    }
    fn current(&self) -> String {
        self.switched
            .lock()
            .map(|s| s.last().cloned().unwrap_or_else(|| "healthy".into()))
            .unwrap_or_default()
    }
    fn notes(&self) -> Vec<String> {
        vec!["Agent states come from sample logs.".into()]
    }
    fn switch(&self, scenario: &str) -> Result<(), String> {
        if !self.scenarios().iter().any(|(n, _)| n == scenario) {
            return Err(format!("{scenario:?} is not a scenario"));
        }
        if let Ok(mut s) = self.switched.lock() {
            s.push(scenario.to_string());
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_demo_switch_exists_only_in_the_demo_and_switches_the_scenario() {
    let fx = fixture_fleet("", &["p1"], failing);
    let post = |body: &'static str| {
        let fx = &fx;
        async move {
            send(
                fx,
                "POST",
                "/demo/scenario",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("host", "127.0.0.1:9464"),
                    ("origin", "http://127.0.0.1:9464"),
                ],
                body,
            )
            .await
        }
    };
    let (_, _, body) = page(&fx, "/").await;
    assert!(
        !body.contains("/demo/scenario"),
        "no demo, no control: {body}"
    );
    let (status, _, body) = post("scenario=gateway-down").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("only in `cemwatch demo`"), "{body}");

    let demo = Arc::new(FakeDemo::default());
    fx.state.pages.demo.set(demo.clone()).expect("set once");
    let (_, _, body) = page(&fx, "/").await;
    assert!(body.contains("action=\"/demo/scenario\""), "{body}");
    assert!(body.contains("<label for=\"scenario\">"), "{body}");
    assert!(
        body.contains("Agent states come from sample logs."),
        "{body}"
    );
    assert!(body.contains("data-scenario=\"healthy\""), "{body}");
    let (status, headers, _) = post("scenario=gateway-down").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some("/")
    );
    assert_eq!(demo.current(), "gateway-down");
    let (status, _, body) = post("scenario=volcano").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("&quot;volcano&quot; is not a scenario"),
        "{body}"
    );
    let (status, _, _) = post("flavour=vanilla").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_timeline_is_rebuilt_from_the_store_s_events() {
    let fx = fixture_fleet("", &["p1"], failing);
    let db = crate::store::open(fx.dir.path()).expect("store");
    let now = now_ms();
    for (i, probe) in ["lyon-0", "lyon-1", "paris-2"].iter().enumerate() {
        db.execute(
            "INSERT INTO events (at, probe, check_name, from_verdict, to_verdict, codes) VALUES (?1, ?2, 'gateway', 'ok', 'fail', 'thumbprint_mismatch')",
            rusqlite::params![now - 60_000 * (i as i64 + 1), probe],
        )
        .expect("insert");
    }
    let (_, _, body) = page(&fx, "/").await;
    assert!(
        body.contains("3 transitions in the last 10 min; now 0 ok, 0 warn, 6 fail"),
        "{body}"
    );
    assert!(
        body.contains("ok → <span class=\"tag fail\">fail</span>"),
        "last events: {body}"
    );
    let (_, _, body) = page(&fx, "/probes/lyon-0").await;
    assert!(
        body.contains("thumbprint_mismatch</td>"),
        "the probe's events: {body}"
    );
}
