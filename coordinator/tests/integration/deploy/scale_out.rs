//! Scale-out: two coordinators sharing one CA, each with its own data directory, store and
//! ports; probes split between them, each with an ordered coordinator list; one real
//! Prometheus scraping both, with the fleet recording rules of `deploy/prometheus/`. Killing
//! one coordinator moves its probes to the other, and the fleet sums stay right.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cemwatch_tests::process::eventually;
use serde_json::Value;

use crate::support::fixtures::{check_toml, server_toml};
use crate::support::processes::admin;
use crate::support::prometheus::Prometheus;
use crate::support::tools::{tool, REQUIRE_PROMETHEUS};
use crate::support::{
    enroll_ok, lab, metric_or_zero, run_probe, start_coordinator, token, try_get_json, Coordinator,
    Lab,
};

const WAIT: Duration = Duration::from_secs(60);

/// Writes `NAME/cemwatch.toml` (data in `NAME/data`) and returns its path.
fn write_config(lab: &Lab, name: &str, shared_ca: bool) -> PathBuf {
    let dir = lab.dir.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let text = format!(
        "{}{}",
        server_toml(
            0,
            if shared_ca {
                "trust_shared_ca_probes = true\n"
            } else {
                ""
            }
        ),
        check_toml("gateway", lab)
    );
    let path = dir.join("cemwatch.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Copies the CA of the coordinator whose data directory is `from` into `to`, before the
/// second coordinator's first start: what an operator does (deploy/README.md, "Scale-out").
fn share_ca(from: &Path, to: &Path) {
    let dst = to.join("ca");
    std::fs::create_dir_all(&dst).expect("mkdir");
    for file in ["ca.key", "ca.pem"] {
        std::fs::copy(from.join("ca").join(file), dst.join(file)).expect("copy CA");
    }
}

/// Two coordinators of one deployment: `a` starts first and makes the CA, `b` gets a copy.
fn pair(lab: &Lab, b_shares: bool) -> (Coordinator, PathBuf, Coordinator, PathBuf) {
    let a_config = write_config(lab, "a", true);
    let a = start_coordinator("coordinator-a", &a_config);
    let b_config = write_config(lab, "b", b_shares);
    share_ca(
        &lab.dir.path().join("a/data"),
        &lab.dir.path().join("b/data"),
    );
    let b = start_coordinator("coordinator-b", &b_config);
    (a, a_config, b, b_config)
}

/// The probes a coordinator's API lists as connected, by name.
fn connected(http: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = try_get_json(http, "/api/v1/probes")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|p| p["state"] == "connected")
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

const CONNECTED: &str = "sum(cemwatch_probes{state=\"connected\"})";

#[test]
fn two_coordinators_behind_one_prometheus_keep_the_fleet_sum_through_a_failover() {
    let test = "two_coordinators_behind_one_prometheus_keep_the_fleet_sum_through_a_failover";
    let Some(prometheus) = tool(
        "prometheus",
        test,
        REQUIRE_PROMETHEUS,
        "apt-get install prometheus",
    ) else {
        return;
    };
    let _machine = crate::support::shared();
    let lab = lab();
    let (mut a, a_config, b, b_config) = pair(&lab, true);

    // Four probes split between the coordinators; each lists its own first, the other second.
    let mut probes = Vec::new();
    for (name, site, home) in [
        ("p1", "eu-west", "a"),
        ("p2", "eu-north", "a"),
        ("p3", "us-east", "b"),
        ("p4", "ap-south", "b"),
    ] {
        let (config, order) = if home == "a" {
            (&a_config, [a.quic, b.quic])
        } else {
            (&b_config, [b.quic, a.quic])
        };
        let state = lab.dir.path().join(name);
        let t = token(config, &format!("site={site},vantage=internet"), name, "1h");
        enroll_ok(order[0], &t, &state);
        probes.push(run_probe(name, &state, &lab.ca_file, &order));
    }
    let total = probes.len() as f64;

    let prom = Prometheus::start(&prometheus, &[a.http, b.http]);
    let (a_instance, b_instance) = (a.http.to_string(), b.http.to_string());
    eventually(
        "both coordinators scraped with their own probes",
        WAIT,
        || {
            let split = prom.per_instance("cemwatch_probes{state=\"connected\"}");
            (split == vec![(a_instance.clone(), 2.0), (b_instance.clone(), 2.0)]
                || split == vec![(b_instance.clone(), 2.0), (a_instance.clone(), 2.0)])
            .then_some(())
        },
    )
    .expect("split 2 + 2");
    assert_eq!(connected(a.http), vec!["p1", "p2"]);
    assert_eq!(connected(b.http), vec!["p3", "p4"]);
    eventually("the fleet sums before the failover", WAIT, || {
        (prom.scalar(CONNECTED) == Some(total)
            && prom.scalar("fleet:cemwatch_probes:sum{state=\"connected\"}") == Some(total)
            && prom.scalar("fleet:cemwatch_coordinators:count") == Some(2.0)
            && prom.scalar("fleet:cemwatch_check_probes:sum{check=\"gateway\",verdict=\"ok\"}")
                == Some(total))
        .then_some(())
    })
    .expect("sums before");
    println!("before: {CONNECTED} = {total} over 2 coordinators (2 + 2), recording rules agree");

    // Kill one coordinator the hard way: no goodbye to its probes.
    let killed = Instant::now();
    a.proc.kill9();
    eventually("Prometheus sees the killed coordinator down", WAIT, || {
        (prom.scalar(&format!("up{{instance=\"{a_instance}\"}}")) == Some(0.0)).then_some(())
    })
    .expect("down");
    // The probes notice at the QUIC idle timeout (60 s), then try their next coordinator.
    let moved = eventually(
        "the killed coordinator's probes connected at the other",
        Duration::from_secs(150),
        || {
            (prom.scalar(CONNECTED) == Some(total)
                && prom.per_instance("cemwatch_probes{state=\"connected\"}")
                    == vec![(b_instance.clone(), total)])
            .then(|| killed.elapsed())
        },
    )
    .expect("failover");
    assert_eq!(connected(b.http), vec!["p1", "p2", "p3", "p4"]);
    eventually("the fleet sums after the failover", WAIT, || {
        (prom.scalar("fleet:cemwatch_probes:sum{state=\"connected\"}") == Some(total)
            && prom.scalar("fleet:cemwatch_coordinators:count") == Some(1.0)
            && prom.scalar("fleet:cemwatch_check_probes:sum{check=\"gateway\",verdict=\"ok\"}")
                == Some(total))
        .then_some(())
    })
    .expect("sums after");
    // The survivor recorded the probes it had never seen with the labels they enrolled with.
    let listed = try_get_json(b.http, "/api/v1/probes").expect("probes");
    let p1 = listed
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "p1"))
        .expect("p1 at the survivor");
    assert_eq!(p1["labels"]["site"], "eu-west", "{p1}");
    println!(
        "after kill -9 of one coordinator: {CONNECTED} = {total} at the survivor, {:.1} s after the kill",
        moved.as_secs_f64()
    );

    for p in &mut probes {
        p.terminate(Duration::from_secs(10));
    }
    drop(prom);
    drop(b);
}

