//! Route-change detection from traceroute path hashes.
//!
//! The agent hashes the responding addresses of a trace in TTL order
//! (Paris-style constant flow, so ECMP does not invent changes). The first
//! usable trace of a series sets its path. A trace with another hash
//! starts a candidate; when `confirm` consecutive traces (default 2) agree
//! on the candidate, the route changed: one event with the old and new hop
//! lists, the time of the first trace that showed the new path, and the
//! candidate becomes the path. A different hash that does not persist
//! (a one-off detour, a lost reply) is dropped without an event. Traces
//! that failed (an error, no hops) say nothing about the route.

use sonde_proto::v1::TraceResult;

/// A path: its hash and the hop addresses (`*` for a silent hop).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Path {
    pub hash: u64,
    pub hops: Vec<String>,
    /// When it was first seen (trace start, ns).
    pub since_ns: i64,
}

impl Path {
    pub fn of(t: &TraceResult) -> Option<Self> {
        if !t.error.is_empty() || t.hops.is_empty() {
            return None;
        }
        Some(Self {
            hash: t.path_hash,
            hops: t
                .hops
                .iter()
                .map(|h| {
                    if h.address.is_empty() {
                        "*".to_owned()
                    } else {
                        h.address.clone()
                    }
                })
                .collect(),
            since_ns: t.started_unix_nanos,
        })
    }
}

/// A confirmed change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteChange {
    pub old: Path,
    pub new: Path,
}

/// Detector state for one series: boxed, as only traced series (a few)
/// have one, and every series carries the field (8 bytes, not 88).
#[derive(Debug, Clone, Default)]
pub struct Detector(Option<Box<State>>);

#[derive(Debug, Clone, Default)]
struct State {
    path: Option<Path>,
    candidate: Option<(Path, u32)>,
}

impl Detector {
    /// Continues from a path known before a restart.
    pub fn resume(path: Option<Path>) -> Self {
        Self(path.map(|path| {
            Box::new(State {
                path: Some(path),
                candidate: None,
            })
        }))
    }

    pub fn path(&self) -> Option<&Path> {
        self.0.as_ref()?.path.as_ref()
    }

    /// Feeds one trace; `confirm` traces must agree on a new path.
    pub fn observe(&mut self, confirm: u32, trace: &TraceResult) -> Option<RouteChange> {
        let seen = Path::of(trace)?;
        self.0.get_or_insert_default().observe(confirm, seen)
    }
}

impl State {
    fn observe(&mut self, confirm: u32, seen: Path) -> Option<RouteChange> {
        let Some(current) = &self.path else {
            self.path = Some(seen);
            return None;
        };
        if seen.hash == current.hash {
            self.candidate = None;
            return None;
        }
        let count = match &mut self.candidate {
            Some((c, n)) if c.hash == seen.hash => {
                *n += 1;
                *n
            }
            _ => {
                self.candidate = Some((seen, 1));
                1
            }
        };
        if count < confirm.max(1) {
            return None;
        }
        let (new, _) = self.candidate.take()?;
        let old = self.path.replace(new.clone())?;
        Some(RouteChange { old, new })
    }
}

/// A reached trace over `hops` (empty address: silent hop), for tests.
#[cfg(test)]
pub(crate) fn test_trace(t: i64, hops: &[&str], hash: u64) -> TraceResult {
    TraceResult {
        target: "10.9.0.1".into(),
        address: "10.9.0.1".into(),
        started_unix_nanos: t,
        hops: hops
            .iter()
            .zip(1..)
            .map(|(a, ttl)| sonde_proto::v1::TraceHop {
                ttl,
                address: (*a).to_owned(),
                rtt_nanos: vec![1_000_000],
                probes: 1,
            })
            .collect(),
        reached: true,
        path_hash: hash,
        ..TraceResult::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(t: i64, hops: &[&str]) -> TraceResult {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        hops.hash(&mut h);
        test_trace(t, hops, h.finish())
    }

    #[test]
    fn a_change_must_persist() {
        let a = ["10.0.0.1", "10.0.1.1", "10.9.0.1"];
        let b = ["10.0.0.1", "10.0.2.1", "10.9.0.1"];
        let c = ["10.0.0.1", "", "10.9.0.1"];
        let mut d = Detector::default();
        assert_eq!(d.observe(2, &trace(1, &a)), None);
        assert_eq!(d.observe(2, &trace(2, &a)), None);
        // A one-off detour: no event.
        assert_eq!(d.observe(2, &trace(3, &b)), None);
        assert_eq!(d.observe(2, &trace(4, &a)), None);
        // A failed trace says nothing.
        let mut failed = trace(5, &b);
        failed.error = "permission denied".into();
        assert_eq!(d.observe(2, &failed), None);
        // Two in a row: changed, dated from the first.
        assert_eq!(d.observe(2, &trace(6, &b)), None);
        let change = d.observe(2, &trace(7, &b)).expect("route change");
        assert_eq!(change.old.hops, a);
        assert_eq!(change.new.hops, b);
        assert_eq!((change.old.since_ns, change.new.since_ns), (1, 6));
        assert_eq!(d.path().unwrap().hash, change.new.hash);
        // Silent hops are '*'; with confirm = 1 the first trace decides.
        let change = d.observe(1, &trace(8, &c)).expect("route change");
        assert_eq!(change.new.hops, ["10.0.0.1", "*", "10.9.0.1"]);
    }
}
