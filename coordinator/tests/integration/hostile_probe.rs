//! What one enrolled probe (a stolen key, a hostile local administrator) can do to the
//! coordinator (issue 18, first part): results for checks outside its plan are dropped and
//! counted, so it cannot grow the fleet view, the metrics' label sets or the events with names
//! of its own; its report is still committed and acknowledged.

use std::time::Duration;

use cemwatch_shared::wire::{CheckReport, Report, ToCoordinator};
use cemwatch_tests::process::eventually;

use cemwatch_shared::wire::{self, ToProbe};
use cemwatch_transport::frame::{read_frame, write_frame};

use crate::support::fixtures::ok_result;
use crate::support::{
    enroll_ok, get_json, identity_of, lab, metric, raw_client_config, shared, start_coordinator,
    token, write_config,
};

/// Connects as the enrolled probe in `state` and says `Hello` as `name`: a session as the probe
/// would open it, for a test to send what the probe never would.
async fn session(
    quic: std::net::SocketAddr,
    state: &std::path::Path,
    name: &str,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let conn = endpoint
        .connect_with(
            raw_client_config(Some(identity_of(state))),
            quic,
            wire::SERVER_NAME,
        )
        .expect("connect")
        .await
        .expect("an enrolled probe's handshake");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let hello = ToCoordinator::Hello {
        probe: name.into(),
        agent_version: "hostile".into(),
        labels: Default::default(),
    };
    write_frame(&mut send, &hello).await.expect("hello");
    (endpoint, conn, send, recv)
}

#[test]
fn results_for_checks_outside_the_plan_are_dropped_and_counted() {
    let _machine = shared();
    let lab = lab();
    let config = write_config(&lab, "");
    let coord = start_coordinator("coordinator", &config);
    let state = lab.dir.path().join("mallory");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu,vantage=internet", "mallory", "1h"),
        &state,
    );
    let invented: Vec<String> = (0..50).map(|i| format!("invented-{i}")).collect();
    let mut results: Vec<CheckReport> = invented
        .iter()
        .map(|check| CheckReport {
            check: check.clone(),
            produced_at_ms: 1,
            result: ok_result(),
        })
        .collect();
    results.push(CheckReport {
        check: "gateway".into(),
        produced_at_ms: 1,
        result: ok_result(),
    });
    let report = ToCoordinator::Report(Report {
        seq: 1,
        round: None,
        results,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A session as the probe's own: Hello, the plan, then the report, until it is acknowledged.
    let acked = rt.block_on(async {
        let (endpoint, conn, mut send, mut recv) = session(coord.quic, &state, "mallory").await;
        write_frame(&mut send, &report).await.expect("report");
        let acked = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match read_frame::<ToProbe>(&mut recv).await {
                    Ok(Some(ToProbe::Ack { seq })) => return Some(seq),
                    Ok(Some(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
        .ok()
        .flatten();
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        acked
    });
    assert_eq!(acked, Some(1), "the report is committed and acknowledged");
    eventually(
        "the dropped results counted",
        Duration::from_secs(10),
        || (metric(coord.http, "cemwatch_results_dropped_total") == 50.0).then_some(()),
    )
    .expect("counted");
    // The report is committed after the count: wait for its planned result.
    let latest = eventually(
        "the planned result committed",
        Duration::from_secs(10),
        || {
            let probes = get_json(coord.http, "/api/v1/probes");
            let latest =
                probes.as_array()?.iter().find(|p| p["name"] == "mallory")?["latest"].clone();
            latest.get("gateway").is_some().then_some(latest)
        },
    )
    .expect("committed");
    assert!(
        latest.get("gateway").is_some(),
        "the planned check is kept: {latest}"
    );
    assert_eq!(
        latest.as_object().map(|o| o.len()),
        Some(1),
        "no invented check in the fleet view: {latest}"
    );
    let (text, _) = crate::support::scrape(coord.http);
    assert!(
        !text.contains("invented-"),
        "no invented check in the metrics"
    );
}

#[test]
fn renewals_out_of_turn_are_not_issued_and_counted() {
    let _machine = shared();
    let lab = lab();
    let config = write_config(&lab, "");
    let coord = start_coordinator("coordinator", &config);
    let state = lab.dir.path().join("minter");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu,vantage=internet", "minter", "1h"),
        &state,
    );
    let key_pem = std::fs::read_to_string(state.join("probe.key")).expect("key");
    let (_, csr_der) =
        cemwatch_probe::agent::enroll::key_and_csr("minter", Some(&key_pem)).expect("csr");
    let unexpected = "cemwatch_frames_rejected_total{reason=\"unexpected\"}";
    let before = metric(coord.http, unexpected);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A fresh certificate (days from half-life): asking for new ones in a loop gets none.
    let frames = rt.block_on(async {
        let (endpoint, conn, mut send, mut recv) = session(coord.quic, &state, "minter").await;
        for _ in 0..20 {
            let renew = ToCoordinator::Renew {
                csr_der: csr_der.clone(),
            };
            write_frame(&mut send, &renew).await.expect("renew");
        }
        let report = ToCoordinator::Report(Report {
            seq: 1,
            round: None,
            results: vec![],
        });
        write_frame(&mut send, &report).await.expect("report");
        let mut frames = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(frame)) = read_frame::<ToProbe>(&mut recv).await {
                let ack = matches!(frame, ToProbe::Ack { .. });
                frames.push(frame);
                if ack {
                    break;
                }
            }
        })
        .await;
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        frames
    });
    assert!(
        matches!(frames.last(), Some(ToProbe::Ack { seq: 1 })),
        "the session goes on: {frames:?}"
    );
    assert!(
        !frames.iter().any(|f| matches!(f, ToProbe::Renewed { .. })),
        "no certificate minted: {frames:?}"
    );
    assert_eq!(
        metric(coord.http, unexpected) - before,
        20.0,
        "each counted"
    );
}
