//! The `sonde-agent` command line, in the library so the man page is
//! generated from the same definition (`sonde-mangen`).

use clap::{Parser, Subcommand};
use sonde_runtime::cli::{DaemonCommand, GlobalArgs};

/// The sonde agent: heartbeats and probe results (ICMP, TCP connect,
/// traceroute) to the collector over mutually authenticated TLS gRPC.
#[derive(Parser)]
#[command(name = "sonde-agent", version)]
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
    /// Run every configured probe once and print the results; exit status
    /// 0 only if every probe succeeded. Sends nothing to the collector.
    ProbeOnce,
}
