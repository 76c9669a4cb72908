//! The alert engine's durable state in the collector's `SQLite` store
//! (migration 6): alerts (JSON bodies, kept as history after they
//! resolve), groups (what each has notified), the notifications outbox,
//! and silences. The engine commits a step — alerts, groups, new
//! notifications and its events cursor — in one transaction.

use rusqlite::{Connection, OptionalExtension, params};

use super::Alert;
use super::config::Alerting;
use super::dispatch::Group;
use super::engine::Changes;
use super::message::Message;
use super::silence::Silence;
use crate::store::{Store, StoreError};

/// Alerting's tables: alerts, groups, the notification outbox, silences.
pub const SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "alert",
    migrations: &[MIGRATION, MIGRATION_UIDS],
};

/// Migration 2: every notification gets a globally unique id (the mail
/// Message-ID was `sonde-notification-ROWID`, which a second collector or a
/// wiped state directory reuses, and mail systems drop duplicates).
const MIGRATION_UIDS: &str = "ALTER TABLE notifications ADD COLUMN uid TEXT;
    UPDATE notifications SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL";

const MIGRATION: &str = "CREATE TABLE alerts (
        fingerprint TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        rule TEXT NOT NULL,
        firing INTEGER NOT NULL,
        starts_ms INTEGER NOT NULL,
        ends_ms INTEGER,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX alerts_by_update ON alerts (updated_ms);
    CREATE TABLE alert_groups (
        route TEXT NOT NULL,
        key TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (route, key)
    ) WITHOUT ROWID;
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        receiver TEXT NOT NULL,
        integration TEXT NOT NULL,
        tenant TEXT,
        created_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_ms INTEGER NOT NULL,
        sent_ms INTEGER,
        last_error TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX notifications_due ON notifications (state, receiver, integration, id);
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        tenant TEXT,
        starts_ms INTEGER NOT NULL,
        ends_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );";

/// A notification in the outbox.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outgoing {
    pub id: i64,
    /// Globally unique (random), stable across retries: the mail
    /// Message-ID.
    pub uid: String,
    pub receiver: String,
    pub integration: String,
    pub tenant: Option<String>,
    pub created_ms: i64,
    /// `pending`, `sent` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    pub next_ms: i64,
    pub sent_ms: Option<i64>,
    pub last_error: Option<String>,
    pub message: Message,
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// What the engine starts from: every group, and the alerts that are
/// firing, held by a group, or changed since `since_ms`.
pub fn load(store: &Store, since_ms: i64) -> Result<(Vec<Alert>, Vec<Group>, i64), StoreError> {
    store.with(|c| {
        let mut stmt = c.prepare("SELECT body FROM alert_groups")?;
        let groups: Vec<Group> = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .map(|b| b.and_then(|b| from_json(&b)))
            .collect::<rusqlite::Result<_>>()?;
        let held: std::collections::BTreeSet<&String> =
            groups.iter().flat_map(|g| g.members.keys()).collect();
        let mut stmt = c.prepare("SELECT fingerprint, firing, updated_ms, body FROM alerts")?;
        let mut alerts = Vec::new();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let fp: String = r.get(0)?;
            let firing: bool = r.get(1)?;
            let updated: i64 = r.get(2)?;
            if firing || updated >= since_ms || held.contains(&fp) {
                alerts.push(from_json::<Alert>(&r.get::<_, String>(3)?)?);
            }
        }
        let cursor = crate::log::cursor::read(c, super::CURSOR)?;
        Ok((alerts, groups, cursor))
    })
}

