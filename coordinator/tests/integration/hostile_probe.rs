//! What one enrolled probe (a stolen key, a hostile local administrator) can do to the
//! coordinator (issue 18): results for 5,000 checks outside its plan are dropped and counted, so
//! it cannot grow the fleet view, the metrics' label sets or the events with names of its own
//! (its report is still committed and acknowledged); 5,000 renewals out of turn mint no
//! certificate; 5,000 agent states and full-size reports sent without waiting leave other
//! probes' latency and the coordinator's memory bounded.

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
    let invented: Vec<String> = (0..5_000).map(|i| format!("invented-{i}")).collect();
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
        || (metric(coord.http, "cemwatch_results_dropped_total") == 5_000.0).then_some(()),
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
        for _ in 0..5_000 {
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
        5_000.0,
        "each of the 5,000 counted"
    );
}

/// One enrolled probe sends 5,000 agent states as fast as it can, then full-size reports
/// (about 1 MiB each) without waiting for acknowledgements, for 10 s, while a real probe
/// reports once a second: the agent states are paced (at most one recorded per 2 s, the rest
/// counted), the reports queue within the coordinator's byte budgets (its memory stays
/// bounded), and the real probe's report latency stays what it was.
#[test]
fn a_probe_flooding_agent_states_and_full_size_reports_harms_no_other_probe() {
    use crate::support::reporting::{self, now_ms};
    use cemwatch_shared::{AgentCemState, AgentCondition, AgentLogStatus, SinceSource};
    use std::time::Instant;
    let _machine = crate::support::alone();
    let lab = lab();
    let config = write_config(
        &lab,
        "[limits]\nreports_per_second = 5\nreport_burst = 10\n",
    );
    let coord = start_coordinator("coordinator", &config);
    let pid = coord.proc.pid();
    let _real = reporting::start(&lab, &coord, &config, "site=eu");
    let mallory = lab.dir.path().join("mallory");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu", "mallory", "1h"),
        &mallory,
    );
    let calm = reporting::calm();
    let rss_before = crate::support::rss_kib(pid).expect("rss");

    // Just under 1 MiB (the frame limit): 5,800 results of the gateway check.
    let big = |seq: u64| {
        ToCoordinator::Report(Report {
            seq,
            round: None,
            results: (0..5_800)
                .map(|_| CheckReport {
                    check: "gateway".into(),
                    produced_at_ms: 1,
                    result: ok_result(),
                })
                .collect(),
        })
    };
    let size = wire::encode(&big(1)).expect("encode").len();
    let flood_from = now_ms();
    let started = Instant::now();
    let sampler = reporting::peak_rss(pid, started + Duration::from_secs(11));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (states_sent, reports_sent, ended) = rt.block_on(async {
        let (_endpoint, conn, mut send, mut recv) = session(coord.quic, &mallory, "mallory").await;
        // Drain what the coordinator says (plan, acks) so its sends never block.
        tokio::spawn(
            async move { while let Ok(Some(_)) = read_frame::<ToProbe>(&mut recv).await {} },
        );
        let mut states = 0u64;
        for i in 0..5_000u64 {
            let state = AgentCemState {
                condition: AgentCondition::ConnectTimeout {
                    gateway: Some("gateway.example.com".into()),
                    port: Some(443),
                    attempts: i as u32,
                },
                since_ms: 1_700_000_000_000 + i,
                since_source: SinceSource::Logged,
                line: Some(format!("WARN Connection timeout {i}")),
                log: AgentLogStatus::Following,
            };
            if write_frame(&mut send, &ToCoordinator::AgentState(state))
                .await
                .is_err()
            {
                break;
            }
            states += 1;
        }
        let mut reports = 0u64;
        let mut seq = 1;
        let ended = loop {
            if started.elapsed() > Duration::from_secs(10) {
                break "still open after 10 s".to_string();
            }
            match tokio::time::timeout(Duration::from_secs(2), write_frame(&mut send, &big(seq)))
                .await
            {
                Ok(Ok(())) => {
                    reports += 1;
                    seq += 1;
                }
                Ok(Err(e)) => break format!("closed: {e}"),
                Err(_) => {} // flow control holds it back: keep trying until the time is up
            }
        };
        conn.close(0u32.into(), b"done");
        (states, reports, ended)
    });
    let flood_to = now_ms();
    let rss_peak = sampler.join().expect("sampler");
    std::thread::sleep(Duration::from_secs(2));

    let latency = reporting::Latency::measure(&lab, calm, (flood_from, flood_to));
    let paced = metric(
        coord.http,
        "cemwatch_frames_rejected_total{reason=\"paced\"}",
    );
    let stored = crate::support::count(
        &crate::support::store(&lab),
        "SELECT COUNT(*) FROM reports WHERE probe = 'mallory'",
        [],
    );
    println!(
        "\nmallory sent {states_sent} agent states ({paced} paced, not written) and {reports_sent} reports of {} KiB in 10 s ({stored} stored; {ended})",
        size / 1024
    );
    println!("{}", latency.line());
    println!(
        "  coordinator VmRSS: before={} MiB peak={} MiB",
        rss_before / 1024,
        rss_peak / 1024
    );
    assert!(size > 512 * 1024, "full-size reports: {size} bytes");
    assert_eq!(states_sent, 5_000);
    assert!(
        paced >= 4_990.0,
        "at most one agent state per 2 s was written: {paced} of 5000 paced"
    );
    latency.assert_kept_reporting(10, "the hostile probe's flood");
    assert!(
        rss_peak < rss_before + 400 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
}
