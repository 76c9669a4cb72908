//! The embedded ingest log: a `SQLite` database of its own,
//! `state.log.sqlite3` beside the collector's store (`state.sqlite3`),
//! with its own writer connection (WAL, `synchronous=FULL`) and reader
//! connection. A file of its own because appends must never wait for a
//! consumer's transaction: the analysis' checkpoint writes every series it
//! touched, seconds of work at 250,000 results/s, and while it held the
//! one writer connection of a shared file, acknowledgements waited behind
//! it (ack p99 2.6 s; 13 ms with the checkpoint's writes left out). It is
//! also the shape of the cluster mode, where the log (`JetStream`) and the
//! state store (`PostgreSQL`) are separate services.
//!
//! The log file holds the entries (`ingest_log`), each agent spool's
//! high-water mark (`spool_hwm`, recognising replays in the append's own
//! transaction) and each agent's last heartbeat (`heartbeats`, likewise:
//! one fsync, and it never says more than the log holds). Consumers'
//! cursors stay in the state store, each committed with its effects.
//! Positions never go backwards across the two files: at open the log's
//! sequence is raised past every stored cursor, so a lost or replaced log
//! file cannot hand out positions the consumers have already passed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Append, Appended, Entries, Entry, IngestLog, Ingested, LogKind, LogLag, LoggedBatch};
use crate::store::{AgentKey, Store, StoreError};

/// The log's tables in the state store, where they lived before the log
/// had a file of its own (migration 3 leaves only the cursors there).
pub const SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "log",
    migrations: &[
        // 1: the durable ingest log and each agent spool's high-water mark.
        "CREATE TABLE spool_hwm (
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        spool_id INTEGER NOT NULL,
        batch_seq INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, agent, spool_id)
    ) WITHOUT ROWID;
    CREATE TABLE ingest_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        spool_id INTEGER NOT NULL,
        batch_seq INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        results INTEGER NOT NULL,
        payload BLOB NOT NULL
    );",
        // 2: heartbeats join the ingest log (one ordered log for every
        // consumer), and consumers keep durable cursors into it.
        "ALTER TABLE ingest_log ADD COLUMN kind TEXT NOT NULL DEFAULT 'batch';
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID;",
        // 3: the log moved to its own file; `Store::open` has copied what
        // these tables held into it (`move_to_file`) before this runs.
        "DROP TABLE IF EXISTS ingest_log;
    DROP TABLE IF EXISTS spool_hwm;",
    ],
};

/// The log file's own tables.
pub const FILE_SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "ingest-log",
    migrations: &[
        // 1: entries, spool marks and last heartbeats.
        "CREATE TABLE ingest_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        spool_id INTEGER NOT NULL,
        batch_seq INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        results INTEGER NOT NULL,
        payload BLOB NOT NULL,
        kind TEXT NOT NULL DEFAULT 'batch'
    );
    CREATE TABLE spool_hwm (
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        spool_id INTEGER NOT NULL,
        batch_seq INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, agent, spool_id)
    ) WITHOUT ROWID;
    CREATE TABLE heartbeats (
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (tenant, agent)
    ) WITHOUT ROWID;",
    ],
};

/// Copies the log's tables out of the state store at `state` (schema
/// "log" at migration 2) into the log file, in one transaction of the log
/// file, before migration 3 drops them there. Run again after a crash
/// between the two, it copies nothing twice.
pub(crate) fn move_to_file(log: &Connection, state: &std::path::Path) -> rusqlite::Result<()> {
    log.execute(
        "ATTACH DATABASE ?1 AS state",
        [state.to_string_lossy().as_ref()],
    )?;
    let there: rusqlite::Result<bool> = log.query_row(
        "SELECT COUNT(*) = 2 FROM state.sqlite_master
         WHERE type = 'table' AND name IN ('ingest_log', 'spool_hwm')",
        [],
        |r| r.get(0),
    );
    if !matches!(there, Ok(true)) {
        let detached = log.execute_batch("DETACH DATABASE state");
        return there.and(detached).map(drop);
    }
    let copied = log.execute_batch(
        "BEGIN IMMEDIATE;
         INSERT OR IGNORE INTO main.ingest_log
             (id, tenant, agent, spool_id, batch_seq, received_ms, results, payload, kind)
             SELECT id, tenant, agent, spool_id, batch_seq, received_ms, results, payload, kind
             FROM state.ingest_log;
         INSERT OR IGNORE INTO main.spool_hwm (tenant, agent, spool_id, batch_seq, updated_ms)
             SELECT tenant, agent, spool_id, batch_seq, updated_ms FROM state.spool_hwm;
         INSERT OR IGNORE INTO main.heartbeats (tenant, agent, at_ms, seq)
             SELECT tenant, name, last_heartbeat_ms, COALESCE(last_heartbeat_seq, 0)
             FROM state.agents WHERE last_heartbeat_ms IS NOT NULL;
         COMMIT;",
    );
    if copied.is_err() {
        let _ = log.execute_batch("ROLLBACK");
    }
    let detached = log.execute_batch("DETACH DATABASE state");
    copied.and(detached)
}

