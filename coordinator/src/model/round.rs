//! `ProbeNow` rounds: what was asked and what came back, and how the API reports a round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use cemwatch_shared::Thumbprint;

use crate::model::latest::Latest;

/// A `ProbeNow` round and what came back.
#[derive(Debug, Clone)]
pub struct Round {
    /// Round id.
    pub id: u64,
    /// The check.
    pub check: String,
    /// Start, Unix ms.
    pub started_ms: i64,
    /// The thumbprint the probes must see, if any.
    pub expect_thumbprint: Option<Thumbprint>,
    /// The port where the listener must answer, if any.
    pub expect_port: Option<u16>,
    /// Probes asked, with their site (names only: a round of 100,000 probes keeps about
    /// 100,000 × (name + site + 48 bytes of tree node), some 8 MB, not a copy of every label).
    pub asked: BTreeMap<String, String>,
    /// Their results in this round.
    pub results: BTreeMap<String, Latest>,
}

/// Body of `POST /api/v1/rounds`.
#[derive(Debug, Deserialize, Serialize)]
pub struct RoundRequest {
    /// The check to run.
    pub check: String,
    /// The thumbprint the probes must see (as pasted; SHA-1 or SHA-256).
    pub expect_thumbprint: Option<String>,
    /// The port where the gateway must answer.
    pub expect_port: Option<u16>,
}

/// A probe that answered the round without confirming the expectation.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct Dissenter {
    /// Probe.
    pub probe: String,
    /// Site.
    pub site: String,
    /// Why, as finding codes (`thumbprint_mismatch`, `wrong_port`, `tcp_filtered`, ...).
    pub codes: Vec<String>,
    /// The certificate it saw.
    pub thumbprint: Option<String>,
    /// The port it checked and what TCP did there.
    pub port: u16,
    /// TCP outcome.
    pub tcp_state: String,
    /// The nodes (addresses of the name) where it saw what was not expected.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// A node (address of the name) that some answers of a round dissent at.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct DissentingNode {
    /// The address.
    pub address: String,
    /// Why, as finding codes.
    pub codes: Vec<String>,
    /// The certificates seen there.
    pub thumbprints: Vec<String>,
    /// The probes dissenting there.
    pub probes: Vec<String>,
}

/// Dissenters of one site with one code, and what to do.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct DissentGroup {
    /// Site.
    pub site: String,
    /// Code.
    pub code: String,
    /// Probes.
    pub probes: Vec<String>,
    /// Remedy.
    pub remedy: String,
}

/// A round as the API reports it.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct RoundStatus {
    /// Round id.
    pub round: u64,
    /// Check.
    pub check: String,
    /// Start, Unix ms.
    pub started_at_ms: i64,
    /// Expected thumbprint.
    pub expect_thumbprint: Option<String>,
    /// Expected port.
    pub expect_port: Option<u16>,
    /// Connected probes that run the check, all asked.
    pub eligible: u64,
    /// Probes that answered.
    pub reported: u64,
    /// Probes that confirmed the expectation.
    pub confirmed: u64,
    /// Probes that answered without confirming it.
    pub dissenting: u64,
    /// Probes not answered yet.
    pub pending: Vec<String>,
    /// The dissenters.
    pub dissenters: Vec<Dissenter>,
    /// Dissenters by site and code, with the remedy.
    pub groups: Vec<DissentGroup>,
    /// The nodes the dissent is at, when the name has several addresses and some confirm.
    #[serde(default)]
    pub nodes: Vec<DissentingNode>,
}
