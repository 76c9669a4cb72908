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
pub mod retire;
pub mod route;
pub mod series;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::log::LoggedBatch;
use crate::log::consumer::CURSOR_ONLY_EVERY;
use crate::observation::{Observation, Probe, observe};
use crate::read::access::Tenancy;
use crate::store::{AgentKey, EventKind, Store, StoreError, now_ms};
use correlate::{Correlator, Thresholds};
use persist::{NewEvent, OutageRow};
use retire::Retirement;
use series::{Deltas, Series, SeriesKey};

/// The analysis' cursor name in the store.
pub const CURSOR: &str = "analysis";

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
    /// How long a series that no managed definition makes any more stays
    /// in memory without results (`retire.rs`).
    #[serde(default = "default_retire_after", with = "humantime_serde")]
    pub retire_after: Duration,
}

fn default_route_confirm() -> u32 {
    2
}
fn default_checkpoint() -> Duration {
    Duration::from_secs(1)
}
fn default_retire_after() -> Duration {
    Duration::from_secs(120)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            outage: outage::Policy::default(),
            route_confirm: default_route_confirm(),
            correlation: Thresholds::default(),
            checkpoint: default_checkpoint(),
            retire_after: default_retire_after(),
        }
    }
}

/// Every series in memory, by id, indexed by agent (then probe kind and
/// target) and by /24 (/64), with a count per tenant (for `max-series`).
/// Series that left memory (`retire.rs`) keep their row and history in
/// the store and their id; they come back with both when results arrive.
#[derive(Debug, Default)]
pub struct Book {
    /// Boxed: the map's nodes move entries when they split and are half
    /// empty after ascending inserts; a box costs 8 bytes there.
    series: BTreeMap<i64, Box<Series>>,
    /// Ids by agent, probe kind and target: the agent is looked up once
    /// per batch, a result's series with its target alone.
    by_agent: HashMap<AgentKey, HashMap<Probe, HashMap<Arc<str>, i64>>>,
    /// Series ids by the prefix of their address (a series whose address
    /// moved is listed under each prefix it had; readers check).
    by_prefix: HashMap<ipnet::IpNet, Vec<i64>>,
    per_tenant: HashMap<String, usize>,
    /// The id the next new series gets.
    next_id: i64,
    /// Every tenant, agent and target name of a series in memory, once:
    /// the series' keys share them.
    names: std::collections::HashSet<Arc<str>>,
}

impl Book {
    fn from_series(series: Vec<Series>, next_id: i64) -> Self {
        let mut book = Self {
            next_id,
            ..Self::default()
        };
        for s in series {
            book.insert(s, false);
        }
        book
    }

    /// Adds `s` and its indexes; `revived` says it may be listed under
    /// its prefix already (it was in memory before).
    fn insert(&mut self, mut s: Series, revived: bool) {
        let id = s.id;
        s.key.tenant = self.intern(&s.key.tenant);
        s.key.agent = self.intern(&s.key.agent);
        s.key.target = self.intern(&s.key.target);
        self.next_id = self.next_id.max(id + 1);
        self.by_agent
            .entry(AgentKey {
                tenant: s.key.tenant.to_string(),
                name: s.key.agent.to_string(),
            })
            .or_default()
            .entry(s.key.probe)
            .or_default()
            .insert(s.key.target.clone(), id);
        *self.per_tenant.entry(s.key.tenant.to_string()).or_default() += 1;
        let address = s.address;
        self.series.insert(id, Box::new(s));
        if let Some(a) = address {
            self.index_prefix(id, a, revived);
        }
    }

    /// The shared copy of `name`.
    fn intern(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(held) = self.names.get(name) {
            return held.clone();
        }
        self.names.insert(name.clone());
        name.clone()
    }

    /// Forgets the names only `key` (on its way out) still used.
    fn release(&mut self, key: &SeriesKey) {
        for name in [&key.tenant, &key.agent, &key.target] {
            // Held by `key` and the set alone.
            if Arc::strong_count(name) <= 2 {
                self.names.remove(name);
            }
        }
    }

    /// Forgets every name no series uses any more (one a reader still
    /// held when its last series left).
    fn sweep_names(&mut self) {
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }

