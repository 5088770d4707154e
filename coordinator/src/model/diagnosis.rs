//! The fleet diagnosis of one check: its kind (with its stable label) and its explanation.

use serde::{Deserialize, Serialize};

use cemwatch_shared::{FindingCode, Severity};

/// The diagnosis of one check.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Everything right.
    Healthy,
    /// A certificate defect the failing probes agree on.
    CertProblem(FindingCode),
    /// The gateway answers on a legacy port, not the policy port.
    ListenerOnLegacyPort,
    /// Internet vantages fail; the DMZ reaches the listener.
    PerimeterBlocked,
    /// Nothing answers from any vantage.
    GatewayDown,
    /// Failures confined to a minority of sites.
    LocalNetwork,
    /// DMZ checks of the SMP fail.
    GatewayCannotReachSmp,
    /// Failures (or another certificate) at some addresses of the name while others are fine.
    NodeProblem,
    /// Some sites see a certificate from another issuer than the rest of the fleet: a
    /// TLS-inspecting proxy on their path.
    TlsIntercepted,
    /// No fresh result.
    #[default]
    NoData,
}

/// Every kind but `cert_problem:<code>` with its label, in the order the state-set metric
/// lists them: the one table [`Kind::label`], [`Kind::from_label`] and [`Kind::all_labels`] read.
const LABELS: [(Kind, &str); 9] = [
    (Kind::Healthy, "healthy"),
    (Kind::ListenerOnLegacyPort, "listener_on_legacy_port"),
    (Kind::PerimeterBlocked, "perimeter_blocked"),
    (Kind::GatewayDown, "gateway_down"),
    (Kind::LocalNetwork, "local_network"),
    (Kind::GatewayCannotReachSmp, "gateway_cannot_reach_smp"),
    (Kind::NodeProblem, "node_problem"),
    (Kind::TlsIntercepted, "tls_intercepted"),
    (Kind::NoData, "no_data"),
];

/// The prefix of a certificate diagnosis' label.
const CERT_PROBLEM: &str = "cert_problem:";

impl Kind {
    /// Parses a label back into a kind.
    pub fn from_label(label: &str) -> Option<Self> {
        if let Some(code) = label.strip_prefix(CERT_PROBLEM) {
            return FindingCode::from_name(code).map(Kind::CertProblem);
        }
        LABELS.iter().find(|(_, l)| *l == label).map(|(k, _)| *k)
    }
}

/// Certificate codes a `cert_problem` can name: the served certificate's defects, and what the
/// TLS stage says about a gateway that answers (its key not proven, legacy TLS only, the
/// agent certificate refused or expiring).
pub const CERT_CODES: [FindingCode; 22] = [
    FindingCode::CertUntrusted,
    FindingCode::ChainIncomplete,
    FindingCode::ChainInvalid,
    FindingCode::CertRevoked,
    FindingCode::CertNameMismatch,
    FindingCode::CertSanMissing,
    FindingCode::ThumbprintMismatch,
    FindingCode::CertExpired,
    FindingCode::CertNotYetValid,
    FindingCode::CertExpiring,
    FindingCode::EkuMissingServerAuth,
    FindingCode::SignatureSha1,
    FindingCode::SignatureInsecure,
    FindingCode::KeyTooSmall,
    FindingCode::KeyNotRsa,
    FindingCode::HandshakeKeyMismatch,
    FindingCode::ClientCertRejected,
    FindingCode::ClientCertExpired,
    FindingCode::ClientCertExpiring,
    FindingCode::TlsLegacy,
    FindingCode::RevocationUnreachable,
    FindingCode::RevocationStale,
];

impl Kind {
    /// The label: `healthy`, `cert_problem:thumbprint_mismatch`, `perimeter_blocked`, ...
    pub fn label(self) -> String {
        match self {
            Kind::CertProblem(code) => format!("{CERT_PROBLEM}{}", code.as_str()),
            other => LABELS
                .iter()
                .find(|(k, _)| *k == other)
                .map(|(_, l)| (*l).to_string())
                .unwrap_or_default(),
        }
    }

    /// Every label the state-set metric carries, in a stable order.
    pub fn all_labels() -> Vec<String> {
        LABELS
            .iter()
            .map(|(_, l)| (*l).to_string())
            .chain(CERT_CODES.iter().map(|c| Kind::CertProblem(*c).label()))
            .collect()
    }

    /// The severity a dashboard colours it with.
    pub fn severity(self) -> Severity {
        match self {
            Kind::Healthy => Severity::Ok,
            Kind::CertProblem(code) => code.severity(),
            Kind::NoData => Severity::Warn,
            _ => Severity::Fail,
        }
    }
}

/// A diagnosis with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The label (`healthy`, `cert_problem:<code>`, ...).
    pub diagnosis: String,
    /// The kind.
    #[serde(skip)]
    pub kind: Kind,
    /// `ok`, `warn` or `fail`.
    pub severity: Severity,
    /// What the fleet sees, with counts.
    pub summary: String,
    /// What to do.
    pub remedy: String,
    /// The sites concerned, when the problem is not everywhere.
    pub sites: Vec<String>,
    /// The nodes concerned (`node_problem`), each with its codes.
    #[serde(default)]
    pub nodes: Vec<NodeFault>,
}

/// A node a diagnosis names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFault {
    /// The IP address.
    pub address: String,
    /// What most probes that tried it see there and the other nodes do not show.
    pub codes: Vec<String>,
    /// The certificate most of them see there.
    pub thumbprint: Option<String>,
    /// Probes that tried it.
    pub probes: u64,
}
