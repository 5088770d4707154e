//! Enrolment tokens: single-use, expiring, and carrying the SHA-256 pin of the coordinator's
//! CA, so a probe that enrols with one trusts exactly that coordinator and nothing else.
//!
//! Text form: `cwt1.<id>.<secret>.<pin>` with a 16-hex-digit id, a 32-hex-digit secret and
//! the 64-hex-digit SHA-256 of the CA certificate (DER). The coordinator stores only a hash of
//! the secret.

use std::fmt;
use std::str::FromStr;

/// An enrolment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// Public id (looked up in the coordinator's store).
    pub id: String,
    /// Secret part (never stored in clear by the coordinator).
    pub secret: String,
    /// SHA-256 of the coordinator CA certificate, DER.
    pub ca_pin: [u8; 32],
}

/// Why a token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not the `cwt1.` form.
    #[error("not a cemwatch enrolment token: it must start with \"cwt1.\"; create one with `cemwatch token create`")]
    Prefix,
    /// Wrong number or size of parts.
    #[error("the enrolment token is truncated or damaged ({0}); copy the whole token printed by `cemwatch token create`")]
    Shape(&'static str),
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl FromStr for EnrollToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let rest = text.strip_prefix("cwt1.").ok_or(TokenError::Prefix)?;
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 3 {
            return Err(TokenError::Shape("it must have four dot-separated parts"));
        }
        if !is_hex(parts[0], 16) {
            return Err(TokenError::Shape("the id must be 16 hex digits"));
        }
        if !is_hex(parts[1], 32) {
            return Err(TokenError::Shape("the secret must be 32 hex digits"));
        }
        if !is_hex(parts[2], 64) {
            return Err(TokenError::Shape("the CA pin must be 64 hex digits"));
        }
        let mut ca_pin = [0u8; 32];
        for (i, pair) in parts[2].as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair)
                .map_err(|_| TokenError::Shape("the CA pin is not hex"))?;
            ca_pin[i] = u8::from_str_radix(hex, 16)
                .map_err(|_| TokenError::Shape("the CA pin is not hex"))?;
        }
        Ok(Self {
            id: parts[0].to_ascii_lowercase(),
            secret: parts[1].to_ascii_lowercase(),
            ca_pin,
        })
    }
}

impl fmt::Display for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cwt1.{}.{}.", self.id, self.secret)?;
        for b in self.ca_pin {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "EnrollToken {{ id: {}, secret: <hidden> }}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_the_secret() {
        let t = EnrollToken {
            id: "0123456789abcdef".into(),
            secret: "00112233445566778899aabbccddeeff".into(),
            ca_pin: [0xab; 32],
        };
        let text = t.to_string();
        assert!(text.starts_with("cwt1.0123456789abcdef."));
        assert_eq!(text.parse::<EnrollToken>(), Ok(t.clone()));
        assert!(!format!("{t:?}").contains("0011223344"));
    }

    #[test]
    fn damaged_tokens_say_so() {
        assert_eq!("abc".parse::<EnrollToken>(), Err(TokenError::Prefix));
        assert!(matches!(
            "cwt1.01.02".parse::<EnrollToken>(),
            Err(TokenError::Shape(_))
        ));
        let good = format!(
            "cwt1.{}.{}.{}",
            "a".repeat(16),
            "b".repeat(32),
            "c".repeat(64)
        );
        assert!(good.parse::<EnrollToken>().is_ok());
        let cut = &good[..good.len() - 1];
        assert!(matches!(
            cut.parse::<EnrollToken>(),
            Err(TokenError::Shape(_))
        ));
    }
}
