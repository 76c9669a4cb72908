//! Service plumbing shared by `sonde-agent` and `sonde-collector`.
//!
//! Both programs load a TOML config the same way, speak TLS 1.3 with the
//! same provider, log the same way and talk the same `sd_notify` protocol; this
//! crate holds those pieces once so the two daemons behave alike.

pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod files;
pub mod journal;
pub mod logging;
pub mod notify;
pub mod probes;
pub mod reload;
pub mod signals;
pub mod target;
pub mod text;
pub mod tls;
