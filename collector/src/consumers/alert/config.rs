//! `[alerting]` in the collector config: rules (defaults and per-tenant
//! replacements), routes, receivers, schedules, flap damping, the
//! dead-man's switch and the no-data alert.
//!
//! Secrets (webhook URLs, SMTP passwords, gateway tokens) are given as
//! `KEY`, `KEY-file` (first line of a file, e.g. a systemd credential) or
//! `KEY-env` (an environment variable); they are read when the config is
//! loaded and never printed (`Secret`'s `Debug` hides them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sonde_runtime::config::{ConfigError, Source};

use super::matcher::Matcher;
use super::schedule::{Schedule, ScheduleConfig};
use crate::config::Secret;

/// `[alerting]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Alerting {
    /// Base URL put in front of the API paths in notifications, e.g.
    /// `https://sonde.example.net:7443` (default: the paths alone).
    #[serde(default)]
    pub external_url: Option<String>,
    /// Rules for every tenant.
    #[serde(default)]
    pub rules: Rules,
    /// Per-tenant rules: a rule given here replaces the default one.
    #[serde(default)]
    pub tenant: Vec<TenantRules>,
    #[serde(default)]
    pub route: Vec<Route>,
    #[serde(default)]
    pub receiver: Vec<Receiver>,
    #[serde(default)]
    pub schedule: Vec<ScheduleConfig>,
    #[serde(default)]
    pub flapping: Flapping,
    #[serde(default)]
    pub delivery: Delivery,
    /// An outbound dead-man's switch (Healthchecks-style URL).
    #[serde(default)]
    pub deadman: Option<Deadman>,
    /// Alert when nothing at all arrived from any agent for a while.
    #[serde(default)]
    pub no_data: Option<NoData>,
    /// How often the alert engine looks for new events.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll: Duration,
}

fn default_poll() -> Duration {
    Duration::from_secs(1)
}

impl Default for Alerting {
    fn default() -> Self {
        Self {
            external_url: None,
            rules: Rules::default(),
            tenant: Vec::new(),
            route: Vec::new(),
            receiver: Vec::new(),
            schedule: Vec::new(),
            flapping: Flapping::default(),
            delivery: Delivery::default(),
            deadman: None,
            no_data: None,
            poll: default_poll(),
        }
    }
}

/// How bad an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// A rule that is on or off with a severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub severity: Option<Severity>,
}

fn yes() -> bool {
    true
}

impl Rule {
    const fn on(severity: Severity) -> Self {
        Self {
            enabled: true,
            severity: Some(severity),
        }
    }
}

/// A rule about a one-off change (route, public IP, remote ports): it
/// fires once and is dropped after `hold` without a resolved message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChangeRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub severity: Option<Severity>,
    /// How long it stays listed as firing.
    #[serde(default = "default_hold", with = "humantime_serde")]
    pub hold: Duration,
}

fn default_hold() -> Duration {
    Duration::from_secs(3600)
}

impl ChangeRule {
    const fn on(severity: Severity) -> Self {
        Self {
            enabled: true,
            severity: Some(severity),
            hold: Duration::from_secs(3600),
        }
    }
}

/// Target outages from the outage detector, by the scope it attributed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutageRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Which outage scopes alert: `agent-network`, `prefix`, `target`,
    /// `path` (default all).
    #[serde(default = "all_scopes")]
    pub scopes: BTreeSet<String>,
}

/// The outage scopes the correlator reports.
pub const SCOPES: [&str; 4] = ["agent-network", "prefix", "target", "path"];

fn all_scopes() -> BTreeSet<String> {
    SCOPES.iter().map(|s| (*s).to_owned()).collect()
}

/// Latency above `threshold` in at least `minutes` of the last `of`
/// complete minutes (minute averages of a series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LatencyRule {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default = "default_latency", with = "humantime_serde")]
    pub threshold: Duration,
    #[serde(default = "default_minutes")]
    pub minutes: u32,
    #[serde(default = "default_of")]
    pub of: u32,
}

