//! Grid frames: every prefix a caller may see, as parallel arrays of cell
//! states, RTTs and losses — what the web UI paints. The live stream
//! (`GET /api/v1/live`, server-sent events) sends one per second, only the
//! prefixes that changed; replay (`GET /api/v1/replay?at=`) gives the
//! frame of one past minute from the minute aggregates.
//!
//! A frame is deliberately flat and small: 40 grids of 256 cells refresh
//! in about 100 kB, and the browser updates a cell only when its colour
//! class changes.
//!
//! ```json
//! {"prefix": "10.82.0.0/24",
//!  "s": [0, 1, 3, …],          // per cell: 0 not monitored, 1 up,
//!                              // 2 partial, 3 down, 4 stale / no data
//!  "r": [null, 0.041, null, …], // latest RTT (live) or minute mean (replay), ms
//!  "l": [null, 0, 100, …]}      // loss % over the last minute (live) or that minute
//! ```
//!
//! IPv4 /24s have 256 cells by host number; an IPv6 /64 lists its
//! monitored addresses in `"a"` with the arrays in the same order.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::consumers::analysis::bucket::Bucket;
use crate::consumers::analysis::series::{MINUTE_NS, MINUTES_KEPT, Series};
use crate::consumers::analysis::{Book, persist};
use crate::observation::prefix_of;
use crate::read::access::Access;
use crate::read::query::{self, State};
use crate::store::{Store, StoreError};

/// A cell's state code.
pub mod code {
    pub const NONE: u8 = 0;
    pub const UP: u8 = 1;
    pub const PARTIAL: u8 = 2;
    pub const DOWN: u8 = 3;
    pub const STALE: u8 = 4;
}

/// One prefix of a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefixFrame {
    pub prefix: String,
    /// IPv6 only: the addresses of the cells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Vec<String>>,
    pub s: Vec<u8>,
    pub r: Vec<Option<f64>>,
    pub l: Vec<Option<f64>>,
}

/// Visible series grouped by prefix and address, with every granted /24
/// (/64) present even before it has data.
fn by_prefix<'a>(
    book: &'a Book,
    access: &Access,
) -> BTreeMap<IpNet, BTreeMap<IpAddr, Vec<&'a Series>>> {
    let mut out: BTreeMap<IpNet, BTreeMap<IpAddr, Vec<&Series>>> = BTreeMap::new();
    for s in book.iter().filter(|s| access.sees_series(s)) {
        if let Some(a) = s.address {
            out.entry(prefix_of(a))
                .or_default()
                .entry(a)
                .or_default()
                .push(s);
        }
    }
    for p in query::granted_units(access) {
        out.entry(p).or_default();
    }
    out
}

/// Builds the frame of one prefix from a per-address cell function.
fn frame_of(
    prefix: IpNet,
    addrs: &BTreeMap<IpAddr, Vec<&Series>>,
    mut cell: impl FnMut(&[&Series]) -> (u8, Option<f64>, Option<f64>),
) -> PrefixFrame {
    let (list, order): (Option<Vec<String>>, Vec<IpAddr>) = match prefix {
        IpNet::V4(p) => (
            None,
            (0u8..=255)
                .map(|last| {
                    let mut o = p.network().octets();
                    o[3] = last;
                    IpAddr::from(o)
                })
                .collect(),
        ),
        IpNet::V6(_) => {
            let order: Vec<IpAddr> = addrs.keys().copied().collect();
            (Some(order.iter().map(ToString::to_string).collect()), order)
        }
    };
    let mut f = PrefixFrame {
        prefix: prefix.to_string(),
        a: list,
        s: Vec::with_capacity(order.len()),
        r: Vec::with_capacity(order.len()),
        l: Vec::with_capacity(order.len()),
    };
    for a in order {
        let (s, r, l) = match addrs.get(&a) {
            Some(series) if !series.is_empty() => cell(series),
            _ => (code::NONE, None, None),
        };
        f.s.push(s);
        f.r.push(query::round_us(r));
        f.l.push(query::round_us(l));
    }
    f
}

