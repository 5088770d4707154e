//! The HTTP surface of a real `cemwatch serve`, attacked from outside: silent and slowloris
//! connections closed by the header-read timeout, the connection cap, HTTPS with users spoken
//! to by `cemwatch status`/`verify` and by `openssl s_client` (a client no project code wrote),
//! and mTLS with a client CA.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cemwatch_tests::pki::{Ca, Eku, LeafSpec};

use crate::support::fixtures::server_toml;
use crate::support::http::metric;
use crate::support::paths::COORDINATOR;
use crate::support::processes::start_coordinator;
use crate::support::tools::tool;

const CHECK: &str = "[[check]]\nname = \"gateway\"\nhost = \"gw.example.com\"\nport = 8443\n";

fn config(dir: &Path, http: &str) -> std::path::PathBuf {
    let path = dir.join("cemwatch.toml");
    std::fs::write(&path, format!("{}{http}\n{CHECK}", server_toml(0, ""))).expect("config");
    path
}

/// Whether the server closes `stream` within `within` while we do `between` each tick.
fn closed_within(
    stream: &mut TcpStream,
    within: Duration,
    mut between: impl FnMut(&mut TcpStream) -> bool,
) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // a 408 or similar before the close is fine
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true, // reset
        }
        if !between(stream) {
            return true; // the write failed: the server is gone
        }
    }
    false
}

#[test]
fn silent_and_slowloris_connections_are_closed_by_the_header_read_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config(dir.path(), "[http]\nheader_read_timeout = \"1s\"\n");
    let coord = start_coordinator("http-slowloris", &path);
    // Without a header-read timeout both would stay open for as long as the client likes:
    // 20 s is twenty times the timeout.
    let mut silent = TcpStream::connect(coord.http).expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(20), |_| true),
        "a connection that sends nothing is closed"
    );
    let mut slow = TcpStream::connect(coord.http).expect("connect");
    slow.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut sent = 0usize;
    assert!(
        closed_within(&mut slow, Duration::from_secs(20), |s| {
            sent += 1;
            // One header byte per tick, never the blank line that ends the header.
            s.write_all(if sent % 2 == 0 { b"a" } else { b"b" }).is_ok()
        }),
        "a connection that dribbles its header is closed"
    );
    // A prompt client is served on the same listener.
    let (status, _) = cemwatch_tests::process::http_get(coord.http, "/live").expect("live");
    assert_eq!(status, 200);
}

#[test]
fn connections_beyond_the_cap_are_closed_at_accept_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let path = config(
        dir.path(),
        "[http]\nmax_connections = 4\nheader_read_timeout = \"60s\"\n",
    );
    let coord = start_coordinator("http-cap", &path);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(coord.http).expect("connect"))
        .collect();
    // Give the accept loop the four before the fifth.
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = TcpStream::connect(coord.http).expect("the kernel accepts");
    assert!(
        closed_within(&mut fifth, Duration::from_secs(20), |_| true),
        "the fifth connection is closed although the header-read timeout is 60 s"
    );
    drop(held);
    // The slots are free again once the server sees the four close.
    let start = Instant::now();
    let served = loop {
        if let Ok((200, _)) = cemwatch_tests::process::http_get(coord.http, "/live") {
            break true;
        }
        if start.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(served, "served again after the held connections closed");
    assert!(
        metric(
            coord.http,
            "cemwatch_http_refused_total{reason=\"connections\"}"
        ) >= 1.0,
        "counted"
    );
}

