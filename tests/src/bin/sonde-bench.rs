//! `sonde-bench`: the probe benchmark of issue 3, on loopback only.
//!
//! Run it with `scripts/bench.sh` (release build). Phases:
//! 1. ICMP: a release `sonde-agent` pings 10,000 loopback addresses every
//!    second and streams to a release `sonde-collector`, while two `fping`
//!    processes (5,000 targets each, `-p 1000 -i 0.1`) ping the same
//!    addresses for 60 s. Prints loss, CPU per 1,000 probes, peak RSS and
//!    RTT p50 of both, the ratios, and the collector's ack latency.
//! 2. Spool replay: the collector is killed for 30 s while the agent goes
//!    on; after its restart, the backlog's replay rate.
//! 3. TCP: a second agent connects to 1,000 loopback listeners every
//!    second for 30 s: CPU per 1,000 connects and sockets in `TIME_WAIT`.
//!
//! Figures only: nothing here asserts a timing.

#![allow(clippy::similar_names)] // rtt/rtts, lost/list: the figures read best so

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use sonde_collector::store::Store;
use sonde_proto::Role;
use sonde_proto::v1::{PingStatus, ResultBatch, TcpStatus, record};
use sonde_runtime::clock::unix_nanos;
use sonde_tests::measure::{cpu_seconds, peak_rss_mib, percentile};
use sonde_tests::{Proc, World, eventually};

const TARGETS: usize = 10_000;
const SECONDS: u64 = 60;
const NS: i64 = 1_000_000_000;

fn addr(i: usize) -> String {
    format!("127.20.{}.{}", i / 250, i % 250 + 1)
}

/// What the collector stored for `agent`, batch by batch.
struct Stored {
    /// (sealed ns, received ms, records)
    batches: Vec<(i64, i64, ResultBatch)>,
}

fn stored(world: &World, agent: &str) -> Stored {
    let store = Store::open_dir(&world.dir().join("collector-state")).expect("store");
    let mut batches = Vec::new();
    let mut after = 0;
    loop {
        let page = sonde_collector::log::SqliteLog::new(store.clone())
            .batches_after(after, 1000)
            .expect("ingest log");
        let Some(last) = page.last() else { break };
        after = last.id;
        for b in page.into_iter().filter(|b| b.agent == agent) {
            let batch = ResultBatch::decode(b.payload.as_slice()).expect("batch");
            batches.push((batch.sealed_unix_nanos, b.received_ms, batch));
        }
    }
    Stored { batches }
}

/// One fping run: RTTs (µs), lost probes, peak RSS (MiB).
struct Fping {
    rtts: Vec<f64>,
    lost: usize,
    rss: f64,
}

