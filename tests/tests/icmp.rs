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
    // A quarter interval past the last round: sends are spread over the
    // interval, so stopping right at `rounds` intervals could cut the last
    // slot of the last round on a loaded machine (seen: 4,999 of 5,000).
    tokio::time::sleep(interval * rounds + interval / 4).await;
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

/// Runs fping on `addrs`: `count` probes each, one per `period`; returns
/// (address, RTTs in ns, lost) per target.
fn fping(addrs: &[IpAddr], count: u32, period: Duration) -> Vec<(String, Vec<u64>, usize)> {
    let out = std::process::Command::new("fping")
        .args([
            "-q",
            "-C",
            &count.to_string(),
            "-p",
            &period.as_millis().to_string(),
            "-i",
            "1",
            "-t",
            "1000",
        ])
        .args(addrs.iter().map(ToString::to_string))
        .output()
        .expect("fping is installed by scripts/test.sh");
    // fping -C reports on stderr: "ADDR : 0.03 0.02 - 0.04" (ms, "-" = lost).
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| {
            let (addr, rest) = l.split_once(" : ")?;
            let mut rtts = Vec::new();
            let mut lost = 0;
            for v in rest.split_whitespace() {
                match v.parse::<f64>() {
                    Ok(ms) => rtts.push(
                        u64::try_from(Duration::from_secs_f64(ms / 1000.0).as_nanos())
                            .unwrap_or(u64::MAX),
                    ),
                    Err(_) => lost += 1,
                }
            }
            Some((addr.trim().to_owned(), rtts, lost))
        })
        .collect()
}

fn p50(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_loopback_targets_match_fping_side_by_side() {
    let addrs: Vec<IpAddr> = (3..=6u8)
        .flat_map(|b| (1..=250u8).map(move |c| IpAddr::from([127, 0, b, c])))
        .collect();
    assert_eq!(addrs.len(), 1000);
    let period = Duration::from_secs(1);
    let fping_addrs = addrs.clone();
    let reference = tokio::task::spawn_blocking(move || fping(&fping_addrs, 5, period));
    let ours = ping_for(&addrs, period, 5).await;
    let reference = reference.await.unwrap();

    let lost = ours
        .iter()
        .filter(|p| p.status != PingStatus::Ok as i32)
        .count();
    assert_eq!(lost, 0, "sonde lost {lost} of {} probes", ours.len());
    assert!(ours.len() >= 5000, "{} results", ours.len());
    assert_eq!(
        reference.len(),
        1000,
        "fping reported {} targets",
        reference.len()
    );
    let fping_lost: usize = reference.iter().map(|r| r.2).sum();
    assert_eq!(
        fping_lost, 0,
        "fping itself lost probes: the machine is overloaded"
    );

    let ours_p50 = p50(ours.iter().map(|p| p.rtt_nanos).collect());
    let fping_p50 = p50(reference.into_iter().flat_map(|r| r.1).collect());
    eprintln!(
        "RTT p50: sonde {ours_p50} ns, fping {fping_p50} ns (1,000 loopback targets, 5 rounds, side by side)"
    );
    // Same path, same host: the medians must be of the same size (kernel
    // receive timestamps may only make ours smaller).
    assert!(
        ours_p50 <= fping_p50 * 2 + 50_000,
        "sonde RTT p50 {ours_p50} ns vs fping {fping_p50} ns"
    );
}
