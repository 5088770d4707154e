//! Fuzz targets over cemwatch's decoders: what an attacker controls reaches these functions.
//!
//! - [`frame`]: a frame payload from the network, as both message directions, and what
//!   decodes must re-encode to the same bytes;
//! - [`frame_stream`]: a byte stream cut into arbitrary pieces must decode exactly as when it
//!   arrives in one piece;
//! - [`thumbprint`]: whatever people paste;
//! - [`cert`]: a certificate chosen by a hostile gateway, through the analysis, the triage and
//!   the chain builder;
//! - [`config`]: the coordinator's configuration file.
//!
//! Each one is run by cargo-fuzz (`fuzz_targets/*.rs`, nightly, coverage-guided) and by the
//! stable runner `replay` (seed corpus plus deterministic mutations, time-bounded). A panic
//! or a failed assertion is a finding.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::OnceLock;

use cemwatch_probe::check::cert::{self, TrustStore};
use cemwatch_probe::check::triage;
use cemwatch_shared::wire::{self, FrameDecoder, ToCoordinator, ToProbe, WireError, PREFIX_LEN};
use cemwatch_shared::{Expectations, Thumbprint};

/// A fuzz target: one input, a panic on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, for the stable runner.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("frame_stream", frame_stream),
    ("thumbprint", thumbprint),
    ("cert", cert),
    ("config", config),
];

fn round_trip<T>(payload: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let Ok(message) = wire::decode::<T>(payload) else {
        return;
    };
    // Whatever decoded must encode again, and that encoding must decode to the same bytes
    // (bytes, not values: a decoded f64 may be NaN, which is not equal to itself).
    let encoded = wire::encode(&message).expect("a decoded message encodes");
    // The encoding is canonical (shortest varints), so never longer than what was decoded.
    assert!(
        encoded.len() - PREFIX_LEN <= payload.len(),
        "re-encoding grew"
    );
    let again: T = wire::decode(&encoded[PREFIX_LEN..]).expect("an encoded message decodes");
    let encoded_again = wire::encode(&again).expect("encodes");
    assert_eq!(encoded, encoded_again, "encoding is not stable");
}

/// A frame payload (the bytes after the length prefix) decoded as both directions.
pub fn frame(data: &[u8]) {
    round_trip::<ToCoordinator>(data);
    round_trip::<ToProbe>(data);
    stored_results(data);
    report_view(data);
}

/// The coordinator reads a report in place ([`cemwatch_shared::view::decode_report`]): it must
/// accept exactly the reports the owned decoding accepts, refuse what it refuses with the same
/// reason, and read the same values (compared as their canonical encoding, as above).
fn report_view(payload: &[u8]) {
    use cemwatch_shared::view::{decode_report, ReportView};
    let owned = wire::decode::<ToCoordinator>(payload);
    match (decode_report(payload), &owned) {
        (Ok(Some(view)), Ok(ToCoordinator::Report(report))) => {
            // A policy thumbprint is read as sent by the view and parsed by the model, which
            // renders it canonically (and views of owned values leave it out): both compared
            // in the canonical form.
            let of_view: Vec<Option<String>> = view
                .results
                .iter()
                .map(|r| {
                    r.result.expectations.thumbprint.map(|t| {
                        cemwatch_shared::Thumbprint::parse(t.0)
                            .expect("the view parsed it")
                            .to_string()
                    })
                })
                .collect();
            let of_model: Vec<Option<String>> = report
                .results
                .iter()
                .map(|r| {
                    r.result
                        .expectations
                        .thumbprint
                        .as_ref()
                        .map(|t| t.to_string())
                })
                .collect();
            fn canonical<'a>(mut v: ReportView<'a>, texts: &'a [Option<String>]) -> Vec<u8> {
                for (r, text) in v.results.iter_mut().zip(texts) {
                    r.result.expectations.thumbprint =
                        text.as_deref().map(cemwatch_shared::view::ThumbprintText);
                }
                wire::encode(&v).expect("encode a view")
            }
            assert_eq!(
                canonical(view.clone(), &of_view),
                canonical(ReportView::from(report), &of_model),
                "the view reads what the model reads"
            );
        }
        (Ok(Some(_)), other) => panic!("a view of a frame the model reads as {other:?}"),
        (Ok(None), Ok(ToCoordinator::Report(_))) => panic!("a report the view did not read"),
        (Ok(None), _) => {}
        (Err(e), Err(o)) => assert_eq!(e.reason(), o.reason(), "{e} / {o}"),
        (Err(e), Ok(m)) => panic!("the view refused what the model reads ({e}): {m:?}"),
    }
}

