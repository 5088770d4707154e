//! The certificate path as Windows' chain engine and webpki check it (issue 15, part 1),
//! against `openssl s_server` (a TLS server no cemwatch code wrote) serving what real gateways
//! serve with `-cert_chain`: an expired intermediate, chains out of order or led by a CA
//! certificate, a cross-signed path among extra certificates, a missing intermediate, a CA as
//! the served certificate, an SHA-1-signed intermediate; `inspect` refusing a .pfx with an
//! expired intermediate; a differential test against `openssl verify` on generated chains; the
//! AIA and revocation stages against python's http.server, `openssl ca` CRLs, an `openssl ocsp`
//! responder and `s_server -status_file` staples; and an internal CA behind a perimeter in a
//! network namespace (nftables).
//! All on loopback; the assertions read the JSON a script would read.

use std::path::{Path, PathBuf};
use std::process::Command;

use cemwatch_probe::check::cert::{ChainSource, TrustStore};
use cemwatch_probe::check::triage;
use cemwatch_tests::peers::OpensslPeer;
use cemwatch_tests::pki::{self, Leaf, PfxEncryption};
use cemwatch_tests::process::KillOnDrop;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

/// A differential case: its name, the leaf (DER), the intermediates served, and the code the
/// probe must give (`None`: trusted).
type Case<'a> = (&'a str, Vec<u8>, Vec<Vec<u8>>, Option<&'a str>);
use serde_json::Value;
use time::{Duration, OffsetDateTime};

const GW: &str = "gateway.example.com";
const SMP: &str = "smp.example.net";
const BIN: &str = env!("CARGO_BIN_EXE_cemwatch-probe");

/// A certificate made here, with its parameters and key (to sign with it).
struct Cert {
    params: CertificateParams,
    key: KeyPair,
    key_pem: String,
    der: Vec<u8>,
}

fn rsa() -> (KeyPair, String) {
    let pem = pki::rsa_key_pem(2048).expect("RSA key");
    (KeyPair::from_pem(&pem).expect("key"), pem)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "cemwatch chain tests");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3650);
    p
}

fn leaf_params() -> CertificateParams {
    let mut p = CertificateParams::new(vec![SMP.to_string(), GW.to_string()]).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, SMP);
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(365);
    p
}

fn root(name: &str) -> Cert {
    let params = ca_params(name);
    let (key, key_pem) = rsa();
    let der = params.self_signed(&key).expect("self-sign").der().to_vec();
    Cert {
        params,
        key,
        key_pem,
        der,
    }
}

/// A certificate with `params` signed by `by`.
fn issue(params: CertificateParams, by: &Cert) -> Cert {
    let (key, key_pem) = rsa();
    let der = params
        .signed_by(&key, &Issuer::from_params(&by.params, &by.key))
        .expect("sign")
        .der()
        .to_vec();
    Cert {
        params,
        key,
        key_pem,
        der,
    }
}

/// The same subject and key as `cert`, signed by `by` (a cross-signed copy).
fn cross_sign(cert: &Cert, by: &Cert) -> Vec<u8> {
    cert.params
        .signed_by(&cert.key, &Issuer::from_params(&by.params, &by.key))
        .expect("cross-sign")
        .der()
        .to_vec()
}

/// An intermediate CA signed by `by` with SHA-1, by the `openssl` command (rcgen refuses).
fn sha1_intermediate(name: &str, by: &Cert, dir: &Path) -> Cert {
    let (key, key_pem) = rsa();
    let w = |n: &str, c: &[u8]| {
        let p = dir.join(n);
        std::fs::write(&p, c).expect("write");
        p.display().to_string()
    };
    let ca_cert = w(
        "sha1-ca.pem",
        pki::to_pem(&by.der, "CERTIFICATE").as_bytes(),
    );
    let ca_key = w("sha1-ca.key", by.key_pem.as_bytes());
    let int_key = w("sha1-int.key", key_pem.as_bytes());
    let ext = w(
        "sha1-ext.cnf",
        b"basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    let csr = dir.join("sha1-int.csr").display().to_string();
    let out = dir.join("sha1-int.pem").display().to_string();
    let subj = format!("/CN={name}/O=cemwatch chain tests");
    pki::openssl(
        &[
            "req", "-new", "-key", &int_key, "-subj", &subj, "-out", &csr,
        ],
        None,
    )
    .expect("csr");
    pki::openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "77",
            "-sha1",
            "-days",
            "365",
            "-extfile",
            &ext,
            "-out",
            &out,
        ],
        None,
    )
    .expect("sign with SHA-1");
    let pem = std::fs::read_to_string(&out).expect("read");
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: CertificateDer<'static>| c.as_ref().to_vec())
        .expect("pem");
    // rcgen signs the leaf with this key under this certificate's name (the same name, in the
    // same order and string type as `-subj` writes it).
    let params = ca_params(name);
    Cert {
        params,
        key,
        key_pem,
        der,
    }
}

