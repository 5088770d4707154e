//! `cemwatch-probe inspect` on certificate files made here: .pfx with modern and legacy
//! encryption, with and without the key, with another certificate's key; PEM bundles with
//! PKCS#8, PKCS#1 and SEC1 keys; DER; truncated and foreign files; and each certificate defect
//! of the check engine. Every test that gets a verdict asserts that inspect's thumbprint is
//! what `openssl x509 -fingerprint -sha1` prints for the leaf (the issue's done-criterion), and
//! every bad input asserts exit 3 and a message that says what to do.

use std::path::PathBuf;
use std::process::Command;

use cemwatch_tests::pki::{
    self, openssl, openssl_thumbprint, pfx, pfx_with_key, pfx_without_key, to_pem, Ca, Eku,
    KeyKind, Leaf, LeafSpec, PfxEncryption,
};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

const GW: &str = "gateway.example.com";
const SMP: &str = "smp.example.net";
const BIN: &str = env!("CARGO_BIN_EXE_cemwatch-probe");
/// The password of every test .pfx, and the environment variable that holds it.
const PASSWORD: &str = "Correct-Horse-7";
const PASSWORD_VAR: &str = "CEMWATCH_TEST_PFX_PASSWORD";

/// A root CA and a temp dir holding the root's PEM and the test files.
struct Fixture {
    root: Ca,
    ca_file: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Ca::root("cemwatch Test Root CA").expect("root CA");
        let ca_file = root
            .write_pem(dir.path())
            .expect("write CA")
            .display()
            .to_string();
        Self { root, ca_file, dir }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write test file");
        path.display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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
            .unwrap_or_else(|| panic!("no findings array in: {}\n{}", self.stdout, self.stderr))
            .iter()
            .map(|f| f["code"].as_str().expect("code").to_string())
            .collect()
    }

    /// The done-criterion: the thumbprint is what openssl prints for the leaf, and what the
    /// test kit computed.
    fn assert_thumbprint_of(&self, leaf_der: &[u8]) {
        let reference = openssl_thumbprint(leaf_der).expect("openssl fingerprint");
        assert_eq!(reference.len(), 40);
        assert_eq!(
            self.json["certificate"]["thumbprint_sha1"],
            reference.as_str(),
            "{}\n{}",
            self.stdout,
            self.stderr
        );
        assert_eq!(reference, pki::sha1_hex(leaf_der));
    }

    fn assert_never_shows(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the password shows in the output:\n{}\n{}",
            self.stdout,
            self.stderr
        );
    }
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove(PASSWORD_VAR).env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cemwatch-probe");
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

/// `inspect FILE --output json` with the password in the environment and `extra` options.
fn inspect(file: &str, extra: &[&str]) -> Run {
    let mut args = vec!["inspect", file, "--output", "json"];
    args.extend_from_slice(extra);
    run_with_env(&args, &[(PASSWORD_VAR, PASSWORD)])
}

/// `inspect` as the guide's phase 2 wants it: the password, the test root trusted, both
/// names required.
fn inspect_trusted(fx: &Fixture, file: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--password-env",
        PASSWORD_VAR,
        "--ca-file",
        &fx.ca_file,
        "--gateway",
        GW,
        "--require-san",
        SMP,
    ];
    args.extend_from_slice(extra);
    inspect(file, &args)
}

fn good_leaf(ca: &Ca) -> Leaf {
    ca.issue(&LeafSpec::good(&[SMP, GW])).expect("issue")
}

fn subject(ca: &Ca) -> String {
    format!("CN={}, O=cemwatch test PKI", ca.name)
}

