//! Completing a chain the gateway serves incomplete, as Windows' chain engine does: when the
//! path stops at a certificate whose issuer was neither sent nor trusted, its Authority
//! Information Access (caIssuers) URL is fetched from the probe's vantage and the path built
//! again. Windows agents that reach the URL then trust the gateway; other clients do not.
//! Bounded: at most [`MAX_FETCHES`] URLs, each within [`FETCH_TIMEOUT`], all within
//! [`STAGE_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::cert::{parse, ChainFailure, ChainSource, TrustOutcome, TrustStore};
use super::fetch;

/// URLs fetched at most per check (a path needs one or two missing intermediates).
pub const MAX_FETCHES: usize = 3;
/// Time for one URL.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for the whole stage.
pub const STAGE_TIMEOUT: Duration = Duration::from_secs(5);

const CA_ISSUERS: &str = "1.3.6.1.5.5.7.48.2";
const OCSP: &str = "1.3.6.1.5.5.7.48.1";

fn aia_urls(der: &[u8], method: &str) -> Vec<String> {
    let Ok(cert) = parse(der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for d in &aia.accessdescs {
                if d.access_method.to_id_string() == method {
                    if let GeneralName::URI(u) = &d.access_location {
                        out.push(u.to_string());
                    }
                }
            }
        }
    }
    out
}

/// The caIssuers URLs of a certificate (where its issuer's certificate is published).
pub fn ca_issuer_urls(der: &[u8]) -> Vec<String> {
    aia_urls(der, CA_ISSUERS)
}

/// The OCSP responder URLs of a certificate.
pub fn ocsp_urls(der: &[u8]) -> Vec<String> {
    aia_urls(der, OCSP)
}

/// One URL tried: what it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The URL.
    pub url: String,
    /// The subject of the certificate it served, or why it gave none.
    pub outcome: Result<String, String>,
}

/// A certificate from what a caIssuers URL serves: DER, or PEM.
fn certificate_of(body: &[u8]) -> Result<Vec<u8>, String> {
    if parse(body).is_ok() {
        return Ok(body.to_vec());
    }
    if let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(body) {
        if parse(&pem.contents).is_ok() {
            return Ok(pem.contents);
        }
    }
    Err(if body.first() == Some(&0x30) {
        "not a certificate (a PKCS#7 bundle is not read: publish the issuer's certificate as DER)"
            .into()
    } else {
        "not a certificate".into()
    })
}

/// What the stage did: the outcome with the fetched certificates, and what each URL gave.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The path built again with what was fetched.
    pub outcome: TrustOutcome,
    /// The URLs tried, in order.
    pub fetched: Vec<Fetched>,
}

/// Follows the caIssuers URLs of the certificate at the top of an incomplete path until the
/// path completes, fails otherwise, or the bounds are reached.
pub async fn complete(
    trust: &TrustStore,
    leaf: &[u8],
    served: &[Vec<u8>],
    first: TrustOutcome,
    now: OffsetDateTime,
    resolve: &(dyn Fn(&str, u16) -> Option<Vec<SocketAddr>> + Sync),
) -> Completion {
    let mut outcome = first;
    let mut fetched: Vec<Fetched> = Vec::new();
    let mut extra: Vec<Vec<u8>> = served.to_vec();
    let deadline = tokio::time::Instant::now() + STAGE_TIMEOUT;
    while outcome.failure == Some(ChainFailure::Incomplete) && fetched.len() < MAX_FETCHES {
        let Some(top) = outcome.path_der.last() else {
            break;
        };
        let Some(url) = ca_issuer_urls(top)
            .into_iter()
            .find(|u| !fetched.iter().any(|f| &f.url == u))
        else {
            break;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            fetched.push(Fetched {
                url,
                outcome: Err("not tried: the stage's time was up".into()),
            });
            break;
        }
        let got = fetch::get(&url, FETCH_TIMEOUT.min(left), resolve).await;
        let result = got
            .map_err(|e| e.to_string())
            .and_then(|body| certificate_of(&body));
        match result {
            Ok(der) => {
                let subject = parse(&der)
                    .map(|c| c.subject().to_string())
                    .unwrap_or_default();
                extra.push(der);
                fetched.push(Fetched {
                    url,
                    outcome: Ok(subject),
                });
                outcome = trust.evaluate_from(leaf, &extra, ChainSource::Server, now);
            }
            Err(e) => {
                fetched.push(Fetched {
                    url,
                    outcome: Err(e),
                });
                break;
            }
        }
    }
    Completion { outcome, fetched }
}

/// The fetched URLs in words, for a finding: `URL (served "SUBJECT")` or `URL (WHY)`.
pub fn describe(fetched: &[Fetched]) -> String {
    fetched
        .iter()
        .map(|f| match &f.outcome {
            Ok(subject) => format!("{} (served \"{subject}\")", f.url),
            Err(e) => format!("{} ({e})", f.url),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
