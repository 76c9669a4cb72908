//! The async face of the spool, shared by the batcher (which appends) and
//! the session (which replays and acknowledges).
//!
//! Spool calls do file I/O and `fsync`, so they run on tokio's blocking
//! pool; a `watch` carries the newest `batch_seq` so the session wakes up
//! when there is something new to send.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sonde_proto::v1::{Record, ResultBatch};
use tokio::sync::watch;

use crate::spool::{Spool, SpoolError, SpoolStats};

/// Shared handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    spool: Arc<Mutex<Spool>>,
    newest: watch::Sender<u64>,
    spool_id: u64,
}

impl Outbox {
    /// Wraps an opened spool.
    pub fn new(spool: Spool) -> Self {
        let newest = watch::Sender::new(spool.next_seq() - 1);
        let spool_id = spool.spool_id();
        Self {
            spool: Arc::new(Mutex::new(spool)),
            newest,
            spool_id,
        }
    }

    fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
        spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || f(&mut Self::lock(&spool)))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The spool's identity (sent in `Hello`).
    pub fn spool_id(&self) -> u64 {
        self.spool_id
    }

    /// Highest acknowledged `batch_seq`.
    pub fn acked(&self) -> u64 {
        Self::lock(&self.spool).acked()
    }

    /// Size and counters.
    pub fn stats(&self) -> SpoolStats {
        Self::lock(&self.spool).stats()
    }

    /// Seals and stores a batch; returns its `batch_seq` once it is synced.
    pub async fn append(&self, records: Vec<Record>, now_ns: i64) -> Result<u64, SpoolError> {
        // The cap may append a gap batch after ours: report the newest.
        let (seq, newest) = self
            .with(move |s| {
                let seq = s.append(records, now_ns)?;
                Ok((seq, s.next_seq() - 1))
            })
            .await?;
        self.newest.send_replace(newest);
        Ok(seq)
    }

    /// The next stored batch after `seq`.
    pub async fn read_after(&self, seq: u64) -> Result<Option<(u64, ResultBatch)>, SpoolError> {
        self.with(move |s| s.read_after(seq)).await
    }

    /// Cumulative acknowledgement from the collector.
    pub async fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        self.with(move |s| s.ack(seq)).await
    }

    /// Watches the newest stored `batch_seq`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}
