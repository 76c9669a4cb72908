//! Routes and groups: which alerts are notified together, when, and
//! which of them a notification must mention — the Alertmanager model,
//! with deferral by schedule.
//!
//! An alert joins one group per route it matches (first matching route,
//! more when a route says `continue`); the group's key is the values of
//! the route's `group-by` labels. A new group is flushed after
//! `group-wait`, then every `group-interval`. A flush notifies when an
//! alert fires that the group has not notified (per occurrence), an alert
//! starts flapping, an alert notified as firing resolved, or
//! `repeat-interval` has passed with alerts still firing. Silenced and
//! suppressed alerts are not notified as firing; their resolution is,
//! when their firing was.
//!
//! Outside the route's schedule a flush sends nothing: the alerts it
//! would have notified are marked deferred and the group is flushed again
//! when the schedule opens. Then what still fires is sent, and what fired
//! and resolved in between is summarised once.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::config::Route;
use super::matcher::all_match;
use super::message::{AlertView, Message};
use super::schedule::Schedule;
use super::silence::{Silence, silenced_by};
use super::{Alert, Labels};

/// What a group knows of one of its alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The occurrence last notified as firing.
    #[serde(default)]
    pub notified: Option<u64>,
    /// Notified as flapping (and not since as firing).
    #[serde(default)]
    pub notified_flapping: bool,
    /// Held back by the schedule at least once since last notified.
    #[serde(default)]
    pub deferred: bool,
    /// Occurrences that fired while the group was held back, when the
    /// first of them started, and the last one counted: the summary at the
    /// schedule's opening says "fired N times from …".
    #[serde(default)]
    pub held_times: u32,
    #[serde(default)]
    pub held_first_ms: Option<i64>,
    #[serde(default)]
    pub held_occurrence: Option<u64>,
}

impl Member {
    fn was_notified(&self) -> bool {
        self.notified.is_some() || self.notified_flapping
    }

    /// Records that the schedule holds `a` back: deferred, and its
    /// occurrence counted once.
    pub fn hold(&mut self, a: &Alert) {
        self.deferred = true;
        if self.held_occurrence != Some(a.occurrence) {
            self.held_times += 1;
            self.held_first_ms.get_or_insert(a.starts_ms);
            self.held_occurrence = Some(a.occurrence);
        }
    }
}

/// A group of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub route: String,
    pub key: String,
    pub labels: Labels,
    pub created_ms: i64,
    pub next_flush_ms: i64,
    #[serde(default)]
    pub last_notified_ms: Option<i64>,
    /// Held back by the schedule since then.
    #[serde(default)]
    pub deferred_since_ms: Option<i64>,
    pub members: BTreeMap<String, Member>,
}

impl Group {
    /// Adds or updates `a` as a member. In a group the schedule holds
    /// back, it is held at once, however it joined: a short outage that
    /// starts and ends before the schedule opens is still summarised then.
    pub fn join(&mut self, a: &Alert) {
        let held = self.deferred_since_ms.is_some();
        let member = self.members.entry(a.fingerprint.clone()).or_default();
        if held {
            member.hold(a);
        }
    }
}

/// Whether `route` takes `alert`.
pub fn matches(route: &Route, alert: &Alert) -> bool {
    route.tenant.as_deref().is_none_or(|t| t == alert.tenant())
        && all_match(&route.matchers, &alert.labels)
}

