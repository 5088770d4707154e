//! The network lab: the guide's failure tables reproduced on a real topology (network
//! namespaces, a router with nftables for the perimeter and internal firewalls and NAT, real
//! `cemwatch` and `cemwatch-probe` processes, `openssl s_server` as the gateway and the SMP),
//! each scenario asserting the probes' finding codes AND the coordinator's fleet diagnosis
//! from the API and /metrics; then faults on the fleet path (kill -9 of the coordinator, the
//! probes' path to it cut, loss and delay) with every result counted.
//!
//! Needs root, `ip`, `nft`, `tc` and `openssl`: run it with `tests/lab/run`, which checks them,
//! runs this test and removes any namespace left behind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cemwatch_coordinator::telemetry as metrics;
use cemwatch_tests::lab::{Firewall, Host, Lab, VIP};
use cemwatch_tests::netns::{self, Netns};
use cemwatch_tests::pki::{Ca, Leaf, LeafSpec};
use cemwatch_tests::process::{eventually, free_udp_port, http_get, http_post_json, Proc};
use serde_json::Value;

use crate::support::store::{duplicates_dropped, spooled, stored_seqs};
use crate::support::{probe_bin, COORDINATOR, GW, SMP};

/// Longer than the other tests' wait: namespaces, loss and delay.
const WAIT: Duration = Duration::from_secs(40);

