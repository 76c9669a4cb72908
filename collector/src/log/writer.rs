//! Group commit: the one writer of the ingest log. Sessions hand it their
//! appends and wait; while a transaction is being made durable, new
//! appends queue, and the next transaction takes all that queued (at most
//! [`MAX_GROUP_ENTRIES`] entries and [`MAX_GROUP_BYTES`] of payload). Each
//! append is answered as soon as its transaction is durable: one fsync
//! serves many agents, and acknowledged still means durable.
//!
//! When a transaction fails (disk full, I/O error), every append in it
//! gets the error and nothing of it is stored; sessions end and agents
//! replay, as with any failed append. The log publishes what it committed
//! (its tail), which wakes the consumers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{Append, Appended, IngestLog};
use crate::store::{StoreError, now_ms};

/// At most this many appends in one transaction.
pub const MAX_GROUP_ENTRIES: usize = 2_000;
/// At most this many payload bytes in one transaction (a larger single
/// append goes alone).
pub const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Appends waiting for the writer before senders wait to queue.
const QUEUE: usize = 8_192;

struct Request {
    append: Append,
    done: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Counters of the writer, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Appends in them.
    pub appends: AtomicU64,
}

/// Hands appends to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    pub stats: Arc<Stats>,
}

impl Writer {
    /// Starts the writer task on `log`. The task ends when every `Writer`
    /// is dropped, after answering what queued.
    pub fn spawn<L: IngestLog>(log: L) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run(log, rx, stats.clone()));
        (Self { tx, stats }, task)
    }

    /// Appends and waits until it is durable (or recognised as a replay).
    pub async fn append(&self, append: Append) -> Result<Appended, StoreError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Request { append, done })
            .await
            .map_err(|_| StoreError::Join("the ingest-log writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Join("the ingest-log writer has stopped".into()))?
    }
}

async fn run<L: IngestLog>(log: L, mut rx: mpsc::Receiver<Request>, stats: Arc<Stats>) {
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut bytes = first.append.payload_len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP_ENTRIES {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + next.append.payload_len() > MAX_GROUP_BYTES {
                carry = Some(next);
                break;
            }
            bytes += next.append.payload_len();
            group.push(next);
        }
        let (appends, waiting): (Vec<Append>, Vec<_>) =
            group.into_iter().map(|r| (r.append, r.done)).unzip();
        let n = appends.len() as u64;
        match log.append(appends, now_ms()).await {
            Ok(appended) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.appends.fetch_add(n, Ordering::Relaxed);
                for (done, a) in waiting.into_iter().zip(appended) {
                    let _ = done.send(Ok(a));
                }
            }
            Err(e) => {
                // Each waiting session gets the error and logs it.
                tracing::debug!(error = %e, appends = n, "ingest-log transaction failed; nothing of it is acknowledged");
                let e = Arc::new(e);
                for done in waiting {
                    let _ = done.send(Err(StoreError::Shared(e.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sonde_proto::v1::ResultBatch;

    use super::*;
    use crate::log::{Ingested, SqliteLog};
    use crate::store::{AgentKey, Store};

    fn key(n: usize) -> AgentKey {
        AgentKey {
            tenant: "t".into(),
            name: format!("a{n}"),
        }
    }

    fn batch(n: usize, seq: u64) -> Append {
        let b = ResultBatch {
            batch_seq: seq,
            sealed_unix_nanos: 0,
            records: Vec::new(),
        };
        Append::batch(&key(n), 1, b, 0)
    }

    /// 200 agents append at once, twice, and replay the first: each is
    /// answered with its own acknowledgement, stored once, in far fewer
    /// transactions than appends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_transactions_and_each_gets_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteLog::new(Store::open_dir(dir.path()).unwrap());
        let (writer, _task) = Writer::spawn(log.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..200 {
            let w = writer.clone();
            tasks.spawn(async move {
                let mut acks = Vec::new();
                for seq in [1, 2, 1] {
                    acks.push(w.append(batch(n, seq)).await.unwrap().ingested);
                }
                acks
            });
        }
        while let Some(acks) = tasks.join_next().await {
            assert_eq!(
                acks.unwrap(),
                [
                    Ingested::Stored(1),
                    Ingested::Stored(2),
                    Ingested::Duplicate(2)
                ]
            );
        }
        let stored = log.batches_after(0, 10_000).unwrap();
        assert_eq!(stored.len(), 400, "each batch stored once");
        let commits = writer.stats.commits.load(Ordering::Relaxed);
        assert_eq!(writer.stats.appends.load(Ordering::Relaxed), 600);
        assert!(commits < 600, "{commits} transactions for 600 appends");
        // The committed entries are in the tail, decoded, in order.
        let tail = log.store().log_tail().after(0, 10_000).unwrap();
        assert_eq!(tail.len(), 400);
        assert!(tail.windows(2).all(|w| w[0].id() < w[1].id()));
    }

    /// A transaction that fails fails every append in it; nothing of it
    /// is stored or published, and the writer carries on.
    #[tokio::test]
    async fn a_failed_transaction_answers_every_append_in_it_with_the_error() {
        let store = Store::open(Path::new(":memory:")).unwrap();
        let log = SqliteLog::new(store.clone());
        let (writer, _task) = Writer::spawn(log.clone());
        writer.append(batch(0, 1)).await.unwrap();
        store
            .with_log(|c| c.execute_batch("ALTER TABLE spool_hwm RENAME TO gone"))
            .unwrap();
        let mut head = store.log_tail().subscribe();
        head.borrow_and_update();
        let (a, b) = tokio::join!(writer.append(batch(1, 1)), writer.append(batch(2, 1)));
        for r in [a, b] {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("spool_hwm"), "{e}");
        }
        assert_eq!(log.batches_after(0, 10).unwrap().len(), 1);
        assert!(!head.has_changed().unwrap(), "nothing published");
        store
            .with_log(|c| c.execute_batch("ALTER TABLE gone RENAME TO spool_hwm"))
            .unwrap();
        let again = writer.append(batch(1, 1)).await.unwrap();
        assert_eq!(again.ingested, Ingested::Stored(1));
    }
}
