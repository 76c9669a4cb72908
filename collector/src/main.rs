//! `sonde-collector`: the thin binary around the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sonde_collector::config::{Config, DEFAULT_PATH};
use sonde_runtime::logging::{self, LogArgs};

/// The sonde collector: authenticates agents and people by client
/// certificate, records heartbeats and events, serves the API.
#[derive(Parser)]
#[command(name = "sonde-collector", version)]
struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = DEFAULT_PATH, env = "SONDE_COLLECTOR_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector (the default).
    Run,
    /// Validate the config file and the files it names, then exit.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::CheckConfig)) {
        return match Config::load(&cli.config) {
            Ok(_) => {
                println!("{}: OK", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(&cli.log, "sonde-collector");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde-collector: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sonde_collector::daemon::run(&cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sonde-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
