//! Seals probe results into batches: by count (`max-records`), by encoded
//! size ([`MAX_BATCH_BYTES`], well under the collector's gRPC message
//! limit, so no batch can be refused for its size and block the spool) or
//! by time (`max-delay` after the first record of a batch), whichever
//! comes first, and appends each batch to the spool.
//!
//! If the spool cannot take a batch (disk full, I/O error), the batch's
//! results are counted and a `Gap` record covering them goes into the next
//! batch, so the loss is visible at the collector rather than silent.

use std::time::Duration;

use prost::Message as _;
use sonde_proto::v1::{Gap, Record, record};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::clock::now_ns;

use crate::outbox::Outbox;

/// A batch is sealed once its records encode to this many bytes: a
/// quarter of the gRPC message limit both sides enforce
/// ([`sonde_proto::MAX_MESSAGE_BYTES`]).
pub const MAX_BATCH_BYTES: usize = sonde_proto::MAX_MESSAGE_BYTES / 4;

/// When a batch is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_delay: Duration,
}

/// Runs until every sender of `rx` is gone, then seals what is left.
pub async fn run(mut rx: mpsc::Receiver<Record>, outbox: Outbox, limits: BatchLimits) {
    let mut carried: Option<Gap> = None;
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + limits.max_delay;
        let mut batch = Vec::with_capacity(limits.max_records.min(16_384));
        if let Some(gap) = carried.take() {
            batch.push(Record {
                kind: Some(record::Kind::Gap(gap)),
            });
        }
        let mut bytes = batch.iter().map(prost::Message::encoded_len).sum::<usize>();
        bytes += first.encoded_len();
        batch.push(first);
        while batch.len() < limits.max_records && bytes < MAX_BATCH_BYTES {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => {
                        // Field tag and length prefix: a few bytes more.
                        bytes += r.encoded_len() + 4;
                        batch.push(r);
                    }
                    None => break,
                },
                () = sleep_until(deadline) => break,
            }
        }
        let now = now_ns();
        let results = sonde_proto::records::results(&batch) as u64;
        let earlier = sonde_proto::records::gapped(&batch);
        // A gap carried from earlier failures keeps its start.
        let since = batch
            .iter()
            .filter_map(|r| match &r.kind {
                Some(record::Kind::Gap(g)) => Some(g.from_unix_nanos),
                _ => None,
            })
            .min();
        if let Err(e) = outbox.append(batch, now).await {
            tracing::error!(error = %e, results, "cannot spool a batch; its results are recorded as a gap");
            let from = now - i64::try_from(limits.max_delay.as_nanos()).unwrap_or(0);
            carried = Some(Gap {
                from_unix_nanos: since.map_or(from, |s| s.min(from)),
                to_unix_nanos: now,
                dropped: results + earlier,
                reason: format!("agent could not write its spool: {e}"),
            });
        }
    }
    if let Some(gap) = carried {
        let record = Record {
            kind: Some(record::Kind::Gap(gap)),
        };
        if let Err(e) = outbox.append(vec![record], now_ns()).await {
            tracing::error!(error = %e, "cannot spool the final gap record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{Spool, SpoolLimits};

    fn big(i: u64) -> Record {
        Record {
            kind: Some(record::Kind::Gap(Gap {
                from_unix_nanos: 0,
                to_unix_nanos: 0,
                dropped: i,
                reason: "x".repeat(100_000),
            })),
        }
    }

    /// Records whose count is far under `max-records` but whose size is
    /// not are cut into batches the collector accepts.
    #[tokio::test]
    async fn batches_stay_under_the_message_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits::new(1 << 30, Duration::from_secs(3600));
        let (spool, _) = Spool::open(dir.path(), limits).unwrap();
        let outbox = Outbox::new(spool);
        let (tx, rx) = mpsc::channel(100);
        for i in 0..60 {
            tx.send(big(i)).await.unwrap();
        }
        drop(tx);
        let limits = BatchLimits {
            max_records: 100_000,
            max_delay: Duration::from_secs(3600),
        };
        run(rx, outbox.clone(), limits).await;
        let (mut seq, mut seen, mut batches) = (0, 0, 0);
        while let Some((s, batch)) = outbox.read_after(seq).await.unwrap() {
            let bytes = prost::Message::encoded_len(&batch);
            assert!(
                bytes < sonde_proto::MAX_MESSAGE_BYTES / 2,
                "batch {s}: {bytes} bytes"
            );
            for r in &batch.records {
                let Some(record::Kind::Gap(g)) = &r.kind else {
                    panic!("not a gap")
                };
                assert_eq!(g.dropped, seen, "records in order, none lost");
                seen += 1;
            }
            (seq, batches) = (s, batches + 1);
        }
        assert_eq!(seen, 60);
        assert!(batches >= 6, "{batches} batches for 6 MB");
    }
}
