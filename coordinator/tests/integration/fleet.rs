//! The fleet across real processes and sockets: `cemwatch serve`, `cemwatch token`,
//! `cemwatch-probe enroll` and `cemwatch-probe run` as separate processes, a real TLS gateway on
//! loopback, QUIC with mutual TLS between them. Covers enrolment and its refusals, revocation,
//! foreign certificates, malformed frames, plan push on reload, kill -9 of the coordinator and
//! probe restarts with a full spool, counting every result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::fixtures::{check_toml, server_toml};
use crate::support::processes::admin;
use crate::support::store::{duplicates_dropped, spooled, stored_seqs};
use crate::support::{
    enroll, enroll_ok, get_json, lab, metric, raw_client_config, run_probe, start_coordinator,
    token, Identity, Lab, WAIT,
};
use cemwatch_tests::pki::{Ca, LeafSpec};
use cemwatch_tests::process::{eventually, free_udp_port, Proc};

fn write_config(lab: &Lab, quic_port: u16, checks: &[&str]) -> PathBuf {
    let mut text = server_toml(quic_port, "");
    for c in checks {
        text.push_str(&check_toml(c, lab));
    }
    let path = lab.dir.path().join("cemwatch.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn verdicts(http: SocketAddr, check: &str) -> Option<(u64, u64)> {
    let fleet = get_json(http, "/api/v1/fleet");
    let c = fleet["checks"]
        .as_array()?
        .iter()
        .find(|c| c["check"] == check)?
        .clone();
    Some((
        c["verdicts"]["ok"].as_u64()?,
        c["verdicts"]["fail"].as_u64()?,
    ))
}

#[test]
fn enrol_then_report_and_every_bad_token_is_refused() {
    let _machine = crate::support::shared();
    let lab = lab();
    let config = write_config(&lab, 0, &["gateway"]);
    let coord = start_coordinator("coordinator", &config);

    let good = token(&config, "site=eu-west,vantage=internet", "eu-1", "1h");
    let state = lab.dir.path().join("eu-1");
    enroll_ok(coord.quic, &good, &state);

    // A used token.
    let again = enroll(coord.quic, &good, &lab.dir.path().join("again"));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already used"),
        "{again:?}"
    );

    // An expired token.
    let short = token(&config, "site=eu-west", "late", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let late = enroll(coord.quic, &short, &lab.dir.path().join("late"));
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("expired"),
        "{late:?}"
    );

    // A wrong secret.
    let fresh = token(&config, "site=eu-west", "forged", "1h");
    let mut parts: Vec<String> = fresh.split('.').map(str::to_string).collect();
    parts[2] = "0".repeat(32);
    let forged = enroll(coord.quic, &parts.join("."), &lab.dir.path().join("forged"));
    assert!(
        String::from_utf8_lossy(&forged.stderr).contains("unknown token"),
        "{forged:?}"
    );

    // A token from another coordinator: the probe refuses this coordinator (CA pin).
    let other = tempfile::tempdir().expect("tempdir");
    let other_config = other.path().join("other.toml");
    std::fs::write(
        &other_config,
        std::fs::read_to_string(&config).expect("read"),
    )
    .expect("write");
    {
        let mut o = start_coordinator("coordinator", &other_config);
        o.proc.terminate(Duration::from_secs(5));
    }
    let foreign = token(&other_config, "site=x", "foreign", "1h");
    let refused = enroll(coord.quic, &foreign, &lab.dir.path().join("foreign"));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pin"),
        "{refused:?}"
    );
    assert!(
        !lab.dir
            .path()
            .join("foreign")
            .join("identity.json")
            .exists(),
        "nothing saved"
    );

    assert_eq!(
        metric(
            coord.http,
            "cemwatch_enrolments_total{outcome=\"token_used\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_enrolments_total{outcome=\"token_expired\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_enrolments_total{outcome=\"token_unknown\"}"
        ),
        1.0
    );

    let _probe = run_probe("eu-1", &state, &lab.ca_file, &[]);
    eventually("the probe's first ok result", WAIT, || {
        verdicts(coord.http, "gateway").filter(|(ok, _)| *ok == 1)
    })
    .expect("reported");
    let probes = get_json(coord.http, "/api/v1/probes");
    let p = &probes.as_array().expect("array")[0];
    assert_eq!(p["name"], "eu-1");
    assert_eq!(p["state"], "connected");
    assert_eq!(p["labels"]["site"], "eu-west");
    assert_eq!(p["latest"]["gateway"]["verdict"], "ok");
    assert_eq!(
        p["latest"]["gateway"]["thumbprint"],
        lab.thumbprint.as_str()
    );
    assert!(metric(coord.http, "cemwatch_reports_received_total") >= 1.0);
}

