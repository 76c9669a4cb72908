//! Per-agent settings changed at run time — heartbeat interval, grace and
//! monitoring schedule — through `PUT /api/v1/agents/NAME/settings`, the
//! agent page of the web UI and `sondectl agent settings`.
//!
//! They live in the store (`agent_settings`, behind its seam like managed
//! targets) and override the config file, whose values (`[[agent]]`,
//! `[heartbeat]`) are the defaults. They are published through a `watch`
//! channel: every open session re-derives its interval and grace from it
//! and pushes a `ConfigUpdate` to its agent at once, and liveness reads
//! the grace and schedule from it at its next decision.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, MIN_HEARTBEAT};
use crate::consumers::alert::schedule::Schedule;
use crate::store::{AgentKey, Store, StoreError};

/// The agent settings' table.
pub const SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "agent-settings",
    migrations: &["CREATE TABLE agent_settings (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        heartbeat_interval_ms INTEGER,
        grace_ms INTEGER,
        schedule TEXT,
        author TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
    )"],
};

/// One agent's settings (each `None`: the config's value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settings {
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub grace: Option<Duration>,
    pub schedule: Option<String>,
    pub author: String,
    pub updated_ms: i64,
}

/// Every agent's settings, as published.
pub type All = Arc<HashMap<AgentKey, Settings>>;

/// What sessions and liveness follow.
pub type Published = watch::Sender<All>;

/// A change as the API takes it: every field given (`null` or absent:
/// back to the config's value).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    #[serde(default)]
    pub heartbeat_interval: Option<String>,
    #[serde(default)]
    pub grace: Option<String>,
    #[serde(default)]
    pub schedule: Option<String>,
}

fn duration(key: &str, raw: Option<&str>) -> Result<Option<Duration>, String> {
    raw.map(|s| {
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("{key}: {s:?} is not a duration such as 30s or 2m: {e}"))
    })
    .transpose()
}

impl SettingsRequest {
    /// Checks the change against `config` (the defaults) and the interval
    /// the agent asks for (`requested`: the one it last used); the
    /// message names the field.
    pub fn validate(
        &self,
        config: &Config,
        key: &AgentKey,
        requested: Option<Duration>,
    ) -> Result<Settings, String> {
        let interval = duration("heartbeat_interval", self.heartbeat_interval.as_deref())?;
        let grace = duration("grace", self.grace.as_deref())?;
        let day = Duration::from_secs(86_400);
        if interval.is_some_and(|i| !(MIN_HEARTBEAT..=day).contains(&i)) {
            return Err("heartbeat_interval: must be between 100ms and 1d".into());
        }
        if grace.is_some_and(|g| !(MIN_HEARTBEAT..=7 * day).contains(&g)) {
            return Err("grace: must be between 100ms and 7d".into());
        }
        let settings = Settings {
            heartbeat_interval: interval,
            grace,
            schedule: self.schedule.clone(),
            ..Settings::default()
        };
        let (i, g) = effective(config, Some(&settings), key, requested);
        if g < i {
            return Err(format!(
                "grace: {} is shorter than the heartbeat interval {}: the agent would be missing between two heartbeats",
                humantime::format_duration(g),
                humantime::format_duration(i)
            ));
        }
        if let Some(s) = &self.schedule
            && !config.alerting.schedule.iter().any(|d| d.name == *s)
        {
            return Err(format!("schedule: no [[alerting.schedule]] named {s:?}"));
        }
        Ok(settings)
    }
}

/// The heartbeat interval and grace of `key`: its settings, else the
/// config's `[[agent]]`, `[heartbeat]`, what the agent asked (`requested`),
/// the default.
pub fn effective(
    config: &Config,
    settings: Option<&Settings>,
    key: &AgentKey,
    requested: Option<Duration>,
) -> (Duration, Duration) {
    let interval = settings.and_then(|s| s.heartbeat_interval).map_or_else(
        || config.heartbeat_interval(&key.tenant, &key.name, requested),
        |i| i.max(MIN_HEARTBEAT),
    );
    let grace = settings
        .and_then(|s| s.grace)
        .unwrap_or_else(|| config.grace(&key.tenant, &key.name, interval));
    (interval, grace)
}

/// The monitoring schedule of `key`: its settings', else the config's.
pub fn schedule(config: &Config, settings: Option<&Settings>, key: &AgentKey) -> Option<Schedule> {
    match settings.and_then(|s| s.schedule.as_deref()) {
        Some(name) => config.alerting.defined_schedule(name),
        None => config.agent_schedule(&key.tenant, &key.name),
    }
}

/// Every agent's settings.
pub fn load(store: &Store) -> Result<HashMap<AgentKey, Settings>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare(
            "SELECT tenant, name, heartbeat_interval_ms, grace_ms, schedule, author, updated_ms
             FROM agent_settings",
        )?;
        let ms = |v: Option<i64>| v.map(|v| Duration::from_millis(u64::try_from(v).unwrap_or(0)));
        stmt.query_map([], |r| {
            Ok((
                AgentKey {
                    tenant: r.get(0)?,
                    name: r.get(1)?,
                },
                Settings {
                    heartbeat_interval: ms(r.get(2)?),
                    grace: ms(r.get(3)?),
                    schedule: r.get(4)?,
                    author: r.get(5)?,
                    updated_ms: r.get(6)?,
                },
            ))
        })?
        .collect()
    })
}

/// Stores `key`'s settings; all `None`: deletes them (back to the config).
pub fn save(store: &Store, key: &AgentKey, s: &Settings) -> Result<(), StoreError> {
    let ms = |d: Option<Duration>| d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    store.with(|c| {
        if s.heartbeat_interval.is_none() && s.grace.is_none() && s.schedule.is_none() {
            c.execute(
                "DELETE FROM agent_settings WHERE tenant = ?1 AND name = ?2",
                params![key.tenant, key.name],
            )?;
            return Ok(());
        }
        c.execute(
            "INSERT INTO agent_settings (tenant, name, heartbeat_interval_ms, grace_ms, schedule,
                author, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tenant, name) DO UPDATE SET
                heartbeat_interval_ms = excluded.heartbeat_interval_ms,
                grace_ms = excluded.grace_ms, schedule = excluded.schedule,
                author = excluded.author, updated_ms = excluded.updated_ms",
            params![
                key.tenant,
                key.name,
                ms(s.heartbeat_interval),
                ms(s.grace),
                s.schedule,
                s.author,
                s.updated_ms
            ],
        )
        .map(drop)
    })
}