struct World {
    root: Cert,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = root("Chain Test Root CA");
    let ca_file = dir.path().join("root.pem");
    std::fs::write(&ca_file, pki::to_pem(&root.der, "CERTIFICATE")).expect("write root");
    World { root, ca_file, dir }
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

    fn message(&self, code: &str) -> String {
        self.finding(code)["message"]
            .as_str()
            .expect("message")
            .to_string()
    }
}

fn run(args: &[&str]) -> Run {
    judged(
        Command::new(BIN)
            .args(args)
            .output()
            .expect("run cemwatch-probe"),
    )
}

/// What a `cemwatch-probe` run printed, its JSON read.
fn judged(out: std::process::Output) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// `check` of the gateway at `port` on loopback as JSON, trusting the test root, with the
/// timeouts of these tests.
fn check_args(w: &World, port: u16) -> Vec<String> {
    [
        "check",
        &format!("{GW}:{port}"),
        "--resolve",
        &format!("{GW}:*:127.0.0.1"),
        "--ca-file",
        &w.ca_file.display().to_string(),
        "--require-san",
        SMP,
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

/// Serves `first` (with its key) and `chain` (`-cert_chain`, in this order) with `openssl
/// s_server`, and checks it as JSON, trusting the test root.
fn check_served(w: &World, first: &Cert, chain: &[&[u8]]) -> Run {
    check_served_with(w, first, chain, &[])
}

/// [`check_served`] with more arguments for `check`.
fn check_served_with(w: &World, first: &Cert, chain: &[&[u8]], extra: &[&str]) -> Run {
    check_served_by(w, first, chain, &[], extra)
}

/// [`check_served_with`] with more options for `s_server`.
fn check_served_by(
    w: &World,
    first: &Cert,
    chain: &[&[u8]],
    server: &[&str],
    extra: &[&str],
) -> Run {
    let chain_file = w
        .dir
        .path()
        .join(format!("chain-{}.pem", pki::sha1_hex(first.der.as_slice())));
    let pem: String = chain
        .iter()
        .map(|d| pki::to_pem(d, "CERTIFICATE"))
        .collect();
    std::fs::write(&chain_file, pem).expect("write chain");
    let served = Leaf {
        chain: vec![first.der.clone()],
        key_pem: first.key_pem.clone(),
    };
    let chain_arg = chain_file.display().to_string();
    // Security level 0: OpenSSL 3 refuses to load an SHA-1-signed CA at its default level, and
    // serving such chains (as old gateways do) is what these tests are about.
    let mut options = vec!["-cipher", "DEFAULT:@SECLEVEL=0"];
    if !chain.is_empty() {
        options.extend(["-cert_chain", chain_arg.as_str()]);
    }
    options.extend_from_slice(server);
    let peer = OpensslPeer::start(&served, &options).expect("s_server");
    let mut args = check_args(w, peer.port());
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&args);
    // The chain s_server sent is what the probe judged.
    assert_eq!(
        r.json["tls"]["chain"].as_array().map(Vec::len),
        Some(chain.len() + 1),
        "{}\n{}\n{}",
        r.stdout,
        r.stderr,
        peer.log()
    );
    r
}

fn expired(mut p: CertificateParams) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(400);
    p.not_after = now - Duration::days(5);
    p
}

#[test]
fn an_expired_intermediate_is_chain_invalid_never_chain_trusted() {
    let w = world();
    let int = issue(expired(ca_params("Expired Issuing CA")), &w.root);
    let leaf = issue(leaf_params(), &int);
    let r = check_served(&w, &leaf, &[&int.der]);
    assert_eq!(r.codes(), vec!["chain_invalid"], "{}", r.stdout);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["verdict"], "fail");
    assert_eq!(r.json["tls"]["trusted"], false);
    let msg = r.message("chain_invalid");
    assert!(
        msg.contains("Expired Issuing CA") && msg.contains("expired on"),
        "{msg}"
    );
}

#[test]
fn chains_out_of_order_with_extra_certificates_are_trusted() {
    let w = world();
    let policy = issue(ca_params("Policy CA"), &w.root);
    let issuing = issue(ca_params("Issuing CA"), &policy);
    let leaf = issue(leaf_params(), &issuing);
    let stranger = root("Unrelated CA");
    // Root first, then the policy CA, an unrelated certificate, the issuing CA last.
    let r = check_served(
        &w,
        &leaf,
        &[&w.root.der, &policy.der, &stranger.der, &issuing.der],
    );
    assert_eq!(r.codes(), Vec::<String>::new(), "{}", r.stdout);
    assert_eq!(r.code, 0);
    assert_eq!(r.json["tls"]["trusted"], true);
}

