//! `sonde-collector`: the thin binary around the library.

use std::process::ExitCode;

use clap::Parser;
use sonde_collector::config::{Config, DEFAULT_PATH};
use sonde_runtime::cli::{Daemon, DaemonArgs};

/// The sonde collector: authenticates agents and people by client
/// certificate, records heartbeats and events, serves the API.
#[derive(Parser)]
#[command(name = "sonde-collector", version)]
struct Cli {
    #[command(flatten)]
    args: DaemonArgs,
}

fn main() -> ExitCode {
    let daemon = Daemon {
        name: "sonde-collector",
        default_config: DEFAULT_PATH,
    };
    daemon.main(
        Cli::parse().args,
        |path| Config::load(path).map(drop),
        |path| async move { sonde_collector::daemon::run(&path).await },
    )
}
