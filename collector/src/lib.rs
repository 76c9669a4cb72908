//! sonde-collector as a library: [`Collector::start`] takes bound listeners
//! and a config and runs until [`Collector::shutdown`]; tests call it
//! directly, the binary wraps it in [`daemon::run`] (signals, systemd).

pub mod agent_settings;
pub mod checks;
pub mod cli;
pub mod config;
pub mod consumers;
pub mod daemon;
pub mod error;
pub mod expiry;
pub mod ingest;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod observation;
pub mod read;
pub mod schema;
pub mod store;
pub mod targets;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sonde_proto::v1::agent_service_server::AgentServiceServer;
use sonde_runtime::tls::{ServerTls, TlsError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use consumers::{alert, analysis, export, facts};
use ingest::{listener, liveness, session};
use liveness::Liveness;
use read::{api, grpc_query, ui};
use session::{AgentSessions, Sessions};
use store::{Store, StoreError};

/// State shared by the gRPC service, the API and the daemon loop.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Store,
    /// The ingest log, and its one writer (group commit).
    log: log::SqliteLog,
    writer: log::writer::Writer,
    /// The log's consumers and their durable positions.
    consumers: log::consumer::Registry,
    liveness: Liveness,
    settings: watch::Receiver<Arc<Config>>,
    sessions: Sessions,
    shutdown: CancellationToken,
    /// The InfluxDB exporter, when `[influxdb]` is configured.
    export: Option<export::Handle>,
    /// The analysis' live state.
    analysis: analysis::Handle,
    /// Ingest counters for `/metrics`.
    ingest: metrics::Ingest,
    /// The alerting tasks' handles.
    alert: alert::Handle,
    /// The probe targets managed through the API.
    targets: targets::Published,
    /// Per-agent settings changed through the API.
    agent_settings: agent_settings::Published,
    /// Slots for open live streams.
    live_slots: Arc<api::live::Slots>,
    /// What the listener and sessions refused or slowed down.
    refusals: Arc<metrics::Refusals>,
    /// Time left on the collector's certificates, for `/metrics`.
    certificates: Arc<expiry::Stats>,
    /// The heartbeat checks' monitor.
    checks: checks::monitor::Monitor,
    /// What the ping listener refused before looking a check up.
    ping_refused: Arc<checks::ping::Refused>,
}

impl Shared {
    /// Whether the store answers and the liveness task is making progress.
    async fn healthy(&self, timeout: Duration) -> bool {
        let store_ok = tokio::time::timeout(timeout, self.store.run(Store::ping))
            .await
            .is_ok_and(|r| r.is_ok());
        store_ok && self.liveness.ping(timeout).await && self.checks.sync(timeout).await
    }
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Influx(#[from] export::influx::InfluxError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The gRPC services (agent sessions, queries, health, reflection) as one
/// router.
async fn grpc_routes(shared: &Arc<Shared>) -> Result<axum::Router, StartError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServiceServer<AgentSessions>>()
        .await;
    health_reporter
        .set_serving::<sonde_proto::v1::query_service_server::QueryServiceServer<grpc_query::Queries>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sonde_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| TlsError::Config(format!("reflection: {e}")))?;
    let agent_service = AgentServiceServer::new(AgentSessions::new(shared.clone()))
        .max_decoding_message_size(sonde_proto::MAX_MESSAGE_BYTES)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let query_service = sonde_proto::v1::query_service_server::QueryServiceServer::new(
        grpc_query::Queries::new(shared.clone()),
    )
    .send_compressed(tonic::codec::CompressionEncoding::Gzip)
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let grpc = tonic::service::Routes::new(agent_service)
        .add_service(query_service)
        .add_service(health_service)
        .add_service(reflection)
        .prepare()
        .into_axum_router();
    Ok(grpc)
}

