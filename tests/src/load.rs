//! Simulated agents for the load generator (`sonde-load`): each with its
//! own client certificate, over mTLS gRPC, sending a `Hello`, heartbeats and
//! result batches the way the real agent does (at most 32 batches
//! unacknowledged), and checking every acknowledgement: each batch must be
//! acknowledged exactly once, in order, and nothing that was not sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sonde_proto::Role;
use sonde_proto::v1::agent_message::Kind as AgentKind;
use sonde_proto::v1::agent_service_client::AgentServiceClient;
use sonde_proto::v1::collector_message::Kind as CollectorKind;
use sonde_proto::v1::{
    AgentMessage, Heartbeat, Hello, PingResult, PingStatus, Record, ResultBatch, TcpResult,
    TcpStatus, TraceHop, TraceResult, record,
};
use sonde_runtime::clock::unix_nanos;
use tokio::sync::mpsc;

use crate::{World, try_grpc_channel};

/// Unacknowledged batches an agent lets pile up before it stops sending
/// (the real agent's window).
pub const WINDOW: usize = 32;

/// What every simulated agent of a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tenant: String,
    /// Results per batch.
    pub targets: usize,
    /// One batch per `interval`.
    pub interval: Duration,
    pub heartbeat: Duration,
    /// How long to send.
    pub duration: Duration,
    /// How long to wait for the last acknowledgements.
    pub drain: Duration,
}

/// What the agents of a run saw, summed.
#[derive(Debug, Default)]
pub struct Tally {
    pub sessions: AtomicU64,
    pub batches_sent: AtomicU64,
    pub results_sent: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub results_acked: AtomicU64,
    /// Batches not sent because 32 were unacknowledged.
    pub held_back: AtomicU64,
    /// Batches still unacknowledged when the agent gave up waiting.
    pub unacked: AtomicU64,
    pub errors: AtomicU64,
    /// The first errors, for the report.
    pub first_errors: Mutex<Vec<String>>,
    /// Seconds from sending a batch to its acknowledgement.
    pub latencies: Mutex<Vec<f64>>,
}

impl Tally {
    fn error(&self, agent: &str, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_errors.lock().expect("lock");
        if first.len() < 10 {
            first.push(format!("{agent}: {what}"));
        }
    }
}

/// Result `j` of agent `n`: mostly pings, one in ten a TCP connect, one in
/// fifty a traceroute, in the agent's own /24; one ping in a hundred lost.
fn result(n: usize, j: usize, seq: u64, now: i64) -> Record {
    let address = format!("10.{}.{}.{}", n / 250 % 250, n % 250, j % 250 + 1);
    let sent = now - 1_000_000_000 + i64::try_from(j).unwrap_or(0) * 1_000;
    let rtt = 1_000_000 + (j as u64 * 7919 + seq) % 4_000_000;
    let kind = if j % 50 == 49 {
        record::Kind::Trace(TraceResult {
            target: address.clone(),
            hops: (1..=6)
                .map(|ttl| TraceHop {
                    ttl,
                    address: if ttl == 6 {
                        address.clone()
                    } else {
                        format!("10.255.{ttl}.1")
                    },
                    rtt_nanos: vec![rtt / 6 * u64::from(ttl); 3],
                    probes: 3,
                })
                .collect(),
            address,
            started_unix_nanos: sent,
            reached: true,
            path_hash: 0x5eed,
            ..TraceResult::default()
        })
    } else if j % 10 == 9 {
        record::Kind::Tcp(TcpResult {
            target: address.clone(),
            address,
            port: 443,
            sent_unix_nanos: sent,
            connect_nanos: rtt,
            status: TcpStatus::Ok as i32,
            ..TcpResult::default()
        })
    } else {
        let lost = (seq + j as u64).is_multiple_of(100);
        record::Kind::Ping(PingResult {
            target: address.clone(),
            address,
            sent_unix_nanos: sent,
            rtt_nanos: if lost { 0 } else { rtt },
            status: if lost {
                PingStatus::Timeout
            } else {
                PingStatus::Ok
            } as i32,
            reply_ttl: 64,
            ..PingResult::default()
        })
    };
    Record { kind: Some(kind) }
}

fn batch(n: usize, seq: u64, targets: usize) -> ResultBatch {
    let now = unix_nanos();
    ResultBatch {
        batch_seq: seq,
        sealed_unix_nanos: now,
        records: (0..targets).map(|j| result(n, j, seq, now)).collect(),
    }
}

/// Issues the client certificates of agents `0..agents` (so that issuing
/// them is not measured).
pub fn issue(world: &World, tenant: &str, agents: usize) {
    for n in 0..agents {
        world.cert(tenant, Role::Agent, &name(n));
    }
}

pub fn name(n: usize) -> String {
    format!("sim-{n}")
}

/// Batches sent and not yet acknowledged, and the acknowledgement rules.
struct Window {
    pending: VecDeque<(u64, Instant, u64)>,
    last_ack: u64,
    last_sent: u64,
}