#[test]
fn shared_ca_probes_are_refused_until_allowed_and_revocation_reaches_unseen_probes() {
    let _machine = crate::support::shared();
    let lab = lab();
    let (a, a_config, mut b, b_config) = pair(&lab, false);

    // A probe enrolled at `a`, reporting only to `b`, which shares the CA but not the setting.
    let p1_state = lab.dir.path().join("p1");
    enroll_ok(
        a.quic,
        &token(&a_config, "site=eu-west,vantage=internet", "p1", "1h"),
        &p1_state,
    );
    let _p1 = run_probe("p1", &p1_state, &lab.ca_file, &[b.quic]);
    eventually("b refuses a probe it did not enrol", WAIT, || {
        (metric_or_zero(
            b.http,
            "cemwatch_connections_refused_total{reason=\"unknown_probe\"}",
        ) >= 1.0)
            .then_some(())
    })
    .expect("refused");
    assert!(connected(b.http).is_empty());

    // Allowed by configuration (reloaded on SIGHUP, as systemd's ExecReload sends it).
    let text = std::fs::read_to_string(&b_config).expect("read");
    std::fs::write(
        &b_config,
        text.replace(
            "stale_after = \"30s\"\n",
            "stale_after = \"30s\"\ntrust_shared_ca_probes = true\n",
        ),
    )
    .expect("write");
    let _ = Command::new("kill")
        .args(["-HUP", &b.proc.pid().to_string()])
        .status();
    b.proc
        .wait_for("configuration reloaded", WAIT)
        .expect("reloaded");
    eventually("b accepts p1 and records it", WAIT, || {
        (connected(b.http) == vec!["p1"]).then_some(())
    })
    .expect("adopted");
    let (code, listed, _) = admin(&["probe", "list", "--output", "json"], &b_config);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed[0]["name"], "p1");
    assert_eq!(listed[0]["labels"]["site"], "eu-west");
    assert_eq!(listed[0]["labels"]["vantage"], "internet");

    // Revoking a probe b has never seen needs --even-if-unseen; then b refuses it too.
    let p2_state = lab.dir.path().join("p2");
    enroll_ok(
        a.quic,
        &token(&a_config, "site=eu-north", "p2", "1h"),
        &p2_state,
    );
    let (code, _, err) = admin(&["probe", "revoke", "p2"], &b_config);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--even-if-unseen"), "{err}");
    let (code, out, err) = admin(&["probe", "revoke", "p2", "--even-if-unseen"], &b_config);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked p2"), "{out}");
    let mut p2 = run_probe("p2", &p2_state, &lab.ca_file, &[b.quic]);
    eventually("b refuses the revoked p2", WAIT, || {
        (metric_or_zero(
            b.http,
            "cemwatch_connections_refused_total{reason=\"revoked\"}",
        ) >= 1.0)
            .then_some(())
    })
    .expect("refused");
    p2.wait_for("refused this probe's certificate", WAIT)
        .expect("the probe says why");
    assert_eq!(connected(b.http), vec!["p1"]);
    drop(a);
}

