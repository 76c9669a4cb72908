//! The systemd notification protocol (`sd_notify`) for `Type=notify` units.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op, so the daemons call these
//! unconditionally. The watchdog is *not* pinged from a task of its own:
//! each daemon pings from its main loop only after checking that its
//! workers made progress, so a stuck daemon stops pinging and systemd
//! restarts it.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends state changes to the service manager.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` / `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
        }
    }

    /// How often to ping the watchdog: half the manager's timeout, as
    /// `sd_watchdog_enabled(3)` recommends. `None` when no watchdog is set.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        Self::send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=` free text (connection state, counts).
    pub fn status(&self, status: &str) {
        Self::send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1` (with `MONOTONIC_USEC`, which systemd ≥ 253 requires).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => Self::send(&[NotifyState::Reloading, now]),
            Err(_) => Self::send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        Self::send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        Self::send(&[NotifyState::Watchdog]);
    }
}
