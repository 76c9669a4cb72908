//! Watching the watcher: the collector pings an outside dead-man's switch
//! (the Healthchecks.io protocol: `GET URL` = alive, `URL/start` when it
//! starts, `URL/fail` when unhealthy) every `interval` while it works, so
//! its own death — which it cannot report — is noticed elsewhere by the
//! pings stopping. Unhealthy means: the store or the liveness task does
//! not answer, or nothing at all arrived from any agent for
//! `[alerting.no-data] after`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::config::{Deadman, secret};
use super::notify::Stats;
use super::receiver::{error_text, http_client};
use crate::config::Config;

/// The URL of a signal (`""`, `start` or `fail`).
pub fn signal_url(base: &str, signal: &str) -> String {
    if signal.is_empty() {
        base.to_owned()
    } else {
        format!("{}/{signal}", base.trim_end_matches('/'))
    }
}

/// What the collector's health looks like to the switch.
pub trait Health: Send + Sync + 'static {
    fn healthy(&self) -> impl std::future::Future<Output = bool> + Send;
}

async fn ping(client: &reqwest::Client, url: &str, stats: &Stats) {
    let result = match client.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(error_text(e)),
    };
    match result {
        Ok(()) => {
            stats.deadman_pings.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.deadman_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "dead-man's switch ping failed");
        }
    }
}

fn url_of(d: &Deadman) -> Option<String> {
    secret(
        "url",
        d.url.as_ref(),
        d.url_file.as_ref(),
        d.url_env.as_ref(),
    )
    .map(|s| s.expose().to_owned())
    .map_err(|(k, e)| tracing::error!(key = %k, error = %e, "dead-man's switch URL"))
    .ok()
}

/// Pings while the collector runs.
pub async fn run(
    mut settings: watch::Receiver<Arc<Config>>,
    health: impl Health,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let Ok(client) = http_client(Duration::from_secs(10)) else {
        tracing::error!("dead-man's switch: cannot build an HTTP client");
        return;
    };
    let mut started = false;
    loop {
        let deadman = settings.borrow_and_update().alerting.deadman.clone();
        let interval = match deadman.as_ref().and_then(|d| url_of(d).map(|u| (d, u))) {
            None => None,
            Some((d, url)) => {
                if !started && d.signals {
                    ping(&client, &signal_url(&url, "start"), &stats).await;
                }
                started = true;
                if health.healthy().await {
                    ping(&client, &url, &stats).await;
                } else if d.signals {
                    tracing::warn!("collector unhealthy: signalling the dead-man's switch");
                    ping(&client, &signal_url(&url, "fail"), &stats).await;
                }
                Some(d.interval)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = settings.changed() => if changed.is_err() { return },
            () = async {
                match interval {
                    Some(i) => tokio::time::sleep(i).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
