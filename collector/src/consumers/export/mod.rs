//! Export of the ingest log to a time-series database (InfluxDB v2).
//!
//! The exporter is a consumer of the durable ingest log with its own
//! cursor (`cursors.name = 'export'`): read entries after the cursor, turn
//! them into line protocol (`points.rs`, `line.rs`), gather them into a
//! batch of at most `batch-points` points or `batch-delay` of waiting,
//! write the batch through the [`Sink`] seam with the retry policy below,
//! and only then move the cursor past the entries it holds. So:
//!
//! - **Database down or slow**: the write is retried with capped, jittered
//!   exponential backoff (the server's `Retry-After` when it gives one);
//!   the cursor waits, the log keeps everything (it is pruned only behind
//!   every consumer), and agents' batches are acknowledged as before — the
//!   exporter runs beside ingest, never in its path. The lag (entries,
//!   results and seconds behind) is in `/metrics` and the API.
//! - **A line refused for its content** (HTTP 400 and other non-retryable
//!   4xx): the batch is split in halves until the refused lines are alone;
//!   each is logged with the server's message, counted, and skipped. The
//!   rest is written (re-writing a point InfluxDB already took is
//!   idempotent: same series and timestamp overwrite).
//! - **Collector stopped or killed mid-batch**: the cursor did not move;
//!   the batch is written again after restart (at-least-once; InfluxDB
//!   collapses the duplicates, see above).
//! - **Undecodable entry** (not expected: the collector wrote it): logged,
//!   counted, skipped.

pub mod influx;
pub mod line;
pub mod points;
pub mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use sonde_runtime::backoff::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use sink::{Sink, WriteError};

use crate::config::Influx;
use crate::log::consumer::Consumer;
use crate::log::{Entries, Entry, LogLag, SqliteLog};
use crate::store::{Store, StoreError, now_ms};

/// The exporter's cursor name in the store.
pub const CURSOR: &str = "export";

/// How the exporter batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub batch_points: usize,
    pub batch_delay: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl From<&Influx> for Settings {
    fn from(c: &Influx) -> Self {
        Self {
            batch_points: c.batch_points,
            batch_delay: c.batch_delay,
            retry_initial: c.retry_initial,
            retry_max: c.retry_max,
        }
    }
}

/// What the exporter has done, for `/metrics` and the API.
#[derive(Debug, Default)]
pub struct Stats {
    /// Points the database accepted.
    pub points_written: AtomicU64,
    /// Write requests that succeeded.
    pub writes: AtomicU64,
    /// Points refused for their content (logged, skipped).
    pub points_rejected: AtomicU64,
    /// Write attempts that failed and will be retried.
    pub write_failures: AtomicU64,
    /// Non-finite float fields left out of points.
    pub fields_dropped: AtomicU64,
    /// Log entries that could not be decoded (skipped).
    pub undecodable: AtomicU64,
    /// The committed cursor.
    pub position: AtomicI64,
    /// Unix ms of the last successful write (0 = none yet).
    pub last_write_ms: AtomicI64,
    /// Whether the last write attempt failed.
    pub failing: AtomicBool,
}

/// The exporter's state as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    pub target: String,
    pub failing: bool,
    pub points_written: u64,
    pub points_rejected: u64,
    pub write_failures: u64,
    /// Non-finite float fields left out, and log entries not decodable.
    pub fields_dropped: u64,
    pub undecodable: u64,
    pub last_write_ms: Option<i64>,
    pub lag: LogLag,
    /// Seconds between now and the receive time of the oldest entry not
    /// yet exported (0 when caught up).
    pub lag_seconds: f64,
}

/// A running exporter's handle: its counters and where it writes.
#[derive(Debug, Clone)]
pub struct Handle {
    pub stats: Arc<Stats>,
    pub target: String,
}

