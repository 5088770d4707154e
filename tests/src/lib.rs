//! The cemwatch test kit: a test PKI (rcgen for modern certificates, the `openssl` command for
//! the legacy ones no modern library will make), real TLS peers on loopback (rustls, and
//! `openssl s_server` for keys rustls refuses to sign with), plain TCP listeners, and network
//! namespaces with nftables for firewall faults.
//!
//! Everything binds to loopback or lives in a namespace the test made itself.

pub mod lab;
pub mod netns;
pub mod peers;
pub mod pki;
pub mod process;
pub mod server;

/// Whether tests that need root and namespaces must run (set by `.ci/run`): a missing
/// prerequisite then fails the test instead of skipping it.
pub fn netns_required() -> bool {
    std::env::var_os("CEMWATCH_REQUIRE_NETNS").is_some_and(|v| v == "1")
}
