//! Hands results from a probe engine to the batcher without ever blocking
//! the engine (a blocked engine would turn into artificial loss and RTT).
//! If the batcher's queue is full, results are counted as dropped and a
//! `Gap` record with that count is queued at the next report, so the loss
//! is visible at the collector.

use sonde_proto::v1::{Gap, Record, record};
use tokio::sync::mpsc;

/// Non-blocking result sink of one engine.
#[derive(Debug)]
pub struct Emitter {
    tx: mpsc::Sender<Record>,
    engine: &'static str,
    dropped: u64,
    since_ns: Option<i64>,
}

impl Emitter {
    pub fn new(tx: mpsc::Sender<Record>, engine: &'static str) -> Self {
        Self {
            tx,
            engine,
            dropped: 0,
            since_ns: None,
        }
    }

    /// Queues a record, or counts it as dropped.
    /// Its times are moved from the system clock to the agent's
    /// ([`crate::clock`]) on the way.
    pub fn push(&mut self, mut record: Record) {
        crate::clock::restamp(&mut record, crate::clock::offset());
        if self.tx.try_send(record).is_err() {
            self.dropped += 1;
        }
    }

    /// Results dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reports dropped results as a gap (if any); call periodically.
    pub fn flush_gap(&mut self, now_ns: i64) {
        let from = self.since_ns.unwrap_or(now_ns);
        if self.dropped > 0 {
            let gap = Gap {
                from_unix_nanos: from,
                to_unix_nanos: now_ns,
                dropped: self.dropped,
                reason: format!(
                    "{} results dropped: the agent's result queue was full",
                    self.engine
                ),
            };
            tracing::warn!(
                engine = self.engine,
                dropped = self.dropped,
                "result queue full; reporting a gap"
            );
            let mut record = Record {
                kind: Some(record::Kind::Gap(gap)),
            };
            crate::clock::restamp(&mut record, crate::clock::offset());
            if self.tx.try_send(record).is_err() {
                return; // still full: keep counting, report later
            }
            self.dropped = 0;
        }
        self.since_ns = Some(now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_proto::v1::PingResult;

    fn ping() -> Record {
        Record {
            kind: Some(record::Kind::Ping(PingResult::default())),
        }
    }

    #[test]
    fn full_queue_becomes_a_counted_gap() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut e = Emitter::new(tx, "ping");
        e.flush_gap(100);
        for _ in 0..5 {
            e.push(ping());
        }
        assert_eq!(e.dropped(), 3);
        e.flush_gap(200); // queue still full: nothing lost, nothing sent
        assert_eq!(e.dropped(), 3);
        rx.try_recv().unwrap();
        e.flush_gap(300);
        assert_eq!(e.dropped(), 0);
        rx.try_recv().unwrap();
        let Some(record::Kind::Gap(g)) = rx.try_recv().unwrap().kind else {
            panic!("not a gap")
        };
        assert_eq!(
            (g.dropped, g.from_unix_nanos, g.to_unix_nanos),
            (3, 100, 300)
        );
    }
}
