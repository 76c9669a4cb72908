//! The ingest log: the collector's backbone. Every result batch and every
//! heartbeat an agent sends is appended here before it is acknowledged;
//! everything else (analysis, host facts, export) is a consumer that reads
//! the log after its own cursor.
//!
//! # Contract
//!
//! - **Durable when acknowledged.** [`writer::Writer::append`] returns once
//!   the transaction holding the entry is durable (`SQLite` WAL with
//!   `synchronous=FULL`: fsynced). Only then does the session acknowledge
//!   the batch. A failed transaction fails every append in it; nothing of
//!   it is acknowledged, and agents replay.
//! - **Its own file.** The embedded log is a database of its own
//!   (`sqlite.rs`), so an append never waits behind a consumer's
//!   transaction in the state store (an analysis checkpoint writes every
//!   series it touched). A consumer's cursor lives with its effects in the
//!   store that holds them: the two files never need one transaction.
//! - **Group commit.** Appends that arrive while a commit is in flight are
//!   committed together in the next transaction (at most
//!   [`writer::MAX_GROUP_ENTRIES`] entries and [`writer::MAX_GROUP_BYTES`]
//!   of payload), each acknowledged as soon as that transaction is durable.
//! - **A replay is recognised.** A batch is appended together with its
//!   spool's high-water mark, in the same transaction: a batch at or below
//!   the mark is a replay, not stored again, and acknowledged with the mark
//!   ([`Ingested::Duplicate`]). So each acknowledged batch is stored once.
//! - **Positions.** Every entry gets a position (`id`) greater than every
//!   earlier one. Readers read entries after a position, in order. Entries
//!   of a kind this version does not know (written by a newer collector)
//!   are passed over.
//! - **Exactly-once effects.** A consumer that keeps derived state commits
//!   its effects and its cursor in one transaction of the store that holds
//!   that state; after a crash it resumes after its durable cursor, and
//!   what it had applied without committing is applied again to state that
//!   never saw it. Over entries that change nothing of its state
//!   (heartbeats, for most) it moves its cursor at most every
//!   [`consumer::CURSOR_ONLY_EVERY`]: applying them again changes nothing
//!   either. A consumer writing outside (InfluxDB) is at-least-once:
//!   it moves its cursor after the write, and a write repeated after a
//!   crash overwrites the same points.
//! - **Pruning.** An entry is deleted once every registered consumer's
//!   durable cursor has passed it and it is older than
//!   `retention.ingest-log`. A consumer that is stopped or failing holds
//!   pruning back: the log grows and its lag shows in `/metrics`
//!   (`sonde_collector_consumer_lag_batches{consumer}`).
//! - **Wake-ups, not polling.** After each commit the log publishes the
//!   new head position and keeps the entries, decoded once, in an
//!   in-memory [`tail::Tail`]: a consumer that is caught up is woken and
//!   reads them from memory, so an idle collector reads nothing from disk.
//!
//! [`IngestLog`] is the seam: [`sqlite::SqliteLog`] is the embedded
//! implementation; a distributed log (NATS `JetStream`) implements the same
//! appends, reads, lag and pruning.

pub mod consumer;
pub mod cursor;
pub mod sqlite;
pub mod tail;
pub mod writer;

use std::future::Future;
use std::sync::Arc;

use prost::Message as _;
use serde::Serialize;
use sonde_proto::v1::{Heartbeat, ResultBatch};

use crate::store::{AgentKey, StoreError};

pub use sqlite::SqliteLog;

/// What [`IngestLog::append`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored now; acknowledge up to this `batch_seq`.
    Stored(u64),
    /// Already stored earlier (a replay); acknowledge up to the mark.
    Duplicate(u64),
}

impl Ingested {
    /// The cumulative acknowledgement to send.
    pub fn ack(self) -> u64 {
        match self {
            Ingested::Stored(s) | Ingested::Duplicate(s) => s,
        }
    }
}

/// What an ingest-log entry's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// An encoded `sonde.v1.ResultBatch`.
    Batch,
    /// An encoded `sonde.v1.Heartbeat` (`batch_seq` holds its `seq`).
    Heartbeat,
}

impl LogKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LogKind::Batch => "batch",
            LogKind::Heartbeat => "heartbeat",
        }
    }

    /// Entries of a kind this version does not know read as `None`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "batch" => Some(LogKind::Batch),
            "heartbeat" => Some(LogKind::Heartbeat),
            _ => None,
        }
    }
}

/// One entry of the ingest log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedBatch {
    pub id: i64,
    pub kind: LogKind,
    pub tenant: String,
    pub agent: String,
    pub spool_id: u64,
    pub batch_seq: u64,
    pub received_ms: i64,
    pub results: u32,
    pub payload: Vec<u8>,
}

