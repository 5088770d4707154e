//! The fleet view against real probes and real TLS gateways on loopback: every demo scenario
//! leads to its diagnosis (API and /metrics state set), a certificate rollover is visible as two
//! thumbprints, `cemwatch verify` fails with the right dissenters while some probes still see the
//! old certificate and succeeds once the swap is complete, and a real scrape passes
//! `promtool check metrics`.

use std::process::Command;
use std::time::Duration;

use cemwatch_coordinator::cli::demo::{Demo, DemoOptions, Scenario};
use cemwatch_coordinator::telemetry as metrics;
use cemwatch_tests::pki::{Ca, LeafSpec};
use cemwatch_tests::process::{eventually, Proc};
use cemwatch_tests::server::{TlsServer, Versions};
use serde_json::Value;

use crate::support::tools::promtool_check;
use crate::support::{
    enroll_ok, probe_bin, scrape, start_coordinator, token, try_get_json, COORDINATOR, GW,
    SCENARIOS, SMP, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_scenario_leads_to_its_diagnosis() {
    let _machine = crate::support::shared();
    let mut promtool_done = false;
    for (scenario, expected, sites) in SCENARIOS {
        let opts = DemoOptions {
            scenario,
            probes: 4,
            interval: Duration::from_secs(60),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            duration: None,
        };
        let demo = Demo::start(&opts).await.expect("demo");
        demo.first_round(6).await;
        let http = demo.coordinator.http_addr;
        let check = tokio::task::spawn_blocking(move || {
            eventually(&format!("{scenario:?}: all six results"), WAIT, || {
                let v = try_get_json(http, "/api/v1/checks/gateway")?;
                (v["probes"].as_array()?.len() == 6).then_some(v)
            })
        })
        .await
        .expect("join")
        .expect("results");
        assert_eq!(
            check["diagnosis"], expected,
            "{scenario:?}: {}",
            check["detail"]
        );
        let named: Vec<&str> = check["detail"]["sites"]
            .as_array()
            .expect("sites")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(named, sites.to_vec(), "{scenario:?}");
        assert!(!check["detail"]["summary"].as_str().unwrap_or("").is_empty());
        if expected != "healthy" {
            assert!(
                !check["detail"]["remedy"].as_str().unwrap_or("").is_empty(),
                "{scenario:?} has a remedy"
            );
        }
        let (text, values) = tokio::task::spawn_blocking(move || scrape(http))
            .await
            .expect("join");
        let current = format!(
            "{}{{check=\"gateway\",diagnosis=\"{expected}\"}}",
            metrics::FLEET_DIAGNOSIS
        );
        assert_eq!(values.get(&current), Some(&1.0), "{scenario:?}: {current}");
        let ones = values
            .iter()
            .filter(|(k, v)| {
                k.starts_with(&format!("{}{{check=\"gateway\"", metrics::FLEET_DIAGNOSIS))
                    && **v == 1.0
            })
            .count();
        assert_eq!(
            ones, 1,
            "{scenario:?}: a state set has exactly one current state"
        );
        let dmz_ok = format!(
            "{}{{check=\"smp-agent-site\",diagnosis=\"healthy\"}}",
            metrics::FLEET_DIAGNOSIS
        );
        assert_eq!(
            values.get(&dmz_ok),
            Some(&1.0),
            "{scenario:?}: the SMP stays healthy"
        );
        if !promtool_done {
            let text = text.clone();
            tokio::task::spawn_blocking(move || {
                promtool_check(
                    "the promtool part of fleet_view::every_demo_scenario_leads_to_its_diagnosis",
                    &text,
                )
            })
            .await
            .expect("join");
            promtool_done = true;
        }
        if scenario == Scenario::UntrustedRoot {
            let lyon = format!(
                "{}{{check=\"gateway\",site=\"branch-lyon\",verdict=\"fail\"}}",
                metrics::CHECK_SITE_PROBES
            );
            assert_eq!(values.get(&lyon), Some(&1.0), "{text}");
            // `cemwatch status` says the same to a person, and exits 2.
            let out = tokio::task::spawn_blocking(move || {
                Command::new(COORDINATOR)
                    .args(["status", "--api", &format!("http://{http}")])
                    .output()
                    .expect("status")
            })
            .await
            .expect("join");
            let table = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(2), "{table}");
            assert!(
                table.contains("cert_problem:cert_untrusted") && table.contains("branch-lyon"),
                "{table}"
            );
        }
        demo.stop().await;
    }
}

