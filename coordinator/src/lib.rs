//! `cemwatch-coordinator` will hold the fleet's view of the gateway: the QUIC server probes
//! report to, the enrolment CA, aggregation and fleet diagnosis, Prometheus metrics, the JSON
//! API and the admin commands (`serve`, `status`, `verify`, `token`, `demo`).
//!
//! Until the fleet lands (issue 4) the crate only names what is coming, so that the binary
//! exists and says so plainly instead of failing obscurely.

/// What the `cemwatch` binary says until the coordinator lands.
pub const NOT_YET: &str =
    "cemwatch: the coordinator (serve, status, verify, token, demo) is not built yet; \
use `cemwatch-probe check HOST[:PORT]` to check a gateway from this machine";
