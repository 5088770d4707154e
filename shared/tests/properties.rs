//! Property tests on stable Rust: every wire message survives encode → decode unchanged
//! (reports carrying full check results included), in one piece and split at arbitrary
//! points; any byte string decodes to a message or an error, never a panic; and every
//! thumbprint parses back from each of its printed forms.

use cemwatch_shared::finding::{Finding, FindingCode, Severity};
use cemwatch_shared::model::{
    AddressResult, CertificateInfo, CheckResult, DnsResult, DnsSource, Durations, Expectations,
    LegacyPortResult, SkippedAddress, Target, TcpResult, TcpState, TlsResult,
};
use cemwatch_shared::thumbprint::{Thumbprint, ThumbprintKind};
use cemwatch_shared::wire::{
    self, CheckReport, FrameDecoder, Labels, Plan, PlannedCheck, Report, ToCoordinator, ToProbe,
    WireError, MAX_FRAME, PREFIX_LEN,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, short: names, messages, addresses.
    ".{0,24}"
}

fn duration_ms() -> impl Strategy<Value = f64> {
    0.0f64..1.0e7
}

fn thumbprint() -> impl Strategy<Value = Thumbprint> {
    prop_oneof![vec(any::<u8>(), 20), vec(any::<u8>(), 32)]
        .prop_map(|bytes| Thumbprint::from_digest(&bytes).expect("20 or 32 bytes"))
}

fn target() -> impl Strategy<Value = Target> {
    (text(), any::<u16>()).prop_map(|(host, port)| Target { host, port })
}

fn expectations() -> impl Strategy<Value = Expectations> {
    (
        option::of(thumbprint()),
        vec(text(), 0..3),
        any::<u32>(),
        vec(any::<u16>(), 0..3),
    )
        .prop_map(
            |(thumbprint, required_sans, min_days_left, legacy_ports)| Expectations {
                thumbprint,
                required_sans,
                min_days_left,
                legacy_ports,
            },
        )
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Ok),
        Just(Severity::Warn),
        Just(Severity::Fail)
    ]
}

fn finding() -> impl Strategy<Value = Finding> {
    (
        proptest::sample::select(FindingCode::ALL),
        severity(),
        text(),
        text(),
        option::of(text()),
    )
        .prop_map(|(code, severity, message, remedy, address)| Finding {
            code,
            severity,
            message,
            remedy,
            address,
        })
}

fn tcp_state() -> impl Strategy<Value = TcpState> {
    prop_oneof![
        Just(TcpState::Open),
        Just(TcpState::Refused),
        Just(TcpState::Filtered),
        Just(TcpState::Unreachable),
        Just(TcpState::NotAttempted),
    ]
}

fn dns() -> impl Strategy<Value = DnsResult> {
    (
        text(),
        prop_oneof![
            Just(DnsSource::System),
            Just(DnsSource::Override),
            Just(DnsSource::Literal)
        ],
        vec(text(), 0..3),
        duration_ms(),
        option::of(text()),
    )
        .prop_map(|(host, source, addresses, duration_ms, error)| DnsResult {
            host,
            source,
            addresses,
            duration_ms,
            error,
        })
}

fn tcp() -> impl Strategy<Value = TcpResult> {
    (
        tcp_state(),
        option::of(text()),
        duration_ms(),
        option::of(text()),
    )
        .prop_map(|(state, address, duration_ms, error)| TcpResult {
            state,
            address,
            duration_ms,
            error,
        })
}

