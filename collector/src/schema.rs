//! Which subsystems own tables in the store, in the order their
//! migrations run (`store::Schema`), and what the single sequence of
//! migrations that came before (`user_version` 1 to 10) had done for each.

use crate::store::Schema;

/// Every subsystem's schema. A fresh store applies them in this order.
pub const ALL: &[&Schema] = &[
    &crate::store::SCHEMA,
    &crate::log::sqlite::SCHEMA,
    &crate::consumers::analysis::persist::SCHEMA,
    &crate::consumers::facts::SCHEMA,
    &crate::consumers::alert::state::SCHEMA,
    &crate::targets::SCHEMA,
    &crate::checks::store::SCHEMA,
    &crate::agent_settings::SCHEMA,
];

/// The single sequence of migrations that came before: what each of its
/// steps (1 to 10) did, as (subsystem, the subsystem's migration count
/// after it). Step 4 made the analysis' tables and the events' `prefix`.
pub const LEGACY: &[&[(&str, i64)]] = &[
    &[("store", 1)],
    &[("log", 1)],
    &[("log", 2)],
    &[("analysis", 1), ("store", 2)],
    &[("facts", 1)],
    &[("alert", 1)],
    &[("targets", 1)],
    &[("analysis", 2)],
    &[("analysis", 3)],
    &[("alert", 2)],
];

