//! The read operations of the API (targets, prefixes, a prefix grid, a
//! series' history, outages), over the analysis' live state and the
//! store, always through the caller's [`Access`]. The HTTP handlers are
//! thin wrappers around these.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::consumers::analysis::bucket::Bucket;
use crate::consumers::analysis::series::{Averages, Latest, MINUTE_NS, Minute, Series};
use crate::consumers::analysis::{Book, persist};
use crate::observation::{Probe, prefix_of};
use crate::read::access::Access;
use crate::store::{AgentKey, AgentRow, EventQuery, EventRow, Store, StoreError};

/// A series with no result for this long is `stale`.
pub const STALE_NS: i64 = 600 * 1_000_000_000;

/// Why a query was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("prefix {0} is not granted to your tenant")]
    PrefixForbidden(IpNet),
    #[error("invalid {name}: {reason}")]
    Bad { name: &'static str, reason: String },
    #[error("no such series: {0}")]
    NoSeries(String),
    #[error("tenant {0:?} is not yours")]
    TenantForbidden(String),
    #[error("no such agent: {0:?}")]
    NoAgent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn bad(name: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::Bad {
        name,
        reason: reason.into(),
    }
}

/// How a series is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Answering (no open outage).
    Up,
    /// In an outage.
    Down,
    /// No result for 10 minutes.
    Stale,
    /// Never measured.
    Unknown,
}

/// How `s` is doing at `now_ns`.
pub fn state(s: &Series, now_ns: i64) -> State {
    if s.outage.open().is_some() {
        State::Down
    } else {
        match &s.latest {
            None => State::Unknown,
            Some(l) if l.time_ns < now_ns - STALE_NS => State::Stale,
            Some(_) => State::Up,
        }
    }
}

/// A target as listed.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub id: i64,
    pub tenant: String,
    pub agent: String,
    pub probe: Probe,
    pub target: String,
    pub address: Option<String>,
    pub prefix: Option<String>,
    pub state: State,
    /// Start of the open outage (Unix ms).
    pub down_since_ms: Option<i64>,
    pub averages: Averages,
}

/// A series as the targets list shows it.
pub fn target_view(s: &Series, now_ns: i64) -> TargetView {
    TargetView {
        id: s.id,
        tenant: s.key.tenant.to_string(),
        agent: s.key.agent.to_string(),
        probe: s.key.probe,
        target: s.key.target.to_string(),
        address: s.address.map(|a| a.to_string()),
        prefix: s.address.map(|a| prefix_of(a).to_string()),
        state: state(s, now_ns),
        down_since_ms: s.outage.open().map(|o| o.start_ns.div_euclid(1_000_000)),
        averages: s.averages(now_ns),
    }
}

/// Filters of the targets list.
#[derive(Debug, Clone, Default)]
pub struct TargetFilter {
    pub agent: Option<String>,
    pub probe: Option<Probe>,
    pub prefix: Option<IpNet>,
    /// Only ids above this (pagination).
    pub after: i64,
    pub limit: usize,
}

/// Visible targets matching `f`, by id; and the `after` of the next page.
pub fn targets(
    book: &Book,
    access: &Access,
    f: &TargetFilter,
    now_ns: i64,
) -> (Vec<TargetView>, Option<i64>) {
    let mut out = Vec::new();
    let mut more = false;
    for s in book.after(f.after) {
        if !access.sees_series(s)
            || f.agent.as_ref().is_some_and(|a| **a != *s.key.agent)
            || f.probe.is_some_and(|p| p != s.key.probe)
            || f.prefix
                .is_some_and(|p| !s.address.is_some_and(|a| p.contains(&a)))
        {
            continue;
        }
        if out.len() == f.limit {
            more = true;
            break;
        }
        out.push(target_view(s, now_ns));
    }
    let next = if more { out.last().map(|t| t.id) } else { None };
    (out, next)
}