#[test]
fn healthy_pfx_is_ok_with_modern_and_legacy_encryption() {
    let fx = Fixture::new();
    let issuing = fx
        .root
        .intermediate("cemwatch Test Issuing CA")
        .expect("intermediate");
    let leaf = good_leaf(&issuing);
    let thumb = leaf.thumbprint();
    for (name, encryption) in [
        ("modern.pfx", PfxEncryption::Modern),
        ("legacy.pfx", PfxEncryption::Legacy),
        ("3des.p12", PfxEncryption::TripleDes),
    ] {
        let file = fx.write(
            name,
            &pfx(&leaf, PASSWORD, encryption).expect("openssl pkcs12 -export"),
        );
        let r = inspect_trusted(&fx, &file, &["--expect-thumbprint", &thumb]);
        assert_eq!(r.code, 0, "{name}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(r.codes(), Vec::<String>::new(), "{name}");
        r.assert_thumbprint_of(leaf.der());
        r.assert_never_shows(PASSWORD);
        let j = &r.json;
        assert_eq!(j["verdict"], "ok");
        assert_eq!(j["file"], file.as_str());
        assert_eq!(j["format"], "pkcs12");
        assert_eq!(
            j["private_key"],
            json!({"present": true, "matches": true, "algorithm": "RSA 2048 bits"})
        );
        assert_eq!(j["chain"], json!([format!("CN={SMP}"), subject(&issuing)]));
        assert_eq!(j["chain_trusted"], true);
        let c = &j["certificate"];
        assert_eq!(
            c["fingerprint_sha256"],
            pki::sha256_hex(leaf.der()).as_str()
        );
        assert_eq!(c["subject"], format!("CN={SMP}").as_str());
        assert_eq!(c["issuer"], subject(&issuing).as_str());
        assert_eq!(c["san_dns"], json!([SMP, GW]));
        assert_eq!(c["key_algorithm"], "RSA");
        assert_eq!(c["key_bits"], 2048);
        assert_eq!(c["signature_algorithm"], "sha256WithRSAEncryption");
        assert_eq!(c["eku"], json!(["serverAuth"]));
        let days = c["days_left"].as_i64().expect("days_left");
        assert!((363..=365).contains(&days), "{days}");
    }

    // The password from a file, with the line ending an editor leaves.
    let file = fx.write(
        "from-file.pfx",
        &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
    );
    let password_file = fx.write("password.txt", format!("{PASSWORD}\n").as_bytes());
    let r = run_with_env(
        &[
            "inspect",
            &file,
            "--password-file",
            &password_file,
            "--ca-file",
            &fx.ca_file,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    r.assert_thumbprint_of(leaf.der());
}

#[test]
fn pfx_with_an_empty_password_opens_without_one() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    let file = fx.write(
        "empty-password.pfx",
        &pfx(&leaf, "", PfxEncryption::Modern).expect("pfx"),
    );
    let r = run_with_env(
        &[
            "inspect",
            &file,
            "--ca-file",
            &fx.ca_file,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["private_key"]["matches"], true);
    r.assert_thumbprint_of(leaf.der());
}

#[test]
fn table_shows_the_thumbprint_first_then_the_facts_and_the_verdict() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    let file = fx.write(
        "gateway.pfx",
        &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
    );
    let base = [
        "inspect",
        &file,
        "--password-env",
        PASSWORD_VAR,
        "--ca-file",
        &fx.ca_file,
        "--gateway",
        GW,
        "--require-san",
        SMP,
    ];
    let r = run_with_env(
        &[&base[..], &["--color", "never"]].concat(),
        &[(PASSWORD_VAR, PASSWORD)],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let thumb = openssl_thumbprint(leaf.der()).expect("openssl");
    let second = r.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        second.contains("THUMBPRINT") && second.contains(&thumb),
        "the thumbprint comes first: {}",
        r.stdout
    );
    for needle in [
        "pkcs12",
        "matches",
        "RSA 2048 bits",
        "subject",
        "SAN",
        "days left",
        "sha256WithRSAEncryption",
        "serverAuth",
        &pki::sha256_hex(leaf.der()),
        "CHAIN   trusted",
        "No findings",
        "VERDICT  OK",
    ] {
        assert!(
            r.stdout.contains(needle),
            "table lacks {needle:?}:\n{}",
            r.stdout
        );
    }
    assert!(!r.stdout.contains('\x1b'), "no colour when asked for none");
    r.assert_never_shows(PASSWORD);

    // A failure, in colour.
    let no_key = fx.write(
        "no-key.pfx",
        &pfx_without_key(&leaf, PASSWORD).expect("pfx"),
    );
    let mut args = base.to_vec();
    args[1] = &no_key;
    let r = run_with_env(
        &[&args[..], &["--color", "always"]].concat(),
        &[(PASSWORD_VAR, PASSWORD)],
    );
    assert_eq!(r.code, 2);
    for needle in ["pfx_no_private_key", "remedy:", "missing", "VERDICT"] {
        assert!(
            r.stdout.contains(needle),
            "table lacks {needle:?}:\n{}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("\x1b[31m"), "failures in red");
}

#[test]
fn pfx_without_the_private_key_fails() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    let file = fx.write(
        "no-key.pfx",
        &pfx_without_key(&leaf, PASSWORD).expect("pfx -nokeys"),
    );
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["pfx_no_private_key"], "{}", r.stdout);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["verdict"], "fail");
    assert_eq!(r.json["private_key"]["present"], false);
    assert_eq!(r.json["private_key"]["matches"], Value::Null);
    let remedy = r.json["findings"][0]["remedy"].as_str().expect("remedy");
    assert!(remedy.contains("export the private key"), "{remedy}");
    r.assert_thumbprint_of(leaf.der());
}

#[test]
fn a_key_of_another_certificate_is_key_mismatch() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    let other = good_leaf(&fx.root);
    let file = fx.write(
        "wrong-key.pfx",
        &pfx_with_key(&leaf, &other.key_pem, PASSWORD).expect("p12-keystore writer"),
    );
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["key_mismatch"], "{}", r.stdout);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["private_key"]["present"], true);
    assert_eq!(r.json["private_key"]["matches"], false);
    // The leaf is still the certificate in the file, not the key's.
    r.assert_thumbprint_of(leaf.der());
    let msg = r.json["findings"][0]["message"].as_str().expect("message");
    assert!(msg.contains(&leaf.thumbprint()), "{msg}");

    // The same in PEM, with an EC key for an RSA certificate.
    let mut spec = LeafSpec::good(&[SMP, GW]);
    spec.key = KeyKind::EcdsaP256;
    let ec = fx.root.issue(&spec).expect("issue");
    let file = fx.write(
        "wrong-key.pem",
        format!("{}{}", leaf.chain_pem(), ec.key_pem).as_bytes(),
    );
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["key_mismatch", "not_pfx"], "{}", r.stdout);
    assert_eq!(r.json["private_key"]["algorithm"], "EC P-256");
    r.assert_thumbprint_of(leaf.der());
}

