//! Borrowed views of a report, read from its postcard frame without allocating its text.
//!
//! A report's results carry some sixty strings (findings' messages and remedies, the chain's
//! subjects, the certificate's names and dates...); the coordinator needs a handful of them
//! (the check's name, thumbprints, node addresses, issuers) to keep its fleet view, and
//! stores the rest as the bytes received. Decoding the report into the owned model
//! ([`crate::model`]) allocated every string, and dropping it freed them: a sixth of the
//! coordinator's CPU per report. These types mirror the owned ones field for field, in the
//! same order and with the same encodings, with `&str` where the model has `String`, so
//! that postcard reads them in place; the model's enums without text are shared.
//!
//! The mirror is kept exact by a test: a result with every option set and every list filled,
//! and one with none, encoded from the model, read as a view and encoded again, give the
//! same bytes (a field added to one side and not the other changes them). What the model's
//! decoding refuses, the view's refuses too: a policy thumbprint that does not parse.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::finding::{FindingCode, Severity};
use crate::model::{
    AddressResult, CertificateInfo, CheckResult, DnsResult, DnsSource, Durations, Expectations,
    LegacyPortResult, TcpResult, TcpState, TlsResult,
};
use crate::thumbprint::Thumbprint;
use crate::wire::{CheckReport, Report, WireError, MAX_FRAME, PROTOCOL_VERSION};

/// The index of `ToCoordinator::Report` among the variants, as postcard encodes it.
pub const REPORT_VARIANT: u32 = 1;

/// Reads a frame's payload as [`crate::wire::decode`] reads a `ToCoordinator`, when it is a
/// report: its view, borrowing the payload. `Ok(None)` for any other message (to be decoded
/// owned), the same errors as the owned decoding otherwise.
pub fn decode_report(payload: &[u8]) -> Result<Option<ReportView<'_>>, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            len: payload.len(),
            limit: MAX_FRAME,
        });
    }
    // In the owned decoding's order: the version first, then the message.
    let (version, rest): (u16, &[u8]) =
        postcard::take_from_bytes(payload).map_err(|e| WireError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version { got: version });
    }
    let (variant, rest): (u32, &[u8]) = match postcard::take_from_bytes(rest) {
        Ok(read) => read,
        // The owned decoding says what is wrong with it.
        Err(_) => return Ok(None),
    };
    if variant != REPORT_VARIANT {
        return Ok(None);
    }
    let (report, rest): (ReportView<'_>, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(Some(report))
}

/// A report ([`Report`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportView<'a> {
    /// The probe's sequence number.
    pub seq: u64,
    /// The round it answers.
    pub round: Option<u64>,
    /// The results.
    #[serde(borrow)]
    pub results: Vec<CheckReportView<'a>>,
}

/// One check's result in a report ([`CheckReport`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReportView<'a> {
    /// The check's name.
    pub check: &'a str,
    /// When the probe produced it.
    pub produced_at_ms: u64,
    /// The result.
    #[serde(borrow)]
    pub result: CheckResultView<'a>,
}

/// [`CheckResult`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResultView<'a> {
    #[serde(borrow)]
    pub target: TargetView<'a>,
    #[serde(borrow)]
    pub expectations: ExpectationsView<'a>,
    pub started_at: &'a str,
    pub verdict: Severity,
    #[serde(borrow)]
    pub findings: Vec<FindingView<'a>>,
    #[serde(borrow)]
    pub dns: DnsView<'a>,
    #[serde(borrow)]
    pub tcp: TcpView<'a>,
    #[serde(borrow)]
    pub tls: Option<TlsView<'a>>,
    #[serde(borrow)]
    pub certificate: Option<CertificateView<'a>>,
    #[serde(borrow)]
    pub legacy_ports: Vec<LegacyPortView<'a>>,
    pub durations: Durations,
    #[serde(borrow)]
    pub addresses: Vec<AddressView<'a>>,
    #[serde(borrow)]
    pub skipped_addresses: Vec<SkippedView<'a>>,
}

