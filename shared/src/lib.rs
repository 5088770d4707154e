//! `cemwatch-shared` holds what the probe and the coordinator agree on: the domain model of a
//! gateway check (targets, expectations, results), the stable finding codes with their
//! severities and remedies, and the parsing of thumbprints and durations as people paste them.
//!
//! It has no sockets, no clock and no runtime: everything here is deterministic, so it can be
//! unit-tested exhaustively and fuzzed.

pub mod agent_state;
pub mod duration;
pub mod finding;
pub mod model;
pub mod name;
pub mod printable;
pub mod thumbprint;
pub mod token;
pub mod view;
pub mod wire;

pub use agent_state::{AgentCemState, AgentCondition, AgentLogStatus, SinceSource};
pub use finding::{Finding, FindingCode, Severity};
pub use model::{
    AddressFamily, AddressResult, CertificateInfo, CheckResult, DnsResult, DnsSource, Durations,
    Expectations, LegacyPortResult, SkippedAddress, Target, TcpResult, TcpState, TlsResult,
};
pub use name::ProbeName;
pub use thumbprint::{Thumbprint, ThumbprintError, ThumbprintKind};