/// Raises the log's position sequence to at least `position` (the
/// furthest stored cursor).
pub(crate) fn positions_past(log: &Connection, position: i64) -> rusqlite::Result<()> {
    let seq: i64 = log
        .query_row("SELECT COALESCE(MAX(id), 0) FROM ingest_log", [], |r| {
            r.get::<_, i64>(0)
        })?
        .max(
            log.query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'ingest_log'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0),
        );
    if seq >= position {
        return Ok(());
    }
    tracing::warn!(
        log_head = seq,
        cursor = position,
        "the ingest log is behind the consumers' cursors (a new or replaced log file); its positions continue after them"
    );
    log.execute_batch("BEGIN IMMEDIATE")?;
    let r = log
        .execute("DELETE FROM sqlite_sequence WHERE name = 'ingest_log'", [])
        .and_then(|_| {
            log.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('ingest_log', ?1)",
                [position],
            )
        });
    match r {
        Ok(_) => log.execute_batch("COMMIT"),
        Err(e) => {
            let _ = log.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// `SQLite` integers are signed; spool ids and sequence numbers are `u64`
/// stored bit for bit.
fn to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// The ingest log in the collector's store.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    store: Store,
}

impl SqliteLog {
    /// The log of `store`. Every handle on the same store shares its
    /// in-memory tail (the store keeps it).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store it lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many times entries were read from the database (not from
    /// memory): for `/metrics` and the test that an idle collector reads
    /// nothing.
    pub fn disk_reads(&self) -> u64 {
        self.store.log_reads().load(Ordering::Relaxed)
    }

    /// [`IngestLog::append`], on the calling thread.
    pub fn append_now(
        &self,
        appends: Vec<Append>,
        received_ms: i64,
    ) -> Result<Vec<Appended>, StoreError> {
        self.store.with_log(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(appends.len());
            for Append { mut row, body } in appends {
                row.received_ms = received_ms;
                let key = AgentKey {
                    tenant: row.tenant.clone(),
                    name: row.agent.clone(),
                };
                if row.kind == LogKind::Batch {
                    let mark = hwm(&tx, &key, row.spool_id)?;
                    if row.batch_seq <= mark {
                        out.push(Appended {
                            ingested: Ingested::Duplicate(mark),
                            entry: None,
                        });
                        continue;
                    }
                    tx.prepare_cached(
                        "INSERT INTO spool_hwm (tenant, agent, spool_id, batch_seq, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (tenant, agent, spool_id) DO UPDATE SET batch_seq = ?4, updated_ms = ?5",
                    )?
                    .execute(params![key.tenant, key.name, to_sql(row.spool_id), to_sql(row.batch_seq), received_ms])?;
                } else {
                    tx.prepare_cached(
                        "INSERT INTO heartbeats (tenant, agent, at_ms, seq) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (tenant, agent) DO UPDATE SET at_ms = ?3, seq = ?4",
                    )?
                    .execute(params![
                        key.tenant,
                        key.name,
                        received_ms,
                        i64::try_from(row.batch_seq).unwrap_or(i64::MAX)
                    ])?;
                }
                tx.prepare_cached(
                    "INSERT INTO ingest_log (tenant, agent, spool_id, batch_seq, received_ms, results, payload, kind)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    row.tenant,
                    row.agent,
                    to_sql(row.spool_id),
                    to_sql(row.batch_seq),
                    received_ms,
                    row.results,
                    row.payload,
                    row.kind.as_str()
                ])?;
                row.id = tx.last_insert_rowid();
                let ingested = Ingested::Stored(row.batch_seq);
                out.push(Appended {
                    ingested,
                    entry: Some(Arc::new(Entry { stored: row, body })),
                });
            }
            #[cfg(debug_assertions)]
            slow_commit();
            tx.commit()?;
            // Published in commit order: still holding the writer
            // connection.
            self.store
                .log_tail()
                .push(out.iter().filter_map(|a| a.entry.clone()));
            Ok(out)
        })
    }

    /// Appends one batch of raw `payload` on the calling thread (tools and
    /// tests; sessions go through the writer).
    pub fn ingest(
        &self,
        key: &AgentKey,
        spool_id: u64,
        batch_seq: u64,
        results: u32,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Ingested, StoreError> {
        let row = raw(key, LogKind::Batch, spool_id, batch_seq, results, payload);
        let body = super::Body::decode(LogKind::Batch, payload);
        let mut out = self.append_now(vec![Append { row, body }], now_ms)?;
        Ok(out.remove(0).ingested)
    }

    /// Appends one heartbeat of raw `payload` on the calling thread.
    pub fn heartbeat(
        &self,
        key: &AgentKey,
        seq: u64,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let row = raw(key, LogKind::Heartbeat, 0, seq, 0, payload);
        let body = super::Body::decode(LogKind::Heartbeat, payload);
        self.append_now(vec![Append { row, body }], now_ms)
            .map(drop)
    }

    /// The highest durable `batch_seq` of an agent's spool (0 = none).
    pub fn spool_mark_now(&self, key: &AgentKey, spool_id: u64) -> Result<u64, StoreError> {
        self.store.with_log(|c| hwm(c, key, spool_id))
    }

    /// Up to `limit` entries of every kind after `after`, as stored.
    pub fn stored_after(&self, after: i64, limit: u32) -> Result<Vec<LoggedBatch>, StoreError> {
        self.read(after, limit, None)
    }

    /// Up to `limit` result batches after `after`, as stored.
    pub fn batches_after(&self, after: i64, limit: u32) -> Result<Vec<LoggedBatch>, StoreError> {
        self.read(after, limit, Some(LogKind::Batch))
    }

    fn read(
        &self,
        after: i64,
        limit: u32,
        only: Option<LogKind>,
    ) -> Result<Vec<LoggedBatch>, StoreError> {
        self.store.log_reads().fetch_add(1, Ordering::Relaxed);
        self.store.with_log_read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, tenant, agent, spool_id, batch_seq, received_ms, results, payload, kind
                 FROM ingest_log WHERE id > ?1 AND (?3 IS NULL OR kind = ?3) ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit, only.map(LogKind::as_str)], |r| {
                let Some(kind) = LogKind::parse(&r.get::<_, String>(8)?) else {
                    return Ok(None);
                };
                Ok(Some(LoggedBatch {
                    id: r.get(0)?,
                    kind,
                    tenant: r.get(1)?,
                    agent: r.get(2)?,
                    spool_id: from_sql(r.get(3)?),
                    batch_seq: from_sql(r.get(4)?),
                    received_ms: r.get(5)?,
                    results: r.get(6)?,
                    payload: r.get(7)?,
                }))
            })?;
            // Entries of a kind a newer collector wrote are passed over.
            Ok(rows
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect())
        })
    }

    /// The newest entry's position (0 when empty).
    pub fn head_now(&self) -> Result<i64, StoreError> {
        self.store.with_log_read(|c| {
            c.query_row("SELECT COALESCE(MAX(id), 0) FROM ingest_log", [], |r| {
                r.get(0)
            })
        })
    }

    /// How far `position` is behind the head: entries, probe results, and
    /// the receive time of the oldest entry not yet consumed.
    pub fn lag_now(&self, position: i64) -> Result<LogLag, StoreError> {
        self.store.with_log_read(|c| {
            c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(results), 0), MIN(received_ms)
                 FROM ingest_log WHERE id > ?1",
                params![position],
                |r| {
                    Ok(LogLag {
                        entries: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                        results: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                        oldest_ms: r.get(2)?,
                    })
                },
            )
        })
    }

    /// Size of the ingest log: entries and payload bytes.
    pub fn size_now(&self) -> Result<(u64, u64), StoreError> {
        self.store.with_log_read(|c| {
            c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM ingest_log",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                        r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                    ))
                },
            )
        })
    }

    /// Deletes up to `limit` entries at or before `upto` that were received
    /// before `older_than_ms`; returns how many went.
    pub fn prune_now(
        &self,
        upto: i64,
        older_than_ms: i64,
        limit: u32,
    ) -> Result<usize, StoreError> {
        self.store.with_log(|c| {
            c.execute(
                "DELETE FROM ingest_log WHERE id IN (
                    SELECT id FROM ingest_log WHERE id <= ?1 AND received_ms < ?2 ORDER BY id LIMIT ?3)",
                params![upto, older_than_ms, limit],
            )
        })
    }
}