/// How often consumed ingest-log entries are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Deletes ingest-log entries every registered consumer has passed once
/// they are older than `keep`, in bounded steps so ingest is never held up
/// long.
async fn prune_log(
    log: log::SqliteLog,
    consumers: log::consumer::Registry,
    keep: Duration,
    shutdown: CancellationToken,
) {
    use log::IngestLog as _;
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(upto) = consumers.passed_by_all() else {
            continue;
        };
        loop {
            let cutoff = store::now_ms().saturating_sub(keep_ms);
            match log.prune(upto, cutoff, 10_000).await {
                Ok(10_000) => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot prune the ingest log");
                    break;
                }
            }
        }
    }
}

/// Loads the analysis state and starts following the log with it; after a
/// panic it is loaded again behind the same handle.
async fn start_analysis(
    config: &watch::Receiver<Arc<Config>>,
    targets: &targets::Published,
    store: &Store,
    cursor: Arc<log::consumer::Cursor>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<analysis::Handle, StartError> {
    let (settings, keep) = {
        let c = config.borrow();
        (c.analysis, c.retention.aggregates)
    };
    let load = {
        let (store, config, targets) = (store.clone(), config.clone(), targets.subscribe());
        move || {
            let (s, rx, defs) = (store.clone(), config.clone(), targets.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    analysis::Analyzer::load(&s, settings, analysis::Clock::new())
                        .map(|a| a.with_retention(keep).with_config(rx).with_targets(defs))
                })
                .await
                .map_err(|e| StoreError::Join(e.to_string()))?
            }
        }
    };
    let first = load().await?;
    let handle = first.handle();
    let mut first = Some(first);
    let behind = handle.clone();
    let make = move || {
        let next = first.take();
        let load = load.clone();
        let behind = behind.clone();
        async move {
            let a = if let Some(a) = next {
                a
            } else {
                // After a checkpoint the panicked one left writing.
                let _written = behind.writing.lock().await;
                load().await?.behind(&behind)
            };
            Ok(analysis::Follower::new(a))
        }
    };
    tasks.spawn(log::consumer::drive(
        analysis::CURSOR,
        log::SqliteLog::new(store.clone()),
        cursor,
        make,
        shutdown.clone(),
    ));
    Ok(handle)
}

/// Starts the other ingest-log consumers (host facts, and the exporter
/// when configured) and the log pruner that follows them all.
fn spawn_consumers(
    config: &Config,
    store: &Store,
    consumers: &log::consumer::Registry,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Option<export::Handle>, StartError> {
    let facts_store = store.clone();
    tasks.spawn(log::consumer::drive(
        facts::CURSOR,
        log::SqliteLog::new(store.clone()),
        consumers.register(facts::CURSOR),
        move || facts::Facts::open(facts_store.clone()),
        shutdown.clone(),
    ));
    let export = match &config.influxdb {
        Some(influx) => {
            let sink = export::influx::InfluxSink::new(influx)?;
            let exporter = export::Exporter::new(
                store.clone(),
                sink,
                export::Settings::from(influx),
                shutdown.clone(),
            );
            let handle = exporter.handle();
            tasks.spawn(exporter.run_with(consumers.register(export::CURSOR)));
            Some(handle)
        }
        None => None,
    };
    tasks.spawn(prune_log(
        log::SqliteLog::new(store.clone()),
        consumers.clone(),
        config.retention.ingest_log,
        shutdown.clone(),
    ));
    Ok(export)
}

/// The collector's health as the dead-man's switch sees it.
struct DeadmanHealth(Arc<Shared>);

impl alert::deadman::Health for DeadmanHealth {
    async fn healthy(&self) -> bool {
        let no_data = self.0.alert.no_data(&self.0.settings.borrow());
        !no_data && self.0.healthy(Duration::from_secs(5)).await
    }
}

/// Starts the alert engine, the delivery workers and the dead-man's
/// switch.
fn spawn_alerting(
    shared: &Arc<Shared>,
    settings: &watch::Receiver<Arc<Config>>,
    tasks: &mut JoinSet<()>,
) {
    let h = &shared.alert;
    tasks.spawn(alert::run(
        shared.store.clone(),
        settings.clone(),
        h.clone(),
        shared.shutdown.clone(),
    ));
    tasks.spawn(alert::notify::run(
        shared.store.clone(),
        settings.clone(),
        h.clock,
        h.deliver.clone(),
        h.stats.clone(),
        shared.shutdown.clone(),
    ));
    tasks.spawn(alert::deadman::run(
        settings.clone(),
        DeadmanHealth(shared.clone()),
        h.stats.clone(),
        shared.shutdown.clone(),
    ));
}

/// Binds the configured mTLS and health listeners.
pub async fn bind(config: &Config) -> Result<(TcpListener, Option<TcpListener>), StartError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let main = bind(config.listen).await?;
    let health = match config.health_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    Ok((main, health))
}

