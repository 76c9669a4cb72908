//! The one task that owns every check's state: it answers pings (looked
//! up by token hash, or by ping key and slug), keeps each check's next
//! deadline, and records what changes.
//!
//! - **Durable before answered.** A ping is answered `OK` once it and
//!   the state it leaves its check in are committed. Pings that arrive
//!   while a commit is in flight go into the next one together (group
//!   commit), so a burst costs one `fsync` per batch, not per ping. A
//!   commit that fails puts the checks back as the store has them and
//!   answers `503`: the client's retry (`curl --retry`) is the redelivery.
//! - **Transitions are events** (`check-up`, `check-down`,
//!   `check-failed`, `check-started`, `check-paused`, `check-resumed`),
//!   written with the state in the same
//!   transaction, so alerting sees each exactly once. After a restart the
//!   deadlines come back from what is stored (last success, a started
//!   run): a check that fell due while the collector was down goes down
//!   once, at start, and not again.
//! - **Time** is [`Clock`]: tokio's clock from a wall-clock start, so
//!   tests move it with a paused clock.
//! - **Rate limits**: each check's token may ping `pings-per-second`
//!   with a burst of `ping-burst`; beyond, `429` and nothing is recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::limit::Limiter;
use super::state::{Expectation, State, Stored, Verdict};
use super::store::{self as checks_store, Check, PingKind, PingRow, Write};
use crate::config::Config;
use crate::consumers::analysis::Clock;
use crate::store::{EventKind, Store, StoreError};

/// Most pings committed together.
const MAX_BATCH: usize = 512;
/// How often old pings are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How a ping names its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `/ping/<uuid>`: the token's hash.
    Token(Vec<u8>),
    /// `/ping/<ping-key>/<slug>`: the key's hash and the slug.
    Slug { key_hash: Vec<u8>, slug: String },
}

/// A ping as the listener received it: how it names its check, and what
/// it says (the monitor sets its time and the run's duration).
#[derive(Debug, Clone)]
pub struct Ping {
    pub lookup: Lookup,
    pub row: PingRow,
}

/// What became of a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    /// No check has that token (or that slug under that key).
    Unknown,
    /// Over the check's rate limit: not recorded.
    Limited,
    /// The store refused the write: not recorded.
    Failed,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Recorded pings by kind: success, start, fail, log.
    pub pings: [AtomicU64; 4],
    pub limited: AtomicU64,
    pub unknown: AtomicU64,
    /// Checks by state now (`State` order: new, up, late, down, paused,
    /// off-hours).
    pub states: [AtomicU64; 6],
}

fn kind_index(k: PingKind) -> usize {
    match k {
        PingKind::Success => 0,
        PingKind::Start => 1,
        PingKind::Fail => 2,
        PingKind::Log => 3,
    }
}

/// The states in [`Stats::states`] order.
pub const STATES: [State; 6] = [
    State::New,
    State::Up,
    State::Late,
    State::Down,
    State::Paused,
    State::OffHours,
];

#[derive(Debug)]
enum Command {
    Ping(Box<Ping>, oneshot::Sender<Outcome>),
    /// Check `id` was added, changed, rotated or deleted: read it again.
    Reload(i64, oneshot::Sender<()>),
    /// A tenant's ping key changed.
    ReloadKeys(oneshot::Sender<()>),
    Pause(i64, oneshot::Sender<Result<bool, StoreError>>),
    Resume(i64, oneshot::Sender<Result<bool, StoreError>>),
    /// Settle every deadline due by now, then answer.
    Sync(oneshot::Sender<()>),
}

/// Handle to the monitor task.
#[derive(Debug, Clone)]
pub struct Monitor {
    tx: mpsc::Sender<Command>,
    pub stats: Arc<Stats>,
}

/// Why the monitor did not answer.
#[derive(Debug, thiserror::Error)]
#[error("the checks monitor has stopped")]
pub struct Stopped;

impl Monitor {
    /// Loads every check and starts the task.
    pub async fn spawn(
        store: Store,
        config: watch::Receiver<Arc<Config>>,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), StoreError> {
        let stats = Arc::new(Stats::default());
        let mut monitored = Monitored::load(store, config, clock, stats.clone()).await?;
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(async move { monitored.run(rx, shutdown).await });
        Ok((Self { tx, stats }, task))
    }

