//! The collector's embedded, durable state store (`SQLite`).
//!
//! It holds what must survive a restart or `kill -9` even with no `InfluxDB`
//! configured: the agents the collector knows and their liveness state, and
//! the event log (registered, missing, back). `SQLite` runs in WAL mode with
//! `synchronous=FULL`, so a committed transaction is on disk before the call
//! returns. Each subsystem owns its tables and their numbered migrations
//! ([`Schema`]; the list is `crate::schema::ALL`); the store applies them
//! and records each one's version.
//!
//! The API is synchronous; async callers go through [`Store::run`], which
//! moves the work onto tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

pub mod backup;
use serde::Serialize;

/// A store failure, with the database path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store {path}: cannot create directory: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store task failed: {0}")]
    Join(String),
    /// One failure shared by every operation of a group (a group commit).
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// Whether the disk (or the database's size limit) is full: nothing is
    /// wrong with the data, writes work again once there is room.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Shared(e) => e.is_disk_full(),
            _ => {
                matches!(self, StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(e, _), .. }
                if e.code == rusqlite::ErrorCode::DiskFull)
            }
        }
    }
}

/// An agent, identified by its certificate's tenant and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AgentKey {
    pub tenant: String,
    pub name: String,
}

impl std::fmt::Display for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// Liveness of an agent as the collector last decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    Up,
    Missing,
    /// Silent outside its monitoring schedule: neither up nor missing.
    OffHours,
}

impl AgentState {
    fn as_str(self) -> &'static str {
        match self {
            AgentState::Up => "up",
            AgentState::Missing => "missing",
            AgentState::OffHours => "off-hours",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "missing" => AgentState::Missing,
            "off-hours" => AgentState::OffHours,
            _ => AgentState::Up,
        }
    }
}

/// What a session tells us about an agent when it connects.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub remote_addr: String,
    pub agent_version: String,
    pub hostname: String,
    pub os: String,
    pub heartbeat_interval_ms: u64,
    pub grace_ms: u64,
}

/// An agent as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRow {
    pub tenant: String,
    pub name: String,
    pub state: AgentState,
    pub connected: bool,
    /// Unix milliseconds of the last heartbeat (or hello), if any.
    pub last_heartbeat_ms: Option<i64>,
    pub last_heartbeat_seq: Option<i64>,
    pub first_seen_ms: i64,
    pub remote_addr: String,
    pub agent_version: String,
    pub hostname: String,
    pub os: String,
    pub heartbeat_interval_ms: i64,
    pub grace_ms: i64,
}