/// The one visible series of `tenant/agent → target` (of kind `probe`
/// when given); one that exists but is not visible reads as absent.
pub fn find_series(
    book: &Book,
    access: &Access,
    tenant: &str,
    agent: &str,
    target: &str,
    probe: Option<Probe>,
) -> Result<Series, QueryError> {
    let what = format!("agent {agent:?} of {tenant:?} to {target:?}");
    let mut matching = book.iter().filter(|s| {
        *s.key.tenant == *tenant
            && *s.key.agent == *agent
            && *s.key.target == *target
            && probe.is_none_or(|p| p == s.key.probe)
            && access.sees_series(s)
    });
    match (matching.next(), matching.next()) {
        (Some(s), None) => Ok(s.clone()),
        (Some(_), Some(_)) => Err(bad(
            "probe",
            format!("{what} has several probe kinds; give probe=ping|tcp|trace"),
        )),
        (None, _) => Err(QueryError::NoSeries(what)),
    }
}

/// A prefix as listed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrefixView {
    pub prefix: String,
    /// Addresses with at least one visible series.
    pub monitored: usize,
    /// Addresses whose every series is down.
    pub down: usize,
    pub series: usize,
}

/// The /24s (/64s) the caller may see: every one holding a visible
/// series, and every granted prefix of /24 (/64) or longer even before
/// it has data.
pub fn prefixes(book: &Book, access: &Access) -> Vec<PrefixView> {
    let mut per: BTreeMap<IpNet, BTreeMap<IpAddr, (usize, usize)>> = BTreeMap::new();
    let mut series = BTreeMap::<IpNet, usize>::new();
    for s in book.iter().filter(|s| access.sees_series(s)) {
        let Some(a) = s.address else { continue };
        let p = prefix_of(a);
        let e = per.entry(p).or_default().entry(a).or_default();
        e.0 += 1;
        e.1 += usize::from(s.outage.open().is_some());
        *series.entry(p).or_default() += 1;
    }
    for p in granted_units(access) {
        per.entry(p).or_default();
    }
    per.into_iter()
        .map(|(p, hosts)| PrefixView {
            prefix: p.to_string(),
            monitored: hosts.len(),
            down: hosts.values().filter(|(n, d)| n == d).count(),
            series: series.get(&p).copied().unwrap_or(0),
        })
        .collect()
}

/// The /24s (/64s) that granted prefixes of /24 (/64) or longer lie in:
/// shown even before they have data.
pub fn granted_units(access: &Access) -> impl Iterator<Item = IpNet> + '_ {
    access.grants().iter().filter_map(|g| {
        let unit = if g.addr().is_ipv4() { 24 } else { 64 };
        (g.prefix_len() >= unit).then(|| prefix_of(g.addr()))
    })
}

/// An address' state from its series' states: `down` when all are down,
/// `partial` when some are, `stale` when none has a recent result, else
/// `up`.
pub fn cell_state(states: &[State]) -> &'static str {
    if states.iter().all(|s| *s == State::Down) {
        "down"
    } else if states.contains(&State::Down) {
        "partial"
    } else if states
        .iter()
        .all(|s| matches!(s, State::Stale | State::Unknown))
    {
        "stale"
    } else {
        "up"
    }
}

/// The series of one address that describe it: its ping series when it
/// has any, else all.
pub fn describing<'a>(series: &[&'a Series]) -> Vec<&'a Series> {
    let pings: Vec<&Series> = series
        .iter()
        .copied()
        .filter(|s| s.key.probe == Probe::Ping)
        .collect();
    if pings.is_empty() {
        series.to_vec()
    } else {
        pings
    }
}

/// One address of a grid.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub address: String,
    pub monitored: bool,
    /// `up` when all its series are up, `down` when all are down,
    /// `partial` in between (some agents cannot reach it), `stale`.
    pub state: Option<&'static str>,
    pub latest: Option<Latest>,
    /// Over the current and previous minute, all its series together.
    pub mean_ms_1m: Option<f64>,
    pub loss_pct_1m: Option<f64>,
    /// Series measuring it, and how many of them are down (which ones:
    /// `/api/v1/targets?prefix=ADDRESS/32`).
    pub series: u32,
    pub series_down: u32,
    /// 60 minutes, all its series merged (ping series when it has any).
    /// In JSON as parallel arrays (see [`compact`]): a grid of 256 cells
    /// stays small enough to refresh every few seconds.
    #[serde(serialize_with = "compact", skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Minute>,
}

/// A timeline as `{"start_ms", "step_ms", "probes": [..], "mean_ms": [..],
/// "loss_pct": [..]}`, oldest first; a minute with no data has 0 probes
/// and `null` mean and loss (never zeros). Times in ms rounded to µs.
/// Milliseconds rounded to µs, as every time in the API.
pub fn round_us(v: Option<f64>) -> Option<f64> {
    v.map(|x| (x * 1000.0).round() / 1000.0)
}

