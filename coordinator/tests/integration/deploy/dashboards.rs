//! The Grafana dashboards and the Prometheus alert rules, made real: `promtool check rules` and
//! `promtool test rules` (a unit test for every alert), then a real Prometheus scraping a running
//! demo evaluates every PromQL expression of every dashboard panel, template variable and rule.
//! The test fails when an expression is invalid, references a metric the coordinator does not
//! export, or (for a dashboard panel) returns nothing while the demo shows a failing fleet.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cemwatch_coordinator::cli::demo::{Demo, DemoOptions, Scenario};
use cemwatch_tests::process::http_get;
use serde_json::Value;

use crate::support::paths::{deploy, repo};
use crate::support::prometheus::Prometheus;
use crate::support::tools::{tool, REQUIRE_PROMETHEUS};

fn dashboards_dir() -> PathBuf {
    repo().join("dashboards")
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    out.sort();
    out
}

/// Every `expr` of a dashboard's panels (rows included) and every template query.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or("");
        if let Some(inner) = q.strip_prefix("label_values(") {
            // label_values(SELECTOR, label) → SELECTOR must return series.
            if let Some((selector, _)) = inner.rsplit_once(',') {
                out.push((
                    format!("variable {}", v["name"]),
                    selector.trim().to_string(),
                ));
            }
        }
    }
    out
}

/// What Grafana would substitute: every variable at "All", the rate interval at a few scrapes.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__interval", "15s")
        .replace("$check", ".*")
        .replace("$site", ".*")
}

/// `cemwatch_…` metric names an expression references (histogram suffixes stripped).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("cemwatch_") {
        let start = i + pos;
        let before_ok = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok {
            let name = &expr[start..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(name.to_string());
        }
        i = end;
    }
    out
}

/// The rule expressions of a rules file (as text lines `expr: ...`).
fn rule_exprs(text: &str) -> Vec<(String, String)> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).expect("rules YAML");
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().into_iter().flatten() {
        for rule in group["rules"].as_vec().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?")
                .to_string();
            if let Some(expr) = rule["expr"].as_str() {
                out.push((name, expr.to_string()));
            }
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let test = "alert_rules_pass_promtool_check_and_unit_tests";
    let Some(promtool) = tool(
        "promtool",
        test,
        REQUIRE_PROMETHEUS,
        "apt-get install prometheus",
    ) else {
        return;
    };
    let rules = files(".rules.yml");
    assert!(!rules.is_empty(), "no dashboards/*.rules.yml");
    let out = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .args(&rules)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every alert has a unit test.
    let tests_dir = dashboards_dir().join("tests");
    let mut tested = BTreeSet::new();
    for t in std::fs::read_dir(&tests_dir)
        .expect("dashboards/tests")
        .filter_map(Result::ok)
    {
        let path = t.path();
        let out = Command::new(&promtool)
            .arg("test")
            .arg("rules")
            .arg(&path)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool test rules {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).expect("read");
        for line in text.lines() {
            if let Some(name) = line.trim().strip_prefix("alertname:") {
                tested.insert(name.trim().to_string());
            }
        }
    }
    for file in &rules {
        let text = std::fs::read_to_string(file).expect("read");
        for (name, _) in rule_exprs(&text) {
            if text.contains(&format!("alert: {name}")) {
                assert!(
                    tested.contains(&name),
                    "alert {name} has no promtool unit test in dashboards/tests/"
                );
            }
        }
    }
    println!(
        "promtool: {} rule files checked, {} alerts unit-tested",
        rules.len(),
        tested.len()
    );
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum by (le) (rate(cemwatch_tls_handshake_duration_seconds_bucket{check=~\".*\"}[5m])) / fleet:cemwatch_probes:sum"),
        ["cemwatch_tls_handshake_duration_seconds".to_string()].into_iter().collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rule_expression_works_against_a_real_prometheus() {
    let _machine = crate::support::shared();
    let test = "every_dashboard_and_rule_expression_works_against_a_real_prometheus";
    let Some(prometheus) = tool(
        "prometheus",
        test,
        REQUIRE_PROMETHEUS,
        "apt-get install prometheus",
    ) else {
        return;
    };
    // A failing fleet, so findings, sites, certificates and latencies all have series.
    let demo = Demo::start(&DemoOptions {
        scenario: Scenario::UntrustedRoot,
        probes: 4,
        interval: Duration::from_secs(2),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        duration: None,
    })
    .await
    .expect("demo");
    demo.first_round(6).await;
    let http = demo.coordinator.http_addr;
    let mut rule_files = files(".rules.yml");
    rule_files.push(deploy().join("prometheus").join("cemwatch-fleet.rules.yml"));
    let checked = tokio::task::spawn_blocking(move || {
        let prom = Prometheus::start_with_rules(&prometheus, &[http], &rule_files);
        // Enough scrapes for rates over 30 s windows.
        cemwatch_tests::process::eventually(
            "six scrapes of the demo",
            Duration::from_secs(60),
            || {
                let r = prom.query("count_over_time(up[1m])");
                (r.first().map(|x| x.1).unwrap_or(0.0) >= 6.0).then_some(())
            },
        )
        .expect("scraped");
        // What the coordinator exports once results are in (empty families are not rendered).
        let (_, exposition) = http_get(http, "/metrics").expect("scrape");
        let exported: BTreeSet<String> = exposition
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        let mut checked = 0;
        for file in files(".json") {
            let dashboard: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).expect("read"))
                    .expect("dashboard JSON");
            for (title, expr) in dashboard_exprs(&dashboard) {
                for name in metric_names(&expr) {
                    assert!(
                        exported.contains(&name),
                        "{}: panel {title:?} uses {name}, which the coordinator does not export",
                        file.display()
                    );
                }
                let promql = substitute(&expr);
                let result = prom.query(&promql);
                assert!(
                    !result.is_empty(),
                    "{}: panel {title:?} returns nothing from the demo: {promql}",
                    file.display()
                );
                checked += 1;
            }
        }
        for file in &rule_files {
            let text = std::fs::read_to_string(file).expect("read");
            for (name, expr) in rule_exprs(&text) {
                for metric in metric_names(&expr) {
                    assert!(
                        exported.contains(&metric),
                        "{}: rule {name} uses {metric}, which the coordinator does not export",
                        file.display()
                    );
                }
                // Valid PromQL (the query helper asserts a successful answer); alerts may be quiet.
                let _ = prom.query(&expr);
                checked += 1;
            }
        }
        checked
    })
    .await
    .expect("join");
    println!("dashboards and rules: {checked} PromQL expressions evaluated by a real Prometheus scraping the demo");
    demo.stop().await;
}
