//! How a report's results are kept in `reports.results`: the postcard bytes the probe sent,
//! as received, behind the protocol version they were encoded with (schema 3); rows written
//! before schema 3 hold the same results as JSON text and are still read.
//!
//! A report's frame is `version | variant | seq | round | results` in postcard, and the
//! results are its last field, so the stored value is cut from the received frame without
//! decoding or encoding anything again ([`Encoded::from_report_frame`]): the writer binds
//! those bytes, and a report costs the store no serialisation at all. Only reports whose
//! results the coordinator changed (results of checks outside the probe's plan dropped) are
//! encoded again ([`encode_into`]).
//!
//! The version prefix is what keeps stored rows readable across upgrades: a coordinator reads
//! rows of its own protocol version; one that changes the encoding of results must bring a
//! migration of the rows of the old version (the decoder names the version it met).
//!
//! The writer stores that value compressed (schema 4, [`compress`]): `0 | length (u32, little
//! endian) | LZ4 block`. The first byte tells the two forms apart: a plain value begins with
//! the protocol version as a postcard varint, never 0. A value LZ4 cannot make smaller (a
//! report without results, a few bytes) is stored plain, and schema 3's plain rows are read as
//! they are. Why: a report of the benchmark's (one check, two addresses, 1,099 bytes stored
//! plain) is stored in 514, and at saturating ingest the store wrote every byte twice (the
//! WAL, then the database at its checkpoint) at 119 MB/s for 37,900 reports/s: the WAL's
//! frames and the checkpoint's writes were 22% of the coordinator's CPU samples (perf).
//! Compressing costs under a microsecond of CPU per report (12% of the store thread's samples
//! at 39,000 reports/s). Reading decompresses into a new buffer of the length the row states, refused
//! above [`MAX_PLAIN`] (a damaged row never makes the reader allocate more than a frame).

use rusqlite::types::ValueRef;

use cemwatch_shared::view::CheckReportView;
use cemwatch_shared::wire::{CheckReport, MAX_FRAME, PROTOCOL_VERSION};

use crate::store::{Result, StoreError};

/// A report's results as stored: `bytes[start..]` is the protocol version followed by the
/// results in postcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    bytes: Vec<u8>,
    start: usize,
}

impl Encoded {
    /// The stored value.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// The stored value of the results of a report frame's payload (`version | variant | seq
    /// | round | results`, as [`cemwatch_shared::wire::decode`] accepted it as a
    /// `ToCoordinator::Report`), reusing the payload's allocation: the version is written
    /// over the end of the header, just before the results. None when the payload does not
    /// have that shape.
    pub fn from_report_frame(mut payload: Vec<u8>) -> Option<Self> {
        let (_, rest): ((u16, u32, u64, Option<u64>), &[u8]) =
            postcard::take_from_bytes(&payload).ok()?;
        let results_at = payload.len() - rest.len();
        let mut version = [0u8; 3];
        let version = postcard::to_slice(&PROTOCOL_VERSION, &mut version).ok()?;
        // The header holds the version, a variant, a seq and a round tag: always longer than
        // the version alone.
        let start = results_at.checked_sub(version.len())?;
        payload[start..results_at].copy_from_slice(version);
        Some(Self {
            bytes: payload,
            start,
        })
    }
}

impl Encoded {
    /// The stored value of `results`, encoded (a report the coordinator holds owned).
    pub fn of_results(results: &[CheckReport]) -> Result<Self> {
        Ok(Self {
            bytes: encode(results)?,
            start: 0,
        })
    }

    /// The stored value with only the results whose check `keep` accepts, in order (a report
    /// some of whose results the coordinator drops): read in place and encoded again.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<Self> {
        let (version, results): (u16, Vec<CheckReportView<'_>>) =
            postcard::from_bytes(self.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("results to filter: {e}")))?;
        if version != PROTOCOL_VERSION {
            return Err(StoreError::Corrupt(format!(
                "results of protocol version {version} to filter, expected {PROTOCOL_VERSION}"
            )));
        }
        let kept: Vec<CheckReportView<'_>> =
            results.into_iter().filter(|r| keep(r.check)).collect();
        Self::of_views(&kept)
    }

    /// The stored value of results read in place (their views encode as the model does).
    pub fn of_views(results: &[CheckReportView<'_>]) -> Result<Self> {
        let bytes = postcard::to_extend(&PROTOCOL_VERSION, Vec::new())
            .and_then(|b| postcard::to_extend(&results, b))
            .map_err(|e| StoreError::Corrupt(format!("cannot encode results: {e}")))?;
        Ok(Self { bytes, start: 0 })
    }
}

