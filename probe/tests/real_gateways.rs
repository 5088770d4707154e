//! `cemwatch-probe check` against TLS peers no cemwatch code wrote, where real gateways differ
//! from cooperative test servers (issue 14): `openssl s_server` asking for a client
//! certificate (`-Verify 1`, TLS 1.2 and 1.3) without and with `-verify_return_error`, with an
//! agent certificate accepted, refused and expired; `openssl s_server` limited to TLS 1.0, to
//! CBC suites, to static RSA and to DHE; a rustls server replaying the real chain with another
//! key; python sockets that accept and then reset or close. All on loopback; the assertions
//! read the JSON a script would read.

use std::path::PathBuf;
use std::process::Command;

use cemwatch_tests::peers::{dh_params_pem, HangUp, HangUpMode, OpensslPeer, ReplayServer};
use cemwatch_tests::pki::{self, Ca, Eku, Leaf, LeafSpec, PfxEncryption};
use cemwatch_tests::process::KillOnDrop;
use cemwatch_tests::server::{free_port, Versions};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

const GW: &str = "gateway.example.com";
const SMP: &str = "smp.example.net";
const AGENT: &str = "agent-01.example.net";
const BIN: &str = env!("CARGO_BIN_EXE_cemwatch-probe");
const AGENTS_CA: &str = "cemwatch Test Agents CA";
const RESET_TEXT: &str = "accepted, then reset before the handshake completed: a load balancer with no healthy backend, an IPS, or a service that rejects the client";
const CLOSED_TEXT: &str = "accepted, then closed before the handshake completed: a load balancer with no healthy backend, an IPS, or a service that rejects the client";

/// The gateway's PKI (trusted by the probe through --ca-file), the agents' CA (whose name the
/// gateway sends in its CertificateRequest), and a directory for files.
struct World {
    root: Ca,
    ca_file: PathBuf,
    agents: Ca,
    agents_file: PathBuf,
    leaf: Leaf,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("cemwatch Test Root CA").expect("root CA");
    let ca_file = root.write_pem(dir.path()).expect("write CA");
    let agents = Ca::root(AGENTS_CA).expect("agents CA");
    let agents_file = agents.write_pem(dir.path()).expect("write agents CA");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    World {
        root,
        ca_file,
        agents,
        agents_file,
        leaf,
        dir,
    }
}

impl World {
    fn agents_file(&self) -> String {
        self.agents_file.display().to_string()
    }

    fn write(&self, name: &str, content: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    }

    /// An agent certificate (Client Authentication) from `ca`, valid as given.
    fn agent_cert(&self, ca: &Ca, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Leaf {
        let mut spec = LeafSpec::good(&[AGENT]);
        spec.eku = Eku::ClientOnly;
        spec.not_before = not_before;
        spec.not_after = not_after;
        ca.issue(&spec).expect("agent certificate")
    }

    fn good_agent(&self, ca: &Ca) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.agent_cert(ca, now - Duration::days(1), now + Duration::days(365))
    }
}

struct Run {
    code: i32,
    json: Value,
    stdout: String,
    stderr: String,
}

impl Run {
    fn codes(&self) -> Vec<String> {
        self.json["findings"]
            .as_array()
            .unwrap_or_else(|| panic!("no findings in: {}\n{}", self.stdout, self.stderr))
            .iter()
            .map(|f| f["code"].as_str().expect("code").to_string())
            .collect()
    }

    fn finding(&self, code: &str) -> &Value {
        self.json["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["code"] == code))
            .unwrap_or_else(|| panic!("no {code} in: {}", self.stdout))
    }

    fn tls(&self) -> &Value {
        &self.json["tls"]
    }

    fn context(&self) -> String {
        format!("exit {}\n{}\n{}", self.code, self.stdout, self.stderr)
    }
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cemwatch-probe");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr,
    }
}