impl Handle {
    /// Counters plus the lag, read from the store.
    pub fn status(&self, store: &Store) -> Result<Status, StoreError> {
        let s = &self.stats;
        let lag = SqliteLog::new(store.clone()).lag_now(s.position.load(Ordering::Relaxed))?;
        let last = s.last_write_ms.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let lag_seconds = lag
            .oldest_ms
            .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1e3);
        Ok(Status {
            target: self.target.clone(),
            failing: s.failing.load(Ordering::Relaxed),
            points_written: s.points_written.load(Ordering::Relaxed),
            points_rejected: s.points_rejected.load(Ordering::Relaxed),
            write_failures: s.write_failures.load(Ordering::Relaxed),
            fields_dropped: s.fields_dropped.load(Ordering::Relaxed),
            undecodable: s.undecodable.load(Ordering::Relaxed),
            last_write_ms: (last > 0).then_some(last),
            lag,
            lag_seconds,
        })
    }
}

/// The export consumer: owns the sink and the cursor.
pub struct Exporter<S> {
    store: Store,
    sink: Arc<S>,
    settings: Settings,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    backoff: Backoff,
    /// The sink answered ready since this exporter started.
    ready: bool,
    pending: Pending,
    /// The last entry turned into pending lines (or written).
    position: i64,
}

/// The exporter stopped because the collector is shutting down.
#[derive(Debug)]
struct Stopped;

/// Lines waiting to be written, and the last log entry they cover.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<String>,
    last_id: Option<i64>,
    since: Option<Instant>,
}

impl<S: Sink> Exporter<S> {
    pub fn new(store: Store, sink: S, settings: Settings, shutdown: CancellationToken) -> Self {
        Self::with_parts(
            store,
            Arc::new(sink),
            settings,
            Arc::new(Stats::default()),
            shutdown,
        )
    }

