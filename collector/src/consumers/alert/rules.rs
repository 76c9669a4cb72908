//! Rules: what an event means for alerts. Each event of the collector's
//! log becomes zero or more [`Update`]s — an alert fires or alerts
//! resolve — for every tenant the event concerns
//! ([`crate::read::access::Tenancy::event_audience`]: its own tenant, and for a
//! measurement of an address the tenants that see it; each gets its own
//! alert, routed by its own routes).
//!
//! | event | rule | fires / resolves |
//! | --- | --- | --- |
//! | agent-missing / agent-back | `agent-missing` | fires / resolves |
//! | outage-start / outage-end | `outage` (by scope) | fires / resolves |
//! | route-change | `route-change` | one-off |
//! | ip-changed | `public-ip-change` | one-off |
//! | port-opened / port-closed | `open-port` (risk ≥ `min-risk`) | fires / resolves |
//! | remote-port-opened / -closed | `remote-ports` | one-off |
//! | check-down / check-up | `check-down` | fires / resolves |
//! | check-failed / check-up | `check-failed` | fires / resolves |
//!
//! Latency (`latency.rs`) and no-data (`engine.rs`) are measured, not
//! events.

use std::time::Duration;

use serde_json::Value;

use super::config::{Risk, Rules, Severity};
use super::{Alert, Labels, fingerprint, segment};
use crate::config::Config;
use crate::read::access::Tenancy;
use crate::store::{EventKind, EventRow};

/// A change to alerts.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// This alert fires (again, or for the first time); a one-off alert
    /// leaves the firing list `hold_ms` after the engine saw it.
    Fire { alert: Alert, hold_ms: Option<i64> },
    /// Every firing alert whose labels include all of these resolves.
    Resolve { labels: Labels, at_ms: i64 },
}

