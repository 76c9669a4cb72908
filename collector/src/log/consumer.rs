//! The one follow loop of the logs' consumers (analysis, host facts and
//! export on the ingest log; alerting on the event log, a [`Source`] of
//! its own): read after the consumer's position (the log serves the
//! newest entries from memory), hand the decoded entries
//! over, and when caught up wait for the head to move or for the time the
//! consumer asked to be called at. No fixed-interval polling: an idle
//! collector reads nothing.
//!
//! **Errors and panics.** A failed read or apply is logged and retried
//! after a capped backoff, the position unchanged. A consumer that panics
//! is rebuilt from its durable state (its cursor in the store) with an
//! error log and `sonde_collector_consumer_restarts_total{consumer}`; it
//! is never silently stopped and never takes the collector down. Ingest
//! and the other consumers carry on meanwhile.
//!
//! **Registry.** Every consumer's durable position is in the
//! [`Registry`]: the pruner deletes only what all of them have passed.
//! How far its work has got is there too: `/metrics` shows each one's lag
//! behind the head by it.
//!
//! **Entries without effects.** A consumer that applied entries which
//! changed nothing of its state (heartbeats, for most) need not commit its
//! cursor for them at once: applying them again after a crash changes
//! nothing either. It moves its durable cursor over them at most every
//! [`CURSOR_ONLY_EVERY`], so an idle collector does not commit (and
//! fsync) once per consumer for every heartbeat.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sonde_runtime::backoff::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Entry, IngestLog};
use crate::store::StoreError;

/// Entries handed over per call.
pub const CHUNK: u32 = 500;

/// At most this long a consumer leaves its durable cursor behind entries
/// it applied without effects (pruning waits that much longer for them).
pub const CURSOR_ONLY_EVERY: Duration = Duration::from_secs(10);

/// An append-only log a consumer follows: the ingest log, or the event
/// log (alerting).
pub trait Source: Clone + Send + Sync + 'static {
    type Item: Send + Sync + 'static;

    /// Up to `limit` items after `after`, oldest first.
    fn read_after(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Arc<Self::Item>>, StoreError>> + Send;

    /// The newest position, published after every commit.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<i64>;
}

impl<L: IngestLog> Source for L {
    type Item = Entry;

    fn read_after(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Arc<Entry>>, StoreError>> + Send {
        IngestLog::read_after(self, after, limit)
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        IngestLog::subscribe(self)
    }
}

/// A follower of a log.
pub trait Consumer: Send + 'static {
    /// What it reads.
    type Item: Send + Sync + 'static;

    /// Applies `entries`, the next ones after [`Self::position`], in
    /// order. On error nothing of them counts as applied: they come again.
    fn apply(
        &mut self,
        entries: Vec<Arc<Self::Item>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notified when it should [`Self::tick`] at once (outside news:
    /// a reload, a silence created); `None`: never.
    fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// The position of the last entry applied.
    fn position(&self) -> i64;

    /// The position up to which its work is done, which `/metrics` lag is
    /// measured from: by default what it has applied (state kept live in
    /// memory counts); a consumer that buffers its effects for somewhere
    /// else (the export) says what it has written.
    fn processed(&self) -> i64 {
        self.position()
    }

    /// The position up to which its effects are durable (behind
    /// [`Self::position`] while effects wait for a checkpoint, or for at
    /// most [`CURSOR_ONLY_EVERY`] over entries without effects).
    fn durable(&self) -> i64;

    /// When it wants [`Self::tick`] called without new entries
    /// (a checkpoint, a batch delay); `None`: not until something arrives.
    fn due(&self) -> Option<Instant>;

    /// Time-driven work (make what was applied durable).
    fn tick(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Called once at shutdown: make what was applied durable.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// One consumer's entry in the registry.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Durable position; -1 until the consumer has started.
    pub durable: AtomicI64,
    /// Position up to which its work is done ([`Consumer::processed`]);
    /// -1 until started.
    pub processed: AtomicI64,
    /// Times it was rebuilt after a panic.
    pub restarts: AtomicU64,
}

impl Cursor {
    fn publish<C: Consumer>(&self, consumer: &C) {
        self.durable.store(consumer.durable(), Ordering::Relaxed);
        self.processed
            .store(consumer.processed(), Ordering::Relaxed);
    }
}

/// The consumers' durable positions, for pruning and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    cursors: Arc<Mutex<BTreeMap<&'static str, Arc<Cursor>>>>,
}

impl Registry {
    /// Registers `name` (not started yet: it holds pruning back until it
    /// reports a position).
    pub fn register(&self, name: &'static str) -> Arc<Cursor> {
        let cursor = Arc::new(Cursor {
            durable: AtomicI64::new(-1),
            processed: AtomicI64::new(-1),
            restarts: AtomicU64::new(0),
        });
        self.cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, cursor.clone());
        cursor
    }

    /// Each consumer with its durable position (-1: not started) and
    /// restarts.
    pub fn snapshot(&self) -> Vec<(&'static str, i64, u64)> {
        self.each(|c| c.durable.load(Ordering::Relaxed))
    }

    /// Each consumer with the position its work has reached (-1: not started) and
    /// restarts: what `/metrics` measures lag by.
    pub fn processed(&self) -> Vec<(&'static str, i64, u64)> {
        self.each(|c| c.processed.load(Ordering::Relaxed))
    }

    fn each(&self, position: impl Fn(&Cursor) -> i64) -> Vec<(&'static str, i64, u64)> {
        self.cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(n, c)| (*n, position(c), c.restarts.load(Ordering::Relaxed)))
            .collect()
    }

