//! Tools a test may find missing (Prometheus, promtool, systemd-analyze, kubectl): skipped with a
//! message saying how to get them, or a failure when CI says they must be there.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `name` on the PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The first of `vars` set to 1: then a missing tool fails the test instead of skipping it.
fn required_by(vars: &[&str]) -> Option<String> {
    vars.iter()
        .find(|v| std::env::var_os(v).is_some_and(|x| x == "1"))
        .map(|v| v.to_string())
}

/// Environment variables that make the deployment's Prometheus tests mandatory (`.ci/run` sets
/// them).
pub(crate) const REQUIRE_PROMETHEUS: &[&str] =
    &["CEMWATCH_REQUIRE_PROMETHEUS", "CEMWATCH_REQUIRE_NETNS"];
/// The environment variable that makes the Prometheus parts of the demo and fleet-view tests
/// mandatory (`.ci/run` sets it); `CEMWATCH_REQUIRE_NETNS` alone does not.
pub(crate) const REQUIRE_PROMETHEUS_ONLY: &[&str] = &["CEMWATCH_REQUIRE_PROMETHEUS"];
/// Environment variables that make `systemd-analyze` mandatory (`.ci/run` sets one).
pub(crate) const REQUIRE_SYSTEMD: &[&str] = &["CEMWATCH_REQUIRE_SYSTEMD", "CEMWATCH_REQUIRE_NETNS"];

/// A tool for `test`: its path, or `None` after saying clearly that the test skips (how to
/// get the tool); panics instead when one of `required` is set to 1.
pub(crate) fn tool(name: &str, test: &str, required: &[&str], install: &str) -> Option<PathBuf> {
    if let Some(path) = which(name) {
        return Some(path);
    }
    match required_by(required) {
        Some(var) => panic!("{test}: {var}=1 but `{name}` is not installed ({install})"),
        None => {
            eprintln!(
                "SKIPPED {test}: `{name}` is not installed ({install}); set {} to make this a failure",
                required
                    .iter()
                    .map(|v| format!("{v}=1"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
            None
        }
    }
}

/// `promtool check metrics` on a scrape, when promtool is installed (skipping `what`, the part
/// of a test, otherwise; a failure instead when `CEMWATCH_REQUIRE_PROMETHEUS=1`).
pub(crate) fn promtool_check(what: &str, text: &str) {
    let Some(promtool) = tool(
        "promtool",
        what,
        REQUIRE_PROMETHEUS_ONLY,
        "apt-get install prometheus; CI runs it",
    ) else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "promtool check metrics: ok ({} lines)",
        text.lines().count()
    );
}
