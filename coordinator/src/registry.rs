//! The registry: the one place a probe's state changes. Enrolled, adopted, revoked,
//! connected, disconnected, reported, renewed, its agent's state: each is one method here,
//! which writes the store (through its single writer) and then the in-memory views that the
//! QUIC verifier (who is known and revoked) and the analysis (the fleet) read, in that order,
//! so a restart never finds the store behind what was acknowledged.
//!
//! The locks are `parking_lot`'s: they cannot be poisoned, so a panic while one is held ends the
//! process with its message instead of leaving later updates silently skipped. Reads take them
//! briefly ([`Registry::fleet`], [`Registry::auth`]); no lock is held across an await.

use std::collections::HashSet;

use parking_lot::{RwLock, RwLockReadGuard};

use cemwatch_shared::wire::{Labels, Report};
use cemwatch_shared::AgentCemState;

use crate::analysis::fleet::Fleet;
use crate::store::{self, Grant, Ingested, Result, StoreError, TokenRefusal, Writer};
use crate::telemetry::Refusal;

/// Names of known and revoked probes, shared with the verifier.
#[derive(Debug, Default)]
pub struct AuthState {
    /// Probes that enrolled.
    pub known: HashSet<String>,
    /// Probes that were revoked.
    pub revoked: HashSet<String>,
    /// Accept unknown probes with a valid certificate of this CA (`trust_shared_ca_probes`).
    pub adopt_unknown: bool,
    /// The key each probe is bound to (SHA-256 of its public key), recorded at enrolment or on
    /// its first `Hello`: a certificate for the same name with another key (an enrolment under
    /// that name at another coordinator sharing the CA) is refused.
    pub keys: std::collections::HashMap<String, [u8; 32]>,
}

impl AuthState {
    /// Whether probe `name`, whose certificate expires at `not_after` (Unix seconds), may hold a
    /// session at `now` (Unix seconds). The verifier decides this during a full handshake; a
    /// resumed session skips the verifier, so the session code asks again.
    pub fn recheck(&self, name: &str, not_after: i64, now: i64) -> Result<(), CertificateRefused> {
        if self.revoked.contains(name) {
            return Err(CertificateRefused::Revoked(name.to_string()));
        }
        if !self.known.contains(name) && !self.adopt_unknown {
            return Err(CertificateRefused::Unknown(name.to_string()));
        }
        if not_after < now {
            return Err(CertificateRefused::Expired(name.to_string()));
        }
        Ok(())
    }
}

/// Why a probe's certificate is refused after the handshake (the message goes to the probe).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateRefused {
    /// The probe was revoked.
    #[error("certificate refused: probe {0:?} was revoked")]
    Revoked(String),
    /// The probe is not enrolled here (and shared-CA probes are not adopted).
    #[error("certificate refused: probe {0:?} is not enrolled here")]
    Unknown(String),
    /// The certificate expired.
    #[error("certificate refused: the certificate of probe {0:?} has expired")]
    Expired(String),
}

impl CertificateRefused {
    /// The `connections_refused_total` reason.
    pub fn reason(&self) -> Refusal {
        match self {
            CertificateRefused::Revoked(_) => Refusal::Revoked,
            CertificateRefused::Unknown(_) => Refusal::UnknownProbe,
            CertificateRefused::Expired(_) => Refusal::Expired,
        }
    }
}

/// Probes, their store and their in-memory views.
#[derive(Debug)]
pub struct Registry {
    auth: RwLock<AuthState>,
    fleet: std::sync::Arc<RwLock<Fleet>>,
    writer: Writer,
}

impl Registry {
    /// A registry over what the store holds. The writer records every report it commits in
    /// the fleet view, once per group commit and before any of them is acknowledged.
    pub fn new(fleet: Fleet, auth: AuthState, writer: Writer) -> Self {
        let fleet = std::sync::Arc::new(RwLock::new(fleet));
        let view = fleet.clone();
        writer.on_commit(Box::new(move |reports, now_ms| {
            let mut fleet = view.write();
            for (probe, report) in reports.iter_mut() {
                fleet.record(probe, report, now_ms);
            }
        }));
        Self {
            auth: RwLock::new(auth),
            fleet,
            writer,
        }
    }

    /// Whether probe `name` may use `key`: binds it when the probe has no key yet (or at
    /// enrolment, `replace`), and answers whether the probe's key is `key`. A known binding is
    /// answered from memory; only a new one is written.
    pub async fn bind_key(&self, name: &str, key: [u8; 32], replace: bool) -> Result<bool> {
        if !replace {
            if let Some(bound) = self.auth.read().keys.get(name) {
                return Ok(*bound == key);
            }
        }
        let bound = self.writer.bind_key(name.to_string(), key, replace).await?;
        self.auth.write().keys.insert(name.to_string(), bound);
        Ok(bound == key)
    }

