//! Every node behind the gateway's name, with a fleet of real probes (`cemwatch serve`,
//! `token create`, `cemwatch-probe enroll` and `run`, as the README sets them up) and gateway
//! nodes no cemwatch code wrote (`openssl s_server` on one port at 127.0.0.2 and 127.0.0.3, the
//! check's `resolve` naming both): one node still serving the old certificate is diagnosed
//! `node_problem` naming it, in the metrics, `status` and `verify`; once it is fixed, the event
//! log records its switch and `verify` confirms. As root, a TLS-inspecting proxy on one site's
//! path (that site's probe in a network namespace, where the gateway's address answers with
//! another CA's certificate) is diagnosed `tls_intercepted`, naming the site and the issuer.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cemwatch_tests::netns::{skip_unless_available, Netns};
use cemwatch_tests::peers::OpensslPeer;
use cemwatch_tests::pki::{Ca, Leaf, LeafSpec};
use cemwatch_tests::process::{eventually, Proc};
use cemwatch_tests::server::free_port;
use serde_json::Value;

use crate::support::{
    enroll_ok, enrolled_probes, probe_bin, run_probe, scrape, start_coordinator, token,
    try_get_json, COORDINATOR, GW, SMP,
};

const WAIT: Duration = Duration::from_secs(60);

fn node(leaf: &Leaf, addr: &str, port: u16) -> OpensslPeer {
    let at: SocketAddr = format!("{addr}:{port}").parse().expect("address");
    OpensslPeer::start_at(leaf, at, &[]).unwrap_or_else(|e| panic!("node at {at}: {e:#}"))
}