fn raw(
    key: &AgentKey,
    kind: LogKind,
    spool_id: u64,
    batch_seq: u64,
    results: u32,
    payload: &[u8],
) -> LoggedBatch {
    LoggedBatch {
        id: 0,
        kind,
        tenant: key.tenant.clone(),
        agent: key.name.clone(),
        spool_id,
        batch_seq,
        received_ms: 0,
        results,
        payload: payload.to_vec(),
    }
}

fn hwm(c: &Connection, key: &AgentKey, spool_id: u64) -> rusqlite::Result<u64> {
    c.prepare_cached(
        "SELECT batch_seq FROM spool_hwm WHERE tenant = ?1 AND agent = ?2 AND spool_id = ?3",
    )?
    .query_row(params![key.tenant, key.name, to_sql(spool_id)], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map_or(0, from_sql))
}

impl IngestLog for SqliteLog {
    async fn append(
        &self,
        appends: Vec<Append>,
        received_ms: i64,
    ) -> Result<Vec<Appended>, StoreError> {
        let log = self.clone();
        blocking(move || log.append_now(appends, received_ms)).await
    }

    async fn spool_mark(&self, key: AgentKey, spool_id: u64) -> Result<u64, StoreError> {
        let log = self.clone();
        blocking(move || log.spool_mark_now(&key, spool_id)).await
    }