/// Declares [`EventKind`] with each kind's name written once: the name
/// stored, shown by the API and matched by alert rules.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Kinds of events the collector records.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &[EventKind] = &[$(EventKind::$variant,)*];

            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            fn parse(s: &str) -> Option<Self> {
                match s {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

event_kinds! {
    /// First session ever of this agent.
    AgentRegistered = "agent-registered",
    /// No heartbeat within the grace period.
    AgentMissing = "agent-missing",
    /// A missing agent sent a heartbeat again.
    AgentBack = "agent-back",
    /// An agent fell silent outside its monitoring schedule: off-hours,
    /// not missing (no alert).
    AgentOffHours = "agent-off-hours",
    /// An off-hours agent spoke again, or its schedule opened (then it is
    /// missing after its grace if it stays silent).
    AgentOnHours = "agent-on-hours",
    /// An outage began (its scope in the detail: series, target, prefix or
    /// agent network).
    OutageStart = "outage-start",
    /// That outage ended.
    OutageEnd = "outage-end",
    /// A traced path changed and the change persisted.
    RouteChange = "route-change",
    /// The agent's public address of a family changed.
    IpChanged = "ip-changed",
    /// A listening port appeared on the agent's host.
    PortOpened = "port-opened",
    /// A listening port went away.
    PortClosed = "port-closed",
    /// A remote check found ports open that were closed.
    RemotePortOpened = "remote-port-opened",
    /// A remote check found ports closed that were open.
    RemotePortClosed = "remote-port-closed",
    /// An alert receiver keeps failing (or gave a notification up).
    ReceiverFailing = "receiver-failing",
    /// A failing receiver delivered again.
    ReceiverRecovered = "receiver-recovered",
    /// A certificate in use (the collector's, its CA, or a client's)
    /// expires within `[tls] expiry-warning`.
    CertificateExpiring = "certificate-expiring",
    /// A heartbeat check received a success while new, down or paused.
    CheckUp = "check-up",
    /// A heartbeat check missed its period and grace (or a started run
    /// did not end within the grace).
    CheckDown = "check-down",
    /// A heartbeat check reported a failure (`/fail`, an exit status).
    CheckFailed = "check-failed",
    /// A heartbeat check's run started (`/start`).
    CheckStarted = "check-started",
    /// A heartbeat check was paused (no deadline until a ping or resume).
    CheckPaused = "check-paused",
    /// A paused heartbeat check was resumed (new again).
    CheckResumed = "check-resumed",
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub at_ms: i64,
    pub tenant: String,
    pub agent: String,
    pub kind: EventKind,
    pub detail: serde_json::Value,
    /// The /24 or /64 the event is about, when it is about targets: the
    /// tenants granted it see the event too.
    pub prefix: Option<String>,
}

/// Which tenants a query may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Tenant(String),
}

impl Scope {
    fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(t) => Some(t),
        }
    }
}

/// A filter on the event log.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events with an id greater than this.
    pub after_id: i64,
    /// Only events with an id below this, newest first (the last page of
    /// the log first; `i64::MAX` for the very newest).
    pub before_id: Option<i64>,
    /// Only events of this agent.
    pub agent: Option<String>,
    pub limit: u32,
    /// With a tenant scope: also every event that names a prefix (the
    /// caller filters those by its grants).
    pub with_prefixes: bool,
}

/// The store's own part of the schema: agents and events (see
/// [`Schema`]; the other subsystems own theirs).
pub const SCHEMA: Schema = Schema {
    subsystem: "store",
    migrations: &[
        // 1: agents and events.
        "CREATE TABLE agents (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        connected INTEGER NOT NULL DEFAULT 0,
        session_gen INTEGER NOT NULL DEFAULT 0,
        first_seen_ms INTEGER NOT NULL,
        last_heartbeat_ms INTEGER,
        last_heartbeat_seq INTEGER,
        remote_addr TEXT NOT NULL DEFAULT '',
        agent_version TEXT NOT NULL DEFAULT '',
        hostname TEXT NOT NULL DEFAULT '',
        os TEXT NOT NULL DEFAULT '',
        heartbeat_interval_ms INTEGER NOT NULL,
        grace_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_tenant ON events (tenant, id);",
        // 2: the /24 (/64) an event is about, for tenant-scoped views.
        "ALTER TABLE events ADD COLUMN prefix TEXT",
    ],
};

/// A subsystem's part of the schema: the tables it owns, created and
/// changed by its own numbered migrations, each applied once in its own
/// transaction. The store records every subsystem's version in
/// `schema_versions`; the list of subsystems is `crate::schema::ALL`.
#[derive(Debug)]
pub struct Schema {
    pub subsystem: &'static str,
    pub migrations: &'static [&'static str],
}

/// `user_version` once the versions are kept per subsystem. Databases
/// below it numbered one sequence of migrations for everything
/// (1 to 10); `crate::schema::legacy` says what each of those had done.
pub const PER_SUBSYSTEM: i64 = 11;

/// Brings every subsystem's tables to its newest migration.
fn migrate(c: &mut Connection, schemas: &[&Schema]) -> rusqlite::Result<()> {
    migrate_with(c, schemas, &mut |_, _| Ok(()))
}

