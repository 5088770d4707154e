//! A fleet of real probes (`cemwatch serve`, `token create`, `cemwatch-probe enroll` and `run`,
//! as the README sets them up) against gateways no cemwatch code wrote: `openssl s_server`
//! asking every client for a certificate (`-Verify 1`), as a CEM Internet Gateway does, on
//! TLS 1.2 (where the server ends the handshake when none comes) and TLS 1.3. The fleet
//! diagnoses both `healthy`, not `gateway_down`, from internet sites and the DMZ alike.

use std::time::{Duration, Instant};

use cemwatch_tests::peers::OpensslPeer;
use cemwatch_tests::pki::{Ca, LeafSpec};

use crate::support::fixtures::server_toml;
use crate::support::{enrolled_probes, shared, start_coordinator, try_get_json, GW, SMP};

#[test]
fn a_gateway_asking_for_agent_certificates_is_healthy_for_a_fleet_of_real_probes() {
    let _shared = shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Ca::root("Gateway Root CA").expect("root");
    let ca_file = root.write_pem(dir.path()).expect("ca file");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    let agents = Ca::root("CEM Agents CA").expect("agents CA");
    let agents_dir = dir.path().join("agents");
    std::fs::create_dir_all(&agents_dir).expect("agents dir");
    let agents_file = agents.write_pem(&agents_dir).expect("agents file");
    let agents_file = agents_file.to_string_lossy().into_owned();
    let gateways: Vec<(&str, OpensslPeer)> = [("gw12", "-tls1_2"), ("gw13", "-tls1_3")]
        .into_iter()
        .map(|(name, version)| {
            let peer =
                OpensslPeer::start(&leaf, &[version, "-Verify", "1", "-CAfile", &agents_file])
                    .unwrap_or_else(|e| panic!("openssl s_server {version}: {e:#}"));
            (name, peer)
        })
        .collect();
    let mut config = server_toml(0, "");
    for (name, peer) in &gateways {
        config.push_str(&format!(
            "[[check]]\nname = \"{name}\"\nhost = \"{GW}\"\nport = {}\nlegacy_ports = []\nexpect_thumbprint = \"{}\"\nrequire_san = [\"{SMP}\"]\ninterval = \"1s\"\nresolve = [\"{GW}:*:127.0.0.1\"]\n\n",
            peer.port(),
            leaf.thumbprint()
        ));
    }
    let config_path = dir.path().join("cemwatch.toml");
    std::fs::write(&config_path, config).expect("config");
    let coordinator = start_coordinator("coordinator", &config_path);
    let _probes = enrolled_probes(
        &coordinator,
        &config_path,
        dir.path(),
        &ca_file,
        &[
            ("eu-1", "site=eu,vantage=internet"),
            ("us-1", "site=us,vantage=internet"),
            ("ap-1", "site=ap,vantage=internet"),
            ("dmz-1", "site=dmz,vantage=dmz"),
        ],
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let healthy = |fleet: &serde_json::Value| {
        fleet["checks"].as_array().is_some_and(|checks| {
            checks.len() == 2
                && checks
                    .iter()
                    .all(|c| c["diagnosis"] == "healthy" && c["verdicts"]["ok"] == 4)
        })
    };
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Some(fleet) = try_get_json(coordinator.http, "/api/v1/fleet") {
            if healthy(&fleet) {
                last = fleet;
                break;
            }
            last = fleet;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        healthy(&last),
        "both gateways healthy for all four probes within 60 s; the fleet said:\n{last:#}\nTLS 1.2 server log:\n{}",
        gateways[0].1.log()
    );
    for check in last["checks"].as_array().into_iter().flatten() {
        assert_eq!(check["verdicts"]["fail"], 0, "{check:#}");
        assert_eq!(
            check["ports"]["listener_port"], check["ports"]["policy_port"],
            "{check:#}"
        );
    }
    println!(
        "fleet of 4 real probes: gw12 (TLS 1.2, -Verify 1) and gw13 (TLS 1.3, -Verify 1) both healthy"
    );
}
