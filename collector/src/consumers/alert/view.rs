//! Alerts, notifications and silences as the API shows them, scoped to
//! what the caller may see: a tenant's viewers and admins see their
//! tenant's alerts and the notifications of their tenant's routes;
//! operators see everything, the collector's own alerts (no tenant) and
//! all-tenant routes included.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::engine::{Status, status};
use super::{state, suppress};
use crate::read::access::Access;
use crate::store::{Store, StoreError};

/// Notifications listed.
const NOTIFICATIONS: u32 = 50;

fn tenant_filter(access: &Access) -> Option<&str> {
    (!access.all).then_some(access.tenant.as_str())
}

/// `GET /api/v1/alerts`: alerts firing or resolved within `history_ms`,
/// with their status; `only` keeps one status.
pub fn alerts(
    store: &Store,
    access: &Access,
    now_ms: i64,
    history_ms: i64,
    only: Option<Status>,
) -> Result<Value, StoreError> {
    // Dependencies and statuses are decided on every alert, then scoped.
    let all = state::alerts(store, None, now_ms - history_ms)?;
    let groups = state::groups(store)?;
    let silences = state::silences(store, None, now_ms)?;
    let suppressed = suppress::suppressed(all.iter());
    let mut counts: BTreeMap<Status, usize> = BTreeMap::new();
    let mut rows = Vec::new();
    for a in all
        .iter()
        .filter(|a| access.all || a.tenant() == access.tenant)
    {
        let in_groups: Vec<_> = groups
            .iter()
            .filter(|g| g.members.contains_key(&a.fingerprint))
            .collect();
        let st = status(a, &in_groups, &silences, &suppressed, now_ms);
        *counts.entry(st).or_default() += 1;
        if only.is_some_and(|o| o != st) {
            continue;
        }
        let silenced_by: Vec<i64> = super::silence::silenced_by(&silences, a, now_ms);
        rows.push(json!({
            "fingerprint": a.fingerprint,
            "status": st,
            "rule": a.rule(),
            "tenant": a.tenant(),
            "severity": a.severity,
            "summary": a.summary,
            "link": a.link,
            "labels": a.labels,
            "starts_ms": a.starts_ms,
            "ends_ms": a.ends_ms,
            "updated_ms": a.updated_ms,
            "silenced_by": silenced_by,
            "suppressed_by": suppressed.get(&a.fingerprint),
            "groups": in_groups.iter().map(|g| {
                let m = &g.members[&a.fingerprint];
                let notified_as = if m.notified_flapping {
                    Some("flapping")
                } else if m.notified == Some(a.occurrence) {
                    Some("firing")
                } else {
                    None
                };
                json!({
                    "route": g.route,
                    // A label the alert does not have (a target's outage
                    // has no agent) is not part of how it is grouped.
                    "labels": g.labels.iter().filter(|(_, v)| !v.is_empty()).collect::<BTreeMap<_, _>>(),
                    "notified": notified_as.is_some(),
                    "notified_as": notified_as,
                    "deferred": m.deferred,
                    "next_flush_ms": g.next_flush_ms,
                })
            }).collect::<Vec<_>>(),
            "detail": a.detail,
        }));
    }
    let notifications: Vec<Value> =
        state::recent_notifications(store, tenant_filter(access), NOTIFICATIONS)?
            .into_iter()
            .filter(|n| access.all || n.tenant.as_deref() == Some(access.tenant.as_str()))
            .map(|n| {
                json!({
                    "id": n.id,
                    "receiver": n.receiver,
                    "integration": n.integration,
                    "state": n.state,
                    "attempts": n.attempts,
                    "created_ms": n.created_ms,
                    "sent_ms": n.sent_ms,
                    "next_attempt_ms": (n.state == "pending").then_some(n.next_ms),
                    "last_error": n.last_error,
                    "title": n.message.title(),
                    "route": n.message.route,
                })
            })
            .collect();
    Ok(json!({
        "alerts": rows,
        "counts": counts,
        "notifications": notifications,
    }))
}

/// `GET /api/v1/silences`: silences visible to the caller that ended
/// within `history_ms` or have not ended.
pub fn silences(
    store: &Store,
    access: &Access,
    now_ms: i64,
    history_ms: i64,
) -> Result<Value, StoreError> {
    let rows: Vec<Value> = state::silences(store, tenant_filter(access), now_ms - history_ms)?
        .iter()
        .map(|s| silence(s, now_ms))
        .collect();
    Ok(json!({ "silences": rows }))
}

/// One silence as listed, created or expired: with its state at `now_ms`.
pub fn silence(s: &super::silence::Silence, now_ms: i64) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["state"] = json!(s.state(now_ms));
    v
}

/// Parses a `status` filter.
pub fn parse_status(s: &str) -> Option<Status> {
    serde_json::from_value(json!(s)).ok()
}
