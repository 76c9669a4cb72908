//! Dependency suppression: an alert whose cause is another firing alert
//! is not notified on its own (it is listed as suppressed, naming the
//! alert that explains it):
//!
//! - an agent that is **missing** suppresses its own network outage and
//!   the path outages, latency and route-change alerts of its targets;
//! - an agent's **network outage** suppresses the path outages, latency
//!   and route-change alerts of its targets;
//! - the collector receiving **no data** at all suppresses every
//!   agent-missing alert (the collector's side is what is cut off).
//!
//! Target, prefix and other agents' alerts are never suppressed by one
//! agent: they are seen by others. Resolved messages of alerts already
//! notified as firing are still sent (see `dispatch.rs`).

use std::collections::HashMap;

use super::Alert;

/// Rules whose alerts about one agent's targets depend on that agent.
const DEPENDENT: [&str; 3] = ["outage", "latency", "route-change"];

/// Firing alerts muted by another: fingerprint → the muting fingerprint.
pub fn suppressed<'a>(alerts: impl Iterator<Item = &'a Alert> + Clone) -> HashMap<String, String> {
    let mut missing: HashMap<(&str, &str), &str> = HashMap::new();
    let mut cut: HashMap<(&str, &str), &str> = HashMap::new();
    let mut no_data = None;
    for a in alerts.clone().filter(|a| a.firing) {
        let key = (a.tenant(), a.label("agent"));
        match (a.rule(), a.label("scope")) {
            ("agent-missing", _) => {
                missing.insert(key, &a.fingerprint);
            }
            ("outage", "agent-network") => {
                cut.insert(key, &a.fingerprint);
            }
            ("no-data", _) => no_data = Some(a.fingerprint.as_str()),
            _ => {}
        }
    }
    let mut out = HashMap::new();
    for a in alerts.filter(|a| a.firing) {
        let key = (a.tenant(), a.label("agent"));
        let by = match (a.rule(), a.label("scope")) {
            ("agent-missing", _) => no_data,
            ("outage", "agent-network") => missing.get(&key).copied(),
            (rule, scope)
                if DEPENDENT.contains(&rule) && scope != "target" && scope != "prefix" =>
            {
                missing.get(&key).or_else(|| cut.get(&key)).copied()
            }
            _ => None,
        };
        if let Some(by) = by.filter(|by| *by != a.fingerprint) {
            out.insert(a.fingerprint.clone(), by.to_owned());
        }
    }
    out
}
