//! The authentication matrix, in one place: every way in that must fail, tried against a real
//! `cemwatch serve` while a real probe reports. Each attempt that gets as far as a connection
//! says `Hello` and sends a forged report right behind it (sequence number 900000 and up,
//! check `forged`). Every case must be refused, counted under its own reason in `/metrics`,
//! and leave nothing in the store.
//!
//! | case | who refuses | counted as |
//! |---|---|---|
//! | no client certificate | coordinator | `connections_refused_total{reason="no_certificate"}` |
//! | certificate from another CA | coordinator (TLS) | `connections_refused_total{reason="unknown_ca"}` |
//! | expired certificate (signed by the coordinator's own CA) | coordinator (TLS) | `connections_refused_total{reason="expired"}` |
//! | revoked certificate | coordinator (TLS) | `connections_refused_total{reason="revoked"}` |
//! | valid certificate, never enrolled | coordinator (TLS) | `connections_refused_total{reason="unknown_probe"}` |
//! | another probe's identity in `Hello` | coordinator | `connections_refused_total{reason="identity_mismatch"}` |
//! | reused token | coordinator | `enrolments_total{outcome="token_used"}` (and `connections_refused_total{reason="enrolment_refused"}`) |
//! | expired token | coordinator | `enrolments_total{outcome="token_expired"}` (idem) |
//! | forged token secret | coordinator | `enrolments_total{outcome="token_unknown"}` (idem) |
//! | token with a wrong CA pin | the probe (refuses the coordinator) | `quic_handshakes_failed_total`; the token stays unused |

use std::time::Duration;

use cemwatch_shared::wire::{CheckReport, Report, ToCoordinator};
use cemwatch_tests::pki::{Ca, Eku, KeyKind, LeafSpec};
use cemwatch_tests::process::eventually;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::support::fixtures::ok_result;
use crate::support::processes::admin;
use crate::support::*;

const FORGED_SEQ: u64 = 900_000;

fn forged_report(case: u64) -> ToCoordinator {
    let result = ok_result();
    ToCoordinator::Report(Report {
        seq: FORGED_SEQ + case,
        round: None,
        results: vec![CheckReport {
            check: "forged".into(),
            produced_at_ms: 1,
            result,
        }],
    })
}

/// A client certificate for `name` signed with the coordinator's own CA key (read from its data
/// directory), valid from `from` to `until`.
fn signed_by_coordinator_ca(
    data_dir: &std::path::Path,
    name: &str,
    from: OffsetDateTime,
    until: OffsetDateTime,
) -> Identity {
    let ca_key = std::fs::read_to_string(data_dir.join("ca").join("ca.key")).expect("ca.key");
    let ca_pem = std::fs::read_to_string(data_dir.join("ca").join("ca.pem")).expect("ca.pem");
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key).expect("key"))
        .expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "cemwatch probes");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = from;
    params.not_after = until;
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

struct Row {
    case: &'static str,
    refused_by: &'static str,
    series: String,
    detail: String,
}