#[test]
fn a_reversed_chain_led_by_the_ca_certificate_is_chain_invalid_naming_it() {
    let w = world();
    let issuing = issue(ca_params("Issuing CA"), &w.root);
    let leaf = issue(leaf_params(), &issuing);
    // The gateway bound to its issuer's certificate: the CA first, the real leaf second.
    let r = check_served(&w, &issuing, &[&leaf.der]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["tls"]["trusted"], false);
    let codes = r.codes();
    assert_eq!(codes[0], "chain_invalid", "{codes:?}");
    let f = r.finding("chain_invalid");
    let msg = f["message"].as_str().expect("message");
    assert!(
        msg.contains("Issuing CA") && msg.contains("is a CA certificate"),
        "{msg}"
    );
    let remedy = f["remedy"].as_str().expect("remedy");
    assert!(
        remedy.contains("bound to its issuer's certificate") && remedy.contains("out of order"),
        "{remedy}"
    );
}

#[test]
fn a_served_leaf_that_is_a_ca_is_chain_invalid() {
    let w = world();
    let issuing = issue(ca_params("Issuing CA"), &w.root);
    let mut p = leaf_params();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_leaf = issue(p, &issuing);
    let r = check_served(&w, &ca_leaf, &[&issuing.der]);
    assert_eq!(r.codes(), vec!["chain_invalid"], "{}", r.stdout);
    let msg = r.message("chain_invalid");
    assert!(msg.contains(SMP) && msg.contains("CA:TRUE"), "{msg}");
}

#[test]
fn a_cross_signed_path_among_extra_certificates_is_found() {
    let w = world();
    // The trusted root cross-signs a new root that the probe does not trust.
    let new_root = root("New Root CA");
    let new_root_cross = cross_sign(&new_root, &w.root);
    let issuing = issue(ca_params("Issuing CA"), &new_root);
    let leaf = issue(leaf_params(), &issuing);
    let stranger = root("Unrelated CA");
    let r = check_served(
        &w,
        &leaf,
        &[&issuing.der, &new_root.der, &stranger.der, &new_root_cross],
    );
    assert_eq!(r.codes(), Vec::<String>::new(), "{}", r.stdout);
    assert_eq!(r.json["tls"]["trusted"], true);
    // Without the cross-signed copy, the path ends at a root nobody trusts.
    let r = check_served(&w, &leaf, &[&issuing.der, &new_root.der]);
    assert_eq!(r.codes(), vec!["cert_untrusted"], "{}", r.stdout);
    assert!(r.message("cert_untrusted").contains("New Root CA"));
}

#[test]
fn a_missing_intermediate_is_chain_incomplete_not_an_unknown_root() {
    let w = world();
    let issuing = issue(ca_params("Issuing CA"), &w.root);
    let leaf = issue(leaf_params(), &issuing);
    let r = check_served(&w, &leaf, &[]);
    assert_eq!(r.codes(), vec!["chain_incomplete"], "{}", r.stdout);
    assert_eq!(r.code, 2);
    let msg = r.message("chain_incomplete");
    assert!(
        msg.contains("Issuing CA") && msg.contains("did not send it"),
        "{msg}"
    );
}

#[test]
fn an_sha1_signed_intermediate_is_signature_sha1_naming_it() {
    let w = world();
    let int = sha1_intermediate("SHA-1 Issuing CA", &w.root, w.dir.path());
    let leaf = issue(leaf_params(), &int);
    let r = check_served(&w, &leaf, &[&int.der]);
    assert_eq!(r.codes(), vec!["signature_sha1"], "{}", r.stdout);
    assert_eq!(r.code, 1);
    assert_eq!(r.json["tls"]["trusted"], true);
    let msg = r.message("signature_sha1");
    assert!(
        msg.contains("SHA-1 Issuing CA") && msg.contains("sha1WithRSAEncryption"),
        "{msg}"
    );
}

#[test]
fn inspect_refuses_a_pfx_with_an_expired_intermediate() {
    let w = world();
    let int = issue(expired(ca_params("Expired Issuing CA")), &w.root);
    let leaf = issue(leaf_params(), &int);
    let pfx = pki::pfx(
        &Leaf {
            chain: vec![leaf.der.clone(), int.der.clone()],
            key_pem: leaf.key_pem.clone(),
        },
        "",
        PfxEncryption::Modern,
    )
    .expect("pfx");
    let file = w.dir.path().join("gateway.pfx");
    std::fs::write(&file, pfx).expect("write pfx");
    let r = run(&[
        "inspect",
        &file.display().to_string(),
        "--ca-file",
        &w.ca_file.display().to_string(),
        "--gateway",
        GW,
        "--require-san",
        SMP,
        "--output",
        "json",
    ]);
    assert_eq!(
        r.codes(),
        vec!["chain_invalid"],
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.code, 2);
    assert_eq!(r.json["chain_trusted"], false);
    assert!(r.message("chain_invalid").contains("Expired Issuing CA"));
}

