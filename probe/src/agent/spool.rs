//! The on-disk spool: every report is written here before it is sent and deleted only after the
//! coordinator acknowledged it, so a coordinator restart, a network cut or a probe restart
//! loses nothing. It is bounded: when full, the oldest reports are dropped and counted, never
//! silently. Sequence numbers are persisted before use, so they are never reused, even across
//! crashes (the coordinator deduplicates on `(probe, seq)`).
//!
//! When the disk refuses a write (full, read-only), reports are kept in memory up to the same
//! bound and the error is logged once with what to do; nothing is lost while the process runs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cemwatch_shared::wire::{self, CheckReport, Report, ToCoordinator, PREFIX_LEN};

/// Bounds of the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Most reports kept.
    pub max_reports: usize,
    /// Most bytes kept.
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            max_reports: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// File system error, with the path.
    #[error(
        "spool {path}: {source}; check that the state directory is writable and the disk has room"
    )]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A spooled report that does not decode.
    #[error("spooled report {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The spool of unacknowledged reports.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    next_seq: u64,
    dropped: u64,
    /// seq → encoded frame size, for reports on disk.
    on_disk: BTreeMap<u64, u64>,
    /// Reports the disk refused, kept in memory.
    in_memory: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
    disk_error_logged: bool,
}

const SEQ_FILE: &str = "seq";
const DROPPED_FILE: &str = "dropped";
const SUFFIX: &str = ".report";

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn read_counter(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut on_disk = BTreeMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                on_disk.insert(seq, size);
                bytes += size;
            } else if name.ends_with(".tmp") {
                // A write interrupted by a crash: its sequence number was persisted, the report
                // never completed and was never sent.
                let _ = fs::remove_file(entry.path());
            }
        }
        let persisted = read_counter(&dir.join(SEQ_FILE));
        let highest = on_disk.keys().next_back().copied().unwrap_or(0);
        Ok(Self {
            dir: dir.to_path_buf(),
            limits,
            next_seq: persisted.max(highest) + 1,
            dropped: read_counter(&dir.join(DROPPED_FILE)),
            on_disk,
            in_memory: BTreeMap::new(),
            bytes,
            disk_error_logged: false,
        })
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// Appends a report and returns its sequence number.
    pub fn append(&mut self, round: Option<u64>, results: Vec<CheckReport>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = match wire::encode(&ToCoordinator::Report(Report {
            seq,
            round,
            results,
        })) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(seq, error = %e, "report too large to send; dropped");
                self.count_drop(1);
                return seq;
            }
        };
        let size = frame.len() as u64;
        self.make_room(size);
        let seq_written = write_atomic(&self.dir.join(SEQ_FILE), seq.to_string().as_bytes());
        let report_written = seq_written.and_then(|()| write_atomic(&self.path_of(seq), &frame));
        match report_written {
            Ok(()) => {
                self.on_disk.insert(seq, size);
                self.disk_error_logged = false;
            }
            Err(e) => {
                if !self.disk_error_logged {
                    tracing::error!(
                        dir = %self.dir.display(),
                        error = %e,
                        "cannot write to the spool; keeping reports in memory until the disk has room (free space or fix permissions)"
                    );
                    self.disk_error_logged = true;
                }
                self.in_memory.insert(seq, frame);
            }
        }
        self.bytes += size;
        seq
    }

    fn make_room(&mut self, incoming: u64) {
        let mut dropped = 0;
        while self.len() + 1 > self.limits.max_reports
            || (self.bytes + incoming > self.limits.max_bytes && !self.is_empty())
        {
            let oldest_disk = self.on_disk.keys().next().copied();
            let oldest_mem = self.in_memory.keys().next().copied();
            let oldest = match (oldest_disk, oldest_mem) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            self.remove(oldest);
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                max_reports = self.limits.max_reports,
                "spool full: dropped the oldest reports (the coordinator has been unreachable for long)"
            );
            self.count_drop(dropped);
        }
    }

    fn count_drop(&mut self, n: u64) {
        self.dropped += n;
        let _ = write_atomic(
            &self.dir.join(DROPPED_FILE),
            self.dropped.to_string().as_bytes(),
        );
    }

    fn remove(&mut self, seq: u64) -> bool {
        if let Some(size) = self.on_disk.remove(&seq) {
            let _ = fs::remove_file(self.path_of(seq));
            self.bytes = self.bytes.saturating_sub(size);
            true
        } else if let Some(frame) = self.in_memory.remove(&seq) {
            self.bytes = self.bytes.saturating_sub(frame.len() as u64);
            true
        } else {
            false
        }
    }

    /// Deletes an acknowledged report. Returns whether it was pending.
    pub fn ack(&mut self, seq: u64) -> bool {
        self.remove(seq)
    }

    /// Sequence numbers waiting for an acknowledgement, oldest first.
    pub fn pending(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self
            .on_disk
            .keys()
            .chain(self.in_memory.keys())
            .copied()
            .collect();
        all.sort_unstable();
        all
    }

    /// The encoded frame of a pending report.
    pub fn frame(&self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        if let Some(frame) = self.in_memory.get(&seq) {
            return Ok(Some(frame.clone()));
        }
        if !self.on_disk.contains_key(&seq) {
            return Ok(None);
        }
        let path = self.path_of(seq);
        let bytes = fs::read(&path).map_err(|e| io_err(&path, e))?;
        // Check it before it goes on the wire: a damaged file is reported, not sent.
        let damaged = |reason: String| SpoolError::Damaged {
            path: path.display().to_string(),
            reason,
        };
        if bytes.len() < PREFIX_LEN {
            return Err(damaged("shorter than a frame header".into()));
        }
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&bytes[..PREFIX_LEN]);
        let len = wire::payload_len(prefix).map_err(|e| damaged(e.to_string()))?;
        if bytes.len() != PREFIX_LEN + len {
            return Err(damaged("length does not match its header".into()));
        }
        wire::decode::<ToCoordinator>(&bytes[PREFIX_LEN..]).map_err(|e| damaged(e.to_string()))?;
        Ok(Some(bytes))
    }

    /// Removes a damaged report (after it was reported) and counts it as dropped.
    pub fn discard(&mut self, seq: u64) {
        if self.remove(seq) {
            self.count_drop(1);
        }
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.on_disk.len() + self.in_memory.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reports dropped because the spool was full (persisted across restarts).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reports produced so far (the last sequence number allocated).
    pub fn produced(&self) -> u64 {
        self.next_seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(n: usize) -> SpoolLimits {
        SpoolLimits {
            max_reports: n,
            max_bytes: u64::MAX,
        }
    }

    #[test]
    fn survives_reopen_and_never_reuses_a_sequence_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), limits(10)).expect("open");
        let a = s.append(None, vec![]);
        let b = s.append(Some(7), vec![]);
        assert_eq!((a, b), (1, 2));
        assert!(s.ack(a));
        assert!(!s.ack(a), "a second ack is a no-op");
        assert!(s.ack(b));
        drop(s);
        let mut s = Spool::open(dir.path(), limits(10)).expect("reopen");
        assert!(s.is_empty());
        assert_eq!(s.append(None, vec![]), 3, "acked numbers are not reused");
        drop(s);
        let s = Spool::open(dir.path(), limits(10)).expect("reopen");
        assert_eq!(s.pending(), vec![3]);
        let frame = s.frame(3).expect("read").expect("present");
        let decoded: ToCoordinator = wire::decode(&frame[PREFIX_LEN..]).expect("decode");
        assert!(matches!(
            decoded,
            ToCoordinator::Report(Report {
                seq: 3,
                round: None,
                ..
            })
        ));
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), limits(3)).expect("open");
        for _ in 0..5 {
            s.append(None, vec![]);
        }
        assert_eq!(s.pending(), vec![3, 4, 5]);
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.produced(), 5);
        drop(s);
        let s = Spool::open(dir.path(), limits(3)).expect("reopen");
        assert_eq!(s.dropped(), 2, "the drop count is persisted");
    }

    #[test]
    fn a_damaged_file_is_reported_not_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), limits(3)).expect("open");
        let seq = s.append(None, vec![]);
        std::fs::write(s.path_of(seq), b"\0\0\0\x05garbage").expect("corrupt");
        assert!(matches!(s.frame(seq), Err(SpoolError::Damaged { .. })));
        s.discard(seq);
        assert!(s.is_empty());
        assert_eq!(s.dropped(), 1);
    }

    #[test]
    fn a_refused_write_keeps_reports_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::open(dir.path(), limits(10)).expect("open");
        // Make every durable write fail, even for root: the sequence file becomes a directory,
        // so renaming onto it fails the way a full or read-only disk does.
        std::fs::create_dir(dir.path().join(SEQ_FILE)).expect("mkdir");
        std::fs::write(dir.path().join(SEQ_FILE).join("x"), b"x").expect("fill");
        let seq = s.append(None, vec![]);
        assert_eq!(s.pending(), vec![seq]);
        assert!(!s.path_of(seq).exists(), "nothing reached the disk");
        let frame = s.frame(seq).expect("read").expect("kept in memory");
        assert!(matches!(
            wire::decode::<ToCoordinator>(&frame[PREFIX_LEN..]),
            Ok(ToCoordinator::Report(Report { seq: 1, .. }))
        ));
        assert!(s.ack(seq));
        assert!(s.is_empty());
    }
}