#[test]
fn every_way_in_is_refused_counted_and_leaves_nothing_stored() {
    let _machine = crate::support::shared();
    let lab = lab();
    let config = write_config(&lab, "");
    let coord = start_coordinator("coordinator", &config);
    let data_dir = lab.dir.path().join("data");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = rt.block_on(async {
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint")
    });
    let mut rows: Vec<Row> = Vec::new();
    let refused =
        |reason: &str| format!("cemwatch_connections_refused_total{{reason=\"{reason}\"}}");
    let enrolments = |outcome: &str| format!("cemwatch_enrolments_total{{outcome=\"{outcome}\"}}");

    // The fleet: a real probe reporting all along, a victim whose name is claimed, a probe that
    // will claim it, and one to revoke.
    let mut states = std::collections::BTreeMap::new();
    let mut alice_token = String::new();
    for name in ["alice", "victim", "mallory", "revoked-probe"] {
        let t = token(&config, "site=eu-west,vantage=internet", name, "1h");
        let state = lab.dir.path().join(name);
        enroll_ok(coord.quic, &t, &state);
        if name == "alice" {
            alice_token = t;
        }
        states.insert(name, state);
    }
    let _alice = run_probe("alice", &states["alice"], &lab.ca_file, &[]);

    // 1. No client certificate: a Hello without one is turned away.
    let outcome = rt.block_on(attempt(
        &endpoint,
        coord.quic,
        None,
        "alice",
        forged_report(1),
    ));
    assert!(
        matches!(&outcome, Outcome::Refused(r) if r.contains("enrol first")),
        "{outcome:?}"
    );
    rows.push(Row {
        case: "no client certificate",
        refused_by: "coordinator",
        series: refused("no_certificate"),
        detail: format!("{outcome:?}"),
    });

    // 2. A certificate from another CA, for a name the coordinator knows.
    let other = Ca::root("Not The Coordinator CA").expect("ca");
    let mut spec = LeafSpec::good(&["alice"]);
    spec.eku = Eku::ClientOnly;
    spec.key = KeyKind::EcdsaP256;
    let foreign = other.issue(&spec).expect("leaf");
    let identity = (foreign.rustls_chain(), foreign.rustls_key().expect("key"));
    let outcome = rt.block_on(attempt(
        &endpoint,
        coord.quic,
        Some(identity),
        "alice",
        forged_report(2),
    ));
    assert!(matches!(outcome, Outcome::Closed(_)), "{outcome:?}");
    rows.push(Row {
        case: "certificate from another CA",
        refused_by: "coordinator (TLS)",
        series: refused("unknown_ca"),
        detail: format!("{outcome:?}"),
    });

    // 3. An expired certificate, signed by the coordinator's own CA, for a known probe.
    let now = OffsetDateTime::now_utc();
    let expired = signed_by_coordinator_ca(
        &data_dir,
        "victim",
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    );
    let outcome = rt.block_on(attempt(
        &endpoint,
        coord.quic,
        Some(expired),
        "victim",
        forged_report(3),
    ));
    assert!(matches!(outcome, Outcome::Closed(_)), "{outcome:?}");
    rows.push(Row {
        case: "expired certificate (coordinator's CA)",
        refused_by: "coordinator (TLS)",
        series: refused("expired"),
        detail: format!("{outcome:?}"),
    });

    // 4. A valid certificate from the coordinator's CA for a name that never enrolled.
    let ghost = signed_by_coordinator_ca(
        &data_dir,
        "ghost",
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    );
    let outcome = rt.block_on(attempt(
        &endpoint,
        coord.quic,
        Some(ghost),
        "ghost",
        forged_report(4),
    ));
    assert!(matches!(outcome, Outcome::Closed(_)), "{outcome:?}");
    rows.push(Row {
        case: "valid certificate, never enrolled",
        refused_by: "coordinator (TLS)",
        series: refused("unknown_probe"),
        detail: format!("{outcome:?}"),
    });

    // 5. A revoked probe's own certificate.
    let (code, out, err) = admin(&["probe", "revoke", "revoked-probe"], &config);
    assert_eq!(code, 0, "{out}{err}");
    eventually("the revocation reaches the coordinator", WAIT, || {
        let probes = get_json(coord.http, "/api/v1/probes");
        let listed = probes
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == "revoked-probe"));
        (!listed).then_some(())
    })
    .expect("revoked");
    let identity = identity_of(&states["revoked-probe"]);
    let outcome = rt.block_on(attempt(
        &endpoint,
        coord.quic,
        Some(identity),
        "revoked-probe",
        forged_report(5),
    ));
    assert!(matches!(outcome, Outcome::Closed(_)), "{outcome:?}");
    rows.push(Row {
        case: "revoked certificate",
        refused_by: "coordinator (TLS)",
        series: refused("revoked"),
        detail: format!("{outcome:?}"),
    });

    // 6. A probe claiming another probe's identity in Hello.
    let identity = identity_of(&states["mallory"]);
    let outcome = rt.block_on(attempt(
        &endpoint,
        coord.quic,
        Some(identity),
        "victim",
        forged_report(6),
    ));
    assert!(
        matches!(&outcome, Outcome::Refused(r) if r.contains("not \"victim\"")),
        "{outcome:?}"
    );
    rows.push(Row {
        case: "another probe's identity in Hello",
        refused_by: "coordinator",
        series: refused("identity_mismatch"),
        detail: format!("{outcome:?}"),
    });

    // 7. A reused token.
    let again = enroll(coord.quic, &alice_token, &lab.dir.path().join("reuse"));
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(stderr.contains("already used"), "{stderr}");
    rows.push(Row {
        case: "reused token",
        refused_by: "coordinator",
        series: enrolments("token_used"),
        detail: stderr.trim().to_string(),
    });

    // 8. An expired token.
    let short = token(&config, "site=eu-west", "late", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let late = enroll(coord.quic, &short, &lab.dir.path().join("late"));
    assert!(!late.status.success());
    let stderr = String::from_utf8_lossy(&late.stderr).to_string();
    assert!(stderr.contains("expired"), "{stderr}");
    rows.push(Row {
        case: "expired token",
        refused_by: "coordinator",
        series: enrolments("token_expired"),
        detail: stderr.trim().to_string(),
    });

    // 9. A token whose secret was guessed.
    let fresh = token(&config, "site=eu-west", "forged", "1h");
    let mut parts: Vec<String> = fresh.split('.').map(str::to_string).collect();
    parts[2] = "0".repeat(32);
    let forged = enroll(coord.quic, &parts.join("."), &lab.dir.path().join("forged"));
    assert!(!forged.status.success());
    let stderr = String::from_utf8_lossy(&forged.stderr).to_string();
    assert!(stderr.contains("unknown token"), "{stderr}");
    rows.push(Row {
        case: "forged token secret",
        refused_by: "coordinator",
        series: enrolments("token_unknown"),
        detail: stderr.trim().to_string(),
    });

    // 10. A token with a wrong CA pin: the probe must refuse this coordinator before it sends
    // anything, so the token is still unused afterwards.
    let handshakes_failed_before = metric(coord.http, "cemwatch_quic_handshakes_failed_total");
    let pinned = token(&config, "site=eu-west", "pinned", "1h");
    let mut parts: Vec<String> = pinned.split('.').map(str::to_string).collect();
    let pin = parts[3].clone();
    parts[3] = pin.chars().rev().collect::<String>().replace('0', "1");
    assert_ne!(parts[3], pin);
    let wrong_pin_state = lab.dir.path().join("wrong-pin");
    let refused_pin = enroll(coord.quic, &parts.join("."), &wrong_pin_state);
    assert!(!refused_pin.status.success());
    let stderr = String::from_utf8_lossy(&refused_pin.stderr).to_string();
    assert!(stderr.contains("pin"), "{stderr}");
    assert!(
        !wrong_pin_state.join("identity.json").exists(),
        "nothing is saved by a probe that refused the coordinator"
    );
    eventually("the refused handshake counted", WAIT, || {
        (metric(coord.http, "cemwatch_quic_handshakes_failed_total") > handshakes_failed_before)
            .then_some(())
    })
    .expect("counted");
    // The coordinator never saw the token: it still enrols, once.
    enroll_ok(coord.quic, &pinned, &lab.dir.path().join("pinned"));
    rows.push(Row {
        case: "token with a wrong CA pin",
        refused_by: "probe (pin)",
        series: "cemwatch_quic_handshakes_failed_total".into(),
        detail: stderr.trim().to_string(),
    });

    // Every refusal counted once, under its own reason.
    println!("\nauth matrix ({} cases):", rows.len());
    println!(
        "  {:<40} {:<20} {:<70} value",
        "case", "refused by", "series"
    );
    for row in &rows {
        let value = metric(coord.http, &row.series);
        println!(
            "  {:<40} {:<20} {:<70} {value}",
            row.case, row.refused_by, row.series
        );
        if row
            .series
            .starts_with("cemwatch_quic_handshakes_failed_total")
        {
            // Every TLS refusal above failed a handshake too.
            assert!(value >= 5.0, "{}: {value}", row.case);
        } else {
            assert_eq!(
                value, 1.0,
                "{}: counted {value} times ({})",
                row.case, row.detail
            );
        }
    }
    // The three refused enrolments also closed their connections, under their own reason.
    assert_eq!(metric(coord.http, &refused("enrolment_refused")), 3.0);
    assert_eq!(
        metric(coord.http, &enrolments("enrolled")),
        5.0,
        "four probes and the pinned token enrolled, nothing else"
    );

    // The real probe kept reporting through all of it.
    let db = store(&lab);
    eventually("alice's reports", WAIT, || {
        (count(
            &db,
            "SELECT COUNT(*) FROM reports WHERE probe = 'alice'",
            [],
        ) >= 1)
            .then_some(())
    })
    .expect("alice reported");

    // Nothing from any refused attempt reached the store.
    let forged_reports = count(
        &db,
        "SELECT COUNT(*) FROM reports WHERE seq >= ?1",
        [FORGED_SEQ as i64],
    );
    let forged_results = crate::support::store::stored_reports(&db, "1", [])
        .iter()
        .flat_map(|(_, _, _, results)| results)
        .filter(|r| r.check == "forged")
        .count() as i64;
    let forged_latest = count(
        &db,
        "SELECT COUNT(*) FROM latest WHERE check_name = 'forged'",
        [],
    );
    let intruders = count(
        &db,
        "SELECT COUNT(*) FROM reports WHERE probe IN ('victim', 'mallory', 'revoked-probe', 'ghost', 'late', 'forged', 'reuse')",
        [],
    );
    let unexpected_probes = count(
        &db,
        "SELECT COUNT(*) FROM probes WHERE name NOT IN ('alice', 'victim', 'mallory', 'revoked-probe', 'pinned')",
        [],
    );
    println!(
        "  stored from refused attempts: reports={forged_reports} results={forged_results} latest={forged_latest} reports_of_other_identities={intruders} unexpected_probes={unexpected_probes}"
    );
    assert_eq!(forged_reports, 0);
    assert_eq!(forged_results, 0);
    assert_eq!(forged_latest, 0);
    assert_eq!(intruders, 0);
    assert_eq!(unexpected_probes, 0);
    let victim = get_json(coord.http, "/api/v1/probes");
    let victim = victim
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "victim").cloned())
        .expect("victim listed");
    assert_ne!(
        victim["state"], "connected",
        "a claimed identity is not connected: {victim}"
    );
}
