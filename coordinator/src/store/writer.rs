//! The single writer: one thread, one connection, reports committed in groups (commit before
//! ack), the ledger's checkpoints, and typed operations for everything else that writes; and
//! the read connection the API uses.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use cemwatch_shared::wire::{Labels, Report};

use crate::model::arrived::Arrived;
use cemwatch_shared::AgentCemState;

use crate::store::ledger::{Entry, Ledger};
use crate::store::probes::{
    adopt, bump, enrol, save_agent_state, set_certificate, Grant, TokenRefusal,
};
use crate::store::results::Encoded;
use crate::store::schema::open;
use crate::store::{now_ms, Result, StoreError};

/// The outcome of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// New: committed.
    Stored,
    /// Seen before: dropped (and counted).
    Duplicate,
}

/// One report's outcome and its summary, handed back after its group's commit.
pub type Outcome = (Result<Ingested, String>, Box<Arrived>);

/// Where a report's outcome goes.
pub(crate) enum Reply {
    /// To one waiter ([`Writer::commit`]).
    Once(oneshot::Sender<Outcome>),
    /// To a connection's [`CommitPath`]: its mailbox, woken once per group commit.
    Path(Arc<Mailbox>),
}

/// Where the outcomes of a connection's reports wait for it: a list the writer appends to and
/// a wake-up, once per group commit whatever the number of reports (about a hundred bytes per
/// connection, where a channel would keep a block of slots for as long as it lives).
#[derive(Debug, Default)]
pub struct Mailbox {
    outcomes: Mutex<Vec<Outcome>>,
    ready: tokio::sync::Notify,
}

impl Mailbox {
    /// Waits until outcomes may have arrived (at once if some arrived since the last wait).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Swaps the outcomes that arrived (in the order the reports were submitted) into `into`,
    /// which should be empty: its allocation goes back for the next ones.
    pub fn take(&self, into: &mut Vec<Outcome>) {
        std::mem::swap(&mut *self.outcomes.lock(), into);
    }

    /// Appends an outcome; true when the list was empty (the connection is to be woken).
    fn push(&self, outcome: Outcome) -> bool {
        let mut outcomes = self.outcomes.lock();
        outcomes.push(outcome);
        outcomes.len() == 1
    }
}

/// A connection's way to the writer: its reports are committed in the writer's groups and
/// their outcomes arrive in its [`Mailbox`] in the order they were submitted, with one
/// wake-up per group. No task and no channel per report.
#[derive(Debug)]
pub struct CommitPath {
    probe: Arc<str>,
    mailbox: Arc<Mailbox>,
    writer: std_mpsc::Sender<Job>,
}

impl CommitPath {
    /// Where the outcomes arrive.
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Queues a report (its summary, and its results as they are to be stored: cut from the
    /// received frame) for the next group commit; its outcome arrives in the mailbox. Gives
    /// the summary back when the writer has stopped.
    pub fn submit(
        &self,
        report: Arrived,
        stored: Encoded,
    ) -> std::result::Result<(), Box<Arrived>> {
        let job = Job::Report {
            probe: self.probe.clone(),
            report: Box::new(report),
            stored,
            reply: Reply::Path(self.mailbox.clone()),
        };
        match self.writer.send(job) {
            Ok(()) => Ok(()),
            Err(std_mpsc::SendError(Job::Report { report, .. })) => Err(report),
            Err(_) => Err(Box::new(Arrived {
                seq: 0,
                round: None,
                results: Vec::new(),
            })),
        }
    }
}

/// What runs in the writer thread after each group commit, before any outcome is handed back,
/// with the reports stored in it (probe, report) and the commit time: the registry keeps the
/// fleet view here, once per group, so a report is in the fleet view before it is
/// acknowledged.
pub type CommitHook = Box<dyn Fn(&mut [(&str, &mut Arrived)], i64) + Send + Sync>;

/// Work for the writer thread.
pub(crate) enum Job {
    Report {
        probe: Arc<str>,
        report: Box<Arrived>,
        stored: Encoded,
        reply: Reply,
    },
    Exec(Box<dyn FnOnce(&mut Connection) + Send>),
    /// A probe's key to bind ([`bind_key`](crate::store::bind_key)), committed with the other
    /// bindings that arrived with it (see [`bind_all`]).
    Bind(Bind),
    Seen {
        probe: String,
        agent_version: String,
        at_ms: i64,
    },
}

/// A key binding waiting for its group's commit, and where its outcome goes.
pub(crate) struct Bind {
    name: String,
    key: [u8; 32],
    replace: bool,
    reply: oneshot::Sender<Result<[u8; 32]>>,
}

/// The single writer: commits reports in groups, and runs other writes in order.
#[derive(Clone)]
pub struct Writer {
    tx: std_mpsc::Sender<Job>,
    hook: Arc<OnceLock<CommitHook>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("hook", &self.hook.get().is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Report { probe, report, .. } => write!(f, "Report({probe}, {})", report.seq),
            Job::Exec(_) => f.write_str("Exec"),
            Job::Bind(b) => write!(f, "Bind({})", b.name),
            Job::Seen { probe, .. } => write!(f, "Seen({probe})"),
        }
    }
}