/// An entry's payload, decoded once for every consumer.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Batch(ResultBatch),
    Heartbeat(Heartbeat),
    /// Not decodable (not expected: the collector wrote it); consumers log
    /// and skip it.
    Undecodable(String),
}

impl Body {
    /// Decodes `payload` of `kind`.
    pub fn decode(kind: LogKind, payload: &[u8]) -> Self {
        let decoded = match kind {
            LogKind::Batch => ResultBatch::decode(payload).map(Body::Batch),
            LogKind::Heartbeat => Heartbeat::decode(payload).map(Body::Heartbeat),
        };
        decoded.unwrap_or_else(|e| Body::Undecodable(e.to_string()))
    }
}

/// One entry as consumers get it: as stored, and decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub stored: LoggedBatch,
    pub body: Body,
}

impl Entry {
    /// Decodes a stored entry.
    pub fn decode(stored: LoggedBatch) -> Self {
        let body = Body::decode(stored.kind, &stored.payload);
        Self { stored, body }
    }

    pub fn id(&self) -> i64 {
        self.stored.id
    }

    /// The agent that sent it.
    pub fn agent(&self) -> AgentKey {
        AgentKey {
            tenant: self.stored.tenant.clone(),
            name: self.stored.agent.clone(),
        }
    }
}

/// Entries handed to consumers: shared, not copied.
pub type Entries = Vec<Arc<Entry>>;

/// One append: what a session hands the writer, encoded by the session
/// (so encoding runs on every session's task, not in the one writer) and
/// decoded as the consumers will get it.
#[derive(Debug, Clone)]
pub struct Append {
    /// The row to store (`id` and `received_ms` are set when appended).
    pub row: LoggedBatch,
    pub body: Body,
}

impl Append {
    /// A result batch of `key`'s spool `spool_id`, with `results` probe
    /// results.
    pub fn batch(key: &AgentKey, spool_id: u64, batch: ResultBatch, results: u32) -> Self {
        Self {
            row: LoggedBatch {
                id: 0,
                kind: LogKind::Batch,
                tenant: key.tenant.clone(),
                agent: key.name.clone(),
                spool_id,
                batch_seq: batch.batch_seq,
                received_ms: 0,
                results,
                payload: batch.encode_to_vec(),
            },
            body: Body::Batch(batch),
        }
    }

    /// A heartbeat; its append also records it as the agent's last.
    pub fn heartbeat(key: &AgentKey, heartbeat: Heartbeat) -> Self {
        Self {
            row: LoggedBatch {
                id: 0,
                kind: LogKind::Heartbeat,
                tenant: key.tenant.clone(),
                agent: key.name.clone(),
                spool_id: 0,
                batch_seq: heartbeat.seq,
                received_ms: 0,
                results: 0,
                payload: heartbeat.encode_to_vec(),
            },
            body: Body::Heartbeat(heartbeat),
        }
    }

    /// Payload bytes, for the group's bound.
    pub fn payload_len(&self) -> usize {
        self.row.payload.len()
    }
}

/// What one append did: the acknowledgement, and the stored entry (none
/// for a replay).
#[derive(Debug, Clone)]
pub struct Appended {
    pub ingested: Ingested,
    pub entry: Option<Arc<Entry>>,
}

/// How far a consumer is behind the head of the ingest log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LogLag {
    /// Log entries (batches and heartbeats) not yet consumed.
    pub entries: u64,
    /// Probe results in them.
    pub results: u64,
    /// Receive time (Unix ms) of the oldest of them.
    pub oldest_ms: Option<i64>,
}

/// The seam between the collector and where its ingest log lives.
/// Implementations are cheap to clone; every method may wait on I/O.
pub trait IngestLog: Clone + Send + Sync + 'static {
    /// Appends `appends` in order in one durable transaction: a batch at or
    /// below its spool's mark is a replay (not stored). All or nothing.
    fn append(
        &self,
        appends: Vec<Append>,
        received_ms: i64,
    ) -> impl Future<Output = Result<Vec<Appended>, StoreError>> + Send;

    /// The highest durable `batch_seq` of an agent's spool (0 = none).
    fn spool_mark(
        &self,
        key: AgentKey,
        spool_id: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` entries after `after`, oldest first, decoded (from
    /// memory when the newest entries are still there).
    fn read_after(
        &self,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Entries, StoreError>> + Send;

    /// The head position, published after every commit: what wakes
    /// consumers.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<i64>;

    /// How far `position` is behind the head.
    fn lag(&self, position: i64) -> impl Future<Output = Result<LogLag, StoreError>> + Send;

    /// Deletes up to `limit` entries at or before `upto` received before
    /// `older_than_ms`; how many went.
    fn prune(
        &self,
        upto: i64,
        older_than_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}
