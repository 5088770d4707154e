//! What a peer without a client certificate can hold at the coordinator (issue 18, first part):
//! no QUIC datagrams at all. quinn's default would accept them and buffer up to 1.25 MB of
//! unread datagrams per connection, which nothing in the protocol reads; the coordinator does
//! not offer them, so a peer cannot park memory that way.

use std::time::Duration;

use cemwatch_shared::wire;

use crate::support::{lab, raw_client_config, shared, start_coordinator, write_config};

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
