//! The engine against a fake network of routers on tokio's paused clock.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::*;

const HOP_DELAY: Duration = Duration::from_millis(3);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

/// A path: who answers TTL 1, 2, ...; `None` is a silent router. TTLs past
/// the end reach the destination, unless `dead_end`.
#[derive(Clone)]
struct Path {
    routers: Vec<Option<IpAddr>>,
    dead_end: bool,
}

struct FakeTracer {
    path: Mutex<Path>,
    opened: Mutex<u32>,
    sends: Mutex<Vec<(u8, u16)>>,
}

struct FakeSocket {
    dest: IpAddr,
    path: Path,
    tx: mpsc::UnboundedSender<Answer>,
    rx: mpsc::UnboundedReceiver<Answer>,
    start: Instant,
    tracer: Arc<FakeTracer>,
}

fn ns(start: Instant) -> i64 {
    i64::try_from((Instant::now() - start).as_nanos()).unwrap()
}

impl Tracer for Arc<FakeTracer> {
    type Socket = FakeSocket;
    fn open(&self, target: &TraceTarget) -> io::Result<FakeSocket> {
        *self.opened.lock().unwrap() += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(FakeSocket {
            dest: target.addr,
            path: self.path.lock().unwrap().clone(),
            tx,
            rx,
            start: Instant::now(),
            tracer: self.clone(),
        })
    }
    fn now_unix_nanos(&self) -> i64 {
        0
    }
}

impl TraceSocket for FakeSocket {
    fn send(&mut self, ttl: u8, id: u16) -> io::Result<i64> {
        self.tracer.sends.lock().unwrap().push((ttl, id));
        let i = usize::from(ttl - 1);
        let (from, last) = match self.path.routers.get(i) {
            Some(Some(r)) => (*r, false),
            Some(None) => return Ok(ns(self.start)),
            None if self.path.dead_end => return Ok(ns(self.start)),
            None => (self.dest, true),
        };
        let delay =
            HOP_DELAY * u32::from(ttl.min(u8::try_from(self.path.routers.len() + 1).unwrap()));
        let (tx, start) = (self.tx.clone(), self.start);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Answer {
                id,
                from,
                rx_unix_nanos: ns(start),
                last,
            });
        });
        Ok(ns(self.start))
    }
    async fn recv(&mut self) -> io::Result<Answer> {
        Ok(self.rx.recv().await.expect("sender kept"))
    }
}

fn fake(routers: Vec<Option<IpAddr>>, dead_end: bool) -> Arc<FakeTracer> {
    Arc::new(FakeTracer {
        path: Mutex::new(Path { routers, dead_end }),
        opened: Mutex::new(0),
        sends: Mutex::new(Vec::new()),
    })
}

fn target() -> TraceTarget {
    TraceTarget {
        label: "dest".into(),
        addr: ip(99),
        method: TraceMethod::Udp,
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(2),
        max_hops: 30,
        probes_per_hop: 3,
        port: 33434,
    }
}

