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
use sonde_runtime::files::{self, Kind};
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
    /// Listener for heartbeat checks' pings (`/ping/…`, Healthchecks'
    /// URLs): HTTPS with the server certificate, no client certificate
    /// asked. Omit to disable.
    #[serde(default)]
    pub ping_listen: Option<SocketAddr>,
    /// `false`: the ping listener speaks plain HTTP (behind a proxy that
    /// terminates TLS, or on a trusted network).
    #[serde(default = "yes")]
    pub ping_tls: bool,
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
    /// Which prefixes each tenant's viewers and admins may see.
    #[serde(default)]
    pub tenant: Vec<TenantGrant>,
    /// Export to InfluxDB v2; without it the embedded store is all.
    #[serde(default)]
    pub influxdb: Option<Influx>,
    #[serde(default)]
    pub retention: Retention,
    /// Outage, route-change and correlation thresholds.
    #[serde(default)]
    pub analysis: crate::consumers::analysis::Settings,
    /// Rules, routes, receivers, schedules.
    #[serde(default)]
    pub alerting: crate::consumers::alert::Alerting,
    /// What one client may use of the listener.
    #[serde(default)]
    pub limits: Limits,
    /// Heartbeat checks: ping log retention and rate limits.
    #[serde(default)]
    pub checks: crate::checks::Settings,
    /// The tenancy policy of this config, made on first use.
    #[serde(skip)]
    tenancy: TenancyCache,
}

/// [`Config::tenancy`], made once per loaded config (a config is not
/// changed after loading; a reload is a new one). Not part of equality.
#[derive(Clone, Default)]
struct TenancyCache(std::sync::OnceLock<std::sync::Arc<crate::read::access::Tenancy>>);

impl PartialEq for TenancyCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for TenancyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenancyCache")
    }
}

/// `[limits]`: bounds on what one client certificate may use, so a broken
/// or hostile agent or script cannot starve the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Time a client gets to complete the TLS handshake.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connections one certificate identity may hold open at once; more
    /// are answered 429 and closed.
    #[serde(default = "default_connections")]
    pub connections_per_certificate: usize,
    /// Heartbeats and result batches per second one agent session may
    /// send on average; beyond it the collector reads its stream more
    /// slowly (nothing is dropped: the agent's spool holds the rest).
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
    /// Messages a session may send at once above that rate (a replay
    /// after an outage starts with this many at full speed).
    #[serde(default = "default_message_burst")]
    pub message_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: default_handshake_timeout(),
            connections_per_certificate: default_connections(),
            messages_per_second: default_messages_per_second(),
            message_burst: default_message_burst(),
        }
    }
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connections() -> usize {
    16
}
fn default_messages_per_second() -> u32 {
    100
}
fn default_message_burst() -> u32 {
    200
}

/// A secret string (token, password): compared and cloned like a string,
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first line of a file (e.g. a systemd credential), trimmed;
    /// the error names the file.
    pub fn from_file(f: &Path) -> Result<Self, String> {
        let text =
            files::read_text(f, Kind::Private, files::SECRET_LIMIT).map_err(|e| e.to_string())?;
        let line = text.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            return Err(format!("{}: empty", f.display()));
        }
        Ok(Self::new(line))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[influxdb]`: where and how results are exported.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Influx {
    /// Base URL, e.g. `https://influx.example.net:8086`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// API token (or `token-file`); none for servers without auth.
    #[serde(default)]
    pub token: Option<Secret>,
    /// File holding the token (first line), e.g. a systemd credential.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) for an `https` URL with a private CA.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Whole-request timeout of one write.
    #[serde(default = "default_influx_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A write is sent when it holds this many points …
    #[serde(default = "default_batch_points")]
    pub batch_points: usize,
    /// … or when its oldest point has waited this long.
    #[serde(default = "default_batch_delay", with = "humantime_serde")]
    pub batch_delay: Duration,
    /// Retry delays grow from `retry-initial` to `retry-max` (jittered).
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
}

fn default_influx_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_batch_points() -> usize {
    5000
}
fn default_batch_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}

/// Largest write batch accepted in the config.
pub const MAX_BATCH_POINTS: usize = 100_000;

