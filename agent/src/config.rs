//! The agent's configuration file (`/etc/sonde/agent.toml`).
//!
//! [`Loaded::load`] parses the file (unknown keys and bad durations are
//! named with file, line and key) and loads the TLS material for real, so
//! `check-config` and a SIGHUP reload fail exactly where a start would.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde::Deserialize;
use sonde_runtime::config::{ByteSize, ConfigError, Source};
use sonde_runtime::probes::{PingProbe, Probes, TcpProbe, TraceProbe};
use sonde_runtime::tls::TlsFiles;

use crate::host::HostConfig;
use crate::host::config::{MetricsConfig, PortsConfig};
use crate::host::public_ip::PublicIpConfig;
use crate::host::remote::RemoteCheck;
use sonde_runtime::files::{self, Kind};

/// Default path of the agent config.
pub const DEFAULT_PATH: &str = "/etc/sonde/agent.toml";
/// Shortest heartbeat interval accepted.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// The whole agent config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Collector address, `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
    pub collector: String,
    /// Name expected in the collector's certificate (default: HOST).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Directory for the agent's durable state (the result spool).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    pub tls: Tls,
    #[serde(default)]
    pub heartbeat: Heartbeat,
    #[serde(default)]
    pub reconnect: Reconnect,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Host-name targets.
    #[serde(default)]
    pub resolve: ResolveConfig,
    /// ICMP echo probes.
    #[serde(default)]
    pub ping: Vec<PingProbe>,
    /// TCP connect probes.
    #[serde(default)]
    pub tcp: Vec<TcpProbe>,
    /// Traceroute probes.
    #[serde(default)]
    pub trace: Vec<TraceProbe>,
    /// Public-IP lookups.
    #[serde(default)]
    pub public_ip: PublicIpConfig,
    /// Listening-port inventory.
    #[serde(default)]
    pub ports: PortsConfig,
    /// Remote port checks.
    #[serde(default)]
    pub remote_check: Vec<RemoteCheck>,
    /// System metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// How host-name targets are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ResolveConfig {
    /// Re-resolution interval of every host name.
    #[serde(with = "humantime_serde", default = "default_refresh")]
    pub refresh: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

impl Default for ResolveConfig {
    fn default() -> Self {
        Self {
            refresh: default_refresh(),
        }
    }
}

/// The on-disk spool's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpoolConfig {
    /// Total size of unacknowledged data kept on disk.
    #[serde(default = "default_spool_size")]
    pub max_size: ByteSize,
    /// Oldest unacknowledged data kept.
    #[serde(with = "humantime_serde", default = "default_spool_age")]
    pub max_age: Duration,
}

fn default_spool_size() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_spool_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_size: default_spool_size(),
            max_age: default_spool_age(),
        }
    }
}

/// How results are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BatchConfig {
    /// A batch is sealed at this many records...
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// ...or this long after its first record, whichever comes first.
    #[serde(with = "humantime_serde", default = "default_max_delay")]
    pub max_delay: Duration,
}

fn default_max_records() -> usize {
    10_000
}
fn default_max_delay() -> Duration {
    Duration::from_secs(1)
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_delay: default_max_delay(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/sonde-agent")
}

/// TLS material of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tls {
    /// CA that issued the collector's certificate.
    pub ca: PathBuf,
    /// The agent's certificate (URI SAN `sonde://TENANT/agent/NAME`).
    pub cert: PathBuf,
    /// The agent's private key (0600).
    pub key: PathBuf,
}

/// Heartbeat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Heartbeat {
    /// How often to send a heartbeat (the collector may override it).
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval: default_interval(),
        }
    }
}

/// Reconnect backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Reconnect {
    /// First delay after a failure.
    #[serde(with = "humantime_serde", default = "default_initial")]
    pub initial: Duration,
    /// Cap of the exponential growth.
    #[serde(with = "humantime_serde", default = "default_max")]
    pub max: Duration,
    /// Time allowed for TCP connect, TLS handshake and Welcome.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
}

fn default_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_max() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            max: default_max(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

impl Config {
    /// `(host, port)` of the collector address.
    pub fn collector_host_port(&self) -> Option<(&str, u16)> {
        let (host, port) = sonde_runtime::target::split_host(&self.collector)?;
        Some((host, port.parse().ok()?))
    }

    /// The name the collector's certificate must carry.
    pub fn server_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            self.collector_host_port()
                .map(|(h, _)| h.to_owned())
                .unwrap_or_default()
        })
    }

    /// The probe definitions of this file.
    pub fn probes(&self) -> Probes {
        Probes {
            ping: self.ping.clone(),
            tcp: self.tcp.clone(),
            trace: self.trace.clone(),
        }
    }

    /// The host-fact settings of this file.
    pub fn host(&self) -> HostConfig {
        HostConfig {
            public_ip: self.public_ip.clone(),
            ports: self.ports.clone(),
            remote_check: self.remote_check.clone(),
            metrics: self.metrics.clone(),
        }
    }

    fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.tls.ca.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
        }
    }
}

/// A validated config with its TLS material loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub tls: Arc<ClientConfig>,
    /// Changes whenever the bytes of the CA, certificate or key change, so a
    /// reload reconnects only when the connection's identity changed.
    pub tls_fingerprint: u64,
}