fn result(r: &Record) -> &TraceResult {
    match &r.kind {
        Some(record::Kind::Trace(t)) => t,
        other => panic!("not a trace: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn hops_in_order_with_rtts_and_a_stable_hash() {
    let net = fake(vec![Some(ip(1)), Some(ip(2))], false);
    let t0 = Instant::now();
    let r = trace(&net, &target()).await;
    // Destination at TTL 3 answered in 9 ms: the round ends then, not at the
    // 2 s timeout.
    assert_eq!(Instant::now() - t0, HOP_DELAY * 3);
    let t = result(&r);
    assert!(t.reached && t.error.is_empty(), "{t:?}");
    let hops: Vec<(u32, &str, u32)> = t
        .hops
        .iter()
        .map(|h| (h.ttl, h.address.as_str(), h.probes))
        .collect();
    assert_eq!(
        hops,
        [(1, "10.0.0.1", 3), (2, "10.0.0.2", 3), (3, "10.0.0.99", 3)]
    );
    for h in &t.hops {
        let want = u64::try_from((HOP_DELAY * h.ttl).as_nanos()).unwrap();
        assert_eq!(h.rtt_nanos, vec![want; 3], "ttl {}", h.ttl);
    }
    // TTLs 1-8 went out together (one round), 3 probes each, ids unique.
    let sends = net.sends.lock().unwrap().clone();
    assert_eq!(sends.len(), 24);
    let ids: BTreeSet<u16> = sends.iter().map(|s| s.1).collect();
    assert_eq!(ids.len(), 24);
    // Same path, same hash; another router, another hash.
    let again = trace(&net, &target()).await;
    assert_eq!(result(&again).path_hash, t.path_hash);
    net.path.lock().unwrap().routers = vec![Some(ip(1)), Some(ip(3))];
    let moved = trace(&net, &target()).await;
    assert_ne!(result(&moved).path_hash, t.path_hash);
    assert_eq!(result(&moved).hops[1].address, "10.0.0.3");
}

#[tokio::test(start_paused = true)]
async fn silent_hops_wait_the_timeout_and_far_targets_take_rounds() {
    let mut routers: Vec<Option<IpAddr>> = (1..=10).map(|i| Some(ip(i))).collect();
    routers[4] = None;
    let net = fake(routers, false);
    let t0 = Instant::now();
    let r = trace(&net, &target()).await;
    let t = result(&r);
    // Round 1 (TTL 1-8) waits for the silent TTL 5 until the timeout;
    // round 2 (TTL 9-16) reaches the destination at TTL 11.
    assert_eq!(Instant::now() - t0, Duration::from_secs(2) + HOP_DELAY * 11);
    assert!(t.reached);
    assert_eq!(t.hops.len(), 11);
    assert_eq!(t.hops[4].address, "");
    assert!(t.hops[4].rtt_nanos.is_empty());
    assert_eq!(t.hops[4].probes, 3);
    assert_eq!(net.sends.lock().unwrap().len(), 48);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_destination_runs_to_max_hops() {
    let net = fake(vec![Some(ip(1))], true);
    let mut tgt = target();
    tgt.max_hops = 12;
    tgt.probes_per_hop = 1;
    let r = trace(&net, &tgt).await;
    let t = result(&r);
    assert!(!t.reached);
    assert_eq!(t.hops.len(), 12);
    assert_eq!(t.hops[0].address, "10.0.0.1");
    assert!(t.hops[1..].iter().all(|h| h.address.is_empty()));
    assert_eq!(net.sends.lock().unwrap().len(), 12);
}

#[tokio::test(start_paused = true)]
async fn the_engine_traces_on_schedule_and_never_twice_at_once() {
    let net = fake(vec![None], true); // every trace takes 4 rounds x 2 s
    let mut a = target();
    a.interval = Duration::from_secs(5);
    let mut b = a.clone();
    b.addr = ip(98);
    b.label = "other".into();
    b.interval = Duration::from_secs(60);
    let (_tx, rx) = watch::channel(Arc::new(vec![a, b]));
    let (rtx, mut records) = mpsc::channel(100);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        net.clone(),
        rx,
        Emitter::new(rtx, "trace"),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(31)).await;
    shutdown.cancel();
    task.await.unwrap();
    let mut traces = Vec::new();
    let mut lag = 0;
    while let Ok(r) = records.try_recv() {
        match &r.kind {
            Some(record::Kind::Trace(t)) => traces.push(t.target.clone()),
            Some(record::Kind::Lag(l)) => lag += l.late_probes,
            _ => {}
        }
    }
    // `dest` starts at 0, 10, 20 (its 5 s slots while busy are skipped and
    // counted) and each trace takes 8 s; `other` starts at 30 s and is still
    // running at 31 s.
    assert_eq!(traces, ["dest", "dest", "dest"]);
    assert_eq!(*net.opened.lock().unwrap(), 5);
    assert!(lag >= 2, "lag {lag}");
}
