//! The one follow loop of the ingest log's consumers (analysis, host
//! facts, export): read after the consumer's position (the log serves the
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
//! [`Registry`]: the pruner deletes only what all of them have passed, and
//! `/metrics` shows each one's lag.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sonde_runtime::backoff::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Entries, IngestLog};
use crate::store::StoreError;

/// Entries handed over per call.
pub const CHUNK: usize = 500;

/// A follower of the ingest log.
pub trait Consumer: Send + 'static {
    /// Applies `entries`, the next ones after [`Self::position`], in
    /// order. On error nothing of them counts as applied: they come again.
    fn apply(&mut self, entries: Entries) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The position of the last entry applied.
    fn position(&self) -> i64;

    /// The position up to which its effects are durable.
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
    /// Times it was rebuilt after a panic.
    pub restarts: AtomicU64,
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
        self.cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(n, c)| {
                (
                    *n,
                    c.durable.load(Ordering::Relaxed),
                    c.restarts.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The position every consumer has passed (`None` while one has not
    /// started).
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
    L: IngestLog,
    C: Consumer,
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
        cursor
            .durable
            .store(consumer.durable(), Ordering::Relaxed);
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

async fn follow<L: IngestLog, C: Consumer>(
    name: &'static str,
    log: L,
    cursor: Arc<Cursor>,
    mut consumer: C,
    shutdown: CancellationToken,
) {
    let mut head = log.subscribe();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if shutdown.is_cancelled() {
            consumer.finish().await;
            cursor
                .durable
                .store(consumer.durable(), Ordering::Relaxed);
            return;
        }
        // Seen before reading: an append during the read wakes us again.
        head.borrow_and_update();
        let entries = match log.read_after(consumer.position(), CHUNK as u32).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(consumer = name, error = %e, "cannot read the ingest log; retrying");
                let _ = pause(backoff.next_delay(), &shutdown).await;
                continue;
            }
        };
        let full = entries.len() == CHUNK;
        if !entries.is_empty() {
            if let Err(e) = consumer.apply(entries).await {
                tracing::error!(consumer = name, error = %e, "ingest-log entries not applied; retrying");
                let _ = pause(backoff.next_delay(), &shutdown).await;
                continue;
            }
            backoff.reset();
        }
        if consumer.due().is_some_and(|d| d <= Instant::now()) {
            if let Err(e) = consumer.tick().await {
                tracing::error!(consumer = name, error = %e, "ingest-log consumer failed; retrying");
                let _ = pause(backoff.next_delay(), &shutdown).await;
            }
        }
        cursor
            .durable
            .store(consumer.durable(), Ordering::Relaxed);
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
            () = shutdown.cancelled() => {}
        }
    }
}