/// Most reports committed in one transaction. Under light load a transaction holds what has
/// arrived (often one report); under saturation larger groups amortise the commit (WAL append,
/// fsync, index update) over more reports.
pub const GROUP_COMMIT_MAX: usize = 2048;

/// A group of at least this many jobs waits [`LINGER`] for more before it commits.
pub const LINGER_FROM: usize = 32;

/// How long a large group waits for more reports (see [`LINGER_FROM`]), under load only: a
/// lone report never waits. The writer sleeps for it and then takes what arrived, so that no
/// report sent meanwhile wakes it.
///
/// Measured with `cemwatch-bench --probes 4000 --scenarios ac --hold 3s --saturate 20s
/// --no-baseline --skip-footprint` (coordinator on one core, the writer sharing it with the
/// connections): waiting up to 1 ms on the channel, which woke the writer at every report
/// (a context switch each), committed 24,400-25,800 reports/s in groups of 41 on average;
/// sleeping 1 ms, 32,300-32,500; 3 ms, 35,100 (0.028 ms of CPU per report, ack p50 224 ms
/// under that saturation); 6 ms, 33,500-37,600, no clearer gain for twice the wait. At 35,000
/// reports/s, 3 ms gathers about 100 more reports into a group: one WAL append and one fsync
/// for them, where a group of 40 paid one for each 40.
pub const LINGER: Duration = Duration::from_millis(3);

/// A group that starts within this long of the previous group's commit also waits [`LINGER`],
/// however small: reports or key bindings are arriving steadily, but too slowly to build a
/// group of [`LINGER_FROM`] while a commit runs. A reconnect storm is such a load (each
/// returning probe resends a report or two and a `Seen`: without the wait the writer
/// committed groups of 1.6 reports, an fsync each, 0.63 fsync per reconnect, and was woken by
/// nearly every job), and so is a fleet connecting for the first time (a key binding per
/// probe). Under saturating ingest too, groups of fewer than [`LINGER_FROM`] had not waited:
/// with this wait the coordinator committed 10-16% more reports a second at 20,000 probes
/// (BENCHMARKS.md, "What changed in issue 19"). A report that arrives after a quiet moment
/// never waits.
pub(crate) const LINGER_AFTER: Duration = Duration::from_millis(10);

/// Page cache of the writer's connection, KiB.
pub const WRITER_CACHE_KIB: i64 = 16 * 1024;

