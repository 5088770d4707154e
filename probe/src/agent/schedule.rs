//! The scheduler: runs each planned check on its interval (first run at a random point of the
//! interval, then with ±10% jitter so a fleet does not beat in step), with bounded concurrency,
//! and answers `ProbeNow` rounds at once. Every result goes to the spool before anything else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use cemwatch_shared::wire::{CheckReport, Plan, PlannedCheck};

use super::Shared;
use crate::check::{self, CheckContext, CheckSpec, ResolveOverride};

/// A random `u64` from the system generator.
pub fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// A random duration in `[0, max)`.
pub fn random_below(max: Duration) -> Duration {
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(random_u64() % ms)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs one planned check and returns its report entry.
pub async fn run_planned(shared: &Shared, planned: &PlannedCheck) -> CheckReport {
    let _permit = shared.check_slots.acquire().await;
    let mut ctx = CheckContext::new(shared.trust.clone());
    ctx.overrides = shared.overrides.clone();
    ctx.client_identity = shared.client_identity.clone();
    ctx.revocation = shared.revocation;
    ctx.address_family = shared.address_family;
    ctx.max_addresses = shared.max_addresses;
    ctx.overrides.extend(planned
        .resolve
        .iter()
        .filter_map(|r| match r.parse::<ResolveOverride>() {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(check = %planned.name, error = %e, "ignoring a bad resolve override in the plan");
                None
            }
        }));
    ctx.connect_timeout = Duration::from_millis(planned.connect_timeout_ms.max(100));
    ctx.handshake_timeout = Duration::from_millis(planned.handshake_timeout_ms.max(100));
    let spec = CheckSpec {
        target: planned.target.clone(),
        expectations: planned.expectations.clone(),
    };
    let result = check::run_check(&spec, &ctx).await;
    CheckReport {
        check: planned.name.clone(),
        produced_at_ms: now_ms(),
        result,
    }
}

fn record(shared: &Shared, round: Option<u64>, results: Vec<CheckReport>) {
    let seq = match shared.spool.lock() {
        Ok(mut spool) => spool.append(round, results),
        Err(_) => return,
    };
    tracing::debug!(seq, ?round, "report spooled");
    shared.spool_changed.notify_one();
}

async fn periodic(shared: Arc<Shared>, planned: PlannedCheck) {
    let interval = Duration::from_millis(planned.interval_ms.max(1_000));
    tokio::time::sleep(random_below(interval)).await;
    loop {
        let started = Instant::now();
        let report = run_planned(&shared, &planned).await;
        record(&shared, None, vec![report]);
        // ±10% jitter.
        let tenth = interval / 10;
        let next = interval - tenth + random_below(tenth * 2 + Duration::from_millis(1));
        tokio::time::sleep_until(started + next).await;
    }
}

async fn round(shared: Arc<Shared>, plan: Plan, round: u64, names: Vec<String>) {
    let wanted: Vec<PlannedCheck> = plan
        .checks
        .into_iter()
        .filter(|c| names.is_empty() || names.contains(&c.name))
        .collect();
    let mut set = JoinSet::new();
    for planned in wanted {
        let shared = shared.clone();
        set.spawn(async move { run_planned(&shared, &planned).await });
    }
    let mut results = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(report) = done {
            results.push(report);
        }
    }
    results.sort_by(|a, b| a.check.cmp(&b.check));
    tracing::info!(round, checks = results.len(), "probe-now round done");
    record(&shared, Some(round), results);
}

/// Runs the plan until `plan_rx` closes; restarts the periodic checks whenever the plan changes.
///
/// `ProbeNow` requests are coalesced per set of checks: while a round of those checks runs, a
/// newer request for them waits (only the newest one: an older waiting one is dropped, its
/// round simply not answered by this probe), and it starts when the running one ends. However
/// often rounds are asked for, this probe runs at most one round per check at a time and keeps
/// at most one more waiting.
pub async fn run(
    shared: Arc<Shared>,
    mut plan_rx: watch::Receiver<Option<Plan>>,
    mut now_rx: mpsc::Receiver<(u64, Vec<String>)>,
) {
    let mut periodic_tasks = JoinSet::new();
    let mut rounds: JoinSet<()> = JoinSet::new();
    // The running rounds by task (so a round that panicked frees its checks too), and the
    // newest waiting request per set of checks.
    let mut running: HashMap<tokio::task::Id, Vec<String>> = HashMap::new();
    let mut waiting: HashMap<Vec<String>, u64> = HashMap::new();
    let start = |rounds: &mut JoinSet<()>,
                 running: &mut HashMap<tokio::task::Id, Vec<String>>,
                 plan: Plan,
                 id: u64,
                 names: Vec<String>| {
        let task = rounds
            .spawn(round(shared.clone(), plan, id, names.clone()))
            .id();
        running.insert(task, names);
    };
    loop {
        periodic_tasks.abort_all();
        let current = plan_rx.borrow_and_update().clone();
        if let Some(plan) = &current {
            for planned in plan.checks.clone() {
                periodic_tasks.spawn(periodic(shared.clone(), planned));
            }
        }
        loop {
            tokio::select! {
                changed = plan_rx.changed() => {
                    if changed.is_err() {
                        periodic_tasks.abort_all();
                        rounds.abort_all();
                        return;
                    }
                    break;
                }
                request = now_rx.recv() => {
                    let Some((id, mut names)) = request else { return };
                    names.sort();
                    names.dedup();
                    if running.values().any(|n| *n == names) {
                        if let Some(older) = waiting.insert(names, id) {
                            tracing::info!(round = older, newer = id, "probe-now coalesced: a newer round of the same checks replaces it");
                        }
                        continue;
                    }
                    // The newest plan, even if its change has not been handled above yet: a
                    // ProbeNow often follows a (re)connection's plan immediately.
                    let latest = plan_rx.borrow().clone();
                    match latest {
                        Some(plan) => start(&mut rounds, &mut running, plan, id, names),
                        None => tracing::warn!(round = id, "probe-now before any plan: nothing to run"),
                    }
                }
                Some(done) = rounds.join_next_with_id(), if !rounds.is_empty() => {
                    let task = match done {
                        Ok((task, ())) => task,
                        Err(e) => e.id(),
                    };
                    let Some(names) = running.remove(&task) else { continue };
                    if let Some(id) = waiting.remove(&names) {
                        let plan = plan_rx.borrow().clone();
                        if let Some(plan) = plan {
                            start(&mut rounds, &mut running, plan, id, names);
                        }
                    }
                }
            }
        }
    }
}
