//! The engine against a fake connector on tokio's paused clock.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::*;

/// How the fake answers a port.
#[derive(Debug, Clone, Copy)]
enum Answer {
    OpenAfter(Duration),
    Refused,
    Reset,
    Unreachable,
    Never,
}

struct FakeNet {
    answers: HashMap<u16, Answer>,
    connects: Mutex<Vec<(Instant, SocketAddr)>>,
}

impl Connector for Arc<FakeNet> {
    async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.connects.lock().unwrap().push((Instant::now(), addr));
        match self.answers[&addr.port()] {
            Answer::OpenAfter(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Answer::Refused => Err(io::ErrorKind::ConnectionRefused.into()),
            Answer::Reset => Err(io::ErrorKind::ConnectionReset.into()),
            Answer::Unreachable => Err(io::Error::from_raw_os_error(113)), // EHOSTUNREACH
            Answer::Never => std::future::pending().await,
        }
    }
    fn now_unix_nanos(&self) -> i64 {
        0
    }
}

/// The engine on `net` with `targets`, running on the paused clock.
struct Running {
    set: watch::Sender<Arc<Vec<TcpTarget>>>,
    records: mpsc::Receiver<Record>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(net: &Arc<FakeNet>, targets: Vec<TcpTarget>) -> Running {
    let (set, rx) = watch::channel(Arc::new(targets));
    let (tx, records) = mpsc::channel(100);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        net.clone(),
        rx,
        Emitter::new(tx, "tcp"),
        shutdown.clone(),
    ));
    Running {
        set,
        records,
        shutdown,
        task,
    }
}

impl Running {
    async fn stop(self) -> mpsc::Receiver<Record> {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.records
    }
}

fn target(port: u16, interval: Duration, timeout: Duration) -> TcpTarget {
    TcpTarget {
        label: format!("127.0.0.1:{port}").into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        interval,
        timeout,
    }
}

fn tcp(r: &Record) -> &TcpResult {
    match &r.kind {
        Some(record::Kind::Tcp(t)) => t,
        other => panic!("not a TCP result: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn each_outcome_gets_its_kind_and_timeouts_end_on_time() {
    let net = Arc::new(FakeNet {
        answers: HashMap::from([
            (1, Answer::OpenAfter(Duration::from_millis(3))),
            (2, Answer::Refused),
            (3, Answer::Reset),
            (4, Answer::Unreachable),
            (5, Answer::Never),
        ]),
        connects: Mutex::new(Vec::new()),
    });
    let second = Duration::from_secs(1);
    let timeout = Duration::from_millis(700);
    let targets: Vec<TcpTarget> = (1..=5).map(|p| target(p, second, timeout)).collect();
    let running = start(&net, targets);
    // 3 intervals: every target connected 3 times, spread 200 ms apart.
    tokio::time::sleep(Duration::from_millis(2900)).await;
    let mut records = running.stop().await;
    let connects = net.connects.lock().unwrap().clone();
    assert_eq!(connects.len(), 15);
    let t0 = connects[0].0;
    for (k, (at, addr)) in connects.iter().enumerate() {
        let k = u32::try_from(k).unwrap();
        assert_eq!(
            *at - t0,
            second * (k / 5) + Duration::from_millis(200) * (k % 5)
        );
        assert_eq!(u32::from(addr.port()), k % 5 + 1);
    }
    let mut by_port: HashMap<u32, Vec<TcpResult>> = HashMap::new();
    while let Ok(r) = records.try_recv() {
        let t = tcp(&r).clone();
        by_port.entry(t.port).or_default().push(t);
    }
    let want = [
        (1, TcpStatus::Ok),
        (2, TcpStatus::Refused),
        (3, TcpStatus::Reset),
        (4, TcpStatus::Unreachable),
        (5, TcpStatus::Timeout),
    ];
    for (port, status) in want {
        let rs = &by_port[&port];
        assert_eq!(rs.len(), 3, "port {port}");
        for r in rs {
            assert_eq!(r.status(), status, "port {port}: {r:?}");
        }
    }
    assert!(by_port[&1].iter().all(|r| r.connect_nanos == 3_000_000));
    assert!(
        by_port[&5][0].error.contains("700ms"),
        "{:?}",
        by_port[&5][0]
    );
    assert!(by_port[&4][0].error.contains("No route to host"));
}

#[tokio::test(start_paused = true)]
async fn a_new_target_set_applies_without_restart() {
    let net = Arc::new(FakeNet {
        answers: HashMap::from([(1, Answer::Refused), (2, Answer::Refused)]),
        connects: Mutex::new(Vec::new()),
    });
    let second = Duration::from_secs(1);
    let running = start(&net, vec![target(1, second, second)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running
        .set
        .send_replace(Arc::new(vec![target(2, second, second)]));
    tokio::time::sleep(Duration::from_millis(1900)).await;
    running.stop().await;
    let ports: Vec<u16> = net
        .connects
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.1.port())
        .collect();
    assert_eq!(ports, [1, 1, 2, 2]);
}
