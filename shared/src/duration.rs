//! Human durations as operators write them: `500ms`, `5s`, `2m`, `1h`, `7d`, or combined
//! (`1m30s`). A bare number is refused, because "5" could mean seconds or milliseconds.

use std::time::Duration;

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text was empty.
    #[error("empty duration: write a number with a unit, such as 5s, 500ms or 2m")]
    Empty,
    /// A number had no unit after it.
    #[error("duration {0:?} has no unit: write it as 5s, 500ms, 2m, 1h or 7d")]
    MissingUnit(String),
    /// An unknown unit.
    #[error("duration {text:?} has an unknown unit {unit:?}: use ms, s, m, h or d")]
    UnknownUnit {
        /// The whole input.
        text: String,
        /// The unit that was not understood.
        unit: String,
    },
    /// Something that is not a number where a number was expected.
    #[error("duration {0:?} is not a number followed by a unit (such as 5s or 1m30s)")]
    Malformed(String),
    /// The value does not fit.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a human duration such as `5s`, `250ms`, `1m30s`, `24h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(DurationError::Malformed(trimmed.to_string()));
        }
        let (number, after) = rest.split_at(digits);
        let number: u128 = number
            .parse()
            .map_err(|_| DurationError::Overflow(trimmed.to_string()))?;
        let after = after.trim_start();
        let unit_len = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(trimmed.to_string()));
        }
        let (unit, after) = after.split_at(unit_len);
        let millis_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: trimmed.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        total = number
            .checked_mul(millis_per_unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::Overflow(trimmed.to_string()))?;
        rest = after.trim_start();
    }
    let millis = u64::try_from(total).map_err(|_| DurationError::Overflow(trimmed.to_string()))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_and_combinations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 24h "), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn refuses_what_is_ambiguous_or_wrong() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("5"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("5 sec"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(matches!(
            parse_duration("5secs"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }
}
