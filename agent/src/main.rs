//! `sonde-agent`: the thin binary around the library.

use std::process::ExitCode;

use clap::Parser;
use sonde_agent::config::{DEFAULT_PATH, Loaded};
use sonde_runtime::cli::{Daemon, DaemonArgs};

/// The sonde agent: heartbeats (and, later, probe results) to the
/// collector over mutually authenticated TLS gRPC.
#[derive(Parser)]
#[command(name = "sonde-agent", version)]
struct Cli {
    #[command(flatten)]
    args: DaemonArgs,
}

fn main() -> ExitCode {
    let daemon = Daemon {
        name: "sonde-agent",
        default_config: DEFAULT_PATH,
    };
    daemon.main(
        Cli::parse().args,
        |path| Loaded::load(path).map(drop),
        |path| async move { sonde_agent::daemon::run(&path).await },
    )
}
