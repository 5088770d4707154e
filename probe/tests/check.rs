//! `cemwatch-probe check` against real TLS peers on loopback: one test per finding code, each
//! asserting the JSON a script would read, plus the exit codes and the table a person reads.
//! The firewall cases run in a network namespace with nftables (root; CI runs them).

use std::path::PathBuf;
use std::process::Command;

use cemwatch_tests::netns::{self, Netns};
use cemwatch_tests::pki::{Ca, Eku, KeyKind, Leaf, LeafSpec};
use cemwatch_tests::server::{free_port, OpensslServer, PlainServer, TlsServer, Versions};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

const GW: &str = "gateway.example.com";
const SMP: &str = "smp.example.net";
const BIN: &str = env!("CARGO_BIN_EXE_cemwatch-probe");

/// A root CA that the probe trusts (through --ca-file) and a temp dir for files.
struct Pki {
    root: Ca,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("cemwatch Test Root CA").expect("root CA");
    let ca_file = root.write_pem(dir.path()).expect("write CA");
    Pki {
        root,
        ca_file,
        _dir: dir,
    }
}

struct Run {
    code: i32,
    json: Value,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run cemwatch-probe");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
        stderr,
    }
}

/// Checks GW on `port` (resolved to loopback), trusting the test root, requiring the SMP name,
/// with no legacy ports unless `extra` adds some.
fn check(pki: &Pki, port: u16, extra: &[&str]) -> Run {
    let target = format!("{GW}:{port}");
    let resolve = format!("{GW}:*:127.0.0.1");
    let ca = pki.ca_file.display().to_string();
    let mut args = vec![
        "check",
        &target,
        "--resolve",
        &resolve,
        "--ca-file",
        &ca,
        "--require-san",
        SMP,
        "--output",
        "json",
        "--connect-timeout",
        "2s",
    ];
    if !extra.contains(&"--legacy-port") {
        args.push("--no-legacy-ports");
    }
    args.extend_from_slice(extra);
    run(&args)
}

fn codes(r: &Run) -> Vec<String> {
    r.json["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array in: {}\n{}", r.stdout, r.stderr))
        .iter()
        .map(|f| f["code"].as_str().expect("code").to_string())
        .collect()
}

fn serve(leaf: &Leaf) -> TlsServer {
    TlsServer::start(leaf).expect("start TLS server")
}

fn good_leaf(ca: &Ca) -> Leaf {
    ca.issue(&LeafSpec::good(&[SMP, GW])).expect("issue")
}

