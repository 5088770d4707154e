//! The registry of probes: who is known and who is revoked, shared with the QUIC verifier.

use std::collections::HashSet;

/// Names of known and revoked probes, shared with the verifier.
#[derive(Debug, Default)]
pub struct AuthState {
    /// Probes that enrolled.
    pub known: HashSet<String>,
    /// Probes that were revoked.
    pub revoked: HashSet<String>,
    /// Accept unknown probes with a valid certificate of this CA (`trust_shared_ca_probes`).
    pub adopt_unknown: bool,
}

impl AuthState {
    /// Whether probe `name`, whose certificate expires at `not_after` (Unix seconds), may hold a
    /// session at `now` (Unix seconds). The verifier decides this during a full handshake; a
    /// resumed session skips the verifier, so the session code asks again. The error is the
    /// `connections_refused_total` reason and a message for the probe.
    pub fn recheck(
        &self,
        name: &str,
        not_after: i64,
        now: i64,
    ) -> Result<(), (&'static str, String)> {
        if self.revoked.contains(name) {
            return Err((
                "revoked",
                format!("certificate refused: probe {name:?} was revoked"),
            ));
        }
        if !self.known.contains(name) && !self.adopt_unknown {
            return Err((
                "unknown_probe",
                format!("certificate refused: probe {name:?} is not enrolled here"),
            ));
        }
        if not_after < now {
            return Err((
                "expired",
                format!("certificate refused: the certificate of probe {name:?} has expired"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_session_is_refused_once_revoked_removed_or_expired() {
        let mut auth = AuthState::default();
        auth.known.insert("p1".into());
        assert_eq!(auth.recheck("p1", 2_000, 1_000), Ok(()));
        assert_eq!(
            auth.recheck("p1", 999, 1_000).map_err(|e| e.0),
            Err("expired")
        );
        assert_eq!(
            auth.recheck("p2", 2_000, 1_000).map_err(|e| e.0),
            Err("unknown_probe")
        );
        auth.revoked.insert("p1".into());
        assert_eq!(
            auth.recheck("p1", 2_000, 1_000).map_err(|e| e.0),
            Err("revoked")
        );
        // A coordinator sharing its CA adopts unknown probes on their first Hello.
        auth.adopt_unknown = true;
        assert_eq!(auth.recheck("p2", 2_000, 1_000), Ok(()));
        assert_eq!(
            auth.recheck("p2", 999, 1_000).map_err(|e| e.0),
            Err("expired")
        );
    }
}