fn verify(http: std::net::SocketAddr, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(COORDINATOR)
        .args([
            "verify",
            "--api",
            &format!("http://{http}"),
            "--check",
            "gateway",
            "--timeout",
            "20s",
            "--output",
            "json",
        ])
        .args(args)
        .output()
        .expect("verify");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (
        out.status.code(),
        json,
        format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn a_rollover_shows_two_thumbprints_and_verify_names_the_dissenters() {
    let _machine = crate::support::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("Rollover Root").expect("root");
    let ca_file = root.write_pem(dir.path()).expect("ca");
    let old = root.issue(&LeafSpec::good(&[SMP, GW])).expect("old");
    let new = root.issue(&LeafSpec::good(&[SMP, GW])).expect("new");
    let new_server = TlsServer::start(&new).expect("new gateway");
    let port = new_server.port();
    // A backend that still serves the old certificate, on another loopback address.
    let old_server = TlsServer::start_on(
        format!("127.0.0.2:{port}").parse().expect("addr"),
        &old,
        Versions::Both,
    )
    .expect("old gateway");
    let config = dir.path().join("cemwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nquic_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[rounds]\nmin_interval = \"1s\"\n\n[[check]]\nname = \"gateway\"\nhost = \"{GW}\"\nport = {port}\nlegacy_ports = []\nexpect_thumbprint = \"{}\"\nrequire_san = [\"{SMP}\"]\ninterval = \"1m\"\nresolve = [\"{GW}:*:127.0.0.1\"]\n",
            new.thumbprint()
        ),
    )
    .expect("config");
    let coord = start_coordinator("coordinator", &config);
    let mut probes = Vec::new();
    for (name, site, stale_backend) in [
        ("eu-1", "eu-west", false),
        ("eu-2", "eu-west", false),
        ("us-1", "us-east", false),
        ("us-2", "us-east", false),
        ("ap-1", "ap-south", false),
        ("lyon-1", "branch-lyon", true),
        ("lyon-2", "branch-lyon", true),
    ] {
        let token = token(
            &config,
            &format!("site={site},vantage=internet"),
            name,
            "24h",
        );
        let state = dir.path().join(name);
        enroll_ok(coord.quic, &token, &state);
        let mut cmd = Command::new(probe_bin());
        cmd.args(["run", "--state-dir"])
            .arg(&state)
            .arg("--ca-file")
            .arg(&ca_file);
        if stale_backend {
            cmd.args(["--resolve", &format!("{GW}:*:127.0.0.2")]);
        }
        probes.push(Proc::spawn(name, cmd).expect("probe"));
    }
    eventually("seven probes connected", WAIT, || {
        let v = try_get_json(coord.http, "/api/v1/fleet")?;
        (v["probes"]["connected"] == 7).then_some(())
    })
    .expect("connected");

    // The verification round: five see the new certificate, two (one site) the old one.
    let (code, json, text) = verify(
        coord.http,
        &["--expect-thumbprint", &new.thumbprint(), "--quorum", "0.95"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(json["result"], "not_confirmed");
    assert_eq!(json["round"]["confirmed"], 5, "{text}");
    assert_eq!(json["round"]["dissenting"], 2, "{text}");
    let groups = json["round"]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{text}");
    assert_eq!(groups[0]["site"], "branch-lyon");
    assert_eq!(groups[0]["code"], "thumbprint_mismatch");
    assert_eq!(groups[0]["probes"], serde_json::json!(["lyon-1", "lyon-2"]));
    assert!(groups[0]["remedy"].as_str().is_some_and(|r| !r.is_empty()));

    // The rollover in the metrics: two thumbprints with their observers.
    let (text, values) = scrape(coord.http);
    let observers = |t: &str| {
        values
            .get(&format!(
                "{}{{check=\"gateway\",thumbprint_sha1=\"{t}\"}}",
                metrics::CERT_OBSERVERS
            ))
            .copied()
    };
    assert_eq!(observers(&new.thumbprint()), Some(5.0), "{text}");
    assert_eq!(observers(&old.thumbprint()), Some(2.0), "{text}");
    assert_eq!(
        values.get(&format!(
            "{}{{check=\"gateway\",verdict=\"fail\"}}",
            metrics::CHECK_PROBES
        )),
        Some(&2.0)
    );
    let ratio = values
        .get(&format!(
            "{}{{check=\"gateway\"}}",
            metrics::THUMBPRINT_MATCH_RATIO
        ))
        .copied()
        .unwrap_or(0.0);
    assert!((ratio - 5.0 / 7.0).abs() < 1e-9, "{ratio}");
    assert!(values.contains_key(&format!(
        "{}{{check=\"gateway\",thumbprint_sha1=\"{}\"}}",
        metrics::CERT_NOT_AFTER,
        old.thumbprint()
    )));
    promtool_check(
        "the promtool part of fleet_view::a_rollover_shows_two_thumbprints_and_verify_names_the_dissenters",
        &text,
    );

    // A lower quorum is met by the five.
    let (code, json, text) = verify(
        coord.http,
        &["--expect-thumbprint", &new.thumbprint(), "--quorum", "0.7"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(json["result"], "confirmed");

    // The old backend gets the new certificate: the whole fleet confirms.
    drop(old_server);
    let _swapped = TlsServer::start_on(
        format!("127.0.0.2:{port}").parse().expect("addr"),
        &new,
        Versions::Both,
    )
    .expect("swapped");
    let (code, json, text) = verify(coord.http, &["--expect-thumbprint", &new.thumbprint()]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(json["round"]["confirmed"], 7, "{text}");
    let (_, values) = scrape(coord.http);
    assert_eq!(
        observers(&old.thumbprint()),
        Some(2.0),
        "(the old map is from before)"
    );
    assert_eq!(
        values.get(&format!(
            "{}{{check=\"gateway\",thumbprint_sha1=\"{}\"}}",
            metrics::CERT_OBSERVERS,
            old.thumbprint()
        )),
        None,
        "the old certificate's series is gone once nobody sees it"
    );

    // Bad input exits 3.
    let (code, _, text) = verify(coord.http, &["--expect-thumbprint", "not-hex"]);
    assert_eq!(code, Some(3), "{text}");
    let (code, _, text) = verify(coord.http, &["--quorum", "1.5"]);
    assert_eq!(code, Some(3), "{text}");
    let out = Command::new(COORDINATOR)
        .args([
            "verify",
            "--api",
            &format!("http://{}", coord.http),
            "--check",
            "nope",
        ])
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no check named"),
        "{out:?}"
    );
    drop(new_server);
}