#[test]
fn healthy_gateway_is_ok_with_every_fact_reported() {
    let pki = pki();
    let issuing = pki
        .root
        .intermediate("cemwatch Test Issuing CA")
        .expect("intermediate");
    let leaf = good_leaf(&issuing);
    let server = serve(&leaf);
    let thumb = leaf.thumbprint();
    let r = check(&pki, server.port(), &["--expect-thumbprint", &thumb]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = &r.json;
    assert_eq!(j["verdict"], "ok");
    assert_eq!(codes(&r), Vec::<String>::new());
    assert_eq!(j["tcp"]["state"], "open");
    assert_eq!(j["tls"]["completed"], true);
    assert_eq!(j["tls"]["trusted"], true);
    assert_eq!(j["tls"]["version"], "TLSv1.3");
    assert!(j["tls"]["cipher"]
        .as_str()
        .is_some_and(|c| c.starts_with("TLS13_")));
    assert_eq!(
        j["tls"]["chain"].as_array().map(Vec::len),
        Some(2),
        "leaf + intermediate"
    );
    let c = &j["certificate"];
    assert_eq!(c["thumbprint_sha1"], thumb.as_str());
    assert_eq!(
        c["fingerprint_sha256"],
        cemwatch_tests::pki::sha256_hex(leaf.der()).as_str()
    );
    assert_eq!(c["san_dns"], serde_json::json!([SMP, GW]));
    assert_eq!(c["key_algorithm"], "RSA");
    assert_eq!(c["key_bits"], 2048);
    assert_eq!(c["signature_algorithm"], "sha256WithRSAEncryption");
    assert_eq!(c["eku"], serde_json::json!(["serverAuth"]));
    let days = c["days_left"].as_i64().expect("days_left");
    assert!((363..=365).contains(&days), "{days}");
    assert!(c["not_after"].as_str().is_some_and(|s| s.ends_with('Z')));
    for stage in ["dns_ms", "tcp_ms", "tls_ms", "total_ms"] {
        assert!(j["durations"][stage].as_f64().is_some(), "{stage}");
    }
    assert_eq!(j["legacy_ports"], serde_json::json!([]));
}

#[test]
fn tls12_only_gateway_is_checked_too() {
    let pki = pki();
    let leaf = good_leaf(&pki.root);
    let server = TlsServer::start_on("127.0.0.1:0".parse().expect("addr"), &leaf, Versions::Tls12)
        .expect("start");
    let r = check(&pki, server.port(), &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.json["tls"]["version"], "TLSv1.2");
    assert_eq!(r.json["tls"]["handshake_signature_valid"], true);
}

#[test]
fn unknown_ca_is_cert_untrusted_and_nothing_else() {
    let pki = pki();
    let foreign = Ca::root("Somebody Else's Root").expect("root");
    // The server sends its root along: the path ends at a root nobody trusts.
    let mut leaf = good_leaf(&foreign);
    leaf.chain.push(foreign.cert_der.clone());
    let server = serve(&leaf);
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["cert_untrusted"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["tls"]["trusted"], false);
    let why = r.json["tls"]["trust_error"].as_str().expect("trust_error");
    assert!(why.contains("Somebody Else's Root"), "{why}");

    // Without it, the issuer is missing: it may be an intermediate, so chain_incomplete names
    // it and says both what to serve and what to distribute.
    let server = serve(&good_leaf(&foreign));
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["chain_incomplete"]);
    let why = r.json["tls"]["trust_error"].as_str().expect("trust_error");
    assert!(why.contains("Somebody Else's Root"), "{why}");
    let remedy = r.json["findings"][0]["remedy"].as_str().expect("remedy");
    assert!(remedy.contains("root CA itself"), "{remedy}");
}

#[test]
fn missing_intermediate_is_chain_incomplete_not_untrusted() {
    let pki = pki();
    let issuing = pki
        .root
        .intermediate("cemwatch Test Issuing CA")
        .expect("intermediate");
    let mut spec = LeafSpec::good(&[SMP, GW]);
    spec.send_intermediates = false;
    let server = serve(&issuing.issue(&spec).expect("issue"));
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["chain_incomplete"]);
    let why = r.json["tls"]["trust_error"].as_str().expect("trust_error");
    assert!(why.contains("did not send it"), "{why}");
    assert!(why.contains("cemwatch Test Issuing CA"), "{why}");
}

#[test]
fn sha1_signature_is_a_warning_not_untrusted() {
    let pki = pki();
    let leaf = pki
        .root
        .issue_legacy(&[SMP, GW], "sha1", 2048)
        .expect("legacy leaf");
    let server = serve(&leaf);
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["signature_sha1"], "{}", r.stdout);
    assert_eq!(r.code, 1);
    assert_eq!(r.json["verdict"], "warn");
    assert_eq!(r.json["tls"]["trusted"], true);
    assert_eq!(
        r.json["certificate"]["signature_algorithm"],
        "sha1WithRSAEncryption"
    );
}

#[test]
fn md5_signature_is_insecure() {
    let pki = pki();
    let leaf = pki
        .root
        .issue_legacy(&[SMP, GW], "md5", 2048)
        .expect("legacy leaf");
    let server = serve(&leaf);
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["signature_insecure"], "{}", r.stdout);
    assert_eq!(r.code, 2);
}

