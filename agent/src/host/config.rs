//! The host-facts sections of the agent config: `[public-ip]` (in
//! [`super::public_ip`]), `[ports]`, `[[remote-check]]` and `[metrics]`.

use std::time::Duration;

use serde::Deserialize;

use super::public_ip::PublicIpConfig;
use super::remote;
use super::risk::Rule;

/// `[ports]`: the listening-port inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PortsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often the socket tables are read; a snapshot is reported at
    /// start and whenever it differs from the last one.
    #[serde(with = "humantime_serde", default = "default_ports_interval")]
    pub interval: Duration,
    /// Rows replacing or adding to the built-in risk table.
    #[serde(default)]
    pub risk: Vec<Rule>,
}

fn yes() -> bool {
    true
}
fn default_ports_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for PortsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_ports_interval(),
            risk: Vec::new(),
        }
    }
}

/// `[metrics]`: system metrics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(with = "humantime_serde", default = "default_metrics_interval")]
    pub interval: Duration,
    /// File-system types not reported as disks.
    #[serde(default = "default_ignore_fs")]
    pub ignore_fs: Vec<String>,
}

fn default_metrics_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_ignore_fs() -> Vec<String> {
    super::metrics::DEFAULT_IGNORE_FS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_metrics_interval(),
            ignore_fs: default_ignore_fs(),
        }
    }
}

/// Everything the host-facts task runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostConfig {
    pub public_ip: PublicIpConfig,
    pub ports: PortsConfig,
    pub remote_check: Vec<remote::RemoteCheck>,
    pub metrics: MetricsConfig,
}

impl HostConfig {
    /// The first mistake, as (key, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        self.public_ip
            .check()
            .map_err(|e| ("public-ip".to_owned(), e))?;
        if self.ports.interval < Duration::from_secs(1) {
            return Err(("ports.interval".into(), "must be at least 1s".into()));
        }
        if self.metrics.interval < Duration::from_secs(1) {
            return Err(("metrics.interval".into(), "must be at least 1s".into()));
        }
        for (i, c) in self.remote_check.iter().enumerate() {
            c.check().map_err(|e| (format!("remote-check[{i}]"), e))?;
        }
        Ok(())
    }
}
