//! Seals probe results into batches: by count (`max-records`) or by time
//! (`max-delay` after the first record of a batch), whichever comes first,
//! and appends each batch to the spool.
//!
//! If the spool cannot take a batch (disk full, I/O error), the batch's
//! results are counted and a `Gap` record covering them goes into the next
//! batch, so the loss is visible at the collector rather than silent.

use std::time::Duration;

use sonde_proto::v1::{Gap, Record, record};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use sonde_runtime::clock::unix_nanos;

use crate::outbox::Outbox;

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
        batch.push(first);
        while batch.len() < limits.max_records {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => break,
                },
                () = sleep_until(deadline) => break,
            }
        }
        let now = unix_nanos();
        let results = sonde_proto::records::results(&batch) as u64;
        let earlier = sonde_proto::records::gapped(&batch);
        if let Err(e) = outbox.append(batch, now).await {
            tracing::error!(error = %e, results, "cannot spool a batch; its results are recorded as a gap");
            carried = Some(Gap {
                from_unix_nanos: now - i64::try_from(limits.max_delay.as_nanos()).unwrap_or(0),
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
        if let Err(e) = outbox.append(vec![record], unix_nanos()).await {
            tracing::error!(error = %e, "cannot spool the final gap record");
        }
    }
}
