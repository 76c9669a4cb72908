//! Correlation: per-series outages grouped into the outage an operator
//! should hear about, one event per cause instead of one per series.
//!
//! A series whose outage has lasted `settle` (by the agents' clocks) is
//! attributed, in this order, to:
//!
//! 1. **agent network** — its agent has at least `agent-min` series down
//!    and they are at least `agent-share` of the agent's active series:
//!    the agent lost its network, not its targets;
//! 2. **prefix** — among the monitored hosts of its /24 (/64), counting
//!    only agents not in an agent-network outage, at least `prefix-min`
//!    are down (every active series to them down) and they are at least
//!    `prefix-share` of the prefix's hosts;
//! 3. **target** — at least `target-agents` agents see it down, or every
//!    agent that probes it does;
//! 4. otherwise **path**: one agent cannot reach one target that others
//!    can.
//!
//! **Each tenant correlates on its own** (`access.rs`): a series counts in
//! the correlation of every tenant that sees it — its agent's tenant, and
//! the tenants granted its address that trust that agent's tenant — and
//! only there. An outage belongs to that tenant (the `tenant` of its row
//! and events), so measurements by a tenant's untrusted neighbours never
//! make, join or widen its outages, and the same cause seen by two
//! tenants is two outages, one each.
//!
//! A series joins the open outage of its cause when there is one (a
//! spreading outage stays one event); an outage ends when its last series
//! recovered, dated by the last recovery, with the probes lost by all of
//! them. "Active" means a result within the last `active` window. An agent
//! that is missing sends no results, so it raises "agent missing" (the
//! liveness detector) and no outages; when it comes back, what it spooled
//! is analysed in send-time order like everything else.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;

use super::Book;
use super::outage::Outage;
use super::persist::{NewEvent, OpenOutage, OutageRow};
use super::series::Series;
use crate::observation::prefix_of;
use crate::read::access::Tenancy;
use crate::store::{AgentKey, EventKind};

/// Correlation thresholds (`[analysis.correlation]`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Thresholds {
    /// Share of an agent's active series down that makes it the agent's
    /// network (0–1) …
    #[serde(default = "default_agent_share")]
    pub agent_share: f64,
    /// … when at least this many are down.
    #[serde(default = "default_min")]
    pub agent_min: usize,
    /// Agents that must see a target down to blame the target.
    #[serde(default = "default_target_agents")]
    pub target_agents: usize,
    /// Share of a prefix's monitored hosts down that makes it a prefix
    /// outage (0–1) …
    #[serde(default = "default_prefix_share")]
    pub prefix_share: f64,
    /// … when at least this many hosts are down.
    #[serde(default = "default_min")]
    pub prefix_min: usize,
    /// How long a series must be down before it is attributed, measured
    /// on the send times of the slowest agent still reporting (so an
    /// agent's results are not judged before the others' batches arrive).
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// A series with no result for this long is not counted as monitored.
    #[serde(default = "default_active", with = "humantime_serde")]
    pub active: Duration,
}

fn default_agent_share() -> f64 {
    0.8
}
fn default_min() -> usize {
    3
}
fn default_target_agents() -> usize {
    2
}
fn default_prefix_share() -> f64 {
    0.5
}
fn default_settle() -> Duration {
    Duration::from_secs(10)
}
fn default_active() -> Duration {
    Duration::from_secs(600)
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            agent_share: default_agent_share(),
            agent_min: default_min(),
            target_agents: default_target_agents(),
            prefix_share: default_prefix_share(),
            prefix_min: default_min(),
            settle: default_settle(),
            active: default_active(),
        }
    }
}

/// What an outage is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    AgentNetwork(AgentKey),
    Prefix(IpNet),
    Target(String),
    Path(i64),
}

impl Cause {
    pub fn scope(&self) -> &'static str {
        match self {
            Cause::AgentNetwork(_) => "agent-network",
            Cause::Prefix(_) => "prefix",
            Cause::Target(_) => "target",
            Cause::Path(_) => "path",
        }
    }
}