impl Writer {
    /// Starts the writer thread on its own connection.
    pub fn start(data_dir: &Path) -> Result<Self> {
        let mut conn = open(data_dir)?;
        let mut ledger = Ledger::load(&conn)?;
        // SQLite's default page cache (2 MiB) is smaller than the pages a checkpoint of a large
        // fleet touches (the latest results and sequence numbers of 100,000 probes are about
        // 10 MB); reports only append, so their pages need no cache. 16 MiB holds them.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB.wrapping_neg())?;
        // What the load replayed (the reports after the last checkpoint, after a crash) is
        // checkpointed before anyone reads the store: the fleet view loads the latest results
        // from the checkpoint tables as soon as this returns.
        checkpoint(&mut conn, &mut ledger);
        let (tx, rx) = std_mpsc::channel::<Job>();
        let hook: Arc<OnceLock<CommitHook>> = Arc::new(OnceLock::new());
        let thread_hook = hook.clone();
        std::thread::Builder::new()
            .name("cemwatch-store".into())
            .spawn(move || writer_loop(&mut conn, ledger, rx, &thread_hook))
            .map_err(StoreError::Thread)?;
        Ok(Self { tx, hook })
    }

    /// Sets what runs after each group commit ([`CommitHook`]); only the first call counts.
    pub fn on_commit(&self, hook: CommitHook) {
        let _ = self.hook.set(hook);
    }

    /// A commit path for one connection of probe `probe`.
    pub fn path(&self, probe: &str) -> CommitPath {
        CommitPath {
            probe: Arc::from(probe),
            mailbox: Arc::new(Mailbox::default()),
            writer: self.tx.clone(),
        }
    }

    /// Commits a report; resolves once it is durable (or known to be a duplicate).
    pub async fn report(&self, probe: &str, report: Report) -> Result<Ingested> {
        self.commit(probe, report).await.0
    }

    /// Commits a report and hands it back with the outcome, so that the caller can use it
    /// after the commit without keeping a copy while it waits.
    pub async fn commit(&self, probe: &str, report: Report) -> (Result<Ingested>, Report) {
        let stored = match Encoded::of_results(&report.results) {
            Ok(stored) => stored,
            Err(e) => return (Err(e), report),
        };
        let (reply, rx) = oneshot::channel();
        let job = Job::Report {
            probe: Arc::from(probe),
            report: Box::new(Arrived::of_report(&report)),
            stored,
            reply: Reply::Once(reply),
        };
        let stopped = || StoreError::WriterStopped;
        if self.tx.send(job).is_err() {
            return (Err(stopped()), report);
        }
        match rx.await {
            Ok((Ok(outcome), _)) => (Ok(outcome), report),
            Ok((Err(e), _)) => (Err(StoreError::Commit(e)), report),
            Err(_) => (Err(stopped()), report),
        }
    }

    /// Records that a probe connected (its last contact and agent version), without waiting:
    /// the row is updated in the next group commit, with reports, rather than in a transaction
    /// (and an fsync) of its own per connection, which made a reconnecting fleet wait on the
    /// disk one probe at a time.
    pub fn seen(&self, probe: &str, agent_version: &str) {
        let _ = self.tx.send(Job::Seen {
            probe: probe.to_string(),
            agent_version: agent_version.to_string(),
            at_ms: now_ms(),
        });
    }

