//! `sonde-agent`: the thin binary around the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sonde_agent::cli::{Cli, Command};
use sonde_agent::config::{DEFAULT_PATH, Loaded};
use sonde_runtime::cli::{Checked, Daemon};

fn probe_once(config: &Path) -> ExitCode {
    let loaded = match Loaded::load(config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde-agent: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(sonde_agent::probe::once::run(&loaded)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sonde-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = Daemon {
        name: "sonde-agent",
        default_config: DEFAULT_PATH,
    };
    let command = match cli.command {
        Some(Command::ProbeOnce) => {
            let _ = sonde_runtime::logging::init(&cli.global.log, daemon.name);
            let config = cli
                .global
                .config
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
            return probe_once(&config);
        }
        Some(Command::Daemon(command)) => Some(command),
        None => None,
    };
    daemon.main(
        cli.global,
        command,
        |path| {
            Loaded::load(path).map(|l| Checked {
                state_dir: l.config.state_dir,
            })
        },
        |path| async move { sonde_agent::daemon::run(&path).await },
    )
}