/// [`crate::model::Target`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetView<'a> {
    pub host: &'a str,
    pub port: u16,
}

/// A policy thumbprint as sent, which must parse as the model's [`Thumbprint`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbprintText<'a>(pub &'a str);

impl Serialize for ThumbprintText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ThumbprintText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <&'a str>::deserialize(deserializer)?;
        Thumbprint::parse(text).map_err(serde::de::Error::custom)?;
        Ok(Self(text))
    }
}

/// [`Expectations`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectationsView<'a> {
    #[serde(borrow)]
    pub thumbprint: Option<ThumbprintText<'a>>,
    #[serde(borrow)]
    pub required_sans: Vec<&'a str>,
    pub min_days_left: u32,
    pub legacy_ports: Vec<u16>,
}

/// [`crate::finding::Finding`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingView<'a> {
    pub code: FindingCode,
    pub severity: Severity,
    pub message: &'a str,
    pub remedy: &'a str,
    #[serde(borrow)]
    pub address: Option<&'a str>,
}

/// [`DnsResult`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsView<'a> {
    pub host: &'a str,
    pub source: DnsSource,
    #[serde(borrow)]
    pub addresses: Vec<&'a str>,
    pub duration_ms: f64,
    #[serde(borrow)]
    pub error: Option<&'a str>,
}

/// [`TcpResult`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpView<'a> {
    pub state: TcpState,
    #[serde(borrow)]
    pub address: Option<&'a str>,
    pub duration_ms: f64,
    #[serde(borrow)]
    pub error: Option<&'a str>,
}

/// [`TlsResult`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsView<'a> {
    pub completed: bool,
    #[serde(borrow)]
    pub version: Option<&'a str>,
    #[serde(borrow)]
    pub cipher: Option<&'a str>,
    pub trusted: bool,
    #[serde(borrow)]
    pub trust_error: Option<&'a str>,
    #[serde(borrow)]
    pub chain: Vec<&'a str>,
    pub handshake_signature_valid: Option<bool>,
    pub duration_ms: f64,
    #[serde(borrow)]
    pub error: Option<&'a str>,
    pub client_certificate_requested: bool,
    #[serde(borrow)]
    pub acceptable_client_cas: Vec<&'a str>,
    #[serde(borrow)]
    pub client_certificate: Option<&'a str>,
    pub legacy_hello: bool,
    #[serde(borrow)]
    pub ocsp_stapled: Option<&'a str>,
}

/// [`CertificateInfo`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateView<'a> {
    pub thumbprint_sha1: &'a str,
    pub fingerprint_sha256: &'a str,
    pub subject: &'a str,
    pub issuer: &'a str,
    pub serial: &'a str,
    #[serde(borrow)]
    pub san_dns: Vec<&'a str>,
    #[serde(borrow)]
    pub san_ip: Vec<&'a str>,
    pub not_before: &'a str,
    pub not_before_unix: i64,
    pub not_after: &'a str,
    pub not_after_unix: i64,
    pub days_left: i64,
    pub key_algorithm: &'a str,
    pub key_bits: u32,
    #[serde(borrow)]
    pub key_curve: Option<&'a str>,
    pub signature_algorithm: &'a str,
    pub signature_hash: &'a str,
    #[serde(borrow)]
    pub eku: Vec<&'a str>,
    pub eku_present: bool,
    pub self_signed: bool,
}

/// [`LegacyPortResult`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyPortView<'a> {
    pub port: u16,
    pub tcp: TcpState,
    pub tls_completed: bool,
    #[serde(borrow)]
    pub thumbprint_sha1: Option<&'a str>,
    pub covers_gateway_name: bool,
    pub matches_expected_thumbprint: Option<bool>,
    pub gateway_listener: bool,
}

