//! Finding codes: the stable vocabulary of what can be wrong with a gateway.
//!
//! Codes are part of the contract: tests, metrics labels, the JSON API and dashboards use the
//! `snake_case` names. Each code has a fixed severity and a default remedy taken from the CEM
//! split-domain guide; a finding carries a message with the facts of one observation and the
//! remedy, which the check engine may make concrete (port numbers, names).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a finding is. The verdict of a check is the worst severity among its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing wrong.
    Ok,
    /// Works today, needs attention (expiring soon, SHA-1 signature).
    Warn,
    /// Agents cannot connect, or will be rejected.
    Fail,
}

impl Severity {
    /// The lower-case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "warn",
            Severity::Fail => "fail",
        }
    }

    /// Exit code of a one-shot command with this verdict (monitoring-plugin convention).
    pub fn exit_code(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Warn => 1,
            Severity::Fail => 2,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! finding_codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $severity:ident, $title:literal, $remedy:literal; )*) => {
        /// A stable finding code. See `shared/DESIGN.md` for the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FindingCode {
            $( $(#[$doc])* $variant, )*
        }

        impl FindingCode {
            /// Every code, in a stable order.
            pub const ALL: &'static [FindingCode] = &[ $( FindingCode::$variant, )* ];

            /// The `snake_case` name used in JSON, metrics and the API.
            pub fn as_str(self) -> &'static str {
                match self { $( FindingCode::$variant => $name, )* }
            }

            /// The fixed severity of this code.
            pub fn severity(self) -> Severity {
                match self { $( FindingCode::$variant => Severity::$severity, )* }
            }

            /// A short statement of what this code means.
            pub fn title(self) -> &'static str {
                match self { $( FindingCode::$variant => $title, )* }
            }

            /// The default remedy, from the CEM guide.
            pub fn remedy(self) -> &'static str {
                match self { $( FindingCode::$variant => $remedy, )* }
            }

            /// Looks a code up by its `snake_case` name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $( $name => Some(FindingCode::$variant), )* _ => None }
            }
        }
    };
}