    /// Takes series `id` and its index entries out of memory.
    fn remove(&mut self, id: i64) -> Option<Series> {
        let s = *self.series.remove(&id)?;
        let agent = AgentKey {
            tenant: s.key.tenant.to_string(),
            name: s.key.agent.to_string(),
        };
        if let Some(probes) = self.by_agent.get_mut(&agent) {
            if let Some(targets) = probes.get_mut(&s.key.probe) {
                targets.remove(&*s.key.target);
                if targets.is_empty() {
                    probes.remove(&s.key.probe);
                }
            }
            if probes.is_empty() {
                self.by_agent.remove(&agent);
            }
        }
        if let Some(n) = self.per_tenant.get_mut(&*s.key.tenant) {
            *n -= 1;
            if *n == 0 {
                self.per_tenant.remove(&*s.key.tenant);
            }
        }
        if let Some(a) = s.address {
            let p = crate::observation::prefix_of(a);
            if let Some(list) = self.by_prefix.get_mut(&p) {
                list.retain(|i| *i != id);
                if list.is_empty() {
                    self.by_prefix.remove(&p);
                }
            }
        }
        self.release(&s.key);
        Some(s)
    }

    /// Lists series `id` under the prefix of `a`; `moved` says it may be
    /// listed there already (its address changed back).
    fn index_prefix(&mut self, id: i64, a: std::net::IpAddr, moved: bool) {
        let list = self
            .by_prefix
            .entry(crate::observation::prefix_of(a))
            .or_default();
        if !(moved && list.contains(&id)) {
            list.push(id);
        }
    }