/// Runs one fping over `targets` for `count` rounds.
fn fping(targets: &[String], count: u64) -> std::thread::JoinHandle<Fping> {
    let list = targets.join("\n");
    std::thread::spawn(move || {
        let mut child = Command::new("fping")
            .args([
                "-C",
                &count.to_string(),
                "-p",
                "1000",
                "-i",
                "0.1",
                "-q",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fping (apt-get install fping)");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), list.as_bytes()).unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let (mut rtts, mut lost) = (Vec::new(), 0);
            for line in stderr.lines().map_while(Result::ok) {
                let Some((_, values)) = line.split_once(" : ") else {
                    continue;
                };
                for v in values.split_whitespace() {
                    match v.parse::<f64>() {
                        Ok(ms) => rtts.push(ms * 1000.0),
                        Err(_) => lost += 1,
                    }
                }
            }
            (rtts, lost)
        });
        let pid = i32::try_from(child.id()).unwrap();
        let mut rss = 0.0f64;
        while child.try_wait().expect("fping").is_none() {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && text.contains("VmHWM")
            {
                rss = rss.max(peak_rss_mib(pid));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let (rtts, lost) = reader.join().expect("reader");
        Fping { rtts, lost, rss }
    })
}

/// CPU seconds of this process's waited-for children (fping).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // cutime and cstime (fields 16 and 17 of proc(5)).
    let ticks: f64 = f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap();
    ticks / 100.0
}

#[allow(clippy::too_many_lines, clippy::cast_precision_loss)]
#[tokio::main]
async fn main() {
    let world = World::new();
    world.collector_config("");
    let mut collector = world.start_collector(&[]).await;
    let targets: Vec<String> = (0..TARGETS).map(addr).collect();
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let cert = world.cert("acme", Role::Agent, "bench");
    world.agent_config(
        "bench",
        &cert,
        &format!(
            "[[ping]]\ntargets = [{}]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
            list.join(", ")
        ),
    );
    let agent = world.start_agent("bench", &[]);
    let pid = agent.pid().as_raw();
    println!(
        "ICMP: {TARGETS} loopback targets at 1 s for {SECONDS} s, sonde-agent and 2 x fping side by side"
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // warm-up

    let (cpu0, t0) = (cpu_seconds(pid), unix_nanos());
    let fping_cpu0 = children_cpu();
    let halves: Vec<_> = targets
        .chunks(TARGETS / 2)
        .map(|c| fping(c, SECONDS))
        .collect();
    let mut fping_rtts = Vec::new();
    let (mut fping_lost, mut fping_rss) = (0, 0.0f64);
    for h in halves {
        let f = h.join().expect("fping thread");
        fping_rtts.extend(f.rtts);
        fping_lost += f.lost;
        fping_rss = fping_rss.max(f.rss);
    }
    let (cpu1, t1) = (cpu_seconds(pid), unix_nanos());
    let fping_cpu1 = children_cpu();
    let agent_rss = peak_rss_mib(pid);
    let window = (t1 - t0) as f64 / NS as f64;

    // Let the last results arrive, then read what the collector stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = stored(&world, "bench");
    let (mut ok, mut lost, mut rtts, mut lag) = (0usize, 0usize, Vec::new(), 0u64);
    let mut ack = Vec::new();
    for (sealed, received_ms, batch) in &s.batches {
        if (t0..t1).contains(sealed) {
            ack.push((*received_ms as f64) - (*sealed as f64 / 1e6));
        }
        for r in &batch.records {
            match &r.kind {
                Some(record::Kind::Ping(p)) if (t0..t1 - NS).contains(&p.sent_unix_nanos) => {
                    if p.status() == PingStatus::Ok {
                        ok += 1;
                        rtts.push(p.rtt_nanos as f64 / 1000.0);
                    } else {
                        lost += 1;
                    }
                }
                Some(record::Kind::Lag(l)) if (t0..t1).contains(&l.at_unix_nanos) => {
                    lag += l.late_probes;
                }
                _ => {}
            }
        }
    }
    let probes = ok + lost;
    let fping_probes = fping_rtts.len() + fping_lost;
    let agent_cpu_k = (cpu1 - cpu0) / (TARGETS as f64 * window) * 1000.0;
    let fping_cpu_k = (fping_cpu1 - fping_cpu0) / fping_probes as f64 * 1000.0;
    let p50 = percentile(&mut rtts, 0.5);
    let fping_p50 = percentile(&mut fping_rtts, 0.5);
    let mut out = String::new();
    let _ = writeln!(out, "  window                {window:.1} s");
    let _ = writeln!(
        out,
        "  probes                sonde {probes}   fping {fping_probes}"
    );
    let _ = writeln!(
        out,
        "  loss                  sonde {:.3} %   fping {:.3} %",
        lost as f64 * 100.0 / probes as f64,
        fping_lost as f64 * 100.0 / fping_probes as f64
    );
    let _ = writeln!(
        out,
        "  CPU s / 1000 probes   sonde {agent_cpu_k:.4} (whole agent: probing, batching, spool, gRPC)   fping {fping_cpu_k:.4}   ratio {:.2}",
        agent_cpu_k / fping_cpu_k
    );
    let _ = writeln!(
        out,
        "  peak RSS              sonde {agent_rss:.1} MiB (agent)   fping {fping_rss:.1} MiB (larger of the two)"
    );
    let _ = writeln!(
        out,
        "  RTT p50               sonde {p50:.1} µs   fping {fping_p50:.1} µs   difference {:.1} µs",
        p50 - fping_p50
    );
    let _ = writeln!(out, "  late probes (lag)     {lag}");
    let _ = writeln!(
        out,
        "  ack latency (sealed → stored) p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms over {} batches",
        percentile(&mut ack.clone(), 0.5),
        percentile(&mut ack.clone(), 0.99),
        percentile(&mut ack, 1.0),
        s.batches.len()
    );
    print!("{out}");

    // Spool replay: the collector is away for 30 s.
    collector.kill9();
    let down = unix_nanos();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let restart = unix_nanos();
    let started = Instant::now();
    let _collector = world.start_collector(&[]).await;
    eventually("backlog replayed", Duration::from_secs(300), || async {
        let s = stored(&world, "bench");
        s.batches
            .iter()
            .any(|(sealed, _, _)| *sealed > restart)
            .then_some(())
    })
    .await;
    let drained = started.elapsed();
    let s = stored(&world, "bench");
    let backlog: usize = s
        .batches
        .iter()
        .filter(|(sealed, _, _)| (down..restart).contains(sealed))
        .map(|(_, _, b)| b.records.len())
        .sum();
    let rate = backlog as f64 / drained.as_secs_f64();
    println!(
        "Spool replay: {backlog} results spooled in 30 s, replayed in {drained:.1?}: {rate:.0} results/s = {:.1} x the live rate of {TARGETS}/s",
        rate / TARGETS as f64
    );
    drop(agent);

    tcp_bench(&world).await;
}

/// A second agent connects to 1,000 loopback listeners every second.
#[allow(clippy::cast_precision_loss)]
async fn tcp_bench(world: &World) {
    const ENDPOINTS: usize = 1000;
    const TCP_SECONDS: u64 = 30;
    let mut ports = Vec::new();
    for _ in 0..ENDPOINTS {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        ports.push(l.local_addr().unwrap().port());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
    }
    let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let cert = world.cert("acme", Role::Agent, "tcpbench");
    world.agent_config(
        "tcpbench",
        &cert,
        &format!(
            "[[tcp]]\ntargets = [{}]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
            list.join(", ")
        ),
    );
    let agent: Proc = world.start_agent("tcpbench", &[]);
    let pid = agent.pid().as_raw();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, t0) = (cpu_seconds(pid), unix_nanos());
    tokio::time::sleep(Duration::from_secs(TCP_SECONDS)).await;
    let (cpu1, t1) = (cpu_seconds(pid), unix_nanos());
    let time_wait = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("06"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = stored(world, "tcpbench");
    let mut by_status: HashMap<String, usize> = HashMap::new();
    let mut connect = Vec::new();
    for (_, _, b) in &s.batches {
        for r in &b.records {
            if let Some(record::Kind::Tcp(t)) = &r.kind
                && (t0..t1).contains(&t.sent_unix_nanos)
            {
                *by_status.entry(format!("{:?}", t.status())).or_default() += 1;
                if t.status() == TcpStatus::Ok {
                    connect.push(t.connect_nanos as f64 / 1000.0);
                }
            }
        }
    }
    let total: usize = by_status.values().sum();
    let window = (t1 - t0) as f64 / NS as f64;
    println!(
        "TCP: {ENDPOINTS} endpoints at 1 s for {window:.1} s: {total} connects {by_status:?}, {:.4} CPU s / 1000 connects, connect p50 {:.1} µs, sockets in TIME_WAIT at the end: {time_wait}",
        (cpu1 - cpu0) / total as f64 * 1000.0,
        percentile(&mut connect, 0.5)
    );
    drop(agent);
}