impl Loaded {
    /// Reads, parses and validates `path`; relative paths are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = Source::read(path)?;
        let mut config: Config = source.parse()?;
        config.state_dir = source.resolve("state-dir", &config.state_dir)?;
        let files = source.resolve_tls(&config.tls_files())?;
        if let Some((key, message)) = files::missing([
            ("tls.ca".to_owned(), files.ca.as_path()),
            ("tls.cert".to_owned(), files.cert.as_path()),
            ("tls.key".to_owned(), files.key.as_path()),
        ]) {
            return Err(source.error(&key, message));
        }
        (config.tls.ca, config.tls.cert, config.tls.key) = (files.ca, files.cert, files.key);
        Self::validate(config, &source)
    }

    fn validate(config: Config, source: &Source) -> Result<Self, ConfigError> {
        if config.collector_host_port().is_none() {
            return Err(source.error(
                "collector",
                format!(
                    "{:?} is not HOST:PORT (use [ADDR]:PORT for IPv6)",
                    config.collector
                ),
            ));
        }
        if rustls_pki_types::ServerName::try_from(config.server_name()).is_err() {
            return Err(source.error("server-name", "not a valid DNS name or IP address"));
        }
        if config.heartbeat.interval < MIN_HEARTBEAT {
            return Err(source.error("heartbeat.interval", "must be at least 100ms"));
        }
        let r = config.reconnect;
        if r.initial.is_zero() {
            return Err(source.error("reconnect.initial", "must be greater than zero"));
        }
        if r.max < r.initial {
            return Err(source.error("reconnect.max", "must not be less than reconnect.initial"));
        }
        if r.connect_timeout.is_zero() {
            return Err(source.error("reconnect.connect-timeout", "must be greater than zero"));
        }
        if config.spool.max_size.0 < 64 * 1024 {
            return Err(source.error("spool.max-size", "must be at least 64KiB"));
        }
        if config.spool.max_age.is_zero() {
            return Err(source.error("spool.max-age", "must be greater than zero"));
        }
        if !(1..=100_000).contains(&config.batch.max_records) {
            return Err(source.error("batch.max-records", "must be between 1 and 100000"));
        }
        if config.batch.max_delay.is_zero() || config.batch.max_delay > Duration::from_secs(60) {
            return Err(source.error("batch.max-delay", "must be between 1ms and 60s"));
        }
        if config.resolve.refresh < Duration::from_secs(1) {
            return Err(source.error("resolve.refresh", "must be at least 1s"));
        }
        config
            .probes()
            .validate()
            .map_err(|e| source.error(&e.key, e.message))?;
        config
            .host()
            .check()
            .map_err(|(key, message)| source.error(&key, message))?;
        let files = config.tls_files();
        let tls = sonde_runtime::tls::client_config(&files)
            .map_err(|e| source.tls_error(&files, &[], &e))?;
        // The collector would refuse any other role at the handshake.
        let chain = sonde_runtime::tls::load_certs(&files.cert)
            .map_err(|e| source.tls_error(&files, &[], &e))?;
        match sonde_runtime::tls::identity_of(&chain[0]) {
            Ok(id) if id.role == sonde_proto::Role::Agent => {}
            Ok(id) => {
                return Err(source.error(
                    "tls.cert",
                    format!(
                        "{}: {id} is a {} certificate; an agent needs role agent \
                         (sonde-certs issue --role agent)",
                        files.cert.display(),
                        id.role
                    ),
                ));
            }
            Err(e) => {
                return Err(source.error("tls.cert", format!("{}: {e}", files.cert.display())));
            }
        }
        let mut h = DefaultHasher::new();
        for p in [&files.ca, &files.cert, &files.key] {
            files::read(p, Kind::Shared, files::PEM_LIMIT)
                .unwrap_or_default()
                .hash(&mut h);
        }
        Ok(Self {
            config,
            tls: Arc::new(tls),
            tls_fingerprint: h.finish(),
        })
    }

    /// The spool's limits.
    pub fn spool_limits(&self) -> crate::spool::SpoolLimits {
        crate::spool::SpoolLimits::new(self.config.spool.max_size.0, self.config.spool.max_age)
    }

    /// The batcher's limits.
    pub fn batch_limits(&self) -> crate::batcher::BatchLimits {
        crate::batcher::BatchLimits {
            max_records: self.config.batch.max_records,
            max_delay: self.config.batch.max_delay,
        }
    }

    /// Whether moving from `self` to `new` needs a new connection.
    pub fn needs_reconnect(&self, new: &Loaded) -> bool {
        self.tls_fingerprint != new.tls_fingerprint
            || self.config.collector != new.config.collector
            || self.config.server_name() != new.config.server_name()
            || self.config.heartbeat != new.config.heartbeat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(collector: &str) -> Config {
        Config {
            collector: collector.into(),
            server_name: None,
            state_dir: "/tmp".into(),
            tls: Tls {
                ca: "a".into(),
                cert: "b".into(),
                key: "c".into(),
            },
            heartbeat: Heartbeat::default(),
            reconnect: Reconnect::default(),
            spool: SpoolConfig::default(),
            batch: BatchConfig::default(),
            resolve: ResolveConfig::default(),
            ping: Vec::new(),
            tcp: Vec::new(),
            trace: Vec::new(),
            public_ip: PublicIpConfig::default(),
            ports: PortsConfig::default(),
            remote_check: Vec::new(),
            metrics: MetricsConfig::default(),
        }
    }

    #[test]
    fn collector_addresses() {
        assert_eq!(
            conf("localhost:7443").collector_host_port(),
            Some(("localhost", 7443))
        );
        assert_eq!(
            conf("[::1]:7443").collector_host_port(),
            Some(("::1", 7443))
        );
        assert_eq!(
            conf("127.0.0.1:1").collector_host_port(),
            Some(("127.0.0.1", 1))
        );
        assert_eq!(conf("::1:7443").collector_host_port(), None);
        assert_eq!(conf("localhost").collector_host_port(), None);
        assert_eq!(conf("localhost:http").collector_host_port(), None);
        assert_eq!(conf(":7443").collector_host_port(), None);
        assert_eq!(conf("[::1]:7443").server_name(), "::1");
    }
}