fn compact<S: serde::Serializer>(timeline: &[Minute], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let round = round_us;
    let mut m = s.serialize_map(Some(5))?;
    m.serialize_entry("start_ms", &timeline.first().map_or(0, |t| t.start_ms))?;
    m.serialize_entry("step_ms", &(MINUTE_NS / 1_000_000))?;
    m.serialize_entry(
        "probes",
        &timeline.iter().map(|t| t.probes).collect::<Vec<_>>(),
    )?;
    m.serialize_entry(
        "mean_ms",
        &timeline
            .iter()
            .map(|t| round(t.mean_ms))
            .collect::<Vec<_>>(),
    )?;
    m.serialize_entry(
        "loss_pct",
        &timeline
            .iter()
            .map(|t| round(t.loss_pct))
            .collect::<Vec<_>>(),
    )?;
    m.end()
}

/// A prefix grid.
#[derive(Debug, Clone, Serialize)]
pub struct Grid {
    pub prefix: String,
    pub monitored: usize,
    pub cells: Vec<Cell>,
}

/// Parses a grid prefix: an IPv4 /24 or IPv6 /64 network address.
pub fn parse_prefix(raw: &str) -> Result<IpNet, QueryError> {
    let p: IpNet = raw.parse().map_err(|_| {
        bad(
            "prefix",
            format!("{raw:?} is not a CIDR prefix such as 10.1.2.0/24"),
        )
    })?;
    let unit = if p.addr().is_ipv4() { 24 } else { 64 };
    if p.prefix_len() != unit {
        return Err(bad(
            "prefix",
            format!("{p}: grids are /24 (IPv4) or /64 (IPv6)"),
        ));
    }
    if p.trunc() != p {
        return Err(bad(
            "prefix",
            format!("{p} has host bits set; did you mean {}?", p.trunc()),
        ));
    }
    Ok(p)
}

/// Whether the caller may open the grid of `prefix`: part of it is granted,
/// or it sees a series in it (its own agents measure there).
pub fn may_view_prefix(book: &Book, access: &Access, prefix: &IpNet) -> bool {
    access.granted_prefix(prefix)
        || book
            .in_prefix(prefix)
            .any(|s| s.address.is_some_and(|a| prefix.contains(&a)) && access.sees_series(s))
}

/// The grid of `prefix`: 256 cells for an IPv4 /24, the monitored
/// addresses for an IPv6 /64.
pub fn grid(book: &Book, access: &Access, prefix: IpNet, now_ns: i64) -> Result<Grid, QueryError> {
    if !may_view_prefix(book, access, &prefix) {
        return Err(QueryError::PrefixForbidden(prefix));
    }
    let mut by_addr: BTreeMap<IpAddr, Vec<&Series>> = BTreeMap::new();
    for s in book.iter() {
        if let Some(a) = s
            .address
            .filter(|a| prefix.contains(a) && access.sees_series(s))
        {
            by_addr.entry(a).or_default().push(s);
        }
    }
    let addresses: Vec<IpAddr> = match prefix {
        IpNet::V4(p) => (0u8..=255)
            .map(|last| {
                let mut o = p.network().octets();
                o[3] = last;
                IpAddr::from(o)
            })
            .collect(),
        IpNet::V6(_) => by_addr.keys().copied().collect(),
    };
    let cells: Vec<Cell> = addresses
        .into_iter()
        .map(|a| cell(a, by_addr.get(&a), now_ns))
        .collect();
    Ok(Grid {
        prefix: prefix.to_string(),
        monitored: by_addr.len(),
        cells,
    })
}

