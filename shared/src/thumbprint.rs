//! Certificate thumbprints as the CEM policy and people hold them.
//!
//! The CEM Settings policy stores the gateway certificate's thumbprint in the Windows form:
//! the SHA-1 of the DER encoding, 40 upper-case hex digits, no separators. People paste it from
//! the Windows certificate dialog (space-separated, sometimes with an invisible left-to-right
//! mark in front), from openssl (colon-separated) or in lower case. All of those are accepted;
//! SHA-256 fingerprints (64 hex digits) are accepted too. Anything else is a clear error.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which digest a thumbprint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThumbprintKind {
    /// SHA-1 of the DER certificate: what Windows and the CEM policy call "thumbprint".
    Sha1,
    /// SHA-256 of the DER certificate.
    Sha256,
}

/// A parsed certificate thumbprint (SHA-1 or SHA-256 digest of the DER certificate).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Thumbprint {
    kind: ThumbprintKind,
    bytes: Vec<u8>,
}

/// Why a thumbprint could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbprintError {
    /// Nothing but separators was given.
    #[error("the thumbprint is empty: paste the 40 hex digits shown as \"Thumbprint\" in the certificate's Details tab")]
    Empty,
    /// A character that is neither a hex digit nor an accepted separator.
    #[error("the thumbprint has an invalid character {ch:?} at position {position}: a thumbprint holds only hex digits (0-9, A-F), optionally separated by spaces or colons")]
    InvalidCharacter {
        /// The offending character.
        ch: char,
        /// Its position (in characters, from 1) in the input.
        position: usize,
    },
    /// The number of hex digits is neither 40 nor 64.
    #[error("the thumbprint has {digits} hex digits; a SHA-1 thumbprint has 40 and a SHA-256 fingerprint has 64")]
    WrongLength {
        /// How many hex digits were found.
        digits: usize,
    },
}

/// Characters Windows and browsers put into copied thumbprints that are not visible:
/// left-to-right mark, right-to-left mark, byte-order mark / zero-width no-break space,
/// zero-width space and non-breaking space.
const INVISIBLE: [char; 5] = ['\u{200E}', '\u{200F}', '\u{FEFF}', '\u{200B}', '\u{00A0}'];

impl Thumbprint {
    /// Parses a thumbprint as people paste it.
    pub fn parse(input: &str) -> Result<Self, ThumbprintError> {
        let mut nibbles = Vec::with_capacity(64);
        for (index, ch) in input.chars().enumerate() {
            if ch.is_ascii_hexdigit() {
                // to_digit(16) cannot fail on an ASCII hex digit.
                nibbles.push(ch.to_digit(16).unwrap_or(0) as u8);
            } else if ch == ':' || ch == '-' || ch.is_whitespace() || INVISIBLE.contains(&ch) {
                continue;
            } else {
                return Err(ThumbprintError::InvalidCharacter {
                    ch,
                    position: index + 1,
                });
            }
        }
        let kind = match nibbles.len() {
            0 => return Err(ThumbprintError::Empty),
            40 => ThumbprintKind::Sha1,
            64 => ThumbprintKind::Sha256,
            digits => return Err(ThumbprintError::WrongLength { digits }),
        };
        let bytes = nibbles
            .chunks(2)
            .map(|pair| (pair[0] << 4) | pair[1])
            .collect();
        Ok(Self { kind, bytes })
    }

    /// Builds a thumbprint from a raw digest (20 bytes: SHA-1, 32 bytes: SHA-256).
    pub fn from_digest(bytes: &[u8]) -> Result<Self, ThumbprintError> {
        let kind = match bytes.len() {
            20 => ThumbprintKind::Sha1,
            32 => ThumbprintKind::Sha256,
            n => return Err(ThumbprintError::WrongLength { digits: n * 2 }),
        };
        Ok(Self {
            kind,
            bytes: bytes.to_vec(),
        })
    }

