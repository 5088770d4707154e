//! The `[store]` table: how long reports and events are kept, and how large the store may grow.
//!
//! ```toml
//! [store]
//! keep = "30d"          # reports and events older than this are pruned
//! max_size = "1GiB"     # beyond it the oldest reports go first, whatever their age
//! ```

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{At, HumanDuration};

/// The `[store]` table, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Reports and events older than this are pruned.
    pub keep: Duration,
    /// Bytes of the store in use (pages holding data) beyond which the oldest reports are
    /// pruned whatever their age.
    pub max_size: u64,
}

/// Default of [`StoreConfig::keep`].
pub const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 86_400);
/// Default of [`StoreConfig::max_size`]: half the 2 GiB volume the deploy files give the data
/// directory, so that the WAL, a checkpoint and SQLite's own headroom fit beside it.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// The smallest `max_size` taken.
pub const MIN_MAX_SIZE: u64 = 16 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            keep: DEFAULT_KEEP,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// A size as written: a number of bytes, or a number with `KiB`, `MiB`, `GiB` (or `KB`, `MB`,
/// `GB`, taken as the binary units too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write it like \"512MiB\" or \"2GiB\""))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        "TiB" | "TB" | "T" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use B, KiB, MiB, GiB or TiB"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The `[store]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    keep: Option<Spanned<HumanDuration>>,
    max_size: Option<Spanned<String>>,
}

impl RawStore {
    pub(crate) fn validate(self, at: At<'_>, problems: &mut Vec<String>) -> StoreConfig {
        let mut out = StoreConfig::default();
        if let Some(v) = self.keep {
            let d = v.get_ref().0;
            if d < Duration::from_secs(3600) {
                problems.push(format!(
                    "{}: store.keep: at least 1h (the fleet view and the diagnosis need the recent reports), such as \"30d\"",
                    at(v.span())
                ));
            } else {
                out.keep = d;
            }
        }
        if let Some(v) = self.max_size {
            match parse_size(v.get_ref()) {
                Ok(n) if n >= MIN_MAX_SIZE => out.max_size = n,
                Ok(_) => problems.push(format!(
                    "{}: store.max_size: at least 16MiB, such as \"1GiB\"",
                    at(v.span())
                )),
                Err(e) => problems.push(format!("{}: store.max_size: {e}", at(v.span()))),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_refuse_the_rest() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1PB")
            .expect_err("unit")
            .contains("unknown unit"));
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn the_table_is_validated_with_the_line_and_an_example() {
        let dir = tempfile::tempdir().expect("dir");
        let text = "[store]\nkeep = \"5m\"\nmax_size = \"1MiB\"\n\n[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\n";
        let err = crate::config::Config::from_toml(text, "c.toml", dir.path())
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("c.toml:2: store.keep: at least 1h"), "{err}");
        assert!(
            err.contains("c.toml:3: store.max_size: at least 16MiB"),
            "{err}"
        );
        let good = text.replace("5m", "7d").replace("1MiB", "2GiB");
        let c = crate::config::Config::from_toml(&good, "c.toml", dir.path()).expect("valid");
        assert_eq!(c.store.keep, Duration::from_secs(7 * 86_400));
        assert_eq!(c.store.max_size, 2 << 30);
    }
}
