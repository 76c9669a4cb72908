//! The `sondectl` command line, in the library so the man page is generated
//! from the same definition (`sonde-mangen`).

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// The system-wide config, used when neither `--config`, `SONDECTL_CONFIG`
/// nor a per-user file is there.
pub const DEFAULT_PATH: &str = "/etc/sonde/sondectl.toml";

/// The per-user config below `$XDG_CONFIG_HOME` (default `~/.config`).
pub const USER_PATH: &str = "sonde/sondectl.toml";

/// The config to read without `--config`/`SONDECTL_CONFIG`: the user's own
/// (`$XDG_CONFIG_HOME/sonde/sondectl.toml`, `~/.config/sonde/sondectl.toml`)
/// if it exists, else [`DEFAULT_PATH`]. Each person keeps their own
/// certificate and key in their home; `/etc/sonde` (0750 root:sonde) is not
/// theirs to read.
pub fn default_config(xdg_config_home: Option<&Path>, home: Option<&Path>) -> PathBuf {
    let base = xdg_config_home
        .filter(|p| p.is_absolute())
        .map(Path::to_path_buf)
        .or_else(|| home.map(|h| h.join(".config")));
    match base.map(|b| b.join(USER_PATH)) {
        Some(user) if user.exists() => user,
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// sondectl: query the sonde collector's API with a viewer or admin
/// certificate. What you see is what your certificate's tenant may see.
#[derive(Parser)]
#[command(name = "sondectl", version)]
pub struct Cli {
    /// Config file: collector address and your TLS files (default:
    /// ~/.config/sonde/sondectl.toml if it exists, else
    /// /etc/sonde/sondectl.toml).
    #[arg(long, global = true, env = "SONDECTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// List the agents you may see: state, last heartbeat, version.
    Agents,
    /// Show one agent: public IP and its history, listening ports with
    /// risk ratings, remote-check results, latest system metrics.
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        /// The agent's name.
        #[arg(required = true)]
        name: Option<String>,
        /// Its tenant (operators, when several tenants have that name).
        #[arg(long)]
        tenant: Option<String>,
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// List recorded events (agent missing/back, connects), oldest first.
    Events {
        /// Only events with an id greater than this.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many events (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only events of this agent.
        #[arg(long)]
        agent: Option<String>,
    },
    /// List the targets you may see, with state and moving averages.
    Targets {
        /// Only this agent's targets.
        #[arg(long)]
        agent: Option<String>,
        /// Only this probe kind: ping, tcp or trace.
        #[arg(long)]
        probe: Option<String>,
        /// Only targets inside this prefix, e.g. 10.1.2.0/24.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many targets (1-10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Show a /24 as a 16x16 grid of its addresses, coloured by state
    /// and latency (prefixes granted to your tenant only).
    Prefix {
        /// The prefix, e.g. 10.1.2.0/24. Without it: list your prefixes.
        cidr: Option<String>,
        /// Colour: auto (when printing to a terminal and NO_COLOR is
        /// unset), always or never.
        #[arg(long, default_value = "auto")]
        color: Color,
    },
    /// List outages (agent network, prefix, target, path), newest first.
    Outages {
        /// Only outages still open.
        #[arg(long)]
        open: bool,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// List alerts: firing, pending, deferred (outside a route's
    /// schedule), silenced, suppressed (explained by another alert),
    /// flapping, and recently resolved; then recent notifications.
    Alerts {
        /// Only this status (firing, pending, deferred, silenced,
        /// suppressed, flapping, resolved).
        #[arg(long)]
        status: Option<String>,
        /// How far back resolved alerts are listed (up to 7d).
        #[arg(long, default_value = "24h")]
        history: String,
    },
    /// Create, list and expire silences (creating and expiring need an
    /// admin certificate).
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
    },
    /// Heartbeat checks: list, create, pause, resume, rotate, delete,
    /// pings (changes need an admin certificate).
    Checks {
        #[command(subcommand)]
        action: crate::checks::ChecksAction,
    },
    /// Validate the config file and the TLS files it names, then exit.
    CheckConfig,
}

/// `sondectl agent settings …`.
#[derive(Clone, PartialEq, Eq, Subcommand)]
pub enum AgentAction {
    /// Show an agent's heartbeat interval, grace and monitoring schedule
    /// (its own settings, the config's defaults, what applies); with
    /// options, change them (admin): the agent gets a new interval at
    /// once. `--reset` goes back to the config's values.
    Settings {
        /// The agent's name.
        name: String,
        /// Its tenant (operators, when several tenants have that name).
        #[arg(long)]
        tenant: Option<String>,
        /// Heartbeat interval, e.g. 30s.
        #[arg(long)]
        interval: Option<String>,
        /// Silence before it is missing, e.g. 2m.
        #[arg(long)]
        grace: Option<String>,
        /// An [[alerting.schedule]]: outside it a silent agent is
        /// off-hours, not missing.
        #[arg(long)]
        schedule: Option<String>,
        /// Back to the config's values.
        #[arg(long, conflicts_with_all = ["interval", "grace", "schedule"])]
        reset: bool,
    },
}

/// `sondectl silence …`.
#[derive(Clone, PartialEq, Eq, Subcommand)]
pub enum SilenceAction {
    /// Silence alerts matching every MATCHER (name=value, name!=value,
    /// name=~regex, name!~regex), e.g. `agent=edge-1 rule=outage`.
    Add {
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long from the start, e.g. 2h …
        #[arg(long, conflicts_with = "ends")]
        duration: Option<String>,
        /// … or the end, RFC 3339 (2026-11-21T18:00:00Z).
        #[arg(long)]
        ends: Option<String>,
        /// Start, RFC 3339 (default now).
        #[arg(long)]
        starts: Option<String>,
        /// Why (required).
        #[arg(long)]
        comment: String,
        /// Operators: only this tenant's alerts (default all tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List silences (active, pending, and those ended within --history).
    List {
        #[arg(long, default_value = "24h")]
        history: String,
    },
    /// End a silence now.
    Expire {
        /// The silence's id.
        id: i64,
    },
}

/// When to colour the grid.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_own_config_comes_before_the_system_one() {
        let home = tempfile::tempdir().unwrap();
        let system = PathBuf::from(DEFAULT_PATH);
        assert_eq!(default_config(None, Some(home.path())), system);
        let own = home.path().join(".config/sonde/sondectl.toml");
        std::fs::create_dir_all(own.parent().unwrap()).unwrap();
        std::fs::write(&own, "").unwrap();
        assert_eq!(default_config(None, Some(home.path())), own);
        // XDG_CONFIG_HOME wins over ~/.config; a relative one is ignored.
        let xdg = tempfile::tempdir().unwrap();
        assert_eq!(default_config(Some(xdg.path()), Some(home.path())), system);
        assert_eq!(
            default_config(Some(Path::new("rel")), Some(home.path())),
            own
        );
        assert_eq!(default_config(None, None), system);
    }
}
