//! A flood on loopback, bounded in count and time, while three real probes report once a
//! second: from one source (127.0.0.2) thousands of QUIC connection attempts, each one that
//! gets through sending a malformed frame, UDP garbage at the QUIC port, and an enrolled probe (from
//! 127.0.0.3) pushing reports as fast as it can, ignoring the protocol's window. The real probes must keep
//! reporting; their report latency (produced on the probe → committed in the store) is
//! printed before and during the flood, with the coordinator's memory (VmRSS) before, at the
//! peak during and after. The limits under test are set low in the configuration so that they
//! bite within seconds.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cemwatch_shared::wire::{self, Report, ToCoordinator};

use crate::support::*;

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(10);
/// Connection attempts, spread evenly over the flood (500 per second).
const ATTEMPTS: u64 = 5000;
/// Attempts in flight at once.
const CONCURRENCY: usize = 48;
/// UDP datagrams of garbage, spread over the flood (3000 per second).
const GARBAGE: u64 = 30_000;
/// Reports the hostile probe pushes at most.
const PUSHED_REPORTS: u64 = 2000;
const SOURCE: &str = "127.0.0.2";
/// Where the hostile probe connects from (its own source: the flood's is rate limited).
const HOSTILE_SOURCE: &str = "127.0.0.3";

const LIMITS: &str = "[limits]\nmax_connections = 1000\nnew_connections_per_second = 5\nnew_connections_burst = 20\naddress_validation = \"auto\"\nretry_above_per_second = 50\nreports_per_second = 20\nreport_burst = 40\n";

#[derive(Debug, Default)]
struct Tally {
    attempts: AtomicU64,
    refused: AtomicU64,
    handshakes: AtomicU64,
    closed_bad_frame: AtomicU64,
    other: AtomicU64,
}

fn malformed_frame(i: u64) -> Vec<u8> {
    match i % 4 {
        // A length over the limit.
        0 => vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        // An empty frame.
        1 => vec![0, 0, 0, 0],
        // Garbage of the announced length.
        2 => {
            let mut f = vec![0, 0, 0, 16];
            f.extend((0..16).map(|b| (b as u64 * 37 + i) as u8));
            f
        }
        // Another protocol version.
        _ => {
            let mut f = vec![0, 0, 0, 2];
            f.extend([9, 0]);
            f
        }
    }
}

