//! Names in the fleet: probe names, check names, label keys and values. They become metric
//! labels, file names and log fields, so one rule holds for all of them: 1 to
//! [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_` or `.`.

use std::fmt;

/// The longest name.
pub const MAX_NAME_LEN: usize = 64;

/// A character a name may hold.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// A name breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} must be 1-64 letters, digits, '-', '_' or '.'")]
pub struct NameError(pub String);

/// Checks `name` against the rule.
pub fn check(name: &str) -> Result<(), NameError> {
    if !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(is_name_char) {
        Ok(())
    } else {
        Err(NameError(name.to_string()))
    }
}

/// A probe's name in the fleet (its certificate's common name), valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeName(String);

impl ProbeName {
    /// `name` trimmed, when it follows the rule.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let name = name.trim();
        check(name)?;
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ProbeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_takes_host_names_and_refuses_the_rest() {
        for ok in ["laptop-1", "eu_west.gw", "A", &"x".repeat(64)] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "probe/1",
            "naïve",
            "x\u{1b}[31m",
            &"x".repeat(65),
        ] {
            assert_eq!(check(bad), Err(NameError(bad.to_string())), "{bad:?}");
        }
        assert_eq!(
            ProbeName::parse("  p1 ").map(|n| n.to_string()),
            Ok("p1".into())
        );
    }
}
