//! What reached the collector, read from its ingest log, for the tests that
//! prove a result arrives exactly once: synthetic pings numbered by their
//! target (`r0`, `r1`, ...) go in, and the log is counted per target.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message as _;
use sonde_collector::store::Store;
use sonde_proto::v1::{PingResult, PingStatus, Record, ResultBatch, TcpStatus, record};

use crate::World;

pub const SECOND: i64 = 1_000_000_000;

/// Ping result number `i` (target `r{i}`), `pad` bytes of error text to
/// make it bigger.
pub fn ping(i: usize, pad: usize) -> Record {
    Record {
        kind: Some(record::Kind::Ping(PingResult {
            target: format!("r{i}"),
            address: "127.0.0.1".into(),
            sent_unix_nanos: i64::try_from(i).expect("small"),
            rtt_nanos: 1000,
            status: PingStatus::Ok as i32,
            error: "p".repeat(pad),
            reply_ttl: 64,
        })),
    }
}

/// What the collector's ingest log holds: results per target, gap total,
/// and the `(spool_id, batch_seq)` list.
#[derive(Debug)]
pub struct Delivered {
    pub per_target: HashMap<String, usize>,
    pub gap_dropped: u64,
    pub batches: Vec<(u64, u64)>,
}

/// Reads the ingest log of the world's collector (running or not).
pub fn delivered(world: &World) -> Delivered {
    let store = Store::open_dir(&world.dir().join("collector-state")).expect("collector store");
    let mut d = Delivered {
        per_target: HashMap::new(),
        gap_dropped: 0,
        batches: Vec::new(),
    };
    for b in sonde_collector::log::SqliteLog::new(store.clone())
        .batches_after(0, 1_000_000)
        .expect("ingest log")
    {
        d.batches.push((b.spool_id, b.batch_seq));
        for r in ResultBatch::decode(b.payload.as_slice())
            .expect("logged batch")
            .records
        {
            match r.kind {
                Some(record::Kind::Ping(p)) => *d.per_target.entry(p.target).or_default() += 1,
                Some(record::Kind::Gap(g)) => d.gap_dropped += g.dropped,
                _ => {}
            }
        }
    }
    d
}

/// Every one of `n` results once, no batch twice.
pub fn assert_exactly_once(d: &Delivered, n: usize) {
    let dup: Vec<_> = d
        .per_target
        .iter()
        .filter(|(_, c)| **c > 1)
        .take(5)
        .collect();
    assert!(dup.is_empty(), "duplicated results: {dup:?}");
    let mut seqs = d.batches.clone();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), d.batches.len(), "a batch was stored twice");
    assert_eq!(d.per_target.len(), n, "results delivered");
}

/// Real pings (by address) and TCP connects (by `address:port`) in the
/// ingest log: send times per target (sorted), how many
/// (address, send time) pairs came more than once, how many did not answer,
/// and the results the gap records say were dropped.
#[derive(Debug, Default)]
pub struct ProbeTimes {
    pub per: BTreeMap<String, Vec<i64>>,
    pub repeats: usize,
    pub failed: usize,
    pub gap_dropped: u64,
}

pub fn probe_times(world: &World) -> ProbeTimes {
    let store = Store::open_dir(&world.dir().join("collector-state")).expect("collector store");
    let mut t = ProbeTimes::default();
    let mut seen = HashSet::new();
    for b in sonde_collector::log::SqliteLog::new(store.clone())
        .batches_after(0, 10_000_000)
        .expect("ingest log")
    {
        for r in ResultBatch::decode(b.payload.as_slice())
            .expect("logged batch")
            .records
        {
            match r.kind {
                Some(record::Kind::Ping(p)) => {
                    if p.status() != PingStatus::Ok {
                        t.failed += 1;
                    }
                    if !seen.insert((p.address.clone(), p.sent_unix_nanos)) {
                        t.repeats += 1;
                    }
                    t.per.entry(p.address).or_default().push(p.sent_unix_nanos);
                }
                Some(record::Kind::Tcp(c)) => {
                    if c.status() != TcpStatus::Ok {
                        t.failed += 1;
                    }
                    let key = format!("{}:{}", c.address, c.port);
                    if !seen.insert((key.clone(), c.sent_unix_nanos)) {
                        t.repeats += 1;
                    }
                    t.per.entry(key).or_default().push(c.sent_unix_nanos);
                }
                Some(record::Kind::Gap(g)) => t.gap_dropped += g.dropped,
                _ => {}
            }
        }
    }
    for v in t.per.values_mut() {
        v.sort_unstable();
    }
    t
}

/// Every target has results from `from` to `to`, one interval apart (no
/// hole, no repeat).
pub fn contiguous(per: &BTreeMap<String, Vec<i64>>, from: i64, to: i64) -> Result<(), String> {
    for (addr, times) in per {
        let inside: Vec<i64> = times
            .iter()
            .copied()
            .filter(|t| (from..=to).contains(t))
            .collect();
        let first = *inside.first().ok_or(format!("{addr}: nothing in window"))?;
        let last = *inside.last().expect("non-empty");
        if first - from > SECOND * 3 / 2 || to - last > SECOND * 3 / 2 {
            return Err(format!("{addr}: window not covered ({first}..{last})"));
        }
        for w in inside.windows(2) {
            let d = w[1] - w[0];
            // A hole is a gap of two intervals and a repeat one of ~0; a
            // loaded machine (CI) delays single probes by tens of ms
            // (scheduler lag, reported by the agent), which is neither.
            if !(SECOND / 2..=SECOND * 3 / 2).contains(&d) {
                return Err(format!("{addr}: {d} ns between two results"));
            }
        }
    }
    Ok(())
}