#[test]
fn wrong_or_missing_password_exits_3_and_never_echoes_it() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    for (name, encryption) in [
        ("modern.pfx", PfxEncryption::Modern),
        ("legacy.pfx", PfxEncryption::Legacy),
    ] {
        let file = fx.write(name, &pfx(&leaf, PASSWORD, encryption).expect("pfx"));
        let wrong = "Wrong-Battery-9";
        let r = run_with_env(
            &["inspect", &file, "--password-env", "PFX_PW"],
            &[("PFX_PW", wrong)],
        );
        assert_eq!(r.code, 3, "{name}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("the password does not open") && r.stderr.contains(name),
            "{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        r.assert_never_shows(wrong);
        r.assert_never_shows(PASSWORD);

        let r = run_with_env(&["inspect", &file], &[]);
        assert_eq!(r.code, 3, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains("protected by a password")
                && r.stderr.contains("--password-env")
                && r.stderr.contains("--password-file"),
            "{}",
            r.stderr
        );
    }
    let file = fx.write(
        "gateway.pfx",
        &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
    );
    let wrong_file = fx.write("wrong.txt", b"Wrong-Battery-9\n");
    let missing = fx.path("missing.txt").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--password-env", "CEMWATCH_TEST_UNSET_VARIABLE"],
            "CEMWATCH_TEST_UNSET_VARIABLE is not set",
        ),
        (
            vec!["--password-env", ""],
            "not an environment variable name",
        ),
        // The password typed where the variable's name goes is not echoed either.
        (
            vec!["--password-env", "Wrong-Battery-9"],
            "takes the NAME of a variable",
        ),
        (vec!["--password-file", &missing], "missing.txt"),
        (
            vec!["--password-file", &wrong_file],
            "the password does not open",
        ),
        (
            vec![
                "--password-env",
                PASSWORD_VAR,
                "--password-file",
                &wrong_file,
            ],
            "cannot be used with",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["inspect", file.as_str()];
        args.extend_from_slice(&extra);
        let r = run_with_env(&args, &[(PASSWORD_VAR, PASSWORD)]);
        assert_eq!(r.code, 3, "{extra:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(needle), "{extra:?}: {}", r.stderr);
        r.assert_never_shows(PASSWORD);
        r.assert_never_shows("Wrong-Battery-9");
    }
}

