//! Heartbeat checks without an agent (issue 24): a named, tenant-owned
//! expectation of pings to a secret URL, as cron jobs, backup scripts and
//! appliances send them (`curl -fsS https://collector:8443/ping/UUID`),
//! with the two kinds Healthchecks has: every `period`, or at each tick of
//! a cron expression in an IANA time zone, plus a `grace` and optionally
//! a monitoring schedule.
//!
//! - `timing.rs`: when the next ping is expected (cron ticks across
//!   daylight-saving changes as Debian's cron runs them);
//! - `state.rs`: what a check is at a moment (new, up, late, down, paused,
//!   off-hours) and when that changes next, from what it has received.

pub mod state;
pub mod timing;