/// The migrations a store at single-sequence `version` had applied, per
/// subsystem (every subsystem listed, 0 when none).
pub fn legacy(version: i64) -> Vec<(&'static str, i64)> {
    let mut done: Vec<(&'static str, i64)> = ALL.iter().map(|s| (s.subsystem, 0)).collect();
    let steps = usize::try_from(version).unwrap_or(0).min(LEGACY.len());
    for step in &LEGACY[..steps] {
        for (subsystem, count) in *step {
            if let Some(d) = done.iter_mut().find(|(s, _)| s == subsystem) {
                d.1 = *count;
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use rusqlite::Connection;

    use super::*;
    use crate::store::{PER_SUBSYSTEM, Store};

    /// Every table, index and column, as `SQLite` keeps them.
    fn layout(path: &std::path::Path) -> Vec<(String, String, Option<String>)> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn versions(path: &std::path::Path) -> (i64, Vec<(String, i64)>) {
        let c = Connection::open(path).unwrap();
        let user: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let mut stmt = c
            .prepare("SELECT subsystem, version FROM schema_versions ORDER BY subsystem")
            .unwrap();
        let per = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (user, per)
    }

    /// A store left by a collector of the single sequence at `version`:
    /// its steps run in their order, one transaction each.
    fn legacy_store(path: &std::path::Path, version: usize) {
        let c = Connection::open(path).unwrap();
        for (n, step) in LEGACY.iter().enumerate().take(version) {
            let mut sql = String::from("BEGIN;");
            for (subsystem, count) in *step {
                let schema = ALL.iter().find(|s| s.subsystem == *subsystem).unwrap();
                sql.push_str(schema.migrations[usize::try_from(*count).unwrap() - 1]);
                sql.push(';');
            }
            write!(sql, "PRAGMA user_version = {}; COMMIT;", n + 1).unwrap();
            c.execute_batch(&sql).unwrap();
        }
    }

    #[test]
    fn a_store_of_every_earlier_version_migrates_to_the_fresh_schema() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.sqlite3");
        drop(Store::open(&fresh).unwrap());
        let (user, per) = versions(&fresh);
        assert_eq!(user, PER_SUBSYSTEM);
        let newest: Vec<(String, i64)> = {
            let mut v: Vec<_> = ALL
                .iter()
                .map(|s| {
                    (
                        s.subsystem.to_owned(),
                        i64::try_from(s.migrations.len()).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(per, newest);
        for version in 0..=LEGACY.len() {
            let old = dir.path().join(format!("v{version}.sqlite3"));
            legacy_store(&old, version);
            drop(Store::open(&old).unwrap());
            assert_eq!(layout(&old), layout(&fresh), "from version {version}");
            assert_eq!(
                versions(&old),
                (PER_SUBSYSTEM, newest.clone()),
                "from version {version}"
            );
            assert_eq!(
                layout(&Store::log_path_of(&old)),
                layout(&Store::log_path_of(&fresh)),
                "the log file, from version {version}"
            );
            // Opened again: nothing to do, nothing changes.
            drop(Store::open(&old).unwrap());
            assert_eq!(
                layout(&old),
                layout(&fresh),
                "from version {version}, again"
            );
        }
    }

    /// A store from before the log had a file of its own keeps every
    /// entry (with its position), spool mark and last heartbeat: they
    /// move to the log file, the state store keeps the cursors, replays
    /// are still recognised and positions go on from where they were. A
    /// crash between the copy and the drop copies nothing twice.
    #[test]
    fn the_log_moves_to_its_own_file_with_everything_it_held() {
        use crate::log::{Ingested, SqliteLog};
        use crate::store::{AgentKey, Scope};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite3");
        legacy_store(&path, LEGACY.len());
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "INSERT INTO agents (tenant, name, state, first_seen_ms, last_heartbeat_ms,
                     last_heartbeat_seq, heartbeat_interval_ms, grace_ms)
                     VALUES ('t', 'a', 'up', 1, 5000, 42, 10000, 30000);
                 INSERT INTO ingest_log (id, tenant, agent, spool_id, batch_seq, received_ms,
                     results, payload, kind)
                     VALUES (7, 't', 'a', 9, 1, 100, 0, x'', 'batch'),
                            (8, 't', 'a', 0, 42, 5000, 0, x'', 'heartbeat');
                 INSERT INTO spool_hwm VALUES ('t', 'a', 9, 1, 100);
                 INSERT INTO cursors VALUES ('facts', 7, 100);",
            )
            .unwrap();
        // The copy already made once, then a crash before the drop.
        let log_path = Store::log_path_of(&path);
        let c = Connection::open(&log_path).unwrap();
        c.execute_batch(&format!(
            "PRAGMA user_version = {PER_SUBSYSTEM};
             CREATE TABLE schema_versions (subsystem TEXT PRIMARY KEY, version INTEGER NOT NULL)
                 WITHOUT ROWID;
             INSERT INTO schema_versions VALUES ('ingest-log', 1);
             {}",
            crate::log::sqlite::FILE_SCHEMA.migrations[0]
        ))
        .unwrap();
        crate::log::sqlite::move_to_file(&c, &path).unwrap();
        drop(c);

        let store = Store::open(&path).unwrap();
        let log = SqliteLog::new(store.clone());
        let kept: Vec<(i64, u64)> = log
            .stored_after(0, 10)
            .unwrap()
            .iter()
            .map(|e| (e.id, e.batch_seq))
            .collect();
        assert_eq!(kept, [(7, 1), (8, 42)], "each entry once, same positions");
        let a = AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        };
        assert_eq!(log.spool_mark_now(&a, 9).unwrap(), 1);
        assert_eq!(
            log.ingest(&a, 9, 1, 0, b"", 6000).unwrap(),
            Ingested::Duplicate(1)
        );
        assert_eq!(
            log.ingest(&a, 9, 2, 0, b"", 6000).unwrap(),
            Ingested::Stored(2)
        );
        assert_eq!(log.head_now().unwrap(), 9);
        let agents = store.agents(&Scope::All).unwrap();
        assert_eq!(
            (agents[0].last_heartbeat_ms, agents[0].last_heartbeat_seq),
            (Some(5000), Some(42))
        );
        assert_eq!(store.cursor("facts").unwrap(), 7);
        let left: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('ingest_log', 'spool_hwm')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the state store no longer holds the log");
    }

    /// A log file lost or replaced (restored state beside a new log) hands
    /// out no position a consumer has already passed.
    #[test]
    fn a_new_log_file_continues_after_the_stored_cursors() {
        use crate::log::SqliteLog;
        use crate::store::AgentKey;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite3");
        let store = Store::open(&path).unwrap();
        store.set_cursor("facts", 500, 1).unwrap();
        drop(store);
        for end in ["", "-wal", "-shm"] {
            let f = format!("{}{end}", Store::log_path_of(&path).display());
            let _ = std::fs::remove_file(f);
        }
        let log = SqliteLog::new(Store::open(&path).unwrap());
        let a = AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        };
        log.ingest(&a, 1, 1, 0, b"", 1).unwrap();
        assert_eq!(log.head_now().unwrap(), 501);
    }

    #[test]
    fn a_subsystem_migration_runs_once_where_its_version_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite3");
        drop(Store::open(&path).unwrap());
        // Targets one behind: its one migration runs again (and would fail
        // on the table it made, had the version not been kept).
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP TABLE managed_targets;
             UPDATE schema_versions SET version = 0 WHERE subsystem = 'targets';",
        )
        .unwrap();
        drop(c);
        drop(Store::open(&path).unwrap());
        let fresh = dir.path().join("fresh.sqlite3");
        drop(Store::open(&fresh).unwrap());
        assert_eq!(layout(&path), layout(&fresh));
    }
}
