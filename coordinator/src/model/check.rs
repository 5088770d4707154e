//! What a check is for the fleet analysis: its role and the diagnosis thresholds.

use serde::{Deserialize, Serialize};

/// What a check watches: the agent-facing gateway listener, or what the gateway needs from
/// inside (the SMP's 4726 and 443, checked from the DMZ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The gateway listener agents connect to.
    #[default]
    Gateway,
    /// The SMP as the gateway reaches it from the DMZ.
    Smp,
}

/// Thresholds of the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Fraction of probes that must agree for a fleet-wide diagnosis (default 0.5).
    pub quorum: f64,
    /// Largest fraction of sites whose failures still count as local (default 0.5).
    pub local_sites_max: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            quorum: 0.5,
            local_sites_max: 0.5,
        }
    }
}