    /// Records a ping; what became of it.
    pub async fn ping(&self, p: Ping) -> Result<Outcome, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Ping(Box::new(p), tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Makes the monitor read check `id` again (after the API changed,
    /// rotated or deleted it); returns once it has.
    pub async fn reload(&self, id: i64) -> Result<(), Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload(id, tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Makes the monitor read the tenants' ping keys again.
    pub async fn reload_keys(&self) -> Result<(), Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::ReloadKeys(tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Resolves once every deadline due by now has been recorded and
    /// everything sent before has been handled (tests, the watchdog);
    /// fails if the task is gone or stuck past `timeout`.
    pub async fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let round_trip =
            async { self.tx.send(Command::Sync(tx)).await.is_ok() && rx.await.is_ok() };
        tokio::time::timeout(timeout, round_trip)
            .await
            .unwrap_or(false)
    }

    /// Pauses (`true`) or resumes check `id`; `Ok(false)`: no such check.
    pub async fn set_paused(
        &self,
        id: i64,
        paused: bool,
    ) -> Result<Result<bool, StoreError>, Stopped> {
        let (tx, rx) = oneshot::channel();
        let cmd = if paused {
            Command::Pause(id, tx)
        } else {
            Command::Resume(id, tx)
        };
        self.tx.send(cmd).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

#[derive(Debug)]
struct Entry {
    check: Check,
    token_hash: Vec<u8>,
    expectation: Expectation,
    verdict: Verdict,
}

/// The task's state.
struct Monitored {
    store: Store,
    config: watch::Receiver<Arc<Config>>,
    clock: Clock,
    stats: Arc<Stats>,
    entries: HashMap<i64, Entry>,
    by_token: HashMap<Vec<u8>, i64>,
    /// (tenant, slug) → id, for `/ping/<ping-key>/<slug>`.
    by_slug: HashMap<(String, String), i64>,
    /// Ping key hash → tenant.
    keys: HashMap<Vec<u8>, String>,
    limiter: Limiter<i64>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn detail(c: &Check) -> serde_json::Value {
    json!({ "check": c.name, "id": c.id, "slug": c.slug })
}

impl Monitored {
    async fn load(
        store: Store,
        config: watch::Receiver<Arc<Config>>,
        clock: Clock,
        stats: Arc<Stats>,
    ) -> Result<Self, StoreError> {
        let (checks, tokens, keys) = store
            .run(|s| {
                Ok((
                    checks_store::load(s)?,
                    checks_store::token_hashes(s)?,
                    checks_store::ping_keys(s)?,
                ))
            })
            .await?;
        let settings = config.borrow().checks;
        let mut m = Self {
            store,
            config,
            clock,
            stats,
            entries: HashMap::new(),
            by_token: HashMap::new(),
            by_slug: HashMap::new(),
            keys: keys.into_iter().collect(),
            limiter: Limiter::new(settings.pings_per_second, settings.ping_burst),
        };
        let tokens: HashMap<i64, Vec<u8>> = tokens.into_iter().collect();
        for c in checks {
            let hash = tokens.get(&c.id).cloned().unwrap_or_default();
            m.put(c, hash);
        }
        Ok(m)
    }

    /// Adds or replaces an entry, judged now.
    fn put(&mut self, check: Check, token_hash: Vec<u8>) {
        let expectation = check.spec.expectation(&self.config.borrow());
        let verdict = expectation.judge(&check.received(), self.clock.now_ms());
        self.remove(check.id);
        self.by_token.insert(token_hash.clone(), check.id);
        self.by_slug
            .insert((check.tenant.clone(), check.slug.clone()), check.id);
        self.entries.insert(
            check.id,
            Entry {
                check,
                token_hash,
                expectation,
                verdict,
            },
        );
    }

    fn remove(&mut self, id: i64) {
        if let Some(e) = self.entries.remove(&id) {
            self.by_token.remove(&e.token_hash);
            self.by_slug.remove(&(e.check.tenant, e.check.slug));
        }
    }

    fn find(&self, lookup: &Lookup) -> Option<i64> {
        match lookup {
            Lookup::Token(h) => self.by_token.get(h).copied(),
            Lookup::Slug { key_hash, slug } => {
                let tenant = self.keys.get(key_hash)?;
                self.by_slug.get(&(tenant.clone(), slug.clone())).copied()
            }
        }
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        // What fell due while the collector was stopped, once.
        self.settle().await;
        let mut pruned = tokio::time::Instant::now();
        let mut prune_now = true;
        loop {
            self.count_states();
            if prune_now {
                self.prune().await;
                pruned = tokio::time::Instant::now();
                prune_now = false;
            }
            // A check found down whose transition could not be written
            // is tried again a second later.
            let retry = self.clock.now_ms().saturating_add(1000);
            let next = self
                .entries
                .values()
                .filter_map(|e| {
                    e.verdict.until_ms.or((e.verdict.state == State::Down
                        && e.check.stored == Stored::Up)
                        .then_some(retry))
                })
                .min();
            let wake = async {
                match next {
                    Some(at) => {
                        let wait = at.saturating_sub(self.clock.now_ms()).max(0);
                        tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
                            .await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.command(cmd, &mut rx).await;
                }
                () = wake => self.settle().await,
                Ok(()) = self.config.changed() => self.reconfigure(),
                () = tokio::time::sleep_until(pruned + PRUNE_EVERY) => prune_now = true,
            }
        }
    }

    fn count_states(&self) {
        let mut n = [0u64; 6];
        for e in self.entries.values() {
            if let Some(i) = STATES.iter().position(|s| *s == e.verdict.state) {
                n[i] += 1;
            }
        }
        for (slot, v) in self.stats.states.iter().zip(n) {
            slot.store(v, Relaxed);
        }
    }

    fn reconfigure(&mut self) {
        let config = self.config.borrow_and_update().clone();
        self.limiter = Limiter::new(config.checks.pings_per_second, config.checks.ping_burst);
        let now = self.clock.now_ms();
        for e in self.entries.values_mut() {
            e.expectation = e.check.spec.expectation(&config);
            e.verdict = e.expectation.judge(&e.check.received(), now);
        }
    }

    async fn prune(&self) {
        let keep = millis(self.config.borrow().checks.ping_retention);
        let cutoff = self.clock.now_ms().saturating_sub(keep);
        match self
            .store
            .run(move |s| checks_store::prune_pings(s, cutoff))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(pings = n, "deleted pings past checks.ping-retention"),
            Err(e) => tracing::error!(error = %e, "cannot delete old pings"),
        }
    }

    async fn command(&mut self, first: Command, rx: &mut mpsc::Receiver<Command>) {
        let mut batch: Vec<(Write, Option<oneshot::Sender<Outcome>>)> = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Ping(p, reply) => {
                    let outcome = self.ping(*p, &mut batch);
                    match outcome {
                        Some(o) => {
                            let _ = reply.send(o);
                        }
                        // Answered once committed.
                        None => {
                            if let Some(last) = batch.last_mut() {
                                last.1 = Some(reply);
                            }
                        }
                    }
                }
                other => {
                    self.commit(std::mem::take(&mut batch)).await;
                    self.control(other).await;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.commit(batch).await;
    }

    /// Applies a ping to its check in memory; `None` when it is to be
    /// written (pushed onto `batch`), else the answer now.
    fn ping(
        &mut self,
        p: Ping,
        batch: &mut Vec<(Write, Option<oneshot::Sender<Outcome>>)>,
    ) -> Option<Outcome> {
        let Some(id) = self.find(&p.lookup) else {
            self.stats.unknown.fetch_add(1, Relaxed);
            return Some(Outcome::Unknown);
        };
        if !self.limiter.allow(id, tokio::time::Instant::now()) {
            self.stats.limited.fetch_add(1, Relaxed);
            return Some(Outcome::Limited);
        }
        let now = self.clock.now_ms();
        let e = self.entries.get_mut(&id)?;
        let before = e.check.stored;
        let mut row = p.row;
        let c = &mut e.check;
        let mut duration_ms = None;
        let mut event = None;
        match row.kind {
            PingKind::Success => {
                duration_ms = c.started_ms.take().map(|s| now - s);
                c.last_success_ms = Some(now);
                c.last_ping_ms = Some(now);
                c.stored = Stored::Up;
                if duration_ms.is_some() {
                    c.last_duration_ms = duration_ms;
                }
                if before != Stored::Up {
                    let mut d = detail(c);
                    d["was"] = json!(before);
                    event = Some((EventKind::CheckUp, d));
                }
            }
            PingKind::Start => {
                c.started_ms = Some(now);
                c.last_ping_ms = Some(now);
                if before == Stored::Paused {
                    c.stored = Stored::New;
                }
                event = Some((EventKind::CheckStarted, detail(c)));
            }
            PingKind::Fail => {
                duration_ms = c.started_ms.take().map(|s| now - s);
                c.last_ping_ms = Some(now);
                c.stored = Stored::Down;
                if duration_ms.is_some() {
                    c.last_duration_ms = duration_ms;
                }
                if before != Stored::Down {
                    let mut d = detail(c);
                    d["exit_status"] = json!(row.exit_status);
                    d["body"] = json!(row.body.chars().take(200).collect::<String>());
                    event = Some((EventKind::CheckFailed, d));
                }
            }
            PingKind::Log => {}
        }
        e.verdict = e.expectation.judge(&e.check.received(), now);
        self.stats.pings[kind_index(row.kind)].fetch_add(1, Relaxed);
        row.at_ms = now;
        row.duration_ms = duration_ms;
        batch.push((
            Write {
                check: e.check.clone(),
                ping: Some(row),
                event,
            },
            None,
        ));
        None
    }

    /// Writes `batch` in one transaction and answers its pings; on
    /// failure the checks are read back as stored.
    async fn commit(&mut self, batch: Vec<(Write, Option<oneshot::Sender<Outcome>>)>) {
        if batch.is_empty() {
            return;
        }
        let (writes, replies): (Vec<Write>, Vec<_>) = batch.into_iter().unzip();
        let max = self.config.borrow().checks.max_pings;
        let now = self.clock.now_ms();
        let ids: Vec<i64> = writes.iter().map(|w| w.check.id).collect();
        let result = self
            .store
            .run(move |s| checks_store::commit(s, &writes, max, now))
            .await;
        let outcome = match result {
            Ok(()) => Outcome::Recorded,
            Err(e) => {
                tracing::error!(error = %e, checks = ids.len(), "cannot record pings; answered 503");
                for id in ids {
                    self.reload(id).await;
                }
                Outcome::Failed
            }
        };
        // Counted before answering: what a client reads next agrees.
        self.count_states();
        for reply in replies.into_iter().flatten() {
            let _ = reply.send(outcome);
        }
    }

    async fn reload(&mut self, id: i64) {
        let read = self
            .store
            .run(move |s| {
                Ok((
                    checks_store::get(s, id)?,
                    checks_store::token_hash_of(s, id)?,
                ))
            })
            .await;
        match read {
            Ok((Some(c), Some(h))) => self.put(c, h),
            Ok(_) => self.remove(id),
            Err(e) => tracing::error!(error = %e, check = id, "cannot read check"),
        }
    }

    async fn control(&mut self, cmd: Command) {
        match cmd {
            Command::Ping(..) => {}
            Command::Reload(id, reply) => {
                self.reload(id).await;
                let _ = reply.send(());
            }
            Command::ReloadKeys(reply) => {
                match self.store.run(checks_store::ping_keys).await {
                    Ok(k) => self.keys = k.into_iter().collect(),
                    Err(e) => tracing::error!(error = %e, "cannot read ping keys"),
                }
                let _ = reply.send(());
            }
            Command::Pause(id, reply) => {
                let _ = reply.send(self.set_paused(id, true).await);
            }
            Command::Resume(id, reply) => {
                let _ = reply.send(self.set_paused(id, false).await);
            }
            Command::Sync(reply) => {
                self.settle().await;
                let _ = reply.send(());
            }
        }
    }

    /// Pauses a check (no deadline until its next ping or a resume) or
    /// resumes it (`new` again: it waits for its first ping, as in
    /// Healthchecks).
    async fn set_paused(&mut self, id: i64, paused: bool) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let Some(e) = self.entries.get_mut(&id) else {
            return Ok(false);
        };
        let target = if paused { Stored::Paused } else { Stored::New };
        if e.check.stored == target || (!paused && e.check.stored != Stored::Paused) {
            return Ok(true);
        }
        e.check.stored = target;
        e.check.started_ms = None;
        e.verdict = e.expectation.judge(&e.check.received(), now);
        let kind = if paused {
            EventKind::CheckPaused
        } else {
            EventKind::CheckResumed
        };
        let w = Write {
            check: e.check.clone(),
            ping: None,
            event: Some((kind, detail(&e.check))),
        };
        let max = self.config.borrow().checks.max_pings;
        let result = self
            .store
            .run(move |s| checks_store::commit(s, &[w], max, now))
            .await;
        if result.is_err() {
            self.reload(id).await;
        }
        result.map(|()| true)
    }

    /// Re-judges every check whose verdict has run out; those now down
    /// are recorded down with a `check-down` event (once: the stored
    /// state says so from then on).
    async fn settle(&mut self) {
        let now = self.clock.now_ms();
        let mut writes = Vec::new();
        for e in self.entries.values_mut() {
            if e.verdict.until_ms.is_some_and(|u| u > now) {
                continue;
            }
            e.verdict = e.expectation.judge(&e.check.received(), now);
            if e.verdict.state == State::Down && e.check.stored == Stored::Up {
                let c = &mut e.check;
                let run = c.started_ms.is_some();
                c.stored = Stored::Down;
                let mut d = detail(c);
                d["expected_ms"] = json!(e.verdict.expected_ms);
                d["grace_ms"] = json!(e.expectation.grace_ms);
                d["last_success_ms"] = json!(c.last_success_ms);
                d["reason"] = json!(if run {
                    "a started run did not end within the grace"
                } else {
                    "no ping within period and grace"
                });
                tracing::warn!(check = %c.name, tenant = %c.tenant, id = c.id, "check is down");
                writes.push((
                    Write {
                        check: c.clone(),
                        ping: None,
                        event: Some((EventKind::CheckDown, d)),
                    },
                    None,
                ));
                e.verdict = e.expectation.judge(&e.check.received(), now);
            }
        }
        self.commit(writes).await;
    }
}
