//! `sonde-ping-bench`: the heartbeat checks' ping endpoint under load, on
//! loopback, against a release `sonde-collector` (issue 24). Run it with
//! `scripts/bench-pings.sh [CHECKS] [CLIENTS] [SECONDS]`. Phases:
//! 1. Cost of a check: CHECKS checks (default 10,000) created through the
//!    API; collector RSS and store size before and after, per check.
//! 2. Pings: CLIENTS concurrent clients (default 64) ping those checks
//!    round robin for SECONDS (default 20) over HTTPS, first each on one
//!    kept-alive HTTP/1.1 connection, then with a new TLS connection per
//!    ping (what `curl` in a cron job does): pings/s answered `200 OK`
//!    (each durable in the store when answered), latency p50/p99,
//!    collector CPU, store growth per ping.
//! 3. Reference, side by side: the same clients against a minimal HTTPS
//!    server in this process (same certificate, rustls + hyper, answers
//!    `OK` and records nothing): what TLS and HTTP alone cost here; the
//!    ratio says what recording costs.
//!
//! The per-check rate limit (`checks.pings-per-second`, 1/s by default)
//! is raised for the run, so that it measures the endpoint, not the
//! limit. Figures only: nothing here asserts a timing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sonde_proto::Role;
use sonde_tests::measure::{cpu_seconds, percentile, rss_mib};
use sonde_tests::{World, free_port};
use tokio::sync::Mutex;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Bytes of the store's files (database and write-ahead log).
fn store_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("state.sqlite3"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    other: AtomicU64,
    latencies: Mutex<Vec<f64>>,
}

struct Run {
    pings_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    other: u64,
}

