//! X.509 helpers both ends use: strict DER parsing, digests in the forms people paste, and the
//! name and expiry of a probe's client certificate.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Why bytes are not a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid X.509 certificate: {0}")]
pub struct ParseError(pub String);

/// Parses DER into an X.509 certificate, refusing trailing garbage.
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ParseError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(ParseError(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        ))),
        Err(e) => Err(ParseError(e.to_string())),
    }
}

/// SHA-256 of DER bytes.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Upper-case hex with no separators.
pub fn hex_upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// SHA-1 of the DER, in the Windows form (the CEM policy's thumbprint).
pub fn thumbprint_sha1(der: &[u8]) -> String {
    hex_upper(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// SHA-256 of the DER, upper-case hex.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex_upper(&sha256(der))
}

/// The common name and expiry (Unix seconds) of a certificate: a probe's name in the fleet and
/// when its client certificate ends. `None` when the bytes are no certificate or have no CN.
pub fn name_and_expiry(der: &[u8]) -> Option<(String, i64)> {
    let cert = parse(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some((cn, cert.validity().not_after.timestamp()))
}

/// Whether a certificate is past half its lifetime at `now` (Unix seconds): when a probe asks
/// for a new one, and the only time the coordinator issues one. `false` for bytes that are no
/// certificate.
pub fn past_half_life(der: &[u8], now: i64) -> bool {
    let Ok(cert) = parse(der) else {
        return false;
    };
    let from = cert.validity().not_before.timestamp();
    let to = cert.validity().not_after.timestamp();
    now >= from + (to - from) / 2
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo: its key, whatever certificate carries
/// it (a probe keeps its key through renewals). `None` for bytes that are no certificate.
pub fn key_sha256(der: &[u8]) -> Option<[u8; 32]> {
    let cert = parse(der).ok()?;
    Some(sha256(cert.public_key().raw))
}

/// The common name of a certificate (a probe's name).
pub fn common_name(der: &[u8]) -> Option<String> {
    name_and_expiry(der).map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        assert!(parse(b"not a certificate").is_err());
        assert_eq!(common_name(b""), None);
    }

    #[test]
    fn digests_are_upper_hex() {
        assert_eq!(thumbprint_sha1(b"").len(), 40);
        assert_eq!(
            fingerprint_sha256(b""),
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        );
    }
}