fn tls() -> impl Strategy<Value = TlsResult> {
    (
        any::<bool>(),
        option::of(text()),
        option::of(text()),
        any::<bool>(),
        option::of(text()),
        vec(text(), 0..4),
        option::of(any::<bool>()),
        duration_ms(),
        option::of(text()),
        (
            any::<bool>(),
            vec(text(), 0..3),
            option::of(text()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                completed,
                version,
                cipher,
                trusted,
                trust_error,
                chain,
                handshake_signature_valid,
                duration_ms,
                error,
                (
                    client_certificate_requested,
                    acceptable_client_cas,
                    client_certificate,
                    legacy_hello,
                ),
            )| TlsResult {
                completed,
                version,
                cipher,
                trusted,
                trust_error,
                chain,
                handshake_signature_valid,
                duration_ms,
                error,
                client_certificate_requested,
                acceptable_client_cas,
                client_certificate,
                legacy_hello,
                ocsp_stapled: None,
            },
        )
}

fn certificate() -> impl Strategy<Value = CertificateInfo> {
    (
        (text(), text(), text(), text(), text()),
        (vec(text(), 0..4), vec(text(), 0..2)),
        (text(), any::<i64>(), text(), any::<i64>(), any::<i64>()),
        (text(), any::<u32>(), option::of(text()), text(), text()),
        (vec(text(), 0..3), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (thumbprint_sha1, fingerprint_sha256, subject, issuer, serial),
                (san_dns, san_ip),
                (not_before, not_before_unix, not_after, not_after_unix, days_left),
                (key_algorithm, key_bits, key_curve, signature_algorithm, signature_hash),
                (eku, eku_present, self_signed),
            )| CertificateInfo {
                thumbprint_sha1,
                fingerprint_sha256,
                subject,
                issuer,
                serial,
                san_dns,
                san_ip,
                not_before,
                not_before_unix,
                not_after,
                not_after_unix,
                days_left,
                key_algorithm,
                key_bits,
                key_curve,
                signature_algorithm,
                signature_hash,
                eku,
                eku_present,
                self_signed,
            },
        )
}

fn legacy_port() -> impl Strategy<Value = LegacyPortResult> {
    (
        any::<u16>(),
        tcp_state(),
        any::<bool>(),
        option::of(text()),
        any::<bool>(),
        option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(
            |(
                port,
                tcp,
                tls_completed,
                thumbprint_sha1,
                covers_gateway_name,
                matches_expected_thumbprint,
                gateway_listener,
            )| LegacyPortResult {
                port,
                tcp,
                tls_completed,
                thumbprint_sha1,
                covers_gateway_name,
                matches_expected_thumbprint,
                gateway_listener,
            },
        )
}

fn address_result() -> impl Strategy<Value = AddressResult> {
    (
        (text(), severity(), vec(finding(), 0..3), tcp()),
        (
            option::of(tls()),
            option::of(certificate()),
            vec(legacy_port(), 0..2),
        ),
    )
        .prop_map(
            |((address, verdict, findings, tcp), (tls, certificate, legacy_ports))| AddressResult {
                address,
                verdict,
                findings,
                tcp,
                tls,
                certificate,
                legacy_ports,
                durations: Durations::default(),
            },
        )
}

fn skipped() -> impl Strategy<Value = SkippedAddress> {
    (text(), text()).prop_map(|(address, reason)| SkippedAddress { address, reason })
}

fn check_result() -> impl Strategy<Value = CheckResult> {
    (
        (vec(address_result(), 0..3), vec(skipped(), 0..2)),
        (target(), expectations(), text(), severity()),
        (vec(finding(), 0..4), dns(), tcp()),
        (option::of(tls()), option::of(certificate())),
        (
            vec(legacy_port(), 0..2),
            (
                duration_ms(),
                duration_ms(),
                duration_ms(),
                duration_ms(),
                duration_ms(),
            ),
        ),
    )
        .prop_map(
            |(
                (addresses, skipped_addresses),
                (target, expectations, started_at, verdict),
                (findings, dns, tcp),
                (tls, certificate),
                (legacy_ports, (dns_ms, tcp_ms, tls_ms, legacy_ms, total_ms)),
            )| CheckResult {
                target,
                expectations,
                started_at,
                verdict,
                findings,
                dns,
                tcp,
                tls,
                certificate,
                legacy_ports,
                durations: Durations {
                    dns_ms,
                    tcp_ms,
                    tls_ms,
                    legacy_ms,
                    total_ms,
                },
                addresses,
                skipped_addresses,
            },
        )
}

fn labels() -> impl Strategy<Value = Labels> {
    btree_map(text(), text(), 0..4)
}

fn report() -> impl Strategy<Value = Report> {
    (
        any::<u64>(),
        option::of(any::<u64>()),
        vec(
            (text(), any::<u64>(), check_result()).prop_map(|(check, produced_at_ms, result)| {
                CheckReport {
                    check,
                    produced_at_ms,
                    result,
                }
            }),
            0..3,
        ),
    )
        .prop_map(|(seq, round, results)| Report {
            seq,
            round,
            results,
        })
}

fn to_coordinator() -> impl Strategy<Value = ToCoordinator> {
    prop_oneof![
        (text(), text(), labels()).prop_map(|(probe, agent_version, labels)| {
            ToCoordinator::Hello {
                probe,
                agent_version,
                labels,
            }
        }),
        report().prop_map(ToCoordinator::Report),
        (text(), text(), vec(any::<u8>(), 0..300), text()).prop_map(
            |(token, name, csr_der, agent_version)| ToCoordinator::Enroll {
                token,
                name,
                csr_der,
                agent_version,
            }
        ),
        vec(any::<u8>(), 0..300).prop_map(|csr_der| ToCoordinator::Renew { csr_der }),
    ]
}

fn planned_check() -> impl Strategy<Value = PlannedCheck> {
    (
        text(),
        target(),
        expectations(),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        vec(text(), 0..2),
    )
        .prop_map(
            |(
                name,
                target,
                expectations,
                (interval_ms, connect_timeout_ms, handshake_timeout_ms),
                resolve,
            )| PlannedCheck {
                name,
                target,
                expectations,
                interval_ms,
                connect_timeout_ms,
                handshake_timeout_ms,
                resolve,
            },
        )
}

fn to_probe() -> impl Strategy<Value = ToProbe> {
    prop_oneof![
        (any::<u64>(), vec(planned_check(), 0..3)).prop_map(|(generation, checks)| ToProbe::Plan(
            Plan {
                generation,
                checks,
                reconnect_spread_ms: generation % 600_000,
            }
        )),
        any::<u64>().prop_map(|seq| ToProbe::Ack { seq }),
        (any::<u64>(), vec(text(), 0..3))
            .prop_map(|(round, checks)| ToProbe::ProbeNow { round, checks }),
        (text(), vec(any::<u8>(), 0..300), labels()).prop_map(|(name, cert_der, labels)| {
            ToProbe::Enrolled {
                name,
                cert_der,
                labels,
            }
        }),
        vec(any::<u8>(), 0..300).prop_map(|cert_der| ToProbe::Renewed { cert_der }),
        text().prop_map(|reason| ToProbe::Refused { reason }),
    ]
}

/// Splits `bytes` at the given cut points (taken modulo the length) and feeds a decoder,
/// stopping at the first error.
fn feed_in_pieces<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    cuts: &[usize],
) -> Vec<Result<T, WireError>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    for pair in points.windows(2) {
        decoder.push(&bytes[pair[0]..pair[1]]);
        while let Some(frame) = decoder.next_frame::<T>() {
            // An error is final: the stream is unusable after it.
            let failed = frame.is_err();
            out.push(frame);
            if failed {
                return out;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failing cases are kept beside this file and replayed first.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn to_coordinator_round_trips(message in to_coordinator()) {
        let frame = wire::encode(&message).expect("encode");
        prop_assert!(frame.len() - PREFIX_LEN <= MAX_FRAME);
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&frame[..PREFIX_LEN]);
        prop_assert_eq!(wire::payload_len(prefix), Ok(frame.len() - PREFIX_LEN));
        let back: ToCoordinator = wire::decode(&frame[PREFIX_LEN..]).expect("decode");
        prop_assert_eq!(back, message);
    }

    #[test]
    fn to_probe_round_trips(message in to_probe()) {
        let frame = wire::encode(&message).expect("encode");
        let back: ToProbe = wire::decode(&frame[PREFIX_LEN..]).expect("decode");
        prop_assert_eq!(back, message);
    }

    #[test]
    fn a_stream_of_frames_decodes_the_same_however_it_is_cut(
        messages in vec(to_coordinator(), 1..4),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let stream: Vec<u8> = messages
            .iter()
            .flat_map(|m| wire::encode(m).expect("encode"))
            .collect();
        let got = feed_in_pieces::<ToCoordinator>(&stream, &cuts);
        let got: Vec<ToCoordinator> = got.into_iter().map(|r| r.expect("decode")).collect();
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in vec(any::<u8>(), 0..512), cuts in vec(any::<usize>(), 0..6)) {
        // Whatever comes in, decoding returns; an error is a WireError with a reason label.
        for result in [
            wire::decode::<ToCoordinator>(&bytes).map(|_| ()),
            wire::decode::<ToProbe>(&bytes).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert!(["too_large", "empty", "version", "malformed"].contains(&e.reason()));
            }
        }
        let frames = feed_in_pieces::<ToCoordinator>(&bytes, &cuts);
        prop_assert!(frames.len() <= bytes.len() / (PREFIX_LEN + 1) + 1);
    }

    #[test]
    fn a_truncated_or_extended_frame_is_refused(message in to_coordinator(), extra in 1usize..8) {
        let frame = wire::encode(&message).expect("encode");
        let payload = &frame[PREFIX_LEN..];
        let mut longer = payload.to_vec();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(wire::decode::<ToCoordinator>(&longer), Err(WireError::Trailing(extra)));
        let cut = payload.len().saturating_sub(extra.min(payload.len() - 1));
        prop_assert!(wire::decode::<ToCoordinator>(&payload[..cut]).is_err());
    }

    #[test]
    fn thumbprints_parse_back_from_every_printed_form(t in thumbprint(), lower in any::<bool>(), mark in any::<bool>()) {
        let forms = [t.to_windows_form(), t.to_colon_form(), t.to_colon_form().replace(':', " ")];
        for form in forms {
            let mut pasted = if lower { form.to_lowercase() } else { form.clone() };
            if mark {
                pasted.insert(0, '\u{200E}');
            }
            let back = Thumbprint::parse(&pasted).expect("parses");
            prop_assert_eq!(&back, &t, "{}", pasted);
        }
        let expected_kind = if t.as_bytes().len() == 20 { ThumbprintKind::Sha1 } else { ThumbprintKind::Sha256 };
        prop_assert_eq!(t.kind(), expected_kind);
    }

    #[test]
    fn thumbprint_parsing_never_panics_and_errors_say_why(input in "\\PC{0,80}") {
        match Thumbprint::parse(&input) {
            Ok(t) => prop_assert_eq!(Thumbprint::parse(&t.to_string()).expect("reparse"), t),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
