//! Host facts on the collector: a consumer of the ingest log (cursor
//! `facts`) that keeps each agent's public-IP history, its latest
//! listening ports, remote-check results and system metrics, and records
//! what changed as events: `ip-changed`, `port-opened` / `port-closed`,
//! `remote-port-opened` / `remote-port-closed`.
//!
//! It is driven by the one follow loop (`log/consumer.rs`); each chunk of
//! entries is applied in one SQLite transaction together with the cursor,
//! so a crash replays it exactly once. The latest fact of
//! each kind is stored as the record the agent sent (protobuf), so what the
//! API shows is what was measured.
//!
//! Baselines: an agent's first port snapshot and a remote check's first
//! pass record no events (everything would be "opened"); from then on each
//! difference is an event. A partial snapshot (the agent could not read a
//! socket table) is shown but not compared. A public-IP lookup changes the history only when
//! its status is `ok` (a `disagree` or `failed` lookup keeps the address);
//! the first address seen starts the history without an event. A record
//! older than the fact already stored (replayed out of order) does not
//! replace it.

pub mod json;
pub mod view;

use std::collections::BTreeMap;

use prost::Message as _;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;
use sonde_proto::v1::{
    ListeningPort, ListeningPorts, PublicIpResult, PublicIpStatus, RemoteCheckResult, record,
};

use crate::log::consumer::{CURSOR_ONLY_EVERY, Consumer};
use crate::log::{Body, Entries, Entry};
use crate::store::{self, AgentKey, EventKind, Store, StoreError};

/// The host facts' tables: public-IP history, and the latest of each
/// fact (the record as the agent sent it, protobuf).
pub const SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "facts",
    migrations: &["CREATE TABLE public_ips (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        family TEXT NOT NULL,
        address TEXT NOT NULL,
        first_ns INTEGER NOT NULL,
        last_ns INTEGER NOT NULL
    );
    CREATE INDEX public_ips_by_agent ON public_ips (tenant, agent, family, id);
    CREATE TABLE host_facts (
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        at_ns INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (tenant, agent, kind, key)
    ) WITHOUT ROWID;"],
};

/// This consumer's cursor in the ingest log.
pub const CURSOR: &str = "facts";

/// Fact kinds in `host_facts`.
pub(crate) const PORTS: &str = "ports";
pub(crate) const METRICS: &str = "metrics";
pub(crate) const REMOTE: &str = "remote-check";
pub(crate) const REMOTE_FAILED: &str = "remote-check-failed";
pub(crate) const IP_CHECK: &str = "public-ip";

