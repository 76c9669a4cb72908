//! The alert engine's state machine, free of I/O and clocks: alerts by
//! fingerprint, groups by route and key, and the notifications produced.
//! The task in `mod.rs`/`state.rs` feeds it updates and the time, and
//! persists what it changed.
//!
//! Flap damping: every state change of an alert (firing ↔ resolved) is
//! a flip; more than `max-flips` within `window` make it *flapping*: it is
//! notified once as flapping and then held, whatever it does, until it has
//! not flipped for `window`; then its state at that time is notified as
//! usual (firing, or resolved).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::config::Alerting;
use super::dispatch::{self, Flush, Group};
use super::message::Message;
use super::rules::Update;
use super::schedule::Schedule;
use super::silence::{Silence, silenced_by};
use super::{Alert, Labels, suppress};

/// Groups by (route name, key).
pub type GroupKey = (String, String);

/// How long a resolved alert that no group holds stays in memory (for
/// flap counting) after it ended: the flap window, at least this.
const KEEP_RESOLVED_MS: i64 = 60_000;

#[derive(Debug, Default)]
pub struct Engine {
    pub alerts: HashMap<String, Alert>,
    pub groups: BTreeMap<GroupKey, Group>,
    /// Changed since the last [`Engine::take_changes`].
    changed_alerts: BTreeSet<String>,
    changed_groups: BTreeSet<GroupKey>,
    outbox: Vec<Message>,
}

/// What changed, to persist.
#[derive(Debug, Default)]
pub struct Changes {
    pub alerts: Vec<Alert>,
    /// Groups to write (`Some`) or delete (`None`).
    pub groups: Vec<(GroupKey, Option<Group>)>,
    pub messages: Vec<Message>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.groups.is_empty() && self.messages.is_empty()
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An alert's status as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Firing, waiting for its group's first flush.
    Pending,
    /// Firing and notified.
    Firing,
    /// Firing, held back by a route's schedule.
    Deferred,
    Silenced,
    /// Muted by the firing alert that explains it.
    Suppressed,
    Flapping,
    Resolved,
}

impl Engine {
    pub fn new(alerts: Vec<Alert>, groups: Vec<Group>) -> Self {
        Self {
            alerts: alerts
                .into_iter()
                .map(|a| (a.fingerprint.clone(), a))
                .collect(),
            groups: groups
                .into_iter()
                .map(|g| ((g.route.clone(), g.key.clone()), g))
                .collect(),
            ..Self::default()
        }
    }

    /// Applies one update at `now_ms`.
    pub fn apply(&mut self, cfg: &Alerting, update: Update, now_ms: i64) {
        match update {
            Update::Fire { alert, hold_ms } => self.fire(cfg, alert, hold_ms, now_ms),
            Update::Resolve { labels, at_ms } => {
                let fps: Vec<String> = self
                    .alerts
                    .values()
                    .filter(|a| {
                        a.firing && a.oneshot_until_ms.is_none() && contains(&a.labels, &labels)
                    })
                    .map(|a| a.fingerprint.clone())
                    .collect();
                for fp in fps {
                    let a = self.alerts.get_mut(&fp).expect("listed");
                    a.firing = false;
                    a.ends_ms = Some(at_ms.max(a.starts_ms));
                    a.updated_ms = now_ms;
                    flip(cfg, a, now_ms);
                    self.touch(cfg, &fp, now_ms);
                }
            }
        }
    }