    /// Checks and consumes an enrolment token, has `issue` make the certificate once the name
    /// is settled (returning it with its serial and expiry), and records the probe, all in one
    /// transaction: nothing is written when the token is refused or `issue` fails.
    pub async fn enrol<C: Send + 'static>(
        &self,
        token_id: String,
        secret: String,
        requested_name: String,
        agent_version: String,
        issue: impl FnOnce(&str) -> Result<(C, String, i64)> + Send + 'static,
    ) -> Result<Result<(Grant, C), TokenRefusal>> {
        self.exec(move |db| {
            let mut issued = None;
            let grant = enrol(
                db,
                &token_id,
                &secret,
                &requested_name,
                &agent_version,
                |name| {
                    let (cert, serial, not_after) = issue(name)?;
                    issued = Some(cert);
                    Ok((serial, not_after))
                },
            )?;
            Ok(match grant {
                Ok(grant) => Ok((
                    grant,
                    issued.ok_or_else(|| {
                        StoreError::Corrupt("enrolment recorded no certificate".into())
                    })?,
                )),
                Err(refusal) => Err(refusal),
            })
        })
        .await
    }

    /// Records a probe adopted from a coordinator sharing this CA ([`adopt`]); false when it
    /// was known already.
    pub async fn adopt(
        &self,
        name: String,
        labels: Labels,
        agent_version: String,
        cert_serial: String,
        cert_not_after: i64,
    ) -> Result<bool> {
        self.exec(move |db| {
            adopt(
                db,
                &name,
                &labels,
                &agent_version,
                &cert_serial,
                cert_not_after,
            )
        })
        .await
    }

    /// Records a probe's renewed certificate: its serial (hex) and expiry (Unix seconds).
    pub async fn renew_cert(&self, name: String, serial: String, not_after: i64) -> Result<()> {
        self.exec(move |db| set_certificate(db, &name, &serial, not_after))
            .await
    }

    /// Keeps the latest agent state of a probe ([`save_agent_state`]).
    pub async fn save_agent_state(
        &self,
        probe: String,
        state: AgentCemState,
        received_ms: i64,
    ) -> Result<()> {
        self.exec(move |db| save_agent_state(db, &probe, &state, received_ms))
            .await
    }

    /// Binds a probe to its key ([`bind_key`](crate::store::bind_key)); the key bound after.
    /// Bindings that arrive together are committed in one transaction ([`bind_all`]).
    pub async fn bind_key(&self, name: String, key: [u8; 32], replace: bool) -> Result<[u8; 32]> {
        self.request(|reply| {
            Job::Bind(Bind {
                name,
                key,
                replace,
                reply,
            })
        })
        .await
    }

    /// One pruning step ([`crate::store::retention::prune_step`]): reports and events older
    /// than `keep`, and the oldest reports while the store holds more than `max_size` bytes.
    pub async fn prune(
        &self,
        keep: std::time::Duration,
        max_size: u64,
    ) -> Result<crate::store::retention::Pruned> {
        let cutoff = now_ms() - keep.as_millis().min(i64::MAX as u128) as i64;
        self.exec(move |db| crate::store::retention::prune_step(db, cutoff, max_size))
            .await
    }

    /// Records that a node of a check switched certificates, in the event log (probe
    /// `node:ADDR`, from and to the thumbprints, code `node_switched`).
    pub async fn node_switched(
        &self,
        at_ms: i64,
        check: String,
        address: String,
        from: String,
        to: String,
    ) -> Result<()> {
        self.exec(move |db| {
            db.prepare_cached(
                "INSERT INTO events (at, probe, check_name, from_verdict, to_verdict, codes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                at_ms,
                crate::model::event::node_event_probe(&address),
                check,
                from,
                to,
                crate::model::event::NODE_SWITCHED
            ])?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on the writer's connection, in order with reports.
    pub(super) async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.request(|reply| {
            Job::Exec(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
        })
        .await
    }

    /// Sends the job `job` makes around its reply and waits for the reply.
    async fn request<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T>>) -> Job) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(job(reply))
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// Longest time between checkpoints while reports keep arriving (see [`crate::store::ledger`]).
///
/// A checkpoint writes three rows per probe that reported since the last one (its sequence
/// numbers, its latest result per check, its last contact), whatever the number of its
/// reports. A fleet reports once per probe per interval, so at a short period that is three
/// rows for every report: every 2 s, at 20,000 probes reporting every 2 s, checkpoints were 9%
/// of the coordinator's CPU (BENCHMARKS.md, "The same load for both servers, and the checkpoint's period"). Every 30 s they cover
/// fifteen such reports per row. What a longer period costs is bounded by
/// [`CHECKPOINT_AFTER_REPORTS`]: the replay after a crash.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// A checkpoint is also written once this many reports were committed after the last one,
/// however recent it is: a start after a crash replays at most these (3.7 us each in
/// `cemwatch-bench store-path --reports 250000`: 250,000 × 3.7 us = 0.9 s more to start), and
/// holds one report's row at a time while it replays.
pub const CHECKPOINT_AFTER_REPORTS: i64 = 250_000;

