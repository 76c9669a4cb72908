//! The `sonde-agent` command line, in the library so the man page is
//! generated from the same definition (`sonde-mangen`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sonde_runtime::cli::DaemonCommand;
use sonde_runtime::logging::LogArgs;

/// The sonde agent: heartbeats and probe results (ICMP, TCP connect,
/// traceroute) to the collector over mutually authenticated TLS gRPC.
#[derive(Parser)]
#[command(name = "sonde-agent", version)]
pub struct Cli {
    /// Config file (default: /etc/sonde/agent.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
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