/// An `openssl s_server` inside a namespace.
fn serve(ns: &Netns, port: u16, leaf: &Leaf, dir: &Path) -> Proc {
    let cert = dir.join(format!("{}-{port}-chain.pem", ns.name));
    let key = dir.join(format!("{}-{port}-key.pem", ns.name));
    std::fs::write(&cert, leaf.chain_pem()).expect("chain");
    std::fs::write(&key, &leaf.key_pem).expect("key");
    let mut cmd = ns.command(&[
        "openssl",
        "s_server",
        "-accept",
        &port.to_string(),
        "-www",
        "-quiet",
    ]);
    cmd.arg("-cert").arg(&cert).arg("-key").arg(&key);
    let p = Proc::spawn(&format!("s_server:{port}"), cmd).expect("s_server");
    // Ready when it accepts (checked from inside the namespace).
    eventually("s_server listening", WAIT, || {
        let out = ns
            .command(&["bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
            .output()
            .ok()?;
        out.status.success().then_some(())
    })
    .expect("s_server up");
    p
}

fn config_text(
    quic: SocketAddr,
    port: u16,
    legacy: &[u16],
    thumbprint: &str,
    interval: &str,
    smp: &Host,
) -> String {
    let legacy: Vec<String> = legacy.iter().map(u16::to_string).collect();
    format!(
        r#"[server]
quic_listen = "{quic}"
http_listen = "127.0.0.1:0"
data_dir = "data"
stale_after = "2m"

# The lab runs its rounds back to back (each waits for every answer first).
[rounds]
min_interval = "0s"

[[check]]
name = "gateway"
host = "{GW}"
port = {port}
legacy_ports = [{legacy}]
expect_thumbprint = "{thumbprint}"
require_san = ["{SMP}"]
interval = "{interval}"
connect_timeout = "1s"
handshake_timeout = "3s"
resolve = ["{GW}:*:{VIP}"]

[[check]]
name = "smp-agent-site"
role = "smp"
host = "{SMP}"
port = 4726
legacy_ports = []
interval = "{interval}"
connect_timeout = "1s"
resolve = ["{SMP}:*:{smp}"]
select = {{ vantage = "dmz" }}

[[check]]
name = "smp-https"
role = "smp"
host = "{SMP}"
port = 443
legacy_ports = []
interval = "{interval}"
connect_timeout = "1s"
resolve = ["{SMP}:*:{smp}"]
select = {{ vantage = "dmz" }}
"#,
        legacy = legacy.join(", "),
        smp = smp.addr
    )
}

struct Fleet {
    lab: Lab,
    dir: tempfile::TempDir,
    config: PathBuf,
    quic: SocketAddr,
    http: SocketAddr,
    coordinator: Proc,
    ca_file: PathBuf,
    /// name → (namespace name, site, vantage, state dir, extra args)
    probes: BTreeMap<String, (String, String, String, PathBuf)>,
    running: BTreeMap<String, Proc>,
}

impl Fleet {
    fn ns(&self, name: &str) -> &Netns {
        if name == "dmz-1" {
            return &self.lab.dmz_probe.ns;
        }
        &self.lab.internet[name.trim_start_matches("inet-")].ns
    }

    fn start_probe(&mut self, name: &str, trust_lab_ca: bool) {
        let (_, _, vantage, state) = self.probes[name].clone();
        let bin = probe_bin().display().to_string();
        let state_s = state.display().to_string();
        let mut argv = vec![bin.as_str(), "run", "--state-dir", state_s.as_str()];
        let ca = self.ca_file.display().to_string();
        if trust_lab_ca {
            argv.extend(["--ca-file", ca.as_str()]);
        }
        let direct = format!("{GW}:*:{}", self.lab.gateway.addr);
        if vantage == "dmz" {
            // The DMZ probe reaches the gateway directly, not through the perimeter's VIP.
            argv.extend(["--resolve", direct.as_str()]);
        }
        let mut cmd = self.ns(name).command(&argv);
        cmd.env("CEMWATCH_LOG", "info");
        let proc = Proc::spawn(name, cmd).expect("probe");
        self.running.insert(name.to_string(), proc);
    }

    fn start_coordinator(&mut self) {
        let mut cmd = Command::new(COORDINATOR);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("CEMWATCH_LOG", "info");
        let mut proc = Proc::spawn("coordinator", cmd).expect("coordinator");
        let quic = proc.listening("quic").expect("quic");
        assert_eq!(quic, self.quic);
        self.http = proc.listening("http").expect("http");
        self.coordinator = proc;
    }

    fn connected(&self, n: u64) {
        self.connected_within(n, WAIT);
    }

    fn connected_within(&self, n: u64, within: Duration) {
        let http = self.http;
        eventually(&format!("{n} probes connected"), within, || {
            let (_, body) = http_get(http, "/api/v1/fleet").ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["probes"]["connected"].as_u64()? == n).then_some(())
        })
        .expect("connected");
    }

    /// Runs a round of `check` and waits for every answer.
    fn round(&self, check: &str) {
        let (status, body) = http_post_json(
            self.http,
            "/api/v1/rounds",
            &format!("{{\"check\":\"{check}\"}}"),
        )
        .expect("round");
        assert_eq!(status, 201, "{body}");
        let id = serde_json::from_str::<Value>(&body).expect("json")["round"]
            .as_u64()
            .expect("id");
        let http = self.http;
        eventually(&format!("round {id} of {check} answered"), WAIT, || {
            let (_, body) = http_get(http, &format!("/api/v1/rounds/{id}")).ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            v["pending"].as_array()?.is_empty().then_some(())
        })
        .expect("answered");
    }

    /// Asserts the diagnosis of `check`, and each probe's finding codes by vantage.
    fn expect(
        &self,
        scenario: &str,
        check: &str,
        diagnosis: &str,
        codes: &dyn Fn(&str, &str) -> Vec<&'static str>,
    ) -> Value {
        self.round(check);
        let http = self.http;
        let mut last_round = std::time::Instant::now();
        let detail = eventually(&format!("{scenario}: diagnosis {diagnosis}"), WAIT, || {
            let (_, body) = http_get(http, &format!("/api/v1/checks/{check}")).ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            // Settled when the diagnosis and every probe's codes are the expected ones: a
            // diagnosis shared with the scenario before can hold while a probe's answer still
            // comes from the firewall's change (a SYN lost while the ruleset was replaced).
            let settled = v["diagnosis"] == diagnosis && code_mismatch(&v, codes).is_none();
            if !settled && last_round.elapsed() > Duration::from_secs(4) {
                // The network may still be settling (neighbour caches, NAT state): ask again.
                self.round(check);
                last_round = std::time::Instant::now();
            }
            settled.then_some(v)
        })
        .unwrap_or_else(|e| {
            let (_, body) = http_get(http, &format!("/api/v1/checks/{check}")).unwrap_or_default();
            let mismatch = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| code_mismatch(&v, codes))
                .unwrap_or_default();
            panic!("{e}\n{scenario}: {mismatch}\n{body}")
        });
        let (_, body) = http_get(http, "/metrics").expect("metrics");
        let series = format!(
            "{}{{check=\"{check}\",diagnosis=\"{diagnosis}\"}} 1",
            metrics::FLEET_DIAGNOSIS
        );
        assert!(
            body.lines().any(|l| l == series),
            "{scenario}: /metrics lacks {series}"
        );
        println!(
            "lab scenario {scenario:<34} {check:<15} {diagnosis:<34} {}",
            detail["detail"]["summary"].as_str().unwrap_or("")
        );
        detail
    }

    fn write_config(&self, port: u16, legacy: &[u16], thumbprint: &str, interval: &str) {
        std::fs::write(
            &self.config,
            config_text(self.quic, port, legacy, thumbprint, interval, &self.lab.smp),
        )
        .expect("config");
    }

    fn wait_reload(&mut self, generation_before: usize) {
        let coord = &mut self.coordinator;
        eventually("configuration reloaded", WAIT, || {
            (coord.log().matches("configuration reloaded").count() > generation_before)
                .then_some(())
        })
        .expect("reloaded");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn count(data: &Path, states: &[(String, PathBuf)]) -> (u64, u64, u64, u64, u64) {
    let db = rusqlite::Connection::open(data.join("cemwatch.sqlite")).expect("db");
    let (mut produced, mut stored, mut pending, mut lost) = (0, 0, 0, 0);
    for (name, state) in states {
        let seq: i64 = std::fs::read_to_string(state.join("spool/seq"))
            .map(|s| s.trim().parse().unwrap_or(0))
            .unwrap_or(0);
        let spooled = spooled(state);
        let seqs = stored_seqs(&db, name);
        produced += seq as u64;
        stored += seqs.len() as u64;
        pending += spooled.len() as u64;
        lost += (1..=seq)
            .filter(|s| seqs.binary_search(s).is_err() && !spooled.contains(s))
            .count() as u64;
    }
    let dup = duplicates_dropped(&db);
    (produced, stored, pending, dup as u64, lost)
}

/// Counts now, allowing for a report between its sequence number and its spool file.
fn count_after(fault: &str, data: &Path, states: &[(String, PathBuf)]) {
    let mut last = (0, 0, 0, 0, 0);
    for _ in 0..10 {
        last = count(data, states);
        if last.4 == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (produced, stored, pending, dup, lost) = last;
    println!("lab after {fault}: produced={produced} stored={stored} still_spooled={pending} duplicates_dropped={dup} lost={lost}");
    assert_eq!(lost, 0, "{fault}");
}

#[test]
#[ignore = "the network lab needs root, ip, nft and tc: run it with tests/lab/run"]
fn the_guides_failure_tables_on_a_real_topology() {
    let _machine = crate::support::shared();
    if let Some(why) = netns::unavailable() {
        panic!("the lab cannot run: {why}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::build(&[("eu-west", 2), ("us-east", 2), ("ap-south", 2)]).expect("lab");
    let root = Ca::root("Lab Internal Root CA").expect("ca");
    let ca_file = root.write_pem(dir.path()).expect("ca file");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    let renewed = root.issue(&LeafSpec::good(&[SMP, GW])).expect("renewed");
    let mut gateway = serve(&lab.gateway.ns, 8443, &leaf, dir.path());
    let _smp_4726 = serve(&lab.smp.ns, 4726, &leaf, dir.path());
    let _smp_443 = serve(&lab.smp.ns, 443, &leaf, dir.path());

    let quic: SocketAddr = format!(
        "{}:{}",
        lab.coordinator_addr,
        free_udp_port().expect("port")
    )
    .parse()
    .expect("addr");
    let config = dir.path().join("cemwatch.toml");
    std::fs::write(
        &config,
        config_text(quic, 8443, &[443], &leaf.thumbprint(), "1m", &lab.smp),
    )
    .expect("config");
    let mut fleet = Fleet {
        probes: BTreeMap::new(),
        running: BTreeMap::new(),
        ca_file,
        config,
        quic,
        http: "127.0.0.1:1".parse().expect("addr"),
        coordinator: Proc::spawn("placeholder", Command::new("true")).expect("true"),
        lab,
        dir,
    };
    fleet.start_coordinator();

    // Enrol every probe from inside its namespace.
    let mut hosts: Vec<(String, String, String)> = fleet
        .lab
        .internet
        .iter()
        .map(|(tag, h)| {
            (
                format!("inet-{tag}"),
                h.site.clone(),
                "internet".to_string(),
            )
        })
        .collect();
    hosts.push(("dmz-1".into(), "dmz".into(), "dmz".into()));
    for (name, site, vantage) in &hosts {
        let out = Command::new(COORDINATOR)
            .args(["token", "create", "--config"])
            .arg(&fleet.config)
            .args([
                "--labels",
                &format!("site={site},vantage={vantage}"),
                "--name",
                name,
            ])
            .output()
            .expect("token");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let state = fleet.dir.path().join(name);
        fleet.probes.insert(
            name.clone(),
            (
                fleet.ns(name).name.clone(),
                site.clone(),
                vantage.clone(),
                state.clone(),
            ),
        );
        let bin = probe_bin().display().to_string();
        let out = fleet
            .ns(name)
            .command(&[
                &bin,
                "enroll",
                "--coordinator",
                &quic.to_string(),
                "--token",
                &token,
                "--state-dir",
                &state.display().to_string(),
            ])
            .output()
            .expect("enroll");
        assert!(
            out.status.success(),
            "enrol {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names: Vec<String> = fleet.probes.keys().cloned().collect();
    for name in &names {
        fleet.start_probe(name, true);
    }
    let total = names.len() as u64;
    fleet.connected(total);

    let none = |_: &str, _: &str| -> Vec<&'static str> { vec![] };
    let inet_only = |codes: Vec<&'static str>| {
        move |vantage: &str, _: &str| {
            if vantage == "dmz" {
                vec![]
            } else {
                codes.clone()
            }
        }
    };

    // 1. Healthy.
    fleet.expect("healthy", "gateway", "healthy", &none);
    fleet.expect("healthy", "smp-agent-site", "healthy", &none);

    // 2. The perimeter drops 8443.
    fleet
        .lab
        .firewall(&Firewall {
            perimeter_8443: Some("drop".into()),
            ..Firewall::default()
        })
        .expect("fw");
    fleet.expect(
        "perimeter drops 8443",
        "gateway",
        "perimeter_blocked",
        &inet_only(vec!["tcp_filtered"]),
    );

    // 3. The perimeter rejects 8443 with a reset.
    fleet
        .lab
        .firewall(&Firewall {
            perimeter_8443: Some("reject with tcp reset".into()),
            ..Firewall::default()
        })
        .expect("fw");
    fleet.expect(
        "perimeter resets 8443",
        "gateway",
        "perimeter_blocked",
        &inet_only(vec!["tcp_refused"]),
    );

    // 4. NAT translates 8443 to a port nothing listens on.
    fleet
        .lab
        .firewall(&Firewall {
            nat_8443_to: Some(9443),
            ..Firewall::default()
        })
        .expect("fw");
    let d = fleet.expect(
        "NAT 8443 to a closed port",
        "gateway",
        "perimeter_blocked",
        &inet_only(vec!["tcp_refused"]),
    );
    assert!(
        d["detail"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("translates"),
        "{d}"
    );
    fleet.lab.firewall(&Firewall::default()).expect("fw");

    // 5. Gateway Manager not restarted: the listener is still on 443.
    gateway.terminate(Duration::from_secs(5));
    let mut legacy = serve(&fleet.lab.gateway.ns, 443, &leaf, fleet.dir.path());
    fleet.expect(
        "listener still on 443",
        "gateway",
        "listener_on_legacy_port",
        &|_, _| vec!["listener_on_legacy_port", "tcp_refused"],
    );
    legacy.terminate(Duration::from_secs(5));
    gateway = serve(&fleet.lab.gateway.ns, 8443, &leaf, fleet.dir.path());

    // 6. The CEM policy says 443 while the listener is on 8443.
    let before = fleet
        .coordinator
        .log()
        .matches("configuration reloaded")
        .count();
    fleet.write_config(443, &[8443], &leaf.thumbprint(), "1m");
    fleet.wait_reload(before);
    let d = fleet.expect(
        "policy port 443, listener 8443",
        "gateway",
        "listener_on_legacy_port",
        &|_, _| vec!["listener_on_legacy_port", "tcp_refused"],
    );
    assert_eq!(d["ports"]["policy_port"], 443, "{d}");
    assert_eq!(d["ports"]["listener_port"], 8443, "{d}");
    let before = fleet
        .coordinator
        .log()
        .matches("configuration reloaded")
        .count();
    fleet.write_config(8443, &[443], &leaf.thumbprint(), "1m");
    fleet.wait_reload(before);
    fleet.expect("back to healthy", "gateway", "healthy", &none);

    // 7. The internal firewall blocks DMZ → SMP 4726.
    fleet
        .lab
        .firewall(&Firewall {
            internal_block_4726: true,
            ..Firewall::default()
        })
        .expect("fw");
    fleet.expect(
        "internal firewall blocks 4726",
        "smp-agent-site",
        "gateway_cannot_reach_smp",
        &|_, _| vec!["tcp_filtered"],
    );
    fleet.expect(
        "internal firewall blocks 4726",
        "smp-https",
        "healthy",
        &none,
    );
    fleet.lab.firewall(&Firewall::default()).expect("fw");

    // 8. The certificate was renewed; the policy still has the old thumbprint.
    gateway.terminate(Duration::from_secs(5));
    gateway = serve(&fleet.lab.gateway.ns, 8443, &renewed, fleet.dir.path());
    fleet.expect(
        "renewed, policy not updated",
        "gateway",
        "cert_problem:thumbprint_mismatch",
        &|_, _| vec!["thumbprint_mismatch"],
    );
    gateway.terminate(Duration::from_secs(5));
    gateway = serve(&fleet.lab.gateway.ns, 8443, &leaf, fleet.dir.path());

    // 9. The root CA never reached one site.
    let ap: Vec<String> = names
        .iter()
        .filter(|n| fleet.probes[*n].1 == "ap-south")
        .cloned()
        .collect();
    for n in &ap {
        if let Some(mut p) = fleet.running.remove(n) {
            p.terminate(Duration::from_secs(10));
        }
        fleet.start_probe(n, false);
    }
    fleet.connected(total);
    let d = fleet.expect(
        "root CA missing at ap-south",
        "gateway",
        // The gateway serves its leaf alone: without the root, its issuer is missing.
        "cert_problem:chain_incomplete",
        &|_, site| {
            if site == "ap-south" {
                vec!["chain_incomplete"]
            } else {
                vec![]
            }
        },
    );
    assert_eq!(
        d["detail"]["sites"],
        serde_json::json!(["ap-south"]),
        "the diagnosis names the site, not the network"
    );
    for n in &ap {
        if let Some(mut p) = fleet.running.remove(n) {
            p.terminate(Duration::from_secs(10));
        }
        fleet.start_probe(n, true);
    }
    fleet.connected(total);

    // 10. One site's uplink to the gateway is cut.
    fleet
        .lab
        .firewall(&Firewall {
            cut_sites: vec!["us-east".into()],
            ..Firewall::default()
        })
        .expect("fw");
    let d = fleet.expect(
        "us-east uplink cut",
        "gateway",
        "local_network",
        &|_, site| {
            if site == "us-east" {
                vec!["tcp_filtered"]
            } else {
                vec![]
            }
        },
    );
    assert_eq!(d["detail"]["sites"], serde_json::json!(["us-east"]));
    fleet.lab.firewall(&Firewall::default()).expect("fw");

    // 11. The gateway host is down.
    let gw_if = "h-gw";
    fleet
        .lab
        .gateway
        .ns
        .exec(&["ip", "link", "set", gw_if, "down"])
        .expect("down");
    fleet.round("gateway");
    let http = fleet.http;
    let d = eventually("gateway down", WAIT, || {
        let (_, body) = http_get(http, "/api/v1/checks/gateway").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["diagnosis"] == "gateway_down").then_some(v)
    })
    .expect("gateway_down");
    for p in d["probes"].as_array().expect("probes") {
        let codes: Vec<&str> = p["codes"]
            .as_array()
            .expect("codes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            codes
                .iter()
                .all(|c| *c == "tcp_filtered" || *c == "tcp_unreachable")
                && !codes.is_empty(),
            "{}: {codes:?}",
            p["probe"]
        );
    }
    println!(
        "lab scenario {:<34} {:<15} {:<34} {}",
        "gateway host down",
        "gateway",
        "gateway_down",
        d["detail"]["summary"].as_str().unwrap_or("")
    );
    fleet
        .lab
        .gateway
        .ns
        .exec(&["ip", "link", "set", gw_if, "up"])
        .expect("up");
    let route = format!("10.201.{}.254", fleet.lab.gateway.addr.octets()[2]);
    let _ = fleet
        .lab
        .gateway
        .ns
        .exec(&["ip", "route", "replace", "default", "via", &route]);
    let _ = fleet
        .lab
        .router
        .exec(&["ip", "neigh", "flush", "dev", &fleet.lab.gateway.router_if]);
    fleet.expect("gateway back", "gateway", "healthy", &none);

    // Faults on the fleet path, with results flowing every second.
    let before = fleet
        .coordinator
        .log()
        .matches("configuration reloaded")
        .count();
    fleet.write_config(8443, &[443], &leaf.thumbprint(), "1s");
    fleet.wait_reload(before);
    std::thread::sleep(Duration::from_secs(3));
    let states: Vec<(String, PathBuf)> = fleet
        .probes
        .iter()
        .map(|(n, v)| (n.clone(), v.3.clone()))
        .collect();
    let data = fleet.dir.path().join("data");
    // a. kill -9 of the coordinator, restarted.
    fleet.coordinator.kill9();
    std::thread::sleep(Duration::from_secs(3));
    fleet.start_coordinator();
    // Probes come back within their (jittered, growing) backoff.
    fleet.connected_within(total, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    count_after("kill -9 of the coordinator", &data, &states);
    // b. The probes' path to the coordinator cut, then restored.
    fleet
        .lab
        .firewall(&Firewall {
            coordinator_cut: true,
            ..Firewall::default()
        })
        .expect("fw");
    std::thread::sleep(Duration::from_secs(6));
    fleet.lab.firewall(&Firewall::default()).expect("fw");
    fleet.connected_within(total, Duration::from_secs(120));
    count_after("the path to the coordinator cut for 6 s", &data, &states);
    // c. Loss and delay on the probes' uplinks.
    let impairment = fleet
        .lab
        .impair(20, 80, &Firewall::default())
        .expect("impair");
    println!("lab fault: {impairment} on the probes' uplinks for 8 s");
    std::thread::sleep(Duration::from_secs(8));
    fleet.lab.heal(&Firewall::default()).expect("heal");
    std::thread::sleep(Duration::from_secs(3));
    count_after("loss on the uplinks", &data, &states);
    // Stop the probes: each flushes its spool to the coordinator first.
    for (_, p) in fleet.running.iter_mut() {
        p.terminate(Duration::from_secs(15));
    }
    let (produced, stored, pending, dup, lost) = count(&data, &states);
    println!(
        "lab faults (kill -9, coordinator path cut, loss/delay): produced={produced} stored={stored} still_spooled={pending} duplicates_dropped={dup} lost={lost}"
    );
    assert_eq!(lost, 0);
    assert_eq!(stored + pending, produced);
    assert_eq!(pending, 0, "stopping probes flush their spools");
    assert!(produced > 50, "results flowed: {produced}");
    drop(gateway);
}

/// The first probe of a check's detail whose finding codes are not those `codes` gives for its
/// vantage and site, described; none when every probe's match.
fn code_mismatch(
    detail: &Value,
    codes: &dyn Fn(&str, &str) -> Vec<&'static str>,
) -> Option<String> {
    let Some(probes) = detail["probes"].as_array() else {
        return Some("no probes in the detail".into());
    };
    for p in probes {
        let mut got: Vec<&str> = p["codes"]
            .as_array()
            .map(|codes| codes.iter().map(|c| c.as_str().unwrap_or("")).collect())
            .unwrap_or_else(|| vec!["(no codes)"]);
        got.sort();
        let mut want = codes(
            p["vantage"].as_str().unwrap_or(""),
            p["site"].as_str().unwrap_or(""),
        );
        want.sort();
        if got != want {
            return Some(format!(
                "probe {} ({}/{}): codes {got:?}, expected {want:?}",
                p["probe"], p["site"], p["vantage"]
            ));
        }
    }
    None
}
