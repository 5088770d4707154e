//! `--agent-log`: the fixtures in `tests/fixtures/agent-log/` (written from the guide's search
//! patterns, in several token, severity and timestamp variants) each lead to their state; an
//! agent that rotates and truncates its log while the probe follows it; the command line's
//! refusals.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cemwatch_probe::agentlog::{self, AgentLog, AgentLogConfig, STATE_FILE};
use cemwatch_shared::{AgentCemState, AgentCondition, AgentLogStatus, SinceSource, Thumbprint};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_cemwatch-probe");
/// 2025-11-25T00:00:00Z: after every fixture line.
const NOW_MS: u64 = 1_764_028_800_000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent-log")
        .join(name)
}

fn ms(rfc3339: &str) -> u64 {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("timestamp");
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).expect("after 1970")
}

fn tp(text: &str) -> Option<Thumbprint> {
    Some(Thumbprint::parse(text).expect("thumbprint"))
}

/// The state a probe derives from a whole fixture (read from its start, as a new file is).
fn state_of(name: &str) -> AgentCemState {
    let mut config = AgentLogConfig::new(fixture(name));
    config.limits.tail_window = u64::MAX;
    let mut log = AgentLog::open(config, NOW_MS);
    let poll = log.poll(NOW_MS);
    assert!(poll.lines > 0, "{name}: {poll:?}");
    log.state().clone()
}

#[test]
fn each_fixture_leads_to_its_state() {
    let current = "3A7F9C2B11D04E5F66A7B8C9D0E1F2A3B4C5D6E7";
    let cases = [
        (
            "connected.log",
            AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: tp(current),
            },
            ms("2025-11-24T12:30:10.215Z"),
        ),
        (
            "connected-xml.log",
            AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: tp(current),
            },
            ms("2025-11-24T11:30:10.215Z"),
        ),
        (
            "stale-thumbprint.log",
            AgentCondition::CemConnected {
                gateway: "gateway.example.com".into(),
                port: Some(8443),
                thumbprint: tp("7F2E958272C032310A2D047C4AC980B2C1CA31EF"),
            },
            ms("2025-11-24T12:30:10.215Z"),
        ),
        (
            "handshake-error.log",
            AgentCondition::HandshakeError {
                gateway: Some("gateway.example.com".into()),
                port: Some(8443),
                attempts: 2,
            },
            ms("2025-11-24T12:40:01Z"),
        ),
        (
            "connect-timeout.log",
            AgentCondition::ConnectTimeout {
                gateway: Some("gateway.example.com".into()),
                port: Some(443),
                attempts: 3,
            },
            ms("2025-11-24T11:40:00Z"),
        ),
    ];
    for (name, condition, since) in cases {
        let state = state_of(name);
        assert_eq!(state.condition, condition, "{name}");
        assert_eq!(
            (state.since_ms, state.since_source),
            (since, SinceSource::Logged),
            "{name}"
        );
        assert_eq!(state.log, AgentLogStatus::Following, "{name}");
        assert!(state.line.is_some(), "{name}");
    }
    let idle = state_of("no-cem-activity.log");
    assert_eq!(idle.condition, AgentCondition::NoCemActivity);
    assert_eq!(
        (idle.since_ms, idle.since_source),
        (NOW_MS, SinceSource::Read)
    );
    assert_eq!(idle.line, None);
}

#[test]
fn a_utf16_log_is_read_on_its_ascii_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Agent.log");
    let text = std::fs::read_to_string(fixture("connect-timeout.log")).expect("fixture");
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(&path, bytes).expect("write");
    let mut log = AgentLog::open(AgentLogConfig::new(path), NOW_MS);
    log.poll(NOW_MS);
    assert_eq!(
        log.state().condition,
        AgentCondition::ConnectTimeout {
            gateway: Some("gateway.example.com".into()),
            port: Some(443),
            attempts: 3,
        }
    );
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(text.as_bytes()).expect("append");
}

