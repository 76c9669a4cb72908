//! The traceroute engine: for every target, on its interval, probes TTLs
//! 1.. with UDP datagrams or ICMP echo requests and reports the hops (TTL,
//! responding address, RTTs), whether the destination was reached, and a
//! hash of the path.
//!
//! - Paris-style: every probe of one trace uses the same flow identifiers
//!   (one socket per trace: same addresses, ports or ICMP identifier, and a
//!   constant ICMP checksum), so per-flow ECMP keeps all probes on one path
//!   and load balancing does not invent path changes. Probes are told apart
//!   by a probe id the network layer puts where the answer quotes it.
//! - TTLs are probed concurrently, [`TTL_WINDOW`] at a time with all their
//!   probes; a round ends when every probe answered or the timeout passed.
//!   The trace stops at the first TTL with a final answer (the destination,
//!   or an unreachable from a router), so a near destination costs one round.
//! - The path hash covers, per TTL up to the end, the sorted set of
//!   responding addresses (`*` for none): the same path gives the same hash
//!   run after run; a different router changes it.
//!
//! The sockets sit behind [`Tracer`], so the logic is tested on tokio's
//! paused clock.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sonde_proto::v1::{Record, TraceHop, TraceResult, record};
use sonde_runtime::probes::TraceMethod;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::emit::Emitter;
use super::tasks::{self, Limits};

/// TTLs probed at once.
pub const TTL_WINDOW: u8 = 8;
/// Traces running at once at most.
pub const MAX_TRACES: usize = 64;

/// One address to trace, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceTarget {
    pub label: Arc<str>,
    pub addr: IpAddr,
    pub method: TraceMethod,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_hops: u8,
    pub probes_per_hop: u8,
    pub port: u16,
}

/// An answer to one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The probe id given to [`TraceSocket::send`].
    pub id: u16,
    /// Who answered.
    pub from: IpAddr,
    /// Receive time (kernel timestamp where available).
    pub rx_unix_nanos: i64,
    /// A final answer (echo reply, or destination/port unreachable) rather
    /// than time exceeded.
    pub last: bool,
}

/// Opens one socket per trace.
pub trait Tracer: Send + Sync + 'static {
    type Socket: TraceSocket;
    fn open(&self, target: &TraceTarget) -> io::Result<Self::Socket>;
    /// Wall-clock now, nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> i64;
}

/// The socket of one trace: every probe it sends has the same flow
/// identifiers.
pub trait TraceSocket: Send + 'static {
    /// Sends probe `id` with `ttl`; returns the send time (wall clock, ns).
    fn send(&mut self, ttl: u8, id: u16) -> io::Result<i64>;
    /// The next answer to one of this socket's probes.
    fn recv(&mut self) -> impl Future<Output = io::Result<Answer>> + Send;
}

#[derive(Debug, Default)]
struct Hop {
    sent: u32,
    answers: Vec<(IpAddr, u64)>,
    last: Option<IpAddr>,
}

/// FNV-1a, 64 bit: stable across builds and versions (unlike std's hasher).
struct Fnv(u64);
impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The hash of a path: per TTL, the sorted responding addresses or `*`.
pub fn path_hash<'a>(hops: impl IntoIterator<Item = &'a BTreeSet<IpAddr>>) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for set in hops {
        if set.is_empty() {
            h.write(b"*");
        }
        for a in set {
            match a {
                IpAddr::V4(v4) => h.write(&v4.octets()),
                IpAddr::V6(v6) => h.write(&v6.octets()),
            }
            h.write(b",");
        }
        h.write(b";");
    }
    h.0
}

fn method_of(m: TraceMethod) -> sonde_proto::v1::TraceMethod {
    match m {
        TraceMethod::Udp => sonde_proto::v1::TraceMethod::Udp,
        TraceMethod::Icmp => sonde_proto::v1::TraceMethod::Icmp,
    }
}

/// A trace that could not run (`address` empty when it did not resolve).
pub fn failed(
    label: &str,
    address: &str,
    method: TraceMethod,
    started_ns: i64,
    error: String,
) -> Record {
    Record {
        kind: Some(record::Kind::Trace(TraceResult {
            target: label.to_owned(),
            address: address.to_owned(),
            method: method_of(method) as i32,
            started_unix_nanos: started_ns,
            error,
            ..TraceResult::default()
        })),
    }
}

