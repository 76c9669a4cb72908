//! The newest entries of the ingest log, kept in memory, decoded, as the
//! writer committed them; and the head position, published after each
//! commit. A consumer that is caught up reads from here: it is woken by
//! the head moving and reads nothing from disk. One that is further behind
//! than the tail reaches reads the log itself.
//!
//! The tail is bounded by entries, by an estimate of their memory (the
//! payload and its decoded form, [`cost`]) and by age ([`MAX_AGE_MS`]
//! before the newest); the oldest go first. It only
//! has to cover how far a caught-up consumer trails the writer (a chunk or
//! two); one further behind reads the log.
//! It covers every entry after [`Tail::covers_after`], without gaps: the
//! writer is the only appender and adds each committed entry in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Entries, Entry};

/// At most this many entries are kept.
pub const MAX_ENTRIES: usize = 8_192;
/// At most this much memory (estimated by [`cost`]) is kept.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Entries received this long before the newest go: a caught-up consumer
/// reads within milliseconds, and an idle collector keeps next to nothing.
pub const MAX_AGE_MS: i64 = 5_000;

/// Estimated memory of an entry: its payload, and its decoded form at
/// about four times the payload (strings and vectors of the protobuf
/// messages; measured on result batches of pings).
pub fn cost(e: &Entry) -> usize {
    e.stored.payload.len() * 5
}

#[derive(Debug)]
struct Inner {
    /// Every entry after this position is in `entries`.
    after: i64,
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
}

/// The in-memory tail; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tail {
    inner: Arc<Mutex<Inner>>,
    head: watch::Sender<i64>,
    limits: (usize, usize),
}

impl Tail {
    /// An empty tail after `head`, the log's newest position at start.
    pub fn new(head: i64) -> Self {
        Self::with_limits(head, MAX_ENTRIES, MAX_BYTES)
    }

    pub fn with_limits(head: i64, max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                after: head,
                entries: VecDeque::new(),
                bytes: 0,
            })),
            head: watch::Sender::new(head),
            limits: (max_entries, max_bytes),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds committed entries (in position order) and publishes the new
    /// head.
    pub fn push(&self, committed: impl IntoIterator<Item = Arc<Entry>>) {
        let mut head = None;
        {
            let mut t = self.lock();
            for e in committed {
                head = Some(e.id());
                t.bytes += cost(&e);
                t.entries.push_back(e);
            }
            let (max_entries, max_bytes) = self.limits;
            let newest = t.entries.back().map_or(i64::MIN, |e| e.stored.received_ms);
            while t.entries.len() > max_entries
                || (t.bytes > max_bytes && t.entries.len() > 1)
                || t.entries
                    .front()
                    .is_some_and(|e| e.stored.received_ms < newest.saturating_sub(MAX_AGE_MS))
            {
                let Some(old) = t.entries.pop_front() else {
                    break;
                };
                t.bytes -= cost(&old);
                t.after = old.id();
            }
        }
        if let Some(h) = head {
            self.head.send_replace(h);
        }
    }

    /// The position every later entry is held after.
    pub fn covers_after(&self) -> i64 {
        self.lock().after
    }

    /// Up to `limit` entries after `position`, when the tail holds all of
    /// them (`None`: read the log).
    pub fn after(&self, position: i64, limit: usize) -> Option<Entries> {
        let t = self.lock();
        if position < t.after {
            return None;
        }
        let start = t.entries.partition_point(|e| e.id() <= position);
        Some(t.entries.iter().skip(start).take(limit).cloned().collect())
    }

    /// The head position, as it moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// The newest committed position.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Body, LogKind, LoggedBatch};

    fn entry(id: i64, bytes: usize) -> Arc<Entry> {
        Arc::new(Entry {
            stored: LoggedBatch {
                id,
                kind: LogKind::Batch,
                tenant: "t".into(),
                agent: "a".into(),
                spool_id: 1,
                batch_seq: u64::try_from(id).unwrap(),
                received_ms: 0,
                results: 0,
                payload: vec![0; bytes],
            },
            body: Body::Undecodable(String::new()),
        })
    }

    fn ids(e: &Entries) -> Vec<i64> {
        e.iter().map(|e| e.id()).collect()
    }

    #[test]
    fn serves_what_it_holds_and_sends_readers_further_back_to_the_log() {
        let tail = Tail::with_limits(10, 3, 1000);
        let mut head = tail.subscribe();
        assert_eq!(tail.after(10, 100).map(|e| ids(&e)), Some(vec![]));
        assert_eq!(tail.after(9, 100), None, "before the tail: the log");
        tail.push([entry(11, 1), entry(13, 1)]);
        assert!(head.has_changed().unwrap());
        assert_eq!(*head.borrow_and_update(), 13);
        assert_eq!(tail.after(10, 100).map(|e| ids(&e)), Some(vec![11, 13]));
        assert_eq!(tail.after(11, 100).map(|e| ids(&e)), Some(vec![13]));
        assert_eq!(tail.after(10, 1).map(|e| ids(&e)), Some(vec![11]));
        // Over the count: the oldest goes, and with it the cover.
        tail.push([entry(14, 1), entry(15, 1)]);
        assert_eq!(tail.covers_after(), 11);
        assert_eq!(tail.after(10, 100), None);
        assert_eq!(tail.after(11, 100).map(|e| ids(&e)), Some(vec![13, 14, 15]));
        // Over the memory: down to the newest.
        tail.push([entry(16, 300)]);
        assert_eq!(tail.covers_after(), 15);
        assert_eq!(tail.after(15, 100).map(|e| ids(&e)), Some(vec![16]));
        assert_eq!(tail.head(), 16);
    }

    #[test]
    fn entries_older_than_the_age_bound_go() {
        let tail = Tail::with_limits(0, 100, 1_000_000);
        let at = |id: i64, ms: i64| {
            let mut e = (*entry(id, 1)).clone();
            e.stored.received_ms = ms;
            Arc::new(e)
        };
        tail.push([at(1, 1_000), at(2, 3_000)]);
        assert_eq!(tail.after(0, 10).map(|e| ids(&e)), Some(vec![1, 2]));
        tail.push([at(3, 1_000 + MAX_AGE_MS + 1)]);
        assert_eq!(tail.covers_after(), 1);
        assert_eq!(tail.after(1, 10).map(|e| ids(&e)), Some(vec![2, 3]));
    }
}