/// A quinn client presenting `chain`/`key` (or nothing) that accepts any server certificate.
fn raw_client(
    quic: SocketAddr,
    identity: Option<Identity>,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let config = raw_client_config(identity);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr"))
            .map_err(|e| e.to_string())?;
        let conn = endpoint
            .connect_with(config, quic, cemwatch_shared::wire::SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        // A refused client certificate shows up at the first use of the connection.
        let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
        send.write_all(b"x").await.map_err(|e| e.to_string())?;
        let closed = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        match closed {
            Ok(reason) => Err(reason.to_string()),
            Err(_) => Ok((endpoint, conn)),
        }
    })
}

#[test]
fn revoked_foreign_and_anonymous_clients_are_refused_and_counted() {
    let _machine = crate::support::shared();
    let lab = lab();
    let config = write_config(&lab, 0, &["gateway"]);
    let coord = start_coordinator("coordinator", &config);
    let state = lab.dir.path().join("p1");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu-west", "p1", "1h"),
        &state,
    );
    let mut probe = run_probe("p1", &state, &lab.ca_file, &[]);
    eventually("p1 connected", WAIT, || {
        let probes = get_json(coord.http, "/api/v1/probes");
        (probes[0]["state"] == "connected").then_some(())
    })
    .expect("connected");

    // A certificate from another CA.
    let other = Ca::root("Not The Coordinator CA").expect("ca");
    let mut spec = LeafSpec::good(&["p1"]);
    spec.eku = cemwatch_tests::pki::Eku::ClientOnly;
    let foreign = other.issue(&spec).expect("leaf");
    let err = raw_client(
        coord.quic,
        Some((foreign.rustls_chain(), foreign.rustls_key().expect("key"))),
    )
    .expect_err("a foreign certificate must be refused");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("alert"),
        "{err}"
    );
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_connections_refused_total{reason=\"unknown_ca\"}"
        ),
        1.0
    );

    // Revocation closes the live connection and refuses the next handshakes.
    let (code, out, err) = admin(&["probe", "revoke", "p1"], &config);
    assert_eq!(code, 0, "{out}{err}");
    eventually("the revoked probe refused", WAIT, || {
        (metric(
            coord.http,
            "cemwatch_connections_refused_total{reason=\"revoked\"}",
        ) >= 1.0)
            .then_some(())
    })
    .expect("refused");
    probe
        .wait_for("refused this probe's certificate", WAIT)
        .expect("the probe says why");
    let probes = get_json(coord.http, "/api/v1/probes");
    assert_eq!(
        probes.as_array().map(Vec::len),
        Some(0),
        "revoked probes leave the fleet: {probes}"
    );
    let (_, list, _) = admin(&["probe", "list"], &config);
    assert!(list.contains("revoked"));
}

