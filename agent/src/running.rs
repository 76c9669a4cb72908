//! The agent's parts started together: spool, batcher, probe runner, host
//! facts and the collector session, like `Collector::start` on the other
//! side. The daemon (`daemon.rs`) adds signals, systemd and the watchdog
//! around it; tests start one in their own process.
//!
//! [`Agent::work`] is polled by the owner rather than spawned, so the
//! daemon's watchdog ping comes from the task that does the work: if that
//! task wedges, the pings stop and systemd restarts the agent.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sonde_proto::v1::Record;
use sonde_runtime::probes::Probes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::assignment;
use crate::config::Loaded;
use crate::host::config::HostConfig;
use crate::outbox::Outbox;
use crate::probe::resolve::SystemResolver;
use crate::probe::runner::{self, Inputs};
use crate::spool::{Spool, SpoolError};
use crate::status::AgentStatus;

/// How long each part may take to finish at shutdown.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Results waiting for the batcher (a second of a busy agent).
const RECORDS_QUEUE: usize = 65_536;

/// Why an agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// What produces results besides [`Agent::records`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The probe engines (the config's probes and the collector's
    /// assignment) and the host facts: what the daemon runs.
    Probes,
    /// Nothing: results come only from whoever holds [`Agent::records`]
    /// (tests that feed records themselves and must not send probes).
    External,
}

