//! The fleet's agent CEM state on the demo: demo probes follow sample `Agent.log`s in every state
//! (one agent timing out on port 443 while the policy says the gateway's port, one that validated
//! the old certificate's thumbprint), and the coordinator shows them in `/api/v1/fleet`,
//! `/api/v1/agents`, `/metrics` (parsed, and `promtool check metrics`), `cemwatch status`, and
//! in the Grafana dashboard `dashboards/cemwatch-agents.json`, whose every query a real
//! Prometheus scraping the demo answers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cemwatch_coordinator::cli::demo::gateway::GATEWAY;
use cemwatch_coordinator::cli::demo::{Demo, DemoOptions, Scenario, OLD_PORT, OLD_THUMBPRINT};
use cemwatch_coordinator::telemetry as metrics;
use cemwatch_shared::AgentCondition;
use cemwatch_tests::process::{eventually, http_get};
use serde_json::Value;

use crate::support::prometheus::Prometheus;
use crate::support::tools::{promtool_check, tool, REQUIRE_PROMETHEUS_ONLY};
use crate::support::{get_json_status, scrape, COORDINATOR, WAIT};

/// Internet probes of the demo: the first six cover every agent state (`demo::demo_agent`).
const PROBES: usize = 6;

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/cemwatch-agents.json")
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The property names of a schema in `coordinator/openapi.yaml`.
fn openapi_properties(schema: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("openapi.yaml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("openapi.yaml is YAML");
    docs[0]["components"]["schemas"][schema]["properties"]
        .as_hash()
        .unwrap_or_else(|| panic!("openapi.yaml: no properties of {schema}"))
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

/// The keys of a JSON object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn probes_of(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["probe"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_the_fleets_agent_cem_state_everywhere() {
    let _machine = crate::support::shared();
    let opts = DemoOptions {
        scenario: Scenario::Healthy,
        probes: PROBES,
        interval: Duration::from_secs(60),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        duration: None,
    };
    let demo = Demo::start(&opts).await.expect("demo");
    demo.first_round(PROBES + 2).await;
    let http = demo.coordinator.http_addr;
    let policy_port = demo.gateway.policy_port;
    let policy_thumbprint = demo.gateway.policy_thumbprint();
    assert_ne!(policy_port, OLD_PORT);
    assert_ne!(policy_thumbprint, OLD_THUMBPRINT);

    // The fleet summary: every agent state, and the two kinds of disagreement with the policy.
    let fleet = tokio::task::spawn_blocking(move || {
        eventually("six agents reporting, eight gateway results", WAIT, || {
            let (_, v) = get_json_status(http, "/api/v1/fleet");
            let verdicts = &v["checks"][0]["verdicts"];
            let results: u64 = ["ok", "warn", "fail"]
                .iter()
                .filter_map(|k| verdicts[k].as_u64())
                .sum();
            (v["agents"]["reporting"] == 6 && results == 8).then_some(v)
        })
    })
    .await
    .expect("join")
    .expect("agents");
    let agents = &fleet["agents"];
    assert_eq!(
        agents["states"],
        serde_json::json!({
            "cem_connected": 3,
            "handshake_error": 1,
            "connect_timeout": 1,
            "no_cem_activity": 1,
        }),
        "{agents:#}"
    );
    assert_eq!(agents["log_unavailable"], 0);
    assert_eq!(
        agents["connected"],
        serde_json::json!([{"gateway": GATEWAY, "port": policy_port, "agents": 3, "other": false}]),
        "{agents:#}"
    );
    let checks = agents["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "only the gateway check: {agents:#}");
    let gw = &checks[0];
    assert_eq!(gw["check"], "gateway");
    assert_eq!(gw["policy_port"], policy_port);
    assert_eq!(gw["policy_thumbprint"], policy_thumbprint.as_str());
    assert_eq!(
        gw["agents"], 5,
        "every agent but the one with no CEM activity"
    );
    assert_eq!(gw["port_mismatch"], 1, "{gw:#}");
    assert_eq!(probes_of(&gw["wrong_port"]), ["us-east-01"]);
    assert_eq!(gw["wrong_port"][0]["port"], OLD_PORT);
    assert_eq!(gw["wrong_port"][0]["condition"], "connect_timeout");
    assert_eq!(gw["thumbprint_mismatch"], 1, "{gw:#}");
    assert_eq!(probes_of(&gw["stale_thumbprint"]), ["ap-south-01"]);
    assert_eq!(gw["stale_thumbprint"][0]["thumbprint"], OLD_THUMBPRINT);
    assert_eq!(probes_of(&agents["handshake_errors"]), ["branch-lyon-01"]);
    assert_eq!(agents["handshake_errors"][0]["attempts"], 2);
    assert_eq!(agents["handshake_errors"][0]["port"], policy_port);
    assert_eq!(probes_of(&agents["connect_timeouts"]), ["us-east-01"]);
    assert_eq!(agents["connect_timeouts"][0]["attempts"], 3);
    assert_eq!(probes_of(&agents["no_cem_activity"]), ["eu-west-02"]);
    // The synthetic checks beside it are unchanged.
    assert_eq!(fleet["checks"][0]["diagnosis"], "healthy");

    // Per probe.
    let (list, bad_filter, timeouts) = tokio::task::spawn_blocking(move || {
        (
            get_json_status(http, "/api/v1/agents"),
            get_json_status(http, "/api/v1/agents?condition=sleeping"),
            get_json_status(http, "/api/v1/agents?condition=connect_timeout"),
        )
    })
    .await
    .expect("join");
    assert_eq!(list.0, 200);
    let list = list.1;
    assert_eq!(
        probes_of(&list),
        [
            "ap-south-01",
            "branch-lyon-01",
            "eu-west-01",
            "eu-west-02",
            "us-east-01",
            "us-east-02"
        ],
        "the DMZ probes and probes without an agent log send no state"
    );
    let entry = |name: &str| {
        list.as_array()
            .and_then(|a| a.iter().find(|e| e["probe"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for e in list.as_array().expect("list") {
        assert_eq!(e["current"], true, "{e:#}");
        assert_eq!(e["probe_state"], "connected", "{e:#}");
        assert_eq!(e["log"], "following", "{e:#}");
    }
    let ok = entry("eu-west-01");
    assert_eq!(ok["condition"], "cem_connected");
    assert_eq!(ok["gateway"], GATEWAY);
    assert_eq!(ok["port"], policy_port);
    assert_eq!(ok["thumbprint"], policy_thumbprint.as_str());
    assert_eq!(ok["since_source"], "logged");
    assert!(ok["line"]
        .as_str()
        .is_some_and(|l| l.contains("CEM mode active. Connected to gateway")));
    assert_eq!(ok["port_mismatch"], serde_json::json!([]));
    assert_eq!(ok["thumbprint_mismatch"], serde_json::json!([]));
    assert_eq!(
        entry("us-east-01")["port_mismatch"],
        serde_json::json!(["gateway"])
    );
    assert_eq!(
        entry("ap-south-01")["thumbprint_mismatch"],
        serde_json::json!(["gateway"])
    );
    assert_eq!(
        entry("us-east-02")["thumbprint"],
        Value::Null,
        "no thumbprint logged"
    );
    assert_eq!(bad_filter.0, 400, "{}", bad_filter.1);
    assert!(bad_filter.1["error"]
        .as_str()
        .is_some_and(|e| e.contains("connect_timeout")));
    assert_eq!(timeouts.0, 200);
    assert_eq!(probes_of(&timeouts.1), ["us-east-01"]);
    // What the API returns is what coordinator/openapi.yaml documents.
    assert_eq!(keys(agents), openapi_properties("AgentSummary"));
    assert_eq!(
        keys(&gw["wrong_port"][0]),
        openapi_properties("AgentExample")
    );
    assert_eq!(keys(&ok), openapi_properties("AgentEntry"));
    assert!(openapi_properties("FleetSummary").contains("agents"));

    // /metrics: the same numbers, a series per state, and a scrape promtool accepts.
    let (text, values) = tokio::task::spawn_blocking(move || scrape(http))
        .await
        .expect("join");
    let value = |name: &str, labels: &[(&str, &str)]| values.get(&series(name, labels)).copied();
    for (state, n) in [
        ("cem_connected", 3.0),
        ("handshake_error", 1.0),
        ("connect_timeout", 1.0),
        ("no_cem_activity", 1.0),
    ] {
        assert_eq!(
            value(metrics::AGENTS, &[("state", state)]),
            Some(n),
            "{state}"
        );
    }
    assert_eq!(
        values
            .keys()
            .filter(|k| k.starts_with(&format!("{}{{", metrics::AGENTS)))
            .count(),
        AgentCondition::NAMES.len()
    );
    let port = policy_port.to_string();
    assert_eq!(
        value(
            metrics::AGENTS_CONNECTED,
            &[("gateway", GATEWAY), ("port", port.as_str())]
        ),
        Some(3.0),
        "{text}"
    );
    let connected_sum: f64 = values
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{}{{", metrics::AGENTS_CONNECTED)))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(connected_sum, 3.0, "every connected agent once");
    assert_eq!(
        value(metrics::AGENTS_PORT_MISMATCH, &[("check", "gateway")]),
        Some(1.0)
    );
    assert_eq!(
        value(metrics::AGENTS_THUMBPRINT_MISMATCH, &[("check", "gateway")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            metrics::AGENTS_PORT_MISMATCH,
            &[("check", "smp-agent-site")]
        ),
        None,
        "SMP checks are not what agents connect to"
    );
    let scraped = text.clone();
    tokio::task::spawn_blocking(move || {
        promtool_check(
            "the promtool part of agents::the_demo_shows_the_fleets_agent_cem_state_everywhere",
            &scraped,
        )
    })
    .await
    .expect("join");

    // `cemwatch status` tells a person the same, and still exits by the checks (healthy: 0).
    let api = format!("http://{http}");
    let (human, json) = tokio::task::spawn_blocking(move || {
        let human = Command::new(COORDINATOR)
            .args(["status", "--api", &api])
            .env("NO_COLOR", "1")
            .output()
            .expect("status");
        let json = Command::new(COORDINATOR)
            .args(["status", "--api", &api, "--output", "json"])
            .output()
            .expect("status json");
        (human, json)
    })
    .await
    .expect("join");
    let table = String::from_utf8_lossy(&human.stdout).to_string();
    println!("{table}");
    assert_eq!(human.status.code(), Some(0), "{table}");
    let line = |start: &str| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{table}"))
            .to_string()
    };
    assert!(
        table.contains("agents  6 of 8 probes report their management agent's CEM state"),
        "{table}"
    );
    let connected = line("cem_connected");
    assert!(
        connected.contains(" 3 ") && connected.contains(&format!("{GATEWAY}:{policy_port} 3")),
        "{connected}"
    );
    let handshake = line("handshake_error");
    assert!(
        handshake.contains(" 1 ")
            && handshake.contains(&format!(
                "{GATEWAY}:{policy_port}: branch-lyon-01 (2 attempts"
            )),
        "{handshake}"
    );
    let timeout = line("connect_timeout");
    assert!(
        timeout.contains(&format!("{GATEWAY}:{OLD_PORT}: us-east-01 (3 attempts")),
        "{timeout}"
    );
    assert!(line("no_cem_activity").contains("eu-west-02"));
    let wrong = line("wrong port");
    assert!(
        wrong.contains(" 1 ")
            && wrong.contains(&format!("policy port {policy_port}"))
            && wrong.contains(&format!("on {OLD_PORT}: us-east-01")),
        "{wrong}"
    );
    let stale = line("stale thumbprint");
    assert!(
        stale.contains(" 1 ")
            && stale.contains(&policy_thumbprint)
            && stale.contains(&format!("validated {OLD_THUMBPRINT}: ap-south-01")),
        "{stale}"
    );
    assert!(
        table.contains("remedy: These agents use another port"),
        "{table}"
    );
    let json: Value = serde_json::from_slice(&json.stdout).expect("status json");
    assert_eq!(json["agents"]["reporting"], 6);
    assert_eq!(json["agents"]["checks"][0]["port_mismatch"], 1);

    // The dashboard names only what the coordinator exports, and a real Prometheus scraping
    // the demo answers every one of its queries.
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    let queries = dashboard_queries(&exported);
    tokio::task::spawn_blocking(move || prometheus_answers(http, &queries))
        .await
        .expect("join");
    demo.stop().await;
}

/// The dashboard's queries, after checking its data source, its `check` variable, that it has
/// the four agent panels and that every metric it names is in the scrape (`exported`).
fn dashboard_queries(exported: &BTreeSet<String>) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dashboard_path()).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "cemwatch-agents");
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let check = vars
        .iter()
        .find(|v| v["name"] == "check")
        .expect("a `check` template variable");
    assert_eq!(check["datasource"]["uid"], "prometheus");
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("").to_string();
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{title}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "prometheus", "{title}");
            let expr = target["expr"].as_str().expect("expr").to_string();
            let mut named = 0;
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("cemwatch_") {
                    named += 1;
                    assert!(
                        exported.contains(word),
                        "{title}: {word} is not exported by the coordinator (exported: {exported:?})"
                    );
                }
            }
            assert!(named > 0, "{title}: {expr} names no cemwatch metric");
            queries.push((title.clone(), expr));
        }
    }
    for (metric, what) in [
        (metrics::AGENTS, "agents by state"),
        (
            metrics::AGENTS_CONNECTED,
            "connected agents by gateway:port",
        ),
        (metrics::AGENTS_PORT_MISMATCH, "port mismatches"),
        (metrics::AGENTS_THUMBPRINT_MISMATCH, "thumbprint mismatches"),
    ] {
        assert!(
            queries.iter().any(|(_, q)| q.contains(metric)),
            "a panel for {what} ({metric})"
        );
    }
    queries
}

/// Starts Prometheus scraping `target` every second and checks that every query has an answer,
/// with the demo's numbers where the query is one of the agent totals.
fn prometheus_answers(target: SocketAddr, queries: &[(String, String)]) {
    let Some(binary) = tool(
        "prometheus",
        "the Prometheus part of agents::the_demo_shows_the_fleets_agent_cem_state_everywhere",
        REQUIRE_PROMETHEUS_ONLY,
        "apt-get install prometheus; CI runs it",
    ) else {
        return;
    };
    let prometheus = Prometheus::start_with_rules(&binary, &[target], &[]);
    let addr = prometheus.addr;
    let query = |promql: &str| prometheus.query(promql);
    eventually("Prometheus has scraped the demo", WAIT, || {
        (!query("cemwatch_agents").is_empty()).then_some(())
    })
    .expect("scraped");
    // The `check` variable's values: the label values Grafana's label_values() asks for. With
    // "All" selected (and no custom all value), Grafana puts them in as a regex alternation.
    let (status, body) = http_get(
        addr,
        "/api/v1/label/check/values?match%5B%5D=cemwatch_agents_port_mismatch",
    )
    .expect("label values");
    assert_eq!(status, 200, "{body}");
    let values: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(values["data"], serde_json::json!(["gateway"]), "{body}");
    let all = format!(
        "({})",
        values["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|")
    );
    let grafana = |expr: &str| expr.replace("$check", &all);
    for (title, expr) in queries {
        let answer = query(&grafana(expr));
        assert!(!answer.is_empty(), "{title}: no answer to {expr}");
        println!("dashboard: {title}: {expr} -> {answer:?}");
    }
    let total = |expr: &str| {
        queries
            .iter()
            .find(|(_, q)| q == expr)
            .map(|(_, q)| query(&grafana(q)))
            .unwrap_or_else(|| panic!("the dashboard has no query {expr}"))
            .first()
            .map(|(_, v)| *v)
    };
    assert_eq!(
        total("sum(cemwatch_agents_port_mismatch{check=~\"$check\"})"),
        Some(1.0)
    );
    assert_eq!(
        total("sum(cemwatch_agents_thumbprint_mismatch{check=~\"$check\"})"),
        Some(1.0)
    );
    assert_eq!(
        total("sum(cemwatch_agents{state=\"cem_connected\"})"),
        Some(3.0)
    );
    let by_state: Vec<(String, f64)> = query("sum by (state) (cemwatch_agents)")
        .into_iter()
        .map(|(m, v)| (m["state"].as_str().unwrap_or("").to_string(), v))
        .collect();
    assert_eq!(by_state.len(), AgentCondition::NAMES.len(), "{by_state:?}");
    // With "All" checks, the panels show the gateway checks only (not the SMP checks).
    for (title, expr) in queries.iter().filter(|(_, q)| q.contains("by (check)")) {
        for (labels, _) in query(&grafana(expr)) {
            assert_eq!(labels["check"], "gateway", "{title}: {expr}");
        }
    }
    drop(prometheus);
}