/// The arguments of a check of GW on `port` (resolved to loopback), trusting the test root,
/// requiring the SMP name and the leaf's thumbprint, with no legacy ports, as JSON.
fn check_args(w: &World, port: &str) -> Vec<String> {
    [
        "check",
        &format!("{GW}:{port}"),
        "--resolve",
        &format!("{GW}:*:127.0.0.1"),
        "--ca-file",
        &w.ca_file.display().to_string(),
        "--require-san",
        SMP,
        "--expect-thumbprint",
        &w.leaf.thumbprint(),
        "--no-legacy-ports",
        "--output",
        "json",
        "--connect-timeout",
        "2s",
        "--handshake-timeout",
        "5s",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// [`check_args`] run here, with `extra` arguments and environment.
fn check_env(w: &World, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let owned = check_args(w, &port.to_string());
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    run_with_env(&args, env)
}

fn check(w: &World, port: u16, extra: &[&str]) -> Run {
    check_env(w, port, extra, &[])
}

/// The served certificate was judged: it is the gateway's, trusted, with no certificate
/// finding.
fn assert_gateway_certificate_judged(w: &World, r: &Run) {
    assert_eq!(
        r.json["certificate"]["thumbprint_sha1"],
        w.leaf.thumbprint().as_str(),
        "{}",
        r.context()
    );
    assert_eq!(r.tls()["trusted"], true, "{}", r.context());
}

fn version_flag(version: &str) -> &'static str {
    match version {
        "TLSv1.2" => "-tls1_2",
        "TLSv1.3" => "-tls1_3",
        other => panic!("no flag for {other}"),
    }
}

#[test]
fn a_healthy_gateway_asking_for_client_certificates_is_ok_on_tls12_and_tls13() {
    let w = world();
    for version in ["TLSv1.2", "TLSv1.3"] {
        let peer = OpensslPeer::start(
            &w.leaf,
            &[
                version_flag(version),
                "-Verify",
                "1",
                "-CAfile",
                &w.agents_file(),
            ],
        )
        .expect("s_server");
        let r = check(&w, peer.port(), &[]);
        assert_eq!(r.code, 0, "{version}: {}\n{}", r.context(), peer.log());
        assert_eq!(r.json["verdict"], "ok");
        assert_eq!(r.codes(), Vec::<String>::new(), "{version}");
        assert_eq!(r.tls()["client_certificate_requested"], true, "{version}");
        let cas = r.tls()["acceptable_client_cas"].as_array().expect("cas");
        assert_eq!(cas.len(), 1, "{version}: {cas:?}");
        assert!(
            cas[0].as_str().is_some_and(|dn| dn.contains(AGENTS_CA)),
            "{version}: {cas:?}"
        );
        assert_eq!(r.tls()["client_certificate"], Value::Null);
        assert_eq!(r.tls()["handshake_signature_valid"], true, "{version}");
        assert_gateway_certificate_judged(&w, &r);
        if version == "TLSv1.2" {
            // The gateway ended the handshake when no certificate came: said, not failed.
            assert_eq!(r.tls()["completed"], false);
            let why = r.tls()["error"].as_str().expect("error");
            assert!(why.contains("asks for a client certificate"), "{why}");
        } else {
            assert_eq!(r.tls()["version"], "TLSv1.3");
        }

        // The table shows the request on one line.
        let table = run_with_env(
            &[
                "check",
                &format!("{GW}:{}", peer.port()),
                "--resolve",
                &format!("{GW}:*:127.0.0.1"),
                "--ca-file",
                &w.ca_file.display().to_string(),
                "--no-legacy-ports",
                "--color",
                "never",
            ],
            &[],
        );
        assert_eq!(table.code, 0, "{}", table.context());
        let line = table
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("CLIENT"))
            .unwrap_or_else(|| panic!("no CLIENT line:\n{}", table.stdout));
        assert!(line.contains(AGENTS_CA), "{line}");
        assert!(line.contains("none presented"), "{line}");
    }
}

