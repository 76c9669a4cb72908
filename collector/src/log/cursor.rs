//! Consumers' durable positions in the ingest log (the `cursors` table of
//! the log's schema). A consumer that writes derived state moves its cursor
//! inside the same transaction ([`advance`]), so its effects and its
//! position are durable together; pruning and `/metrics` lag read them
//! through the consumer registry.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{Store, StoreError};

/// A consumer's cursor, inside the caller's connection or transaction
/// (0 = from the start).
pub(crate) fn read(c: &Connection, name: &str) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT position FROM cursors WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )
    .optional()
    .map(Option::unwrap_or_default)
}

/// Moves a cursor forward (never backwards) inside the caller's
/// transaction.
pub(crate) fn advance(
    c: &Connection,
    name: &str,
    position: i64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO cursors (name, position, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET position = MAX(position, ?2), updated_ms = ?3",
    )?
    .execute(params![name, position, now_ms])
    .map(drop)
}

impl Store {
    /// A consumer's position in the ingest log (0 = from the start).
    pub fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        self.with(|c| read(c, name))
    }

    /// Moves a consumer's cursor (never backwards), in a transaction of
    /// its own (for consumers whose effects are elsewhere: the export).
    pub fn set_cursor(&self, name: &str, position: i64, now_ms: i64) -> Result<(), StoreError> {
        self.with(|c| advance(c, name, position, now_ms))
    }
}
