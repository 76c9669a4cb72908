//! The ICMP echo engine: schedules echo requests for every target, matches
//! replies, and reports one `PingResult` per request.
//!
//! - Sends are spread evenly over each interval (target *i* of *n* starts at
//!   `i/n` of its interval), never in bursts.
//! - A request is identified by (address, sequence); sequences count per
//!   address, so they never collide across targets, and a reply arriving
//!   after its timeout finds nothing pending: it is counted as loss, never
//!   matched to a later probe.
//! - RTT is the reply's receive time (kernel timestamp where available,
//!   supplied by the [`Network`]) minus the send time taken right before
//!   the send call, so time spent waiting in our own scheduler is not RTT.
//! - If the engine falls behind its schedule, the late probes are counted
//!   and reported (see [`super::schedule`]) instead of showing up as
//!   inflated RTT or loss.
//!
//! Sockets live behind the [`Network`] seam, so this logic is tested with a
//! fake network on tokio's paused clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sonde_proto::v1::{PingResult, PingStatus, Record, record};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::emit::Emitter;
use super::schedule::{LAG_REPORT_EVERY, Schedule, idle_wake};

/// What the engine needs from the network.
pub trait Network: Send + Sync + 'static {
    /// Sends an echo request with sequence `seq` and `payload` to `addr`;
    /// returns the wall-clock send time, taken right before the send call.
    fn send(&self, addr: IpAddr, seq: u16, payload: &[u8]) -> std::io::Result<i64>;
    /// The next echo reply or ICMP error quoting one of our requests.
    fn recv(&self) -> impl Future<Output = std::io::Result<Reply>> + Send + '_;
    /// Wall-clock now, nanoseconds since the Unix epoch, on the same clock
    /// as [`Reply::rx_unix_nanos`].
    fn now_unix_nanos(&self) -> i64;
}

/// Something that came back for one of our requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The address the request was sent to.
    pub addr: IpAddr,
    pub seq: u16,
    pub kind: ReplyKind,
    /// When it was received (kernel timestamp where available).
    pub rx_unix_nanos: i64,
}

/// Echo reply or ICMP error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    Echo { ttl: u8 },
    Error { what: String },
}

/// One address to ping, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PingTarget {
    /// The target as configured (address, host name or range).
    pub label: Arc<str>,
    pub addr: IpAddr,
    pub interval: Duration,
    pub timeout: Duration,
    pub payload: usize,
}

#[derive(Debug)]
struct Pending {
    label: Arc<str>,
    sent_ns: i64,
    deadline: Instant,
}

struct Engine<'a, N: Network> {
    net: &'a N,
    emit: Emitter,
    targets: Arc<Vec<PingTarget>>,
    schedule: Schedule,
    pending: HashMap<(IpAddr, u16), Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, IpAddr, u16)>>,
    next_seq: HashMap<IpAddr, u16>,
    payload: Vec<u8>,
    late_replies: u64,
}

