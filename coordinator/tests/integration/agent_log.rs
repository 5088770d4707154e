//! A probe on a managed endpoint follows the management agent's log (`run --agent-log`) and
//! sends the agent's CEM state to a real coordinator on connection and on every change, over the
//! same session as its reports: the coordinator accepts the message, the session stays up and
//! reports keep flowing. The coordinator shows the state (API, metrics) judged against the
//! policy, and a restarted coordinator still has it before the probe sends it again.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cemwatch_tests::process::{eventually, Proc};
use serde_json::Value;

use crate::support::{
    enroll_ok, lab, metric, probe_bin, start_coordinator, token, try_get_json, write_config, GW,
    WAIT,
};

/// Whether one line of the probe's log holds every needle.
fn logged(probe: &Proc, needles: &[&str]) -> bool {
    probe
        .log()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn the_agents_state_travels_with_the_reports_and_the_session_holds() {
    let _machine = crate::support::shared();
    let lab = lab();
    let dir = &lab.dir;
    let ca_file = &lab.ca_file;
    let gateway = &lab.gateway;
    let config = write_config(&lab, "");

    let mut coordinator = start_coordinator("coordinator", &config);
    let quic = coordinator.quic;
    let http = coordinator.http;

    let token = token(
        &config,
        "site=branch-lyon,vantage=internet",
        "laptop-42",
        "24h",
    );
    let state = dir.path().join("laptop-42");
    enroll_ok(quic, &token, &state);

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
            .arg(ca_file)
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
    let agents = |http: SocketAddr| -> Option<Value> { try_get_json(http, "/api/v1/agents") };
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
    coordinator.proc.terminate(Duration::from_secs(10));
    let mut coordinator = start_coordinator("coordinator", &config);
    let http = coordinator.http;
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
    coordinator.proc.terminate(Duration::from_secs(10));
}