    /// The position every consumer has made durable (`None` while one has
    /// not started).
    pub fn passed_by_all(&self) -> Option<i64> {
        let snap = self.snapshot();
        let mut min = i64::MAX;
        for (_, p, _) in snap {
            if p < 0 {
                return None;
            }
            min = min.min(p);
        }
        Some(min)
    }
}

/// Follows the log with the consumer `make` builds (from its durable
/// state), until `shutdown`; rebuilds it after a panic.
pub async fn drive<L, C, F, Fut>(
    name: &'static str,
    log: L,
    cursor: Arc<Cursor>,
    mut make: F,
    shutdown: CancellationToken,
) where
    L: Source,
    C: Consumer<Item = L::Item>,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<C, StoreError>> + Send,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let consumer = loop {
            match make().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(consumer = name, error = %e, "ingest-log consumer cannot start; retrying");
                    if pause(backoff.next_delay(), &shutdown).await.is_err() {
                        return;
                    }
                }
            }
        };
        cursor.publish(&consumer);
        let task = tokio::spawn(follow(
            name,
            log.clone(),
            cursor.clone(),
            consumer,
            shutdown.clone(),
        ));
        match task.await {
            Ok(()) => return,
            Err(e) => {
                cursor.restarts.fetch_add(1, Ordering::Relaxed);
                let what = panic_message(e);
                tracing::error!(consumer = name, panic = %what, "ingest-log consumer panicked; restarting it from its durable cursor");
                if pause(backoff.next_delay(), &shutdown).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let p = e.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".to_owned())
}

async fn pause(d: Duration, shutdown: &CancellationToken) -> Result<(), ()> {
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        () = shutdown.cancelled() => Err(()),
    }
}

