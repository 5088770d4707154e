//! A probe on a managed endpoint follows the management agent's log (`run --agent-log`) and
//! sends the agent's CEM state to a real coordinator on connection and on every change, over the
//! same session as its reports: the coordinator accepts the message, the session stays up and
//! reports keep flowing. The coordinator shows the state (API, metrics) judged against the
//! policy, and a restarted coordinator still has it before the probe sends it again.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cemwatch_tests::pki::{Ca, LeafSpec};
use cemwatch_tests::process::{eventually, http_get, Proc};
use cemwatch_tests::server::TlsServer;
use serde_json::Value;
use support::{metric, probe_bin, COORDINATOR, GW, SMP, WAIT};

/// Whether one line of the probe's log holds every needle.
fn logged(probe: &Proc, needles: &[&str]) -> bool {
    probe
        .log()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn the_agents_state_travels_with_the_reports_and_the_session_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("Lab Root CA").expect("root");
    let ca_file = root.write_pem(dir.path()).expect("ca");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    let gateway = TlsServer::start(&leaf).expect("gateway");
    let config = dir.path().join("cemwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nquic_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nstale_after = \"30s\"\n\n\
             [[check]]\nname = \"gateway\"\nhost = \"{GW}\"\nport = {}\nlegacy_ports = []\nexpect_thumbprint = \"{}\"\nrequire_san = [\"{SMP}\"]\ninterval = \"1s\"\nresolve = [\"{GW}:*:127.0.0.1\"]\n",
            gateway.port(),
            leaf.thumbprint()
        ),
    )
    .expect("config");

    let mut coordinator = {
        let mut cmd = Command::new(COORDINATOR);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("CEMWATCH_LOG", "info");
        Proc::spawn("coordinator", cmd).expect("coordinator")
    };
    let quic = coordinator.listening("quic").expect("quic");
    let http = coordinator.listening("http").expect("http");

    let token = Command::new(COORDINATOR)
        .args(["token", "create", "--config"])
        .arg(&config)
        .args([
            "--labels",
            "site=branch-lyon,vantage=internet",
            "--name",
            "laptop-42",
        ])
        .output()
        .expect("token");
    assert!(token.status.success(), "{token:?}");
    let state = dir.path().join("laptop-42");
    let enrolled = Command::new(probe_bin())
        .args(["enroll", "--coordinator", &quic.to_string(), "--token"])
        .arg(String::from_utf8_lossy(&token.stdout).trim())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("enroll");
    assert!(enrolled.status.success(), "{enrolled:?}");

    // The agent has been timing out on the wrong port.
    let agent_log = dir.path().join("Agent.log");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../probe/tests/fixtures/agent-log/connect-timeout.log"),
        &agent_log,
    )
    .expect("fixture");
    let mut probe = {
        let mut cmd = Command::new(probe_bin());
        cmd.args(["run", "--state-dir"])
            .arg(&state)
            .arg("--ca-file")
            .arg(&ca_file)
            .arg("--agent-log")
            .arg(&agent_log)
            .env("CEMWATCH_LOG", "info,cemwatch_probe::agent::session=debug");
        Proc::spawn("probe", cmd).expect("probe")
    };
    probe
        .wait_for("following the management agent's log", WAIT)
        .expect("following");
    eventually("the connect_timeout state sent", WAIT, || {
        logged(&probe, &["agent CEM state sent", "connect_timeout"]).then_some(())
    })
    .expect("sent");
    eventually("reports acknowledged", WAIT, || {
        (metric(http, "cemwatch_reports_received_total") >= 1.0).then_some(())
    })
    .expect("reports");

    // The policy is fixed: the agent connects.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&agent_log)
        .expect("open log");
    writeln!(
        file,
        "2025-11-24T11:50:00.000Z INFO  CEM mode active. Connected to gateway: {GW}:8443"
    )
    .expect("append");
    drop(file);
    eventually("the cem_connected state sent", WAIT, || {
        logged(&probe, &["agent CEM state sent", "cem_connected"]).then_some(())
    })
    .expect("sent");

    // The coordinator took both without complaint, and the session goes on.
    let before = metric(http, "cemwatch_reports_received_total");
    eventually("reports after the state changes", WAIT, || {
        (metric(http, "cemwatch_reports_received_total") > before + 1.0).then_some(())
    })
    .expect("still reporting");
    assert_eq!(
        metric(
            http,
            "cemwatch_frames_rejected_total{reason=\"unexpected\"}"
        ),
        0.0
    );
    assert!(
        !probe.log().contains("session ended"),
        "the session was cut:\n{}",
        probe.log()
    );

    // The coordinator shows it: connected in CEM mode, but on 8443 while the policy (the check's
    // port) is the gateway's own port: a wrong port.
    assert_ne!(gateway.port(), 8443);
    let agents = |http: SocketAddr| -> Option<Value> {
        let (_, body) = http_get(http, "/api/v1/agents").ok()?;
        serde_json::from_str(&body).ok()
    };
    let shown = eventually("the coordinator shows the agent connected", WAIT, || {
        agents(http).filter(|v| v[0]["condition"] == "cem_connected")
    })
    .expect("shown");
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown:#}");
    assert_eq!(shown[0]["probe"], "laptop-42");
    assert_eq!(shown[0]["site"], "branch-lyon");
    assert_eq!(shown[0]["gateway"], GW);
    assert_eq!(shown[0]["port"], 8443);
    assert_eq!(shown[0]["current"], true);
    assert_eq!(shown[0]["port_mismatch"], serde_json::json!(["gateway"]));
    assert_eq!(
        metric(http, "cemwatch_agents{state=\"cem_connected\"}"),
        1.0
    );
    assert_eq!(
        metric(http, "cemwatch_agents{state=\"connect_timeout\"}"),
        0.0
    );
    assert_eq!(
        metric(http, "cemwatch_agents_port_mismatch{check=\"gateway\"}"),
        1.0
    );

    assert_eq!(probe.terminate(Duration::from_secs(10)), Some(0));
    let saved = std::fs::read_to_string(state.join("agentlog.json")).expect("position saved");
    assert!(saved.contains("cem_connected"), "{saved}");

    // A restart loses nothing: with the probe stopped, the restarted coordinator has the agent's
    // state from its store.
    coordinator.terminate(Duration::from_secs(10));
    let mut coordinator = {
        let mut cmd = Command::new(COORDINATOR);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("CEMWATCH_LOG", "info");
        Proc::spawn("coordinator", cmd).expect("coordinator")
    };
    let http = coordinator.listening("http").expect("http");
    let after = agents(http).expect("agents after the restart");
    assert_eq!(after[0]["probe"], "laptop-42", "{after:#}");
    assert_eq!(after[0]["condition"], "cem_connected");
    assert_eq!(after[0]["port"], 8443);
    assert_eq!(
        after[0]["probe_state"], "disconnected",
        "not connected, not stale yet"
    );
    assert_eq!(after[0]["line"], shown[0]["line"]);
    assert_eq!(after[0]["received_ms"], shown[0]["received_ms"]);
    assert_eq!(
        metric(http, "cemwatch_agents{state=\"cem_connected\"}"),
        1.0
    );
    coordinator.terminate(Duration::from_secs(10));
}