/// What a rule makes of an event for one tenant.
struct Made {
    rule: &'static str,
    severity: Severity,
    labels: Vec<(&'static str, String)>,
    summary: String,
    link: String,
    /// One-off alerts: how long they stay listed.
    hold: Option<Duration>,
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn agent_link(tenant: &str, agent: &str) -> String {
    format!(
        "/api/v1/agents/{}?tenant={}",
        segment(agent),
        segment(tenant)
    )
}

fn series_link(agent: &str, target: &str) -> String {
    format!("/api/v1/series/{}/{}", segment(agent), segment(target))
}

/// The labels that identify an outage alert, from its scope and subject
/// (the same for the start and the end event).
fn outage_labels(ev: &EventRow) -> Vec<(&'static str, String)> {
    let scope = text(&ev.detail, "scope");
    let subject = text(&ev.detail, "subject");
    // Outage events carry their prefix in the detail (the column would
    // show them to the prefix's other tenants; see `analysis::correlate`).
    let prefix = ev
        .prefix
        .clone()
        .unwrap_or_else(|| text(&ev.detail, "prefix"));
    let mut l = vec![("scope", scope.clone()), ("subject", subject.clone())];
    match scope.as_str() {
        "agent-network" => l.push(("agent", ev.agent.clone())),
        "prefix" => l.push(("prefix", subject)),
        "target" => {
            l.push(("target", subject));
            l.push(("prefix", prefix));
        }
        _ => {
            let target = subject
                .split_once(" → ")
                .map_or(subject.clone(), |(_, t)| t.to_owned());
            l.push(("agent", ev.agent.clone()));
            l.push(("target", target));
            l.push(("prefix", prefix));
        }
    }
    l
}

/// ` (seen by 2 of 3 agents probing it)`: who saw a target's outage
/// open (nothing for events of versions that did not count them).
fn seen_by(d: &Value) -> String {
    match (d["failing_agents"].as_u64(), d["probing_agents"].as_u64()) {
        (Some(1), Some(1)) => " (seen by the only agent probing it)".to_owned(),
        (Some(f), Some(p)) if f == p => format!(" (seen by all {p} agents probing it)"),
        (Some(f), Some(p)) => format!(" (seen by {f} of {p} agents probing it)"),
        _ => String::new(),
    }
}

fn outage(r: &Rules, ev: &EventRow) -> Option<Made> {
    let scope = text(&ev.detail, "scope");
    if !r.outage.enabled || !r.outage.scopes.contains(&scope) {
        return None;
    }
    let subject = text(&ev.detail, "subject");
    // The start event's series count is what was down when the cause was
    // recognised; more join later, so no count here.
    let summary = match scope.as_str() {
        "agent-network" => format!("agent {subject} lost its network (its targets are down)"),
        "prefix" => format!("prefix {subject} is down"),
        "target" => format!("target {subject} is down{}", seen_by(&ev.detail)),
        _ => format!("path {subject} is down"),
    };
    let link = if scope == "prefix" {
        match subject.split_once('/') {
            Some((a, len)) => format!("/api/v1/prefixes/{}/{len}", segment(a)),
            None => "/api/v1/outages".to_owned(),
        }
    } else {
        "/api/v1/outages".to_owned()
    };
    Some(Made {
        rule: "outage",
        severity: r.outage.severity.unwrap_or(Severity::Critical),
        labels: outage_labels(ev),
        summary,
        link,
        hold: None,
    })
}

fn port_label(d: &Value) -> String {
    format!(
        "{}/{}:{}",
        text(d, "protocol"),
        text(d, "address"),
        text(d, "port")
    )
}

/// What `ev` fires for a tenant with rules `r` (`None`: nothing).
fn fire(r: &Rules, ev: &EventRow, tenant: &str) -> Option<Made> {
    let d = &ev.detail;
    let agent = ev.agent.clone();
    let link = agent_link(tenant, &agent);
    Some(match ev.kind {
        EventKind::AgentMissing if r.agent_missing.enabled => {
            let silent = d["silent_for_ms"].as_u64().unwrap_or(0) / 1000;
            Made {
                rule: "agent-missing",
                severity: r.agent_missing.severity.unwrap_or(Severity::Critical),
                summary: format!(
                    "agent {}/{agent} is missing: no heartbeat for {silent} s",
                    ev.tenant
                ),
                labels: vec![("agent", agent)],
                link,
                hold: None,
            }
        }
        EventKind::OutageStart => return outage(r, ev),
        EventKind::RouteChange if r.route_change.enabled => {
            let target = text(d, "target");
            let hops = |v: &Value| v["hops"].as_array().map_or(0, Vec::len);
            Made {
                rule: "route-change",
                severity: r.route_change.severity.unwrap_or(Severity::Info),
                summary: format!(
                    "route from {agent} to {target} changed ({} hops → {} hops)",
                    hops(&d["old"]),
                    hops(&d["new"])
                ),
                link: series_link(&agent, &target),
                labels: vec![
                    ("agent", agent),
                    ("target", target),
                    ("prefix", ev.prefix.clone().unwrap_or_default()),
                ],
                hold: Some(r.route_change.hold),
            }
        }
        EventKind::IpChanged if r.public_ip_change.enabled => {
            let family = text(d, "family");
            Made {
                rule: "public-ip-change",
                severity: r.public_ip_change.severity.unwrap_or(Severity::Warning),
                summary: format!(
                    "public {family} address of {agent} changed from {} to {}",
                    text(d, "old"),
                    text(d, "new")
                ),
                labels: vec![("agent", agent), ("family", family)],
                link,
                hold: Some(r.public_ip_change.hold),
            }
        }
        EventKind::PortOpened if r.open_port.enabled => {
            let risk = Risk::parse(&text(d, "risk")).unwrap_or(Risk::Medium);
            if risk < r.open_port.min_risk {
                return None;
            }
            let program = match text(d, "program") {
                p if p.is_empty() => "a program".to_owned(),
                p => p,
            };
            Made {
                rule: "open-port",
                severity: r.open_port.severity.unwrap_or(Severity::Warning),
                summary: format!(
                    "{agent}: {program} listens on {} {}:{} ({}, risk {})",
                    text(d, "protocol"),
                    text(d, "address"),
                    text(d, "port"),
                    text(d, "service"),
                    text(d, "risk"),
                ),
                labels: vec![("agent", agent), ("port", port_label(d))],
                link,
                hold: None,
            }
        }
        EventKind::RemotePortOpened | EventKind::RemotePortClosed if r.remote_ports.enabled => {
            let target = text(d, "target");
            let what = if ev.kind == EventKind::RemotePortOpened {
                "opened"
            } else {
                "closed"
            };
            Made {
                rule: "remote-ports",
                severity: r.remote_ports.severity.unwrap_or(Severity::Warning),
                summary: format!(
                    "remote check of {target} from {agent}: ports {} {what}; open now: {}",
                    d["ports"], d["open"]
                ),
                labels: vec![("agent", agent), ("target", target)],
                link,
                hold: Some(r.remote_ports.hold),
            }
        }
        _ => return None,
    })
}

/// A heartbeat check's alert: labelled by the check's name (unique in its
/// tenant), linked to the check.
fn check(r: &Rules, ev: &EventRow, tenant: &str) -> Option<Made> {
    let d = &ev.detail;
    let name = text(d, "check");
    let (rule, on, summary) = if ev.kind == EventKind::CheckDown {
        let why = match text(d, "reason") {
            r if r.is_empty() => String::new(),
            r => format!(": {r}"),
        };
        (
            "check-down",
            r.check_down,
            format!("check {tenant}/{name} is down{why}"),
        )
    } else {
        let status = match d["exit_status"].as_i64() {
            Some(s) => format!(" (exit status {s})"),
            None => String::new(),
        };
        (
            "check-failed",
            r.check_failed,
            format!("check {tenant}/{name} reported a failure{status}"),
        )
    };
    if !on.enabled {
        return None;
    }
    Some(Made {
        rule,
        severity: on.severity.unwrap_or(Severity::Critical),
        labels: vec![("check", name)],
        summary,
        link: format!("/api/v1/checks/{}", text(d, "id")),
        hold: None,
    })
}

/// The labels of the alerts an event resolves (without the tenant).
fn resolves(ev: &EventRow) -> Option<Vec<(&'static str, String)>> {
    Some(match ev.kind {
        EventKind::AgentBack => vec![
            ("rule", "agent-missing".into()),
            ("agent", ev.agent.clone()),
        ],
        EventKind::OutageEnd => {
            let mut l = outage_labels(ev);
            l.push(("rule", "outage".into()));
            l
        }
        // A success resolves both its check-down and its check-failed
        // alert: only those carry a `check` label.
        EventKind::CheckUp => vec![("check", text(&ev.detail, "check"))],
        EventKind::PortClosed => vec![
            ("rule", "open-port".into()),
            ("agent", ev.agent.clone()),
            ("port", port_label(&ev.detail)),
        ],
        _ => return None,
    })
}

/// Builds an alert.
pub fn alert(
    tenant: &str,
    rule: &str,
    severity: Severity,
    labels: Vec<(&str, String)>,
    summary: String,
    link: String,
    at_ms: i64,
) -> Alert {
    let mut l: Labels = labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    l.insert("tenant".into(), tenant.to_owned());
    l.insert("rule".into(), rule.to_owned());
    let fp = fingerprint(&l);
    l.insert("severity".into(), severity.as_str().to_owned());
    Alert {
        fingerprint: fp,
        labels: l,
        severity,
        summary,
        link,
        firing: true,
        occurrence: 1,
        starts_ms: at_ms,
        ends_ms: None,
        updated_ms: at_ms,
        oneshot_until_ms: None,
        flips: Vec::new(),
        flapping: false,
        detail: Value::Null,
    }
}

/// The updates one event makes.
pub fn from_event(config: &Config, tenancy: &Tenancy, ev: &EventRow) -> Vec<Update> {
    let mut out = Vec::new();
    for tenant in tenancy.event_audience(ev) {
        if let Some(l) = resolves(ev) {
            let mut labels: Labels = l.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            labels.insert("tenant".into(), tenant.clone());
            out.push(Update::Resolve {
                labels,
                at_ms: ev.at_ms,
            });
            continue;
        }
        let rules = config.alerting.rules_for(&tenant);
        let made = match ev.kind {
            EventKind::CheckDown | EventKind::CheckFailed => check(&rules, ev, &tenant),
            _ => fire(&rules, ev, &tenant),
        };
        let Some(m) = made else {
            continue;
        };
        let mut a = alert(
            &tenant, m.rule, m.severity, m.labels, m.summary, m.link, ev.at_ms,
        );
        a.detail = ev.detail.clone();
        out.push(Update::Fire {
            alert: a,
            hold_ms: m
                .hold
                .map(|h| i64::try_from(h.as_millis()).unwrap_or(i64::MAX)),
        });
    }
    out
}
