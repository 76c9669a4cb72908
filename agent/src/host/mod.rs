//! Host facts: what this host looks like from inside and from outside —
//! its public IP ([`public_ip`]), its listening ports rated by risk
//! ([`ports`], [`risk`]), what is open on addresses checked from here
//! ([`remote`]) and its system metrics ([`metrics`]). Each runs on its own
//! interval and reports records through the same batcher and spool as the
//! probes, so facts survive a collector outage like every result.
//!
//! [`run`] restarts the fact tasks when the configuration changes (a
//! SIGHUP reload): the port inventory is then reported afresh.

pub mod config;
pub mod metrics;
pub mod ports;
pub mod public_ip;
pub mod remote;
pub mod risk;

use std::path::Path;
use std::sync::Arc;

use sonde_proto::v1::{ListeningPorts, Record, record};
use sonde_runtime::clock::unix_nanos;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use config::HostConfig;

use crate::probe::emit::Emitter;
use crate::probe::resolve::SystemResolver;
use crate::probe::tcp::SystemConnector;

/// Where the kernel's tables are read.
const PROC: &str = "/proc";

/// Runs the fact tasks of the current `config` until `shutdown`.
pub async fn run(
    mut config: watch::Receiver<Arc<HostConfig>>,
    records: mpsc::Sender<Record>,
    shutdown: CancellationToken,
) {
    loop {
        let current = config.borrow_and_update().clone();
        let stop = shutdown.child_token();
        let mut tasks = start(&current, &records, &stop);
        tokio::select! {
            () = shutdown.cancelled() => {}
            Ok(()) = config.changed() => {}
        }
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        if shutdown.is_cancelled() {
            return;
        }
        tracing::info!("host-fact settings changed; restarting them");
    }
}

fn start(
    config: &HostConfig,
    records: &mpsc::Sender<Record>,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let emitter = |name| Emitter::new(records.clone(), name);
    if config.metrics.enabled {
        let c = config.metrics.clone();
        tasks.spawn(metrics_task(c, emitter("metrics"), stop.clone()));
    }
    if config.ports.enabled {
        let c = config.ports.clone();
        tasks.spawn(ports_task(c, emitter("ports"), stop.clone()));
    }
    if config.public_ip.enabled && !config.public_ip.sources.is_empty() {
        let c = config.public_ip.clone();
        tasks.spawn(public_ip_task(c, emitter("public-ip"), stop.clone()));
    }
    for check in &config.remote_check {
        for target in &check.targets {
            let target = remote::Target::parse(target).expect("validated with the config");
            tasks.spawn(remote_task(
                check.clone(),
                target,
                emitter("remote-check"),
                stop.clone(),
            ));
        }
    }
    tasks
}

/// A tick every `period`, the first at once; a late tick is not caught up.
fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

fn push(emit: &mut Emitter, kind: record::Kind) {
    emit.push(Record { kind: Some(kind) });
    emit.flush_gap(unix_nanos());
}

async fn metrics_task(c: config::MetricsConfig, mut emit: Emitter, stop: CancellationToken) {
    let mut sampler = Some(metrics::Sampler::new(Path::new(PROC), c.ignore_fs));
    let mut tick = ticker(c.interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // statvfs on a hung network mount blocks: off the runtime.
        let mut s = sampler.take().expect("sampler is back after each round");
        let (back, m) = tokio::task::spawn_blocking(move || {
            let m = s.sample(unix_nanos());
            (s, m)
        })
        .await
        .expect("metrics sampler panicked");
        sampler = Some(back);
        if let Some(m) = m {
            if !m.error.is_empty() {
                tracing::debug!(error = %m.error, "some system metrics unreadable");
            }
            push(&mut emit, record::Kind::Metrics(m));
        }
    }
}

/// A snapshot compared without its time stamp.
fn same_ports(a: &ListeningPorts, b: &ListeningPorts) -> bool {
    a.ports == b.ports && a.error == b.error
}

async fn ports_task(c: config::PortsConfig, mut emit: Emitter, stop: CancellationToken) {
    let table = Arc::new(risk::Table::new(&c.risk));
    let mut owners = Some(ports::Owners::default());
    let mut last: Option<ListeningPorts> = None;
    let mut tick = ticker(c.interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (table, mut o) = (
            table.clone(),
            owners.take().expect("owners are back after each round"),
        );
        let (back, snap) = tokio::task::spawn_blocking(move || {
            let snap = ports::snapshot(Path::new(PROC), &table, &mut o, unix_nanos());
            (o, snap)
        })
        .await
        .expect("port inventory panicked");
        owners = Some(back);
        if last.as_ref().is_some_and(|l| same_ports(l, &snap)) {
            continue;
        }
        if !snap.error.is_empty() {
            tracing::warn!(error = %snap.error, "socket tables partly unreadable");
        }
        tracing::debug!(ports = snap.ports.len(), "listening ports changed");
        last = Some(snap.clone());
        push(&mut emit, record::Kind::Ports(snap));
    }
}

async fn public_ip_task(c: public_ip::PublicIpConfig, mut emit: Emitter, stop: CancellationToken) {
    let lookup = match public_ip::Lookup::new() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "public-IP lookups cannot run");
            return;
        }
    };
    let mut tick = ticker(c.interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for family in c.families() {
            let r = tokio::select! {
                () = stop.cancelled() => return,
                r = lookup.run(&c, family, unix_nanos()) => r,
            };
            if r.address.is_empty() {
                tracing::warn!(family = family.as_str(), status = ?r.status(), answers = ?r.answers, "public-IP lookup without an address");
            }
            push(&mut emit, record::Kind::PublicIp(r));
        }
    }
}

async fn remote_task(
    c: remote::RemoteCheck,
    target: remote::Target,
    mut emit: Emitter,
    stop: CancellationToken,
) {
    let mut tick = ticker(c.interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let r = tokio::select! {
            () = stop.cancelled() => return,
            r = remote::run_once(&SystemConnector, &SystemResolver, &target, c.timeout, c.rate) => r,
        };
        push(&mut emit, record::Kind::RemoteCheck(r));
    }
}