    /// Every series in memory, by id.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Series> + Clone {
        self.series.values().map(|s| &**s)
    }

    /// The series with an id above `id`, by id.
    pub fn after(&self, id: i64) -> impl Iterator<Item = &Series> {
        self.series.range(id.saturating_add(1)..).map(|(_, s)| &**s)
    }

    /// How many series are in memory.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Entries in the indexes (by agent, by prefix, tenants counted): all
    /// zero when nothing is in memory (tests: nothing is left behind).
    #[cfg(test)]
    fn index_entries(&self) -> (usize, usize, usize) {
        (
            self.by_agent
                .values()
                .flat_map(HashMap::values)
                .map(HashMap::len)
                .sum(),
            self.by_prefix.values().map(Vec::len).sum(),
            self.per_tenant.len(),
        )
    }

    /// Names interned (tests: none once no series is in memory).
    #[cfg(test)]
    fn names_held(&self) -> usize {
        self.names.len()
    }

    /// How many series of `tenant` are in memory.
    pub fn count_of(&self, tenant: &str) -> usize {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// The series that have (or had) an address in the /24 (/64) `p`.
    pub fn in_prefix(&self, p: &ipnet::IpNet) -> impl Iterator<Item = &Series> {
        self.by_prefix
            .get(&crate::observation::prefix_of(p.addr()))
            .into_iter()
            .flatten()
            .filter_map(|id| self.series.get(id).map(|s| &**s))
    }

    /// Every series of one agent.
    pub fn of_agent(&self, agent: &AgentKey) -> impl Iterator<Item = &Series> {
        self.by_agent
            .get(agent)
            .into_iter()
            .flat_map(HashMap::values)
            .flat_map(HashMap::values)
            .filter_map(|id| self.series.get(id).map(|s| &**s))
    }

    /// The series with id `id`.
    pub fn by_id(&self, id: i64) -> Option<&Series> {
        self.series.get(&id).map(|s| &**s)
    }

    fn by_id_mut(&mut self, id: i64) -> Option<&mut Series> {
        self.series.get_mut(&id).map(|s| &mut **s)
    }

    fn id_of(&self, agent: &AgentKey, probe: Probe, target: &str) -> Option<i64> {
        self.by_agent.get(agent)?.get(&probe)?.get(target).copied()
    }

    pub fn get(&self, key: &SeriesKey) -> Option<&Series> {
        let agent = AgentKey {
            tenant: key.tenant.to_string(),
            name: key.agent.to_string(),
        };
        self.id_of(&agent, key.probe, &key.target)
            .and_then(|id| self.series.get(&id).map(|s| &**s))
    }

    /// The series of a result of `agent` already in memory; `o`'s address
    /// is re-indexed when it moved.
    fn existing(&mut self, agent: &AgentKey, o: &Observation<'_>) -> Option<i64> {
        let id = self.id_of(agent, o.probe, &o.target)?;
        let s = self.series.get_mut(&id)?;
        if let Some(a) = o.address.filter(|a| s.address != Some(*a)) {
            s.address = Some(a);
            self.index_prefix(id, a, true);
        }
        Some(id)
    }

    /// A new series for a result of `agent` (never seen, not in the
    /// store).
    fn create(&mut self, agent: &AgentKey, o: &Observation<'_>, deltas: &mut Deltas) -> i64 {
        let id = self.next_id.max(1);
        let key = SeriesKey {
            tenant: agent.tenant.as_str().into(),
            agent: agent.name.as_str().into(),
            probe: o.probe,
            target: o.target.as_str().into(),
        };
        self.insert(Series::new(id, key, o.address), false);
        deltas.created.push(id);
        id
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
    /// The last ingest-log entry analysed.
    pub position: std::sync::atomic::AtomicI64,
    /// Results not analysed because their series would exceed its
    /// tenant's `max-series` (or its stored state could not be read).
    pub refused: std::sync::atomic::AtomicU64,
    /// Series that left memory (`retire.rs`).
    pub retired: std::sync::atomic::AtomicU64,
}

/// One checkpoint taken out of the analyzer ([`Analyzer::take_checkpoint`]):
/// everything it applied up to `position`, owned, so that the write (one
/// transaction with the cursor) runs while it applies the next entries.
/// Checkpoints are written one at a time and in order; one that fails goes
/// back ([`Analyzer::put_back`]).
#[derive(Debug)]
pub struct Pending {
    store: Store,
    position: i64,
    series: Vec<persist::SeriesRow>,
    membership: Vec<(i64, Vec<i64>)>,
    regrouped: BTreeSet<i64>,
    orphaned: BTreeMap<i64, Option<i64>>,
    deltas: Deltas,
    events: Vec<persist::NewEvent>,
    rows: Vec<OutageRow>,
    retiring: Vec<i64>,
}

impl Pending {
    /// Writes it, with the cursor, in one transaction.
    pub fn write(&self) -> Result<(), StoreError> {
        self.store.with(|c| {
            persist::checkpoint(
                c,
                &self.series,
                &self.membership,
                &self.orphaned,
                &self.deltas,
                &self.events,
                &self.rows,
                (CURSOR, self.position),
                now_ms(),
            )
        })
    }

    /// Whether series retire with it (they must leave memory before more
    /// entries are applied).
    pub fn retires(&self) -> bool {
        !self.retiring.is_empty()
    }

    /// What [`Analyzer::checkpointed`] needs once it is written.
    pub fn done(&mut self) -> (i64, Vec<i64>) {
        (self.position, std::mem::take(&mut self.retiring))
    }
}

/// What the API reads: the book, behind a lock the analyzer holds only
/// while applying one log entry.
#[derive(Debug, Clone)]
pub struct Handle {
    pub book: Arc<RwLock<Book>>,
    pub clock: Clock,
    pub stats: Arc<Stats>,
    /// Held while a checkpoint is written: an analyzer rebuilt after a
    /// panic loads its state after that write, never before it.
    pub writing: Arc<tokio::sync::Mutex<()>>,
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
    /// See [`Handle::writing`].
    writing: Arc<tokio::sync::Mutex<()>>,
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
    /// The managed definitions, for which series are orphans.
    targets: Option<tokio::sync::watch::Receiver<Arc<Vec<crate::targets::ManagedTarget>>>>,
    retirement: Retirement,
    /// Series idle past the retention, to retire at the next checkpoint.
    stale: Vec<i64>,
    /// Tenants whose `max-series` refused a new series (logged once).
    capped: BTreeSet<String>,
}

/// How often aggregates past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl Analyzer {
    /// Loads the analysis state from the store.
    pub fn load(store: &Store, settings: Settings, clock: Clock) -> Result<Self, StoreError> {
        let now = clock.now_ns();
        let (series, position, next_outage, open, next_series) = store.with(|c| {
            Ok((
                persist::load(c, now)?,
                crate::log::cursor::read(c, CURSOR)?,
                persist::next_outage_id(c)?,
                persist::open_outages(c)?,
                persist::next_series_id(c)?,
            ))
        })?;
        let mut retirement = Retirement::new(settings.retire_after);
        retirement.restore(series.iter().filter(|(_, o)| *o).map(|(s, _)| s.id));
        let book = Book::from_series(series.into_iter().map(|(s, _)| s).collect(), next_series);
        let mut correlator = Correlator::new(next_outage);
        for s in book.iter() {
            if s.outage.open().is_some() {
                correlator.down(s.id);
            }
        }
        let mut restored = correlate::Output::default();
        correlator.restore(open, &book, &mut restored);
        let mut newest: HashMap<AgentKey, i64> = HashMap::new();
        for s in book.iter() {
            if let Some(l) = &s.latest {
                let agent = AgentKey {
                    tenant: s.key.tenant.to_string(),
                    name: s.key.agent.to_string(),
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
            writing: Arc::default(),
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
            targets: None,
            retirement,
            stale: Vec::new(),
            capped: BTreeSet::new(),
        })
    }

    /// Takes the place of an earlier analyzer behind `handle` (rebuilt after
    /// a panic): the API keeps reading the same book and counters.
    #[must_use]
    pub fn behind(mut self, handle: &Handle) -> Self {
        let book = std::mem::take(
            &mut *self
                .book
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        *handle
            .book
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = book;
        self.book = handle.book.clone();
        handle
            .stats
            .position
            .store(self.position, std::sync::atomic::Ordering::Relaxed);
        self.stats = handle.stats.clone();
        self.writing = handle.writing.clone();
        self
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
        self.log_untrusted(book.iter());
    }

    /// Follows the managed definitions: series that only a removed one
    /// made leave memory after `retire-after` without results.
    #[must_use]
    pub fn with_targets(
        mut self,
        targets: tokio::sync::watch::Receiver<Arc<Vec<crate::targets::ManagedTarget>>>,
    ) -> Self {
        self.targets = Some(targets);
        self.follow_targets(true);
        self
    }

    fn follow_targets(&mut self, first: bool) {
        let Some(rx) = self.targets.as_mut() else {
            return;
        };
        if !first && !rx.has_changed().unwrap_or(false) {
            return;
        }
        let defs = rx.borrow_and_update().clone();
        let book = self.book.clone();
        let book = book
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.retirement
            .definitions(defs, &book, self.clock.now_ms());
    }

    /// The most series `tenant` may have in memory (operator tenants'
    /// agents are the operator's own: not limited).
    fn max_series(&self, tenant: &str) -> usize {
        self.config.as_ref().map_or(usize::MAX, |rx| {
            let c = rx.borrow();
            if c.access.operator_tenants.iter().any(|t| t == tenant) {
                usize::MAX
            } else {
                c.quotas(tenant).max_series
            }
        })
    }

    /// The series of result `o` of `agent`: in memory, back from the
    /// store, or new; `None` when it would exceed the tenant's
    /// `max-series` or its stored state cannot be read (counted, logged).
    fn series_for(
        &mut self,
        book: &mut Book,
        agent: &AgentKey,
        o: &Observation<'_>,
    ) -> Option<i64> {
        if let Some(id) = book.existing(agent, o) {
            self.retirement.seen(id);
            return Some(id);
        }
        let max = self.max_series(&agent.tenant);
        if book.count_of(&agent.tenant) >= max {
            self.stats
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.capped.insert(agent.tenant.clone()) {
                tracing::warn!(
                    tenant = %sonde_runtime::text::safe(&agent.tenant),
                    max_series = max,
                    "tenant {} is at its max-series ({max}): results of its new series are not analysed (they are still logged and exported)",
                    sonde_runtime::text::safe(&agent.tenant)
                );
            }
            return None;
        }
        let key = SeriesKey {
            tenant: agent.tenant.as_str().into(),
            agent: agent.name.as_str().into(),
            probe: o.probe,
            target: o.target.as_str().into(),
        };
        let now_ns = self.clock.now_ns();
        let stored = self.store.with_read(|c| persist::load_key(c, &key, now_ns));
        let id = match stored {
            Ok(Some((s, orphaned))) => {
                let id = s.id;
                book.insert(s, true);
                book.existing(agent, o);
                self.retirement
                    .arrived(id, &key, orphaned, now_ns.div_euclid(1_000_000));
                id
            }
            Ok(None) => {
                let id = book.create(agent, o, &mut self.deltas);
                self.retirement
                    .arrived(id, &key, false, now_ns.div_euclid(1_000_000));
                id
            }
            Err(e) => {
                self.stats
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "cannot read a stored series; result not analysed");
                return None;
            }
        };
        Some(id)
    }

    /// Retires what is due (`retire.rs`): ends open outages, leaves the
    /// correlation; gives the ids, still in memory until the checkpoint
    /// that writes them succeeds.
    fn retiring(&mut self) -> Vec<i64> {
        let mut ids = self.retirement.due();
        // Taken: should the checkpoint fail, the next prune finds them again.
        ids.append(&mut std::mem::take(&mut self.stale));
        if ids.is_empty() {
            return ids;
        }
        ids.sort_unstable();
        ids.dedup();
        let shared = self.book.clone();
        let mut book = shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = correlate::Output::default();
        ids.retain(|id| book.by_id(*id).is_some());
        for id in &ids {
            let Some(s) = book.by_id_mut(*id) else {
                continue;
            };
            let last = s.latest.as_ref().map_or(0, |l| l.time_ns);
            let ended = s.outage.end(last).unwrap_or(outage::Outage {
                start_ns: last,
                end_ns: Some(last),
                lost: 0,
            });
            self.correlator.forget(&book, *id, &ended, &mut out);
            self.deltas.touched.insert(*id);
        }
        self.events.append(&mut out.events);
        self.rows.append(&mut out.rows);
        self.regrouped.extend(&out.changed);
        ids
    }

    fn log_untrusted<'a>(&mut self, series: impl Iterator<Item = &'a Series>) {
        let pairs = crate::read::access::untrusted_pairs(
            &self.tenancy,
            series.filter_map(|s| Some((&*s.key.tenant, s.address?))),
        );
        let new: BTreeSet<_> = pairs.difference(&self.logged).cloned().collect();
        crate::read::access::log_untrusted(&new);
        self.logged.extend(new);
    }

    /// Deletes aggregates older than the retention (by the collector's
    /// clock), in bounded steps; returns how many rows went.
    pub fn prune(&mut self) -> Result<usize, StoreError> {
        let cutoff = self
            .clock
            .now_ns()
            .saturating_sub(i64::try_from(self.retention.as_nanos()).unwrap_or(i64::MAX));
        {
            let book = self
                .book
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.stale = self.retirement.idle(&book, cutoff);
        }
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
            writing: self.writing.clone(),
        }
    }

    /// Applies one stored ingest-log entry (decoding it).
    pub fn apply(&mut self, entry: &LoggedBatch) {
        self.apply_entry(&crate::log::Entry::decode(entry.clone()));
    }

    /// Applies one ingest-log entry.
    pub fn apply_entry(&mut self, entry: &crate::log::Entry) {
        self.position = entry.id();
        let batch = match &entry.body {
            crate::log::Body::Batch(b) => b,
            crate::log::Body::Heartbeat(_) => return,
            crate::log::Body::Undecodable(e) => {
                tracing::error!(id = entry.id(), error = %e, "ingest-log entry cannot be decoded; not analysed");
                return;
            }
        };
        let shared = self.book.clone();
        let mut book = shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = correlate::Output::default();
        let agent = entry.agent();
        let mut newest_here = self.newest.get(&agent).copied().unwrap_or(i64::MIN);
        let created_before = self.deltas.created.len();
        let now = self.watermark();
        for o in batch
            .records
            .iter()
            .filter_map(|r| r.kind.as_ref())
            .filter_map(observe)
        {
            let Some(id) = self.series_for(&mut book, &agent, &o) else {
                continue;
            };
            let s = book.by_id_mut(id).expect("in memory");
            s.record(&o);
            self.deltas.record(s.id, &o);
            newest_here = newest_here.max(o.time_ns);
            self.stats
                .results
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                self.route(book.by_id_mut(id).expect("in memory"), &o);
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
                    tenant: s.key.tenant.to_string(),
                    name: s.key.agent.to_string(),
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
        let mut pending = self.take_checkpoint();
        match pending.write() {
            Ok(()) => {
                let (position, retiring) = pending.done();
                // Its rows share the names the book would let go of.
                drop(pending);
                self.checkpointed(position, &retiring);
                Ok(())
            }
            Err(e) => {
                self.put_back(pending);
                Err(e)
            }
        }
    }

    /// Takes everything applied since the last checkpoint out of the
    /// analyzer, to be written while it applies further entries. The
    /// series that retire with it stay in memory until it is written.
    pub fn take_checkpoint(&mut self) -> Pending {
        let position = self.position;
        let retiring = self.retiring();
        let book = self
            .book
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Open outages show what they have lost so far.
        let mut out = correlate::Output::default();
        let touched: Vec<i64> = self.deltas.touched.iter().copied().collect();
        self.correlator.progress(&book, touched, &mut out);
        self.rows.append(&mut out.rows);
        let ids: BTreeSet<i64> = self
            .deltas
            .touched
            .iter()
            .chain(&self.deltas.created)
            .copied()
            .collect();
        let series = ids
            .into_iter()
            .filter_map(|id| book.by_id(id))
            .map(persist::SeriesRow::of)
            .collect();
        drop(book);
        let regrouped = std::mem::take(&mut self.regrouped);
        let membership = regrouped
            .iter()
            .map(|id| (*id, self.correlator.groups_of(*id)))
            .collect();
        Pending {
            store: self.store.clone(),
            position,
            series,
            membership,
            regrouped,
            orphaned: std::mem::take(&mut self.retirement.flags),
            deltas: std::mem::take(&mut self.deltas),
            events: std::mem::take(&mut self.events),
            rows: std::mem::take(&mut self.rows),
            retiring,
        }
    }

    /// A checkpoint up to `position` is written: the series it retired
    /// leave memory.
    pub fn checkpointed(&mut self, position: i64, retiring: &[i64]) {
        if !retiring.is_empty() {
            let mut book = self
                .book
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in retiring {
                book.remove(*id);
            }
            book.sweep_names();
            self.retirement.retired(retiring);
            self.stats.retired.fetch_add(
                u64::try_from(retiring.len()).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
            drop(book);
            crate::memory::trim();
            tracing::debug!(series = retiring.len(), "series left memory");
        }
        // Entries applied while it was written are further on already.
        self.stats
            .position
            .fetch_max(position, std::sync::atomic::Ordering::Relaxed);
    }

    /// A checkpoint could not be written: what it held goes back in front
    /// of what was applied since, for the next one. Bucket deltas add up;
    /// events and outage rows keep their order; the series rows are taken
    /// again from the book, which has the newer state.
    pub fn put_back(&mut self, p: Pending) {
        let Pending {
            orphaned,
            deltas,
            mut events,
            mut rows,
            regrouped,
            ..
        } = p;
        for (from, into) in [
            (deltas.minutes, &mut self.deltas.minutes),
            (deltas.hours, &mut self.deltas.hours),
        ] {
            for (k, earlier) in from {
                let b = into.entry(k).or_default();
                let mut sum = earlier;
                sum.merge(b);
                *b = sum;
            }
        }
        let mut created = deltas.created;
        created.append(&mut self.deltas.created);
        self.deltas.created = created;
        self.deltas.touched.extend(deltas.touched);
        events.append(&mut self.events);
        self.events = events;
        rows.append(&mut self.rows);
        self.rows = rows;
        for (id, flag) in orphaned {
            self.retirement.flags.entry(id).or_insert(flag);
        }
        self.regrouped.extend(regrouped);
    }

    fn dirty(&self) -> bool {
        !self.deltas.is_empty()
            || !self.events.is_empty()
            || !self.rows.is_empty()
            || !self.retirement.flags.is_empty()
            || !self.stale.is_empty()
            || self.retirement.has_due()
    }
}

/// The analysis as a consumer of the ingest log (`log/consumer.rs`):
/// entries are applied to the in-memory state on the blocking pool (CPU
/// work; a large replay does not starve the runtime). Every `checkpoint`
/// while something changed, what was applied is taken out of the analyzer
/// and written with the cursor on another blocking thread *while the next
/// entries are applied*: at high load a checkpoint of many series takes
/// seconds, and applying and writing then share the cores instead of
/// taking turns. One write is in flight at a time; the next checkpoint is
/// taken when it is done, so each covers everything applied meanwhile.
/// A panic inside is re-raised for the driver, which rebuilds the analysis
/// from the store into the same [`Handle`] (after any write still in
/// flight: [`Handle::writing`]).
pub struct Follower {
    analyzer: Option<Box<Analyzer>>,
    durable: i64,
    last_checkpoint: Instant,
    last_prune: Option<Instant>,
    /// The checkpoint being written.
    writing: Option<Writing>,
    /// Notified when it is written (the driver then ticks).
    written: Arc<tokio::sync::Notify>,
}

/// A checkpoint write in flight. Its outcome is sent before the driver is
/// woken, so a tick after the wake-up finds it.
struct Writing {
    done: tokio::sync::oneshot::Receiver<Written>,
    /// Ends without an outcome only by a panic, raised again from here.
    task: tokio::task::JoinHandle<()>,
}

/// How a checkpoint write ended: its position and the series it retired,
/// or the checkpoint back with the error.
enum Written {
    Done(i64, Vec<i64>),
    Failed(Box<Pending>, StoreError),
}

impl Follower {
    pub fn new(analyzer: Analyzer) -> Self {
        Self {
            durable: analyzer.position,
            analyzer: Some(Box::new(analyzer)),
            last_checkpoint: Instant::now(),
            last_prune: None,
            writing: None,
            written: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn analyzer(&self) -> &Analyzer {
        self.analyzer
            .as_deref()
            .unwrap_or_else(|| unreachable!("the analyzer is only out while a call runs"))
    }

    /// Runs `f` on the analyzer on the blocking pool; a panic in it is
    /// raised again here.
    async fn on_pool<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Analyzer) -> T + Send + 'static,
    ) -> T {
        let mut a = self
            .analyzer
            .take()
            .unwrap_or_else(|| unreachable!("the analyzer is only out while a call runs"));
        match tokio::task::spawn_blocking(move || {
            let r = f(&mut a);
            (a, r)
        })
        .await
        {
            Ok((a, r)) => {
                self.analyzer = Some(a);
                r
            }
            Err(e) => resume(e),
        }
    }

    /// Whether a checkpoint has something to write: changed state, or
    /// only a cursor to move (entries without results, such as
    /// heartbeats, still let the log be pruned behind them).
    fn unwritten(&self) -> bool {
        let a = self.analyzer();
        a.dirty() || a.position > self.durable
    }

    /// How long after the last checkpoint the next one is due: the
    /// checkpoint interval for changed state, [`CURSOR_ONLY_EVERY`] for a
    /// cursor alone.
    fn checkpoint_every(&self) -> Duration {
        let a = self.analyzer();
        if a.dirty() {
            a.settings.checkpoint
        } else {
            CURSOR_ONLY_EVERY.max(a.settings.checkpoint)
        }
    }

    /// Takes a checkpoint and starts writing it; waits for the write
    /// when series retire with it (they leave memory before anything else
    /// is applied). The write in flight, if any, is awaited first.
    async fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.settle().await?;
        let pending = self.on_pool(Analyzer::take_checkpoint).await;
        self.last_checkpoint = Instant::now();
        let retires = pending.retires();
        // Held until the write ends: a rebuilt analyzer loads after it.
        let gate = self.analyzer().writing.clone().lock_owned().await;
        let written = self.written.clone();
        let (tx, done) = tokio::sync::oneshot::channel();
        let task = tokio::task::spawn_blocking(move || {
            let mut pending = pending;
            let outcome = match pending.write() {
                Ok(()) => {
                    let (position, retiring) = pending.done();
                    drop(pending);
                    Written::Done(position, retiring)
                }
                Err(e) => Written::Failed(Box::new(pending), e),
            };
            drop(gate);
            // The follower is gone only when the consumer is.
            let _ = tx.send(outcome);
            written.notify_one();
        });
        self.writing = Some(Writing { done, task });
        if retires {
            self.settle().await?;
        }
        Ok(())
    }

    /// Waits for the checkpoint write in flight, if any, and settles it:
    /// written, the durable position moves; failed, what it held goes
    /// back into the analyzer and the error is returned.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let Some(Writing { done, task }) = self.writing.take() else {
            return Ok(());
        };
        let Ok(outcome) = done.await else {
            panicked(task).await
        };
        self.settled(outcome).await
    }

    /// Settles the write in flight if it has ended, without waiting.
    async fn settle_if_written(&mut self) -> Result<(), StoreError> {
        use tokio::sync::oneshot::error::TryRecvError;
        let Some(writing) = self.writing.as_mut() else {
            return Ok(());
        };
        match writing.done.try_recv() {
            Err(TryRecvError::Empty) => Ok(()),
            Ok(outcome) => {
                self.writing = None;
                self.settled(outcome).await
            }
            Err(TryRecvError::Closed) => {
                let Some(Writing { task, .. }) = self.writing.take() else {
                    unreachable!("matched above")
                };
                panicked(task).await
            }
        }
    }

    async fn settled(&mut self, outcome: Written) -> Result<(), StoreError> {
        match outcome {
            Written::Done(position, retiring) => {
                if retiring.is_empty() {
                    self.analyzer
                        .as_deref_mut()
                        .unwrap_or_else(|| {
                            unreachable!("the analyzer is only out while a call runs")
                        })
                        .checkpointed(position, &retiring);
                } else {
                    self.on_pool(move |a| a.checkpointed(position, &retiring))
                        .await;
                }
                self.durable = position;
                Ok(())
            }
            Written::Failed(pending, e) => {
                self.on_pool(move |a| a.put_back(*pending)).await;
                Err(e)
            }
        }
    }
}