/// A report the coordinator accepts is stored as the results cut from its frame: the cut must
/// read back as exactly the results the frame decoded to. Compared as their canonical
/// encoding, not as the bytes received: a peer may send overlong varints (postcard reads
/// them), which are stored as sent, and a duration may be NaN, which is not equal to itself.
fn stored_results(payload: &[u8]) {
    use cemwatch_coordinator::store::results;
    if let Ok(ToCoordinator::Report(report)) = wire::decode::<ToCoordinator>(payload) {
        let cut = results::Encoded::from_report_frame(payload.to_vec())
            .expect("a decoded report frame is cut");
        let back = results::decode_bytes(cut.as_slice()).expect("stored results read back");
        assert_eq!(
            results::encode(&back).expect("encode"),
            results::encode(&report.results).expect("encode"),
            "the stored bytes read back as the results"
        );
    }
}

fn describe(result: &Result<ToCoordinator, WireError>) -> Result<Vec<u8>, WireError> {
    match result {
        Ok(m) => Ok(wire::encode(m).expect("a decoded message encodes")),
        Err(e) => Err(e.clone()),
    }
}

fn decode_stream(pieces: &[&[u8]]) -> Vec<Result<Vec<u8>, WireError>> {
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(frame) = decoder.next_frame::<ToCoordinator>() {
            let failed = frame.is_err();
            out.push(describe(&frame));
            if failed {
                // An error is final: the connection is closed.
                return out;
            }
        }
    }
    out
}

/// A byte stream cut into pieces whose sizes come from the first byte: the frames decoded
/// must not depend on how the stream was cut.
pub fn frame_stream(data: &[u8]) {
    let Some((&shape, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_stream(&[stream]);
    let step = usize::from(shape % 17) + 1;
    let mut pieces = Vec::new();
    let mut rest = stream;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = (step + i % 3).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        pieces.push(piece);
        rest = tail;
        i += 1;
    }
    let cut = decode_stream(&pieces);
    assert_eq!(
        whole, cut,
        "the decoded frames depend on how the stream was cut"
    );
    assert!(whole.len() <= stream.len() / (PREFIX_LEN + 1) + 1);
}

/// A pasted thumbprint: what parses must print and parse back to itself in every form.
pub fn thumbprint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Thumbprint::parse(text) {
        Ok(t) => {
            assert!(matches!(t.as_bytes().len(), 20 | 32));
            for form in [
                t.to_windows_form(),
                t.to_colon_form(),
                t.to_string().to_lowercase(),
            ] {
                assert_eq!(Thumbprint::parse(&form).as_ref(), Ok(&t), "{form}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn fixed_now() -> time::OffsetDateTime {
    // 2026-11-25T00:00:00Z: fixed, so a finding is reproducible.
    time::OffsetDateTime::from_unix_timestamp(1_795_564_800)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn empty_store() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(TrustStore::empty)
}

/// A certificate from a hostile gateway: the leaf analysis and triage, then the chain builder
/// with the input cut into a leaf and intermediates (the first two bytes say where).
pub fn cert(data: &[u8]) {
    let now = fixed_now();
    if let Ok(info) = cert::analyze(data, now) {
        assert_eq!(info.thumbprint_sha1.len(), 40);
        assert_eq!(info.fingerprint_sha256.len(), 64);
        let expectations = Expectations {
            thumbprint: Thumbprint::parse(&info.thumbprint_sha1).ok(),
            required_sans: vec!["smp.example.net".into()],
            ..Expectations::default()
        };
        let _ = triage::certificate_findings(
            &info,
            Some("gateway.example.com"),
            &expectations,
            now.unix_timestamp(),
        );
        let _ = cert::covers_name(&info, "gateway.example.com");
        // A certificate that is itself an anchor is trusted.
        let mut store = TrustStore::empty();
        store.add_der(data.to_vec());
        assert!(store.evaluate(data, &[]).trusted);
    }
    let outcome = empty_store().evaluate(data, &[]);
    assert!(!outcome.trusted, "nothing is trusted by an empty store");
    if data.len() > 2 {
        let split = usize::from(u16::from_be_bytes([data[0], data[1]])) % data.len();
        let (leaf, rest) = data[2..].split_at(split.min(data.len() - 2));
        let intermediates: Vec<Vec<u8>> = rest
            .chunks(rest.len().div_ceil(3).max(1))
            .map(<[u8]>::to_vec)
            .collect();
        let mut store = TrustStore::empty();
        if let Some(first) = intermediates.first() {
            store.add_der(first.clone());
        }
        let _ = store.evaluate(leaf, &intermediates);
    }
}

/// The coordinator's configuration file: accepted, or refused with every problem naming the
/// file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cemwatch_coordinator::config::Config::from_toml(text, "fuzz.toml", Path::new("/base")) {
        Ok(c) => {
            assert!(!c.checks.is_empty());
            assert!(c.limits.max_frame_bytes <= wire::MAX_FRAME);
            let _ = c.plan_for(&Default::default());
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(
                    p.starts_with("fuzz.toml"),
                    "a problem without its file: {p}"
                );
            }
        }
    }
}