    fn with_parts(
        store: Store,
        sink: Arc<S>,
        settings: Settings,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            sink,
            backoff: Backoff::new(settings.retry_initial, settings.retry_max),
            settings,
            stats,
            shutdown,
            ready: false,
            pending: Pending::default(),
            position: 0,
        }
    }

    /// Its counters, for the handle.
    pub fn handle(&self) -> Handle {
        Handle {
            stats: self.stats.clone(),
            target: self.sink.describe(),
        }
    }

    /// Runs until shutdown, on its own (tests): [`Self::run_with`] with a
    /// registry of its own.
    pub async fn run(self) {
        let cursor = crate::log::consumer::Registry::default().register(CURSOR);
        self.run_with(cursor).await;
    }

    /// Runs until shutdown under the one consumer driver, its durable
    /// position in `cursor`; after a panic it starts again from its
    /// stored cursor with the same counters.
    pub async fn run_with(self, cursor: Arc<crate::log::consumer::Cursor>) {
        let log = SqliteLog::new(self.store.clone());
        let shutdown = self.shutdown.clone();
        let parts = (
            self.store,
            self.sink,
            self.settings,
            self.stats,
            self.shutdown,
        );
        let make = move || {
            let (store, sink, settings, stats, shutdown) = parts.clone();
            async move {
                let mut e = Self::with_parts(store, sink, settings, stats, shutdown);
                e.position = e.store.run(|s| s.cursor(CURSOR)).await?;
                e.stats.position.store(e.position, Ordering::Relaxed);
                tracing::info!(to = %e.sink.describe(), cursor = e.position, "export started");
                Ok(e)
            }
        };
        crate::log::consumer::drive(CURSOR, log, cursor, make, shutdown).await;
    }

    async fn wait_ready(&mut self) -> Result<(), Stopped> {
        let mut logged = false;
        loop {
            match self.sink.ready().await {
                Ok(()) => {
                    self.backoff.reset();
                    return Ok(());
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(to = %self.sink.describe(), error = %e, "InfluxDB not ready; export waits (results are kept)");
                        logged = true;
                    }
                    self.stats.failing.store(true, Ordering::Relaxed);
                    let delay = self.backoff.next_delay();
                    self.pause(delay).await?;
                }
            }
        }
    }

    fn add(&mut self, entry: &Entry) {
        let pending = &mut self.pending;
        match points::of(entry) {
            Ok(points) => {
                for p in points {
                    let mut line = String::new();
                    let w = p.write_line(&mut line);
                    if w.dropped_fields > 0 {
                        self.stats
                            .fields_dropped
                            .fetch_add(w.dropped_fields as u64, Ordering::Relaxed);
                    }
                    if w.line {
                        pending.lines.push(line);
                    }
                }
            }
            Err(e) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::error!(id = entry.id(), agent = %entry.agent(), error = %e, "ingest-log entry cannot be decoded; not exported");
            }
        }
        pending.last_id = Some(entry.id());
        pending.since.get_or_insert_with(Instant::now);
    }

    /// Writes the pending lines (retrying, splitting out refused lines),
    /// then commits the cursor past them.
    async fn flush(&mut self) -> Result<(), Stopped> {
        let Some(last_id) = self.pending.last_id else {
            return Ok(());
        };
        let lines = std::mem::take(&mut self.pending.lines);
        let mut ranges = vec![(0, lines.len())];
        while let Some((a, b)) = ranges.pop() {
            if a == b {
                continue;
            }
            match self.write_with_retry(lines[a..b].concat()).await? {
                Ok(()) => {
                    self.stats
                        .points_written
                        .fetch_add((b - a) as u64, Ordering::Relaxed);
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    self.stats.last_write_ms.store(now_ms(), Ordering::Relaxed);
                }
                Err((status, message)) if b - a == 1 => {
                    self.stats.points_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(status, server = %message, line = %lines[a].trim_end(), "InfluxDB refused a line; it is skipped");
                }
                Err(_) => {
                    let mid = a + (b - a) / 2;
                    ranges.push((mid, b));
                    ranges.push((a, mid));
                }
            }
        }
        self.pending.last_id = None;
        self.pending.since = None;
        let committed = self
            .store
            .run(move |s| s.set_cursor(CURSOR, last_id, now_ms()))
            .await;
        match committed {
            Ok(()) => self.stats.position.store(last_id, Ordering::Relaxed),
            // Not fatal: the entries are written; after a restart they are
            // written again (idempotent), and the next commit moves past.
            Err(e) => tracing::error!(error = %e, "export cannot store its cursor"),
        }
        Ok(())
    }

    /// Sends `body` until the sink takes it or refuses its content.
    async fn write_with_retry(
        &mut self,
        body: String,
    ) -> Result<Result<(), (u16, String)>, Stopped> {
        loop {
            match self.sink.write(body.clone()).await {
                Ok(()) => {
                    if self.stats.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(to = %self.sink.describe(), "export recovered");
                    }
                    self.backoff.reset();
                    return Ok(Ok(()));
                }
                Err(WriteError::Rejected { status, message }) => {
                    return Ok(Err((status, message)));
                }
                Err(WriteError::Retry { reason, after }) => {
                    self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                    self.stats.failing.store(true, Ordering::Relaxed);
                    let delay = after.unwrap_or_else(|| self.backoff.next_delay());
                    tracing::warn!(to = %self.sink.describe(), error = %reason, retry_in = ?delay, "InfluxDB write failed; will retry (results are kept)");
                    self.pause(delay).await?;
                }
            }
        }
    }

    async fn pause(&self, d: Duration) -> Result<(), Stopped> {
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            () = self.shutdown.cancelled() => Err(Stopped),
        }
    }
}

impl<S: Sink> Consumer for Exporter<S> {
    type Item = Entry;

    async fn apply(&mut self, entries: Entries) -> Result<(), StoreError> {
        if !self.ready {
            if self.wait_ready().await.is_err() {
                return Ok(()); // shutting down
            }
            self.ready = true;
        }
        for entry in &entries {
            self.add(entry);
            self.position = entry.id();
            if self.pending.lines.len() >= self.settings.batch_points && self.flush().await.is_err()
            {
                return Ok(());
            }
        }
        Ok(())
    }

    fn position(&self) -> i64 {
        self.position
    }

    fn durable(&self) -> i64 {
        self.stats.position.load(Ordering::Relaxed)
    }

    /// What InfluxDB has taken, not what waits in the batch.
    fn processed(&self) -> i64 {
        self.durable()
    }

    fn due(&self) -> Option<Instant> {
        self.pending.since.map(|t| t + self.settings.batch_delay)
    }

    async fn tick(&mut self) -> Result<(), StoreError> {
        let _ = self.flush().await;
        Ok(())
    }

    async fn finish(&mut self) {}
}

#[cfg(test)]
mod tests;