/// How long derived data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    /// Minute aggregates per series (the 24 h averages need at least 1 day).
    #[serde(default = "default_aggregates", with = "humantime_serde")]
    pub aggregates: Duration,
    /// Raw ingest-log entries are deleted once every consumer (analysis,
    /// export) has passed them and they are older than this.
    #[serde(default = "default_ingest_log", with = "humantime_serde")]
    pub ingest_log: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            aggregates: default_aggregates(),
            ingest_log: default_ingest_log(),
        }
    }
}

fn default_aggregates() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_ingest_log() -> Duration {
    Duration::from_secs(300)
}

fn yes() -> bool {
    true
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
    /// CRL files; a certificate listed in any of them is refused (and its
    /// open connections closed when a reload brings it).
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// A certificate (the collector's, the CA, or a connecting client's)
    /// that expires within this raises a `certificate-expiring` event.
    #[serde(default = "default_expiry_warning", with = "humantime_serde")]
    pub expiry_warning: Duration,
}

fn default_expiry_warning() -> Duration {
    Duration::from_secs(14 * 86_400)
}

/// Heartbeat policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    /// After a collector start, added to the grace of every agent that was
    /// up until it reconnects: its reconnect backoff (agents' default
    /// `reconnect.max` is 30 s). Raise it with the agents' `reconnect.max`.
    #[serde(default = "default_restart_grace", with = "humantime_serde")]
    pub restart_grace: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval: None,
            grace: None,
            restart_grace: default_restart_grace(),
        }
    }
}

fn default_restart_grace() -> Duration {
    Duration::from_secs(45)
}

/// Who sees what.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Access {
    /// Tenants whose viewers and admins see every tenant's data.
    #[serde(default)]
    pub operator_tenants: BTreeSet<String>,
}

/// `[[tenant]]`: the prefixes a tenant may see, whose agents' measurements
/// of them it trusts, and its quotas. A prefix may be granted to several
/// tenants; a tenant may be listed once. See `access.rs` for the policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TenantGrant {
    pub name: String,
    #[serde(default)]
    pub prefixes: Vec<ipnet::IpNet>,
    /// Tenants whose agents' measurements of these prefixes this tenant
    /// sees and is paged for (operator tenants are always trusted).
    #[serde(default)]
    pub trust: BTreeSet<String>,
    /// Live series (agent × probe × address) the tenant's agents may
    /// have; managed targets beyond it are refused.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Managed target definitions the tenant may have.
    #[serde(default = "default_max_definitions")]
    pub max_definitions: usize,
    /// Addresses one managed definition may expand to.
    #[serde(default = "default_max_addresses")]
    pub max_addresses: usize,
}

/// Quotas of a tenant without a `[[tenant]]` entry (and the defaults of
/// one): sized for /24 grids.
pub const DEFAULT_MAX_SERIES: usize = 20_000;
pub const DEFAULT_MAX_DEFINITIONS: usize = 1_000;
pub const DEFAULT_MAX_ADDRESSES: usize = 4_096;

fn default_max_series() -> usize {
    DEFAULT_MAX_SERIES
}
fn default_max_definitions() -> usize {
    DEFAULT_MAX_DEFINITIONS
}
fn default_max_addresses() -> usize {
    DEFAULT_MAX_ADDRESSES
}

/// A tenant's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub max_series: usize,
    pub max_definitions: usize,
    pub max_addresses: usize,
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
    /// An `[[alerting.schedule]]`: outside it a silent agent is
    /// off-hours, not missing.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Probes assigned to this agent (same shape as the agent config's),
    /// run in addition to its own; a change reaches it without restart.
    #[serde(default)]
    pub ping: Vec<PingProbe>,
    #[serde(default)]
    pub tcp: Vec<TcpProbe>,
    #[serde(default)]
    pub trace: Vec<TraceProbe>,
}