fn default_latency() -> Duration {
    Duration::from_millis(150)
}
fn default_minutes() -> u32 {
    3
}
fn default_of() -> u32 {
    5
}

impl Default for LatencyRule {
    fn default() -> Self {
        Self {
            enabled: false,
            severity: Some(Severity::Warning),
            threshold: default_latency(),
            minutes: default_minutes(),
            of: default_of(),
        }
    }
}

/// A new listening port rated at least `min-risk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PortRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default = "default_min_risk")]
    pub min_risk: Risk,
}

fn default_min_risk() -> Risk {
    Risk::High
}

/// The agent's port risk ratings, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Risk::Low),
            "medium" => Some(Risk::Medium),
            "high" => Some(Risk::High),
            _ => None,
        }
    }
}

/// The rules of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rules {
    #[serde(default = "default_agent_missing")]
    pub agent_missing: Rule,
    #[serde(default = "default_outage")]
    pub outage: OutageRule,
    #[serde(default)]
    pub latency: LatencyRule,
    #[serde(default = "default_route_change")]
    pub route_change: ChangeRule,
    #[serde(default = "default_ip_change")]
    pub public_ip_change: ChangeRule,
    #[serde(default = "default_open_port")]
    pub open_port: PortRule,
    #[serde(default = "default_remote_ports")]
    pub remote_ports: ChangeRule,
    /// A heartbeat check missed its period and grace.
    #[serde(default = "default_check")]
    pub check_down: Rule,
    /// A heartbeat check reported a failure.
    #[serde(default = "default_check")]
    pub check_failed: Rule,
}

fn default_agent_missing() -> Rule {
    Rule::on(Severity::Critical)
}
fn default_outage() -> OutageRule {
    OutageRule {
        enabled: true,
        severity: Some(Severity::Critical),
        scopes: all_scopes(),
    }
}
fn default_route_change() -> ChangeRule {
    ChangeRule::on(Severity::Info)
}
fn default_ip_change() -> ChangeRule {
    ChangeRule::on(Severity::Warning)
}
fn default_open_port() -> PortRule {
    PortRule {
        enabled: true,
        severity: Some(Severity::Warning),
        min_risk: Risk::High,
    }
}
fn default_remote_ports() -> ChangeRule {
    ChangeRule::on(Severity::Warning)
}
fn default_check() -> Rule {
    Rule::on(Severity::Critical)
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            agent_missing: default_agent_missing(),
            outage: default_outage(),
            latency: LatencyRule::default(),
            route_change: default_route_change(),
            public_ip_change: default_ip_change(),
            open_port: default_open_port(),
            remote_ports: default_remote_ports(),
            check_down: default_check(),
            check_failed: default_check(),
        }
    }
}

/// `[[alerting.tenant]]`: rules of one tenant; each rule table given
/// replaces the default rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TenantRules {
    pub name: String,
    #[serde(default)]
    pub agent_missing: Option<Rule>,
    #[serde(default)]
    pub outage: Option<OutageRule>,
    #[serde(default)]
    pub latency: Option<LatencyRule>,
    #[serde(default)]
    pub route_change: Option<ChangeRule>,
    #[serde(default)]
    pub public_ip_change: Option<ChangeRule>,
    #[serde(default)]
    pub open_port: Option<PortRule>,
    #[serde(default)]
    pub remote_ports: Option<ChangeRule>,
    #[serde(default)]
    pub check_down: Option<Rule>,
    #[serde(default)]
    pub check_failed: Option<Rule>,
}

