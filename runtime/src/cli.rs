//! The command line both daemons share: `--config`, `--log`, `--log-level`,
//! and the `run` (default) / `check-config` subcommands, plus the `main`
//! skeleton around them, so the two binaries stay identical in behaviour.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::ConfigError;
use crate::logging::{self, LogArgs};

/// Flags and subcommands of a sonde daemon.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Config file (default: /etc/sonde/PROGRAM.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum DaemonCommand {
    /// Run the service (the default).
    Run,
    /// Validate the config file and every file it names, then exit.
    CheckConfig,
}

/// One daemon's identity and entry points.
#[derive(Debug, Clone, Copy)]
pub struct Daemon<'a> {
    /// Program name (journald identifier, message prefix).
    pub name: &'a str,
    /// Config path when `--config` is not given.
    pub default_config: &'a str,
}

impl Daemon<'_> {
    /// Runs the daemon: `check-config` calls `check`; otherwise logging is
    /// set up and `run` is driven on a multi-threaded tokio runtime.
    pub fn main<F, Fut>(
        self,
        args: DaemonArgs,
        check: impl FnOnce(&Path) -> Result<(), ConfigError>,
        run: F,
    ) -> ExitCode
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let config = args
            .config
            .unwrap_or_else(|| PathBuf::from(self.default_config));
        if args.command == Some(DaemonCommand::CheckConfig) {
            return match check(&config) {
                Ok(()) => {
                    println!("{}: OK", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        logging::init(&args.log, self.name);
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{}: cannot start runtime: {e}", self.name);
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(run(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("{}: {e:#}", self.name);
                ExitCode::FAILURE
            }
        }
    }
}
