//! Logging setup: structured fields to journald under systemd, readable
//! lines on stderr otherwise.
//!
//! `--log auto` (the default) picks journald when `JOURNAL_STREAM` is set,
//! which systemd does for services whose stderr goes to the journal.
//! `--log-level` wins over `RUST_LOG`; without either the level is `info`.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogTarget {
    /// journald when started by systemd (`JOURNAL_STREAM` set), else stderr.
    Auto,
    /// Human-readable lines on stderr.
    Stderr,
    /// Native journald protocol with structured fields.
    Journald,
}

/// Logging flags shared by the daemons.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log destination.
    #[arg(long = "log", value_enum, default_value_t = LogTarget::Auto, global = true)]
    pub target: LogTarget,
    /// Log filter, e.g. `info` or `sonde_agent=debug,info` (default: `RUST_LOG`, then info).
    #[arg(long = "log-level", global = true)]
    pub level: Option<String>,
}

/// Installs the global subscriber. `identifier` is the journald
/// `SYSLOG_IDENTIFIER`.
pub fn init(args: &LogArgs, identifier: &str) {
    let filter = match &args.level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let journald = match args.target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer.with_syslog_identifier(identifier.to_owned()))
                    .init();
                return;
            }
            Err(e) => eprintln!("{identifier}: journald unavailable ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}