/// Appends the stored value of `results` to `out` (which should be empty).
pub fn encode_into(results: &[CheckReport], out: &mut Vec<u8>) -> Result<()> {
    let buf = std::mem::take(out);
    let buf = postcard::to_extend(&PROTOCOL_VERSION, buf)
        .and_then(|b| postcard::to_extend(&results, b))
        .map_err(|e| StoreError::Corrupt(format!("cannot encode results: {e}")))?;
    *out = buf;
    Ok(())
}

/// The stored value of `results`.
pub fn encode(results: &[CheckReport]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(results, &mut out)?;
    Ok(out)
}

/// The first byte of a compressed stored value (a plain one begins with the protocol version,
/// at least 1).
pub const COMPRESSED: u8 = 0;

/// The compressed form's header: [`COMPRESSED`] and the plain value's length.
const HEADER: usize = 5;

/// The longest plain value a compressed row may state: a report's results never exceed its
/// frame.
pub const MAX_PLAIN: usize = MAX_FRAME;

/// The compressed form of a stored value, written into `buf` (grown as needed and reused from
/// one report to the next, never shrunk or cleared); None when it would not be smaller than
/// `plain`, which is then stored as it is.
pub fn compress<'b>(plain: &[u8], buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    let len = u32::try_from(plain.len()).ok()?;
    let room = HEADER + lz4_flex::block::get_maximum_output_size(plain.len());
    if buf.len() < room {
        buf.resize(room, 0);
    }
    buf[0] = COMPRESSED;
    buf[1..HEADER].copy_from_slice(&len.to_le_bytes());
    let n = lz4_flex::block::compress_into(plain, &mut buf[HEADER..]).ok()?;
    (HEADER + n < plain.len()).then(|| &buf[..HEADER + n])
}

/// The plain value of a compressed one.
pub fn decompress(stored: &[u8]) -> Result<Vec<u8>> {
    let header: [u8; 4] = stored
        .get(1..HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "stored results: a compressed value of {} bytes, shorter than its {HEADER}-byte header",
                stored.len()
            ))
        })?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_PLAIN {
        return Err(StoreError::Corrupt(format!(
            "stored results: a compressed value says it holds {len} bytes, more than a report can \
             ({MAX_PLAIN}); the row is damaged"
        )));
    }
    // Into a buffer of exactly the stated length, which the decoder checks every write
    // against (its allocating form may panic when the data is longer than stated).
    let mut plain = vec![0u8; len];
    let n = lz4_flex::block::decompress_into(&stored[HEADER..], &mut plain)
        .map_err(|e| StoreError::Corrupt(format!("stored results: cannot decompress: {e}")))?;
    if n != len {
        return Err(StoreError::Corrupt(format!(
            "stored results: decompressed to {n} bytes where the row states {len}"
        )));
    }
    Ok(plain)
}

/// Reads stored results: compressed (schema 4) or plain, postcard behind their protocol
/// version.
pub fn decode_bytes(bytes: &[u8]) -> Result<Vec<CheckReport>> {
    if bytes.first() == Some(&COMPRESSED) {
        return decode_plain(&decompress(bytes)?);
    }
    decode_plain(bytes)
}

/// Reads a plain stored value: postcard behind its protocol version (schema 3's blobs).
fn decode_plain(bytes: &[u8]) -> Result<Vec<CheckReport>> {
    let (version, rest): (u16, &[u8]) = postcard::take_from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("stored results: {e}")))?;
    if version != PROTOCOL_VERSION {
        return Err(StoreError::Corrupt(format!(
            "stored results are in protocol version {version}, this coordinator reads {PROTOCOL_VERSION}: \
             open the store with the coordinator that wrote it"
        )));
    }
    let (results, rest): (Vec<CheckReport>, &[u8]) = postcard::take_from_bytes(rest)
        .map_err(|e| StoreError::Corrupt(format!("stored results: {e}")))?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "stored results: {} bytes after the results",
            rest.len()
        )));
    }
    Ok(results)
}