/// The state code of an address from its series' states.
fn live_code(states: &[State]) -> u8 {
    match query::cell_state(states) {
        "down" => code::DOWN,
        "partial" => code::PARTIAL,
        "stale" => code::STALE,
        _ => code::UP,
    }
}

/// The live frame: latest RTT, loss over the current and previous minute.
pub fn live(book: &Book, access: &Access, now_ns: i64) -> Vec<PrefixFrame> {
    let m = now_ns.div_euclid(MINUTE_NS);
    by_prefix(book, access)
        .into_iter()
        .map(|(prefix, addrs)| {
            frame_of(prefix, &addrs, |series| {
                let states: Vec<State> = series.iter().map(|s| query::state(s, now_ns)).collect();
                let merged = query::describing(series);
                let mut minute = Bucket::default();
                for s in &merged {
                    minute.merge(&s.minutes.get(m - 1));
                    minute.merge(&s.minutes.get(m));
                }
                let rtt = merged
                    .iter()
                    .filter_map(|s| s.latest.as_ref())
                    .max_by_key(|l| l.time_ns)
                    .and_then(|l| l.rtt_ms);
                (live_code(&states), rtt, minute.loss_pct())
            })
        })
        .collect()
}

/// The state code of one minute's merged bucket.
fn minute_code(b: &Bucket, all_lost: bool, some_lost: bool) -> u8 {
    if b.probes == 0 {
        code::STALE
    } else if all_lost {
        code::DOWN
    } else if some_lost {
        code::PARTIAL
    } else {
        code::UP
    }
}

/// The frame of minute `unit` (minutes since the epoch): each address'
/// mean and loss in that minute; `down` when every series measuring it
/// lost everything, `partial` when some did. The last hour comes from the
/// analysis' memory, older minutes from the stored aggregates.
pub fn replay(
    analysis: &crate::consumers::analysis::Handle,
    store: &Store,
    access: &Access,
    unit: i64,
    now_ns: i64,
) -> Result<Vec<PrefixFrame>, StoreError> {
    let recent = now_ns.div_euclid(MINUTE_NS) - unit < i64::try_from(MINUTES_KEPT).unwrap_or(0) - 1;
    // Read the store before taking the analysis' lock, so a slow read
    // never holds up its writer.
    let stored: BTreeMap<i64, Bucket> = if recent {
        BTreeMap::new()
    } else {
        store.with_read(|c| persist::minute_of_all(c, unit))?
    };
    let book = analysis.read();
    let bucket = |s: &Series| {
        if recent {
            s.minutes.get(unit)
        } else {
            stored.get(&s.id).copied().unwrap_or_default()
        }
    };
    Ok(by_prefix(&book, access)
        .into_iter()
        .map(|(prefix, addrs)| {
            frame_of(prefix, &addrs, |series| {
                let mut merged = Bucket::default();
                let (mut measured, mut lost_all) = (0, 0);
                for s in query::describing(series) {
                    let b = bucket(s);
                    if b.probes > 0 {
                        measured += 1;
                        lost_all += usize::from(b.lost == b.probes);
                    }
                    merged.merge(&b);
                }
                let code = minute_code(&merged, measured > 0 && lost_all == measured, lost_all > 0);
                (code, merged.mean_ms(), merged.loss_pct())
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_codes() {
        let b = |probes, lost| Bucket {
            probes,
            lost,
            ..Bucket::default()
        };
        assert_eq!(minute_code(&b(0, 0), false, false), code::STALE);
        assert_eq!(minute_code(&b(60, 60), true, true), code::DOWN);
        assert_eq!(minute_code(&b(120, 60), false, true), code::PARTIAL);
        assert_eq!(minute_code(&b(60, 1), false, false), code::UP);
    }
}