finding_codes! {
    /// The gateway FQDN does not resolve.
    DnsUnresolved = "dns_unresolved", Fail,
        "the gateway name does not resolve",
        "Publish the gateway's external FQDN in public DNS: agents on the internet resolve it by that name.";
    /// The host answered with a reset: nothing listens on the port.
    TcpRefused = "tcp_refused", Fail,
        "connection refused: nothing listens on the port",
        "Start the Internet Gateway service and check the agent listener port in Gateway Manager (General tab); if the perimeter firewall rejects the port, open it inbound to the DMZ.";
    /// No answer before the connect timeout: a firewall drops the traffic.
    TcpFiltered = "tcp_filtered", Fail,
        "no answer on the port: a firewall drops the traffic",
        "Open the port inbound (internet to DMZ) on the perimeter firewall for the gateway; if the firewall does NAT, the translated port must be the port the gateway listens on.";
    /// An ICMP error (host or network unreachable, administratively prohibited).
    TcpUnreachable = "tcp_unreachable", Fail,
        "the gateway host or network is unreachable",
        "Check routing to the DMZ and the perimeter firewall: a router or firewall answered that the gateway cannot be reached.";
    /// The gateway answers on a legacy port, not on the expected one.
    ListenerOnLegacyPort = "listener_on_legacy_port", Fail,
        "the gateway listens on a legacy port, not the expected one",
        "Set the agent listener port in Gateway Manager (General tab) to the port in the CEM Settings policy, then restart the Internet Gateway service.";
    /// The port accepts TCP but does not complete a TLS handshake.
    TlsHandshakeFailed = "tls_handshake_failed", Fail,
        "the port does not complete a TLS handshake",
        "Check that the Internet Gateway service owns the port and has the SAN certificate imported (Gateway Manager); another process may hold the port.";
    /// The certificate chain does not lead to a trusted root.
    CertUntrusted = "cert_untrusted", Fail,
        "the certificate chain does not reach a trusted root",
        "Distribute the issuing root CA to all managed endpoints (Trusted Root Certification Authorities), and serve the intermediate certificates with the gateway certificate.";
    /// The SAN does not cover the gateway FQDN.
    CertNameMismatch = "cert_name_mismatch", Fail,
        "the certificate does not cover the gateway name",
        "Issue a SAN certificate that lists the gateway's external FQDN, import it into Gateway Manager and update the thumbprint in the CEM Settings policy.";
    /// The SAN lacks another required name (such as the SMP FQDN).
    CertSanMissing = "cert_san_missing", Fail,
        "the certificate lacks a required SAN",
        "The wrong certificate is bound: re-issue or re-import the SAN certificate that lists both the SMP FQDN and the gateway FQDN.";
    /// The served certificate is not the one in the CEM policy.
    ThumbprintMismatch = "thumbprint_mismatch", Fail,
        "the served certificate is not the one in the CEM policy",
        "Agents reject the gateway: update the certificate thumbprint in the CEM Settings policy (no spaces) to the thumbprint Gateway Manager shows, or import the certificate the policy names.";
    /// The certificate has expired.
    CertExpired = "cert_expired", Fail,
        "the certificate has expired",
        "Renew the gateway certificate, import it into Gateway Manager and IIS, and update the thumbprint in the CEM Settings policy.";
    /// The certificate is not valid yet.
    CertNotYetValid = "cert_not_yet_valid", Fail,
        "the certificate is not valid yet",
        "Check the gateway's clock and the certificate's not-before date; bind a certificate that is already valid.";
    /// Fewer days left than the threshold.
    CertExpiring = "cert_expiring", Warn,
        "the certificate expires soon",
        "Renew the certificate now; after import, update the CEM Settings policy thumbprint and verify the fleet sees the new one.";
    /// No Server Authentication EKU (absent EKU included).
    EkuMissingServerAuth = "eku_missing_server_auth", Fail,
        "the certificate lacks the Server Authentication EKU",
        "Re-issue the certificate with Extended Key Usage Server Authentication (1.3.6.1.5.5.7.3.1): IIS rejects the binding without it.";
    /// SHA-1 signature.
    SignatureSha1 = "signature_sha1", Warn,
        "the certificate is signed with SHA-1",
        "Re-issue the certificate with SHA-256 or stronger: SHA-1 is not recommended.";
    /// MD5 or MD2 signature.
    SignatureInsecure = "signature_insecure", Fail,
        "the certificate is signed with MD5 or MD2",
        "Re-issue the certificate with SHA-256 or stronger: MD5 is not accepted.";
    /// RSA key under 2048 bits.
    KeyTooSmall = "key_too_small", Fail,
        "the RSA key is smaller than 2048 bits",
        "Re-issue the certificate with an RSA key of at least 2048 bits.";
    /// The key is not RSA.
    KeyNotRsa = "key_not_rsa", Fail,
        "the certificate key is not RSA",
        "Re-issue the certificate with an RSA key (2048 bits or more): the CEM certificate profile requires RSA.";
    /// A PKCS#12 file without a private key.
    PfxNoPrivateKey = "pfx_no_private_key", Fail,
        "the .pfx holds no private key",
        "Export the certificate again as .pfx (PKCS #12 with private key): in certlm.msc on the machine that made the certificate request, Personal > Certificates > All Tasks > Export, choose \"Yes, export the private key\". Gateway Manager and the IIS binding need the private key.";
    /// The private key in the file does not belong to the certificate.
    KeyMismatch = "key_mismatch", Fail,
        "the private key does not belong to the certificate",
        "Export the certificate together with its own private key (the key of the request it was issued for), as .pfx with \"Yes, export the private key\"; a certificate paired with another key cannot be bound in IIS nor imported into Gateway Manager.";
    /// An issuer the path needs is neither sent (by the server, or held by the file) nor in the
    /// trust store: a missing intermediate, not an unknown root.
    ChainIncomplete = "chain_incomplete", Fail,
        "the certificate chain lacks an intermediate certificate",
        "Serve the intermediate CA certificates with the gateway certificate: export the .pfx with \"Include all certificates in the certification path if possible\" and import it into Gateway Manager and IIS (or install the intermediates in the Intermediate Certification Authorities store of the Internet Gateway server). If the missing issuer is the root CA itself, distribute it to all managed endpoints (Trusted Root Certification Authorities).";
    /// The path reaches a trusted root, but a certificate on it is invalid: an intermediate
    /// expired or not yet valid, not a CA, its constraints violated, a signature that cannot be
    /// verified, or a served certificate that is itself a CA.
    ChainInvalid = "chain_invalid", Fail,
        "a certificate on the chain is invalid",
        "Agents reject the gateway: replace the CA certificate named in the message with a valid one from the issuing CA (within its validity period, a CA with keyCertSign, within its path length, not restricted away from Server Authentication, signed with SHA-256 or stronger) and serve it with the gateway certificate, then re-import the .pfx into Gateway Manager and IIS.";
    /// The file is not PKCS#12, which the guide requires for import.
    NotPfx = "not_pfx", Warn,
        "the file is not a .pfx (PKCS #12)",
        "ITMS imports certificates only as .pfx (PKCS #12 with private key): export the certificate with its private key as .pfx (certlm.msc, Export, \"Yes, export the private key\"), or build one with `openssl pkcs12 -export -in cert.pem -inkey key.pem -certfile chain.pem -out gateway.pfx`.";    /// The handshake signature does not verify with the served certificate's key: something
    /// on the path presents the gateway's certificate without holding its key.
    HandshakeKeyMismatch = "handshake_key_mismatch", Fail,
        "the server does not hold the key of the certificate it serves",
        "Something between the agents and the gateway presents the gateway's certificate without its private key (an intercepting proxy, TLS inspection on a firewall or IPS, or a device that took over the gateway's address): agents reject it. Find that device (compare with a probe in the DMZ), exempt the agent listener port from TLS inspection, and check that the gateway's DNS name and NAT still lead to the Internet Gateway server.";
    /// The gateway refused the agent certificate the probe presented.
    ClientCertRejected = "client_cert_rejected", Fail,
        "the gateway refused the agent's client certificate",
        "The gateway does not trust the issuer of the agents' certificates, or the certificate expired: import the root CA that issues the agent certificates into Trusted Root Certification Authorities on the Internet Gateway server, and renew an agent certificate that has expired.";
    /// The agent certificate given to the probe has expired or is not valid yet.
    ClientCertExpired = "client_cert_expired", Fail,
        "the agent's client certificate has expired or is not valid yet",
        "Renew the agent's client certificate (the one given with --client-cert): the gateway refuses an agent whose certificate has expired.";
    /// The agent certificate given to the probe expires soon.
    ClientCertExpiring = "client_cert_expiring", Warn,
        "the agent's client certificate expires soon",
        "Renew the agent's client certificate (the one given with --client-cert) before it expires: the gateway will then refuse the agent.";
    /// The gateway negotiates only TLS that rustls refuses (TLS 1.0/1.1, CBC, static RSA, DHE).
    TlsLegacy = "tls_legacy", Warn,
        "the gateway speaks only legacy TLS: agents connect; modern clients and hardened agents will not",
        "Enable TLS 1.2 with ECDHE key exchange and AES-GCM cipher suites on the Internet Gateway server (SChannel protocols and cipher suite order), then restart it: agents connect today, but modern clients and agents hardened to TLS 1.2 with forward secrecy will not.";
    /// A certificate of the path is listed on its issuer's CRL.
    CertRevoked = "cert_revoked", Fail,
        "a certificate on the chain is revoked",
        "Agents that check revocation reject the gateway: issue a new gateway certificate (or have the CA issue a new intermediate, when the revoked one is a CA), import the .pfx into Gateway Manager and IIS on every gateway node, and put its thumbprint in the CEM Settings policy.";
    /// No CRL of a certificate on the path could be fetched from the probe's vantage.
    RevocationUnreachable = "revocation_unreachable", Warn,
        "the revocation information cannot be reached from the internet",
        "Agents that check revocation cannot connect from the internet: publish the CA's CRLs (and its certificates) at an HTTP URL reachable from the internet (a CDP/AIA location on a web server in the DMZ, added to the CA's extensions before issuing), or re-issue the gateway certificate from a CA that does; LDAP and file locations serve only the internal network.";
    /// The CRL a distribution point serves is past its nextUpdate.
    RevocationStale = "revocation_stale", Warn,
        "the CRL is out of date",
        "Publish a current CRL: the CA's CRL is past its next update, and agents that check revocation treat it as unavailable. Check that the CA publishes CRLs on schedule (certutil -CRL on the CA) and that the copy at the distribution point is refreshed.";
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One observation of something wrong, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The stable code.
    pub code: FindingCode,
    /// The code's severity (repeated so JSON consumers need no table).
    pub severity: Severity,
    /// What was observed, with the facts (names, ports, thumbprints).
    pub message: String,
    /// What to do.
    pub remedy: String,
    /// The address of the gateway's name this finding was seen at, when the name's addresses
    /// disagree (one node serving another certificate, one node down); `None` when every
    /// address checked shows it, or the name has one address.
    #[serde(default)]
    pub address: Option<String>,
}