/// Serves `app` on the mTLS listener, with the certificate-expiry watcher
/// it reports to.
fn spawn_listener(
    listener: TcpListener,
    app: axum::Router,
    tls: watch::Receiver<ServerTls>,
    shared: &Arc<Shared>,
    settings: &watch::Receiver<Arc<Config>>,
    tasks: &mut JoinSet<()>,
) {
    let (expiring, expiry_task) = expiry::spawn(
        shared.store.clone(),
        settings.clone(),
        shared.certificates.clone(),
        shared.shutdown.clone(),
    );
    tasks.spawn(async move {
        let _ = expiry_task.await;
    });
    let cx = listener::Context {
        tls,
        settings: settings.clone(),
        refusals: shared.refusals.clone(),
        expiring,
        shutdown: shared.shutdown.clone(),
    };
    tasks.spawn(listener::serve(listener, app, cx));
}

/// Serves the plain health listener (`/healthz`, `/metrics`); its address.
fn spawn_health(
    health: TcpListener,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
) -> Option<SocketAddr> {
    let addr = health.local_addr().ok();
    let router = api::health_router(shared.clone());
    let stop = shared.shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(health, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health listener failed");
        }
    });
    addr
}

/// Starts missing-heartbeat detection, with each agent's monitoring
/// schedule read from its settings and the current config at every
/// decision.
fn spawn_liveness(
    store: Store,
    known: Vec<(store::AgentKey, store::AgentState, u64)>,
    settings: &watch::Receiver<Arc<Config>>,
    overrides: &agent_settings::Published,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Liveness {
    let restart_grace = settings.borrow().heartbeat.restart_grace;
    let (config, overrides) = (settings.clone(), overrides.subscribe());
    let schedules: liveness::Schedules = Arc::new(move |key| {
        agent_settings::schedule(&config.borrow(), overrides.borrow().get(key), key)
    });
    let (liveness, task) = Liveness::spawn_with(
        store,
        known,
        restart_grace,
        analysis::Clock::new(),
        schedules,
        shutdown.clone(),
    );
    tasks.spawn(async move {
        let _ = task.await;
    });
    liveness
}

/// Starts the heartbeat checks' monitor.
async fn spawn_checks(
    store: &Store,
    settings: &watch::Receiver<Arc<Config>>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<checks::monitor::Monitor, StartError> {
    let (monitor, task) = checks::monitor::Monitor::spawn(
        store.clone(),
        settings.clone(),
        analysis::Clock::new(),
        shutdown.clone(),
    )
    .await?;
    tasks.spawn(async move {
        let _ = task.await;
    });
    Ok(monitor)
}

/// Binds and serves the ping listener when `ping-listen` is set; its
/// address and TLS configuration channel (for reloads).
async fn spawn_ping(
    shared: &Arc<Shared>,
    settings: &watch::Receiver<Arc<Config>>,
    tasks: &mut JoinSet<()>,
) -> Result<
    (
        Option<SocketAddr>,
        Option<watch::Sender<Arc<rustls::ServerConfig>>>,
    ),
    StartError,
> {
    let (addr, with_tls, files) = {
        let c = settings.borrow();
        (c.ping_listen, c.ping_tls, c.tls_files())
    };
    let Some(addr) = addr else {
        return Ok((None, None));
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let tls = if with_tls {
        Some(watch::Sender::new(
            sonde_runtime::tls::public_server_config(&files)?,
        ))
    } else {
        tracing::warn!(listen = %local, "ping listener speaks plain HTTP (ping-tls = false)");
        None
    };
    let cx = checks::ping::Context {
        monitor: shared.checks.clone(),
        tls: tls.as_ref().map(watch::Sender::subscribe),
        settings: settings.clone(),
        refused: shared.ping_refused.clone(),
        shutdown: shared.shutdown.clone(),
    };
    tasks.spawn(checks::ping::serve(listener, cx));
    Ok((Some(local), tls))
}

/// What a start reads from the store: the store, every agent's liveness,
/// the managed targets and the agents' settings.
type Opened = (
    Store,
    Vec<(store::AgentKey, store::AgentState, u64)>,
    Vec<targets::ManagedTarget>,
    std::collections::HashMap<store::AgentKey, agent_settings::Settings>,
);

/// Opens the store in `dir` and reads what a start needs (every session
/// of before is over: all agents are marked disconnected).
async fn open_store(dir: std::path::PathBuf) -> Result<Opened, StoreError> {
    tokio::task::spawn_blocking(move || {
        let store = Store::open_dir(&dir)?;
        store.all_disconnected()?;
        let known = store.liveness_snapshot()?;
        let managed = targets::load(&store)?;
        let overrides = agent_settings::load(&store)?;
        Ok((store, known, managed, overrides))
    })
    .await
    .map_err(|e| StoreError::Join(e.to_string()))?
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    shared: Arc<Shared>,
    settings: watch::Sender<Arc<Config>>,
    tls: watch::Sender<ServerTls>,
    tasks: JoinSet<()>,
    local_addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    ping_addr: Option<SocketAddr>,
    /// The ping listener's TLS configuration (`None`: plain HTTP or no
    /// ping listener).
    ping_tls: Option<watch::Sender<Arc<rustls::ServerConfig>>>,
    app: axum::Router,
}

impl Collector {
    /// Opens the store and serves on the given listeners.
    pub async fn start(
        config: Config,
        listener: TcpListener,
        health: Option<TcpListener>,
    ) -> Result<Self, StartError> {
        let tls_config = sonde_runtime::tls::server_config(&config.tls_files(), &config.tls.crl)?;
        let (store, known, managed, overrides) = open_store(config.state_dir.clone()).await?;

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // Every consumer is registered before the pruner starts: one not
        // started yet holds pruning back (the analysis may take a while to
        // load).
        let consumers = log::consumer::Registry::default();
        let analysis_cursor = consumers.register(analysis::CURSOR);
        let export = spawn_consumers(&config, &store, &consumers, &shutdown, &mut tasks)?;
        let (settings_tx, settings_rx) = watch::channel(Arc::new(config));
        let overrides = watch::Sender::new(Arc::new(overrides));
        let liveness = spawn_liveness(
            store.clone(),
            known,
            &settings_rx,
            &overrides,
            &shutdown,
            &mut tasks,
        );
        let managed = watch::Sender::new(Arc::new(managed));
        let analysis = start_analysis(
            &settings_rx,
            &managed,
            &store,
            analysis_cursor,
            &shutdown,
            &mut tasks,
        )
        .await?;
        let checks = spawn_checks(&store, &settings_rx, &shutdown, &mut tasks).await?;
        let log = log::SqliteLog::new(store.clone());
        // Ends when the last handle (in `shared`) goes.
        let (writer, _) = log::writer::Writer::spawn(log.clone());
        let shared = Arc::new(Shared {
            store,
            log,
            writer,
            consumers,
            liveness,
            settings: settings_rx.clone(),
            sessions: Sessions::new(),
            shutdown: shutdown.clone(),
            export,
            analysis,
            ingest: metrics::Ingest::default(),
            alert: alert::Handle::new(analysis::Clock::new()),
            targets: managed,
            agent_settings: overrides,
            live_slots: Arc::default(),
            refusals: Arc::default(),
            certificates: Arc::default(),
            checks,
            ping_refused: Arc::default(),
        });
        spawn_alerting(&shared, &settings_rx, &mut tasks);
        tasks.spawn(targets::run_retention(shared.clone()));

        let grpc = grpc_routes(&shared).await?;
        let app = grpc
            .merge(ui::http(&shared))
            .fallback(api::not_found)
            .layer(axum::middleware::from_fn(api::json_errors::json_errors));

        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: shared.settings.borrow().listen,
            source,
        })?;
        let (tls_tx, tls_rx) = watch::channel(tls_config);
        spawn_listener(
            listener,
            app.clone(),
            tls_rx,
            &shared,
            &settings_rx,
            &mut tasks,
        );

        let health_addr = health.and_then(|h| spawn_health(h, &shared, &mut tasks));
        let (ping_addr, ping_tls) = spawn_ping(&shared, &settings_rx, &mut tasks).await?;
        tracing::info!(
            message_id = sonde_runtime::logging::ids::STARTED,
            version = env!("CARGO_PKG_VERSION"),
            listen = %local_addr,
            health = ?health_addr,
            ping = ?ping_addr,
            "collector started"
        );
        Ok(Self {
            shared,
            settings: settings_tx,
            tls: tls_tx,
            tasks,
            local_addr,
            health_addr,
            ping_addr,
            ping_tls,
            app,
        })
    }

    /// Everything the listener serves (gRPC, API, UI) without TLS, for
    /// in-process callers such as the fuzz targets. A request must carry a
    /// [`peer::Peer`] extension, which the listener adds after the handshake;
    /// without one every handler refuses it.
    #[doc(hidden)]
    pub fn router(&self) -> axum::Router {
        self.app.clone()
    }

    /// The mTLS listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health listener's address, if enabled.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// The ping listener's address, if enabled.
    pub fn ping_addr(&self) -> Option<SocketAddr> {
        self.ping_addr
    }

    /// Agents connected now.
    pub fn connected_agents(&self) -> usize {
        self.shared.sessions.connected()
    }

    /// Applies a new config: TLS material for new connections, heartbeat
    /// and access settings at once. Listen addresses and the state
    /// directory need a restart. On error nothing changes.
    pub fn reload(&self, config: Config) -> Result<(), TlsError> {
        let tls = sonde_runtime::tls::server_config(&config.tls_files(), &config.tls.crl)?;
        let ping_tls = match &self.ping_tls {
            Some(_) => Some(sonde_runtime::tls::public_server_config(
                &config.tls_files(),
            )?),
            None => None,
        };
        let current = self.shared.settings.borrow().clone();
        if config.listen != current.listen
            || config.health_listen != current.health_listen
            || config.ping_listen != current.ping_listen
            || config.ping_tls != current.ping_tls
            || config.state_dir != current.state_dir
            || config.influxdb != current.influxdb
            || config.retention != current.retention
            || config.analysis != current.analysis
        {
            tracing::warn!(
                "listen addresses, ping-tls, state-dir, [influxdb], [retention] and [analysis] changes take effect only after a restart"
            );
        }
        self.tls.send_replace(tls);
        if let (Some(tx), Some(c)) = (&self.ping_tls, ping_tls) {
            tx.send_replace(c);
        }
        self.settings.send_replace(Arc::new(config));
        // Alerting applies a changed schedule to held-back groups at once.
        self.shared.alert.kick.notify_one();
        tracing::info!(
            message_id = sonde_runtime::logging::ids::RELOADED,
            "configuration reloaded"
        );
        Ok(())
    }

    /// The InfluxDB exporter's state and lag (`None` without `[influxdb]`).
    pub async fn export_status(&self) -> Result<Option<export::Status>, StoreError> {
        let Some(handle) = self.shared.export.clone() else {
            return Ok(None);
        };
        self.shared
            .store
            .run(move |s| handle.status(s).map(Some))
            .await
    }

    /// Whether the collector's store and detector are responsive.
    pub async fn healthy(&self, timeout: Duration) -> bool {
        self.shared.healthy(timeout).await
    }

    /// Stops accepting, ends sessions, drains connections, stops tasks.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("collector stopped");
    }
}
