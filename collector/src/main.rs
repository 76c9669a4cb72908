//! `sonde-collector`: the thin binary around the library.

use std::process::ExitCode;

use clap::Parser;
use sonde_collector::cli::Cli;
use sonde_collector::config::{Config, DEFAULT_PATH};
use sonde_runtime::cli::{Checked, Daemon};

fn main() -> ExitCode {
    let daemon = Daemon {
        name: "sonde-collector",
        default_config: DEFAULT_PATH,
    };
    daemon.main(
        Cli::parse().args,
        |path| {
            Config::load(path).map(|c| Checked {
                state_dir: c.state_dir,
            })
        },
        |path| async move { sonde_collector::daemon::run(&path).await },
    )
}
