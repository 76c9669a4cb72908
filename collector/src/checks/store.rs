//! The checks' tables, behind the store's seam (the cluster mode puts its
//! shared store here too): definitions with the state a check keeps
//! between pings, the ping log, and tenants' ping keys.
//!
//! Two writers, never the same columns: the API changes definitions
//! (name, slug, spec, token hash) and the monitor (`monitor.rs`) the
//! state (`state`, last ping, last success, a started run). A ping and
//! the transition it makes (with its event) commit together.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use super::define::Spec;
use super::state::{Received, Stored};
use crate::store::{AgentKey, EventKind, Scope, Store, StoreError};

/// The checks' tables.
pub const SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "checks",
    migrations: &[MIGRATION],
};

const MIGRATION: &str = "CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        slug TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        last_ping_ms INTEGER,
        last_success_ms INTEGER,
        started_ms INTEGER,
        last_duration_ms INTEGER,
        pings INTEGER NOT NULL DEFAULT 0,
        author TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        UNIQUE (tenant, name),
        UNIQUE (tenant, slug)
    );
    CREATE TABLE check_pings (
        id INTEGER PRIMARY KEY,
        check_id INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        exit_status INTEGER,
        source TEXT NOT NULL,
        method TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        body TEXT NOT NULL,
        duration_ms INTEGER
    );
    CREATE INDEX check_pings_by_check ON check_pings (check_id, id);
    CREATE INDEX check_pings_by_time ON check_pings (at_ms);
    CREATE TABLE ping_keys (
        tenant TEXT PRIMARY KEY,
        key_hash BLOB NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL
    )";

impl Stored {
    pub fn as_str(self) -> &'static str {
        match self {
            Stored::New => "new",
            Stored::Up => "up",
            Stored::Down => "down",
            Stored::Paused => "paused",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "up" => Stored::Up,
            "down" => Stored::Down,
            "paused" => Stored::Paused,
            _ => Stored::New,
        }
    }
}

/// A stored check: its definition and what it has received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: i64,
    pub tenant: String,
    pub name: String,
    pub slug: String,
    #[serde(flatten)]
    pub spec: Spec,
    /// `new`, `up`, `down` or `paused` as stored; the API adds `late`
    /// and `off-hours`, which depend on the time.
    pub stored: Stored,
    pub last_ping_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub last_duration_ms: Option<i64>,
    /// Pings received (all kinds) since it was made.
    pub pings: i64,
    /// Who last changed the definition.
    pub author: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Check {
    /// What the state rules need.
    pub fn received(&self) -> Received {
        Received {
            stored: self.stored,
            last_success_ms: self.last_success_ms,
            started_ms: self.started_ms,
        }
    }

    /// The event subject: a check is not an agent, so the event's agent
    /// is empty and the check is named in the detail.
    pub fn event_key(&self) -> AgentKey {
        AgentKey {
            tenant: self.tenant.clone(),
            name: String::new(),
        }
    }
}

const COLUMNS: &str = "id, tenant, name, slug, spec, state, last_ping_ms, last_success_ms,
    started_ms, last_duration_ms, pings, author, created_ms, updated_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Check> {
    let spec: String = r.get(4)?;
    let spec: Spec = serde_json::from_str(&spec).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Check {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        slug: r.get(3)?,
        spec,
        stored: Stored::parse(&r.get::<_, String>(5)?),
        last_ping_ms: r.get(6)?,
        last_success_ms: r.get(7)?,
        started_ms: r.get(8)?,
        last_duration_ms: r.get(9)?,
        pings: r.get(10)?,
        author: r.get(11)?,
        created_ms: r.get(12)?,
        updated_ms: r.get(13)?,
    })
}

/// Why a change was refused by the store.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("tenant {tenant} already has a check named {name:?} or with slug {slug:?}")]
    Taken {
        tenant: String,
        name: String,
        slug: String,
    },
    #[error("no check {0}")]
    NotFound(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an addition or a replacement of a definition writes.
#[derive(Debug, Clone)]
pub struct Change {
    pub name: String,
    pub slug: String,
    pub spec: Spec,
    pub author: String,
    pub at_ms: i64,
}

fn taken(e: StoreError, tenant: &str, ch: &Change) -> ChangeError {
    let unique = matches!(&e, StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(f, _), .. }
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE);
    if unique {
        ChangeError::Taken {
            tenant: tenant.to_owned(),
            name: ch.name.clone(),
            slug: ch.slug.clone(),
        }
    } else {
        ChangeError::Store(e)
    }
}