async fn one_attempt(endpoint: quinn::Endpoint, quic: SocketAddr, i: u64, tally: Arc<Tally>) {
    tally.attempts.fetch_add(1, Ordering::Relaxed);
    let run = async {
        let connecting = endpoint
            .connect_with(raw_client_config(None), quic, wire::SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let conn = connecting.await.map_err(|e| e.to_string())?;
        tally.handshakes.fetch_add(1, Ordering::Relaxed);
        let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&malformed_frame(i))
            .await
            .map_err(|e| e.to_string())?;
        let reason = conn.closed().await;
        Ok::<String, String>(reason.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(3), run).await {
        Ok(Ok(reason)) if reason.contains("bad frame") => {
            tally.closed_bad_frame.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(e)) if e.to_lowercase().contains("refused") => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            tally.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Thousands of connection attempts from one source, paced over the flood, bounded in count
/// and time.
async fn connection_flood(quic: SocketAddr, started: Instant, tally: Arc<Tally>) {
    let deadline = started + FLOOD;
    let mut endpoints = Vec::new();
    for _ in 0..4 {
        endpoints.push(
            quinn::Endpoint::client(format!("{SOURCE}:0").parse().expect("addr"))
                .expect("flood endpoint"),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0u64;
    while i < ATTEMPTS && Instant::now() < deadline {
        tokio::time::sleep_until((started + FLOOD.mul_f64(i as f64 / ATTEMPTS as f64)).into())
            .await;
        while tasks.len() >= CONCURRENCY {
            let _ = tasks.join_next().await;
        }
        let endpoint = endpoints[(i % 4) as usize].clone();
        tasks.spawn(one_attempt(endpoint, quic, i, tally.clone()));
        i += 1;
    }
    while tasks.join_next().await.is_some() {}
    for e in endpoints {
        e.close(0u32.into(), b"done");
    }
}

/// UDP garbage and QUIC-looking Initial packets that do not decrypt, paced over the flood,
/// bounded in count and time.
fn garbage_flood(quic: SocketAddr, started: Instant) -> u64 {
    let deadline = started + FLOOD;
    let socket = UdpSocket::bind(format!("{SOURCE}:0")).expect("udp");
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut sent = 0;
    let mut packet = vec![0u8; 1200];
    while sent < GARBAGE && Instant::now() < deadline {
        for b in packet.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        if sent % 2 == 0 {
            // Long header, Initial, QUIC v1, then garbage.
            packet[0] = 0xc3;
            packet[1..5].copy_from_slice(&1u32.to_be_bytes());
            packet[5] = 8;
        }
        if socket.send_to(&packet, quic).is_ok() {
            sent += 1;
        }
        if sent % 100 == 0 {
            let due = started + FLOOD.mul_f64(sent as f64 / GARBAGE as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    sent
}

/// An enrolled probe that pushes reports without waiting for acknowledgements.
async fn report_flood(quic: SocketAddr, identity: Identity) -> (u64, String) {
    let endpoint = quinn::Endpoint::client(format!("{HOSTILE_SOURCE}:0").parse().expect("addr"))
        .expect("endpoint");
    let run = async {
        let conn = endpoint
            .connect_with(raw_client_config(Some(identity)), quic, wire::SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        cemwatch_transport::frame::write_frame(
            &mut send,
            &ToCoordinator::Hello {
                probe: "hostile".into(),
                agent_version: "flood".into(),
                labels: Default::default(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut pushed = 0;
        for seq in 1..=PUSHED_REPORTS {
            let report = ToCoordinator::Report(Report {
                seq,
                round: None,
                results: vec![],
            });
            if cemwatch_transport::frame::write_frame(&mut send, &report)
                .await
                .is_err()
            {
                break;
            }
            pushed += 1;
        }
        let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "still open".into());
        Ok::<_, String>((pushed, reason))
    };
    let out = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
        .unwrap_or_else(|e| (0, e));
    endpoint.close(0u32.into(), b"done");
    out
}

#[test]
fn real_probes_keep_reporting_through_a_flood_and_memory_stays_bounded() {
    // Latency and memory under a flood: no other process test runs meanwhile (each binary ran
    // alone when this was one of its own).
    let _machine = crate::support::alone();
    let lab = lab();
    let config = write_config(&lab, LIMITS);
    let coord = start_coordinator("coordinator", &config);
    let pid = coord.proc.pid();

    let probes = reporting::start(&lab, &coord, &config, "site=eu-west");
    let hostile_state = lab.dir.path().join("hostile");
    enroll_ok(
        coord.quic,
        &token(&config, "site=elsewhere", "hostile", "1h"),
        &hostile_state,
    );
    let calm = reporting::calm();
    let rss_before = rss_kib(pid).expect("rss");

    // The flood.
    let tally = Arc::new(Tally::default());
    let flood_from = reporting::now_ms();
    let started = Instant::now();
    let deadline = started + FLOOD;
    let sampler = reporting::peak_rss(pid, deadline + Duration::from_secs(1));
    let garbage = {
        let quic = coord.quic;
        std::thread::spawn(move || garbage_flood(quic, started))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (pushed, hostile_reason) = rt.block_on(async {
        let flood = tokio::spawn(connection_flood(coord.quic, started, tally.clone()));
        let reports = tokio::spawn(report_flood(coord.quic, identity_of(&hostile_state)));
        let _ = flood.await;
        reports.await.unwrap_or((0, "panicked".into()))
    });
    let datagrams = garbage.join().expect("garbage thread");
    let flood_took = started.elapsed();
    let flood_to = reporting::now_ms();
    let rss_peak = sampler.join().expect("sampler");
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = rss_kib(pid).expect("rss after");

    let latency = reporting::Latency::measure(&lab, calm, (flood_from, flood_to));
    let m = |s: &str| metric(coord.http, s);
    let rate_limited = m("cemwatch_connections_refused_total{reason=\"rate_limited\"}");
    let report_rate = m("cemwatch_connections_refused_total{reason=\"report_rate\"}");
    let retries = m("cemwatch_quic_retries_total");
    let throttled = m("cemwatch_reports_throttled_total");
    let frames: f64 = ["too_large", "empty", "version", "malformed"]
        .iter()
        .map(|r| m(&format!("cemwatch_frames_rejected_total{{reason=\"{r}\"}}")))
        .sum();
    let hostile_stored = count(
        &store(&lab),
        "SELECT COUNT(*) FROM reports WHERE probe = 'hostile'",
        [],
    );

    println!(
        "\nflood from {SOURCE} for {:.1} s:",
        flood_took.as_secs_f64()
    );
    println!(
        "  connection attempts={} refused={} handshakes={} closed_for_bad_frame={} other={}; udp garbage datagrams={datagrams}",
        tally.attempts.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.handshakes.load(Ordering::Relaxed),
        tally.closed_bad_frame.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    println!(
        "  hostile probe pushed {pushed} reports: {hostile_stored} stored, connection closed: {hostile_reason}"
    );
    println!(
        "  coordinator counters: rate_limited={rate_limited} quic_retries={retries} frames_rejected={frames} reports_throttled={throttled} report_rate_closes={report_rate}"
    );
    println!("{}", latency.line());
    println!(
        "  coordinator VmRSS: before={} MiB peak during={} MiB after={} MiB",
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024
    );

    // The limits bit, and said so.
    assert!(
        tally.attempts.load(Ordering::Relaxed) >= 1000,
        "a real flood: {tally:?}"
    );
    assert!(
        rate_limited >= 100.0,
        "the per-source limit refused: {rate_limited}"
    );
    assert!(retries >= 1.0, "address validation kicked in: {retries}");
    assert!(frames >= 1.0, "malformed frames were counted: {frames}");
    assert!(
        report_rate >= 1.0,
        "the report flood was cut off: {hostile_reason}"
    );
    assert!(
        (hostile_stored as u64) < pushed,
        "the hostile probe did not get everything in: {hostile_stored} of {pushed}"
    );
    // The real probes kept reporting, in time.
    latency.assert_kept_reporting(flood_took.as_secs() as i64, "flood");
    // Memory stayed bounded (generously: the flood holds at most 1000 connections).
    assert!(
        rss_peak < rss_before + 256 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
    assert!(rss_after < rss_before + 256 * 1024);
    let (status, _) = cemwatch_tests::process::http_get(coord.http, "/ready").expect("ready");
    assert_eq!(status, 200, "the coordinator still serves");
    drop(probes);
}
