//! OCSP (RFC 6960) as a Windows agent asks it: a request for one certificate (its issuer's name
//! and key hashed with SHA-1, its serial) POSTed to the responder its AIA names, over plain HTTP
//! from the probe's vantage; the answer's signature verified (by the issuer, or by a responder
//! certificate the issuer signed for OCSP signing), its certificate ID matched and its status
//! read. Only the few DER structures OCSP needs are read, with a bounded TLV reader.

use std::net::SocketAddr;
use std::time::Duration;

use x509_parser::prelude::{AlgorithmIdentifier, FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use super::fetch;

/// What a responder said about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not revoked.
    Good {
        /// The response's nextUpdate, Unix seconds, when given.
        next_update: Option<i64>,
    },
    /// Revoked.
    Revoked {
        /// Since when, Unix seconds.
        since: i64,
        /// The CRLReason, when given (`keyCompromise`, ...).
        reason: Option<String>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// One DER element: its tag byte, its content, and the whole element.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads one element at the start of `input`; the element and what follows it.
fn tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let bad = || "a malformed OCSP response".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    let header = input.len() - rest.len();
    Ok((
        Tlv {
            tag,
            content: &rest[..len],
            whole: &input[..header + len],
        },
        &rest[len..],
    ))
}

/// The elements of a constructed element's content, in order.
fn children(content: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (t, r) = tlv(rest)?;
        out.push(t);
        rest = r;
    }
    Ok(out)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// The CertID of `cert` issued by `issuer` (SHA-1, as Windows and OpenSSL send it).
fn cert_id(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Vec<u8> {
    // sha1 1.3.14.3.2.26 with NULL parameters
    let algorithm = der(
        0x30,
        &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00],
    );
    let name_hash = der(0x04, &sha1(issuer.subject().as_raw()));
    let key_hash = der(0x04, &sha1(&issuer.public_key().subject_public_key.data));
    let serial = der(0x02, cert.raw_serial());
    der(0x30, &[algorithm, name_hash, key_hash, serial].concat())
}

/// The DER OCSP request for `cert`.
pub fn request(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Vec<u8> {
    let request = der(0x30, &cert_id(cert, issuer));
    let list = der(0x30, &request);
    let tbs = der(0x30, &list);
    der(0x30, &tbs)
}

fn reason_name(code: u8) -> String {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        _ => "unknown reason",
    }
    .to_string()
}

fn time_of(t: &Tlv<'_>) -> Result<i64, String> {
    ASN1Time::from_der(t.whole)
        .map(|(_, t)| t.timestamp())
        .map_err(|_| "a malformed time in the OCSP response".to_string())
}

/// Verifies `signature` over `data` with `algorithm` (DER) and the key of `signer`.
fn verifies(signer: &X509Certificate<'_>, algorithm: &[u8], signature: &[u8], data: &[u8]) -> bool {
    let (Ok((_, algorithm)), Ok((_, signature))) = (
        AlgorithmIdentifier::from_der(algorithm),
        x509_parser::asn1_rs::BitString::from_der(signature),
    ) else {
        return false;
    };
    x509_parser::verify::verify_signature(signer.public_key(), &algorithm, &signature, data).is_ok()
}

/// Judges a DER OCSP response for `cert` issued by `issuer`.
pub fn judge(
    body: &[u8],
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<Answer, String> {
    let (response, _) = tlv(body)?;
    let parts = children(response.content)?;
    let status = parts
        .first()
        .filter(|t| t.tag == 0x0a)
        .and_then(|t| t.content.first().copied())
        .ok_or("not an OCSP response")?;
    if status != 0 {
        let what = match status {
            1 => "malformedRequest",
            2 => "internalError",
            3 => "tryLater",
            5 => "sigRequired",
            6 => "unauthorized",
            _ => "an unknown status",
        };
        return Err(format!("the responder answered {what}"));
    }
    let bytes = parts
        .get(1)
        .filter(|t| t.tag == 0xa0)
        .ok_or("an OCSP response without a body")?;
    let (bytes, _) = tlv(bytes.content)?;
    let bytes = children(bytes.content)?;
    let basic = bytes
        .get(1)
        .filter(|t| t.tag == 0x04)
        .ok_or("an OCSP response without a basic response")?;
    let (basic, _) = tlv(basic.content)?;
    let basic = children(basic.content)?;
    let (Some(tbs), Some(algorithm), Some(signature)) = (basic.first(), basic.get(1), basic.get(2))
    else {
        return Err("a malformed basic OCSP response".into());
    };
    // The signer: the issuer itself, or a responder certificate that the issuer signed and
    // that may sign OCSP responses.
    let mut signed = verifies(issuer, algorithm.whole, signature.whole, tbs.whole);
    if !signed {
        if let Some(certs) = basic.get(3).filter(|t| t.tag == 0xa0) {
            let (list, _) = tlv(certs.content)?;
            for c in children(list.content)? {
                let Ok((_, responder)) = X509Certificate::from_der(c.whole) else {
                    continue;
                };
                let delegated = responder.issuer().as_raw() == issuer.subject().as_raw()
                    && responder
                        .verify_signature(Some(issuer.public_key()))
                        .is_ok()
                    && responder
                        .extended_key_usage()
                        .ok()
                        .flatten()
                        .is_some_and(|e| e.value.ocsp_signing);
                if delegated && verifies(&responder, algorithm.whole, signature.whole, tbs.whole) {
                    signed = true;
                    break;
                }
            }
        }
    }
    if !signed {
        return Err(format!(
            "an OCSP response whose signature verifies neither with the key of \"{}\" nor with a responder certificate it issued for OCSP signing",
            issuer.subject()
        ));
    }
    let data = children(tbs.content)?;
    let mut i = 0;
    if data.first().is_some_and(|t| t.tag == 0xa0) {
        i += 1; // version
    }
    i += 2; // responderID, producedAt
    let responses = data
        .get(i)
        .filter(|t| t.tag == 0x30)
        .ok_or("an OCSP response without responses")?;
    let wanted = cert_id(cert, issuer);
    let wanted_serial = cert.raw_serial();
    for single in children(responses.content)? {
        let fields = children(single.content)?;
        let Some(id) = fields.first() else { continue };
        // Match on the serial and the issuer's hashes (the algorithm may be other than SHA-1).
        let id_fields = children(id.content)?;
        let matches = id.whole == wanted.as_slice()
            || id_fields
                .get(3)
                .is_some_and(|s| s.tag == 0x02 && s.content == wanted_serial);
        if !matches {
            continue;
        }
        let status = fields.get(1).ok_or("a response without a status")?;
        let next_update = fields
            .iter()
            .skip(3)
            .find(|t| t.tag == 0xa0)
            .and_then(|t| tlv(t.content).ok())
            .and_then(|(t, _)| time_of(&t).ok());
        return match status.tag {
            0x80 => Ok(Answer::Good { next_update }),
            0xa1 => {
                let info = children(status.content)?;
                let since = info
                    .first()
                    .map(time_of)
                    .transpose()?
                    .ok_or("a revocation without its time")?;
                let reason = info
                    .get(1)
                    .filter(|t| t.tag == 0xa0)
                    .and_then(|t| tlv(t.content).ok())
                    .and_then(|(t, _)| t.content.first().copied())
                    .map(reason_name);
                Ok(Answer::Revoked { since, reason })
            }
            0x82 => Ok(Answer::Unknown),
            _ => Err("an unknown certificate status".into()),
        };
    }
    Err("an OCSP response about other certificates".into())
}

/// Asks the responder at `url` about `cert`.
pub async fn ask(
    url: &str,
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    timeout: Duration,
    resolve: &(dyn Fn(&str, u16) -> Option<Vec<SocketAddr>> + Sync),
) -> Result<Answer, String> {
    let body = fetch::post(
        url,
        "application/ocsp-request",
        &request(cert, issuer),
        timeout,
        resolve,
    )
    .await
    .map_err(|e| e.to_string())?;
    judge(&body, cert, issuer)
}