#[test]
fn rsa_1024_key_is_too_small_not_untrusted() {
    let pki = pki();
    let leaf = pki
        .root
        .issue_legacy(&[SMP, GW], "sha256", 1024)
        .expect("legacy leaf");
    let server = OpensslServer::start(&leaf).expect("openssl s_server");
    let r = check(&pki, server.port(), &[]);
    assert_eq!(
        codes(&r),
        vec!["key_too_small"],
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.json["certificate"]["key_bits"], 1024);
    assert_eq!(r.json["tls"]["trusted"], true);
}

#[test]
fn ecdsa_key_is_not_rsa() {
    let pki = pki();
    let mut spec = LeafSpec::good(&[SMP, GW]);
    spec.key = KeyKind::EcdsaP256;
    let server = serve(&pki.root.issue(&spec).expect("issue"));
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["key_not_rsa"]);
    assert_eq!(r.json["certificate"]["key_algorithm"], "EC");
    assert_eq!(r.json["certificate"]["key_curve"], "P-256");
}

#[test]
fn client_only_and_absent_eku_lack_server_auth() {
    let pki = pki();
    for eku in [Eku::ClientOnly, Eku::Absent] {
        let mut spec = LeafSpec::good(&[SMP, GW]);
        spec.eku = eku;
        let server = serve(&pki.root.issue(&spec).expect("issue"));
        let r = check(&pki, server.port(), &[]);
        assert_eq!(codes(&r), vec!["eku_missing_server_auth"], "{eku:?}");
        assert_eq!(
            r.json["tls"]["trusted"], true,
            "{eku:?}: not an untrusted chain"
        );
    }
}

#[test]
fn san_without_the_gateway_name_is_a_name_mismatch() {
    let pki = pki();
    let leaf = pki
        .root
        .issue(&LeafSpec::good(&[SMP, "other.example.com"]))
        .expect("issue");
    let server = serve(&leaf);
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["cert_name_mismatch"]);
}

#[test]
fn san_without_the_smp_name_is_san_missing() {
    let pki = pki();
    let leaf = pki.root.issue(&LeafSpec::good(&[GW])).expect("issue");
    let server = serve(&leaf);
    let r = check(&pki, server.port(), &[]);
    assert_eq!(codes(&r), vec!["cert_san_missing"]);
    let msg = r.json["findings"][0]["message"].as_str().expect("message");
    assert!(msg.contains(SMP), "{msg}");
}