/// A checkpoint write that ended without its outcome: its panic, again.
async fn panicked(task: tokio::task::JoinHandle<()>) -> ! {
    match task.await {
        Err(e) => resume(e),
        Ok(()) => unreachable!("a checkpoint write ends with its outcome"),
    }
}

/// Raises a blocking task's panic again here.
fn resume(e: tokio::task::JoinError) -> ! {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic())
    }
    panic!("analysis task cancelled: {e}")
}

impl crate::log::consumer::Consumer for Follower {
    type Item = crate::log::Entry;

    async fn apply(&mut self, entries: crate::log::Entries) -> Result<(), StoreError> {
        let results = entries
            .iter()
            .any(|e| matches!(e.body, crate::log::Body::Batch(_)));
        if results {
            self.on_pool(move |a| {
                a.follow_config(false);
                a.follow_targets(false);
                for e in &entries {
                    a.apply_entry(e);
                }
            })
            .await;
        } else {
            // Heartbeats only move the position: not worth a trip to the
            // blocking pool.
            let a = self
                .analyzer
                .as_deref_mut()
                .unwrap_or_else(|| unreachable!("the analyzer is only out while a call runs"));
            for e in &entries {
                a.apply_entry(e);
            }
        }
        let a = self.analyzer();
        a.stats
            .position
            .store(a.position, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.written.clone())
    }

