//! The QUIC listener's sockets: one UDP socket per core sharing the port (`SO_REUSEPORT`), so
//! that receiving, routing and sending packets runs on every core instead of one endpoint's
//! task. The kernel sends every datagram of one 4-tuple (one probe's path) to the same socket,
//! so a connection lives in one endpoint; a probe whose NAT rebinds its port mid-connection
//! lands on another socket, whose endpoint does not know the connection: the probe sees it end
//! and reconnects (with one socket, quinn would follow the new path instead).

use std::net::SocketAddr;

/// Receive buffer asked for each QUIC socket. A fleet reconnecting at once sends thousands of
/// 1,200-byte Initial packets within milliseconds; the kernel's default buffer (about 208 KiB)
/// drops most of them before the coordinator sees them, and each drop costs a probe a
/// retransmission timeout. The kernel caps the request at `net.core.rmem_max`.
pub const QUIC_RECV_BUFFER: usize = 16 << 20;

/// Send buffer asked for each QUIC socket (a round's requests leave in bursts).
pub const QUIC_SEND_BUFFER: usize = 8 << 20;

/// How many sockets `sockets = 0` means: one per core this process may run on.
pub fn sockets_for_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Binds `count` UDP sockets to `addr` (port 0: a free port, the same for all), with
/// `SO_REUSEPORT` when more than one, and large buffers. The first socket's address is the
/// listener's.
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let count = count.max(1);
    if count > 1 && addr.port() != 0 {
        // A socket without SO_REUSEPORT cannot share the port: this fails when another
        // process (another coordinator) holds it, which would otherwise silently take half of
        // the probes' packets.
        drop(std::net::UdpSocket::bind(addr)?);
    }
    let mut out = Vec::with_capacity(count);
    let mut at = addr;
    for _ in 0..count {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if at.is_ipv6() {
            // As std binds it: an IPv6 address takes IPv4-mapped traffic only when asked.
            let _ = socket.set_only_v6(true);
        }
        if count > 1 {
            #[cfg(unix)]
            socket.set_reuse_port(true)?;
        }
        set_buffers(&socket);
        socket.bind(&at.into())?;
        let socket: std::net::UdpSocket = socket.into();
        if out.is_empty() {
            at = socket.local_addr()?;
        }
        out.push(socket);
    }
    Ok(out)
}

fn set_buffers(socket: &socket2::Socket) {
    // The kernel caps both at net.core.rmem_max / wmem_max (deploy/ raises them); with one
    // socket per core the coordinator holds that many buffers.
    let _ = socket.set_recv_buffer_size(QUIC_RECV_BUFFER);
    let _ = socket.set_send_buffer_size(QUIC_SEND_BUFFER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_sockets_share_one_port_and_each_takes_datagrams() {
        let sockets = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 3).expect("bind");
        assert_eq!(sockets.len(), 3);
        let port = sockets[0].local_addr().expect("addr").port();
        assert_ne!(port, 0);
        for s in &sockets {
            assert_eq!(s.local_addr().expect("addr").port(), port);
            s.set_nonblocking(true).expect("nonblocking");
        }
        // Datagrams from many source ports are spread by the kernel's hash: every one lands in
        // exactly one of the sockets.
        let senders: Vec<_> = (0..64)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("sender"))
            .collect();
        for s in &senders {
            s.send_to(b"x", ("127.0.0.1", port)).expect("send");
        }
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got < senders.len() && std::time::Instant::now() < deadline {
            for s in &sockets {
                let mut buf = [0u8; 8];
                while s.recv_from(&mut buf).is_ok() {
                    got += 1;
                }
            }
        }
        assert_eq!(got, senders.len());
    }

    #[test]
    fn a_port_held_by_another_group_of_sockets_is_refused() {
        let one = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 1).expect("bind");
        let addr = one[0].local_addr().expect("addr");
        assert!(bind(addr, 1).is_err(), "the port is taken");
        let group = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 2).expect("bind");
        let addr = group[0].local_addr().expect("addr");
        assert!(
            bind(addr, 2).is_err(),
            "a second group may not join the first one's port"
        );
        drop(group);
        assert_eq!(bind(addr, 2).expect("free again").len(), 2);
    }
}
