//! What a peer without a client certificate can hold at the coordinator (issue 18): no QUIC
//! datagrams at all (quinn's default would buffer up to 1.25 MB of unread ones per
//! connection); a connection window of its first frame only, not the session's 1.1 MiB; 3 s to
//! send that frame; and at most `max_unauthenticated` such connections at once, while probes
//! with certificates keep connecting.

use std::time::{Duration, Instant};

use cemwatch_shared::wire::{self, ToCoordinator};

use crate::support::{
    enroll_ok, identity_of, lab, metric, raw_client_config, shared, start_coordinator, token,
    write_config,
};

/// A connected peer without a client certificate.
async fn unauthenticated(
    endpoint: &quinn::Endpoint,
    quic: std::net::SocketAddr,
) -> quinn::Connection {
    let connecting = endpoint
        .connect_with(raw_client_config(None), quic, wire::SERVER_NAME)
        .expect("connect");
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("handshake in time")
        .expect("handshake")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_silent_unauthenticated_peer_is_closed_after_its_first_frame_deadline() {
    let _machine = shared();
    let lab = lab();
    let config = write_config(&lab, "");
    let coord = start_coordinator("coordinator", &config);
    runtime().block_on(async {
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        let started = Instant::now();
        let conn = unauthenticated(&endpoint, coord.quic).await;
        let reason = tokio::time::timeout(Duration::from_secs(8), conn.closed())
            .await
            .expect("closed by the coordinator within 8 s");
        let took = started.elapsed();
        println!("a silent unauthenticated peer was closed after {took:?}: {reason}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(6),
            "closed at the 3 s deadline, not the session's 10 s: {took:?}"
        );
    });
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_connections_refused_total{reason=\"first_frame_timeout\"}"
        ),
        1.0
    );
}

#[test]
fn unauthenticated_peers_have_their_own_cap_and_probes_still_connect() {
    let _machine = shared();
    let lab = lab();
    let config = write_config(&lab, "[limits]\nmax_unauthenticated = 4\n");
    let coord = start_coordinator("coordinator", &config);
    let state = lab.dir.path().join("p1");
    enroll_ok(coord.quic, &token(&config, "site=lyon", "p1", "1h"), &state);
    let probe_identity = identity_of(&state);
    let (closed_at_once, probe_ok) = runtime().block_on(async {
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(unauthenticated(&endpoint, coord.quic).await);
        }
        // The coordinator closes those beyond the cap at once, not at their deadline.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let closed_at_once = held.iter().filter(|c| c.close_reason().is_some()).count();
        // A probe with its certificate is not one of them.
        let outcome = crate::support::attempt(
            &endpoint,
            coord.quic,
            Some(probe_identity),
            "p1",
            ToCoordinator::Report(wire::Report {
                seq: 1,
                round: None,
                results: vec![wire::CheckReport {
                    check: "gateway".into(),
                    produced_at_ms: 1,
                    result: crate::support::fixtures::ok_result(),
                }],
            }),
        )
        .await;
        (closed_at_once, outcome)
    });
    println!("10 unauthenticated peers, cap 4: {closed_at_once} closed at once; the enrolled probe: {probe_ok:?}");
    assert_eq!(closed_at_once, 6, "all beyond the cap of 4, and no more");
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_connections_refused_total{reason=\"unauthenticated_limit\"}"
        ),
        6.0
    );
    assert!(
        matches!(probe_ok, crate::support::Outcome::Accepted(_)),
        "the enrolled probe got in: {probe_ok:?}"
    );
    // Once they are gone, enrolment works again.
    let later = lab.dir.path().join("p2");
    std::thread::sleep(Duration::from_secs(4));
    enroll_ok(coord.quic, &token(&config, "site=lyon", "p2", "1h"), &later);
}

#[test]
fn an_unauthenticated_peer_can_send_its_first_frame_and_little_more() {
    let _machine = shared();
    let lab = lab();
    let config = write_config(&lab, "");
    let coord = start_coordinator("coordinator", &config);
    let sent = runtime().block_on(async {
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        let conn = unauthenticated(&endpoint, coord.quic).await;
        let before = conn.stats().udp_tx.bytes;
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        // A well-formed Enroll with a token nobody made, then a megabyte the coordinator never
        // asked for, as fast as the connection lets it go.
        let enroll = ToCoordinator::Enroll {
            token: "cwt1.not-a-token".into(),
            name: "intruder".into(),
            csr_der: vec![0u8; 512],
            agent_version: "test".into(),
        };
        cemwatch_transport::frame::write_frame(&mut send, &enroll)
            .await
            .expect("enroll");
        let junk = vec![0x5au8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(2);
        for _ in 0..16 {
            if Instant::now() > deadline {
                break;
            }
            if tokio::time::timeout(Duration::from_millis(500), send.write_all(&junk))
                .await
                .is_err()
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.stats().udp_tx.bytes - before
    });
    println!(
        "an unauthenticated peer trying to send 1 MiB after its Enroll got {} KiB onto the wire",
        sent / 1024
    );
    assert!(
        sent < 256 * 1024,
        "the coordinator let it send {sent} bytes: more than its first frame's window"
    );
}

#[test]
fn the_coordinator_offers_no_datagrams_to_any_peer() {
    let _machine = shared();
    let lab = lab();
    let config = write_config(&lab, "");
    let coord = start_coordinator("coordinator", &config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        let connecting = endpoint
            .connect_with(raw_client_config(None), coord.quic, wire::SERVER_NAME)
            .expect("connect");
        let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .expect("handshake in time")
            .expect("an unauthenticated peer completes the handshake (to enrol)");
        assert_eq!(
            conn.max_datagram_size(),
            None,
            "the coordinator advertises no datagram support"
        );
        let sent = conn.send_datagram(vec![0u8; 1000].into());
        assert!(
            matches!(sent, Err(quinn::SendDatagramError::UnsupportedByPeer)),
            "a datagram is refused before it leaves: {sent:?}"
        );
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
    });
}