/// [`AddressResult`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressView<'a> {
    pub address: &'a str,
    pub verdict: Severity,
    #[serde(borrow)]
    pub findings: Vec<FindingView<'a>>,
    #[serde(borrow)]
    pub tcp: TcpView<'a>,
    #[serde(borrow)]
    pub tls: Option<TlsView<'a>>,
    #[serde(borrow)]
    pub certificate: Option<CertificateView<'a>>,
    #[serde(borrow)]
    pub legacy_ports: Vec<LegacyPortView<'a>>,
    pub durations: Durations,
}

/// [`crate::model::SkippedAddress`].
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedView<'a> {
    pub address: &'a str,
    pub reason: &'a str,
}

impl TlsView<'_> {
    /// The handshake's duration when it completed.
    pub fn completed_ms(&self) -> Option<f64> {
        self.completed.then_some(self.duration_ms)
    }
}

// The views of owned values, for code that summarises what it holds owned the way it
// summarises what it received (the same function, one rule).

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl<'a> From<&'a Report> for ReportView<'a> {
    fn from(r: &'a Report) -> Self {
        Self {
            seq: r.seq,
            round: r.round,
            results: r.results.iter().map(CheckReportView::from).collect(),
        }
    }
}

impl<'a> From<&'a CheckReport> for CheckReportView<'a> {
    fn from(r: &'a CheckReport) -> Self {
        Self {
            check: &r.check,
            produced_at_ms: r.produced_at_ms,
            result: CheckResultView::from(&r.result),
        }
    }
}

impl<'a> From<&'a CheckResult> for CheckResultView<'a> {
    fn from(r: &'a CheckResult) -> Self {
        Self {
            target: TargetView {
                host: &r.target.host,
                port: r.target.port,
            },
            expectations: ExpectationsView::from(&r.expectations),
            started_at: &r.started_at,
            verdict: r.verdict,
            findings: r.findings.iter().map(FindingView::from).collect(),
            dns: DnsView::from(&r.dns),
            tcp: TcpView::from(&r.tcp),
            tls: r.tls.as_ref().map(TlsView::from),
            certificate: r.certificate.as_ref().map(CertificateView::from),
            legacy_ports: r.legacy_ports.iter().map(LegacyPortView::from).collect(),
            durations: r.durations.clone(),
            addresses: r.addresses.iter().map(AddressView::from).collect(),
            skipped_addresses: r
                .skipped_addresses
                .iter()
                .map(|s| SkippedView {
                    address: &s.address,
                    reason: &s.reason,
                })
                .collect(),
        }
    }
}

impl<'a> From<&'a Expectations> for ExpectationsView<'a> {
    fn from(e: &'a Expectations) -> Self {
        Self {
            // A thumbprint has no text of its own to borrow (it renders as it is encoded):
            // views of owned expectations leave it out; they are only summarised, and a
            // summary does not read it.
            thumbprint: None,
            required_sans: strs(&e.required_sans),
            min_days_left: e.min_days_left,
            legacy_ports: e.legacy_ports.clone(),
        }
    }
}

impl<'a> From<&'a crate::finding::Finding> for FindingView<'a> {
    fn from(f: &'a crate::finding::Finding) -> Self {
        Self {
            code: f.code,
            severity: f.severity,
            message: &f.message,
            remedy: &f.remedy,
            address: f.address.as_deref(),
        }
    }
}

impl<'a> From<&'a DnsResult> for DnsView<'a> {
    fn from(d: &'a DnsResult) -> Self {
        Self {
            host: &d.host,
            source: d.source,
            addresses: strs(&d.addresses),
            duration_ms: d.duration_ms,
            error: d.error.as_deref(),
        }
    }
}

impl<'a> From<&'a TcpResult> for TcpView<'a> {
    fn from(t: &'a TcpResult) -> Self {
        Self {
            state: t.state,
            address: t.address.as_deref(),
            duration_ms: t.duration_ms,
            error: t.error.as_deref(),
        }
    }
}

