//! The analysis' tables in the embedded store, and its checkpoint.
//!
//! A checkpoint is one transaction: bucket deltas merged additively into
//! `minute_buckets` / `hour_buckets`, new and changed `series` rows, the
//! events and outage rows produced since the last checkpoint, and the
//! analysis cursor moved past the log entries that produced them. After a
//! crash the analysis resumes from the last checkpoint, so every result is
//! counted exactly once. A checkpoint is written from what was taken out
//! of the analyzer ([`SeriesRow`]s, not the live series), so the analysis
//! goes on applying entries while it is written (`Follower` in `mod.rs`).

use rusqlite::{Connection, OptionalExtension, params};

use super::bucket::Bucket;
use super::series::{Deltas, HOUR_NS, Latest, MINUTE_NS, Series, SeriesKey};
use super::{outage, route};
use crate::log::cursor::advance;
use crate::observation::Probe;
use crate::store::{AgentKey, EventKind, insert_event};

/// The analysis' tables: series, their minute and hour aggregates,
/// outages and who is in them.
pub const SCHEMA: crate::store::Schema = crate::store::Schema {
    subsystem: "analysis",
    migrations: &[
        // 1: series, their minute and hour aggregates, outages.
        "CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        probe TEXT NOT NULL,
        target TEXT NOT NULL,
        address TEXT,
        first_ns INTEGER NOT NULL,
        last_ns INTEGER,
        last_rtt_ms REAL,
        last_status TEXT,
        outage TEXT,
        outage_group INTEGER,
        route TEXT,
        UNIQUE (tenant, agent, probe, target)
    );
    CREATE TABLE minute_buckets (
        series_id INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        probes INTEGER NOT NULL,
        lost INTEGER NOT NULL,
        sum_ms REAL NOT NULL,
        sum_sq_ms REAL NOT NULL,
        min_ms REAL,
        max_ms REAL,
        PRIMARY KEY (series_id, unit)
    ) WITHOUT ROWID;
    CREATE INDEX minute_buckets_by_unit ON minute_buckets (unit);
    CREATE TABLE hour_buckets (
        series_id INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        probes INTEGER NOT NULL,
        lost INTEGER NOT NULL,
        sum_ms REAL NOT NULL,
        sum_sq_ms REAL NOT NULL,
        min_ms REAL,
        max_ms REAL,
        PRIMARY KEY (series_id, unit)
    ) WITHOUT ROWID;
    CREATE INDEX hour_buckets_by_unit ON hour_buckets (unit);
    CREATE TABLE outages (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        tenant TEXT NOT NULL,
        subject TEXT NOT NULL,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER,
        lost INTEGER NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX outages_open ON outages (end_ns);",
        // 2: outage membership per tenant.
        MIGRATION_MEMBERS,
        // 3: series that no managed definition makes any more.
        MIGRATION_ORPHANS,
    ],
};

/// An event the analysis produced, waiting for the checkpoint.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at_ms: i64,
    pub agent: AgentKey,
    pub kind: EventKind,
    pub detail: serde_json::Value,
    /// The /24 or /64 it is about (see `store::insert_event`).
    pub prefix: Option<String>,
}

/// A change to the `outages` table, waiting for the checkpoint.
#[derive(Debug, Clone)]
pub enum OutageRow {
    Open {
        id: i64,
        scope: &'static str,
        tenant: String,
        subject: String,
        start_ns: i64,
        detail: serde_json::Value,
    },
    /// Probes lost so far by members that already recovered.
    Progress { id: i64, lost: u64 },
    Close {
        id: i64,
        end_ns: i64,
        lost: u64,
        detail: serde_json::Value,
    },
}

/// An outage still open at the last checkpoint, for the correlator.
#[derive(Debug, Clone)]
pub struct OpenOutage {
    pub id: i64,
    pub scope: String,
    /// The tenant whose correlation found it ('' before version 8).
    pub tenant: String,
    pub subject: String,
    pub start_ns: i64,
    pub lost: u64,
    /// Series that were in it.
    pub members: Vec<i64>,
}

fn bucket_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Bucket> {
    Ok(Bucket {
        probes: r.get(at)?,
        lost: r.get(at + 1)?,
        sum_ms: r.get(at + 2)?,
        sum_sq_ms: r.get(at + 3)?,
        min_ms: r.get::<_, Option<f64>>(at + 4)?.unwrap_or(0.0),
        max_ms: r.get::<_, Option<f64>>(at + 5)?.unwrap_or(0.0),
    })
}

