//! The agent's time for what it reports: the system clock, unless that
//! clock steps or disagrees with the collector's.
//!
//! A step of the system clock (a bad NTP server, `date -s`) would
//! otherwise misdate and reorder results: a jump back an hour files new
//! results an hour in the past, behind the ones before. So the agent
//! watches the system clock against the monotonic clock: a step of more
//! than a second is taken out (an offset), and times go on from where the
//! monotonic clock says they are. (A machine resumed from suspend looks
//! the same, since the monotonic clock stops while suspended: its times
//! run behind by the suspension until the next session's `Welcome`
//! corrects them, below.) And at the start of every session the
//! collector's `Welcome` carries its time: when the agent's time is more
//! than a second away from it (half the round trip taken into account), the
//! agent takes the collector's, so that every agent's results share the
//! collector's timebase, which correlating an outage across agents needs.
//! Smaller differences are left alone: an NTP-disciplined clock is better
//! than a round-trip estimate.
//!
//! Probes keep measuring round-trip times with the system clock (kernel
//! receive timestamps are system-clock times); only the times they report
//! are moved, as they leave the probe engine ([`restamp`]).

use std::sync::{Mutex, OnceLock, PoisonError};

use sonde_proto::v1::{Record, record};
use tokio::time::Instant;

/// Steps and disagreements smaller than this are left alone.
const STEP_NS: i64 = 1_000_000_000;

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The agent's clock: the system clock plus an offset.
#[derive(Debug)]
pub struct Clock {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Agent time minus system time.
    offset: i64,
    /// The last reading of the system clock, and when (monotonic).
    system: i64,
    at: Instant,
}

/// What one look at the clocks gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Agent time minus system time, after this look.
    pub offset: i64,
    /// A step of the system clock taken out by this look (ns).
    pub stepped: Option<i64>,
}

