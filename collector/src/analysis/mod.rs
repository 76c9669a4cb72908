//! Analysis: the collector's second consumer of the ingest log (cursor
//! `analysis`). It keeps per-series state (`series.rs`: latest result,
//! minute and hour aggregates, moving averages, timeline), detects
//! outages (`outage.rs`) and route changes (`route.rs`), attributes
//! outages to their cause (`correlate.rs`), and persists all of it with
//! its cursor in one transaction per checkpoint (`persist.rs`).
//!
//! Results are analysed in log order, which per agent is the order it sent
//! them; windows and outages use the agents' send times. What the API asks
//! ("now") comes from the collector's clock.

pub mod bucket;
pub mod correlate;
pub mod outage;
pub mod persist;
pub mod route;
pub mod series;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message as _;
use serde::Deserialize;
use serde_json::json;
use sonde_proto::v1::ResultBatch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::Tenancy;
use crate::observation::{Observation, Probe, observe};
use crate::store::{AgentKey, EventKind, LogKind, LoggedBatch, Store, StoreError, now_ms};
use correlate::{Correlator, Thresholds};
use persist::{NewEvent, OutageRow};
use series::{Deltas, Series, SeriesKey};

/// The analysis' cursor name in the store.
pub const CURSOR: &str = "analysis";

/// Log entries read per store query.
const READ_CHUNK: u32 = 500;

/// `[analysis]` in the collector config.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    #[serde(default)]
    pub outage: outage::Policy,
    /// Consecutive traces that must agree before a route change counts.
    #[serde(default = "default_route_confirm")]
    pub route_confirm: u32,
    #[serde(default)]
    pub correlation: Thresholds,
    /// How often analysis state is made durable.
    #[serde(default = "default_checkpoint", with = "humantime_serde")]
    pub checkpoint: Duration,
}

fn default_route_confirm() -> u32 {
    2
}
fn default_checkpoint() -> Duration {
    Duration::from_secs(1)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            outage: outage::Policy::default(),
            route_confirm: default_route_confirm(),
            correlation: Thresholds::default(),
            checkpoint: default_checkpoint(),
        }
    }
}

/// Every series, indexed by agent (then probe kind and target) and by
/// /24 (/64); ids are positions + 1.
#[derive(Debug, Default)]
pub struct Book {
    pub series: Vec<Series>,
    /// Positions by agent, probe kind and target: the agent is looked up
    /// once per batch, a result's series with its target alone.
    by_agent: HashMap<AgentKey, HashMap<Probe, HashMap<String, usize>>>,
    /// Series positions by the prefix of their address (a series whose
    /// address moved is listed under each prefix it had; readers check).
    by_prefix: HashMap<ipnet::IpNet, Vec<usize>>,
}

impl Book {
    fn from_series(series: Vec<Series>) -> Self {
        let mut book = Self {
            series,
            ..Self::default()
        };
        for i in 0..book.series.len() {
            let key = &book.series[i].key;
            book.by_agent
                .entry(AgentKey {
                    tenant: key.tenant.clone(),
                    name: key.agent.clone(),
                })
                .or_default()
                .entry(key.probe)
                .or_default()
                .insert(key.target.clone(), i);
            book.index_prefix(i, false);
        }
        book
    }

    /// Lists series `i` under its address's prefix; `moved` says it may
    /// be listed there already (its address changed back).
    fn index_prefix(&mut self, i: usize, moved: bool) {
        if let Some(a) = self.series[i].address {
            let list = self
                .by_prefix
                .entry(crate::observation::prefix_of(a))
                .or_default();
            if !(moved && list.contains(&i)) {
                list.push(i);
            }
        }
    }

    /// The series that have (or had) an address in the /24 (/64) `p`.
    pub fn in_prefix(&self, p: &ipnet::IpNet) -> impl Iterator<Item = &Series> {
        self.by_prefix
            .get(&crate::observation::prefix_of(p.addr()))
            .into_iter()
            .flatten()
            .map(|i| &self.series[*i])
    }

    /// Every series of one agent.
    pub fn of_agent(&self, agent: &AgentKey) -> impl Iterator<Item = &Series> {
        self.by_agent
            .get(agent)
            .into_iter()
            .flat_map(HashMap::values)
            .flat_map(HashMap::values)
            .map(|i| &self.series[*i])
    }

    /// The series with id `id`.
    pub fn by_id(&self, id: i64) -> Option<&Series> {
        usize::try_from(id - 1)
            .ok()
            .and_then(|i| self.series.get(i))
            .filter(|s| s.id == id)
    }

    fn position(&self, agent: &AgentKey, probe: Probe, target: &str) -> Option<usize> {
        self.by_agent.get(agent)?.get(&probe)?.get(target).copied()
    }