/// [`migrate`], calling `before(subsystem, n)` before migration `n` (from
/// 1) of a subsystem runs: work a migration's SQL cannot do itself.
fn migrate_with(
    c: &mut Connection,
    schemas: &[&Schema],
    before: &mut dyn FnMut(&str, usize) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_versions (
            subsystem TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        ) WITHOUT ROWID",
    )?;
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < PER_SUBSYSTEM {
        let tx = c.transaction()?;
        for (subsystem, done) in crate::schema::legacy(version) {
            tx.execute(
                "INSERT OR REPLACE INTO schema_versions (subsystem, version) VALUES (?1, ?2)",
                params![subsystem, done],
            )?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {PER_SUBSYSTEM}"))?;
        tx.commit()?;
    }
    for schema in schemas {
        let done: i64 = c
            .query_row(
                "SELECT version FROM schema_versions WHERE subsystem = ?1",
                [schema.subsystem],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        for (i, sql) in schema
            .migrations
            .iter()
            .enumerate()
            .skip(usize::try_from(done).unwrap_or(usize::MAX))
        {
            before(schema.subsystem, i + 1)?;
            let tx = c.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT OR REPLACE INTO schema_versions (subsystem, version) VALUES (?1, ?2)",
                params![schema.subsystem, i + 1],
            )?;
            tx.commit()?;
        }
    }
    Ok(())
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// A second, query-only connection for readers (the API, the log
    /// consumers), so that long reads do not hold up ingest: in WAL mode
    /// readers and the writer do not block each other. Absent for
    /// `:memory:` databases, which cannot be shared.
    read: Option<Arc<Mutex<Connection>>>,
    path: PathBuf,
    /// The embedded ingest log's own database (`log/sqlite.rs`): writer,
    /// reader (absent for `:memory:`) and path.
    log: Arc<Mutex<Connection>>,
    log_read: Option<Arc<Mutex<Connection>>>,
    log_path: PathBuf,
    /// The embedded ingest log's newest entries in memory, shared by every
    /// handle on this database (`log/tail.rs`), and how often the log was
    /// read from disk.
    log_tail: crate::log::tail::Tail,
    log_reads: Arc<std::sync::atomic::AtomicU64>,
    /// Set by the writer connection's update hook when a row goes into
    /// `events`; [`Store::with`] then bumps `events_changed`, which wakes
    /// the event log's followers (alerting) after the write.
    events_inserted: Arc<std::sync::atomic::AtomicBool>,
    events_changed: tokio::sync::watch::Sender<i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) `DIR/state.sqlite3`.
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        Self::open(&dir.join("state.sqlite3"))
    }

    /// The ingest log's file beside the store at `path`:
    /// `DIR/state.sqlite3` → `DIR/state.log.sqlite3`.
    pub fn log_path_of(path: &Path) -> PathBuf {
        if path == Path::new(":memory:") {
            return path.to_owned();
        }
        let stem = path
            .file_stem()
            .map_or_else(|| "state".into(), |s| s.to_string_lossy().into_owned());
        path.with_file_name(format!("{stem}.log.sqlite3"))
    }

    /// Opens the database file at `path` (`:memory:` for tests), and the
    /// ingest log's beside it ([`Self::log_path_of`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let wrap = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let memory = path == Path::new(":memory:");
        let log_path = Self::log_path_of(path);
        let wrap_log = |source| StoreError::Sqlite {
            path: log_path.clone(),
            source,
        };
        let mut log = Connection::open(&log_path).map_err(wrap_log)?;
        log.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -16384;",
        )
        .map_err(wrap_log)?;
        // A log file never numbered the single sequence of migrations.
        // Written only when new: opening an existing store writes nothing
        // (a reader on a full disk, a tool beside a running collector).
        let fresh: i64 = log
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(wrap_log)?;
        if fresh == 0 {
            log.execute_batch(&format!("PRAGMA user_version = {PER_SUBSYSTEM}"))
                .map_err(wrap_log)?;
        }
        migrate(&mut log, &[&crate::log::sqlite::FILE_SCHEMA]).map_err(wrap_log)?;
        let mut conn = Connection::open(path).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -65536;",
        )
        .map_err(wrap)?;
        migrate_with(&mut conn, crate::schema::ALL, &mut |subsystem, n| {
            if subsystem == "log" && n == 3 && !memory {
                crate::log::sqlite::move_to_file(&log, path)?;
            }
            Ok(())
        })
        .map_err(wrap)?;
        let furthest: i64 = conn
            .query_row("SELECT COALESCE(MAX(position), 0) FROM cursors", [], |r| {
                r.get(0)
            })
            .map_err(wrap)?;
        crate::log::sqlite::positions_past(&log, furthest).map_err(wrap_log)?;
        let reader = |p: &Path| -> rusqlite::Result<Arc<Mutex<Connection>>> {
            let r = Connection::open(p)?;
            r.execute_batch("PRAGMA query_only = 1; PRAGMA busy_timeout = 5000;")?;
            Ok(Arc::new(Mutex::new(r)))
        };
        let (read, log_read) = if memory {
            (None, None)
        } else {
            (
                Some(reader(path).map_err(wrap)?),
                Some(reader(&log_path).map_err(wrap_log)?),
            )
        };
        let head: i64 = log
            .query_row("SELECT COALESCE(MAX(id), 0) FROM ingest_log", [], |r| {
                r.get(0)
            })
            .map_err(wrap_log)?;
        let events_inserted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = events_inserted.clone();
        conn.update_hook(Some(
            move |action: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
                if table == "events" && action == rusqlite::hooks::Action::SQLITE_INSERT {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            },
        ));
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            read,
            path: path.to_owned(),
            log: Arc::new(Mutex::new(log)),
            log_read,
            log_path,
            log_tail: crate::log::tail::Tail::new(head),
            log_reads: Arc::default(),
            events_inserted,
            events_changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Runs a read-only `f` on the reader connection (the writer's when
    /// there is none).
    pub(crate) fn with_read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let Some(read) = &self.read else {
            return self.with(|c| f(c));
        };
        let conn = read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&conn).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `f` on the ingest log's writer connection.
    pub(crate) fn with_log<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut conn).map_err(|source| StoreError::Sqlite {
            path: self.log_path.clone(),
            source,
        })
    }

    /// Runs a read-only `f` on the ingest log's reader connection (its
    /// writer's when there is none).
    pub(crate) fn with_log_read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let Some(read) = &self.log_read else {
            return self.with_log(|c| f(c));
        };
        let conn = read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&conn).map_err(|source| StoreError::Sqlite {
            path: self.log_path.clone(),
            source,
        })
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = f(&mut conn);
        // Written (or rolled back: a spurious wake-up is harmless), still
        // holding the connection: followers read what is committed.
        if self
            .events_inserted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.events_changed.send_modify(|n| *n += 1);
        }
        result.map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    pub(crate) fn log_tail(&self) -> &crate::log::tail::Tail {
        &self.log_tail
    }

    pub(crate) fn log_reads(&self) -> &std::sync::atomic::AtomicU64 {
        &self.log_reads
    }

    /// Runs `f` on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Records a new session of `key`: creates the agent (with an
    /// `agent-registered` event) or updates its connection facts. Returns
    /// the agent's liveness state before this session.
    pub fn session_opened(
        &self,
        key: &AgentKey,
        info: &SessionInfo,
        session_gen: u64,
        now_ms: i64,
    ) -> Result<Option<AgentState>, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let prev: Option<String> = tx
                .query_row(
                    "SELECT state FROM agents WHERE tenant = ?1 AND name = ?2",
                    params![key.tenant, key.name],
                    |r| r.get(0),
                )
                .optional()?;
            let gen_ = i64::try_from(session_gen).unwrap_or(i64::MAX);
            let interval = i64::try_from(info.heartbeat_interval_ms).unwrap_or(i64::MAX);
            let grace = i64::try_from(info.grace_ms).unwrap_or(i64::MAX);
            if prev.is_none() {
                tx.execute(
                    "INSERT INTO agents (tenant, name, state, connected, session_gen, first_seen_ms,
                        remote_addr, agent_version, hostname, os, heartbeat_interval_ms, grace_ms)
                     VALUES (?1, ?2, 'up', 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        key.tenant, key.name, gen_, now_ms, info.remote_addr, info.agent_version,
                        info.hostname, info.os, interval, grace
                    ],
                )?;
                insert_event(
                    &tx,
                    now_ms,
                    key,
                    EventKind::AgentRegistered,
                    &serde_json::json!({
                        "remote_addr": info.remote_addr,
                        "agent_version": info.agent_version,
                    }),
                    None,
                )?;
            } else {
                tx.execute(
                    "UPDATE agents SET connected = 1, session_gen = ?3, remote_addr = ?4,
                        agent_version = ?5, hostname = ?6, os = ?7,
                        heartbeat_interval_ms = ?8, grace_ms = ?9
                     WHERE tenant = ?1 AND name = ?2",
                    params![
                        key.tenant,
                        key.name,
                        gen_,
                        info.remote_addr,
                        info.agent_version,
                        info.hostname,
                        info.os,
                        interval,
                        grace
                    ],
                )?;
            }
            tx.commit()?;
            Ok(prev.as_deref().map(AgentState::parse))
        })
    }

    /// Records a changed heartbeat interval and grace (after a reload).
    pub fn set_heartbeat_policy(
        &self,
        key: &AgentKey,
        interval_ms: u64,
        grace_ms: u64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE agents SET heartbeat_interval_ms = ?3, grace_ms = ?4 WHERE tenant = ?1 AND name = ?2",
                params![
                    key.tenant,
                    key.name,
                    i64::try_from(interval_ms).unwrap_or(i64::MAX),
                    i64::try_from(grace_ms).unwrap_or(i64::MAX)
                ],
            )
            .map(drop)
        })
    }

    /// Marks the session `session_gen` of `key` closed (a newer session of
    /// the same agent is left alone).
    pub fn session_closed(&self, key: &AgentKey, session_gen: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE agents SET connected = 0
                 WHERE tenant = ?1 AND name = ?2 AND session_gen = ?3",
                params![
                    key.tenant,
                    key.name,
                    i64::try_from(session_gen).unwrap_or(i64::MAX)
                ],
            )
            .map(drop)
        })
    }

    /// Marks every agent disconnected (at start-up: no session survives a
    /// collector restart).
    pub fn all_disconnected(&self) -> Result<(), StoreError> {
        self.with(|c| c.execute("UPDATE agents SET connected = 0", []).map(drop))
    }

    /// Changes an agent's liveness state and records the event, atomically.
    pub fn transition(
        &self,
        key: &AgentKey,
        state: AgentState,
        kind: EventKind,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE agents SET state = ?3 WHERE tenant = ?1 AND name = ?2",
                params![key.tenant, key.name, state.as_str()],
            )?;
            insert_event(&tx, now_ms, key, kind, detail, None)?;
            tx.commit()
        })
    }

    /// Every known agent with its state and grace (for liveness at start-up).
    pub fn liveness_snapshot(&self) -> Result<Vec<(AgentKey, AgentState, u64)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT tenant, name, state, grace_ms FROM agents")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    AgentKey {
                        tenant: r.get(0)?,
                        name: r.get(1)?,
                    },
                    AgentState::parse(&r.get::<_, String>(2)?),
                    u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                ))
            })?;
            rows.collect()
        })
    }

    /// Agents visible in `scope`, ordered by tenant and name, with their
    /// last heartbeat as the ingest log recorded it.
    pub fn agents(&self, scope: &Scope) -> Result<Vec<AgentRow>, StoreError> {
        let heartbeats: std::collections::HashMap<(String, String), (i64, i64)> = self
            .with_log_read(|c| {
                let mut stmt = c.prepare_cached(
                "SELECT tenant, agent, at_ms, seq FROM heartbeats WHERE ?1 IS NULL OR tenant = ?1",
            )?;
                let rows = stmt.query_map(params![scope.tenant()], |r| {
                    Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?)))
                })?;
                rows.collect()
            })?;
        let mut agents = self.agents_registered(scope)?;
        for a in &mut agents {
            if let Some((at, seq)) = heartbeats.get(&(a.tenant.clone(), a.name.clone())) {
                a.last_heartbeat_ms = Some(*at);
                a.last_heartbeat_seq = Some(*seq);
            }
        }
        Ok(agents)
    }

    fn agents_registered(&self, scope: &Scope) -> Result<Vec<AgentRow>, StoreError> {
        self.with_read(|c| {
            let mut stmt = c.prepare(
                "SELECT tenant, name, state, connected, last_heartbeat_ms, last_heartbeat_seq,
                        first_seen_ms, remote_addr, agent_version, hostname, os,
                        heartbeat_interval_ms, grace_ms
                 FROM agents WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name",
            )?;
            let rows = stmt.query_map(params![scope.tenant()], |r| {
                Ok(AgentRow {
                    tenant: r.get(0)?,
                    name: r.get(1)?,
                    state: AgentState::parse(&r.get::<_, String>(2)?),
                    connected: r.get(3)?,
                    last_heartbeat_ms: r.get(4)?,
                    last_heartbeat_seq: r.get(5)?,
                    first_seen_ms: r.get(6)?,
                    remote_addr: r.get(7)?,
                    agent_version: r.get(8)?,
                    hostname: r.get(9)?,
                    os: r.get(10)?,
                    heartbeat_interval_ms: r.get(11)?,
                    grace_ms: r.get(12)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Events visible in `scope`, oldest first.
    pub fn events(&self, scope: &Scope, q: &EventQuery) -> Result<Vec<EventRow>, StoreError> {
        self.with_read(|c| {
            let order = if q.before_id.is_some() { "DESC" } else { "" };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT id, at_ms, tenant, agent, kind, detail, prefix FROM events
                 WHERE id > ?1 AND id < ?6
                   AND (?2 IS NULL OR tenant = ?2 OR (?5 AND prefix IS NOT NULL))
                   AND (?3 IS NULL OR agent = ?3)
                 ORDER BY id {order} LIMIT ?4"
            ))?;
            let rows = stmt.query_map(
                params![
                    q.after_id,
                    scope.tenant(),
                    q.agent,
                    q.limit,
                    q.with_prefixes,
                    q.before_id.unwrap_or(i64::MAX)
                ],
                |r| {
                    let kind: String = r.get(4)?;
                    let detail: String = r.get(5)?;
                    Ok((
                        EventRow {
                            id: r.get(0)?,
                            at_ms: r.get(1)?,
                            tenant: r.get(2)?,
                            agent: r.get(3)?,
                            kind: EventKind::AgentRegistered,
                            detail: serde_json::from_str(&detail)
                                .unwrap_or(serde_json::Value::Null),
                            prefix: r.get(6)?,
                        },
                        kind,
                    ))
                },
            )?;
            // Rows of a kind this version does not know (written by a newer
            // collector) are skipped rather than misreported.
            Ok(rows
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .filter_map(|(mut row, kind)| {
                    row.kind = EventKind::parse(&kind)?;
                    Some(row)
                })
                .collect())
        })
    }

    /// A trivial query, for health checks.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }
}

/// Records an event of `key`'s tenant; `prefix` (a /24 or /64) makes it
/// visible to the tenants granted that prefix too.
pub(crate) fn insert_event(
    tx: &Connection,
    now_ms: i64,
    key: &AgentKey,
    kind: EventKind,
    detail: &serde_json::Value,
    prefix: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO events (at_ms, tenant, agent, kind, detail, prefix) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now_ms,
            key.tenant,
            key.name,
            kind.as_str(),
            detail.to_string(),
            prefix
        ],
    )
    .map(drop)
}

/// The event log as a followed [`Source`](crate::log::consumer::Source):
/// alerting reads it through the one consumer driver, woken when a write
/// adds events.
#[derive(Debug, Clone)]
pub struct EventLog(pub Store);

impl crate::log::consumer::Source for EventLog {
    type Item = EventRow;

    async fn read_after(&self, after: i64, limit: u32) -> Result<Vec<Arc<EventRow>>, StoreError> {
        let q = EventQuery {
            after_id: after,
            limit,
            ..EventQuery::default()
        };
        let rows = self.0.run(move |s| s.events(&Scope::All, &q)).await?;
        Ok(rows.into_iter().map(Arc::new).collect())
    }

    /// A count of writes that added events (only its changes matter).
    fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.0.events_changed.subscribe()
    }
}

/// Wall-clock now in Unix milliseconds.
pub use sonde_runtime::clock::unix_millis as now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, n: &str) -> AgentKey {
        AgentKey {
            tenant: t.into(),
            name: n.into(),
        }
    }

    #[test]
    fn event_kind_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        assert_eq!(EventKind::parse("agent_missing"), None);
    }

    #[test]
    fn lifecycle_survives_reopen_and_is_scoped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let info = SessionInfo {
            remote_addr: "127.0.0.1:5000".into(),
            heartbeat_interval_ms: 1000,
            grace_ms: 3000,
            ..SessionInfo::default()
        };
        assert_eq!(
            store.session_opened(&key("a", "x"), &info, 1, 10).unwrap(),
            None
        );
        assert_eq!(
            store.session_opened(&key("b", "y"), &info, 2, 11).unwrap(),
            None
        );
        assert_eq!(
            store.session_opened(&key("a", "x"), &info, 3, 12).unwrap(),
            Some(AgentState::Up)
        );
        crate::log::SqliteLog::new(store.clone())
            .heartbeat(&key("a", "x"), 7, b"hb", 20)
            .unwrap();
        store
            .transition(
                &key("a", "x"),
                AgentState::Missing,
                EventKind::AgentMissing,
                &serde_json::json!({}),
                30,
            )
            .unwrap();
        // The old session closing does not mark the newer one disconnected.
        store.session_closed(&key("a", "x"), 1).unwrap();
        drop(store);

        let store = Store::open_dir(dir.path()).unwrap();
        let a = store.agents(&Scope::Tenant("a".into())).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].state, AgentState::Missing);
        assert!(a[0].connected);
        assert_eq!(
            (a[0].last_heartbeat_ms, a[0].last_heartbeat_seq),
            (Some(20), Some(7))
        );
        assert_eq!(store.agents(&Scope::All).unwrap().len(), 2);

        let q = EventQuery {
            limit: 100,
            ..EventQuery::default()
        };
        let kinds: Vec<_> = store
            .events(&Scope::Tenant("a".into()), &q)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![EventKind::AgentRegistered, EventKind::AgentMissing]
        );
        assert_eq!(store.events(&Scope::All, &q).unwrap().len(), 3);
        let after = EventQuery {
            after_id: 2,
            before_id: None,
            limit: 1,
            ..q
        };
        assert_eq!(
            store.events(&Scope::All, &after).unwrap()[0].kind,
            EventKind::AgentMissing
        );
        store.all_disconnected().unwrap();
        assert!(!store.agents(&Scope::All).unwrap()[0].connected);
    }
}