/// `openssl verify` of `leaf` with `untrusted` intermediates against `root`: accepted or not.
fn openssl_verifies(dir: &Path, root: &[u8], untrusted: &[&[u8]], leaf: &[u8]) -> (bool, String) {
    let w = |n: &str, ders: &[&[u8]]| {
        let p = dir.join(n);
        let pem: String = ders.iter().map(|d| pki::to_pem(d, "CERTIFICATE")).collect();
        std::fs::write(&p, pem).expect("write");
        p.display().to_string()
    };
    let root = w("v-root.pem", &[root]);
    let leaf = w("v-leaf.pem", &[leaf]);
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-CAfile", &root]);
    if !untrusted.is_empty() {
        cmd.args(["-untrusted", &w("v-untrusted.pem", untrusted)]);
    }
    let out = cmd.arg(&leaf).output().expect("openssl verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn whatever_openssl_verify_rejects_the_probe_rejects_with_the_right_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root_ca = root("Differential Root CA");
    let mut store = TrustStore::empty();
    store.add_der(root_ca.der.clone());
    let stranger = root("Differential Stranger CA");
    let mut not_ca = ca_params("Not A CA");
    not_ca.is_ca = IsCa::ExplicitNoCa;
    let mut no_cert_sign = ca_params("No keyCertSign CA");
    no_cert_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut not_yet = ca_params("Future CA");
    not_yet.not_before = OffsetDateTime::now_utc() + Duration::days(10);
    let mut zero = ca_params("PathLen Zero CA");
    zero.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));

    // (name, leaf, intermediates served, the probe's expected code; None = trusted)
    let mut cases: Vec<Case<'_>> = Vec::new();
    let good = issue(ca_params("Good CA"), &root_ca);
    cases.push((
        "good",
        issue(leaf_params(), &good).der,
        vec![good.der.clone()],
        None,
    ));
    let reversed_leaf = issue(leaf_params(), &good).der;
    cases.push((
        "unordered with a stranger",
        reversed_leaf,
        vec![stranger.der.clone(), root_ca.der.clone(), good.der.clone()],
        None,
    ));
    let exp = issue(expired(ca_params("Expired CA")), &root_ca);
    cases.push((
        "expired intermediate",
        issue(leaf_params(), &exp).der,
        vec![exp.der.clone()],
        Some("chain_invalid"),
    ));
    for (name, params) in [
        ("not a CA", not_ca),
        ("no keyCertSign", no_cert_sign),
        ("not yet valid", not_yet),
    ] {
        let int = issue(params, &root_ca);
        cases.push((
            name,
            issue(leaf_params(), &int).der,
            vec![int.der.clone()],
            Some("chain_invalid"),
        ));
    }
    let z = issue(zero, &root_ca);
    let below = issue(ca_params("Below PathLen Zero CA"), &z);
    cases.push((
        "pathLen exceeded",
        issue(leaf_params(), &below).der,
        vec![below.der.clone(), z.der.clone()],
        Some("chain_invalid"),
    ));
    cases.push((
        "missing intermediate",
        issue(leaf_params(), &good).der,
        vec![],
        Some("chain_incomplete"),
    ));
    cases.push((
        "foreign root served",
        issue(leaf_params(), &stranger).der,
        vec![stranger.der.clone()],
        Some("cert_untrusted"),
    ));

    let now = OffsetDateTime::now_utc();
    for (name, leaf, served, expected) in &cases {
        let refs: Vec<&[u8]> = served.iter().map(Vec::as_slice).collect();
        let (accepted, why) = openssl_verifies(dir.path(), &root_ca.der, &refs, leaf);
        let outcome = store.evaluate_from(leaf, served, ChainSource::Server, now);
        let codes: Vec<&str> = triage::chain_findings(&outcome, ChainSource::Server)
            .iter()
            .map(|f| f.code.as_str())
            .collect();
        assert_eq!(
            outcome.trusted, accepted,
            "{name}: openssl verify says {why}; the probe: {outcome:?}"
        );
        match expected {
            None => assert!(codes.is_empty(), "{name}: {codes:?}"),
            Some(code) => assert_eq!(codes, vec![*code], "{name}: {outcome:?}"),
        }
    }
}

/// The DER length octets of `n`.
fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// An Authority Information Access extension with one caIssuers URL.
fn aia_ca_issuers(url: &str) -> rcgen::CustomExtension {
    aia(&[(2, url)])
}

/// An Authority Information Access extension: (method, URL) pairs, the method the last arc of
/// id-ad (1: OCSP, 2: caIssuers).
fn aia(entries: &[(u8, &str)]) -> rcgen::CustomExtension {
    let mut all = Vec::new();
    for (method, url) in entries {
        let mut uri = vec![0x86];
        uri.extend(der_len(url.len()));
        uri.extend(url.as_bytes());
        let mut desc = vec![
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, *method,
        ];
        desc.extend(uri);
        all.push(0x30);
        all.extend(der_len(desc.len()));
        all.extend(desc);
    }
    let mut seq = vec![0x30];
    seq.extend(der_len(all.len()));
    seq.extend(all);
    rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], seq)
}