/// Outages open at the last checkpoint, with their member series.
pub fn open_outages(c: &Connection) -> rusqlite::Result<Vec<OpenOutage>> {
    let mut stmt = c.prepare(
        "SELECT id, scope, subject, start_ns, lost, tenant FROM outages WHERE end_ns IS NULL
         ORDER BY id",
    )?;
    let mut members =
        c.prepare("SELECT series_id FROM outage_members WHERE outage_id = ?1 ORDER BY series_id")?;
    let rows: Vec<OpenOutage> = stmt
        .query_map([], |r| {
            Ok(OpenOutage {
                id: r.get(0)?,
                scope: r.get(1)?,
                tenant: r.get(5)?,
                subject: r.get(2)?,
                start_ns: r.get(3)?,
                lost: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                members: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(|mut o| {
            o.members = members
                .query_map([o.id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(o)
        })
        .collect()
}

const SERIES_COLUMNS: &str = "id, tenant, agent, probe, target, address, last_ns, last_rtt_ms,
    last_status, outage, route, orphaned_ms IS NOT NULL";

/// A `series` row as a series (empty rings) and whether it is an orphan
/// (`retire.rs`); `None` for a probe kind this version does not know.
fn series_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(Series, bool)>> {
    let Some(probe) = Probe::parse(&r.get::<_, String>(3)?) else {
        return Ok(None);
    };
    let key = SeriesKey {
        tenant: r.get(1)?,
        agent: r.get(2)?,
        probe,
        target: r.get(4)?,
    };
    let address = r.get::<_, Option<String>>(5)?.and_then(|a| a.parse().ok());
    let mut s = Series::new(r.get(0)?, key, address);
    if let Some(time_ns) = r.get::<_, Option<i64>>(6)? {
        s.latest = Some(Latest {
            time_ns,
            rtt_ms: r.get(7)?,
            status: crate::observation::status_named(
                &r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            ),
        });
    }
    let open: Option<outage::Outage> = r
        .get::<_, Option<String>>(9)?
        .and_then(|j| serde_json::from_str(&j).ok());
    s.outage = outage::Detector::resume(open);
    let path: Option<route::Path> = r
        .get::<_, Option<String>>(10)?
        .and_then(|j| serde_json::from_str(&j).ok());
    s.route = route::Detector::resume(path);
    Ok(Some((s, r.get(11)?)))
}

/// Fills the rings of `series` from the stored buckets that the windows
/// at `now_ns` can need (`one`: the id of the only series, to read just
/// its buckets).
fn fill_rings(
    c: &Connection,
    series: &mut [(Series, bool)],
    now_ns: i64,
    one: Option<i64>,
) -> rusqlite::Result<()> {
    let index: std::collections::HashMap<i64, usize> = series
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (s.id, i))
        .collect();
    for (table, from) in [
        ("minute_buckets", now_ns.div_euclid(MINUTE_NS) - 60),
        ("hour_buckets", now_ns.div_euclid(HOUR_NS) - 24),
    ] {
        // One series: its own rows by the primary key, not a scan of the
        // last hour of every series.
        let only = if one.is_some() {
            "AND series_id = ?2"
        } else {
            "AND ?2 IS NULL"
        };
        let mut stmt = c.prepare_cached(&format!(
            "SELECT series_id, unit, probes, lost, sum_ms, sum_sq_ms, min_ms, max_ms
             FROM {table} WHERE unit >= ?1 {only}"
        ))?;
        let mut rows = stmt.query(params![from, one])?;
        while let Some(r) = rows.next()? {
            let Some(&i) = index.get(&r.get::<_, i64>(0)?) else {
                continue;
            };
            let unit: i64 = r.get(1)?;
            let b = bucket_from(r, 2)?;
            let s = &mut series[i].0;
            if table == "minute_buckets" {
                s.minutes.merge(unit, &b);
            } else {
                s.hours.merge(unit, &b);
            }
        }
    }
    Ok(())
}

/// The series held in memory at start, with their rings filled from the
/// stored buckets that the windows at `now_ns` can need, their open
/// outage and route, and whether each is an orphan. A retired series
/// (an orphan without an open outage) stays in the store only.
pub fn load(c: &Connection, now_ns: i64) -> rusqlite::Result<Vec<(Series, bool)>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {SERIES_COLUMNS} FROM series
         WHERE orphaned_ms IS NULL OR outage IS NOT NULL ORDER BY id"
    ))?;
    let mut series = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        series.extend(series_row(r)?);
    }
    fill_rings(c, &mut series, now_ns, None)?;
    Ok(series)
}

/// The stored series `key` (one that left memory), as [`load`] gives it.
pub fn load_key(
    c: &Connection,
    key: &SeriesKey,
    now_ns: i64,
) -> rusqlite::Result<Option<(Series, bool)>> {
    let found = c
        .prepare_cached(&format!(
            "SELECT {SERIES_COLUMNS} FROM series
             WHERE tenant = ?1 AND agent = ?2 AND probe = ?3 AND target = ?4"
        ))?
        .query_row(
            params![key.tenant, key.agent, key.probe.as_str(), key.target],
            series_row,
        )
        .optional()?
        .flatten();
    let Some(found) = found else {
        return Ok(None);
    };
    let id = found.0.id;
    let mut one = [found];
    fill_rings(c, &mut one, now_ns, Some(id))?;
    let [found] = one;
    Ok(Some(found))
}

/// The id the next new series gets (ids of retired series stay taken).
pub fn next_series_id(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM series", [], |r| {
        r.get(0)
    })
}

