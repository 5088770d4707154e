//! The fleet's diagnosis of gateways as real gateways behave (issue 14): several probes run the
//! real check engine from different sites against `openssl s_server` and a replaying rustls
//! server, and the coordinator's diagnosis judges their results. A gateway that asks agents for
//! client certificates is `healthy` (not `gateway_down`) in TLS 1.2 and 1.3; one that does not
//! hold its certificate's key, or speaks only legacy TLS, is named for what it is.
//!
//! The probes run in this process (the check engine the agent runs, not the agent's QUIC
//! session); the fleet tests in `coordinator/tests` cover the transport.

use std::sync::Arc;

use cemwatch_coordinator::analysis::diagnose::{diagnose, Observation};

use cemwatch_coordinator::model::diagnosis::Kind;

use cemwatch_coordinator::model::check::{Role, Thresholds};
use cemwatch_coordinator::model::latest::Latest;
use cemwatch_probe::check::{run_check, CheckContext, CheckSpec, ResolveOverride, TrustStore};
use cemwatch_shared::{CheckResult, Expectations, FindingCode, Severity, Target, Thumbprint};
use cemwatch_tests::peers::{OpensslPeer, ReplayServer};
use cemwatch_tests::pki::{Ca, Leaf, LeafSpec};
use cemwatch_tests::server::Versions;

const GW: &str = "gateway.example.com";
const SMP: &str = "smp.example.net";
const SITES: [(&str, &str, &str); 4] = [
    ("eu-1", "eu-west", "internet"),
    ("eu-2", "eu-west", "internet"),
    ("us-1", "us-east", "internet"),
    ("dmz-1", "dmz", "dmz"),
];

fn probe_results(root: &Ca, leaf: &Leaf, port: u16) -> Vec<CheckResult> {
    let mut trust = TrustStore::empty();
    trust.add_der(root.cert_der.clone());
    let mut ctx = CheckContext::new(Arc::new(trust));
    ctx.overrides = vec![format!("{GW}:*:127.0.0.1")
        .parse::<ResolveOverride>()
        .expect("override")];
    let spec = CheckSpec {
        target: Target {
            host: GW.into(),
            port,
        },
        expectations: Expectations {
            thumbprint: Thumbprint::parse(&leaf.thumbprint()).ok(),
            required_sans: vec![SMP.into()],
            legacy_ports: Vec::new(),
            ..Expectations::default()
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    SITES
        .iter()
        .map(|_| rt.block_on(run_check(&spec, &ctx)))
        .collect()
}

fn fleet_diagnosis(results: &[CheckResult], port: u16) -> (Kind, String) {
    let latest: Vec<Latest> = results
        .iter()
        .enumerate()
        .map(|(i, r)| Latest::from_result(i as u64 + 1, None, 0, r))
        .collect();
    let observations: Vec<Observation<'_>> = SITES
        .iter()
        .zip(&latest)
        .map(|(&(probe, site, vantage), latest)| Observation {
            probe,
            site,
            vantage,
            latest,
        })
        .collect();
    let d = diagnose(Role::Gateway, port, &observations, Thresholds::default());
    (d.kind, d.summary)
}

#[test]
fn a_gateway_asking_for_client_certificates_is_diagnosed_healthy() {
    let root = Ca::root("cemwatch Test Root CA").expect("root");
    let agents = Ca::root("cemwatch Test Agents CA").expect("agents CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let agents_file = agents.write_pem(dir.path()).expect("write");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    for version in ["-tls1_2", "-tls1_3"] {
        let peer = OpensslPeer::start(
            &leaf,
            &[
                version,
                "-Verify",
                "1",
                "-CAfile",
                &agents_file.display().to_string(),
            ],
        )
        .expect("s_server");
        let results = probe_results(&root, &leaf, peer.port());
        for r in &results {
            assert_eq!(r.verdict, Severity::Ok, "{version}: {:?}", r.findings);
            assert!(r
                .tls
                .as_ref()
                .is_some_and(|t| t.client_certificate_requested));
        }
        let (kind, summary) = fleet_diagnosis(&results, peer.port());
        assert_eq!(kind, Kind::Healthy, "{version}: {summary}");
    }
}

#[test]
fn a_replayed_chain_and_a_legacy_gateway_are_named_for_what_they_are() {
    let root = Ca::root("cemwatch Test Root CA").expect("root");
    let leaf = root.issue(&LeafSpec::good(&[SMP, GW])).expect("leaf");
    let impostor = root.issue(&LeafSpec::good(&[GW])).expect("impostor");
    let replay = ReplayServer::start(&leaf, &impostor, Versions::Both).expect("replay");
    let results = probe_results(&root, &leaf, replay.port());
    assert!(results
        .iter()
        .all(|r| r.has(FindingCode::HandshakeKeyMismatch)));
    let (kind, summary) = fleet_diagnosis(&results, replay.port());
    assert_eq!(
        kind,
        Kind::CertProblem(FindingCode::HandshakeKeyMismatch),
        "{summary}"
    );
    drop(replay);

    let legacy =
        OpensslPeer::start(&leaf, &["-tls1_2", "-cipher", "AES128-SHA"]).expect("s_server");
    let results = probe_results(&root, &leaf, legacy.port());
    let (kind, summary) = fleet_diagnosis(&results, legacy.port());
    assert_eq!(kind, Kind::CertProblem(FindingCode::TlsLegacy), "{summary}");
    assert_eq!(kind.severity(), Severity::Warn);
}