impl Config {
    /// The monitoring schedule of agent `tenant`/`name` (`[[agent]]
    /// schedule`), if it has one the config defines.
    pub fn agent_schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Option<crate::consumers::alert::schedule::Schedule> {
        let wanted = self
            .agent
            .iter()
            .find(|a| a.tenant == tenant && a.name == name)?
            .schedule
            .as_deref()?;
        self.alerting.defined_schedule(wanted)
    }
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

impl Influx {
    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        let url = reqwest_influx::Url::parse(&self.url)
            .map_err(|e| source.error("influxdb.url", format!("{:?}: {e}", self.url)))?;
        if !url.username().is_empty() || url.password().is_some() {
            // It would end up in logs with every error naming the URL.
            return Err(source.error(
                "influxdb.url",
                "must not carry credentials; give the token in token or token-file",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(source.error(
                "influxdb.url",
                format!(
                    "{:?}: must be http://HOST[:PORT] or https://HOST[:PORT]",
                    self.url
                ),
            ));
        }
        for (key, v) in [
            ("influxdb.org", &self.org),
            ("influxdb.bucket", &self.bucket),
        ] {
            if v.trim().is_empty() {
                return Err(source.error(key, "must not be empty"));
            }
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(source.error("influxdb.token-file", "give token or token-file, not both"));
        }
        if let Some(f) = &self.token_file {
            Secret::from_file(f).map_err(|e| source.error("influxdb.token-file", e))?;
        }
        if let Some(ca) = &self.ca {
            let pem = files::read(ca, Kind::Shared, files::PEM_LIMIT)
                .map_err(|e| source.error("influxdb.ca", e.to_string()))?;
            reqwest_influx::Certificate::from_pem(&pem).map_err(|e| {
                source.error(
                    "influxdb.ca",
                    format!("{}: not a PEM certificate: {e}", ca.display()),
                )
            })?;
        }
        if !(1..=MAX_BATCH_POINTS).contains(&self.batch_points) {
            return Err(source.error(
                "influxdb.batch-points",
                format!("must be between 1 and {MAX_BATCH_POINTS}"),
            ));
        }
        for (key, d) in [
            ("influxdb.timeout", self.timeout),
            ("influxdb.connect-timeout", self.connect_timeout),
            ("influxdb.retry-initial", self.retry_initial),
        ] {
            if d < Duration::from_millis(10) {
                return Err(source.error(key, "must be at least 10ms"));
            }
        }
        if self.retry_max < self.retry_initial {
            return Err(source.error("influxdb.retry-max", "must not be below retry-initial"));
        }
        Ok(())
    }

    /// The token to send, read from `token-file` when that is used.
    pub fn token(&self) -> Result<Option<Secret>, String> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(f)) => Secret::from_file(f).map(Some),
            (None, None) => Ok(None),
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
        if let Some((key, message)) = files::missing(config.named_files()) {
            return Err(source.error(&key, message));
        }
        config.validate(&source)?;
        Ok(config)
    }

    /// Every file the config names, by key: what must exist to start.
    fn named_files(&self) -> Vec<(String, &Path)> {
        let mut named = vec![
            ("tls.ca".to_owned(), self.tls.ca.as_path()),
            ("tls.cert".to_owned(), self.tls.cert.as_path()),
            ("tls.key".to_owned(), self.tls.key.as_path()),
        ];
        named.extend(
            self.tls
                .crl
                .iter()
                .map(|c| ("tls.crl".to_owned(), c.as_path())),
        );
        if let Some(influx) = &self.influxdb {
            for (key, f) in [
                ("influxdb.token-file", &influx.token_file),
                ("influxdb.ca", &influx.ca),
            ] {
                if let Some(f) = f {
                    named.push((key.to_owned(), f.as_path()));
                }
            }
        }
        named
    }

    fn resolve_paths(&mut self, source: &Source) -> Result<(), ConfigError> {
        self.state_dir = source.resolve("state-dir", &self.state_dir)?;
        let files = source.resolve_tls(&self.tls_files())?;
        (self.tls.ca, self.tls.cert, self.tls.key) = (files.ca, files.cert, files.key);
        for crl in &mut self.tls.crl {
            *crl = source.resolve("tls.crl", crl)?;
        }
        self.alerting.resolve_paths(source)?;
        if let Some(influx) = &mut self.influxdb {
            if let Some(f) = &influx.token_file {
                influx.token_file = Some(source.resolve("influxdb.token-file", f)?);
            }
            if let Some(f) = &influx.ca {
                influx.ca = Some(source.resolve("influxdb.ca", f)?);
            }
        }
        Ok(())
    }

