//! `sonde-ingest-bench`: the collector benchmark of issue 5, on loopback.
//!
//! Run it with `scripts/bench-ingest.sh` (release build). Phases:
//! 1. Ingest: AGENTS simulated agents (default 100), each with its own
//!    certificate over mTLS gRPC, send one batch of TARGETS results
//!    (default 1,000) every second for SECONDS (default 30), at most 32
//!    batches unacknowledged like the real agent, into a release
//!    `sonde-collector` exporting to a real VictoriaMetrics. Prints results
//!    acknowledged per second, ack latency p50/p99, collector CPU (cores)
//!    and peak RSS, and the export and analysis lag when sending stops and
//!    how long they take to catch up.
//! 2. Ceiling: the same number of points written straight into
//!    VictoriaMetrics as line protocol (5,000 per request, 4 in flight).
//! 3. Grid: `GET /api/v1/prefixes/{cidr}` 200 times over the 40 /24s of
//!    the 10,000 monitored addresses: latency p50/p99.
//!
//! Figures only: nothing here asserts a timing.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sonde_proto::Role;
use sonde_proto::v1::agent_message::Kind as AgentKind;
use sonde_proto::v1::agent_service_client::AgentServiceClient;
use sonde_proto::v1::collector_message::Kind as CollectorKind;
use sonde_proto::v1::{AgentMessage, Hello, PingResult, PingStatus, Record, ResultBatch, record};
use sonde_runtime::clock::unix_nanos;
use sonde_tests::measure::{cpu_seconds, peak_rss_mib, percentile};
use sonde_tests::victoria::Victoria;
use sonde_tests::{World, eventually, grpc_channel};
use tokio::sync::{Mutex, mpsc};

const ADDRESSES: usize = 10_000;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn address(i: usize) -> String {
    let i = i % ADDRESSES;
    format!("10.100.{}.{}", i / 250, i % 250 + 1)
}

/// Ack latencies (seconds) and results acknowledged, across agents.
#[derive(Default)]
struct Tally {
    latencies: Mutex<Vec<f64>>,
    acked: AtomicU64,
    skipped: AtomicU64,
}

fn batch(seq: u64, agent: usize, targets: usize) -> ResultBatch {
    let now = unix_nanos();
    let records = (0..targets)
        .map(|j| {
            let lost = (seq + j as u64).is_multiple_of(100);
            Record {
                kind: Some(record::Kind::Ping(PingResult {
                    target: "10.100.0.0/18".into(),
                    address: address(agent * targets + j),
                    sent_unix_nanos: now - 1_000_000_000 + i64::try_from(j).unwrap_or(0) * 1000,
                    rtt_nanos: if lost {
                        0
                    } else {
                        1_000_000 + (j as u64 % 4000) * 1000
                    },
                    status: if lost {
                        PingStatus::Timeout
                    } else {
                        PingStatus::Ok
                    } as i32,
                    reply_ttl: 64,
                    ..PingResult::default()
                })),
            }
        })
        .collect();
    ResultBatch {
        batch_seq: seq,
        sealed_unix_nanos: now,
        records,
    }
}

