//! The compose stack's authentication with its own files and real peers: the secrets
//! `init-secrets` makes, the coordinator with compose's `[http]`, a real Prometheus with
//! compose's `prometheus.yml` (its bearer token) and the generated web configuration (what
//! Grafana's data source sends). Nothing answers without credentials; each credential does
//! what its role allows and no more.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use cemwatch_tests::process::{eventually, http_with};

use super::files::{init_secrets, secrets_at};
use crate::support::fixtures::{check_toml, server_toml};
use crate::support::paths::{deploy, read, repo};
use crate::support::prometheus::Prometheus;
use crate::support::tools::{tool, REQUIRE_PROMETHEUS};
use crate::support::{lab, start_coordinator};

/// GET `path` with an optional Authorization header value; (status, body).
pub(super) fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let header = authorization.map(|a| format!("authorization: {a}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    http_with(addr, "GET", path, &headers, "").expect("GET")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn the_compose_stack_answers_nobody_without_credentials_and_prometheus_scrapes_with_its_token() {
    let test = "the_compose_stack_answers_nobody_without_credentials_and_prometheus_scrapes_with_its_token";
    let Some(prometheus) = tool(
        "prometheus",
        test,
        REQUIRE_PROMETHEUS,
        "apt-get install prometheus",
    ) else {
        return;
    };
    let _machine = crate::support::shared();
    let secrets = init_secrets();
    let compose = deploy().join("compose");
    let lab = lab();

    // The coordinator with compose's [http] (and users), on loopback.
    let stack = read(&compose.join("cemwatch.toml"));
    let http_table =
        &stack[stack.find("[http]").expect("[http]")..stack.find("[[check]]").expect("[[check]]")];
    let text = format!(
        "{}{}{}",
        server_toml(0, ""),
        secrets_at(http_table, "/run/secrets/", secrets.path()),
        check_toml("gateway", &lab)
    );
    let config = lab.dir.path().join("cemwatch.toml");
    std::fs::write(&config, text).expect("write");
    let coordinator = start_coordinator("coordinator", &config);
    let token = |name: &str| format!("Bearer {}", read(&secrets.path().join(name)).trim());

    assert_eq!(
        get(coordinator.http, "/metrics", None).0,
        401,
        "no anonymous scrape, even from loopback"
    );
    assert_eq!(get(coordinator.http, "/api/v1/fleet", None).0, 401);
    assert_eq!(get(coordinator.http, "/live", None).0, 200);
    let scraper = token("prometheus-token");
    assert_eq!(get(coordinator.http, "/metrics", Some(&scraper)).0, 200);
    assert_eq!(
        get(coordinator.http, "/api/v1/fleet", Some(&scraper)).0,
        403,
        "Prometheus' token reads no probe names"
    );
    assert_eq!(
        get(
            coordinator.http,
            "/api/v1/fleet",
            Some(&token("operator-token"))
        )
        .0,
        200
    );

    // Prometheus with compose's prometheus.yml: its target and token file moved here.
    let prom_config = read(&compose.join("prometheus.yml"))
        .replace("coordinator:9464", &coordinator.http.to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "/etc/prometheus/cemwatch/",
            &format!("{}/", deploy().join("prometheus").display()),
        )
        .replace(
            "/etc/prometheus/dashboards/",
            &format!("{}/", repo().join("dashboards").display()),
        );
    let prom_config = secrets_at(&prom_config, "/run/secrets/", secrets.path());
    let prom = Prometheus::start_config(
        &prometheus,
        &prom_config,
        Some(&secrets.path().join("prometheus-web.yml")),
    );

    // Prometheus asks for credentials; Grafana's password (the data source's) gets in.
    let query = "/api/v1/query?query=up";
    assert_eq!(
        get(prom.addr, query, None).0,
        401,
        "Prometheus refuses anonymous queries"
    );
    let password = read(&secrets.path().join("grafana-prometheus-password"));
    assert_eq!(
        get(
            prom.addr,
            query,
            Some(&basic("grafana", "not-the-password"))
        )
        .0,
        401
    );
    let grafana = basic("grafana", password.trim());
    let up = eventually(
        "Prometheus scrapes the coordinator with its token",
        Duration::from_secs(60),
        || {
            let (status, body) = get(prom.addr, query, Some(&grafana));
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let r = v["data"]["result"].as_array()?.first()?.clone();
            (r["value"][1] == "1").then_some(r)
        },
    )
    .expect("target up");
    assert_eq!(up["metric"]["job"], "cemwatch");
    println!(
        "compose stack: anonymous 401 at the coordinator and at Prometheus; Prometheus scrapes with its metrics token (up=1); Grafana's password admitted"
    );
}
