//! One probe as the coordinator sees it: labels, connection, latest results, and the CEM state
//! of the management agent beside it.

use std::collections::BTreeMap;

use serde::Serialize;

use cemwatch_shared::wire::Labels;
use cemwatch_shared::AgentCemState;

use crate::model::latest::Latest;

/// One probe as the coordinator sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeView {
    /// Labels (site, vantage, ...).
    pub labels: Labels,
    /// A live connection right now.
    pub connected: bool,
    /// Last contact, Unix ms.
    pub last_seen_ms: i64,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Revoked.
    pub revoked: bool,
    /// Latest result per check.
    pub latest: BTreeMap<String, Latest>,
    /// When the current connection began, Unix ms (0: not connected since the start).
    pub connected_since_ms: i64,
    /// The latest CEM state of the management agent on the probe's endpoint, when it sent one.
    pub agent: Option<AgentView>,
}

/// The latest agent state of one probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    /// What the probe sent (bounded by [`AgentCemState::bounded`]).
    pub state: AgentCemState,
    /// When the coordinator received it, Unix ms.
    pub received_ms: i64,
}