#[test]
fn pem_bundles_with_pkcs8_pkcs1_and_sec1_keys() {
    let fx = Fixture::new();
    let issuing = fx
        .root
        .intermediate("cemwatch Test Issuing CA")
        .expect("intermediate");
    let leaf = good_leaf(&issuing);

    // Certificate, chain and PKCS#8 key, as `openssl pkcs12 -nodes` or an ACME client writes.
    let file = fx.write(
        "bundle.pem",
        format!("{}{}", leaf.chain_pem(), leaf.key_pem).as_bytes(),
    );
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["not_pfx"], "{}", r.stdout);
    assert_eq!(r.code, 1);
    assert_eq!(r.json["verdict"], "warn");
    assert_eq!(r.json["format"], "pem");
    assert_eq!(r.json["private_key"]["matches"], true);
    assert_eq!(r.json["chain_trusted"], true);
    assert_eq!(r.json["chain"].as_array().map(Vec::len), Some(2));
    r.assert_thumbprint_of(leaf.der());

    // The key first and a PKCS#1 "RSA PRIVATE KEY", with Windows line endings.
    let pkcs1 = String::from_utf8(
        openssl(&["rsa", "-traditional"], Some(leaf.key_pem.as_bytes())).expect("openssl rsa"),
    )
    .expect("utf-8");
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");
    let crlf = format!("{pkcs1}{}", leaf.chain_pem()).replace('\n', "\r\n");
    let file = fx.write("pkcs1.pem", crlf.as_bytes());
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["not_pfx"], "{}", r.stdout);
    assert_eq!(r.json["private_key"]["matches"], true);
    r.assert_thumbprint_of(leaf.der());

    // An ECDSA certificate with its SEC1 "EC PRIVATE KEY".
    let mut spec = LeafSpec::good(&[SMP, GW]);
    spec.key = KeyKind::EcdsaP256;
    let ec = fx.root.issue(&spec).expect("issue");
    let sec1 =
        String::from_utf8(openssl(&["ec"], Some(ec.key_pem.as_bytes())).expect("openssl ec"))
            .expect("utf-8");
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"), "{sec1}");
    let file = fx.write("ec.pem", format!("{}{sec1}", ec.chain_pem()).as_bytes());
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["not_pfx", "key_not_rsa"], "{}", r.stdout);
    assert_eq!(
        r.json["private_key"],
        json!({"present": true, "matches": true, "algorithm": "EC P-256"})
    );
    r.assert_thumbprint_of(ec.der());
}

#[test]
fn the_leaf_is_found_wherever_it_is_in_the_file() {
    let fx = Fixture::new();
    let issuing = fx
        .root
        .intermediate("cemwatch Test Issuing CA")
        .expect("intermediate");
    let leaf = good_leaf(&issuing);
    // Root first, then the intermediate, then the leaf; no key to point at it.
    let pem = format!(
        "{}{}{}",
        fx.root.cert_pem,
        issuing.cert_pem,
        to_pem(leaf.der(), "CERTIFICATE")
    );
    let file = fx.write("reversed.pem", pem.as_bytes());
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["not_pfx"], "{}", r.stdout);
    assert_eq!(
        r.json["chain"],
        json!([format!("CN={SMP}"), subject(&issuing), subject(&fx.root)])
    );
    r.assert_thumbprint_of(leaf.der());
}

#[test]
fn der_certificate_is_not_pfx() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    // The extension says PEM; the content is DER.
    let file = fx.write("gateway.pem", leaf.der());
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["not_pfx"], "{}", r.stdout);
    assert_eq!(r.code, 1);
    assert_eq!(r.json["format"], "der");
    assert_eq!(
        r.json["private_key"],
        json!({"present": false, "matches": null})
    );
    let remedy = r.json["findings"][0]["remedy"].as_str().expect("remedy");
    assert!(remedy.contains(".pfx"), "{remedy}");
    r.assert_thumbprint_of(leaf.der());
}