/// A checkpoint is also written once the writer has had nothing to do for this long.
pub const CHECKPOINT_WHEN_IDLE: Duration = Duration::from_millis(200);

pub(crate) fn writer_loop(
    conn: &mut Connection,
    mut ledger: Ledger,
    rx: std_mpsc::Receiver<Job>,
    hook: &OnceLock<CommitHook>,
) {
    let mut pending: Vec<Job> = Vec::new();
    let mut batch: Batch = Vec::new();
    let mut binds: Vec<Bind> = Vec::new();
    let mut scratch = Scratch::default();
    let mut last_checkpoint = Instant::now();
    // When the last group with reports or key bindings was committed.
    let mut last_commit: Option<Instant> = None;
    loop {
        let first = if ledger.checkpointing() {
            // A checkpoint under way: its next part is written between groups, or at once
            // when nothing waits.
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(std_mpsc::TryRecvError::Empty) => None,
                Err(std_mpsc::TryRecvError::Disconnected) => break,
            }
        } else if ledger.is_dirty() {
            match rx.recv_timeout(CHECKPOINT_WHEN_IDLE) {
                Ok(job) => Some(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        };
        let Some(first) = first else {
            if checkpoint_part(conn, &mut ledger) {
                last_checkpoint = Instant::now();
            }
            continue;
        };
        pending.push(first);
        while pending.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(job) => pending.push(job),
                Err(_) => break,
            }
        }
        // Under load (a group already this large), wait a little for more: one commit (its
        // WAL header, its fsync) then covers more reports. A lone report never waits.
        // The writer sleeps rather than waits on the channel: a receiver waiting on it is
        // woken by every report sent (a context switch per report, on a coordinator whose
        // connections and writer share a core), a sleeping one by none.
        let steady = last_commit.is_some_and(|at| at.elapsed() < LINGER_AFTER);
        if (pending.len() >= LINGER_FROM || steady) && pending.len() < GROUP_COMMIT_MAX {
            std::thread::sleep(LINGER);
            while pending.len() < GROUP_COMMIT_MAX {
                match rx.try_recv() {
                    Ok(job) => pending.push(job),
                    Err(_) => break,
                }
            }
        }
        for job in pending.drain(..) {
            match job {
                Job::Report {
                    probe,
                    report,
                    stored,
                    reply,
                } => batch.push((probe, report, stored, reply)),
                Job::Seen {
                    probe,
                    agent_version,
                    at_ms,
                } => ledger.seen(&probe, &agent_version, at_ms),
                Job::Bind(bind) => binds.push(bind),
                Job::Exec(f) => {
                    flush(conn, &mut ledger, &mut batch, hook.get(), &mut scratch);
                    bind_all(conn, &mut binds);
                    f(conn);
                }
            }
        }
        let committing = !batch.is_empty() || !binds.is_empty();
        flush(conn, &mut ledger, &mut batch, hook.get(), &mut scratch);
        bind_all(conn, &mut binds);
        if committing {
            last_commit = Some(Instant::now());
        }
        if (ledger.checkpointing() || checkpoint_due(last_checkpoint.elapsed(), &ledger))
            && checkpoint_part(conn, &mut ledger)
        {
            last_checkpoint = Instant::now();
        }
    }
    // The last senders are gone (the coordinator stops): leave a checkpoint so that the next
    // start has nothing to replay.
    checkpoint(conn, &mut ledger);
}

/// Whether a checkpoint is due under load, `since` the last one: [`CHECKPOINT_EVERY`], or
/// [`CHECKPOINT_AFTER_REPORTS`] reports committed after it.
fn checkpoint_due(since: Duration, ledger: &Ledger) -> bool {
    since >= CHECKPOINT_EVERY
        || ledger.last_report_id - ledger.checkpointed_id >= CHECKPOINT_AFTER_REPORTS
}

/// Writes a whole checkpoint, part after part (at start and at shutdown, when nothing else
/// waits).
pub(crate) fn checkpoint(conn: &mut Connection, ledger: &mut Ledger) {
    while ledger.is_dirty() && !checkpoint_part(conn, ledger) {}
}