#[test]
fn a_missing_intermediate_fetched_from_its_aia_url_is_a_warning_naming_it() {
    let w = world();
    let site = w.dir.path().join("pki");
    std::fs::create_dir_all(&site).expect("mkdir");
    let http = cemwatch_tests::peers::HttpFiles::start(&site).expect("http.server");
    let issuing = issue(ca_params("AIA Issuing CA"), &w.root);
    std::fs::write(site.join("issuing.crt"), &issuing.der).expect("publish");
    let mut p = leaf_params();
    p.custom_extensions = vec![aia_ca_issuers(&http.url("issuing.crt"))];
    let leaf = issue(p, &issuing);
    let r = check_served(&w, &leaf, &[]);
    assert_eq!(r.codes(), vec!["chain_incomplete"], "{}", r.stdout);
    assert_eq!(r.finding("chain_incomplete")["severity"], "warn");
    assert_eq!(r.json["verdict"], "warn");
    assert_eq!(
        r.code, 1,
        "a warning, not a failure: Windows agents fetch it too"
    );
    let msg = r.message("chain_incomplete");
    assert!(
        msg.contains("AIA Issuing CA") && msg.contains(&http.url("issuing.crt")),
        "{msg}"
    );

    // The URL dead (404): the chain stays incomplete, a failure, naming what the URL gave.
    let mut p = leaf_params();
    p.custom_extensions = vec![aia_ca_issuers(&http.url("gone.crt"))];
    let leaf = issue(p, &issuing);
    let r = check_served(&w, &leaf, &[]);
    assert_eq!(r.codes(), vec!["chain_incomplete"], "{}", r.stdout);
    assert_eq!(r.code, 2);
    let msg = r.message("chain_incomplete");
    assert!(msg.contains("gone.crt") && msg.contains("404"), "{msg}");
}

/// A CA run by `openssl ca` (index, CRL numbers), publishing its CRL where `http` serves.
struct OpensslCa {
    config: PathBuf,
    dir: PathBuf,
}

impl OpensslCa {
    fn new(dir: &Path, ca: &Cert) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("ca.pem"), pki::to_pem(&ca.der, "CERTIFICATE")).expect("ca");
        std::fs::write(dir.join("ca.key"), &ca.key_pem).expect("key");
        std::fs::write(dir.join("index.txt"), "").expect("index");
        std::fs::write(dir.join("crlnumber"), "1000\n").expect("crlnumber");
        let config = dir.join("openssl.cnf");
        std::fs::write(
            &config,
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndir = {}\ndatabase = $dir/index.txt\ncrlnumber = $dir/crlnumber\ncertificate = $dir/ca.pem\nprivate_key = $dir/ca.key\ndefault_md = sha256\ndefault_crl_days = 7\n",
                dir.display()
            ),
        )
        .expect("config");
        Self {
            config,
            dir: dir.to_path_buf(),
        }
    }

    fn ca(&self, args: &[&str]) {
        let config = self.config.display().to_string();
        let mut all = vec!["ca", "-config", config.as_str(), "-batch"];
        all.extend_from_slice(args);
        pki::openssl(&all, None).unwrap_or_else(|e| panic!("openssl {all:?}: {e}"));
    }

    fn revoke(&self, cert: &Cert, reason: &str) {
        let path = self
            .dir
            .join(format!("revoke-{}.pem", pki::sha1_hex(&cert.der)));
        std::fs::write(&path, pki::to_pem(&cert.der, "CERTIFICATE")).expect("write");
        self.ca(&[
            "-revoke",
            &path.display().to_string(),
            "-crl_reason",
            reason,
        ]);
    }

    /// Writes the CRL, DER, to `out`, due again in `seconds` (or the default 7 days).
    fn publish(&self, out: &Path, seconds: Option<u32>) {
        let pem = self.dir.join("crl.pem").display().to_string();
        let secs = seconds.map(|s| s.to_string());
        let mut args = vec!["-gencrl", "-out", pem.as_str()];
        if let Some(s) = &secs {
            args.extend(["-crlsec", s.as_str()]);
        }
        self.ca(&args);
        let out = out.display().to_string();
        pki::openssl(&["crl", "-in", &pem, "-outform", "DER", "-out", &out], None)
            .expect("crl to DER");
    }
}

/// A leaf of `by` whose CRL distribution point is `url`.
fn leaf_with_crl(by: &Cert, url: &str) -> Cert {
    let mut p = leaf_params();
    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec![url.to_string()],
    }];
    issue(p, by)
}

