//! Probe targets managed at run time — through `POST/PUT/DELETE
//! /api/v1/targets` and the web UI — by a tenant's admins, beside the
//! `[[agent]]` assignments of the config file.
//!
//! A definition is one target (address, host name or CIDR range) of one
//! probe kind, with its interval, timeout, history retention, the agents
//! that run it (none listed: every agent of the tenant) and an enabled
//! flag. Definitions live in the store (`managed_targets`), are validated
//! exactly as the agent validates its own config (same shapes, defaults and
//! bounds, [`sonde_runtime::probes`]), and are published through a `watch`
//! channel: every open agent session re-derives its assignment from it and
//! pushes a `ConfigUpdate` at once, so a change reaches the agents within
//! a second and without restarts.
//!
//! A tenant may only aim probes at addresses in its granted prefixes (its
//! results would be invisible to it otherwise); host names are accepted and
//! visible when they resolve inside a grant. Operators may define targets
//! for any tenant. `retention` shortens how long the collector keeps the
//! minute and hour history of the target's series (never beyond
//! `[retention] aggregates`); [`apply_retention`] enforces it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sonde_runtime::probes::{ProbeError, Probes};
use sonde_runtime::target::Target;
use tokio::sync::watch;

use crate::consumers::analysis::series::{HOUR_NS, MINUTE_NS};
use crate::observation::Probe;
use crate::read::access::Access;
use crate::store::{Store, StoreError};

/// The managed targets' table.
pub const SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "targets",
    migrations: &[MIGRATION],
};

/// Migration 7.
const MIGRATION: &str = "CREATE TABLE managed_targets (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        author TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        UNIQUE (tenant, name)
    )";

/// Longest definition name.
pub const MAX_NAME: usize = 100;
/// Most agents one definition may list.
pub const MAX_AGENTS: usize = 1000;
/// Shortest retention.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// A definition as the API receives it (`POST` and `PUT` take the whole
/// definition).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRequest {
    pub name: String,
    /// Address, host name or CIDR range.
    pub target: String,
    pub kind: Probe,
    /// TCP: the port to connect to (required); trace: the UDP port.
    #[serde(default)]
    pub port: Option<u16>,
    /// `1s`, `10s`, `5m`; default per kind (ping 1 s, tcp 10 s, trace 5 min).
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    /// How long its history is kept (default: `[retention] aggregates`).
    #[serde(default)]
    pub retention: Option<String>,
    /// Agents of the tenant that run it; empty: all of them.
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Operators only: whose target it is (default: the caller's tenant).
    #[serde(default)]
    pub tenant: Option<String>,
}

fn enabled_default() -> bool {
    true
}

/// A stored definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedTarget {
    pub id: i64,
    pub tenant: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: Spec,
    pub enabled: bool,
    /// Who last changed it (`sonde://TENANT/ROLE/NAME`).
    pub author: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a definition probes, as stored (JSON in the `spec` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub target: String,
    pub kind: Probe,
    pub port: Option<u16>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    pub agents: Vec<String>,
}

impl Spec {
    /// The probe definitions the agent runs for it.
    pub fn probes(&self) -> Probes {
        // Parsed as the agent parses its config file: the same defaults
        // for everything a definition does not say (payload, hops, …).
        probes_of(
            self.kind,
            &self.series_target(),
            Some(self.interval),
            Some(self.timeout),
            self.port.filter(|_| self.kind == Probe::Trace),
        )
        .unwrap_or_default()
    }

    /// The target as the agent reports it in its results (TCP as
    /// `HOST:PORT`), i.e. the `target` of its series.
    pub fn series_target(&self) -> String {
        match (self.kind, self.port) {
            (Probe::Tcp, Some(port)) => {
                let t: Target = self.target.parse().unwrap_or(Target::Host(String::new()));
                sonde_runtime::probes::Endpoint { target: t, port }.to_string()
            }
            _ => self.target.clone(),
        }
    }