impl<'a> From<&'a TlsResult> for TlsView<'a> {
    fn from(t: &'a TlsResult) -> Self {
        Self {
            completed: t.completed,
            version: t.version.as_deref(),
            cipher: t.cipher.as_deref(),
            trusted: t.trusted,
            trust_error: t.trust_error.as_deref(),
            chain: strs(&t.chain),
            handshake_signature_valid: t.handshake_signature_valid,
            duration_ms: t.duration_ms,
            error: t.error.as_deref(),
            client_certificate_requested: t.client_certificate_requested,
            acceptable_client_cas: strs(&t.acceptable_client_cas),
            client_certificate: t.client_certificate.as_deref(),
            legacy_hello: t.legacy_hello,
            ocsp_stapled: t.ocsp_stapled.as_deref(),
        }
    }
}

impl<'a> From<&'a CertificateInfo> for CertificateView<'a> {
    fn from(c: &'a CertificateInfo) -> Self {
        Self {
            thumbprint_sha1: &c.thumbprint_sha1,
            fingerprint_sha256: &c.fingerprint_sha256,
            subject: &c.subject,
            issuer: &c.issuer,
            serial: &c.serial,
            san_dns: strs(&c.san_dns),
            san_ip: strs(&c.san_ip),
            not_before: &c.not_before,
            not_before_unix: c.not_before_unix,
            not_after: &c.not_after,
            not_after_unix: c.not_after_unix,
            days_left: c.days_left,
            key_algorithm: &c.key_algorithm,
            key_bits: c.key_bits,
            key_curve: c.key_curve.as_deref(),
            signature_algorithm: &c.signature_algorithm,
            signature_hash: &c.signature_hash,
            eku: strs(&c.eku),
            eku_present: c.eku_present,
            self_signed: c.self_signed,
        }
    }
}

impl<'a> From<&'a LegacyPortResult> for LegacyPortView<'a> {
    fn from(l: &'a LegacyPortResult) -> Self {
        Self {
            port: l.port,
            tcp: l.tcp,
            tls_completed: l.tls_completed,
            thumbprint_sha1: l.thumbprint_sha1.as_deref(),
            covers_gateway_name: l.covers_gateway_name,
            matches_expected_thumbprint: l.matches_expected_thumbprint,
            gateway_listener: l.gateway_listener,
        }
    }
}