async fn follow<L: Source, C: Consumer<Item = L::Item>>(
    name: &'static str,
    log: L,
    cursor: Arc<Cursor>,
    mut consumer: C,
    shutdown: CancellationToken,
) {
    let mut head = log.subscribe();
    let wake = consumer.wake();
    let mut kicked = false;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if shutdown.is_cancelled() {
            consumer.finish().await;
            cursor.publish(&consumer);
            return;
        }
        // Seen before reading: an append during the read wakes us again.
        head.borrow_and_update();
        let entries = match log.read_after(consumer.position(), CHUNK).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(consumer = name, error = %e, "cannot read its log; retrying");
                let _ = pause(backoff.next_delay(), &shutdown).await;
                continue;
            }
        };
        let full = entries.len() == CHUNK as usize;
        if !entries.is_empty() {
            if let Err(e) = consumer.apply(entries).await {
                tracing::error!(consumer = name, error = %e, "log entries not applied; retrying");
                let _ = pause(backoff.next_delay(), &shutdown).await;
                continue;
            }
            backoff.reset();
        }
        if (std::mem::take(&mut kicked) || consumer.due().is_some_and(|d| d <= Instant::now()))
            && let Err(e) = consumer.tick().await
        {
            tracing::error!(consumer = name, error = %e, "log consumer failed; retrying");
            let _ = pause(backoff.next_delay(), &shutdown).await;
        }
        cursor.publish(&consumer);
        if full {
            continue;
        }
        let due = consumer.due();
        tokio::select! {
            _ = head.changed() => {}
            () = async {
                match due {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
            () = async {
                match &wake {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => kicked = true,
            () = shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use sonde_proto::v1::{Heartbeat, ResultBatch};

    use super::*;
    use crate::log::writer::Writer;
    use crate::log::{Append, SqliteLog};
    use crate::store::{AgentKey, Store};

    fn key() -> AgentKey {
        AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        }
    }

    fn batch(seq: u64) -> Append {
        let b = ResultBatch {
            batch_seq: seq,
            sealed_unix_nanos: 0,
            records: Vec::new(),
        };
        Append::batch(&key(), 1, b, 0)
    }

    /// What a consumer's own store would hold: effects and cursor,
    /// committed together.
    #[derive(Default)]
    struct Committed {
        effects: Mutex<Vec<i64>>,
        cursor: AtomicI64,
    }

    /// Applies entries and commits them with its cursor; panics on
    /// `batch_seq` 3 while `broken` is set, before committing.
    struct Flaky {
        committed: Arc<Committed>,
        broken: Arc<AtomicBool>,
        position: i64,
    }

    impl Consumer for Flaky {
        type Item = Entry;

        async fn apply(&mut self, entries: Vec<Arc<Entry>>) -> Result<(), StoreError> {
            let mut pending = Vec::new();
            for e in &entries {
                assert!(
                    !(self.broken.load(Ordering::Relaxed) && e.stored.batch_seq == 3),
                    "flaky consumer: batch 3"
                );
                pending.push(e.id());
            }
            let last = *pending.last().unwrap();
            self.committed.effects.lock().unwrap().extend(pending);
            self.committed.cursor.store(last, Ordering::Relaxed);
            self.position = last;
            Ok(())
        }
        fn position(&self) -> i64 {
            self.position
        }
        fn durable(&self) -> i64 {
            self.position
        }
        fn due(&self) -> Option<Instant> {
            None
        }
        async fn tick(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn finish(&mut self) {}
    }

    /// A consumer registered but not started (the analysis loading its
    /// state) holds pruning back; then the slowest one sets the bound.
    #[test]
    fn pruning_waits_for_every_registered_consumer() {
        let registry = Registry::default();
        let (a, b) = (registry.register("a"), registry.register("b"));
        a.durable.store(5, Ordering::Relaxed);
        assert_eq!(registry.passed_by_all(), None);
        b.durable.store(3, Ordering::Relaxed);
        assert_eq!(registry.passed_by_all(), Some(3));
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..600 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: not within 60 s of paused time");
    }

    /// A consumer that panics on one batch is rebuilt from its durable
    /// cursor, again and again (each counted); meanwhile appends and the
    /// other consumer carry on and pruning stays behind it. Once it can
    /// pass, every entry's effect is there exactly once.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_consumer_restarts_from_its_cursor_and_holds_pruning_back() {
        let store = Store::open(std::path::Path::new(":memory:")).unwrap();
        let log = SqliteLog::new(store.clone());
        let (writer, _task) = Writer::spawn(log.clone());
        let registry = Registry::default();
        let stop = CancellationToken::new();
        let facts_store = store.clone();
        let facts = registry.register(crate::consumers::facts::CURSOR);
        tokio::spawn(drive(
            crate::consumers::facts::CURSOR,
            log.clone(),
            facts.clone(),
            move || crate::consumers::facts::Facts::open(facts_store.clone()),
            stop.clone(),
        ));
        let (committed, broken) = (
            Arc::new(Committed::default()),
            Arc::new(AtomicBool::new(true)),
        );
        let flaky = registry.register("flaky");
        let (c, b) = (committed.clone(), broken.clone());
        tokio::spawn(drive(
            "flaky",
            log.clone(),
            flaky.clone(),
            move || {
                let (committed, broken) = (c.clone(), b.clone());
                async move {
                    let position = committed.cursor.load(Ordering::Relaxed);
                    Ok(Flaky {
                        committed,
                        broken,
                        position,
                    })
                }
            },
            stop.clone(),
        ));
        for seq in 1..=2 {
            writer.append(batch(seq)).await.unwrap();
        }
        let two = log.head_now().unwrap();
        eventually("flaky at batch 2", || {
            flaky.durable.load(Ordering::Relaxed) == two
        })
        .await;
        for seq in 3..=5 {
            writer.append(batch(seq)).await.unwrap();
        }
        let head = log.head_now().unwrap();
        eventually("facts at the head", || {
            facts.durable.load(Ordering::Relaxed) == head
        })
        .await;
        eventually("restarted twice", || {
            flaky.restarts.load(Ordering::Relaxed) >= 2
        })
        .await;
        assert_eq!(flaky.durable.load(Ordering::Relaxed), two);
        assert_eq!(registry.passed_by_all(), Some(two), "pruning waits");
        assert_eq!(store.cursor(crate::consumers::facts::CURSOR).unwrap(), head);
        // Fixed: it carries on from its cursor.
        broken.store(false, Ordering::Relaxed);
        eventually("flaky at the head", || {
            flaky.durable.load(Ordering::Relaxed) == head
        })
        .await;
        assert_eq!(registry.passed_by_all(), Some(head));
        let ids: Vec<i64> = log
            .stored_after(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            *committed.effects.lock().unwrap(),
            ids,
            "each once, in order"
        );
        let snapshot = registry.snapshot();
        assert!(
            snapshot.contains(&(crate::consumers::facts::CURSOR, head, 0)),
            "{snapshot:?}"
        );
        stop.cancel();
    }

    /// An idle collector reads nothing from disk: ten minutes of
    /// heartbeats (ten agents, each every 10 s) reach every consumer from
    /// memory; and the consumers, which have nothing to write for them,
    /// commit their cursors at most every [`CURSOR_ONLY_EVERY`], not once
    /// per heartbeat.
    #[tokio::test(start_paused = true)]
    async fn heartbeats_reach_the_consumers_without_reading_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        store
            .with(|c| {
                c.commit_hook(Some(move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    false
                }));
                Ok(())
            })
            .unwrap();
        let log = SqliteLog::new(store.clone());
        let (writer, _task) = Writer::spawn(log.clone());
        let registry = Registry::default();
        let stop = CancellationToken::new();
        let facts_store = store.clone();
        tokio::spawn(drive(
            crate::consumers::facts::CURSOR,
            log.clone(),
            registry.register(crate::consumers::facts::CURSOR),
            move || crate::consumers::facts::Facts::open(facts_store.clone()),
            stop.clone(),
        ));
        let analysis_store = store.clone();
        tokio::spawn(drive(
            crate::consumers::analysis::CURSOR,
            log.clone(),
            registry.register(crate::consumers::analysis::CURSOR),
            move || {
                let s = analysis_store.clone();
                async move {
                    let a = crate::consumers::analysis::Analyzer::load(
                        &s,
                        crate::consumers::analysis::Settings::default(),
                        crate::consumers::analysis::Clock::new(),
                    )?;
                    Ok(crate::consumers::analysis::Follower::new(a))
                }
            },
            stop.clone(),
        ));
        let start = Instant::now();
        for seq in 1..=60 {
            for n in 0..10 {
                let hb = Heartbeat {
                    seq,
                    ..Heartbeat::default()
                };
                let agent = AgentKey {
                    tenant: "t".into(),
                    name: format!("a{n}"),
                };
                writer.append(Append::heartbeat(&agent, hb)).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let head = log.head_now().unwrap();
        eventually("both consumers at the head", || {
            registry.passed_by_all() == Some(head)
        })
        .await;
        assert_eq!(log.disk_reads(), 0, "the log was read from disk");
        // The state store's commits (the appends go to the log's file).
        let appends = writer.stats.commits.load(Ordering::Relaxed);
        let cursor_writes = commits.load(Ordering::Relaxed);
        // Each consumer: one write per period, and one at its start.
        let most = 2 * (start.elapsed().as_secs() / CURSOR_ONLY_EVERY.as_secs() + 2);
        assert!(
            cursor_writes <= most,
            "{cursor_writes} cursor commits for {appends} heartbeats (at most {most})"
        );
        assert_eq!(
            store.cursor(crate::consumers::analysis::CURSOR).unwrap(),
            head
        );
        stop.cancel();
    }
}