/// Writes the next part of a checkpoint ([`Ledger::checkpoint_part`]), in a transaction of its
/// own; true once no checkpoint is under way any more (this part completed it, or failed).
pub(crate) fn checkpoint_part(conn: &mut Connection, ledger: &mut Ledger) -> bool {
    if !ledger.is_dirty() {
        return true;
    }
    let started = Instant::now();
    let outcome = (|| -> Result<(usize, bool)> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let part = ledger.checkpoint_part(&tx)?;
        tx.commit()?;
        Ok(part)
    })();
    match outcome {
        Ok((probes, done)) => {
            tracing::debug!(
                probes,
                done,
                took_ms = started.elapsed().as_millis() as u64,
                "store checkpoint part"
            );
            done
        }
        Err(e) => {
            // Nothing is lost: the reports are committed; the next start (or the next
            // checkpoint, after a reload) replays them.
            tracing::warn!(error = %format!("{e:#}"), "cannot write the store checkpoint; will retry");
            reload(conn, ledger);
            true
        }
    }
}

/// After a failed transaction the ledger may hold what was not committed: read it again from
/// the store (the checkpoint and the reports after it).
pub(crate) fn reload(conn: &Connection, ledger: &mut Ledger) {
    match Ledger::load(conn) {
        Ok(fresh) => *ledger = fresh,
        Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot reload the store ledger"),
    }
}

pub(crate) type Batch = Vec<(Arc<str>, Box<Arrived>, Encoded, Reply)>;

/// Buffers the writer reuses from one group to the next.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The outcomes of a group, before they are handed back.
    outcomes: Vec<Ingested>,
    /// A report's results compressed ([`crate::store::results::compress`]).
    compressed: Vec<u8>,
}

pub(crate) fn flush(
    conn: &mut Connection,
    ledger: &mut Ledger,
    batch: &mut Batch,
    hook: Option<&CommitHook>,
    scratch: &mut Scratch,
) {
    if batch.is_empty() {
        return;
    }
    let Scratch {
        outcomes,
        compressed,
    } = scratch;
    outcomes.clear();
    let outcome = (|| -> Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let (mut stored, mut duplicate) = (0i64, 0i64);
        // Looked up in the statement cache once per group, not once per report.
        let mut insert = tx.prepare_cached(INSERT_REPORT)?;
        for (probe, report, as_stored, _) in batch.iter() {
            let o = ingest(
                &tx,
                &mut insert,
                ledger,
                probe,
                report,
                as_stored,
                now,
                compressed,
            )?;
            match o {
                Ingested::Stored => stored += 1,
                Ingested::Duplicate => duplicate += 1,
            }
            outcomes.push(o);
        }
        drop(insert);
        if stored > 0 {
            bump(&tx, "reports_stored", stored)?;
        }
        if duplicate > 0 {
            bump(&tx, "reports_duplicate", duplicate)?;
        }
        tx.commit()?;
        if let Some(hook) = hook {
            let mut stored: Vec<(&str, &mut Arrived)> = batch
                .iter_mut()
                .zip(outcomes.iter())
                .filter(|(_, o)| **o == Ingested::Stored)
                .map(|((probe, report, _, _), _)| (&**probe, &mut **report))
                .collect();
            if !stored.is_empty() {
                hook(&mut stored, now);
            }
        }
        Ok(())
    })();
    let error = match outcome {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot commit reports; probes will resend them");
            reload(conn, ledger);
            Some(format!("{e:#}"))
        }
    };
    // A connection whose reports are in this group is woken once.
    let mut wake: Vec<Arc<Mailbox>> = Vec::new();
    for (i, (_, report, _, reply)) in batch.drain(..).enumerate() {
        let o = match &error {
            None => Ok(outcomes[i]),
            Some(e) => Err(e.clone()),
        };
        match reply {
            Reply::Once(tx) => {
                let _ = tx.send((o, report));
            }
            Reply::Path(mailbox) => {
                if mailbox.push((o, report)) {
                    wake.push(mailbox);
                }
            }
        }
    }
    for mailbox in wake {
        mailbox.ready.notify_one();
    }
}