    /// How many addresses it probes (a host name: one).
    pub fn addresses(&self) -> usize {
        match self.target.parse::<Target>() {
            Ok(Target::Range(n)) => n.hosts().count(),
            _ => 1,
        }
    }

    /// Whether `agent` of the definition's tenant runs it.
    pub fn runs_on(&self, agent: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|a| a == agent)
    }

    /// Whether the series (`agent`, `probe`, series `target`) is one the
    /// definition makes (see `observation.rs` for series targets: a range
    /// makes one per address, with the port for TCP).
    pub fn covers(&self, agent: &str, probe: Probe, target: &str) -> bool {
        if self.kind != probe || !self.runs_on(agent) {
            return false;
        }
        let Ok(Target::Range(net)) = self.target.parse::<Target>() else {
            return self.series_target() == target;
        };
        let address = match self.port.filter(|_| probe == Probe::Tcp) {
            Some(port) => match sonde_runtime::target::split_host(target) {
                Some((host, p)) if p == port.to_string() => host,
                _ => return false,
            },
            None => target,
        };
        address.parse::<IpAddr>().is_ok_and(|a| net.contains(&a))
    }
}

/// Whether an enabled definition of `tenant` in `all` makes the series.
pub fn covered(
    all: &[ManagedTarget],
    tenant: &str,
    agent: &str,
    probe: Probe,
    target: &str,
) -> bool {
    all.iter()
        .any(|t| t.enabled && t.tenant == tenant && t.spec.covers(agent, probe, target))
}

/// One probe section of `kind` for `target`, parsed and validated as a
/// config file's would be; the error names the request's key.
fn probes_of(
    kind: Probe,
    target: &str,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    trace_port: Option<u16>,
) -> Result<Probes, String> {
    let mut section = json!({ "targets": [target] });
    let human = |d: Duration| humantime::format_duration(d).to_string();
    if let Some(i) = interval {
        section["interval"] = json!(human(i));
    }
    if let Some(t) = timeout {
        section["timeout"] = json!(human(t));
    }
    if let Some(p) = trace_port {
        section["port"] = json!(p);
    }
    let probes: Probes = serde_json::from_value(json!({ kind.as_str(): [section] }))
        .map_err(|e| format!("target: {e}"))?;
    probes.validate().map_err(|ProbeError { key, message }| {
        // `ping[0].interval` → `interval`
        let key = key.rsplit('.').next().unwrap_or(&key).to_owned();
        format!("{key}: {message}")
    })?;
    Ok(probes)
}

fn duration(key: &str, raw: Option<&str>) -> Result<Option<Duration>, String> {
    raw.map(|s| {
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("{key}: {s:?} is not a duration such as 10s or 5m: {e}"))
    })
    .transpose()
}

/// What a definition is checked against.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub access: &'a Access,
    /// The agents of the definition's tenant (names).
    pub agents: &'a BTreeSet<String>,
    /// `[retention] aggregates`: the longest retention.
    pub max_retention: Duration,
    /// What the collector's resolver made of a host-name target (`None`
    /// when it was not asked: an address or range, or an operator's).
    pub resolved: Option<&'a Result<Vec<IpAddr>, String>>,
}

impl TargetRequest {
    /// The tenant the definition belongs to: the caller's, or for an
    /// operator the one named.
    pub fn tenant_for(&self, access: &Access) -> Result<String, String> {
        access.owner(self.tenant.as_deref(), "targets")
    }