/// Minute buckets of one series for units `from..=to`, oldest first.
pub fn minutes(
    c: &Connection,
    series_id: i64,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<(i64, Bucket)>> {
    let mut stmt = c.prepare_cached(
        "SELECT unit, probes, lost, sum_ms, sum_sq_ms, min_ms, max_ms FROM minute_buckets
         WHERE series_id = ?1 AND unit BETWEEN ?2 AND ?3 ORDER BY unit",
    )?;
    let rows = stmt.query_map(params![series_id, from, to], |r| {
        Ok((r.get(0)?, bucket_from(r, 1)?))
    })?;
    rows.collect()
}

/// Minute `unit` of every series that has it, by series id.
pub fn minute_of_all(
    c: &Connection,
    unit: i64,
) -> rusqlite::Result<std::collections::BTreeMap<i64, Bucket>> {
    let mut stmt = c.prepare_cached(
        "SELECT series_id, probes, lost, sum_ms, sum_sq_ms, min_ms, max_ms FROM minute_buckets
         WHERE unit = ?1",
    )?;
    let rows = stmt.query_map([unit], |r| Ok((r.get(0)?, bucket_from(r, 1)?)))?;
    rows.collect()
}

fn merge_bucket(
    c: &Connection,
    table: &str,
    id: i64,
    unit: i64,
    b: &Bucket,
) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached(&format!(
        "INSERT INTO {table} (series_id, unit, probes, lost, sum_ms, sum_sq_ms, min_ms, max_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (series_id, unit) DO UPDATE SET
            probes = probes + excluded.probes,
            lost = lost + excluded.lost,
            sum_ms = sum_ms + excluded.sum_ms,
            sum_sq_ms = sum_sq_ms + excluded.sum_sq_ms,
            min_ms = CASE WHEN excluded.min_ms IS NULL THEN min_ms
                          WHEN min_ms IS NULL THEN excluded.min_ms
                          ELSE MIN(min_ms, excluded.min_ms) END,
            max_ms = CASE WHEN excluded.max_ms IS NULL THEN max_ms
                          WHEN max_ms IS NULL THEN excluded.max_ms
                          ELSE MAX(max_ms, excluded.max_ms) END"
    ))?;
    stmt.execute(params![
        id,
        unit,
        b.probes,
        b.lost,
        b.sum_ms,
        b.sum_sq_ms,
        b.min(),
        b.max()
    ])
    .map(drop)
}

/// Outage membership of the series whose membership changed (not of
/// every series with new results).
fn write_membership(tx: &Connection, changed: &[(i64, Vec<i64>)]) -> rusqlite::Result<()> {
    let mut forget = tx.prepare_cached("DELETE FROM outage_members WHERE series_id = ?1")?;
    let mut member = tx.prepare_cached(
        "INSERT OR IGNORE INTO outage_members (outage_id, series_id) VALUES (?1, ?2)",
    )?;
    for (id, groups) in changed {
        forget.execute([id])?;
        for g in groups {
            member.execute(params![g, id])?;
        }
    }
    Ok(())
}

/// A series' row as a checkpoint writes it: taken from the book when the
/// checkpoint is, so the write needs no lock on it while the analysis
/// goes on.
#[derive(Debug, Clone)]
pub struct SeriesRow {
    id: i64,
    tenant: std::sync::Arc<str>,
    agent: std::sync::Arc<str>,
    probe: Probe,
    target: std::sync::Arc<str>,
    address: Option<std::net::IpAddr>,
    latest: Option<Latest>,
    /// The open outage and the route, as JSON (boxed: most series have
    /// neither, and a checkpoint may hold a row for every series).
    state: Option<Box<(Option<String>, Option<String>)>>,
}

impl SeriesRow {
    pub fn of(s: &Series) -> Self {
        Self {
            id: s.id,
            tenant: s.key.tenant.clone(),
            agent: s.key.agent.clone(),
            probe: s.key.probe,
            target: s.key.target.clone(),
            address: s.address,
            latest: s.latest.clone(),
            state: (s.outage.open().is_some() || s.route.path().is_some()).then(|| {
                Box::new((
                    s.outage
                        .open()
                        .map(|o| serde_json::to_string(o).unwrap_or_default()),
                    s.route
                        .path()
                        .map(|p| serde_json::to_string(p).unwrap_or_default()),
                ))
            }),
        }
    }
}

