//! Following a log file like `tail -F`, by polling.
//!
//! Each [`Follower::poll`] opens the file, reads what was appended since the last poll, hands
//! every complete line to the caller and closes the file again: the agent that writes the log
//! is never locked out (on Windows the file is opened with read, write and delete sharing, so
//! the agent can write, rename and delete its log while it is being read).
//!
//! - **Rotation** (the file replaced, renamed away, deleted and created again) is recognised
//!   by the file's identity: device and inode on Unix, creation time on Windows, and on every
//!   platform the file's first bytes (Windows "tunnels" the creation time of a file renamed away
//!   to a new file created under the same name within seconds, which is how logs rotate). A new
//!   file is read from its start.
//! - **Truncation** (a file shorter than the offset read so far) starts again from the start of
//!   the new content.
//! - **A half-written last line** is held until its newline arrives; it is never handed out in
//!   pieces. When the file is rotated or truncated under it, the fragment is dropped.
//! - **A file that does not exist yet** is waited for; the poll says so.
//! - **Bounded memory and time**: a line longer than [`FollowLimits::max_line`] is cut to that
//!   length (the rest of it is skipped), reads go through one buffer of
//!   [`FollowLimits::chunk`] bytes, and one poll reads at most
//!   [`FollowLimits::max_read_per_poll`] bytes (the next poll goes on). A file seen for the
//!   first time is not read from its start: only its last [`FollowLimits::tail_window`] bytes
//!   are, to establish the current state; the same applies when the unread part grows beyond
//!   [`FollowLimits::max_backlog`] (a log flood), so the follower never falls behind for good.
//!
//! The position is a [`Cursor`] that the caller may persist and give back to
//! [`Follower::new`], so that a restarted probe resumes where it stopped instead of reading the
//! file again.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes of the file's beginning remembered to recognise it.
pub const HEAD_LEN: usize = 256;

/// Bounds of a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowLimits {
    /// Longest line handed out, in bytes; longer lines are cut to this length.
    pub max_line: usize,
    /// Size of the read buffer, in bytes.
    pub chunk: usize,
    /// Most bytes read by one poll.
    pub max_read_per_poll: u64,
    /// How much of a file's end is read when its start is skipped.
    pub tail_window: u64,
    /// Unread bytes beyond which the follower skips to the file's last `tail_window` bytes.
    pub max_backlog: u64,
}

impl Default for FollowLimits {
    fn default() -> Self {
        Self {
            max_line: 16 * 1024,
            chunk: 64 * 1024,
            max_read_per_poll: 4 * 1024 * 1024,
            tail_window: 64 * 1024,
            max_backlog: 16 * 1024 * 1024,
        }
    }
}

/// What identifies a file beyond its name, where the platform tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    /// Device (Unix) or 0.
    pub volume: u64,
    /// Inode (Unix) or creation time in 100 ns units (Windows).
    pub file: u64,
}

#[cfg(unix)]
fn file_id(meta: &Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId {
        volume: meta.dev(),
        file: meta.ino(),
    })
}

#[cfg(windows)]
fn file_id(meta: &Metadata) -> Option<FileId> {
    // The file index would be better but is not stable in std; the creation time changes when
    // a log is rotated, except within Windows' tunnelling window, which the head comparison
    // covers. A file system without creation times reports 0.
    use std::os::windows::fs::MetadataExt;
    match meta.creation_time() {
        0 => None,
        created => Some(FileId {
            volume: 0,
            file: created,
        }),
    }
}

#[cfg(not(any(unix, windows)))]
fn file_id(_meta: &Metadata) -> Option<FileId> {
    None
}

/// Opens the log for reading without standing in the writer's way.
fn open_shared(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_SHARE_READ: u32 = 0x1;
        const FILE_SHARE_WRITE: u32 = 0x2;
        const FILE_SHARE_DELETE: u32 = 0x4;
        // The agent keeps writing, renames its log to rotate it, or deletes it: all allowed
        // while we read (std's default today, stated here so it stays so).
        options.share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    }
    options.open(path)
}