    /// Checks everything and gives the definition's name and spec; the
    /// message names the offending key.
    pub fn validate(&self, cx: &Context<'_>) -> Result<(String, Spec), String> {
        let name = self.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME
            || name.chars().any(sonde_runtime::text::is_unsafe)
        {
            return Err(format!(
                "name: must be 1 to {MAX_NAME} characters without control or bidi-override characters"
            ));
        }
        let target: Target = self.target.parse().map_err(|e| format!("target: {e}"))?;
        check_grants(&target, cx)?;
        let port = match (self.kind, self.port) {
            (Probe::Tcp, None | Some(0)) => {
                return Err("port: a tcp target needs a port from 1 to 65535".into());
            }
            (Probe::Ping, Some(_)) => return Err("port: ping targets have no port".into()),
            (Probe::Trace, Some(0)) => return Err("port: must be 1 to 65535".into()),
            (_, p) => p,
        };
        let interval = duration("interval", self.interval.as_deref())?;
        let timeout = duration("timeout", self.timeout.as_deref())?;
        let series_target = match (self.kind, port) {
            (Probe::Tcp, Some(p)) => sonde_runtime::probes::Endpoint {
                target: target.clone(),
                port: p,
            }
            .to_string(),
            _ => target.to_string(),
        };
        let trace_port = port.filter(|_| self.kind == Probe::Trace);
        let probes = probes_of(self.kind, &series_target, interval, timeout, trace_port)?;
        let (interval, timeout) = match self.kind {
            Probe::Ping => probes.ping.first().map(|p| (p.interval, p.timeout())),
            Probe::Tcp => probes.tcp.first().map(|p| (p.interval, p.timeout())),
            Probe::Trace => probes.trace.first().map(|p| (p.interval, p.timeout)),
        }
        .ok_or("kind: nothing to probe")?;
        let retention = duration("retention", self.retention.as_deref())?;
        if let Some(r) = retention
            && !(MIN_RETENTION..=cx.max_retention).contains(&r)
        {
            return Err(format!(
                "retention: must be between 1h and the collector's [retention] aggregates ({})",
                humantime::format_duration(cx.max_retention)
            ));
        }
        if self.agents.len() > MAX_AGENTS {
            return Err(format!("agents: at most {MAX_AGENTS} may be listed"));
        }
        let mut agents = BTreeSet::new();
        for a in &self.agents {
            if !cx.agents.contains(a) {
                let known: Vec<&str> = cx.agents.iter().map(String::as_str).collect();
                return Err(format!(
                    "agents: {a:?} is not an agent of this tenant (known: {})",
                    if known.is_empty() {
                        "none yet".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            agents.insert(a.clone());
        }
        Ok((
            name.to_owned(),
            Spec {
                target: target.to_string(),
                kind: self.kind,
                port,
                interval,
                timeout,
                retention,
                agents: agents.into_iter().collect(),
            },
        ))
    }
}

/// Whether `target` lies in the grants of `cx.access` (a host name: every
/// address the collector resolved it to); the error names the first
/// address outside them and the grants.
fn check_grants(target: &Target, cx: &Context<'_>) -> Result<(), String> {
    let outside = match &target {
        Target::Addr(a) => (!cx.access.granted(*a)).then(|| a.to_string()),
        Target::Range(n) => (!cx.access.all && !cx.access.grants().iter().any(|g| g.contains(n)))
            .then(|| n.to_string()),
        // A name is checked on what it resolves to here.
        Target::Host(h) if !cx.access.all => match cx.resolved {
            Some(Ok(addrs)) if addrs.is_empty() => {
                return Err(format!("target: {h} has no address at the collector"));
            }
            Some(Ok(addrs)) => addrs
                .iter()
                .find(|a| !cx.access.granted(**a))
                .map(|a| format!("{h} (resolves to {a})")),
            Some(Err(e)) => {
                return Err(format!(
                    "target: {h} does not resolve at the collector: {e}"
                ));
            }
            None => return Err(format!("target: {h} was not resolved at the collector")),
        },
        Target::Host(_) => None,
    };
    if let Some(what) = outside {
        let grants: Vec<String> = cx.access.grants().iter().map(ToString::to_string).collect();
        return Err(format!(
            "target: {what} is not inside a prefix granted to tenant {} ({})",
            cx.access.tenant,
            if grants.is_empty() {
                "none".to_owned()
            } else {
                grants.join(", ")
            }
        ));
    }
    Ok(())
}

/// How much of its quotas a tenant uses besides the definition checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Its other definitions.
    pub definitions: usize,
    /// Its live series not made by the definition checked.
    pub series: usize,
    /// Its agents (a definition without `agents` runs on each).
    pub agents: usize,
}

/// Checks a definition against its tenant's quotas; the error names the
/// limit (`[[tenant]] max-…`).
pub fn check_quota(spec: &Spec, q: &crate::config::Quotas, used: Usage) -> Result<(), String> {
    if used.definitions + 1 > q.max_definitions {
        return Err(format!(
            "max-definitions: the tenant has {} definitions, its limit is {}",
            used.definitions, q.max_definitions
        ));
    }
    let addresses = spec.addresses();
    let agents = if spec.agents.is_empty() {
        used.agents.max(1)
    } else {
        spec.agents.len()
    };
    let series = addresses.saturating_mul(agents);
    if used.series.saturating_add(series) > q.max_series {
        return Err(format!(
            "max-series: {} addresses on {agents} agents make {series} series; with the {} the tenant has that exceeds its limit of {}",
            addresses, used.series, q.max_series
        ));
    }
    if addresses > q.max_addresses {
        return Err(format!(
            "max-addresses: {} has {addresses} addresses, a definition may have {}",
            spec.target, q.max_addresses
        ));
    }
    Ok(())
}

/// The definitions every session follows.
pub type Published = watch::Sender<Arc<Vec<ManagedTarget>>>;

/// The probes of the enabled definitions of `tenant` that `agent` runs,
/// their host names restricted to `within` (the tenant's grants; `None`
/// for an operator tenant): the agent checks its own resolution of them.
pub fn assigned(
    all: &[ManagedTarget],
    tenant: &str,
    agent: &str,
    within: Option<&[ipnet::IpNet]>,
) -> Probes {
    let mut probes = all
        .iter()
        .filter(|t| t.enabled && t.tenant == tenant && t.spec.runs_on(agent))
        .fold(Probes::default(), |acc, t| acc.merged(&t.spec.probes()));
    let within = within.map(<[ipnet::IpNet]>::to_vec);
    probes
        .ping
        .iter_mut()
        .for_each(|p| p.within.clone_from(&within));
    probes
        .tcp
        .iter_mut()
        .for_each(|p| p.within.clone_from(&within));
    probes
        .trace
        .iter_mut()
        .for_each(|p| p.within.clone_from(&within));
    probes
}

/// Why a change was refused by the store.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("tenant {tenant} already has a target named {name:?}")]
    NameTaken { tenant: String, name: String },
    #[error("no target definition {0}")]
    NotFound(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManagedTarget> {
    let spec: String = r.get(3)?;
    let spec: Spec = serde_json::from_str(&spec).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(ManagedTarget {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        spec,
        enabled: r.get(4)?,
        author: r.get(5)?,
        created_ms: r.get(6)?,
        updated_ms: r.get(7)?,
    })
}

const COLUMNS: &str = "id, tenant, name, spec, enabled, author, created_ms, updated_ms";

/// Every definition, by id.
pub fn load(store: &Store) -> Result<Vec<ManagedTarget>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare(&format!(
            "SELECT {COLUMNS} FROM managed_targets ORDER BY id"
        ))?;
        stmt.query_map([], row)?.collect()
    })
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(f, _), .. }
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

/// What an addition or a replacement writes.
#[derive(Debug, Clone)]
pub struct Change {
    pub name: String,
    pub spec: Spec,
    pub enabled: bool,
    /// The certificate that made it.
    pub author: String,
    pub at_ms: i64,
}

/// Adds a definition; gives it with its id.
pub fn insert(store: &Store, tenant: &str, ch: &Change) -> Result<ManagedTarget, ChangeError> {
    let body = serde_json::to_string(&ch.spec).unwrap_or_default();
    let id = store
        .with(|c| {
            c.execute(
                "INSERT INTO managed_targets (tenant, name, spec, enabled, author, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![tenant, ch.name, body, ch.enabled, ch.author, ch.at_ms],
            )?;
            Ok(c.last_insert_rowid())
        })
        .map_err(|e| taken(e, tenant, &ch.name))?;
    get(store, id)?.ok_or(ChangeError::NotFound(id))
}

fn taken(e: StoreError, tenant: &str, name: &str) -> ChangeError {
    if is_unique_violation(&e) {
        ChangeError::NameTaken {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        }
    } else {
        ChangeError::Store(e)
    }
}

/// One definition.
pub fn get(store: &Store, id: i64) -> Result<Option<ManagedTarget>, StoreError> {
    store.with_read(|c| {
        c.query_row(
            &format!("SELECT {COLUMNS} FROM managed_targets WHERE id = ?1"),
            [id],
            row,
        )
        .optional()
    })
}

/// Replaces definition `id` (its tenant stays).
pub fn update(store: &Store, id: i64, ch: &Change) -> Result<ManagedTarget, ChangeError> {
    let before = get(store, id)?.ok_or(ChangeError::NotFound(id))?;
    let body = serde_json::to_string(&ch.spec).unwrap_or_default();
    store
        .with(|c| {
            c.execute(
                "UPDATE managed_targets SET name = ?2, spec = ?3, enabled = ?4, author = ?5,
                    updated_ms = ?6 WHERE id = ?1",
                params![id, ch.name, body, ch.enabled, ch.author, ch.at_ms],
            )
        })
        .map_err(|e| taken(e, &before.tenant, &ch.name))?;
    get(store, id)?.ok_or(ChangeError::NotFound(id))
}

/// Deletes definition `id`.
pub fn delete(store: &Store, id: i64) -> Result<(), ChangeError> {
    let n = store.with(|c| c.execute("DELETE FROM managed_targets WHERE id = ?1", [id]))?;
    if n == 0 {
        return Err(ChangeError::NotFound(id));
    }
    Ok(())
}

/// How often retentions are applied.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// Deletes the minute and hour history of every definition's series
/// older than its retention, now and every 10 minutes; gives the number
/// of rows deleted in the last pass (for tests).
pub fn apply_retention(
    store: &Store,
    targets: &[ManagedTarget],
    now_ns: i64,
) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for t in targets {
        let Some(keep) = t.spec.retention else {
            continue;
        };
        let keep_ns = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = now_ns.saturating_sub(keep_ns);
        let (probe, target) = (t.spec.kind.as_str(), t.spec.series_target());
        deleted += store.with(|c| {
            let mut n = 0;
            for (table, unit) in [
                ("minute_buckets", cutoff.div_euclid(MINUTE_NS)),
                ("hour_buckets", cutoff.div_euclid(HOUR_NS)),
            ] {
                n += c.execute(
                    &format!(
                        "DELETE FROM {table} WHERE unit < ?1 AND series_id IN
                            (SELECT id FROM series WHERE tenant = ?2 AND probe = ?3 AND target = ?4)"
                    ),
                    params![unit, t.tenant, probe, target],
                )?;
            }
            Ok(n)
        })?;
    }
    Ok(deleted)
}

/// The retention task.
pub(crate) async fn run_retention(shared: Arc<crate::Shared>) {
    let (store, shutdown) = (shared.store.clone(), shared.shutdown.clone());
    let mut published = shared.targets.subscribe();
    drop(shared);
    loop {
        let targets = published.borrow_and_update().clone();
        let now = sonde_runtime::clock::unix_nanos();
        match store.run(move |s| apply_retention(s, &targets, now)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "deleted history past target retentions"),
            Err(e) => tracing::error!(error = %e, "cannot apply target retentions"),
        }
        tokio::select! {
            () = tokio::time::sleep(RETENTION_EVERY) => {}
            Ok(()) = published.changed() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests;