/// Traces `target` once.
pub async fn trace<T: Tracer>(tracer: &T, target: &TraceTarget) -> Record {
    let started_ns = tracer.now_unix_nanos();
    let fail = |error: String| {
        let addr = target.addr.to_string();
        failed(&target.label, &addr, target.method, started_ns, error)
    };
    let mut socket = match tracer.open(target) {
        Ok(s) => s,
        Err(e) => return fail(format!("opening the probe socket: {e}")),
    };
    let per_hop = u16::from(target.probes_per_hop.max(1));
    let mut hops: Vec<Hop> = (0..target.max_hops).map(|_| Hop::default()).collect();
    let mut sent: HashMap<u16, (u8, i64)> = HashMap::new();
    let mut end: Option<u8> = None; // lowest TTL with a final answer
    let mut lo = 1u8;
    while lo <= target.max_hops && end.is_none() {
        let hi = lo.saturating_add(TTL_WINDOW - 1).min(target.max_hops);
        // Answers to earlier rounds come after their timeout: ignored.
        sent.clear();
        let mut waiting = 0usize;
        for ttl in lo..=hi {
            for k in 0..per_hop {
                let id = (u16::from(ttl) - 1) * per_hop + k;
                match socket.send(ttl, id) {
                    Ok(at) => {
                        sent.insert(id, (ttl, at));
                        hops[usize::from(ttl - 1)].sent += 1;
                        waiting += 1;
                    }
                    Err(e) if ttl == 1 && k == 0 => {
                        return fail(format!("sending: {e}"));
                    }
                    Err(e) => tracing::debug!(error = %e, ttl, "trace probe not sent"),
                }
            }
        }
        let deadline = Instant::now() + target.timeout;
        while waiting > 0 {
            let answer = tokio::select! {
                () = sleep_until(deadline) => break,
                a = socket.recv() => a,
            };
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    // Not a transient condition (those are retried inside
                    // the socket): end this round rather than spin.
                    tracing::debug!(error = %e, "trace receive failed");
                    break;
                }
            };
            // Only answers to this round's probes, once each.
            let Some((ttl, at)) = sent.remove(&answer.id) else {
                continue;
            };
            waiting -= 1;
            let hop = &mut hops[usize::from(ttl - 1)];
            let rtt = u64::try_from(answer.rx_unix_nanos - at).unwrap_or(0);
            hop.answers.push((answer.from, rtt));
            if answer.last {
                hop.last = Some(answer.from);
                end = Some(end.map_or(ttl, |e| e.min(ttl)));
            }
            // Reached the end and every probe up to it answered: done.
            if let Some(e) = end
                && !sent.values().any(|(t, _)| *t <= e)
            {
                break;
            }
        }
        lo = hi.saturating_add(1);
    }
    let last_ttl = end.unwrap_or(target.max_hops);
    let hops = &hops[..usize::from(last_ttl)];
    let sets: Vec<BTreeSet<IpAddr>> = hops
        .iter()
        .map(|h| h.answers.iter().map(|(a, _)| *a).collect())
        .collect();
    let reached = end.is_some_and(|e| hops[usize::from(e - 1)].last == Some(target.addr));
    Record {
        kind: Some(record::Kind::Trace(TraceResult {
            target: target.label.to_string(),
            address: target.addr.to_string(),
            method: method_of(target.method) as i32,
            started_unix_nanos: started_ns,
            hops: hops
                .iter()
                .zip(1u32..)
                .map(|(h, ttl)| TraceHop {
                    ttl,
                    // Several responders at one TTL (per-packet balancing):
                    // the most frequent is shown, all are in the hash.
                    address: most_frequent(&h.answers).map_or_else(String::new, |a| a.to_string()),
                    rtt_nanos: h.answers.iter().map(|(_, r)| *r).collect(),
                    probes: h.sent,
                })
                .collect(),
            reached,
            path_hash: path_hash(&sets),
            error: String::new(),
        })),
    }
}

fn most_frequent(answers: &[(IpAddr, u64)]) -> Option<IpAddr> {
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for (a, _) in answers {
        *counts.entry(*a).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(a, n)| (*n, std::cmp::Reverse(*a)))
        .map(|(a, _)| a)
}

/// Runs until `shutdown`, tracing the targets in `targets` (a new value
/// replaces the set at once) and sending results to `emit`. A trace still
/// running when its next slot comes is not started twice (counted as lag).
pub async fn run<T: Tracer>(
    tracer: T,
    targets: watch::Receiver<Arc<Vec<TraceTarget>>>,
    emit: Emitter,
    shutdown: CancellationToken,
) {
    tasks::run(
        Limits {
            probe: "trace",
            max_in_flight: MAX_TRACES,
            one_per_target: true,
        },
        tracer,
        targets,
        |t| t.interval,
        |tracer, t| async move { trace(&*tracer, &t).await },
        T::now_unix_nanos,
        emit,
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests;
