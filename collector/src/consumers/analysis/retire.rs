//! Which series leave memory, so that what a tenant creates and deletes
//! does not stay in the collector for ever.
//!
//! - A series a managed definition made (`targets.rs`) becomes an
//!   **orphan** when no enabled definition makes it any more (the
//!   definition was deleted, disabled, or changed). Its row records it
//!   (`series.orphaned_ms`), so a restart does not forget it.
//! - An orphan with no result for `retire-after` (collector clock) is
//!   **retired**: an open outage of it ends (the series is no longer
//!   probed), its state is written, and it leaves memory, the views and
//!   the correlation. Its row and history stay in the store, kept by the
//!   retention like any other.
//! - Results that still arrive for a retired series (in flight, or
//!   replayed by an agent that was offline when the definition went)
//!   bring it back with its id and history, as an orphan again; a new
//!   series that only a recently removed definition explains is an orphan
//!   from the start. A definition that makes it again adopts it.
//! - Any other series (an agent's own config file) is retired when it has
//!   had no result for the aggregate retention and has no open outage:
//!   nothing of its history is left to show.
//!
//! The policy is pure bookkeeping over ids; `mod.rs` applies it at
//! checkpoints, where the store write and the removal happen together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Book;
use super::series::SeriesKey;
use crate::targets::{ManagedTarget, covered};

/// How long removed definitions still explain new series.
const TOMBSTONE_FOR: Duration = Duration::from_secs(3600);
/// Most removed definitions remembered.
const TOMBSTONES: usize = 10_000;

/// The retirement bookkeeping.
#[derive(Debug)]
pub struct Retirement {
    /// How long an orphan stays without results.
    after: Duration,
    /// The definitions as last seen.
    defs: Arc<Vec<ManagedTarget>>,
    /// Definitions removed (or changed away), with when.
    tombstones: Vec<(ManagedTarget, Instant)>,
    /// Orphans in memory, with their last result (collector clock).
    orphans: HashMap<i64, Instant>,
    /// `orphaned_ms` changes for the next checkpoint: set (`Some`) or
    /// cleared (`None`).
    pub flags: BTreeMap<i64, Option<i64>>,
}

impl Retirement {
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            defs: Arc::default(),
            tombstones: Vec::new(),
            orphans: HashMap::new(),
            flags: BTreeMap::new(),
        }
    }

    /// Takes orphans loaded from the store (their last result counts from
    /// now).
    pub fn restore(&mut self, ids: impl IntoIterator<Item = i64>) {
        let now = Instant::now();
        self.orphans.extend(ids.into_iter().map(|id| (id, now)));
    }

    pub fn is_orphan(&self, id: i64) -> bool {
        self.orphans.contains_key(&id)
    }

    /// How many orphans are in memory.
    pub fn orphans(&self) -> usize {
        self.orphans.len()
    }

    fn made_by_now(&self, key: &SeriesKey) -> bool {
        covered(&self.defs, &key.tenant, &key.agent, key.probe, &key.target)
    }

    /// The definitions changed: series that only the old ones made become
    /// orphans, orphans a new one makes are adopted.
    pub fn definitions(&mut self, new: Arc<Vec<ManagedTarget>>, book: &Book, now_ms: i64) {
        let now = Instant::now();
        let gone: Vec<ManagedTarget> = self
            .defs
            .iter()
            .filter(|d| d.enabled && !new.iter().any(|n| n.enabled && n == *d))
            .cloned()
            .collect();
        self.defs = new;
        self.tombstones
            .retain(|(_, at)| at.elapsed() < TOMBSTONE_FOR);
        for d in &gone {
            for s in book.iter().filter(|s| {
                *s.key.tenant == *d.tenant
                    && d.spec.covers(&s.key.agent, s.key.probe, &s.key.target)
            }) {
                if !self.made_by_now(&s.key) && !self.orphans.contains_key(&s.id) {
                    self.orphans.insert(s.id, now);
                    self.flags.insert(s.id, Some(now_ms));
                }
            }
        }
        self.tombstones.extend(gone.into_iter().map(|d| (d, now)));
        let excess = self.tombstones.len().saturating_sub(TOMBSTONES);
        self.tombstones.drain(..excess);
        let adopted: Vec<i64> = self
            .orphans
            .keys()
            .copied()
            .filter(|id| book.by_id(*id).is_some_and(|s| self.made_by_now(&s.key)))
            .collect();
        for id in adopted {
            self.orphans.remove(&id);
            self.flags.insert(id, None);
        }
    }

    /// A series came into memory: new (`orphaned` false) or back from the
    /// store (`orphaned` as its row says). Decides whether it is an
    /// orphan.
    pub fn arrived(&mut self, id: i64, key: &SeriesKey, orphaned: bool, now_ms: i64) {
        let made = self.made_by_now(key);
        let removed = || {
            self.tombstones.iter().any(|(d, _)| {
                *d.tenant == *key.tenant && d.spec.covers(&key.agent, key.probe, &key.target)
            })
        };
        if made {
            if orphaned {
                self.flags.insert(id, None);
            }
        } else if orphaned || removed() {
            self.orphans.insert(id, Instant::now());
            if !orphaned {
                self.flags.insert(id, Some(now_ms));
            }
        }
    }

    /// A result for series `id` was applied.
    pub fn seen(&mut self, id: i64) {
        if self.orphans.is_empty() {
            return;
        }
        if let Some(t) = self.orphans.get_mut(&id) {
            *t = Instant::now();
        }
    }

    /// When the next orphan is due (its `retire-after` without results
    /// is over), if there is one.
    pub fn next_due(&self) -> Option<Instant> {
        self.orphans.values().map(|t| *t + self.after).min()
    }

    /// Whether some orphan has been without results for `retire-after`
    /// (asked every loop: no allocation).
    pub fn has_due(&self) -> bool {
        self.orphans.values().any(|t| t.elapsed() >= self.after)
    }

    /// Orphans without results for `retire-after`.
    pub fn due(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .orphans
            .iter()
            .filter(|(_, t)| t.elapsed() >= self.after)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Series `ids` left memory.
    pub fn retired(&mut self, ids: &[i64]) {
        for id in ids {
            self.orphans.remove(id);
        }
    }

    /// Series no definition makes, without an open outage and without a
    /// result since `cutoff_ns` (send time): nothing is left to show.
    pub fn idle(&self, book: &Book, cutoff_ns: i64) -> Vec<i64> {
        book.iter()
            .filter(|s| {
                s.outage.open().is_none()
                    && s.latest.as_ref().is_none_or(|l| l.time_ns < cutoff_ns)
                    && !self.made_by_now(&s.key)
            })
            .map(|s| s.id)
            .collect()
    }
}