/// A coordinator config with one 1-second gateway check on `port` resolved to `addrs`.
fn config(
    dir: &Path,
    quic_listen: &str,
    port: u16,
    addrs: &str,
    thumbprint: &str,
) -> std::path::PathBuf {
    let text = format!(
        "[server]\nquic_listen = \"{quic_listen}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nstale_after = \"30s\"\n\n[[check]]\nname = \"gateway\"\nhost = \"{GW}\"\nport = {port}\nlegacy_ports = []\nexpect_thumbprint = \"{thumbprint}\"\nrequire_san = [\"{SMP}\"]\ninterval = \"1s\"\nresolve = [\"{GW}:*:{addrs}\"]\n"
    );
    let path = dir.join("cemwatch.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn gateway_check(http: SocketAddr) -> Option<Value> {
    try_get_json(http, "/api/v1/checks/gateway")
}

fn cemwatch(http: SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(COORDINATOR)
        .args(args)
        .args(["--api", &format!("http://{http}")])
        .output()
        .expect("cemwatch");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn verify(http: SocketAddr, thumbprint: &str) -> (Option<i32>, Value, String) {
    let (code, text) = cemwatch(
        http,
        &[
            "verify",
            "--check",
            "gateway",
            "--expect-thumbprint",
            thumbprint,
            "--quorum",
            "1",
            "--timeout",
            "30s",
            "--output",
            "json",
        ],
    );
    let json = text
        .find('{')
        .and_then(|i| serde_json::from_str(&text[i..]).ok())
        .unwrap_or(Value::Null);
    (code, json, text)
}

#[test]
fn a_node_forgotten_in_a_rollover_is_named_until_it_switches() {
    let _machine = crate::support::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("Gateway Root CA").expect("root");
    let ca_file = root.write_pem(dir.path()).expect("ca file");
    let new = root.issue(&LeafSpec::good(&[SMP, GW])).expect("new leaf");
    let old = root.issue(&LeafSpec::good(&[SMP, GW])).expect("old leaf");
    let port = free_port().expect("port");
    let _a = node(&new, "127.0.0.2", port);
    let stale = node(&old, "127.0.0.3", port);
    // IPv6 beside IPv4, where loopback has it: a third node, with the new certificate.
    let six = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !six {
        eprintln!("no IPv6 on loopback here: the fleet sees two nodes, not three");
    }
    let _v6 = six.then(|| node(&new, "[::1]", port));
    let addrs = if six {
        "127.0.0.2,127.0.0.3,[::1]"
    } else {
        "127.0.0.2,127.0.0.3"
    };
    let config_path = config(dir.path(), "127.0.0.1:0", port, addrs, &new.thumbprint());
    let coordinator = start_coordinator("coordinator", &config_path);
    let _probes = enrolled_probes(
        &coordinator,
        &config_path,
        dir.path(),
        &ca_file,
        &[
            ("eu-1", "site=eu,vantage=internet"),
            ("eu-2", "site=eu,vantage=internet"),
            ("us-1", "site=us,vantage=internet"),
            ("dmz-1", "site=dmz,vantage=dmz"),
        ],
    );
    let http = coordinator.http;

    // The fleet names the node, not the policy.
    let check = eventually("node_problem for all four probes", WAIT, || {
        let c = gateway_check(http)?;
        (c["diagnosis"] == "node_problem" && c["verdicts"]["fail"] == 4).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}: {:#}", gateway_check(http).unwrap_or_default()));
    let detail = &check["detail"];
    assert_eq!(
        detail["nodes"].as_array().map(Vec::len),
        Some(1),
        "{detail:#}"
    );
    assert_eq!(detail["nodes"][0]["address"], "127.0.0.3", "{detail:#}");
    assert_eq!(
        check["nodes"].as_array().map(Vec::len),
        Some(if six { 3 } else { 2 }),
        "{check:#}"
    );
    assert_eq!(detail["nodes"][0]["codes"][0], "thumbprint_mismatch");
    assert_eq!(detail["nodes"][0]["thumbprint"], old.thumbprint().as_str());
    let remedy = detail["remedy"].as_str().expect("remedy");
    assert!(
        remedy.contains("on the gateway node at 127.0.0.3") && remedy.contains(&new.thumbprint()),
        "{remedy}"
    );

    // Metrics: a per-node series per verdict.
    let (_, series) = scrape(http);
    let node_series = |address: &str, verdict: &str| {
        series
            .iter()
            .find(|(k, _)| {
                k.starts_with("cemwatch_node_probes{")
                    && k.contains(&format!("address=\"{address}\""))
                    && k.contains(&format!("verdict=\"{verdict}\""))
            })
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    assert_eq!(node_series("127.0.0.3", "fail"), 4.0, "{series:?}");
    assert_eq!(node_series("127.0.0.2", "ok"), 4.0, "{series:?}");
    if six {
        assert_eq!(node_series("::1", "ok"), 4.0, "{series:?}");
    }

    // `status`: one line per node, with its certificate.
    let (code, text) = cemwatch(http, &["status"]);
    assert_eq!(code, Some(2), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("node") && l.contains("127.0.0.3"))
        .unwrap_or_else(|| panic!("no node line for 127.0.0.3:\n{text}"));
    assert!(
        line.contains(&old.thumbprint()) && line.contains("fail"),
        "{line}"
    );
    assert!(text.contains("node_problem"), "{text}");

    // `verify` counts no probe as confirming while a node it reaches serves the old one.
    let (code, round, text) = verify(http, &new.thumbprint());
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(round["round"]["confirmed"], 0, "{text}");
    assert_eq!(round["round"]["nodes"][0]["address"], "127.0.0.3", "{text}");

    // The node is fixed: it switches, the event log says when, and verify confirms. The
    // coordinator looks at its nodes every NODE_WATCH_EVERY (5 s): give it two looks at the
    // node with the old certificate first, as any real rollover does.
    std::thread::sleep(2 * cemwatch_coordinator::app::NODE_WATCH_EVERY + Duration::from_secs(1));
    drop(stale);
    let _fixed = node(&new, "127.0.0.3", port);
    eventually(
        "healthy once the node serves the new certificate",
        WAIT,
        || {
            let c = gateway_check(http)?;
            (c["diagnosis"] == "healthy" && c["verdicts"]["ok"] == 4).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:#}", gateway_check(http).unwrap_or_default()));
    let switch = eventually("the node's switch in the event log", WAIT, || {
        let events = try_get_json(http, "/api/v1/events?check=gateway&limit=1000")?;
        events
            .as_array()?
            .iter()
            .find(|e| e["probe"] == "node:127.0.0.3")
            .cloned()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:#}\ncoordinator log:\n{}",
            try_get_json(http, "/api/v1/events?check=gateway&limit=20").unwrap_or_default(),
            coordinator.proc.log()
        )
    });
    assert_eq!(switch["from"], old.thumbprint().as_str(), "{switch}");
    assert_eq!(switch["to"], new.thumbprint().as_str(), "{switch}");
    assert_eq!(switch["codes"][0], "node_switched", "{switch}");
    let (code, round, text) = verify(http, &new.thumbprint());
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(round["round"]["confirmed"], 4, "{text}");
    println!(
        "node_problem named 127.0.0.3 (old certificate) for 4 real probes; after the fix: healthy, node_switched logged, verify confirmed 4 of 4"
    );
}

#[test]
fn an_inspecting_proxy_on_one_sites_path_is_tls_intercepted() {
    if skip_unless_available("an_inspecting_proxy_on_one_sites_path_is_tls_intercepted") {
        return;
    }
    let _machine = crate::support::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("Gateway Root CA").expect("root");
    let ca_file = root.write_pem(dir.path()).expect("ca file");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    let proxy_ca = Ca::root("Fabrikam Inspection CA").expect("proxy CA");
    let minted = proxy_ca.issue(&LeafSpec::good(&[SMP, GW])).expect("minted");
    let port = free_port().expect("port");
    let _gateway = node(&leaf, "127.0.0.2", port);

    // Lyon's path: a namespace joined to this host by a veth pair, where the gateway's address
    // (127.0.0.2 on the namespace's loopback) answers with the proxy's certificate.
    let lyon = Netns::create("lyon").expect("namespace");
    let host_if = format!("cwh{}", std::process::id() % 100_000);
    let ns_if = format!("cwn{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
    ]);
    ip(&["link", "set", &ns_if, "netns", &lyon.name]);
    ip(&["addr", "add", "10.203.77.1/30", "dev", &host_if]);
    ip(&["link", "set", &host_if, "up"]);
    lyon.exec(&["ip", "addr", "add", "10.203.77.2/30", "dev", &ns_if])
        .expect("ns address");
    lyon.exec(&["ip", "link", "set", &ns_if, "up"])
        .expect("ns link");
    let pems = dir.path().join("proxy");
    std::fs::create_dir_all(&pems).expect("proxy dir");
    std::fs::write(pems.join("chain.pem"), minted.chain_pem()).expect("chain");
    std::fs::write(pems.join("key.pem"), &minted.key_pem).expect("key");
    let mut proxy_cmd = lyon.command(&[
        "openssl",
        "s_server",
        "-accept",
        &format!("127.0.0.2:{port}"),
        "-cert",
        &pems.join("chain.pem").display().to_string(),
        "-key",
        &pems.join("key.pem").display().to_string(),
        "-www",
        "-quiet",
    ]);
    proxy_cmd.stdin(std::process::Stdio::null());
    let _proxy = Proc::spawn("proxy", proxy_cmd).expect("proxy");

    let config_path = config(
        dir.path(),
        "0.0.0.0:0",
        port,
        "127.0.0.2",
        &leaf.thumbprint(),
    );
    let coordinator = start_coordinator("coordinator", &config_path);
    let quic_port = coordinator.quic.port();
    let mut probes: Vec<Proc> = Vec::new();
    for (name, labels) in [
        ("paris-1", "site=paris,vantage=internet"),
        ("berlin-1", "site=berlin,vantage=internet"),
        ("madrid-1", "site=madrid,vantage=internet"),
        ("lyon-1", "site=lyon,vantage=internet"),
    ] {
        let state = dir.path().join(name);
        let local: SocketAddr = format!("127.0.0.1:{quic_port}").parse().expect("addr");
        enroll_ok(local, &token(&config_path, labels, name, "10m"), &state);
        if name == "lyon-1" {
            let mut cmd = lyon.command(&[
                &probe_bin().display().to_string(),
                "run",
                "--state-dir",
                &state.display().to_string(),
                "--ca-file",
                &ca_file.display().to_string(),
                "--coordinator",
                &format!("10.203.77.1:{quic_port}"),
            ]);
            cmd.env("CEMWATCH_LOG", "info");
            probes.push(Proc::spawn(name, cmd).expect("lyon probe"));
        } else {
            probes.push(run_probe(name, &state, &ca_file, &[]));
        }
    }
    let http = coordinator.http;
    let check = eventually("tls_intercepted naming lyon", WAIT, || {
        let c = gateway_check(http)?;
        (c["diagnosis"] == "tls_intercepted"
            && c["verdicts"]
                .as_object()?
                .values()
                .filter_map(Value::as_u64)
                .sum::<u64>()
                == 4)
            .then_some(c)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:#}\nlyon probe log:\n{}",
            gateway_check(http).unwrap_or_default(),
            probes[3].log()
        )
    });
    let detail = &check["detail"];
    assert_eq!(detail["sites"], serde_json::json!(["lyon"]), "{detail:#}");
    let summary = detail["summary"].as_str().expect("summary");
    assert!(summary.contains("CN=Fabrikam Inspection CA"), "{summary}");
    let remedy = detail["remedy"].as_str().expect("remedy");
    assert!(remedy.contains("Exempt the gateway's name"), "{remedy}");

    // One person at Lyon sees it without the fleet: the issuer their check was served.
    let own = lyon
        .command(&[
            &probe_bin().display().to_string(),
            "check",
            &format!("{GW}:{port}"),
            "--resolve",
            &format!("{GW}:{port}:127.0.0.2"),
            "--ca-file",
            &ca_file.display().to_string(),
            "--no-legacy-ports",
            "--no-revocation",
            "--color",
            "never",
        ])
        .output()
        .expect("check in lyon");
    let table = String::from_utf8_lossy(&own.stdout);
    let issuer = table
        .lines()
        .find(|l| l.trim_start().starts_with("issuer"))
        .unwrap_or_else(|| panic!("no issuer line:\n{table}"));
    assert!(issuer.contains("Fabrikam Inspection CA"), "{table}");
    println!("tls_intercepted named lyon and CN=Fabrikam Inspection CA; lyon's own check shows the proxy's issuer");
}