#[test]
fn a_malformed_frame_closes_only_that_connection() {
    let _machine = crate::support::shared();
    let lab = lab();
    let config = write_config(&lab, 0, &["gateway"]);
    let coord = start_coordinator("coordinator", &config);
    let good_state = lab.dir.path().join("good");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu-west", "good", "1h"),
        &good_state,
    );
    let _good = run_probe("good", &good_state, &lab.ca_file, &[]);
    let bad_state = lab.dir.path().join("bad");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu-west", "bad", "1h"),
        &bad_state,
    );

    // The "bad" probe's real identity, then an oversized frame header.
    let cert = std::fs::read(bad_state.join("probe.crt")).expect("cert");
    let key = std::fs::read(bad_state.join("probe.key")).expect("key");
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(&cert).expect("pem")];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).expect("key");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let ca = std::fs::read(bad_state.join("coordinator-ca.pem")).expect("ca");
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(&ca).expect("ca pem");
    let reason = rt.block_on(async {
        let config =
            cemwatch_transport::quic::mtls_client_config(ca.as_ref(), chain, key).expect("config");
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        let conn = endpoint
            .connect_with(config, coord.quic, cemwatch_shared::wire::SERVER_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        send.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .await
            .expect("write");
        tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("closed")
            .to_string()
    });
    assert!(
        reason.contains("bad frame") && reason.contains("exceeds the limit"),
        "{reason}"
    );
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_frames_rejected_total{reason=\"too_large\"}"
        ),
        1.0
    );

    // The other probe is unaffected.
    let before = metric(coord.http, "cemwatch_reports_received_total");
    eventually("the good probe keeps reporting", WAIT, || {
        (metric(coord.http, "cemwatch_reports_received_total") > before + 1.0).then_some(())
    })
    .expect("still reporting");

    // Hello without a client certificate is refused and counted.
    let anonymous = rt.block_on(async {
        let config = cemwatch_transport::quic::enrol_client_config(
            cemwatch_transport::x509::sha256(ca.as_ref()),
        )
        .expect("config");
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        let conn = endpoint
            .connect_with(config, coord.quic, cemwatch_shared::wire::SERVER_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        cemwatch_transport::frame::write_frame(
            &mut send,
            &cemwatch_shared::wire::ToCoordinator::Hello {
                probe: "good".into(),
                agent_version: "x".into(),
                labels: Default::default(),
            },
        )
        .await
        .expect("hello");
        cemwatch_transport::frame::read_frame::<cemwatch_shared::wire::ToProbe>(&mut recv).await
    });
    assert!(
        matches!(anonymous, Ok(Some(cemwatch_shared::wire::ToProbe::Refused { ref reason })) if reason.contains("enrol first")),
        "{anonymous:?}"
    );
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_connections_refused_total{reason=\"no_certificate\"}"
        ),
        1.0
    );
}

#[test]
fn a_reloaded_configuration_pushes_new_plans_and_a_bad_one_is_kept_out() {
    let _machine = crate::support::shared();
    let lab = lab();
    let config = write_config(&lab, 0, &["gateway"]);
    let mut coord = start_coordinator("coordinator", &config);
    let state = lab.dir.path().join("p1");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu-west", "p1", "1h"),
        &state,
    );
    let _probe = run_probe("p1", &state, &lab.ca_file, &[]);
    eventually("first result", WAIT, || {
        verdicts(coord.http, "gateway").filter(|(ok, _)| *ok == 1)
    })
    .expect("ok");

    // A bad file is refused and the last good configuration stays.
    let good_text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        good_text.replace("interval = \"1s\"", "interval = \"often\""),
    )
    .expect("write");
    coord
        .proc
        .wait_for("configuration not reloaded", WAIT)
        .expect("refused reload");
    assert!(
        coord.proc.log().contains("cemwatch.toml:"),
        "the error names the file and line"
    );

    // A good change reaches the probe: a second check appears in the fleet.
    let mut text = good_text.clone();
    text.push_str(&check_toml("gateway-again", &lab));
    std::fs::write(&config, text).expect("write");
    eventually("the new check's result", WAIT, || {
        verdicts(coord.http, "gateway-again").filter(|(ok, _)| *ok == 1)
    })
    .expect("new plan applied");
}

/// Counts what the probes produced, what the coordinator stored, what is still spooled on the
/// probes (durable, delivered at their next connection) and what is lost: produced by a probe
/// but neither stored nor spooled.
fn count(data_dir: &Path, states: &[(&str, PathBuf)]) -> (u64, u64, u64, u64, u64) {
    let db = rusqlite::Connection::open(data_dir.join("cemwatch.sqlite")).expect("db");
    let mut produced = 0;
    let mut stored = 0;
    let mut lost = 0;
    let mut pending = 0;
    for (name, state) in states {
        pending += spooled(state).len() as u64;
        let seq: u64 = std::fs::read_to_string(state.join("spool").join("seq"))
            .expect("seq")
            .trim()
            .parse()
            .expect("number");
        let dropped: u64 = std::fs::read_to_string(state.join("spool").join("dropped"))
            .map(|s| s.trim().parse().unwrap_or(0))
            .unwrap_or(0);
        assert_eq!(dropped, 0, "{name}: spool dropped reports");
        let seqs = stored_seqs(&db, name);
        let results: i64 = crate::support::store::stored_reports(&db, "probe = ?1", [name])
            .iter()
            .map(|(_, _, _, results)| results.len() as i64)
            .sum();
        assert_eq!(
            results as usize,
            seqs.len(),
            "{name}: one result per periodic report"
        );
        produced += seq;
        stored += seqs.len() as u64;
        lost += (1..=seq as i64)
            .filter(|s| seqs.binary_search(s).is_err())
            .count() as u64;
    }
    let duplicates = duplicates_dropped(&db);
    (produced, stored, pending, duplicates as u64, lost)
}