/// `[[alerting.route]]`: which alerts go to which receiver, how grouped,
/// and when. Routes are tried in order; the first that matches takes the
/// alert unless it says `continue = true`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Route {
    /// Name in the API and logs (default `route[N]`).
    #[serde(default)]
    pub name: Option<String>,
    /// Only alerts of this tenant; without it, every tenant's and the
    /// collector's own.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    pub receiver: String,
    /// Labels whose values make a group: one notification per group.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Wait before the first notification of a new group (to collect
    /// what comes together) …
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
    /// … and between notifications of a group that changed.
    #[serde(default = "default_group_interval", with = "humantime_serde")]
    pub group_interval: Duration,
    /// Re-send a group that is still firing, unchanged, after this.
    #[serde(default = "default_repeat_interval", with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Name of an `[[alerting.schedule]]`; without it, always.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

/// Default grouping: a dead /24 is one group, a cut-off agent another.
pub fn default_group_by() -> Vec<String> {
    ["tenant", "agent", "prefix"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
fn default_group_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_group_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}

/// `[alerting.flapping]`: an alert that changes state more than
/// `max-flips` times within `window` is held as flapping (one
/// notification) until it has been stable for `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Flapping {
    #[serde(default = "default_flap_window", with = "humantime_serde")]
    pub window: Duration,
    #[serde(default = "default_max_flips")]
    pub max_flips: u32,
}

fn default_flap_window() -> Duration {
    Duration::from_secs(900)
}
fn default_max_flips() -> u32 {
    4
}

impl Default for Flapping {
    fn default() -> Self {
        Self {
            window: default_flap_window(),
            max_flips: default_max_flips(),
        }
    }
}

/// `[alerting.delivery]`: how receivers retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Delivery {
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// A notification still undelivered after this is given up (and
    /// recorded as failed).
    #[serde(default = "default_give_up", with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Failed attempts in a row before `receiver-failing` is raised.
    #[serde(default = "default_failing_after")]
    pub failing_after: u32,
    /// Timeout of one attempt.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_retry_initial() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_give_up() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_failing_after() -> u32 {
    5
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            give_up_after: default_give_up(),
            failing_after: default_failing_after(),
            timeout: default_timeout(),
        }
    }
}

/// `[[alerting.receiver]]`: a name and one or more integrations; each
/// integration delivers (and retries) on its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Receiver {
    pub name: String,
    #[serde(default)]
    pub discord: Option<Discord>,
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub twilio: Option<Twilio>,
    #[serde(default)]
    pub sms_webhook: Option<SmsWebhook>,
}

/// Discord webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Discord {
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub url_env: Option<String>,
    /// Name the messages are posted under.
    #[serde(default)]
    pub username: Option<String>,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required), port 587.
    Starttls,
    /// TLS from the first byte ("SMTPS"), port 465.
    Tls,
    /// No TLS: only for a relay on the same host.
    None,
}

/// SMTP mail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Email {
    pub host: String,
    /// Default 587 (starttls), 465 (tls) or 25 (none).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_smtp_tls")]
    pub tls: SmtpTls,
    /// Extra CA certificate (PEM) for a relay with a private CA.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    pub from: String,
    pub to: Vec<String>,
}

fn default_smtp_tls() -> SmtpTls {
    SmtpTls::Starttls
}

/// SMS through a Twilio-compatible API: `POST
/// {base-url}/2010-04-01/Accounts/{account-sid}/Messages.json`, form
/// fields `To`, `From`, `Body`, HTTP basic auth.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Twilio {
    #[serde(default = "default_twilio_url")]
    pub base_url: String,
    pub account_sid: String,
    #[serde(default)]
    pub auth_token: Option<Secret>,
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    #[serde(default)]
    pub auth_token_env: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// Messages are cut to this many characters.
    #[serde(default = "default_sms_length")]
    pub max_length: usize,
}

fn default_twilio_url() -> String {
    "https://api.twilio.com".to_owned()
}
fn default_sms_length() -> usize {
    160
}