/// `clients` tasks pinging `urls` round robin for `seconds`; a new
/// connection per ping when `fresh`.
async fn load(ca: &Path, urls: Arc<Vec<String>>, clients: usize, seconds: u64, fresh: bool) -> Run {
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(sonde_tests::client_tls(ca, None))
            .http1_only()
            .timeout(Duration::from_secs(10));
        if fresh {
            b = b.pool_max_idle_per_host(0);
        }
        let client = b.build().expect("client");
        let (urls, tally) = (urls.clone(), tally.clone());
        tasks.spawn(async move {
            let mut i = c;
            let mut lat = Vec::new();
            while Instant::now() < until {
                let url = &urls[i % urls.len()];
                i += clients;
                let t = Instant::now();
                match client.get(url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        tally.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat.push(t.elapsed().as_secs_f64());
            }
            tally.latencies.lock().await.extend(lat);
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = tally.latencies.lock().await.clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    Run {
        pings_per_s: ok as f64 / elapsed,
        p50_ms: percentile(&mut lat, 0.5) * 1e3,
        p99_ms: percentile(&mut lat, 0.99) * 1e3,
        ok,
        other: tally.other.load(Ordering::Relaxed),
    }
}

/// The reference: an HTTPS server that answers every request `OK`.
async fn reference(world: &World) -> u16 {
    let pki = world.pki.dir();
    let files = sonde_runtime::tls::TlsFiles {
        ca: pki.join("ca.pem"),
        cert: pki.join("collector.pem"),
        key: pki.join("collector.key"),
    };
    let tls = sonde_runtime::tls::public_server_config(&files).expect("reference TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async { "OK" });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    port
}

fn print(what: &str, r: &Run, cpu: Option<f64>) {
    println!(
        "  {what:<44} {:>8.0} pings/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ok, {} not){}",
        r.pings_per_s,
        r.p50_ms,
        r.p99_ms,
        r.ok,
        r.other,
        cpu.map_or(String::new(), |c| format!(", collector {c:.2} cores"))
    );
}

#[tokio::main]
#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
async fn main() {
    let checks = usize::try_from(arg(1, 10_000)).unwrap_or(10_000);
    let clients = usize::try_from(arg(2, 64)).unwrap_or(64);
    let seconds = arg(3, 20);
    let world = World::new();
    let ping_port = free_port();
    world.collector_config_with(
        &format!("ping-listen = \"127.0.0.1:{ping_port}\""),
        "[checks]\npings-per-second = 100000\nping-burst = 100000\n",
    );
    let collector = world.start_collector(&[]).await;
    let pid = collector.pid().as_raw();
    let state = world.dir().join("collector-state");
    let admin = world.api(Some(&world.cert("bench", Role::Admin, "admin")));
    let ca = world.pki.dir().join("ca.pem");
    println!(
        "Checks: {checks} created through the API; {clients} clients for {seconds} s per phase, on loopback"
    );
    // 1. What a check costs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss0, _) = rss_mib(pid);
    let disk0 = store_bytes(&state);
    let mut urls = Vec::with_capacity(checks);
    let made = Instant::now();
    // 8 at a time: the admin's certificate may hold 16 connections.
    for chunk in (0..checks).collect::<Vec<_>>().chunks(8) {
        let mut set = tokio::task::JoinSet::new();
        for n in chunk {
            let admin = admin.clone();
            let body = json!({ "name": format!("job-{n}"), "period": "1d", "grace": "1h" });
            set.spawn(async move {
                let (status, v) = admin
                    .send(reqwest::Method::POST, "/api/v1/checks", Some(&body), &[])
                    .await;
                assert_eq!(status, 201, "{v}");
                v["ping_url"].as_str().expect("ping_url").to_owned()
            });
        }
        while let Some(url) = set.join_next().await {
            urls.push(url.expect("create"));
        }
    }
    let created_s = made.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, _) = rss_mib(pid);
    let disk1 = store_bytes(&state);
    println!(
        "  created in {created_s:.1} s ({:.0}/s); collector RSS {rss0:.0} -> {rss1:.0} MiB: {:.2} KiB per check; store {:.1} -> {:.1} MiB: {:.0} B per check",
        checks as f64 / created_s,
        (rss1 - rss0) * 1024.0 / checks as f64,
        disk0 as f64 / 1_048_576.0,
        disk1 as f64 / 1_048_576.0,
        (disk1.saturating_sub(disk0)) as f64 / checks as f64
    );
    let urls = Arc::new(urls);
    // 2. Pings into the collector, then 3. the same against the reference.
    let ref_port = reference(&world).await;
    let ref_urls: Arc<Vec<String>> = Arc::new(
        urls.iter()
            .map(|u| u.replace(&format!(":{ping_port}/"), &format!(":{ref_port}/")))
            .collect(),
    );
    for (fresh, mode) in [
        (false, "kept-alive connections"),
        (true, "a new TLS connection per ping"),
    ] {
        println!("Pings, {mode}:");
        let cpu0 = cpu_seconds(pid);
        let disk_before = store_bytes(&state);
        let t = Instant::now();
        let run = load(&ca, urls.clone(), clients, seconds, fresh).await;
        let cores = (cpu_seconds(pid) - cpu0) / t.elapsed().as_secs_f64();
        let grown = store_bytes(&state).saturating_sub(disk_before);
        print("sonde-collector (durable, then OK)", &run, Some(cores));
        let reference_run = load(&ca, ref_urls.clone(), clients, seconds, fresh).await;
        print(
            "reference HTTPS server (OK, records nothing)",
            &reference_run,
            None,
        );
        println!(
            "  ratio collector / reference: {:.2} x throughput, {:.2} x p99; store grew {:.0} B per ping",
            run.pings_per_s / reference_run.pings_per_s,
            run.p99_ms / reference_run.p99_ms,
            grown as f64 / run.ok.max(1) as f64
        );
    }
    let text = world.collector_metrics().await;
    for line in text
        .lines()
        .filter(|l| l.starts_with("sonde_collector_check"))
    {
        println!("  {line}");
    }
    println!(
        "  collector RSS after the run {:.0} MiB, store {:.1} MiB",
        rss_mib(pid).0,
        store_bytes(&state) as f64 / 1_048_576.0
    );
}
