//! The CEM state of the management agent on the probe's own endpoint, from its log.
//!
//! The guide sends administrators to `Agent.log` on each endpoint to look for "CEM mode
//! active. Connected to gateway: HOST:PORT", "Certificate thumbprint validated", SSL handshake
//! errors, or repeated connection timeouts on the wrong port. A probe on a managed endpoint
//! does that for them: `cemwatch-probe run --agent-log PATH` follows the log ([`follow`]),
//! recognises those entries ([`parse`]), derives the agent's condition and since when
//! ([`state`]) and sends it to the coordinator beside its check results, on every connection
//! and whenever it changes.
//!
//! **Never read twice.** The position in the log, the file's identity and the derived state
//! are saved in the probe's state directory ([`STATE_FILE`]) every few seconds and on stop, so
//! a restarted probe resumes where it stopped and reads what the agent wrote meanwhile. The
//! first time (or when the log was replaced while the probe was down and is huge), only the
//! last 64 KiB are read, to establish the current state without reading a large log from its
//! start.

pub mod follow;
pub mod parse;
pub mod sample;
pub mod state;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::UtcOffset;
use tokio::sync::watch;

use cemwatch_shared::{AgentCemState, AgentLogStatus, Thumbprint};

use follow::{Cursor, FileId, FileStatus, FollowLimits, Follower, Jump, Poll};
use parse::Patterns;
use state::Deriver;

/// Where the agent writes its log on Windows, per the guide (under `%ProgramData%`).
pub const WINDOWS_DEFAULT_PATH: &str = r"C:\ProgramData\Symantec\Symantec Agent\Logs\Agent.log";
/// The file, in the probe's state directory, that keeps the position and the derived state.
pub const STATE_FILE: &str = "agentlog.json";
/// How often the log is polled.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the position is saved while nothing else changes.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The agent's standard log path on this platform: `%ProgramData%\Symantec\Symantec
/// Agent\Logs\Agent.log` on Windows; none elsewhere.
pub fn default_path() -> Option<PathBuf> {
    #[cfg(windows)]
    {
        let base = std::env::var_os("ProgramData")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
        Some(base.join(r"Symantec\Symantec Agent\Logs\Agent.log"))
    }
    #[cfg(not(windows))]
    {
        None
    }
}

/// The path `--agent-log` names: `default` is [`default_path`], anything else a path.
pub fn resolve_path(arg: &OsStr) -> Result<PathBuf, String> {
    if arg.is_empty() {
        return Err("--agent-log: give the path of the agent's Agent.log, or `default`".into());
    }
    if arg.eq_ignore_ascii_case("default") {
        return default_path().ok_or_else(|| {
            format!(
                "--agent-log default: the agent's standard log path is a Windows path ({WINDOWS_DEFAULT_PATH}); on this system give the path of its Agent.log (./default for a file named default)"
            )
        });
    }
    Ok(PathBuf::from(arg))
}

/// How the agent's log is followed.
#[derive(Debug, Clone)]
pub struct AgentLogConfig {
    /// The log file.
    pub path: PathBuf,
    /// The entries to recognise.
    pub patterns: Patterns,
    /// Memory and read bounds.
    pub limits: FollowLimits,
    /// How often the log is polled.
    pub poll_interval: Duration,
    /// The offset of log timestamps that carry none (the endpoint's local time).
    pub local_offset: UtcOffset,
    /// Where the position and state are saved; `None`: not saved.
    pub state_file: Option<PathBuf>,
}

impl AgentLogConfig {
    /// Defaults for a log path: built-in patterns, 1 s polls, UTC, not saved.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            patterns: Patterns::default(),
            limits: FollowLimits::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            local_offset: UtcOffset::UTC,
            state_file: None,
        }
    }
}