/// Who sees a target down when its outage opens: the agents whose series
/// of it are down, and how many series of it are monitored.
struct Witnesses {
    failing: BTreeSet<String>,
    probing: usize,
}

/// An outage being reported.
#[derive(Debug, Clone)]
struct Group {
    id: i64,
    start_ns: i64,
    members: HashSet<i64>,
    /// Every series that was ever a member (for the end event).
    seen: BTreeSet<i64>,
    /// Probes lost by the members that have left (recovered).
    lost: u64,
    /// The count last written to the store: `lost` plus what the members
    /// still down have lost so far.
    reported: u64,
    end_ns: i64,
    /// The agent the events are filed under.
    agent: AgentKey,
    /// The prefix its events name (none for an agent's network).
    prefix: Option<String>,
}

/// An outage's identity: the tenant whose correlation found it, and its
/// cause.
type Key = (String, Cause);

/// The correlator's state.
#[derive(Debug, Default)]
pub struct Correlator {
    groups: HashMap<Key, Group>,
    /// The outages a series is counted in: at most one per tenant.
    member_of: HashMap<i64, Vec<Key>>,
    /// Series down and not yet attributed.
    pending: BTreeSet<i64>,
    next_id: i64,
    tenancy: Arc<Tenancy>,
}

/// What one evaluation produced.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<NewEvent>,
    pub rows: Vec<OutageRow>,
    /// Series whose outage membership changed (to persist).
    pub changed: Vec<i64>,
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

fn agent_of(s: &Series) -> AgentKey {
    AgentKey {
        tenant: s.key.tenant.to_string(),
        name: s.key.agent.to_string(),
    }
}

/// The target a series is about, for grouping across agents: its address
/// when it has one, else its target string.
fn subject(s: &Series) -> String {
    s.address
        .map_or_else(|| s.key.target.to_string(), |a: IpAddr| a.to_string())
}

impl Correlator {
    /// A correlator whose outage ids continue after `next_id - 1`.
    pub fn new(next_id: i64) -> Self {
        Self {
            next_id,
            ..Self::default()
        }
    }

    /// Uses `tenancy` from now on (a reload). Series down now are looked
    /// at again, so a tenant that newly sees them (it was granted their
    /// prefix or came to trust their agent) gets its outage at once, not
    /// at their next failure; open outages keep their members until they
    /// recover.
    pub fn set_tenancy(&mut self, tenancy: Arc<Tenancy>, book: &Book) {
        self.tenancy = tenancy;
        self.pending.extend(
            book.iter()
                .filter(|s| s.outage.open().is_some())
                .map(|s| s.id),
        );
    }