#[test]
fn policy_thumbprint_of_another_certificate_is_a_mismatch() {
    let pki = pki();
    let old = good_leaf(&pki.root);
    let renewed = good_leaf(&pki.root);
    let server = serve(&renewed);
    let r = check(
        &pki,
        server.port(),
        &["--expect-thumbprint", &old.thumbprint()],
    );
    assert_eq!(codes(&r), vec!["thumbprint_mismatch"]);
    let f = &r.json["findings"][0];
    assert!(f["message"]
        .as_str()
        .is_some_and(|m| m.contains(&old.thumbprint()) && m.contains(&renewed.thumbprint())));
    assert!(f["remedy"]
        .as_str()
        .is_some_and(|m| m.contains(&renewed.thumbprint())));

    // The same thumbprint pasted from the Windows dialog (spaces, lower case, LRM) matches.
    let pasted: String = renewed
        .thumbprint()
        .to_lowercase()
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let pasted = format!("\u{200E}{pasted}");
    let r = check(&pki, server.port(), &["--expect-thumbprint", &pasted]);
    assert_eq!(codes(&r), Vec::<String>::new());
    // A SHA-256 fingerprint works as well.
    let sha256 = cemwatch_tests::pki::sha256_hex(renewed.der());
    let r = check(&pki, server.port(), &["--expect-thumbprint", &sha256]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

fn leaf_valid(pki: &Pki, from_days: i64, to_days: i64) -> Leaf {
    let now = OffsetDateTime::now_utc();
    let mut spec = LeafSpec::good(&[SMP, GW]);
    spec.not_before = now + Duration::days(from_days);
    spec.not_after = now + Duration::days(to_days);
    pki.root.issue(&spec).expect("issue")
}

#[test]
fn validity_codes() {
    let pki = pki();
    let expired = serve(&leaf_valid(&pki, -400, -10));
    let r = check(&pki, expired.port(), &[]);
    assert_eq!(codes(&r), vec!["cert_expired"]);
    assert!(r.json["certificate"]["days_left"]
        .as_i64()
        .is_some_and(|d| d < 0));

    let future = serve(&leaf_valid(&pki, 10, 400));
    assert_eq!(
        codes(&check(&pki, future.port(), &[])),
        vec!["cert_not_yet_valid"]
    );

    let expiring = serve(&leaf_valid(&pki, -300, 10));
    let r = check(&pki, expiring.port(), &[]);
    assert_eq!(codes(&r), vec!["cert_expiring"]);
    assert_eq!(r.code, 1);
    let r = check(&pki, expiring.port(), &["--min-days-left", "5"]);
    assert_eq!(r.code, 0, "10 days left is fine with a 5-day threshold");
}

#[test]
fn closed_port_is_refused() {
    let pki = pki();
    let port = free_port().expect("port");
    let r = check(&pki, port, &[]);
    assert_eq!(codes(&r), vec!["tcp_refused"]);
    assert_eq!(r.json["tcp"]["state"], "refused");
    assert!(r.json["tls"].is_null());
}

#[test]
fn listener_left_on_the_legacy_port_is_found() {
    let pki = pki();
    let leaf = good_leaf(&pki.root);
    let legacy = serve(&leaf);
    let expected = free_port().expect("port");
    let legacy_port = legacy.port().to_string();
    let r = check(&pki, expected, &["--legacy-port", &legacy_port]);
    assert_eq!(
        codes(&r),
        vec!["listener_on_legacy_port", "tcp_refused"],
        "{}",
        r.stdout
    );
    let l = &r.json["legacy_ports"][0];
    assert_eq!(l["port"], legacy.port());
    assert_eq!(l["gateway_listener"], true);
    assert_eq!(l["covers_gateway_name"], true);
    assert_eq!(l["thumbprint_sha1"], leaf.thumbprint().as_str());
    let remedy = r.json["findings"][0]["remedy"].as_str().expect("remedy");
    assert!(
        remedy.contains(&format!("to {expected}")) && remedy.contains("restart"),
        "{remedy}"
    );

    // Some other TLS site on the legacy port (not the gateway's certificate) is not the listener.
    let other = serve(
        &pki.root
            .issue(&LeafSpec::good(&["intranet.example.net"]))
            .expect("issue"),
    );
    let other_port = other.port().to_string();
    let r = check(&pki, expected, &["--legacy-port", &other_port]);
    assert_eq!(codes(&r), vec!["tcp_refused"]);
    assert_eq!(r.json["legacy_ports"][0]["tls_completed"], true);
    assert_eq!(r.json["legacy_ports"][0]["gateway_listener"], false);
}

#[test]
fn a_port_that_does_not_speak_tls_fails_the_handshake() {
    let pki = pki();
    let plain = PlainServer::start().expect("plain");
    let r = check(&pki, plain.addr.port(), &[]);
    assert_eq!(codes(&r), vec!["tls_handshake_failed"]);
    assert_eq!(r.json["tcp"]["state"], "open");
    let err = r.json["tls"]["error"].as_str().expect("error");
    assert!(err.contains("not TLS"), "{err}");
}

#[test]
fn unresolvable_name_is_dns_unresolved() {
    // .invalid never resolves (RFC 2606).
    let r = run(&["check", "gateway.cemwatch.invalid", "--output", "json"]);
    assert_eq!(r.code, 2);
    assert_eq!(codes(&r), vec!["dns_unresolved"]);
    assert_eq!(r.json["tcp"]["state"], "not_attempted");
}

#[test]
fn bad_input_exits_3_and_says_what_to_fix() {
    let cases: &[(&[&str], &str)] = &[
        (&["check", "gw", "--expect-thumbprint", "12:34"], "40"),
        (
            &["check", "gw", "--expect-thumbprint", "sha1=ABCD"],
            "invalid character",
        ),
        (&["check", "gw:http"], "not a port number"),
        (&["check", "gw:8443", "--port", "443"], "give it once"),
        (&["check", "gw", "--resolve", "gw:8443"], "HOST:PORT:ADDR"),
        (&["check", "gw", "--connect-timeout", "5"], "unit"),
        (
            &["check", "gw", "--ca-file", "/nonexistent/ca.pem"],
            "/nonexistent/ca.pem",
        ),
        (&["check"], "HOST[:PORT]"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let r = run(args);
        assert_eq!(r.code, 3, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(needle),
            "{args:?}: stderr lacks {needle:?}: {}",
            r.stderr
        );
    }
    let help = run(&["check", "--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--expect-thumbprint"));
}

#[test]
fn table_output_reads_well() {
    let pki = pki();
    let old = good_leaf(&pki.root);
    let leaf = good_leaf(&pki.root);
    let server = serve(&leaf);
    let target = format!("{GW}:{}", server.port());
    let resolve = format!("{GW}:*:127.0.0.1");
    let ca = pki.ca_file.display().to_string();
    let thumb = old.thumbprint();
    let base = [
        "check",
        &target,
        "--resolve",
        &resolve,
        "--ca-file",
        &ca,
        "--expect-thumbprint",
        &thumb,
    ];
    let r = run(&[&base[..], &["--color", "never"]].concat());
    assert_eq!(r.code, 2);
    for needle in [
        "DNS",
        "TCP",
        "TLS",
        "CERT",
        "open",
        "chain trusted",
        &leaf.thumbprint(),
        "thumbprint_mismatch",
        "remedy:",
        "VERDICT  FAIL",
    ] {
        assert!(
            r.stdout.contains(needle),
            "table lacks {needle:?}:\n{}",
            r.stdout
        );
    }
    assert!(!r.stdout.contains('\x1b'), "no colour when asked for none");
    let coloured = run(&[&base[..], &["--color", "always"]].concat());
    assert!(coloured.stdout.contains("\x1b[31m"), "failures in red");
}

/// Firewall faults, reproduced with nftables in a namespace of our own: a drop rule gives
/// `tcp_filtered`, a TCP reset `tcp_refused`, an ICMP admin-prohibited `tcp_unreachable`.
#[test]
fn firewall_drop_reset_and_reject_are_told_apart() {
    if netns::skip_unless_available("firewall_drop_reset_and_reject_are_told_apart") {
        return;
    }
    let ns = Netns::create("check").expect("netns");
    ns.nft(
        "table inet perimeter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 8443 drop\n    tcp dport 8444 reject with tcp reset\n    tcp dport 8445 reject with icmpx type admin-prohibited\n  }\n}\n",
    )
    .expect("nft");
    let probe = |port: &str| {
        let target = format!("127.0.0.1:{port}");
        let out = ns
            .command(&[
                BIN,
                "check",
                &target,
                "--no-legacy-ports",
                "--connect-timeout",
                "1s",
                "--output",
                "json",
            ])
            .output()
            .expect("run in netns");
        let json: Value = serde_json::from_slice(&out.stdout).expect("json");
        let codes: Vec<String> = json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| f["code"].as_str().expect("code").to_string())
            .collect();
        (
            out.status.code(),
            json["tcp"]["state"].as_str().unwrap_or("").to_string(),
            codes,
        )
    };
    let (code, state, found) = probe("8443");
    assert_eq!((code, state.as_str()), (Some(2), "filtered"));
    assert_eq!(found, vec!["tcp_filtered"]);
    let (_, state, found) = probe("8444");
    assert_eq!(
        (state.as_str(), found),
        ("refused", vec!["tcp_refused".to_string()])
    );
    let (_, state, found) = probe("8445");
    assert_eq!(
        (state.as_str(), found),
        ("unreachable", vec!["tcp_unreachable".to_string()])
    );
}
