//! `sonde-load`: the load generator of issue 9, on loopback.
//!
//! Starts a collector (embedded store only) and opens simulated agents
//! against it, each with its own client certificate over mTLS gRPC,
//! heartbeating and sending one batch of `--targets` results per
//! `--interval` (pings, one in ten a TCP connect, one in fifty a
//! traceroute). It reports what was sent and acknowledged, the
//! acknowledgement latency, the collector's CPU and memory (sampled every
//! second), and checks that every batch was acknowledged exactly once
//! and that the collector stored exactly the batches sent (its own
//! counters). Exit status 1 when anything was lost, doubled or refused.
//!
//! `--steps A×T,A×T,...` runs one step per pair (agents × results per
//! batch) for `--duration` each on the same collector, to find where it
//! breaks; it stops after the first step that does not keep up.
//!
//! Run `scripts/bench-load.sh` (release build). Figures only: nothing here
//! asserts a timing.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::Parser;
use sonde_tests::load::{self, Plan, Tally};
use sonde_tests::measure::{cpu_seconds, percentile, rss_mib};
use sonde_tests::{Proc, World};

#[derive(Parser)]
#[command(about = "Simulated sonde agents against one collector, on loopback")]
struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Results per batch.
    #[arg(long, default_value_t = 20)]
    targets: usize,
    /// One batch per interval per agent.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Heartbeat interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// How long to send (per step).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Steps `AGENTSxTARGETS,...` (overrides `--agents` and `--targets`).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<String>,
    /// The collector binary to load (default: the one built next to this
    /// program); `scripts/bench-load.sh --compare` passes another build's.
    #[arg(long)]
    collector: Option<std::path::PathBuf>,
    /// More collector configuration (TOML appended to what this program
    /// writes), e.g. `--collector-config '[analysis]
    /// checkpoint = "5s"'` to measure a setting.
    #[arg(long, default_value = "")]
    collector_config: String,
}

struct Step {
    agents: usize,
    targets: usize,
}

