//! sonde-agent as a library: [`Agent::start`] starts its parts (spool,
//! batcher, probes, host facts and the session); [`run`] keeps the session
//! with the collector alive (reconnecting with jittered, capped backoff)
//! until shutdown; the binary wraps the agent in [`daemon::run`] (signals,
//! systemd).

pub mod assignment;
pub mod batcher;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod facts;
pub mod host;
pub mod outbox;
pub mod probe;
pub mod running;
pub mod session;
pub mod spool;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use config::Loaded;
pub use running::{Agent, Feed};
use session::{Process, SessionEnd};
use sonde_runtime::backoff::Backoff;
pub use status::AgentStatus;

/// Publishes `new` on `tx` only if it differs from the current value, so
/// receivers wake for real changes only; returns whether it changed.
pub(crate) fn replace_if_changed<T: PartialEq>(tx: &watch::Sender<Arc<T>>, new: T) -> bool {
    tx.send_if_modified(|cur| {
        let changed = **cur != new;
        if changed {
            *cur = Arc::new(new);
        }
        changed
    })
}

/// Rounds a delay for display (jitter makes microseconds noise).
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the agent's collector session until `shutdown`. A new value on
/// `config` applies at once: connection changes (collector, certificates,
/// heartbeat) reconnect, the rest applies in place. `status` reports the
/// connection state; probe assignments from the collector go to `assigned`.
pub async fn run(
    mut config: watch::Receiver<Arc<Loaded>>,
    outbox: outbox::Outbox,
    status: watch::Sender<AgentStatus>,
    assigned: watch::Sender<Arc<sonde_runtime::probes::Probes>>,
    shutdown: CancellationToken,
) {
    let mut process = Process::new(assigned);
    let reconnect = config.borrow().config.reconnect;
    let mut backoff = Backoff::new(reconnect.initial, reconnect.max);
    loop {
        let loaded = config.borrow_and_update().clone();
        let r = loaded.config.reconnect;
        backoff.set_bounds(r.initial, r.max);
        match session::run(
            &loaded,
            &mut config,
            &outbox,
            &mut process,
            &status,
            &shutdown,
        )
        .await
        {
            SessionEnd::Shutdown => break,
            SessionEnd::Reconfigure => {
                tracing::info!("configuration changed; reconnecting");
                backoff.reset();
            }
            SessionEnd::Lost { established, error } => {
                if established {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(message_id = sonde_runtime::logging::ids::CONNECT_FAILED, error = %error, retry_in = ?round_ms(delay), "collector session lost");
                status.send_replace(AgentStatus::Waiting {
                    retry_in: round_ms(delay),
                    error: error.to_string(),
                });
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                    Ok(()) = config.changed() => {
                        tracing::info!("configuration changed; reconnecting now");
                        backoff.reset();
                    }
                }
            }
        }
    }
    status.send_replace(AgentStatus::Stopped);
}