/// One simulated agent: a session, a batch a second, ack latency per batch.
async fn agent(world: Arc<World>, n: usize, targets: usize, seconds: u64, tally: Arc<Tally>) {
    let cert = world.cert("bench", Role::Agent, &format!("sim-{n}"));
    let mut client = AgentServiceClient::new(grpc_channel(&world, &cert).await)
        .max_decoding_message_size(16 << 20);
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    tx.send(AgentMessage {
        kind: Some(AgentKind::Hello(Hello {
            agent_version: "bench".into(),
            heartbeat_interval_ms: 10_000,
            instance_id: n as u64 + 1,
            spool_id: n as u64 + 1,
            ..Hello::default()
        })),
    })
    .await
    .expect("hello");
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    let sent: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let reader = {
        let (sent, tally) = (sent.clone(), tally.clone());
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(CollectorKind::Ack(ack)) = msg.kind {
                    let now = Instant::now();
                    let mut pending = sent.lock().await;
                    let mut lat = Vec::new();
                    pending.retain(|(seq, at)| {
                        if *seq <= ack.batch_seq {
                            lat.push(now.duration_since(*at).as_secs_f64());
                            false
                        } else {
                            true
                        }
                    });
                    tally
                        .acked
                        .fetch_add(lat.len() as u64 * targets as u64, Ordering::Relaxed);
                    tally.latencies.lock().await.extend(lat);
                }
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for seq in 1..=seconds {
        tick.tick().await;
        if sent.lock().await.len() >= 32 {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let b = batch(seq, n, targets);
        sent.lock().await.push((seq, Instant::now()));
        if tx
            .send(AgentMessage {
                kind: Some(AgentKind::Batch(b)),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    // Up to 30 s for the last acknowledgements.
    for _ in 0..300 {
        if sent.lock().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    reader.abort();
}

/// Line protocol straight into VictoriaMetrics: points per second.
async fn ceiling(vm: &Victoria, points: usize) -> f64 {
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/write?org=o&bucket=b&precision=ns", vm.url());
    let now = unix_nanos();
    let bodies: Vec<String> = (0..points.div_ceil(5000))
        .map(|b| {
            let mut s = String::with_capacity(5000 * 120);
            for j in 0..5000 {
                let i = b * 5000 + j;
                let t = now - 3_600_000_000_000 + i64::try_from(i).unwrap_or(0) * 1000;
                let _ = writeln!(
                    s,
                    "ceiling,agent=sim-{},prefix=10.100.{}.0/24,target={},tenant=bench lost=0i,rtt_ms={},status=\"ok\" {t}",
                    i % 100,
                    (i % ADDRESSES) / 250,
                    address(i),
                    1.0 + f64::from(u32::try_from(i % 4000).unwrap_or(0)) / 1000.0
                );
            }
            s
        })
        .collect();
    let started = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for body in bodies {
        if inflight.len() >= 4 {
            inflight.join_next().await;
        }
        let (client, url) = (client.clone(), url.clone());
        inflight.spawn(async move {
            let r = client.post(url).body(body).send().await.expect("write");
            assert!(
                r.status().is_success(),
                "VictoriaMetrics refused: {}",
                r.status()
            );
        });
    }
    while inflight.join_next().await.is_some() {}
    #[allow(clippy::cast_precision_loss)]
    let rate = points as f64 / started.elapsed().as_secs_f64();
    rate
}

#[tokio::main(flavor = "multi_thread")]
#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
async fn main() {
    let agents = usize::try_from(arg(1, 100)).unwrap_or(100);
    let targets = usize::try_from(arg(2, 1000)).unwrap_or(1000);
    let seconds = arg(3, 30);
    let world = Arc::new(World::new());
    let mut vm = Victoria::start(&world.dir().join("vm")).await;
    world.collector_config(&format!(
        "[access]\noperator-tenants = [\"noc\"]\n\
         [influxdb]\nurl = \"{}\"\norg = \"sonde\"\nbucket = \"sonde\"\n",
        vm.url()
    ));
    let collector = world.start_collector(&[]).await;
    let pid = collector.pid().as_raw();
    println!(
        "Ingest: {agents} simulated agents × {targets} targets at 1 s for {seconds} s over mTLS gRPC \
         = {} results/s offered; export to VictoriaMetrics on",
        agents * targets
    );
    // Certificates first, so issuing them is not measured.
    for n in 0..agents {
        world.cert("bench", Role::Agent, &format!("sim-{n}"));
    }
    let tally = Arc::new(Tally::default());
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..agents {
        let (world, tally) = (world.clone(), tally.clone());
        tasks.spawn(agent(world, n, targets, seconds, tally));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let acked = tally.acked.load(Ordering::Relaxed);
    let mut lat = tally.latencies.lock().await.clone();
    let export_lag = world
        .collector_metric("sonde_collector_export_lag_results")
        .await;
    let analysis_lag = world
        .collector_metric("sonde_collector_analysis_lag_entries")
        .await;
    println!(
        "  acknowledged {acked} results of {} offered over {seconds} s: {:.0} results/s sustained ({} batches not sent: 32 unacknowledged)",
        agents as u64 * targets as u64 * seconds,
        acked as f64 / seconds as f64,
        tally.skipped.load(Ordering::Relaxed)
    );
    println!(
        "  ack latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms over {} batches",
        percentile(&mut lat, 0.5) * 1e3,
        percentile(&mut lat, 0.99) * 1e3,
        percentile(&mut lat, 1.0) * 1e3,
        lat.len()
    );
    println!(
        "  collector CPU {:.2} cores ({cpu:.1} s), peak RSS {:.0} MiB",
        cpu / elapsed,
        peak_rss_mib(pid)
    );
    println!(
        "  when sending stopped: export lag {export_lag:.0} results, analysis lag {analysis_lag:.0} log entries"
    );
    let catch_up = Instant::now();
    eventually(
        "export and analysis caught up",
        Duration::from_secs(600),
        || async {
            let e = world
                .collector_metric("sonde_collector_export_lag_results")
                .await;
            let a = world
                .collector_metric("sonde_collector_analysis_lag_entries")
                .await;
            (e < 1.0 && a < 1.0).then_some(())
        },
    )
    .await;
    let exported = world
        .collector_metric("sonde_collector_export_points_total")
        .await;
    println!(
        "  caught up {:.1} s later; {exported:.0} points exported, peak RSS {:.0} MiB",
        catch_up.elapsed().as_secs_f64(),
        peak_rss_mib(pid)
    );

    let points = usize::try_from(acked).unwrap_or(0).max(1);
    let rate = ceiling(&vm, points).await;
    println!(
        "Ceiling: {points} points as line protocol straight into VictoriaMetrics: {rate:.0} points/s \
         (collector sustained {:.2} × of it)",
        acked as f64 / seconds as f64 / rate
    );

    let api = world.api(Some(&world.cert("noc", Role::Viewer, "bench")));
    let mut grid = Vec::new();
    let mut bytes = 0;
    for i in 0..200 {
        let path = format!("/api/v1/prefixes/10.100.{}.0/24", i % 40);
        let t = Instant::now();
        let (status, body) = api.raw(&path).await.expect("grid request");
        grid.push(t.elapsed().as_secs_f64());
        assert_eq!(status, 200);
        bytes = body.len();
    }
    let monitored = api.ok("/api/v1/prefixes").await["prefixes"]
        .as_array()
        .map_or(0, |p| {
            p.iter()
                .filter_map(|p| p["monitored"].as_u64())
                .sum::<u64>()
        });
    println!(
        "Grid: GET /api/v1/prefixes/{{cidr}} with {monitored} monitored addresses (10 agents each, {} KiB answers): \
         p50 {:.1} ms  p99 {:.1} ms over 200 requests (time to the last byte)",
        bytes / 1024,
        percentile(&mut grid, 0.5) * 1e3,
        percentile(&mut grid, 0.99) * 1e3
    );
    vm.stop();
}