    fn fire(&mut self, cfg: &Alerting, new: Alert, hold_ms: Option<i64>, now_ms: i64) {
        let fp = new.fingerprint.clone();
        let until = hold_ms.map(|h| now_ms.saturating_add(h));
        match self.alerts.get_mut(&fp) {
            Some(a) if a.firing && a.oneshot_until_ms.is_none() && until.is_none() => {
                // Still firing: refresh what it says.
                a.summary = new.summary;
                a.detail = new.detail;
                a.labels = new.labels;
                a.severity = new.severity;
                a.updated_ms = now_ms;
            }
            Some(a) => {
                // Fires again (or a one-off happened again): a new
                // occurrence.
                if !a.firing || a.oneshot_until_ms.is_some() {
                    flip(cfg, a, now_ms);
                }
                let (occurrence, flips, flapping) =
                    (a.occurrence + 1, std::mem::take(&mut a.flips), a.flapping);
                *a = Alert {
                    occurrence,
                    flips,
                    flapping,
                    updated_ms: now_ms,
                    oneshot_until_ms: until,
                    ..new
                };
            }
            None => {
                let mut a = Alert {
                    updated_ms: now_ms,
                    oneshot_until_ms: until,
                    ..new
                };
                flip(cfg, &mut a, now_ms);
                self.alerts.insert(fp.clone(), a);
            }
        }
        self.touch(cfg, &fp, now_ms);
    }

    /// Records that `fp` changed and puts it in the groups of the routes
    /// it matches.
    fn touch(&mut self, cfg: &Alerting, fp: &str, now_ms: i64) {
        self.changed_alerts.insert(fp.to_owned());
        let Some(alert) = self.alerts.get(fp) else {
            return;
        };
        for (i, route) in cfg.route.iter().enumerate() {
            if !dispatch::matches(route, alert) {
                continue;
            }
            let name = cfg.route_name(i);
            let (key, labels) = dispatch::group_of(route, alert);
            let gk = (name.clone(), key.clone());
            let group = self
                .groups
                .entry(gk.clone())
                .or_insert_with(|| Group::new(&name, key, labels, now_ms, ms(route.group_wait)));
            group.join(alert);
            self.changed_groups.insert(gk);
            if !route.continue_ {
                break;
            }
        }
    }

