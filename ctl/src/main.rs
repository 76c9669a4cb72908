//! `sondectl`: the thin binary around the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sondectl::cli::{Cli, Command, default_config};
use sondectl::config::Loaded;

/// Exit statuses: 0 done, 1 the collector refused or could not be reached,
/// 2 the config is wrong.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.unwrap_or_else(|| {
        let env = |k| std::env::var_os(k).map(PathBuf::from);
        default_config(env("XDG_CONFIG_HOME").as_deref(), env("HOME").as_deref())
    });
    let loaded = match Loaded::load(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sondectl: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.command == Command::CheckConfig {
        println!("{}: OK", path.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sondectl: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(sondectl::run(&loaded, &cli.command, cli.json)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The collector's message may quote what someone else wrote.
            eprintln!("sondectl: {}", sonde_runtime::text::safe(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