impl Finding {
    /// The same finding at another severity: `chain_incomplete` is a warning when the probe
    /// completed the path from the certificate's AIA URL, as Windows agents do.
    pub fn at(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// A finding with the code's default remedy.
    pub fn new(code: FindingCode, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: code.severity(),
            message: message.into(),
            remedy: code.remedy().to_string(),
            address: None,
        }
    }

    /// A finding with a remedy made concrete for this observation.
    pub fn with_remedy(code: FindingCode, message: impl Into<String>, remedy: String) -> Self {
        Self {
            code,
            severity: code.severity(),
            message: message.into(),
            remedy,
            address: None,
        }
    }
}

/// The verdict of a set of findings: the worst severity, `ok` when there are none.
pub fn verdict(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for &code in FindingCode::ALL {
            assert_eq!(FindingCode::from_name(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(!code.remedy().is_empty());
        }
        assert_eq!(FindingCode::from_name("nope"), None);
    }

    #[test]
    fn severities_follow_the_design_table() {
        use FindingCode::*;
        for code in [
            CertExpiring,
            SignatureSha1,
            NotPfx,
            ClientCertExpiring,
            TlsLegacy,
            RevocationUnreachable,
            RevocationStale,
        ] {
            assert_eq!(code.severity(), Severity::Warn, "{code}");
        }
        let warn = FindingCode::ALL
            .iter()
            .filter(|c| c.severity() == Severity::Warn)
            .count();
        assert_eq!(
            warn, 7,
            "only cert_expiring, signature_sha1, not_pfx, client_cert_expiring, tls_legacy, revocation_unreachable and revocation_stale are warnings"
        );
        for code in [
            PfxNoPrivateKey,
            KeyMismatch,
            ChainIncomplete,
            ChainInvalid,
            HandshakeKeyMismatch,
            ClientCertRejected,
            ClientCertExpired,
            CertRevoked,
        ] {
            assert_eq!(code.severity(), Severity::Fail, "{code}");
        }
    }

    #[test]
    fn verdict_is_the_worst_severity() {
        assert_eq!(verdict(&[]), Severity::Ok);
        let warn = Finding::new(FindingCode::CertExpiring, "20 days left");
        let fail = Finding::new(FindingCode::KeyNotRsa, "ECDSA P-256");
        assert_eq!(verdict(std::slice::from_ref(&warn)), Severity::Warn);
        assert_eq!(verdict(&[warn, fail]), Severity::Fail);
        assert_eq!(Severity::Fail.exit_code(), 2);
    }
}