/// What is saved between runs.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    path: PathBuf,
    offset: u64,
    file_id: Option<FileId>,
    head_hex: String,
    state: AgentCemState,
    pending_thumbprint: Option<Thumbprint>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A followed agent log and the state derived from it (synchronous: one [`AgentLog::poll`]
/// per tick, from a blocking thread).
#[derive(Debug)]
pub struct AgentLog {
    config: AgentLogConfig,
    follower: Follower,
    deriver: Deriver,
    saved_at: Option<Instant>,
    saved_cursor: Option<Cursor>,
    save_error_logged: bool,
}

impl AgentLog {
    /// Opens the saved position and state when there are some for this path, else starts
    /// with no CEM activity since `now_ms`.
    pub fn open(config: AgentLogConfig, now_ms: u64) -> Self {
        let saved = config
            .state_file
            .as_deref()
            .and_then(|file| load(file, &config.path));
        let (cursor, deriver) = match saved {
            Some(saved) => {
                let cursor = hex::decode(&saved.head_hex).ok().map(|head| Cursor {
                    offset: saved.offset,
                    id: saved.file_id,
                    head,
                });
                (
                    cursor,
                    Deriver::restore(saved.state, saved.pending_thumbprint),
                )
            }
            None => (None, Deriver::new(now_ms)),
        };
        let follower = Follower::new(&config.path, config.limits, cursor.clone());
        Self {
            config,
            follower,
            deriver,
            saved_at: None,
            saved_cursor: cursor,
            save_error_logged: false,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// The current state.
    pub fn state(&self) -> &AgentCemState {
        self.deriver.state()
    }

    /// The follower (for its memory bounds).
    pub fn follower(&self) -> &Follower {
        &self.follower
    }

    /// Reads what the agent appended and updates the state; saves the position when due.
    pub fn poll(&mut self, now_ms: u64) -> Poll {
        let before = self.deriver.state().clone();
        let patterns = &self.config.patterns;
        let local = self.config.local_offset;
        let deriver = &mut self.deriver;
        let poll = self.follower.poll(&mut |line| {
            if let Some(event) = patterns.parse(line, local) {
                deriver.apply(&event, line, now_ms);
            }
        });
        let status = match &poll.status {
            FileStatus::Following => AgentLogStatus::Following,
            FileStatus::Missing => AgentLogStatus::Missing,
            FileStatus::Unreadable(error) => AgentLogStatus::Unreadable {
                error: error.clone(),
            },
        };
        self.deriver.set_log_status(status);
        match poll.jump {
            Some(Jump::Rotated) => {
                tracing::info!(path = %self.config.path.display(), "agent log rotated: following the new file")
            }
            Some(Jump::Truncated) => {
                tracing::info!(path = %self.config.path.display(), "agent log truncated: following from its new start")
            }
            Some(Jump::SkippedAhead) => tracing::warn!(
                path = %self.config.path.display(),
                skipped = poll.skipped,
                "the agent log grew faster than it could be read: skipped to its end"
            ),
            Some(Jump::FirstOpen) | None => {}
        }
        let changed = *self.deriver.state() != before;
        let due = self.saved_at.is_none_or(|t| t.elapsed() >= SAVE_EVERY);
        if changed || (due && self.follower.cursor() != self.saved_cursor) {
            self.save();
        }
        poll
    }

    /// Saves the position and state (when a state file is configured). A failure is logged
    /// once; following goes on.
    pub fn save(&mut self) {
        let Some(file) = self.config.state_file.clone() else {
            return;
        };
        let cursor = self.follower.cursor();
        let saved = Saved {
            path: self.config.path.clone(),
            offset: cursor.as_ref().map_or(0, |c| c.offset),
            file_id: cursor.as_ref().and_then(|c| c.id),
            head_hex: cursor
                .as_ref()
                .map(|c| hex::encode(&c.head))
                .unwrap_or_default(),
            state: self.deriver.state().clone(),
            pending_thumbprint: self.deriver.pending_thumbprint().cloned(),
        };
        let written = serde_json::to_vec_pretty(&saved)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                cemwatch_transport::fs::write_atomic(&file, &bytes, false)
                    .map_err(anyhow::Error::from)
            });
        match written {
            Ok(()) => {
                self.saved_at = Some(Instant::now());
                self.saved_cursor = cursor;
                self.save_error_logged = false;
            }
            Err(e) => {
                if !self.save_error_logged {
                    tracing::warn!(file = %file.display(), error = %format!("{e:#}"), "cannot save the agent log position; a restart will read the log's end again");
                    self.save_error_logged = true;
                }
                // Try again at the next interval, not at every poll.
                self.saved_at = Some(Instant::now());
            }
        }
    }
}

fn load(file: &Path, path: &Path) -> Option<Saved> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the saved agent log position; starting at the log's end");
            return None;
        }
    };
    match serde_json::from_slice::<Saved>(&bytes) {
        Ok(saved) if saved.path == path => Some(saved),
        Ok(saved) => {
            tracing::info!(was = %saved.path.display(), now = %path.display(), "another agent log than last time: starting at its end");
            None
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "the saved agent log position is damaged; starting at the log's end");
            None
        }
    }
}