/// SMS through any HTTP gateway: one request per recipient, built from
/// templates. Placeholders: `{to}`, `{message}`, and `{message_json}` /
/// `{to_json}` (JSON string, quotes included), `{message_url}` /
/// `{to_url}` (percent-encoded).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SmsWebhook {
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL (a template too); may carry a key, so it is a secret.
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub url_env: Option<String>,
    /// Header values (templates); secrets belong in `header-files`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header values read from files (e.g. `Authorization`).
    #[serde(default)]
    pub header_files: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub body: String,
    pub to: Vec<String>,
    #[serde(default = "default_sms_length")]
    pub max_length: usize,
}

fn default_method() -> String {
    "POST".to_owned()
}

/// `[alerting.deadman]`: while healthy the collector requests `url`
/// every `interval`; `url/start` when it starts and `url/fail` when
/// it is unhealthy or has received nothing for `no-data.after`
/// (the Healthchecks.io protocol).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Deadman {
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default = "default_deadman_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Send `/start` and `/fail` as well as plain pings.
    #[serde(default = "yes")]
    pub signals: bool,
}

fn default_deadman_interval() -> Duration {
    Duration::from_secs(60)
}

/// `[alerting.no-data]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NoData {
    #[serde(default = "default_no_data", with = "humantime_serde")]
    pub after: Duration,
    #[serde(default)]
    pub severity: Option<Severity>,
}

fn default_no_data() -> Duration {
    Duration::from_secs(300)
}

/// Reads a secret given as a value, a file or an environment variable.
pub fn secret(
    key: &str,
    value: Option<&Secret>,
    file: Option<&PathBuf>,
    env: Option<&String>,
) -> Result<Secret, (String, String)> {
    match (value, file, env) {
        (Some(v), None, None) => Ok(v.clone()),
        (None, Some(f), None) => Secret::from_file(f).map_err(|e| (format!("{key}-file"), e)),
        (None, None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            _ => Err((
                format!("{key}-env"),
                format!("environment variable {var} is not set or empty"),
            )),
        },
        (None, None, None) => Err((
            key.to_owned(),
            format!("give {key}, {key}-file or {key}-env"),
        )),
        _ => Err((
            key.to_owned(),
            format!("give only one of {key}, {key}-file and {key}-env"),
        )),
    }
}

impl Alerting {
    /// The rules that apply to `tenant`.
    pub fn rules_for(&self, tenant: &str) -> Rules {
        let mut r = self.rules.clone();
        if let Some(t) = self.tenant.iter().find(|t| t.name == tenant) {
            r.agent_missing = t.agent_missing.unwrap_or(r.agent_missing);
            r.outage = t.outage.clone().unwrap_or(r.outage);
            r.latency = t.latency.unwrap_or(r.latency);
            r.route_change = t.route_change.unwrap_or(r.route_change);
            r.public_ip_change = t.public_ip_change.unwrap_or(r.public_ip_change);
            r.open_port = t.open_port.unwrap_or(r.open_port);
            r.remote_ports = t.remote_ports.unwrap_or(r.remote_ports);
            r.check_down = t.check_down.unwrap_or(r.check_down);
            r.check_failed = t.check_failed.unwrap_or(r.check_failed);
        }
        r
    }

    /// The schedule named `name` if the config defines one (a monitoring
    /// schedule that is gone means "always watched").
    pub fn defined_schedule(&self, name: &str) -> Option<Schedule> {
        self.schedule
            .iter()
            .find(|s| s.name == name)
            .and_then(|c| Schedule::from_config(c).ok())
    }

    /// The schedule named `name` (`always` when none).
    pub fn schedule(&self, name: Option<&str>) -> Schedule {
        name.and_then(|n| self.schedule.iter().find(|s| s.name == n))
            .and_then(|c| Schedule::from_config(c).ok())
            .unwrap_or(Schedule::Always)
    }

    /// A route's name.
    pub fn route_name(&self, i: usize) -> String {
        self.route
            .get(i)
            .and_then(|r| r.name.clone())
            .unwrap_or_else(|| format!("route[{i}]"))
    }

