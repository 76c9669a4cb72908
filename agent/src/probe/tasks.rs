//! The engine loop shared by TCP connect and traceroute: at each target's
//! slot (see [`super::schedule`]) one task probes it and yields its record.
//! At most `max_in_flight` tasks run at once, and with `one_per_target`
//! never two for the same target; a slot that cannot start is counted as
//! lag, not queued. A new target list replaces the old one at once.

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use sonde_proto::v1::Record;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::emit::Emitter;
use super::schedule::{LAG_REPORT_EVERY, Schedule, idle_wake};

/// How long shutdown lets tasks under way finish; the rest are abandoned
/// without a result, as if never started.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What distinguishes one task engine from another.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Probe name in logs and lag records.
    pub probe: &'static str,
    pub max_in_flight: usize,
    /// Never run two tasks for the same target at once.
    pub one_per_target: bool,
}

/// Runs until `shutdown`: `probe(net, target)` is the task for one slot,
/// `interval(target)` its period, `now_ns(net)` the wall clock for lag
/// records.
#[allow(clippy::too_many_arguments)]
pub async fn run<N, T, Fut>(
    limits: Limits,
    net: N,
    mut targets: watch::Receiver<Arc<Vec<T>>>,
    interval: fn(&T) -> Duration,
    probe: fn(Arc<N>, T) -> Fut,
    now_ns: fn(&N) -> i64,
    mut emit: Emitter,
    shutdown: CancellationToken,
) where
    N: Send + Sync + 'static,
    T: Clone + Eq + Hash + Send + Sync + 'static,
    Fut: Future<Output = Record> + Send + 'static,
{
    let net = Arc::new(net);
    let mut schedule = Schedule::default();
    let mut current = targets.borrow_and_update().clone();
    schedule.set(current.iter().map(interval).collect(), Instant::now());
    let mut running: JoinSet<(T, Record)> = JoinSet::new();
    let mut busy: HashSet<T> = HashSet::new();
    let mut report = tokio::time::interval_at(Instant::now() + LAG_REPORT_EVERY, LAG_REPORT_EVERY);
    loop {
        let wake = schedule.next().unwrap_or_else(idle_wake);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((target, record)) = done {
                    busy.remove(&target);
                    emit.push(record);
                }
            }
            Ok(()) = targets.changed() => {
                current = targets.borrow_and_update().clone();
                schedule.set(current.iter().map(interval).collect(), Instant::now());
                tracing::info!(probe = limits.probe, targets = current.len(), "target set applied");
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                while let Some(i) = schedule.pop_due(now) {
                    let target = current[i].clone();
                    let taken = limits.one_per_target && busy.contains(&target);
                    if running.len() >= limits.max_in_flight || taken {
                        schedule.skip();
                        continue;
                    }
                    if limits.one_per_target {
                        busy.insert(target.clone());
                    }
                    let task = probe(net.clone(), target.clone());
                    running.spawn(async move { (target, task.await) });
                }
            }
            _ = report.tick() => {
                if let Some(lag) = schedule.take_lag(limits.probe, now_ns(&net)) {
                    emit.push(lag);
                }
                emit.flush_gap(now_ns(&net));
            }
        }
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while let Ok(Some(Ok((_, record)))) =
        tokio::time::timeout_at(deadline, running.join_next()).await
    {
        emit.push(record);
    }
}
