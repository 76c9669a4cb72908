//! The engine against a fake network on tokio's paused clock.

use std::collections::BinaryHeap;
use std::sync::Mutex;

use tokio::sync::{Notify, mpsc};

use super::*;
use sonde_proto::v1::SchedulerLag;

/// How the fake network answers a given address.
#[derive(Debug, Clone)]
enum Behaviour {
    EchoAfter(Duration),
    Drop,
    Unreachable,
    SendFails,
}

struct FakeNet {
    start: Instant,
    behaviour: Box<dyn Fn(IpAddr) -> Behaviour + Send + Sync>,
    queue: Mutex<BinaryHeap<Reverse<(Instant, u64, ReplyOrd)>>>,
    sent: Mutex<Vec<(Instant, IpAddr, u16)>>,
    notify: Notify,
    counter: Mutex<u64>,
}

/// `Reply` ordered only by insertion (the heap orders by time first).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReplyOrd(Reply);
impl PartialOrd for ReplyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ReplyOrd {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl FakeNet {
    fn new(behaviour: impl Fn(IpAddr) -> Behaviour + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            behaviour: Box::new(behaviour),
            queue: Mutex::new(BinaryHeap::new()),
            sent: Mutex::new(Vec::new()),
            notify: Notify::new(),
            counter: Mutex::new(0),
        })
    }

    fn ns_at(&self, t: Instant) -> i64 {
        1_700_000_000_000_000_000 + i64::try_from((t - self.start).as_nanos()).unwrap()
    }
}

impl Network for Arc<FakeNet> {
    fn send(&self, addr: IpAddr, seq: u16, _payload: &[u8]) -> std::io::Result<i64> {
        let now = Instant::now();
        let (at, kind) = match (self.behaviour)(addr) {
            Behaviour::SendFails => return Err(std::io::Error::other("network is unreachable")),
            Behaviour::Drop => {
                self.sent.lock().unwrap().push((now, addr, seq));
                return Ok(self.ns_at(now));
            }
            Behaviour::EchoAfter(d) => (now + d, ReplyKind::Echo { ttl: 64 }),
            Behaviour::Unreachable => (
                now + Duration::from_millis(1),
                ReplyKind::Error {
                    what: "destination host unreachable".into(),
                },
            ),
        };
        self.sent.lock().unwrap().push((now, addr, seq));
        let mut n = self.counter.lock().unwrap();
        *n += 1;
        let reply = Reply {
            addr,
            seq,
            kind,
            rx_unix_nanos: self.ns_at(at),
        };
        self.queue
            .lock()
            .unwrap()
            .push(Reverse((at, *n, ReplyOrd(reply))));
        self.notify.notify_one();
        Ok(self.ns_at(now))
    }

    async fn recv(&self) -> std::io::Result<Reply> {
        loop {
            let next = self
                .queue
                .lock()
                .unwrap()
                .peek()
                .map(|Reverse((t, _, _))| *t);
            match next {
                None => self.notify.notified().await,
                Some(at) => {
                    tokio::select! {
                        () = sleep_until(at) => {
                            let mut q = self.queue.lock().unwrap();
                            if q.peek().is_some_and(|Reverse((t, _, _))| *t <= Instant::now()) {
                                let Reverse((_, _, ReplyOrd(r))) = q.pop().unwrap();
                                return Ok(r);
                            }
                        }
                        () = self.notify.notified() => {}
                    }
                }
            }
        }
    }

    fn now_unix_nanos(&self) -> i64 {
        self.ns_at(Instant::now())
    }
}

fn targets(n: u8, interval: Duration, timeout: Duration) -> Arc<Vec<PingTarget>> {
    Arc::new(
        (0..n)
            .map(|i| PingTarget {
                label: format!("t{i}").into(),
                addr: IpAddr::from([10, 0, 0, i]),
                interval,
                timeout,
                payload: 56,
            })
            .collect(),
    )
}

struct Run {
    results: mpsc::Receiver<Record>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    set: watch::Sender<Arc<Vec<PingTarget>>>,
}

fn start(net: Arc<FakeNet>, t: Arc<Vec<PingTarget>>) -> Run {
    let (tx, rx) = mpsc::channel(1_000_000);
    let (set, watch_rx) = watch::channel(t);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(net, watch_rx, Emitter::new(tx, "ping"), stop.clone()));
    Run {
        results: rx,
        stop,
        task,
        set,
    }
}

