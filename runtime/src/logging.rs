//! Logging setup: journald under systemd (the reason in the message, the
//! fields structured, key events with a `MESSAGE_ID`; see [`crate::journal`]),
//! readable lines on stderr otherwise.
//!
//! `--log auto` (the default) picks journald when `JOURNAL_STREAM` is set,
//! which systemd does for services whose stderr goes to the journal.
//! `--log-level` wins over `RUST_LOG`; without either the level is `info`.

use std::io::IsTerminal;
use std::path::Path;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;

use crate::journal::{self, JournalLayer};
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
/// `SYSLOG_IDENTIFIER`. Returns whether logs go to journald (then stderr,
/// which systemd also sends there, must not repeat them).
pub fn init(args: &LogArgs, identifier: &str) -> bool {
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
        match JournalLayer::connect(Path::new(journal::SOCKET), identifier) {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .init();
                return true;
            }
            Err(e) => eprintln!("{identifier}: journald unavailable ({e}); logging to stderr"),
        }
    }
    // Fields as `name=value`, without the journal's message id.
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
        "message_id" => Ok(()),
        "message" => write!(w, "{value:?}"),
        name => write!(w, "{name}={value:?}"),
    })
    .delimited(" ");
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(fields)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    false
}

/// `MESSAGE_ID`s of the key events, for `journalctl MESSAGE_ID=…` (the
/// README lists them). Log them as the event's `message_id` field.
pub mod ids {
    /// The daemon refused to start: the config or a file it names is wrong.
    pub const CONFIG_REFUSED: &str = "74a2361911d542c28b4cf2adaa8d6c6a";
    /// The daemon is serving (`READY=1`).
    pub const STARTED: &str = "047178aaae01482da9dbd5d19695465e";
    /// The daemon is shutting down.
    pub const STOPPING: &str = "1ffed5d8a7c949ce9d8877d5fe0929b4";
    /// A reload took effect.
    pub const RELOADED: &str = "f9a2a4c6354e4b09abd849c443877f2f";
    /// A reload was refused; the running configuration stays.
    pub const RELOAD_FAILED: &str = "b49fd6d591fb416bb14fd9cf600aa88e";
    /// Collector: a TLS handshake was refused (reason in the message).
    pub const HANDSHAKE_REFUSED: &str = "dbdc08e9b469494ca019bfe05b15854c";
    /// Collector: an open connection was closed because its certificate is
    /// no longer accepted (revoked, expired, CA changed).
    pub const CONNECTION_REVOKED: &str = "e2dba8131f9a45bfac1690086c8be330";
    /// Collector: an agent session opened.
    pub const SESSION_OPENED: &str = "92b60ccdcba34a0f88d364641957d5c4";
    /// Collector: an agent session closed.
    pub const SESSION_CLOSED: &str = "f10159fdcf9349238aadecaa77bf295f";
    /// Agent: connected to the collector.
    pub const CONNECTED: &str = "d16afabae1164277a6640e49e53fc861";
    /// Agent: the connection to the collector failed or was lost.
    pub const CONNECT_FAILED: &str = "aa18d17d88a34d2e8f48d2539fe561f2";
    /// A certificate (own, CA, or a client's) expires soon.
    pub const CERT_EXPIRING: &str = "7263b754d6414764b67afeb5dd6e5691";
    /// Collector: the watchdog ping was withheld (the collector is wedged).
    pub const WATCHDOG_WITHHELD: &str = "ce126fdc66434caeb392993b3db79afd";
    /// Collector: a backup was written.
    pub const BACKUP_WRITTEN: &str = "64e5ceb3b7074981880a6088456762cc";
}