/// Every check, by id.
pub fn load(store: &Store) -> Result<Vec<Check>, StoreError> {
    list(store, &Scope::All)
}

/// The checks visible in `scope`, by id.
pub fn list(store: &Store, scope: &Scope) -> Result<Vec<Check>, StoreError> {
    let tenant = match scope {
        Scope::All => None,
        Scope::Tenant(t) => Some(t.clone()),
    };
    store.with_read(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM checks WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id"
        ))?;
        stmt.query_map([tenant], row)?.collect()
    })
}

/// One check.
pub fn get(store: &Store, id: i64) -> Result<Option<Check>, StoreError> {
    store.with_read(|c| get_on(c, id))
}

fn get_on(c: &Connection, id: i64) -> rusqlite::Result<Option<Check>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM checks WHERE id = ?1"),
        [id],
        row,
    )
    .optional()
}

/// Adds a check whose token hashes to `token_hash`; gives it.
pub fn insert(
    store: &Store,
    tenant: &str,
    ch: &Change,
    token_hash: &[u8],
) -> Result<Check, ChangeError> {
    let spec = serde_json::to_string(&ch.spec).unwrap_or_default();
    let id = store
        .with(|c| {
            c.execute(
                "INSERT INTO checks (tenant, name, slug, token_hash, spec, state, author,
                    created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'new', ?6, ?7, ?7)",
                params![
                    tenant, ch.name, ch.slug, token_hash, spec, ch.author, ch.at_ms
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .map_err(|e| taken(e, tenant, ch))?;
    get(store, id)?.ok_or(ChangeError::NotFound(id))
}

/// Replaces the definition of check `id` (its tenant, token and state
/// stay).
pub fn update(store: &Store, id: i64, ch: &Change) -> Result<Check, ChangeError> {
    let before = get(store, id)?.ok_or(ChangeError::NotFound(id))?;
    let spec = serde_json::to_string(&ch.spec).unwrap_or_default();
    store
        .with(|c| {
            c.execute(
                "UPDATE checks SET name = ?2, slug = ?3, spec = ?4, author = ?5, updated_ms = ?6
                 WHERE id = ?1",
                params![id, ch.name, ch.slug, spec, ch.author, ch.at_ms],
            )
        })
        .map_err(|e| taken(e, &before.tenant, ch))?;
    get(store, id)?.ok_or(ChangeError::NotFound(id))
}

/// Gives check `id` a new token hash: the old token stops working.
pub fn rotate(
    store: &Store,
    id: i64,
    token_hash: &[u8],
    author: &str,
    at_ms: i64,
) -> Result<(), ChangeError> {
    let n = store.with(|c| {
        c.execute(
            "UPDATE checks SET token_hash = ?2, author = ?3, updated_ms = ?4 WHERE id = ?1",
            params![id, token_hash, author, at_ms],
        )
    })?;
    if n == 0 {
        return Err(ChangeError::NotFound(id));
    }
    Ok(())
}

/// Deletes check `id` and its pings.
pub fn delete(store: &Store, id: i64) -> Result<(), ChangeError> {
    let n = store.with(|c| {
        let tx = c.transaction()?;
        tx.execute("DELETE FROM check_pings WHERE check_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM checks WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n)
    })?;
    if n == 0 {
        return Err(ChangeError::NotFound(id));
    }
    Ok(())
}

/// Sets (or replaces) `tenant`'s ping key.
pub fn set_ping_key(
    store: &Store,
    tenant: &str,
    key_hash: &[u8],
    at_ms: i64,
) -> Result<(), StoreError> {
    store.with(|c| {
        c.execute(
            "INSERT INTO ping_keys (tenant, key_hash, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant) DO UPDATE SET key_hash = excluded.key_hash,
                created_ms = excluded.created_ms",
            params![tenant, key_hash, at_ms],
        )
        .map(drop)
    })
}

/// When `tenant`'s ping key was made, if it has one.
pub fn ping_key_made(store: &Store, tenant: &str) -> Result<Option<i64>, StoreError> {
    store.with_read(|c| {
        c.query_row(
            "SELECT created_ms FROM ping_keys WHERE tenant = ?1",
            [tenant],
            |r| r.get(0),
        )
        .optional()
    })
}

/// What a ping was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PingKind {
    Success,
    Start,
    Fail,
    Log,
}

impl PingKind {
    fn as_str(self) -> &'static str {
        match self {
            PingKind::Success => "success",
            PingKind::Start => "start",
            PingKind::Fail => "fail",
            PingKind::Log => "log",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "start" => PingKind::Start,
            "fail" => PingKind::Fail,
            "log" => PingKind::Log,
            _ => PingKind::Success,
        }
    }
}

/// One received ping, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PingRow {
    pub id: i64,
    pub at_ms: i64,
    pub kind: PingKind,
    /// `/ping/<uuid>/<exit-status>`.
    pub exit_status: Option<i64>,
    /// The client's address.
    pub source: String,
    pub method: String,
    pub user_agent: String,
    /// The request body (at most 100 KiB), as text.
    pub body: String,
    /// A success or failure after `/start`: how long the run took.
    pub duration_ms: Option<i64>,
}

/// Check `id`'s newest pings (newest first), at most `limit`, before ping
/// id `before` when given.
pub fn pings(
    store: &Store,
    id: i64,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<PingRow>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT id, at_ms, kind, exit_status, source, method, user_agent, body, duration_ms
             FROM check_pings WHERE check_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        stmt.query_map(params![id, before.unwrap_or(i64::MAX), limit], |r| {
            Ok(PingRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                kind: PingKind::parse(&r.get::<_, String>(2)?),
                exit_status: r.get(3)?,
                source: r.get(4)?,
                method: r.get(5)?,
                user_agent: r.get(6)?,
                body: r.get(7)?,
                duration_ms: r.get(8)?,
            })
        })?
        .collect()
    })
}