    /// `[[tenant]]`: names, prefixes, trust and quotas.
    fn validate_tenants(&self, source: &Source) -> Result<(), ConfigError> {
        let mut tenants = BTreeSet::new();
        for (i, t) in self.tenant.iter().enumerate() {
            sonde_proto::identity::validate_component("tenant", &t.name)
                .map_err(|e| source.error(&format!("tenant[{i}].name"), e.to_string()))?;
            if !tenants.insert(&t.name) {
                return Err(source.error(
                    &format!("tenant[{i}].name"),
                    format!(
                        "tenant {} is listed twice; give all its prefixes in one entry",
                        t.name
                    ),
                ));
            }
            for p in &t.prefixes {
                if p.trunc() != *p {
                    return Err(source.error(
                        &format!("tenant[{i}].prefixes"),
                        format!("{p} has host bits set; did you mean {}?", p.trunc()),
                    ));
                }
            }
            for trusted in &t.trust {
                sonde_proto::identity::validate_component("tenant", trusted)
                    .map_err(|e| source.error(&format!("tenant[{i}].trust"), e.to_string()))?;
            }
            for (key, v) in [
                ("max-series", t.max_series),
                ("max-definitions", t.max_definitions),
                ("max-addresses", t.max_addresses),
            ] {
                if v == 0 {
                    return Err(source.error(&format!("tenant[{i}].{key}"), "must be at least 1"));
                }
            }
        }
        Ok(())
    }

