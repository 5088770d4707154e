//! Network namespaces for firewall faults: a namespace this test made, nftables rules inside
//! it, commands run inside it. Deleted on drop, even when the test fails.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Why namespace tests cannot run here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not running as root".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install iproute2 nftables)"
            ));
        }
    }
    None
}

/// Skips (returns `true`) with a clear message when namespaces are unavailable, unless
/// `CEMWATCH_REQUIRE_NETNS=1`, in which case it panics: CI must run these tests.
pub fn skip_unless_available(test: &str) -> bool {
    match unavailable() {
        None => false,
        Some(why) if crate::netns_required() => {
            panic!("{test}: CEMWATCH_REQUIRE_NETNS=1 but namespace tests cannot run: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}; it needs root, ip and nft (CI runs it as root)");
            true
        }
    }
}

/// A network namespace with loopback up; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name.
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

impl Netns {
    /// Creates `cw-<prefix>-<pid>-<n>` with loopback up.
    pub fn create(prefix: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("cw-{prefix}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace and requires success.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        run(&mut self.command(argv))
    }

    /// A command that runs inside the namespace (not started).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Loads an nftables ruleset (the text of `nft -f`) inside the namespace.
    pub fn nft(&self, ruleset: &str) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rules.nft");
        std::fs::write(&path, ruleset)?;
        let p = path.display().to_string();
        self.exec(&["nft", "-f", &p])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