/// Where a follower is in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The offset of the first byte not yet handed out as part of a line (the start of a
    /// held half-written line, if any).
    pub offset: u64,
    /// The file's identity, where the platform tells it.
    pub id: Option<FileId>,
    /// The file's first bytes (up to [`HEAD_LEN`]).
    pub head: Vec<u8>,
}

/// The state of the file as of the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// The file was read.
    Following,
    /// The file does not exist.
    Missing,
    /// The file exists but cannot be read.
    Unreadable(String),
}

/// Why the follower started reading somewhere else than where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jump {
    /// A file never seen before: its last `tail_window` bytes (or all of it, when smaller).
    FirstOpen,
    /// The file was replaced: the new one from its start (or its tail, when huge).
    Rotated,
    /// The file became shorter than the offset: from the start of the new content.
    Truncated,
    /// More than `max_backlog` bytes were unread: skipped to the tail.
    SkippedAhead,
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// The file's state.
    pub status: FileStatus,
    /// Set when the follower did not simply go on from where it stopped.
    pub jump: Option<Jump>,
    /// Bytes read.
    pub bytes_read: u64,
    /// Complete lines handed out.
    pub lines: u64,
    /// Lines cut to `max_line`.
    pub cut_lines: u64,
    /// Bytes passed over without being read (start of a huge file, backlog).
    pub skipped: u64,
    /// Whether the poll stopped at `max_read_per_poll` with more to read.
    pub more: bool,
}

impl Poll {
    fn new(status: FileStatus) -> Self {
        Self {
            status,
            jump: None,
            bytes_read: 0,
            lines: 0,
            cut_lines: 0,
            skipped: 0,
            more: false,
        }
    }
}

/// Follows one log file.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    limits: FollowLimits,
    /// Identity and head of the file, and the offset of the next byte to read.
    file: Option<(Option<FileId>, Vec<u8>)>,
    read_offset: u64,
    /// Offset where the held half-written line starts.
    line_start: u64,
    /// The held half-written line (capacity fixed at `max_line`).
    line: Vec<u8>,
    /// The held line was longer than `max_line`: the rest of it is being skipped.
    line_cut: bool,
    /// After a jump into the middle of a file: skip to the next newline.
    resync: bool,
    /// The read buffer (length fixed at `chunk`).
    chunk: Vec<u8>,
}