/// A ping to record, with the state it leaves its check in and the event
/// it makes (if any).
#[derive(Debug, Clone)]
pub struct Write {
    pub check: Check,
    pub ping: Option<PingRow>,
    pub event: Option<(EventKind, serde_json::Value)>,
}

/// Records `writes` in one transaction: each ping, its check's state, its
/// event; then trims each touched check's log to `max_pings`.
pub fn commit(
    store: &Store,
    writes: &[Write],
    max_pings: u32,
    now_ms: i64,
) -> Result<(), StoreError> {
    store.with(|c| {
        let tx = c.transaction()?;
        for w in writes {
            apply(&tx, w, now_ms)?;
        }
        let mut touched: Vec<i64> = writes
            .iter()
            .filter(|w| w.ping.is_some())
            .map(|w| w.check.id)
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            tx.prepare_cached(
                "DELETE FROM check_pings WHERE check_id = ?1 AND id <= (SELECT id FROM check_pings
                 WHERE check_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![id, max_pings])?;
        }
        tx.commit()
    })
}

fn apply(tx: &Transaction<'_>, w: &Write, now_ms: i64) -> rusqlite::Result<()> {
    let ch = &w.check;
    let mut pinged = 0;
    if let Some(p) = &w.ping {
        pinged = 1;
        tx.prepare_cached(
            "INSERT INTO check_pings (check_id, at_ms, kind, exit_status, source, method,
                user_agent, body, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            ch.id,
            p.at_ms,
            p.kind.as_str(),
            p.exit_status,
            p.source,
            p.method,
            p.user_agent,
            p.body,
            p.duration_ms
        ])?;
    }
    tx.prepare_cached(
        "UPDATE checks SET state = ?2, last_ping_ms = ?3, last_success_ms = ?4, started_ms = ?5,
            last_duration_ms = ?6, pings = pings + ?7 WHERE id = ?1",
    )?
    .execute(params![
        ch.id,
        ch.stored.as_str(),
        ch.last_ping_ms,
        ch.last_success_ms,
        ch.started_ms,
        ch.last_duration_ms,
        pinged
    ])?;
    if let Some((kind, detail)) = &w.event {
        crate::store::insert_event(tx, now_ms, &ch.event_key(), *kind, detail, None)?;
    }
    Ok(())
}

/// Deletes pings older than `cutoff_ms`; how many.
pub fn prune_pings(store: &Store, cutoff_ms: i64) -> Result<usize, StoreError> {
    store.with(|c| c.execute("DELETE FROM check_pings WHERE at_ms < ?1", [cutoff_ms]))
}

/// Every check's token hash, by id (the monitor's index).
pub fn token_hashes(store: &Store) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare("SELECT id, token_hash FROM checks")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    })
}

/// Check `id`'s token hash.
pub fn token_hash_of(store: &Store, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    store.with_read(|c| {
        c.query_row("SELECT token_hash FROM checks WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
    })
}

/// Every tenant's ping key hash.
pub fn ping_keys(store: &Store) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
    store.with_read(|c| {
        let mut stmt = c.prepare("SELECT key_hash, tenant FROM ping_keys")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    })
}