    /// Resolves paths against the config file's directory.
    pub fn resolve_paths(&mut self, source: &Source) -> Result<(), ConfigError> {
        for (i, r) in self.receiver.iter_mut().enumerate() {
            let key = |k: &str| format!("alerting.receiver[{i}].{k}");
            if let Some(d) = &mut r.discord
                && let Some(f) = &d.url_file
            {
                d.url_file = Some(source.resolve(&key("discord.url-file"), f)?);
            }
            if let Some(e) = &mut r.email {
                if let Some(f) = &e.password_file {
                    e.password_file = Some(source.resolve(&key("email.password-file"), f)?);
                }
                if let Some(f) = &e.ca {
                    e.ca = Some(source.resolve(&key("email.ca"), f)?);
                }
            }
            if let Some(t) = &mut r.twilio
                && let Some(f) = &t.auth_token_file
            {
                t.auth_token_file = Some(source.resolve(&key("twilio.auth-token-file"), f)?);
            }
            if let Some(w) = &mut r.sms_webhook {
                if let Some(f) = &w.url_file {
                    w.url_file = Some(source.resolve(&key("sms-webhook.url-file"), f)?);
                }
                for f in w.header_files.values_mut() {
                    *f = source.resolve(&key("sms-webhook.header-files"), f)?;
                }
            }
        }
        if let Some(d) = &mut self.deadman
            && let Some(f) = &d.url_file
        {
            d.url_file = Some(source.resolve("alerting.deadman.url-file", f)?);
        }
        Ok(())
    }

    /// Checks everything a running engine would trip over.
    pub fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        let err = |key: String, msg: String| source.error(&key, msg);
        if let Some(u) = &self.external_url {
            let parsed = reqwest::Url::parse(u)
                .map_err(|e| err("alerting.external-url".into(), format!("{u:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(err(
                    "alerting.external-url".into(),
                    format!("{u:?}: must be an http or https URL"),
                ));
            }
        }
        if self.poll < Duration::from_millis(100) || self.poll > Duration::from_secs(60) {
            return Err(err(
                "alerting.poll".into(),
                "must be between 100ms and 1m".into(),
            ));
        }
        validate_rules(&self.rules, "alerting.rules", source)?;
        let mut seen = BTreeSet::new();
        for (i, t) in self.tenant.iter().enumerate() {
            sonde_proto::identity::validate_component("tenant", &t.name)
                .map_err(|e| err(format!("alerting.tenant[{i}].name"), e.to_string()))?;
            if !seen.insert(&t.name) {
                return Err(err(
                    format!("alerting.tenant[{i}].name"),
                    format!("tenant {} is listed twice", t.name),
                ));
            }
            validate_rules(
                &self.rules_for(&t.name),
                &format!("alerting.tenant[{i}]"),
                source,
            )?;
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.schedule.iter().enumerate() {
            if !names.insert(s.name.as_str()) || s.name == "always" {
                return Err(err(
                    format!("alerting.schedule[{i}].name"),
                    format!("{:?} is listed twice or reserved (always)", s.name),
                ));
            }
            Schedule::from_config(s)
                .map_err(|(k, m)| err(format!("alerting.schedule[{i}].{k}"), m))?;
        }
        let mut receivers = BTreeSet::new();
        for (i, r) in self.receiver.iter().enumerate() {
            if !receivers.insert(r.name.as_str()) {
                return Err(err(
                    format!("alerting.receiver[{i}].name"),
                    format!("receiver {:?} is listed twice", r.name),
                ));
            }
            super::receiver::validate(r)
                .map_err(|(k, m)| err(format!("alerting.receiver[{i}].{k}"), m))?;
        }
        self.validate_routes(source, &receivers, &names)?;
        let d = &self.delivery;
        if d.retry_initial < Duration::from_millis(10) || d.retry_max < d.retry_initial {
            return Err(err(
                "alerting.delivery.retry-max".into(),
                "retry-initial must be at least 10ms and retry-max not below it".into(),
            ));
        }
        if d.timeout < Duration::from_millis(100) {
            return Err(err(
                "alerting.delivery.timeout".into(),
                "must be at least 100ms".into(),
            ));
        }
        if self.flapping.max_flips < 2 || self.flapping.window < Duration::from_secs(1) {
            return Err(err(
                "alerting.flapping.max-flips".into(),
                "max-flips must be at least 2 and window at least 1s".into(),
            ));
        }
        self.validate_watchers(source)
    }
}

