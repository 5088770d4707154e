//! `cemwatch serve`: validates the configuration, opens the store and the CA, binds QUIC and
//! HTTP (logging one "listening for X on ADDR" line each), then runs until shutdown, reloading
//! the configuration on SIGHUP and on file change (keeping the last good one on error) and
//! closing the connections of probes revoked from the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use cemwatch_shared::wire::ALPN;

use crate::http;

use crate::analysis;
use crate::analysis::fleet::Fleet;
use crate::config::limits::LimitsConfig;
use crate::config::Config;
use crate::http::{ApiState, Readiness};
use crate::quic;
use crate::quic::ca::CoordinatorCa;
use crate::quic::session_keys::SessionKeys;
use crate::quic::verifier::ProbeVerifier;
use crate::quic::Hub;
use crate::registry::{AuthState, Registry};
use crate::store;
use crate::store::Writer;
use crate::telemetry::Metrics;

/// A running coordinator.
#[derive(Debug)]
pub struct Running {
    /// Where QUIC listens.
    pub quic_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The hub (fleet, store, metrics).
    pub hub: Arc<Hub>,
    /// Push a new configuration.
    pub config_tx: watch::Sender<Arc<Config>>,
    /// What the status pages get from the program running the coordinator (`cemwatch demo`
    /// sets its scenario switch here).
    pub pages: Arc<crate::http::pages::PageExtras>,
    readiness: Arc<Readiness>,
    endpoints: Vec<quinn::Endpoint>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Applies a new configuration: probes get new plans.
    pub fn apply(&self, config: Config) {
        let generation = apply_config(&self.hub, &self.config_tx, config);
        tracing::info!(generation, "configuration applied");
    }

    /// Stops accepting, closes connections and waits briefly for them to close; `/ready` says
    /// no from the start of it.
    pub async fn shutdown(self) {
        self.readiness.draining();
        for endpoint in &self.endpoints {
            endpoint.close(
                cemwatch_transport::protocol::CloseCode::Done.varint(),
                b"coordinator shutting down",
            );
        }
        for t in &self.tasks {
            t.abort();
        }
        let idle = async {
            for endpoint in &self.endpoints {
                endpoint.wait_idle().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), idle).await;
    }
}

pub use crate::quic::sockets::QUIC_RECV_BUFFER;