#[test]
fn chain_incomplete_without_the_root_or_an_intermediate() {
    let fx = Fixture::new();
    // The test root is in no platform store: without --ca-file the chain reaches no root.
    let leaf = good_leaf(&fx.root);
    let file = fx.write(
        "gateway.pfx",
        &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
    );
    let r = inspect(
        &file,
        &[
            "--password-env",
            PASSWORD_VAR,
            "--gateway",
            GW,
            "--require-san",
            SMP,
        ],
    );
    assert_eq!(r.codes(), vec!["chain_incomplete"], "{}", r.stdout);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["chain_trusted"], false);
    r.assert_thumbprint_of(leaf.der());

    // Issued by an intermediate that the file does not hold.
    let issuing = fx
        .root
        .intermediate("cemwatch Test Issuing CA")
        .expect("intermediate");
    let mut spec = LeafSpec::good(&[SMP, GW]);
    spec.send_intermediates = false;
    let leaf = issuing.issue(&spec).expect("issue");
    let file = fx.write(
        "no-intermediate.pfx",
        &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
    );
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.codes(), vec!["chain_incomplete"], "{}", r.stdout);
    let why = r.json["chain_error"].as_str().expect("chain_error");
    assert!(
        why.contains("cemwatch Test Issuing CA") && why.contains("the file does not hold it"),
        "{why}"
    );
    let msg = r.json["findings"][0]["message"].as_str().expect("message");
    assert!(msg.contains("1 from --ca-file"), "{msg}");
    r.assert_thumbprint_of(leaf.der());
}

fn leaf_valid(ca: &Ca, from_days: i64, to_days: i64) -> Leaf {
    let now = OffsetDateTime::now_utc();
    let mut spec = LeafSpec::good(&[SMP, GW]);
    spec.not_before = now + Duration::days(from_days);
    spec.not_after = now + Duration::days(to_days);
    ca.issue(&spec).expect("issue")
}