    /// Time passes: flapping settles, one-off alerts expire, due groups
    /// flush.
    pub fn tick(&mut self, cfg: &Alerting, silences: &[Silence], now_ms: i64) {
        let window = ms(cfg.flapping.window);
        let settled: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.flapping && a.flips.last().is_none_or(|t| now_ms - t >= window))
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in settled {
            let a = self.alerts.get_mut(&fp).expect("listed");
            a.flapping = false;
            a.updated_ms = now_ms;
            self.touch(cfg, &fp, now_ms);
        }
        let expired: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.firing && a.oneshot_until_ms.is_some_and(|t| t <= now_ms))
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in expired {
            let a = self.alerts.get_mut(&fp).expect("listed");
            a.firing = false;
            a.ends_ms = a.oneshot_until_ms;
            a.updated_ms = now_ms;
            self.touch(cfg, &fp, now_ms);
        }

        let due: Vec<GroupKey> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        if !due.is_empty() {
            self.flush(cfg, silences, due, now_ms);
        }
        self.forget_resolved(cfg, now_ms);
    }

    /// Flushes the groups `due`.
    fn flush(&mut self, cfg: &Alerting, silences: &[Silence], due: Vec<GroupKey>, now_ms: i64) {
        let routes: HashMap<String, (&super::config::Route, Schedule)> = cfg
            .route
            .iter()
            .enumerate()
            .map(|(i, r)| (cfg.route_name(i), (r, cfg.schedule(r.schedule.as_deref()))))
            .collect();
        let suppressed = suppress::suppressed(self.alerts.values());
        for gk in due {
            let Some((route, schedule)) = routes.get(&gk.0) else {
                // Its route is gone (config reload): so is the group.
                self.groups.remove(&gk);
                self.changed_groups.insert(gk);
                continue;
            };
            let group = self.groups.get_mut(&gk).expect("listed");
            let message = group.flush(&Flush {
                route,
                route_name: &gk.0,
                schedule,
                alerts: &self.alerts,
                silences,
                suppressed: &suppressed,
                external_url: cfg.external_url.as_deref(),
                now_ms,
            });
            if group.members.is_empty() {
                self.groups.remove(&gk);
            }
            self.changed_groups.insert(gk);
            self.outbox.extend(message);
        }
    }

    /// Forgets resolved alerts no group holds once they cannot flap (they
    /// stay in the store's history).
    fn forget_resolved(&mut self, cfg: &Alerting, now_ms: i64) {
        let window = ms(cfg.flapping.window);
        let held: BTreeSet<&String> = self
            .groups
            .values()
            .flat_map(|g| g.members.keys())
            .collect();
        let keep = window.max(KEEP_RESOLVED_MS);
        self.alerts.retain(|fp, a| {
            a.firing
                || a.flapping
                || held.contains(fp)
                || now_ms.saturating_sub(a.updated_ms) < keep
        });
    }

    /// Flushes at the next tick every group the schedule holds back, so
    /// its next flush is computed again from the schedule in force: after a
    /// reload (the schedule may have changed) and after a restart (the
    /// stored time was computed from the schedule of then).
    pub fn wake_deferred(&mut self, now_ms: i64) {
        for (gk, g) in &mut self.groups {
            if g.deferred_since_ms.is_some() && g.next_flush_ms > now_ms {
                g.next_flush_ms = now_ms;
                self.changed_groups.insert(gk.clone());
            }
        }
    }

    /// Flushes at the next tick every group with a firing alert (a
    /// silence started or ended: what it hid may now be due).
    pub fn wake_groups(&mut self, now_ms: i64) {
        for (gk, g) in &mut self.groups {
            let firing = g
                .members
                .keys()
                .any(|fp| self.alerts.get(fp).is_some_and(|a| a.firing));
            if firing && g.next_flush_ms > now_ms {
                g.next_flush_ms = now_ms;
                self.changed_groups.insert(gk.clone());
            }
        }
    }

    /// When [`Self::tick`] has something to do next.
    pub fn next_due(&self, cfg: &Alerting) -> Option<i64> {
        let window = ms(cfg.flapping.window);
        let groups = self.groups.values().map(|g| g.next_flush_ms);
        let oneshots = self
            .alerts
            .values()
            .filter(|a| a.firing)
            .filter_map(|a| a.oneshot_until_ms);
        let flaps = self
            .alerts
            .values()
            .filter(|a| a.flapping)
            .filter_map(|a| a.flips.last().map(|t| t + window));
        groups.chain(oneshots).chain(flaps).min()
    }

    /// Everything changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let alerts = std::mem::take(&mut self.changed_alerts)
            .into_iter()
            .filter_map(|fp| self.alerts.get(&fp).cloned())
            .collect();
        let groups = std::mem::take(&mut self.changed_groups)
            .into_iter()
            .map(|gk| {
                let g = self.groups.get(&gk).cloned();
                (gk, g)
            })
            .collect();
        Changes {
            alerts,
            groups,
            messages: std::mem::take(&mut self.outbox),
        }
    }
}

/// Whether `labels` has every pair of `want`.
fn contains(labels: &Labels, want: &Labels) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Records a state change of `a` at `now_ms` and decides flapping.
fn flip(cfg: &Alerting, a: &mut Alert, now_ms: i64) {
    let window = ms(cfg.flapping.window);
    a.flips.retain(|t| now_ms - t < window);
    a.flips.push(now_ms);
    if a.flips.len() > cfg.flapping.max_flips as usize {
        a.flapping = true;
    }
}

/// The status of `alert` given the groups, silences and suppressions.
pub fn status<S: std::hash::BuildHasher>(
    alert: &Alert,
    groups: &[&Group],
    silences: &[Silence],
    suppressed: &HashMap<String, String, S>,
    now_ms: i64,
) -> Status {
    if !alert.firing && !alert.flapping {
        return Status::Resolved;
    }
    if alert.flapping {
        return Status::Flapping;
    }
    if !silenced_by(silences, alert, now_ms).is_empty() {
        return Status::Silenced;
    }
    if suppressed.contains_key(&alert.fingerprint) {
        return Status::Suppressed;
    }
    let members: Vec<_> = groups
        .iter()
        .filter_map(|g| g.members.get(&alert.fingerprint))
        .collect();
    if members.iter().any(|m| m.notified == Some(alert.occurrence)) {
        Status::Firing
    } else if members.iter().any(|m| m.deferred) {
        Status::Deferred
    } else {
        Status::Pending
    }
}