/// Runs until `shutdown`, pinging the targets in `targets` (a new value
/// replaces the set at once) and sending results to `emit`.
pub async fn run<N: Network>(
    net: N,
    mut targets: watch::Receiver<Arc<Vec<PingTarget>>>,
    emit: Emitter,
    shutdown: CancellationToken,
) {
    let initial = targets.borrow_and_update().clone();
    let mut engine = Engine::new(&net, emit);
    engine.set_targets(initial, Instant::now());
    let mut report = tokio::time::interval_at(Instant::now() + LAG_REPORT_EVERY, LAG_REPORT_EVERY);
    loop {
        let wake = engine.next_wake();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            reply = net.recv() => match reply {
                Ok(reply) => engine.on_reply(reply),
                Err(e) => {
                    tracing::warn!(error = %e, "ICMP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Ok(()) = targets.changed() => {
                let new = targets.borrow_and_update().clone();
                engine.set_targets(new, Instant::now());
            }
            () = sleep_until(wake) => engine.on_timer(Instant::now()),
            _ = report.tick() => engine.report_lag(),
        }
    }
    // Probes in flight get their reply or their timeout, for a moment; a
    // verdict forced earlier would be artificial loss. What is still pending
    // after that is dropped without a result (logged).
    let until = Instant::now() + SHUTDOWN_DRAIN;
    while !engine.pending.is_empty() && Instant::now() < until {
        let wake = engine.next_expiry().map_or(until, |t| t.min(until));
        tokio::select! {
            Ok(reply) = net.recv() => engine.on_reply(reply),
            () = sleep_until(wake) => engine.expire(Instant::now()),
        }
    }
    if !engine.pending.is_empty() {
        tracing::info!(
            probes = engine.pending.len(),
            "ICMP probes still in flight at shutdown; no result reported for them"
        );
    }
    engine.report_lag();
}

/// Pings each target once — sends 1 ms apart, never in a burst — and
/// reports every result, waiting out the timeouts (`probe-once`). Replies
/// are read while sending, and before any timeout is declared.
pub async fn once<N: Network>(net: &N, targets: &[PingTarget], emit: Emitter) {
    let mut engine = Engine::new(net, emit);
    engine.payload = payload_for(targets);
    let mut queue = targets.iter();
    let mut send_at = Some(Instant::now());
    while send_at.is_some() || !engine.pending.is_empty() {
        let expiry = engine.next_expiry().unwrap_or_else(idle_wake);
        tokio::select! {
            biased;
            Ok(reply) = net.recv() => engine.on_reply(reply),
            () = sleep_until(send_at.unwrap_or_else(idle_wake)), if send_at.is_some() => {
                match queue.next() {
                    Some(t) => {
                        engine.send(t, Instant::now());
                        send_at = Some(Instant::now() + Duration::from_millis(1));
                    }
                    None => send_at = None,
                }
            }
            () = sleep_until(expiry) => engine.expire(Instant::now()),
        }
    }
}

/// The payload bytes, as long as the largest any target asks for.
fn payload_for(targets: &[PingTarget]) -> Vec<u8> {
    let max_payload = targets.iter().map(|t| t.payload).max().unwrap_or(0);
    (0..max_payload)
        .map(|i| b"sonde-ping-payload"[i % 18])
        .collect()
}

/// How long shutdown waits for replies to probes in flight.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

impl<'a, N: Network> Engine<'a, N> {
    fn new(net: &'a N, emit: Emitter) -> Self {
        Engine {
            net,
            emit,
            targets: Arc::new(Vec::new()),
            schedule: Schedule::default(),
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_seq: HashMap::new(),
            payload: Vec::new(),
            late_replies: 0,
        }
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _, _))| *t)
    }

    fn set_targets(&mut self, targets: Arc<Vec<PingTarget>>, now: Instant) {
        self.schedule
            .set(targets.iter().map(|t| t.interval).collect(), now);
        self.payload = payload_for(&targets);
        tracing::info!(targets = targets.len(), "ICMP target set applied");
        self.targets = targets;
    }

    fn next_wake(&self) -> Instant {
        let send = self.schedule.next();
        let expire = self.next_expiry();
        match (send, expire) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => idle_wake(),
        }
    }

    fn on_timer(&mut self, now: Instant) {
        self.expire(now);
        while let Some(i) = self.schedule.pop_due(now) {
            let Some(target) = self.targets.get(i).cloned() else {
                continue;
            };
            self.send(&target, now);
        }
    }

    fn send(&mut self, target: &PingTarget, now: Instant) {
        let seq = self.next_seq.entry(target.addr).or_insert(0);
        *seq = seq.wrapping_add(1);
        let seq = *seq;
        let payload = &self.payload[..target.payload.min(self.payload.len())];
        match self.net.send(target.addr, seq, payload) {
            Ok(sent_ns) => {
                let deadline = now + target.timeout;
                let previous = self.pending.insert(
                    (target.addr, seq),
                    Pending {
                        label: target.label.clone(),
                        sent_ns,
                        deadline,
                    },
                );
                if let Some(p) = previous {
                    // 65,536 probes to one address inside one timeout.
                    self.result(
                        &p.label,
                        target.addr,
                        p.sent_ns,
                        PingStatus::Timeout,
                        0,
                        "sequence reused before timeout",
                        0,
                    );
                }
                self.deadlines.push(Reverse((deadline, target.addr, seq)));
            }
            Err(e) => {
                let label = target.label.clone();
                let now_ns = self.net.now_unix_nanos();
                self.result(
                    &label,
                    target.addr,
                    now_ns,
                    PingStatus::SendError,
                    0,
                    &e.to_string(),
                    0,
                );
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, addr, seq))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let still = self
                .pending
                .get(&(addr, seq))
                .is_some_and(|p| p.deadline == deadline);
            if still {
                let p = self.pending.remove(&(addr, seq)).expect("checked");
                self.result(&p.label, addr, p.sent_ns, PingStatus::Timeout, 0, "", 0);
            }
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        let Some(p) = self.pending.remove(&(reply.addr, reply.seq)) else {
            // Late (its timeout already reported it as lost) or not ours.
            self.late_replies += 1;
            return;
        };
        match reply.kind {
            ReplyKind::Echo { ttl } => {
                let rtt = u64::try_from(reply.rx_unix_nanos - p.sent_ns).unwrap_or(0);
                self.result(
                    &p.label,
                    reply.addr,
                    p.sent_ns,
                    PingStatus::Ok,
                    rtt,
                    "",
                    u32::from(ttl),
                );
            }
            ReplyKind::Error { what } => {
                self.result(
                    &p.label,
                    reply.addr,
                    p.sent_ns,
                    PingStatus::Unreachable,
                    0,
                    &what,
                    0,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &mut self,
        label: &str,
        addr: IpAddr,
        sent_ns: i64,
        status: PingStatus,
        rtt: u64,
        error: &str,
        ttl: u32,
    ) {
        self.emit.push(Record {
            kind: Some(record::Kind::Ping(PingResult {
                target: label.to_owned(),
                address: addr.to_string(),
                sent_unix_nanos: sent_ns,
                rtt_nanos: rtt,
                status: status as i32,
                error: error.to_owned(),
                reply_ttl: ttl,
            })),
        });
    }

    fn report_lag(&mut self) {
        if let Some(lag) = self.schedule.take_lag("ping", self.net.now_unix_nanos()) {
            self.emit.push(lag);
        }
        if self.late_replies > 0 {
            tracing::debug!(
                late_replies = self.late_replies,
                "ICMP replies after their timeout (counted as loss)"
            );
            self.late_replies = 0;
        }
        self.emit.flush_gap(self.net.now_unix_nanos());
    }
}

#[cfg(test)]
mod tests;