impl Window {
    /// Applies a cumulative acknowledgement: (batches, results, latencies)
    /// newly acknowledged, or what is wrong with it.
    fn ack(&mut self, seq: u64, now: Instant) -> Result<(u64, u64, Vec<f64>), String> {
        if seq > self.last_sent {
            return Err(format!(
                "ack {seq} for a batch never sent (last sent {})",
                self.last_sent
            ));
        }
        if seq <= self.last_ack {
            return Err(format!(
                "ack {seq} again or backwards (last ack {})",
                self.last_ack
            ));
        }
        self.last_ack = seq;
        let (mut batches, mut results, mut lat) = (0, 0, Vec::new());
        while let Some(&(s, at, r)) = self.pending.front() {
            if s > seq {
                break;
            }
            self.pending.pop_front();
            batches += 1;
            results += r;
            lat.push(now.duration_since(at).as_secs_f64());
        }
        Ok((batches, results, lat))
    }
}

/// One simulated agent for the whole plan.
pub async fn agent(world: Arc<World>, n: usize, plan: Arc<Plan>, tally: Arc<Tally>) {
    let who = name(n);
    let cert = world.cert(&plan.tenant, Role::Agent, &who);
    let channel = match try_grpc_channel(&world, &cert).await {
        Ok(c) => c,
        Err(e) => return tally.error(&who, format!("connect: {e:?}")),
    };
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(WINDOW + 8);
    let hello = AgentMessage {
        kind: Some(AgentKind::Hello(Hello {
            agent_version: "load".into(),
            heartbeat_interval_ms: u32::try_from(plan.heartbeat.as_millis()).unwrap_or(u32::MAX),
            instance_id: n as u64 + 1,
            // Each step's agents are of their own tenant: unique enough.
            spool_id: n as u64 + 1,
            ..Hello::default()
        })),
    };
    let _ = tx.send(hello).await;
    let mut inbound = match client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return tally.error(&who, format!("session: {e}")),
    };
    tally.sessions.fetch_add(1, Relaxed);
    let started = Instant::now();
    let mut window = Window {
        pending: VecDeque::new(),
        last_ack: 0,
        last_sent: 0,
    };
    // Spread the agents' ticks over the interval, like real agents.
    let phase = (plan.interval / 97) * u32::try_from(n % 97).unwrap_or(0);
    let mut batches = tokio::time::interval_at((started + phase).into(), plan.interval);
    let mut heartbeats = tokio::time::interval(plan.heartbeat);
    let (mut hb_seq, mut sending) = (0, true);
    let drain_until = started + plan.duration + plan.drain;
    loop {
        if !sending && window.pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = batches.tick(), if sending => {
                if started.elapsed() >= plan.duration {
                    sending = false;
                    continue;
                }
                if window.pending.len() >= WINDOW {
                    tally.held_back.fetch_add(1, Relaxed);
                    continue;
                }
                let seq = window.last_sent + 1;
                let b = batch(n, seq, plan.targets);
                window.last_sent = seq;
                window.pending.push_back((seq, Instant::now(), plan.targets as u64));
                if tx.send(AgentMessage { kind: Some(AgentKind::Batch(b)) }).await.is_err() {
                    tally.error(&who, "session closed while sending");
                    break;
                }
                tally.batches_sent.fetch_add(1, Relaxed);
                tally.results_sent.fetch_add(plan.targets as u64, Relaxed);
            }
            _ = heartbeats.tick(), if sending => {
                hb_seq += 1;
                let hb = Heartbeat { seq: hb_seq, uptime_ms: 0, sent_unix_nanos: unix_nanos() };
                if tx.send(AgentMessage { kind: Some(AgentKind::Heartbeat(hb)) }).await.is_ok() {
                    tally.heartbeats_sent.fetch_add(1, Relaxed);
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if let Some(CollectorKind::Ack(ack)) = m.kind {
                        match window.ack(ack.batch_seq, Instant::now()) {
                            Ok((b, r, lat)) => {
                                tally.batches_acked.fetch_add(b, Relaxed);
                                tally.results_acked.fetch_add(r, Relaxed);
                                tally.latencies.lock().expect("lock").extend(lat);
                            }
                            Err(e) => tally.error(&who, e),
                        }
                    }
                }
                Ok(None) => {
                    tally.error(&who, "collector ended the session");
                    break;
                }
                Err(status) => {
                    tally.error(&who, format!("session: {status}"));
                    break;
                }
            },
            () = tokio::time::sleep_until(drain_until.into()) => break,
        }
    }
    tally
        .unacked
        .fetch_add(window.pending.len() as u64, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_each_batch_once_and_in_order() {
        let now = Instant::now();
        let mut w = Window {
            pending: (1..=3).map(|s| (s, now, 10)).collect(),
            last_ack: 0,
            last_sent: 3,
        };
        assert_eq!(w.ack(2, now).map(|(b, r, _)| (b, r)), Ok((2, 20)));
        assert!(w.ack(2, now).unwrap_err().contains("again"));
        assert!(w.ack(1, now).unwrap_err().contains("backwards"));
        assert!(w.ack(4, now).unwrap_err().contains("never sent"));
        assert_eq!(w.ack(3, now).map(|(b, r, _)| (b, r)), Ok((1, 10)));
        assert!(w.pending.is_empty());
    }
}