/// Commits the key bindings that arrived in one group in one transaction, and hands each its
/// outcome: one fsync for all of them where a write each paid one. A fleet connecting for the
/// first time binds a key per probe (at 1,000 handshakes a second, a thousand commits a
/// second, a tenth of the coordinator's CPU while its fleet connected, measured with `perf
/// record --call-graph dwarf` during `cemwatch-bench --probes 20000 --scenarios a`), and that
/// CPU counted in the handshake cost the reconnect spread is sized from.
pub(crate) fn bind_all(conn: &mut Connection, binds: &mut Vec<Bind>) {
    if binds.is_empty() {
        return;
    }
    let mut bound: Vec<Result<[u8; 32]>> = Vec::with_capacity(binds.len());
    let committed = (|| -> Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for b in binds.iter() {
            bound.push(crate::store::bind_key(&tx, &b.name, &b.key, b.replace));
        }
        tx.commit()?;
        Ok(())
    })();
    match committed {
        Ok(()) => {
            for (b, outcome) in binds.drain(..).zip(bound) {
                let _ = b.reply.send(outcome);
            }
        }
        Err(e) => {
            let e = format!("{e:#}");
            tracing::error!(error = %e, "cannot commit probe key bindings; their connections are refused");
            for b in binds.drain(..) {
                let _ = b.reply.send(Err(StoreError::Bind(e.clone())));
            }
        }
    }
}

/// The statement that appends a report ([`ingest`]).
const INSERT_REPORT: &str =
    "INSERT INTO reports (probe, seq, round, received_at, results) VALUES (?1, ?2, ?3, ?4, ?5)";