/// Reads a stored `reports.results` value: postcard behind its protocol version, compressed
/// (schema 4) or not (schema 3), or JSON text (rows written before).
pub fn decode(value: ValueRef<'_>) -> Result<Vec<CheckReport>> {
    match value {
        ValueRef::Blob(bytes) => decode_bytes(bytes),
        ValueRef::Text(text) => serde_json::from_slice(text)
            .map_err(|e| StoreError::Corrupt(format!("stored results (JSON): {e}"))),
        other => Err(StoreError::Corrupt(format!(
            "stored results of type {:?}, not postcard bytes or JSON text",
            other.data_type()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_results() -> Vec<CheckReport> {
        crate::store::test_report(1, "ok", 7).results
    }

    /// A stored value compresses (results of four checks of one gateway, which repeat one
    /// another as a probe's do, to less than half), reads back as the same results, and keeps
    /// telling itself apart from a plain value (schema 3's rows read as they are).
    #[test]
    fn compressed_values_read_back_and_plain_ones_still_read() {
        let one = sample_results().remove(0);
        let results: Vec<CheckReport> = ["gateway", "gateway-b", "gateway-c", "gateway-d"]
            .into_iter()
            .map(|check| CheckReport {
                check: check.into(),
                ..one.clone()
            })
            .collect();
        let plain = encode(&results).expect("encode");
        let mut buf = Vec::new();
        let stored = compress(&plain, &mut buf).expect("smaller").to_vec();
        assert_eq!(stored[0], COMPRESSED);
        assert_ne!(
            plain[0], COMPRESSED,
            "a plain value begins with the version"
        );
        assert!(
            stored.len() * 2 < plain.len(),
            "{} of {} bytes",
            stored.len(),
            plain.len()
        );
        assert_eq!(decode_bytes(&stored).expect("compressed"), results);
        assert_eq!(decode_bytes(&plain).expect("plain"), results);
        assert_eq!(decompress(&stored).expect("plain bytes"), plain);
        // The buffer is reused: a shorter value after a longer one is whole.
        let empty = encode(&[]).expect("encode");
        assert!(compress(&empty, &mut buf).is_none(), "too short to gain");
        let again = compress(&plain, &mut buf).expect("smaller");
        assert_eq!(again, &stored[..]);
    }

    /// A damaged compressed row is refused with what is wrong with it, never a panic nor an
    /// allocation beyond a frame.
    #[test]
    fn damaged_compressed_values_are_refused() {
        let plain = encode(&sample_results()).expect("encode");
        let mut buf = Vec::new();
        let stored = compress(&plain, &mut buf).expect("smaller").to_vec();
        let error = |bytes: &[u8]| decode_bytes(bytes).expect_err("refused").to_string();
        assert!(error(&[COMPRESSED, 1, 0]).contains("shorter than its 5-byte header"));
        let mut huge = stored.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            error(&huge).contains("more than a report can"),
            "{}",
            error(&huge)
        );
        let mut short = stored.clone();
        short[1..5].copy_from_slice(&10u32.to_le_bytes());
        assert!(
            error(&short).contains("cannot decompress"),
            "{}",
            error(&short)
        );
        let mut long = stored.clone();
        long[1..5].copy_from_slice(&((plain.len() + 1) as u32).to_le_bytes());
        assert!(
            error(&long).contains("where the row states"),
            "{}",
            error(&long)
        );
        assert!(error(&stored[..stored.len() - 3]).contains("cannot decompress"));
        // Every truncation and every single flipped byte: an error or the same results'
        // bytes decoded (never a panic).
        for cut in 0..stored.len() {
            let _ = decode_bytes(&stored[..cut]);
        }
        for at in 1..stored.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = stored.clone();
                bad[at] ^= bit;
                let _ = decode_bytes(&bad);
            }
        }
    }
    use cemwatch_shared::wire::{Report, ToCoordinator};

    #[test]
    fn results_kept_by_check_are_the_stored_value_of_those_results_in_order() {
        let mut r = report(3, None);
        let mut other = r.results[0].clone();
        other.check = "unplanned".into();
        other.result.verdict = cemwatch_shared::Severity::Ok;
        r.results.insert(1, other);
        let all = Encoded::of_results(&r.results).expect("encode");
        let kept = all.retain(|check| check != "unplanned").expect("retain");
        let expected: Vec<CheckReport> = r
            .results
            .iter()
            .filter(|c| c.check != "unplanned")
            .cloned()
            .collect();
        assert_eq!(kept.as_slice(), encode(&expected).expect("encode"));
        assert_eq!(decode_bytes(kept.as_slice()).expect("decode"), expected);
        // Nothing kept: an empty list, still readable.
        let none = all.retain(|_| false).expect("retain");
        assert_eq!(decode_bytes(none.as_slice()).expect("decode"), Vec::new());
    }

    fn report(seq: u64, round: Option<u64>) -> Report {
        let result = serde_json::from_value(serde_json::json!({
            "target": {"host": "gw.example.com", "port": 443},
            "expectations": cemwatch_shared::Expectations::default(),
            "started_at": "2026-11-25T00:00:00Z",
            "verdict": "fail",
            "findings": [{"code": "cert_expired", "severity": "fail", "message": "expired é", "remedy": "renew"}],
            "dns": {"host": "gw.example.com", "addresses": ["192.0.2.1"], "duration_ms": 1.5, "source": "system"},
            "tcp": {"state": "open", "duration_ms": 1.0},
            "durations": {"dns_ms": 0.0, "tcp_ms": 0.0, "tls_ms": 0.0, "legacy_ms": 0.0, "total_ms": 0.0}
        }))
        .expect("a check result");
        Report {
            seq,
            round,
            results: vec![
                CheckReport {
                    check: "gateway".into(),
                    produced_at_ms: 1_700_000_000_000,
                    result,
                };
                2
            ],
        }
    }

    #[test]
    fn the_value_cut_from_a_frame_is_the_encoded_results() {
        for (seq, round) in [
            (0, None),
            (1, Some(0)),
            (300, Some(1 << 40)),
            (u64::MAX, Some(u64::MAX)),
        ] {
            let r = report(seq, round);
            let frame =
                cemwatch_shared::wire::encode(&ToCoordinator::Report(r.clone())).expect("encode");
            let payload = frame[cemwatch_shared::wire::PREFIX_LEN..].to_vec();
            let decoded: ToCoordinator = cemwatch_shared::wire::decode(&payload).expect("decode");
            assert!(matches!(decoded, ToCoordinator::Report(_)));
            let cut = Encoded::from_report_frame(payload).expect("a report frame");
            assert_eq!(cut.as_slice(), encode(&r.results).expect("encode"));
            let back = decode(ValueRef::Blob(cut.as_slice())).expect("decode");
            assert_eq!(back, r.results, "seq {seq} round {round:?}");
        }
    }

    #[test]
    fn rows_written_as_json_before_schema_3_are_read() {
        let r = report(4, None);
        let json = serde_json::to_string(&r.results).expect("json");
        let back = decode(ValueRef::Text(json.as_bytes())).expect("decode");
        assert_eq!(back, r.results);
    }

    #[test]
    fn values_of_another_version_or_with_garbage_are_refused_with_the_reason() {
        let r = report(4, None);
        let mut other = postcard::to_allocvec(&(PROTOCOL_VERSION + 1)).expect("encode");
        other.extend(postcard::to_allocvec(&r.results).expect("encode"));
        let e = decode(ValueRef::Blob(&other)).expect_err("another version");
        assert!(e.to_string().contains("protocol version"), "{e}");
        let mut trailing = encode(&r.results).expect("encode");
        trailing.push(0);
        let e = decode(ValueRef::Blob(&trailing)).expect_err("trailing");
        assert!(e.to_string().contains("after the results"), "{e}");
        let e = decode(ValueRef::Integer(3)).expect_err("integer");
        assert!(e.to_string().contains("not postcard"), "{e}");
        assert!(decode(ValueRef::Blob(&[5, 0xff])).is_err());
    }

    #[test]
    fn a_payload_that_is_not_a_report_frame_is_not_cut() {
        assert_eq!(Encoded::from_report_frame(Vec::new()), None);
        assert_eq!(Encoded::from_report_frame(vec![5]), None);
    }
}