impl<'a> From<&'a AddressResult> for AddressView<'a> {
    fn from(a: &'a AddressResult) -> Self {
        Self {
            address: &a.address,
            verdict: a.verdict,
            findings: a.findings.iter().map(FindingView::from).collect(),
            tcp: TcpView::from(&a.tcp),
            tls: a.tls.as_ref().map(TlsView::from),
            certificate: a.certificate.as_ref().map(CertificateView::from),
            legacy_ports: a.legacy_ports.iter().map(LegacyPortView::from).collect(),
            durations: a.durations.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;
    use crate::model::{SkippedAddress, Target};
    use crate::wire::{decode, encode, ToCoordinator, PREFIX_LEN};

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn certificate() -> CertificateInfo {
        CertificateInfo {
            thumbprint_sha1: s("AA"),
            fingerprint_sha256: s("BB"),
            subject: s("CN=gw"),
            issuer: s("CN=ca"),
            serial: s("01"),
            san_dns: vec![s("gw.example.com"), s("gw2.example.com")],
            san_ip: vec![s("192.0.2.1")],
            not_before: s("2026-01-01T00:00:00Z"),
            not_before_unix: 1,
            not_after: s("2027-01-01T00:00:00Z"),
            not_after_unix: 2,
            days_left: -3,
            key_algorithm: s("RSA"),
            key_bits: 2048,
            key_curve: Some(s("P-256")),
            signature_algorithm: s("sha256WithRSAEncryption"),
            signature_hash: s("sha256"),
            eku: vec![s("serverAuth")],
            eku_present: true,
            self_signed: false,
        }
    }

    fn tls() -> TlsResult {
        TlsResult {
            completed: true,
            version: Some(s("TLSv1.3")),
            cipher: Some(s("TLS13_AES_128_GCM_SHA256")),
            trusted: false,
            trust_error: Some(s("untrusted")),
            chain: vec![s("CN=gw"), s("CN=int")],
            handshake_signature_valid: Some(true),
            duration_ms: 1.5,
            error: Some(s("late")),
            client_certificate_requested: true,
            acceptable_client_cas: vec![s("CN=agents")],
            client_certificate: Some(s("CN=agent")),
            legacy_hello: true,
            ocsp_stapled: Some(s("good")),
        }
    }

    fn finding(address: Option<&str>) -> Finding {
        let mut f = Finding::new(FindingCode::CertExpiring, "expires");
        f.address = address.map(s);
        f
    }

    fn tcp() -> TcpResult {
        TcpResult {
            state: TcpState::Open,
            address: Some(s("192.0.2.1:443")),
            duration_ms: 0.5,
            error: Some(s("none")),
        }
    }

    fn legacy() -> LegacyPortResult {
        LegacyPortResult {
            port: 10443,
            tcp: TcpState::Refused,
            tls_completed: true,
            thumbprint_sha1: Some(s("CC")),
            covers_gateway_name: true,
            matches_expected_thumbprint: Some(false),
            gateway_listener: true,
        }
    }

    fn durations() -> Durations {
        Durations {
            dns_ms: 1.0,
            tcp_ms: 2.0,
            tls_ms: 3.0,
            legacy_ms: 4.0,
            total_ms: 5.0,
        }
    }

    /// Every option set, every list filled.
    fn full() -> CheckResult {
        CheckResult {
            target: Target {
                host: s("gw.example.com"),
                port: 443,
            },
            expectations: Expectations {
                thumbprint: Some(Thumbprint::parse(&"AB".repeat(20)).expect("thumbprint")),
                required_sans: vec![s("gw.example.com")],
                min_days_left: 30,
                legacy_ports: vec![443, 10443],
            },
            started_at: s("2026-12-07T00:00:00Z"),
            verdict: Severity::Warn,
            findings: vec![finding(None), finding(Some("192.0.2.1"))],
            dns: DnsResult {
                host: s("gw.example.com"),
                source: DnsSource::Override,
                addresses: vec![s("192.0.2.1"), s("192.0.2.2")],
                duration_ms: 0.1,
                error: Some(s("slow")),
            },
            tcp: tcp(),
            tls: Some(tls()),
            certificate: Some(certificate()),
            legacy_ports: vec![legacy()],
            durations: durations(),
            addresses: vec![AddressResult {
                address: s("192.0.2.1"),
                verdict: Severity::Fail,
                findings: vec![finding(Some("192.0.2.1"))],
                tcp: tcp(),
                tls: Some(tls()),
                certificate: Some(certificate()),
                legacy_ports: vec![legacy()],
                durations: durations(),
            }],
            skipped_addresses: vec![SkippedAddress {
                address: s("192.0.2.9"),
                reason: s("over the limit"),
            }],
        }
    }

    /// No option set, no list filled.
    fn empty() -> CheckResult {
        CheckResult {
            target: Target {
                host: s(""),
                port: 0,
            },
            expectations: Expectations {
                thumbprint: None,
                required_sans: Vec::new(),
                min_days_left: 0,
                legacy_ports: Vec::new(),
            },
            started_at: s(""),
            verdict: Severity::Ok,
            findings: Vec::new(),
            dns: DnsResult {
                host: s(""),
                source: DnsSource::System,
                addresses: Vec::new(),
                duration_ms: 0.0,
                error: None,
            },
            tcp: TcpResult {
                state: TcpState::NotAttempted,
                address: None,
                duration_ms: 0.0,
                error: None,
            },
            tls: None,
            certificate: None,
            legacy_ports: Vec::new(),
            durations: Durations::default(),
            addresses: Vec::new(),
            skipped_addresses: Vec::new(),
        }
    }

    fn report(results: Vec<CheckResult>) -> Report {
        Report {
            seq: 7,
            round: Some(9),
            results: results
                .into_iter()
                .enumerate()
                .map(|(i, result)| CheckReport {
                    check: format!("check{i}"),
                    produced_at_ms: 1_000 + i as u64,
                    result,
                })
                .collect(),
        }
    }

    fn payload(message: &ToCoordinator) -> Vec<u8> {
        encode(message).expect("encode")[PREFIX_LEN..].to_vec()
    }

    #[test]
    fn a_report_read_as_a_view_encodes_back_to_the_same_bytes() {
        for results in [
            vec![full()],
            vec![empty()],
            vec![full(), empty(), full()],
            vec![],
        ] {
            let owned = report(results);
            let bytes = payload(&ToCoordinator::Report(owned.clone()));
            let view = decode_report(&bytes).expect("decodes").expect("a report");
            // The view's own encoding is the frame's: the mirror has every field, in order.
            let mut again = postcard::to_allocvec(&PROTOCOL_VERSION).expect("version");
            again.extend(postcard::to_allocvec(&REPORT_VARIANT).expect("variant"));
            again.extend(postcard::to_allocvec(&view).expect("encode the view"));
            assert_eq!(again, bytes);
            // And it reads what the model reads.
            let ToCoordinator::Report(decoded) = decode::<ToCoordinator>(&bytes).expect("owned")
            else {
                panic!("not a report")
            };
            let mut of_owned = ReportView::from(&decoded);
            // Views of owned expectations leave the thumbprint out (see `From`).
            for (r, v) in of_owned.results.iter_mut().zip(view.results.iter()) {
                r.result.expectations.thumbprint = v.result.expectations.thumbprint;
            }
            assert_eq!(of_owned, view);
        }
    }

    #[test]
    fn other_messages_are_left_to_the_owned_decoding_and_errors_are_the_same() {
        let hello = ToCoordinator::Hello {
            probe: s("p"),
            agent_version: s("1"),
            labels: Default::default(),
        };
        assert_eq!(decode_report(&payload(&hello)).expect("decodes"), None);
        let good = payload(&ToCoordinator::Report(report(vec![full()])));
        // Cut short, with a byte more, of another version, empty: refused alike.
        let mut long = good.clone();
        long.push(0);
        let mut other_version = good.clone();
        other_version[0] = 4;
        // Another version's prefix alone, and the version alone (the version is judged
        // first, as the fuzzer made sure).
        let version_only = [0xff, 0x2a];
        for bad in [
            &good[..good.len() - 3],
            &long[..],
            &other_version[..],
            &[][..],
            &version_only[..],
            &good[..1],
        ] {
            let owned = decode::<ToCoordinator>(bad).map(|_| ());
            // What the session does: the view, or the owned decoding when it declines.
            let viewed = match decode_report(bad) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => decode::<ToCoordinator>(bad).map(|_| ()),
                Err(e) => Err(e),
            };
            assert!(owned.is_err(), "the model refuses it");
            assert_eq!(
                viewed.map_err(|e| e.reason()),
                owned.map_err(|e| e.reason()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_policy_thumbprint_that_does_not_parse_is_refused_as_the_model_refuses_it() {
        let owned = report(vec![full()]);
        let mut bytes = payload(&ToCoordinator::Report(owned));
        // The thumbprint is 40 hex digits "ABAB..."; make one of them a 'Z'.
        let at = bytes
            .windows(40)
            .position(|w| w == "AB".repeat(20).as_bytes())
            .expect("the thumbprint's text");
        bytes[at] = b'Z';
        assert!(decode::<ToCoordinator>(&bytes).is_err());
        assert!(decode_report(&bytes).is_err());
    }
}