fn cell(address: IpAddr, series: Option<&Vec<&Series>>, now_ns: i64) -> Cell {
    let Some(series) = series.filter(|s| !s.is_empty()) else {
        return Cell {
            address: address.to_string(),
            monitored: false,
            state: None,
            latest: None,
            mean_ms_1m: None,
            loss_pct_1m: None,
            series: 0,
            series_down: 0,
            timeline: Vec::new(),
        };
    };
    let states: Vec<State> = series.iter().map(|s| state(s, now_ns)).collect();
    let cell_state = cell_state(&states);
    let merged = describing(series);
    // Merged from the buckets: means and losses do not average.
    let m = now_ns.div_euclid(MINUTE_NS);
    let mut last_minute = Bucket::default();
    for s in &merged {
        last_minute.merge(&s.minutes.get(m - 1));
        last_minute.merge(&s.minutes.get(m));
    }
    let timeline: Vec<Minute> = (m - 59..=m)
        .map(|unit| {
            let mut b = Bucket::default();
            for s in &merged {
                b.merge(&s.minutes.get(unit));
            }
            Minute::of(unit, &b)
        })
        .collect();
    let latest = merged
        .iter()
        .filter_map(|s| s.latest.clone())
        .max_by_key(|l| l.time_ns);
    Cell {
        address: address.to_string(),
        monitored: true,
        state: Some(cell_state),
        latest,
        mean_ms_1m: last_minute.mean_ms(),
        loss_pct_1m: last_minute.loss_pct(),
        series: u32::try_from(series.len()).unwrap_or(u32::MAX),
        series_down: u32::try_from(states.iter().filter(|s| **s == State::Down).count())
            .unwrap_or(u32::MAX),
        timeline,
    }
}

/// One minute of a series' history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    pub start_ms: i64,
    pub probes: u32,
    pub lost: u32,
    pub mean_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub loss_pct: Option<f64>,
}

/// Longest history one request may ask for.
pub const MAX_HISTORY_MS: i64 = 7 * 86_400_000;

/// Checks a history range (Unix ms).
/// The time range of a history query, the same for the HTTP API and gRPC:
/// `to` defaults to now and `from` to a day before `to` (never before the
/// epoch); both must be at or after it, `from` before `to`, at most 7 days
/// apart.
pub fn range(
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    now_ms: i64,
) -> Result<(i64, i64), QueryError> {
    let to = to_ms.unwrap_or(now_ms);
    if to < 0 {
        return Err(bad("to", format!("{to} is before 1970")));
    }
    let from = from_ms.unwrap_or((to - 86_400_000).max(0));
    if from < 0 {
        return Err(bad("from", format!("{from} is before 1970")));
    }
    check_range(from, to)?;
    Ok((from, to))
}

pub fn check_range(from_ms: i64, to_ms: i64) -> Result<(), QueryError> {
    if from_ms >= to_ms {
        return Err(bad("from", format!("{from_ms} is not before to = {to_ms}")));
    }
    if to_ms - from_ms > MAX_HISTORY_MS {
        return Err(bad("from", "the range may span at most 7 days"));
    }
    Ok(())
}

/// History of one series between `from_ms` and `to_ms` (checked with
/// [`check_range`]) in steps of `step_minutes` minutes (1 = the stored
/// minutes; 5, 60: merged from them, as the analysis merges buckets);
/// steps without results are absent.
pub fn history(
    store: &Store,
    series: &Series,
    from_ms: i64,
    to_ms: i64,
    step_minutes: i64,
) -> Result<Vec<HistoryPoint>, StoreError> {
    let ms_per_minute = MINUTE_NS / 1_000_000;
    let step = step_minutes.max(1);
    let (from, to) = (
        from_ms.div_euclid(ms_per_minute),
        to_ms.div_euclid(ms_per_minute),
    );
    let id = series.id;
    let rows = store.with_read(|c| persist::minutes(c, id, from, to))?;
    let mut steps: BTreeMap<i64, Bucket> = BTreeMap::new();
    for (unit, b) in rows {
        steps
            .entry(unit.div_euclid(step) * step)
            .or_default()
            .merge(&b);
    }
    Ok(steps
        .into_iter()
        .map(|(unit, b)| HistoryPoint {
            start_ms: unit * ms_per_minute,
            probes: b.probes,
            lost: b.lost,
            mean_ms: b.mean_ms(),
            min_ms: b.min(),
            max_ms: b.max(),
            jitter_ms: b.stddev_ms(),
            loss_pct: b.loss_pct(),
        })
        .collect())
}

/// An outage as listed.
#[derive(Debug, Clone, Serialize)]
pub struct OutageView {
    pub id: i64,
    /// The tenant whose correlation found it (operators see every
    /// tenant's; empty for outages recorded before 0.2).
    pub tenant: String,
    pub scope: String,
    pub subject: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub duration_s: Option<f64>,
    pub lost: i64,
    pub detail: serde_json::Value,
}

