//! Frames the simulator sends and the baseline reads, built and read without the full codec:
//! a report's results are encoded once and spliced behind each new sequence number, and the
//! baseline reads only the sequence number out of a report. Both rely on postcard's layout
//! (varints in field order); the tests hold them equal to `cemwatch_shared::wire`.

use cemwatch_shared::wire::{self, CheckReport, PROTOCOL_VERSION};

/// The index of `ToCoordinator::Report` among the enum's variants.
const REPORT_VARIANT: u32 = 1;

/// Encodes the results of a report once, for [`report_frame`].
pub fn encode_results(results: &[CheckReport]) -> anyhow::Result<Vec<u8>> {
    Ok(postcard::to_stdvec(results)?)
}

/// A complete `ToCoordinator::Report` frame: prefix, version, variant, seq, round, results.
pub fn report_frame(seq: u64, round: Option<u64>, results: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = vec![0u8; wire::PREFIX_LEN];
    out = postcard::to_extend(&PROTOCOL_VERSION, out)?;
    out = postcard::to_extend(&REPORT_VARIANT, out)?;
    out = postcard::to_extend(&seq, out)?;
    out = postcard::to_extend(&round, out)?;
    out.extend_from_slice(results);
    let len = u32::try_from(out.len() - wire::PREFIX_LEN)?;
    out[..wire::PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// The sequence number of a report payload (the bytes after the length prefix), without
/// decoding the rest; `None` for anything that is not a report.
pub fn report_seq(payload: &[u8]) -> Option<u64> {
    let (_version, rest) = varint(payload)?;
    let (variant, rest) = varint(rest)?;
    if variant != u64::from(REPORT_VARIANT) {
        return None;
    }
    varint(rest).map(|(seq, _)| seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cemwatch_shared::wire::{Report, ToCoordinator};

    fn results() -> Vec<CheckReport> {
        Vec::new()
    }

    #[test]
    fn spliced_reports_equal_the_codec_and_their_seq_reads_back() {
        let encoded = encode_results(&results()).expect("results");
        for (seq, round) in [
            (0, None),
            (1, Some(7)),
            (300, None),
            (u64::MAX, Some(u64::MAX)),
        ] {
            let frame = report_frame(seq, round, &encoded).expect("frame");
            let reference = wire::encode(&ToCoordinator::Report(Report {
                seq,
                round,
                results: results(),
            }))
            .expect("encode");
            assert_eq!(frame, reference, "seq {seq}");
            assert_eq!(report_seq(&frame[wire::PREFIX_LEN..]), Some(seq));
        }
        let hello = wire::encode(&ToCoordinator::Hello {
            probe: "p".into(),
            agent_version: "v".into(),
            labels: Default::default(),
        })
        .expect("encode");
        assert_eq!(report_seq(&hello[wire::PREFIX_LEN..]), None);
        assert_eq!(report_seq(&[0xff; 3]), None);
    }
}
