//! Revocation as an agent on the internet meets it: for the leaf and each intermediate of the
//! trusted path, the OCSP responder its AIA names is asked first (as Windows does), then the
//! CRL distribution points are fetched, from the probe's vantage (plain HTTP; LDAP and file
//! URLs, common with internal CAs, are unreachable from the internet); each answer's signature
//! verified with its issuer's key, its freshness checked (nextUpdate) and the certificate's
//! serial looked up. Bounded: at most [`MAX_URLS_PER_CERT`] URLs per certificate
//! and [`MAX_FETCHES`] in all, each within [`FETCH_TIMEOUT`], the stage within
//! [`STAGE_TIMEOUT`]; `--no-revocation` turns it off.

use std::net::SocketAddr;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::cert::parse;
use super::fetch;

/// URLs tried per certificate (the first that gives a valid CRL answers).
pub const MAX_URLS_PER_CERT: usize = 2;
/// URLs fetched in all.
pub const MAX_FETCHES: usize = 6;
/// Time for one URL.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for the whole stage.
pub const STAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The CRL distribution point URLs of a certificate (full names that are URIs).
pub fn crl_urls(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in &points.points {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n {
                            out.push(u.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

/// What the stage found for one certificate of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A valid, current CRL of its issuer does not list it, or its OCSP responder says good.
    Good {
        /// The CRL's or the responder's URL.
        url: String,
    },
    /// Its issuer's CRL lists it, or its OCSP responder says revoked.
    Revoked {
        /// What said so: `its issuer's CRL at URL` or `the OCSP responder at URL`.
        url: String,
        /// Since when (RFC 3339).
        since: String,
        /// The reason given, if any (`keyCompromise`, `superseded`...).
        reason: Option<String>,
    },
    /// The only CRL (or OCSP answer) it got is past its nextUpdate.
    Stale {
        /// The CRL's or the responder's URL.
        url: String,
        /// Its nextUpdate (RFC 3339).
        next_update: String,
    },
    /// No distribution point gave a valid CRL: each URL with what failed.
    Unreachable {
        /// `(url, why)` for each URL tried.
        tried: Vec<(String, String)>,
    },
}

/// One certificate of the path and what the stage found (`None`: it names no CRL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Its subject.
    pub subject: String,
    /// Its serial, hexadecimal.
    pub serial: String,
    /// What was found.
    pub status: Status,
}

/// Unix seconds as RFC 3339 (the number itself when out of range).
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// A CRL from what a distribution point serves: DER, or PEM.
fn crl_bytes(body: &[u8]) -> Vec<u8> {
    if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(body) {
        if pem.label.contains("CRL") {
            return pem.contents;
        }
    }
    body.to_vec()
}

/// Judges one CRL for `cert` issued by `issuer`.
fn judge(
    url: &str,
    body: &[u8],
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    now: i64,
) -> Result<Status, String> {
    let der = crl_bytes(body);
    let (_, crl) =
        CertificateRevocationList::from_der(&der).map_err(|e| format!("not a CRL ({e})"))?;
    if crl.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "a CRL of \"{}\", not of the issuer \"{}\"",
            crl.issuer(),
            issuer.subject()
        ));
    }
    crl.verify_signature(issuer.public_key()).map_err(|_| {
        format!(
            "a CRL whose signature does not verify with the key of \"{}\"",
            issuer.subject()
        )
    })?;
    if let Some(revoked) = crl
        .iter_revoked_certificates()
        .find(|r| r.raw_serial() == cert.raw_serial())
    {
        return Ok(Status::Revoked {
            url: format!("its issuer's CRL at {url}"),
            since: rfc3339(revoked.revocation_date.timestamp()),
            reason: revoked.reason_code().map(|(_, r)| format!("{r}")),
        });
    }
    if let Some(next) = crl.next_update() {
        if next.timestamp() < now {
            return Ok(Status::Stale {
                url: url.to_string(),
                next_update: rfc3339(next.timestamp()),
            });
        }
    }
    Ok(Status::Good {
        url: url.to_string(),
    })
}

/// Checks every certificate of `path` (leaf first, DER) but the last (the trust anchor) against
/// its issuer's CRLs.
pub async fn check(
    path: &[Vec<u8>],
    now: OffsetDateTime,
    resolve: &(dyn Fn(&str, u16) -> Option<Vec<SocketAddr>> + Sync),
) -> Vec<Checked> {
    let deadline = tokio::time::Instant::now() + STAGE_TIMEOUT;
    let mut fetches = 0;
    let mut out = Vec::new();
    for pair in path.windows(2) {
        let (Ok(cert), Ok(issuer)) = (parse(&pair[0]), parse(&pair[1])) else {
            continue;
        };
        let ocsp = super::aia::ocsp_urls(&pair[0]);
        let urls = crl_urls(&cert);
        if urls.is_empty() && ocsp.is_empty() {
            continue;
        }
        let mut tried = Vec::new();
        let mut status = None;
        let mut stale = None;
        // The OCSP responder first, as Windows asks it before the CRL.
        if let Some(url) = ocsp.first() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if fetches < MAX_FETCHES && !left.is_zero() {
                fetches += 1;
                match super::ocsp::ask(url, &cert, &issuer, FETCH_TIMEOUT.min(left), resolve).await
                {
                    Ok(super::ocsp::Answer::Good { next_update })
                        if next_update.is_some_and(|n| n < now.unix_timestamp()) =>
                    {
                        stale = Some(Status::Stale {
                            url: url.clone(),
                            next_update: rfc3339(next_update.unwrap_or_default()),
                        });
                    }
                    Ok(super::ocsp::Answer::Good { .. }) => {
                        status = Some(Status::Good { url: url.clone() })
                    }
                    Ok(super::ocsp::Answer::Revoked { since, reason }) => {
                        status = Some(Status::Revoked {
                            url: format!("the OCSP responder at {url}"),
                            since: rfc3339(since),
                            reason,
                        })
                    }
                    Ok(super::ocsp::Answer::Unknown) => tried.push((
                        url.clone(),
                        "the OCSP responder does not know the certificate".to_string(),
                    )),
                    Err(e) => tried.push((url.clone(), e)),
                }
            }
        }
        for url in urls.into_iter().take(MAX_URLS_PER_CERT) {
            if status.is_some() {
                break;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if fetches >= MAX_FETCHES || left.is_zero() {
                tried.push((url, "not tried: the stage's bounds were reached".into()));
                break;
            }
            let got = match fetch::parse_url(&url) {
                Err(e) => Err(e.to_string()),
                Ok(_) => {
                    fetches += 1;
                    fetch::get(&url, FETCH_TIMEOUT.min(left), resolve)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            match got.and_then(|body| judge(&url, &body, &cert, &issuer, now.unix_timestamp())) {
                Ok(s @ Status::Stale { .. }) => stale = Some(s),
                Ok(s) => {
                    status = Some(s);
                    break;
                }
                Err(e) => tried.push((url, e)),
            }
        }
        let status = status.or(stale).unwrap_or(Status::Unreachable { tried });
        out.push(Checked {
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string(),
            status,
        });
    }
    out
}