/// Commits one engine step with the events cursor; returns how many
/// notifications were queued.
pub fn commit(
    store: &Store,
    cfg: &Alerting,
    changes: &Changes,
    cursor: i64,
    now_ms: i64,
) -> Result<usize, StoreError> {
    store.with(|c| {
        let tx = c.transaction()?;
        for a in &changes.alerts {
            tx.execute(
                "INSERT INTO alerts (fingerprint, tenant, rule, firing, starts_ms, ends_ms, updated_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (fingerprint) DO UPDATE SET firing = ?4, starts_ms = ?5, ends_ms = ?6,
                    updated_ms = ?7, body = ?8",
                params![
                    a.fingerprint,
                    a.tenant(),
                    a.rule(),
                    a.firing,
                    a.starts_ms,
                    a.ends_ms,
                    a.updated_ms,
                    serde_json::to_string(a).map_err(json_err)?
                ],
            )?;
        }
        for ((route, key), g) in &changes.groups {
            match g {
                Some(g) => tx.execute(
                    "INSERT INTO alert_groups (route, key, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (route, key) DO UPDATE SET body = ?3",
                    params![route, key, serde_json::to_string(g).map_err(json_err)?],
                )?,
                None => tx.execute(
                    "DELETE FROM alert_groups WHERE route = ?1 AND key = ?2",
                    params![route, key],
                )?,
            };
        }
        let mut queued = 0;
        for m in &changes.messages {
            let body = serde_json::to_string(m).map_err(json_err)?;
            let integrations = cfg
                .receiver
                .iter()
                .find(|r| r.name == m.receiver)
                .map(super::receiver::names)
                .unwrap_or_default();
            for integration in integrations {
                // `uid`: 128 random bits, the mail Message-ID: unique across
                // collectors and state wipes, the same for every retry.
                tx.execute(
                    "INSERT INTO notifications (receiver, integration, tenant, created_ms, state, next_ms, body, uid)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?4, ?5, lower(hex(randomblob(16))))",
                    params![m.receiver, integration, m.tenant, now_ms, body],
                )?;
                queued += 1;
            }
        }
        crate::log::cursor::advance(&tx, super::CURSOR, cursor, now_ms)?;
        tx.commit()?;
        Ok(queued)
    })
}

fn outgoing(r: &rusqlite::Row<'_>) -> rusqlite::Result<Outgoing> {
    Ok(Outgoing {
        id: r.get(0)?,
        uid: r.get(11)?,
        receiver: r.get(1)?,
        integration: r.get(2)?,
        tenant: r.get(3)?,
        created_ms: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        next_ms: r.get(7)?,
        sent_ms: r.get(8)?,
        last_error: r.get(9)?,
        message: from_json(&r.get::<_, String>(10)?)?,
    })
}

const OUTGOING: &str = "SELECT id, receiver, integration, tenant, created_ms, state, attempts,
    next_ms, sent_ms, last_error, body, uid FROM notifications";

/// The oldest pending notification of one integration of a receiver
/// (they are delivered in order).
pub fn next_pending(
    store: &Store,
    receiver: &str,
    integration: &str,
) -> Result<Option<Outgoing>, StoreError> {
    store.with_read(|c| {
        c.query_row(
            &format!(
                "{OUTGOING} WHERE state = 'pending' AND receiver = ?1 AND integration = ?2 ORDER BY id LIMIT 1"
            ),
            params![receiver, integration],
            outgoing,
        )
        .optional()
    })
}

/// Marks a notification delivered.
pub fn sent(store: &Store, id: i64, now_ms: i64) -> Result<(), StoreError> {
    store.with(|c| {
        c.execute(
            "UPDATE notifications SET state = 'sent', sent_ms = ?2, attempts = attempts + 1,
                last_error = NULL WHERE id = ?1",
            params![id, now_ms],
        )
        .map(drop)
    })
}

/// Records a failed attempt; `give_up` marks it failed for good.
pub fn attempt_failed(
    store: &Store,
    id: i64,
    error: &str,
    next_ms: i64,
    give_up: bool,
) -> Result<(), StoreError> {
    store.with(|c| {
        c.execute(
            "UPDATE notifications SET attempts = attempts + 1, last_error = ?2, next_ms = ?3,
                state = CASE WHEN ?4 THEN 'failed' ELSE state END WHERE id = ?1",
            params![id, error, next_ms, give_up],
        )
        .map(drop)
    })
}

/// Recent notifications (newest first) visible to `tenant` (`None`: all).
pub fn recent_notifications(
    store: &Store,
    tenant: Option<&str>,
    limit: u32,
) -> Result<Vec<Outgoing>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare(&format!(
            "{OUTGOING} WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        stmt.query_map(params![tenant, limit], outgoing)?.collect()
    })
}

/// Alerts (firing first, then newest) visible to `tenant` (`None`: all),
/// those resolved before `since_ms` left out.
pub fn alerts(
    store: &Store,
    tenant: Option<&str>,
    since_ms: i64,
) -> Result<Vec<Alert>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare(
            "SELECT body FROM alerts WHERE (?1 IS NULL OR tenant = ?1) AND (firing OR updated_ms >= ?2)
             ORDER BY firing DESC, updated_ms DESC",
        )?;
        stmt.query_map(params![tenant, since_ms], |r| r.get::<_, String>(0))?
            .map(|b| b.and_then(|b| from_json(&b)))
            .collect()
    })
}