#[test]
fn an_accepted_agent_certificate_completes_the_handshake_as_an_agent() {
    let w = world();
    let agent = w.good_agent(&w.agents);
    // As a .pfx with its password from the environment (TLS 1.2), and as PEM with a separate
    // key file (TLS 1.3).
    let pfx = w.write(
        "agent.pfx",
        &pki::pfx(&agent, "s3cret", PfxEncryption::Modern).expect("pfx"),
    );
    let cert_pem = w.write("agent.pem", agent.chain_pem().as_bytes());
    let key_pem = w.write("agent.key", agent.key_pem.as_bytes());
    let ways: [(&str, Vec<&str>); 2] = [
        (
            "TLSv1.2",
            vec![
                "--client-cert",
                &pfx,
                "--password-env",
                "AGENT_PFX_PASSWORD",
            ],
        ),
        (
            "TLSv1.3",
            vec!["--client-cert", &cert_pem, "--client-key", &key_pem],
        ),
    ];
    for (version, args) in ways {
        let peer = OpensslPeer::start(
            &w.leaf,
            &[
                version_flag(version),
                "-Verify",
                "1",
                "-verify_return_error",
                "-CAfile",
                &w.agents_file(),
            ],
        )
        .expect("s_server");
        let r = check_env(&w, peer.port(), &args, &[("AGENT_PFX_PASSWORD", "s3cret")]);
        assert_eq!(r.code, 0, "{version}: {}\n{}", r.context(), peer.log());
        assert_eq!(r.codes(), Vec::<String>::new());
        assert_eq!(r.tls()["completed"], true, "{version}");
        assert_eq!(r.tls()["version"], version);
        assert_eq!(r.tls()["client_certificate_requested"], true);
        let presented = r.tls()["client_certificate"].as_str().expect("presented");
        assert!(presented.contains(AGENT), "{presented}");
        assert!(presented.contains(&agent.thumbprint()), "{presented}");
        assert_gateway_certificate_judged(&w, &r);
    }
}

#[test]
fn a_refused_agent_certificate_is_client_cert_rejected_and_the_gateway_still_judged() {
    let w = world();
    let stranger = Ca::root("Somebody Else's Agents CA").expect("root");
    let agent = w.good_agent(&stranger);
    let cert_pem = w.write("stranger.pem", agent.chain_pem().as_bytes());
    let key_pem = w.write("stranger.key", agent.key_pem.as_bytes());
    for version in ["TLSv1.2", "TLSv1.3"] {
        let peer = OpensslPeer::start(
            &w.leaf,
            &[
                version_flag(version),
                "-Verify",
                "1",
                "-verify_return_error",
                "-CAfile",
                &w.agents_file(),
            ],
        )
        .expect("s_server");
        let r = check(
            &w,
            peer.port(),
            &["--client-cert", &cert_pem, "--client-key", &key_pem],
        );
        assert_eq!(r.code, 2, "{version}: {}", r.context());
        assert_eq!(r.codes(), vec!["client_cert_rejected"], "{version}");
        let f = r.finding("client_cert_rejected");
        let message = f["message"].as_str().expect("message");
        assert!(message.contains("unknown_ca"), "{version}: {message}");
        assert!(message.contains(AGENT), "{message}");
        let remedy = f["remedy"].as_str().expect("remedy");
        assert!(
            remedy.contains("does not trust the issuer of the agents' certificates"),
            "{remedy}"
        );
        assert_gateway_certificate_judged(&w, &r);
    }
}

