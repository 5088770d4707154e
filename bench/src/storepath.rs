//! `cemwatch-bench store-path`: the coordinator's own work per report without QUIC, so that a
//! change to it can be measured apart from the packet path, whose run-to-run noise (10-20% in
//! the fleet's saturating ingest on this machine) hides a gain of a few percent.
//!
//! Two stages, each timed on the CPU of the thread that does it (`schedstat`, nanoseconds):
//! 1. **Reading**: what a session does with a report frame's payload: `view::decode_report`,
//!    `Arrived::of` (the summary), `Encoded::from_report_frame` (the results cut to be stored).
//!    The frames are built before the clock starts.
//! 2. **Committing**: the real store writer (`store::Writer`, its group commit, LZ4, SQLite with
//!    `synchronous = FULL`, the ledger), with the fleet view recorded in its commit hook as the
//!    registry does. `--probes` connections each keep `--in-flight` reports submitted,
//!    submitting the next as an outcome comes back: a saturating load on the writer. The
//!    writer thread's CPU per report is the figure; the submitting thread's is printed beside
//!    it.
//!
//! 3. **Replaying**: the ledger loaded again after the store forgets its checkpoint, as after a
//!    crash: every committed report read back, decompressed, decoded and applied.
//!
//! What it leaves out: QUIC, the session's task and its wake-ups, the `Ack`s, metrics.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use cemwatch_coordinator::analysis::fleet::Fleet;
use cemwatch_coordinator::model::arrived::Arrived;
use cemwatch_coordinator::store::results::Encoded;
use cemwatch_coordinator::store::{Ingested, Outcome, Writer};
use cemwatch_shared::wire::PREFIX_LEN;

use crate::{frames, procstat, report};

/// What `store-path` runs.
#[derive(Debug, Clone)]
pub struct StorePathOptions {
    /// Reports in all.
    pub reports: usize,
    /// Connections (probes) submitting.
    pub probes: usize,
    /// Reports each keeps submitted and not yet committed.
    pub in_flight: usize,
}

/// Nanoseconds the calling thread has run on a CPU (`/proc/thread-self/schedstat`).
fn this_thread_ns() -> Result<u64> {
    thread_ns(Path::new("/proc/thread-self/schedstat"))
}

/// [`procstat::schedstat_ns`], or an error that says what this measure needs.
fn thread_ns(path: &Path) -> Result<u64> {
    procstat::schedstat_ns(path).with_context(|| {
        format!(
            "no CPU time in {} (this measure needs Linux's schedstat)",
            path.display()
        )
    })
}

