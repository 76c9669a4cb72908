//! The collector's configuration file (`/etc/sonde/collector.toml`).
//!
//! Parsing rejects unknown keys and bad durations with the file, line and
//! key; [`Config::load`] then checks that every referenced file can be
//! used (TLS material is actually loaded), so `check-config` catches what
//! would otherwise fail at start.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sonde_runtime::config::{ConfigError, Source};
use sonde_runtime::probes::{PingProbe, Probes, TcpProbe, TraceProbe};
use sonde_runtime::tls::TlsFiles;

/// Default path of the collector config.
pub const DEFAULT_PATH: &str = "/etc/sonde/collector.toml";

/// Shortest heartbeat interval the collector accepts.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// Heartbeat interval used when neither the agent nor the config says.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// The whole collector config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// mTLS listener for agents (gRPC) and people (HTTP API).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Plain-HTTP listener for `/healthz` (no TLS, no tenant data).
    /// Omit to disable.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
    /// Directory of the embedded state store.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    pub tls: Tls,
    #[serde(default)]
    pub heartbeat: Heartbeat,
    #[serde(default)]
    pub access: Access,
    /// Per-agent overrides.
    #[serde(default)]
    pub agent: Vec<AgentOverride>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], 7443))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/sonde-collector")
}

/// TLS material of the collector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tls {
    /// CA that issues agent and user certificates.
    pub ca: PathBuf,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key (0600).
    pub key: PathBuf,
    /// CRL files; a certificate listed in any of them is refused.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
}

/// Heartbeat policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Heartbeat {
    /// Interval imposed on every agent; without it each agent's own
    /// configured interval is used.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Time without a heartbeat before an agent is marked missing
    /// (default: 3 × the agent's interval).
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
}

/// Who sees what.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Access {
    /// Tenants whose viewers and admins see every tenant's data.
    #[serde(default)]
    pub operator_tenants: BTreeSet<String>,
}

/// Settings for one agent, by tenant and name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentOverride {
    pub tenant: String,
    pub name: String,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
    /// Probes assigned to this agent (same shape as the agent config's),
    /// run in addition to its own; a change reaches it without restart.
    #[serde(default)]
    pub ping: Vec<PingProbe>,
    #[serde(default)]
    pub tcp: Vec<TcpProbe>,
    #[serde(default)]
    pub trace: Vec<TraceProbe>,
}

impl AgentOverride {
    /// The probes assigned to this agent.
    pub fn probes(&self) -> Probes {
        Probes {
            ping: self.ping.clone(),
            tcp: self.tcp.clone(),
            trace: self.trace.clone(),
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`; relative paths in the file are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = Source::read(path)?;
        let mut config: Config = source.parse()?;
        config.resolve_paths(&source)?;
        config.validate(&source)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, source: &Source) -> Result<(), ConfigError> {
        self.state_dir = source.resolve("state-dir", &self.state_dir)?;
        let files = source.resolve_tls(&self.tls_files())?;
        (self.tls.ca, self.tls.cert, self.tls.key) = (files.ca, files.cert, files.key);
        for crl in &mut self.tls.crl {
            *crl = source.resolve("tls.crl", crl)?;
        }
        Ok(())
    }

    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        let too_short = |d: Option<Duration>| d.is_some_and(|d| d < MIN_HEARTBEAT);
        if too_short(self.heartbeat.interval) {
            return Err(source.error("heartbeat.interval", "must be at least 100ms"));
        }
        if too_short(self.heartbeat.grace) {
            return Err(source.error("heartbeat.grace", "must be at least 100ms"));
        }
        let mut seen = BTreeSet::new();
        for (i, a) in self.agent.iter().enumerate() {
            for (what, value) in [("tenant", &a.tenant), ("name", &a.name)] {
                sonde_proto::identity::validate_component(what, value)
                    .map_err(|e| source.error(&format!("agent[{i}].{what}"), e.to_string()))?;
            }
            if !seen.insert((&a.tenant, &a.name)) {
                return Err(source.error(
                    &format!("agent[{i}].name"),
                    format!("agent {}/{} is listed twice", a.tenant, a.name),
                ));
            }
            if too_short(a.heartbeat_interval) {
                return Err(source.error(
                    &format!("agent[{i}].heartbeat-interval"),
                    "must be at least 100ms",
                ));
            }
            if too_short(a.grace) {
                return Err(source.error(&format!("agent[{i}].grace"), "must be at least 100ms"));
            }
            a.probes()
                .validate()
                .map_err(|e| source.error(&format!("agent[{i}].{}", e.key), e.message))?;
        }
        for t in &self.access.operator_tenants {
            sonde_proto::identity::validate_component("tenant", t)
                .map_err(|e| source.error("access.operator-tenants", e.to_string()))?;
        }
        // Load the TLS material for real, and blame the key that names the
        // file that failed.
        let files = self.tls_files();
        sonde_runtime::tls::server_config(&files, &self.tls.crl)
            .map_err(|e| source.tls_error(&files, &self.tls.crl, &e))?;
        Ok(())
    }

    /// The TLS files as the runtime wants them.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.tls.ca.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
        }
    }

    /// The heartbeat interval an agent must use, given what it asked for.
    pub fn heartbeat_interval(
        &self,
        tenant: &str,
        name: &str,
        requested: Option<Duration>,
    ) -> Duration {
        self.override_for(tenant, name)
            .and_then(|o| o.heartbeat_interval)
            .or(self.heartbeat.interval)
            .or(requested)
            .unwrap_or(DEFAULT_HEARTBEAT)
            .max(MIN_HEARTBEAT)
    }

    /// How long an agent may stay silent before it is marked missing.
    pub fn grace(&self, tenant: &str, name: &str, interval: Duration) -> Duration {
        self.override_for(tenant, name)
            .and_then(|o| o.grace)
            .or(self.heartbeat.grace)
            .unwrap_or(interval * 3)
    }

    /// The probes assigned to an agent (none when it has no `[[agent]]`).
    pub fn assigned_probes(&self, tenant: &str, name: &str) -> Probes {
        self.override_for(tenant, name)
            .map(AgentOverride::probes)
            .unwrap_or_default()
    }

    fn override_for(&self, tenant: &str, name: &str) -> Option<&AgentOverride> {
        self.agent
            .iter()
            .find(|a| a.tenant == tenant && a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_policy_precedence() {
        let mut c: Config = Source::from_text(
            Path::new("t.toml"),
            "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
             [[agent]]\ntenant = \"t\"\nname = \"slow\"\nheartbeat-interval = \"1m\"\ngrace = \"10m\"\n"
                .to_owned(),
        )
        .parse()
        .unwrap();
        let s = Duration::from_secs;
        assert_eq!(c.heartbeat_interval("t", "x", Some(s(5))), s(5));
        assert_eq!(c.heartbeat_interval("t", "x", None), DEFAULT_HEARTBEAT);
        assert_eq!(c.grace("t", "x", s(5)), s(15));
        assert_eq!(c.heartbeat_interval("t", "slow", Some(s(5))), s(60));
        assert_eq!(c.grace("t", "slow", s(60)), s(600));
        assert_eq!(
            c.heartbeat_interval("u", "x", Some(Duration::from_millis(1))),
            MIN_HEARTBEAT
        );
        c.heartbeat.interval = Some(s(20));
        c.heartbeat.grace = Some(s(45));
        assert_eq!(c.heartbeat_interval("t", "x", Some(s(5))), s(20));
        assert_eq!(c.grace("t", "x", s(20)), s(45));
    }
}