/// A running agent.
pub struct Agent {
    config: watch::Sender<Arc<Loaded>>,
    inputs: watch::Sender<Arc<Inputs>>,
    host: watch::Sender<Arc<HostConfig>>,
    assigned: watch::Receiver<Arc<Probes>>,
    /// Where the collector's assignment is kept across restarts (`None`
    /// when probes do not run: it is not this agent's to keep).
    assigned_path: Option<PathBuf>,
    status: watch::Receiver<AgentStatus>,
    records: Option<mpsc::Sender<Record>>,
    shutdown: CancellationToken,
    session: Pin<Box<dyn Future<Output = ()> + Send>>,
    session_done: bool,
    /// Producers first, the batcher last: when the last producer is gone
    /// the batcher flushes into the spool.
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

/// What the probe runner runs, from the config and the assignment.
fn inputs(loaded: &Loaded, assigned: &Probes) -> Inputs {
    Inputs {
        local: loaded.config.probes(),
        central: assigned.clone(),
        refresh: loaded.config.resolve.refresh,
    }
}

/// Opens (or recovers) the spool in the state directory.
fn open_spool(loaded: &Loaded) -> Result<Spool, StartError> {
    let state_dir = &loaded.config.state_dir;
    std::fs::create_dir_all(state_dir).map_err(|source| StartError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    let (spool, recovery) = Spool::open(&state_dir.join("spool"), loaded.spool_limits())?;
    let stats = spool.stats();
    tracing::info!(
        spool_id = spool.spool_id(),
        unacked_batches = stats.unacked_batches,
        bytes = stats.bytes,
        discarded_bytes = recovery.discarded_bytes,
        "spool opened"
    );
    Ok(spool)
}

impl Agent {
    /// Starts every part of the agent with `loaded` on the current tokio
    /// runtime: what `sonde-agent` runs.
    pub fn start(loaded: Loaded) -> Result<Self, StartError> {
        Self::start_with(loaded, Feed::Probes)
    }

    /// Starts the agent with `feed` producing its results.
    pub fn start_with(loaded: Loaded, feed: Feed) -> Result<Self, StartError> {
        let outbox = Outbox::new(open_spool(&loaded)?);
        let (records_tx, records_rx) = mpsc::channel(RECORDS_QUEUE);
        let batcher = tokio::spawn(crate::batcher::run(
            records_rx,
            outbox.clone(),
            loaded.batch_limits(),
        ));
        let shutdown = CancellationToken::new();
        let state_dir = loaded.config.state_dir.clone();
        let (assigned_path, stored) = match feed {
            Feed::Probes => {
                let path = assignment::path(&state_dir);
                let stored = assignment::load(&path);
                (Some(path), stored)
            }
            Feed::External => (None, Probes::default()),
        };
        let (assigned_tx, mut assigned_rx) = watch::channel(Arc::new(stored));
        let (inputs_tx, inputs_rx) =
            watch::channel(Arc::new(inputs(&loaded, &assigned_rx.borrow_and_update())));
        let (host_tx, host_rx) = watch::channel(Arc::new(loaded.config.host()));
        let mut tasks = Vec::new();
        if feed == Feed::Probes {
            tasks.push((
                "probes",
                tokio::spawn(runner::run(
                    inputs_rx,
                    SystemResolver,
                    records_tx.clone(),
                    shutdown.clone(),
                )),
            ));
            tasks.push((
                "host facts",
                tokio::spawn(crate::host::run(
                    host_rx,
                    records_tx.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        tasks.push(("batcher", batcher));
        let (config_tx, config_rx) = watch::channel(Arc::new(loaded));
        let (status_tx, status_rx) = watch::channel(AgentStatus::Starting);
        let session = Box::pin(crate::run(
            config_rx,
            outbox,
            status_tx,
            assigned_tx,
            shutdown.clone(),
        ));
        Ok(Self {
            config: config_tx,
            inputs: inputs_tx,
            host: host_tx,
            assigned: assigned_rx,
            assigned_path,
            status: status_rx,
            records: Some(records_tx),
            shutdown,
            session,
            session_done: false,
            tasks,
        })
    }

    /// Drives the collector session and follows the collector's probe
    /// assignment (kept in the state directory, handed to the probes);
    /// returns when the session has ended (after [`Agent::stop`]).
    /// Cancel-safe: polled again, it carries on where it was.
    pub async fn work(&mut self) {
        while !self.session_done {
            tokio::select! {
                () = &mut self.session => self.session_done = true,
                Ok(()) = self.assigned.changed() => {
                    let assigned = self.assigned.borrow_and_update().clone();
                    if let Some(path) = &self.assigned_path
                        && let Err(e) = assignment::store(path, &assigned)
                    {
                        tracing::warn!(path = %path.display(), error = %e, "cannot store the probe assignment");
                    }
                    crate::replace_if_changed(&self.inputs, inputs(&self.config.borrow(), &assigned));
                }
            }
        }
    }

    /// Applies a new configuration: probes and host facts in place, the
    /// session reconnects when its part changed.
    pub fn reload(&self, new: Loaded) {
        crate::replace_if_changed(&self.inputs, inputs(&new, &self.assigned.borrow()));
        crate::replace_if_changed(&self.host, new.config.host());
        self.config.send_replace(Arc::new(new));
    }

    /// The connection state, as it changes.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Where results go to be batched and spooled, as the probes send
    /// theirs.
    ///
    /// # Panics
    /// After [`Agent::shutdown`] has begun.
    pub fn records(&self) -> mpsc::Sender<Record> {
        self.records.clone().expect("agent running")
    }

    /// Asks every part to stop (the session ends at once, the probes after
    /// their round); [`Agent::work`] then returns.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Stops the agent: the session, then the producers, then the batcher
    /// flushes what they sent into the spool. Each part gets
    /// [`STOP_TIMEOUT`]; one that takes longer is left behind with a
    /// warning.
    pub async fn shutdown(mut self) {
        self.stop();
        if tokio::time::timeout(STOP_TIMEOUT, self.work())
            .await
            .is_err()
        {
            tracing::warn!("the collector session did not end within {STOP_TIMEOUT:?}");
        }
        self.records.take();
        for (what, task) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(STOP_TIMEOUT, task).await {
                Err(_) => tracing::warn!("{what} did not finish within {STOP_TIMEOUT:?}"),
                Ok(Err(e)) if e.is_panic() => tracing::error!(error = %e, "{what} panicked"),
                Ok(_) => {}
            }
        }
    }
}