impl Clock {
    /// A clock that reads as the system clock (`system_ns` at `at`).
    pub fn new(system_ns: i64, at: Instant) -> Self {
        Self {
            state: Mutex::new(State {
                offset: 0,
                system: system_ns,
                at,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at the system clock (`system_ns`, read at `at`): a step of
    /// more than a second since the last look goes into the offset.
    pub fn look(&self, system_ns: i64, at: Instant) -> Reading {
        let mut s = self.lock();
        let stepped = s.look(system_ns, at);
        Reading {
            offset: s.offset,
            stepped,
        }
    }

    /// Takes the collector's time `server_ns` (read half a round trip
    /// before `system_ns`, `at`) when the agent's is more than a second
    /// away from it; returns the correction made.
    pub fn sync(
        &self,
        server_ns: i64,
        round_trip: std::time::Duration,
        system_ns: i64,
        at: Instant,
    ) -> Option<i64> {
        let mut s = self.lock();
        s.look(system_ns, at);
        let ours = system_ns.saturating_add(s.offset);
        let theirs = server_ns.saturating_add(nanos(round_trip / 2));
        let off_by = theirs.saturating_sub(ours);
        (off_by.abs() > STEP_NS).then(|| {
            s.offset = s.offset.saturating_add(off_by);
            off_by
        })
    }
}

impl State {
    /// Takes a step of the system clock since the last look out of the
    /// offset; returns it.
    fn look(&mut self, system_ns: i64, at: Instant) -> Option<i64> {
        let expected = self
            .system
            .saturating_add(nanos(at.saturating_duration_since(self.at)));
        let step = system_ns.saturating_sub(expected);
        let stepped = (step.abs() > STEP_NS).then(|| {
            self.offset = self.offset.saturating_sub(step);
            step
        });
        self.system = system_ns;
        self.at = at;
        stepped
    }
}

fn global() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| Clock::new(sonde_runtime::clock::unix_nanos(), Instant::now()))
}

/// The system clock now and the agent's offset from it (one reading of
/// each clock); logs a step of the system clock.
fn read() -> (i64, i64) {
    let system = sonde_runtime::clock::unix_nanos();
    let r = global().look(system, Instant::now());
    if let Some(step) = r.stepped {
        tracing::warn!(
            step_ms = step / 1_000_000,
            "system clock stepped; the agent's times go on from the monotonic clock"
        );
    }
    (system, r.offset)
}

/// Agent time minus system time now.
pub fn offset() -> i64 {
    read().1
}

/// The agent's time (Unix ns) for batches, heartbeats and gaps.
pub fn now_ns() -> i64 {
    let (system, offset) = read();
    system.saturating_add(offset)
}

/// Takes the collector's time from a `Welcome` read `round_trip` after the
/// session was requested, when the two disagree by more than a second.
pub fn sync(server_ns: i64, round_trip: std::time::Duration) {
    let moved = global().sync(
        server_ns,
        round_trip,
        sonde_runtime::clock::unix_nanos(),
        Instant::now(),
    );
    if let Some(moved) = moved {
        tracing::warn!(
            moved_ms = moved / 1_000_000,
            "agent time set to the collector's: they disagreed by more than a second"
        );
    }
}

/// Moves every time `record` carries by `offset` (system → agent time).
pub fn restamp(record: &mut Record, offset: i64) {
    if offset == 0 {
        return;
    }
    let t = |v: &mut i64| *v = v.saturating_add(offset);
    match &mut record.kind {
        Some(record::Kind::Ping(p)) => t(&mut p.sent_unix_nanos),
        Some(record::Kind::Tcp(p)) => t(&mut p.sent_unix_nanos),
        Some(record::Kind::Trace(p)) => t(&mut p.started_unix_nanos),
        Some(record::Kind::Lag(p)) => t(&mut p.at_unix_nanos),
        Some(record::Kind::Gap(g)) => {
            t(&mut g.from_unix_nanos);
            t(&mut g.to_unix_nanos);
        }
        Some(record::Kind::PublicIp(p)) => t(&mut p.checked_unix_nanos),
        Some(record::Kind::Ports(p)) => t(&mut p.at_unix_nanos),
        Some(record::Kind::RemoteCheck(p)) => t(&mut p.started_unix_nanos),
        Some(record::Kind::Metrics(p)) => t(&mut p.at_unix_nanos),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_proto::v1::PingResult;
    use std::time::Duration;

    const S: i64 = 1_000_000_000;

    #[tokio::test(start_paused = true)]
    async fn a_system_clock_step_is_taken_out_and_drift_is_not() {
        let c = Clock::new(1_000 * S, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        // The system clock kept pace, give or take half a second: no step.
        let r = c.look(1_010 * S + S / 2, Instant::now());
        assert_eq!(
            r,
            Reading {
                offset: 0,
                stepped: None
            }
        );
        // It jumps back an hour: the agent's time goes on.
        tokio::time::advance(Duration::from_secs(5)).await;
        let r = c.look(1_015 * S + S / 2 - 3_600 * S, Instant::now());
        assert_eq!(r.stepped, Some(-3_600 * S));
        assert_eq!(1_015 * S + S / 2 - 3_600 * S + r.offset, 1_015 * S + S / 2);
        // Later looks keep the offset and see no new step.
        tokio::time::advance(Duration::from_secs(1)).await;
        let r = c.look(1_016 * S + S / 2 - 3_600 * S, Instant::now());
        assert_eq!(
            r,
            Reading {
                offset: 3_600 * S,
                stepped: None
            }
        );
        // Forward a day: taken out too.
        tokio::time::advance(Duration::from_secs(1)).await;
        let r = c.look(1_017 * S + S / 2 - 3_600 * S + 86_400 * S, Instant::now());
        assert_eq!(r.offset, 3_600 * S - 86_400 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn the_collector_time_wins_only_when_far_off() {
        let c = Clock::new(1_000 * S, Instant::now());
        // 300 ms apart (200 ms of it half the round trip): left alone.
        let rtt = Duration::from_millis(400);
        assert_eq!(
            c.sync(1_000 * S + S / 10, rtt, 1_000 * S, Instant::now()),
            None
        );
        assert_eq!(c.look(1_000 * S, Instant::now()).offset, 0);
        // The collector is 2 minutes ahead: taken.
        assert_eq!(
            c.sync(1_120 * S - S / 5, rtt, 1_000 * S, Instant::now()),
            Some(120 * S)
        );
        assert_eq!(c.look(1_000 * S, Instant::now()).offset, 120 * S);
    }

    #[test]
    fn restamp_moves_the_reported_time() {
        let mut r = Record {
            kind: Some(record::Kind::Ping(PingResult {
                sent_unix_nanos: 5 * S,
                rtt_nanos: 7,
                ..PingResult::default()
            })),
        };
        restamp(&mut r, -2 * S);
        let Some(record::Kind::Ping(p)) = r.kind else {
            panic!()
        };
        assert_eq!((p.sent_unix_nanos, p.rtt_nanos), (3 * S, 7));
    }
}