fn drain(rx: &mut mpsc::Receiver<Record>) -> Vec<Record> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn pings(records: &[Record]) -> Vec<&PingResult> {
    records
        .iter()
        .filter_map(|r| match &r.kind {
            Some(record::Kind::Ping(p)) => Some(p),
            _ => None,
        })
        .collect()
}

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn every_probe_answered_with_exact_rtt_and_spread_sends() {
    let net = FakeNet::new(|_| Behaviour::EchoAfter(5 * MS));
    let mut r = start(net.clone(), targets(100, SEC, SEC));
    tokio::time::sleep(Duration::from_millis(9_999)).await;
    r.stop.cancel();
    r.task.await.unwrap();
    let records = drain(&mut r.results);
    let p = pings(&records);
    assert_eq!(p.len(), 1000);
    assert!(
        p.iter()
            .all(|p| p.status == PingStatus::Ok as i32 && p.rtt_nanos == 5_000_000),
        "{:?}",
        p[0]
    );
    // The first second's 100 sends are 10 ms apart, not a burst.
    let sent = net.sent.lock().unwrap();
    let first: Vec<Instant> = sent.iter().take(100).map(|s| s.0).collect();
    for w in first.windows(2) {
        assert_eq!(w[1] - w[0], 10 * MS);
    }
    // Sequence numbers count per address.
    let seqs: Vec<u16> = sent
        .iter()
        .filter(|s| s.1 == IpAddr::from([10, 0, 0, 7]))
        .map(|s| s.2)
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u16>>());
}

#[tokio::test(start_paused = true)]
async fn late_replies_are_loss_and_never_matched_to_the_next_probe() {
    // Replies arrive 1.5 s after the request; the timeout is 1 s.
    let net = FakeNet::new(|_| Behaviour::EchoAfter(1500 * MS));
    let mut r = start(net, targets(1, SEC, SEC));
    tokio::time::sleep(5 * SEC + 500 * MS).await;
    r.stop.cancel();
    r.task.await.unwrap();
    let records = drain(&mut r.results);
    let p = pings(&records);
    assert!(p.len() >= 5);
    assert!(
        p.iter()
            .all(|p| p.status == PingStatus::Timeout as i32 && p.rtt_nanos == 0),
        "{p:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn drops_errors_and_send_failures_are_reported() {
    let net = FakeNet::new(|a| match a {
        IpAddr::V4(v4) if v4.octets()[3] == 0 => Behaviour::Drop,
        IpAddr::V4(v4) if v4.octets()[3] == 1 => Behaviour::Unreachable,
        _ => Behaviour::SendFails,
    });
    let mut r = start(net, targets(3, SEC, 500 * MS));
    tokio::time::sleep(2 * SEC).await;
    r.stop.cancel();
    r.task.await.unwrap();
    let records = drain(&mut r.results);
    let by = |label: &str| -> Vec<(i32, String)> {
        pings(&records)
            .into_iter()
            .filter(|p| p.target == label)
            .map(|p| (p.status, p.error.clone()))
            .collect()
    };
    assert!(
        by("t0")
            .iter()
            .all(|(s, _)| *s == PingStatus::Timeout as i32)
    );
    assert!(
        by("t1")
            .iter()
            .all(|(s, e)| *s == PingStatus::Unreachable as i32 && e.contains("unreachable"))
    );
    assert!(
        by("t2").iter().all(
            |(s, e)| *s == PingStatus::SendError as i32 && e.contains("network is unreachable")
        )
    );
    assert_eq!(by("t0").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn falling_behind_is_reported_as_lag_not_loss() {
    let net = FakeNet::new(|_| Behaviour::EchoAfter(MS));
    let mut r = start(net.clone(), targets(10, SEC, SEC));
    tokio::time::sleep(SEC).await;
    let before = net.sent.lock().unwrap().len();
    // The engine does not run for 3.5 s (a stall), then resumes.
    tokio::time::advance(3500 * MS).await;
    tokio::time::sleep(11 * SEC).await;
    r.stop.cancel();
    r.task.await.unwrap();
    let records = drain(&mut r.results);
    let lag: Vec<&SchedulerLag> = records
        .iter()
        .filter_map(|r| match &r.kind {
            Some(record::Kind::Lag(l)) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lag.len(), 1, "{lag:?}");
    assert_eq!(lag[0].late_probes, 10, "each target late once");
    assert!(lag[0].max_lag_nanos >= 3_000_000_000);
    // No burst: after the stall each target sent once, then kept its grid.
    let sent = net.sent.lock().unwrap();
    assert!(
        sent.len() - before <= 10 * 13,
        "{} sends after the stall",
        sent.len() - before
    );
    // And nothing was reported lost.
    assert!(
        pings(&records)
            .iter()
            .all(|p| p.status == PingStatus::Ok as i32)
    );
}

#[tokio::test(start_paused = true)]
async fn target_changes_apply_without_restart_and_pending_probes_finish() {
    let net = FakeNet::new(|_| Behaviour::EchoAfter(100 * MS));
    let mut r = start(net, targets(2, SEC, SEC));
    tokio::time::sleep(1050 * MS).await;
    r.set.send_replace(targets(5, SEC, SEC));
    tokio::time::sleep(2 * SEC).await;
    r.stop.cancel();
    r.task.await.unwrap();
    let records = drain(&mut r.results);
    let labels: std::collections::BTreeSet<String> =
        pings(&records).iter().map(|p| p.target.clone()).collect();
    assert_eq!(labels.len(), 5);
    // Every send got exactly one result, including those in flight at stop.
    assert!(
        pings(&records)
            .iter()
            .all(|p| p.status == PingStatus::Ok as i32 || p.status == PingStatus::Timeout as i32)
    );
}
