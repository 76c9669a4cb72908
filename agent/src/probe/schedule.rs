//! When each target of an engine is probed next, shared by the ICMP, TCP
//! and traceroute engines.
//!
//! Target *i* of *n* starts `i/n` into its interval, so sends are spread
//! evenly and never burst. A slot taken more than [`LAG_TOLERANCE`] late is
//! counted as lag, and slots that fell a whole interval behind are skipped
//! (counted) rather than sent in a burst: an overloaded agent says it is
//! behind instead of reporting inflated RTTs or artificial loss. The lag is
//! reported (a `SchedulerLag` record and a log line) by [`Schedule::take_lag`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use sonde_proto::v1::{Record, SchedulerLag, record};
use tokio::time::Instant;

/// A probe later than this past its slot counts as late.
pub const LAG_TOLERANCE: Duration = Duration::from_millis(10);
/// How often engines report lag (when there was any).
pub const LAG_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The next slot of every target, by index into the engine's target list.
#[derive(Debug, Default)]
pub struct Schedule {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    intervals: Vec<Duration>,
    lag: Lag,
}

/// Lag seen since the last report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub late: u64,
    pub skipped: u64,
    pub max: Duration,
}

impl Schedule {
    /// Replaces every slot: target `i` of the given intervals starts `i/n`
    /// into its interval from `now`.
    pub fn set(&mut self, intervals: Vec<Duration>, now: Instant) {
        self.heap.clear();
        let n = u32::try_from(intervals.len().max(1)).unwrap_or(u32::MAX);
        for (i, every) in intervals.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            self.heap.push(Reverse((now + *every * idx / n, i)));
        }
        self.intervals = intervals;
    }

    /// The earliest slot, if any target is scheduled.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The next target due at `now` (call until `None`); its following slot
    /// is scheduled, skipping missed slots.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        let &Reverse((due, i)) = self.heap.peek()?;
        if due > now {
            return None;
        }
        self.heap.pop();
        let every = self.intervals[i];
        let late = now - due;
        let mut next = due + every;
        if late > LAG_TOLERANCE {
            self.lag.late += 1;
            self.lag.max = self.lag.max.max(late);
            while next <= now {
                next += every;
                self.lag.skipped += 1;
            }
        }
        self.heap.push(Reverse((next, i)));
        Some(i)
    }

    /// Counts a probe that could not be started on time for another reason
    /// (e.g. too many connects in flight).
    pub fn skip(&mut self) {
        self.lag.skipped += 1;
        self.lag.late += 1;
    }

    /// The lag since the last call, as a record to send (none if on time).
    pub fn take_lag(&mut self, probe: &str, now_ns: i64) -> Option<Record> {
        let lag = std::mem::take(&mut self.lag);
        if lag.late == 0 {
            return None;
        }
        tracing::warn!(
            probe,
            late = lag.late,
            skipped = lag.skipped,
            max_lag = ?lag.max,
            "probes fell behind schedule"
        );
        Some(Record {
            kind: Some(record::Kind::Lag(SchedulerLag {
                at_unix_nanos: now_ns,
                probe: probe.to_owned(),
                late_probes: lag.late,
                max_lag_nanos: u64::try_from(lag.max.as_nanos()).unwrap_or(u64::MAX),
            })),
        })
    }
}

/// When an engine with nothing scheduled wakes up anyway.
pub fn idle_wake() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spread_and_missed_slots_skipped() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let second = Duration::from_secs(1);
        s.set(vec![second; 4], t0);
        let mut order = Vec::new();
        for ms in [0, 250, 500, 750] {
            let now = t0 + Duration::from_millis(ms);
            assert_eq!(s.next(), Some(now));
            order.push(s.pop_due(now).unwrap());
            assert_eq!(s.pop_due(now), None);
        }
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!(s.take_lag("ping", 0), None);
        // 3.1 s later: every target is late and skips its missed slots.
        let now = t0 + Duration::from_millis(4100);
        let mut due = 0;
        while s.pop_due(now).is_some() {
            due += 1;
        }
        assert_eq!(due, 4);
        assert!(s.next().unwrap() > now);
        let Some(Record {
            kind: Some(record::Kind::Lag(lag)),
        }) = s.take_lag("ping", 7)
        else {
            panic!("no lag record")
        };
        assert_eq!(lag.late_probes, 4);
        assert_eq!(lag.max_lag_nanos, 3_100_000_000);
        assert_eq!(s.take_lag("ping", 8), None);
    }
}
