//! Secrets that outlive a restart, so that coming back to a restarted coordinator is cheap for
//! its fleet: the key of TLS session tickets (a probe that reconnects resumes its TLS session:
//! no certificate signature and no chain verification on either side, only a fresh key
//! exchange) and the keys of QUIC connection ids and stateless resets (a packet of a connection
//! from before the restart is answered with a reset that the probe recognises, so it reconnects
//! at its next packet instead of waiting out its idle timeout).
//!
//! One random secret in `DATA_DIR/ca/session.key` (mode 0600, beside the CA key, which is
//! worth more) derives them all. Ticket keys roll every [`TICKET_ROTATION`] and a ticket is
//! accepted for at most [`TICKET_LIFETIME`]: expiry is enforced by the key schedule, not by
//! trusting anything in the ticket. A resumed session carries the probe's certificate from its
//! ticket, so the verifier does not run again: the session code checks revocation, removal and
//! expiry on every connection (`ingest`). Resumption always runs a fresh (EC)DHE exchange
//! (rustls resumes only in `psk_dhe_ke` mode), so the ticket key never exposes recorded traffic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::quic::ca::CaError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use cemwatch_transport::fs::write_atomic;

/// How long a session ticket may be used to resume.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How often the ticket key changes.
pub const TICKET_ROTATION: Duration = Duration::from_secs(6 * 3600);
/// Shortest time between two stateless resets: none. quinn's default (20 ms, a single reset
/// in any 20 ms window, whatever the burst) leaves most of a fleet that sends its next packets
/// to a restarted coordinator within the same milliseconds unanswered, and each probe then
/// retries with exponential backoff or waits out its idle timeout (measured: the last of 2,000
/// probes came back after 60 s with a 100 µs interval). A reset answers only a packet whose
/// connection id this coordinator's own key validates (garbage is dropped before), and it is
/// always smaller than that packet, so answering every one is neither amplification nor a loop.
pub const MIN_RESET_INTERVAL: Duration = Duration::ZERO;

/// The secret and what derives from it.
#[derive(Debug)]
pub struct SessionKeys {
    secret: [u8; 32],
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ca").join("session.key")
}

impl SessionKeys {
    /// Loads the secret from `data_dir`, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CaError> {
        let path = key_path(data_dir);
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|source| CaError::File {
                path: path.clone(),
                source,
            })?;
            let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
            let Some(bytes) = bytes else {
                return Err(CaError::Unusable {
                    path,
                    reason: "damaged (not 64 hex digits): delete it and restart; probes then make one full handshake each".into(),
                });
            };
            let mut secret = [0u8; 32];
            secret.copy_from_slice(&bytes);
            return Ok(Self { secret });
        }
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| CaError::Random("session key"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| CaError::File {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        write_atomic(&path, hex::encode(secret).as_bytes(), true)?;
        Ok(Self { secret })
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
        let tag = hmac::sign(&key, label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The QUIC endpoint configuration: stateless reset key and connection-id key from the
    /// secret, so both survive a restart.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let reset = hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"quic stateless reset"));
        let mut config = quinn::EndpointConfig::new(Arc::new(reset));
        let cid = self.derive(b"quic connection id");
        let mut first = [0u8; 8];
        first.copy_from_slice(&cid[..8]);
        let cid_key = u64::from_le_bytes(first);
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        config.min_reset_interval(MIN_RESET_INTERVAL);
        config
    }

    /// The producer of TLS session tickets.
    pub fn ticketer(&self) -> Arc<dyn rustls::server::ProducesTickets> {
        Arc::new(Ticketer {
            master: self.derive(b"tls session tickets"),
            rng: SystemRandom::new(),
        })
    }
}

/// Stateless session tickets: `epoch (8 bytes) || nonce (12) || ChaCha20-Poly1305(state)`,
/// sealed with the key of the epoch they were issued in (the epoch is authenticated too).
struct Ticketer {
    master: [u8; 32],
    rng: SystemRandom,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticketer")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Ticketer {
    fn key(&self, epoch: u64) -> Option<LessSafeKey> {
        let master = hmac::Key::new(hmac::HMAC_SHA256, &self.master);
        let tag = hmac::sign(&master, &epoch.to_be_bytes());
        UnboundKey::new(&CHACHA20_POLY1305, tag.as_ref())
            .ok()
            .map(LessSafeKey::new)
    }

    /// Whether a ticket issued in `epoch` may still be used at `now` (seconds): it is at most
    /// TICKET_LIFETIME old, counting from the end of its epoch, and not from the future.
    fn epoch_usable(epoch: u64, now: u64) -> bool {
        let rotation = TICKET_ROTATION.as_secs();
        let current = now / rotation;
        epoch <= current
            && epoch
                .saturating_add(1)
                .saturating_mul(rotation)
                .saturating_add(TICKET_LIFETIME.as_secs())
                >= now
    }

    fn seal_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let epoch = now / TICKET_ROTATION.as_secs();
        let key = self.key(epoch)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(epoch.to_be_bytes()),
            &mut sealed,
        )
        .ok()?;
        let mut out = Vec::with_capacity(8 + NONCE_LEN + sealed.len());
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn open_at(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() < 8 + NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (epoch, rest) = ticket.split_at(8);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let epoch = u64::from_be_bytes(epoch.try_into().ok()?);
        if !Self::epoch_usable(epoch, now) {
            return None;
        }
        let key = self.key(epoch)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(epoch.to_be_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(plain, now_secs())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(cipher, now_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticketer(dir: &Path) -> Ticketer {
        let keys = SessionKeys::load_or_create(dir).expect("keys");
        Ticketer {
            master: keys.derive(b"tls session tickets"),
            rng: SystemRandom::new(),
        }
    }

    #[test]
    fn tickets_survive_a_restart_and_expire_by_key_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = 1_800_000_000;
        let ticket = ticketer(dir.path())
            .seal_at(b"session state", now)
            .expect("sealed");
        // A new process with the same data directory opens it.
        let again = ticketer(dir.path());
        assert_eq!(
            again.open_at(&ticket, now + 60).as_deref(),
            Some(&b"session state"[..])
        );
        // Not once its lifetime has passed, nor from the future, nor tampered with.
        let late = now + TICKET_ROTATION.as_secs() + TICKET_LIFETIME.as_secs() + 1;
        assert_eq!(again.open_at(&ticket, late), None);
        assert_eq!(
            again.open_at(&ticket, now - TICKET_ROTATION.as_secs()),
            None
        );
        let mut bad = ticket.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(again.open_at(&bad, now), None);
        let mut other_epoch = ticket.clone();
        other_epoch[7] ^= 1;
        assert_eq!(again.open_at(&other_epoch, now), None);
        assert_eq!(again.open_at(&ticket[..10], now), None);
        // Another coordinator's tickets are worthless here.
        let other = tempfile::tempdir().expect("tempdir");
        assert_eq!(ticketer(other.path()).open_at(&ticket, now), None);
    }

    #[test]
    fn a_damaged_key_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        SessionKeys::load_or_create(dir.path()).expect("created");
        std::fs::write(key_path(dir.path()), "not hex").expect("write");
        let err = SessionKeys::load_or_create(dir.path()).expect_err("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