fn spool_empty(state: &Path) -> bool {
    std::fs::read_dir(state.join("spool"))
        .map(|d| {
            d.filter_map(Result::ok)
                .all(|e| !e.file_name().to_string_lossy().ends_with(".report"))
        })
        .unwrap_or(false)
}

#[test]
fn kill_9_of_the_coordinator_loses_no_result() {
    let _machine = crate::support::shared();
    let lab = lab();
    let port = free_udp_port().expect("port");
    let config = write_config(&lab, port, &["gateway"]);
    let mut coord = start_coordinator("coordinator", &config);
    let mut states = Vec::new();
    let mut probes = Vec::new();
    for name in ["k1", "k2", "k3"] {
        let state = lab.dir.path().join(name);
        enroll_ok(
            coord.quic,
            &token(&config, "site=eu-west", name, "1h"),
            &state,
        );
        probes.push(run_probe(name, &state, &lab.ca_file, &[]));
        states.push((name, state));
    }
    eventually("all three reporting", WAIT, || {
        verdicts(coord.http, "gateway").filter(|(ok, _)| *ok == 3)
    })
    .expect("ok");
    std::thread::sleep(Duration::from_secs(2));
    coord.proc.kill9();
    // Probes go on checking into their spools while the coordinator is down.
    std::thread::sleep(Duration::from_secs(3));
    let coord = start_coordinator("coordinator", &config);
    assert_eq!(coord.quic.port(), port);
    std::thread::sleep(Duration::from_secs(2));
    // Stop producing, then let every spool drain.
    for p in &mut probes {
        p.terminate(Duration::from_secs(10));
    }
    // Restart the probes to deliver what their spools still hold (stop flushed nothing away).
    let mut probes: Vec<Proc> = states
        .iter()
        .map(|(n, s)| run_probe(n, s, &lab.ca_file, &[]))
        .collect();
    eventually("spools drained", WAIT, || {
        states.iter().all(|(_, s)| spool_empty(s)).then_some(())
    })
    .expect("drained");
    for p in &mut probes {
        p.terminate(Duration::from_secs(10));
    }
    let data = lab.dir.path().join("data");
    let (produced, stored, pending, duplicates, lost) = count(&data, &states);
    println!("kill -9 of the coordinator: produced={produced} stored={stored} still_spooled={pending} duplicates_dropped={duplicates} lost={lost}");
    assert!(
        produced >= 15,
        "enough traffic to mean something: {produced}"
    );
    assert_eq!(lost, 0);
    assert_eq!(stored + pending, produced);
    assert_eq!(
        pending, 0,
        "a stopping probe flushes its spool while the coordinator is up"
    );
    drop(coord);
}

#[test]
fn a_probe_restarted_with_a_full_spool_delivers_it() {
    let _machine = crate::support::shared();
    let lab = lab();
    let port = free_udp_port().expect("port");
    let config = write_config(&lab, port, &["gateway"]);
    let mut coord = start_coordinator("coordinator", &config);
    let state = lab.dir.path().join("s1");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu-west", "s1", "1h"),
        &state,
    );
    let mut probe = run_probe("s1", &state, &lab.ca_file, &[]);
    eventually("first result", WAIT, || {
        verdicts(coord.http, "gateway").filter(|(ok, _)| *ok == 1)
    })
    .expect("ok");
    coord.proc.terminate(Duration::from_secs(10));
    // Offline: results pile up in the spool.
    let pending = eventually("a spool of at least 3 reports", WAIT, || {
        let n = std::fs::read_dir(state.join("spool"))
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".report"))
            .count();
        (n >= 3).then_some(n)
    })
    .expect("spooled");
    probe.terminate(Duration::from_secs(10));
    let coord = start_coordinator("coordinator", &config);
    let mut probe = run_probe("s1", &state, &lab.ca_file, &[]);
    eventually("the spool delivered", WAIT, || {
        spool_empty(&state).then_some(())
    })
    .expect("delivered");
    probe.terminate(Duration::from_secs(10));
    let (produced, stored, left, duplicates, lost) =
        count(&lab.dir.path().join("data"), &[("s1", state.clone())]);
    println!("probe restart with {pending} spooled: produced={produced} stored={stored} still_spooled={left} duplicates_dropped={duplicates} lost={lost}");
    assert_eq!(lost, 0);
    assert_eq!(stored + left, produced);
    drop(coord);
}

