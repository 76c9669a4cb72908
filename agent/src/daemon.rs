//! The agent as a systemd service: signals, `sd_notify` and the watchdog.
//!
//! The agent's work runs inside this loop's `select!` (not in a task of its
//! own), so the watchdog ping comes from the same task that does the work:
//! if that task wedges, the pings stop and systemd restarts the agent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sonde_runtime::logging::ids;
use sonde_runtime::notify::Notifier;
use sonde_runtime::probes::Probes;
use sonde_runtime::reload::Reporter;
use sonde_runtime::signals::{SignalEvent, Signals};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::assignment;
use crate::config::Loaded;
use crate::outbox::Outbox;
use crate::probe::resolve::SystemResolver;
use crate::probe::runner::{self, Inputs};
use crate::spool::Spool;
use crate::status::AgentStatus;

/// How long a shutdown may take before the agent exits anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Raises the open-file limit to its hard maximum: every TCP connect in
/// flight holds a descriptor (up to `tcp::MAX_IN_FLIGHT`), and the usual
/// soft limit of 1,024 would turn a busy second into `other` errors.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "open-file limit raised"),
            Err(e) => tracing::warn!(error = %e, soft, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
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
fn open_spool(loaded: &Loaded) -> anyhow::Result<Spool> {
    let state_dir = &loaded.config.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
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

/// Runs until SIGTERM/SIGINT; SIGHUP re-reads `config_path` and the
/// certificates it names.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let mut signals = Signals::install().context("installing signal handlers")?;
    let loaded = Loaded::load(config_path)?;
    raise_fd_limit();
    let state_dir = &loaded.config.state_dir;
    let outbox = Outbox::new(open_spool(&loaded)?);
    // Probe engines and host facts send their results here; the batcher
    // seals them into the spool. When they end at shutdown, the last sender
    // goes and the batcher flushes.
    let (records_tx, records_rx) = mpsc::channel(65_536);
    let batcher = tokio::spawn(crate::batcher::run(
        records_rx,
        outbox.clone(),
        loaded.batch_limits(),
    ));

    let assigned_path = assignment::path(state_dir);
    let (assigned_tx, mut assigned_rx) = watch::channel(Arc::new(assignment::load(&assigned_path)));
    let (inputs_tx, inputs_rx) =
        watch::channel(Arc::new(inputs(&loaded, &assigned_rx.borrow_and_update())));
    let shutdown = CancellationToken::new();
    let probes = tokio::spawn(runner::run(
        inputs_rx,
        SystemResolver,
        records_tx.clone(),
        shutdown.clone(),
    ));

    let (host_tx, host_rx) = watch::channel(Arc::new(loaded.config.host()));
    let facts = tokio::spawn(crate::host::run(host_rx, records_tx, shutdown.clone()));

    let (config_tx, config_rx) = watch::channel(Arc::new(loaded));
    let (status_tx, mut status_rx) = watch::channel(AgentStatus::Starting);
    let agent = crate::run(config_rx, outbox, status_tx, assigned_tx, shutdown.clone());
    tokio::pin!(agent);
    let update_inputs = |loaded: &Loaded, assigned: &Probes| {
        crate::replace_if_changed(&inputs_tx, inputs(loaded, assigned));
    };
    let mut reloads = Reporter::start(&config_tx.borrow().config.state_dir);
    notifier.ready("starting");
    tracing::info!(
        message_id = ids::STARTED,
        version = env!("CARGO_PKG_VERSION"),
        "agent started"
    );

    let watchdog_every = notifier.watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let stop_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(stop_deadline);
    loop {
        tokio::select! {
            () = &mut agent => break,
            event = signals.recv() => match event {
                SignalEvent::Shutdown => {
                    tracing::info!(message_id = ids::STOPPING, "shutting down");
                    notifier.stopping();
                    shutdown.cancel();
                    stop_deadline.as_mut().reset(tokio::time::Instant::now() + STOP_TIMEOUT);
                }
                SignalEvent::Reload => {
                    notifier.reloading();
                    match Loaded::load(config_path) {
                        Ok(new) => {
                            tracing::info!(message_id = ids::RELOADED, path = %config_path.display(), "configuration reloaded");
                            update_inputs(&new, &assigned_rx.borrow());
                            crate::replace_if_changed(&host_tx, new.config.host());
                            config_tx.send_replace(Arc::new(new));
                            reloads.report(Ok(()));
                        }
                        Err(e) => {
                            tracing::error!(message_id = ids::RELOAD_FAILED, error = %e, "reload refused; keeping the running configuration");
                            reloads.report(Err(e.to_string()));
                        }
                    }
                    notifier.ready(&status_rx.borrow().to_string());
                }
            },
            Ok(()) = assigned_rx.changed() => {
                let assigned = assigned_rx.borrow_and_update().clone();
                if let Err(e) = assignment::store(&assigned_path, &assigned) {
                    tracing::warn!(path = %assigned_path.display(), error = %e, "cannot store the probe assignment");
                }
                update_inputs(&config_tx.borrow(), &assigned);
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => notifier.watchdog(),
            Ok(()) = status_rx.changed() => notifier.status(&status_rx.borrow_and_update().to_string()),
            () = &mut stop_deadline => {
                tracing::warn!("shutdown took longer than {STOP_TIMEOUT:?}; exiting");
                break;
            }
        }
    }
    notifier.stopping();
    shutdown.cancel();
    // Producers first: when the last one is gone, the batcher flushes.
    for (what, task) in [
        ("probes", probes),
        ("host facts", facts),
        ("batcher", batcher),
    ] {
        if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
            tracing::warn!("{what} did not finish within {STOP_TIMEOUT:?}");
        }
    }
    Ok(())
}