    /// Whether nothing is tracked (tests: nothing is left behind).
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.groups.is_empty() && self.member_of.is_empty() && self.pending.is_empty()
    }

    /// A series' outage started.
    pub fn down(&mut self, id: i64) {
        self.pending.insert(id);
    }

    /// A series' outage ended. An outage shorter than `settle` is
    /// attributed now (it was real, only brief).
    pub fn up(
        &mut self,
        book: &Book,
        t: &Thresholds,
        now_ns: i64,
        id: i64,
        ended: &Outage,
        out: &mut Output,
    ) {
        if self.pending.contains(&id) {
            self.attribute(book, t, now_ns, &[id], out);
        }
        for key in self.member_of.remove(&id).unwrap_or_default() {
            self.leave(book, &key, id, ended, out);
        }
    }

    /// Series `id` leaves memory (`retire.rs`): it is not attributed any
    /// more, and leaves its outages as if it recovered with `ended`.
    pub fn forget(&mut self, book: &Book, id: i64, ended: &Outage, out: &mut Output) {
        self.pending.remove(&id);
        for key in self.member_of.remove(&id).unwrap_or_default() {
            self.leave(book, &key, id, ended, out);
        }
    }

    /// Series `id` recovered: it leaves the outage `key`, which ends when
    /// it was the last member.
    fn leave(&mut self, book: &Book, key: &Key, id: i64, ended: &Outage, out: &mut Output) {
        let Some(g) = self.groups.get_mut(key) else {
            return;
        };
        g.members.remove(&id);
        g.lost += ended.lost;
        g.end_ns = g.end_ns.max(ended.end_ns.unwrap_or(ended.start_ns));
        out.changed.push(id);
        if !g.members.is_empty() {
            g.report(book, out);
            return;
        }
        let g = self.groups.remove(key).expect("present");
        let cause = &key.1;
        #[allow(clippy::cast_precision_loss)]
        let duration_s = (g.end_ns - g.start_ns) as f64 / 1e9;
        let detail = json!({
            "outage": g.id,
            "scope": cause.scope(),
            "subject": describe(cause, book),
            "prefix": g.prefix,
            "start_ms": ms(g.start_ns),
            "end_ms": ms(g.end_ns),
            "duration_s": duration_s,
            "lost": g.lost,
            "series": g.seen.len(),
        });
        out.rows.push(OutageRow::Close {
            id: g.id,
            end_ns: g.end_ns,
            lost: g.lost,
            detail: detail.clone(),
        });
        out.events.push(NewEvent {
            at_ms: ms(g.end_ns),
            agent: g.agent,
            kind: EventKind::OutageEnd,
            detail,
            prefix: None,
        });
    }

    /// Attributes the series that have been down for `settle` at `now_ns`.
    pub fn evaluate(&mut self, book: &Book, t: &Thresholds, now_ns: i64, out: &mut Output) {
        let settle = i64::try_from(t.settle.as_nanos()).unwrap_or(i64::MAX);
        let ready: Vec<i64> = self
            .pending
            .iter()
            .copied()
            .filter(|id| {
                book.by_id(*id)
                    .and_then(|s| s.outage.open())
                    .is_none_or(|o| o.start_ns.saturating_add(settle) <= now_ns)
            })
            .collect();
        if !ready.is_empty() {
            self.attribute(book, t, now_ns, &ready, out);
        }
    }

    /// Attributes the series `ids` in the correlation of every tenant
    /// that sees them (see the module docs).
    fn attribute(
        &mut self,
        book: &Book,
        t: &Thresholds,
        now_ns: i64,
        ids: &[i64],
        out: &mut Output,
    ) {
        let mut per_tenant: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for id in ids {
            self.pending.remove(id);
            let Some(s) = book.by_id(*id) else { continue };
            let joined = self.member_of.get(id);
            for d in self.tenancy.audience(&s.key.tenant, s.address) {
                if !joined.is_some_and(|k| k.iter().any(|(t, _)| *t == d)) {
                    per_tenant.entry(d).or_default().push(*id);
                }
            }
        }
        for (tenant, ids) in per_tenant {
            self.attribute_for(book, t, now_ns, &tenant, &ids, out);
        }
    }

    /// Attributes the series `ids` in `tenant`'s correlation, counting
    /// only the series that tenant sees. `now_ns` is the newest send time
    /// analysed, what "active" is measured from. Only the series of the
    /// agents and prefixes involved are looked at.
    fn attribute_for(
        &mut self,
        book: &Book,
        t: &Thresholds,
        now_ns: i64,
        tenant: &str,
        ids: &[i64],
        out: &mut Output,
    ) {
        let tenancy = self.tenancy.clone();
        let seen = |s: &Series| tenancy.sees(tenant, &s.key.tenant, s.address);
        let active_ns = i64::try_from(t.active.as_nanos()).unwrap_or(i64::MAX);
        let active = |s: &Series| {
            s.latest
                .as_ref()
                .is_some_and(|l| l.time_ns >= now_ns.saturating_sub(active_ns))
        };
        let down = |s: &Series| s.outage.open().is_some();
        let mut left: Vec<&Series> = ids.iter().filter_map(|id| book.by_id(*id)).collect();

        // 1. Agent network: judged on all of the agent's series (its
        // tenant is trusted here, or none of them would be), since a cut
        // agent loses everything it probes, not only what this tenant sees.
        let agents: BTreeSet<AgentKey> = left.iter().map(|s| agent_of(s)).collect();
        let mut cut_agents = HashSet::new();
        for a in agents {
            let (monitored, failing) =
                count_down(book.of_agent(&a).filter(|s| active(s) || down(s)), down);
            #[allow(clippy::cast_precision_loss)]
            let share = failing as f64 / monitored.max(1) as f64;
            if failing >= t.agent_min && share >= t.agent_share {
                cut_agents.insert(a.clone());
                let (hit, rest): (Vec<_>, Vec<_>) =
                    left.into_iter().partition(|s| agent_of(s) == a);
                left = rest;
                self.join(tenant, Cause::AgentNetwork(a), &hit, None, book, out);
            }
        }
        let counted =
            |s: &Series| seen(s) && !cut_agents.contains(&agent_of(s)) && (active(s) || down(s));

        // 2. Prefix: every series of a host lives in the host's prefix.
        let prefixes: BTreeSet<IpNet> = left
            .iter()
            .filter_map(|s| s.address.map(prefix_of))
            .collect();
        for p in prefixes {
            let mut hosts: HashMap<IpAddr, (usize, usize)> = HashMap::new();
            for s in book.in_prefix(&p).filter(|s| counted(s)) {
                if let Some(a) = s.address.filter(|a| p.contains(a)) {
                    let e = hosts.entry(a).or_default();
                    e.0 += 1;
                    e.1 += usize::from(down(s));
                }
            }
            let down_hosts = hosts.values().filter(|(n, d)| n == d).count();
            #[allow(clippy::cast_precision_loss)]
            let share = down_hosts as f64 / hosts.len().max(1) as f64;
            if down_hosts >= t.prefix_min && share >= t.prefix_share {
                let (hit, rest): (Vec<_>, Vec<_>) = left
                    .into_iter()
                    .partition(|s| s.address.is_some_and(|a| p.contains(&a)));
                left = rest;
                self.join(tenant, Cause::Prefix(p), &hit, None, book, out);
            }
        }

        // 3. Target, else 4. path. The other agents probing the same
        // address are in its prefix; a target without an address is
        // compared across every series of its kind.
        for s in left {
            let subj = subject(s);
            let same = |o: &&Series| counted(o) && o.key.probe == s.key.probe && subject(o) == subj;
            let peers: Vec<&Series> = match s.address {
                Some(a) => book.in_prefix(&prefix_of(a)).filter(same).collect(),
                None => book.iter().filter(same).collect(),
            };
            let failing: BTreeSet<String> = peers
                .iter()
                .filter(|o| down(o))
                .map(|o| agent_of(o).to_string())
                .collect();
            let probing = peers.len();
            if failing.len() >= t.target_agents || failing.len() == probing {
                // Named by the agents that see it down now, not only by
                // the series that settled first.
                let seen_by = Witnesses { failing, probing };
                self.join(tenant, Cause::Target(subj), &[s], Some(seen_by), book, out);
            } else {
                self.join(tenant, Cause::Path(s.id), &[s], None, book, out);
            }
        }
    }

    /// Puts the series `hit` into the outage of `cause`, opening it when
    /// new. `seen_by` (a target's outage) names every agent that sees the
    /// target down at that moment, settled or not, and how many probe it.
    #[allow(clippy::needless_pass_by_value)]
    fn join(
        &mut self,
        tenant: &str,
        cause: Cause,
        hit: &[&Series],
        seen_by: Option<Witnesses>,
        book: &Book,
        out: &mut Output,
    ) {
        if hit.is_empty() {
            return;
        }
        let start = hit
            .iter()
            .filter_map(|s| s.outage.open().map(|o| o.start_ns))
            .min()
            .unwrap_or(0);
        let key: Key = (tenant.to_owned(), cause);
        let cause = &key.1;
        if !self.groups.contains_key(&key) {
            let id = self.next_id;
            self.next_id += 1;
            // Filed under one of the tenant's own agents when it has one
            // in the outage, else the first (trusted) agent.
            let by = hit
                .iter()
                .find(|s| *s.key.tenant == *tenant)
                .unwrap_or(&hit[0]);
            let agent = AgentKey {
                tenant: tenant.to_owned(),
                name: by.key.agent.to_string(),
            };
            let prefix = event_prefix(cause, book);
            let targets: BTreeSet<&str> = hit.iter().map(|s| &*s.key.target).collect();
            let agents: BTreeSet<String> = match &seen_by {
                Some(w) => w.failing.clone(),
                None => hit.iter().map(|s| agent_of(s).to_string()).collect(),
            };
            let mut detail = json!({
                "outage": id,
                "scope": cause.scope(),
                "subject": describe(cause, book),
                "prefix": prefix,
                "start_ms": ms(start),
                "series": hit.len(),
                "agents": agents.iter().take(20).collect::<Vec<_>>(),
                "targets": targets.iter().take(20).collect::<Vec<_>>(),
            });
            if let Some(w) = &seen_by {
                detail["failing_agents"] = w.failing.len().into();
                detail["probing_agents"] = w.probing.into();
            }
            out.rows.push(OutageRow::Open {
                id,
                scope: cause.scope(),
                tenant: tenant.to_owned(),
                subject: describe(cause, book),
                start_ns: start,
                detail: detail.clone(),
            });
            // The event names its prefix in the detail only: the column
            // would show it to the prefix's other tenants, who have
            // outages of their own.
            out.events.push(NewEvent {
                at_ms: ms(start),
                agent: agent.clone(),
                kind: EventKind::OutageStart,
                detail,
                prefix: None,
            });
            self.groups.insert(
                key.clone(),
                Group {
                    id,
                    start_ns: start,
                    members: HashSet::new(),
                    seen: BTreeSet::new(),
                    lost: 0,
                    reported: 0,
                    end_ns: start,
                    agent,
                    prefix,
                },
            );
        }
        let g = self.groups.get_mut(&key).expect("inserted");
        g.start_ns = g.start_ns.min(start);
        for s in hit {
            g.members.insert(s.id);
            g.seen.insert(s.id);
            let keys = self.member_of.entry(s.id).or_default();
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
            out.changed.push(s.id);
        }
    }

    /// Brings the lost count of the outages of the series `ids` (those
    /// the checkpoint writes) up to date, so an open outage shows what it
    /// has cost so far, not 0 until it ends.
    pub fn progress(&mut self, book: &Book, ids: impl IntoIterator<Item = i64>, out: &mut Output) {
        let keys: BTreeSet<&Key> = ids
            .into_iter()
            .filter_map(|id| self.member_of.get(&id))
            .flatten()
            .collect();
        for key in keys {
            if let Some(g) = self.groups.get_mut(key) {
                g.report(book, out);
            }
        }
    }

    /// The outages a series is counted in (one per tenant that sees it).
    pub fn groups_of(&self, id: i64) -> Vec<i64> {
        self.member_of
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|k| self.groups.get(k))
            .map(|g| g.id)
            .collect()
    }

    /// Takes back the outages open at the last checkpoint with the series
    /// that were in them, so a restart neither reports them again nor
    /// forgets to end them. One whose members all lost their open state
    /// (not expected: both are written in one transaction) is ended. An
    /// outage of a version without per-tenant correlation (no tenant)
    /// belongs to its first member's tenant.
    pub fn restore(&mut self, open: Vec<OpenOutage>, book: &Book, out: &mut Output) {
        for o in open {
            let members: Vec<&Series> = o
                .members
                .iter()
                .filter_map(|id| book.by_id(*id))
                .filter(|s| s.outage.open().is_some())
                .collect();
            let cause = match o.scope.as_str() {
                "agent-network" => o.subject.split_once('/').map(|(t, n)| {
                    Cause::AgentNetwork(AgentKey {
                        tenant: t.to_owned(),
                        name: n.to_owned(),
                    })
                }),
                "prefix" => o.subject.parse().ok().map(Cause::Prefix),
                "target" => Some(Cause::Target(o.subject.clone())),
                "path" => members.first().map(|s| Cause::Path(s.id)),
                _ => None,
            };
            let (Some(cause), Some(first)) = (cause, members.first()) else {
                let detail = json!({"outage": o.id, "scope": o.scope, "subject": o.subject,
                    "start_ms": ms(o.start_ns), "end_ms": ms(o.start_ns), "lost": o.lost,
                    "note": "ended at restart: no series was still down"});
                out.rows.push(OutageRow::Close {
                    id: o.id,
                    end_ns: o.start_ns,
                    lost: o.lost,
                    detail,
                });
                continue;
            };
            let tenant = if o.tenant.is_empty() {
                first.key.tenant.to_string()
            } else {
                o.tenant.clone()
            };
            let by = members
                .iter()
                .find(|s| *s.key.tenant == *tenant)
                .unwrap_or(first);
            let mut g = Group {
                id: o.id,
                start_ns: o.start_ns,
                members: HashSet::new(),
                seen: BTreeSet::new(),
                // The row counts what the members still down had lost at
                // the checkpoint their state was written in.
                lost: o.lost.saturating_sub(open_lost(&members)),
                reported: o.lost,
                end_ns: o.start_ns,
                agent: AgentKey {
                    tenant: tenant.clone(),
                    name: by.key.agent.to_string(),
                },
                prefix: event_prefix(&cause, book),
            };
            let key: Key = (tenant, cause);
            for s in &members {
                g.members.insert(s.id);
                g.seen.insert(s.id);
                self.member_of.entry(s.id).or_default().push(key.clone());
                self.pending.remove(&s.id);
            }
            self.next_id = self.next_id.max(o.id + 1);
            self.groups.insert(key, g);
        }
    }
}

