//! `sonde-collector backup PATH`: an online, consistent copy of the state
//! store, private to its owner.
//!
//! SQLite's `VACUUM INTO` copies the database inside one read transaction,
//! so the copy is a snapshot of committed state while the collector keeps
//! ingesting (WAL readers do not block the writer, nor it them). The file is
//! created first with mode 0600 and must not exist (`VACUUM INTO` fills an
//! empty file), is synced to disk, then opened again and checked
//! (`PRAGMA quick_check`) before the command reports success. No `sqlite3`
//! program is needed. Run as root, SQLite gives any `-wal`/`-shm` file it
//! creates the database's owner, so a backup never leaves files the service
//! user cannot open.
//!
//! Restore (README, Operations): stop the collector, install the backup as
//! `STATE_DIR/state.sqlite3` owned by the service user with mode 0600 and no
//! `-wal`/`-shm` beside it, start; a backup from an older version migrates
//! forward on start like any store. In the cluster mode the shared state
//! lives in `PostgreSQL` and is backed up with its own tools.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// The store's file in its state directory.
pub const FILE: &str = "state.sqlite3";

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
    /// The store's schema version (`PRAGMA user_version`).
    pub schema: i64,
    pub agents: i64,
    pub events: i64,
    /// Minute aggregates: rows, probes counted in them, and the oldest
    /// minute (Unix ms), so a restore can be checked against the backup.
    pub minutes: i64,
    pub probes: i64,
    pub oldest_minute_ms: Option<i64>,
}

/// Why a backup was not written. A failed backup leaves no file behind.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: no state store here (is state-dir right?)")]
    NoStore(PathBuf),
    #[error("{0}: exists; give the name of a new file")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: the copy failed its integrity check: {reason}")]
    Check { path: PathBuf, reason: String },
}

/// Copies the store in `state_dir` to `dest` (a new file).
pub fn backup(state_dir: &Path, dest: &Path) -> Result<Backup, BackupError> {
    let db = state_dir.join(FILE);
    if !db.is_file() {
        return Err(BackupError::NoStore(db));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { path, source }
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Exists(dest.to_owned())
            } else {
                io(dest)(e)
            }
        })?;
    let written = copy(&db, dest).and_then(|()| {
        file.sync_all().map_err(io(dest))?;
        check(dest)
    });
    if written.is_err() {
        drop(file);
        let _ = std::fs::remove_file(dest);
    }
    let mut done = written?;
    // The directory entry too, so the backup survives a crash right after.
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    done.bytes = std::fs::metadata(dest).map_err(io(dest))?.len();
    Ok(done)
}

/// `VACUUM INTO` from the live store.
fn copy(db: &Path, dest: &Path) -> Result<(), BackupError> {
    let sqlite = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Sqlite { path, source }
    };
    // Never create a store where there was none.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(db))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sqlite(db))?;
    let target = dest.to_str().ok_or_else(|| BackupError::Io {
        path: dest.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path is not UTF-8"),
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(sqlite(db))?;
    Ok(())
}

/// Opens the copy read-only and checks it.
fn check(dest: &Path) -> Result<Backup, BackupError> {
    let wrap = |source| BackupError::Sqlite {
        path: dest.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(wrap)?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(wrap)?;
    if verdict != "ok" {
        return Err(BackupError::Check {
            path: dest.to_owned(),
            reason: verdict,
        });
    }
    let count = |table: &str| {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(wrap)
    };
    let (minutes, probes, oldest): (i64, i64, Option<i64>) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(probes), 0), min(unit) FROM minute_buckets",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(wrap)?;
    Ok(Backup {
        minutes,
        probes,
        oldest_minute_ms: oldest.map(|m| m * 60_000),
        path: dest.to_owned(),
        bytes: 0,
        schema: conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(wrap)?,
        agents: count("agents")?,
        events: count("events")?,
    })
}

impl std::fmt::Display for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} bytes, schema {}, {} agents, {} events, {} minute aggregates of {} probes",
            self.path.display(),
            self.bytes,
            self.schema,
            self.agents,
            self.events,
            self.minutes,
            self.probes,
        )?;
        if let Some(ms) = self.oldest_minute_ms {
            write!(
                f,
                " since {}",
                sonde_runtime::clock::rfc3339_seconds(ms.div_euclid(1000))
            )?;
        }
        f.write_str(" (mode 0600; checked)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_backup_is_a_checked_private_copy_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open_dir(&state).unwrap();
        let key = crate::store::AgentKey {
            tenant: "acme".into(),
            name: "edge-1".into(),
        };
        store
            .session_opened(&key, &crate::store::SessionInfo::default(), 1, 1_000)
            .unwrap();
        let dest = dir.path().join("copy.sqlite3");
        let done = backup(&state, &dest).unwrap();
        assert_eq!((done.agents, done.events), (1, 1));
        assert!(done.bytes > 0 && done.schema > 0, "{done}");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The copy opens as a store of its own, with the same data.
        let copy = dir.path().join("restored");
        std::fs::create_dir(&copy).unwrap();
        std::fs::rename(&dest, copy.join(FILE)).unwrap();
        Store::open_dir(&copy).unwrap();
        assert_eq!(check(&copy.join(FILE)).unwrap().events, 1);
        // An existing file is never overwritten; a missing store is named.
        let e = backup(&state, &copy.join(FILE)).unwrap_err();
        assert!(matches!(e, BackupError::Exists(_)), "{e}");
        let e = backup(&dir.path().join("nowhere"), &dir.path().join("x")).unwrap_err();
        assert!(e.to_string().contains("no state store here"), "{e}");
        assert!(!dir.path().join("nowhere").exists());
    }
}