/// The server's PKI: a CA, the listener's certificate for 127.0.0.1, and a client CA with one
/// client certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    client_ca: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::root("cemwatch-http-test-ca").expect("ca");
    let leaf = ca
        .issue(&LeafSpec::good(&["127.0.0.1", "localhost"]))
        .expect("leaf");
    std::fs::write(dir.path().join("http.crt"), leaf.chain_pem()).expect("crt");
    std::fs::write(dir.path().join("http.key"), &leaf.key_pem).expect("key");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).expect("ca");
    let operators = Ca::root("operators-ca").expect("client ca");
    let client_ca = dir.path().join("operators-ca.pem");
    std::fs::write(&client_ca, &operators.cert_pem).expect("client ca");
    let mut spec = LeafSpec::good(&["ops.example.com"]);
    spec.eku = Eku::ClientOnly;
    let client = operators.issue(&spec).expect("client");
    let client_cert = dir.path().join("client.crt");
    let client_key = dir.path().join("client.key");
    std::fs::write(&client_cert, client.chain_pem()).expect("client crt");
    std::fs::write(&client_key, &client.key_pem).expect("client key");
    Pki {
        dir,
        ca: ca_path,
        client_ca,
        client_cert,
        client_key,
    }
}

/// One HTTP/1.1 request over `openssl s_client`; the whole answer.
fn s_client(openssl: &Path, at: SocketAddr, ca: &Path, extra: &[&str], request: &str) -> String {
    let mut child = Command::new(openssl)
        .args(["s_client", "-quiet", "-ign_eof", "-connect"])
        .arg(at.to_string())
        .arg("-CAfile")
        .arg(ca)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("request");
    let out = child.wait_with_output().expect("s_client");
    format!(
        "{}\n--stderr--\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn post_round(authorization: &str) -> String {
    let body = r#"{"check":"gateway"}"#;
    format!(
        "POST /api/v1/rounds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn cemwatch(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(COORDINATOR);
    cmd.args(args)
        .env_remove("CEMWATCH_API_TOKEN")
        .env_remove("CEMWATCH_API_USER")
        .env_remove("CEMWATCH_API_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cemwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn https_with_users_for_the_cli_and_for_openssl() {
    let Some(openssl) = tool(
        "openssl",
        "http_surface::https_with_users_for_the_cli_and_for_openssl",
        &[],
        "apt-get install openssl",
    ) else {
        return;
    };
    let pki = pki();
    let reader_hash = bcrypt::hash("reader-pass", 4).expect("hash");
    let ops_token = "0f".repeat(32);
    let ops_digest = cemwatch_coordinator::http::auth::token_digest(&ops_token);
    let path = config(
        pki.dir.path(),
        &format!(
            "[http]\nloopback_role = \"none\"\ntls_cert = \"http.crt\"\ntls_key = \"http.key\"\n\n[[http.user]]\nname = \"reader\"\nrole = \"read\"\npassword_bcrypt = \"{reader_hash}\"\n\n[[http.user]]\nname = \"ops\"\nrole = \"operate\"\ntoken_sha256 = \"{}\"\n\n[rounds]\nmin_interval = \"0s\"\n",
            hex::encode(ops_digest)
        ),
    );
    let mut coord_proc = {
        let mut cmd = Command::new(COORDINATOR);
        cmd.args(["serve", "--config"])
            .arg(&path)
            .env("CEMWATCH_LOG", "info");
        cemwatch_tests::process::Proc::spawn("http-https", cmd).expect("spawn")
    };
    let https = coord_proc.listening("https").expect("https address");
    let api = format!("https://{https}");
    let ca = pki.ca.to_str().expect("utf-8");
    let creds = pki.dir.path().join("reader.cred");
    std::fs::write(&creds, "reader:reader-pass\n").expect("creds");
    let creds = creds.to_str().expect("utf-8");

    // The CLI over HTTPS with the reader's password from a file.
    let (code, out, err) = cemwatch(
        &[
            "status",
            "--api",
            &api,
            "--ca-file",
            ca,
            "--credentials-file",
            creds,
            "--output",
            "json",
        ],
        &[],
    );
    assert!(code != 3 && code != -1, "status: {code}: {err}");
    assert!(out.contains("\"checks\""), "{out}{err}");
    // Without credentials: a message that says how to give them.
    let (code, _, err) = cemwatch(&["status", "--api", &api, "--ca-file", ca], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("asks for credentials") && err.contains("--credentials-file"),
        "{err}"
    );
    // Without the CA: the TLS handshake fails and the message names --ca-file.
    let (code, _, err) = cemwatch(&["status", "--api", &api, "--credentials-file", creds], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--ca-file"), "{err}");
    // The reader may not start a round; the operator may, with the token from the environment.
    let (code, _, err) = cemwatch(
        &[
            "verify",
            "--api",
            &api,
            "--ca-file",
            ca,
            "--credentials-file",
            creds,
            "--check",
            "gateway",
            "--timeout",
            "5s",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("403") && err.contains("operate"), "{err}");
    let (_, out, err) = cemwatch(
        &[
            "verify",
            "--api",
            &api,
            "--ca-file",
            ca,
            "--check",
            "gateway",
            "--timeout",
            "3s",
            "--output",
            "json",
        ],
        &[("CEMWATCH_API_TOKEN", &ops_token)],
    );
    assert!(
        out.contains("\"round\""),
        "the operator's round started: {out}{err}"
    );

    // openssl s_client, a client no project code wrote.
    let answer = s_client(
        &openssl,
        https,
        &pki.ca,
        &[],
        &post_round(&format!("Bearer {ops_token}")),
    );
    assert!(answer.contains("HTTP/1.1 201"), "{answer}");
    let answer = s_client(&openssl, https, &pki.ca, &[], &post_round("Bearer wrong"));
    assert!(answer.contains("HTTP/1.1 401"), "{answer}");
    let answer = s_client(
        &openssl,
        https,
        &pki.ca,
        &[],
        "GET /api/v1/fleet HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        answer.contains("HTTP/1.1 401"),
        "loopback_role = none: {answer}"
    );
    // Plain HTTP to the HTTPS port gets no answer.
    assert!(
        cemwatch_tests::process::http_get(https, "/live").is_err() || {
            let (status, _) =
                cemwatch_tests::process::http_get(https, "/live").unwrap_or((0, String::new()));
            status != 200
        }
    );
    drop(coord_proc);
}

#[test]
fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let Some(openssl) = tool(
        "openssl",
        "http_surface::mtls_refuses_clients_without_a_certificate_from_the_client_ca",
        &[],
        "apt-get install openssl",
    ) else {
        return;
    };
    let pki = pki();
    let path = config(
        pki.dir.path(),
        &format!(
            "[http]\nloopback_role = \"none\"\ntls_cert = \"http.crt\"\ntls_key = \"http.key\"\nclient_ca = \"{}\"\nclient_cert_role = \"read\"\n",
            pki.client_ca.display()
        ),
    );
    let mut coord_proc = {
        let mut cmd = Command::new(COORDINATOR);
        cmd.args(["serve", "--config"])
            .arg(&path)
            .env("CEMWATCH_LOG", "info");
        cemwatch_tests::process::Proc::spawn("http-mtls", cmd).expect("spawn")
    };
    let https = coord_proc.listening("https").expect("https address");
    let get = "GET /api/v1/fleet HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let without = s_client(&openssl, https, &pki.ca, &[], get);
    assert!(
        !without.contains("HTTP/1.1 200"),
        "no client certificate, no answer: {without}"
    );
    let identity = [
        "-cert",
        pki.client_cert.to_str().expect("utf-8"),
        "-key",
        pki.client_key.to_str().expect("utf-8"),
    ];
    let with = s_client(&openssl, https, &pki.ca, &identity, get);
    assert!(with.contains("HTTP/1.1 200"), "{with}");
    // The certificate's role is read: no rounds.
    let with = s_client(
        &openssl,
        https,
        &pki.ca,
        &identity,
        "POST /api/v1/rounds HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 19\r\nConnection: close\r\n\r\n{\"check\":\"gateway\"}",
    );
    assert!(with.contains("HTTP/1.1 403"), "{with}");
    drop(coord_proc);
}
