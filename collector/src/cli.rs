//! The `sonde-collector` command line, in the library so the man page is
//! generated from the same definition (`sonde-mangen`).

use clap::Parser;
use sonde_runtime::cli::DaemonArgs;

/// The sonde collector: authenticates agents and people by client
/// certificate, records heartbeats and events, serves the API.
#[derive(Parser)]
#[command(name = "sonde-collector", version)]
pub struct Cli {
    #[command(flatten)]
    pub args: DaemonArgs,
}