fn server_tls(
    ca: &CoordinatorCa,
    keys: &SessionKeys,
    registry: Arc<Registry>,
    metrics: Metrics,
    limits: &LimitsConfig,
) -> Result<quinn::ServerConfig> {
    let verifier = Arc::new(ProbeVerifier::new(ca.ca_der(), registry, metrics)?);
    let mut tls = rustls::ServerConfig::builder_with_provider(cemwatch_transport::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(ca.server_chain(), ca.server_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // Stateless tickets whose key survives a restart: a reconnecting probe resumes its session
    // (see session_keys). A client spends a ticket on every attempt, also on one refused by
    // admission control before any handshake, so each connection gets a few.
    tls.ticketer = keys.ticketer();
    tls.send_tls13_tickets = 4;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| anyhow::anyhow!("QUIC TLS configuration: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    // Streams, windows and keep-alives for many small, mostly idle connections; the idle
    // timeout from [limits] (the smaller of both ends' applies).
    let mut transport = cemwatch_transport::quic::server_transport_config();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|e| anyhow::anyhow!("limits.idle_timeout: {e}"))?;
    transport.max_idle_timeout(Some(idle));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Starts a coordinator with `config`; `config_path`, when given, is watched for changes.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running> {
    let data_dir = config.server.data_dir.clone();
    let ca = Arc::new(CoordinatorCa::load_or_create(
        &data_dir,
        &config.server.server_names,
    )?);
    let writer = Writer::start(&data_dir)?;
    let db = store::open(&data_dir)?;
    let fleet = Fleet {
        probes: store::read::load_probes(&db).context("cannot load the fleet from the store")?,
    };
    let (known, revoked) = store::auth_sets(&db)?;
    let keys = store::probe_keys(&db)?;
    drop(db);
    let auth = AuthState {
        known,
        revoked,
        adopt_unknown: config.server.trust_shared_ca_probes,
        keys,
    };
    let registry = Arc::new(Registry::new(fleet, auth, writer));
    let metrics = Metrics::new();

    let keys = SessionKeys::load_or_create(&data_dir)?;
    let count = match config.server.quic_sockets {
        0 => quic::sockets::sockets_for_cores(),
        n => n,
    };
    let sockets = quic::sockets::bind(config.server.quic_listen, count)
        .with_context(|| format!("cannot listen for QUIC on {}", config.server.quic_listen))?;
    // One server configuration for every endpoint: the same ticket keys, and the same Retry
    // token key, whichever socket a probe's packets reach.
    let server_config = server_tls(
        &ca,
        &keys,
        registry.clone(),
        metrics.clone(),
        &config.limits,
    )?;
    let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
    let endpoints = sockets
        .into_iter()
        .map(|socket| {
            quinn::Endpoint::new(
                keys.endpoint_config(),
                Some(server_config.clone()),
                socket,
                runtime.clone(),
            )
        })
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("cannot listen for QUIC on {}", config.server.quic_listen))?;
    let quic_addr = endpoints.first().context("no QUIC socket")?.local_addr()?;
    tracing::info!(sockets = endpoints.len(), "QUIC sockets bound");
    tracing::info!("listening for quic on {quic_addr}");

    let http = tokio::net::TcpListener::bind(config.server.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.server.http_listen))?;
    let http_addr = http.local_addr()?;
    let https = match &config.http.tls {
        Some(tls) => Some(http::serve::acceptor(tls).context("cannot set up HTTPS")?),
        None => None,
    };
    let http_limits = config.http.clone();
    tracing::info!(
        "listening for {} on {http_addr}",
        if https.is_some() { "https" } else { "http" }
    );

    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let generation = Arc::new(AtomicU64::new(1));
    let hub = Arc::new(Hub::new(config_rx, generation, registry, ca, metrics));
    let readiness = Arc::new(Readiness::default());
    let state = Arc::new(ApiState::new(
        hub.clone(),
        store::Reader::open(&data_dir)?,
        readiness.clone(),
    ));
    let pages = state.pages.clone();
    let tasks = vec![
        tokio::spawn(quic::serve(endpoints.clone(), hub.clone())),
        tokio::spawn(http::serve::serve(
            http,
            https,
            http::router(state),
            http_limits,
            hub.metrics.clone(),
        )),
        tokio::spawn(watch_revocations(hub.clone(), data_dir.clone())),
        tokio::spawn(prune_store(hub.clone())),
        tokio::spawn(watch_nodes(hub.clone())),
    ];
    // The store is open, the fleet loaded and both listeners bound, and their tasks run.
    readiness.ready();
    let running = Running {
        quic_addr,
        http_addr,
        hub,
        config_tx,
        readiness,
        endpoints,
        tasks,
        pages,
    };
    if let Some(path) = config_path {
        let hub = running.hub.clone();
        let tx = running.config_tx.clone();
        let handle = tokio::spawn(watch_config(path, hub, tx));
        let mut running = running;
        running.tasks.push(handle);
        return Ok(running);
    }
    Ok(running)
}

/// How often retention looks for something to prune.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Retention (`[store] keep`, `max_size`): every [`PRUNE_EVERY`], pruning steps until nothing
/// is left to prune, each a short job of the store's writer queued behind waiting reports,
/// with a pause between steps so that ingest always comes first.
async fn prune_store(hub: Arc<Hub>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        loop {
            let store = hub.config.borrow().store;
            match hub.registry.prune_store(store.keep, store.max_size).await {
                Ok(p) => {
                    failing = false;
                    hub.metrics
                        .store_pruned
                        .with_label_values(&["reports"])
                        .inc_by(p.reports);
                    hub.metrics
                        .store_pruned
                        .with_label_values(&["events"])
                        .inc_by(p.events);
                    if !p.more {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot prune the store; retrying in 10 s");
                        failing = true;
                    }
                    break;
                }
            }
        }
    }
}

/// How often the nodes behind each check's name are compared with what they served before.
pub const NODE_WATCH_EVERY: Duration = Duration::from_secs(5);

/// Records in the event log when a node of a check's name switches certificates (most of its
/// fresh probes see another one than before): a rollover's progress, node by node. What each
/// node served is kept in memory: after a restart the first look records, and does not log.
async fn watch_nodes(hub: Arc<Hub>) {
    let mut served = std::collections::BTreeMap::new();
    loop {
        tokio::time::sleep(NODE_WATCH_EVERY).await;
        let now = store::now_ms();
        let (checks, stale_after): (Vec<String>, Duration) = {
            let config = hub.config.borrow();
            let names = config.checks.iter().map(|c| c.name.clone()).collect();
            (names, config.server.stale_after)
        };
        // A walk of the whole fleet view: on the blocking pool, not the runtime's workers,
        // which read the QUIC sockets (`http::handlers::off_runtime` says why).
        let reader = hub.clone();
        let walked = tokio::task::spawn_blocking(move || {
            let fleet = reader.registry.fleet();
            let switches: Vec<_> = checks
                .iter()
                .flat_map(|name| {
                    let obs = fleet.observations(name, now, stale_after);
                    let tallies = analysis::nodes::tally(obs.iter().map(|o| o.latest));
                    analysis::nodes::switches(&mut served, name, &tallies)
                })
                .collect();
            (served, switches)
        })
        .await;
        let switches = match walked {
            Ok((kept, switches)) => {
                served = kept;
                switches
            }
            Err(e) => {
                // The history went with the walk: start again from none (a switch may be
                // missed, none is made up).
                tracing::error!(error = %e, "the node watch's walk of the fleet failed");
                served = std::collections::BTreeMap::new();
                continue;
            }
        };
        for s in switches {
            tracing::info!(check = %s.check, node = %s.address, from = %s.from, to = %s.to, "a gateway node switched certificates");
            if let Err(e) = hub.registry.node_switched(s).await {
                tracing::error!(error = %e, "cannot record a node's certificate switch");
            }
        }
    }
}

