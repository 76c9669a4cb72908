//! The state the collector keeps per series (agent, probe kind, target),
//! and the moving averages and minute timeline computed from it.
//!
//! ## Definitions
//!
//! - A probe is **lost** when it was not answered (timeout, unreachable,
//!   refused, send or resolve error). Lost probes count in the loss %
//!   (lost ÷ sent) and never in latency figures, which are over answered
//!   probes only.
//! - Probes are placed in time by their **send time** on the agent.
//! - **Windows are trailing wall-clock windows at minute resolution**: at
//!   time *t*, let *m* be the start of *t*'s minute. The 1 min, 5 min and
//!   1 h windows hold every result sent in `[m − W, t]` — the current,
//!   partial minute and the W ÷ 1 min whole minutes before it (so the
//!   1 min window spans 60–120 s and never starts empty at a minute
//!   boundary). The 24 h window works the same way in hours: `[h − 24 h, t]`
//!   with *h* the start of *t*'s hour.
//! - **Latest** is the most recently sent probe: its RTT, or lost.
//! - **Jitter** is the standard deviation of the answered RTTs in a window.
//! - The **minute timeline** is the 60 minutes `m − 59 min … m`; a minute
//!   without a single result is `no_data` (the agent was missing, or not
//!   probing), never a zero.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::bucket::{Bucket, Ring};
use super::{outage, route};
use crate::observation::{Observation, Probe};

pub const MINUTE_NS: i64 = 60_000_000_000;
pub const HOUR_NS: i64 = 60 * MINUTE_NS;
/// Minutes held in memory: the timeline's 60 and the one before (for the
/// 1 h window's whole minutes).
pub const MINUTES_KEPT: usize = 61;
/// Hours held in memory: the 24 h window's whole hours and the current.
pub const HOURS_KEPT: usize = 25;

/// The minutes a series keeps in memory.
pub type MinuteRing = Ring<MINUTE_NS, MINUTES_KEPT>;
/// The hours a series keeps in memory.
pub type HourRing = Ring<HOUR_NS, HOURS_KEPT>;

/// Which series a result belongs to. The names are shared (`Arc<str>`):
/// a tenant's and an agent's with each of their series, a target's with
/// every agent probing it (the book interns them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    pub tenant: Arc<str>,
    pub agent: Arc<str>,
    pub probe: Probe,
    pub target: Arc<str>,
}

/// The most recent probe of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    pub time_ns: i64,
    pub rtt_ms: Option<f64>,
    pub status: &'static str,
}

/// One series' live state.
#[derive(Debug, Clone)]
pub struct Series {
    pub id: i64,
    pub key: SeriesKey,
    pub address: Option<IpAddr>,
    pub latest: Option<Latest>,
    pub minutes: MinuteRing,
    pub hours: HourRing,
    pub outage: outage::Detector,
    pub route: route::Detector,
}

/// Mean, loss and jitter over one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub mean_ms: Option<f64>,
    pub loss_pct: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub probes: u32,
}

impl From<Bucket> for Window {
    fn from(b: Bucket) -> Self {
        Self {
            mean_ms: b.mean_ms(),
            loss_pct: b.loss_pct(),
            jitter_ms: b.stddev_ms(),
            probes: b.probes,
        }
    }
}

/// The moving averages of a series at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Averages {
    pub latest: Option<Latest>,
    #[serde(rename = "1m")]
    pub m1: Window,
    #[serde(rename = "5m")]
    pub m5: Window,
    #[serde(rename = "1h")]
    pub h1: Window,
    #[serde(rename = "24h")]
    pub h24: Window,
}

/// One minute of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Minute {
    /// Start of the minute, Unix ms.
    pub start_ms: i64,
    pub probes: u32,
    pub mean_ms: Option<f64>,
    pub loss_pct: Option<f64>,
    /// No result at all in this minute.
    pub no_data: bool,
}

impl Minute {
    /// The timeline entry of minute `unit` (minutes since the epoch).
    pub fn of(unit: i64, b: &Bucket) -> Self {
        Self {
            start_ms: unit * (MINUTE_NS / 1_000_000),
            probes: b.probes,
            mean_ms: b.mean_ms(),
            loss_pct: b.loss_pct(),
            no_data: b.probes == 0,
        }
    }
}

impl Series {
    pub fn new(id: i64, key: SeriesKey, address: Option<IpAddr>) -> Self {
        Self {
            id,
            key,
            address,
            latest: None,
            minutes: MinuteRing::new(),
            hours: HourRing::new(),
            outage: outage::Detector::default(),
            route: route::Detector::default(),
        }
    }

    /// Records one result in the rings and as latest (when newest); the
    /// book keeps the address (it indexes it).
    pub fn record(&mut self, o: &Observation<'_>) {
        let mut one = Bucket::default();
        one.add(o.rtt_ms);
        self.minutes.merge(self.minutes.unit(o.time_ns), &one);
        self.hours.merge(self.hours.unit(o.time_ns), &one);
        if self.latest.as_ref().is_none_or(|l| l.time_ns <= o.time_ns) {
            self.latest = Some(Latest {
                time_ns: o.time_ns,
                rtt_ms: o.rtt_ms,
                status: o.status,
            });
        }
    }

    /// The moving averages at `now_ns` (see the module docs).
    pub fn averages(&self, now_ns: i64) -> Averages {
        let m = self.minutes.unit(now_ns);
        let h = self.hours.unit(now_ns);
        Averages {
            latest: self.latest.clone(),
            m1: self.minutes.sum(m - 1, m).into(),
            m5: self.minutes.sum(m - 5, m).into(),
            h1: self.minutes.sum(m - 60, m).into(),
            h24: self.hours.sum(h - 24, h).into(),
        }
    }

    /// The 60-minute timeline ending with the minute of `now_ns`.
    pub fn timeline(&self, now_ns: i64) -> Vec<Minute> {
        let m = self.minutes.unit(now_ns);
        (m - 59..=m)
            .map(|unit| Minute::of(unit, &self.minutes.get(unit)))
            .collect()
    }
}

/// Changes to persist at the next checkpoint: bucket deltas per (series,
/// unit), merged additively into the stored buckets.
#[derive(Debug, Default)]
pub struct Deltas {
    pub minutes: HashMap<(i64, i64), Bucket>,
    pub hours: HashMap<(i64, i64), Bucket>,
    /// Series created since the last checkpoint.
    pub created: Vec<i64>,
    /// Series whose latest / outage / route state changed.
    pub touched: std::collections::HashSet<i64>,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty() && self.created.is_empty() && self.touched.is_empty()
    }

    pub fn record(&mut self, id: i64, o: &Observation<'_>) {
        let mut one = Bucket::default();
        one.add(o.rtt_ms);
        self.minutes
            .entry((id, o.time_ns.div_euclid(MINUTE_NS)))
            .or_default()
            .merge(&one);
        self.hours
            .entry((id, o.time_ns.div_euclid(HOUR_NS)))
            .or_default()
            .merge(&one);
        self.touched.insert(id);
    }
}