impl Group {
    /// Writes the lost count when it changed.
    fn report(&mut self, book: &Book, out: &mut Output) {
        let members: Vec<&Series> = self
            .members
            .iter()
            .filter_map(|id| book.by_id(*id))
            .collect();
        let lost = self.lost + open_lost(&members);
        if lost != self.reported {
            self.reported = lost;
            out.rows.push(OutageRow::Progress { id: self.id, lost });
        }
    }
}

/// What the open outages of `series` have lost so far.
fn open_lost(series: &[&Series]) -> u64 {
    series
        .iter()
        .filter_map(|s| s.outage.open())
        .map(|o| o.lost)
        .sum()
}

/// How many of `series` there are, and how many are down.
fn count_down<'a>(
    series: impl Iterator<Item = &'a Series>,
    down: impl Fn(&Series) -> bool,
) -> (usize, usize) {
    series.fold((0, 0), |(n, d), s| (n + 1, d + usize::from(down(s))))
}

/// The prefix an outage's events name, so the tenants granted it see
/// them: the prefix itself, the target's, or the path's target's; none
/// for an agent's network (its tenant's business).
fn event_prefix(cause: &Cause, book: &Book) -> Option<String> {
    match cause {
        Cause::AgentNetwork(_) => None,
        Cause::Prefix(p) => Some(p.to_string()),
        Cause::Target(t) => t.parse::<IpAddr>().ok().map(|a| prefix_of(a).to_string()),
        Cause::Path(id) => book
            .by_id(*id)
            .and_then(|s| s.address)
            .map(|a| prefix_of(a).to_string()),
    }
}

/// The subject of an outage as text: `tenant/agent`, a prefix, a target,
/// or `tenant/agent → target` for a path.
fn describe(cause: &Cause, book: &Book) -> String {
    match cause {
        Cause::AgentNetwork(a) => a.to_string(),
        Cause::Prefix(p) => p.to_string(),
        Cause::Target(t) => t.clone(),
        Cause::Path(id) => book.by_id(*id).map_or_else(
            || format!("series {id}"),
            |s| format!("{}/{} → {}", s.key.tenant, s.key.agent, s.key.target),
        ),
    }
}