/// With `trust_shared_ca_probes`, a probe's identity is its name *and* its key: a token holder
/// at coordinator `b` who enrols under the name of a probe of `a` gets a certificate of the
/// shared CA for that name, and `a` refuses it (`key_mismatch`) while the real probe keeps its
/// session. Tokens must fix the name when the setting is on.
#[test]
fn a_name_enrolled_at_another_coordinator_cannot_impersonate_a_probe() {
    let _machine = crate::support::shared();
    let lab = lab();
    let (a, a_config, b, b_config) = pair(&lab, true);

    let victim_state = lab.dir.path().join("victim");
    enroll_ok(
        a.quic,
        &token(&a_config, "site=eu-west", "victim", "1h"),
        &victim_state,
    );
    let _victim = run_probe("victim", &victim_state, &lab.ca_file, &[a.quic]);
    eventually("the victim reports to a", WAIT, || {
        (connected(a.http) == vec!["victim"]).then_some(())
    })
    .expect("connected");

    // b does not know "victim": its token holder enrols under that name there.
    let impostor_state = lab.dir.path().join("impostor");
    enroll_ok(
        b.quic,
        &token(&b_config, "site=elsewhere", "victim", "1h"),
        &impostor_state,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(async {
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        crate::support::attempt(
            &endpoint,
            a.quic,
            Some(crate::support::identity_of(&impostor_state)),
            "victim",
            cemwatch_shared::wire::ToCoordinator::Report(cemwatch_shared::wire::Report {
                seq: 999_999,
                round: None,
                results: vec![],
            }),
        )
        .await
    });
    println!("an enrolment under \"victim\" at b, presented at a: {outcome:?}");
    assert!(
        matches!(&outcome, crate::support::Outcome::Refused(r) if r.contains("not the one probe \"victim\" enrolled with")),
        "{outcome:?}"
    );
    assert_eq!(
        metric_or_zero(
            a.http,
            "cemwatch_connections_refused_total{reason=\"key_mismatch\"}"
        ),
        1.0
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        connected(a.http),
        vec!["victim"],
        "the real probe keeps its session"
    );
    let stored = crate::support::count(
        &rusqlite::Connection::open_with_flags(
            lab.dir.path().join("a/data/cemwatch.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("store"),
        "SELECT COUNT(*) FROM reports WHERE seq = 999999",
        [],
    );
    assert_eq!(stored, 0, "nothing of the impostor reached a's store");

    // With the setting on, a token without a name is refused with what to do.
    let (code, _, err) = admin(&["token", "create", "--labels", "site=x"], &b_config);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("give --name NAME"), "{err}");
}