    fn position(&self) -> i64 {
        self.analyzer().position
    }

    fn durable(&self) -> i64 {
        self.durable
    }

    fn due(&self) -> Option<Instant> {
        let a = self.analyzer();
        let prune = self
            .last_prune
            .map_or_else(Instant::now, |t| t + PRUNE_EVERY);
        let checkpoint = if self.writing.is_some() {
            // The write's end wakes the driver.
            None
        } else if self.unwritten() {
            Some(self.last_checkpoint + self.checkpoint_every())
        } else {
            a.retirement.next_due()
        };
        Some(checkpoint.map_or(prune, |c| c.min(prune)))
    }

    async fn tick(&mut self) -> Result<(), StoreError> {
        self.settle_if_written().await?;
        if self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            match self.on_pool(Analyzer::prune).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "aggregates past the retention deleted"),
                Err(e) => tracing::error!(error = %e, "cannot delete old aggregates"),
            }
        }
        self.on_pool(|a| {
            a.follow_config(false);
            a.follow_targets(false);
        })
        .await;
        if self.writing.is_none()
            && self.unwritten()
            && self.last_checkpoint.elapsed() >= self.checkpoint_every()
        {
            self.checkpoint().await?;
        }
        Ok(())
    }

    async fn finish(&mut self) {
        let mut result = self.settle().await;
        if result.is_ok() && self.unwritten() {
            result = match self.checkpoint().await {
                Ok(()) => self.settle().await,
                Err(e) => Err(e),
            };
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "analysis checkpoint at shutdown failed; the log is applied again at start");
        }
    }
}

#[cfg(test)]
mod tests;
