//! `cemwatch-probe check` of a gateway name with several addresses (issue 17): every address
//! is checked, and a node that differs is named. The nodes are `openssl s_server` processes on
//! one port at several loopback addresses (127.0.0.2, 127.0.0.3, and [::1] for IPv6 beside
//! IPv4), the name resolved to them with `--resolve HOST:PORT:ADDR,ADDR`; a node that is down
//! is an address where nothing listens. As root, the same in a network namespace whose loopback
//! holds the nodes' own addresses (192.0.2.10-12 and 2001:db8::10). The assertions read the
//! JSON a script reads and the table a person reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use cemwatch_tests::peers::OpensslPeer;
use cemwatch_tests::pki::{Ca, Leaf, LeafSpec};
use cemwatch_tests::process::KillOnDrop;
use cemwatch_tests::server::free_port;
use serde_json::Value;

const GW: &str = "gateway.example.com";
const BIN: &str = env!("CARGO_BIN_EXE_cemwatch-probe");

struct World {
    ca_file: PathBuf,
    /// The certificate in the CEM policy.
    new: Leaf,
    /// The certificate it replaced, still valid, not in the policy.
    old: Leaf,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("cemwatch Test Root CA").expect("root CA");
    let ca_file = root.write_pem(dir.path()).expect("write CA");
    let new = root.issue(&LeafSpec::good(&[GW])).expect("new leaf");
    let old = root.issue(&LeafSpec::good(&[GW])).expect("old leaf");
    World {
        ca_file,
        new,
        old,
        _dir: dir,
    }
}

/// Whether this machine has IPv6 on loopback (a container may not).
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn node(leaf: &Leaf, addr: &str, port: u16) -> OpensslPeer {
    let at: SocketAddr = format!("{addr}:{port}").parse().expect("address");
    OpensslPeer::start_at(leaf, at, &[]).unwrap_or_else(|e| panic!("node at {at}: {e:#}"))
}

struct Run {
    code: i32,
    json: Value,
    stdout: String,
    stderr: String,
}

impl Run {
    fn context(&self) -> String {
        format!("exit {}\n{}\n{}", self.code, self.stdout, self.stderr)
    }

    fn findings(&self) -> &Vec<Value> {
        self.json["findings"]
            .as_array()
            .unwrap_or_else(|| panic!("no findings: {}", self.context()))
    }

    fn addresses(&self) -> Vec<&str> {
        self.json["addresses"]
            .as_array()
            .unwrap_or_else(|| panic!("no addresses: {}", self.context()))
            .iter()
            .map(|a| a["address"].as_str().expect("address"))
            .collect()
    }

