//! `sonde-agent`: the thin binary around the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sonde_agent::config::{DEFAULT_PATH, Loaded};
use sonde_runtime::logging::{self, LogArgs};

/// The sonde agent: heartbeats (and, later, probe results) to the
/// collector over mutually authenticated TLS gRPC.
#[derive(Parser)]
#[command(name = "sonde-agent", version)]
struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = DEFAULT_PATH, env = "SONDE_AGENT_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Validate the config file and the files it names, then exit.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::CheckConfig)) {
        return match Loaded::load(&cli.config) {
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
    logging::init(&cli.log, "sonde-agent");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde-agent: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sonde_agent::daemon::run(&cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sonde-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