#[test]
fn revocation_as_agents_on_the_internet_meet_it() {
    let w = world();
    let site = w.dir.path().join("pki");
    std::fs::create_dir_all(&site).expect("mkdir");
    let http = cemwatch_tests::peers::HttpFiles::start(&site).expect("http.server");
    let ca = OpensslCa::new(&w.dir.path().join("ca"), &w.root);
    let crl = http.url("root.crl");
    let revoked = leaf_with_crl(&w.root, &crl);
    let good = leaf_with_crl(&w.root, &crl);
    ca.revoke(&revoked, "keyCompromise");
    ca.publish(&site.join("root.crl"), None);

    let r = check_served(&w, &revoked, &[]);
    assert_eq!(r.codes(), vec!["cert_revoked"], "{}", r.stdout);
    assert_eq!(r.code, 2);
    let msg = r.message("cert_revoked");
    assert!(
        msg.contains("Key Compromise")
            || msg.contains("keyCompromise")
            || msg.contains("KeyCompromise"),
        "{msg}"
    );
    assert!(msg.contains(&crl), "{msg}");

    let r = check_served(&w, &good, &[]);
    assert!(
        r.codes().is_empty(),
        "a current CRL without it: {}",
        r.stdout
    );
    assert_eq!(r.code, 0);

    let r = check_served_with(&w, &revoked, &[], &["--no-revocation"]);
    assert!(r.codes().is_empty(), "--no-revocation: {}", r.stdout);

    // `inspect --revocation` refuses the revoked certificate's .pfx before it is imported.
    let pfx = pki::pfx(
        &Leaf {
            chain: vec![revoked.der.clone()],
            key_pem: revoked.key_pem.clone(),
        },
        "",
        PfxEncryption::Modern,
    )
    .expect("pfx");
    let file = w.dir.path().join("revoked.pfx");
    std::fs::write(&file, pfx).expect("write pfx");
    let inspect = |extra: &[&str]| {
        let path = file.display().to_string();
        let ca = w.ca_file.display().to_string();
        let mut args = vec![
            "inspect",
            &path,
            "--ca-file",
            &ca,
            "--gateway",
            GW,
            "--require-san",
            SMP,
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let r = inspect(&["--revocation"]);
    assert_eq!(
        r.codes(),
        vec!["cert_revoked"],
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.code, 2);
    let r = inspect(&[]);
    assert!(r.codes().is_empty(), "without --revocation: {}", r.stdout);

    // Published on LDAP only (as internal CAs do), or at a dead URL: unreachable, a warning.
    let ldap = leaf_with_crl(
        &w.root,
        "ldap:///CN=Root,CN=CDP,CN=Public Key Services?certificateRevocationList",
    );
    let r = check_served(&w, &ldap, &[]);
    assert_eq!(r.codes(), vec!["revocation_unreachable"], "{}", r.stdout);
    assert_eq!(r.code, 1);
    assert!(
        r.message("revocation_unreachable").contains("LDAP"),
        "{}",
        r.stdout
    );
    let dead_port = cemwatch_tests::server::free_port().expect("port");
    let dead_url = format!("http://127.0.0.1:{dead_port}/root.crl");
    let dead = leaf_with_crl(&w.root, &dead_url);
    let r = check_served(&w, &dead, &[]);
    assert_eq!(r.codes(), vec!["revocation_unreachable"], "{}", r.stdout);
    assert!(
        r.message("revocation_unreachable").contains(&dead_url),
        "{}",
        r.stdout
    );

    // A CRL past its next update.
    let stale_url = http.url("stale.crl");
    let stale_leaf = leaf_with_crl(&w.root, &stale_url);
    ca.publish(&site.join("stale.crl"), Some(1));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let r = check_served(&w, &stale_leaf, &[]);
    assert_eq!(r.codes(), vec!["revocation_stale"], "{}", r.stdout);
    assert_eq!(r.code, 1);

    // A CRL signed by another key (a forged one) does not count.
    let other = root("Chain Test Root CA");
    let forged_ca = OpensslCa::new(&w.dir.path().join("forged"), &other);
    forged_ca.publish(&site.join("root.crl"), None);
    let r = check_served(&w, &revoked, &[]);
    assert_eq!(r.codes(), vec!["revocation_unreachable"], "{}", r.stdout);
    assert!(
        r.message("revocation_unreachable")
            .contains("does not verify"),
        "{}",
        r.stdout
    );
}

/// `openssl ocsp` answering for the CA in `ca` on a free loopback port; killed on drop.
struct OcspResponder {
    child: std::process::Child,
    port: u16,
}

impl OcspResponder {
    fn start(ca: &OpensslCa, port: u16) -> Self {
        let d = |n: &str| ca.dir.join(n).display().to_string();
        let log = ca.dir.join("ocsp.log");
        let child = Command::new("openssl")
            .args([
                "ocsp",
                "-index",
                &d("index.txt"),
                "-port",
                &port.to_string(),
                "-rsigner",
                &d("ca.pem"),
                "-rkey",
                &d("ca.key"),
                "-CA",
                &d("ca.pem"),
                "-ignore_err",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("openssl ocsp");
        // Not by connecting: openssl ocsp serves one connection at a time and waits on one
        // that sends nothing. Its log says when it listens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("waiting for OCSP client connections")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "openssl ocsp did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for OcspResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ocsp_is_asked_as_windows_asks_it_against_an_openssl_responder() {
    let w = world();
    let ca = OpensslCa::new(&w.dir.path().join("ca"), &w.root);
    let port = cemwatch_tests::server::free_port().expect("port");
    let url = format!("http://127.0.0.1:{port}/");
    let with_ocsp = || {
        let mut p = leaf_params();
        p.custom_extensions = vec![aia(&[(1, &url)])];
        issue(p, &w.root)
    };
    let revoked = with_ocsp();
    let good = with_ocsp();
    let stranger = with_ocsp();
    ca.revoke(&revoked, "superseded");
    let good_pem = ca.dir.join("good.pem");
    std::fs::write(&good_pem, pki::to_pem(&good.der, "CERTIFICATE")).expect("write");
    ca.ca(&["-valid", &good_pem.display().to_string()]);
    // The responder reads the CA's index when it starts.
    let responder = OcspResponder::start(&ca, port);
    assert_eq!(responder.url(), url);
    let r = check_served(&w, &revoked, &[]);
    assert_eq!(r.codes(), vec!["cert_revoked"], "{}", r.stdout);
    let msg = r.message("cert_revoked");
    assert!(
        msg.contains("OCSP responder") && msg.contains("superseded"),
        "{msg}"
    );
    let r = check_served(&w, &good, &[]);
    assert!(r.codes().is_empty(), "good by OCSP: {}", r.stdout);
    let r = check_served(&w, &stranger, &[]);
    assert_eq!(r.codes(), vec!["revocation_unreachable"], "{}", r.stdout);
    assert!(
        r.message("revocation_unreachable")
            .contains("does not know"),
        "{}",
        r.stdout
    );
}

#[test]
fn an_ocsp_response_stapled_by_the_gateway_is_judged_and_reported() {
    let w = world();
    let ca = OpensslCa::new(&w.dir.path().join("ca"), &w.root);
    let revoked = issue(leaf_params(), &w.root);
    let good = issue(leaf_params(), &w.root);
    ca.revoke(&revoked, "keyCompromise");
    let good_pem = ca.dir.join("good.pem");
    std::fs::write(&good_pem, pki::to_pem(&good.der, "CERTIFICATE")).expect("write");
    ca.ca(&["-valid", &good_pem.display().to_string()]);
    let d = |n: &str| ca.dir.join(n).display().to_string();
    // The response s_server staples: made by `openssl ocsp` from a request for the leaf.
    let staple = |leaf: &Cert, name: &str| {
        let pem = d(&format!("{name}.pem"));
        std::fs::write(&pem, pki::to_pem(&leaf.der, "CERTIFICATE")).expect("write");
        let req = d(&format!("{name}.req"));
        let resp = d(&format!("{name}.resp"));
        pki::openssl(
            &[
                "ocsp",
                "-issuer",
                &d("ca.pem"),
                "-cert",
                &pem,
                "-reqout",
                &req,
                "-no_nonce",
            ],
            None,
        )
        .expect("ocsp request");
        pki::openssl(
            &[
                "ocsp",
                "-index",
                &d("index.txt"),
                "-rsigner",
                &d("ca.pem"),
                "-rkey",
                &d("ca.key"),
                "-CA",
                &d("ca.pem"),
                "-reqin",
                &req,
                "-respout",
                &resp,
            ],
            None,
        )
        .expect("ocsp response");
        resp
    };
    let resp = staple(&revoked, "revoked");
    let r = check_served_by(&w, &revoked, &[], &["-status_file", &resp], &[]);
    assert_eq!(r.json["tls"]["ocsp_stapled"], "revoked", "{}", r.stdout);
    assert_eq!(r.codes(), vec!["cert_revoked"], "{}", r.stdout);
    assert!(
        r.message("cert_revoked").contains("staples"),
        "{}",
        r.stdout
    );
    let resp = staple(&good, "good");
    let r = check_served_by(&w, &good, &[], &["-status_file", &resp], &[]);
    assert_eq!(r.json["tls"]["ocsp_stapled"], "good", "{}", r.stdout);
    assert!(r.codes().is_empty(), "{}", r.stdout);
    // A staple for another certificate is not taken.
    let r = check_served_by(&w, &revoked, &[], &["-status_file", &resp], &[]);
    assert!(
        r.json["tls"]["ocsp_stapled"]
            .as_str()
            .is_some_and(|s| s.starts_with("invalid")),
        "{}",
        r.stdout
    );
    // Without a staple the field is absent.
    let r = check_served(&w, &good, &[]);
    assert!(r.json["tls"]["ocsp_stapled"].is_null(), "{}", r.stdout);
}

/// In a network namespace, as an internal CA is seen from the internet: the gateway
/// (`openssl s_server`) is reachable, the CA's web server publishes its certificate and CRL on
/// port 80, which the perimeter (nftables) drops, and a copy on port 8080 that it lets through.
/// A leaf whose CRL is only behind the perimeter is `revocation_unreachable`, naming the URL and
/// the timeout; a missing intermediate whose caIssuers URL is behind it stays
/// `chain_incomplete`, a failure; the same published on 8080 completes and checks.
#[test]
fn an_internal_ca_behind_the_perimeter_in_a_namespace() {
    let test = "an_internal_ca_behind_the_perimeter_in_a_namespace";
    if cemwatch_tests::netns::skip_unless_available(test) {
        return;
    }
    let w = world();
    let ns = cemwatch_tests::netns::Netns::create("pki").expect("netns");
    ns.nft(
        "table inet perimeter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 80 drop\n  }\n}\n",
    )
    .expect("nft");
    let site = w.dir.path().join("pki");
    std::fs::create_dir_all(&site).expect("mkdir");
    let site_arg = site.display().to_string();
    let mut servers = Vec::new();
    for port in ["80", "8080"] {
        servers.push(KillOnDrop(
            ns.command(&[
                "python3",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                &site_arg,
                port,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("http.server in the namespace"),
        ));
    }
    let ca = OpensslCa::new(&w.dir.path().join("ca"), &w.root);
    ca.publish(&site.join("root.crl"), None);
    let issuing = issue(ca_params("Internal Issuing CA"), &w.root);
    std::fs::write(site.join("issuing.crt"), &issuing.der).expect("publish");
    let behind = leaf_with_crl(&w.root, "http://127.0.0.1:80/root.crl");
    let open = leaf_with_crl(&w.root, "http://127.0.0.1:8080/root.crl");
    let aia_leaf = |port: u16| {
        let mut p = leaf_params();
        p.custom_extensions = vec![aia_ca_issuers(&format!(
            "http://127.0.0.1:{port}/issuing.crt"
        ))];
        issue(p, &issuing)
    };
    let (aia_behind, aia_open) = (aia_leaf(80), aia_leaf(8080));
    // The open web server answers before the checks start.
    let fetched = (0..100).any(|_| {
        let ok = ns
            .command(&[
                "python3",
                "-c",
                "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/root.crl', timeout=1)",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ok
    });
    assert!(
        fetched,
        "http.server on 8080 in the namespace did not answer"
    );

    let check_in_ns = |leaf: &Cert, port: &str| -> Run {
        let chain = w.dir.path().join(format!("ns-{port}.pem"));
        let key = w.dir.path().join(format!("ns-{port}.key"));
        std::fs::write(&chain, pki::to_pem(&leaf.der, "CERTIFICATE")).expect("write");
        std::fs::write(&key, &leaf.key_pem).expect("write");
        let accept = format!("127.0.0.1:{port}");
        let (c, k) = (chain.display().to_string(), key.display().to_string());
        let _server = KillOnDrop(
            ns.command(&[
                "openssl", "s_server", "-accept", &accept, "-cert", &c, "-key", &k, "-www",
                "-quiet",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s_server in the namespace"),
        );
        let args = check_args(&w, port.parse().expect("port"));
        let mut last = None;
        // s_server and http.server need a moment to listen.
        for _ in 0..50 {
            let run = judged(
                ns.command(&[BIN])
                    .args(&args)
                    .output()
                    .expect("cemwatch-probe in the namespace"),
            );
            let up = run.json["tls"]["chain"]
                .as_array()
                .is_some_and(|c| !c.is_empty());
            last = Some(run);
            if up {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        last.expect("ran")
    };

    let r = check_in_ns(&open, "9443");
    assert!(r.codes().is_empty(), "the open CRL: {}", r.stdout);
    let r = check_in_ns(&behind, "9444");
    assert_eq!(r.codes(), vec!["revocation_unreachable"], "{}", r.stdout);
    let msg = r.message("revocation_unreachable");
    assert!(
        msg.contains("http://127.0.0.1:80/root.crl") && msg.contains("within 3000 ms"),
        "{msg}"
    );
    assert_eq!(r.code, 1);
    let r = check_in_ns(&aia_open, "9445");
    assert_eq!(r.codes(), vec!["chain_incomplete"], "{}", r.stdout);
    assert_eq!(r.code, 1, "fetched from 8080: a warning");
    let r = check_in_ns(&aia_behind, "9446");
    assert_eq!(r.codes(), vec!["chain_incomplete"], "{}", r.stdout);
    assert_eq!(r.code, 2, "behind the perimeter: a failure");
    assert!(
        r.message("chain_incomplete").contains("issuing.crt"),
        "{}",
        r.stdout
    );
    drop(servers);
}