fn describe(status: &AgentLogStatus) -> String {
    match status {
        AgentLogStatus::Following => "following".into(),
        AgentLogStatus::Missing => "missing".into(),
        AgentLogStatus::Unreadable { error } => format!("unreadable: {error}"),
    }
}

/// Follows the log until `shutdown` becomes `true` (or its sender goes away), publishing the
/// state in `state_tx` after every poll that changed it; saves the position on the way out.
pub async fn run(
    config: AgentLogConfig,
    state_tx: &watch::Sender<Option<AgentCemState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = config.poll_interval.max(Duration::from_millis(10));
    let mut log = AgentLog::open(config, now_ms());
    tracing::info!(path = %log.path().display(), "following the management agent's log");
    let mut last_status: Option<AgentLogStatus> = None;
    let mut last_condition = None;
    loop {
        let polled = tokio::task::spawn_blocking(move || {
            let poll = log.poll(now_ms());
            (log, poll)
        })
        .await;
        let poll;
        (log, poll) = match polled {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "the agent log follower stopped");
                return;
            }
        };
        let state = log.state();
        if last_status.as_ref() != Some(&state.log) {
            match &state.log {
                AgentLogStatus::Following => {
                    tracing::info!(path = %log.path().display(), "agent log found")
                }
                other => tracing::warn!(
                    path = %log.path().display(),
                    status = %describe(other),
                    "agent log not readable yet: waiting for it (is the management agent installed, and the path right?)"
                ),
            }
            last_status = Some(state.log.clone());
        }
        if last_condition.as_ref() != Some(&state.condition) {
            tracing::info!(state = state.condition.as_str(), condition = ?state.condition, since_ms = state.since_ms, "agent CEM state");
            last_condition = Some(state.condition.clone());
        }
        state_tx.send_if_modified(|current| {
            if current.as_ref() == Some(log.state()) {
                false
            } else {
                *current = Some(log.state().clone());
                true
            }
        });
        let pause = if poll.more {
            Duration::from_millis(1)
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    let _ = tokio::task::spawn_blocking(move || log.save()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cemwatch_shared::{AgentCondition, SinceSource};
    use std::io::Write;

    const TP: &str = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7";
    /// 2025-11-24T16:00:00Z: the log lines below are from earlier that day.
    const NOW: u64 = 1_764_000_000_000;

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        file.write_all(text.as_bytes()).expect("append");
    }

    fn config(dir: &Path) -> AgentLogConfig {
        let mut config = AgentLogConfig::new(dir.join("Agent.log"));
        config.state_file = Some(dir.join(STATE_FILE));
        config
    }

    #[test]
    fn default_is_the_guides_path_on_windows_only() {
        assert!(WINDOWS_DEFAULT_PATH.ends_with(r"Symantec\Symantec Agent\Logs\Agent.log"));
        let resolved = resolve_path(OsStr::new("DEFAULT"));
        #[cfg(windows)]
        assert!(resolved
            .expect("windows default")
            .ends_with(r"Symantec\Symantec Agent\Logs\Agent.log"));
        #[cfg(not(windows))]
        assert!(resolved
            .expect_err("no default")
            .contains(WINDOWS_DEFAULT_PATH));
        assert_eq!(
            resolve_path(OsStr::new("/var/log/Agent.log")),
            Ok(PathBuf::from("/var/log/Agent.log"))
        );
        assert!(resolve_path(OsStr::new("")).is_err());
    }

    #[test]
    fn follows_the_agent_through_its_states_and_resumes_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        let mut log = AgentLog::open(cfg.clone(), NOW + 1_000);
        log.poll(NOW + 2_000);
        assert_eq!(log.state().log, AgentLogStatus::Missing);
        assert_eq!(log.state().condition, AgentCondition::NoCemActivity);
        assert_eq!(log.state().since_ms, NOW + 1_000);

        append(&cfg.path, "2025-11-24 12:00:00 [INFO] Agent started\n");
        log.poll(NOW + 3_000);
        assert_eq!(log.state().log, AgentLogStatus::Following);
        assert_eq!(log.state().condition, AgentCondition::NoCemActivity);

        append(
            &cfg.path,
            "2025-11-24 12:00:05 [WARN] Connection timeout connecting to gateway.example.com:443\n\
             2025-11-24 12:01:05 [WARN] Connection timeout connecting to gateway.example.com:443\n",
        );
        log.poll(NOW + 4_000);
        assert_eq!(log.state().condition.as_str(), "connect_timeout");
        assert_eq!(log.state().condition.port(), Some(443));

        // Stop (the state is saved on change), restart: nothing is read twice, the state and
        // its since are kept, and what was written meanwhile is read.
        drop(log);
        append(
            &cfg.path,
            &format!(
                "2025-11-24 12:02:05 [INFO] CEM mode active. Connected to gateway: gateway.example.com:8443\n\
                 2025-11-24 12:02:06 [INFO] Certificate thumbprint validated: {TP}\n"
            ),
        );
        let mut log = AgentLog::open(cfg.clone(), NOW + 5_000);
        assert_eq!(
            log.state().condition.as_str(),
            "connect_timeout",
            "restored"
        );
        let poll = log.poll(NOW + 6_000);
        assert_eq!(poll.lines, 2, "only the two new lines are read: {poll:?}");
        assert_eq!(
            log.state().condition,
            AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: Some(Thumbprint::parse(TP).expect("tp")),
            }
        );
        assert_eq!(log.state().since_source, SinceSource::Logged);
        assert_eq!(log.state().since_ms, 1_763_985_725_000, "12:02:05Z");
    }

    #[test]
    fn a_damaged_or_foreign_state_file_starts_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        append(&cfg.path, "Connected to gateway: gw.example.com:8443\n");
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        let mut log = AgentLog::open(cfg.clone(), 1_000);
        log.poll(2_000);
        assert_eq!(log.state().condition.as_str(), "cem_connected");

        // The saved position belongs to another path: ignored.
        let mut other = cfg.clone();
        other.path = dir.path().join("Other.log");
        append(&other.path, "SSL handshake error\n");
        let mut log = AgentLog::open(other, 3_000);
        log.poll(4_000);
        assert_eq!(log.state().condition.as_str(), "handshake_error");
    }

    #[tokio::test]
    async fn run_publishes_changes_and_saves_on_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        cfg.poll_interval = Duration::from_millis(20);
        let (tx, mut rx) = watch::channel(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let path = cfg.path.clone();
        let task = tokio::spawn(async move { run(cfg, &tx, stop_rx).await });

        let wait_for = |rx: &mut watch::Receiver<Option<AgentCemState>>, want: &'static str| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        if rx
                            .borrow_and_update()
                            .as_ref()
                            .is_some_and(|s| s.condition.as_str() == want)
                        {
                            return;
                        }
                        rx.changed().await.expect("sender alive");
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("no {want} state"));
            }
        };
        wait_for(&mut rx, "no_cem_activity").await;
        assert_eq!(
            rx.borrow().as_ref().map(|s| s.log.clone()),
            Some(AgentLogStatus::Missing)
        );
        append(
            &path,
            "[ERROR] SSL handshake error with gateway.example.com:8443\n",
        );
        wait_for(&mut rx, "handshake_error").await;
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops")
            .expect("no panic");
        let saved: Saved =
            serde_json::from_slice(&std::fs::read(dir.path().join(STATE_FILE)).expect("saved"))
                .expect("json");
        assert_eq!(saved.state.condition.as_str(), "handshake_error");
        assert_eq!(saved.offset, std::fs::metadata(&path).expect("meta").len());
    }
}