/// Every group (for statuses).
pub fn groups(store: &Store) -> Result<Vec<Group>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare("SELECT body FROM alert_groups")?;
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .map(|b| b.and_then(|b| from_json(&b)))
            .collect()
    })
}

/// Stores a new silence; returns it with its id.
pub fn add_silence(store: &Store, mut s: Silence) -> Result<Silence, StoreError> {
    store.with(|c| {
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO silences (tenant, starts_ms, ends_ms, body) VALUES (?1, ?2, ?3, '')",
            params![s.tenant, s.starts_ms, s.ends_ms],
        )?;
        s.id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE silences SET body = ?2 WHERE id = ?1",
            params![s.id, serde_json::to_string(&s).map_err(json_err)?],
        )?;
        tx.commit()?;
        Ok(s)
    })
}

/// Silences visible to `tenant` (`None`: all) that end after `since_ms`.
pub fn silences(
    store: &Store,
    tenant: Option<&str>,
    since_ms: i64,
) -> Result<Vec<Silence>, StoreError> {
    store.with_read(|c| silences_in(c, tenant, since_ms))
}

fn silences_in(
    c: &Connection,
    tenant: Option<&str>,
    since_ms: i64,
) -> rusqlite::Result<Vec<Silence>> {
    let mut stmt = c.prepare(
        "SELECT body FROM silences WHERE (?1 IS NULL OR tenant = ?1 OR tenant IS NULL) AND ends_ms > ?2
         ORDER BY id",
    )?;
    stmt.query_map(params![tenant, since_ms], |r| r.get::<_, String>(0))?
        .map(|b| b.and_then(|b| from_json(&b)))
        .collect()
}

/// One silence by id.
pub fn silence(store: &Store, id: i64) -> Result<Option<Silence>, StoreError> {
    store.with_read(|c| {
        c.query_row(
            "SELECT body FROM silences WHERE id = ?1",
            params![id],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|b| from_json(&b))
        .transpose()
    })
}

/// Ends a silence now (if it has not ended); returns it as stored.
pub fn expire_silence(
    store: &Store,
    id: i64,
    by: &str,
    now_ms: i64,
) -> Result<Option<Silence>, StoreError> {
    store.with(|c| {
        let tx = c.transaction()?;
        let Some(body) = tx
            .query_row(
                "SELECT body FROM silences WHERE id = ?1",
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut s: Silence = from_json(&body)?;
        if s.ends_ms > now_ms {
            s.ends_ms = now_ms.max(s.starts_ms);
            s.expired_by = Some(by.to_owned());
            tx.execute(
                "UPDATE silences SET ends_ms = ?2, body = ?3 WHERE id = ?1",
                params![id, s.ends_ms, serde_json::to_string(&s).map_err(json_err)?],
            )?;
        }
        tx.commit()?;
        Ok(Some(s))
    })
}

/// Deletes history older than `before_ms`: resolved alerts no group
/// holds, delivered or failed notifications, ended silences.
pub fn prune(store: &Store, before_ms: i64) -> Result<(), StoreError> {
    store.with(|c| {
        let held: Vec<String> = {
            let mut stmt = c.prepare("SELECT body FROM alert_groups")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .map(|b| b.and_then(|b| from_json::<Group>(&b)))
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .flat_map(|g| g.members.into_keys())
                .collect()
        };
        let tx = c.transaction()?;
        let mut stmt =
            tx.prepare("SELECT fingerprint FROM alerts WHERE NOT firing AND updated_ms < ?1")?;
        let old: Vec<String> = stmt
            .query_map(params![before_ms], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        for fp in old.iter().filter(|fp| !held.contains(fp)) {
            tx.execute("DELETE FROM alerts WHERE fingerprint = ?1", params![fp])?;
        }
        tx.execute(
            "DELETE FROM notifications WHERE state != 'pending' AND created_ms < ?1",
            params![before_ms],
        )?;
        tx.execute(
            "DELETE FROM silences WHERE ends_ms < ?1",
            params![before_ms],
        )?;
        tx.commit()
    })
}

/// Silences to apply now (all tenants').
pub fn active_silences(store: &Store, now_ms: i64) -> Result<Vec<Silence>, StoreError> {
    store.with_read(|c| {
        Ok(silences_in(c, None, now_ms)?
            .into_iter()
            .filter(|s| s.active(now_ms))
            .collect())
    })
}
