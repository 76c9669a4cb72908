//! Runs the probes of an agent: merges the config file's definitions with
//! the collector's assignment, keeps host names resolved, hands each engine
//! its target list (a change applies at once, without restart), and reports
//! names that fail to resolve as results.
//!
//! The ICMP sockets are opened when the first ping target appears; if they
//! cannot be opened (no `CAP_NET_RAW` and no `ping_group_range`), every
//! ping reports a send error naming the reason instead of going silent.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sonde_proto::v1::Record;
use sonde_runtime::probes::Probes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::emit::Emitter;
use super::icmp::{self, Network, PingTarget, Reply};
use super::icmp_net::IcmpSockets;
use super::plan::{self, Plan};
use super::resolve::{Names, Resolve};
use super::schedule::idle_wake;
use super::tcp::{self, SystemConnector};
use super::trace;
use super::trace_net::SystemTracer;
use crate::replace_if_changed;

/// What the runner runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The config file's definitions.
    pub local: Probes,
    /// The collector's assignment.
    pub central: Probes,
    /// Re-resolution interval of host names.
    pub refresh: Duration,
}

/// A network whose ICMP sockets could not be opened: every send fails
/// with the reason.
struct NoSockets(String);

impl Network for NoSockets {
    fn send(&self, _: IpAddr, _: u16, _: &[u8]) -> io::Result<i64> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            self.0.clone(),
        ))
    }
    fn recv(&self) -> impl Future<Output = io::Result<Reply>> + Send + '_ {
        std::future::pending()
    }
    fn now_unix_nanos(&self) -> i64 {
        sonde_runtime::clock::unix_nanos()
    }
}

/// The engines' target lists.
struct Engines {
    ping: watch::Sender<Arc<Vec<PingTarget>>>,
    tcp: watch::Sender<Arc<Vec<tcp::TcpTarget>>>,
    trace: watch::Sender<Arc<Vec<trace::TraceTarget>>>,
    ping_started: bool,
    tasks: JoinSet<()>,
    records: mpsc::Sender<Record>,
    shutdown: CancellationToken,
}

impl Engines {
    fn start(records: mpsc::Sender<Record>, shutdown: CancellationToken) -> Self {
        let mut tasks = JoinSet::new();
        let (tcp, tcp_rx) = watch::channel(Arc::new(Vec::new()));
        tasks.spawn(tcp::run(
            SystemConnector,
            tcp_rx,
            Emitter::new(records.clone(), "tcp"),
            shutdown.clone(),
        ));
        let (trace, trace_rx) = watch::channel(Arc::new(Vec::new()));
        tasks.spawn(trace::run(
            SystemTracer::default(),
            trace_rx,
            Emitter::new(records.clone(), "trace"),
            shutdown.clone(),
        ));
        Self {
            ping: watch::channel(Arc::new(Vec::new())).0,
            tcp,
            trace,
            ping_started: false,
            tasks,
            records,
            shutdown,
        }
    }

    fn apply(&mut self, plan: Plan) {
        if !plan.ping.is_empty() && !self.ping_started {
            self.ping_started = true;
            let (tx, rx) = watch::channel(Arc::new(Vec::new()));
            self.ping = tx;
            let emit = Emitter::new(self.records.clone(), "ping");
            let shutdown = self.shutdown.clone();
            match IcmpSockets::open() {
                Ok(net) => self.tasks.spawn(icmp::run(net, rx, emit, shutdown)),
                Err(e) => {
                    tracing::error!(error = %e, "ping targets cannot be probed");
                    let net = NoSockets(e.to_string());
                    self.tasks.spawn(icmp::run(net, rx, emit, shutdown))
                }
            };
        }
        replace_if_changed(&self.ping, plan.ping);
        replace_if_changed(&self.tcp, plan.tcp);
        replace_if_changed(&self.trace, plan.trace);
    }
}

/// Runs until `shutdown`, then waits for the engines to finish.
pub async fn run<R: Resolve>(
    mut inputs: watch::Receiver<Arc<Inputs>>,
    resolver: R,
    records: mpsc::Sender<Record>,
    shutdown: CancellationToken,
) {
    let mut engines = Engines::start(records.clone(), shutdown.clone());
    let mut resolve_emit = Emitter::new(records, "resolve");
    let mut names = Names::default();
    let mut current = inputs.borrow_and_update().clone();
    let mut probes = current.local.merged(&current.central);
    names.track(&plan::hostnames(&probes), Instant::now());
    let mut rebuild = true;
    loop {
        if names.next_due().is_some_and(|t| t <= Instant::now()) {
            let refreshed = tokio::select! {
                () = shutdown.cancelled() => break,
                r = names.refresh(&resolver, current.refresh, Instant::now()) => r,
            };
            let now_ns = sonde_runtime::clock::unix_nanos();
            for (host, error) in &refreshed.failed {
                for record in plan::resolve_failures(&probes, host, error, now_ns) {
                    resolve_emit.push(record);
                }
            }
            for host in &refreshed.resolved {
                for record in plan::outside_grants(&probes, host, &names, now_ns) {
                    resolve_emit.push(record);
                }
            }
            resolve_emit.flush_gap(now_ns);
            rebuild |= refreshed.changed;
        }
        if rebuild {
            rebuild = false;
            engines.apply(plan::build(&probes, &names));
        }
        let wake = names.next_due().unwrap_or_else(idle_wake);
        tokio::select! {
            () = shutdown.cancelled() => break,
            Ok(()) = inputs.changed() => {
                current = inputs.borrow_and_update().clone();
                probes = current.local.merged(&current.central);
                names.track(&plan::hostnames(&probes), Instant::now());
                rebuild = true;
                tracing::info!(
                    ping = probes.ping.len(),
                    tcp = probes.tcp.len(),
                    trace = probes.trace.len(),
                    "probe definitions changed"
                );
            }
            () = sleep_until(wake) => {}
        }
    }
    while engines.tasks.join_next().await.is_some() {}
}