/// What one step measured.
struct Outcome {
    kept_up: bool,
    clean: bool,
}

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
async fn step(
    world: &Arc<World>,
    collector: &Proc,
    args: &Args,
    s: &Step,
    index: usize,
) -> Outcome {
    let pid = collector.pid().as_raw();
    let tenant = format!("load{index}");
    load::issue(world, &tenant, s.agents);
    let plan = Arc::new(Plan {
        tenant,
        targets: s.targets,
        interval: args.interval,
        heartbeat: args.heartbeat,
        duration: args.duration,
        drain: Duration::from_secs(60),
    });
    let offered = s.agents as f64 * s.targets as f64 / args.interval.as_secs_f64();
    println!(
        "step {index}: {} agents × {} results every {:?} = {offered:.0} results/s offered, {:?}",
        s.agents, s.targets, args.interval, args.duration
    );
    let before_batches = world
        .collector_metric("sonde_collector_ingest_batches_total")
        .await;
    let before_dups = world
        .collector_metric("sonde_collector_ingest_duplicate_batches_total")
        .await;
    let tally = Arc::new(Tally::default());
    let (cpu0, own0) = (
        cpu_seconds(pid),
        cpu_seconds(std::process::id().cast_signed()),
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // Connect over 10 s at most, as agents coming up after a restart would.
    let gap = Duration::from_secs(10).checked_div(u32::try_from(s.agents).unwrap_or(1).max(1));
    for n in 0..s.agents {
        tasks.spawn(load::agent(world.clone(), n, plan.clone(), tally.clone()));
        tokio::time::sleep(gap.unwrap_or_default()).await;
    }
    let mut rss_max: f64 = 0.0;
    let mut samples = tokio::time::interval(Duration::from_secs(1));
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            _ = samples.tick() => {
                let (rss, _) = rss_mib(pid);
                rss_max = rss_max.max(rss);
                if last_report.elapsed() >= Duration::from_secs(30) {
                    last_report = Instant::now();
                    println!(
                        "  {:>4.0} s: {} sessions, {} batches acked of {} sent, RSS {rss:.0} MiB",
                        started.elapsed().as_secs_f64(),
                        tally.sessions.load(Relaxed),
                        tally.batches_acked.load(Relaxed),
                        tally.batches_sent.load(Relaxed),
                    );
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let own = cpu_seconds(std::process::id().cast_signed()) - own0;
    let (rss_now, rss_peak) = rss_mib(pid);
    let stored = world
        .collector_metric("sonde_collector_ingest_batches_total")
        .await
        - before_batches;
    let dups = world
        .collector_metric("sonde_collector_ingest_duplicate_batches_total")
        .await
        - before_dups;
    // How far behind the analysis is when the step ends (absent from
    // collectors older than the consumer registry: -1).
    let metrics = world.collector_metrics().await;
    let analysis_lag = sonde_tests::prom_value(
        &metrics,
        r#"sonde_collector_consumer_lag_seconds{consumer="analysis"}"#,
    )
    .unwrap_or(-1.0);
    let t = &tally;
    let sent = t.batches_sent.load(Relaxed);
    let acked = t.batches_acked.load(Relaxed);
    let results = t.results_acked.load(Relaxed);
    let errors = t.errors.load(Relaxed);
    let held = t.held_back.load(Relaxed);
    let unacked = t.unacked.load(Relaxed);
    let mut lat = t.latencies.lock().expect("lock").clone();
    println!(
        "  sessions {} of {}, heartbeats {}, errors {errors}",
        t.sessions.load(Relaxed),
        s.agents,
        t.heartbeats_sent.load(Relaxed)
    );
    for e in t.first_errors.lock().expect("lock").iter() {
        println!("    error: {e}");
    }
    println!(
        "  batches: sent {sent}, acknowledged {acked} (each once), unacknowledged at the end {unacked}, \
         held back (32 unacknowledged) {held}; collector stored {stored:.0}, duplicates {dups:.0}"
    );
    let rate = results as f64 / args.duration.as_secs_f64();
    println!(
        "  results acknowledged {results} = {rate:.0}/s ({:.1} % of offered)",
        rate / offered * 100.0
    );
    let (p50, p99, max) = (
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        percentile(&mut lat, 1.0),
    );
    println!(
        "  ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} batches",
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3,
        lat.len()
    );
    println!(
        "  collector CPU {:.2} cores; RSS max sampled {rss_max:.0} MiB, now {rss_now:.0} MiB, peak {rss_peak:.0} MiB; \
         load generator CPU {:.2} cores; analysis {analysis_lag:.1} s behind at the end",
        cpu / elapsed,
        own / elapsed
    );
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let clean =
        errors == 0 && unacked == 0 && acked == sent && stored as u64 == sent && dups == 0.0;
    let kept_up = clean && held == 0 && rate >= 0.95 * offered && p99 < 2.0;
    // One line for scripts (bench-load.sh --compare): name=value pairs.
    println!(
        "  RESULT step={index} agents={} targets={} offered_per_s={offered:.0} acked_per_s={rate:.0} \
         ack_p50_ms={:.1} ack_p99_ms={:.1} collector_cores={:.3} rss_max_mib={rss_max:.0} \
         analysis_lag_s={analysis_lag:.1} clean={clean} kept_up={kept_up}",
        s.agents,
        s.targets,
        p50 * 1e3,
        p99 * 1e3,
        cpu / elapsed,
    );
    println!(
        "  {}",
        match (clean, kept_up) {
            (true, true) => "kept up: nothing lost, nothing doubled",
            (true, false) =>
                "did NOT keep up (rate < 95 % of offered, batches held back or p99 ≥ 2 s); nothing lost",
            _ => "LOST, DOUBLED OR REFUSED something (see above)",
        }
    );
    Outcome { kept_up, clean }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let steps: Vec<Step> = if args.steps.is_empty() {
        vec![Step {
            agents: args.agents,
            targets: args.targets,
        }]
    } else {
        args.steps
            .iter()
            .map(|s| {
                let (a, t) = s.split_once(['x', '×']).expect("step is AGENTSxTARGETS");
                Step {
                    agents: a.parse().expect("agents"),
                    targets: t.parse().expect("targets"),
                }
            })
            .collect()
    };
    let world = Arc::new(World::new());
    let most = steps.iter().map(|s| s.agents).max().unwrap_or(1);
    // Each step's tenant may have every series it sends analysed (the
    // default quota, 20,000 series a tenant, would leave most of a large
    // step unanalysed and measure less than the collector's real work).
    let mut tenants = String::new();
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(
            tenants,
            "[[tenant]]\nname = \"load{i}\"\nmax-series = {}",
            (s.agents * s.targets).max(1) * 2
        );
    }
    world.collector_config(&format!(
        "[limits]\nconnections-per-certificate = 4\n\
         [heartbeat]\ninterval = \"{}\"\n{tenants}\n{}",
        humantime::format_duration(args.heartbeat),
        args.collector_config
    ));
    let collector = match &args.collector {
        Some(path) => world.start_collector_at(path, &[]).await,
        None => world.start_collector(&[]).await,
    };
    println!(
        "sonde-load: collector pid {} (embedded store), up to {most} agents, on loopback",
        collector.pid()
    );
    // Interrupted (Ctrl-C, SIGTERM): the collector goes too, and the test
    // directory with it (destructors do not run on a signal's default
    // action, so the exit is ours).
    let pid = collector.pid();
    let dir = world.dir().to_owned();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("sonde-load: interrupted; stopping the collector (pid {pid})");
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(130);
    });
    let mut clean = true;
    for (i, s) in steps.iter().enumerate() {
        let o = step(&world, &collector, &args, s, i).await;
        clean &= o.clean;
        if !o.kept_up {
            println!("stopping: step {i} is past what this collector keeps up with");
            break;
        }
    }
    // `exit` runs no destructors: stop the collector first, or it (and its
    // memory) would outlive this program.
    drop(collector);
    std::process::exit(i32::from(!clean));
}