    pub fn get(&self, key: &SeriesKey) -> Option<&Series> {
        let agent = AgentKey {
            tenant: key.tenant.clone(),
            name: key.agent.clone(),
        };
        self.position(&agent, key.probe, &key.target)
            .map(|i| &self.series[i])
    }

    /// The series of a result of `agent`, created (and indexed) on first
    /// sight; `o`'s address is re-indexed when it moved.
    fn entry(&mut self, agent: &AgentKey, o: &Observation<'_>, deltas: &mut Deltas) -> usize {
        if let Some(i) = self.position(agent, o.probe, &o.target) {
            if o.address.is_some() && o.address != self.series[i].address {
                self.series[i].address = o.address;
                self.index_prefix(i, true);
            }
            return i;
        }
        let i = self.series.len();
        let id = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        let key = SeriesKey {
            tenant: agent.tenant.clone(),
            agent: agent.name.clone(),
            probe: o.probe,
            target: o.target.clone(),
        };
        self.series.push(Series::new(id, key, o.address));
        self.by_agent
            .entry(agent.clone())
            .or_default()
            .entry(o.probe)
            .or_default()
            .insert(o.target.clone(), i);
        self.index_prefix(i, false);
        deltas.created.push(id);
        i
    }
}

/// A wall clock that follows tokio's clock from a fixed start, so tests
/// drive it with a paused clock and it never jumps with the system clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ns: i64,
    base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self::at(sonde_runtime::clock::unix_nanos())
    }

    /// A clock that reads `unix_ns` now.
    pub fn at(unix_ns: i64) -> Self {
        Self {
            base_ns: unix_ns,
            base: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.now_ns().div_euclid(1_000_000)
    }

    pub fn now_ns(&self) -> i64 {
        let elapsed = i64::try_from(self.base.elapsed().as_nanos()).unwrap_or(i64::MAX);
        self.base_ns.saturating_add(elapsed)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub results: std::sync::atomic::AtomicU64,
    pub outages_started: std::sync::atomic::AtomicU64,
    pub route_changes: std::sync::atomic::AtomicU64,
    pub position: std::sync::atomic::AtomicI64,
}

/// What the API reads: the book, behind a lock the analyzer holds only
/// while applying one log entry.
#[derive(Debug, Clone)]
pub struct Handle {
    pub book: Arc<RwLock<Book>>,
    pub clock: Clock,
    pub stats: Arc<Stats>,
}

impl Handle {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.book
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The analysis task.
pub struct Analyzer {
    store: Store,
    settings: Settings,
    book: Arc<RwLock<Book>>,
    clock: Clock,
    stats: Arc<Stats>,
    correlator: Correlator,
    deltas: Deltas,
    events: Vec<NewEvent>,
    rows: Vec<OutageRow>,
    position: i64,
    /// Newest send time analysed per agent: the correlator's clock.
    newest: HashMap<AgentKey, i64>,
    /// How long minute and hour aggregates are kept.
    retention: Duration,
    /// The config, for the tenancy policy the correlator follows.
    config: Option<tokio::sync::watch::Receiver<Arc<crate::Config>>>,
    tenancy: Arc<Tenancy>,
    /// Series whose outage membership changed since the checkpoint.
    regrouped: BTreeSet<i64>,
    /// Untrusted cross-tenant measurements already logged (`access.rs`).
    logged: BTreeSet<(String, ipnet::IpNet, String)>,
}

/// How often aggregates past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl Analyzer {
    /// Loads the analysis state from the store.
    pub fn load(store: &Store, settings: Settings, clock: Clock) -> Result<Self, StoreError> {
        let now = clock.now_ns();
        let (series, position, next_outage, open) = store.with(|c| {
            Ok((
                persist::load(c, now)?,
                crate::store::cursor_in(c, CURSOR)?,
                persist::next_outage_id(c)?,
                persist::open_outages(c)?,
            ))
        })?;
        let book = Book::from_series(series);
        let mut correlator = Correlator::new(next_outage);
        for s in &book.series {
            if s.outage.open().is_some() {
                correlator.down(s.id);
            }
        }
        let mut restored = correlate::Output::default();
        correlator.restore(open, &book, &mut restored);
        let mut newest: HashMap<AgentKey, i64> = HashMap::new();
        for s in &book.series {
            if let Some(l) = &s.latest {
                let agent = AgentKey {
                    tenant: s.key.tenant.clone(),
                    name: s.key.agent.clone(),
                };
                let t = newest.entry(agent).or_insert(l.time_ns);
                *t = (*t).max(l.time_ns);
            }
        }
        let stats = Arc::new(Stats::default());
        stats
            .position
            .store(position, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            store: store.clone(),
            settings,
            book: Arc::new(RwLock::new(book)),
            clock,
            stats,
            correlator,
            deltas: Deltas::default(),
            events: restored.events,
            rows: restored.rows,
            position,
            newest,
            retention: Duration::from_secs(7 * 86_400),
            config: None,
            tenancy: Arc::default(),
            logged: BTreeSet::new(),
            regrouped: BTreeSet::new(),
        })
    }

    /// Keeps aggregates for `d` (default 7 days).
    #[must_use]
    pub fn with_retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// Follows the tenancy policy of `config` (and its reloads): which
    /// tenants' correlations a series counts in.
    #[must_use]
    pub fn with_config(mut self, config: tokio::sync::watch::Receiver<Arc<crate::Config>>) -> Self {
        self.config = Some(config);
        self.follow_config(true);
        self
    }

    /// Takes a changed tenancy policy (or the first one) and logs, once
    /// per pair, where agents measure a prefix granted to a tenant that
    /// does not trust them.
    fn follow_config(&mut self, first: bool) {
        let Some(rx) = self.config.as_mut() else {
            return;
        };
        if !first && !rx.has_changed().unwrap_or(false) {
            return;
        }
        let tenancy = rx.borrow_and_update().tenancy();
        if !first && tenancy == self.tenancy {
            return;
        }
        self.tenancy = tenancy;
        let book = self.book.clone();
        let book = book
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.correlator.set_tenancy(self.tenancy.clone(), &book);
        self.logged.clear();
        self.log_untrusted(book.series.iter());
    }

    fn log_untrusted<'a>(&mut self, series: impl Iterator<Item = &'a Series>) {
        let pairs = crate::access::untrusted_pairs(
            &self.tenancy,
            series.filter_map(|s| Some((s.key.tenant.as_str(), s.address?))),
        );
        let new: BTreeSet<_> = pairs.difference(&self.logged).cloned().collect();
        crate::access::log_untrusted(&new);
        self.logged.extend(new);
    }

    /// Deletes aggregates older than the retention (by the collector's
    /// clock), in bounded steps; returns how many rows went.
    pub fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = self
            .clock
            .now_ns()
            .saturating_sub(i64::try_from(self.retention.as_nanos()).unwrap_or(i64::MAX));
        let mut total = 0;
        loop {
            let n = self.store.with(|c| persist::prune(c, cutoff, 20_000))?;
            total += n;
            if n < 20_000 {
                return Ok(total);
            }
        }
    }

    pub fn handle(&self) -> Handle {
        Handle {
            book: self.book.clone(),
            clock: self.clock,
            stats: self.stats.clone(),
        }
    }

    /// Applies one ingest-log entry.
    pub fn apply(&mut self, entry: &LoggedBatch) {
        self.position = entry.id;
        if entry.kind != LogKind::Batch {
            return;
        }
        let batch = match ResultBatch::decode(entry.payload.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(id = entry.id, error = %e, "ingest-log entry cannot be decoded; not analysed");
                return;
            }
        };
        let shared = self.book.clone();
        let mut book = shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = correlate::Output::default();
        let agent = AgentKey {
            tenant: entry.tenant.clone(),
            name: entry.agent.clone(),
        };
        let mut newest_here = self.newest.get(&agent).copied().unwrap_or(i64::MIN);
        let created_before = self.deltas.created.len();
        let now = self.watermark();
        for o in batch
            .records
            .iter()
            .filter_map(|r| r.kind.as_ref())
            .filter_map(observe)
        {
            let i = book.entry(&agent, &o, &mut self.deltas);
            let s = &mut book.series[i];
            s.record(&o);
            self.deltas.record(s.id, &o);
            newest_here = newest_here.max(o.time_ns);
            self.stats
                .results
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = s.id;
            match s.outage.observe(&self.settings.outage, o.time_ns, o.ok()) {
                Some(outage::Change::Started(_)) => {
                    self.stats
                        .outages_started
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.correlator.down(id);
                }
                Some(outage::Change::Ended(ended)) => {
                    let t = &self.settings.correlation;
                    self.correlator.up(&book, t, now, id, &ended, &mut out);
                }
                None => {}
            }
            if o.probe == Probe::Trace {
                self.route(&mut book.series[i], &o);
            }
        }
        if newest_here > i64::MIN {
            self.newest.insert(agent, newest_here);
        }
        if self.deltas.created.len() > created_before {
            let ids = self.deltas.created[created_before..].to_vec();
            self.log_untrusted(ids.iter().filter_map(|id| book.by_id(*id)));
        }
        self.correlator.evaluate(
            &book,
            &self.settings.correlation,
            self.watermark(),
            &mut out,
        );
        self.events.append(&mut out.events);
        self.rows.append(&mut out.rows);
        self.regrouped.extend(&out.changed);
        self.deltas.touched.extend(out.changed);
    }

    /// How far the agents' results have come, for the correlator: the
    /// oldest "newest send time" among the agents that are reporting, so
    /// one agent's results are not judged before the others' have arrived
    /// (their batches travel with a delay). An agent more than three settle
    /// times behind the newest is replaying or gone and holds no one back.
    fn watermark(&self) -> i64 {
        let newest = self.newest.values().copied().max().unwrap_or(0);
        let settle = i64::try_from(self.settings.correlation.settle.as_nanos()).unwrap_or(i64::MAX);
        let behind = settle.saturating_mul(3);
        self.newest
            .values()
            .copied()
            .filter(|t| *t >= newest.saturating_sub(behind))
            .min()
            .unwrap_or(newest)
    }

    fn route(&mut self, s: &mut Series, o: &Observation<'_>) {
        let Some(trace) = o.trace else { return };
        if let Some(change) = s.route.observe(self.settings.route_confirm, trace) {
            self.stats
                .route_changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.events.push(NewEvent {
                at_ms: change.new.since_ns.div_euclid(1_000_000),
                agent: AgentKey {
                    tenant: s.key.tenant.clone(),
                    name: s.key.agent.clone(),
                },
                kind: EventKind::RouteChange,
                detail: json!({
                    "target": s.key.target,
                    "address": s.address.map(|a| a.to_string()),
                    "old": change.old,
                    "new": change.new,
                }),
                prefix: s
                    .address
                    .map(|a| crate::observation::prefix_of(a).to_string()),
            });
        }
    }

    /// Makes everything applied so far durable, with the cursor. On
    /// failure nothing is lost: the pending changes stay for the next try.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        let position = self.position;
        {
            let book = self
                .book
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ids: std::collections::BTreeSet<i64> = self
                .deltas
                .touched
                .iter()
                .chain(&self.deltas.created)
                .copied()
                .collect();
            let touched: Vec<&Series> = ids
                .into_iter()
                .filter_map(|id| book.series.get(usize::try_from(id - 1).ok()?))
                .collect();
            let (deltas, events, rows) = (&self.deltas, &self.events, &self.rows);
            let correlator = &self.correlator;
            let groups_of = |id| correlator.groups_of(id);
            let membership = (&self.regrouped, &groups_of as &dyn Fn(i64) -> Vec<i64>);
            self.store.with(|c| {
                persist::checkpoint(
                    c,
                    &touched,
                    membership,
                    deltas,
                    events,
                    rows,
                    (CURSOR, position),
                    now_ms(),
                )
            })?;
        }
        self.deltas = Deltas::default();
        self.regrouped.clear();
        self.events.clear();
        self.rows.clear();
        self.stats
            .position
            .store(position, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn dirty(&self) -> bool {
        !self.deltas.is_empty() || !self.events.is_empty() || !self.rows.is_empty()
    }

    /// Runs until shutdown: read, apply, checkpoint.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(200);
        let mut last_checkpoint = Instant::now();
        let mut last_prune: Option<Instant> = None;
        loop {
            let position = self.position;
            let store = self.store.clone();
            let read =
                tokio::task::spawn_blocking(move || store.log_after(position, READ_CHUNK)).await;
            let entries = match read {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "analysis cannot read the ingest log; retrying");
                    Vec::new()
                }
                Err(e) => {
                    tracing::error!(error = %e, "analysis read task failed");
                    Vec::new()
                }
            };
            let caught_up = entries.len() < READ_CHUNK as usize;
            self.follow_config(false);
            // Applying is CPU work on in-memory state: done on the
            // blocking pool so a large replay does not starve the runtime.
            self = tokio::task::spawn_blocking(move || {
                for e in &entries {
                    self.apply(e);
                }
                self
            })
            .await
            .expect("analysis apply panicked");
            let due = last_checkpoint.elapsed() >= self.settings.checkpoint;
            if self.dirty() && (due || shutdown.is_cancelled()) {
                let (back, result) = tokio::task::spawn_blocking(move || {
                    let r = self.checkpoint();
                    (self, r)
                })
                .await
                .expect("analysis checkpoint panicked");
                self = back;
                match result {
                    Ok(()) => last_checkpoint = Instant::now(),
                    Err(e) => {
                        tracing::error!(error = %e, "analysis checkpoint failed; state is kept and written at the next one");
                    }
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let (back, result) = tokio::task::spawn_blocking(move || {
                    let r = self.prune();
                    (self, r)
                })
                .await
                .expect("analysis prune panicked");
                self = back;
                match result {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "aggregates past the retention deleted"),
                    Err(e) => tracing::error!(error = %e, "cannot delete old aggregates"),
                }
            }
            if caught_up {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