#[test]
fn a_short_lived_certificate_is_renewed_over_the_live_connection() {
    let _machine = crate::support::shared();
    let lab = lab();
    let port = free_udp_port().expect("port");
    let config = write_config(&lab, port, &["gateway"]);
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace(
            "stale_after = \"30s\"",
            "stale_after = \"30s\"\nprobe_cert_ttl = \"30s\"",
        ),
    )
    .expect("write");
    let mut coord = start_coordinator("coordinator", &config);
    let state = lab.dir.path().join("r1");
    enroll_ok(
        coord.quic,
        &token(&config, "site=eu-west", "r1", "1h"),
        &state,
    );
    let first = std::fs::read(state.join("probe.crt")).expect("cert");
    let enrolled = std::time::Instant::now();
    let mut probe = run_probe("r1", &state, &lab.ca_file, &[]);
    probe
        .wait_for("client certificate renewed", Duration::from_secs(40))
        .expect("renewed");
    let renewed = std::fs::read(state.join("probe.crt")).expect("cert");
    assert_ne!(first, renewed, "a new certificate was stored");
    // Once the first certificate has expired, a fresh connection must use the renewed one.
    let wait = Duration::from_secs(32).saturating_sub(enrolled.elapsed());
    std::thread::sleep(wait);
    coord.proc.terminate(Duration::from_secs(10));
    let coord = start_coordinator("coordinator", &config);
    eventually(
        "reconnected with the renewed certificate",
        Duration::from_secs(60),
        || {
            let probes = get_json(coord.http, "/api/v1/probes");
            (probes[0]["state"] == "connected").then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nPROBE:\n{}\nCOORDINATOR:\n{}",
            probe.log(),
            coord.proc.log()
        )
    });
    assert_eq!(
        metric(
            coord.http,
            "cemwatch_connections_refused_total{reason=\"expired\"}"
        ),
        0.0
    );
}

/// A token need not be on the command line, where other users of the machine can read it: from
/// a file (`--token-file`) or the environment (`CEMWATCH_TOKEN`) it enrols the same; with none
/// of them the probe says what to give.
#[test]
fn a_token_from_a_file_or_the_environment_enrols() {
    let _machine = crate::support::shared();
    let lab = lab();
    let config = crate::support::write_config(&lab, "");
    let coord = start_coordinator("coordinator", &config);
    let enrol = |name: &str, how: &dyn Fn(&mut std::process::Command)| {
        let mut cmd = std::process::Command::new(crate::support::probe_bin());
        cmd.args([
            "enroll",
            "--coordinator",
            &coord.quic.to_string(),
            "--state-dir",
        ])
        .arg(lab.dir.path().join(name))
        .args(["--timeout", "10s"])
        .env_remove("CEMWATCH_TOKEN");
        how(&mut cmd);
        cmd.output().expect("enroll")
    };
    let file = lab.dir.path().join("token.txt");
    std::fs::write(
        &file,
        format!("{}\n", token(&config, "site=eu", "from-file", "10m")),
    )
    .expect("token file");
    let out = enrol("from-file", &|cmd| {
        cmd.arg("--token-file").arg(&file);
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env_token = token(&config, "site=eu", "from-env", "10m");
    let out = enrol("from-env", &|cmd| {
        cmd.env("CEMWATCH_TOKEN", &env_token);
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = enrol("without", &|_| {});
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") || err.contains("--token"),
        "{err}"
    );
    let listed = crate::support::get_json(coord.http, "/api/v1/probes");
    let names: Vec<&str> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"from-file") && names.contains(&"from-env"),
        "{names:?}"
    );
}
