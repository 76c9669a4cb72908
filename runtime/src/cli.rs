//! The command line both daemons share: `--config`, `--log`, `--log-level`,
//! and the `run` (default) / `check-config` / `reload` subcommands, plus the `main`
//! skeleton around them, so the two binaries stay identical in behaviour.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::ConfigError;
use crate::logging::{self, LogArgs};
use crate::reload;

/// The flags every sonde daemon takes, before or after its subcommand.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Config file (default: /etc/sonde/agent.toml, /etc/sonde/collector.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum DaemonCommand {
    /// Run the service (the default).
    Run,
    /// Validate the config file and every file it names, then exit (status
    /// 78 if something is wrong). Run as root, it checks as the user the
    /// service runs as (`--as-user`), so a file that user cannot read fails
    /// here and not at start.
    CheckConfig(CheckArgs),
    /// Reload the running daemon and wait for its answer: validate the new
    /// config as `check-config` does, send SIGHUP, exit 0 only if the daemon
    /// took it (the units' `ExecReload=`, so `systemctl reload` fails when
    /// the new config is refused).
    Reload(ReloadArgs),
}

/// `check-config` options.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CheckArgs {
    /// When run as root: check as this user, as the systemd unit runs the
    /// service (`root` checks as root).
    #[arg(long, value_name = "USER", default_value = SERVICE_USER)]
    pub as_user: String,
}

/// `reload` options.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ReloadArgs {
    /// The daemon's process id (the units pass `$MAINPID`); default: the one
    /// recorded in its state directory.
    #[arg(long)]
    pub pid: Option<i32>,
}

/// The user the packaged units run the daemons as.
pub const SERVICE_USER: &str = "sonde";

/// `sysexits.h` `EX_CONFIG`: the config or a file it names is wrong. The
/// units do not restart on it (`RestartPreventExitStatus=78`): retrying
/// cannot fix a file.
pub const EXIT_CONFIG: u8 = 78;

/// What `check-config` and `reload` learn from a config that loads.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Where the daemon keeps its state (and its reload outcome).
    pub state_dir: PathBuf,
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
    /// Runs the daemon: `check-config` and `reload` call `load`; otherwise
    /// logging is set up, the config is loaded once (a bad one exits 78
    /// before anything starts) and `run` is driven on a multi-threaded
    /// tokio runtime.
    pub fn main<F, Fut>(
        self,
        global: GlobalArgs,
        command: Option<DaemonCommand>,
        load: impl Fn(&Path) -> Result<Checked, ConfigError>,
        run: F,
    ) -> ExitCode
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let config = global
            .config
            .unwrap_or_else(|| PathBuf::from(self.default_config));
        match command.unwrap_or(DaemonCommand::Run) {
            DaemonCommand::CheckConfig(check) => return self.check_config(&config, &check, &load),
            DaemonCommand::Reload(reload) => return self.reload(&config, &reload, &load),
            DaemonCommand::Run => {}
        }
        // The log carries the reason of any failure below (journald or stderr).
        let _journald = logging::init(&global.log, self.name);
        if let Err(e) = load(&config) {
            tracing::error!(
                message_id = crate::logging::ids::CONFIG_REFUSED,
                "not starting: {e}"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
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
                ExitCode::FAILURE
            }
        }
    }

    fn check_config(
        self,
        config: &Path,
        args: &CheckArgs,
        load: &impl Fn(&Path) -> Result<Checked, ConfigError>,
    ) -> ExitCode {
        let me = nix::unistd::geteuid();
        if me.is_root() && args.as_user != "root" {
            match nix::unistd::User::from_name(&args.as_user) {
                Ok(Some(user)) if !user.uid.is_root() => {
                    return self.check_as(config, &user);
                }
                _ => println!(
                    "{}: note: no user {} on this system; checking as root, which reads \
                     every file",
                    self.name, args.as_user
                ),
            }
        }
        match load(config) {
            Ok(_) => {
                let user = nix::unistd::User::from_uid(me)
                    .ok()
                    .flatten()
                    .map_or_else(|| format!("uid {me}"), |u| u.name);
                println!("{}: OK (as user {user})", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        }
    }

    /// Runs this same check again as `user` (its uid and primary group;
    /// supplementary groups are dropped, as `setgroups(0)` before the
    /// switch leaves them).
    fn check_as(self, config: &Path, user: &nix::unistd::User) -> ExitCode {
        use std::os::unix::process::CommandExt as _;
        // The child may not be allowed into the current directory.
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
        let status = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .arg("--config")
                .arg(&config)
                .args(["check-config", "--as-user", &user.name])
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .current_dir("/")
                .status()
        });
        match status {
            Ok(s) => ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
            Err(e) => {
                eprintln!(
                    "{}: cannot check as user {}: {e}; run it as that user",
                    self.name, user.name
                );
                ExitCode::FAILURE
            }
        }
    }

    fn reload(
        self,
        config: &Path,
        args: &ReloadArgs,
        load: &impl Fn(&Path) -> Result<Checked, ConfigError>,
    ) -> ExitCode {
        let checked = match load(config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "{}: reload refused, the running configuration stays: {e}",
                    self.name
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        match reload::request(&checked.state_dir, args.pid, reload::ANSWER_TIMEOUT) {
            Ok(()) => {
                println!("{}: reloaded {}", self.name, config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: reload failed: {e}", self.name);
                ExitCode::FAILURE
            }
        }
    }
}