/// Each certificate finding of the check engine, produced by inspect on a .pfx.
#[test]
fn each_certificate_defect_of_the_check_engine() {
    let fx = Fixture::new();
    let root = &fx.root;
    let with = |sans: &[&str], eku: Eku, key: KeyKind| {
        let mut spec = LeafSpec::good(sans);
        spec.eku = eku;
        spec.key = key;
        root.issue(&spec).expect("issue")
    };
    let other = good_leaf(root);
    let other_thumb = other.thumbprint();
    let cases: Vec<(&str, Leaf, Vec<&str>, &str, i32)> = vec![
        (
            "name-mismatch",
            with(
                &[SMP, "other.example.com"],
                Eku::ServerAuth,
                KeyKind::Rsa2048,
            ),
            vec![],
            "cert_name_mismatch",
            2,
        ),
        (
            "san-missing",
            with(&[GW], Eku::ServerAuth, KeyKind::Rsa2048),
            vec![],
            "cert_san_missing",
            2,
        ),
        (
            "thumbprint-mismatch",
            good_leaf(root),
            vec!["--expect-thumbprint", &other_thumb],
            "thumbprint_mismatch",
            2,
        ),
        (
            "expired",
            leaf_valid(root, -400, -10),
            vec![],
            "cert_expired",
            2,
        ),
        (
            "not-yet-valid",
            leaf_valid(root, 10, 400),
            vec![],
            "cert_not_yet_valid",
            2,
        ),
        (
            "expiring",
            leaf_valid(root, -300, 10),
            vec![],
            "cert_expiring",
            1,
        ),
        (
            "client-only-eku",
            with(&[SMP, GW], Eku::ClientOnly, KeyKind::Rsa2048),
            vec![],
            "eku_missing_server_auth",
            2,
        ),
        (
            "no-eku",
            with(&[SMP, GW], Eku::Absent, KeyKind::Rsa2048),
            vec![],
            "eku_missing_server_auth",
            2,
        ),
        (
            "sha1",
            root.issue_legacy(&[SMP, GW], "sha1", 2048)
                .expect("sha1 leaf"),
            vec![],
            "signature_sha1",
            1,
        ),
        (
            "md5",
            root.issue_legacy(&[SMP, GW], "md5", 2048)
                .expect("md5 leaf"),
            vec![],
            "signature_insecure",
            2,
        ),
        (
            "rsa-1024",
            root.issue_legacy(&[SMP, GW], "sha256", 1024)
                .expect("rsa-1024 leaf"),
            vec![],
            "key_too_small",
            2,
        ),
        (
            "ecdsa",
            with(&[SMP, GW], Eku::ServerAuth, KeyKind::EcdsaP256),
            vec![],
            "key_not_rsa",
            2,
        ),
    ];
    for (name, leaf, extra, code, exit) in cases {
        let file = fx.write(
            &format!("{name}.pfx"),
            &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
        );
        let r = inspect_trusted(&fx, &file, &extra);
        assert_eq!(r.codes(), vec![code], "{name}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(r.code, exit, "{name}");
        assert_eq!(r.json["private_key"]["matches"], true, "{name}");
        // An MD5 signature cannot be verified, so it is never trusted; signature_insecure
        // alone reports it.
        assert_eq!(
            r.json["chain_trusted"],
            name != "md5",
            "{name}: not a chain problem"
        );
        r.assert_thumbprint_of(leaf.der());
    }

    // The expiring certificate is fine with a lower threshold.
    let leaf = leaf_valid(root, -300, 10);
    let file = fx.write(
        "expiring-5.pfx",
        &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
    );
    let r = inspect_trusted(&fx, &file, &["--min-days-left", "5"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    r.assert_thumbprint_of(leaf.der());
}

#[test]
fn without_gateway_only_the_required_names_count() {
    let fx = Fixture::new();
    let leaf = fx
        .root
        .issue(&LeafSpec::good(&[SMP, "other.example.com"]))
        .expect("issue");
    let file = fx.write(
        "gateway.pfx",
        &pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
    );
    let base = ["--password-env", PASSWORD_VAR, "--ca-file", &fx.ca_file];
    let r = inspect(&file, &[&base[..], &["--require-san", SMP]].concat());
    assert_eq!(r.codes(), Vec::<String>::new(), "{}", r.stdout);
    assert_eq!(r.code, 0);
    r.assert_thumbprint_of(leaf.der());
    let r = inspect(&file, &[&base[..], &["--require-san", GW]].concat());
    assert_eq!(r.codes(), vec!["cert_san_missing"], "{}", r.stdout);
    let r = inspect(&file, &[&base[..], &["--gateway", GW]].concat());
    assert_eq!(r.codes(), vec!["cert_name_mismatch"], "{}", r.stdout);
    r.assert_thumbprint_of(leaf.der());
}

/// Bad files end with exit 3 and a message that names the file and says what to do.
#[test]
fn damaged_foreign_and_missing_files_exit_3_with_what_to_do() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    let pfx_bytes = pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx");
    let pem = format!("{}{}", leaf.chain_pem(), leaf.key_pem);
    // Pseudo-random bytes that start like nothing known.
    let mut state: u32 = 0x2545_F491;
    let random: Vec<u8> = std::iter::once(0x42)
        .chain((0..511).map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        }))
        .collect();
    let encrypted_key = openssl(
        &["pkcs8", "-topk8", "-passout", "pass:Key-Pass-1"],
        Some(leaf.key_pem.as_bytes()),
    )
    .expect("openssl pkcs8 -topk8");
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "truncated.pfx",
            pfx_bytes[..pfx_bytes.len() / 2].to_vec(),
            &["truncated", "export it again"],
        ),
        (
            "truncated.cer",
            leaf.der()[..leaf.der().len() - 40].to_vec(),
            &["truncated", "DER"],
        ),
        (
            "truncated.pem",
            pem.as_bytes()[..pem.len() / 3].to_vec(),
            &["PEM", "damaged"],
        ),
        (
            "key-only.pem",
            leaf.key_pem.as_bytes().to_vec(),
            &["holds no certificate", "only a private key", ".pfx"],
        ),
        (
            "random.pfx",
            random,
            &["not a certificate file", "PKCS#12", "PEM"],
        ),
        ("empty.pfx", Vec::new(), &["is empty", "export"]),
        (
            "encrypted-key.pem",
            [leaf.chain_pem().as_bytes(), &encrypted_key].concat(),
            &["encrypted private key", "openssl pkcs12 -export"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let file = fx.write(name, &bytes);
        let r = inspect(&file, &["--password-env", PASSWORD_VAR]);
        assert_eq!(r.code, 3, "{name}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.is_empty(), "{name}: {}", r.stdout);
        assert!(r.stderr.contains(name), "{name}: {}", r.stderr);
        for needle in needles {
            assert!(
                r.stderr.contains(needle),
                "{name}: lacks {needle:?}: {}",
                r.stderr
            );
        }
        assert!(!r.stderr.contains("panicked"), "{name}: {}", r.stderr);
        r.assert_never_shows(PASSWORD);
    }
    let missing = fx.path("missing.pfx").display().to_string();
    let dir = fx.dir.path().display().to_string();
    for (file, needle) in [
        (missing.as_str(), "cannot read"),
        (dir.as_str(), "directory"),
    ] {
        let r = inspect(file, &[]);
        assert_eq!(r.code, 3, "{file}: {}", r.stderr);
        assert!(
            r.stderr.contains(needle) && r.stderr.contains("give the path"),
            "{file}: {}",
            r.stderr
        );
    }
    let good = fx.write("good.pfx", &pfx_bytes);
    for (args, needle) in [
        (vec!["inspect"], "FILE"),
        (vec!["inspect", &good, "--expect-thumbprint", "12:34"], "40"),
        (
            vec![
                "inspect",
                &good,
                "--password-env",
                PASSWORD_VAR,
                "--ca-file",
                &missing,
            ],
            "missing.pfx",
        ),
        (vec!["inspect", &good, "--output", "xml"], "xml"),
    ] {
        let r = run_with_env(&args, &[(PASSWORD_VAR, PASSWORD)]);
        assert_eq!(r.code, 3, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    let help = run_with_env(&["inspect", "--help"], &[]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--password-env") && help.stdout.contains("--require-san"));
}

/// The extension never decides: a .pfx named .cer is still read as PKCS#12.
#[test]
fn the_extension_does_not_decide_the_format() {
    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    let file = fx.write(
        "gateway.cer",
        &pfx(&leaf, PASSWORD, PfxEncryption::Legacy).expect("pfx"),
    );
    let r = inspect_trusted(&fx, &file, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["format"], "pkcs12");
    r.assert_thumbprint_of(leaf.der());
}

/// Damaged files never panic: every truncation and many single-byte corruptions of a .pfx, a
/// PEM bundle and a DER certificate end in a result or an error, through the library.
#[test]
fn no_truncation_or_corruption_panics() {
    use cemwatch_probe::check::cert::TrustStore;
    use cemwatch_probe::inspect::{self, Password};
    use cemwatch_shared::Expectations;

    let fx = Fixture::new();
    let leaf = good_leaf(&fx.root);
    let files = [
        pfx(&leaf, PASSWORD, PfxEncryption::Modern).expect("pfx"),
        pfx(&leaf, PASSWORD, PfxEncryption::Legacy).expect("pfx"),
        format!("{}{}", leaf.chain_pem(), leaf.key_pem).into_bytes(),
        leaf.der().to_vec(),
    ];
    let password = Password::new(PASSWORD.to_string());
    let trust = TrustStore::empty();
    let now = OffsetDateTime::now_utc();
    let try_one = |bytes: &[u8]| {
        if let Ok(contents) = inspect::load("f", bytes, Some(&password)) {
            let _ = inspect::inspect(
                "f",
                &contents,
                &trust,
                Some(GW),
                &Expectations::default(),
                now,
            );
        }
    };
    for file in &files {
        let step = (file.len() / 400).max(1);
        for len in (0..file.len()).step_by(step) {
            try_one(&file[..len]);
        }
        for at in (0..file.len()).step_by(step) {
            let mut damaged = file.clone();
            damaged[at] ^= 0x5A;
            try_one(&damaged);
        }
    }
}