    fn address(&self, ip: &str) -> &Value {
        self.json["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["address"] == ip))
            .unwrap_or_else(|| panic!("no address {ip}: {}", self.context()))
    }
}

/// `check` of GW on `port` resolved to `addrs`, expecting the new certificate's thumbprint,
/// with no legacy ports, as `output`, with `extra` arguments.
fn check(w: &World, port: u16, addrs: &[&str], output: &str, extra: &[&str]) -> Run {
    let resolve = format!("{GW}:{port}:{}", addrs.join(","));
    let out = Command::new(BIN)
        .args(["check", &format!("{GW}:{port}"), "--resolve", &resolve])
        .arg("--ca-file")
        .arg(&w.ca_file)
        .args(["--expect-thumbprint", &w.new.thumbprint()])
        .args(["--no-legacy-ports", "--no-revocation", "--color", "never"])
        .args(["--connect-timeout", "2s", "--handshake-timeout", "5s"])
        .args(["--output", output])
        .args(extra)
        .output()
        .expect("run cemwatch-probe");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

#[test]
fn nodes_that_agree_read_as_one_gateway() {
    let w = world();
    let port = free_port().expect("port");
    let _a = node(&w.new, "127.0.0.2", port);
    let _b = node(&w.new, "127.0.0.3", port);
    let run = check(&w, port, &["127.0.0.2", "127.0.0.3"], "json", &[]);
    assert_eq!(run.code, 0, "{}", run.context());
    assert_eq!(run.addresses(), ["127.0.0.2", "127.0.0.3"]);
    assert!(run.findings().is_empty(), "{}", run.context());
    // The top-level fields describe the first address, as for a name with one.
    assert_eq!(run.json["tcp"]["address"], format!("127.0.0.2:{port}"));
    assert_eq!(
        run.json["certificate"]["thumbprint_sha1"],
        w.new.thumbprint().as_str()
    );
    for ip in ["127.0.0.2", "127.0.0.3"] {
        assert_eq!(run.address(ip)["verdict"], "ok");
        assert_eq!(run.address(ip)["tls"]["completed"], true);
    }

    // The table is as short as for one address: no per-node block.
    let table = check(&w, port, &["127.0.0.2", "127.0.0.3"], "table", &[]);
    assert_eq!(table.code, 0, "{}", table.context());
    assert!(!table.stdout.contains("NODE"), "{}", table.stdout);
    assert_eq!(table.stdout.matches("CERT").count(), 1, "{}", table.stdout);
    assert!(
        table.stdout.contains("127.0.0.2, 127.0.0.3"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_node_with_the_old_certificate_fails_the_check_by_its_address() {
    let w = world();
    let port = free_port().expect("port");
    let _a = node(&w.new, "127.0.0.2", port);
    let _b = node(&w.old, "127.0.0.3", port);
    let run = check(&w, port, &["127.0.0.2", "127.0.0.3"], "json", &[]);
    assert_eq!(run.code, 2, "{}", run.context());
    assert_eq!(run.json["verdict"], "fail");
    let findings = run.findings();
    assert_eq!(findings.len(), 1, "{}", run.context());
    let f = &findings[0];
    assert_eq!(f["code"], "thumbprint_mismatch");
    assert_eq!(f["address"], "127.0.0.3");
    assert!(
        f["message"]
            .as_str()
            .expect("message")
            .contains("127.0.0.3"),
        "{f}"
    );
    let remedy = f["remedy"].as_str().expect("remedy");
    assert!(
        remedy.contains("import it on the gateway node at 127.0.0.3")
            && remedy.contains(&w.new.thumbprint()),
        "the remedy is the node's: {remedy}"
    );
    assert_eq!(run.address("127.0.0.2")["verdict"], "ok");
    assert_eq!(run.address("127.0.0.3")["verdict"], "fail");
    assert_eq!(
        run.address("127.0.0.3")["certificate"]["thumbprint_sha1"],
        w.old.thumbprint().as_str()
    );

    // The table shows a block per node, each with its own certificate.
    let table = check(&w, port, &["127.0.0.2", "127.0.0.3"], "table", &[]);
    assert_eq!(table.code, 2, "{}", table.context());
    assert_eq!(table.stdout.matches("NODE").count(), 2, "{}", table.stdout);
    assert!(
        table.stdout.contains(&w.old.thumbprint()),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains(&w.new.thumbprint()),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("at 127.0.0.3: "),
        "the finding names its node: {}",
        table.stdout
    );
}

#[test]
fn three_addresses_one_down_and_ipv6_beside_ipv4() {
    let w = world();
    let port = free_port().expect("port");
    let six = ipv6_loopback();
    if !six {
        eprintln!("SKIP (IPv6 part): no IPv6 on loopback here; checking IPv4 nodes only");
    }
    let _a = node(&w.new, "127.0.0.2", port);
    let _v6 = six.then(|| node(&w.new, "[::1]", port));
    // 127.0.0.4: nothing listens there, a node whose service is stopped.
    let mut addrs = vec!["127.0.0.2", "127.0.0.4"];
    if six {
        addrs.push("[::1]");
    }
    let run = check(&w, port, &addrs, "json", &[]);
    assert_eq!(run.code, 2, "{}", run.context());
    let expected: Vec<&str> = if six {
        vec!["127.0.0.2", "127.0.0.4", "::1"]
    } else {
        vec!["127.0.0.2", "127.0.0.4"]
    };
    assert_eq!(run.addresses(), expected);
    let findings = run.findings();
    assert_eq!(findings.len(), 1, "{}", run.context());
    assert_eq!(findings[0]["code"], "tcp_refused");
    assert_eq!(findings[0]["address"], "127.0.0.4");
    assert_eq!(run.address("127.0.0.4")["tcp"]["state"], "refused");
    if six {
        assert_eq!(run.address("::1")["verdict"], "ok");
        assert_eq!(
            run.address("::1")["certificate"]["thumbprint_sha1"],
            w.new.thumbprint().as_str()
        );
        // Only IPv6: the IPv4 addresses are named as skipped, and the one node is fine.
        let v6 = check(&w, port, &addrs, "json", &["--address-family", "ipv6"]);
        assert_eq!(v6.code, 0, "{}", v6.context());
        assert_eq!(v6.addresses(), ["::1"]);
        let skipped = v6.json["skipped_addresses"].as_array().expect("skipped");
        assert_eq!(skipped.len(), 2, "{}", v6.context());
        assert!(skipped[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("--address-family ipv6"));
    }
    // Only IPv4 still sees the node that is down.
    let v4 = check(&w, port, &addrs, "json", &["--address-family", "ipv4"]);
    assert_eq!(v4.code, 2, "{}", v4.context());
    assert_eq!(v4.addresses(), ["127.0.0.2", "127.0.0.4"]);

    // The cap: the first address only, the others named as skipped, in the table too.
    let capped = check(&w, port, &addrs, "table", &["--max-addresses", "1"]);
    assert_eq!(capped.code, 0, "{}", capped.context());
    assert!(
        capped
            .stdout
            .contains("127.0.0.4 (only the first 1 addresses"),
        "{}",
        capped.stdout
    );
    let bad = check(&w, port, &addrs, "json", &["--max-addresses", "0"]);
    assert_eq!(bad.code, 3, "a usage error: {}", bad.context());
    assert!(bad.stderr.contains("from 1 to 64"), "{}", bad.stderr);
}

#[test]
fn every_node_down_is_one_finding_naming_each_address() {
    let w = world();
    let port = free_port().expect("port");
    let run = check(&w, port, &["127.0.0.5", "127.0.0.6"], "json", &[]);
    assert_eq!(run.code, 2, "{}", run.context());
    let findings = run.findings();
    assert_eq!(findings.len(), 1, "{}", run.context());
    assert_eq!(findings[0]["code"], "tcp_refused");
    assert_eq!(findings[0]["address"], Value::Null);
    let message = findings[0]["message"].as_str().expect("message");
    assert!(
        message.contains("127.0.0.5, 127.0.0.6"),
        "the finding names both addresses: {message}"
    );
}

#[test]
fn three_nodes_on_a_namespaces_own_addresses_ipv6_beside_ipv4() {
    let test = "three_nodes_on_a_namespaces_own_addresses_ipv6_beside_ipv4";
    if cemwatch_tests::netns::skip_unless_available(test) {
        return;
    }
    let w = world();
    let ns = cemwatch_tests::netns::Netns::create("nodes").expect("netns");
    // The name's nodes: two IPv4 and one IPv6 address on the namespace's loopback, and a
    // fourth address where the node's service is stopped.
    for addr in ["192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32"] {
        ns.exec(&["ip", "addr", "add", addr, "dev", "lo"])
            .expect("v4");
    }
    ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::10/128",
        "dev",
        "lo",
        "nodad",
    ])
    .expect("v6");
    let port = "9443";
    let mut nodes = Vec::new();
    for (leaf, at) in [
        (&w.new, "192.0.2.10"),
        (&w.old, "192.0.2.11"),
        (&w.new, "[2001:db8::10]"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("chain.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, leaf.chain_pem()).expect("cert");
        std::fs::write(&key, &leaf.key_pem).expect("key");
        let child = ns
            .command(&[
                "openssl",
                "s_server",
                "-accept",
                &format!("{at}:{port}"),
                "-cert",
                &cert.display().to_string(),
                "-key",
                &key.display().to_string(),
                "-www",
                "-quiet",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s_server in the namespace");
        nodes.push((KillOnDrop(child), dir));
    }
    let check = |extra: &[&str]| -> Run {
        let resolve = format!("{GW}:{port}:192.0.2.10,192.0.2.11,192.0.2.12,[2001:db8::10]");
        let mut argv: Vec<String> = vec![
            BIN.into(),
            "check".into(),
            format!("{GW}:{port}"),
            "--resolve".into(),
            resolve,
            "--ca-file".into(),
            w.ca_file.display().to_string(),
            "--expect-thumbprint".into(),
            w.new.thumbprint(),
            "--no-legacy-ports".into(),
            "--no-revocation".into(),
            "--connect-timeout".into(),
            "2s".into(),
            "--output".into(),
            "json".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        // The servers start in the background: wait until all three answer.
        let mut last = None;
        for _ in 0..50 {
            let out = ns.command(&refs).output().expect("check in the namespace");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let run = Run {
                code: out.status.code().unwrap_or(-1),
                json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
                stdout,
                stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            };
            let listening = run.json["addresses"]
                .as_array()
                .map(|a| a.iter().filter(|a| a["tcp"]["state"] == "open").count());
            let expected = if extra.is_empty() { 3 } else { 1 };
            if listening == Some(expected) {
                return run;
            }
            last = Some(run);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let run = last.expect("a run");
        panic!("the nodes did not all answer: {}", run.context());
    };
    let run = check(&[]);
    assert_eq!(run.code, 2, "{}", run.context());
    assert_eq!(
        run.addresses(),
        ["192.0.2.10", "192.0.2.11", "192.0.2.12", "2001:db8::10"]
    );
    let mut named: Vec<(String, String)> = run
        .findings()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().expect("code").to_string(),
                f["address"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("tcp_refused".to_string(), "192.0.2.12".to_string()),
            ("thumbprint_mismatch".to_string(), "192.0.2.11".to_string()),
        ],
        "{}",
        run.context()
    );
    assert_eq!(run.address("2001:db8::10")["verdict"], "ok");
    assert_eq!(run.address("192.0.2.10")["verdict"], "ok");
    // IPv6 only: the one AAAA node serves the policy's certificate.
    let v6 = check(&["--address-family", "ipv6"]);
    assert_eq!(v6.code, 0, "{}", v6.context());
    assert_eq!(v6.addresses(), ["2001:db8::10"]);
    println!(
        "namespace nodes 192.0.2.10 (new), 192.0.2.11 (old), 192.0.2.12 (down), 2001:db8::10 (new): fail naming .11 and .12; ipv6 only: ok"
    );
}
