//! `cemwatch-transport` is what the probe and the coordinator share at the I/O boundary, so
//! both ends agree by construction and neither imports the other: frames over a QUIC stream
//! with their limits ([`frame`]), the protocol's close codes and constants ([`protocol`]), the
//! QUIC and TLS set-up ([`quic`], [`tls`]), X.509 helpers ([`x509`]), atomic file writes and
//! PEM ([`fs`]), and what every binary sets up the same way: logging, the shutdown signal, the
//! runtime and terminal colours ([`host`]).
//!
//! The message model and its codec stay in `cemwatch-shared`, which has no sockets and no
//! clock; this crate is the thin layer that moves those frames over quinn.

pub mod frame;
pub mod fs;
pub mod host;
pub mod protocol;
pub mod quic;
pub mod tls;
pub mod x509;