/// Writes one checkpoint (see the module docs). `membership` is each
/// series whose outage membership changed, with the outages it is in now.
#[allow(clippy::too_many_arguments)]
pub fn checkpoint(
    c: &mut Connection,
    series: &[SeriesRow],
    membership: &[(i64, Vec<i64>)],
    orphaned: &std::collections::BTreeMap<i64, Option<i64>>,
    deltas: &Deltas,
    events: &[NewEvent],
    outages: &[OutageRow],
    cursor: (&str, i64),
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO series (id, tenant, agent, probe, target, address, first_ns, last_ns,
                                 last_rtt_ms, last_status, outage, route)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (id) DO UPDATE SET address = ?6, last_ns = ?7, last_rtt_ms = ?8,
                 last_status = ?9, outage = ?10, route = ?11",
        )?;
        for s in series {
            let latest = s.latest.as_ref();
            let (outage, route) = s
                .state
                .as_deref()
                .map_or((None, None), |(o, r)| (o.as_deref(), r.as_deref()));
            upsert.execute(params![
                s.id,
                s.tenant,
                s.agent,
                s.probe.as_str(),
                s.target,
                s.address.map(|a| a.to_string()),
                latest.map(|l| l.time_ns),
                latest.and_then(|l| l.rtt_ms),
                latest.map(|l| l.status),
                outage,
                route,
            ])?;
        }
    }
    write_membership(&tx, membership)?;
    {
        let mut flag = tx.prepare_cached("UPDATE series SET orphaned_ms = ?2 WHERE id = ?1")?;
        for (id, at) in orphaned {
            flag.execute(params![id, at])?;
        }
    }
    for ((id, unit), b) in &deltas.minutes {
        merge_bucket(&tx, "minute_buckets", *id, *unit, b)?;
    }
    for ((id, unit), b) in &deltas.hours {
        merge_bucket(&tx, "hour_buckets", *id, *unit, b)?;
    }
    for e in events {
        insert_event(
            &tx,
            e.at_ms,
            &e.agent,
            e.kind,
            &e.detail,
            e.prefix.as_deref(),
        )?;
    }
    for o in outages {
        match o {
            OutageRow::Open {
                id,
                scope,
                tenant,
                subject,
                start_ns,
                detail,
            } => {
                tx.execute(
                    "INSERT INTO outages (id, scope, tenant, subject, start_ns, lost, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                    params![id, scope, tenant, subject, start_ns, detail.to_string()],
                )?;
            }
            OutageRow::Progress { id, lost } => {
                tx.execute(
                    "UPDATE outages SET lost = ?2 WHERE id = ?1",
                    params![id, i64::try_from(*lost).unwrap_or(i64::MAX)],
                )?;
            }
            OutageRow::Close {
                id,
                end_ns,
                lost,
                detail,
            } => {
                tx.execute(
                    "UPDATE outages SET end_ns = ?2, lost = ?3, detail = ?4 WHERE id = ?1",
                    params![
                        id,
                        end_ns,
                        i64::try_from(*lost).unwrap_or(i64::MAX),
                        detail.to_string()
                    ],
                )?;
            }
        }
    }
    advance(&tx, cursor.0, cursor.1, now_ms)?;
    tx.commit()
}

/// Schema 8: a series may be counted in several outages, one per tenant
/// that sees it (`correlate.rs`); `series.outage_group` is no longer used.
const MIGRATION_MEMBERS: &str = "CREATE TABLE outage_members (
        outage_id INTEGER NOT NULL,
        series_id INTEGER NOT NULL,
        PRIMARY KEY (outage_id, series_id)
    ) WITHOUT ROWID;
    CREATE INDEX outage_members_by_series ON outage_members (series_id);
    INSERT INTO outage_members (outage_id, series_id)
        SELECT outage_group, id FROM series WHERE outage_group IS NOT NULL;";

/// Schema 9: when no managed definition made the series any more
/// (`retire.rs`).
const MIGRATION_ORPHANS: &str = "ALTER TABLE series ADD COLUMN orphaned_ms INTEGER";

/// The next free outage id.
pub fn next_outage_id(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM outages", [], |r| {
        r.get(0)
    })
}

/// Deletes aggregates older than the retention, at most `limit` rows per
/// table; returns how many went.
pub fn prune(c: &Connection, older_than_ns: i64, limit: u32) -> rusqlite::Result<usize> {
    let mut n = 0;
    for (table, unit) in [
        ("minute_buckets", older_than_ns.div_euclid(MINUTE_NS)),
        ("hour_buckets", older_than_ns.div_euclid(HOUR_NS)),
    ] {
        n += c.execute(
            &format!(
                "DELETE FROM {table} WHERE (series_id, unit) IN
                    (SELECT series_id, unit FROM {table} WHERE unit < ?1 LIMIT ?2)"
            ),
            params![unit, limit],
        )?;
    }
    Ok(n)
}