impl Alerting {
    fn validate_watchers(&self, source: &Source) -> Result<(), ConfigError> {
        let err = |key: String, msg: String| source.error(&key, msg);
        if let Some(dm) = &self.deadman {
            let url = secret(
                "url",
                dm.url.as_ref(),
                dm.url_file.as_ref(),
                dm.url_env.as_ref(),
            )
            .map_err(|(k, m)| err(format!("alerting.deadman.{k}"), m))?;
            super::receiver::check_url(url.expose())
                .map_err(|m| err("alerting.deadman.url".into(), m))?;
            if dm.interval < Duration::from_secs(1) {
                return Err(err(
                    "alerting.deadman.interval".into(),
                    "must be at least 1s".into(),
                ));
            }
        }
        if let Some(n) = &self.no_data
            && n.after < Duration::from_secs(1)
        {
            return Err(err(
                "alerting.no-data.after".into(),
                "must be at least 1s".into(),
            ));
        }
        Ok(())
    }

    fn validate_routes(
        &self,
        source: &Source,
        receivers: &BTreeSet<&str>,
        names: &BTreeSet<&str>,
    ) -> Result<(), ConfigError> {
        let err = |key: String, msg: String| source.error(&key, msg);
        for (i, r) in self.route.iter().enumerate() {
            let key = |k: &str| format!("alerting.route[{i}].{k}");
            if !receivers.contains(r.receiver.as_str()) {
                return Err(err(
                    key("receiver"),
                    format!("no [[alerting.receiver]] named {:?}", r.receiver),
                ));
            }
            if let Some(s) = &r.schedule
                && s != "always"
                && !names.contains(s.as_str())
            {
                return Err(err(
                    key("schedule"),
                    format!("no [[alerting.schedule]] named {s:?}"),
                ));
            }
            if let Some(t) = &r.tenant {
                sonde_proto::identity::validate_component("tenant", t)
                    .map_err(|e| err(key("tenant"), e.to_string()))?;
            }
            for (k, d) in [
                ("group-interval", r.group_interval),
                ("repeat-interval", r.repeat_interval),
            ] {
                if d < Duration::from_secs(1) {
                    return Err(err(key(k), "must be at least 1s".into()));
                }
            }
            if r.repeat_interval < r.group_interval {
                return Err(err(
                    key("repeat-interval"),
                    "must not be below group-interval".into(),
                ));
            }
        }
        Ok(())
    }
}

fn validate_rules(r: &Rules, at: &str, source: &Source) -> Result<(), ConfigError> {
    for s in &r.outage.scopes {
        if !SCOPES.contains(&s.as_str()) {
            return Err(source.error(
                &format!("{at}.outage.scopes"),
                format!("{s:?} is not an outage scope ({})", SCOPES.join(", ")),
            ));
        }
    }
    let l = &r.latency;
    if l.of == 0 || l.of > 60 || l.minutes == 0 || l.minutes > l.of {
        return Err(source.error(
            &format!("{at}.latency.minutes"),
            "need 1 <= minutes <= of <= 60",
        ));
    }
    for (k, hold) in [
        ("route-change", r.route_change.hold),
        ("public-ip-change", r.public_ip_change.hold),
        ("remote-ports", r.remote_ports.hold),
    ] {
        if hold < Duration::from_secs(1) {
            return Err(source.error(&format!("{at}.{k}.hold"), "must be at least 1s"));
        }
    }
    Ok(())
}
