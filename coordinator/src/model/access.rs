//! The roles of the HTTP surface, each including the ones before it, in the words Prometheus
//! users know.

use serde::{Deserialize, Serialize};

/// A role, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scrape `/metrics`.
    Metrics,
    /// Read the JSON API and the pages (and scrape).
    Read,
    /// Start rounds (and read, and scrape).
    Operate,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Metrics, Role::Read, Role::Operate];

    /// Its name in configuration and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }

    /// Parses a role's name; `none` is no role.
    pub fn parse_optional(text: &str) -> Result<Option<Role>, String> {
        match text {
            "none" => Ok(None),
            other => Role::ALL
                .into_iter()
                .find(|r| r.as_str() == other)
                .map(Some)
                .ok_or_else(|| {
                    format!("{other:?} is not a role: use none, metrics, read or operate")
                }),
        }
    }
}