#[test]
fn an_expired_agent_certificate_is_reported_before_it_is_used() {
    let w = world();
    let now = OffsetDateTime::now_utc();
    let expired = w.agent_cert(&w.agents, now - Duration::days(60), now - Duration::days(2));
    let pfx = w.write(
        "expired.pfx",
        &pki::pfx(&expired, "pw", PfxEncryption::Modern).expect("pfx"),
    );
    let password_file = w.write("password.txt", b"pw\n");
    let peer = OpensslPeer::start(
        &w.leaf,
        &[
            "-tls1_2",
            "-Verify",
            "1",
            "-verify_return_error",
            "-CAfile",
            &w.agents_file(),
        ],
    )
    .expect("s_server");
    let r = check(
        &w,
        peer.port(),
        &["--client-cert", &pfx, "--password-file", &password_file],
    );
    assert_eq!(r.code, 2, "{}", r.context());
    // First the probe's own finding about the certificate, then the gateway's refusal.
    assert_eq!(
        r.codes(),
        vec!["client_cert_expired", "client_cert_rejected"]
    );
    let message = r.finding("client_cert_expired")["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("expired on"), "{message}");
    let refusal = r.finding("client_cert_rejected")["message"]
        .as_str()
        .expect("message");
    assert!(refusal.contains("certificate_expired"), "{refusal}");

    // One that expires in ten days is a warning, and still presented.
    let expiring = w.agent_cert(
        &w.agents,
        now - Duration::days(300),
        now + Duration::days(10),
    );
    let cert_pem = w.write("expiring.pem", expiring.chain_pem().as_bytes());
    let key_pem = w.write("expiring.key", expiring.key_pem.as_bytes());
    let r = check(
        &w,
        peer.port(),
        &["--client-cert", &cert_pem, "--client-key", &key_pem],
    );
    assert_eq!(r.code, 1, "{}", r.context());
    assert_eq!(r.codes(), vec!["client_cert_expiring"]);
    assert_eq!(r.tls()["completed"], true);
}

#[test]
fn client_certificate_files_that_cannot_be_used_are_refused_with_what_to_do() {
    let w = world();
    let agent = w.good_agent(&w.agents);
    let other = w.good_agent(&w.agents);
    let pfx = w.write(
        "agent.pfx",
        &pki::pfx(&agent, "pw", PfxEncryption::Modern).expect("pfx"),
    );
    let cert_pem = w.write("agent.pem", agent.chain_pem().as_bytes());
    let wrong_key = w.write("other.key", other.key_pem.as_bytes());
    let port = free_port().expect("port").to_string();
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--client-cert", &pfx], "protected by a password"),
        (vec!["--client-cert", &cert_pem], "holds no private key"),
        (
            vec!["--client-cert", &cert_pem, "--client-key", &wrong_key],
            "no certificate in it belongs to the private key",
        ),
    ];
    for (args, needle) in cases {
        let r = check(&w, port.parse().expect("port"), &args);
        assert_eq!(r.code, 3, "{args:?}: {}", r.context());
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    // The same options on `run`, loaded before anything else happens.
    let r = run_with_env(
        &[
            "run",
            "--state-dir",
            &w.dir.path().join("state").display().to_string(),
            "--client-cert",
            &cert_pem,
        ],
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.context());
    assert!(r.stderr.contains("--client-cert"), "{}", r.stderr);
    assert!(r.stderr.contains("holds no private key"), "{}", r.stderr);
}

#[test]
fn help_describes_the_client_certificate_options() {
    for command in ["check", "run"] {
        let r = run_with_env(&[command, "--help"], &[]);
        assert_eq!(r.code, 0);
        for option in [
            "--client-cert <FILE>",
            "--client-key <PEM>",
            "--password-env <VAR>",
            "--password-file <PATH>",
        ] {
            assert!(r.stdout.contains(option), "{command} --help lacks {option}");
        }
        assert!(r.stdout.contains("client_cert_rejected"), "{}", r.stdout);
    }
}

/// A gateway limited to what older Windows servers are hardened into: the probe reads its
/// certificate with the legacy ClientHello, judges it, and warns.
fn assert_legacy(
    w: &World,
    options: &[&str],
    version: &str,
    cipher: &str,
    signature_valid: Value,
) -> Run {
    let peer = OpensslPeer::start(&w.leaf, options).expect("s_server");
    let r = check(w, peer.port(), &[]);
    assert_eq!(r.code, 1, "{options:?}: {}\n{}", r.context(), peer.log());
    assert_eq!(r.json["verdict"], "warn");
    assert_eq!(r.codes(), vec!["tls_legacy"], "{options:?}");
    let message = r.finding("tls_legacy")["message"]
        .as_str()
        .expect("message");
    assert!(
        message.contains("agents connect; modern clients and hardened agents will not"),
        "{message}"
    );
    assert!(
        message.contains(version) && message.contains(cipher),
        "{message}"
    );
    let tls = r.tls();
    assert_eq!(tls["legacy_hello"], true);
    assert_eq!(tls["completed"], false);
    assert_eq!(tls["version"], version, "{options:?}");
    assert_eq!(tls["cipher"], cipher, "{options:?}");
    assert_eq!(
        tls["handshake_signature_valid"], signature_valid,
        "{options:?}"
    );
    assert_gateway_certificate_judged(w, &r);
    r
}

#[test]
fn legacy_tls_gateways_are_judged_and_warned_about() {
    let w = world();
    // TLS 1.0 only, asking for client certificates as the gateway does.
    let r = assert_legacy(
        &w,
        &[
            "-tls1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-Verify",
            "1",
            "-CAfile",
            &w.agents_file(),
        ],
        "TLSv1.0",
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        Value::Null,
    );
    assert_eq!(r.tls()["client_certificate_requested"], true);
    assert!(r.tls()["acceptable_client_cas"][0]
        .as_str()
        .is_some_and(|dn| dn.contains(AGENTS_CA)));
    let message = r.finding("tls_legacy")["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("TLS 1.0"), "{message}");

    // TLS 1.2 with CBC suites only: the ServerKeyExchange signature proves the key.
    let r = assert_legacy(
        &w,
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"],
        "TLSv1.2",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        Value::Bool(true),
    );
    assert!(r.finding("tls_legacy")["message"]
        .as_str()
        .is_some_and(|m| m.contains("a CBC cipher")));

    // Static RSA key exchange: nothing signed, so the key is not proven.
    let r = assert_legacy(
        &w,
        &["-tls1_2", "-cipher", "AES128-SHA"],
        "TLSv1.2",
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        Value::Null,
    );
    assert!(r.finding("tls_legacy")["message"]
        .as_str()
        .is_some_and(|m| m.contains("static RSA key exchange")));

    // DHE key exchange with explicit parameters.
    let dh = w.write("dh.pem", &dh_params_pem().expect("dh params"));
    let r = assert_legacy(
        &w,
        &["-tls1_2", "-cipher", "DHE-RSA-AES128-SHA", "-dhparam", &dh],
        "TLSv1.2",
        "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
        Value::Bool(true),
    );
    assert!(r.finding("tls_legacy")["message"]
        .as_str()
        .is_some_and(|m| m.contains("DHE key exchange")));
}

#[test]
fn a_legacy_gateway_with_the_wrong_certificate_still_gets_its_certificate_findings() {
    let w = world();
    let foreign = Ca::root("Somebody Else's Root").expect("root");
    let stranger = foreign.issue(&LeafSpec::good(&[GW])).expect("leaf");
    let peer =
        OpensslPeer::start(&stranger, &["-tls1_2", "-cipher", "AES128-SHA"]).expect("s_server");
    let r = check(&w, peer.port(), &[]);
    assert_eq!(r.code, 2, "{}", r.context());
    assert_eq!(
        r.codes(),
        vec![
            "tls_legacy",
            "chain_incomplete",
            "cert_san_missing",
            "thumbprint_mismatch"
        ]
    );
}

#[test]
fn a_replayed_chain_without_its_key_never_passes() {
    let w = world();
    let impostor = w.root.issue(&LeafSpec::good(&[GW])).expect("impostor");
    for versions in [Versions::Tls13, Versions::Tls12] {
        let server = ReplayServer::start(&w.leaf, &impostor, versions).expect("replay server");
        let r = check(&w, server.port(), &[]);
        assert_eq!(r.code, 2, "{versions:?}: {}", r.context());
        assert_eq!(r.json["verdict"], "fail");
        assert_eq!(r.codes(), vec!["handshake_key_mismatch"], "{versions:?}");
        assert_eq!(r.tls()["handshake_signature_valid"], false);
        // Everything else about the certificate is right: it is the real one.
        assert_gateway_certificate_judged(&w, &r);
        let f = r.finding("handshake_key_mismatch");
        let message = f["message"].as_str().expect("message");
        assert!(message.contains(&w.leaf.thumbprint()), "{message}");
        assert!(message.contains("without its private key"), "{message}");
        let remedy = f["remedy"].as_str().expect("remedy");
        assert!(remedy.contains("TLS inspection"), "{remedy}");
    }
}

#[test]
fn a_port_that_accepts_then_resets_is_a_failed_handshake_not_a_refusal() {
    let w = world();
    for mode in [
        HangUpMode::ResetAtOnce,
        HangUpMode::ResetAfterHello,
        HangUpMode::CloseAfterHello,
    ] {
        let server = HangUp::start(mode).expect("python3 listener");
        // The reset races `connect` returning: try several times, every outcome must agree.
        for attempt in 0..4 {
            let r = check(&w, server.port(), &[]);
            assert_eq!(r.code, 2, "{mode:?} #{attempt}: {}", r.context());
            assert_eq!(r.json["tcp"]["state"], "open", "{mode:?} #{attempt}");
            assert_eq!(
                r.codes(),
                vec!["tls_handshake_failed"],
                "{mode:?} #{attempt}"
            );
            let message = r.finding("tls_handshake_failed")["message"]
                .as_str()
                .expect("message");
            let expected = if mode == HangUpMode::CloseAfterHello {
                CLOSED_TEXT
            } else {
                RESET_TEXT
            };
            assert!(message.contains(expected), "{mode:?} #{attempt}: {message}");
        }
    }
    // A reset in answer to the SYN is still a refusal.
    let closed = free_port().expect("port");
    let r = check(&w, closed, &[]);
    assert_eq!(r.json["tcp"]["state"], "refused", "{}", r.context());
    assert_eq!(r.codes(), vec!["tcp_refused"]);
}

/// The same gateways behind a perimeter of our own: a network namespace whose nftables rules
/// let the clean listener through and, on a second port, complete the TCP handshake and reset
/// the first packet after it (what an IPS or a load balancer with no healthy member does); the
/// probe runs inside the namespace. `openssl s_server -Verify 1` on TLS 1.2 is ok with the
/// certificate request recorded; the reset after accept is `tls_handshake_failed` with TCP
/// open, and a reset in answer to the SYN stays `tcp_refused`.
#[test]
fn behind_a_perimeter_in_a_namespace_requests_resets_and_refusals_are_told_apart() {
    use cemwatch_tests::netns::{self, Netns};
    let test = "behind_a_perimeter_in_a_namespace_requests_resets_and_refusals_are_told_apart";
    if netns::skip_unless_available(test) {
        return;
    }
    let w = world();
    let ns = Netns::create("gw").expect("netns");
    ns.nft(
        "table inet perimeter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 8444 ct state established reject with tcp reset\n    tcp dport 8445 reject with tcp reset\n  }\n}\n",
    )
    .expect("nft");
    let cert = w.write("ns-chain.pem", w.leaf.chain_pem().as_bytes());
    let key = w.write("ns-key.pem", w.leaf.key_pem.as_bytes());
    let agents = w.agents_file();
    let mut servers = Vec::new();
    for port in ["8443", "8444"] {
        let accept = format!("127.0.0.1:{port}");
        let child = ns
            .command(&[
                "openssl", "s_server", "-accept", &accept, "-cert", &cert, "-key", &key, "-tls1_2",
                "-Verify", "1", "-CAfile", &agents, "-www", "-quiet",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server in the namespace");
        servers.push(KillOnDrop(child));
    }
    let check_in_ns = |port: &str| {
        let args = check_args(&w, port);
        let mut last = None;
        // s_server needs a moment to listen; a refusal before it does is retried.
        for _ in 0..50 {
            let out = ns
                .command(&[BIN])
                .args(&args)
                .output()
                .expect("cemwatch-probe in the namespace");
            let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let refused = json["tcp"]["state"] == "refused";
            last = Some((out.status.code(), json));
            if !refused || port == "8445" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        last.expect("ran")
    };
    let codes = |json: &Value| -> Vec<String> {
        json["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["code"].as_str().unwrap_or("").to_string())
            .collect()
    };

    let (code, ok) = check_in_ns("8443");
    assert_eq!(code, Some(0), "{ok:#}");
    assert_eq!(ok["verdict"], "ok");
    assert_eq!(ok["tls"]["client_certificate_requested"], true, "{ok:#}");

    let (code, reset) = check_in_ns("8444");
    assert_eq!(code, Some(2), "{reset:#}");
    assert_eq!(reset["tcp"]["state"], "open", "TCP did connect: {reset:#}");
    assert_eq!(codes(&reset), vec!["tls_handshake_failed"], "{reset:#}");
    let message = reset["findings"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("accepted, then"), "{message}");

    let (_, refused) = check_in_ns("8445");
    assert_eq!(refused["tcp"]["state"], "refused", "{refused:#}");
    assert_eq!(codes(&refused), vec!["tcp_refused"], "{refused:#}");
}