/// Picks up revocations made with `cemwatch probe revoke` (another process) and closes the
/// live connections of revoked probes.
async fn watch_revocations(hub: Arc<Hub>, data_dir: PathBuf) {
    let Ok(db) = store::open(&data_dir) else {
        tracing::error!("cannot open the store to watch revocations");
        hub.metrics.revocations_unreadable.set(1);
        return;
    };
    let mut failing = false;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        revocation_tick(&hub, &db, &mut failing);
    }
}

/// One look at the revocations: closes the connections of probes newly revoked; a store it
/// cannot read is logged once and shown in `cemwatch_revocations_unreadable` until it can.
fn revocation_tick(hub: &Hub, db: &rusqlite::Connection, failing: &mut bool) {
    match store::read::revoked(db) {
        Ok(revoked) => {
            if *failing {
                tracing::info!("revocations are readable again");
                *failing = false;
            }
            hub.metrics.revocations_unreadable.set(0);
            for name in hub.registry.revocations(revoked) {
                tracing::info!(probe = %name, "probe revoked: its connection is closed");
                hub.disconnect(&name, "this probe was revoked");
            }
        }
        Err(e) => {
            if !*failing {
                tracing::error!(error = %e, "cannot read revocations from the store: revoked probes stay connected until it can");
                *failing = true;
            }
            hub.metrics.revocations_unreadable.set(1);
        }
    }
}

/// Makes a new configuration current: the one place it takes effect, for a reload of the file
/// and for [`Running::apply`] alike. Returns the new generation (probes get new plans).
pub fn apply_config(hub: &Hub, tx: &watch::Sender<Arc<Config>>, config: Config) -> u64 {
    hub.registry
        .set_adopt_unknown(config.server.trust_shared_ca_probes);
    let generation = hub.generation.fetch_add(1, Ordering::SeqCst) + 1;
    tx.send_replace(Arc::new(config));
    generation
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the configuration on SIGHUP and when the file changes; a bad file is reported and
/// the last good configuration stays.
async fn watch_config(path: PathBuf, hub: Arc<Hub>, tx: watch::Sender<Arc<Config>>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = modified(&path);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let why = tokio::select! {
            _ = signalled => "SIGHUP",
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                let now = modified(&path);
                if now == seen { continue; }
                seen = now;
                "file changed"
            }
        };
        match Config::read(&path) {
            Ok(new) => {
                let old = hub.config.borrow().clone();
                if new.server.quic_listen != old.server.quic_listen
                    || new.server.http_listen != old.server.http_listen
                    || new.server.data_dir != old.server.data_dir
                    || new.limits.idle_timeout != old.limits.idle_timeout
                {
                    tracing::warn!("listen addresses, data_dir and limits.idle_timeout change only on restart; the rest of the configuration is applied");
                }
                if *old == new {
                    continue;
                }
                let generation = apply_config(&hub, &tx, new);
                tracing::info!(
                    why,
                    generation,
                    "configuration reloaded; new plans pushed to connected probes"
                );
            }
            Err(e) => {
                tracing::error!(
                    why,
                    "configuration not reloaded, keeping the last good one:\n{e}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_store_shows_in_the_revocation_metric_until_it_reads_again() {
        let fx = crate::http::tests::fixture_with("");
        let hub = &fx.state.hub;
        let db = rusqlite::Connection::open_in_memory().expect("db");
        let mut failing = false;
        // No probes table: the query fails.
        revocation_tick(hub, &db, &mut failing);
        assert!(failing);
        assert_eq!(hub.metrics.revocations_unreadable.get(), 1);
        db.execute_batch("CREATE TABLE probes (name TEXT PRIMARY KEY, revoked_at INTEGER)")
            .expect("table");
        revocation_tick(hub, &db, &mut failing);
        assert!(!failing);
        assert_eq!(hub.metrics.revocations_unreadable.get(), 0);
    }
}