    /// A node of a check switched certificates ([`crate::analysis::nodes::switches`]): one
    /// event in the log.
    pub async fn node_switched(&self, switch: crate::analysis::nodes::Switch) -> Result<()> {
        self.writer
            .node_switched(
                crate::store::now_ms(),
                switch.check,
                switch.address,
                switch.from,
                switch.to,
            )
            .await
    }

    /// One pruning step of the store ([`crate::store::retention`]).
    pub async fn prune_store(
        &self,
        keep: std::time::Duration,
        max_size: u64,
    ) -> crate::store::Result<crate::store::retention::Pruned> {
        self.writer.prune(keep, max_size).await
    }

    /// Who is known and revoked (a short read: the verifier, the session re-check).
    pub fn auth(&self) -> RwLockReadGuard<'_, AuthState> {
        self.auth.read()
    }

    /// The fleet view (a short read: summaries, the API).
    pub fn fleet(&self) -> RwLockReadGuard<'_, Fleet> {
        self.fleet.read()
    }

    /// The fleet view, locked for writing (tests: hold it as the store's writer does).
    #[cfg(test)]
    pub(crate) fn fleet_mut(&self) -> parking_lot::RwLockWriteGuard<'_, Fleet> {
        self.fleet.write()
    }

    /// Whether unknown probes with a valid certificate of this CA are adopted
    /// (`trust_shared_ca_probes`, which a reload may change).
    pub fn set_adopt_unknown(&self, on: bool) {
        self.auth.write().adopt_unknown = on;
    }

    /// Enrols a probe: consumes the token, has `issue` make its certificate and records it
    /// ([`Writer::enrol`]), then knows it.
    pub async fn enrol<C, E>(
        &self,
        token_id: String,
        secret: String,
        requested_name: String,
        agent_version: String,
        issue: impl FnOnce(&str) -> Result<(C, String, i64), E> + Send + 'static,
    ) -> Result<Result<(Grant, C), TokenRefusal>, StoreError>
    where
        C: Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let issue = move |name: &str| issue(name).map_err(|e| StoreError::Issue(e.into()));
        let outcome = self
            .writer
            .enrol(token_id, secret, requested_name, agent_version, issue)
            .await?;
        if let Ok((grant, _)) = &outcome {
            self.auth.write().known.insert(grant.name.clone());
            let mut fleet = self.fleet.write();
            let view = fleet.probes.entry(grant.name.clone()).or_default();
            view.labels = std::sync::Arc::new(grant.labels.clone());
            view.last_seen_ms = store::now_ms();
        }
        Ok(outcome)
    }

    /// Adopts a probe enrolled at a coordinator sharing this CA, with the labels it reports;
    /// false when it was known already.
    pub async fn adopt(
        &self,
        name: &str,
        labels: &Labels,
        agent_version: &str,
        cert_serial: String,
        cert_not_after: i64,
    ) -> Result<bool> {
        let recorded = self
            .writer
            .adopt(
                name.to_string(),
                labels.clone(),
                agent_version.to_string(),
                cert_serial,
                cert_not_after,
            )
            .await?;
        self.auth.write().known.insert(name.to_string());
        let mut fleet = self.fleet.write();
        let view = fleet.probes.entry(name.to_string()).or_default();
        view.labels = std::sync::Arc::new(labels.clone());
        view.last_seen_ms = store::now_ms();
        Ok(recorded)
    }

    /// A revocation the store already holds (`cemwatch probe revoke`, another process): the
    /// probe is refused from now on and its results stop counting.
    pub fn revoked(&self, name: &str) {
        self.auth.write().revoked.insert(name.to_string());
        if let Some(v) = self.fleet.write().probes.get_mut(name) {
            v.revoked = true;
            v.connected = false;
        }
    }

    /// Takes the store's list of revoked probes (another process, `cemwatch probe revoke`,
    /// writes it) and records each one not yet revoked here; returns those, whose connections
    /// the caller closes.
    pub fn revocations(&self, revoked: Vec<String>) -> Vec<String> {
        let new: Vec<String> = {
            let auth = self.auth.read();
            revoked
                .into_iter()
                .filter(|n| !auth.revoked.contains(n))
                .collect()
        };
        for name in &new {
            self.revoked(name);
        }
        new
    }

    /// A probe connected at `now_ms` with this version; its labels as the registry knows them.
    /// The store records the contact in its next group commit.
    pub fn connected(
        &self,
        name: &str,
        agent_version: &str,
        now_ms: i64,
    ) -> std::sync::Arc<Labels> {
        let labels = {
            let mut fleet = self.fleet.write();
            let view = fleet.probes.entry(name.to_string()).or_default();
            view.connected = true;
            view.connected_since_ms = now_ms;
            view.last_seen_ms = now_ms;
            if view.agent_version.as_deref() != Some(agent_version) {
                view.agent_version = Some(agent_version.to_string());
            }
            view.labels.clone()
        };
        self.writer.seen(name, agent_version);
        labels
    }

    /// A probe's connection ended (and no newer one replaced it).
    pub fn disconnected(&self, name: &str) {
        if let Some(view) = self.fleet.write().probes.get_mut(name) {
            view.connected = false;
        }
    }

    /// Commits a report ([`Writer::commit`]); when it is new, the writer has recorded it in the
    /// fleet view by the time it resolves. The report comes back with the outcome. Commit
    /// before the fleet and before the acknowledgement: what the probe is told is kept, is
    /// kept.
    pub async fn report(&self, name: &str, report: Report) -> (Result<Ingested>, Report) {
        self.writer.commit(name, report).await
    }

    /// A connection's commit path ([`Writer::path`]): reports submitted there are committed
    /// in the writer's groups, recorded in the fleet view, and their outcomes arrive in its
    /// mailbox, once per group.
    pub fn commit_path(&self, name: &str) -> store::CommitPath {
        self.writer.path(name)
    }

    /// A probe's certificate was renewed.
    pub async fn renewed(&self, name: &str, serial: String, not_after: i64) -> Result<()> {
        self.writer
            .renew_cert(name.to_string(), serial, not_after)
            .await
    }

    /// Keeps a probe's agent state: in the store (so a restart loses nothing), then in the
    /// fleet view, whatever the store said (it is state, not an event: the probe sends it again
    /// on its next connection). Returns the previous condition and the store's error, if any.
    pub async fn agent_state(
        &self,
        name: &str,
        state: AgentCemState,
        received_ms: i64,
    ) -> (Option<&'static str>, Option<StoreError>) {
        let stored = self
            .writer
            .save_agent_state(name.to_string(), state.clone(), received_ms)
            .await
            .err();
        let previous = self.fleet.write().record_agent(name, state, received_ms);
        (previous, stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_revocation_in_the_store_is_taken_once_whatever_its_time_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store::open(dir.path()).expect("store");
        let labels = Labels::default();
        for name in ["a", "b", "c"] {
            store::insert_probe(&db, name, &labels, 1, "01", 2_000_000_000, "test").expect("probe");
        }
        // Two revocations in one millisecond, and a third stamped earlier than both (a clock
        // step, another host): a watcher that asks for "revoked after the last one seen" misses
        // the second and the third.
        for (name, at) in [("a", 5_000), ("b", 5_000), ("c", 4_000)] {
            db.execute(
                "UPDATE probes SET revoked_at = ?2 WHERE name = ?1",
                rusqlite::params![name, at],
            )
            .expect("revoke");
        }
        let writer = Writer::start(dir.path()).expect("writer");
        let registry = Registry::new(Fleet::default(), AuthState::default(), writer);
        let mut first = registry.revocations(store::read::revoked(&db).expect("read"));
        first.sort();
        assert_eq!(first, vec!["a", "b", "c"]);
        assert!(registry.auth().revoked.contains("c"));
        assert_eq!(
            registry.revocations(store::read::revoked(&db).expect("read")),
            Vec::<String>::new(),
            "each is taken once"
        );
    }

    #[test]
    fn a_resumed_session_is_refused_once_revoked_removed_or_expired() {
        let mut auth = AuthState::default();
        auth.known.insert("p1".into());
        assert_eq!(auth.recheck("p1", 2_000, 1_000), Ok(()));
        assert_eq!(
            auth.recheck("p1", 999, 1_000).map_err(|e| e.reason()),
            Err(Refusal::Expired)
        );
        assert_eq!(
            auth.recheck("p2", 2_000, 1_000).map_err(|e| e.reason()),
            Err(Refusal::UnknownProbe)
        );
        auth.revoked.insert("p1".into());
        assert_eq!(
            auth.recheck("p1", 2_000, 1_000).map_err(|e| e.reason()),
            Err(Refusal::Revoked)
        );
        // A coordinator sharing its CA adopts unknown probes on their first Hello.
        auth.adopt_unknown = true;
        assert_eq!(auth.recheck("p2", 2_000, 1_000), Ok(()));
        assert_eq!(
            auth.recheck("p2", 999, 1_000).map_err(|e| e.reason()),
            Err(Refusal::Expired)
        );
    }
}