/// The schedstat file of this process's thread named `name`. A thread names itself once it
/// runs, so a thread just spawned is waited for (up to a second).
fn thread_schedstat(name: &str) -> Result<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        for task in std::fs::read_dir("/proc/self/task")? {
            let dir = task?.path();
            if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == name) {
                return Ok(dir.join("schedstat"));
            }
        }
        if Instant::now() >= deadline {
            bail!("no thread named {name} in this process after 1 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs both stages over `results` (a report's encoded results, as the fleet sends them) and
/// prints their figures.
pub fn run(opts: &StorePathOptions, results: &[u8], work: &Path) -> Result<()> {
    let (reports, probes, in_flight) = (
        opts.reports.max(1),
        opts.probes.clamp(1, opts.reports.max(1)),
        opts.in_flight.max(1),
    );
    println!(
        "\n== store path: {} reports of {} bytes of results, {} probes with {} in flight each (no QUIC) ==",
        report::fmt_count(reports as u64),
        results.len(),
        report::fmt_count(probes as u64),
        in_flight
    );
    // Probe i sends seqs 1, 2, ...: report n is probe n % probes's (n / probes + 1)th.
    let payloads: Vec<Vec<u8>> = (0..reports)
        .map(|n| {
            let frame = frames::report_frame((n / probes) as u64 + 1, None, results)?;
            Ok(frame[PREFIX_LEN..].to_vec())
        })
        .collect::<Result<_>>()?;

    let started = this_thread_ns()?;
    let mut read: Vec<(Arrived, Encoded)> = Vec::with_capacity(reports);
    for payload in payloads {
        let arrived = {
            let view = cemwatch_shared::view::decode_report(&payload)?
                .context("the benchmark's frame is not a report")?;
            Arrived::of(&view)
        };
        let stored = Encoded::from_report_frame(payload)
            .context("a report whose results cannot be cut from its frame")?;
        read.push((arrived, stored));
    }
    let read_ns = this_thread_ns()? - started;
    println!(
        "  reading a report (decode_report, Arrived::of, Encoded::from_report_frame): {:.2} us of CPU per report",
        read_ns as f64 / 1e3 / reports as f64
    );

    let data = work.join("store-path");
    let writer = Writer::start(&data)?;
    let fleet = Mutex::new(Fleet::default());
    writer.on_commit(Box::new(move |group, now_ms| {
        let mut fleet = fleet.lock().unwrap_or_else(|e| e.into_inner());
        for (probe, report) in group.iter_mut() {
            fleet.record(probe, report, now_ms);
        }
    }));
    let writer_stat = thread_schedstat("cemwatch-store")?;

    // Each probe's reports, in order.
    let mut queues: Vec<Vec<(Arrived, Encoded)>> = (0..probes).map(|_| Vec::new()).collect();
    for (n, r) in read.into_iter().enumerate() {
        queues[n % probes].push(r);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (writer_before, me_before, wall) =
        (thread_ns(&writer_stat)?, this_thread_ns()?, Instant::now());
    let (stored, duplicate, failed) = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, queue) in queues.into_iter().enumerate() {
            let path = writer.path(&format!("bench-probe-{i:06}"));
            tasks.spawn(async move {
                let mut queue = queue.into_iter();
                let (mut outstanding, mut counts) = (0usize, (0u64, 0u64, 0u64));
                let mut outcomes: Vec<Outcome> = Vec::new();
                loop {
                    while outstanding < in_flight {
                        let Some((arrived, stored)) = queue.next() else {
                            break;
                        };
                        path.submit(arrived, stored)
                            .map_err(|_| anyhow!("the store writer stopped"))?;
                        outstanding += 1;
                    }
                    if outstanding == 0 {
                        return Ok::<_, anyhow::Error>(counts);
                    }
                    path.mailbox().ready().await;
                    path.mailbox().take(&mut outcomes);
                    for (outcome, _) in outcomes.drain(..) {
                        outstanding -= 1;
                        match outcome {
                            Ok(Ingested::Stored) => counts.0 += 1,
                            Ok(Ingested::Duplicate) => counts.1 += 1,
                            Err(_) => counts.2 += 1,
                        }
                    }
                }
            });
        }
        let mut all = (0u64, 0u64, 0u64);
        while let Some(done) = tasks.join_next().await {
            let (s, d, f) = done??;
            all = (all.0 + s, all.1 + d, all.2 + f);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let elapsed = wall.elapsed();
    let writer_ns = thread_ns(&writer_stat)? - writer_before;
    let me_ns = this_thread_ns()? - me_before;
    if stored != reports as u64 || duplicate != 0 || failed != 0 {
        bail!(
            "the store committed {stored} of {reports} reports ({duplicate} duplicate, {failed} failed)"
        );
    }
    println!(
        "  committing: {} reports in {:.2} s ({} reports/s); the writer's thread {:.2} us of CPU per report, the submitting thread {:.2}",
        report::fmt_count(stored),
        elapsed.as_secs_f64(),
        report::fmt_count((stored as f64 / elapsed.as_secs_f64().max(1e-9)) as u64),
        writer_ns as f64 / 1e3 / stored as f64,
        me_ns as f64 / 1e3 / stored as f64
    );
    drop(writer);
    replay(&data, stored)
}

/// Stage 3, the replay after a crash: the store forgets its checkpoint, as a crash before it
/// would have left it, and the ledger is loaded again, replaying every report committed.
/// What it costs per report bounds how many reports the writer lets pass between checkpoints
/// (`store::CHECKPOINT_AFTER_REPORTS`).
fn replay(data: &Path, stored: u64) -> Result<()> {
    let db = cemwatch_coordinator::store::open(data)?;
    let last: i64 = db.query_row("SELECT MAX(id) FROM reports", [], |r| r.get(0))?;
    let checkpoint = |db: &rusqlite::Connection| -> Result<i64> {
        Ok(db.query_row(
            "SELECT COALESCE((SELECT value FROM meta WHERE key = 'checkpoint'), 0)",
            [],
            |r| r.get(0),
        )?)
    };
    // The writer, its senders gone, writes a last checkpoint and stops.
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(&db)? != last {
        if Instant::now() >= deadline {
            bail!("the store writer left no checkpoint of its {stored} reports within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    db.execute("UPDATE meta SET value = 0 WHERE key = 'checkpoint'", [])?;
    let started = this_thread_ns()?;
    let ledger = cemwatch_coordinator::store::ledger::Ledger::load(&db)?;
    let replay_ns = this_thread_ns()? - started;
    if ledger.last_report_id != last {
        bail!(
            "the replay reached report {} of {last}",
            ledger.last_report_id
        );
    }
    println!(
        "  replaying after a crash (the ledger loaded with no checkpoint): {} reports in {:.2} s of CPU, {:.2} us per report",
        report::fmt_count(stored),
        replay_ns as f64 / 1e9,
        replay_ns as f64 / 1e3 / stored as f64
    );
    Ok(())
}