/// One report: a duplicate is known from the ledger; a new one is one row appended to
/// `reports` (its results as `stored` holds them, compressed in `buf` when that is smaller;
/// see [`crate::store::results`]), plus an event per verdict transition. `insert` is
/// [`INSERT_REPORT`], prepared once for the group.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ingest(
    tx: &rusqlite::Transaction<'_>,
    insert: &mut rusqlite::CachedStatement<'_>,
    ledger: &mut Ledger,
    probe: &str,
    report: &Arrived,
    stored: &Encoded,
    now: i64,
    buf: &mut Vec<u8>,
) -> Result<Ingested> {
    if !ledger.is_new(probe, report.seq) {
        return Ok(Ingested::Duplicate);
    }
    let plain = stored.as_slice();
    let results: &[u8] = crate::store::results::compress(plain, buf).unwrap_or(plain);
    insert.execute(params![
        probe,
        report.seq as i64,
        report.round.map(|r| r as i64),
        now,
        results
    ])?;
    let id = tx.last_insert_rowid();
    let entries: Vec<Entry<'_>> = report.results.iter().map(Entry::of).collect();
    for t in ledger.apply(probe, report.seq, report.round, id, now, &entries) {
        tx.prepare_cached(
            "INSERT INTO events (at, probe, check_name, from_verdict, to_verdict, codes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![now, probe, t.check, t.from, t.to, t.codes])?;
    }
    Ok(Ingested::Stored)
}

/// A read connection for the API and summaries.
#[derive(Debug)]
pub struct Reader {
    conn: Mutex<Connection>,
}

impl Reader {
    /// Opens a read connection.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            conn: Mutex::new(open(data_dir)?),
        })
    }

    /// Runs `f` with the connection.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ledger::CHECKPOINT_CHUNK;

    /// Commits report `seq` of `probe` as a group commit does (its row and the ledger).
    fn commit(conn: &mut Connection, ledger: &mut Ledger, probe: &str, seq: u64) -> i64 {
        let report = crate::store::test_report(seq, "ok", seq * 10);
        let stored = Encoded::of_results(&report.results).expect("encoded");
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx.prepare_cached(INSERT_REPORT).expect("insert");
            let arrived = Arrived::of_report(&report);
            let got = ingest(
                &tx,
                &mut insert,
                ledger,
                probe,
                &arrived,
                &stored,
                1,
                &mut Vec::new(),
            );
            assert_eq!(got.expect("ingest"), Ingested::Stored);
        }
        tx.commit().expect("commit");
        ledger.last_report_id
    }

    fn meta_checkpoint(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT COALESCE((SELECT value FROM meta WHERE key = 'checkpoint'), 0)",
            [],
            |r| r.get(0),
        )
        .expect("meta")
    }

    fn part(conn: &mut Connection, ledger: &mut Ledger) -> (usize, bool) {
        let tx = conn.transaction().expect("tx");
        let part = ledger.checkpoint_part(&tx).expect("part");
        tx.commit().expect("commit");
        part
    }

    /// A checkpoint of more probes than a part holds is written in parts, reports committed
    /// between them; it records the last report committed when it began only once every
    /// probe changed by then is written. A crash between two parts loses nothing: the store
    /// opens on the previous checkpoint and replays, over rows some of which are newer.
    #[test]
    fn a_large_checkpoint_is_written_in_parts_and_a_crash_between_them_loses_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = crate::store::open(dir.path()).expect("open");
        let mut ledger = Ledger::default();
        let n = CHECKPOINT_CHUNK + 500;
        let name = |i: usize| format!("p{i:06}");
        for i in 0..n {
            commit(&mut conn, &mut ledger, &name(i), 1);
        }
        let covers = ledger.last_report_id;
        assert_eq!(part(&mut conn, &mut ledger), (CHECKPOINT_CHUNK, false));
        assert!(ledger.checkpointing());
        assert_eq!(
            meta_checkpoint(&conn),
            0,
            "not complete: the old checkpoint stands"
        );

        // Between two parts: a probe already written and one still to write report again.
        commit(&mut conn, &mut ledger, &name(0), 2);
        let newest = commit(&mut conn, &mut ledger, &name(n - 1), 2);

        // A crash here: the store opens on the old checkpoint and replays every report.
        let mut replayed = Ledger::load(&conn).expect("load after a crash between parts");
        assert_eq!(replayed.last_report_id, newest);
        for (i, seq) in [(0, 2u64), (1, 1), (n - 1, 2)] {
            assert!(
                !replayed.is_new(&name(i), seq),
                "{}'s seq {seq} is known",
                name(i)
            );
        }

        // Without the crash: the rest in one more part, which completes it.
        assert_eq!(part(&mut conn, &mut ledger), (500, true));
        assert!(!ledger.checkpointing());
        assert_eq!(meta_checkpoint(&conn), covers);
        let latest_seq = |conn: &Connection, probe: &str| -> i64 {
            conn.query_row("SELECT seq FROM latest WHERE probe = ?1", [probe], |r| {
                r.get(0)
            })
            .expect("latest")
        };
        assert_eq!(
            latest_seq(&conn, &name(n - 1)),
            2,
            "written with what came since"
        );
        assert_eq!(
            latest_seq(&conn, &name(0)),
            1,
            "written before its second report"
        );
        // What changed after its part is in the next checkpoint.
        assert_eq!(ledger.dirty_probes(), 1);
        assert_eq!(part(&mut conn, &mut ledger), (1, true));
        assert_eq!(meta_checkpoint(&conn), newest);
        assert_eq!(latest_seq(&conn, &name(0)), 2);
        assert!(!ledger.is_dirty());
    }

    #[test]
    fn a_checkpoint_is_due_after_its_period_or_after_as_many_reports_as_a_replay_may_take() {
        let mut ledger = Ledger::default();
        ledger.checkpointed_id = 1_000;
        ledger.last_report_id = 1_000 + CHECKPOINT_AFTER_REPORTS - 1;
        assert!(!checkpoint_due(
            CHECKPOINT_EVERY - Duration::from_millis(1),
            &ledger
        ));
        assert!(checkpoint_due(CHECKPOINT_EVERY, &ledger));
        ledger.last_report_id += 1;
        assert!(checkpoint_due(Duration::ZERO, &ledger));
    }
}
