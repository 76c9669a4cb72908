//! `sonde-collector`: the thin binary around the library.

use std::process::ExitCode;

use clap::Parser;
use sonde_collector::cli::{Cli, Command};
use sonde_collector::config::{Config, DEFAULT_PATH};
use sonde_collector::store::backup;
use sonde_runtime::cli::{Checked, Daemon, EXIT_CONFIG};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = Daemon {
        name: "sonde-collector",
        default_config: DEFAULT_PATH,
    };
    let command = match cli.command {
        Some(Command::Backup { path }) => {
            let config = cli.global.config.unwrap_or_else(|| DEFAULT_PATH.into());
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            return match backup::backup(&config.state_dir, &path) {
                Ok(done) => {
                    println!("{done}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sonde-collector: backup failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Daemon(command)) => Some(command),
        None => None,
    };
    daemon.main(
        cli.global,
        command,
        |path| {
            Config::load(path).map(|c| Checked {
                state_dir: c.state_dir,
            })
        },
        |path| async move { sonde_collector::daemon::run(&path).await },
    )
}
