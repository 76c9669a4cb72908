//! The collector as a systemd service: signals, `sd_notify` and the watchdog
//! around a [`Collector`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sonde_runtime::logging::ids;
use sonde_runtime::notify::Notifier;
use sonde_runtime::reload::Reporter;
use sonde_runtime::signals::{SignalEvent, Signals};

use crate::{Collector, Config, bind};

/// How often the `STATUS=` line is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Runs until SIGTERM/SIGINT; SIGHUP reloads `config_path`.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let mut signals = Signals::install().context("installing signal handlers")?;
    let config = Config::load(config_path)?;
    let (listener, health) = bind(&config).await?;
    let state_dir = config.state_dir.clone();
    let collector = Collector::start(config, listener, health).await?;
    let status = |c: &Collector| {
        format!(
            "listening on {}; {} agents connected",
            c.local_addr(),
            c.connected_agents()
        )
    };
    let mut reloads = Reporter::start(&state_dir);
    notifier.ready(&status(&collector));

    // The watchdog is pinged from this loop only after the collector proved
    // it is responsive, so a wedged store or detector stops the pings.
    let watchdog_every = notifier.watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            event = signals.recv() => match event {
                SignalEvent::Shutdown => break,
                SignalEvent::Reload => {
                    notifier.reloading();
                    let outcome = Config::load(config_path)
                        .map_err(|e| e.to_string())
                        .and_then(|new| collector.reload(new).map_err(|e| e.to_string()));
                    if let Err(e) = &outcome {
                        tracing::error!(message_id = ids::RELOAD_FAILED, error = %e, "reload refused; keeping the running configuration");
                    }
                    reloads.report(outcome);
                    notifier.ready(&status(&collector));
                }
            },
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                let budget = watchdog_every.unwrap_or_default() / 2;
                if collector.healthy(budget).await {
                    notifier.watchdog();
                } else {
                    tracing::error!(message_id = ids::WATCHDOG_WITHHELD, "collector unresponsive; withholding the watchdog ping");
                }
            }
            _ = status_tick.tick() => notifier.status(&status(&collector)),
        }
    }
    tracing::info!(message_id = ids::STOPPING, "shutting down");
    notifier.stopping();
    collector.shutdown().await;
    Ok(())
}