/// The group key of `alert` under `route`: label values in `group-by`
/// order, and those of the labels the alert has (a target's outage has
/// no `agent`: its group does not show one).
pub fn group_of(route: &Route, alert: &Alert) -> (String, Labels) {
    let labels: Labels = route
        .group_by
        .iter()
        .map(|l| (l.clone(), alert.label(l).to_owned()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let key = route
        .group_by
        .iter()
        .map(|l| alert.label(l))
        .collect::<Vec<_>>()
        .join("\u{1f}");
    (key, labels)
}

/// The members of a group as a flush sees them (fingerprints).
struct Sorted {
    /// Firing and not muted (all of them are listed in a notification) …
    firing: Vec<String>,
    /// … of which these were not notified yet.
    new_firing: Vec<String>,
    /// Flapping, not yet notified as such.
    flapping: Vec<String>,
    /// Resolved after being notified.
    resolved: Vec<String>,
    /// Fired and resolved while the schedule held them back.
    summarised: Vec<String>,
}

/// What a flush looks at.
pub struct Flush<'a> {
    pub route: &'a Route,
    pub route_name: &'a str,
    pub schedule: &'a Schedule,
    pub alerts: &'a HashMap<String, Alert>,
    pub silences: &'a [Silence],
    pub suppressed: &'a HashMap<String, String>,
    pub external_url: Option<&'a str>,
    pub now_ms: i64,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Group {
    pub fn new(route: &str, key: String, labels: Labels, now_ms: i64, wait_ms: i64) -> Self {
        Self {
            route: route.to_owned(),
            key,
            labels,
            created_ms: now_ms,
            next_flush_ms: now_ms.saturating_add(wait_ms),
            last_notified_ms: None,
            deferred_since_ms: None,
            members: BTreeMap::new(),
        }
    }

    /// Sorts the members for a flush; members that are done leave.
    fn sort(&mut self, f: &Flush<'_>) -> Sorted {
        let mut firing = Vec::new();
        let mut new_firing = Vec::new();
        let mut flapping = Vec::new();
        let mut resolved = Vec::new();
        let mut summarised = Vec::new();
        let mut leave = Vec::new();
        for (fp, m) in &self.members {
            let Some(a) = f.alerts.get(fp) else {
                leave.push(fp.clone());
                continue;
            };
            if !a.firing {
                if a.flapping {
                    continue; // held until stable
                }
                if a.oneshot_until_ms.is_some() {
                    leave.push(fp.clone()); // one-off: nothing to resolve
                } else if m.was_notified() && f.route.send_resolved {
                    resolved.push(fp.clone());
                } else if !m.was_notified() && m.deferred {
                    summarised.push(fp.clone());
                } else {
                    leave.push(fp.clone());
                }
                continue;
            }
            if f.suppressed.contains_key(fp) || !silenced_by(f.silences, a, f.now_ms).is_empty() {
                continue;
            }
            if a.flapping {
                if !m.notified_flapping {
                    flapping.push(fp.clone());
                }
                continue;
            }
            firing.push(fp.clone());
            if m.notified != Some(a.occurrence) || m.notified_flapping {
                new_firing.push(fp.clone());
            }
        }
        for fp in &leave {
            self.members.remove(fp);
        }
        Sorted {
            firing,
            new_firing,
            flapping,
            resolved,
            summarised,
        }
    }

    /// Flushes the group: the notification to send, if any. Members that
    /// are done (resolved and told, or dropped) leave; the caller deletes
    /// a group left empty.
    pub fn flush(&mut self, f: &Flush<'_>) -> Option<Message> {
        let now = f.now_ms;
        let Sorted {
            firing,
            new_firing,
            flapping,
            resolved,
            summarised,
        } = self.sort(f);
        let news = !new_firing.is_empty()
            || !flapping.is_empty()
            || !resolved.is_empty()
            || !summarised.is_empty();

        if !f.schedule.is_open(now) {
            if news {
                for fp in new_firing.iter().chain(&flapping) {
                    if let (Some(m), Some(a)) = (self.members.get_mut(fp), f.alerts.get(fp)) {
                        m.hold(a);
                    }
                }
                self.deferred_since_ms.get_or_insert(now);
            }
            self.next_flush_ms = f
                .schedule
                .next_change(now)
                .unwrap_or(now.saturating_add(ms(f.route.group_interval)));
            return None;
        }

        let repeat = !firing.is_empty()
            && self
                .last_notified_ms
                .is_some_and(|t| now.saturating_sub(t) >= ms(f.route.repeat_interval));
        self.next_flush_ms = now.saturating_add(ms(f.route.group_interval));
        if !news && !repeat {
            return None;
        }
        let view = |fps: &[String]| -> Vec<AlertView> {
            fps.iter()
                .filter_map(|fp| f.alerts.get(fp))
                .map(AlertView::from)
                .collect()
        };
        // What was held back and is over: how often, from when; in the
        // order it happened.
        let mut held: Vec<AlertView> = summarised
            .iter()
            .filter_map(|fp| {
                let (a, m) = (f.alerts.get(fp)?, self.members.get(fp)?);
                let mut v = AlertView::from(a);
                v.held_times = m.held_times.max(1);
                v.starts_ms = m.held_first_ms.unwrap_or(a.starts_ms);
                Some(v)
            })
            .collect();
        held.sort_by_key(|v| v.starts_ms);
        let message = Message {
            route: f.route_name.to_owned(),
            receiver: f.route.receiver.clone(),
            tenant: f.route.tenant.clone(),
            group: self.labels.clone(),
            firing: view(&firing),
            flapping: view(&flapping),
            resolved: view(&resolved),
            resolved_while_deferred: held,
            at_ms: now,
            deferred_since_ms: self.deferred_since_ms,
            external_url: f.external_url.map(str::to_owned),
        };
        for fp in &firing {
            if let (Some(m), Some(a)) = (self.members.get_mut(fp), f.alerts.get(fp)) {
                *m = Member {
                    notified: Some(a.occurrence),
                    ..Member::default()
                };
            }
        }
        for fp in &flapping {
            if let Some(m) = self.members.get_mut(fp) {
                *m = Member {
                    notified: m.notified,
                    notified_flapping: true,
                    ..Member::default()
                };
            }
        }
        for fp in resolved.iter().chain(&summarised) {
            self.members.remove(fp);
        }
        self.last_notified_ms = Some(now);
        self.deferred_since_ms = None;
        Some(message)
    }
}
