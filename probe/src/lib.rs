//! `cemwatch-probe` checks a CEM Internet Gateway the way a managed endpoint on the internet
//! sees it: DNS, TCP (refused, filtered or unreachable told apart), TLS, the served
//! certificate against the CEM requirements and the policy thumbprint, and whether an unmoved
//! listener still answers on a legacy port. Each defect is a stable finding code with the
//! guide's remedy. `inspect` checks a certificate file (.pfx, PEM, DER) against the same
//! requirements before it is imported. On a managed endpoint, `run --agent-log` also follows
//! the management agent's own log and reports its CEM state (`agentlog`).
//!
//! The crate is small on purpose: it runs on laptops and branch-office machines, so it has no
//! HTTP server and no database.

pub mod agent;
pub mod agentlog;
pub mod certfile;
pub mod check;
pub mod cli;
pub mod inspect;
mod render;