    /// Heartbeats, listeners and `[[agent]]` overrides.
    fn validate_heartbeats(&self, source: &Source) -> Result<(), ConfigError> {
        let too_short = |d: Option<Duration>| d.is_some_and(|d| d < MIN_HEARTBEAT);
        if too_short(self.heartbeat.interval) {
            return Err(source.error("heartbeat.interval", "must be at least 100ms"));
        }
        if too_short(self.heartbeat.grace) {
            return Err(source.error("heartbeat.grace", "must be at least 100ms"));
        }
        if let (Some(i), Some(g)) = (self.heartbeat.interval, self.heartbeat.grace)
            && g < i
        {
            return Err(source.error(
                "heartbeat.grace",
                format!(
                    "{} is shorter than heartbeat.interval {}: every agent would be missing \
                     between two heartbeats (use at least 2 x the interval)",
                    humantime::format_duration(g),
                    humantime::format_duration(i)
                ),
            ));
        }
        if let Some(h) = self.health_listen
            && h.port() == self.listen.port()
            && h.port() != 0
            && (h.ip() == self.listen.ip()
                || h.ip().is_unspecified()
                || self.listen.ip().is_unspecified())
        {
            return Err(source.error(
                "health-listen",
                format!(
                    "{h} takes the port of `listen` {}: give the health check its own port",
                    self.listen
                ),
            ));
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
            if let (Some(interval), Some(g)) =
                (a.heartbeat_interval.or(self.heartbeat.interval), a.grace)
                && g < interval
            {
                return Err(source.error(
                    &format!("agent[{i}].grace"),
                    format!(
                        "{} is shorter than this agent's heartbeat interval {}: it would be \
                         missing between two heartbeats",
                        humantime::format_duration(g),
                        humantime::format_duration(interval)
                    ),
                ));
            }
            a.probes()
                .validate()
                .map_err(|e| source.error(&format!("agent[{i}].{}", e.key), e.message))?;
            if let Some(s) = &a.schedule
                && !self.alerting.schedule.iter().any(|d| d.name == *s)
            {
                return Err(source.error(
                    &format!("agent[{i}].schedule"),
                    format!("no [[alerting.schedule]] named {s:?}"),
                ));
            }
        }
        Ok(())
    }

    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        self.validate_heartbeats(source)?;
        self.validate_tenants(source)?;
        for t in &self.access.operator_tenants {
            sonde_proto::identity::validate_component("tenant", t)
                .map_err(|e| source.error("access.operator-tenants", e.to_string()))?;
        }
        if let Some(influx) = &self.influxdb {
            influx.validate(source)?;
        }
        self.validate_analysis(source)?;
        self.alerting.validate(source)?;
        if let Some((key, message)) = self.checks.invalid() {
            return Err(source.error(key, message));
        }
        if let Some(p) = self.ping_listen {
            for (key, other) in [
                ("listen", Some(self.listen)),
                ("health-listen", self.health_listen),
            ] {
                if let Some(o) = other
                    && o.port() == p.port()
                    && p.port() != 0
                    && (o.ip() == p.ip() || o.ip().is_unspecified() || p.ip().is_unspecified())
                {
                    return Err(source.error(
                        "ping-listen",
                        format!("{p} takes the port of `{key}` {o}: give the pings their own port"),
                    ));
                }
            }
        }
        if self.retention.aggregates < Duration::from_secs(86_400) {
            return Err(source.error(
                "retention.aggregates",
                "must be at least 1d (the 24 h averages read it)",
            ));
        }
        let l = &self.limits;
        if l.handshake_timeout < Duration::from_millis(100)
            || l.handshake_timeout > Duration::from_secs(300)
        {
            return Err(source.error("limits.handshake-timeout", "must be between 100ms and 5m"));
        }
        if l.connections_per_certificate == 0 {
            return Err(source.error("limits.connections-per-certificate", "must be at least 1"));
        }
        if l.messages_per_second == 0 {
            return Err(source.error("limits.messages-per-second", "must be at least 1"));
        }
        if l.message_burst == 0 {
            return Err(source.error("limits.message-burst", "must be at least 1"));
        }
        // Load the TLS material for real, and blame the key that names the
        // file that failed.
        let files = self.tls_files();
        sonde_runtime::tls::server_config(&files, &self.tls.crl)
            .map_err(|e| source.tls_error(&files, &self.tls.crl, &e))?;
        Ok(())
    }

    fn validate_analysis(&self, source: &Source) -> Result<(), ConfigError> {
        let a = &self.analysis;
        let max = crate::consumers::analysis::outage::MAX_WINDOW;
        if !(1..=max).contains(&a.outage.of) {
            return Err(source.error("analysis.outage.of", format!("must be between 1 and {max}")));
        }
        if !(1..=a.outage.of).contains(&a.outage.failures) {
            return Err(source.error("analysis.outage.failures", "must be between 1 and `of`"));
        }
        if a.outage.recover_after == 0 {
            return Err(source.error("analysis.outage.recover-after", "must be at least 1"));
        }
        if a.route_confirm == 0 {
            return Err(source.error("analysis.route-confirm", "must be at least 1"));
        }
        let c = &a.correlation;
        for (key, share) in [
            ("analysis.correlation.agent-share", c.agent_share),
            ("analysis.correlation.prefix-share", c.prefix_share),
        ] {
            if !(share > 0.0 && share <= 1.0) {
                return Err(source.error(key, "must be a share in (0, 1], e.g. 0.8"));
            }
        }
        if a.checkpoint < Duration::from_millis(100) {
            return Err(source.error("analysis.checkpoint", "must be at least 100ms"));
        }
        if a.retire_after < Duration::from_secs(1) {
            return Err(source.error("analysis.retire-after", "must be at least 1s"));
        }
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

    /// The prefixes granted to `tenant`.
    pub fn grants(&self, tenant: &str) -> &[ipnet::IpNet] {
        self.tenant
            .iter()
            .find(|t| t.name == tenant)
            .map_or(&[], |t| t.prefixes.as_slice())
    }

    /// Who sees what under this config (`access.rs`).
    pub fn tenancy(&self) -> std::sync::Arc<crate::read::access::Tenancy> {
        self.tenancy
            .0
            .get_or_init(|| std::sync::Arc::new(crate::read::access::Tenancy::of(self)))
            .clone()
    }

    /// Where `tenant`'s managed host-name targets may be probed: its
    /// granted prefixes; `None` (anywhere) for an operator tenant.
    pub fn within(&self, tenant: &str) -> Option<Vec<ipnet::IpNet>> {
        if self.access.operator_tenants.contains(tenant) {
            return None;
        }
        Some(
            self.tenant
                .iter()
                .filter(|t| t.name == tenant)
                .flat_map(|t| t.prefixes.iter().copied())
                .collect(),
        )
    }

    /// The quotas of `tenant` (the defaults without a `[[tenant]]` entry).
    pub fn quotas(&self, tenant: &str) -> Quotas {
        self.tenant.iter().find(|t| t.name == tenant).map_or(
            Quotas {
                max_series: DEFAULT_MAX_SERIES,
                max_definitions: DEFAULT_MAX_DEFINITIONS,
                max_addresses: DEFAULT_MAX_ADDRESSES,
            },
            |t| Quotas {
                max_series: t.max_series,
                max_definitions: t.max_definitions,
                max_addresses: t.max_addresses,
            },
        )
    }

    /// The tenants granted any part of `net` (a prefix, or an address as
    /// a host prefix).
    pub fn tenants_granted<'a>(&'a self, net: &'a ipnet::IpNet) -> impl Iterator<Item = &'a str> {
        self.tenant
            .iter()
            .filter(move |t| {
                t.prefixes
                    .iter()
                    .any(|g| g.contains(net) || net.contains(g))
            })
            .map(|t| t.name.as_str())
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