    async fn read_after(&self, after: i64, limit: u32) -> Result<Entries, StoreError> {
        if let Some(e) = self.store.log_tail().after(after, limit as usize) {
            return Ok(e);
        }
        let log = self.clone();
        blocking(move || {
            Ok(log
                .stored_after(after, limit)?
                .into_iter()
                .map(|e| Arc::new(Entry::decode(e)))
                .collect())
        })
        .await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.store.log_tail().subscribe()
    }

    async fn lag(&self, position: i64) -> Result<LogLag, StoreError> {
        let log = self.clone();
        blocking(move || log.lag_now(position)).await
    }

    async fn prune(&self, upto: i64, older_than_ms: i64, limit: u32) -> Result<usize, StoreError> {
        let log = self.clone();
        blocking(move || log.prune_now(upto, older_than_ms, limit)).await
    }
}

/// Test fault hook, in debug builds only: `SONDE_COLLECTOR_TEST_SLOW_COMMIT_MS`
/// holds each ingest-log transaction open that long before its commit, as
/// a slow disk would, so that appends queue behind it and share the next
/// one (`tests/tests/faults.rs` kills the collector meanwhile).
#[cfg(debug_assertions)]
fn slow_commit() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("SONDE_COLLECTOR_TEST_SLOW_COMMIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(d) = delay {
        std::thread::sleep(*d);
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn key(t: &str, n: &str) -> AgentKey {
        AgentKey {
            tenant: t.into(),
            name: n.into(),
        }
    }

    #[test]
    fn ingest_is_idempotent_per_spool_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteLog::new(Store::open_dir(dir.path()).unwrap());
        let a = key("t", "a");
        let big_id = u64::MAX - 7; // ids use all 64 bits
        assert_eq!(log.spool_mark_now(&a, big_id).unwrap(), 0);
        assert_eq!(
            log.ingest(&a, big_id, 1, 3, b"one", 1).unwrap(),
            Ingested::Stored(1)
        );
        assert_eq!(
            log.ingest(&a, big_id, 2, 3, b"two", 2).unwrap(),
            Ingested::Stored(2)
        );
        // Replays are recognised and not applied twice.
        assert_eq!(
            log.ingest(&a, big_id, 1, 3, b"one", 3).unwrap(),
            Ingested::Duplicate(2)
        );
        assert_eq!(
            log.ingest(&a, big_id, 2, 3, b"two", 3).unwrap(),
            Ingested::Duplicate(2)
        );
        // A jump (spool dropped batches; its gap record says so) is fine.
        assert_eq!(
            log.ingest(&a, big_id, 9, 0, b"gap", 4).unwrap(),
            Ingested::Stored(9)
        );
        // A new spool of the same agent starts its own sequence.
        assert_eq!(
            log.ingest(&a, 5, 1, 1, b"fresh", 5).unwrap(),
            Ingested::Stored(1)
        );
        drop(log);
        let log = SqliteLog::new(Store::open_dir(dir.path()).unwrap());
        assert_eq!(log.spool_mark_now(&a, big_id).unwrap(), 9);
        let stored = log.batches_after(0, 100).unwrap();
        let seen: Vec<(u64, u64, &[u8])> = stored
            .iter()
            .map(|b| (b.spool_id, b.batch_seq, b.payload.as_slice()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (big_id, 1, &b"one"[..]),
                (big_id, 2, b"two"),
                (big_id, 9, b"gap"),
                (5, 1, b"fresh")
            ]
        );
        assert_eq!(log.batches_after(stored[1].id, 1).unwrap()[0].batch_seq, 9);
        assert_eq!(log.head_now().unwrap(), stored[3].id);
    }

    #[test]
    fn one_transaction_takes_a_group_with_its_replays() {
        let log = SqliteLog::new(Store::open(Path::new(":memory:")).unwrap());
        let (a, b) = (key("t", "a"), key("t", "b"));
        let batch = |k: &AgentKey, seq: u64| {
            let row = raw(k, LogKind::Batch, 1, seq, 1, b"x");
            Append {
                row,
                body: super::super::Body::Undecodable(String::new()),
            }
        };
        // a's 1 and 2, b's 1, and a's 2 again within the same group.
        let out = log
            .append_now(
                vec![batch(&a, 1), batch(&a, 2), batch(&b, 1), batch(&a, 2)],
                7,
            )
            .unwrap();
        let got: Vec<(Ingested, Option<i64>)> = out
            .iter()
            .map(|o| (o.ingested, o.entry.as_ref().map(|e| e.id())))
            .collect();
        let ids = log.stored_after(0, 10).unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            got,
            vec![
                (Ingested::Stored(1), Some(ids[0].id)),
                (Ingested::Stored(2), Some(ids[1].id)),
                (Ingested::Stored(1), Some(ids[2].id)),
                (Ingested::Duplicate(2), None),
            ]
        );
        assert!(ids.iter().all(|e| e.received_ms == 7));
    }

    #[test]
    fn cursors_lag_and_pruning() {
        let store = Store::open(Path::new(":memory:")).unwrap();
        let log = SqliteLog::new(store.clone());
        let a = key("t", "a");
        log.ingest(&a, 1, 1, 10, b"b1", 1_000).unwrap();
        log.heartbeat(&a, 1, b"h1", 2_000).unwrap();
        log.ingest(&a, 1, 2, 5, b"b2", 3_000).unwrap();
        // Heartbeats are in the log for consumers, not among the batches.
        let all = log.stored_after(0, 10).unwrap();
        let kinds: Vec<_> = all.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [LogKind::Batch, LogKind::Heartbeat, LogKind::Batch]);
        assert_eq!(log.batches_after(0, 10).unwrap().len(), 2);

        assert_eq!(store.cursor("export").unwrap(), 0);
        let lag = log.lag_now(0).unwrap();
        assert_eq!(
            (lag.entries, lag.results, lag.oldest_ms),
            (3, 15, Some(1_000))
        );
        store.set_cursor("export", all[1].id, 5).unwrap();
        store.set_cursor("export", all[0].id, 6).unwrap(); // never backwards
        assert_eq!(store.cursor("export").unwrap(), all[1].id);
        let lag = log.lag_now(all[1].id).unwrap();
        assert_eq!(
            (lag.entries, lag.results, lag.oldest_ms),
            (1, 5, Some(3_000))
        );

        // Only up to the position given, and only when old enough.
        assert_eq!(log.prune_now(all[1].id, 1_500, 100).unwrap(), 1);
        assert_eq!(log.prune_now(all[1].id, 9_000, 100).unwrap(), 1);
        assert_eq!(log.prune_now(all[1].id, 9_000, 100).unwrap(), 0);
        assert_eq!(log.stored_after(0, 10).unwrap().len(), 1);
        assert_eq!(log.size_now().unwrap(), (1, 2));
    }
}