impl Follower {
    /// A follower of `path`, resuming at `cursor` when one was saved.
    pub fn new(path: &Path, limits: FollowLimits, cursor: Option<Cursor>) -> Self {
        let limits = FollowLimits {
            max_line: limits.max_line.max(1),
            chunk: limits.chunk.max(1),
            max_read_per_poll: limits.max_read_per_poll.max(1),
            tail_window: limits.tail_window,
            max_backlog: limits.max_backlog.max(limits.tail_window),
        };
        let (file, offset) = match cursor {
            Some(c) => (Some((c.id, c.head)), c.offset),
            None => (None, 0),
        };
        Self {
            path: path.to_path_buf(),
            limits,
            file,
            read_offset: offset,
            line_start: offset,
            line: Vec::with_capacity(limits.max_line),
            line_cut: false,
            resync: false,
            chunk: vec![0; limits.chunk],
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The position to persist: a restarted follower given this cursor reads the held
    /// half-written line again, and nothing that was already handed out.
    pub fn cursor(&self) -> Option<Cursor> {
        let (id, head) = self.file.as_ref()?;
        let offset = if self.resync || self.line_cut {
            self.read_offset
        } else {
            self.line_start
        };
        Some(Cursor {
            offset,
            id: *id,
            head: head.clone(),
        })
    }

    /// Bytes of memory the follower holds for data (its line and read buffers). It never
    /// exceeds `max_line + chunk`.
    pub fn buffered_capacity(&self) -> usize {
        self.line.capacity() + self.chunk.capacity()
    }

    /// Bytes of a half-written line held until its newline arrives.
    pub fn held(&self) -> usize {
        self.line.len()
    }

    fn drop_held_line(&mut self) {
        self.line.clear();
        self.line_cut = false;
        self.resync = false;
    }

    /// Reads what was appended since the last poll and hands each complete line to `on_line`
    /// (without its line ending).
    pub fn poll(&mut self, on_line: &mut dyn FnMut(&[u8])) -> Poll {
        let mut file = match open_shared(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Poll::new(FileStatus::Missing),
            Err(e) => return Poll::new(FileStatus::Unreadable(e.to_string())),
        };
        match self.read_open_file(&mut file, on_line) {
            Ok(poll) => poll,
            Err(e) => Poll::new(FileStatus::Unreadable(e.to_string())),
        }
        // `file` is closed here: nothing is held open between polls.
    }

    fn read_open_file(
        &mut self,
        file: &mut File,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Poll> {
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Ok(Poll::new(FileStatus::Unreadable(
                "it is a directory, not a log file".into(),
            )));
        }
        let len = meta.len();
        let id = file_id(&meta);
        let head = read_head(file, len)?;
        let mut poll = Poll::new(FileStatus::Following);
        let limits = self.limits;
        // Where to read from; whether that is the middle of a line.
        let tail = |len: u64| len.saturating_sub(limits.tail_window);
        let (start, resync, jump) = match &self.file {
            None => (tail(len), tail(len) > 0, Some(Jump::FirstOpen)),
            Some((known_id, known_head)) => {
                let other_id = matches!((known_id, id), (Some(a), Some(b)) if *a != b);
                let shared = known_head.len().min(head.len());
                let other_head = known_head[..shared] != head[..shared];
                let from_start = |jump| {
                    if len > limits.max_backlog {
                        (tail(len), true, Some(jump))
                    } else {
                        (0, false, Some(jump))
                    }
                };
                if other_id {
                    from_start(Jump::Rotated)
                } else if len < self.read_offset {
                    from_start(Jump::Truncated)
                } else if other_head {
                    // Same identity, other content, and not shorter: replaced in place, or a
                    // new file that inherited the old one's creation time (Windows).
                    from_start(Jump::Rotated)
                } else if len - self.read_offset > limits.max_backlog {
                    (tail(len), true, Some(Jump::SkippedAhead))
                } else {
                    (self.read_offset, false, None)
                }
            }
        };
        if let Some(jump) = jump {
            if jump != Jump::FirstOpen && (self.held() > 0 || self.line_cut) {
                tracing::debug!(path = %self.path.display(), held = self.held(), ?jump, "dropping a half-written line");
            }
            self.drop_held_line();
            self.resync = resync;
            poll.skipped = match jump {
                Jump::SkippedAhead => start - self.read_offset,
                _ => start,
            };
            self.line_start = start;
        }
        poll.jump = jump;
        // The head may have grown since it was first seen.
        let head = match &self.file {
            Some((_, known)) if jump.is_none() && known.len() >= head.len() => known.clone(),
            _ => head,
        };
        self.file = Some((id, head));

        file.seek(SeekFrom::Start(start))?;
        let mut offset = start;
        let end = start.saturating_add(limits.max_read_per_poll);
        let mut chunk = std::mem::take(&mut self.chunk);
        let result = loop {
            let want = (end - offset).min(chunk.len() as u64) as usize;
            if want == 0 {
                poll.more = offset < len;
                break Ok(());
            }
            let n = match file.read(&mut chunk[..want]) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            self.consume(&chunk[..n], offset, &mut poll, on_line);
            offset += n as u64;
            poll.bytes_read += n as u64;
        };
        self.chunk = chunk;
        self.read_offset = offset;
        result.map(|()| poll)
    }

    /// Splits `bytes` (read at `at`) into lines.
    fn consume(&mut self, bytes: &[u8], at: u64, poll: &mut Poll, on_line: &mut dyn FnMut(&[u8])) {
        let max = self.limits.max_line;
        let mut rest = bytes;
        let mut offset = at;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let piece = &rest[..i];
                    if self.resync {
                        self.resync = false;
                    } else if self.line.is_empty() && !self.line_cut {
                        // The whole line is in this chunk: hand it out without copying.
                        if piece.len() > max {
                            poll.cut_lines += 1;
                        }
                        on_line(trim_cr(&piece[..piece.len().min(max)]));
                        poll.lines += 1;
                    } else {
                        self.hold(piece);
                        if self.line_cut {
                            poll.cut_lines += 1;
                        }
                        on_line(trim_cr(&self.line));
                        poll.lines += 1;
                        self.line.clear();
                        self.line_cut = false;
                    }
                    offset += i as u64 + 1;
                    self.line_start = offset;
                    rest = &rest[i + 1..];
                }
                None => {
                    if !self.resync {
                        self.hold(rest);
                    }
                    rest = &[];
                }
            }
        }
    }

    /// Appends to the held line, up to `max_line`.
    fn hold(&mut self, piece: &[u8]) {
        let room = self.limits.max_line - self.line.len();
        if piece.len() > room {
            self.line_cut = true;
        }
        self.line.extend_from_slice(&piece[..piece.len().min(room)]);
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The first bytes of the file (up to [`HEAD_LEN`]).
fn read_head(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let want = len.min(HEAD_LEN as u64) as usize;
    let mut head = vec![0; want];
    file.seek(SeekFrom::Start(0))?;
    let mut filled = 0;
    while filled < want {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn small() -> FollowLimits {
        FollowLimits {
            max_line: 64,
            chunk: 16,
            max_read_per_poll: 1024,
            tail_window: 128,
            max_backlog: 4096,
        }
    }

    fn lines(f: &mut Follower) -> (Vec<String>, Poll) {
        let mut out = Vec::new();
        let poll = f.poll(&mut |l| out.push(String::from_utf8_lossy(l).into_owned()));
        (out, poll)
    }

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        file.write_all(text.as_bytes()).expect("append");
    }

    #[test]
    fn hands_out_appended_lines_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "one\r\ntwo\n");
        let mut f = Follower::new(&path, small(), None);
        let (got, poll) = lines(&mut f);
        assert_eq!(
            got,
            ["one", "two"],
            "a small file is read whole, CR stripped"
        );
        assert_eq!(poll.jump, Some(Jump::FirstOpen));
        assert_eq!(poll.status, FileStatus::Following);
        assert!(
            lines(&mut f).0.is_empty(),
            "nothing new, nothing handed out"
        );
        append(&path, "three\nfour\n");
        assert_eq!(lines(&mut f).0, ["three", "four"]);
    }

    #[test]
    fn holds_a_half_written_line_until_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(
            &path,
            "done\nCEM mode active. Connected to gateway: gw.example.com:84",
        );
        let mut f = Follower::new(&path, small(), None);
        assert_eq!(lines(&mut f).0, ["done"]);
        assert_eq!(
            f.held(),
            "CEM mode active. Connected to gateway: gw.example.com:84".len()
        );
        assert!(lines(&mut f).0.is_empty(), "still no newline");
        append(&path, "43\n");
        assert_eq!(
            lines(&mut f).0,
            ["CEM mode active. Connected to gateway: gw.example.com:8443"]
        );
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn a_restart_resumes_at_the_saved_cursor_and_rereads_only_the_held_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "old line\nhalf");
        let mut f = Follower::new(&path, small(), None);
        assert_eq!(lines(&mut f).0, ["old line"]);
        let cursor = f.cursor().expect("cursor");
        assert_eq!(cursor.offset, "old line\n".len() as u64);
        drop(f);
        append(&path, " done\nnew line\n");
        let mut f = Follower::new(&path, small(), Some(cursor));
        let (got, poll) = lines(&mut f);
        assert_eq!(got, ["half done", "new line"]);
        assert_eq!(poll.jump, None, "same file: no jump");
    }

    #[test]
    fn follows_rotation_by_rename_and_reads_the_new_file_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "first file line 1\n");
        let mut f = Follower::new(&path, small(), None);
        assert_eq!(lines(&mut f).0, ["first file line 1"]);
        append(&path, "first file half");
        assert!(lines(&mut f).0.is_empty());
        std::fs::rename(&path, dir.path().join("Agent.log.1")).expect("rotate");
        let (got, poll) = lines(&mut f);
        assert!(got.is_empty());
        assert_eq!(
            poll.status,
            FileStatus::Missing,
            "between rename and create"
        );
        // The new file is longer than the old offset, so only the identity tells.
        append(
            &path,
            "second file line 1 is long enough\nsecond file line 2\n",
        );
        let (got, poll) = lines(&mut f);
        assert_eq!(poll.jump, Some(Jump::Rotated));
        assert_eq!(
            got,
            ["second file line 1 is long enough", "second file line 2"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn recognises_a_new_file_by_its_inode_when_its_start_is_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "Log opened\n");
        let mut f = Follower::new(&path, small(), None);
        assert_eq!(lines(&mut f).0, ["Log opened"]);
        // A new file under the same name with the same first line, longer than the old one:
        // only the inode tells them apart.
        let next = dir.path().join("Agent.log.new");
        append(&next, "Log opened\nCEM mode active\n");
        std::fs::rename(&next, &path).expect("replace");
        let (got, poll) = lines(&mut f);
        assert_eq!(poll.jump, Some(Jump::Rotated));
        assert_eq!(got, ["Log opened", "CEM mode active"]);
    }

    #[test]
    fn recognises_a_replaced_file_by_its_head_when_the_identity_is_the_same() {
        // What Windows' creation-time tunnelling looks like: same id, other content. Here the
        // file is rewritten in place (same inode) with a longer, different content.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "2025-01-01 a\n");
        let mut f = Follower::new(&path, small(), None);
        assert_eq!(lines(&mut f).0, ["2025-01-01 a"]);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(0).expect("truncate");
        drop(file);
        append(&path, "2025-02-02 b, longer than before\n");
        let (got, poll) = lines(&mut f);
        assert_eq!(poll.jump, Some(Jump::Rotated));
        assert_eq!(got, ["2025-02-02 b, longer than before"]);
    }

    #[test]
    fn truncation_starts_again_from_the_new_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "xx line one\nxx line two\nxx half");
        let mut f = Follower::new(&path, small(), None);
        assert_eq!(lines(&mut f).0, ["xx line one", "xx line two"]);
        // copytruncate: same file, cut to zero, then the writer goes on with the same prefix.
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(0).expect("truncate");
        drop(file);
        append(&path, "xx after\n");
        let (got, poll) = lines(&mut f);
        assert_eq!(poll.jump, Some(Jump::Truncated));
        assert_eq!(
            got,
            ["xx after"],
            "the held fragment of the old content is dropped"
        );
    }

    #[test]
    fn waits_for_a_file_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Logs").join("Agent.log");
        let mut f = Follower::new(&path, small(), None);
        for _ in 0..3 {
            let (got, poll) = lines(&mut f);
            assert!(got.is_empty());
            assert_eq!(poll.status, FileStatus::Missing);
        }
        assert!(f.cursor().is_none());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        append(&path, "hello\n");
        let (got, poll) = lines(&mut f);
        assert_eq!(got, ["hello"], "a file that appears is read from its start");
        assert_eq!(poll.jump, Some(Jump::FirstOpen));
    }

    #[test]
    fn a_directory_is_unreadable_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = Follower::new(dir.path(), small(), None);
        let (_, poll) = lines(&mut f);
        assert!(matches!(poll.status, FileStatus::Unreadable(_)), "{poll:?}");
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        let long = "L".repeat(1000);
        append(&path, &format!("{long}\nshort\n"));
        let mut f = Follower::new(&path, small(), None);
        // FirstOpen reads the last 128 bytes: the long line's tail is skipped to its newline.
        assert_eq!(lines(&mut f).0, ["short"]);
        append(&path, &format!("{long}\nafter\n"));
        let (got, poll) = lines(&mut f);
        assert_eq!(got, ["L".repeat(64), "after".to_string()]);
        assert_eq!(poll.cut_lines, 1);
        assert!(f.buffered_capacity() <= 64 + 16);
    }

    #[test]
    fn a_flood_beyond_the_backlog_skips_to_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "start\n");
        let mut f = Follower::new(&path, small(), None);
        assert_eq!(lines(&mut f).0, ["start"]);
        let flood: String = (0..1000).map(|i| format!("noise {i:04}\n")).collect();
        append(&path, &flood);
        append(&path, "the latest line\n");
        let (got, poll) = lines(&mut f);
        assert_eq!(poll.jump, Some(Jump::SkippedAhead));
        assert!(poll.skipped > 4096, "{poll:?}");
        assert!(poll.bytes_read <= 128, "{poll:?}");
        assert_eq!(got.last().map(String::as_str), Some("the latest line"));
        assert!(got
            .iter()
            .all(|l| l.starts_with("noise") || l == "the latest line"));
    }

    #[test]
    fn a_backlog_within_bounds_is_read_over_several_polls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        append(&path, "start\n");
        let mut f = Follower::new(&path, small(), None);
        lines(&mut f);
        let backlog: String = (0..300).map(|i| format!("line {i:03}\n")).collect(); // 2700 bytes
        append(&path, &backlog);
        let mut all = Vec::new();
        let mut polls = 0;
        loop {
            let (got, poll) = lines(&mut f);
            all.extend(got);
            polls += 1;
            if !poll.more {
                break;
            }
            assert!(poll.bytes_read <= 1024);
        }
        assert_eq!(polls, 3);
        assert_eq!(all.len(), 300, "nothing lost between polls");
        assert_eq!(all[299], "line 299");
    }

    #[test]
    fn a_huge_file_is_not_read_from_its_start_and_memory_stays_bounded() {
        // 200 MB of zeros (sparse where the file system allows), no newline at all, then
        // the agent's last lines.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("Agent.log");
        let file = File::create(&path).expect("create");
        file.set_len(200 * 1024 * 1024).expect("set_len");
        drop(file);
        append(
            &path,
            "\nCEM mode active. Connected to gateway: gw.example.com:8443\n",
        );
        let limits = FollowLimits::default();
        let mut f = Follower::new(&path, limits, None);
        let (got, poll) = lines(&mut f);
        assert_eq!(
            got,
            ["CEM mode active. Connected to gateway: gw.example.com:8443"]
        );
        assert!(poll.bytes_read <= limits.tail_window, "{poll:?}");
        assert!(poll.skipped >= 200 * 1024 * 1024 - limits.tail_window);
        assert!(f.buffered_capacity() <= limits.max_line + limits.chunk);

        // The same file followed from its start (a saved cursor at 0): one huge line of zeros,
        // read in bounded polls, never held beyond max_line.
        let cursor = Cursor {
            offset: 0,
            ..f.cursor().expect("cursor")
        };
        let limits = FollowLimits {
            max_backlog: u64::MAX,
            max_read_per_poll: 64 * 1024 * 1024,
            ..FollowLimits::default()
        };
        let mut f = Follower::new(&path, limits, Some(cursor));
        let mut got = Vec::new();
        let mut polls = 0;
        loop {
            let poll = f.poll(&mut |l| got.push(l.len()));
            polls += 1;
            assert!(f.held() <= limits.max_line);
            assert!(f.buffered_capacity() <= limits.max_line + limits.chunk);
            if !poll.more {
                break;
            }
        }
        assert_eq!(polls, 4, "200 MB in 64 MB polls");
        assert_eq!(
            got,
            [limits.max_line, 58],
            "the zeros as one cut line, then the last line"
        );
    }
}