/// An `outages` row: id, scope, tenant, subject, start, end, lost, detail.
type OutageRowData = (i64, String, String, String, i64, Option<i64>, i64, String);

/// Outages visible to the caller, newest first: agent and path outages of
/// its tenant, prefix and target outages inside its grants.
pub fn outages(
    store: &Store,
    access: &Access,
    open_only: bool,
    limit: u32,
) -> Result<Vec<OutageView>, StoreError> {
    let rows: Vec<OutageRowData> = store.with_read(|c| {
        let mut stmt = c.prepare(
            "SELECT id, scope, tenant, subject, start_ns, end_ns, lost, detail FROM outages
             WHERE (?1 = 0 OR end_ns IS NULL) ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([i64::from(open_only)], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        rows.collect()
    })?;
    // Each outage belongs to the tenant whose correlation found it (see
    // `analysis::correlate`); rows of older versions without one are the
    // operators'.
    Ok(rows
        .into_iter()
        .filter(|(_, _, tenant, ..)| access.all || *tenant == access.tenant)
        .take(limit as usize)
        .map(
            |(id, scope, tenant, subject, start_ns, end_ns, lost, detail)| {
                #[allow(clippy::cast_precision_loss)]
                OutageView {
                    id,
                    tenant,
                    scope,
                    subject,
                    start_ms: start_ns.div_euclid(1_000_000),
                    end_ms: end_ns.map(|e| e.div_euclid(1_000_000)),
                    duration_s: end_ns.map(|e| (e - start_ns) as f64 / 1e9),
                    lost,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                }
            },
        )
        .collect())
}

/// Events visible to the caller, oldest first (newest first with
/// `before_id`): its tenant's, and those about a prefix it is granted
/// (another tenant's agent saw a shared target go down). Pages are read
/// until `limit` visible events or the end of the log; returns them and
/// the `after` (`before`) for the next page.
pub fn events(
    store: &Store,
    access: &Access,
    mut q: EventQuery,
) -> Result<(Vec<EventRow>, i64), StoreError> {
    let limit = q.limit as usize;
    q.with_prefixes = !access.all;
    let mut out: Vec<EventRow> = Vec::new();
    loop {
        let page = store.events(&access.scope(), &q)?;
        let full = page.len() == q.limit as usize;
        for e in page {
            if q.before_id.is_some() {
                q.before_id = Some(e.id);
            } else {
                q.after_id = e.id;
            }
            let visible = access.sees_event(&e);
            if visible {
                out.push(e);
                if out.len() == limit {
                    return Ok((out, q.before_id.unwrap_or(q.after_id)));
                }
            }
        }
        if !full {
            return Ok((out, q.before_id.unwrap_or(q.after_id)));
        }
    }
}

/// One agent with its host facts: `name` in the caller's tenant, or for
/// an operator in `tenant` (needed only when several tenants have an
/// agent of that name).
/// The agent `name` the caller sees (of `tenant` when given; when several
/// tenants it sees have one of that name, it must say which).
pub fn find_agent(
    store: &Store,
    access: &Access,
    name: &str,
    tenant: Option<&str>,
) -> Result<AgentRow, QueryError> {
    if let Some(t) = tenant
        && !access.sees_tenant(t)
    {
        return Err(QueryError::TenantForbidden(t.to_owned()));
    }
    let mut rows: Vec<AgentRow> = store
        .agents(&access.scope())?
        .into_iter()
        .filter(|a| a.name == name && tenant.is_none_or(|t| a.tenant == t))
        .collect();
    match rows.len() {
        0 => Err(QueryError::NoAgent(name.to_owned())),
        1 => Ok(rows.remove(0)),
        _ => {
            let tenants: Vec<&str> = rows.iter().map(|a| a.tenant.as_str()).collect();
            Err(bad(
                "tenant",
                format!(
                    "agent {name:?} exists in tenants {}; name one",
                    tenants.join(", ")
                ),
            ))
        }
    }
}

pub fn agent_detail(
    store: &Store,
    access: &Access,
    name: &str,
    tenant: Option<&str>,
) -> Result<serde_json::Value, QueryError> {
    let row = find_agent(store, access, name, tenant)?;
    let key = AgentKey {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
    };
    let mut detail = crate::consumers::facts::view::facts_of(store, &key)?;
    detail["agent"] = serde_json::to_value(row).unwrap_or_default();
    Ok(detail)
}