/// The stored fact of `kind`/`key`: (time, body).
fn fact(
    c: &Connection,
    agent: &AgentKey,
    kind: &str,
    key: &str,
) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
    c.query_row(
        "SELECT at_ns, body FROM host_facts WHERE tenant = ?1 AND agent = ?2 AND kind = ?3 AND key = ?4",
        params![agent.tenant, agent.name, kind, key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// What storing a fact found.
enum Replaced {
    /// A newer fact is stored; this one was not.
    Older,
    /// There was none: this is the baseline.
    First,
    /// This one replaced the body here.
    Was(Vec<u8>),
}

/// Stores a fact unless a newer one is there.
fn replace_fact(
    c: &Connection,
    agent: &AgentKey,
    kind: &str,
    key: &str,
    at_ns: i64,
    body: &[u8],
) -> rusqlite::Result<Replaced> {
    let old = fact(c, agent, kind, key)?;
    if old.as_ref().is_some_and(|(t, _)| *t > at_ns) {
        return Ok(Replaced::Older);
    }
    c.execute(
        "INSERT INTO host_facts (tenant, agent, kind, key, at_ns, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant, agent, kind, key) DO UPDATE SET at_ns = ?5, body = ?6",
        params![agent.tenant, agent.name, kind, key, at_ns, body],
    )?;
    Ok(old.map_or(Replaced::First, |(_, b)| Replaced::Was(b)))
}

/// Unix nanoseconds to the API's milliseconds.
pub(crate) fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

fn public_ip(c: &Connection, agent: &AgentKey, r: &PublicIpResult) -> rusqlite::Result<()> {
    let at = r.checked_unix_nanos;
    if let Replaced::Older = replace_fact(c, agent, IP_CHECK, &r.family, at, &r.encode_to_vec())? {
        return Ok(());
    }
    if r.status() != PublicIpStatus::Ok || r.address.is_empty() {
        return Ok(());
    }
    let current: Option<(i64, String)> = c
        .query_row(
            "SELECT id, address FROM public_ips WHERE tenant = ?1 AND agent = ?2 AND family = ?3
             ORDER BY id DESC LIMIT 1",
            params![agent.tenant, agent.name, r.family],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match current {
        Some((id, address)) if address == r.address => {
            c.execute(
                "UPDATE public_ips SET last_ns = MAX(last_ns, ?2) WHERE id = ?1",
                params![id, at],
            )?;
        }
        old => {
            c.execute(
                "INSERT INTO public_ips (tenant, agent, family, address, first_ns, last_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![agent.tenant, agent.name, r.family, r.address, at],
            )?;
            if let Some((_, old)) = old {
                let sources: Vec<&str> = r
                    .answers
                    .iter()
                    .filter(|a| a.address == r.address)
                    .map(|a| a.source.as_str())
                    .collect();
                let detail = json!({
                    "family": r.family,
                    "old": old,
                    "new": r.address,
                    "sources": sources,
                });
                store::insert_event(c, ms(at), agent, EventKind::IpChanged, &detail, None)?;
            }
        }
    }
    Ok(())
}

/// The identity of a listening port across snapshots.
fn port_key(p: &ListeningPort) -> (String, String, u32) {
    (p.protocol.clone(), p.address.clone(), p.port)
}

fn ports(c: &Connection, agent: &AgentKey, snap: &ListeningPorts) -> rusqlite::Result<()> {
    let at = snap.at_unix_nanos;
    let Replaced::Was(old) = replace_fact(c, agent, PORTS, "", at, &snap.encode_to_vec())? else {
        return Ok(()); // older, or the baseline
    };
    let Ok(old) = ListeningPorts::decode(old.as_slice()) else {
        return Ok(());
    };
    // A partial snapshot (a table unreadable) would read as ports closing,
    // and the next full one as ports opening: neither is compared.
    if !snap.error.is_empty() || !old.error.is_empty() {
        return Ok(());
    }
    let before: BTreeMap<_, _> = old.ports.iter().map(|p| (port_key(p), p)).collect();
    let now: BTreeMap<_, _> = snap.ports.iter().map(|p| (port_key(p), p)).collect();
    for (key, p) in &now {
        if !before.contains_key(key) {
            store::insert_event(
                c,
                ms(at),
                agent,
                EventKind::PortOpened,
                &json::port(p),
                None,
            )?;
        }
    }
    for (key, p) in &before {
        if !now.contains_key(key) {
            store::insert_event(
                c,
                ms(at),
                agent,
                EventKind::PortClosed,
                &json::port(p),
                None,
            )?;
        }
    }
    Ok(())
}

fn remote_check(c: &Connection, agent: &AgentKey, r: &RemoteCheckResult) -> rusqlite::Result<()> {
    let at = r.started_unix_nanos;
    // A pass that could not run (the name did not resolve) says nothing
    // about the ports: kept apart to be seen, never compared.
    if r.address.is_empty() {
        replace_fact(c, agent, REMOTE_FAILED, &r.target, at, &r.encode_to_vec())?;
        return Ok(());
    }
    let old = replace_fact(c, agent, REMOTE, &r.target, at, &r.encode_to_vec())?;
    if let Replaced::Older = old {
        return Ok(());
    }
    c.execute(
        "DELETE FROM host_facts WHERE tenant = ?1 AND agent = ?2 AND kind = ?3 AND key = ?4 AND at_ns <= ?5",
        params![agent.tenant, agent.name, REMOTE_FAILED, r.target, at],
    )?;
    let Replaced::Was(old) = old else {
        return Ok(()); // the baseline
    };
    let Ok(old) = RemoteCheckResult::decode(old.as_slice()) else {
        return Ok(());
    };
    let opened: Vec<u32> = r
        .open
        .iter()
        .filter(|p| !old.open.contains(p))
        .copied()
        .collect();
    let closed: Vec<u32> = old
        .open
        .iter()
        .filter(|p| !r.open.contains(p))
        .copied()
        .collect();
    for (kind, ports) in [
        (EventKind::RemotePortOpened, opened),
        (EventKind::RemotePortClosed, closed),
    ] {
        if !ports.is_empty() {
            let detail = json!({
                "target": r.target,
                "address": r.address,
                "ports": ports,
                "open": r.open,
            });
            store::insert_event(c, ms(at), agent, kind, &detail, None)?;
        }
    }
    Ok(())
}

/// Whether [`apply`] would do anything with `entry`: most batches carry
/// only probe results, and heartbeats nothing for host facts.
fn has_facts(entry: &Entry) -> bool {
    match &entry.body {
        Body::Batch(b) => b.records.iter().any(|r| {
            matches!(
                r.kind,
                Some(
                    record::Kind::PublicIp(_)
                        | record::Kind::Ports(_)
                        | record::Kind::RemoteCheck(_)
                        | record::Kind::Metrics(_)
                )
            )
        }),
        Body::Heartbeat(_) => false,
        Body::Undecodable(_) => true,
    }
}

/// Applies one ingest-log entry inside the caller's transaction.
pub fn apply(c: &Connection, entry: &Entry) -> rusqlite::Result<()> {
    let batch = match &entry.body {
        Body::Batch(b) => b,
        Body::Heartbeat(_) => return Ok(()),
        Body::Undecodable(e) => {
            tracing::error!(id = entry.id(), error = %e, "ingest-log entry cannot be decoded; its host facts are skipped");
            return Ok(());
        }
    };
    let agent = entry.agent();
    for kind in batch.records.iter().filter_map(|r| r.kind.as_ref()) {
        match kind {
            record::Kind::PublicIp(r) => public_ip(c, &agent, r)?,
            record::Kind::Ports(p) => ports(c, &agent, p)?,
            record::Kind::RemoteCheck(r) => remote_check(c, &agent, r)?,
            record::Kind::Metrics(m) => {
                replace_fact(c, &agent, METRICS, "", m.at_unix_nanos, &m.encode_to_vec())?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The host-facts consumer: each chunk of entries with facts and the
/// cursor in one transaction; over entries without facts the cursor moves
/// at most every [`CURSOR_ONLY_EVERY`].
#[derive(Debug)]
pub struct Facts {
    store: Store,
    position: i64,
    durable: i64,
    written: tokio::time::Instant,
}

impl Facts {
    /// From its durable cursor.
    pub async fn open(store: Store) -> Result<Self, StoreError> {
        let position = store.run(|s| s.cursor(CURSOR)).await?;
        Ok(Self {
            store,
            position,
            durable: position,
            written: tokio::time::Instant::now(),
        })
    }

    async fn write_cursor(&mut self) -> Result<(), StoreError> {
        let position = self.position;
        self.store
            .run(move |s| s.set_cursor(CURSOR, position, store::now_ms()))
            .await?;
        self.durable = position;
        self.written = tokio::time::Instant::now();
        Ok(())
    }
}

impl Consumer for Facts {
    type Item = crate::log::Entry;

    async fn apply(&mut self, entries: Entries) -> Result<(), StoreError> {
        let Some(last) = entries.last().map(|e| e.id()) else {
            return Ok(());
        };
        if !entries.iter().any(|e| has_facts(e)) {
            self.position = last;
            return Ok(());
        }
        self.store
            .run(move |s| {
                s.with(|c| {
                    let tx = c.transaction()?;
                    for e in &entries {
                        apply(&tx, e)?;
                    }
                    crate::log::cursor::advance(&tx, CURSOR, last, store::now_ms())?;
                    tx.commit()
                })
            })
            .await?;
        self.position = last;
        self.durable = last;
        self.written = tokio::time::Instant::now();
        Ok(())
    }

    fn position(&self) -> i64 {
        self.position
    }

    fn durable(&self) -> i64 {
        self.durable
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        (self.position > self.durable).then(|| self.written + CURSOR_ONLY_EVERY)
    }

    async fn tick(&mut self) -> Result<(), StoreError> {
        if self.position > self.durable {
            self.write_cursor().await?;
        }
        Ok(())
    }

    async fn finish(&mut self) {
        if let Err(e) = self.tick().await {
            tracing::error!(error = %e, "host facts cannot store their cursor at shutdown; entries without facts are read again at start");
        }
    }
}

#[cfg(test)]
mod tests;