    /// Which digest this is.
    pub fn kind(&self) -> ThumbprintKind {
        self.kind
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The Windows form: upper-case hex, no separators (what the CEM policy wants).
    pub fn to_windows_form(&self) -> String {
        self.to_string()
    }

    /// The openssl form: upper-case hex pairs separated by colons.
    pub fn to_colon_form(&self) -> String {
        self.bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.bytes {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({:?}, {self})", self.kind)
    }
}

impl FromStr for Thumbprint {
    type Err = ThumbprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Thumbprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Thumbprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOWS: &str = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7";

    #[test]
    fn accepts_the_windows_form() {
        let t = Thumbprint::parse(WINDOWS).expect("valid");
        assert_eq!(t.kind(), ThumbprintKind::Sha1);
        assert_eq!(t.to_string(), WINDOWS);
        assert_eq!(t.as_bytes().len(), 20);
    }

    #[test]
    fn accepts_what_people_paste() {
        let pasted = [
            "3a7f9c2b11d04e5f66a7b8c9d0e1f2a3b4c5d6e7",
            "3a 7f 9c 2b 11 d0 4e 5f 66 a7 b8 c9 d0 e1 f2 a3 b4 c5 d6 e7",
            "3A:7F:9C:2B:11:D0:4E:5F:66:A7:B8:C9:D0:E1:F2:A3:B4:C5:D6:E7",
            "\u{200E}3a 7f 9c 2b 11 d0 4e 5f 66 a7 b8 c9 d0 e1 f2 a3 b4 c5 d6 e7",
            "\u{FEFF}3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7\u{200F}\n",
            "  3A7F9C2B 11D04E5F\t66A7B8C9D0E1F2A3B4C5D6E7  ",
        ];
        for input in pasted {
            let t = Thumbprint::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(t.to_string(), WINDOWS, "{input:?}");
        }
    }

    #[test]
    fn accepts_sha256_fingerprints() {
        let hex = "AB".repeat(32);
        let t = Thumbprint::parse(&hex.to_lowercase()).expect("valid");
        assert_eq!(t.kind(), ThumbprintKind::Sha256);
        assert_eq!(t.to_string(), hex);
        assert_eq!(t.to_colon_form().len(), 32 * 3 - 1);
    }

    #[test]
    fn refuses_wrong_lengths_with_the_count() {
        assert_eq!(
            Thumbprint::parse(&WINDOWS[..38]),
            Err(ThumbprintError::WrongLength { digits: 38 })
        );
        assert_eq!(
            Thumbprint::parse(&format!("{WINDOWS}0")),
            Err(ThumbprintError::WrongLength { digits: 41 })
        );
        assert_eq!(Thumbprint::parse(" : "), Err(ThumbprintError::Empty));
    }

    #[test]
    fn refuses_other_characters_and_says_where() {
        let bad = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6EZ";
        assert_eq!(
            Thumbprint::parse(bad),
            Err(ThumbprintError::InvalidCharacter {
                ch: 'Z',
                position: 40
            })
        );
        let message = Thumbprint::parse("sha1=3A7F").unwrap_err().to_string();
        assert!(message.contains("'s'"), "{message}");
        assert!(message.contains("hex digits"), "{message}");
    }

    #[test]
    fn round_trips_through_serde() {
        let t = Thumbprint::parse(WINDOWS).expect("valid");
        let json = serde_json::to_string(&t).expect("serialize");
        assert_eq!(json, format!("\"{WINDOWS}\""));
        let back: Thumbprint = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Thumbprint>("\"nope\"").is_err());
    }

    #[test]
    fn from_digest_checks_the_length() {
        assert_eq!(
            Thumbprint::from_digest(&[0u8; 20]).map(|t| t.kind()),
            Ok(ThumbprintKind::Sha1)
        );
        assert!(Thumbprint::from_digest(&[0u8; 19]).is_err());
    }
}