async fn wait_for(
    rx: &mut watch::Receiver<Option<AgentCemState>>,
    what: &str,
    want: impl Fn(&AgentCemState) -> bool,
) -> AgentCemState {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(state) = rx.borrow_and_update().as_ref().filter(|s| want(s)) {
                return state.clone();
            }
            if rx.changed().await.is_err() {
                panic!("the follower stopped before {what}");
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within 10 s: {:?}", rx.borrow()))
}

#[tokio::test]
async fn follows_an_agent_that_rotates_and_truncates_its_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("Logs");
    let path = logs.join("Agent.log");
    let mut config = AgentLogConfig::new(path.clone());
    config.poll_interval = Duration::from_millis(20);
    config.state_file = Some(dir.path().join(STATE_FILE));

    let start = |config: AgentLogConfig| {
        let (tx, rx) = watch::channel(None);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move { agentlog::run(config, &tx, stop_rx).await });
        (rx, stop_tx, task)
    };
    let (mut rx, stop, task) = start(config.clone());

    // The agent is not installed yet: the log is waited for.
    let state = wait_for(&mut rx, "a first state", |_| true).await;
    assert_eq!(state.log, AgentLogStatus::Missing);
    assert_eq!(state.condition, AgentCondition::NoCemActivity);

    // It starts and times out on the wrong port.
    std::fs::create_dir_all(&logs).expect("mkdir");
    append(
        &path,
        "[WARN] Connection timeout connecting to gateway.example.com:443\n",
    );
    wait_for(&mut rx, "connect_timeout", |s| {
        s.condition.as_str() == "connect_timeout" && s.condition.port() == Some(443)
    })
    .await;
    append(
        &path,
        "[WARN] Connection timeout connecting to gateway.example.com:443\n",
    );
    wait_for(&mut rx, "a second attempt", |s| {
        matches!(
            s.condition,
            AgentCondition::ConnectTimeout { attempts: 2, .. }
        )
    })
    .await;

    // Rotation: the log is renamed away and a new one begins, longer than the old one.
    std::fs::rename(&path, logs.join("Agent.log.1")).expect("rotate");
    append(
        &path,
        "2025-11-24 12:40:01 [ERROR] SSL handshake error with gateway.example.com:8443 (the certificate chain is not trusted)\n",
    );
    let state = wait_for(&mut rx, "handshake_error after rotation", |s| {
        s.condition.as_str() == "handshake_error"
    })
    .await;
    assert_eq!(state.condition.port(), Some(8443));
    assert_eq!(state.since_ms, ms("2025-11-24T12:40:01Z"));

    // Truncation (copytruncate), then a connection, written with its last line in two halves.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(
        &path,
        "[INFO] CEM mode active. Connected to gateway: gateway.example.com:8443\n[INFO] Certificate thumbprint validated: 3A7F9C2B11D04E5F66A7B8C9D0E1F2A3",
    );
    let state = wait_for(&mut rx, "cem_connected after truncation", |s| {
        s.condition.as_str() == "cem_connected"
    })
    .await;
    assert!(
        matches!(
            state.condition,
            AgentCondition::CemConnected {
                thumbprint: None,
                ..
            }
        ),
        "the half-written thumbprint line is not read yet: {state:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        rx.borrow().as_ref().map(|s| &s.condition),
        Some(AgentCondition::CemConnected {
            thumbprint: None,
            ..
        })
    ));
    append(&path, "B4C5D6E7\n");
    let state = wait_for(&mut rx, "the thumbprint", |s| {
        matches!(
            s.condition,
            AgentCondition::CemConnected {
                thumbprint: Some(_),
                ..
            }
        )
    })
    .await;

    // Stop and start again: the state is kept and nothing is read twice.
    stop.send_replace(true);
    task.await.expect("stopped");
    let (mut rx, stop, task) = start(config.clone());
    let resumed = wait_for(&mut rx, "the resumed state", |_| true).await;
    assert_eq!(resumed.condition, state.condition);
    assert_eq!(resumed.since_ms, state.since_ms);
    append(
        &path,
        "[INFO] CEM mode active. Connected to gateway: gateway.example.com:8443\n",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rx.borrow().as_ref().map(|s| s.since_ms),
        Some(state.since_ms),
        "a repeated connection line keeps the state's since"
    );
    stop.send_replace(true);
    task.await.expect("stopped");
}

fn probe(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_refuses_bad_agent_log_options_before_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().to_str().expect("utf-8 path");
    let log = dir.path().join("Agent.log");
    let log = log.to_str().expect("utf-8 path");

    let (code, err) = probe(&[
        "run",
        "--state-dir",
        state,
        "--agent-log",
        log,
        "--agent-log-pattern",
        "bogus=x",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("handshake_error"), "names the patterns: {err}");

    let (code, err) = probe(&[
        "run",
        "--state-dir",
        state,
        "--agent-log",
        log,
        "--agent-log-pattern",
        "connected=(unclosed",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("does not compile"), "{err}");

    let (code, err) = probe(&[
        "run",
        "--state-dir",
        state,
        "--agent-log-pattern",
        "connected=x",
    ]);
    assert_eq!(code, 3, "a pattern without --agent-log: {err}");
    assert!(err.contains("--agent-log"), "{err}");

    #[cfg(not(windows))]
    {
        let (code, err) = probe(&["run", "--state-dir", state, "--agent-log"]);
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains(r"Symantec\Symantec Agent\Logs\Agent.log"),
            "{err}"
        );
    }

    // Good options get as far as the state directory.
    let (code, err) = probe(&["run", "--state-dir", state, "--agent-log", log]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("enroll"), "{err}");
}
