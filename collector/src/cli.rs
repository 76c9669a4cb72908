//! The `sonde-collector` command line, in the library so the man page is
//! generated from the same definition (`sonde-mangen`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sonde_runtime::cli::{DaemonCommand, GlobalArgs};

/// The sonde collector: authenticates agents and people by client
/// certificate, records heartbeats and events, serves the API.
#[derive(Parser)]
#[command(name = "sonde-collector", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Daemon(DaemonCommand),
    /// Write a consistent copy of the state store to PATH (a new file, mode
    /// 0600) while the collector runs, and check it. Restore: stop the
    /// collector, install the copy as `STATE_DIR/state.sqlite3` owned by the
    /// service user (mode 0600, no -wal/-shm beside it), start it.
    Backup {
        /// The new file to write.
        path: PathBuf,
    },
}
