//! The agent as a systemd service: signals, `sd_notify` and the watchdog.
//!
//! The agent's work runs inside this loop's `select!` (not in a task of its
//! own), so the watchdog ping comes from the same task that does the work:
//! if that task wedges, the pings stop and systemd restarts the agent.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sonde_runtime::logging::ids;
use sonde_runtime::notify::Notifier;
use sonde_runtime::reload::Reporter;
use sonde_runtime::signals::{SignalEvent, Signals};

use crate::config::Loaded;
use crate::running::{Agent, STOP_TIMEOUT};

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

/// Runs until SIGTERM/SIGINT; SIGHUP re-reads `config_path` and the
/// certificates it names.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let mut signals = Signals::install().context("installing signal handlers")?;
    let loaded = Loaded::load(config_path)?;
    raise_fd_limit();
    let state_dir = loaded.config.state_dir.clone();
    let mut agent = Agent::start(loaded)?;
    let mut status_rx = agent.status();
    let mut reloads = Reporter::start(&state_dir);
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
            () = agent.work() => break,
            event = signals.recv() => match event {
                SignalEvent::Shutdown => {
                    tracing::info!(message_id = ids::STOPPING, "shutting down");
                    notifier.stopping();
                    agent.stop();
                    stop_deadline.as_mut().reset(tokio::time::Instant::now() + STOP_TIMEOUT);
                }
                SignalEvent::Reload => {
                    notifier.reloading();
                    match Loaded::load(config_path) {
                        Ok(new) => {
                            tracing::info!(message_id = ids::RELOADED, path = %config_path.display(), "configuration reloaded");
                            agent.reload(new);
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
            _ = watchdog.tick(), if watchdog_every.is_some() => notifier.watchdog(),
            Ok(()) = status_rx.changed() => notifier.status(&status_rx.borrow_and_update().to_string()),
            () = &mut stop_deadline => {
                tracing::warn!("shutdown took longer than {STOP_TIMEOUT:?}; exiting");
                break;
            }
        }
    }
    notifier.stopping();
    agent.shutdown().await;
    Ok(())
}
