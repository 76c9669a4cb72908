//! Heartbeat checks without an agent (issue 24): a named, tenant-owned
//! expectation of pings to a secret URL, as cron jobs, backup scripts and
//! appliances send them (`curl -fsS https://collector:8443/ping/UUID`),
//! with the two kinds Healthchecks has: every `period`, or at each tick of
//! a cron expression in an IANA time zone, plus a `grace` and optionally
//! a monitoring schedule.
//!
//! The data flow: `ping.rs` (the Healthchecks-compatible HTTP listener)
//! → `monitor.rs` (the one task that owns every check's state and
//! deadline; it writes pings in group commits and records transitions as
//! events in the store's event log, where alerting reads them like any
//! other) → `store.rs` (tables behind the store's seam) → the API
//! (`read/api/checks.rs`).
//!
//! - `define.rs`: a definition as the API takes it, validated;
//! - `timing.rs`: when the next ping is expected (cron ticks across
//!   daylight-saving changes as Debian's cron runs them);
//! - `state.rs`: what a check is at a moment (new, up, late, down, paused,
//!   off-hours) and when that changes next, from what it has received;
//! - `token.rs`: the secret in the URL (128 random bits, stored hashed);
//! - `limit.rs`: token buckets for the ping listener.

pub mod define;
pub mod limit;
pub mod monitor;
pub mod ping;
pub mod state;
pub mod store;
pub mod timing;
pub mod token;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::Deserialize;

/// `[checks]`: how pings are kept and limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Pings older than this are deleted.
    #[serde(default = "default_ping_retention", with = "humantime_serde")]
    pub ping_retention: Duration,
    /// At most this many pings are kept per check (the newest).
    #[serde(default = "default_max_pings")]
    pub max_pings: u32,
    /// Pings per second one check's token may send on average; beyond,
    /// `429 Too Many Requests`.
    #[serde(default = "default_rate")]
    pub pings_per_second: u32,
    /// Pings one token may send at once above that rate.
    #[serde(default = "default_burst")]
    pub ping_burst: u32,
    /// Requests per second one source address may make that name no
    /// check (unknown or malformed tokens: guessing) …
    #[serde(default = "default_rate")]
    pub misses_per_second: u32,
    /// … and at once above that rate.
    #[serde(default = "default_burst")]
    pub miss_burst: u32,
    /// Connections the ping listener holds open at once; more wait.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ping_retention: default_ping_retention(),
            max_pings: default_max_pings(),
            pings_per_second: default_rate(),
            ping_burst: default_burst(),
            misses_per_second: default_rate(),
            miss_burst: default_burst(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_ping_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_max_pings() -> u32 {
    1000
}
fn default_rate() -> u32 {
    1
}
fn default_burst() -> u32 {
    20
}
fn default_max_connections() -> usize {
    1024
}

impl Settings {
    /// The first key that is out of range, with why.
    pub fn invalid(&self) -> Option<(&'static str, &'static str)> {
        if self.ping_retention < Duration::from_secs(3600) {
            return Some(("checks.ping-retention", "must be at least 1h"));
        }
        if !(1..=100_000).contains(&self.max_pings) {
            return Some(("checks.max-pings", "must be between 1 and 100000"));
        }
        for (key, v) in [
            ("checks.pings-per-second", self.pings_per_second),
            ("checks.ping-burst", self.ping_burst),
            ("checks.misses-per-second", self.misses_per_second),
            ("checks.miss-burst", self.miss_burst),
        ] {
            if v == 0 {
                return Some((key, "must be at least 1"));
            }
        }
        if self.max_connections == 0 {
            return Some(("checks.max-connections", "must be at least 1"));
        }
        None
    }
}
